//! Behaviour of the plugin host against real components: the example plugins, a probe that exercises every hook
//! and capability, and a malicious-plugin corpus. The guests are built for wasm32-wasip2 on first use (see
//! `support::guest`).

#![allow(unreachable_pub)]

mod api_versions;
mod calendar;
mod capabilities;
mod files_mail;
mod hooks;
mod http;
mod inspect;
mod js_guest;
mod lifecycle;
mod malicious;
mod radicale;
mod support;
mod twins;
