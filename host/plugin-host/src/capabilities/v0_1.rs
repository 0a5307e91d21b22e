//! `imfree:plugin@0.1.0`'s host interfaces, for plugins built against the first API: each call is handed to the
//! newest implementation (the interfaces did not change; 0.2.0 only added to them). The data types are shared with
//! the newest version (`with` in [`crate::wit`]), so no value is converted except the log level, which 0.1.0 defines
//! in its `log` interface.

use wasmtime::component::{HasSelf, Linker};

use crate::state::PluginState;
use crate::wit::latest::imfree::plugin as latest;
use crate::wit::latest::imfree::plugin::types::{Card, HostError};
use crate::wit::since_v0_1_0::imfree::plugin::{config, kv, log, messaging, timers};

/// Link the 0.1.0 interfaces (beside the newest ones: a component imports one version or the other).
pub(crate) fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    // 0.1.0's `types` has no functions and its Rust types are the newest version's, so bindgen generates nothing to
    // link for it; a component still imports the (types-only) instance by name.
    linker.instance("imfree:plugin/types@0.1.0")?;
    log::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
    config::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
    kv::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
    messaging::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
    timers::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)
}

impl log::Host for PluginState {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            log::Level::Trace => latest::log::Level::Trace,
            log::Level::Debug => latest::log::Level::Debug,
            log::Level::Info => latest::log::Level::Info,
            log::Level::Warn => latest::log::Level::Warn,
            log::Level::Error => latest::log::Level::Error,
        };
        latest::log::Host::log(self, level, message).await
    }
}

impl config::Host for PluginState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        latest::config::Host::get(self, key).await
    }
    async fn all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        latest::config::Host::all(self).await
    }
}

impl kv::Host for PluginState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, HostError>> {
        latest::kv::Host::get(self, key).await
    }
    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), HostError>> {
        latest::kv::Host::set(self, key, value).await
    }
    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), HostError>> {
        latest::kv::Host::delete(self, key).await
    }
    async fn list_keys(&mut self, prefix: String) -> wasmtime::Result<Result<Vec<String>, HostError>> {
        latest::kv::Host::list_keys(self, prefix).await
    }
}

impl messaging::Host for PluginState {
    async fn post(&mut self, conversation: String, text: String) -> wasmtime::Result<Result<String, HostError>> {
        latest::messaging::Host::post(self, conversation, text).await
    }
    async fn reply(
        &mut self,
        conversation: String,
        message_id: String,
        text: String,
    ) -> wasmtime::Result<Result<String, HostError>> {
        latest::messaging::Host::reply(self, conversation, message_id, text).await
    }
    async fn react(
        &mut self,
        conversation: String,
        message_id: String,
        emoji: String,
    ) -> wasmtime::Result<Result<(), HostError>> {
        latest::messaging::Host::react(self, conversation, message_id, emoji).await
    }
    async fn post_card(&mut self, conversation: String, card: Card) -> wasmtime::Result<Result<String, HostError>> {
        latest::messaging::Host::post_card(self, conversation, card).await
    }
}

impl timers::Host for PluginState {
    async fn schedule_once(&mut self, name: String, delay_ms: u64) -> wasmtime::Result<Result<u64, HostError>> {
        latest::timers::Host::schedule_once(self, name, delay_ms).await
    }
    async fn schedule_repeating(&mut self, name: String, interval_ms: u64) -> wasmtime::Result<Result<u64, HostError>> {
        latest::timers::Host::schedule_repeating(self, name, interval_ms).await
    }
    async fn cancel(&mut self, id: u64) -> wasmtime::Result<Result<bool, HostError>> {
        latest::timers::Host::cancel(self, id).await
    }
}
