//! The administrator's settings: which conversation is bridged to which addresses (`bridges`), and which e-mail
//! senders are shown as imfree users (`identities`). Both arrive as JSON text (array settings).

use serde_json::Value;

/// One bridged conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    /// `group:<id>` or a user name, as plugins name conversations.
    pub conversation: String,
    /// Where its messages go (people or lists), lower-cased.
    pub addresses: Vec<String>,
    /// Subject of a mail that starts a thread; none: the message's first line.
    pub subject: Option<String>,
}

/// A plain `local@domain` address (no display name, no brackets, no spaces), lower-cased; none if it is not one.
pub fn normalise_address(address: &str) -> Option<String> {
    let a = address.trim().trim_start_matches('<').trim_end_matches('>').to_ascii_lowercase();
    let (local, domain) = a.split_once('@')?;
    let ok = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && a.len() <= 254
        && !a.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"'));
    ok.then_some(a)
}

fn entries(json: &str, what: &str) -> Result<Vec<Value>, String> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Array(a)) => Ok(a),
        _ => Err(format!("the {what} setting is not a list of tables")),
    }
}

/// Parse the `bridges` setting. Entries that are not valid are skipped, each with a reason (by position; no
/// addresses in the reason, they are personal data).
pub fn parse_bridges(json: &str) -> (Vec<Bridge>, Vec<String>) {
    let mut bridges: Vec<Bridge> = Vec::new();
    let mut problems = Vec::new();
    let list = match entries(json, "bridges") {
        Ok(l) => l,
        Err(e) => return (bridges, vec![e]),
    };
    for (i, entry) in list.iter().enumerate() {
        let n = i + 1;
        let Some(conversation) = entry.get("conversation").and_then(Value::as_str).map(str::trim).filter(|c| !c.is_empty()) else {
            problems.push(format!("bridge #{n} ignored: conversation is missing"));
            continue;
        };
        let Some(list) = entry.get("addresses").and_then(Value::as_array) else {
            problems.push(format!("bridge #{n} ignored: addresses must be a list of e-mail addresses"));
            continue;
        };
        let addresses: Option<Vec<String>> = list.iter().map(|a| a.as_str().and_then(normalise_address)).collect();
        let Some(addresses) = addresses.filter(|a| !a.is_empty() && a.len() <= 100) else {
            problems.push(format!("bridge #{n} ignored: addresses must be 1 to 100 e-mail addresses"));
            continue;
        };
        if bridges.iter().any(|b| b.conversation == conversation) {
            problems.push(format!("bridge #{n} ignored: its conversation is bridged by an earlier entry"));
            continue;
        }
        let subject = entry.get("subject").and_then(Value::as_str).map(|s| one_line(s, 200)).filter(|s| !s.is_empty());
        bridges.push(Bridge { conversation: conversation.to_owned(), addresses, subject });
    }
    (bridges, problems)
}

/// Parse the `identities` setting: `(address, user)` pairs.
pub fn parse_identities(json: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let list = match entries(json, "identities") {
        Ok(l) => l,
        Err(e) => return (out, vec![e]),
    };
    for (i, entry) in list.iter().enumerate() {
        let email = entry.get("email").and_then(Value::as_str).and_then(normalise_address);
        let user = entry.get("user").and_then(Value::as_str).map(str::trim).filter(|u| {
            !u.is_empty() && u.len() <= 64 && u.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        });
        match (email, user) {
            (Some(e), Some(u)) => out.push((e, u.to_owned())),
            _ => problems.push(format!("identity #{} ignored: it needs email = an address and user = an account name", i + 1)),
        }
    }
    (out, problems)
}

/// `text` on one line (controls and line breaks become spaces), at most `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max { line } else { line.chars().take(max.saturating_sub(1)).chain(['…']).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridges_are_checked() {
        let (b, problems) = parse_bridges(
            r#"[{"conversation":"group:abc","addresses":["Team@Example.org","<list@lists.example.org>"],"subject":"Hello\nthere"},
                {"conversation":"bob","addresses":[]},
                {"addresses":["a@b.c"]},
                {"conversation":"carol","addresses":["not an address"]},
                {"conversation":"group:abc","addresses":["x@y.z"]}]"#,
        );
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].addresses, ["team@example.org", "list@lists.example.org"]);
        assert_eq!(b[0].subject.as_deref(), Some("Hello there"));
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.iter().all(|p| !p.contains('@')));
        assert_eq!(parse_bridges("{}").1.len(), 1);
    }

    #[test]
    fn identities_and_addresses() {
        let (ids, problems) = parse_identities(r#"[{"email":"Alice@Example.org","user":"alice"},{"email":"x","user":"y"},{"email":"b@c.d","user":"Not Valid"}]"#);
        assert_eq!(ids, [("alice@example.org".to_owned(), "alice".to_owned())]);
        assert_eq!(problems.len(), 2);
        assert_eq!(normalise_address(" <A@B.c> ").as_deref(), Some("a@b.c"));
        for bad in ["", "a", "@b", "a@", "a@b@c", "a b@c", "a@b,c@d", "\"a\"@b"] {
            assert_eq!(normalise_address(bad), None, "{bad}");
        }
        assert_eq!(one_line("a\r\n  b\tc", 10), "a b c");
        assert_eq!(one_line("abcdef", 4), "abc…");
    }
}
