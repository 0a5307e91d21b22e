//! The administrator's side: `[plugins.<name>]` in the server's (or client's) TOML — enabled, path, grants,
//! settings, limits and failure policy. Parsing and validation only; the host applies it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::capability::HttpOrigin;
use crate::manifest::{Hook, PluginManifest};

/// One plugin's admin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginConfig {
    /// A disabled plugin is not loaded.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The component (`.wasm`). Empty (not set): the plugin of this name bundled with imfree (see [`Self::resolve`]).
    #[serde(default)]
    pub path: PathBuf,
    /// The manifest; defaults to `plugin.toml` beside `path`.
    #[serde(default)]
    pub manifest: Option<PathBuf>,
    /// What the administrator allows.
    #[serde(default)]
    pub grants: Grants,
    /// Values for the manifest's settings.
    #[serde(default)]
    pub settings: BTreeMap<String, toml::Value>,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// What happens when the plugin fails.
    #[serde(default)]
    pub failure: FailureSettings,
    /// The mail servers of a plugin with the `mail` capability (the embedder connects; the plugin never sees
    /// these settings).
    #[serde(default)]
    pub mail: Option<MailSettings>,
}

fn yes() -> bool {
    true
}

impl PluginConfig {
    /// A config for `path` with nothing granted and default limits.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        PluginConfig {
            enabled: true,
            path: path.into(),
            manifest: None,
            grants: Grants::default(),
            settings: BTreeMap::new(),
            limits: Limits::default(),
            failure: FailureSettings::default(),
            mail: None,
        }
    }

    /// Whether this configuration names no component, and so means the bundled plugin of its name.
    pub fn is_bundled(&self) -> bool {
        self.path.as_os_str().is_empty()
    }

    /// Where the bundled plugin `name` is installed under `bundled_dir`: `<bundled_dir>/<name>/plugin.wasm`, with
    /// its `plugin.toml` beside it.
    pub fn bundled_path(bundled_dir: &std::path::Path, name: &str) -> PathBuf {
        bundled_dir.join(name).join("plugin.wasm")
    }

    /// Resolve the paths of `[plugins.<name>]`: no `path` means the bundled plugin `name` (installed under
    /// `bundled_dir` by the `imfree` binary), and relative paths are relative to `base` (the folder of the
    /// configuration file they come from). The relay, the bot runner and `imfree plugin list` all do this.
    pub fn resolve(&mut self, name: &str, base: &std::path::Path, bundled_dir: &std::path::Path) {
        if self.is_bundled() {
            self.path = Self::bundled_path(bundled_dir, name);
        }
        self.resolve_relative(base);
    }

    /// Take relative `path` and `manifest` as relative to `base`.
    pub fn resolve_relative(&mut self, base: &std::path::Path) {
        if self.path.is_relative() {
            self.path = base.join(&self.path);
        }
        if let Some(m) = self.manifest.as_mut().filter(|m| m.is_relative()) {
            *m = base.join(&*m);
        }
    }

    /// Where the manifest is.
    pub fn manifest_path(&self) -> PathBuf {
        self.manifest.clone().unwrap_or_else(|| {
            self.path
                .parent()
                .map(|d| d.join("plugin.toml"))
                .unwrap_or_else(|| PathBuf::from("plugin.toml"))
        })
    }

    /// Check the grants and settings against the manifest and render the effective settings as text
    /// (the `config` interface's view: strings as-is, other values in TOML syntax).
    pub fn resolve_settings(&self, manifest: &PluginManifest) -> Result<BTreeMap<String, String>, ConfigError> {
        for entry in &self.grants.http_outbound {
            HttpOrigin::parse(entry).map_err(|reason| ConfigError::HttpGrant {
                entry: entry.clone(),
                reason,
            })?;
        }
        let mut out = BTreeMap::new();
        for key in self.settings.keys() {
            if !manifest.settings.contains_key(key) {
                return Err(ConfigError::UnknownSetting(key.clone()));
            }
        }
        for (key, spec) in &manifest.settings {
            let value = match (self.settings.get(key), &spec.default) {
                (Some(v), _) => {
                    if !spec.kind.accepts(v) {
                        return Err(ConfigError::SettingType {
                            key: key.clone(),
                            expected: spec.kind,
                        });
                    }
                    v
                }
                (None, Some(d)) => d,
                (None, None) if spec.required => {
                    return Err(ConfigError::MissingSetting(key.clone()));
                }
                (None, None) => continue,
            };
            let text = match value {
                toml::Value::String(s) => s.clone(),
                // Arrays go to the guest as JSON, which every plugin language parses without a TOML library.
                toml::Value::Array(_) => serde_json::to_string(value).map_err(|e| ConfigError::SettingType {
                    key: format!("{key} ({e})"),
                    expected: spec.kind,
                })?,
                other => other.to_string(),
            };
            out.insert(key.clone(), text);
        }
        Ok(out)
    }
}

/// Why an admin configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting the manifest does not declare.
    #[error("setting {0:?} is not declared in the plugin's plugin.toml")]
    UnknownSetting(String),
    /// A setting of the wrong type.
    #[error("setting {key:?} must be of type {expected:?}")]
    SettingType {
        /// Key.
        key: String,
        /// Declared type.
        expected: crate::manifest::SettingType,
    },
    /// A required setting without a value.
    #[error("setting {0:?} is required: set it under [plugins.<name>.settings]")]
    MissingSetting(String),
    /// A malformed `grants.http-outbound` entry.
    #[error("grants.http-outbound entry {entry:?} is invalid: {reason}")]
    HttpGrant {
        /// The entry.
        entry: String,
        /// Why.
        reason: String,
    },
}

/// `[plugins.<name>.mail]`: where a mail plugin's messages go out and come in. Secrets come from files (mode
/// 0600 is the administrator's business) or the environment, never from this file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MailSettings {
    /// The address the plugin sends from (envelope sender, and the address its mail comes back to).
    pub from: String,
    /// Outgoing mail.
    #[serde(default)]
    pub smtp: Option<MailServer>,
    /// The mailbox incoming mail is fetched from.
    #[serde(default)]
    pub imap: Option<MailServer>,
}

/// One mail server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MailServer {
    /// Host name or address.
    pub host: String,
    /// Port; defaults by protocol and `tls` (SMTP 587 / 465, IMAP 143 / 993).
    #[serde(default)]
    pub port: Option<u16>,
    /// `starttls` (the default: upgrade, and refuse a server that does not offer it), `tls` (implicit TLS) or
    /// `none` (plain text; only for loopback test servers).
    #[serde(default)]
    pub tls: MailTls,
    /// A PEM file of extra root certificates to trust (a private CA, a test server's self-signed certificate).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// User name for AUTH / LOGIN; none: no authentication.
    #[serde(default)]
    pub user: Option<String>,
    /// File holding the password (first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// IMAP mailbox to read (default `INBOX`).
    #[serde(default)]
    pub mailbox: Option<String>,
}

/// How a mail connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MailTls {
    /// Plain connection upgraded with STARTTLS; a server that does not offer it is refused.
    #[default]
    Starttls,
    /// TLS from the first byte.
    Tls,
    /// No TLS at all (loopback test servers).
    None,
}

/// What the administrator allows. Everything defaults to refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Grants {
    /// The key-value store.
    #[serde(default)]
    pub kv: bool,
    /// Posting as the plugin's bot.
    #[serde(default)]
    pub messaging: bool,
    /// Timers.
    #[serde(default)]
    pub timers: bool,
    /// The relay's accounts (identity plugins: SSO).
    #[serde(default)]
    pub accounts: bool,
    /// The files of the bot's conversations.
    #[serde(default)]
    pub files: bool,
    /// E-mail through the servers of `[plugins.<name>.mail]`.
    #[serde(default)]
    pub mail: bool,
    /// Outbound HTTP origins (`https://host[:port][/path]`).
    #[serde(default)]
    pub http_outbound: Vec<String>,
    /// Let outbound HTTP reach loopback, RFC 1918, CGNAT and unique-local addresses (intranet services, tests).
    /// Link-local (the cloud metadata service), multicast, unspecified and reserved addresses stay refused.
    #[serde(default)]
    pub http_allow_private: bool,
}

/// Per-plugin resource limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Limits {
    /// Linear memory, MiB.
    pub memory_mib: u32,
    /// CPU time per hook call, ms (enforced by epoch interruption, so rounded up to the epoch tick).
    pub cpu_ms_per_call: u64,
    /// Wall-clock time per hook call including host calls, ms.
    pub wall_ms_per_call: u64,
    /// Bytes of kv data (keys + values).
    pub kv_quota_bytes: u64,
    /// Largest value a hook may return or a host call may take (message text, HTTP body), bytes.
    pub max_output_bytes: usize,
    /// Live timers.
    pub max_timers: u32,
    /// Largest response body an outbound HTTP request may receive, bytes.
    pub http_max_response_bytes: u64,
    /// Time an outbound HTTP request may take from the call to the last body byte, ms. Never more than 90 % of
    /// the call's wall-clock limit, so the plugin sees a timeout error while it still has time to handle it.
    pub http_timeout_ms: u64,
    /// Outbound HTTP requests per hook call.
    pub http_max_requests_per_call: u32,
    /// Outbound HTTP requests of this plugin in flight at once, across calls (a guest that leaks response
    /// futures cannot pile up connections).
    pub http_max_concurrent: u32,
    /// Largest file the plugin may read or send through `files`, bytes (it lands in the guest's memory, so keep
    /// it well under `memory-mib`).
    pub files_max_bytes: u64,
    /// Largest e-mail the plugin may send or be handed through `mail`, bytes.
    pub mail_max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: 64,
            cpu_ms_per_call: 100,
            wall_ms_per_call: 2_000,
            kv_quota_bytes: 1 << 20,
            max_output_bytes: 1 << 20,
            max_timers: 64,
            http_max_response_bytes: 4 << 20,
            http_timeout_ms: 10_000,
            http_max_requests_per_call: 16,
            http_max_concurrent: 16,
            files_max_bytes: 16 << 20,
            mail_max_bytes: 16 << 20,
        }
    }
}

impl Limits {
    /// Wall-clock limit as a duration.
    pub fn wall(&self) -> Duration {
        Duration::from_millis(self.wall_ms_per_call)
    }
}

/// Fail-open lets the message through when the plugin cannot decide; fail-closed refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Treat a failed filter as `pass`.
    FailOpen,
    /// Treat a failed filter as `reject`.
    FailClosed,
}

/// Failure policy, backoff and quarantine.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct FailureSettings {
    /// Explicit policy; when unset, filters (`outgoing-message`, `relay-envelope`) fail closed — a plugin that can
    /// be made to trap must not become a way around its own filter — and other hooks have nothing to decide.
    pub policy: Option<FailurePolicy>,
    /// Delay before the plugin is called again after its second consecutive failure, ms; doubles per failure.
    pub backoff_initial_ms: u64,
    /// Cap on the backoff delay, ms.
    pub backoff_max_ms: u64,
    /// Consecutive failures after which the plugin is quarantined (not called until reloaded or reset).
    pub quarantine_after: u32,
}

impl Default for FailureSettings {
    fn default() -> Self {
        FailureSettings {
            policy: None,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 60_000,
            quarantine_after: 10,
        }
    }
}

impl FailureSettings {
    /// The policy for `hook`.
    pub fn policy_for(&self, hook: Hook) -> FailurePolicy {
        self.policy.unwrap_or(match hook {
            Hook::OutgoingMessage | Hook::RelayEnvelope => FailurePolicy::FailClosed,
            _ => FailurePolicy::FailOpen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> PluginManifest {
        PluginManifest::parse(
            r#"
            name = "p"
            version = "1.0.0"
            api = "0.1.0"
            scopes = ["bot"]
            [settings.keyword]
            type = "string"
            default = "ping"
            [settings.count]
            type = "integer"
            default = 3
            [settings.token]
            type = "string"
            required = true
            secret = true
            [settings.optional]
            type = "boolean"
            "#,
        )
        .unwrap()
    }

    fn admin(text: &str) -> PluginConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn parses_admin_config_with_defaults() {
        let c = admin(
            r#"
            path = "plugins/p.wasm"
            grants = { kv = true, http-outbound = ["https://hooks.slack.com"] }
            limits = { memory-mib = 32 }
            failure = { policy = "fail-open", quarantine-after = 3 }
            settings = { token = "t" }
            "#,
        );
        assert!(c.enabled && c.grants.kv && !c.grants.messaging);
        assert_eq!(c.limits.memory_mib, 32);
        assert_eq!(c.limits.cpu_ms_per_call, Limits::default().cpu_ms_per_call);
        assert_eq!(c.failure.policy_for(Hook::OutgoingMessage), FailurePolicy::FailOpen);
        assert_eq!(c.manifest_path(), PathBuf::from("plugins/plugin.toml"));
        assert!(toml::from_str::<PluginConfig>("path = \"x\"\nroot = true").is_err());
    }

    #[test]
    fn filters_fail_closed_by_default() {
        let f = FailureSettings::default();
        assert_eq!(f.policy_for(Hook::OutgoingMessage), FailurePolicy::FailClosed);
        assert_eq!(f.policy_for(Hook::RelayEnvelope), FailurePolicy::FailClosed);
        assert_eq!(f.policy_for(Hook::IncomingMessage), FailurePolicy::FailOpen);
    }

    #[test]
    fn resolves_settings_against_the_schema() {
        let m = manifest();
        let s = admin("path = \"x\"\nsettings = { token = \"abc\", count = 5 }")
            .resolve_settings(&m)
            .unwrap();
        assert_eq!(s["keyword"], "ping");
        assert_eq!(s["count"], "5");
        assert_eq!(s["token"], "abc");
        assert!(!s.contains_key("optional"));
        assert!(
            matches!(admin("path = \"x\"").resolve_settings(&m), Err(ConfigError::MissingSetting(k)) if k == "token")
        );
        assert!(matches!(
            admin("path = \"x\"\nsettings = { token = \"a\", count = \"many\" }").resolve_settings(&m),
            Err(ConfigError::SettingType { .. })
        ));
        assert!(matches!(
            admin("path = \"x\"\nsettings = { token = \"a\", nope = 1 }").resolve_settings(&m),
            Err(ConfigError::UnknownSetting(_))
        ));
        assert!(matches!(
            admin("path = \"x\"\nsettings = { token = \"a\" }\ngrants = { http-outbound = [\"gopher://x\"] }")
                .resolve_settings(&m),
            Err(ConfigError::HttpGrant { .. })
        ));
    }

    #[test]
    fn array_settings_reach_the_guest_as_json_and_other_types_are_refused() {
        let manifest = PluginManifest::parse(
            r#"
            name = "p"
            version = "1.0.0"
            api = "0.2.0"
            scopes = ["bot"]
            [settings.targets]
            type = "array"
            default = []
            "#,
        )
        .unwrap();
        let config = admin(
            r#"path = "p.wasm"
            settings = { targets = [{ name = "ops", url = "https://example.com/hook", retries = 3 }] }"#,
        );
        let settings = config.resolve_settings(&manifest).unwrap();
        let json: serde_json::Value = serde_json::from_str(&settings["targets"]).unwrap();
        assert_eq!(json, serde_json::json!([{ "name": "ops", "url": "https://example.com/hook", "retries": 3 }]));
        assert_eq!(PluginConfig::new("p.wasm").resolve_settings(&manifest).unwrap()["targets"], "[]");
        let wrong = admin(r#"path = "p.wasm"
            settings = { targets = "https://example.com" }"#);
        assert!(matches!(wrong.resolve_settings(&manifest), Err(ConfigError::SettingType { .. })));
    }

    #[test]
    fn a_table_without_path_means_the_bundled_plugin() {
        let mut config = admin("grants = { kv = true }");
        assert!(config.is_bundled());
        config.resolve("webhooks", std::path::Path::new("/etc/imfree"), std::path::Path::new("/var/lib/imfree/bundled"));
        assert_eq!(config.path, std::path::Path::new("/var/lib/imfree/bundled/webhooks/plugin.wasm"));
        assert_eq!(config.manifest_path(), std::path::Path::new("/var/lib/imfree/bundled/webhooks/plugin.toml"));
        let mut own = admin(r#"path = "plugins/w.wasm""#);
        own.resolve("webhooks", std::path::Path::new("/etc/imfree"), std::path::Path::new("/var/lib/imfree/bundled"));
        assert_eq!(own.path, std::path::Path::new("/etc/imfree/plugins/w.wasm"));
    }
}
