//! IMF v1, the wire protocol between imfree clients and relays.
//!
//! This crate owns the frame types, their validation, the limits that bound every decoder, and the optional payload
//! compression. It does no I/O and knows nothing of transports or storage: the relay and the client (native or
//! browser) both build on it. The normative specification is `docs/protocol.md`; the types here follow it.
//!
//! ```
//! use imfree_proto::{Frame, FrameBody, Limits, Recipient, Send};
//! let frame = Frame::new(FrameBody::Send(Send {
//!     id: "01HZY6Q0V2W8K3D9M5T7R4X1AB".parse().unwrap(),
//!     to: Recipient::User("bob".into()),
//!     mime: imfree_proto::mime::PLAIN_CONTENT.into(),
//!     data: b"opaque".to_vec().into(),
//!     payloads: vec![],
//!     refers: None,
//! }));
//! let json = frame.encode();
//! let back = Frame::decode(json.as_bytes(), &Limits::default()).unwrap();
//! assert_eq!(back, frame);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
pub mod compress;
pub mod content;
pub mod file;
mod error;
mod frame;
mod id;
mod limits;

pub use error::{DecodeError, ErrorCode};
pub use frame::*;
pub use id::{EnvelopeId, IdError};
pub use limits::Limits;

/// The protocol version this crate speaks. Every frame carries it in `v`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Content types the relay and clients agree on. Message content types proper travel inside the (encrypted) payload.
pub mod mime {
    /// Outer type of a payload that is an unencrypted [`crate::content::Content`] document (before E2E is on).
    pub const PLAIN_CONTENT: &str = "application/vnd.imfree.plain+json";
    /// Outer type of an end-to-end encrypted payload; the relay sees only this and a size.
    pub const E2E: &str = "application/vnd.imfree.e2e";
    /// Plain text.
    pub const TEXT: &str = "text/plain";
    /// CommonMark.
    pub const MARKDOWN: &str = "text/markdown";
    /// A reaction ([`crate::content::Reaction`]) to an earlier message.
    pub const REACTION: &str = "application/vnd.imfree.reaction+json";
    /// A deletion of an earlier message (the content's `refers` names it; the body is empty).
    pub const DELETION: &str = "application/vnd.imfree.deletion";
}
