//! The relay's configuration: a TOML file (`imfree serve --config`), every field optional with a safe default.
//! `examples/imfree.toml` shows and explains every key.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::limits::{LockoutPolicy, Rate};
use crate::password::PasswordPolicy;

/// The whole relay configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Address to listen on. Default `127.0.0.1:7878`.
    pub listen: SocketAddr,
    /// Data directory (database, TLS certificate, relay key). Default `./imfree-data`.
    pub data_dir: PathBuf,
    /// TLS settings.
    pub tls: TlsConfig,
    /// Storage settings.
    pub database: DatabaseConfig,
    /// Account settings.
    pub accounts: AccountsConfig,
    /// Protocol and abuse limits.
    pub limits: LimitsConfig,
    /// Origins allowed to open browser WebSocket connections (exact match, e.g. `https://chat.example.org`).
    /// Connections without an Origin header (native clients) are always allowed; a browser's own origin (the relay's
    /// address) is allowed too.
    pub allowed_origins: Vec<String>,
    /// Plugin runtime settings.
    pub plugin_host: crate::plugins::PluginHostConfig,
    /// End-to-end encrypted file transfer: sizes, quota, expiry.
    pub files: crate::files::FilesConfig,
    /// The web client served at `/`.
    pub web: WebConfig,
    /// Plugins by name (`[plugins.<name>]`: enabled, path, manifest, grants, settings, limits, failure). The relay
    /// runs those whose manifest declares the `relay` scope.
    #[serde(skip_serializing)]
    pub plugins: std::collections::BTreeMap<String, imfree_plugin_host::PluginConfig>,
    /// The file this configuration was read from (watched for plugin changes).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            data_dir: PathBuf::from("imfree-data"),
            tls: TlsConfig::default(),
            database: DatabaseConfig::default(),
            accounts: AccountsConfig::default(),
            limits: LimitsConfig::default(),
            allowed_origins: Vec::new(),
            plugin_host: crate::plugins::PluginHostConfig::default(),
            files: crate::files::FilesConfig::default(),
            web: WebConfig::default(),
            plugins: std::collections::BTreeMap::new(),
            source: None,
        }
    }
}

/// The web client (host/web): a page and its WebAssembly engine, served by the relay at `/` from the files the
/// binary embeds (`imfree serve` sets [`WebConfig::assets`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Serve the web client. Default true.
    pub enabled: bool,
    /// The files, by path (`/`, `/app.js`, …): set by the binary, not by the configuration file.
    #[serde(skip)]
    pub assets: &'static [WebAsset],
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig { enabled: true, assets: &[] }
    }
}

/// One file of the web client.
#[derive(Debug, Clone, Copy)]
pub struct WebAsset {
    /// Its path under the relay's address, starting with `/`.
    pub path: &'static str,
    /// Its media type.
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
    /// The same, gzip-compressed, served to browsers that accept it (the engine shrinks to about a third).
    pub gzip: &'static [u8],
    /// Its entity tag (a hash of the bytes, quoted), so that a reload revalidates instead of downloading again.
    pub etag: &'static str,
}

/// TLS settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain. With `key`; without both, a self-signed certificate is made in the data dir.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Extra DNS names or addresses for the self-signed certificate.
    pub names: Vec<String>,
    /// Serve plain `ws://` instead of TLS. Refused unless `listen` is a loopback address.
    pub insecure_plaintext: bool,
}

/// Storage settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://…` for PostgreSQL; unset for the embedded SQLite file `<data_dir>/relay.db`.
    pub url: Option<String>,
    /// PostgreSQL schema to use (created if missing). Default: the connection's default (`public`).
    pub schema: Option<String>,
}

/// Account settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountsConfig {
    /// Whether anyone can register. Default true.
    pub open_registration: bool,
    /// Session token lifetime in seconds. Default 30 days.
    pub session_ttl_secs: u64,
    /// Devices per account. Default 16.
    pub max_devices: usize,
    /// Password hashing and length policy (Argon2id, OWASP parameters).
    pub password: PasswordPolicy,
    /// Login lockout after repeated failures.
    pub lockout: LockoutPolicy,
    /// Issuer name shown in authenticator apps.
    pub totp_issuer: String,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            open_registration: true,
            session_ttl_secs: 30 * 24 * 3600,
            max_devices: 16,
            password: PasswordPolicy::default(),
            lockout: LockoutPolicy::default(),
            totp_issuer: "imfree".into(),
        }
    }
}

/// Protocol and abuse limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Frame and payload size limits.
    pub protocol: imfree_proto::Limits,
    /// Frames per connection (all types).
    pub frames_per_connection: Rate,
    /// Envelopes (send, receipt) per connection.
    pub messages_per_connection: Rate,
    /// Envelopes per account, over all its connections.
    pub messages_per_account: Rate,
    /// Handshakes per IP address.
    pub handshakes_per_ip: Rate,
    /// Password logins and registrations per IP address.
    pub logins_per_ip: Rate,
    /// Live connections per account.
    pub connections_per_account: usize,
    /// Live connections per IP address.
    pub connections_per_ip: usize,
    /// A rate-limit violation streak after which the connection is closed.
    pub max_violations: u32,
    /// Seconds a device's handshake clock may differ from the relay's; also how long handshake ephemerals are
    /// remembered to refuse replays.
    pub handshake_window_secs: u64,
    /// Seconds to wait for each handshake message.
    pub handshake_timeout_secs: u64,
    /// Unacknowledged deliveries in flight per connection.
    pub delivery_window: usize,
    /// Largest group-commit batch.
    pub commit_batch: usize,
    /// Initial size of each connection's WebSocket read buffer (bytes); it grows for a larger frame. Every idle
    /// connection holds one, so this is memory per connection; a frame needs as many reads as it has buffers-full.
    pub ws_read_buffer_bytes: usize,
    /// Envelope ids are remembered for de-duplication this long after all devices acked (seconds).
    pub dedupe_retention_secs: u64,
    /// How long after sending a message may still be edited or deleted (seconds). Envelope ids are kept at least
    /// this long, since the relay checks who sent the message from them. Default 7 days.
    pub edit_window_secs: u64,
    /// Audit-log events (edits, deletions, membership changes) are kept this long (seconds). Default 365 days.
    pub audit_retention_secs: u64,
    /// Unclaimed one-time prekeys (of each kind) the relay keeps per device; an upload beyond it is refused.
    pub max_prekeys_per_device: usize,
    /// Entries a group's membership log may hold; an append beyond it is refused (`group_rejected`).
    pub max_group_log_entries: usize,
    /// The device-linking rendezvous.
    pub linking: LinkingLimits,
}

/// Limits of the device-linking rendezvous (`[limits.linking]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkingLimits {
    /// Seconds a rendezvous stays open. Default 600.
    pub timeout_secs: u64,
    /// `link.data` messages one connection may send through one rendezvous. Default 8 (linking needs 2).
    pub max_messages: u32,
    /// Largest `link.data` message in bytes. Default 2048 (linking messages are under 300 bytes).
    pub max_message_bytes: usize,
    /// Rendezvous open at once per account. Default 4.
    pub per_account: usize,
}

impl Default for LinkingLimits {
    fn default() -> Self {
        LinkingLimits { timeout_secs: 600, max_messages: 8, max_message_bytes: 2048, per_account: 4 }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            protocol: imfree_proto::Limits::default(),
            frames_per_connection: Rate { per_second: 200.0, burst: 1000 },
            messages_per_connection: Rate { per_second: 100.0, burst: 500 },
            messages_per_account: Rate { per_second: 200.0, burst: 1000 },
            handshakes_per_ip: Rate { per_second: 20.0, burst: 100 },
            logins_per_ip: Rate { per_second: 1.0, burst: 20 },
            connections_per_account: 32,
            connections_per_ip: 512,
            max_violations: 200,
            handshake_window_secs: 300,
            handshake_timeout_secs: 10,
            delivery_window: 512,
            commit_batch: 4096,
            ws_read_buffer_bytes: 512,
            dedupe_retention_secs: 7 * 24 * 3600,
            edit_window_secs: 7 * 24 * 3600,
            audit_retention_secs: 365 * 24 * 3600,
            max_prekeys_per_device: 500,
            max_group_log_entries: 10_000,
            linking: LinkingLimits::default(),
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A value is not acceptable.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl RelayConfig {
    /// Where bundled plugins are installed (`plugin_host.bundled_dir`, default `<data_dir>/bundled`).
    pub fn bundled_dir(&self) -> std::path::PathBuf {
        self.plugin_host.bundled_dir.clone().unwrap_or_else(|| self.data_dir.join("bundled"))
    }

    /// Where bot-scope plugins keep their accounts (`plugin_host.bots_dir`, default `<data_dir>/bots`).
    pub fn bots_dir(&self) -> std::path::PathBuf {
        self.plugin_host.bots_dir.clone().unwrap_or_else(|| self.data_dir.join("bots"))
    }

    /// Read and validate a TOML file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let mut config: RelayConfig =
            toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
        config.source = Some(path.to_path_buf());
        config.validate()?;
        Ok(config)
    }

    /// Check values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tls.insecure_plaintext && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "tls.insecure_plaintext is only allowed on a loopback address, not {}",
                self.listen
            )));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::Invalid("tls.cert and tls.key go together: set both or neither".into()));
        }
        self.files.validate().map_err(ConfigError::Invalid)?;
        let l = &self.limits;
        if l.delivery_window == 0 || l.commit_batch == 0 || l.connections_per_account == 0 {
            return Err(ConfigError::Invalid("limits.delivery_window, commit_batch and connections_per_account must be at least 1".into()));
        }
        if !(64..=1 << 20).contains(&l.ws_read_buffer_bytes) {
            return Err(ConfigError::Invalid("limits.ws_read_buffer_bytes must be between 64 and 1048576".into()));
        }
        if l.linking.timeout_secs == 0 || l.linking.max_messages == 0 || l.linking.per_account == 0 || l.linking.max_message_bytes < 256 {
            return Err(ConfigError::Invalid(
                "limits.linking needs timeout_secs, max_messages and per_account >= 1 and max_message_bytes >= 256".into(),
            ));
        }
        for (name, rate) in [
            ("frames_per_connection", l.frames_per_connection),
            ("messages_per_connection", l.messages_per_connection),
            ("messages_per_account", l.messages_per_account),
            ("handshakes_per_ip", l.handshakes_per_ip),
            ("logins_per_ip", l.logins_per_ip),
        ] {
            // Written so that NaN is refused too.
            if rate.per_second.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) || rate.burst == 0 {
                return Err(ConfigError::Invalid(format!("limits.{name} needs per_second > 0 and burst >= 1")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_only_on_loopback_and_tls_files_in_pairs() {
        let mut c = RelayConfig::default();
        c.tls.insecure_plaintext = true;
        assert!(c.validate().is_ok(), "loopback may serve ws://");
        c.listen = "0.0.0.0:7878".parse().unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("loopback"));
        let mut c = RelayConfig::default();
        c.tls.cert = Some("cert.pem".into());
        assert!(c.validate().unwrap_err().to_string().contains("go together"));
    }

    #[test]
    fn rates_must_be_positive_numbers() {
        for bad in [0.0, -1.0, f64::NAN] {
            let mut c = RelayConfig::default();
            c.limits.frames_per_connection.per_second = bad;
            assert!(c.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn linking_limits_must_allow_linking() {
        for bad in [
            LinkingLimits { timeout_secs: 0, ..LinkingLimits::default() },
            LinkingLimits { max_messages: 0, ..LinkingLimits::default() },
            LinkingLimits { per_account: 0, ..LinkingLimits::default() },
            LinkingLimits { max_message_bytes: 100, ..LinkingLimits::default() },
        ] {
            let mut c = RelayConfig::default();
            c.limits.linking = bad;
            assert!(c.validate().unwrap_err().to_string().contains("limits.linking"));
        }
    }

    #[test]
    fn the_example_config_is_valid_and_complete() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/imfree.toml");
        let parsed = RelayConfig::from_file(&path).expect("examples/imfree.toml parses with deny_unknown_fields");
        let defaults = RelayConfig::default();
        assert_eq!(parsed.limits.commit_batch, defaults.limits.commit_batch, "the example shows the defaults");
        assert_eq!(parsed.limits.max_prekeys_per_device, defaults.limits.max_prekeys_per_device);
        assert_eq!(parsed.limits.max_group_log_entries, defaults.limits.max_group_log_entries);
        assert_eq!(parsed.limits.protocol, defaults.limits.protocol);
        assert_eq!(parsed.plugin_host, defaults.plugin_host);
        assert_eq!(parsed.limits.linking, defaults.limits.linking);
        assert_eq!(parsed.files, defaults.files);
    }
}
