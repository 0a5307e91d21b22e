//! Relay-scope plugins: the administrator's `[plugins.<name>]` entries whose manifest declares the `relay` scope run
//! here, in the relay process, on the [`PluginHost`] sandbox.
//!
//! They see what the relay sees and nothing more: envelopes (sender, recipients, conversation, outer content type,
//! size, time — never a body, which the relay cannot read anyway) through `relay-envelope`, which may pass or
//! reject; presence changes; HTTP requests to `/plugins/<name>/…`; their timers. Their kv data lives in the relay's
//! store. They cannot post messages: a relay holds no keys (plugins that post run in bot scope).
//!
//! The configuration file is watched: when a plugin's entry, manifest or component changes, the plugin is replaced
//! atomically (the new instance is initialised before it takes over; calls already running finish on the old one),
//! so reloading loses no message and filters none twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use imfree_plugin_host::host::HostServices;
use imfree_plugin_host::services::SinkError;
use imfree_plugin_host::{
    Card, EnvelopeOutcome, HostOptions, Incident, IncidentSink, KvBackend, KvError, MessageSink, PluginConfig,
    PluginHost, PluginIdentity, PluginManifest, Presence, PresenceTracker, Scope, SystemClock,
};
use imfree_store::RelayStore;
use serde::{Deserialize, Serialize};

use crate::config::RelayConfig;

/// Engine-wide plugin settings (`[plugin_host]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginHostConfig {
    /// How often the configuration file, manifests and components are checked for changes, ms. 0 turns hot
    /// reload off.
    pub reload_interval_ms: u64,
    /// Live plugin instances at most (the pooling allocator's size).
    pub max_instances: u32,
    /// Upper bound of any plugin's memory limit, MiB.
    pub max_memory_mib: u32,
    /// Largest request body accepted on `/plugins/<name>/…`, bytes.
    pub max_http_body_bytes: usize,
    /// How often due timers are fired, ms.
    pub timer_tick_ms: u64,
    /// Where bot-scope plugins keep their accounts: keys, the messages sent to them (decrypted) and their kv, one
    /// folder per bot. Default `<data_dir>/bots`. It holds plaintext: protect and back it up like a user's device.
    pub bots_dir: Option<PathBuf>,
    /// Where the `imfree` binary installs the plugins bundled with it (`[plugins.<name>]` without `path`).
    /// Default `<data_dir>/bundled`.
    pub bundled_dir: Option<PathBuf>,
}

impl Default for PluginHostConfig {
    fn default() -> Self {
        PluginHostConfig {
            reload_interval_ms: 2_000,
            max_instances: 64,
            max_memory_mib: 256,
            max_http_body_bytes: 1 << 20,
            timer_tick_ms: 200,
            bots_dir: None,
            bundled_dir: None,
        }
    }
}

/// The relay's plugins.
pub struct RelayPlugins {
    host: OnceLock<Arc<PluginHost>>,
    store: Arc<dyn RelayStore>,
    /// The account directory relay-scope plugins reach through the `accounts` capability (single sign-on).
    accounts: crate::accounts::RelayAccounts,
    settings: PluginHostConfig,
    cache_dir: PathBuf,
    bundled_dir: PathBuf,
    /// Name → fingerprint of what is loaded (its configuration and the files' sizes and times).
    loaded: tokio::sync::Mutex<BTreeMap<String, String>>,
    incidents: Arc<LoggedIncidents>,
    /// The presence last told to plugins, per user (`status-change` carries the previous one).
    presence: PresenceTracker,
    /// Bot-scope plugins' runtimes by plugin name, for their HTTP routes (the embedder registers them).
    bot_routes: std::sync::RwLock<BTreeMap<String, Arc<PluginHost>>>,
}

impl RelayPlugins {
    /// Plugins for a relay whose data lives in `data_dir`, checking account names against `limits`; nothing is loaded
    /// yet.
    pub fn new(store: Arc<dyn RelayStore>, settings: PluginHostConfig, data_dir: &Path, limits: imfree_proto::Limits) -> Arc<Self> {
        let bundled_dir = settings.bundled_dir.clone().unwrap_or_else(|| data_dir.join("bundled"));
        Arc::new(RelayPlugins {
            host: OnceLock::new(),
            accounts: crate::accounts::RelayAccounts::new(Arc::clone(&store), limits),
            store,
            settings,
            cache_dir: data_dir.join("plugin-cache"),
            bundled_dir,
            loaded: tokio::sync::Mutex::new(BTreeMap::new()),
            incidents: Arc::new(LoggedIncidents),
            presence: PresenceTracker::new(),
            bot_routes: std::sync::RwLock::new(BTreeMap::new()),
        })
    }

    /// The account directory given to relay-scope plugins.
    pub fn accounts(&self) -> &crate::accounts::RelayAccounts {
        &self.accounts
    }

    /// Serve `/plugins/<name>/…` from a bot-scope plugin's runtime (its bot's engine) when no relay-scope plugin of
    /// that name is loaded. The relay stays unaware of bots: the embedder that runs them registers the route.
    pub fn register_bot_routes(&self, name: &str, host: Arc<PluginHost>) {
        self.bot_routes.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), host);
    }

    /// The runtime that answers `/plugins/<name>/…`: the relay's own if it has the plugin, else a bot's.
    pub fn http_host(&self, name: &str) -> Option<Arc<PluginHost>> {
        if let Some(host) = self.host.get().filter(|h| h.is_loaded(name)) {
            return Some(Arc::clone(host));
        }
        self.bot_routes.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// The runtime, once a plugin needed it (no engine and no instance pool are made for a relay without plugins).
    pub fn host(&self) -> Option<&Arc<PluginHost>> {
        self.host.get()
    }

    fn host_or_start(&self) -> anyhow::Result<&Arc<PluginHost>> {
        if let Some(host) = self.host.get() {
            return Ok(host);
        }
        let options = HostOptions {
            cache_dir: Some(self.cache_dir.clone()),
            max_instances: self.settings.max_instances,
            max_memory_mib: self.settings.max_memory_mib,
            ..HostOptions::default()
        };
        let services = HostServices {
            messages: Arc::new(NoMessaging),
            kv: Arc::new(RelayKv(Arc::clone(&self.store))),
            clock: Arc::new(SystemClock),
            incidents: Arc::clone(&self.incidents) as Arc<dyn IncidentSink>,
            // Single sign-on: the relay's accounts, behind the manifest's `accounts` capability and its grant.
            accounts: Arc::new(self.accounts.clone()),
            conversations: Arc::new(imfree_plugin_host::NoConversations),
            files: Arc::new(imfree_plugin_host::NoFiles),
            mail: Arc::new(imfree_plugin_host::NoMail),
        };
        let host = PluginHost::new(options, services).map_err(|e| anyhow::anyhow!("cannot start the plugin runtime: {e}"))?;
        Ok(self.host.get_or_init(|| Arc::new(host)))
    }

    /// Bring the loaded plugins in line with `configs`: load new and changed relay-scope plugins (a plugin that
    /// fails to load is reported and, if an older version runs, that one keeps running), unload removed and
    /// disabled ones. Relative paths are taken from `base_dir` (the configuration file's folder).
    pub async fn apply(&self, configs: &BTreeMap<String, PluginConfig>, base_dir: &Path) {
        let mut loaded = self.loaded.lock().await;
        let mut wanted = BTreeMap::new();
        for (name, config) in configs {
            let mut config = config.clone();
            config.resolve(name, base_dir, &self.bundled_dir);
            if !config.enabled {
                continue;
            }
            // Unchanged since it was loaded (entry, component and manifest): nothing to read again.
            let print = fingerprint(&config);
            if loaded.get(name) == Some(&print) {
                wanted.insert(name.clone(), (print, config));
                continue;
            }
            let manifest = match PluginManifest::from_path(&config.manifest_path()) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(plugin = %name, error = %e, "plugin manifest refused; not loaded");
                    continue;
                }
            };
            if manifest.name != *name {
                tracing::error!(plugin = %name, manifest = %manifest.name, "[plugins.<name>] must be the manifest's name; not loaded");
                continue;
            }
            if !manifest.scopes.contains(&Scope::Relay) {
                tracing::debug!(plugin = %name, "not a relay-scope plugin; the relay does not run it");
                continue;
            }
            wanted.insert(name.clone(), (print, config));
        }
        for name in loaded.keys().cloned().collect::<Vec<_>>() {
            if !wanted.contains_key(&name) {
                if let Some(host) = self.host() {
                    host.unload(&name);
                }
                loaded.remove(&name);
                tracing::info!(plugin = %name, "plugin unloaded");
            }
        }
        for (name, (print, config)) in wanted {
            if loaded.get(&name) == Some(&print) {
                continue;
            }
            let host = match self.host_or_start() {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(error = %e, "plugins are not available");
                    return;
                }
            };
            let replacing = loaded.contains_key(&name);
            match host.load(config).await {
                Ok(()) => {
                    tracing::info!(plugin = %name, replacing, "relay plugin {}", if replacing { "reloaded" } else { "loaded" });
                    loaded.insert(name, print);
                }
                // The reason was reported as an incident; a running older version stays.
                Err(e) => tracing::error!(plugin = %name, error = %e, "plugin not loaded"),
            }
        }
    }

    /// Run the `relay-envelope` filters.
    pub async fn envelope(&self, env: &imfree_plugin_host::Envelope) -> EnvelopeOutcome {
        match self.host() {
            Some(host) => host.relay_envelope(env).await,
            None => EnvelopeOutcome::Deliver,
        }
    }

    /// Tell `status-change` subscribers that `user` is now `status` (nothing when it did not change).
    pub async fn status_change(&self, user: &str, status: imfree_proto::Status) {
        let Some(host) = self.host() else { return };
        if let Some(change) = self.presence.change(user, presence_of(status), crate::state::now_ms().max(0) as u64) {
            host.status_change(&change).await;
        }
    }

    /// Start the timer tick and, if the configuration came from a file, the watcher that reloads on changes.
    pub fn spawn_tasks(self: &Arc<Self>, config_path: Option<PathBuf>) {
        let tick = Duration::from_millis(self.settings.timer_tick_ms.max(10));
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(plugins) = weak.upgrade() else { return };
                if let Some(host) = plugins.host() {
                    host.fire_due_timers().await;
                }
            }
        });
        let (Some(path), interval) = (config_path, self.settings.reload_interval_ms) else { return };
        if interval == 0 {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last = file_stamp(&path);
            loop {
                tokio::time::sleep(Duration::from_millis(interval)).await;
                let Some(plugins) = weak.upgrade() else { return };
                // The file is read on every round even when unchanged: each plugin's own files are compared too,
                // so a rebuilt component or an edited manifest is picked up.
                let stamp = file_stamp(&path);
                let changed = stamp != last;
                last = stamp;
                match RelayConfig::from_file(&path) {
                    Ok(config) => plugins.apply(&config.plugins, path.parent().unwrap_or(Path::new("."))).await,
                    Err(e) if changed => tracing::warn!(error = %e, "configuration not reloaded; the running plugins stay"),
                    Err(_) => {}
                }
            }
        });
    }
}

/// The plugin API's presence for a protocol status.
pub fn presence_of(status: imfree_proto::Status) -> Presence {
    match status {
        imfree_proto::Status::Online => Presence::Online,
        imfree_proto::Status::Away => Presence::Away,
        imfree_proto::Status::Offline => Presence::Offline,
    }
}

/// What identifies a loaded plugin's inputs: the configuration entry, and size and time of its files.
fn fingerprint(config: &PluginConfig) -> String {
    format!("{config:?}|{:?}|{:?}", file_stamp(&config.path), file_stamp(&config.manifest_path()))
}

fn file_stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// Incidents go to the log, with plugin, version, hook and reason (never message contents: plugins here see none).
#[derive(Default)]
struct LoggedIncidents;

impl IncidentSink for LoggedIncidents {
    fn report(&self, incident: &Incident) {
        tracing::warn!(plugin = %incident.plugin, version = %incident.version, kind = %incident.kind, "plugin incident: {incident}");
    }
}

/// Relay-scope plugins keep their kv data in the relay's store.
struct RelayKv(Arc<dyn RelayStore>);

fn unavailable(e: imfree_store::StoreError) -> KvError {
    tracing::error!(error = %e, "plugin kv store failed");
    KvError::Unavailable("the relay's store failed".into())
}

/// At most this many keys are listed at once.
const MAX_LISTED_KEYS: i64 = 10_000;

#[async_trait]
impl KvBackend for RelayKv {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.0.kv_get(namespace, key).await.map_err(unavailable)
    }
    async fn set(&self, namespace: &str, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        self.0.kv_set(namespace, key, &value).await.map_err(unavailable)
    }
    async fn delete(&self, namespace: &str, key: &str) -> Result<(), KvError> {
        self.0.kv_delete(namespace, key).await.map_err(unavailable)
    }
    async fn list_keys(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, KvError> {
        self.0.kv_keys(namespace, prefix, MAX_LISTED_KEYS).await.map_err(unavailable)
    }
    async fn usage(&self, namespace: &str) -> Result<u64, KvError> {
        self.0.kv_usage(namespace).await.map(|n| n.max(0) as u64).map_err(unavailable)
    }
}

/// The relay cannot post: it holds no keys, and every message is end-to-end encrypted.
struct NoMessaging;

fn no_messaging() -> SinkError {
    SinkError::Invalid("a relay-scope plugin cannot post messages (the relay holds no keys); run it in bot scope".into())
}

#[async_trait]
impl MessageSink for NoMessaging {
    async fn post(&self, _: &PluginIdentity, _: &str, _: &str) -> Result<String, SinkError> {
        Err(no_messaging())
    }
    async fn reply(&self, _: &PluginIdentity, _: &str, _: &str, _: &str) -> Result<String, SinkError> {
        Err(no_messaging())
    }
    async fn react(&self, _: &PluginIdentity, _: &str, _: &str, _: &str) -> Result<(), SinkError> {
        Err(no_messaging())
    }
    async fn send(&self, _: &PluginIdentity, _: &imfree_plugin_host::Draft) -> Result<String, SinkError> {
        Err(no_messaging())
    }
    async fn post_card(&self, _: &PluginIdentity, _: &str, _: &Card) -> Result<String, SinkError> {
        Err(no_messaging())
    }
}
