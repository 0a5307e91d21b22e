//! What a delivery's body looks like for each kind of receiver. Every body is JSON, rendered once when the message
//! is queued (so every attempt of a delivery sends the same bytes).

use serde_json::{Value, json};

use crate::mrkdwn::markdown_to_mrkdwn;

/// A message as the outgoing side sees it (the WIT `message` record, without the SDK's types so that this module
/// builds and is tested natively).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Message id.
    pub id: String,
    /// Conversation (`group:<id>` or the other person's account).
    pub conversation: String,
    /// Author's account.
    pub sender: String,
    /// Milliseconds since the Unix epoch.
    pub sent_at: u64,
    /// `text/plain` or `text/markdown`.
    pub content_type: String,
    /// The text.
    pub body: String,
    /// The message this one replies to.
    pub reply_to: Option<String>,
    /// Accounts mentioned.
    pub mentions: Vec<String>,
}

/// A receiver's payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Slack incoming webhook: `text` plus Block Kit `blocks`.
    Slack,
    /// Microsoft Teams Workflows ("Post to a channel when a webhook request is received"): an Adaptive Card 1.4.
    Teams,
    /// The legacy Office 365 connector card (`MessageCard`).
    MessageCard,
    /// The whole message as JSON.
    Generic,
}

impl Format {
    /// Parse the `format` of a target.
    pub fn parse(text: &str) -> Option<Format> {
        Some(match text {
            "slack" => Format::Slack,
            "teams" => Format::Teams,
            "messagecard" => Format::MessageCard,
            "generic" => Format::Generic,
            _ => return None,
        })
    }
}

/// Slack's documented limit on a section block's text.
pub const SLACK_SECTION_MAX: usize = 3000;
/// Slack's documented limit on the blocks of one message.
pub const SLACK_MAX_BLOCKS: usize = 50;

/// The JSON body for `format`.
pub fn render(format: Format, msg: &OutgoingMessage) -> String {
    let value = match format {
        Format::Slack => slack(msg),
        Format::Teams => teams(msg),
        Format::MessageCard => message_card(msg),
        Format::Generic => generic(msg),
    };
    value.to_string()
}

fn is_markdown(msg: &OutgoingMessage) -> bool {
    msg.content_type.starts_with("text/markdown")
}

/// Split `text` into pieces of at most `max` characters, at a line break when there is one in the second half of
/// the piece, never inside a character (nor inside an `&amp;`-style escape).
fn chunks(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest: Vec<char> = text.chars().collect();
    while rest.len() > max {
        let mut cut = rest[..max].iter().rposition(|&c| c == '\n').filter(|&p| p >= max / 2).map(|p| p + 1).unwrap_or(max);
        // Do not split `&amp;` / `&lt;` / `&gt;`.
        if let Some(amp) = rest[cut.saturating_sub(4)..cut].iter().rposition(|&c| c == '&') {
            let at = cut.saturating_sub(4) + amp;
            if !rest[at..cut].contains(&';') && at > 0 {
                cut = at;
            }
        }
        out.push(rest[..cut].iter().collect());
        rest.drain(..cut);
    }
    if !rest.is_empty() || out.is_empty() {
        out.push(rest.into_iter().collect());
    }
    out
}

fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut t: String = text.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// Slack: the message as mrkdwn in section blocks (each ≤ 3000 characters), then a context block naming the
/// sender and the conversation, at most 50 blocks (a longer message is cut, and says so); `text` is the plain
/// fallback Slack shows in notifications.
pub fn slack(msg: &OutgoingMessage) -> Value {
    let mrkdwn = if is_markdown(msg) { markdown_to_mrkdwn(&msg.body) } else { markdown_to_mrkdwn(&escape_plain_markdown(&msg.body)) };
    let mut pieces = chunks(&mrkdwn, SLACK_SECTION_MAX);
    if pieces.len() > SLACK_MAX_BLOCKS - 1 {
        pieces.truncate(SLACK_MAX_BLOCKS - 1);
        if let Some(last) = pieces.last_mut() {
            *last = truncate_chars(last, SLACK_SECTION_MAX - 2) + "\n…";
        }
    }
    let mut blocks: Vec<Value> = pieces
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| json!({"type": "section", "text": {"type": "mrkdwn", "text": p}}))
        .collect();
    let context = format!("*{}* in {}", escape_mrkdwn(&msg.sender), escape_mrkdwn(&msg.conversation));
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]}));
    let fallback = escape_mrkdwn(&format!("{} in {}: {}", msg.sender, msg.conversation, msg.body));
    let mut fallback_pieces = chunks(&fallback, SLACK_SECTION_MAX - 1);
    if fallback_pieces.len() > 1 {
        fallback_pieces[0].push('…');
    }
    json!({
        "text": fallback_pieces.swap_remove(0),
        "blocks": blocks,
    })
}

/// Plain text shown through a Markdown converter: the characters that would turn into formatting are escaped.
fn escape_plain_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '*' | '_' | '~' | '`' | '[' | ']' | '#') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn escape_mrkdwn(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn when(ms: u64) -> String {
    crate::retry::http_date(ms / 1000)
}

/// Teams Workflows: `{"type":"message","attachments":[{"contentType":"application/vnd.microsoft.card.adaptive",
/// "contentUrl":null,"content":<Adaptive Card 1.4>}]}`; the card has a title TextBlock, the message in a
/// wrapping TextBlock (Adaptive Cards render a subset of Markdown: bold, italic, links, lists), and a FactSet.
pub fn teams(msg: &OutgoingMessage) -> Value {
    let body = if is_markdown(msg) { msg.body.clone() } else { escape_plain_markdown(&msg.body) };
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": format!("{} in {}", msg.sender, msg.conversation), "weight": "Bolder", "size": "Medium", "wrap": true},
                    {"type": "TextBlock", "text": body, "wrap": true},
                    {"type": "FactSet", "facts": [
                        {"title": "Sender", "value": msg.sender},
                        {"title": "Conversation", "value": msg.conversation},
                        {"title": "Sent", "value": when(msg.sent_at)},
                    ]},
                ],
            },
        }],
    })
}

/// The legacy connector card: `@type` MessageCard, `@context`, `summary`, `themeColor`, `title`, `text`, and a
/// section with the facts.
pub fn message_card(msg: &OutgoingMessage) -> Value {
    let body = if is_markdown(msg) { msg.body.clone() } else { escape_plain_markdown(&msg.body) };
    json!({
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": truncate_chars(&format!("{} in {}", msg.sender, msg.conversation), 200),
        "themeColor": "0076D7",
        "title": format!("{} in {}", msg.sender, msg.conversation),
        "text": body,
        "sections": [{
            "markdown": true,
            "facts": [
                {"name": "Sender", "value": msg.sender},
                {"name": "Conversation", "value": msg.conversation},
                {"name": "Sent", "value": when(msg.sent_at)},
            ],
        }],
    })
}

/// Everything the plugin knows about the message.
pub fn generic(msg: &OutgoingMessage) -> Value {
    json!({
        "id": msg.id,
        "conversation": msg.conversation,
        "sender": msg.sender,
        "sent_at": msg.sent_at,
        "content_type": msg.content_type,
        "body": msg.body,
        "reply_to": msg.reply_to,
        "mentions": msg.mentions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &str) -> OutgoingMessage {
        OutgoingMessage {
            id: "m1".into(),
            conversation: "group:abc".into(),
            sender: "alice".into(),
            sent_at: 1_700_000_000_123,
            content_type: "text/markdown".into(),
            body: body.into(),
            reply_to: Some("m0".into()),
            mentions: vec!["webhooks".into()],
        }
    }

    #[test]
    fn slack_shape() {
        let v = slack(&msg("**deploy** <now> see [log](https://x.example)"));
        assert_eq!(v["text"], "alice in group:abc: **deploy** &lt;now&gt; see [log](https://x.example)");
        assert_eq!(v["blocks"][0]["type"], "section");
        assert_eq!(v["blocks"][0]["text"]["type"], "mrkdwn");
        assert_eq!(v["blocks"][0]["text"]["text"], "*deploy* &lt;now&gt; see <https://x.example|log>");
        assert_eq!(v["blocks"][1]["type"], "context");
        assert_eq!(v["blocks"][1]["elements"][0]["text"], "*alice* in group:abc");
        assert_eq!(v["blocks"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn slack_limits() {
        let long = "word &amp; ".repeat(40_000);
        let v = slack(&msg(&long));
        let blocks = v["blocks"].as_array().unwrap();
        assert!(blocks.len() <= SLACK_MAX_BLOCKS, "{}", blocks.len());
        for b in blocks {
            if b["type"] == "section" {
                let t = b["text"]["text"].as_str().unwrap();
                assert!(t.chars().count() <= SLACK_SECTION_MAX);
                assert!(!t.ends_with("&am") && !t.ends_with("&amp"), "an escape was split");
            }
        }
        assert!(v["text"].as_str().unwrap().chars().count() <= SLACK_SECTION_MAX);
        assert!(blocks[blocks.len() - 2]["text"]["text"].as_str().unwrap().ends_with('…'));
        // Exactly at the limit: one section.
        let v = slack(&msg(&"a".repeat(SLACK_SECTION_MAX)));
        assert_eq!(v["blocks"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn plain_text_is_not_formatted_for_slack() {
        let mut m = msg("a *b* [c](d)");
        m.content_type = "text/plain".into();
        assert_eq!(slack(&m)["blocks"][0]["text"]["text"], "a *b* [c](d)");
    }

    #[test]
    fn teams_shapes() {
        let v = teams(&msg("**hi**"));
        assert_eq!(v["type"], "message");
        let a = &v["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        assert!(a["contentUrl"].is_null());
        let c = &a["content"];
        assert_eq!(c["$schema"], "http://adaptivecards.io/schemas/adaptive-card.json");
        assert_eq!(c["type"], "AdaptiveCard");
        assert_eq!(c["version"], "1.4");
        assert_eq!(c["body"][1]["text"], "**hi**");
        assert_eq!(c["body"][2]["type"], "FactSet");
        assert_eq!(c["body"][2]["facts"][2]["value"], "Tue, 14 Nov 2023 22:13:20 GMT");
        let v = message_card(&msg("x"));
        assert_eq!(v["@type"], "MessageCard");
        assert_eq!(v["@context"], "https://schema.org/extensions");
        assert_eq!(v["sections"][0]["facts"][0]["name"], "Sender");
        assert_eq!(v["summary"], "alice in group:abc");
    }

    #[test]
    fn generic_has_the_whole_message() {
        let v = generic(&msg("x"));
        assert_eq!(v, json!({"id": "m1", "conversation": "group:abc", "sender": "alice", "sent_at": 1_700_000_000_123u64,
            "content_type": "text/markdown", "body": "x", "reply_to": "m0", "mentions": ["webhooks"]}));
    }
}
