//! Composing the mail for a bridged imfree message: headers, a text/plain part (the Markdown source, readable as
//! it is), a text/html part rendered from it (raw HTML escaped, links only to http, https and mailto) and, for a
//! file message, the file as an attachment.

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd, html};

/// The header every mail of the gateway carries, so that its copies coming back (a list echoing them, an
/// auto-reply quoting them) are recognised and dropped.
pub const BRIDGE_HEADER: &str = "X-Imfree-Bridge";

/// A file to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// File name (no directories).
    pub name: String,
    /// MIME type.
    pub content_type: String,
    /// The contents.
    pub data: Vec<u8>,
}

/// Everything a mail is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMail {
    /// Who wrote the message (shown as `"<name> (via imfree)"`).
    pub sender_name: String,
    /// The bridge's address (From and Reply-To).
    pub from: String,
    /// The bridged addresses.
    pub to: Vec<String>,
    /// The subject.
    pub subject: String,
    /// Message-ID, without brackets.
    pub message_id: String,
    /// In-Reply-To, without brackets.
    pub in_reply_to: Option<String>,
    /// References, without brackets, oldest first.
    pub references: Vec<String>,
    /// When the message was sent (ms since the epoch).
    pub sent_at_ms: u64,
    /// The text as Markdown.
    pub markdown: String,
    /// The conversation, for the bridge header.
    pub conversation: String,
    /// The file of a file message.
    pub attachment: Option<Attachment>,
}

/// Render `markdown` as HTML with raw HTML shown as text and links to other schemes than http, https and mailto
/// (e.g. `javascript:`) left as plain text.
pub fn markdown_to_html(markdown: &str) -> String {
    let mut options = Options::empty();
    options.insert(Options::ENABLE_STRIKETHROUGH);
    options.insert(Options::ENABLE_TABLES);
    let mut dropped_links = 0usize;
    let events = Parser::new_ext(markdown, options).filter_map(|event| match event {
        Event::Html(text) | Event::InlineHtml(text) => Some(Event::Text(text)),
        Event::Start(Tag::Link { ref dest_url, .. }) | Event::Start(Tag::Image { ref dest_url, .. }) if !safe_url(dest_url) => {
            dropped_links += 1;
            None
        }
        Event::Start(Tag::Image { dest_url, title, id, link_type }) => {
            // Remote images in mail are trackers; link to them instead.
            Some(Event::Start(Tag::Link { link_type, dest_url, title, id }))
        }
        Event::End(TagEnd::Link) | Event::End(TagEnd::Image) if dropped_links > 0 => {
            dropped_links -= 1;
            None
        }
        Event::End(TagEnd::Image) => Some(Event::End(TagEnd::Link)),
        other => Some(other),
    });
    let mut body = String::new();
    html::push_html(&mut body, events);
    format!("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body>\n{body}</body></html>\n")
}

fn safe_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    match lower.split_once(':') {
        Some((scheme, _)) if !scheme.contains('/') && !scheme.contains('?') && !scheme.contains('#') => {
            matches!(scheme, "http" | "https" | "mailto")
        }
        // No scheme: a relative link, harmless (and useless) in a mail.
        _ => true,
    }
}

/// The subject of a mail that starts a thread: the bridge's, or the message's first line.
pub fn new_subject(bridge_subject: Option<&str>, markdown: &str, fallback: &str) -> String {
    if let Some(s) = bridge_subject {
        return s.to_owned();
    }
    let first = markdown.lines().map(|l| l.trim_start_matches(['#', '>', '*', '-', ' '])).find(|l| !l.trim().is_empty());
    match first {
        Some(l) => crate::bridges::one_line(l, 78),
        None => fallback.to_owned(),
    }
}

/// Build the RFC 5322 message (CRLF line ends).
pub fn compose(mail: &OutgoingMail) -> Vec<u8> {
    let name = format!("{} (via imfree)", crate::bridges::one_line(&mail.sender_name, 64));
    let to: Vec<Address<'_>> = mail.to.iter().map(|a| Address::new_address(None::<&str>, a.as_str())).collect();
    let mut builder = MessageBuilder::new()
        .from(Address::new_address(Some(name), mail.from.as_str()))
        .reply_to(Address::new_address(None::<&str>, mail.from.as_str()))
        .to(Address::new_list(to))
        .subject(crate::bridges::one_line(&mail.subject, 200))
        .message_id(mail.message_id.as_str())
        .date((mail.sent_at_ms / 1000) as i64)
        .header(BRIDGE_HEADER, Raw::new(crate::bridges::one_line(&mail.conversation, 200)))
        .text_body(mail.markdown.as_str())
        .html_body(markdown_to_html(&mail.markdown));
    if let Some(parent) = &mail.in_reply_to {
        builder = builder.in_reply_to(parent.as_str());
    }
    if !mail.references.is_empty() {
        builder = builder.references(MessageId::new_list(mail.references.iter().map(String::as_str)));
    }
    if let Some(a) = &mail.attachment {
        builder = builder.attachment(a.content_type.as_str(), a.name.as_str(), a.data.as_slice());
    }
    let mut out = Vec::new();
    builder.serialize(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use mail_parser::MimeHeaders;

    use super::*;

    fn sample() -> OutgoingMail {
        OutgoingMail {
            sender_name: "alice".into(),
            from: "bridge@example.org".into(),
            to: vec!["team@example.org".into(), "bob@example.net".into()],
            subject: "Re: Plans".into(),
            message_id: "imfree.m2.c@example.org".into(),
            in_reply_to: Some("root@mail.example.net".into()),
            references: vec!["root@mail.example.net".into()],
            sent_at_ms: 1_700_000_000_000,
            markdown: "**Yes** <script>alert(1)</script> [x](javascript:alert(1)) [ok](https://example.org)".into(),
            conversation: "group:c".into(),
            attachment: Some(Attachment { name: "notes.txt".into(), content_type: "text/plain".into(), data: b"hello file".to_vec() }),
        }
    }

    #[test]
    fn headers_and_parts() {
        let raw = compose(&sample());
        let parsed = mail_parser::MessageParser::default().parse(&raw).expect("parses");
        let h = &parsed;
        let from = h.from().and_then(|f| f.first()).expect("from");
        assert_eq!(from.address(), Some("bridge@example.org"));
        assert_eq!(from.name(), Some("alice (via imfree)"));
        assert_eq!(h.message_id(), Some("imfree.m2.c@example.org"));
        assert_eq!(h.in_reply_to().as_text(), Some("root@mail.example.net"));
        assert_eq!(h.references().as_text(), Some("root@mail.example.net"));
        assert_eq!(h.subject(), Some("Re: Plans"));
        assert!(h.header(BRIDGE_HEADER).is_some());
        let text = parsed.body_text(0).expect("text part");
        assert!(text.contains("**Yes**"));
        let html = parsed.body_html(0).expect("html part");
        assert!(html.contains("<strong>Yes</strong>"));
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("javascript:"), "{html}");
        assert!(html.contains("href=\"https://example.org\""));
        let att = parsed.attachments().next().expect("attachment");
        assert_eq!(att.attachment_name(), Some("notes.txt"));
        assert_eq!(att.contents(), b"hello file");
        assert!(raw.windows(2).filter(|w| w[1] == b'\n').all(|w| w[0] == b'\r'), "CRLF line ends");
    }

    #[test]
    fn subjects() {
        assert_eq!(new_subject(Some("Team"), "x", "f"), "Team");
        assert_eq!(new_subject(None, "\n# Hello *there*\nmore", "f"), "Hello *there*");
        assert_eq!(new_subject(None, "  \n", "fallback"), "fallback");
    }

    #[test]
    fn unsafe_links_become_text() {
        let html = markdown_to_html("[a](javascript:x) ![i](https://t.example/p.png) [b](mailto:a@b.c) <b>raw</b>");
        assert!(!html.contains("javascript"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("href=\"mailto:a@b.c\""));
        assert!(html.contains("&lt;b&gt;raw&lt;/b&gt;"), "{html}");
    }
}
