//! Message encryption under a single-use message key: ChaCha20-Poly1305 (RFC 8439), key and nonce expanded from
//! the ratchet's message key with HKDF. ChaCha20-Poly1305 is constant-time in portable code (no AES-NI needed, so
//! also in the browser's wasm), and every key encrypts exactly one message, so nonce-misuse resistance
//! (AES-GCM-SIV) buys nothing here.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use crate::error::E2eError;
use crate::kdf::{MESSAGE_KEYS_INFO, hkdf_sha256};

/// Length of the Poly1305 tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;

fn expand(message_key: &[u8; 32]) -> (ChaCha20Poly1305, Nonce) {
    let okm = hkdf_sha256::<44>(&[0u8; 32], message_key, &[MESSAGE_KEYS_INFO]);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&okm[..32]));
    (cipher, *Nonce::from_slice(&okm[32..44]))
}

/// Encrypt `plaintext` under a message key, authenticating `ad`.
pub fn seal(message_key: &[u8; 32], ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let (cipher, nonce) = expand(message_key);
    // Encryption only fails for plaintexts beyond 256 GiB, which the inner envelope cannot hold.
    cipher.encrypt(&nonce, Payload { msg: plaintext, aad: ad }).expect("plaintext within ChaCha20 limits")
}

/// Decrypt and verify; any change to the ciphertext, tag or `ad` fails.
pub fn open(message_key: &[u8; 32], ad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, E2eError> {
    let (cipher, nonce) = expand(message_key);
    cipher.decrypt(&nonce, Payload { msg: ciphertext, aad: ad }).map_err(|_| E2eError::DecryptFailed)
}
