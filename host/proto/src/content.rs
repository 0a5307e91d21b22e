//! The content document: what a message says, as the recipient's client sees it after decryption.
//!
//! Before end-to-end encryption is on, the payload of an envelope with outer type [`crate::mime::PLAIN_CONTENT`] is
//! exactly this document as JSON. With E2E it is the plaintext inside the ciphertext. The relay never parses it.

use serde::{Deserialize, Serialize};

use crate::compress::{self, Compression, DecompressError};
use crate::{EnvelopeId, Limits, Payload};

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
        Content { mime: mime.into(), body: Payload(body), compress, reply_to: None }
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
}
