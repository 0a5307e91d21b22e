//! What an incoming mail becomes in the conversation: which bridge it belongs to, and the Markdown posted (the
//! sender by mapped identity or name and address, the subject of a new thread, the trimmed text).

use crate::bridges::Bridge;
use crate::inbound::InboundMail;

/// Backslash-escape Markdown punctuation in text shown verbatim (names, addresses, subjects), so a sender cannot
/// make their name a link or a mention.
pub fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\`*_{}[]()#+-.!<>|~@".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The bridge a mail belongs to: the conversation of the thread it answers (`parent_conversation`), else a bridge
/// one of whose addresses is in To / Cc or is the list it came through (List-Id `team.lists.example.org` for
/// `team@lists.example.org`), else a bridge listing its sender.
pub fn find_bridge<'b>(mail: &InboundMail, parent_conversation: Option<&str>, bridges: &'b [Bridge]) -> Option<&'b Bridge> {
    if let Some(c) = parent_conversation
        && let Some(b) = bridges.iter().find(|b| b.conversation == c)
    {
        return Some(b);
    }
    let addressed = |b: &&Bridge| {
        b.addresses
            .iter()
            .any(|a| mail.recipients.contains(a) || mail.list_id.as_deref().is_some_and(|l| l == a.replacen('@', ".", 1)))
    };
    bridges.iter().find(addressed).or_else(|| bridges.iter().find(|b| b.addresses.contains(&mail.from_address)))
}

/// The Markdown posted for `mail`: `✉ @user` for a mapped sender, else `✉ **Name** <address>`; the subject when it
/// starts a thread (`is_reply` false); the text (or "(no text)"); the attachments left out, by name.
pub fn post_text(mail: &InboundMail, identities: &[(String, String)], is_reply: bool) -> String {
    let who = match identities.iter().find(|(email, _)| *email == mail.from_address) {
        Some((_, user)) => format!("@{user}"),
        None => match &mail.from_name {
            Some(name) => format!("**{}** {}", escape_markdown(name), escape_markdown(&format!("<{}>", mail.from_address))),
            None => format!("**{}**", escape_markdown(&mail.from_address)),
        },
    };
    let mut body = format!("✉ {who}");
    if !is_reply && !mail.subject.is_empty() {
        body.push_str(&format!(": *{}*", escape_markdown(&mail.subject)));
    }
    body.push_str("\n\n");
    body.push_str(if mail.text.is_empty() && mail.attachments.is_empty() { "(no text)" } else { &mail.text });
    if !mail.skipped_attachments.is_empty() {
        body.push_str(&format!(
            "\n\n_({} more attachment(s) not carried: {})_",
            mail.skipped_attachments.len(),
            escape_markdown(&mail.skipped_attachments.join(", "))
        ));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail() -> InboundMail {
        InboundMail {
            from_address: "bob@example.net".into(),
            from_name: Some("Bob [admin](https://x)".into()),
            message_id: Some("b@x".into()),
            in_reply_to: vec![],
            references: vec![],
            subject: "Plans *now*".into(),
            recipients: vec!["bridge@example.org".into()],
            list_id: None,
            text: "Hello".into(),
            attachments: vec![],
            skipped_attachments: vec!["a.pdf".into()],
        }
    }

    fn bridge(conversation: &str, addresses: &[&str]) -> Bridge {
        Bridge { conversation: conversation.into(), addresses: addresses.iter().map(|a| a.to_string()).collect(), subject: None }
    }

    #[test]
    fn bridges_by_thread_then_address_then_list_then_sender() {
        let bridges = [bridge("group:a", &["team@example.org"]), bridge("group:b", &["list@lists.example.org"]), bridge("bob", &["bob@example.net"])];
        let mut m = mail();
        assert_eq!(find_bridge(&m, Some("group:b"), &bridges).map(|b| b.conversation.as_str()), Some("group:b"));
        assert_eq!(find_bridge(&m, None, &bridges).map(|b| b.conversation.as_str()), Some("bob"));
        m.recipients.push("team@example.org".into());
        assert_eq!(find_bridge(&m, None, &bridges).map(|b| b.conversation.as_str()), Some("group:a"));
        m.recipients.clear();
        m.list_id = Some("list.lists.example.org".into());
        assert_eq!(find_bridge(&m, None, &bridges).map(|b| b.conversation.as_str()), Some("group:b"));
        m.list_id = None;
        m.from_address = "eve@example.com".into();
        assert_eq!(find_bridge(&m, Some("group:gone"), &bridges), None);
    }

    #[test]
    fn post_texts() {
        let text = post_text(&mail(), &[], false);
        assert!(text.starts_with("✉ **Bob \\[admin\\]\\(https://x\\)** \\<bob\\@example\\.net\\>: *Plans \\*now\\**\n\nHello"), "{text}");
        assert!(text.ends_with("_(1 more attachment(s) not carried: a\\.pdf)_"), "{text}");
        let text = post_text(&mail(), &[("bob@example.net".into(), "bob".into())], true);
        assert!(text.starts_with("✉ @bob\n\nHello"), "{text}");
        let mut empty = mail();
        empty.text.clear();
        assert!(post_text(&empty, &[], true).contains("(no text)"));
    }
}
