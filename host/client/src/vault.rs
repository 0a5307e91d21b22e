//! The client's key store at rest: when the user gives a passphrase, every secret this device keeps — its device
//! keys and session token (account file), its identity seed, prekey secrets and replay cache, its pairwise ratchet
//! sessions, its group sender keys — is sealed with XChaCha20-Poly1305 under a key derived from the passphrase with
//! Argon2id (docs/crypto.md, "Key store at rest"). Without the passphrase the home cannot be used.
//!
//! The file `keystore` in the home holds one sealed check value; unlocking opens it, so a wrong passphrase is told
//! apart from damage before anything else is read.

use std::path::Path;
use std::sync::Arc;

use imfree_crypto::keystore::{KdfParams, KeyStoreError, KeyStoreKey};
use rand_core::OsRng;
use zeroize::Zeroizing;

use crate::ClientError;

/// File name of the key store's check value.
pub const KEYSTORE_FILE: &str = "keystore";
const CHECK_PLAINTEXT: &[u8] = b"imfree client key store v1";

/// An unlocked key store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Vault(Arc<KeyStoreKey>);

fn keystore_error(e: KeyStoreError) -> ClientError {
    match e {
        KeyStoreError::WrongPassphrase => ClientError::Locked("wrong passphrase for this home's key store".into()),
        other => ClientError::Store(format!("key store: {other}")),
    }
}

impl Vault {
    /// Whether `home` has a key store (its secrets are sealed).
    pub fn exists(home: &Path) -> bool {
        home.join(KEYSTORE_FILE).exists()
    }

    /// Make a key store in `home` for `passphrase` (Argon2id at OWASP parameters).
    pub fn create(home: &Path, passphrase: &str) -> Result<Vault, ClientError> {
        if passphrase.is_empty() {
            return Err(ClientError::Config("the passphrase must not be empty".into()));
        }
        let key = KeyStoreKey::create(&mut OsRng, passphrase.as_bytes(), KdfParams::OWASP).map_err(keystore_error)?;
        let check = key.seal(&mut OsRng, CHECK_PLAINTEXT);
        crate::home::write_private(&home.join(KEYSTORE_FILE), &check)?;
        Ok(Vault(Arc::new(key)))
    }

    /// Unlock the key store of `home`.
    pub fn unlock(home: &Path, passphrase: &str) -> Result<Vault, ClientError> {
        let sealed = std::fs::read(home.join(KEYSTORE_FILE)).map_err(|e| ClientError::Io(format!("cannot read the key store: {e}")))?;
        let (key, plaintext) = KeyStoreKey::unlock(passphrase.as_bytes(), &sealed).map_err(keystore_error)?;
        if plaintext.as_slice() != CHECK_PLAINTEXT {
            return Err(ClientError::Store("the key store's check value is not imfree's".into()));
        }
        Ok(Vault(Arc::new(key)))
    }

    /// Seal a secret.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        self.0.seal(&mut OsRng, plaintext)
    }

    /// Open a sealed secret.
    pub fn open(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        self.0.open(sealed).map_err(keystore_error)
    }
}

/// Seal `value` when there is a vault, else keep it as is.
pub(crate) fn seal_opt(vault: Option<&Vault>, value: &[u8]) -> Vec<u8> {
    match vault {
        Some(v) => v.seal(value),
        None => value.to_vec(),
    }
}

/// Open `value` when there is a vault (in a home with a key store every secret is sealed).
pub(crate) fn open_opt(vault: Option<&Vault>, value: Vec<u8>) -> Result<Vec<u8>, ClientError> {
    match vault {
        Some(v) => Ok(v.open(&value)?.to_vec()),
        None => Ok(value),
    }
}
