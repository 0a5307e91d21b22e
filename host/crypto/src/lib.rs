//! imfree cryptography, as a pure library: no I/O, no async runtime, `forbid(unsafe_code)`; builds for
//! wasm32-unknown-unknown so that the browser runs the same code.
//!
//! - [`noise`]: the IMF session handshake between a device and its relay (Noise IK / XX with snow) and the framed
//!   transport that protects every later frame.
//! - [`device`]: a device's long-term keys (Ed25519 signing, X25519 static).
//!
//! The exact constructions, labels and byte layouts are specified in `docs/crypto.md`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod device;
pub mod noise;
