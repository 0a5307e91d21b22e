//! The user identity key and the certificates it issues to devices.
//!
//! A user has one long-term Ed25519 identity key. It signs a [`DeviceCertificate`] for each of the user's devices,
//! binding the device's Ed25519 signing key and X25519 agreement key (the keys of [`crate::device::DeviceKeys`]) to
//! the user. Peers pin the user identity key (safety numbers); everything else is checked against it. The identity
//! key never does key agreement itself: each key has one purpose (see docs/crypto.md, "Identity").

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
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
