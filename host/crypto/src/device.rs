//! A device's long-term keys: an Ed25519 signing key and an X25519 static key (the device's Noise static key).
//! Both are made on the device's first start and never leave it.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

/// Why key material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Wrong length or not a valid point/encoding.
    #[error("invalid key material: {0}")]
    Invalid(&'static str),
    /// A signature did not verify.
    #[error("signature does not verify")]
    BadSignature,
}

/// The secret keys of one device.
pub struct DeviceKeys {
    signing: SigningKey,
    static_secret: Zeroizing<[u8; 32]>,
    static_public: [u8; 32],
}

impl DeviceKeys {
    /// Fresh keys from the OS random source.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(seed.as_mut());
        let signing = SigningKey::from_bytes(&seed);
        let mut static_secret = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(static_secret.as_mut());
        Self::from_secrets(signing.to_bytes(), *static_secret)
    }

    /// Rebuild from stored secrets (32-byte Ed25519 seed, 32-byte X25519 secret).
    pub fn from_secrets(signing_seed: [u8; 32], static_secret: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&signing_seed);
        let secret = x25519_dalek::StaticSecret::from(static_secret);
        let static_public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        DeviceKeys { signing, static_secret: Zeroizing::new(secret.to_bytes()), static_public }
    }

    /// The Ed25519 seed, for storage in the (encrypted) key store.
    pub fn signing_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The X25519 secret, for storage and for the Noise handshake.
    pub fn static_secret(&self) -> Zeroizing<[u8; 32]> {
        self.static_secret.clone()
    }

    /// The Ed25519 public key.
    pub fn signing_public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The X25519 public key.
    pub fn static_public(&self) -> [u8; 32] {
        self.static_public
    }

    /// Sign `message` with the device's Ed25519 key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }
}

/// Verify an Ed25519 signature by `public` over `message` (strict: rejects small-order keys and malleable
/// signatures).
pub fn verify_signature(public: &[u8; 32], message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
    let key = VerifyingKey::from_bytes(public).map_err(|_| KeyError::Invalid("ed25519 public key"))?;
    let sig = ed25519_dalek::Signature::from_slice(signature).map_err(|_| KeyError::Invalid("ed25519 signature"))?;
    key.verify_strict(message, &sig).map_err(|_| KeyError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sign() {
        let keys = DeviceKeys::generate();
        let again = DeviceKeys::from_secrets(*keys.signing_seed(), *keys.static_secret());
        assert_eq!(again.static_public(), keys.static_public());
        assert_eq!(again.signing_public(), keys.signing_public());
        let sig = keys.sign(b"imfree");
        verify_signature(&keys.signing_public(), b"imfree", &sig).unwrap();
        assert!(verify_signature(&keys.signing_public(), b"imfreE", &sig).is_err());
    }
}
