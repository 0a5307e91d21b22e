//! Replies, edits, deletions and reactions: the client side.
//!
//! Each is a message of its own, end-to-end encrypted like any other. An edit or a deletion also names the message it
//! changes in the envelope's clear metadata (`refers`), so that the relay can refuse what the sender may not do and
//! keep its audit log; the same reference is inside the encrypted content, and a delivery whose two references differ
//! is refused — otherwise a client could change a message past the relay's checks and audit. Who may change what is
//! checked again on every receiving device when the change is stored ([`crate::store::LocalStore::insert_incoming`]):
//! an edit only by the author, a deletion by the author or a group admin (read from the verified membership log), a
//! reaction by anyone in the conversation.

use imfree_proto::content::Reaction;
use imfree_proto::compress::Compression;
use imfree_proto::content::Content;
use imfree_proto::{EnvelopeId, MessageRef, RefAction, mime};

use crate::engine::{Client, new_envelope_id};
use crate::store::{ChangeAction, MessageChange, StoredMessage};
use crate::ClientError;

/// Fill in what a content document says about other messages: reply, change, mentions.
pub(crate) fn describe(message: &mut StoredMessage, content: &Content) {
    message.reply_to = content.reply_to.map(|r| r.to_string());
    message.mentions = content.mentions.clone();
    message.change = match (content.refers, content.mime.as_str()) {
        (Some(r), _) => Some(MessageChange {
            action: match r.action {
                RefAction::Edit => ChangeAction::Edit,
                RefAction::Delete => ChangeAction::Delete,
            },
            target: r.id.to_string(),
            by_admin: false,
        }),
        (None, mime::REACTION) => match Reaction::decode(&message.body) {
            Ok(reaction) => Some(MessageChange { action: ChangeAction::React, target: reaction.to.to_string(), by_admin: false }),
            Err(_) => None,
        },
        (None, _) => None,
    };
}

/// The reference inside the encrypted content must be the one the relay saw in clear, or the change went around
/// the relay's checks and audit log (or the relay rewrote it).
pub(crate) fn check_clear_reference(content: &Content, clear: Option<MessageRef>) -> Result<(), &'static str> {
    if content.refers == clear {
        Ok(())
    } else if content.refers.is_some() {
        Err("an edit or deletion whose clear reference does not match the encrypted one was refused")
    } else {
        Err("a message that claims to change another, without saying so inside, was refused")
    }
}

/// A text body with the users it mentions (`@name` outside code), compressed when that helps.
fn text_content(body_mime: &str, body: &str) -> Content {
    let mut content = Content::new(body_mime, body.as_bytes(), Some(Compression::Gzip));
    content.mentions = imfree_markdown::mentions(body);
    content
}

impl Client {
    /// The message `id`, if it is one that can be answered, edited, deleted or reacted to (not itself a change).
    async fn target(&self, id: &str) -> Result<StoredMessage, ClientError> {
        id.parse::<EnvelopeId>().map_err(|_| ClientError::Config(format!("{id:?} is not a message id")))?;
        match self.store().message(id).await? {
            Some(m) if m.change.is_none() && !m.status.starts_with("event") && m.status != "warning" => Ok(m),
            Some(_) => Err(ClientError::Config(format!("{id} is an edit, reaction or notice, not a message"))),
            None => Err(ClientError::Config(format!("no message {id} on this device"))),
        }
    }

    /// Send a text message (`text/plain` or `text/markdown`) to a user or `group:<id>`, optionally as a reply; the
    /// users it mentions travel with it. Returns its id; it goes out on the next flush.
    pub async fn compose_text(&self, to: &str, body_mime: &str, body: &str, reply_to: Option<&str>) -> Result<String, ClientError> {
        let mut content = text_content(body_mime, body);
        if let Some(reply_to) = reply_to {
            let target = self.target(reply_to).await?;
            if target.peer(self.user()) != to {
                return Err(ClientError::Config(format!("message {reply_to} is not in the conversation with {to}")));
            }
            content.reply_to = reply_to.parse().ok();
        }
        self.compose_document(to, &content).await
    }

    /// Reply to message `id` in its conversation.
    pub async fn reply(&self, id: &str, body_mime: &str, body: &str) -> Result<String, ClientError> {
        let target = self.target(id).await?;
        let to = target.peer(self.user()).to_owned();
        self.compose_text(&to, body_mime, body, Some(id)).await
    }

    /// Replace the content of this user's message `id`. Returns the edit's own id.
    pub async fn edit(&self, id: &str, body_mime: &str, body: &str) -> Result<String, ClientError> {
        let target = self.target(id).await?;
        if target.from != self.user() {
            return Err(ClientError::Config("only its author may edit a message".into()));
        }
        if target.deleted {
            return Err(ClientError::Config(format!("message {id} was deleted")));
        }
        let mut content = text_content(body_mime, body);
        content.refers = Some(MessageRef { action: RefAction::Edit, id: id.parse().map_err(|_| ClientError::Config("bad id".into()))? });
        content.reply_to = target.reply_to.as_deref().and_then(|r| r.parse().ok());
        self.compose_document(target.peer(self.user()), &content).await
    }

    /// Delete message `id`: this user's own, or — as a group admin — someone else's in the group. The relay and
    /// every recipient check that this user may.
    pub async fn delete(&self, id: &str) -> Result<String, ClientError> {
        let target = self.target(id).await?;
        let peer = target.peer(self.user()).to_owned();
        if target.from != self.user() && !peer.starts_with(crate::groups::GROUP_PREFIX) {
            return Err(ClientError::Config("only its author may delete a message in a direct conversation".into()));
        }
        let mut content = Content::new(mime::DELETION, b"", None);
        content.refers = Some(MessageRef { action: RefAction::Delete, id: id.parse().map_err(|_| ClientError::Config("bad id".into()))? });
        let deletion = new_envelope_id();
        self.compose_with_id(&deletion, &peer, &content).await?;
        Ok(deletion)
    }

    /// Add (or with `remove`, take back) a reaction to message `id`: an emoji, or a shortcode such as `:tada:`.
    pub async fn react(&self, id: &str, emoji: &str, remove: bool) -> Result<String, ClientError> {
        let target = self.target(id).await?;
        let emoji = match emoji.strip_prefix(':').and_then(|e| e.strip_suffix(':')) {
            Some(name) if !name.is_empty() => {
                imfree_markdown::shortcode(name).ok_or_else(|| ClientError::Config(format!("no emoji is called :{name}:")))?
            }
            _ => emoji,
        };
        let reaction = Reaction { to: id.parse().map_err(|_| ClientError::Config("bad id".into()))?, emoji: emoji.to_owned(), remove };
        reaction.check().map_err(|e| ClientError::Config(e.to_string()))?;
        let content = Content::new(mime::REACTION, &reaction.encode(), None);
        self.compose_document(target.peer(self.user()), &content).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content_with(refers: Option<MessageRef>) -> Content {
        let mut c = Content::new("text/plain", b"x", None);
        c.refers = refers;
        c
    }

    #[test]
    fn the_clear_reference_must_match_the_encrypted_one() {
        let a = MessageRef { action: RefAction::Edit, id: "01HZY3J5Q8M4W2K7N6P9R0S1T2".parse().unwrap() };
        let b = MessageRef { action: RefAction::Delete, id: a.id };
        assert!(check_clear_reference(&content_with(None), None).is_ok());
        assert!(check_clear_reference(&content_with(Some(a)), Some(a)).is_ok());
        assert!(check_clear_reference(&content_with(Some(a)), None).is_err(), "around the relay");
        assert!(check_clear_reference(&content_with(Some(a)), Some(b)).is_err(), "rewritten");
        assert!(check_clear_reference(&content_with(None), Some(a)).is_err(), "a clear reference with nothing inside");
    }

    #[test]
    fn a_reaction_describes_itself_as_a_change_of_its_target() {
        let to: EnvelopeId = "01HZY3J5Q8M4W2K7N6P9R0S1T2".parse().unwrap();
        let body = Reaction { to, emoji: "🎉".into(), remove: false }.encode();
        let content = Content::new(mime::REACTION, &body, None);
        let mut m = StoredMessage::new("01HZY3J5Q8M4W2K7N6P9R0S1T3".into(), false, "bob".into(), "d".into(), "alice".into(), 1, mime::REACTION.into(), body, "received");
        describe(&mut m, &content);
        assert_eq!(m.change, Some(MessageChange { action: ChangeAction::React, target: to.to_string(), by_admin: false }));
    }
}
