//! `messaging`: post, reply, react and post cards as the plugin's bot through the embedder's
//! [`crate::MessageSink`]. Needs `messaging` requested and granted; text is capped at `max-output-bytes`.
//! `conversations` (members and roles) rides on the same capability: a plugin that may post somewhere may know who
//! reads it.

use wasmtime::component::{HasSelf, Linker};

use crate::capability::Capability;
use crate::services::SinkError;
use crate::state::{PluginContext, PluginState};
use crate::wit::latest::imfree::plugin::{conversations, messaging};
use crate::wit::latest::imfree::plugin::types::{Card, Draft, HostError, Member};

pub(crate) fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    messaging::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
    conversations::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)
}

pub(crate) fn sink_error(e: SinkError) -> HostError {
    match e {
        SinkError::Invalid(m) => HostError::Invalid(m),
        SinkError::Unavailable(m) => HostError::Unavailable(m),
    }
}

fn admit(ctx: &PluginContext, size: usize) -> Result<(), HostError> {
    ctx.require(Capability::Messaging)?;
    if size > ctx.limits.max_output_bytes {
        return Err(HostError::Invalid(format!(
            "message of {size} bytes exceeds the limit of {} bytes",
            ctx.limits.max_output_bytes
        )));
    }
    Ok(())
}

fn card_size(card: &Card) -> usize {
    card.title.len()
        + card.text.len()
        + card.fields.iter().map(|f| f.label.len() + f.value.len()).sum::<usize>()
        + card.buttons.iter().map(|b| b.id.len() + b.label.len()).sum::<usize>()
}

impl messaging::Host for PluginState {
    async fn post(&mut self, conversation: String, text: String) -> wasmtime::Result<Result<String, HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            admit(&ctx, text.len())?;
            ctx.services
                .messages
                .post(&ctx.identity, &conversation, &text)
                .await
                .map_err(sink_error)
        }
        .await)
    }

    async fn reply(
        &mut self,
        conversation: String,
        message_id: String,
        text: String,
    ) -> wasmtime::Result<Result<String, HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            admit(&ctx, text.len())?;
            ctx.services
                .messages
                .reply(&ctx.identity, &conversation, &message_id, &text)
                .await
                .map_err(sink_error)
        }
        .await)
    }

    async fn react(
        &mut self,
        conversation: String,
        message_id: String,
        emoji: String,
    ) -> wasmtime::Result<Result<(), HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            admit(&ctx, emoji.len())?;
            ctx.services
                .messages
                .react(&ctx.identity, &conversation, &message_id, &emoji)
                .await
                .map_err(sink_error)
        }
        .await)
    }

    async fn post_card(&mut self, conversation: String, card: Card) -> wasmtime::Result<Result<String, HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            admit(&ctx, card_size(&card))?;
            ctx.services
                .messages
                .post_card(&ctx.identity, &conversation, &card)
                .await
                .map_err(sink_error)
        }
        .await)
    }

    async fn send(&mut self, draft: Draft) -> wasmtime::Result<Result<String, HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            admit(&ctx, draft.body.len())?;
            if !SENDABLE.contains(&draft.content_type.as_str()) {
                return Err(HostError::Invalid(format!(
                    "content type {:?} cannot be sent; use one of {}",
                    draft.content_type,
                    SENDABLE.join(", ")
                )));
            }
            ctx.services.messages.send(&ctx.identity, &draft).await.map_err(sink_error)
        }
        .await)
    }
}

/// What `messaging.send` accepts: text that every client renders (markdown sanitised by the client).
const SENDABLE: &[&str] = &["text/plain", "text/markdown"];

impl conversations::Host for PluginState {
    async fn members(&mut self, conversation: String) -> wasmtime::Result<Result<Vec<Member>, HostError>> {
        let ctx = self.ctx.clone();
        Ok(async {
            ctx.require(Capability::Messaging)?;
            ctx.services
                .conversations
                .members(&ctx.identity, &conversation)
                .await
                .map_err(sink_error)
        }
        .await)
    }
}
