//! The one error type of the end-to-end modules (identity, prekeys, PQXDH, ratchet). It names what was wrong with
//! the input; it never carries key material.

/// Why an end-to-end operation was refused. Every variant leaves the caller's state as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum E2eError {
    /// Bytes that should be a key, ciphertext or message have the wrong length or encoding.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A public key is not acceptable (not a valid point or ML-KEM key).
    #[error("invalid public key: {0}")]
    InvalidKey(&'static str),
    /// A signature does not verify: the key or certificate was not issued by whom it claims.
    #[error("signature on the {0} does not verify")]
    BadSignature(&'static str),
    /// An X25519 agreement gave the all-zero output (a low-order point): the peer's key is not acceptable.
    #[error("X25519 agreement with a low-order point refused")]
    NonContributory,
    /// A first message names a prekey this device does not hold (already used, expired, or never issued).
    #[error("unknown {kind} prekey {id}: already used or expired; the sender must fetch a new bundle")]
    UnknownPrekey {
        /// Which kind of prekey.
        kind: &'static str,
        /// The id the message named.
        id: u32,
    },
    /// A first message made with the last-resort prekey was seen before.
    #[error("first message replayed")]
    Replay,
    /// A message whose key was already used or deleted (a duplicate or a replay).
    #[error("message already received or its key expired")]
    Duplicate,
    /// A message counter jumps further ahead than the limit allows.
    #[error("message counter jumps {jump} ahead, more than the limit of {limit}")]
    TooFarAhead {
        /// How far the counter jumped.
        jump: u64,
        /// The limit (`MAX_SKIP`).
        limit: u32,
    },
    /// The ciphertext or its associated data was altered, or it belongs to another session.
    #[error("decryption failed: the message was altered or is not for this session")]
    DecryptFailed,
    /// A message carries a session set-up that does not match this session.
    #[error("message belongs to a different session set-up")]
    WrongSession,
    /// A counter would overflow; the session must be replaced.
    #[error("session exhausted: start a new session")]
    Exhausted,
    /// More items than the protocol allows in one request.
    #[error("too many {0}")]
    TooMany(&'static str),
}
