//! The user identity key and the certificates it issues to devices.
//!
//! A user has one long-term Ed25519 identity key. It signs a [`DeviceCertificate`] for each of the user's devices,
//! binding the device's Ed25519 signing key and X25519 agreement key (the keys of [`crate::device::DeviceKeys`]) to
//! the user. Peers pin the user identity key (safety numbers); everything else is checked against it. The identity
//! key never does key agreement itself: each key has one purpose (see docs/crypto.md, "Identity").

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha512};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::device::DeviceKeys;
use crate::encoding::{Canonical, b64};
use crate::error::E2eError;

/// Label of the signed bytes of a device certificate.
pub const DEVICE_CERT_LABEL: &str = "imfree/v1/device-cert";

/// A user's identity key pair.
pub struct UserIdentity {
    signing: SigningKey,
}

impl UserIdentity {
    /// A fresh identity (the user's first device does this once).
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        Self::from_seed(&seed)
    }

    /// Rebuild from the stored 32-byte Ed25519 seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        UserIdentity { signing: SigningKey::from_bytes(seed) }
    }

    /// The seed, for the encrypted key store and for device linking.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The public identity key that contacts pin.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// Certify a device's public keys.
    pub fn certify(
        &self,
        device_id: u32,
        device_signing_key: [u8; 32],
        device_agreement_key: [u8; 32],
        issued_at: u64,
    ) -> DeviceCertificate {
        let mut cert = DeviceCertificate {
            user_identity: self.public_key(),
            device_id,
            signing_key: device_signing_key,
            agreement_key: device_agreement_key,
            issued_at,
            signature: [0u8; 64],
        };
        cert.signature = self.signing.sign(&cert.signed_bytes()).to_bytes();
        cert
    }

    /// Certify a local device.
    pub fn certify_device(&self, device_id: u32, device: &DeviceKeys, issued_at: u64) -> DeviceCertificate {
        self.certify(device_id, device.signing_public(), device.static_public(), issued_at)
    }
}

/// A user identity's statement that a device with these keys belongs to the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCertificate {
    /// The user's Ed25519 identity key.
    #[serde(with = "b64")]
    pub user_identity: [u8; 32],
    /// The device's number within the user's account.
    pub device_id: u32,
    /// The device's Ed25519 signing key (signs prekeys, uploads and group messages).
    #[serde(with = "b64")]
    pub signing_key: [u8; 32],
    /// The device's X25519 agreement key (IK in PQXDH; also its Noise static key towards the relay).
    #[serde(with = "b64")]
    pub agreement_key: [u8; 32],
    /// Unix seconds.
    pub issued_at: u64,
    /// Ed25519 signature by `user_identity` over [`DeviceCertificate::signed_bytes`].
    #[serde(with = "b64")]
    pub signature: [u8; 64],
}

impl DeviceCertificate {
    /// `"imfree/v1/device-cert" 0x00 || user_identity || device_id (u32 BE) || signing_key || agreement_key ||
    /// issued_at (u64 BE)`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut c = Canonical::labelled(DEVICE_CERT_LABEL);
        c.bytes(&self.user_identity)
            .u32(self.device_id)
            .bytes(&self.signing_key)
            .bytes(&self.agreement_key)
            .u64(self.issued_at);
        c.0
    }

    /// Check the signature by the certificate's own user identity key. The caller must still compare
    /// `user_identity` with the key it has pinned for the contact.
    pub fn verify(&self) -> Result<(), E2eError> {
        verify_ed25519(&self.user_identity, &self.signed_bytes(), &self.signature, "device certificate")?;
        // The agreement key must be usable: reject the low-order points outright.
        if is_low_order_x25519(&self.agreement_key) {
            return Err(E2eError::InvalidKey("device agreement key is a low-order point"));
        }
        VerifyingKey::from_bytes(&self.signing_key).map_err(|_| E2eError::InvalidKey("device signing key"))?;
        Ok(())
    }
}

/// Strict Ed25519 verification (rejects small-order keys and non-canonical signatures).
pub(crate) fn verify_ed25519(public: &[u8; 32], message: &[u8], signature: &[u8; 64], what: &'static str) -> Result<(), E2eError> {
    let key = VerifyingKey::from_bytes(public).map_err(|_| E2eError::InvalidKey("Ed25519 public key"))?;
    let sig = ed25519_dalek::Signature::from_bytes(signature);
    key.verify_strict(message, &sig).map_err(|_| E2eError::BadSignature(what))
}

/// Label of the hash that draws the batch check's coefficients.
const ED25519_BATCH_LABEL: &[u8] = b"imfree/v1/ed25519-batch";

/// One signature of a batch: the signer's public key (as bytes, hashed as given, and as the point decompressed
/// once by the caller), the message and the signature.
pub(crate) struct BatchItem<'a> {
    pub(crate) public: &'a [u8; 32],
    pub(crate) point: &'a EdwardsPoint,
    pub(crate) message: &'a [u8],
    pub(crate) signature: &'a [u8; 64],
}

/// Check several Ed25519 signatures at once. `true` means every signature is valid; `false` means at least one is
/// not (or an input is unusable) and the caller must check them one by one with [`verify_ed25519`] to learn which.
///
/// Each signature gets the checks of `verify_strict` that do not need the final equation: s canonical (< ℓ), R a
/// canonical encoding of a point, neither R nor the public key of small order. Then, with coefficients z_i of 128
/// bits drawn by SHA-512 from everything checked (the signer cannot choose them without changing the signatures),
/// one multi-scalar multiplication tests the cofactored equation
/// `[8] (Σ z_i R_i + Σ (z_i k_i) A_i − (Σ z_i s_i) B) = 0`, k_i = SHA-512(R_i || A_i || M_i) mod ℓ.
///
/// Every signature `verify_strict` accepts passes. The one difference from checking each with `verify_strict`
/// (`R = [s]B − [k]A` exactly): a signature whose R differs from that by a small-order point also passes. Only the
/// holder of the private key can make one (for anyone else it is a forgery of the cofactored equation), it binds
/// the same message and key, and a third party cannot turn a valid signature into one. A wrong signature passes
/// with probability about 2^-128.
pub(crate) fn verify_ed25519_batch(items: &[BatchItem<'_>]) -> bool {
    let mut scalars = Vec::with_capacity(1 + 2 * items.len());
    let mut points = Vec::with_capacity(1 + 2 * items.len());
    let mut prepared = Vec::with_capacity(items.len());
    let mut coefficients = Sha512::new();
    coefficients.update(ED25519_BATCH_LABEL);
    for item in items {
        let (r_bytes, s_bytes) = item.signature.split_at(32);
        let Ok(r_bytes) = <[u8; 32]>::try_from(r_bytes) else { return false };
        let Ok(s_bytes) = <[u8; 32]>::try_from(s_bytes) else { return false };
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else { return false };
        if !is_canonical_edwards_y(&r_bytes) {
            return false;
        }
        let Some(r) = CompressedEdwardsY(r_bytes).decompress() else { return false };
        if r.is_small_order() || item.point.is_small_order() {
            return false;
        }
        let mut h = Sha512::new();
        h.update(r_bytes);
        h.update(item.public);
        h.update(item.message);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        coefficients.update(r_bytes);
        coefficients.update(s_bytes);
        coefficients.update(item.public);
        coefficients.update(k.as_bytes());
        prepared.push((r, s, k));
    }
    let seed = coefficients.finalize();
    let mut b_coefficient = Scalar::ZERO;
    for (i, (item, (r, s, k))) in items.iter().zip(prepared).enumerate() {
        let mut h = Sha512::new();
        h.update(seed);
        h.update((i as u32).to_be_bytes());
        let digest = h.finalize();
        let mut z_bytes = [0u8; 16];
        z_bytes.copy_from_slice(&digest[..16]);
        // Odd, so never zero.
        let z = Scalar::from(u128::from_le_bytes(z_bytes) | 1);
        b_coefficient += z * s;
        add_term(&mut scalars, &mut points, z, r);
        add_term(&mut scalars, &mut points, z * k, *item.point);
    }
    add_term(&mut scalars, &mut points, -b_coefficient, ED25519_BASEPOINT_POINT);
    EdwardsPoint::vartime_multiscalar_mul(&scalars, &points).mul_by_cofactor().is_identity()
}

/// Add `scalar · point` to the sum, merging it with an equal point already there (signatures by the same key
/// share one term; the sum is the same either way, with fewer points to multiply).
fn add_term(scalars: &mut Vec<Scalar>, points: &mut Vec<EdwardsPoint>, scalar: Scalar, point: EdwardsPoint) {
    match points.iter().position(|p| *p == point) {
        Some(j) => scalars[j] += scalar,
        None => {
            scalars.push(scalar);
            points.push(point);
        }
    }
}

/// Whether 32 bytes encode an Edwards y coordinate canonically: y < p = 2^255 − 19 once the sign bit is cleared
/// (curve25519-dalek's decompression reduces larger values silently). `verify_strict` compares R with a freshly
/// compressed point, so a non-canonical R never passes it either. (A sign bit on x = 0 is the other non-canonical
/// form; those points, y = ±1, are of small order and refused by the caller.)
fn is_canonical_edwards_y(bytes: &[u8; 32]) -> bool {
    let mut y = *bytes;
    y[31] &= 0x7f;
    // y ≥ p exactly when bytes 1..31 are all 0xff, the top byte 0x7f and the first byte ≥ 0xed.
    let at_least_p = y[0] >= 0xed && y[1..31].iter().all(|b| *b == 0xff) && y[31] == 0x7f;
    !at_least_p
}
/// Whether an X25519 public key yields the all-zero shared secret for every secret: the points of order dividing 8
/// (RFC 7748 section 6.1). With the ignored top bit cleared, their encodings are exactly these seven (u = 0, 1, the
/// two points of order 8, p - 1, and the non-canonical p, p + 1). A table instead of a trial agreement: it is on
/// every bundle check.
pub(crate) fn is_low_order_x25519(public: &[u8; 32]) -> bool {
    const fn tail(first: u8, second: u8) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[0] = first;
        k[1] = second;
        k
    }
    const fn near_p(first: u8) -> [u8; 32] {
        let mut k = [0xffu8; 32];
        k[0] = first;
        k[31] = 0x7f;
        k
    }
    const LOW_ORDER: [[u8; 32]; 7] = [
        tail(0, 0),
        tail(1, 0),
        [
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09,
            0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
        ],
        [
            0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b, 0x04, 0x44,
            0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57,
        ],
        near_p(0xec),
        near_p(0xed),
        near_p(0xee),
    ];
    let mut key = *public;
    key[31] &= 0x7f;
    LOW_ORDER.contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    /// The table agrees with a trial agreement over every one-byte-perturbed candidate.
    #[test]
    fn low_order_table_matches_trial_agreement() {
        let probe = x25519_dalek::StaticSecret::from([0x42u8; 32]);
        let trial = |k: &[u8; 32]| !probe.diffie_hellman(&x25519_dalek::PublicKey::from(*k)).was_contributory();
        let mut candidates = vec![[0u8; 32], [9u8; 32], DeviceKeys::generate().static_public()];
        for b in 0..=255u8 {
            let mut k = [0u8; 32];
            k[0] = b;
            candidates.push(k);
            let mut k = [0xffu8; 32];
            k[0] = b;
            candidates.push(k);
            k[31] = 0x7f;
            candidates.push(k);
        }
        let mut found = 0;
        for k in &candidates {
            assert_eq!(is_low_order_x25519(k), trial(k), "{k:?}");
            found += usize::from(trial(k));
        }
        assert!(found >= 8);
    }

    /// An Ed25519 signing key's secret scalar, as ed25519-dalek derives it (RFC 8032 section 5.1.5).
    fn secret_scalar(seed: &[u8; 32]) -> Scalar {
        let h = Sha512::digest(seed);
        let mut a = [0u8; 32];
        a.copy_from_slice(&h[..32]);
        Scalar::from_bytes_mod_order(curve25519_dalek::scalar::clamp_integer(a))
    }

    fn batch_of(keys: &[(SigningKey, Vec<u8>, [u8; 64])]) -> bool {
        let points: Vec<([u8; 32], EdwardsPoint)> = keys
            .iter()
            .map(|(k, _, _)| {
                let bytes = k.verifying_key().to_bytes();
                (bytes, CompressedEdwardsY(bytes).decompress().unwrap())
            })
            .collect();
        let items: Vec<BatchItem<'_>> = keys
            .iter()
            .zip(&points)
            .map(|((_, m, sig), (bytes, point))| BatchItem { public: bytes, point, message: m, signature: sig })
            .collect();
        verify_ed25519_batch(&items)
    }

    /// The batch accepts exactly the sets of valid signatures; one bad signature anywhere fails it.
    #[test]
    fn batch_accepts_valid_and_refuses_any_bad_signature() {
        let a = SigningKey::generate(&mut OsRng);
        let b = SigningKey::generate(&mut OsRng);
        let mut set: Vec<(SigningKey, Vec<u8>, [u8; 64])> = Vec::new();
        for (key, message) in [(&a, b"one".to_vec()), (&b, b"two".to_vec()), (&b, vec![3u8; 1300])] {
            let signature = key.sign(&message).to_bytes();
            set.push((key.clone(), message, signature));
        }
        assert!(batch_of(&set));
        assert!(batch_of(&set[..1]));
        for i in 0..set.len() {
            for byte in [0, 17, 31, 32, 50, 63] {
                let mut bad = set.clone();
                bad[i].2[byte] ^= 0x04;
                assert!(!batch_of(&bad), "signature {i} byte {byte}");
            }
            let mut bad = set.clone();
            bad[i].1.push(0);
            assert!(!batch_of(&bad), "message {i}");
            // The right signature under the other key.
            let mut bad = set.clone();
            bad[i].0 = if i == 0 { b.clone() } else { a.clone() };
            assert!(!batch_of(&bad), "key {i}");
        }
        // s not reduced (s + ℓ) is refused, as verify_strict refuses it.
        let mut bad = set.clone();
        let s = Scalar::from_canonical_bytes(bad[0].2[32..].try_into().unwrap()).unwrap();
        let mut wide = [0u8; 32];
        // ℓ = 2^252 + 27742317777372353535851937790883648493; add it byte by byte.
        const ELL: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for j in 0..32 {
            let v = u16::from(s.as_bytes()[j]) + u16::from(ELL[j]) + carry;
            wide[j] = v as u8;
            carry = v >> 8;
        }
        // s < ℓ < 2^253, so s + ℓ fits in 32 bytes.
        assert_eq!(carry, 0);
        bad[0].2[32..].copy_from_slice(&wide);
        assert!(!batch_of(&bad));
        let key = bad[0].0.verifying_key();
        assert!(key.verify_strict(&bad[0].1, &ed25519_dalek::Signature::from_bytes(&bad[0].2)).is_err());
    }

    /// The documented difference from verify_strict: the key's holder can make a signature whose R is off by a
    /// small-order point; verify_strict refuses it, the cofactored batch accepts it. Nobody else can make one.
    #[test]
    fn batch_is_cofactored_where_strict_is_not() {
        let key = SigningKey::generate(&mut OsRng);
        let a = secret_scalar(&key.to_bytes());
        let public = key.verifying_key().to_bytes();
        assert_eq!(EdwardsPoint::mul_base(&a).compress().to_bytes(), public);
        let message = b"tweaked";
        let mut order_two = [0xffu8; 32];
        order_two[0] = 0xec;
        order_two[31] = 0x7f;
        let torsion = CompressedEdwardsY(order_two).decompress().unwrap();
        assert!(torsion.is_small_order());
        let r = Scalar::from_bytes_mod_order([0x42; 32]);
        let big_r = (EdwardsPoint::mul_base(&r) + torsion).compress().to_bytes();
        let k = Scalar::from_bytes_mod_order_wide(&Sha512::new().chain_update(big_r).chain_update(public).chain_update(message).finalize().into());
        let s = r + k * a;
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&big_r);
        signature[32..].copy_from_slice(s.as_bytes());
        assert!(key.verifying_key().verify_strict(message, &ed25519_dalek::Signature::from_bytes(&signature)).is_err());
        assert!(batch_of(&[(key.clone(), message.to_vec(), signature)]));
        // Without the tweak both accept.
        let honest = key.sign(message).to_bytes();
        assert!(batch_of(&[(key, message.to_vec(), honest)]));
    }

    #[test]
    fn canonical_y_encodings() {
        let mut p = [0xffu8; 32];
        p[31] = 0x7f;
        for (first, canonical) in [(0xec, true), (0xed, false), (0xee, false), (0xff, false)] {
            p[0] = first;
            assert_eq!(is_canonical_edwards_y(&p), canonical, "{first:x}");
            let mut signed = p;
            signed[31] |= 0x80;
            assert_eq!(is_canonical_edwards_y(&signed), canonical, "{first:x} with sign bit");
        }
        let mut below = [0xffu8; 32];
        below[30] = 0xfe;
        below[31] = 0x7f;
        assert!(is_canonical_edwards_y(&below));
        assert!(is_canonical_edwards_y(&[0u8; 32]));
    }

    #[test]
    fn certificate_verifies_and_binds_every_field() {
        let user = UserIdentity::generate(&mut OsRng);
        let device = DeviceKeys::generate();
        let cert = user.certify_device(7, &device, 1_700_000_000);
        cert.verify().unwrap();
        let json = serde_json::to_string(&cert).unwrap();
        assert_eq!(serde_json::from_str::<DeviceCertificate>(&json).unwrap(), cert);
        for tamper in [
            |c: &mut DeviceCertificate| c.device_id ^= 1,
            |c: &mut DeviceCertificate| c.issued_at += 1,
            |c: &mut DeviceCertificate| c.agreement_key[3] ^= 1,
            |c: &mut DeviceCertificate| c.signing_key[3] ^= 1,
            |c: &mut DeviceCertificate| c.signature[0] ^= 1,
        ] {
            let mut bad = cert.clone();
            tamper(&mut bad);
            assert!(bad.verify().is_err());
        }
        let other = UserIdentity::generate(&mut OsRng);
        let mut forged = cert.clone();
        forged.user_identity = other.public_key();
        assert!(forged.verify().is_err());
    }
}
