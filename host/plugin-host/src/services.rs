//! The small traits through which the relay and the client give plugins their effects: a [`MessageSink`] (post as
//! the bot), a [`KvBackend`] (the plugin's namespaced store), and a [`Clock`]. The host never reaches past them,
//! so the same runtime serves the relay, a bot and a client. In-memory implementations live here for tests and
//! for embedders without persistence; the store crate implements [`KvBackend`] over its database.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::{Card, Draft, ExternalIdentity, FileDraft, FileInfo, InboundMail, Member, Profile};

/// Who is acting: the plugin's name (its bot account and kv namespace) and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginIdentity {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
}

/// Why a sink refused or failed; the text reaches the guest, so it must not carry secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Bad arguments (unknown conversation, bot not a member...).
    #[error("{0}")]
    Invalid(String),
    /// Temporarily impossible.
    #[error("{0}")]
    Unavailable(String),
}

/// Sends messages as a plugin's bot account. The relay or the bot's client engine implements it.
#[async_trait]
pub trait MessageSink: Send + Sync {
    /// Post `text`; returns the new message id.
    async fn post(&self, bot: &PluginIdentity, conversation: &str, text: &str) -> Result<String, SinkError>;
    /// Reply to `message_id`; returns the new message id.
    async fn reply(
        &self,
        bot: &PluginIdentity,
        conversation: &str,
        message_id: &str,
        text: &str,
    ) -> Result<String, SinkError>;
    /// React to `message_id` with `emoji`.
    async fn react(
        &self,
        bot: &PluginIdentity,
        conversation: &str,
        message_id: &str,
        emoji: &str,
    ) -> Result<(), SinkError>;
    /// Post a card; returns the new message id.
    async fn post_card(&self, bot: &PluginIdentity, conversation: &str, card: &Card) -> Result<String, SinkError>;
    /// Send a draft with its content type. The provided method sends `text/plain` through [`Self::post`] and
    /// [`Self::reply`] and refuses other types; a sink that can send markdown overrides it.
    async fn send(&self, bot: &PluginIdentity, draft: &Draft) -> Result<String, SinkError> {
        if draft.content_type != "text/plain" {
            return Err(SinkError::Invalid(format!("content type {:?} cannot be sent here", draft.content_type)));
        }
        match &draft.reply_to {
            Some(to) => self.reply(bot, &draft.conversation, to, &draft.body).await,
            None => self.post(bot, &draft.conversation, &draft.body).await,
        }
    }
}

/// The roles and members of conversations, as the bot's (or user's) client verified them, and markdown posts.
/// Provided methods refuse, so an embedder without conversations (the relay) need not implement them.
#[async_trait]
pub trait ConversationDirectory: Send + Sync {
    /// The members of `conversation` with their roles.
    async fn members(&self, bot: &PluginIdentity, conversation: &str) -> Result<Vec<Member>, SinkError> {
        let _ = (bot, conversation);
        Err(SinkError::Invalid("there are no conversations in this scope".into()))
    }
}

/// A [`ConversationDirectory`] for scopes without conversations (the relay, tests): every call is refused.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoConversations;

impl ConversationDirectory for NoConversations {}

/// Why an account operation failed; the text reaches the guest, so it must not carry secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// Refused: bad name, name taken, identity linked elsewhere, unknown account.
    #[error("{0}")]
    Invalid(String),
    /// Temporarily impossible (storage down).
    #[error("{0}")]
    Unavailable(String),
}

/// The relay's accounts, for identity plugins (SSO): linked external identities, provisioning, login codes. Only
/// the relay implements it; elsewhere [`NoAccounts`] refuses every call.
#[async_trait]
pub trait AccountDirectory: Send + Sync {
    /// The account linked to `identity`.
    async fn find_linked(&self, identity: &ExternalIdentity) -> Result<Option<String>, AccountError>;
    /// Whether `name` exists.
    async fn exists(&self, name: &str) -> Result<bool, AccountError>;
    /// Create `name` without a password, linked to `identity`.
    async fn provision(&self, name: &str, identity: &ExternalIdentity, profile: &Profile) -> Result<(), AccountError>;
    /// Link `identity` to the existing `name`.
    async fn link(&self, name: &str, identity: &ExternalIdentity) -> Result<(), AccountError>;
    /// Replace `name`'s profile.
    async fn update_profile(&self, name: &str, profile: &Profile) -> Result<(), AccountError>;
    /// A single-use login code for `name`, bound to the client's PKCE S256 challenge.
    async fn issue_login_code(&self, name: &str, client_challenge: &str) -> Result<String, AccountError>;
    /// End every session of `name`; how many ended.
    async fn revoke_sessions(&self, name: &str) -> Result<u32, AccountError>;
}

/// An [`AccountDirectory`] for scopes without accounts (bots, clients, tests): every call is refused.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoAccounts;

fn no_accounts<T>() -> Result<T, AccountError> {
    Err(AccountError::Invalid("accounts are only available to relay-scope plugins".into()))
}

#[async_trait]
impl AccountDirectory for NoAccounts {
    async fn find_linked(&self, _: &ExternalIdentity) -> Result<Option<String>, AccountError> {
        no_accounts()
    }
    async fn exists(&self, _: &str) -> Result<bool, AccountError> {
        no_accounts()
    }
    async fn provision(&self, _: &str, _: &ExternalIdentity, _: &Profile) -> Result<(), AccountError> {
        no_accounts()
    }
    async fn link(&self, _: &str, _: &ExternalIdentity) -> Result<(), AccountError> {
        no_accounts()
    }
    async fn update_profile(&self, _: &str, _: &Profile) -> Result<(), AccountError> {
        no_accounts()
    }
    async fn issue_login_code(&self, _: &str, _: &str) -> Result<String, AccountError> {
        no_accounts()
    }
    async fn revoke_sessions(&self, _: &str) -> Result<u32, AccountError> {
        no_accounts()
    }
}

/// Files of the conversations of a bot or a client: described, fetched (decrypted and checked by the client) and
/// sent. Provided methods refuse, so an embedder without files (the relay) need not implement them.
#[async_trait]
pub trait FileStore: Send + Sync {
    /// The file message `message_id`.
    async fn info(&self, bot: &PluginIdentity, message_id: &str) -> Result<FileInfo, SinkError> {
        let _ = (bot, message_id);
        Err(SinkError::Invalid("there are no files in this scope".into()))
    }
    /// The contents of the file of `message_id`; the host has checked its size against the plugin's limit.
    async fn read(&self, bot: &PluginIdentity, message_id: &str) -> Result<Vec<u8>, SinkError> {
        let _ = (bot, message_id);
        Err(SinkError::Invalid("there are no files in this scope".into()))
    }
    /// Send `file`; returns the new message id.
    async fn send(&self, bot: &PluginIdentity, file: &FileDraft) -> Result<String, SinkError> {
        let _ = (bot, file);
        Err(SinkError::Invalid("there are no files in this scope".into()))
    }
}

/// A [`FileStore`] for scopes without files (the relay, tests): every call is refused.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFiles;

impl FileStore for NoFiles {}

/// Why a mail operation failed; the text reaches the guest, so it must not carry secrets (no passwords, no
/// server greeting that echoes credentials).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// Refused for good: a recipient or the message was rejected, or no mail server is configured.
    #[error("{0}")]
    Invalid(String),
    /// Temporarily impossible (server down, 4xx reply); retrying later may work.
    #[error("{0}")]
    Unavailable(String),
}

/// E-mail for a bot-scope plugin through the servers its administrator configured (`[plugins.<name>.mail]`):
/// the embedder connects, negotiates TLS and authenticates; the plugin sees only messages. Provided methods
/// refuse, so scopes without mail need not implement it.
#[async_trait]
pub trait MailTransport: Send + Sync {
    /// The plugin's sending address.
    async fn address(&self, bot: &PluginIdentity) -> Result<String, MailError> {
        let _ = bot;
        Err(MailError::Invalid("no mail server is configured for this plugin ([plugins.<name>.mail])".into()))
    }
    /// Submit `message` to `recipients`.
    async fn send(&self, bot: &PluginIdentity, recipients: &[String], message: &[u8]) -> Result<(), MailError> {
        let _ = (bot, recipients, message);
        Err(MailError::Invalid("no mail server is configured for this plugin ([plugins.<name>.mail])".into()))
    }
    /// Up to `max` waiting messages, oldest first.
    async fn fetch(&self, bot: &PluginIdentity, max: u32) -> Result<Vec<InboundMail>, MailError> {
        let _ = (bot, max);
        Err(MailError::Invalid("no mailbox is configured for this plugin ([plugins.<name>.mail])".into()))
    }
    /// Remove handled messages.
    async fn remove(&self, bot: &PluginIdentity, ids: &[String]) -> Result<(), MailError> {
        let _ = (bot, ids);
        Err(MailError::Invalid("no mailbox is configured for this plugin ([plugins.<name>.mail])".into()))
    }
}

/// A [`MailTransport`] for scopes without mail: every call is refused.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMail;

impl MailTransport for NoMail {}

/// Why a kv operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The backing store failed; the text reaches the guest as `unavailable`.
    #[error("kv store unavailable: {0}")]
    Unavailable(String),
}

/// A key-value store partitioned by namespace (the plugin's name). Implementations must keep namespaces apart.
#[async_trait]
pub trait KvBackend: Send + Sync {
    /// Value under `key`.
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Store `value` under `key`.
    async fn set(&self, namespace: &str, key: &str, value: Vec<u8>) -> Result<(), KvError>;
    /// Remove `key`.
    async fn delete(&self, namespace: &str, key: &str) -> Result<(), KvError>;
    /// Keys starting with `prefix`, sorted.
    async fn list_keys(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, KvError>;
    /// Bytes used (sum of key and value lengths), for the quota.
    async fn usage(&self, namespace: &str) -> Result<u64, KvError>;
}

/// An in-memory [`KvBackend`] (tests, and embedders that need no persistence).
#[derive(Debug, Default)]
pub struct MemoryKv {
    spaces: Mutex<HashMap<String, BTreeMap<String, Vec<u8>>>>,
}

impl MemoryKv {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, namespace: &str, f: impl FnOnce(&mut BTreeMap<String, Vec<u8>>) -> R) -> R {
        let mut spaces = self.spaces.lock().unwrap_or_else(|p| p.into_inner());
        f(spaces.entry(namespace.to_owned()).or_default())
    }
}

#[async_trait]
impl KvBackend for MemoryKv {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.with(namespace, |m| m.get(key).cloned()))
    }
    async fn set(&self, namespace: &str, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        self.with(namespace, |m| m.insert(key.to_owned(), value));
        Ok(())
    }
    async fn delete(&self, namespace: &str, key: &str) -> Result<(), KvError> {
        self.with(namespace, |m| m.remove(key));
        Ok(())
    }
    async fn list_keys(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, KvError> {
        Ok(self.with(namespace, |m| {
            m.keys().filter(|k| k.starts_with(prefix)).cloned().collect()
        }))
    }
    async fn usage(&self, namespace: &str) -> Result<u64, KvError> {
        Ok(self.with(namespace, |m| m.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()))
    }
}

/// Wall-clock time in ms since the Unix epoch; timers, backoff and incidents read it.
pub trait Clock: Send + Sync {
    /// Now.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default()
    }
}

/// A clock moved by hand (tests of timers and backoff).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        ManualClock(AtomicU64::new(start_ms))
    }
    /// Move forward.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_kv_keeps_namespaces_apart_and_counts_usage() {
        let kv = MemoryKv::new();
        kv.set("a", "k1", b"v1".to_vec()).await.unwrap();
        kv.set("a", "k2", b"value".to_vec()).await.unwrap();
        kv.set("b", "k1", b"other".to_vec()).await.unwrap();
        assert_eq!(kv.get("a", "k1").await.unwrap(), Some(b"v1".to_vec()));
        assert_eq!(kv.get("b", "k1").await.unwrap(), Some(b"other".to_vec()));
        assert_eq!(kv.list_keys("a", "k").await.unwrap(), vec!["k1", "k2"]);
        assert_eq!(kv.usage("a").await.unwrap(), 4 + 7);
        kv.delete("a", "k1").await.unwrap();
        assert_eq!(kv.get("a", "k1").await.unwrap(), None);
        assert_eq!(kv.get("c", "k1").await.unwrap(), None);
    }
}
