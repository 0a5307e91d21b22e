//! The client's home directory: the account file (server, pins, user, device keys, session token) and the local
//! message database. Without `--home`, the platform's data directory (XDG on Linux).
//!
//! The account file holds secrets (device keys, the session token): it is written with mode 0600, atomically
//! (write to a temporary file, fsync, rename). Encrypting it at rest under a passphrase comes with the E2E key store.

use std::io::Write;
use std::path::{Path, PathBuf};

use imfree_crypto::device::DeviceKeys;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::ClientError;

/// File name of the account file.
pub const ACCOUNT_FILE: &str = "account.json";

/// What a client remembers about its account and relay.
#[derive(Clone, Serialize, Deserialize, Default)]
pub struct Account {
    /// `wss://host:port` (or `ws://` on loopback when the relay allows it).
    pub server: String,
    /// Pinned TLS certificate fingerprint (SHA-256, hex).
    #[serde(default)]
    pub tls_pin: Option<String>,
    /// Pinned relay Noise static key (hex).
    #[serde(default)]
    pub relay_key: Option<String>,
    /// User name, once registered or logged in.
    #[serde(default)]
    pub user: Option<String>,
    /// Device id the relay assigned.
    #[serde(default)]
    pub device: Option<String>,
    /// Session token (secret).
    #[serde(default)]
    pub token: Option<String>,
    /// Token expiry (Unix ms).
    #[serde(default)]
    pub token_expires: Option<u64>,
    /// Ed25519 seed of this device (hex, secret).
    pub signing_seed: String,
    /// X25519 static secret of this device (hex, secret).
    pub static_secret: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account").field("server", &self.server).field("user", &self.user).field("device", &self.device).finish_non_exhaustive()
    }
}

/// A client home directory.
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// The home at `dir` (created if missing), or the platform default.
    pub fn open(dir: Option<&Path>) -> Result<Self, ClientError> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => directories::ProjectDirs::from("org", "imfree", "imfree")
                .map(|p| p.data_dir().to_path_buf())
                .ok_or_else(|| ClientError::Config("cannot find a data directory; pass --home".into()))?,
        };
        std::fs::create_dir_all(&dir).map_err(|e| ClientError::Io(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Home { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The local database path.
    pub fn database(&self) -> PathBuf {
        self.dir.join("client.db")
    }

    /// The account, if one was set up here.
    pub fn load(&self) -> Result<Option<Account>, ClientError> {
        let path = self.dir.join(ACCOUNT_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| ClientError::Config(format!("{} is damaged: {e}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ClientError::Io(format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// Save the account atomically with mode 0600.
    pub fn save(&self, account: &Account) -> Result<(), ClientError> {
        let path = self.dir.join(ACCOUNT_FILE);
        let tmp = self.dir.join(format!("{ACCOUNT_FILE}.tmp"));
        let io = |e: std::io::Error| ClientError::Io(format!("cannot write {}: {e}", path.display()));
        let json = Zeroizing::new(serde_json::to_vec_pretty(account).map_err(|e| ClientError::Config(e.to_string()))?);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(io)?;
        file.write_all(&json).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(())
    }

    /// The account, or a new one with fresh device keys for `server`.
    pub fn load_or_new(&self, server: &str) -> Result<Account, ClientError> {
        if let Some(mut account) = self.load()? {
            if account.server != server {
                // A different relay: keep the device keys, forget what belonged to the old relay.
                account = Account { server: server.to_owned(), signing_seed: account.signing_seed, static_secret: account.static_secret, ..Account::default() };
            }
            return Ok(account);
        }
        let keys = DeviceKeys::generate();
        Ok(Account {
            server: server.to_owned(),
            signing_seed: hex::encode(keys.signing_seed().as_ref()),
            static_secret: hex::encode(keys.static_secret().as_ref()),
            ..Account::default()
        })
    }
}

impl Account {
    /// The device keys.
    pub fn device_keys(&self) -> Result<DeviceKeys, ClientError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        let mut secret = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(&self.signing_seed, seed.as_mut())
            .and_then(|_| hex::decode_to_slice(&self.static_secret, secret.as_mut()))
            .map_err(|_| ClientError::Config("the account file's device keys are damaged".into()))?;
        Ok(DeviceKeys::from_secrets(*seed, *secret))
    }

    /// The pinned relay key.
    pub fn relay_key(&self) -> Result<Option<[u8; 32]>, ClientError> {
        self.relay_key
            .as_deref()
            .map(|k| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(k, &mut out).map_err(|_| ClientError::Config("the pinned relay key is damaged".into()))?;
                Ok(out)
            })
            .transpose()
    }
}
