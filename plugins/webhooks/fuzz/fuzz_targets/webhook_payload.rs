#![no_main]
//! What an incoming webhook is sent (any bytes, from anyone holding or guessing a URL) and the text conversions
//! around it: `payload_to_markdown` (Slack blocks or generic JSON), `mrkdwn_to_markdown`, `markdown_to_mrkdwn` (every
//! outgoing Slack payload) and the hook path parser. None may panic; a message posted stays within the bot's limit.
use libfuzzer_sys::fuzz_target;
use webhooks::incoming::{MAX_MESSAGE_CHARS, parse_path, payload_to_markdown};
use webhooks::mrkdwn::{markdown_to_mrkdwn, mrkdwn_to_markdown};

fuzz_target!(|data: &[u8]| {
    if let Ok(markdown) = payload_to_markdown(data) {
        assert!(markdown.chars().count() <= MAX_MESSAGE_CHARS + 1, "{} chars", markdown.chars().count());
    }
    let text = String::from_utf8_lossy(data);
    let _ = mrkdwn_to_markdown(&text);
    let _ = markdown_to_mrkdwn(&text);
    if let Some((id, secret)) = parse_path(&text) {
        assert!(!id.contains('/') && !secret.contains('/'), "{id:?} {secret:?}");
    }
});
