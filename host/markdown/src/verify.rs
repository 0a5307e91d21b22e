//! Checks of what the renderers promise, written independently of them: the fuzz targets, the corpus replay and
//! the tests assert these on every output, and a front end may use them in its own tests.

use crate::html::{LINK_REL, MENTION_CLASS};
use crate::terminal::SGR;

/// Elements that have no end tag.
const VOID: &[&str] = &["br", "hr"];

/// The attributes allowed on an element of [`render_html`](crate::render_html)'s output.
fn allowed_attribute(element: &str, attribute: &str) -> bool {
    matches!(
        (element, attribute),
        ("a", "href" | "title" | "rel" | "target") | ("ol", "start") | ("code", "class") | ("span", "class")
    )
}

/// A start or end tag of rendered HTML.
struct TagToken<'a> {
    name: &'a str,
    closing: bool,
    attributes: Vec<(&'a str, &'a str)>,
}

/// Parse the tag at the start of `html` (which begins with `<`): the tag and its length.
fn tag(html: &str) -> Result<(TagToken<'_>, usize), String> {
    let bytes = html.as_bytes();
    let mut i = 1;
    let closing = bytes.get(i) == Some(&b'/');
    if closing {
        i += 1;
    }
    let name_start = i;
    while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
        i += 1;
    }
    let name = &html[name_start..i];
    if name.is_empty() {
        return Err(format!("a `<` that starts no tag: {:?}", html.chars().take(40).collect::<String>()));
    }
    let mut attributes = Vec::new();
    loop {
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        match bytes.get(i) {
            Some(b'>') => return Ok((TagToken { name, closing, attributes }, i + 1)),
            None => return Err(format!("unterminated tag <{name}")),
            _ => {}
        }
        let attr_start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'-') {
            i += 1;
        }
        let attribute = &html[attr_start..i];
        if attribute.is_empty() || !html[i..].starts_with("=\"") {
            return Err(format!("malformed attribute in <{name}: {:?}", html[attr_start..].chars().take(40).collect::<String>()));
        }
        i += 2;
        let value_len = html[i..].find('"').ok_or_else(|| format!("unterminated attribute value in <{name}"))?;
        attributes.push((attribute, &html[i..i + value_len]));
        i += value_len + 1;
    }
}

/// Check `html` as output of [`render_html`](crate::render_html): only allowlisted elements and attributes, links
/// only to http, https or mailto with our `rel` and `target`, classes only `mention` and `language-…`, every `<`
/// the start of such a tag. Returns the deepest element nesting seen, or what is wrong.
pub fn check_html(html: &str) -> Result<usize, String> {
    let mut depth: usize = 0;
    let mut deepest = 0;
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        let (token, len) = tag(&rest[lt..])?;
        rest = &rest[lt + len..];
        let name = token.name;
        if !crate::html::TAGS.contains(&name) {
            return Err(format!("element <{name}> is not allowed"));
        }
        if token.closing {
            depth = depth.saturating_sub(1);
            continue;
        }
        if !VOID.contains(&name) {
            depth += 1;
            deepest = deepest.max(depth);
        }
        for (attribute, value) in token.attributes {
            if !allowed_attribute(name, attribute) {
                return Err(format!("attribute {attribute} on <{name}> is not allowed"));
            }
            let lower = value.to_ascii_lowercase();
            let ok = match attribute {
                // The scheme is what matters: `https:/host` is an https URL too (browsers and the url crate read it so).
                "href" => ["http:", "https:", "mailto:"].iter().any(|scheme| lower.starts_with(scheme)),
                "rel" => value == LINK_REL,
                "target" => value == "_blank",
                "class" if name == "span" => value == MENTION_CLASS,
                "class" => value.strip_prefix("language-").is_some_and(|lang| {
                    !lang.is_empty() && lang.chars().all(|c| c.is_ascii_alphanumeric() || "_-+#.".contains(c))
                }),
                "start" => value.bytes().all(|b| b.is_ascii_digit()),
                _ => true,
            };
            if !ok {
                return Err(format!("{attribute}={value:?} on <{name}> is not allowed"));
            }
        }
    }
    Ok(deepest)
}

/// Is `c` a character a terminal may act on (a control character or a bidirectional override)?
fn is_unsafe_for_terminal(c: char) -> bool {
    (c.is_control() && c != '\n') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Check `text` as output of [`render_terminal`](crate::render_terminal) (or [`sanitize_plain`](crate::sanitize_plain),
/// with `color: false`): no control character but `\n`, no bidirectional override, and with `color` no escape
/// sequence but SGR with the parameters the renderer uses. Returns what is wrong.
pub fn check_terminal(text: &str, color: bool) -> Result<(), String> {
    let mut rest = text;
    while let Some(pos) = rest.find(is_unsafe_for_terminal) {
        let c = rest[pos..].chars().next().unwrap_or('\0');
        if c != '\x1b' || !color {
            return Err(format!("{c:?} at byte {}", text.len() - rest.len() + pos));
        }
        let seq = &rest[pos + 1..];
        let Some(params) = seq.strip_prefix('[').and_then(|s| s.find('m').map(|m| &s[..m])) else {
            return Err(format!("an escape that is not SGR: {:?}", seq.chars().take(12).collect::<String>()));
        };
        if let Some(bad) = params.split(';').find(|p| *p != "0" && !SGR.contains(p)) {
            return Err(format!("SGR parameter {bad:?} is not one of ours"));
        }
        rest = &seq[1 + params.len() + 1..];
    }
    Ok(())
}
