//! Bot scope: every enabled plugin whose manifest declares the `bot` scope runs as its own bot account, driven by
//! the client engine exactly as a person's client is. The bot registers on the relay under the plugin's name on its
//! first start, keeps its keys, its decrypted messages and its plugin's kv in its own home
//! (`<bots_dir>/<name>/`, never in the relay's database), decrypts only what is sent to it, and everything it posts
//! is end-to-end encrypted like any message. Members add it to a group like any member; adding a bot means trusting
//! whoever runs the server.
//!
//! The same pieces serve the client scope (`imfree client --plugin`): [`ClientKv`], [`ClientSink`] and
//! [`to_plugin_message`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use imfree_client::store::{LocalStore, StoredMessage};
use imfree_client::{Client, ClientError, Event, Trust, new_envelope_id};
use imfree_plugin_host::host::HostServices;
use imfree_plugin_host::services::SinkError;
use imfree_plugin_host::{
    Action, Card, Command, ConversationDirectory, Draft, FileDraft, FileInfo, FileStore, HostOptions, Incident,
    IncidentSink, KvBackend, KvError, MailTransport, Member, Message, MessageSink, NoAccounts, OutgoingOutcome,
    PluginConfig, PluginHost, PluginIdentity, PluginManifest, PresenceTracker, Role, Scope, SystemClock,
};
use imfree_crypto::file::FileDescriptor;
use imfree_proto::ErrorCode;
use imfree_proto::compress::Compression;
use imfree_proto::content::Content;
use zeroize::Zeroizing;

use crate::cards;

/// A plugin's kv in a client's local store (bot or client scope): it never leaves the device.
pub(crate) struct ClientKv(pub(crate) LocalStore);

fn unavailable(e: ClientError) -> KvError {
    KvError::Unavailable(e.to_string())
}

#[async_trait]
impl KvBackend for ClientKv {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.0.kv_get(namespace, key).await.map_err(unavailable)
    }
    async fn set(&self, namespace: &str, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        self.0.kv_set(namespace, key, &value).await.map_err(unavailable)
    }
    async fn delete(&self, namespace: &str, key: &str) -> Result<(), KvError> {
        self.0.kv_delete(namespace, key).await.map_err(unavailable)
    }
    async fn list_keys(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, KvError> {
        self.0.kv_keys(namespace, prefix).await.map_err(unavailable)
    }
    async fn usage(&self, namespace: &str) -> Result<u64, KvError> {
        self.0.kv_usage(namespace).await.map_err(unavailable)
    }
}

/// A message a plugin posted, waiting for the engine to put it in the outbox.
pub(crate) struct Posted {
    pub(crate) id: String,
    pub(crate) conversation: String,
    pub(crate) content: Content,
    /// The plugin that posted a card (client scope has several plugins; presses go back to the card's own).
    pub(crate) card_of: Option<String>,
}

/// What plugins post, collected for the engine: a hook runs inside the engine's loop, so the posts are composed
/// and flushed when the hook returns. Each post gets its envelope id at once, so the plugin can refer to it.
#[derive(Default)]
pub(crate) struct ClientSink {
    posted: Mutex<Vec<Posted>>,
    wake: tokio::sync::Notify,
}

impl ClientSink {
    fn push(&self, conversation: &str, content: Content) -> Result<String, SinkError> {
        self.push_from(None, conversation, content)
    }

    fn push_from(&self, card_of: Option<&str>, conversation: &str, content: Content) -> Result<String, SinkError> {
        imfree_proto::validate_user_name(conversation, &imfree_proto::Limits::default())
            .or_else(|e| imfree_client::groups::parse_group(conversation).map(|_| ()).map_err(|_| e))
            .map_err(|_| SinkError::Invalid(format!("{conversation:?} is not a conversation (a user name or group:<id>)")))?;
        let id = new_envelope_id();
        let mut posted = self.posted.lock().map_err(|_| SinkError::Unavailable("sink poisoned".into()))?;
        if posted.len() >= 1000 {
            return Err(SinkError::Unavailable("too many messages waiting to be sent; try again later".into()));
        }
        posted.push(Posted { id: id.clone(), conversation: conversation.to_owned(), content, card_of: card_of.map(str::to_owned) });
        self.wake.notify_one();
        Ok(id)
    }

    /// Everything posted since the last call.
    pub(crate) fn take(&self) -> Vec<Posted> {
        self.posted.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default()
    }

    /// Completes when something was posted.
    pub(crate) async fn posted(&self) {
        self.wake.notified().await;
    }
}

fn text(body: &str, reply_to: Option<&str>) -> Content {
    typed(imfree_proto::mime::TEXT, body, reply_to)
}

fn typed(mime: &str, body: &str, reply_to: Option<&str>) -> Content {
    let mut content = Content::new(mime, body.as_bytes(), Some(Compression::Gzip));
    content.reply_to = reply_to.and_then(|r| r.parse().ok());
    content
}

#[async_trait]
impl MessageSink for ClientSink {
    async fn post(&self, _: &PluginIdentity, conversation: &str, body: &str) -> Result<String, SinkError> {
        self.push(conversation, text(body, None))
    }
    async fn reply(&self, _: &PluginIdentity, conversation: &str, message_id: &str, body: &str) -> Result<String, SinkError> {
        self.push(conversation, text(body, Some(message_id)))
    }
    async fn react(&self, _: &PluginIdentity, conversation: &str, message_id: &str, emoji: &str) -> Result<(), SinkError> {
        let to = message_id.parse().map_err(|_| SinkError::Invalid(format!("{message_id:?} is not a message id")))?;
        let reaction = imfree_proto::content::Reaction { to, emoji: emoji.to_owned(), remove: false };
        reaction.check().map_err(|e| SinkError::Invalid(e.to_string()))?;
        self.push(conversation, Content::new(imfree_proto::mime::REACTION, &reaction.encode(), None)).map(|_| ())
    }
    async fn post_card(&self, bot: &PluginIdentity, conversation: &str, card: &Card) -> Result<String, SinkError> {
        self.push_from(Some(&bot.name), conversation, Content::new(cards::CARD_MIME, cards::card_json(card).to_string().as_bytes(), Some(Compression::Gzip)))
    }
    async fn send(&self, _: &PluginIdentity, draft: &Draft) -> Result<String, SinkError> {
        // The host admits only text/plain and text/markdown; mentions are found as a person's client finds them.
        let mut content = typed(&draft.content_type, &draft.body, draft.reply_to.as_deref());
        if draft.content_type == imfree_proto::mime::MARKDOWN {
            content.mentions = imfree_markdown::mentions(&draft.body);
        }
        self.push(&draft.conversation, content)
    }
}

/// Members and roles of the conversations of a client (bot or client scope), as its store verified them: a group's
/// signed membership log as last synced, or the two people of a 1:1 conversation (both owners of it).
pub(crate) struct ClientConversations {
    pub(crate) store: LocalStore,
    pub(crate) me: String,
}

fn role_of(role: imfree_crypto::membership::Role) -> Role {
    use imfree_crypto::membership::Role as R;
    match role {
        R::Owner => Role::Owner,
        R::Admin => Role::Admin,
        R::Member => Role::Member,
        R::ReadOnly => Role::ReadOnly,
    }
}

#[async_trait]
impl ConversationDirectory for ClientConversations {
    async fn members(&self, _: &PluginIdentity, conversation: &str) -> Result<Vec<Member>, SinkError> {
        if conversation.starts_with(imfree_client::groups::GROUP_PREFIX) {
            let group = imfree_client::groups::parse_group(conversation).map_err(|e| SinkError::Invalid(e.to_string()))?;
            let roles = imfree_client::groups::verified_roles(&self.store, &group)
                .await
                .map_err(|e| SinkError::Unavailable(e.to_string()))?
                .ok_or_else(|| SinkError::Invalid(format!("{conversation} is not a group this account belongs to")))?;
            return Ok(roles.into_iter().map(|(user, role)| Member { user, role: role_of(role) }).collect());
        }
        imfree_proto::validate_user_name(conversation, &imfree_proto::Limits::default())
            .map_err(|_| SinkError::Invalid(format!("{conversation:?} is not a conversation (a user name or group:<id>)")))?;
        let mut people = vec![self.me.clone(), conversation.to_owned()];
        people.dedup();
        Ok(people.into_iter().map(|user| Member { user, role: Role::Owner }).collect())
    }
}

/// The bot's client, replaced when the bot logs in again; the file store reaches the current one through it.
pub(crate) type ClientSlot = Arc<Mutex<Arc<Client>>>;

/// The files of a bot's conversations: fetched (every chunk authenticated, the whole file's SHA-256 checked) and
/// sent by its client engine, through connections of their own beside the bot's session. Downloads land in
/// `<home>/files/` only while a plugin reads them; uploads are staged in `<home>/outgoing/` until the relay holds
/// every chunk.
pub(crate) struct ClientFiles {
    pub(crate) client: ClientSlot,
}

impl ClientFiles {
    fn client(&self) -> Result<Arc<Client>, SinkError> {
        self.client.lock().map(|c| Arc::clone(&c)).map_err(|_| SinkError::Unavailable("client poisoned".into()))
    }

    /// The file message `message_id` with its descriptor.
    async fn file_message(client: &Client, message_id: &str) -> Result<(StoredMessage, FileDescriptor), SinkError> {
        let m = client
            .store()
            .message(message_id)
            .await
            .map_err(|e| SinkError::Unavailable(e.to_string()))?
            .filter(|m| m.mime == imfree_client::files::FILE_MIME)
            .ok_or_else(|| SinkError::Invalid(format!("{message_id:?} is not a file message this account holds")))?;
        let d = FileDescriptor::decode(&m.body).map_err(|e| SinkError::Invalid(format!("the file message is unreadable: {e}")))?;
        Ok((m, d))
    }
}

fn file_error(e: ClientError) -> SinkError {
    match e {
        ClientError::Io(_) | ClientError::Refused { .. } | ClientError::Store(_) => SinkError::Unavailable(e.to_string()),
        other => SinkError::Invalid(other.to_string()),
    }
}

#[async_trait]
impl FileStore for ClientFiles {
    async fn info(&self, _: &PluginIdentity, message_id: &str) -> Result<FileInfo, SinkError> {
        let client = self.client()?;
        let (m, d) = Self::file_message(&client, message_id).await?;
        Ok(FileInfo {
            message_id: m.id.clone(),
            conversation: conversation_of(&m, client.user()),
            sender: m.from.clone(),
            name: d.name.clone(),
            content_type: d.mime.clone(),
            size: d.size,
            voice: d.voice,
            duration_ms: d.duration_ms,
            password_protected: d.needs_password(),
        })
    }

    async fn read(&self, _: &PluginIdentity, message_id: &str) -> Result<Vec<u8>, SinkError> {
        let client = self.client()?;
        Self::file_message(&client, message_id).await?;
        let dir = client.home().dir().join("files");
        std::fs::create_dir_all(&dir).map_err(|e| SinkError::Unavailable(format!("cannot prepare the download folder: {e}")))?;
        // Named by the message id (unique, no characters a path could misread), removed once read.
        let dest = dir.join(message_id);
        let options = imfree_client::files::TransferOptions { retry_for: Duration::from_secs(10), ..Default::default() };
        let got = client.get_file(message_id, Some(&dest), &options, &imfree_client::files::NoProgress).await.map_err(file_error)?;
        let data = tokio::fs::read(&got.path).await.map_err(|e| SinkError::Unavailable(format!("cannot read the downloaded file: {e}")));
        let _ = tokio::fs::remove_file(&got.path).await;
        data
    }

    async fn send(&self, _: &PluginIdentity, file: &FileDraft) -> Result<String, SinkError> {
        let client = self.client()?;
        imfree_crypto::file::validate_name(&file.name).map_err(|e| SinkError::Invalid(e.to_string()))?;
        // Staged under a fresh folder so two files of the same name never meet; the upload reads it from there.
        let staging = client.home().dir().join("outgoing").join(new_envelope_id());
        std::fs::create_dir_all(&staging).map_err(|e| SinkError::Unavailable(format!("cannot stage the file: {e}")))?;
        let path = staging.join(&file.name);
        let result = async {
            tokio::fs::write(&path, &file.data).await.map_err(|e| SinkError::Unavailable(format!("cannot stage the file: {e}")))?;
            let options = imfree_client::files::TransferOptions { mime: Some(file.content_type.clone()), retry_for: Duration::from_secs(10), ..Default::default() };
            client.send_file(&file.conversation, &path, &options, &imfree_client::files::NoProgress).await.map_err(file_error)
        }
        .await;
        let _ = tokio::fs::remove_dir_all(&staging).await;
        Ok(result?.message_id)
    }
}

/// What a scope gives plugins beyond what every client scope has: files and mail (a bot's), or nothing (a person's
/// client plugins, `imfree admin webhook`).
pub(crate) struct ScopeServices {
    pub(crate) files: Arc<dyn FileStore>,
    pub(crate) mail: Arc<dyn MailTransport>,
}

impl ScopeServices {
    /// Neither files nor mail: every call is refused.
    pub(crate) fn none() -> Self {
        ScopeServices { files: Arc::new(imfree_plugin_host::NoFiles), mail: Arc::new(imfree_plugin_host::NoMail) }
    }
}

/// A plugin runtime for a client engine (bot or client scope): posts collected by the returned sink, kv in the
/// client's own store, incidents in the log.
pub(crate) fn client_host(client: &Client, cache: PathBuf, max_instances: u32, scope: ScopeServices) -> anyhow::Result<(PluginHost, Arc<ClientSink>)> {
    let sink = Arc::new(ClientSink::default());
    let services = HostServices {
        messages: Arc::clone(&sink) as Arc<dyn MessageSink>,
        kv: Arc::new(ClientKv(client.store().clone())),
        clock: Arc::new(SystemClock),
        incidents: Arc::new(LoggedIncidents),
        accounts: Arc::new(NoAccounts),
        conversations: Arc::new(ClientConversations { store: client.store().clone(), me: client.user().to_owned() }),
        files: scope.files,
        mail: scope.mail,
    };
    let options = HostOptions { cache_dir: Some(cache), max_instances, ..HostOptions::default() };
    let host = PluginHost::new(options, services).map_err(|e| anyhow::anyhow!("plugin runtime: {e}"))?;
    Ok((host, sink))
}

/// Incidents go to the log with plugin, version, hook and reason.
pub(crate) struct LoggedIncidents;

impl IncidentSink for LoggedIncidents {
    fn report(&self, incident: &Incident) {
        tracing::warn!(plugin = %incident.plugin, version = %incident.version, kind = %incident.kind, "plugin incident: {incident}");
    }
}

/// The conversation a stored message belongs to, as plugins name it: the group, or the other user.
pub(crate) fn conversation_of(m: &StoredMessage, me: &str) -> String {
    if m.to.starts_with(imfree_client::groups::GROUP_PREFIX) || m.from == me { m.to.clone() } else { m.from.clone() }
}

/// A stored message as the plugin API shows it.
pub(crate) fn to_plugin_message(m: &StoredMessage, me: &str) -> Message {
    // A file message's descriptor holds the file's key: plugins get its summary (`{}` if it is unreadable), and the
    // file through `files`.
    let body = if m.mime == imfree_client::files::FILE_MIME {
        FileDescriptor::decode(&m.body).map(|d| imfree_client::files::file_summary(&d).to_string()).unwrap_or_else(|_| "{}".into())
    } else {
        String::from_utf8_lossy(&m.body).into_owned()
    };
    Message {
        id: m.id.clone(),
        conversation: conversation_of(m, me),
        sender: m.from.clone(),
        sent_at: m.ts.max(0) as u64,
        content_type: m.mime.clone(),
        body,
        reply_to: m.reply_to.clone(),
        // The mentions the message carries (found outside code by the sender's client), not a guess from the text.
        mentions: m.mentions.clone(),
    }
}

/// Start a bot for every enabled bot-scope plugin in `plugins`. Each runs until the process ends, reconnecting
/// when the relay is away. A bot whose plugin has the `http` hook answers `/plugins/<name>/…` on the relay.
pub(crate) fn start(
    relay_url: String,
    relay: &imfree_relay::RelayConfig,
    base_dir: &Path,
    routes: Arc<imfree_relay::plugins::RelayPlugins>,
) {
    let (bots_dir, bundled_dir) = (relay.bots_dir(), relay.bundled_dir());
    for (name, config) in &relay.plugins {
        let mut config = config.clone();
        config.resolve(name, base_dir, &bundled_dir);
        if !config.enabled {
            continue;
        }
        match PluginManifest::from_path(&config.manifest_path()) {
            Ok(m) if m.name != *name => {
                tracing::error!(plugin = %name, manifest = %m.name, "[plugins.<name>] must be the manifest's name; bot not started");
                continue;
            }
            Ok(m) if !m.scopes.contains(&Scope::Bot) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(plugin = %name, error = %e, "plugin manifest refused; bot not started");
                continue;
            }
        }
        let mail = match crate::mail::transport(config.mail.as_ref(), base_dir) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(plugin = %name, error = %e, "[plugins.<name>.mail] refused; bot not started");
                continue;
            }
        };
        let (name, url, home) = (name.clone(), relay_url.clone(), bots_dir.join(name));
        let cache = bots_dir.join("plugin-cache");
        let routes = Arc::clone(&routes);
        tokio::spawn(async move {
            if let Err(e) = run(&name, config, &url, &home, cache, &routes, mail).await {
                tracing::error!(bot = %name, error = %e, "bot stopped");
            }
        });
    }
}

/// The bot's client: registered on first start under the plugin's name, with a random password kept in its home
/// (mode 0600) for logging in again when the session expires.
async fn open_or_register(name: &str, url: &str, home: &Path) -> anyhow::Result<Client> {
    std::fs::create_dir_all(home)?;
    if let Ok(client) = Client::open(Some(home)).await {
        return Ok(client);
    }
    let secret_file = home.join("bot-password");
    let password = match std::fs::read_to_string(&secret_file) {
        Ok(p) => Zeroizing::new(p.trim().to_owned()),
        Err(_) => {
            let mut bytes = [0u8; 24];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
            let p = Zeroizing::new(hex::encode(bytes));
            write_private(&secret_file, p.as_bytes())?;
            p
        }
    };
    match Client::register(Some(home), url, name, &password, Trust::default()).await {
        Ok(c) => Ok(c),
        Err(ClientError::Refused { code: imfree_proto::ErrorCode::UserExists, .. }) => {
            Ok(Client::login(Some(home), url, name, &password, None, Trust::default()).await.map_err(|e| {
                anyhow::anyhow!("the account {name:?} exists and is not this bot's ({e}); rename the plugin or remove the account")
            })?)
        }
        Err(e) => Err(e.into()),
    }
}

async fn relogin(name: &str, url: &str, home: &Path) -> anyhow::Result<Client> {
    let password = Zeroizing::new(std::fs::read_to_string(home.join("bot-password"))?.trim().to_owned());
    Ok(Client::login(Some(home), url, name, &password, None, Trust::default()).await?)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

async fn run(
    name: &str,
    config: PluginConfig,
    url: &str,
    home: &Path,
    cache: PathBuf,
    routes: &imfree_relay::plugins::RelayPlugins,
    mail: Arc<dyn MailTransport>,
) -> anyhow::Result<()> {
    let client = loop {
        match open_or_register(name, url, home).await {
            Ok(c) => break c,
            Err(e) if e.downcast_ref::<ClientError>().is_some_and(|c| matches!(c, ClientError::Io(_))) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let client = Arc::new(client);
    let slot: ClientSlot = Arc::new(Mutex::new(Arc::clone(&client)));
    let scope = ScopeServices { files: Arc::new(ClientFiles { client: Arc::clone(&slot) }), mail };
    let (host, sink) = client_host(&client, cache, 4, scope)?;
    let host = Arc::new(host);
    host.load(config).await?;
    if host.plugins().iter().any(|p| p.name == name && p.hooks.contains(&imfree_plugin_host::Hook::Http)) {
        routes.register_bot_routes(name, Arc::clone(&host));
    }
    tracing::info!(bot = %name, "bot running");
    let timers = Arc::clone(&host);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            timers.fire_due_timers().await;
        }
    });
    let mut client = client;
    loop {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
        let mut session = match client.connect_with_retry(deadline).await {
            Ok(s) => s,
            Err(ClientError::Refused { code: ErrorCode::TokenExpired | ErrorCode::TokenRevoked | ErrorCode::Unauthenticated, .. }) => {
                // The session ended (expiry, an operator's revocation): log in again with the bot's password.
                tracing::info!(bot = %name, "bot session ended; logging in again");
                match relogin(name, url, home).await {
                    Ok(c) => {
                        client = Arc::new(c);
                        if let Ok(mut current) = slot.lock() {
                            *current = Arc::clone(&client);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(bot = %name, error = %e, "bot cannot log in; retrying");
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(bot = %name, error = %e, "bot cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        match serve(name, &client, &mut session, &host, &sink).await {
            Ok(()) => {}
            Err(ClientError::Io(e)) => tracing::info!(bot = %name, error = %e, "bot disconnected; reconnecting"),
            Err(e) => tracing::warn!(bot = %name, error = %e, "bot session failed; reconnecting"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One connection's worth of bot work: hand every new message to the plugin, send what it posts.
async fn serve(
    name: &str,
    client: &Client,
    session: &mut imfree_client::Session<'_>,
    host: &PluginHost,
    sink: &ClientSink,
) -> Result<(), ClientError> {
    let me = client.user().to_owned();
    let presence = PresenceTracker::new();
    send_posted(client, session, host, sink, name).await?;
    session.flush_outbox().await?;
    loop {
        let Some(event) = session.next_event_or(sink.posted()).await? else {
            send_posted(client, session, host, sink, name).await?;
            continue;
        };
        let m = match event {
            Event::Message(m) => m,
            // Contacts' presence (people who wrote to the bot), as the relay pushes it.
            Event::Presence(p) => {
                let now = imfree_client::now_ms().max(0) as u64;
                if let Some(change) = p.user.as_deref().and_then(|u| presence.change(u, imfree_relay::plugins::presence_of(p.status), now)) {
                    host.status_change(&change).await;
                    send_posted(client, session, host, sink, name).await?;
                }
                continue;
            }
            _ => continue,
        };
        if m.outgoing || m.from == me || m.status != "received" {
            continue;
        }
        let msg = to_plugin_message(&m, &me);
        if m.mime == cards::ACTION_MIME {
            // A button press on one of this bot's cards, sent to the bot by the user who pressed it.
            let card = match cards::parse_action(&m.body) {
                Some((message_id, button)) => pressable_card(client.store(), &message_id, &button, &m.from).await?.map(|c| (c, button)),
                None => None,
            };
            match card {
                Some((card, button)) => {
                    let action = Action { message_id: card.id, conversation: card.to, button, user: m.from.clone() };
                    let _ = host.action(name, action).await;
                }
                None => tracing::debug!(bot = %name, "press on a button of no card of this bot's that the presser can see; ignored"),
            }
        } else if let Some((command, args)) = msg.body.strip_prefix('/').and_then(|c| c.split_once(' ').or(Some((c, "")))) {
            let cmd = Command { name: command.to_owned(), args: args.trim().to_owned(), conversation: msg.conversation.clone(), sender: m.from.clone() };
            if let Ok(Some(answer)) = host.command(name, cmd).await {
                // Shown only to whoever typed it: a 1:1 message.
                if let Err(e) = sink.push(&m.from, text(&answer, Some(&m.id))) {
                    tracing::warn!(bot = %name, error = %e, "command answer not sent");
                }
            }
        } else {
            host.incoming_message(&msg).await;
        }
        send_posted(client, session, host, sink, name).await?;
    }
}

/// Pass a text a plugin posted through the host's outgoing-message filters, as everything this engine sends: the
/// (possibly changed) post, or the plugin that refused it and why.
pub(crate) async fn filter_posted(host: &PluginHost, me: &str, p: Posted) -> Result<Posted, (String, String)> {
    let mut content = p.content;
    if content.mime.starts_with("text/") {
        let body = content.body_bytes(&imfree_proto::Limits::default()).unwrap_or_default();
        let draft = Message {
            id: p.id.clone(),
            conversation: p.conversation.clone(),
            sender: me.to_owned(),
            sent_at: imfree_client::now_ms().max(0) as u64,
            content_type: content.mime.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
            reply_to: content.reply_to.map(|r| r.to_string()),
            mentions: Vec::new(),
        };
        match host.outgoing_message(draft).await {
            OutgoingOutcome::Send(m) => {
                let reply_to = content.reply_to;
                content = Content::new(m.content_type, m.body.as_bytes(), Some(Compression::Gzip));
                content.reply_to = reply_to;
            }
            OutgoingOutcome::Reject { plugin, reason } => return Err((plugin, reason)),
        }
    }
    Ok(Posted { content, ..p })
}

/// The card a press is for, if the press may reach a plugin: a card this client posted, with that button, that the
/// presser can see — a member of the card's group (as verified here), or the person it was sent to. Anyone can send
/// a press for any message id; only these reach the plugin.
pub(crate) async fn pressable_card(
    store: &LocalStore,
    message_id: &str,
    button: &str,
    presser: &str,
) -> Result<Option<StoredMessage>, ClientError> {
    let Some(card) = store.message(message_id).await?.filter(|c| c.outgoing && c.mime == cards::CARD_MIME) else {
        return Ok(None);
    };
    if !cards::button_ids(&card.body).iter().any(|b| b == button) {
        return Ok(None);
    }
    let sees_it = if card.to.starts_with(imfree_client::groups::GROUP_PREFIX) {
        match imfree_client::groups::parse_group(&card.to) {
            Ok(group) => imfree_client::groups::verified_roles(store, &group)
                .await?
                .is_some_and(|members| members.iter().any(|(user, _)| user == presser)),
            Err(_) => false,
        }
    } else {
        card.to == presser
    };
    Ok(sees_it.then_some(card))
}

/// Compose what the plugin posted (each through the plugin's own outgoing-message filter, if it has one) and flush.
async fn send_posted(
    client: &Client,
    session: &mut imfree_client::Session<'_>,
    host: &PluginHost,
    sink: &ClientSink,
    name: &str,
) -> Result<(), ClientError> {
    let posted = sink.take();
    if posted.is_empty() {
        return Ok(());
    }
    for p in posted {
        match filter_posted(host, client.user(), p).await {
            Ok(p) => client.compose_with_id(&p.id, &p.conversation, &p.content).await?,
            Err((plugin, reason)) => tracing::info!(bot = %name, %plugin, %reason, "the bot's own message was refused by a filter"),
        }
    }
    session.flush_outbox().await.map(|_| ())
}
