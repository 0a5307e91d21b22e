//! `mail`: e-mail for a bot-scope plugin through the servers of `[plugins.<name>.mail]`, by the embedder's
//! [`crate::MailTransport`]. The plugin composes and parses RFC 5322 messages (untrusted mail is parsed inside the
//! sandbox); the host connects, negotiates TLS and authenticates, so addresses of servers and passwords never
//! reach the guest. Needs `mail` requested and granted; messages are capped at `mail-max-bytes` both ways.

use wasmtime::component::{HasSelf, Linker};

use crate::capability::Capability;
use crate::services::MailError;
use crate::state::{PluginContext, PluginState};
use crate::wit::latest::imfree::plugin::mail;
use crate::wit::latest::imfree::plugin::types::{HostError, InboundMail};

/// Most recipients of one message.
const MAX_RECIPIENTS: usize = 100;
/// Most messages one `fetch` returns.
const MAX_FETCH: u32 = 100;

pub(crate) fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    mail::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)
}

fn mail_error(e: MailError) -> HostError {
    match e {
        MailError::Invalid(m) => HostError::Invalid(m),
        MailError::Unavailable(m) => HostError::Unavailable(m),
    }
}

/// An address as SMTP takes it in `RCPT TO`: one `local@domain`, no spaces, brackets or line breaks (which would
/// smuggle SMTP commands).
fn check_recipient(address: &str) -> Result<(), HostError> {
    let ok = address.len() <= 254
        && address.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.contains('@'))
        && !address.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'));
    if ok { Ok(()) } else { Err(HostError::Invalid(format!("{address:?} is not an e-mail address"))) }
}

fn admit(ctx: &PluginContext) -> Result<(), HostError> {
    ctx.require(Capability::Mail)
}

impl mail::Host for PluginState {
    async fn address(&mut self) -> wasmtime::Result<Result<String, HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            admit(&ctx)?;
            ctx.services.mail.address(&ctx.identity).await.map_err(mail_error)
        }
        .await)
    }

    async fn send(&mut self, recipients: Vec<String>, message: Vec<u8>) -> wasmtime::Result<Result<(), HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            admit(&ctx)?;
            if recipients.is_empty() || recipients.len() > MAX_RECIPIENTS {
                return Err(HostError::Invalid(format!("a message goes to 1 to {MAX_RECIPIENTS} recipients")));
            }
            recipients.iter().try_for_each(|r| check_recipient(r))?;
            if message.len() as u64 > ctx.limits.mail_max_bytes {
                return Err(HostError::QuotaExceeded(format!(
                    "a message of {} bytes exceeds this plugin's limit of {} bytes (mail-max-bytes)",
                    message.len(),
                    ctx.limits.mail_max_bytes
                )));
            }
            ctx.services.mail.send(&ctx.identity, &recipients, &message).await.map_err(mail_error)
        }
        .await)
    }

    async fn fetch(&mut self, max: u32) -> wasmtime::Result<Result<Vec<InboundMail>, HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            admit(&ctx)?;
            let mails = ctx.services.mail.fetch(&ctx.identity, max.clamp(1, MAX_FETCH)).await.map_err(mail_error)?;
            // A message over the limit is handed over empty (with its id), so the plugin can remove it rather than
            // being offered it forever.
            let limit = ctx.limits.mail_max_bytes;
            Ok(mails
                .into_iter()
                .map(|m| InboundMail { raw: if m.raw.len() as u64 > limit { Vec::new() } else { m.raw }, id: m.id })
                .collect())
        }
        .await)
    }

    async fn remove(&mut self, ids: Vec<String>) -> wasmtime::Result<Result<(), HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            admit(&ctx)?;
            ctx.services.mail.remove(&ctx.identity, &ids).await.map_err(mail_error)
        }
        .await)
    }
}

#[cfg(test)]
mod tests {
    use super::check_recipient;

    #[test]
    fn recipients_cannot_smuggle_smtp_commands() {
        assert!(check_recipient("team@example.org").is_ok());
        for bad in ["", "no-at", "@example.org", "a@", "a@b@c", "a b@c.d", "a@c.d\r\nRCPT TO:<x@y>", "<a@b.c>", "a@b.c,d@e.f"] {
            assert!(check_recipient(bad).is_err(), "{bad:?}");
        }
    }
}
