//! Write imfree plugins in Rust.
//!
//! Implement [`Plugin`] (every hook has a neutral default), list the hooks you implement in `plugin.toml`, and
//! export the type with [`export_plugin!`]. Build with `cargo build --target wasm32-wasip2 --profile wasm`; the
//! resulting `.wasm` is a WebAssembly component for the `imfree:plugin/plugin@0.3.0` world (write `api = "0.3.0"` in
//! plugin.toml).
//!
//! ```ignore
//! use imfree_plugin_sdk::{Plugin, types::Message, messaging, export_plugin};
//!
//! struct Echo;
//! impl Plugin for Echo {
//!     fn incoming_message(msg: Message) {
//!         let _ = messaging::reply(&msg.conversation, &msg.id, &format!("you said {}", msg.body));
//!     }
//! }
//! export_plugin!(Echo);
//! ```
//!
//! Host calls need capabilities: `kv`, `messaging` (also [`conversations`]), `timers`, `accounts`, `files` and
//! `mail` work only when plugin.toml asks for them and the
//! administrator grants them; otherwise they return [`HostError::Denied`]. `log` and `config` always work.
//! Outbound HTTP ([`http`], over `wasi:http`) works only for the origins plugin.toml lists under `http.outbound`
//! and the administrator grants; anything else is an [`http::HttpError::Denied`].

#![deny(missing_docs)]

/// The generated bindings (`wit-bindgen`) for `imfree:plugin/plugin@0.3.0`.
#[doc(hidden)]
pub mod bindings {
    #![allow(missing_docs)]
    wit_bindgen::generate!({
        path: "../wit/imfree-plugin@0.3.0",
        world: "imfree:plugin/plugin@0.3.0",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "imfree_plugin_sdk::bindings",
        generate_all,
    });
}

/// The generated `wasi:http` client bindings (from the vendored WASI 0.2.12 WIT in `wit/`), used by [`http`].
#[doc(hidden)]
pub mod wasi_bindings {
    #![allow(missing_docs)]
    wit_bindgen::generate!({
        path: "wit",
        world: "imfree:plugin-sdk/http-client",
        generate_all,
    });
}

pub mod http;

/// The generated `wasi:random` bindings, used by [`random`].
#[doc(hidden)]
pub mod entropy_bindings {
    #![allow(missing_docs)]
    wit_bindgen::generate!({
        path: "wit",
        world: "imfree:plugin-sdk/entropy",
        generate_all,
    });
}

/// Secure random values from the host (`wasi:random`): secrets, unique ids, multipart boundaries, backoff jitter.
pub mod random {
    use crate::entropy_bindings::wasi::random::random as raw;

    /// `len` random bytes.
    pub fn bytes(len: usize) -> Vec<u8> {
        raw::get_random_bytes(len as u64)
    }

    /// `len` random bytes as lower-case hex (`2 * len` characters).
    pub fn hex(len: usize) -> String {
        bytes(len).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A uniform random number in `[0, 1)` (53 random bits).
    pub fn unit() -> f64 {
        (raw::get_random_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The WIT types hooks receive and return.
pub mod types {
    pub use crate::bindings::imfree::plugin::types::{
        Action, Button, ButtonStyle, Card, CardField, Command, Draft, Envelope, EnvelopeVerdict, ExternalIdentity,
        FileDraft, FileInfo, HostError, HttpRequest, HttpResponse, InboundMail, Member, Message, Presence, Profile,
        Role, StatusChange, TimerFired, Verdict,
    };

    /// Content type of a reaction delivered to `incoming-message` (body: `{"to", "emoji", "remove"?}`).
    pub const REACTION_MIME: &str = "application/vnd.imfree.reaction+json";
    /// Content type of a file message (body: the file's summary as JSON; read it with [`crate::files`]).
    pub const FILE_MIME: &str = "application/vnd.imfree.file+json";
}

pub use types::HostError;
use types::*;

/// Readable parts of a [`HostError`] (wit-bindgen's own `Display` prints the Rust debug form).
pub trait HostErrorExt {
    /// `denied`, `quota exceeded`, `invalid` or `unavailable`.
    fn kind(&self) -> &'static str;
    /// The host's explanation.
    fn message(&self) -> &str;
    /// `kind: message`.
    fn describe(&self) -> String {
        format!("{}: {}", self.kind(), self.message())
    }
}

impl HostErrorExt for HostError {
    fn kind(&self) -> &'static str {
        match self {
            HostError::Denied(_) => "denied",
            HostError::QuotaExceeded(_) => "quota exceeded",
            HostError::Invalid(_) => "invalid",
            HostError::Unavailable(_) => "unavailable",
        }
    }
    fn message(&self) -> &str {
        match self {
            HostError::Denied(m) | HostError::QuotaExceeded(m) | HostError::Invalid(m) | HostError::Unavailable(m) => m,
        }
    }
}

/// A plugin. Override the hooks you list in plugin.toml; the host never calls the others.
pub trait Plugin {
    /// Called on every fresh instance before any hook.
    fn init() -> Result<(), String> {
        Ok(())
    }
    /// A message arrived (bot and client scopes).
    fn incoming_message(_msg: Message) {}
    /// Filter a message before it is sent: pass, modify or reject.
    fn outgoing_message(_msg: Message) -> Verdict {
        Verdict::Pass
    }
    /// Filter an envelope at the relay (metadata only): pass or reject.
    fn relay_envelope(_env: Envelope) -> EnvelopeVerdict {
        EnvelopeVerdict::Pass
    }
    /// A presence or status change.
    fn status_change(_change: StatusChange) {}
    /// A slash command; the answer is shown only to the user who typed it.
    fn command(_cmd: Command) -> Option<String> {
        None
    }
    /// A button pressed on one of this plugin's cards.
    fn action(_act: Action) {}
    /// A request to `/plugins/<name>/…` (relay scope).
    fn http(_req: HttpRequest) -> HttpResponse {
        HttpResponse {
            status: 404,
            headers: vec![],
            body: b"not found".to_vec(),
        }
    }
    /// A timer fired.
    fn timer(_t: TimerFired) {}
}

/// Export a [`Plugin`] implementation as the component's hooks. Also installs a panic hook that logs the panic
/// message through `log` before the instance traps, so the host's incident report says why.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        struct __ImfreePluginExport;
        impl $crate::bindings::Guest for __ImfreePluginExport {
            fn init() -> ::core::result::Result<(), ::std::string::String> {
                $crate::__install_panic_hook();
                <$plugin as $crate::Plugin>::init()
            }
            fn incoming_message(msg: $crate::types::Message) {
                <$plugin as $crate::Plugin>::incoming_message(msg)
            }
            fn outgoing_message(msg: $crate::types::Message) -> $crate::types::Verdict {
                <$plugin as $crate::Plugin>::outgoing_message(msg)
            }
            fn relay_envelope(env: $crate::types::Envelope) -> $crate::types::EnvelopeVerdict {
                <$plugin as $crate::Plugin>::relay_envelope(env)
            }
            fn status_change(change: $crate::types::StatusChange) {
                <$plugin as $crate::Plugin>::status_change(change)
            }
            fn command(cmd: $crate::types::Command) -> ::core::option::Option<::std::string::String> {
                <$plugin as $crate::Plugin>::command(cmd)
            }
            fn action(act: $crate::types::Action) {
                <$plugin as $crate::Plugin>::action(act)
            }
            fn http(req: $crate::types::HttpRequest) -> $crate::types::HttpResponse {
                <$plugin as $crate::Plugin>::http(req)
            }
            fn timer(t: $crate::types::TimerFired) {
                <$plugin as $crate::Plugin>::timer(t)
            }
        }
        $crate::bindings::__export_plugin_world!(__ImfreePluginExport);
    };
}

#[doc(hidden)]
pub fn __install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        log::error(&format!("panic: {info}"));
    }));
}

/// Logging (always available).
pub mod log {
    use crate::bindings::imfree::plugin::log::{Level, log};

    /// Log at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    /// Log at info level.
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    /// Log at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    /// Log at error level.
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// The plugin's settings (always available).
pub mod config {
    use crate::bindings::imfree::plugin::config as raw;

    /// A setting as text.
    pub fn get(key: &str) -> Option<String> {
        raw::get(key)
    }
    /// A setting, or `default` when unset.
    pub fn get_or(key: &str, default: &str) -> String {
        raw::get(key).unwrap_or_else(|| default.to_owned())
    }
    /// A setting parsed (integers, floats, booleans); `None` when unset or unparsable.
    pub fn parsed<T: std::str::FromStr>(key: &str) -> Option<T> {
        raw::get(key).and_then(|v| v.parse().ok())
    }
    /// Every setting.
    pub fn all() -> Vec<(String, String)> {
        raw::all()
    }
}

/// The plugin's key-value store (capability `kv`).
pub mod kv {
    use crate::HostError;
    use crate::bindings::imfree::plugin::kv as raw;

    /// Bytes under `key`.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, HostError> {
        raw::get(key)
    }
    /// Text under `key` (invalid UTF-8 is replaced).
    pub fn get_string(key: &str) -> Result<Option<String>, HostError> {
        Ok(raw::get(key)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }
    /// Store bytes.
    pub fn set(key: &str, value: &[u8]) -> Result<(), HostError> {
        raw::set(key, value)
    }
    /// Store text.
    pub fn set_string(key: &str, value: &str) -> Result<(), HostError> {
        raw::set(key, value.as_bytes())
    }
    /// Add `by` to the integer under `key` (missing counts as 0) and return the new value.
    pub fn increment(key: &str, by: i64) -> Result<i64, HostError> {
        let n = get_string(key)?.and_then(|s| s.parse::<i64>().ok()).unwrap_or(0) + by;
        set_string(key, &n.to_string())?;
        Ok(n)
    }
    /// Remove `key`.
    pub fn delete(key: &str) -> Result<(), HostError> {
        raw::delete(key)
    }
    /// Keys with `prefix`.
    pub fn list_keys(prefix: &str) -> Result<Vec<String>, HostError> {
        raw::list_keys(prefix)
    }
}

/// Sending as the plugin's bot (capability `messaging`).
pub mod messaging {
    use crate::HostError;
    use crate::bindings::imfree::plugin::messaging as raw;
    use crate::types::{Button, ButtonStyle, Card, CardField, Draft};

    /// Post text; returns the message id.
    pub fn post(conversation: &str, text: &str) -> Result<String, HostError> {
        raw::post(conversation, text)
    }
    /// Reply to a message; returns the new message id.
    pub fn reply(conversation: &str, message_id: &str, text: &str) -> Result<String, HostError> {
        raw::reply(conversation, message_id, text)
    }
    /// React with an emoji.
    pub fn react(conversation: &str, message_id: &str, emoji: &str) -> Result<(), HostError> {
        raw::react(conversation, message_id, emoji)
    }
    /// Post a card; returns the message id.
    pub fn post_card(conversation: &str, card: &Card) -> Result<String, HostError> {
        raw::post_card(conversation, card)
    }
    /// Post markdown (rendered, sanitised, by every client); returns the message id.
    pub fn post_markdown(conversation: &str, markdown: &str) -> Result<String, HostError> {
        send(&Draft {
            conversation: conversation.into(),
            content_type: "text/markdown".into(),
            body: markdown.into(),
            reply_to: None,
        })
    }
    /// Send a draft (`text/plain` or `text/markdown`, optionally a reply); returns the message id.
    pub fn send(draft: &Draft) -> Result<String, HostError> {
        raw::send(draft)
    }

    /// Builds a [`Card`].
    #[derive(Debug, Clone)]
    pub struct CardBuilder(Card);

    impl CardBuilder {
        /// A card with a title.
        pub fn new(title: &str) -> Self {
            CardBuilder(Card {
                title: title.into(),
                text: String::new(),
                fields: vec![],
                buttons: vec![],
            })
        }
        /// Body text (markdown).
        pub fn text(mut self, text: &str) -> Self {
            self.0.text = text.into();
            self
        }
        /// A label/value field.
        pub fn field(mut self, label: &str, value: &str) -> Self {
            self.0.fields.push(CardField {
                label: label.into(),
                value: value.into(),
            });
            self
        }
        /// A button; its `id` comes back in the `action` hook.
        pub fn button(mut self, id: &str, label: &str, style: ButtonStyle) -> Self {
            self.0.buttons.push(Button {
                id: id.into(),
                label: label.into(),
                style,
            });
            self
        }
        /// The card.
        pub fn build(self) -> Card {
            self.0
        }
    }
}

/// Who is in the conversations the bot belongs to, with roles (capability `messaging`).
pub mod conversations {
    use crate::HostError;
    use crate::bindings::imfree::plugin::conversations as raw;
    use crate::types::{Member, Role};

    /// The members of `conversation` and their roles, as the bot's client verified them.
    pub fn members(conversation: &str) -> Result<Vec<Member>, HostError> {
        raw::members(conversation)
    }
    /// `user`'s role in `conversation`, or `None` if they are not a member.
    pub fn role_of(conversation: &str, user: &str) -> Result<Option<Role>, HostError> {
        Ok(members(conversation)?.into_iter().find(|m| m.user == user).map(|m| m.role))
    }
    /// Whether `user` is an owner or admin of `conversation` (in a 1:1 conversation both people are).
    pub fn is_admin(conversation: &str, user: &str) -> Result<bool, HostError> {
        Ok(matches!(role_of(conversation, user)?, Some(Role::Owner | Role::Admin)))
    }
}

/// The relay's accounts, for identity plugins (relay scope, capability `accounts`).
pub mod accounts {
    use crate::HostError;
    use crate::bindings::imfree::plugin::accounts as raw;
    use crate::types::{ExternalIdentity, Profile};

    /// The account linked to `identity`.
    pub fn find_linked(identity: &ExternalIdentity) -> Result<Option<String>, HostError> {
        raw::find_linked(identity)
    }
    /// Whether an account called `name` exists.
    pub fn exists(name: &str) -> Result<bool, HostError> {
        raw::exists(name)
    }
    /// Create `name` (no password) linked to `identity`.
    pub fn provision(name: &str, identity: &ExternalIdentity, profile: &Profile) -> Result<(), HostError> {
        raw::provision(name, identity, profile)
    }
    /// Link `identity` to the existing account `name`.
    pub fn link(name: &str, identity: &ExternalIdentity) -> Result<(), HostError> {
        raw::link(name, identity)
    }
    /// Replace the profile the relay keeps for `name`.
    pub fn update_profile(name: &str, profile: &Profile) -> Result<(), HostError> {
        raw::update_profile(name, profile)
    }
    /// A single-use login code for `name`, bound to the client's S256 PKCE challenge.
    pub fn issue_login_code(name: &str, client_challenge: &str) -> Result<String, HostError> {
        raw::issue_login_code(name, client_challenge)
    }
    /// End every session of `name`; how many ended.
    pub fn revoke_sessions(name: &str) -> Result<u32, HostError> {
        raw::revoke_sessions(name)
    }
}

/// Files of the bot's conversations (bot and client scopes, capability `files`), end-to-end encrypted by the host.
pub mod files {
    use crate::HostError;
    use crate::bindings::imfree::plugin::files as raw;
    use crate::types::{FileDraft, FileInfo};

    /// What the file message `message_id` carries.
    pub fn info(message_id: &str) -> Result<FileInfo, HostError> {
        raw::info(message_id)
    }
    /// The file's contents (at most the administrator's `files-max-bytes`).
    pub fn read(message_id: &str) -> Result<Vec<u8>, HostError> {
        raw::read(message_id)
    }
    /// Send `data` as the file `name` of type `content_type` into `conversation`; returns the message id.
    pub fn send(conversation: &str, name: &str, content_type: &str, data: &[u8]) -> Result<String, HostError> {
        raw::send(&FileDraft {
            conversation: conversation.to_owned(),
            name: name.to_owned(),
            content_type: content_type.to_owned(),
            data: data.to_vec(),
        })
    }
}

/// E-mail through the administrator's SMTP and IMAP servers (bot scope, capability `mail`).
pub mod mail {
    use crate::HostError;
    use crate::bindings::imfree::plugin::mail as raw;
    use crate::types::InboundMail;

    /// The address this plugin sends from.
    pub fn address() -> Result<String, HostError> {
        raw::address()
    }
    /// Submit an RFC 5322 `message` (CRLF line ends) to `recipients`.
    pub fn send(recipients: &[String], message: &[u8]) -> Result<(), HostError> {
        raw::send(recipients, message)
    }
    /// Up to `max` waiting messages, oldest first; each stays until [`remove`]d.
    pub fn fetch(max: u32) -> Result<Vec<InboundMail>, HostError> {
        raw::fetch(max)
    }
    /// Remove handled messages by id.
    pub fn remove(ids: &[String]) -> Result<(), HostError> {
        raw::remove(ids)
    }
}

/// Timers (capability `timers`); each firing calls [`Plugin::timer`].
pub mod timers {
    use std::time::Duration;

    use crate::HostError;
    use crate::bindings::imfree::plugin::timers as raw;

    /// Fire once after `delay`; returns the timer id.
    pub fn once(name: &str, delay: Duration) -> Result<u64, HostError> {
        raw::schedule_once(name, delay.as_millis() as u64)
    }
    /// Fire every `interval`; returns the timer id.
    pub fn repeating(name: &str, interval: Duration) -> Result<u64, HostError> {
        raw::schedule_repeating(name, interval.as_millis() as u64)
    }
    /// Cancel; false if there was no such timer.
    pub fn cancel(id: u64) -> Result<bool, HostError> {
        raw::cancel(id)
    }

    /// Start a repeating timer in place of the one a previous instance of this plugin started (its id is kept in
    /// kv under `kv_key`): instances come and go (a trap, a reload, a restart), and an `init` that only called
    /// [`repeating`] would add one more timer each time. Needs the `kv` capability too.
    pub fn repeating_replacing(name: &str, interval: Duration, kv_key: &str) -> Result<u64, HostError> {
        if let Ok(Some(old)) = crate::kv::get_string(kv_key)
            && let Ok(id) = old.parse::<u64>()
        {
            let _ = cancel(id);
        }
        let id = repeating(name, interval)?;
        let _ = crate::kv::set_string(kv_key, &id.to_string());
        Ok(id)
    }

    /// A pending wake-up older than this is taken as lost (a restart drops timers) and replaced.
    const WAKE_LOST_AFTER_MS: u64 = 2000;

    fn pending_wake(kv_key: &str) -> Option<(u64, u64)> {
        let text = crate::kv::get_string(kv_key).ok().flatten()?;
        let (id, at) = text.split_once(' ')?;
        Some((id.parse().ok()?, at.parse().ok()?))
    }

    /// Make sure the once-timer `name` fires by `at_ms` (ms since the epoch; `now_ms` is now) with at most one
    /// such timer pending (the host caps a plugin's timers): the pending one's id and time are kept in kv under
    /// `kv_key`; it stays when it fires early enough, and is replaced when something is due earlier. Call
    /// [`woke`] from the timer hook. A restart drops pending timers: keep a repeating timer as the safety net.
    pub fn wake_by(name: &str, kv_key: &str, at_ms: u64, now_ms: u64) -> Result<(), HostError> {
        let at_ms = at_ms.max(now_ms);
        if let Some((id, at)) = pending_wake(kv_key) {
            if at <= at_ms && at + WAKE_LOST_AFTER_MS >= now_ms {
                return Ok(());
            }
            if at > at_ms {
                let _ = cancel(id);
            }
        }
        let id = once(name, Duration::from_millis(at_ms - now_ms))?;
        let _ = crate::kv::set_string(kv_key, &format!("{id} {at_ms}"));
        Ok(())
    }

    /// From the timer hook: forget the wake-up [`wake_by`] armed under `kv_key` if timer `fired_id` is it, so the
    /// next [`wake_by`] arms a new one.
    pub fn woke(kv_key: &str, fired_id: u64) {
        if pending_wake(kv_key).is_some_and(|(id, _)| id == fired_id) {
            let _ = crate::kv::delete(kv_key);
        }
    }
}
