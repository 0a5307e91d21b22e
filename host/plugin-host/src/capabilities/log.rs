//! `log`: always available. Lines go to `tracing` tagged with plugin name and version, truncated so a plugin
//! cannot flood the host's log with one call.

use wasmtime::component::{HasSelf, Linker};

use crate::state::PluginState;
use crate::wit::latest::imfree::plugin::log::{self, Level};

const MAX_LINE: usize = 4_096;

pub(crate) fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    log::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

impl log::Host for PluginState {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let message = truncate(message, MAX_LINE);
        let (plugin, version) = (&self.ctx.identity.name, &self.ctx.identity.version);
        match level {
            Level::Trace => tracing::trace!(plugin = %plugin, version = %version, "{message}"),
            Level::Debug => tracing::debug!(plugin = %plugin, version = %version, "{message}"),
            Level::Info => tracing::info!(plugin = %plugin, version = %version, "{message}"),
            Level::Warn => tracing::warn!(plugin = %plugin, version = %version, "{message}"),
            Level::Error => {
                tracing::error!(plugin = %plugin, version = %version, "{message}");
                self.last_error_log = Some(truncate(message, 300));
            }
        }
        Ok(())
    }
}
