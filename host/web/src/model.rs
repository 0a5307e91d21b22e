//! What the web client keeps of a conversation, and the rules for changing it — pure code, tested natively.
//!
//! A delivered content document (imfree-proto's [`Content`]) is either a message of its own or a change of another
//! one: an edit or a deletion (named by `refers`, in clear for the relay and again inside the encryption) or a
//! reaction. The rules are the native engine's (host/client/src/conversation.rs): only its author edits or deletes a
//! message of a direct conversation, anyone in the conversation reacts, and an edit or deletion whose clear reference
//! differs from the encrypted one is refused. A change that arrives before its target is kept and applied when the
//! target arrives.

use std::collections::{BTreeMap, BTreeSet};

use imfree_proto::content::{Content, Reaction};
use imfree_proto::{Limits, MessageRef, RefAction, mime};
use serde::{Deserialize, Serialize};

/// One message as this browser keeps and shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Envelope id (a ULID).
    pub id: String,
    /// The other party of the conversation (for a message to oneself, oneself).
    pub peer: String,
    /// Its author.
    pub from: String,
    /// Sent by this account.
    pub outgoing: bool,
    /// Unix milliseconds (the relay's time once it accepted or delivered it).
    pub ts: u64,
    /// `text/plain` or `text/markdown` (or `text/plain` for a notice about an unreadable delivery).
    pub mime: String,
    /// The text, as written (rendered by [`imfree_markdown`] when shown).
    pub text: String,
    /// `pending`, `sent`, `delivered`, `read`, `failed` (outgoing); `received`, `identity-changed`, `undecodable`.
    pub status: String,
    /// The message this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Changed by its author after sending.
    #[serde(default)]
    pub edited: bool,
    /// Deleted by its author (the text is gone).
    #[serde(default)]
    pub deleted: bool,
    /// Reactions: emoji → who.
    #[serde(default)]
    pub reactions: BTreeMap<String, BTreeSet<String>>,
    /// Seen by this user (incoming only).
    #[serde(default)]
    pub read: bool,
}

/// A change of another message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Change {
    /// New text for the target.
    Edit {
        /// The target's id.
        target: String,
        /// Its new text.
        text: String,
        /// Its new type.
        mime: String,
    },
    /// The target is deleted.
    Delete {
        /// The target's id.
        target: String,
    },
    /// A reaction added or taken back.
    React {
        /// The target's id.
        target: String,
        /// The emoji.
        emoji: String,
        /// Taken back.
        remove: bool,
    },
}

impl Change {
    /// The message it changes.
    pub fn target(&self) -> &str {
        match self {
            Change::Edit { target, .. } | Change::Delete { target } | Change::React { target, .. } => target,
        }
    }
}

/// What a content document turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A message to show: its type, text and the message it answers.
    Text {
        /// Its type.
        mime: String,
        /// Its text.
        text: String,
        /// The message it answers.
        reply_to: Option<String>,
    },
    /// A change of another message.
    Change(Change),
    /// Group work (a membership update or a sender key): the web client does not take part in groups yet.
    Group,
    /// Not readable, with the reason shown to the user.
    Unreadable(String),
}

/// Decode a content document that came end-to-end encrypted, with the reference the relay saw in clear.
pub fn decode(content: &[u8], clear_refers: Option<MessageRef>, limits: &Limits) -> Decoded {
    let content = match Content::decode(content) {
        Ok(c) => c,
        Err(e) => return Decoded::Unreadable(e.to_string()),
    };
    if content.refers != clear_refers {
        return Decoded::Unreadable(if content.refers.is_some() {
            "an edit or deletion whose clear reference does not match the encrypted one was refused".into()
        } else {
            "a message that claims to change another, without saying so inside, was refused".into()
        });
    }
    if imfree_client_core::groups::is_control(&content.mime) {
        return Decoded::Group;
    }
    let body = match content.body_bytes(limits) {
        Ok(b) => b,
        Err(e) => return Decoded::Unreadable(e.to_string()),
    };
    if let Some(r) = content.refers {
        return Decoded::Change(match r.action {
            RefAction::Delete => Change::Delete { target: r.id.to_string() },
            RefAction::Edit => match String::from_utf8(body) {
                Ok(text) => Change::Edit { target: r.id.to_string(), text, mime: content.mime },
                Err(_) => return Decoded::Unreadable("an edit whose text is not UTF-8".into()),
            },
        });
    }
    if content.mime == mime::REACTION {
        return match Reaction::decode(&body) {
            Ok(r) => Decoded::Change(Change::React { target: r.to.to_string(), emoji: r.emoji, remove: r.remove }),
            Err(e) => Decoded::Unreadable(e.to_string()),
        };
    }
    if content.mime != mime::TEXT && content.mime != mime::MARKDOWN {
        return Decoded::Unreadable(format!("a {} message, which the web client cannot show yet", content.mime));
    }
    match String::from_utf8(body) {
        Ok(text) => Decoded::Text { mime: content.mime, text, reply_to: content.reply_to.map(|r| r.to_string()) },
        Err(_) => Decoded::Unreadable("a text message that is not UTF-8".into()),
    }
}

/// The content document for a text message (with the users it mentions), compressed when that helps.
pub fn text_content(text: &str, reply_to: Option<&str>) -> Content {
    let mut content = Content::new(mime::MARKDOWN, text.as_bytes(), Some(imfree_proto::compress::Compression::Gzip));
    content.mentions = imfree_markdown::mentions(text);
    content.reply_to = reply_to.and_then(|r| r.parse().ok());
    content
}

/// The content document for a change made by this user.
pub fn change_content(change: &Change) -> Result<Content, String> {
    let id = |target: &str| target.parse().map_err(|_| format!("{target:?} is not a message id"));
    Ok(match change {
        Change::Edit { target, text, .. } => {
            let mut content = text_content(text, None);
            content.refers = Some(MessageRef { action: RefAction::Edit, id: id(target)? });
            content
        }
        Change::Delete { target } => {
            let mut content = Content::new(mime::DELETION, b"", None);
            content.refers = Some(MessageRef { action: RefAction::Delete, id: id(target)? });
            content
        }
        Change::React { target, emoji, remove } => {
            let reaction = Reaction { to: id(target)?, emoji: emoji.clone(), remove: *remove };
            reaction.check().map_err(|e| e.to_string())?;
            Content::new(mime::REACTION, &reaction.encode(), None)
        }
    })
}

/// Apply `change`, made by `by`, to `target` in this user's (`me`) conversation with `target.peer`. Refused (with
/// the reason) when `by` may not make it.
pub fn apply(target: &mut Message, by: &str, me: &str, change: &Change) -> Result<(), &'static str> {
    match change {
        Change::Edit { text, mime, .. } => {
            if target.from != by {
                return Err("only its author may edit a message");
            }
            if target.deleted {
                return Err("the message was deleted");
            }
            target.text.clone_from(text);
            target.mime.clone_from(mime);
            target.edited = true;
        }
        Change::Delete { .. } => {
            if target.from != by {
                return Err("only its author may delete a message in a direct conversation");
            }
            target.deleted = true;
            target.text.clear();
            target.reactions.clear();
        }
        Change::React { emoji, remove, .. } => {
            if by != me && by != target.peer {
                return Err("only the conversation's members may react");
            }
            if *remove {
                if let Some(who) = target.reactions.get_mut(emoji) {
                    who.remove(by);
                    if who.is_empty() {
                        target.reactions.remove(emoji);
                    }
                }
            } else {
                target.reactions.entry(emoji.clone()).or_default().insert(by.to_owned());
            }
        }
    }
    Ok(())
}

/// One line of the conversation list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The other party.
    pub peer: String,
    /// The newest message's text (empty when deleted).
    pub last: String,
    /// Its time.
    pub ts: u64,
    /// Incoming messages not yet read.
    pub unread: usize,
}

/// The conversation list, newest first, from every stored message.
pub fn summaries<'a>(messages: impl IntoIterator<Item = &'a Message>) -> Vec<Summary> {
    let mut by_peer: BTreeMap<&str, Summary> = BTreeMap::new();
    for m in messages {
        let entry =
            by_peer.entry(&m.peer).or_insert_with(|| Summary { peer: m.peer.clone(), last: String::new(), ts: 0, unread: 0 });
        if !m.outgoing && !m.read {
            entry.unread += 1;
        }
        if m.ts >= entry.ts {
            entry.ts = m.ts;
            entry.last = if m.deleted { String::new() } else { m.text.chars().take(80).collect() };
        }
    }
    let mut list: Vec<Summary> = by_peer.into_values().collect();
    list.sort_by(|a, b| b.ts.cmp(&a.ts).then_with(|| a.peer.cmp(&b.peer)));
    list
}

/// Whether `m` matches every word of `query` (case-insensitive), for the local search.
pub fn matches(m: &Message, query: &str) -> bool {
    let text = m.text.to_lowercase();
    let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    !m.deleted && !words.is_empty() && words.iter().all(|w| text.contains(w.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "01HZY3J5Q8M4W2K7N6P9R0S1T2";

    fn message(from: &str, peer: &str, outgoing: bool) -> Message {
        Message {
            id: A.into(),
            peer: peer.into(),
            from: from.into(),
            outgoing,
            ts: 1,
            mime: mime::TEXT.into(),
            text: "hello".into(),
            status: "received".into(),
            reply_to: None,
            edited: false,
            deleted: false,
            reactions: BTreeMap::new(),
            read: false,
        }
    }

    #[test]
    fn a_text_message_and_each_change_round_trip_through_content_documents() {
        let limits = Limits::default();
        let text = text_content("hi **@bob**", Some(A));
        assert_eq!(
            decode(&text.encode(), None, &limits),
            Decoded::Text { mime: mime::MARKDOWN.into(), text: "hi **@bob**".into(), reply_to: Some(A.into()) }
        );
        for change in [
            Change::Edit { target: A.into(), text: "new".into(), mime: mime::MARKDOWN.into() },
            Change::Delete { target: A.into() },
            Change::React { target: A.into(), emoji: "🎉".into(), remove: false },
        ] {
            let content = change_content(&change).expect("content");
            assert_eq!(decode(&content.encode(), content.refers, &limits), Decoded::Change(change));
        }
    }

    #[test]
    fn a_clear_reference_that_differs_from_the_encrypted_one_is_refused() {
        let limits = Limits::default();
        let edit = change_content(&Change::Edit { target: A.into(), text: "x".into(), mime: mime::TEXT.into() }).expect("content");
        assert!(matches!(decode(&edit.encode(), None, &limits), Decoded::Unreadable(_)), "around the relay's checks");
        let other = MessageRef { action: RefAction::Delete, id: A.parse().expect("id") };
        assert!(matches!(decode(&edit.encode(), Some(other), &limits), Decoded::Unreadable(_)), "rewritten");
        let plain = text_content("x", None);
        assert!(matches!(decode(&plain.encode(), Some(other), &limits), Decoded::Unreadable(_)), "claimed in clear only");
        assert!(matches!(decode(b"{not json", None, &limits), Decoded::Unreadable(_)));
    }

    #[test]
    fn only_the_author_edits_or_deletes_and_members_react() {
        // alice's view of bob's message in their conversation.
        let mut m = message("bob", "bob", false);
        let edit = Change::Edit { target: A.into(), text: "changed".into(), mime: mime::TEXT.into() };
        assert!(apply(&mut m, "mallory", "alice", &edit).is_err());
        assert!(apply(&mut m, "alice", "alice", &edit).is_err(), "not the author");
        assert_eq!(m.text, "hello");
        apply(&mut m, "bob", "alice", &edit).expect("the author edits");
        assert!(m.edited && m.text == "changed");
        let tada = Change::React { target: A.into(), emoji: "🎉".into(), remove: false };
        apply(&mut m, "bob", "alice", &tada).expect("the peer reacts");
        apply(&mut m, "alice", "alice", &tada).expect("this user reacts");
        assert!(apply(&mut m, "mallory", "alice", &tada).is_err(), "a stranger does not");
        assert_eq!(m.reactions["🎉"], BTreeSet::from(["alice".to_owned(), "bob".to_owned()]));
        apply(&mut m, "bob", "alice", &Change::React { target: A.into(), emoji: "🎉".into(), remove: true }).expect("taken back");
        apply(&mut m, "alice", "alice", &Change::React { target: A.into(), emoji: "🎉".into(), remove: true }).expect("taken back");
        assert!(m.reactions.is_empty());
        assert!(apply(&mut m, "alice", "alice", &Change::Delete { target: A.into() }).is_err(), "not the author");
        apply(&mut m, "bob", "alice", &Change::Delete { target: A.into() }).expect("the author deletes");
        assert!(m.deleted && m.text.is_empty());
        assert!(apply(&mut m, "bob", "alice", &edit).is_err(), "a deleted message stays deleted");
    }

    #[test]
    fn the_conversation_list_counts_unread_and_sorts_newest_first() {
        let mut a = message("bob", "bob", false);
        let mut b = message("alice", "carol", true);
        b.ts = 5;
        let mut c = message("bob", "bob", false);
        c.ts = 3;
        c.text = "newer".into();
        a.read = true;
        let list = summaries([&a, &b, &c]);
        assert_eq!(list.iter().map(|s| (s.peer.as_str(), s.unread)).collect::<Vec<_>>(), [("carol", 0), ("bob", 1)]);
        assert_eq!(list[1].last, "newer");
    }

    #[test]
    fn search_needs_every_word_and_skips_deleted_messages() {
        let mut m = message("bob", "bob", false);
        m.text = "The Quarterly Report is ready".into();
        assert!(matches(&m, "report quarterly"));
        assert!(!matches(&m, "report missing"));
        assert!(!matches(&m, "  "));
        m.deleted = true;
        assert!(!matches(&m, "report"));
    }
}
