//! The inner envelope: what the ratchet encrypts. It carries the sender's message id (clients deduplicate by it)
//! and the sender's sequence number (clients show gaps and reordering), both authenticated because they are inside
//! the ciphertext, and pads the body so that ciphertext lengths reveal only a size class.

use crate::encoding::Reader;
use crate::error::E2eError;

/// Version byte of the inner envelope.
pub const ENVELOPE_VERSION: u8 = 1;
/// The encoded envelope is zero-padded to a multiple of this many bytes.
pub const PADDING_BLOCK: usize = 64;
/// Largest body: 16 MiB (files travel as separately encrypted chunks, not inside messages).
pub const MAX_BODY: usize = 16 << 20;
const FIXED_LEN: usize = 1 + 16 + 8 + 4;

/// One message as the sender wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InnerMessage {
    /// The sender's id for the message (e.g. a ULID), unique per sender.
    pub id: [u8; 16],
    /// The sending device's sequence number for this conversation, counted by the client.
    pub sequence: u64,
    /// The body (an encoded IMF message; opaque here).
    pub body: Vec<u8>,
}

impl InnerMessage {
    /// `version (1) || id (16) || sequence (u64 BE) || body length (u32 BE) || body || zero padding` to a multiple
    /// of [`PADDING_BLOCK`].
    pub fn encode(&self) -> Result<Vec<u8>, E2eError> {
        if self.body.len() > MAX_BODY {
            return Err(E2eError::TooMany("bytes in a message body"));
        }
        let len = FIXED_LEN + self.body.len();
        let padded = len.div_ceil(PADDING_BLOCK) * PADDING_BLOCK;
        let mut out = Vec::with_capacity(padded + crate::aead::TAG_LEN);
        out.push(ENVELOPE_VERSION);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.body);
        out.resize(padded, 0);
        Ok(out)
    }

    /// Strict decoding: known version, length within bounds, padding all zero and no longer than a block.
    pub fn decode(bytes: &[u8]) -> Result<Self, E2eError> {
        let mut r = Reader::new(bytes);
        if r.u8("envelope version")? != ENVELOPE_VERSION {
            return Err(E2eError::Malformed("envelope version"));
        }
        let id = r.array("message id")?;
        let sequence = r.u64("sequence number")?;
        let len = r.u32("body length")? as usize;
        if len > MAX_BODY {
            return Err(E2eError::Malformed("body length"));
        }
        let body = r.take(len, "body")?.to_vec();
        let padding = r.rest();
        if padding.len() >= PADDING_BLOCK || padding.iter().any(|b| *b != 0) {
            return Err(E2eError::Malformed("envelope padding"));
        }
        Ok(InnerMessage { id, sequence, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        for n in [0usize, 1, 34, 35, 36, 100, 1000] {
            let m = InnerMessage { id: [7; 16], sequence: n as u64, body: vec![0xAB; n] };
            let enc = m.encode().unwrap();
            assert_eq!(enc.len() % PADDING_BLOCK, 0);
            assert_eq!(InnerMessage::decode(&enc).unwrap(), m);
        }
        let m = InnerMessage { id: [1; 16], sequence: 1, body: b"hi".to_vec() };
        let mut enc = m.encode().unwrap();
        *enc.last_mut().unwrap() = 1;
        assert!(InnerMessage::decode(&enc).is_err());
        let mut enc = m.encode().unwrap();
        enc.extend_from_slice(&[0; 64]);
        assert!(InnerMessage::decode(&enc).is_err());
        assert!(InnerMessage::decode(&[]).is_err());
        assert!(InnerMessage::decode(&[2; 64]).is_err());
    }
}
