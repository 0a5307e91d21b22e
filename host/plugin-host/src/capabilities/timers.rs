//! `timers`: schedule once or repeating; the host fires due timers through the `timer` hook
//! ([`crate::PluginHost::fire_due_timers`], which the embedder calls on its own tick). Needs `timers` requested
//! and granted; at most `max-timers` live timers per plugin and no interval below the host's minimum.

use std::collections::BTreeMap;
use std::sync::Mutex;

use wasmtime::component::{HasSelf, Linker};

use crate::capability::Capability;
use crate::state::PluginState;
use crate::wit::latest::imfree::plugin::timers;
use crate::wit::latest::imfree::plugin::types::{HostError, TimerFired};

pub(crate) fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    timers::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)
}

#[derive(Debug, Clone)]
struct Timer {
    plugin: String,
    name: String,
    due_ms: u64,
    interval_ms: Option<u64>,
}

/// Every plugin's timers, shared by the host.
#[derive(Debug, Default)]
pub struct TimerTable {
    inner: Mutex<(u64, BTreeMap<u64, Timer>)>,
}

impl TimerTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, BTreeMap<u64, Timer>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn schedule(
        &self,
        plugin: &str,
        name: String,
        due_ms: u64,
        interval_ms: Option<u64>,
        max: u32,
    ) -> Result<u64, HostError> {
        let mut guard = self.lock();
        let (next_id, timers) = &mut *guard;
        if timers.values().filter(|t| t.plugin == plugin).count() >= max as usize {
            return Err(HostError::QuotaExceeded(format!(
                "at most {max} live timers per plugin"
            )));
        }
        *next_id += 1;
        timers.insert(
            *next_id,
            Timer {
                plugin: plugin.to_owned(),
                name,
                due_ms,
                interval_ms,
            },
        );
        Ok(*next_id)
    }

    fn cancel(&self, plugin: &str, id: u64) -> bool {
        let mut guard = self.lock();
        match guard.1.get(&id) {
            Some(t) if t.plugin == plugin => guard.1.remove(&id).is_some(),
            _ => false,
        }
    }

    /// Take the timers due at `now_ms`: one-shot timers are removed, repeating ones moved to their next time.
    pub(crate) fn take_due(&self, now_ms: u64) -> Vec<(String, TimerFired)> {
        let mut guard = self.lock();
        let mut fired = Vec::new();
        let mut done = Vec::new();
        for (id, t) in guard.1.iter_mut() {
            if t.due_ms <= now_ms {
                fired.push((
                    t.plugin.clone(),
                    TimerFired {
                        id: *id,
                        name: t.name.clone(),
                    },
                ));
                match t.interval_ms {
                    Some(every) => t.due_ms = now_ms + every,
                    None => done.push(*id),
                }
            }
        }
        for id in done {
            guard.1.remove(&id);
        }
        fired
    }

    /// Drop every timer of `plugin` (unload).
    pub(crate) fn remove_plugin(&self, plugin: &str) {
        self.lock().1.retain(|_, t| t.plugin != plugin);
    }

    /// Number of live timers of `plugin`.
    pub fn count(&self, plugin: &str) -> usize {
        self.lock().1.values().filter(|t| t.plugin == plugin).count()
    }
}

impl PluginState {
    fn schedule(&mut self, name: String, ms: u64, repeating: bool) -> Result<u64, HostError> {
        let ctx = &self.ctx;
        ctx.require(Capability::Timers)?;
        if name.len() > 256 {
            return Err(HostError::Invalid("timer names are at most 256 bytes".into()));
        }
        if repeating && ms < ctx.min_timer_interval_ms {
            return Err(HostError::Invalid(format!(
                "repeating timers need an interval of at least {} ms",
                ctx.min_timer_interval_ms
            )));
        }
        let due = ctx.services.clock.now_ms().saturating_add(ms);
        ctx.timers.schedule(
            &ctx.identity.name,
            name,
            due,
            repeating.then_some(ms),
            ctx.limits.max_timers,
        )
    }
}

impl timers::Host for PluginState {
    async fn schedule_once(&mut self, name: String, delay_ms: u64) -> wasmtime::Result<Result<u64, HostError>> {
        Ok(self.schedule(name, delay_ms, false))
    }

    async fn schedule_repeating(&mut self, name: String, interval_ms: u64) -> wasmtime::Result<Result<u64, HostError>> {
        Ok(self.schedule(name, interval_ms, true))
    }

    async fn cancel(&mut self, id: u64) -> wasmtime::Result<Result<bool, HostError>> {
        let ctx = &self.ctx;
        Ok(ctx
            .require(Capability::Timers)
            .map(|()| ctx.timers.cancel(&ctx.identity.name, id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_fires_once_repeating_reschedules_and_quota_holds() {
        let t = TimerTable::default();
        let a = t.schedule("p", "a".into(), 100, None, 2).unwrap();
        let b = t.schedule("p", "b".into(), 50, Some(50), 2).unwrap();
        assert!(matches!(
            t.schedule("p", "c".into(), 1, None, 2),
            Err(HostError::QuotaExceeded(_))
        ));
        assert!(t.schedule("q", "c".into(), 1, None, 2).is_ok(), "quota is per plugin");
        assert!(!t.cancel("p", 3), "a plugin cannot cancel another's timer");
        let names = |v: Vec<(String, TimerFired)>| {
            v.into_iter()
                .map(|(p, f)| format!("{p}:{}", f.name))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(t.take_due(60)), vec!["p:b", "q:c"]);
        assert_eq!(names(t.take_due(110)), vec!["p:a", "p:b"]);
        assert_eq!(names(t.take_due(120)), Vec::<String>::new());
        assert!(!t.cancel("p", a));
        assert!(t.cancel("p", b));
        assert_eq!(t.count("p"), 0);
    }
}
