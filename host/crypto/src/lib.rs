//! imfree cryptography, as a pure library: no I/O, no async runtime, `forbid(unsafe_code)`; builds for
//! wasm32-unknown-unknown so that the browser runs the same code.
//!
//! - [`noise`]: the IMF session handshake between a device and its relay (Noise IK / XX with snow) and the framed
//!   transport that protects every later frame.
//! - [`device`]: a device's long-term keys (Ed25519 signing, X25519 static).
//! - [`identity`]: the user identity key and the device certificates it signs.
//! - [`prekeys`]: signed, one-time and ML-KEM prekeys, the bundle the relay serves, uploads with proof of
//!   possession, and a device-local store of prekey secrets.
//! - [`pqxdh`]: asynchronous session set-up (Signal's PQXDH with ML-KEM-768, transcript-bound).
//! - [`ratchet`]: the Double Ratchet session, its wire message and the replay-cache hook.
//! - [`envelope`]: the inner envelope (message id, sequence number, padding) inside every ciphertext.
//! - [`membership`]: the signed, hash-chained group membership log and its verifier.
//! - [`group`]: sender keys: group messages bound to the membership head, signed per sender chain.
//! - [`safety`]: safety numbers and their scannable payload.
//! - [`file`]: end-to-end encrypted files: per-file key, STREAM-style chunk sealing, password wrap, descriptor.
//! - [`keystore`]: the passphrase-sealed key store (Argon2id + XChaCha20-Poly1305).
//! - [`linking`]: device linking with a code or QR payload over Noise XXpsk3.
//! - [`revocation`]: the signed device revocation list.
//! - [`kdf`], [`aead`], [`kem`]: the primitive steps (X25519, HKDF/HMAC, ChaCha20-Poly1305, ML-KEM-768).
//! - [`E2eError`]: why an end-to-end operation was refused.
//!
//! The exact constructions, labels and byte layouts are specified in `docs/crypto.md`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod aead;
pub mod device;
mod encoding;
pub mod envelope;
pub mod file;
pub mod group;
mod error;
pub mod identity;
pub mod kdf;
pub mod kem;
pub mod keystore;
pub mod linking;
pub mod membership;
pub mod noise;
pub mod pqxdh;
pub mod prekeys;
pub mod ratchet;
pub mod revocation;
pub mod safety;

pub use error::E2eError;
