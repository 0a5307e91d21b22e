//! Outgoing targets: the administrator's `targets` setting (a TOML array of tables, handed to the plugin as JSON),
//! and which messages each target wants.

use serde_json::Value;

use crate::formats::{Format, OutgoingMessage};

/// One receiver of outgoing deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Name used in logs and in the queue (never the URL: it often carries a token).
    pub name: String,
    /// Where to POST.
    pub url: String,
    /// Payload format.
    pub format: Format,
    /// HMAC key for the signature headers.
    pub secret: String,
    /// Conversations whose messages go out; empty = every conversation the bot is in.
    pub conversations: Vec<String>,
    /// Senders whose messages go out; empty = anyone.
    pub senders: Vec<String>,
    /// Words, one of which must appear in the message (case-insensitive, whole words); empty = any message.
    pub triggers: Vec<String>,
    /// Only messages that mention the bot.
    pub mentions_only: bool,
}

/// Parse the `targets` setting. Entries that are not valid are skipped, each with a reason (naming the entry by
/// its `name` or position, never its URL or secret).
pub fn parse_targets(json: &str) -> (Vec<Target>, Vec<String>) {
    let mut targets = Vec::new();
    let mut problems = Vec::new();
    let value: Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(_) => return (targets, vec!["the targets setting is not a list of tables".into()]),
    };
    let Some(entries) = value.as_array() else {
        return (targets, vec!["the targets setting is not a list of tables".into()]);
    };
    for (i, entry) in entries.iter().enumerate() {
        match parse_target(entry) {
            Ok(t) if targets.iter().any(|o: &Target| o.name == t.name) => problems.push(format!("target {:?}: the name is used twice; the second is ignored", t.name)),
            Ok(t) => targets.push(t),
            Err(reason) => {
                let name = entry.get("name").and_then(Value::as_str).map(|n| format!("{n:?}")).unwrap_or_else(|| format!("#{}", i + 1));
                problems.push(format!("target {name} ignored: {reason}"));
            }
        }
    }
    (targets, problems)
}

fn strings(entry: &Value, key: &str) -> Result<Vec<String>, String> {
    match entry.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| format!("{key} must be a list of strings")))
            .collect(),
        Some(_) => Err(format!("{key} must be a list of strings")),
    }
}

fn parse_target(entry: &Value) -> Result<Target, String> {
    let text = |key: &str| entry.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    let name = text("name").ok_or("name is missing")?;
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || name.len() > 64 {
        return Err("name must be letters, digits, '-', '_' or '.' (at most 64)".into());
    }
    let url = text("url").ok_or("url is missing")?;
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err("url must start with https:// (or http://)".into());
    }
    let format = match text("format") {
        None => Format::Generic,
        Some(f) => Format::parse(f).ok_or("format must be slack, teams, messagecard or generic")?,
    };
    let secret = text("secret").ok_or("secret is missing (every delivery is signed)")?;
    let mentions_only = match entry.get("mentions-only") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("mentions-only must be true or false".into()),
    };
    Ok(Target {
        name: name.to_owned(),
        url: url.to_owned(),
        format,
        secret: secret.to_owned(),
        conversations: strings(entry, "conversations")?,
        senders: strings(entry, "senders")?,
        triggers: strings(entry, "triggers")?.into_iter().map(|t| t.to_lowercase()).filter(|t| !t.is_empty()).collect(),
        mentions_only,
    })
}

impl Target {
    /// Whether this target wants `msg` (`bot` is the plugin's own account, for `mentions-only`).
    pub fn wants(&self, msg: &OutgoingMessage, bot: &str) -> bool {
        (self.conversations.is_empty() || self.conversations.contains(&msg.conversation))
            && (self.senders.is_empty() || self.senders.contains(&msg.sender))
            && (!self.mentions_only || msg.mentions.iter().any(|m| m == bot))
            && (self.triggers.is_empty() || self.triggers.iter().any(|t| contains_word(&msg.body.to_lowercase(), t)))
    }
}

/// `word` appears in `text` with no letter, digit or `_` right before or after it.
pub fn contains_word(text: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(conv: &str, sender: &str, body: &str, mentions: &[&str]) -> OutgoingMessage {
        OutgoingMessage {
            id: "1".into(),
            conversation: conv.into(),
            sender: sender.into(),
            sent_at: 0,
            content_type: "text/plain".into(),
            body: body.into(),
            reply_to: None,
            mentions: mentions.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn parse_and_skip_bad_entries() {
        let (t, problems) = parse_targets(
            r#"[{"name":"ops-slack","url":"https://hooks.slack.com/services/T/B/X","format":"slack","secret":"s","conversations":["group:a"],"triggers":["Deploy"]},
                {"name":"nourl","secret":"s"},
                {"name":"bad","url":"ftp://x","secret":"s"},
                {"name":"nosecret","url":"https://x.example"},
                {"name":"fmt","url":"https://x.example","secret":"s","format":"xml"},
                {"url":"https://x.example","secret":"s"},
                {"name":"ops-slack","url":"https://x.example","secret":"s"},
                {"name":"gen","url":"http://127.0.0.1:9/x","secret":"s","mentions-only":true}]"#,
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].format, Format::Slack);
        assert_eq!(t[0].triggers, ["deploy"]);
        assert_eq!(t[1].format, Format::Generic);
        assert!(t[1].mentions_only);
        assert_eq!(problems.len(), 6, "{problems:?}");
        assert!(problems.iter().all(|p| !p.contains("ftp://x") && !p.contains("x.example")), "URLs are never in problems: {problems:?}");
        assert_eq!(parse_targets("{}").0.len(), 0);
        assert_eq!(parse_targets("not json").1.len(), 1);
        assert_eq!(parse_targets("[]"), (vec![], vec![]));
    }

    #[test]
    fn filters() {
        let (t, _) = parse_targets(r#"[{"name":"a","url":"https://x.example","secret":"s"}]"#);
        assert!(t[0].wants(&msg("bob", "bob", "hi", &[]), "webhooks"));
        let (t, _) = parse_targets(
            r#"[{"name":"a","url":"https://x.example","secret":"s","conversations":["group:g"],"senders":["alice"],"triggers":["deploy","incident"]}]"#,
        );
        let t = &t[0];
        assert!(t.wants(&msg("group:g", "alice", "Deploy done", &[]), "webhooks"));
        assert!(t.wants(&msg("group:g", "alice", "an incident!", &[]), "webhooks"));
        assert!(!t.wants(&msg("group:g", "alice", "redeployed", &[]), "webhooks"));
        assert!(!t.wants(&msg("group:g", "bob", "deploy", &[]), "webhooks"));
        assert!(!t.wants(&msg("group:h", "alice", "deploy", &[]), "webhooks"));
        let (t, _) = parse_targets(r#"[{"name":"a","url":"https://x.example","secret":"s","mentions-only":true}]"#);
        assert!(t[0].wants(&msg("g", "a", "hey @webhooks", &["webhooks"]), "webhooks"));
        assert!(!t[0].wants(&msg("g", "a", "hey @webhooks", &[]), "webhooks"));
    }

    #[test]
    fn words() {
        assert!(contains_word("deploy now", "deploy"));
        assert!(contains_word("now: deploy!", "deploy"));
        assert!(!contains_word("redeploy", "deploy"));
        assert!(!contains_word("deploy_x", "deploy"));
        assert!(contains_word("x deploy_x deploy", "deploy"));
        assert!(contains_word("ünd deploy", "deploy"));
    }
}
