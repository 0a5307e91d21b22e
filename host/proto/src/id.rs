//! Envelope identifiers: ULIDs, chosen by the sender, unique per envelope, the key for de-duplication everywhere.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A ULID in Crockford base32 (26 characters), upper-cased on parse. The sender picks it; relay and clients
/// de-duplicate by it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnvelopeId([u8; 26]);

/// Why a string is not an [`EnvelopeId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an envelope id is 26 Crockford base32 characters (a ULID)")]
pub struct IdError;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

impl EnvelopeId {
    /// A new id from a millisecond timestamp and 80 random bits, in ULID layout (time-ordered).
    pub fn from_parts(unix_ms: u64, random: u128) -> Self {
        let value: u128 = ((unix_ms as u128 & 0xFFFF_FFFF_FFFF) << 80) | (random & ((1u128 << 80) - 1));
        let mut out = [0u8; 26];
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 125 - 5 * i as u32;
            *slot = CROCKFORD[((value >> shift) & 0x1F) as usize];
        }
        EnvelopeId(out)
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        // Only ASCII from CROCKFORD is ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The millisecond timestamp encoded in the id.
    pub fn timestamp_ms(&self) -> u64 {
        let mut value: u128 = 0;
        for c in self.0 {
            let digit = CROCKFORD.iter().position(|d| *d == c).unwrap_or(0) as u128;
            value = (value << 5) | digit;
        }
        (value >> 80) as u64
    }
}

impl FromStr for EnvelopeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bytes = s.as_bytes();
        if bytes.len() != 26 || bytes[0] > b'7' {
            return Err(IdError);
        }
        let mut out = [0u8; 26];
        for (slot, &c) in out.iter_mut().zip(bytes) {
            let up = c.to_ascii_uppercase();
            if !CROCKFORD.contains(&up) {
                return Err(IdError);
            }
            *slot = up;
        }
        Ok(EnvelopeId(out))
    }
}

impl fmt::Display for EnvelopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for EnvelopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnvelopeId({})", self.as_str())
    }
}

impl Serialize for EnvelopeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EnvelopeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_time_order() {
        let a = EnvelopeId::from_parts(1_700_000_000_000, 42);
        let b = EnvelopeId::from_parts(1_700_000_000_001, 0);
        assert!(a < b);
        assert_eq!(a.timestamp_ms(), 1_700_000_000_000);
        assert_eq!(a.to_string().parse::<EnvelopeId>().unwrap(), a);
    }

    #[test]
    fn refuses_wrong_length_alphabet_and_overflow() {
        assert!("".parse::<EnvelopeId>().is_err());
        assert!("01HZY6Q0V2W8K3D9M5T7R4X1A".parse::<EnvelopeId>().is_err());
        assert!("01HZY6Q0V2W8K3D9M5T7R4X1AU".parse::<EnvelopeId>().is_err(), "U is not Crockford");
        assert!("81HZY6Q0V2W8K3D9M5T7R4X1AB".parse::<EnvelopeId>().is_err(), "over 128 bits");
        assert!("01hzy6q0v2w8k3d9m5t7r4x1ab".parse::<EnvelopeId>().is_ok());
    }
}
