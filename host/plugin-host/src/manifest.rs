//! `plugin.toml`: what a plugin says about itself — name, version, API version, scopes, hooks, the capabilities it
//! asks for and the schema of its settings. Asking is not getting: [`crate::capability`] combines this with the
//! administrator's grants. This module only parses and validates; it touches no files beyond the one it is given.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::capability::HttpOrigin;
use crate::wit::SUPPORTED_API_VERSIONS;

/// A parsed and validated `plugin.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginManifest {
    /// Unique plugin name: lower-case letters, digits and `-`; also its kv namespace and HTTP route prefix.
    pub name: String,
    /// The plugin's own version (`MAJOR.MINOR.PATCH`).
    pub version: String,
    /// The WIT API version it was built against, one of [`SUPPORTED_API_VERSIONS`].
    pub api: String,
    /// Free text for `imfree plugin list`.
    pub description: String,
    /// Where it may run.
    pub scopes: Vec<Scope>,
    /// Hooks the host should call; the others are never called.
    pub hooks: Vec<Hook>,
    /// Capabilities asked for.
    pub capabilities: RequestedCapabilities,
    /// Settings schema, by key.
    pub settings: BTreeMap<String, SettingSpec>,
}

/// Where a plugin runs (DESIGN.md section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// In the relay: envelopes (metadata only), presence, HTTP routes, timers.
    Relay,
    /// As a bot account with its own client engine.
    Bot,
    /// Inside one user's own client.
    Client,
}

/// The hooks (WIT exports) a plugin can subscribe to; `init` is always called and is not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    /// `incoming-message`.
    IncomingMessage,
    /// `outgoing-message` (a filter: pass, modify, reject).
    OutgoingMessage,
    /// `relay-envelope` (a relay filter: pass or reject).
    RelayEnvelope,
    /// `status-change`.
    StatusChange,
    /// `command`.
    Command,
    /// `action`.
    Action,
    /// `http`.
    Http,
    /// `timer`.
    Timer,
}

impl Hook {
    /// The WIT export's name.
    pub fn wit_name(self) -> &'static str {
        match self {
            Hook::IncomingMessage => "incoming-message",
            Hook::OutgoingMessage => "outgoing-message",
            Hook::RelayEnvelope => "relay-envelope",
            Hook::StatusChange => "status-change",
            Hook::Command => "command",
            Hook::Action => "action",
            Hook::Http => "http",
            Hook::Timer => "timer",
        }
    }

    /// Scopes in which the host has the data this hook needs.
    pub fn scopes(self) -> &'static [Scope] {
        match self {
            // A command is typed into an encrypted conversation and a card is posted as an account: the relay sees
            // neither, so relay scope never calls these.
            Hook::IncomingMessage | Hook::OutgoingMessage | Hook::Command | Hook::Action => &[Scope::Bot, Scope::Client],
            Hook::RelayEnvelope => &[Scope::Relay],
            // Routes under /plugins/<name>/ on the relay: a relay-scope plugin's, or (since API 0.2.0) a bot's.
            Hook::Http => &[Scope::Relay, Scope::Bot],
            Hook::StatusChange | Hook::Timer => &[Scope::Relay, Scope::Bot, Scope::Client],
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wit_name())
    }
}

/// Capabilities a manifest asks for (`[capabilities]`). `log` and `config` need no asking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestedCapabilities {
    /// `kv = true`.
    pub kv: bool,
    /// `messaging = true`.
    pub messaging: bool,
    /// `timers = true`.
    pub timers: bool,
    /// `accounts = true` (relay scope: linked identities, provisioning, login codes; for SSO). Since API 0.2.0.
    pub accounts: bool,
    /// `files = true` (bot and client scopes: read and send the files of the conversations). Since API 0.3.0.
    pub files: bool,
    /// `mail = true` (bot scope: e-mail through the administrator's SMTP and IMAP servers). Since API 0.3.0.
    pub mail: bool,
    /// `http.outbound = ["https://host[:port][/path]", ...]`.
    pub http_outbound: Vec<HttpOrigin>,
    /// `http.outbound = ["*"]`: whatever origins the administrator grants, for plugins whose targets are the
    /// administrator's to choose (webhooks, an identity provider). The grant stays the gate.
    pub http_outbound_any: bool,
}

/// Type of a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SettingType {
    /// TOML string.
    String,
    /// TOML integer.
    Integer,
    /// TOML float (integers accepted).
    Float,
    /// TOML boolean.
    Boolean,
    /// TOML array (of tables or values), given to the plugin as JSON text: structured settings such as a list of
    /// webhook targets or identity providers.
    Array,
}

impl SettingType {
    /// Whether `value` has this type.
    pub fn accepts(self, value: &toml::Value) -> bool {
        matches!(
            (self, value),
            (SettingType::String, toml::Value::String(_))
                | (SettingType::Integer, toml::Value::Integer(_))
                | (SettingType::Float, toml::Value::Float(_) | toml::Value::Integer(_))
                | (SettingType::Boolean, toml::Value::Boolean(_))
                | (SettingType::Array, toml::Value::Array(_))
        )
    }
}

/// One entry of `[settings.<key>]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingSpec {
    /// Value type.
    #[serde(rename = "type")]
    pub kind: SettingType,
    /// Default when the administrator sets nothing.
    #[serde(default)]
    pub default: Option<toml::Value>,
    /// Whether the administrator must set it (only meaningful without a default).
    #[serde(default)]
    pub required: bool,
    /// Shown to administrators.
    #[serde(default)]
    pub description: String,
    /// Secret values (tokens) are never logged or listed.
    #[serde(default)]
    pub secret: bool,
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read plugin manifest {path}: {source}")]
    Io {
        /// The manifest path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML or an unknown/mistyped key.
    #[error("plugin.toml is not valid: {0}")]
    Toml(#[from] toml::de::Error),
    /// Bad name.
    #[error("plugin name {0:?} is invalid: use 1-64 lower-case letters, digits and '-', starting with a letter")]
    InvalidName(String),
    /// Bad version.
    #[error("plugin version {0:?} is invalid: use MAJOR.MINOR.PATCH")]
    InvalidVersion(String),
    /// API version this host does not implement.
    #[error(
        "plugin API version {found:?} is not supported by this host (supported: {supported}); rebuild the plugin against a supported imfree-plugin-sdk"
    )]
    UnsupportedApi {
        /// What the manifest says.
        found: String,
        /// What this host supports.
        supported: String,
    },
    /// `scopes` is empty.
    #[error("plugin.toml lists no scopes: add scopes = [\"relay\" | \"bot\" | \"client\", ...]")]
    NoScopes,
    /// A hook that none of the plugin's scopes can call.
    #[error("hook {hook} is never called in scopes {scopes:?}: it needs one of {needs:?}")]
    HookOutOfScope {
        /// The hook.
        hook: Hook,
        /// The manifest's scopes.
        scopes: Vec<Scope>,
        /// Scopes that call it.
        needs: &'static [Scope],
    },
    /// A setting's default has the wrong type.
    #[error("setting {key:?}: default does not have type {expected:?}")]
    SettingDefaultType {
        /// Setting key.
        key: String,
        /// Declared type.
        expected: SettingType,
    },
    /// An `http.outbound` entry is not an http(s) origin.
    #[error("capabilities.http.outbound entry {entry:?} is invalid: {reason}")]
    HttpOrigin {
        /// The entry.
        entry: String,
        /// Why.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    api: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    scopes: Vec<Scope>,
    #[serde(default)]
    hooks: Vec<Hook>,
    #[serde(default)]
    capabilities: RawCapabilities,
    #[serde(default)]
    settings: BTreeMap<String, SettingSpec>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCapabilities {
    #[serde(default)]
    kv: bool,
    #[serde(default)]
    messaging: bool,
    #[serde(default)]
    timers: bool,
    #[serde(default)]
    accounts: bool,
    #[serde(default)]
    files: bool,
    #[serde(default)]
    mail: bool,
    #[serde(default)]
    http: RawHttp,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default)]
    outbound: Vec<String>,
}

/// Whether `name` is a valid plugin name.
pub fn valid_plugin_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn valid_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

impl PluginManifest {
    /// Parse and validate manifest text.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let raw: RawManifest = toml::from_str(text)?;
        if !valid_plugin_name(&raw.name) {
            return Err(ManifestError::InvalidName(raw.name));
        }
        if !valid_version(&raw.version) {
            return Err(ManifestError::InvalidVersion(raw.version));
        }
        if !SUPPORTED_API_VERSIONS.contains(&raw.api.as_str()) {
            return Err(ManifestError::UnsupportedApi {
                found: raw.api,
                supported: SUPPORTED_API_VERSIONS.join(", "),
            });
        }
        if raw.scopes.is_empty() {
            return Err(ManifestError::NoScopes);
        }
        for hook in &raw.hooks {
            if !hook.scopes().iter().any(|s| raw.scopes.contains(s)) {
                return Err(ManifestError::HookOutOfScope {
                    hook: *hook,
                    scopes: raw.scopes.clone(),
                    needs: hook.scopes(),
                });
            }
        }
        for (key, spec) in &raw.settings {
            if let Some(default) = &spec.default
                && !spec.kind.accepts(default) {
                    return Err(ManifestError::SettingDefaultType {
                        key: key.clone(),
                        expected: spec.kind,
                    });
                }
        }
        let http_outbound = raw
            .capabilities
            .http
            .outbound
            .iter()
            .filter(|entry| *entry != "*")
            .map(|entry| {
                HttpOrigin::parse(entry).map_err(|reason| ManifestError::HttpOrigin {
                    entry: entry.clone(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut hooks = raw.hooks;
        hooks.sort();
        hooks.dedup();
        Ok(PluginManifest {
            name: raw.name,
            version: raw.version,
            api: raw.api,
            description: raw.description,
            scopes: raw.scopes,
            hooks,
            capabilities: RequestedCapabilities {
                kv: raw.capabilities.kv,
                messaging: raw.capabilities.messaging,
                timers: raw.capabilities.timers,
                accounts: raw.capabilities.accounts,
                files: raw.capabilities.files,
                mail: raw.capabilities.mail,
                http_outbound,
                http_outbound_any: raw.capabilities.http.outbound.iter().any(|e| e == "*"),
            },
            settings: raw.settings,
        })
    }

    /// Read and parse a `plugin.toml`.
    pub fn from_path(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Whether the plugin subscribed to `hook`.
    pub fn has_hook(&self, hook: Hook) -> bool {
        self.hooks.contains(&hook)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        name = "auto-reply"
        version = "0.1.0"
        api = "0.1.0"
        scopes = ["bot", "client"]
        hooks = ["incoming-message", "command", "incoming-message"]
        [capabilities]
        kv = true
        messaging = true
        http.outbound = ["https://hooks.slack.com"]
        [settings.keyword]
        type = "string"
        default = "ping"
    "#;

    #[test]
    fn parses_a_full_manifest() {
        let m = PluginManifest::parse(GOOD).unwrap();
        assert_eq!(m.name, "auto-reply");
        assert_eq!(m.hooks, vec![Hook::IncomingMessage, Hook::Command]);
        assert!(m.capabilities.kv && m.capabilities.messaging && !m.capabilities.timers);
        assert_eq!(m.capabilities.http_outbound.len(), 1);
        assert_eq!(m.settings["keyword"].default, Some(toml::Value::String("ping".into())));
    }

    #[test]
    fn refuses_bad_names_versions_and_api() {
        let bad = GOOD.replace("\"auto-reply\"", "\"Auto Reply\"");
        assert!(matches!(
            PluginManifest::parse(&bad),
            Err(ManifestError::InvalidName(_))
        ));
        let bad = GOOD.replace("version = \"0.1.0\"", "version = \"1\"");
        assert!(matches!(
            PluginManifest::parse(&bad),
            Err(ManifestError::InvalidVersion(_))
        ));
        let bad = GOOD.replace("api = \"0.1.0\"", "api = \"9.0.0\"");
        let err = PluginManifest::parse(&bad).unwrap_err();
        assert!(matches!(err, ManifestError::UnsupportedApi { .. }));
        assert!(err.to_string().contains("0.1.0"), "{err}");
    }

    #[test]
    fn refuses_unknown_keys_hooks_and_capabilities() {
        let bad = GOOD.replace("kv = true", "filesystem = true");
        assert!(matches!(PluginManifest::parse(&bad), Err(ManifestError::Toml(_))));
        let bad = GOOD.replace("\"command\"", "\"shell\"");
        assert!(matches!(PluginManifest::parse(&bad), Err(ManifestError::Toml(_))));
    }

    #[test]
    fn refuses_hooks_outside_the_scopes_and_no_scopes() {
        let bad = GOOD.replace("hooks = [", "hooks = [\"relay-envelope\", ");
        assert!(matches!(
            PluginManifest::parse(&bad),
            Err(ManifestError::HookOutOfScope { .. })
        ));
        let bad = GOOD.replace("scopes = [\"bot\", \"client\"]", "scopes = []");
        assert!(matches!(PluginManifest::parse(&bad), Err(ManifestError::NoScopes)));
    }

    #[test]
    fn refuses_mistyped_defaults_and_bad_origins() {
        let bad = GOOD.replace("default = \"ping\"", "default = 3");
        assert!(matches!(
            PluginManifest::parse(&bad),
            Err(ManifestError::SettingDefaultType { .. })
        ));
        let bad = GOOD.replace("https://hooks.slack.com", "ftp://x");
        assert!(matches!(
            PluginManifest::parse(&bad),
            Err(ManifestError::HttpOrigin { .. })
        ));
    }
}
