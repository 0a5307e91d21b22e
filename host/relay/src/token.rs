//! Session tokens: bearer secrets handed to a client after login.
//!
//! Owns making tokens, hashing them for storage and comparing secrets in constant time. The store keeps only the
//! SHA-256 of a token, so a leaked database does not hand out live sessions; this module must not persist or log
//! tokens itself.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Random bytes in a token: 256 bits, beyond guessing.
pub const TOKEN_BYTES: usize = 32;

/// A session token as sent to the client (base64url without padding).
///
/// It is a bearer secret: `Debug` prints `SessionToken(..)` and there is no `Display`, so it cannot end up in
/// logs by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl SessionToken {
    /// The token text, to send to the client once.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the token, returning its text.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(..)")
    }
}

/// Makes a new random session token and returns it with its SHA-256 (what the store should keep).
pub fn new_session_token() -> (SessionToken, [u8; 32]) {
    let mut bytes = [0u8; TOKEN_BYTES];
    OsRng.fill_bytes(&mut bytes);
    let text = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_token(&text);
    (SessionToken(text), hash)
}

/// SHA-256 of the token's text bytes: the lookup key for a presented token.
///
/// Looking sessions up by hash (rather than comparing presented tokens to stored ones) means the database
/// index, not a string comparison, does the matching, so there is no timing side channel on the token itself.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two byte strings in time that depends only on their lengths, not their contents.
///
/// Unequal lengths return `false` immediately; lengths of secrets here (hashes, codes) are public.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape_and_hash() {
        let (token, hash) = new_session_token();
        assert_eq!(token.as_str().len(), 43); // 32 bytes in unpadded base64
        assert!(
            token
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(hash, hash_token(token.as_str()));
        let decoded = URL_SAFE_NO_PAD.decode(token.as_str()).expect("base64url");
        assert_eq!(decoded.len(), 32);
        let (other, other_hash) = new_session_token();
        assert_ne!(token, other);
        assert_ne!(hash, other_hash);
        assert_eq!(token.clone().into_string(), token.as_str());
    }

    #[test]
    fn debug_hides_secret() {
        let (token, _) = new_session_token();
        let shown = format!("{token:?}");
        assert_eq!(shown, "SessionToken(..)");
        assert!(!shown.contains(token.as_str()));
    }

    #[test]
    fn hash_is_sha256_of_text() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            hex::encode(hash_token("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
