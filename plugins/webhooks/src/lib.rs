//! The bundled `webhooks` plugin (bot scope): it runs as the `webhooks` bot account, a member of the
//! conversations it is added to, so it reads what they say (decrypted, as any member) and posts end-to-end
//! encrypted like any member.
//!
//! - **Outgoing**: a message in a conversation the bot belongs to is queued in kv for every target (the
//!   administrator's `targets` setting) that wants it, then POSTed by a timer, signed
//!   (`X-Imfree-Signature: v0=<HMAC-SHA256>` over `v0:{timestamp}:{body}`), retried with exponential backoff on
//!   5xx, 429 (`Retry-After`) and transport failures, rate-limited per URL. The incoming-message hook only queues,
//!   so a slow receiver never holds the bot's loop; the queue is in kv, so a restart loses nothing.
//! - **Incoming**: `/webhook create` (typed by an owner or admin of a conversation, or `imfree admin webhook
//!   create` by the operator) makes a secret URL `<public-url>/plugins/webhooks/hooks/<id>/<secret>`; a POST of
//!   Slack-compatible or generic JSON to it posts a Markdown message into that conversation as the bot.
//!
//! The pure logic (formats, signatures, mrkdwn, backoff, Retry-After, filters, request checks) is in modules that
//! build natively and carry their unit tests; [`plugin`] is the glue to the host, built for wasm32 only.

#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod formats;
pub mod incoming;
pub mod mrkdwn;
pub mod queue;
pub mod ratelimit;
pub mod retry;
pub mod signing;
pub mod targets;

#[cfg(target_arch = "wasm32")]
pub mod plugin;
