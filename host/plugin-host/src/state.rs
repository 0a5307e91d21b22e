//! Per-store state: what one plugin instance can reach. Nothing ambient: WASI gets no preopens, no environment,
//! no arguments, no inherited stdio and no sockets, and its wall clock is the embedder's [`crate::Clock`]; only
//! what the capability modules expose on top of it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::capabilities::http::OutboundHttp;
use crate::capabilities::timers::TimerTable;
use crate::capability::{Capability, CapabilityCheck, Refusal};
use crate::config::Limits;
use crate::host::{HostServices, report_incident};
use crate::incident::IncidentKind;
use crate::manifest::Hook;
use crate::services::PluginIdentity;
use crate::wit::latest::imfree::plugin::types::HostError;

/// Everything about a loaded plugin that its instances share.
pub(crate) struct PluginContext {
    pub(crate) identity: PluginIdentity,
    pub(crate) check: CapabilityCheck,
    pub(crate) settings: BTreeMap<String, String>,
    pub(crate) limits: Limits,
    pub(crate) services: HostServices,
    pub(crate) timers: Arc<TimerTable>,
    pub(crate) min_timer_interval_ms: u64,
    /// TLS settings for outbound HTTPS (root certificates), shared by all plugins of a host.
    pub(crate) tls: Arc<rustls::ClientConfig>,
    /// Outbound HTTP requests attempted / refused (by policy or limit), for `imfree plugin list` and metrics.
    pub(crate) http_requests: AtomicU64,
    pub(crate) http_refused: AtomicU64,
    /// One permit per outbound request in flight (`http-max-concurrent`), held until its response body is dropped.
    pub(crate) http_in_flight: Arc<tokio::sync::Semaphore>,
}

impl PluginContext {
    /// Check a capability; on refusal log plugin, version and capability and build the guest's error.
    pub(crate) fn require(&self, capability: Capability) -> Result<(), HostError> {
        self.check.check(&capability).map_err(|refusal: Refusal| {
            tracing::warn!(
                plugin = %self.identity.name,
                version = %self.identity.version,
                capability = %capability,
                "refused a plugin's host call: {refusal}"
            );
            HostError::Denied(refusal.to_string())
        })
    }

    /// Report an incident of this plugin (host calls do it for refusals that are security events).
    pub(crate) fn report(&self, hook: Option<Hook>, kind: IncidentKind, reason: String) {
        report_incident(&self.services, &self.identity, hook, kind, reason);
    }
}

/// Limits memory and table growth, and remembers that a limit was hit so the incident says "memory limit"
/// rather than a bare trap.
pub(crate) struct PluginLimiter {
    pub(crate) memory_bytes: usize,
    pub(crate) memory_exceeded: bool,
}

const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for PluginLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_exceeded = true;
            return Err(wasmtime::Error::msg(format!(
                "memory limit: the plugin tried to grow its memory to {desired} bytes, the limit is {} bytes",
                self.memory_bytes
            )));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// The `T` of `Store<T>`.
pub(crate) struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    http_ctx: WasiHttpCtx,
    /// The outbound HTTP policy (wasi-http's hooks); told which hook is running by the host.
    pub(crate) http: OutboundHttp,
    pub(crate) limiter: PluginLimiter,
    pub(crate) ctx: Arc<PluginContext>,
    /// The last error-level log line (the SDK's panic hook logs the panic message there), for incident reasons.
    pub(crate) last_error_log: Option<String>,
}

impl PluginState {
    pub(crate) fn new(ctx: Arc<PluginContext>) -> Self {
        let memory_bytes = (ctx.limits.memory_mib as usize).saturating_mul(1 << 20);
        PluginState {
            // The guest's wall clock is the host's (a test clock moves the plugin's idea of "now" with its timers).
            wasi: WasiCtxBuilder::new().wall_clock(HostClock(ctx.services.clock.clone())).build(),
            table: ResourceTable::new(),
            http_ctx: WasiHttpCtx::new(),
            http: OutboundHttp::new(ctx.clone()),
            limiter: PluginLimiter {
                memory_bytes,
                memory_exceeded: false,
            },
            ctx,
            last_error_log: None,
        }
    }
}

/// The embedder's [`crate::Clock`] as WASI's `wall-clock`.
struct HostClock(Arc<dyn crate::Clock>);

impl wasmtime_wasi::HostWallClock for HostClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_millis(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.now_ms())
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.http,
        }
    }
}
