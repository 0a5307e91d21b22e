//! The imfree client without I/O: what every client — the native engine (tokio, SQLite) and the browser (WebSocket,
//! IndexedDB) — must do the same way, written once.
//!
//! - [`device`]: this device's key store — the user identity (on the devices that hold it), the device certificate,
//!   prekey secrets, the replay cache of last-resort set-ups, the sequence counter — and the pairwise sessions with
//!   each contact device ([`device::PeerSessions`]).
//! - [`pairwise`]: end-to-end messages between two users' devices: reading and checking a contact's device list
//!   (certificates, the identity pinned on first sight, the signed revocation list), encrypting one message for every
//!   device that must get it, and opening a delivery.
//! - [`groups`]: groups — the membership log verified entry by entry (signatures, roles, forks and rollbacks
//!   refused), sender-key chains (made, sent over pairwise sessions, replaced when a member leaves or a device is
//!   revoked), group messages encrypted for the verified head and opened, invite links.
//! - [`relay`]: the connection to the relay without the socket — the IMF Noise handshakes (first contact, resume)
//!   and the sealed frame channel after them.
//! - [`store::KeyStore`], [`groups::GroupStore`], [`directory::KeyDirectory`] and [`groups::GroupRelay`]: what a
//!   driver supplies — where the state is kept, and how the relay's key and group services are asked.
//!   [`store::MemoryStore`] keeps everything in memory.
//!
//! Nothing here reads a clock, a socket or a file: times come in as arguments, randomness from the platform's
//! generator (`getrandom`; in the browser, `crypto.getRandomValues`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod device;
pub mod directory;
pub mod groups;
pub mod pairwise;
pub mod relay;
pub mod store;

pub use imfree_proto::ErrorCode;

/// What can go wrong in a client. Each message says what happened and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No account in this home: register or log in first.
    #[error("not logged in here: run `imfree client register` or `imfree client login` first")]
    NotLoggedIn,
    /// The relay's TLS certificate differs from the pinned one.
    #[error("the relay's TLS certificate changed (pinned {pinned}, presented {presented}); if the operator replaced it, log in again with --accept-new-certificate")]
    CertificateChanged {
        /// Pinned fingerprint.
        pinned: String,
        /// Presented fingerprint.
        presented: String,
    },
    /// The relay's Noise key differs from the pinned one.
    #[error("the relay's Noise key changed (pinned {pinned}, presented {presented}); this may be an attack. If the operator replaced it, log in again with --accept-new-relay-key")]
    RelayKeyChanged {
        /// Pinned key (hex).
        pinned: String,
        /// Presented key (hex), if known.
        presented: String,
    },
    /// The relay refused.
    #[error("the relay refused: {message} ({code})")]
    Refused {
        /// Stable code.
        code: ErrorCode,
        /// Explanation.
        message: String,
    },
    /// The home's key store is locked: no passphrase, or a wrong one.
    #[error("{0}")]
    Locked(String),
    /// Network trouble.
    #[error("network: {0}")]
    Io(String),
    /// The relay broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Local storage failed.
    #[error("local store: {0}")]
    Store(String),
    /// Local configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// End-to-end encryption failed.
    #[error("end-to-end encryption: {0}")]
    E2e(String),
    /// A contact's identity key changed; messages to them are held until the user accepts the new key.
    #[error("{user}'s identity key changed: this can mean a new phone or an attack. Compare safety numbers (`imfree client verify {user}`), then accept with `imfree client trust {user}`; messages to {user} are held until then")]
    IdentityChanged {
        /// The contact.
        user: String,
    },
}

impl From<imfree_crypto::E2eError> for ClientError {
    fn from(e: imfree_crypto::E2eError) -> Self {
        ClientError::E2e(e.to_string())
    }
}
