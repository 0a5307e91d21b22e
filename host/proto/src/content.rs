//! The content document: what a message says, as the recipient's client sees it after decryption.
//!
//! Before end-to-end encryption is on, the payload of an envelope with outer type [`crate::mime::PLAIN_CONTENT`] is
//! exactly this document as JSON. With E2E it is the plaintext inside the ciphertext. The relay never parses it.

use serde::{Deserialize, Serialize};

use crate::compress::{self, Compression, DecompressError};
use crate::{EnvelopeId, Limits, MessageRef, Payload};

/// A message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Content {
    /// The content type of `body` (`text/plain`, `text/markdown`, `audio/ogg; codecs=opus`, …).
    pub mime: String,
    /// The body, possibly compressed.
    pub body: Payload,
    /// How `body` is compressed, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compress: Option<Compression>,
    /// The message this one replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<EnvelopeId>,
    /// For an edit or a deletion: the message it changes. It must equal the envelope's clear `refers`, which the
    /// relay checked; the recipient's client checks again who may change what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refers: Option<MessageRef>,
    /// Users mentioned in the body (`@name`), as the sender's client found them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
}

/// The body of a reaction ([`crate::mime::REACTION`]): an emoji added to, or taken back from, a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reaction {
    /// The message reacted to.
    pub to: EnvelopeId,
    /// The emoji (one grapheme cluster or a short sequence; at most [`Reaction::MAX_EMOJI_BYTES`] bytes, no
    /// control characters).
    pub emoji: String,
    /// True when the reaction is taken back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove: bool,
}

impl Reaction {
    /// Longest reaction, in bytes (family and flag sequences fit).
    pub const MAX_EMOJI_BYTES: usize = 64;

    /// Parse and check a reaction from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, ContentError> {
        let reaction: Reaction = serde_json::from_slice(bytes).map_err(|e| ContentError::Malformed(e.to_string()))?;
        reaction.check()?;
        Ok(reaction)
    }

    /// Check the emoji: not empty, not too long, no control or format-breaking characters.
    pub fn check(&self) -> Result<(), ContentError> {
        if self.emoji.is_empty() || self.emoji.len() > Self::MAX_EMOJI_BYTES {
            return Err(ContentError::Malformed(format!("a reaction is 1 to {} bytes", Self::MAX_EMOJI_BYTES)));
        }
        if self.emoji.chars().any(|c| c.is_control() || c.is_whitespace() || ('\u{202a}'..='\u{202e}').contains(&c) || ('\u{2066}'..='\u{2069}').contains(&c)) {
            return Err(ContentError::Malformed("a reaction may not hold control, space or bidi characters".into()));
        }
        Ok(())
    }

    /// Serialise.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Why a content document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// Not a content document.
    #[error("content is not a valid document: {0}")]
    Malformed(String),
    /// Decompression failed or exceeded its cap.
    #[error(transparent)]
    Decompress(#[from] DecompressError),
}

impl Content {
    /// A content document for `body`, compressed with `alg` when that makes it smaller.
    pub fn new(mime: impl Into<String>, body: &[u8], alg: Option<Compression>) -> Self {
        let (body, compress) = match alg {
            Some(alg) if body.len() >= compress::MIN_COMPRESS_BYTES => {
                let packed = compress::compress(alg, body);
                if packed.len() < body.len() { (packed, Some(alg)) } else { (body.to_vec(), None) }
            }
            _ => (body.to_vec(), None),
        };
        Content { mime: mime.into(), body: Payload(body), compress, reply_to: None, refers: None, mentions: Vec::new() }
    }

    /// Parse a content document from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, ContentError> {
        serde_json::from_slice(bytes).map_err(|e| ContentError::Malformed(e.to_string()))
    }

    /// Serialise.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The body bytes, decompressed under `limits.max_decompressed_bytes`.
    pub fn body_bytes(&self, limits: &Limits) -> Result<Vec<u8>, ContentError> {
        match self.compress {
            None => Ok(self.body.0.clone()),
            Some(alg) => Ok(compress::decompress(alg, &self.body.0, limits.max_decompressed_bytes)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bodies_stay_uncompressed_and_large_ones_shrink() {
        let small = Content::new("text/plain", b"hi", Some(Compression::Gzip));
        assert_eq!(small.compress, None);
        let text = "la ".repeat(2000);
        let big = Content::new("text/plain", text.as_bytes(), Some(Compression::Br));
        assert_eq!(big.compress, Some(Compression::Br));
        let back = Content::decode(&big.encode()).unwrap();
        assert_eq!(back.body_bytes(&Limits::default()).unwrap(), text.as_bytes());
    }

    #[test]
    fn reactions_are_checked() {
        let to: EnvelopeId = "01HZY3J5Q8M4W2K7N6P9R0S1T2".parse().unwrap();
        let ok = Reaction { to, emoji: "🎉".into(), remove: false };
        assert_eq!(Reaction::decode(&ok.encode()).unwrap(), ok);
        let family = Reaction { to, emoji: "👨\u{200d}👩\u{200d}👧\u{200d}👦".into(), remove: true };
        assert_eq!(Reaction::decode(&family.encode()).unwrap(), family);
        for bad in ["", "\u{1b}[2J", "a b", "\u{202e}x", &"x".repeat(65)] {
            let r = Reaction { to, emoji: bad.into(), remove: false };
            assert!(Reaction::decode(&r.encode()).is_err(), "{bad:?} accepted");
        }
        assert!(Reaction::decode(br#"{"to":"01HZY3J5Q8M4W2K7N6P9R0S1T2","emoji":"x","extra":1}"#).is_err());
        assert!(Reaction::decode(b"{").is_err());
    }
}
