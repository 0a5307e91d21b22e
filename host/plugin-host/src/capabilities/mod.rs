//! One module per host capability (Spin's "factors"): each owns its WIT `Host` implementation, its grant check
//! and its linker function, with its tests in the integration suite (`tests/it/capabilities.rs`).
//! `log` and `config` are always available; `kv`, `messaging` (with `conversations`), `timers`, `accounts`, `files`, `mail` and
//! outbound `http` need request + grant. [`older`] serves plugins built against earlier API versions.

pub mod accounts;
pub mod config;
pub mod http;
pub mod kv;
pub mod log;
pub mod messaging;
pub mod timers;
pub mod files;
pub mod mail;
pub mod older;

use wasmtime::component::{HasSelf, Linker};

use crate::state::PluginState;
use crate::wit::latest::imfree::plugin::types;

impl types::Host for PluginState {}

/// Link WASI (p2, nothing ambient: see `state.rs`) and every imfree capability. Every interface is linked for every
/// plugin so that a component importing one it was not granted still loads and gets `denied` at call time, which
/// is an error it can handle, rather than a link failure it cannot.
pub(crate) fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    types::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
    log::add_to_linker(linker)?;
    config::add_to_linker(linker)?;
    kv::add_to_linker(linker)?;
    messaging::add_to_linker(linker)?;
    timers::add_to_linker(linker)?;
    accounts::add_to_linker(linker)?;
    files::add_to_linker(linker)?;
    mail::add_to_linker(linker)?;
    older::add_to_linker(linker)?;
    http::add_to_linker(linker)?;
    Ok(())
}
