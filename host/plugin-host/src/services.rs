//! The small traits through which the relay and the client give plugins their effects: a [`MessageSink`] (post as
//! the bot), a [`KvBackend`] (the plugin's namespaced store), and a [`Clock`]. The host never reaches past them,
//! so the same runtime serves the relay, a bot and a client. In-memory implementations live here for tests and
//! for embedders without persistence; the store crate implements [`KvBackend`] over its database.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::Card;

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
}

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
