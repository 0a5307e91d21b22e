//! Incidents: every time a plugin traps, times out, exceeds a limit, fails to load, is quarantined or has an
//! outbound HTTP request refused, one [`Incident`] names the plugin, its version, the hook and the reason. The host
//! reports them to an [`IncidentSink`] (the relay's admin log, `imfree plugin list`) and always to `tracing`.

use std::fmt;
use std::sync::Mutex;

use crate::manifest::Hook;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IncidentKind {
    /// The component could not be compiled or linked (e.g. it imports something the host does not provide).
    LoadFailed,
    /// `init` returned an error or trapped.
    InitFailed,
    /// A trap: panic, unreachable, stack overflow, out-of-bounds access.
    Trap,
    /// The CPU budget per call (epoch deadline) ran out.
    CpuLimit,
    /// The memory limit was hit.
    MemoryLimit,
    /// The wall-clock budget per call ran out (including time in host calls).
    Timeout,
    /// The hook returned more than `max-output-bytes`.
    OutputTooLarge,
    /// Too many consecutive failures: the plugin is no longer called until reloaded.
    Quarantined,
    /// An outbound HTTP request was refused: origin not requested or not granted, a refused address (loopback,
    /// private, metadata service...), or an attempt to set the Host header. The guest got an error it can handle;
    /// this does not count as a failure of the plugin.
    HttpRefused,
    /// An outbound HTTP request hit a limit: response size, time, requests per call.
    HttpLimit,
}

impl fmt::Display for IncidentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IncidentKind::LoadFailed => "load failed",
            IncidentKind::InitFailed => "init failed",
            IncidentKind::Trap => "trap",
            IncidentKind::CpuLimit => "cpu limit",
            IncidentKind::MemoryLimit => "memory limit",
            IncidentKind::Timeout => "timeout",
            IncidentKind::OutputTooLarge => "output too large",
            IncidentKind::Quarantined => "quarantined",
            IncidentKind::HttpRefused => "http refused",
            IncidentKind::HttpLimit => "http limit",
        })
    }
}

/// One incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    /// Plugin name.
    pub plugin: String,
    /// Plugin version.
    pub version: String,
    /// The hook being called, `None` for loading.
    pub hook: Option<Hook>,
    /// Category.
    pub kind: IncidentKind,
    /// Human-readable reason (never message contents).
    pub reason: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
}

impl fmt::Display for Incident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hook = self.hook.map(|h| h.wit_name()).unwrap_or("load");
        write!(
            f,
            "plugin {} {} ({hook}): {}: {}",
            self.plugin, self.version, self.kind, self.reason
        )
    }
}

/// Receives incidents.
pub trait IncidentSink: Send + Sync {
    /// Record one incident. Must not block for long: it is called on the hook's path.
    fn report(&self, incident: &Incident);
}

/// Keeps the most recent incidents in memory (tests, `imfree plugin list`).
#[derive(Debug, Default)]
pub struct RecordingIncidents {
    incidents: Mutex<Vec<Incident>>,
}

impl RecordingIncidents {
    const KEEP: usize = 1_000;

    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the recorded incidents, oldest first.
    pub fn all(&self) -> Vec<Incident> {
        self.incidents.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Incidents of one plugin.
    pub fn of(&self, plugin: &str) -> Vec<Incident> {
        self.all().into_iter().filter(|i| i.plugin == plugin).collect()
    }
}

impl IncidentSink for RecordingIncidents {
    fn report(&self, incident: &Incident) {
        let mut all = self.incidents.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() >= Self::KEEP {
            all.remove(0);
        }
        all.push(incident.clone());
    }
}
