//! The client's home directory: the account file (server, pins, user, device keys, session token) and the local
//! message database. Without `--home`, the platform's data directory (XDG on Linux).
//!
//! The account file holds secrets (device keys, the session token): it is written with mode 0600, atomically
//! (write to a temporary file, fsync, rename). With a key store ([`crate::vault`]) those secrets are sealed under
//! the passphrase and the file holds only the sealed form.

use std::io::Write;
use std::path::{Path, PathBuf};

use imfree_crypto::device::DeviceKeys;
use serde::{Deserialize, Serialize};
use base64::Engine as _;
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
    /// With a key store: the secrets above, sealed (base64); on disk they are then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}

/// The secret part of the account file, sealed as one JSON document when the home has a key store.
#[derive(Serialize, Deserialize)]
struct Secrets {
    token: Option<String>,
    signing_seed: String,
    static_secret: String,
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
    vault: Option<crate::vault::Vault>,
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
        Ok(Home { dir, vault: None })
    }

    /// Open the home with its key store: unlocked with `passphrase` when the home has one (refused without it),
    /// created for `passphrase` when `create` is set and the home has no account yet. A home without a key store
    /// and no passphrase is opened as it is.
    pub fn open_with(dir: Option<&Path>, passphrase: Option<&str>, create: bool) -> Result<Self, ClientError> {
        let mut home = Self::open(dir)?;
        let exists = crate::vault::Vault::exists(&home.dir);
        home.vault = match (exists, passphrase) {
            (true, Some(p)) => Some(crate::vault::Vault::unlock(&home.dir, p)?),
            (true, None) => {
                return Err(ClientError::Locked(
                    "this home's keys are encrypted: give its passphrase (IMFREE_PASSPHRASE or --passphrase-file)".into(),
                ));
            }
            (false, Some(p)) if create && !home.dir.join(ACCOUNT_FILE).exists() => Some(crate::vault::Vault::create(&home.dir, p)?),
            (false, Some(_)) => {
                return Err(ClientError::Config(
                    "this home was set up without a passphrase; its keys are not encrypted (start a new home to use one)".into(),
                ));
            }
            (false, None) => None,
        };
        Ok(home)
    }

    /// The key store, when the home has one.
    pub fn vault(&self) -> Option<&crate::vault::Vault> {
        self.vault.as_ref()
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
                let mut account: Account = serde_json::from_slice(&bytes)
                    .map_err(|e| ClientError::Config(format!("{} is damaged: {e}", path.display())))?;
                if let Some(sealed) = account.sealed.take() {
                    let vault = self.vault.as_ref().ok_or_else(|| ClientError::Locked("this home's keys are encrypted: give its passphrase".into()))?;
                    let sealed = base64::engine::general_purpose::STANDARD
                        .decode(sealed)
                        .map_err(|_| ClientError::Config(format!("{}: the sealed secrets are damaged", path.display())))?;
                    let plain = vault.open(&sealed)?;
                    let secrets: Secrets = serde_json::from_slice(&plain)
                        .map_err(|_| ClientError::Config(format!("{}: the sealed secrets are damaged", path.display())))?;
                    account.token = secrets.token;
                    account.signing_seed = secrets.signing_seed;
                    account.static_secret = secrets.static_secret;
                } else if self.vault.is_some() {
                    return Err(ClientError::Store(format!("{} holds unsealed keys in a home with a key store", path.display())));
                }
                Ok(Some(account))
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
        let json = match &self.vault {
            Some(vault) => {
                let secrets = Secrets { token: account.token.clone(), signing_seed: account.signing_seed.clone(), static_secret: account.static_secret.clone() };
                let plain = Zeroizing::new(serde_json::to_vec(&secrets).map_err(|e| ClientError::Config(e.to_string()))?);
                let on_disk = Account {
                    token: None,
                    signing_seed: String::new(),
                    static_secret: String::new(),
                    sealed: Some(base64::engine::general_purpose::STANDARD.encode(vault.seal(&plain))),
                    ..account.clone()
                };
                Zeroizing::new(serde_json::to_vec_pretty(&on_disk).map_err(|e| ClientError::Config(e.to_string()))?)
            }
            None => Zeroizing::new(serde_json::to_vec_pretty(account).map_err(|e| ClientError::Config(e.to_string()))?),
        };
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

/// Write a new file readable only by its owner (mode 0600).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ClientError> {
    let io = |e: std::io::Error| ClientError::Io(format!("cannot write {}: {e}", path.display()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}
