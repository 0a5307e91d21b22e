//! The primitive steps every end-to-end construction is built from: X25519 agreement that refuses low-order
//! points, HKDF-SHA-256, the Double Ratchet's chain steps, and the labels that separate each use. The labels are
//! part of the wire format (docs/crypto.md); changing one breaks interoperability.

use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::montgomery::MontgomeryPoint;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

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
    X25519Peer::new(public).agree(secret)
}

/// A peer's X25519 public key, converted once for several agreements with it (PQXDH uses the signed prekey twice
/// on the initiator's side and the ephemeral key three times on the responder's).
///
/// The agreement is RFC 7748's X25519, byte for byte, computed on the birationally equivalent Edwards curve: u is
/// mapped to an Edwards point (either sign: ±P give the same u), multiplied by the clamped scalar with
/// curve25519-dalek's constant-time variable-base multiplication (its AVX2 backend when the CPU has it, chosen at
/// run time), and mapped back to u. With AVX2 that is about a fifth faster than the Montgomery ladder
/// (docs/crypto.md, "Cost"); without it (other CPUs, WebAssembly in the browser) the serial Edwards multiplication
/// plus the two conversions would be slower than the ladder, so there every agreement takes the ladder. A u that is
/// not on the curve but on its twist has no Edwards point; those public keys take the ladder too. Which path runs
/// depends only on the CPU and the public key, never on the secret.
pub struct X25519Peer {
    public: MontgomeryPoint,
    edwards: Option<EdwardsPoint>,
}

impl X25519Peer {
    /// Parse a public key (any 32 bytes; the top bit is ignored, as RFC 7748 says).
    pub fn new(public: &[u8; 32]) -> Self {
        let public = MontgomeryPoint(*public);
        let edwards = if vector_backend() { public.to_edwards(0) } else { None };
        X25519Peer { edwards, public }
    }

    /// X25519(secret, public); the all-zero output of a low-order peer key is refused.
    pub fn agree(&self, secret: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, E2eError> {
        let mut shared = match &self.edwards {
            Some(point) => {
                let mut product = point.mul_clamped(*secret);
                let u = product.to_montgomery();
                product.zeroize();
                u
            }
            None => self.public.mul_clamped(*secret),
        };
        let out = Zeroizing::new(shared.to_bytes());
        shared.zeroize();
        if bool::from(out.ct_eq(&[0u8; 32])) {
            return Err(E2eError::NonContributory);
        }
        Ok(out)
    }
}

/// The X25519 public key of a secret (the secret is clamped as RFC 7748 says).
pub fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes()
}

/// Whether curve25519-dalek multiplies with its AVX2 backend here (it decides the same way at run time).
fn vector_backend() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::{OsRng, RngCore};

    fn ladder(secret: &[u8; 32], public: &[u8; 32]) -> [u8; 32] {
        x25519_dalek::StaticSecret::from(*secret).diffie_hellman(&x25519_dalek::PublicKey::from(*public)).to_bytes()
    }

    /// The Edwards-form agreement equals x25519-dalek's Montgomery ladder for curve points, twist points (random
    /// bytes are on the twist about half the time), set top bits, non-canonical u ≥ p and every low-order point.
    #[test]
    fn agreement_matches_the_montgomery_ladder() {
        let (mut curve, mut twist) = (0, 0);
        for i in 0..2000 {
            let mut secret = [0u8; 32];
            let mut public = [0u8; 32];
            OsRng.fill_bytes(&mut secret);
            OsRng.fill_bytes(&mut public);
            if i % 2 == 0 {
                public = x25519_public(&public);
            }
            let peer = X25519Peer::new(&public);
            if peer.edwards.is_some() { curve += 1 } else { twist += 1 }
            assert_eq!(*peer.agree(&secret).unwrap(), ladder(&secret, &public), "{public:?}");
        }
        if vector_backend() {
            assert!(curve > 1000 && twist > 200, "{curve} {twist}");
        }
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        let mut specials = vec![[0xffu8; 32], [0x80u8; 32]];
        for first in 0xeb..=0xffu8 {
            let mut near_p = [0xffu8; 32];
            near_p[0] = first;
            near_p[31] = 0x7f;
            specials.push(near_p);
        }
        for low in 0..=1u8 {
            let mut k = [0u8; 32];
            k[0] = low;
            specials.push(k);
        }
        let mut rejected = 0;
        for public in specials.iter().chain([x25519_public(&secret)].iter()) {
            for high in [0u8, 0x80] {
                let mut p = *public;
                p[31] |= high;
                let expected = ladder(&secret, &p);
                match x25519(&secret, &p) {
                    Ok(out) => assert_eq!(*out, expected, "{p:?}"),
                    Err(E2eError::NonContributory) => {
                        assert_eq!(expected, [0u8; 32], "{p:?}");
                        rejected += 1;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert!(rejected >= 6, "{rejected}");
    }
}
