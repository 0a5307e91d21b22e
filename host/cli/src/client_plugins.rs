//! Client scope: `imfree client --plugin FILE …` runs plugins inside this user's own client. Outgoing messages pass
//! through their `outgoing-message` filters before they are queued (a refusal keeps the message from ever leaving);
//! received messages go to `incoming-message`, contacts' presence changes to `status-change`, due timers to `timer`;
//! what a plugin posts is sent as this user, end to end encrypted, through the same outgoing filters. A `/name args`
//! the user types goes to `command` (the answer is shown to the user alone), and a press on a card a plugin posted
//! (another member's press arrives here, at the card's author) goes to that plugin's `action`. Their kv lives
//! in the client's local store. The user is the administrator here: `--grant` says which of the
//! capabilities a plugin's manifest asks for it may use.

use std::path::Path;
use std::sync::Arc;

use imfree_client::Client;
use imfree_client::store::StoredMessage;
use imfree_plugin_host::{Action, Command, Grants, Hook, Message, OutgoingOutcome, PluginConfig, PluginHost, PresenceTracker};

use crate::bots::{ClientSink, client_host, filter_posted, pressable_card, to_plugin_message};
use crate::cards;

/// The local kv namespace that remembers which plugin posted which card (a dot: no plugin name has one).
const CARD_OWNERS: &str = "imfree.card-owners";

/// Plugins loaded into this client for one command.
pub(crate) struct ClientPlugins {
    host: PluginHost,
    sink: Arc<ClientSink>,
    presence: PresenceTracker,
}

/// What the outgoing filters decided.
pub(crate) enum Outgoing {
    /// Send this text (possibly changed).
    Send(String),
    /// Do not send: which plugin, and why.
    Refused(String),
}

impl ClientPlugins {
    /// Load `files` (each with its plugin.toml beside it) with `grants`, or `None` when there are none.
    pub(crate) async fn load(client: &Client, files: &[std::path::PathBuf], grants: &[String]) -> anyhow::Result<Option<Self>> {
        if files.is_empty() {
            return Ok(None);
        }
        let mut granted = Grants::default();
        for g in grants {
            match g.split_once('=') {
                Some(("http-outbound", origin)) => granted.http_outbound.push(origin.to_owned()),
                Some(_) => anyhow::bail!("unknown grant {g:?}: only http-outbound takes a value (http-outbound=https://host[:port][/path])"),
                None => match g.as_str() {
                    "kv" => granted.kv = true,
                    "messaging" => granted.messaging = true,
                    "timers" => granted.timers = true,
                    "http-allow-private" => granted.http_allow_private = true,
                    other => anyhow::bail!(
                        "unknown grant {other:?}: use kv, messaging, timers, http-outbound=ORIGIN or http-allow-private"
                    ),
                },
            }
        }
        let (host, sink) = client_host(client, client.home().dir().join("plugin-cache"), 8, crate::bots::ScopeServices::none())?;
        for file in files {
            let mut config = PluginConfig::new(absolute(file)?);
            config.grants = granted.clone();
            host.load(config).await?;
        }
        Ok(Some(ClientPlugins { host, sink, presence: PresenceTracker::new() }))
    }

    /// Run the outgoing filters over a text message to `to`.
    pub(crate) async fn outgoing(&self, client: &Client, to: &str, mime: &str, text: &str) -> Outgoing {
        let draft = Message {
            id: imfree_client::new_envelope_id(),
            conversation: to.to_owned(),
            sender: client.user().to_owned(),
            sent_at: imfree_client::now_ms().max(0) as u64,
            content_type: mime.to_owned(),
            body: text.to_owned(),
            reply_to: None,
            mentions: Vec::new(),
        };
        match self.host.outgoing_message(draft).await {
            OutgoingOutcome::Send(m) => Outgoing::Send(m.body),
            OutgoingOutcome::Reject { plugin, reason } => Outgoing::Refused(format!("{plugin}: {reason}")),
        }
    }

    /// A `/name args` this user typed in `to`: offered to the plugins that take commands, in name order, until one
    /// answers. Returns the plugin and its answer (shown to the user alone; the text is not sent), or `None` when
    /// none answered, and the text goes out as typed. What the plugin posts is queued as this user.
    pub(crate) async fn command(&self, client: &Client, to: &str, text: &str) -> anyhow::Result<Option<(String, String)>> {
        let Some(line) = text.strip_prefix('/') else { return Ok(None) };
        let (name, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        if name.is_empty() {
            return Ok(None);
        }
        let cmd = Command { name: name.to_owned(), args: args.trim().to_owned(), conversation: to.to_owned(), sender: client.user().to_owned() };
        let mut answer = None;
        for plugin in self.host.plugins().into_iter().filter(|p| p.hooks.contains(&Hook::Command)) {
            match self.host.command(&plugin.name, cmd.clone()).await {
                Ok(Some(text)) => {
                    answer = Some((plugin.name, text));
                    break;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(plugin = %plugin.name, "command not handled: {e}"),
            }
        }
        self.send_posted(client).await?;
        Ok(answer)
    }

    /// Hand received messages to the plugins (a press on a card one of them posted goes to that plugin's `action`);
    /// queue what they post (as this user). Returns how many posts.
    pub(crate) async fn incoming(&self, client: &Client, messages: &[StoredMessage]) -> anyhow::Result<usize> {
        let me = client.user().to_owned();
        for m in messages.iter().filter(|m| !m.outgoing && m.status == "received") {
            if m.mime == cards::ACTION_MIME {
                self.pressed(client, m).await?;
            } else {
                self.host.incoming_message(&to_plugin_message(m, &me)).await;
            }
        }
        self.fire_due_timers(client).await
    }

    /// A press sent to this user: for a card this user's client posted, the plugin that posted it gets the action.
    async fn pressed(&self, client: &Client, press: &StoredMessage) -> anyhow::Result<()> {
        let Some((message_id, button)) = cards::parse_action(&press.body) else { return Ok(()) };
        let Some(card) = pressable_card(client.store(), &message_id, &button, &press.from).await? else {
            tracing::debug!("a press on a button of no card of this client's that the presser can see; ignored");
            return Ok(());
        };
        let Some(plugin) = client.store().kv_get(CARD_OWNERS, &message_id).await? else { return Ok(()) };
        let plugin = String::from_utf8_lossy(&plugin).into_owned();
        let action = Action { message_id, conversation: card.to.clone(), button, user: press.from.clone() };
        if let Err(e) = self.host.action(&plugin, action).await {
            tracing::warn!(%plugin, "action not handled: {e}");
        }
        Ok(())
    }

    /// A contact's presence as the relay pushed it: a change goes to `status-change`; queue what the plugins post.
    /// Returns how many posts.
    pub(crate) async fn presence(&self, client: &Client, p: &imfree_proto::Presence) -> anyhow::Result<usize> {
        let now = imfree_client::now_ms().max(0) as u64;
        match p.user.as_deref().and_then(|u| self.presence.change(u, imfree_relay::plugins::presence_of(p.status), now)) {
            Some(change) => {
                self.host.status_change(&change).await;
                self.send_posted(client).await
            }
            None => Ok(0),
        }
    }

    /// Run the timers that are due; queue what they post (as this user). Returns how many posts.
    pub(crate) async fn fire_due_timers(&self, client: &Client) -> anyhow::Result<usize> {
        self.host.fire_due_timers().await;
        self.send_posted(client).await
    }

    /// Queue what the plugins posted (as this user), each through the outgoing filters. Returns how many.
    async fn send_posted(&self, client: &Client) -> anyhow::Result<usize> {
        let posted = self.sink.take();
        let mut sent = 0;
        for p in posted {
            // What a plugin posts leaves as this user, so it passes the same filters as what the user sends.
            match filter_posted(&self.host, client.user(), p).await {
                Ok(p) => {
                    if let Some(plugin) = &p.card_of {
                        client.store().kv_set(CARD_OWNERS, &p.id, plugin.as_bytes()).await?;
                    }
                    client.compose_with_id(&p.id, &p.conversation, &p.content).await?;
                    sent += 1;
                }
                Err((plugin, reason)) => tracing::warn!(%plugin, %reason, "a plugin's post was refused by a filter; not sent"),
            }
        }
        Ok(sent)
    }
}

fn absolute(path: &Path) -> anyhow::Result<std::path::PathBuf> {
    Ok(if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) })
}
