//! Threading between imfree replies and e-mail headers: the Message-ID a bridged imfree message gets, the
//! References chain of a reply, and the kv keys under which both directions are remembered.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Most ids kept in a References header (the first, the thread's root, is always kept; then the newest).
pub const MAX_REFERENCES: usize = 20;

/// kv prefix of records by imfree message (`t/<hash of conversation and id>`).
pub const BY_MESSAGE: &str = "t/";
/// kv prefix of pointers from a mail Message-ID (`m/<hash of the id>`) to the record's key by imfree message.
pub const BY_MAIL: &str = "m/";

/// One bridged message, known both as an imfree message and as a mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadRecord {
    /// The imfree conversation.
    pub conversation: String,
    /// The imfree message id.
    pub id: String,
    /// The mail's Message-ID (without angle brackets).
    pub message_id: String,
    /// The mail's References (without angle brackets), oldest first.
    pub references: Vec<String>,
    /// The mail's subject (for "Re:" on replies).
    pub subject: String,
}

impl ThreadRecord {
    /// The References of a mail that replies to this one.
    pub fn references_for_reply(&self) -> Vec<String> {
        let mut refs = self.references.clone();
        refs.push(self.message_id.clone());
        trim_references(refs)
    }
}

/// Keep the root and the newest ids, at most [`MAX_REFERENCES`], without duplicates.
pub fn trim_references(refs: Vec<String>) -> Vec<String> {
    let mut unique: Vec<String> = Vec::new();
    for r in refs {
        if !r.is_empty() && !unique.contains(&r) {
            unique.push(r);
        }
    }
    if unique.len() > MAX_REFERENCES {
        let tail = unique.split_off(unique.len() - (MAX_REFERENCES - 1));
        unique.truncate(1);
        unique.extend(tail);
    }
    unique
}

/// A message id without angle brackets or surrounding space.
pub fn bare_id(id: &str) -> &str {
    id.trim().trim_start_matches('<').trim_end_matches('>')
}

fn encode(text: &str, out: &mut String) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
}

/// The Message-ID (without brackets) of the mail that carries imfree message `id` of `conversation`:
/// `imfree.<id>.<conversation>@<domain>`, each part with bytes outside `[A-Za-z0-9_-]` written `=XX`, so it is a
/// valid dot-atom and a different message never gets the same id.
pub fn message_id(conversation: &str, id: &str, domain: &str) -> String {
    let mut out = String::from("imfree.");
    encode(id, &mut out);
    out.push('.');
    encode(conversation, &mut out);
    out.push('@');
    out.push_str(domain);
    out
}

/// Whether `id` is one this plugin made for `domain` (its own mail coming back).
pub fn is_own_message_id(id: &str, domain: &str) -> bool {
    let id = bare_id(id);
    id.len() > domain.len() + 8
        && id.starts_with("imfree.")
        && id.rsplit_once('@').is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
}

/// The subject of a reply: `Re: <subject>` (not doubled).
pub fn reply_subject(subject: &str) -> String {
    let s = subject.trim();
    if s.len() >= 3 && s[..3].eq_ignore_ascii_case("re:") { s.to_owned() } else { format!("Re: {s}") }
}

fn hashed(prefix: &str, text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut key = String::from(prefix);
    for b in &digest[..16] {
        key.push_str(&format!("{b:02x}"));
    }
    key
}

/// kv key of the record of imfree message `id` in `conversation`.
pub fn key_by_message(conversation: &str, id: &str) -> String {
    hashed(BY_MESSAGE, &format!("{conversation}\n{id}"))
}

/// kv key of the record of the mail `message_id`.
pub fn key_by_mail(message_id: &str) -> String {
    hashed(BY_MAIL, &bare_id(message_id).to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_atoms_and_recognised() {
        let id = message_id("group:ab c", "01HX.9", "example.org");
        assert_eq!(id, "imfree.01HX=2E9.group=3Aab=20c@example.org");
        assert!(is_own_message_id(&format!("<{id}>"), "EXAMPLE.org"));
        assert!(!is_own_message_id(&id, "other.org"));
        assert!(!is_own_message_id("abc@example.org", "example.org"));
        assert_ne!(message_id("a.b", "c", "d"), message_id("a", "b.c", "d"));
    }

    #[test]
    fn references_keep_root_and_newest() {
        let r = ThreadRecord { conversation: "c".into(), id: "i".into(), message_id: "m".into(), references: vec!["r".into()], subject: "s".into() };
        assert_eq!(r.references_for_reply(), ["r", "m"]);
        let many: Vec<String> = (0..30).map(|i| format!("{i}")).collect();
        let t = trim_references(many);
        assert_eq!(t.len(), MAX_REFERENCES);
        assert_eq!(t[0], "0");
        assert_eq!(t[1], "11");
        assert_eq!(t.last().map(String::as_str), Some("29"));
        assert_eq!(trim_references(vec!["a".into(), "a".into(), "".into()]), ["a"]);
    }

    #[test]
    fn subjects_and_keys() {
        assert_eq!(reply_subject("Hello"), "Re: Hello");
        assert_eq!(reply_subject("RE: Hello"), "RE: Hello");
        assert_eq!(key_by_mail("<ABC@x>"), key_by_mail("abc@x"));
        assert!(key_by_message("c", "i").starts_with(BY_MESSAGE));
        assert!(key_by_message("c", "i").len() < 256);
    }
}
