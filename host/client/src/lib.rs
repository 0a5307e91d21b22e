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
pub use imfree_client_core::ClientError;
pub use imfree_proto::ErrorCode;

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Unix time in seconds.
pub fn now_secs() -> u64 {
    (now_ms() / 1000) as u64
}
