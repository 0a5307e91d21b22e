//! [`PluginHost`]: loads plugins (manifest + admin config + component), keeps one live instance per plugin, and
//! dispatches hooks with limits, failure containment and the failure policy.
//!
//! Containment: every call runs under an epoch deadline (CPU), a wall-clock timeout (including host calls) and
//! the store's memory limiter. When a call traps, times out or returns too much, the instance's `Store` is dropped
//! (a trapped instance cannot be re-entered) and the next call instantiates afresh from the `InstancePre`; an
//! [`Incident`] is reported and the plugin's [`Health`] decides backoff and quarantine.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Engine, Store};

use crate::capabilities;
use crate::capabilities::timers::TimerTable;
use crate::capability::CapabilityCheck;
use crate::config::{ConfigError, FailurePolicy, PluginConfig};
use crate::engine::{ComponentCache, EpochTicker, build_engine};
use crate::health::{Admission, AfterFailure, Health};
use crate::incident::{Incident, IncidentKind, IncidentSink};
use crate::manifest::{Hook, ManifestError, PluginManifest};
use crate::services::{AccountDirectory, Clock, ConversationDirectory, KvBackend, MessageSink, PluginIdentity};
use crate::state::{PluginContext, PluginState};
use crate::wit::latest::{Plugin, PluginPre};
use crate::{
    Action, Command, Envelope, EnvelopeVerdict, HttpRequest, HttpResponse, Message, StatusChange, TimerFired, Verdict,
};

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Where precompiled components are cached; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// Pool size: live instances across all plugins.
    pub max_instances: u32,
    /// Upper bound for any plugin's memory limit, MiB (the pool's slot size).
    pub max_memory_mib: u32,
    /// Epoch tick: the granularity of CPU limits.
    pub epoch_tick: Duration,
    /// Shortest interval of a repeating timer, ms.
    pub min_timer_interval_ms: u64,
    /// Certificates (DER) trusted for plugins' outbound HTTPS in addition to the built-in Mozilla roots
    /// (`webpki-roots`): an intranet's own certificate authority, or a test's.
    pub http_extra_roots: Vec<Vec<u8>>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            cache_dir: None,
            max_instances: 64,
            max_memory_mib: 256,
            epoch_tick: Duration::from_millis(5),
            min_timer_interval_ms: 1_000,
            http_extra_roots: Vec::new(),
        }
    }
}

/// What the embedder (relay, bot runner, client) provides.
#[derive(Clone)]
pub struct HostServices {
    /// Posting as the bot.
    pub messages: Arc<dyn MessageSink>,
    /// Plugin kv storage.
    pub kv: Arc<dyn KvBackend>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Incident reports.
    pub incidents: Arc<dyn IncidentSink>,
    /// The relay's accounts ([`crate::NoAccounts`] outside the relay).
    pub accounts: Arc<dyn AccountDirectory>,
    /// Conversation members and roles (bot and client scopes).
    pub conversations: Arc<dyn ConversationDirectory>,
    /// Files of the conversations (bot and client scopes; [`crate::NoFiles`] elsewhere).
    pub files: Arc<dyn crate::FileStore>,
    /// E-mail through the administrator's servers (bot scope; [`crate::NoMail`] elsewhere).
    pub mail: Arc<dyn crate::MailTransport>,
}

/// Why a plugin did not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The manifest was refused.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The admin config was refused.
    #[error("plugin {plugin}: {source}")]
    Config {
        /// Plugin name.
        plugin: String,
        /// The error.
        source: ConfigError,
    },
    /// The component file could not be read.
    #[error("cannot read plugin component {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The administrator disabled it.
    #[error("plugin {0} is disabled in the configuration")]
    Disabled(String),
    /// Compiling, linking or initialising failed (an incident was reported).
    #[error("plugin {plugin} {version}: {reason}")]
    Component {
        /// Plugin name.
        plugin: String,
        /// Plugin version.
        version: String,
        /// What failed, e.g. an import the host does not provide.
        reason: String,
    },
}

/// Why a hook call produced no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// It failed now; an incident of this kind was reported.
    Incident(IncidentKind),
    /// Skipped: backing off after repeated failures.
    BackingOff {
        /// Retry time, ms.
        until_ms: u64,
    },
    /// Skipped: quarantined.
    Quarantined,
    /// No such plugin, or it does not subscribe to the hook.
    NotAvailable,
}

/// A failed hook call, wrapped with the plugin's name and version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin {plugin} {version} ({hook}): {reason}")]
pub struct HookFailure {
    /// Plugin name.
    pub plugin: String,
    /// Plugin version.
    pub version: String,
    /// The hook.
    pub hook: Hook,
    /// Category.
    pub kind: FailureKind,
    /// Human-readable reason.
    pub reason: String,
}

/// A hook call with its argument.
#[derive(Debug, Clone)]
pub enum HookCall {
    /// `incoming-message`.
    IncomingMessage(Message),
    /// `outgoing-message`.
    OutgoingMessage(Message),
    /// `relay-envelope`.
    RelayEnvelope(Envelope),
    /// `status-change`.
    StatusChange(StatusChange),
    /// `command`.
    Command(Command),
    /// `action`.
    Action(Action),
    /// `http`.
    Http(HttpRequest),
    /// `timer`.
    Timer(TimerFired),
}

impl HookCall {
    /// The hook this calls.
    pub fn hook(&self) -> Hook {
        match self {
            HookCall::IncomingMessage(_) => Hook::IncomingMessage,
            HookCall::OutgoingMessage(_) => Hook::OutgoingMessage,
            HookCall::RelayEnvelope(_) => Hook::RelayEnvelope,
            HookCall::StatusChange(_) => Hook::StatusChange,
            HookCall::Command(_) => Hook::Command,
            HookCall::Action(_) => Hook::Action,
            HookCall::Http(_) => Hook::Http,
            HookCall::Timer(_) => Hook::Timer,
        }
    }
}

/// What a hook returned.
#[derive(Debug, Clone)]
pub enum HookReturn {
    /// Hooks without a result.
    Unit,
    /// `outgoing-message`.
    Verdict(Verdict),
    /// `relay-envelope`.
    EnvelopeVerdict(EnvelopeVerdict),
    /// `command`.
    CommandReply(Option<String>),
    /// `http`.
    Http(HttpResponse),
}

impl HookReturn {
    fn size(&self) -> usize {
        match self {
            HookReturn::Unit => 0,
            HookReturn::Verdict(Verdict::Pass) => 0,
            HookReturn::Verdict(Verdict::Modify(m)) => {
                m.body.len() + m.content_type.len() + m.mentions.iter().map(String::len).sum::<usize>()
            }
            HookReturn::Verdict(Verdict::Reject(r)) => r.len(),
            HookReturn::EnvelopeVerdict(EnvelopeVerdict::Pass) => 0,
            HookReturn::EnvelopeVerdict(EnvelopeVerdict::Reject(r)) => r.len(),
            HookReturn::CommandReply(r) => r.as_ref().map_or(0, String::len),
            HookReturn::Http(r) => r.body.len() + r.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>(),
        }
    }
}

/// The result of the outgoing-message filter chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutgoingOutcome {
    /// Send this (possibly modified) message.
    Send(Message),
    /// Do not send.
    Reject {
        /// The plugin that refused (or failed closed).
        plugin: String,
        /// The reason shown to the author.
        reason: String,
    },
}

/// The result of the relay-envelope filter chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeOutcome {
    /// Deliver.
    Deliver,
    /// Refuse.
    Reject {
        /// The plugin that refused (or failed closed).
        plugin: String,
        /// The reason returned to the sender.
        reason: String,
    },
}

/// One plugin as `imfree plugin list` shows it.
#[derive(Debug, Clone)]
pub struct PluginStatus {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Subscribed hooks.
    pub hooks: Vec<Hook>,
    /// Capabilities both requested and granted.
    pub capabilities: Vec<String>,
    /// Outbound HTTP requests attempted since load.
    pub http_requests: u64,
    /// Outbound HTTP requests refused (policy or limit) since load; each also reported as an incident.
    pub http_refused: u64,
    /// Failure accounting.
    pub health: Health,
    /// Whether it is quarantined.
    pub quarantined: bool,
}

struct LiveInstance {
    store: Store<PluginState>,
    bindings: Plugin,
}

struct LoadedPlugin {
    manifest: PluginManifest,
    config: PluginConfig,
    ctx: Arc<PluginContext>,
    pre: PluginPre<PluginState>,
    cpu_ticks: u64,
    instance: tokio::sync::Mutex<Option<LiveInstance>>,
    health: Mutex<Health>,
}

impl LoadedPlugin {
    fn failure(&self, hook: Hook, kind: FailureKind, reason: String) -> HookFailure {
        HookFailure {
            plugin: self.manifest.name.clone(),
            version: self.manifest.version.clone(),
            hook,
            kind,
            reason,
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The plugin runtime. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<PluginState>,
    cache: ComponentCache,
    options: HostOptions,
    services: HostServices,
    timers: Arc<TimerTable>,
    tls: Arc<rustls::ClientConfig>,
    plugins: RwLock<BTreeMap<String, Arc<LoadedPlugin>>>,
    _ticker: EpochTicker,
}

impl PluginHost {
    /// A host with no plugins loaded.
    pub fn new(options: HostOptions, services: HostServices) -> wasmtime::Result<Self> {
        let engine = build_engine(&options)?;
        let mut linker = Linker::new(&engine);
        capabilities::add_to_linker(&mut linker)?;
        let tls = capabilities::http::tls_config(&options.http_extra_roots)?;
        let ticker = EpochTicker::start(&engine, options.epoch_tick);
        Ok(PluginHost {
            tls,
            cache: ComponentCache::new(options.cache_dir.clone()),
            engine,
            linker,
            options,
            services,
            timers: Arc::new(TimerTable::default()),
            plugins: RwLock::new(BTreeMap::new()),
            _ticker: ticker,
        })
    }

    /// The shared timer table (for inspection).
    pub fn timers(&self) -> &TimerTable {
        &self.timers
    }

    /// Load (or reload) a plugin from its configured files.
    pub async fn load(&self, config: PluginConfig) -> Result<(), LoadError> {
        let manifest = PluginManifest::from_path(&config.manifest_path())?;
        let wasm = tokio::fs::read(&config.path).await.map_err(|source| LoadError::Io {
            path: config.path.clone(),
            source,
        })?;
        self.load_bytes(manifest, config, wasm).await
    }

    /// Load (or atomically replace) a plugin from a parsed manifest and component bytes. Calls `init` on a first
    /// instance before the plugin becomes visible, so a broken plugin never replaces a working one.
    pub async fn load_bytes(
        &self,
        manifest: PluginManifest,
        config: PluginConfig,
        wasm: Vec<u8>,
    ) -> Result<(), LoadError> {
        if !config.enabled {
            return Err(LoadError::Disabled(manifest.name));
        }
        let settings = config.resolve_settings(&manifest).map_err(|source| LoadError::Config {
            plugin: manifest.name.clone(),
            source,
        })?;
        let mut limits = config.limits.clone();
        if limits.memory_mib > self.options.max_memory_mib {
            tracing::warn!(plugin = %manifest.name, "memory limit capped at the host's {} MiB", self.options.max_memory_mib);
            limits.memory_mib = self.options.max_memory_mib;
        }
        let identity = PluginIdentity {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
        };
        let component_error = |kind: IncidentKind, reason: String| {
            self.report(&identity, None, kind, reason.clone());
            LoadError::Component {
                plugin: identity.name.clone(),
                version: identity.version.clone(),
                reason,
            }
        };
        let engine = self.engine.clone();
        let cache = self.cache.clone();
        let compiled = tokio::task::spawn_blocking(move || cache.compile(&engine, &wasm))
            .await
            .map_err(|e| component_error(IncidentKind::LoadFailed, format!("compile task failed: {e}")))?
            .map_err(|e| component_error(IncidentKind::LoadFailed, format!("not a valid component: {e:#}")))?;
        let pre = self
            .linker
            .instantiate_pre(&compiled)
            .and_then(PluginPre::new)
            .map_err(|e| component_error(IncidentKind::LoadFailed, format!("cannot link: {e:#}")))?;
        let tick_ms = self.options.epoch_tick.as_millis().max(1) as u64;
        let ctx = Arc::new(PluginContext {
            identity: identity.clone(),
            check: CapabilityCheck::new(manifest.capabilities.clone(), config.grants.clone()),
            settings,
            limits: limits.clone(),
            services: self.services.clone(),
            timers: self.timers.clone(),
            min_timer_interval_ms: self.options.min_timer_interval_ms,
            tls: self.tls.clone(),
            http_requests: AtomicU64::new(0),
            http_refused: AtomicU64::new(0),
            http_in_flight: Arc::new(tokio::sync::Semaphore::new(limits.http_max_concurrent as usize)),
        });
        let plugin = Arc::new(LoadedPlugin {
            cpu_ticks: limits.cpu_ms_per_call.div_ceil(tick_ms).max(1),
            manifest,
            config,
            ctx,
            pre,
            instance: tokio::sync::Mutex::new(None),
            health: Mutex::new(Health::default()),
        });
        let live = self
            .instantiate(&plugin)
            .await
            .map_err(|(kind, reason)| component_error(kind, reason))?;
        *plugin.instance.lock().await = Some(live);
        tracing::info!(plugin = %identity.name, version = %identity.version, "plugin loaded");
        self.plugins
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(identity.name.clone(), plugin);
        Ok(())
    }

    /// Unload a plugin and drop its timers. Calls already running finish on the old instance.
    pub fn unload(&self, name: &str) -> bool {
        self.timers.remove_plugin(name);
        self.plugins
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .is_some()
    }

    /// Lift backoff and quarantine (an administrator's reset).
    pub fn reset(&self, name: &str) -> bool {
        match self.plugin(name) {
            Some(p) => {
                p.health().reset();
                true
            }
            None => false,
        }
    }

    /// Replace a plugin's live instance with a fresh one (`init` called), e.g. to give memory back after a burst.
    pub async fn recycle(&self, name: &str) -> Result<(), LoadError> {
        let Some(plugin) = self.plugin(name) else {
            return Err(LoadError::Component {
                plugin: name.to_owned(),
                version: String::new(),
                reason: "no such plugin is loaded".into(),
            });
        };
        let mut slot = plugin.instance.lock().await;
        *slot = None;
        match self.instantiate(&plugin).await {
            Ok(live) => {
                *slot = Some(live);
                Ok(())
            }
            Err((kind, reason)) => {
                self.report(&plugin.ctx.identity, None, kind, reason.clone());
                Err(LoadError::Component {
                    plugin: plugin.manifest.name.clone(),
                    version: plugin.manifest.version.clone(),
                    reason,
                })
            }
        }
    }

    /// Loaded plugins with their grants and health.
    pub fn plugins(&self) -> Vec<PluginStatus> {
        let plugins: Vec<_> = self
            .plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        plugins
            .iter()
            .map(|p| {
                let health = p.health().clone();
                PluginStatus {
                    name: p.manifest.name.clone(),
                    version: p.manifest.version.clone(),
                    hooks: p.manifest.hooks.clone(),
                    capabilities: p.ctx.check.effective(),
                    http_requests: p.ctx.http_requests.load(Ordering::Relaxed),
                    http_refused: p.ctx.http_refused.load(Ordering::Relaxed),
                    quarantined: health.is_quarantined(),
                    health,
                }
            })
            .collect()
    }

    /// Whether a plugin of this name is loaded.
    pub fn is_loaded(&self, name: &str) -> bool {
        self.plugin(name).is_some()
    }

    fn plugin(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn subscribers(&self, hook: Hook) -> Vec<Arc<LoadedPlugin>> {
        self.plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|p| p.manifest.has_hook(hook))
            .cloned()
            .collect()
    }

    fn report(&self, who: &PluginIdentity, hook: Option<Hook>, kind: IncidentKind, reason: String) {
        report_incident(&self.services, who, hook, kind, reason);
    }

    /// A fresh instance with `init` called, under the plugin's limits.
    async fn instantiate(&self, plugin: &LoadedPlugin) -> Result<LiveInstance, (IncidentKind, String)> {
        let mut store = Store::new(&self.engine, PluginState::new(plugin.ctx.clone()));
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(plugin.cpu_ticks);
        store.data_mut().http.begin_call(None);
        let wall = plugin.ctx.limits.wall();
        let started = tokio::time::timeout(wall, async {
            let bindings = plugin.pre.instantiate_async(&mut store).await?;
            let init = bindings.call_init(&mut store).await?;
            Ok::<_, wasmtime::Error>((bindings, init))
        })
        .await;
        match started {
            Err(_) => Err((
                IncidentKind::InitFailed,
                format!("init took longer than {} ms", wall.as_millis()),
            )),
            Ok(Err(e)) => {
                let (_, reason) = classify(&e, &store);
                Err((IncidentKind::InitFailed, reason))
            }
            Ok(Ok((_, Err(message)))) => Err((IncidentKind::InitFailed, format!("init returned an error: {message}"))),
            Ok(Ok((bindings, Ok(())))) => Ok(LiveInstance { store, bindings }),
        }
    }

    /// Call one hook of one plugin, with containment, incidents and health accounting (but no failure policy:
    /// the typed methods below apply it).
    pub async fn call(&self, name: &str, call: HookCall) -> Result<HookReturn, HookFailure> {
        let hook = call.hook();
        let Some(plugin) = self.plugin(name) else {
            return Err(HookFailure {
                plugin: name.to_owned(),
                version: String::new(),
                hook,
                kind: FailureKind::NotAvailable,
                reason: "no such plugin is loaded".into(),
            });
        };
        self.call_plugin(&plugin, call).await
    }

    async fn call_plugin(&self, plugin: &LoadedPlugin, call: HookCall) -> Result<HookReturn, HookFailure> {
        let hook = call.hook();
        if !plugin.manifest.has_hook(hook) {
            return Err(plugin.failure(
                hook,
                FailureKind::NotAvailable,
                "the plugin does not subscribe to this hook".into(),
            ));
        }
        let admission = plugin.health().admit(self.services.clock.now_ms());
        match admission {
            Admission::Allowed => {}
            Admission::BackingOff { until_ms } => {
                return Err(plugin.failure(
                    hook,
                    FailureKind::BackingOff { until_ms },
                    "backing off after repeated failures".into(),
                ));
            }
            Admission::Quarantined => {
                return Err(plugin.failure(
                    hook,
                    FailureKind::Quarantined,
                    "quarantined after repeated failures".into(),
                ));
            }
        }
        let mut slot = plugin.instance.lock().await;
        if slot.is_none() {
            match self.instantiate(plugin).await {
                Ok(live) => *slot = Some(live),
                Err((kind, reason)) => {
                    drop(slot);
                    return Err(self.fail(plugin, hook, kind, reason));
                }
            }
        }
        let outcome = match slot.as_mut() {
            None => Err((IncidentKind::Trap, "no instance".to_owned())),
            Some(live) => {
                live.store.set_epoch_deadline(plugin.cpu_ticks);
                live.store.data_mut().http.begin_call(Some(hook));
                let wall = plugin.ctx.limits.wall();
                match tokio::time::timeout(wall, invoke(&live.bindings, &mut live.store, call)).await {
                    Err(_) => Err((
                        IncidentKind::Timeout,
                        format!(
                            "the call took longer than the wall-clock limit of {} ms",
                            wall.as_millis()
                        ),
                    )),
                    Ok(Err(e)) => Err(classify(&e, &live.store)),
                    Ok(Ok(ret)) if ret.size() > plugin.ctx.limits.max_output_bytes => Err((
                        IncidentKind::OutputTooLarge,
                        format!(
                            "returned {} bytes, the limit is {}",
                            ret.size(),
                            plugin.ctx.limits.max_output_bytes
                        ),
                    )),
                    Ok(Ok(ret)) => Ok(ret),
                }
            }
        };
        match outcome {
            Ok(ret) => {
                drop(slot);
                plugin.health().record_success();
                Ok(ret)
            }
            Err((kind, reason)) => {
                // A trapped or interrupted instance cannot be re-entered: drop its store, instantiate afresh next time.
                *slot = None;
                drop(slot);
                Err(self.fail(plugin, hook, kind, reason))
            }
        }
    }

    fn fail(&self, plugin: &LoadedPlugin, hook: Hook, kind: IncidentKind, reason: String) -> HookFailure {
        self.report(&plugin.ctx.identity, Some(hook), kind, reason.clone());
        let after = plugin
            .health()
            .record_failure(self.services.clock.now_ms(), &plugin.config.failure);
        if after == AfterFailure::Quarantined {
            self.report(
                &plugin.ctx.identity,
                Some(hook),
                IncidentKind::Quarantined,
                format!(
                    "{} consecutive failures; not called again until reloaded or reset",
                    plugin.config.failure.quarantine_after
                ),
            );
        }
        plugin.failure(hook, FailureKind::Incident(kind), reason)
    }

    /// Run the outgoing-message filters in name order. Each sees the previous one's result; a reject stops the
    /// chain; a failed filter passes or rejects according to its failure policy (fail-closed by default).
    pub async fn outgoing_message(&self, msg: Message) -> OutgoingOutcome {
        let mut current = msg;
        for plugin in self.subscribers(Hook::OutgoingMessage) {
            match self
                .call_plugin(&plugin, HookCall::OutgoingMessage(current.clone()))
                .await
            {
                Ok(HookReturn::Verdict(Verdict::Pass)) => {}
                Ok(HookReturn::Verdict(Verdict::Modify(mut m))) => {
                    // A filter may change the content, never which message or conversation it is.
                    m.id = current.id.clone();
                    m.conversation = current.conversation.clone();
                    m.sender = current.sender.clone();
                    current = m;
                }
                Ok(HookReturn::Verdict(Verdict::Reject(reason))) => {
                    return OutgoingOutcome::Reject {
                        plugin: plugin.manifest.name.clone(),
                        reason,
                    };
                }
                Ok(_) => {}
                Err(failure) => {
                    if plugin.config.failure.policy_for(Hook::OutgoingMessage) == FailurePolicy::FailClosed {
                        return OutgoingOutcome::Reject {
                            plugin: failure.plugin,
                            reason: format!(
                                "the {} filter is unavailable, so the message was not sent",
                                plugin.manifest.name
                            ),
                        };
                    }
                }
            }
        }
        OutgoingOutcome::Send(current)
    }

    /// Run the relay-envelope filters (pass or reject only), with the failure policy as for outgoing messages.
    pub async fn relay_envelope(&self, env: &Envelope) -> EnvelopeOutcome {
        for plugin in self.subscribers(Hook::RelayEnvelope) {
            match self.call_plugin(&plugin, HookCall::RelayEnvelope(env.clone())).await {
                Ok(HookReturn::EnvelopeVerdict(EnvelopeVerdict::Reject(reason))) => {
                    return EnvelopeOutcome::Reject {
                        plugin: plugin.manifest.name.clone(),
                        reason,
                    };
                }
                Ok(_) => {}
                Err(failure) => {
                    if plugin.config.failure.policy_for(Hook::RelayEnvelope) == FailurePolicy::FailClosed {
                        return EnvelopeOutcome::Reject {
                            plugin: failure.plugin,
                            reason: format!("the {} filter is unavailable", plugin.manifest.name),
                        };
                    }
                }
            }
        }
        EnvelopeOutcome::Deliver
    }

    async fn notify(&self, hook: Hook, call: HookCall) -> Vec<HookFailure> {
        let mut failures = Vec::new();
        for plugin in self.subscribers(hook) {
            if let Err(f) = self.call_plugin(&plugin, call.clone()).await {
                failures.push(f);
            }
        }
        failures
    }

    /// Tell every subscriber about an incoming message; returns the failures (already reported as incidents).
    pub async fn incoming_message(&self, msg: &Message) -> Vec<HookFailure> {
        self.notify(Hook::IncomingMessage, HookCall::IncomingMessage(msg.clone()))
            .await
    }

    /// Tell every subscriber about a status change.
    pub async fn status_change(&self, change: &StatusChange) -> Vec<HookFailure> {
        self.notify(Hook::StatusChange, HookCall::StatusChange(change.clone()))
            .await
    }

    /// Run a slash command on the plugin that owns it.
    pub async fn command(&self, plugin: &str, cmd: Command) -> Result<Option<String>, HookFailure> {
        match self.call(plugin, HookCall::Command(cmd)).await? {
            HookReturn::CommandReply(r) => Ok(r),
            _ => Ok(None),
        }
    }

    /// Deliver a card button press to the plugin that posted the card.
    pub async fn action(&self, plugin: &str, act: Action) -> Result<(), HookFailure> {
        self.call(plugin, HookCall::Action(act)).await.map(|_| ())
    }

    /// Serve `/plugins/<plugin>/…`: 404 when there is no such route owner, 503 when the plugin failed.
    pub async fn http(&self, plugin: &str, req: HttpRequest) -> HttpResponse {
        let text = |status: u16, body: &str| HttpResponse {
            status,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: body.as_bytes().to_vec(),
        };
        match self.call(plugin, HookCall::Http(req)).await {
            Ok(HookReturn::Http(r)) => r,
            Ok(_) => text(500, "unexpected result"),
            Err(HookFailure {
                kind: FailureKind::NotAvailable,
                ..
            }) => text(404, "not found"),
            Err(_) => text(503, "plugin unavailable"),
        }
    }

    /// Fire the timers due now (the embedder calls this on its own tick); returns how many fired.
    pub async fn fire_due_timers(&self) -> usize {
        let due = self.timers.take_due(self.services.clock.now_ms());
        let n = due.len();
        for (plugin, fired) in due {
            let _ = self.call(&plugin, HookCall::Timer(fired)).await;
        }
        n
    }
}

/// Report one incident to `tracing` and the embedder's sink.
pub(crate) fn report_incident(
    services: &HostServices,
    who: &PluginIdentity,
    hook: Option<Hook>,
    kind: IncidentKind,
    reason: String,
) {
    let incident = Incident {
        plugin: who.name.clone(),
        version: who.version.clone(),
        hook,
        kind,
        reason,
        at_ms: services.clock.now_ms(),
    };
    tracing::warn!(plugin = %incident.plugin, version = %incident.version,
        hook = incident.hook.map(Hook::wit_name).unwrap_or("load"), kind = %incident.kind,
        "plugin incident: {}", incident.reason);
    services.incidents.report(&incident);
}

async fn invoke(bindings: &Plugin, store: &mut Store<PluginState>, call: HookCall) -> wasmtime::Result<HookReturn> {
    Ok(match call {
        HookCall::IncomingMessage(m) => {
            bindings.call_incoming_message(&mut *store, &m).await?;
            HookReturn::Unit
        }
        HookCall::OutgoingMessage(m) => HookReturn::Verdict(bindings.call_outgoing_message(&mut *store, &m).await?),
        HookCall::RelayEnvelope(e) => HookReturn::EnvelopeVerdict(bindings.call_relay_envelope(&mut *store, &e).await?),
        HookCall::StatusChange(c) => {
            bindings.call_status_change(&mut *store, &c).await?;
            HookReturn::Unit
        }
        HookCall::Command(c) => HookReturn::CommandReply(bindings.call_command(&mut *store, &c).await?),
        HookCall::Action(a) => {
            bindings.call_action(&mut *store, &a).await?;
            HookReturn::Unit
        }
        HookCall::Http(r) => HookReturn::Http(bindings.call_http(&mut *store, &r).await?),
        HookCall::Timer(t) => {
            bindings.call_timer(&mut *store, &t).await?;
            HookReturn::Unit
        }
    })
}

/// Name what went wrong in a failed call.
fn classify(err: &wasmtime::Error, store: &Store<PluginState>) -> (IncidentKind, String) {
    let state = store.data();
    let panic = state
        .last_error_log
        .as_ref()
        .map(|m| format!(" (last error logged: {m})"))
        .unwrap_or_default();
    if state.limiter.memory_exceeded {
        return (
            IncidentKind::MemoryLimit,
            format!("exceeded the memory limit of {} MiB", state.ctx.limits.memory_mib),
        );
    }
    match err.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => (
            IncidentKind::CpuLimit,
            format!(
                "exceeded the CPU limit of {} ms per call",
                state.ctx.limits.cpu_ms_per_call
            ),
        ),
        Some(trap) => (IncidentKind::Trap, format!("{trap}{panic}")),
        None => (IncidentKind::Trap, format!("{err}{panic}")),
    }
}
