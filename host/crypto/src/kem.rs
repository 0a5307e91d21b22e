//! ML-KEM-768 (FIPS 203) through libcrux-ml-kem, the formally verified implementation. Randomness is always passed
//! in (64 bytes for key generation, 32 for encapsulation), so that test vectors are reproducible and the crate
//! needs no second RNG generation. A secret key is kept as its 64-byte seed (d || z) and expanded when loaded.

use libcrux_ml_kem::mlkem768;
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::error::E2eError;

/// Encapsulation (public) key length.
pub const PUBLIC_KEY_LEN: usize = 1184;
/// Ciphertext length.
pub const CIPHERTEXT_LEN: usize = 1088;
/// Seed length (d || z of FIPS 203 ML-KEM.KeyGen_internal).
pub const SEED_LEN: usize = 64;

/// An ML-KEM-768 key pair, made from a 64-byte seed.
pub struct KemKeyPair {
    seed: Zeroizing<[u8; SEED_LEN]>,
    pair: mlkem768::MlKem768KeyPair,
}

impl KemKeyPair {
    /// Deterministic key generation from a seed (d || z).
    pub fn from_seed(seed: [u8; SEED_LEN]) -> Self {
        let pair = mlkem768::generate_key_pair(seed);
        KemKeyPair { seed: Zeroizing::new(seed), pair }
    }

    /// A fresh key pair.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        rng.fill_bytes(seed.as_mut());
        Self::from_seed(*seed)
    }

    /// The seed, for the (encrypted) key store.
    pub fn seed(&self) -> &[u8; SEED_LEN] {
        &self.seed
    }

    /// The encapsulation key.
    pub fn public_key(&self) -> &[u8; PUBLIC_KEY_LEN] {
        self.pair.pk()
    }

    /// The FIPS 203 decapsulation key (2400 bytes), for known-answer tests.
    pub fn expanded_secret_key(&self) -> &[u8] {
        self.pair.sk()
    }

    /// Decapsulate. ML-KEM rejects implicitly: a wrong ciphertext yields an unrelated secret, which then fails the
    /// first message's authentication.
    pub fn decapsulate(&self, ciphertext: &[u8]) -> Result<Zeroizing<[u8; 32]>, E2eError> {
        let ct: [u8; CIPHERTEXT_LEN] = ciphertext.try_into().map_err(|_| E2eError::Malformed("ML-KEM ciphertext"))?;
        let ct = mlkem768::MlKem768Ciphertext::from(ct);
        Ok(Zeroizing::new(mlkem768::decapsulate(self.pair.private_key(), &ct)))
    }
}

/// Check an encapsulation key's length and the FIPS 203 modulus check.
pub fn validate_public_key(public_key: &[u8]) -> Result<(), E2eError> {
    let pk: [u8; PUBLIC_KEY_LEN] = public_key.try_into().map_err(|_| E2eError::InvalidKey("ML-KEM-768 length"))?;
    if mlkem768::validate_public_key(&mlkem768::MlKem768PublicKey::from(pk)) {
        Ok(())
    } else {
        Err(E2eError::InvalidKey("ML-KEM-768 encapsulation key"))
    }
}

/// Encapsulate to a validated public key with explicit randomness `m`: (ciphertext, shared secret).
pub fn encapsulate(public_key: &[u8], m: [u8; 32]) -> Result<(Vec<u8>, Zeroizing<[u8; 32]>), E2eError> {
    validate_public_key(public_key)?;
    let pk: [u8; PUBLIC_KEY_LEN] = public_key.try_into().map_err(|_| E2eError::InvalidKey("ML-KEM-768 length"))?;
    let (ct, ss) = mlkem768::encapsulate(&mlkem768::MlKem768PublicKey::from(pk), m);
    Ok((ct.as_slice().to_vec(), Zeroizing::new(ss)))
}
