//! imfree-plugin-host: runs imfree plugins (WebAssembly components built against `wit/imfree-plugin@*`) in a
//! wasmtime sandbox.
//!
//! It owns: the `plugin.toml` manifest ([`manifest`]), the administrator's per-plugin configuration and grants
//! ([`config`]), the capability check ([`capability`]), one module per host capability ([`capabilities`]), the
//! wasmtime engine with its compile cache ([`engine`]), failure accounting ([`health`], [`incident`]), hook
//! dispatch ([`host::PluginHost`]) and checking a component without running it ([`inspect`]).
//!
//! It must not know the relay's or client's internals: they hand it what it needs through the small traits in
//! [`services`] (a message sink, a kv backend, a clock, an incident sink).

pub mod capabilities;
pub mod capability;
pub mod config;
pub mod engine;
pub mod health;
pub mod host;
pub mod incident;
pub mod inspect;
pub mod manifest;
pub mod presence;
pub mod services;
mod state;
pub mod wit;

pub use capability::{Capability, CapabilityCheck, Refusal};
pub use config::{FailurePolicy, FailureSettings, Grants, Limits, MailServer, MailSettings, MailTls, PluginConfig};
pub use host::{
    EnvelopeOutcome, FailureKind, HookFailure, HostOptions, LoadError, OutgoingOutcome, PluginHost, PluginStatus,
};
pub use incident::{Incident, IncidentKind, IncidentSink, RecordingIncidents};
pub use inspect::{ComponentInspector, ComponentProblem, ComponentReport};
pub use manifest::{Hook, ManifestError, PluginManifest, Scope};
pub use presence::PresenceTracker;
pub use services::{
    AccountDirectory, AccountError, Clock, ConversationDirectory, FileStore, KvBackend, KvError,
    MailError, MailTransport, ManualClock, MemoryKv, MessageSink, NoAccounts, NoConversations, NoFiles, NoMail,
    PluginIdentity, SinkError, SystemClock,
};
pub use wit::latest::imfree::plugin::types::{
    Action, Button, ButtonStyle, Card, CardField, Command, Draft, Envelope, EnvelopeVerdict, ExternalIdentity,
    FileDraft, FileInfo, HttpRequest, InboundMail, HttpResponse, Member, Message, Presence, Profile, Role, StatusChange, TimerFired, Verdict,
};
