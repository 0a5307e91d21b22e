//! The key store at rest: one byte blob (the client's serialised secrets: identity seed, device keys, prekey
//! secrets, sessions, sender keys) sealed under a passphrase. Argon2id stretches the passphrase into a key; the blob
//! is sealed with XChaCha20-Poly1305 under a random 24-byte nonce; the versioned header (Argon2 parameters, salt,
//! nonce, key check) is the associated data, so no header field can be changed unnoticed. This module owns the format
//! only; where the blob lives (a file, IndexedDB) is the client's.
//!
//! Unlocking costs one Argon2id run (~30–50 ms at the default parameters in release): derive a [`KeyStoreKey`] once
//! per process with [`KeyStoreKey::unlock`] and re-seal with it, instead of calling [`open`]/[`seal`] per change.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand_core::CryptoRngCore;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::encoding::Reader;
use crate::kdf::hmac_sha256;

/// The first four bytes of a sealed key store.
pub const MAGIC: &[u8; 4] = b"IMFK";
/// Format version.
pub const VERSION: u8 = 1;
/// KDF code: Argon2id, version 0x13 (RFC 9106).
pub const KDF_ARGON2ID: u8 = 1;
/// AEAD code: XChaCha20-Poly1305.
pub const AEAD_XCHACHA20POLY1305: u8 = 1;
/// Header length: magic 4, version 1, kdf 1, memory u32, iterations u32, parallelism u32, salt 16, aead 1,
/// nonce 24, key check 16.
pub const HEADER_LEN: usize = 4 + 1 + 1 + 12 + 16 + 1 + 24 + 16;
/// HMAC label of the encryption key derived from the Argon2id output.
pub const ENCRYPT_LABEL: &[u8] = b"imfree/v1/keystore-encrypt";
/// HMAC label of the key check value derived from the Argon2id output.
pub const CHECK_LABEL: &[u8] = b"imfree/v1/keystore-check";
/// Largest memory cost accepted when opening (1 GiB): a planted header cannot make the client allocate more.
pub const MAX_MEMORY_KIB: u32 = 1 << 20;
/// Largest iteration count accepted when opening.
pub const MAX_ITERATIONS: u32 = 64;
/// Largest parallelism accepted when opening.
pub const MAX_PARALLELISM: u32 = 16;

/// Why a key store could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyStoreError {
    /// Not a key store, or cut short.
    #[error("not an imfree key store ({0}): the file is damaged or of another kind")]
    Malformed(&'static str),
    /// Written by a newer imfree.
    #[error("key store format version {0} is not supported: upgrade imfree")]
    UnsupportedVersion(u8),
    /// Argon2 parameters outside what this build accepts.
    #[error("key store parameters not accepted: {0}")]
    UnsupportedParameters(String),
    /// The passphrase does not derive the key this store was sealed under (or the salt or parameters were altered).
    #[error("wrong passphrase for the key store")]
    WrongPassphrase,
    /// The passphrase is right but the sealed contents or header were altered.
    #[error("the key store was altered or damaged after it was written; restore it from a backup")]
    Damaged,
}

/// Argon2id cost parameters, stored in every header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// OWASP's recommendation for Argon2id: m = 19456 KiB (19 MiB), t = 2, p = 1.
    pub const OWASP: KdfParams = KdfParams { memory_kib: 19_456, iterations: 2, parallelism: 1 };

    fn argon2(&self) -> Result<Argon2<'static>, KeyStoreError> {
        if self.memory_kib > MAX_MEMORY_KIB || self.iterations > MAX_ITERATIONS || self.parallelism > MAX_PARALLELISM {
            return Err(KeyStoreError::UnsupportedParameters(format!(
                "m={} KiB, t={}, p={} exceed the limits m≤{MAX_MEMORY_KIB}, t≤{MAX_ITERATIONS}, p≤{MAX_PARALLELISM}",
                self.memory_kib, self.iterations, self.parallelism
            )));
        }
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| KeyStoreError::UnsupportedParameters(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams::OWASP
    }
}

/// The parsed header of a sealed key store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedHeader {
    /// Argon2id parameters.
    pub params: KdfParams,
    /// Argon2id salt.
    pub salt: [u8; 16],
    /// XChaCha20-Poly1305 nonce.
    pub nonce: [u8; 24],
    /// First 16 bytes of `HMAC(K, "imfree/v1/keystore-check")`: tells a wrong passphrase from damage.
    pub check: [u8; 16],
}

impl SealedHeader {
    /// The 75-byte header: `"IMFK" || 0x01 || 0x01 (Argon2id) || memory_kib u32 || iterations u32 ||
    /// parallelism u32 || salt 16 || 0x01 (XChaCha20-Poly1305) || nonce 24 || check 16`.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(KDF_ARGON2ID);
        out.extend_from_slice(&self.params.memory_kib.to_be_bytes());
        out.extend_from_slice(&self.params.iterations.to_be_bytes());
        out.extend_from_slice(&self.params.parallelism.to_be_bytes());
        out.extend_from_slice(&self.salt);
        out.push(AEAD_XCHACHA20POLY1305);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.check);
        out.try_into().expect("header length is fixed")
    }

    /// Parse the header of untrusted bytes; returns it and the ciphertext that follows. Checks the format only:
    /// nothing is authenticated until [`KeyStoreKey::open`].
    pub fn parse(sealed: &[u8]) -> Result<(SealedHeader, &[u8]), KeyStoreError> {
        let bad = |e: crate::E2eError| match e {
            crate::E2eError::Malformed(what) => KeyStoreError::Malformed(what),
            _ => KeyStoreError::Malformed("header"),
        };
        let mut r = Reader::new(sealed);
        if r.take(4, "magic").map_err(bad)? != MAGIC {
            return Err(KeyStoreError::Malformed("magic"));
        }
        let version = r.u8("version").map_err(bad)?;
        if version != VERSION {
            return Err(KeyStoreError::UnsupportedVersion(version));
        }
        if r.u8("kdf").map_err(bad)? != KDF_ARGON2ID {
            return Err(KeyStoreError::UnsupportedParameters("unknown KDF".into()));
        }
        let params = KdfParams {
            memory_kib: r.u32("memory").map_err(bad)?,
            iterations: r.u32("iterations").map_err(bad)?,
            parallelism: r.u32("parallelism").map_err(bad)?,
        };
        let salt = r.array("salt").map_err(bad)?;
        if r.u8("aead").map_err(bad)? != AEAD_XCHACHA20POLY1305 {
            return Err(KeyStoreError::UnsupportedParameters("unknown AEAD".into()));
        }
        let nonce = r.array("nonce").map_err(bad)?;
        let check = r.array("key check").map_err(bad)?;
        let ciphertext = r.rest();
        if ciphertext.len() < crate::aead::TAG_LEN {
            return Err(KeyStoreError::Malformed("ciphertext"));
        }
        Ok((SealedHeader { params, salt, nonce, check }, ciphertext))
    }
}

/// The key a passphrase derives for one salt and parameter set: unlock once, seal many times.
pub struct KeyStoreKey {
    params: KdfParams,
    salt: [u8; 16],
    encryption_key: Zeroizing<[u8; 32]>,
    check: [u8; 16],
}

impl std::fmt::Debug for KeyStoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStoreKey").field("params", &self.params).finish_non_exhaustive()
    }
}

impl KeyStoreKey {
    /// Run Argon2id over the passphrase: `K = Argon2id(passphrase, salt, m, t, p, 32 bytes)`, then
    /// `encryption key = HMAC(K, "imfree/v1/keystore-encrypt")`, `check = HMAC(K, "imfree/v1/keystore-check")[..16]`.
    pub fn derive(passphrase: &[u8], params: KdfParams, salt: [u8; 16]) -> Result<Self, KeyStoreError> {
        let mut k = Zeroizing::new([0u8; 32]);
        params
            .argon2()?
            .hash_password_into(passphrase, &salt, k.as_mut())
            .map_err(|e| KeyStoreError::UnsupportedParameters(e.to_string()))?;
        let encryption_key = hmac_sha256(k.as_ref(), ENCRYPT_LABEL);
        let mut check = [0u8; 16];
        check.copy_from_slice(&hmac_sha256(k.as_ref(), CHECK_LABEL)[..16]);
        Ok(KeyStoreKey { params, salt, encryption_key, check })
    }

    /// A key for a new store: draws a 16-byte salt from `rng`.
    pub fn create(rng: &mut impl CryptoRngCore, passphrase: &[u8], params: KdfParams) -> Result<Self, KeyStoreError> {
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut salt);
        Self::derive(passphrase, params, salt)
    }

    /// Derive the key from the passphrase and the store's own header, and open the store.
    pub fn unlock(passphrase: &[u8], sealed: &[u8]) -> Result<(Self, Zeroizing<Vec<u8>>), KeyStoreError> {
        let (header, _) = SealedHeader::parse(sealed)?;
        let key = Self::derive(passphrase, header.params, header.salt)?;
        let plaintext = key.open(sealed)?;
        Ok((key, plaintext))
    }

    /// The parameters this key was derived with.
    pub fn params(&self) -> KdfParams {
        self.params
    }

    /// Seal under a fresh 24-byte random nonce.
    pub fn seal(&self, rng: &mut impl CryptoRngCore, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        self.seal_with_nonce(nonce, plaintext)
    }

    /// Seal with a given nonce (test vectors; a nonce must never repeat under one key: use [`KeyStoreKey::seal`]).
    pub fn seal_with_nonce(&self, nonce: [u8; 24], plaintext: &[u8]) -> Vec<u8> {
        let header = SealedHeader { params: self.params, salt: self.salt, nonce, check: self.check }.encode();
        let cipher = XChaCha20Poly1305::new(Key::from_slice(self.encryption_key.as_ref()));
        let ct = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: &header })
            .expect("plaintext within XChaCha20 limits");
        [header.as_slice(), &ct].concat()
    }

    /// Open a store sealed under this key (same passphrase, salt and parameters).
    pub fn open(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyStoreError> {
        let (header, ciphertext) = SealedHeader::parse(sealed)?;
        if header.params != self.params || header.salt != self.salt || !bool::from(header.check.ct_eq(&self.check)) {
            return Err(KeyStoreError::WrongPassphrase);
        }
        let cipher = XChaCha20Poly1305::new(Key::from_slice(self.encryption_key.as_ref()));
        cipher
            .decrypt(XNonce::from_slice(&header.nonce), Payload { msg: ciphertext, aad: &sealed[..HEADER_LEN] })
            .map(Zeroizing::new)
            .map_err(|_| KeyStoreError::Damaged)
    }
}

/// Seal `plaintext` under `passphrase` (one Argon2id run; draws 16 + 24 bytes from `rng`).
pub fn seal(
    rng: &mut impl CryptoRngCore,
    passphrase: &[u8],
    params: KdfParams,
    plaintext: &[u8],
) -> Result<Vec<u8>, KeyStoreError> {
    Ok(KeyStoreKey::create(rng, passphrase, params)?.seal(rng, plaintext))
}

/// Open a sealed store (one Argon2id run, at the parameters its header names, within the limits above).
pub fn open(passphrase: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyStoreError> {
    KeyStoreKey::unlock(passphrase, sealed).map(|(_, plaintext)| plaintext)
}
