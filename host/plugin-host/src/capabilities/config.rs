//! `config`: the plugin's own settings (manifest defaults overlaid with the administrator's values, resolved by
//! [`crate::config::PluginConfig::resolve_settings`]). Always available; a plugin sees only its own.

use wasmtime::component::{HasSelf, Linker};

use crate::state::PluginState;
use crate::wit::latest::imfree::plugin::config;

pub(crate) fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    config::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)
}

impl config::Host for PluginState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.ctx.settings.get(&key).cloned())
    }

    async fn all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.ctx.settings.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}
