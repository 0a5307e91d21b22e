//! The host interfaces of older API versions (`imfree:plugin@0.1.0`, `@0.2.0`), for plugins built against them:
//! each call is handed to the newest implementation. The interfaces did not change; later versions only added to
//! them. The data types are shared with the newest version (`with` in [`crate::wit`]), so no value is converted
//! except the log level, which each version defines in its own `log` interface.
//!
//! Every delegation is written by [`delegate!`] from the function's signature, so an older version's interface is
//! one list of signatures.

use wasmtime::component::{HasSelf, Linker};

use crate::state::PluginState;
use crate::wit::latest::imfree::plugin as latest;
use crate::wit::latest::imfree::plugin::types::{Card, Draft, ExternalIdentity, HostError, Member, Profile};
use crate::wit::{since_v0_1_0 as v0_1, since_v0_2_0 as v0_2};

/// Link the 0.1.0 and 0.2.0 interfaces (beside the newest ones: a component imports one version or another).
pub(crate) fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    // An older `types` has no functions and its Rust types are the newest version's, so bindgen generates nothing
    // to link for it; a component still imports the (types-only) instance by name.
    linker.instance("imfree:plugin/types@0.1.0")?;
    linker.instance("imfree:plugin/types@0.2.0")?;
    {
        use v0_1::imfree::plugin::{config, kv, log, messaging, timers};
        log::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
        config::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
        kv::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
        messaging::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
        timers::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
    }
    use v0_2::imfree::plugin::{accounts, config, conversations, kv, log, messaging, timers};
    log::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
    config::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
    kv::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
    messaging::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
    timers::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
    conversations::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
    accounts::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)
}

/// `impl <older>::<interface>::Host for PluginState` whose every function calls the newest version's, for each of
/// the versions named (an interface that did not change between them is listed once).
macro_rules! delegate {
    ($([$($version:ident),+] :: $interface:ident $functions:tt)*) => {$($(
        delegate!(@one $version $interface $functions);
    )+)*};
    (@one $version:ident $interface:ident { $(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)* }) => {
        impl $version::imfree::plugin::$interface::Host for PluginState {
            $(async fn $name(&mut self, $($arg: $ty),*) -> wasmtime::Result<$ret> {
                latest::$interface::Host::$name(self, $($arg),*).await
            })*
        }
    };
}

/// The log level of an older version, as the newest version spells it.
macro_rules! log_level {
    ($($version:ident),*) => {$(
        impl $version::imfree::plugin::log::Host for PluginState {
            async fn log(&mut self, level: $version::imfree::plugin::log::Level, message: String) -> wasmtime::Result<()> {
                use $version::imfree::plugin::log::Level as Old;
                let level = match level {
                    Old::Trace => latest::log::Level::Trace,
                    Old::Debug => latest::log::Level::Debug,
                    Old::Info => latest::log::Level::Info,
                    Old::Warn => latest::log::Level::Warn,
                    Old::Error => latest::log::Level::Error,
                };
                latest::log::Host::log(self, level, message).await
            }
        }
    )*};
}

log_level!(v0_1, v0_2);

type R<T> = Result<T, HostError>;

delegate! {
    [v0_1, v0_2]::config {
        fn get(key: String) -> Option<String>;
        fn all() -> Vec<(String, String)>;
    }
    [v0_1, v0_2]::kv {
        fn get(key: String) -> R<Option<Vec<u8>>>;
        fn set(key: String, value: Vec<u8>) -> R<()>;
        fn delete(key: String) -> R<()>;
        fn list_keys(prefix: String) -> R<Vec<String>>;
    }
    [v0_1, v0_2]::timers {
        fn schedule_once(name: String, delay_ms: u64) -> R<u64>;
        fn schedule_repeating(name: String, interval_ms: u64) -> R<u64>;
        fn cancel(id: u64) -> R<bool>;
    }
    [v0_1]::messaging {
        fn post(conversation: String, text: String) -> R<String>;
        fn reply(conversation: String, message_id: String, text: String) -> R<String>;
        fn react(conversation: String, message_id: String, emoji: String) -> R<()>;
        fn post_card(conversation: String, card: Card) -> R<String>;
    }
    // 0.2.0 added `send`.
    [v0_2]::messaging {
        fn post(conversation: String, text: String) -> R<String>;
        fn reply(conversation: String, message_id: String, text: String) -> R<String>;
        fn react(conversation: String, message_id: String, emoji: String) -> R<()>;
        fn post_card(conversation: String, card: Card) -> R<String>;
        fn send(draft: Draft) -> R<String>;
    }
    [v0_2]::conversations {
        fn members(conversation: String) -> R<Vec<Member>>;
    }
    [v0_2]::accounts {
        fn find_linked(identity: ExternalIdentity) -> R<Option<String>>;
        fn exists(name: String) -> R<bool>;
        fn provision(name: String, identity: ExternalIdentity, profile: Profile) -> R<()>;
        fn link(name: String, identity: ExternalIdentity) -> R<()>;
        fn update_profile(name: String, profile: Profile) -> R<()>;
        fn issue_login_code(name: String, client_challenge: String) -> R<String>;
        fn revoke_sessions(name: String) -> R<u32>;
    }
}
