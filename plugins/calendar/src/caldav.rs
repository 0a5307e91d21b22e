//! The CalDAV (RFC 4791) pieces that are text: the calendar-query REPORT body, the `calendar-data` out of a
//! multistatus answer, resource names for UIDs and the Basic credentials. The requests themselves are made by
//! [`crate::plugin`] through the host.

use jiff::Timestamp;

/// A `calendar-query` REPORT for the VEVENTs overlapping `[start, end)`.
pub fn calendar_query(start: Timestamp, end: Timestamp) -> String {
    let f = |t: Timestamp| t.strftime("%Y%m%dT%H%M%SZ").to_string();
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="utf-8"?>"#,
            r#"<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">"#,
            r#"<D:prop><D:getetag/><C:calendar-data/></D:prop>"#,
            r#"<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">"#,
            r#"<C:time-range start="{}" end="{}"/>"#,
            r#"</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"#
        ),
        f(start),
        f(end)
    )
}

/// The text of every `calendar-data` element (any namespace prefix) in a multistatus document, unescaped, at
/// most `max` of them. Not a general XML parser: it needs only to find these elements and undo the escaping.
pub fn calendar_data(xml: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while out.len() < max {
        let Some(open) = find_tag(rest, false) else { break };
        let after_open = &rest[open.end..];
        if open.self_closing {
            rest = after_open;
            continue;
        }
        let Some(close) = find_tag(after_open, true) else { break };
        out.push(unescape_xml(&after_open[..close.start]));
        rest = &after_open[close.end..];
    }
    out
}

struct Tag {
    start: usize,
    end: usize,
    self_closing: bool,
}

/// The next `<calendar-data…>` (or `</…calendar-data>` when `closing`).
fn find_tag(s: &str, closing: bool) -> Option<Tag> {
    let mut from = 0;
    while let Some(lt) = s[from..].find('<').map(|i| i + from) {
        let gt = lt + s[lt..].find('>')?;
        let inner = &s[lt + 1..gt];
        from = gt + 1;
        let (is_closing, inner) = match inner.strip_prefix('/') {
            Some(i) => (true, i),
            None => (false, inner),
        };
        if is_closing != closing || inner.starts_with(['!', '?']) {
            continue;
        }
        let name = inner.split(|c: char| c.is_whitespace() || c == '/').next().unwrap_or("");
        let local = name.rsplit(':').next().unwrap_or(name);
        if local == "calendar-data" {
            return Some(Tag {
                start: lt,
                end: gt + 1,
                self_closing: inner.ends_with('/'),
            });
        }
    }
    None
}

/// Undo XML escaping: the five entities, numeric references, CDATA sections.
pub fn unescape_xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(['&', '<']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(cdata) = rest.strip_prefix("<![CDATA[") {
            match cdata.find("]]>") {
                Some(end) => {
                    out.push_str(&cdata[..end]);
                    rest = &cdata[end + 3..];
                }
                None => {
                    out.push_str(cdata);
                    rest = "";
                }
            }
            continue;
        }
        if rest.starts_with('<') {
            out.push('<');
            rest = &rest[1..];
            continue;
        }
        // Bytes, not a string slice: the 12th byte may fall inside a character.
        let Some(semi) = rest.bytes().take(12).position(|b| b == b';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A resource name for a UID: letters, digits, `-`, `_`, `.` and `@` kept, anything else as `_`, at most 120
/// characters, with `.ics`. `None` for a UID that leaves nothing usable.
pub fn resource_name(uid: &str) -> Option<String> {
    let name: String = uid
        .chars()
        .take(120)
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@') { c } else { '_' })
        .collect();
    let name = name.trim_start_matches('.');
    if name.is_empty() || name.chars().all(|c| c == '_') {
        return None;
    }
    Some(format!("{name}.ics"))
}

/// The URL of `resource` inside the collection `collection`.
pub fn resource_url(collection: &str, resource: &str) -> String {
    format!("{}/{}", collection.trim_end_matches('/'), resource)
}

/// `Basic <base64(user:password)>`.
pub fn basic_auth(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}");
    let bytes = input.as_bytes();
    let mut out = String::from("Basic ");
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multistatus_from_radicale_shape() {
        let xml = r#"<?xml version='1.0' encoding='utf-8'?>
<multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><response><href>/u/cal/a.ics</href><propstat><prop><getetag>"1"</getetag><C:calendar-data>BEGIN:VCALENDAR&#13;
SUMMARY:a &amp; b &lt;c&gt;&#13;
END:VCALENDAR&#13;
</C:calendar-data></prop><status>HTTP/1.1 200 OK</status></propstat></response><response><href>/u/cal/b.ics</href><propstat><prop><cal:calendar-data xmlns:cal="urn:ietf:params:xml:ns:caldav"><![CDATA[BEGIN:VCALENDAR
END:VCALENDAR]]></cal:calendar-data><calendar-data/></prop></propstat></response></multistatus>"#;
        let data = calendar_data(xml, 10);
        assert_eq!(data.len(), 2);
        assert_eq!(data[0], "BEGIN:VCALENDAR\r\nSUMMARY:a & b <c>\r\nEND:VCALENDAR\r\n");
        assert_eq!(data[1], "BEGIN:VCALENDAR\nEND:VCALENDAR");
        assert_eq!(calendar_data(xml, 1).len(), 1);
        assert!(calendar_data("<calendar-data>unclosed", 5).is_empty());
        assert_eq!(unescape_xml("&bogus; &#xZZ; & &#1114112;"), "&bogus; &#xZZ; & &#1114112;");
        // Found by the fuzz target: an entity cut inside a multi-byte character.
        assert_eq!(unescape_xml("&#13\nE\u{fffd}\u{fffd}\u{fffd}\u{fffd};"), "&#13\nE\u{fffd}\u{fffd}\u{fffd}\u{fffd};");
    }

    #[test]
    fn query_names_the_range() {
        let q = calendar_query("2026-12-02T23:00:00Z".parse().unwrap(), "2026-12-03T23:00:00Z".parse().unwrap());
        assert!(q.contains(r#"<C:time-range start="20261202T230000Z" end="20261203T230000Z"/>"#));
    }

    #[test]
    fn names_and_credentials() {
        assert_eq!(resource_name("uid3@example.com").as_deref(), Some("uid3@example.com.ics"));
        assert_eq!(resource_name("../../etc/passwd").as_deref(), Some("_.._etc_passwd.ics"));
        assert_eq!(resource_name("/?#"), None);
        assert_eq!(resource_url("http://h/u/cal/", "a.ics"), "http://h/u/cal/a.ics");
        assert_eq!(basic_auth("Aladdin", "open sesame"), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(basic_auth("a", ""), "Basic YTo=");
    }
}
