//! The primitive steps every end-to-end construction is built from: X25519 agreement that refuses low-order
//! points, HKDF-SHA-256, the Double Ratchet's chain steps, and the labels that separate each use. The labels are
//! part of the wire format (docs/crypto.md); changing one breaks interoperability.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::E2eError;

/// HKDF info of the PQXDH key derivation (Signal's "info" names curve, hash and KEM); the transcript hash follows it.
pub const PQXDH_INFO: &[u8] = b"imfree_PQXDH_CURVE25519_SHA-256_ML-KEM-768";
/// Label of the PQXDH transcript hash.
pub const PQXDH_TRANSCRIPT_LABEL: &str = "imfree/v1/pqxdh-transcript";
/// HKDF info of the root-key step (KDF_RK).
pub const RATCHET_ROOT_INFO: &[u8] = b"imfree/v1/ratchet-root";
/// HKDF info that expands a message key into the AEAD key and nonce.
pub const MESSAGE_KEYS_INFO: &[u8] = b"imfree/v1/message-keys";
/// Label of the replay-cache key of a first message.
pub const REPLAY_LABEL: &str = "imfree/v1/pqxdh-replay";

/// 32 bytes of 0xFF prepended to the PQXDH key material (X25519 "F" of the Signal specification).
pub(crate) const PQXDH_F: [u8; 32] = [0xFF; 32];

/// X25519 agreement; the all-zero output of a low-order peer key is refused (RFC 7748 section 6.1).
pub fn x25519(secret: &[u8; 32], public: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, E2eError> {
    let secret = x25519_dalek::StaticSecret::from(*secret);
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*public));
    if !shared.was_contributory() {
        return Err(E2eError::NonContributory);
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// The X25519 public key of a secret (the secret is clamped as RFC 7748 says).
pub fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes()
}

/// HKDF-SHA-256 (RFC 5869) into a fixed-size output.
pub fn hkdf_sha256<const L: usize>(salt: &[u8], ikm: &[u8], info: &[&[u8]]) -> Zeroizing<[u8; L]> {
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    let mut out = Zeroizing::new([0u8; L]);
    // L is a compile-time constant far below HKDF's 255 * 32 limit.
    hk.expand_multi_info(info, out.as_mut()).expect("HKDF output length within limit");
    out
}

/// KDF_RK of the Double Ratchet: HKDF(salt = root key, ikm = DH output) → (new root key, chain key).
pub(crate) fn kdf_rk(root: &[u8; 32], dh_out: &[u8; 32]) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let out = hkdf_sha256::<64>(root, dh_out, &[RATCHET_ROOT_INFO]);
    split_64(&out)
}

/// KDF_CK of the Double Ratchet: message key = HMAC(ck, 0x01), next chain key = HMAC(ck, 0x02).
pub(crate) fn kdf_ck(chain: &[u8; 32]) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let mk = hmac_sha256(chain, &[0x01]);
    let next = hmac_sha256(chain, &[0x02]);
    (next, mk)
}

/// HMAC-SHA-256.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    Zeroizing::new(mac.finalize().into_bytes().into())
}

/// SHA-256.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn split_64(out: &[u8; 64]) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let mut a = Zeroizing::new([0u8; 32]);
    let mut b = Zeroizing::new([0u8; 32]);
    a.copy_from_slice(&out[..32]);
    b.copy_from_slice(&out[32..]);
    (a, b)
}
