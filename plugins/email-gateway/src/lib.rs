//! The bundled `email-gateway` plugin (bot scope): it runs as the `email-gateway` bot account, a member of the
//! conversations it is added to, and bridges the ones the administrator lists in `bridges` to e-mail.
//!
//! - **Out**: a message posted in a bridged conversation by a person is queued in kv, then composed
//!   ([`outbound`]) as a MIME mail (From `"<sender> (via imfree)" <bridge address>`, To the bridged addresses, a
//!   Message-ID derived from the imfree message id, In-Reply-To / References when it answers a bridged message,
//!   text/plain + text/html from the Markdown, the file as an attachment for a file message) and submitted through
//!   the host's SMTP (`mail.send`), retried with backoff while the server defers it.
//! - **In**: a repeating timer polls the mailbox (`mail.fetch`, IMAP on the host side); each mail is parsed
//!   ([`inbound`]), dropped if it is part of a loop (auto-replies, bounces, the bridge's own mail), otherwise
//!   posted in the bridged conversation it belongs to, as a reply to the message its In-Reply-To / References
//!   name, quotes and signature trimmed, attachments posted as files; then removed from the mailbox.
//!
//! The pure logic lives in modules that build natively and carry their unit tests; [`plugin`] is the glue to the
//! host, built for wasm32 only.

#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod bridges;
pub mod inbound;
pub mod outbound;
pub mod post;
pub mod retry;
pub mod thread;

#[cfg(target_arch = "wasm32")]
pub mod plugin;
