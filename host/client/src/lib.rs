//! The imfree client engine as a library: register, log in, connect (with retry), send through a durable outbox,
//! receive into a local SQLite store before acknowledging, presence, typing, receipts, TOTP.
//!
//! ```no_run
//! # async fn demo() -> Result<(), imfree_client::ClientError> {
//! use imfree_client::{Client, Event, Trust};
//! let client = Client::login(None, "wss://127.0.0.1:7878", "alice", "correct horse", None, Trust::default()).await?;
//! client.compose("bob", "text/plain", b"hello").await?;
//! let mut session = client.connect().await?;
//! session.sync_outbox(std::time::Duration::from_secs(10)).await?;
//! while let Ok(event) = session.next_event().await {
//!     if let Event::Message(m) = event { println!("{}: {}", m.from, String::from_utf8_lossy(&m.body)); }
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod connection;
pub mod conversation;
pub mod devices;
pub mod e2e;
pub mod engine;
pub mod files;
pub mod groups;
pub mod home;
pub mod linking;
pub mod search;
pub mod sso;
pub mod store;
pub mod tls;
pub mod vault;

pub use engine::{Client, Event, Session, Trust, new_envelope_id};
pub use imfree_proto::ErrorCode;

/// What can go wrong in the client. Each message says what happened and what to do.
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

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
