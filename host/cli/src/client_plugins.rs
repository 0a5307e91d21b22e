//! Client scope: `imfree client --plugin FILE …` runs plugins inside this user's own client. Outgoing messages pass
//! through their `outgoing-message` filters before they are queued (a refusal keeps the message from ever leaving);
//! received messages go to `incoming-message`, contacts' presence changes to `status-change`, due timers to `timer`;
//! what a plugin posts is sent as this user, end to end encrypted, through the same outgoing filters. Their kv lives
//! in the client's local store. The user is the administrator here: `--grant` says which of the
//! capabilities a plugin's manifest asks for it may use.

use std::path::Path;
use std::sync::Arc;

use imfree_client::Client;
use imfree_client::store::StoredMessage;
use imfree_plugin_host::{Grants, Message, OutgoingOutcome, PluginConfig, PluginHost, PresenceTracker};

use crate::bots::{ClientSink, client_host, filter_posted, to_plugin_message};

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
        let (host, sink) = client_host(client, client.home().dir().join("plugin-cache"), 8)?;
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

    /// Hand received messages to the plugins; queue what they post (as this user). Returns how many posts.
    pub(crate) async fn incoming(&self, client: &Client, messages: &[StoredMessage]) -> anyhow::Result<usize> {
        let me = client.user().to_owned();
        for m in messages.iter().filter(|m| !m.outgoing && m.status == "received") {
            self.host.incoming_message(&to_plugin_message(m, &me)).await;
        }
        self.fire_due_timers(client).await
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
