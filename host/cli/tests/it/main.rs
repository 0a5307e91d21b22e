#![allow(unreachable_pub, dead_code)]
//! Behaviour tests that drive the real `imfree` binary: a relay process on a free loopback port, clients as
//! processes (and, for malformed input, raw connections from this process).

mod bad_input;
mod bots;
mod calendar;
mod client_plugins;
mod common;
mod conversations;
mod delivery;
mod e2e;
mod email_gateway;
mod files;
mod groups;
mod hostile;
mod linking;
mod relay_plugins;
mod permissions;
mod search;
mod sso;
mod sso_login;
mod plugin;
mod transcription;
// The CalDAV server of the calendar tests, shared with the plugin host's tests.
#[path = "../../../plugin-host/tests/it/radicale.rs"]
mod radicale;
mod web;
mod webhooks;
