//! Cards (structured messages plugins post), button presses and reactions, as content documents. Every client
//! renders a card: title, text, label/value fields, buttons; a press goes back to the card's author as an action.

use imfree_plugin_host::{ButtonStyle, Card};
use serde_json::{Value, json};

/// Content type of a card; the body is JSON (`title`, `text`, `fields`, `buttons`).
pub(crate) const CARD_MIME: &str = "application/vnd.imfree.card+json";
/// Content type of a button press, sent to the card's author: `{"message_id", "button"}`.
pub(crate) const ACTION_MIME: &str = "application/vnd.imfree.action+json";
/// Longest card JSON or press a client reads.
const MAX_CARD_BYTES: usize = 64 * 1024;

/// A card as JSON.
pub(crate) fn card_json(card: &Card) -> Value {
    json!({
        "title": card.title,
        "text": card.text,
        "fields": card.fields.iter().map(|f| json!({"label": f.label, "value": f.value})).collect::<Vec<_>>(),
        "buttons": card.buttons.iter().map(|b| json!({
            "id": b.id,
            "label": b.label,
            "style": match b.style { ButtonStyle::Default => "default", ButtonStyle::Primary => "primary", ButtonStyle::Danger => "danger" },
        })).collect::<Vec<_>>(),
    })
}

fn parse(bytes: &[u8]) -> Option<Value> {
    if bytes.len() > MAX_CARD_BYTES {
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

/// A card's button ids, if `bytes` is a card.
pub(crate) fn button_ids(bytes: &[u8]) -> Vec<String> {
    parse(bytes)
        .and_then(|v| v["buttons"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|b| b["id"].as_str().map(str::to_owned))
        .collect()
}

/// A press: (message id, button id).
pub(crate) fn parse_action(bytes: &[u8]) -> Option<(String, String)> {
    let v = parse(bytes)?;
    Some((v["message_id"].as_str()?.to_owned(), v["button"].as_str()?.to_owned()))
}

/// The body of a press on `button` of card `message_id`.
pub(crate) fn action_json(message_id: &str, button: &str) -> String {
    json!({"message_id": message_id, "button": button}).to_string()
}

/// A card for the terminal: title, text, fields, then the buttons with how to press them.
pub(crate) fn render(message_id: &str, bytes: &[u8]) -> String {
    let Some(v) = parse(bytes) else { return "[a card that could not be read]".into() };
    let s = |v: &Value| v.as_str().unwrap_or_default().chars().filter(|c| !c.is_control() || *c == '\n').collect::<String>();
    let mut out = format!("┌ {}", s(&v["title"]));
    for line in s(&v["text"]).lines() {
        out.push_str(&format!("\n│ {line}"));
    }
    for f in v["fields"].as_array().into_iter().flatten() {
        out.push_str(&format!("\n│ {}: {}", s(&f["label"]), s(&f["value"])));
    }
    let buttons: Vec<String> = v["buttons"].as_array().into_iter().flatten().map(|b| format!("[{}] {}", s(&b["id"]), s(&b["label"]))).collect();
    if !buttons.is_empty() {
        out.push_str(&format!("\n└ {}   (imfree client press {message_id} BUTTON)", buttons.join("  ")));
    }
    out
}

