//! The client's local store (SQLite): messages as the user sees them, the outbox, receipts.
//!
//! A delivery is stored before it is acknowledged, and shown (printed, rendered) only from here, once: so a client
//! killed anywhere between receive, store, show and ack shows every message exactly once.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Row;

use crate::ClientError;

/// A message in the local store.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredMessage {
    /// Local order.
    #[serde(skip)]
    pub seq: i64,
    /// Envelope id.
    pub id: String,
    /// Sent by this user.
    #[serde(skip)]
    pub outgoing: bool,
    /// Sender.
    pub from: String,
    /// Sending device.
    pub from_device: String,
    /// Recipient.
    pub to: String,
    /// Relay acceptance time (Unix ms).
    pub ts: i64,
    /// Content type of the body.
    pub mime: String,
    /// Body bytes.
    #[serde(skip)]
    pub body: Vec<u8>,
    /// received, pending, sent, failed, undecodable.
    #[serde(skip)]
    pub status: String,
}

impl std::fmt::Debug for StoredMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredMessage").field("id", &self.id).field("from", &self.from).field("to", &self.to).field("mime", &self.mime).finish_non_exhaustive()
    }
}

/// An envelope waiting to be accepted by the relay.
#[derive(Clone)]
pub struct OutboxItem {
    /// Envelope id.
    pub id: String,
    /// "message" or "receipt".
    pub kind: String,
    /// Recipient.
    pub to: String,
    /// Outer content type.
    pub mime: String,
    /// Payload.
    pub payload: Vec<u8>,
}

/// The local SQLite store.
#[derive(Clone)]
pub struct LocalStore {
    pool: SqlitePool,
    /// Seals secrets at rest (device state, sessions, sender keys) when the home has a key store.
    vault: Option<crate::vault::Vault>,
}

fn db(e: sqlx::Error) -> ClientError {
    ClientError::Store(e.to_string())
}

fn row_to_message(r: &sqlx::sqlite::SqliteRow) -> StoredMessage {
    StoredMessage {
        seq: r.get("seq"),
        id: r.get("id"),
        outgoing: r.get::<i64, _>("outgoing") != 0,
        from: r.get("from_user"),
        from_device: r.get("from_device"),
        to: r.get("to_user"),
        ts: r.get("ts"),
        mime: r.get("mime"),
        body: r.get("body"),
        status: r.get("status"),
    }
}

impl LocalStore {
    /// Open (and migrate) the store at `path`.
    pub async fn open(path: &Path) -> Result<Self, ClientError> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(db)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Stored-before-acked must survive a crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.map_err(db)?;
        sqlx::migrate!("./migrations").run(&pool).await.map_err(|e| ClientError::Store(e.to_string()))?;
        Ok(LocalStore { pool, vault: None })
    }

    /// Open the store of a home with a key store: secrets are sealed on write and opened on read.
    pub async fn open_sealed(path: &Path, vault: Option<crate::vault::Vault>) -> Result<Self, ClientError> {
        let mut store = Self::open(path).await?;
        store.vault = vault;
        Ok(store)
    }

    /// The pool, for the modules that keep their own tables here (files).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(crate) fn seal(&self, value: &[u8]) -> Vec<u8> {
        crate::vault::seal_opt(self.vault.as_ref(), value)
    }

    pub(crate) fn unseal(&self, value: Option<Vec<u8>>) -> Result<Option<Vec<u8>>, ClientError> {
        value.map(|v| crate::vault::open_opt(self.vault.as_ref(), v)).transpose()
    }

    /// Store incoming messages in one transaction; returns, for each, whether it was new (not a duplicate).
    pub async fn insert_incoming(&self, messages: &[StoredMessage], me: &str) -> Result<Vec<bool>, ClientError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let mut fresh = Vec::with_capacity(messages.len());
        for m in messages {
            // A conversation is the other user, or the group.
            let peer = if m.from == me || m.to.starts_with(crate::groups::GROUP_PREFIX) { &m.to } else { &m.from };
            let done = sqlx::query(
                "INSERT INTO messages (id, outgoing, peer, from_user, from_device, to_user, ts, mime, body, status, shown)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT(id) DO NOTHING",
            )
            .bind(&m.id)
            .bind(m.outgoing as i64)
            .bind(peer)
            .bind(&m.from)
            .bind(&m.from_device)
            .bind(&m.to)
            .bind(m.ts)
            .bind(&m.mime)
            .bind(&m.body)
            .bind(&m.status)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            fresh.push(done.rows_affected() == 1);
        }
        tx.commit().await.map_err(db)?;
        Ok(fresh)
    }

    /// Store an outgoing message and its outbox entry in one transaction.
    pub async fn insert_outgoing(&self, message: &StoredMessage, item: &OutboxItem) -> Result<(), ClientError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "INSERT INTO messages (id, outgoing, peer, from_user, from_device, to_user, ts, mime, body, status, shown)
             VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, 'pending', 1)",
        )
        .bind(&message.id)
        .bind(&message.to)
        .bind(&message.from)
        .bind(&message.from_device)
        .bind(&message.to)
        .bind(message.ts)
        .bind(&message.mime)
        .bind(&message.body)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        self.insert_outbox(&mut tx, item).await?;
        tx.commit().await.map_err(db)
    }

    async fn insert_outbox(&self, tx: &mut sqlx::SqliteConnection, item: &OutboxItem) -> Result<(), ClientError> {
        sqlx::query("INSERT INTO outbox (id, kind, to_user, mime, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(&item.id)
            .bind(&item.kind)
            .bind(&item.to)
            .bind(&item.mime)
            .bind(&item.payload)
            .bind(crate::now_ms())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Queue an outbox entry that has no row in a conversation (receipts, group control messages).
    pub async fn queue_outbox(&self, item: &OutboxItem) -> Result<(), ClientError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        self.insert_outbox(&mut conn, item).await
    }

    /// The outbox, oldest first.
    pub async fn outbox(&self) -> Result<Vec<OutboxItem>, ClientError> {
        let rows = sqlx::query("SELECT id, kind, to_user, mime, payload FROM outbox ORDER BY seq")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| OutboxItem { id: r.get("id"), kind: r.get("kind"), to: r.get("to_user"), mime: r.get("mime"), payload: r.get("payload") })
            .collect())
    }

    /// The relay accepted `id` at `ts`: drop it from the outbox.
    pub async fn mark_sent(&self, id: &str, ts: i64) -> Result<(), ClientError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("DELETE FROM outbox WHERE id = ?").bind(id).execute(&mut *tx).await.map_err(db)?;
        sqlx::query("UPDATE messages SET status = 'sent', ts = ? WHERE id = ?").bind(ts).bind(id).execute(&mut *tx).await.map_err(db)?;
        tx.commit().await.map_err(db)
    }

    /// The relay refused `id` for good: drop it from the outbox and mark it failed.
    pub async fn mark_failed(&self, id: &str) -> Result<(), ClientError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("DELETE FROM outbox WHERE id = ?").bind(id).execute(&mut *tx).await.map_err(db)?;
        sqlx::query("UPDATE messages SET status = 'failed' WHERE id = ?").bind(id).execute(&mut *tx).await.map_err(db)?;
        tx.commit().await.map_err(db)
    }

    /// Received messages not shown yet, in arrival order.
    pub async fn unshown(&self) -> Result<Vec<StoredMessage>, ClientError> {
        let rows = sqlx::query("SELECT * FROM messages WHERE shown = 0 ORDER BY seq").fetch_all(&self.pool).await.map_err(db)?;
        Ok(rows.iter().map(row_to_message).collect())
    }

    /// Mark messages as shown.
    pub async fn mark_shown(&self, ids: &[String]) -> Result<(), ClientError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        for id in ids {
            sqlx::query("UPDATE messages SET shown = 1 WHERE id = ?").bind(id).execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    /// The conversation with `peer`, oldest first.
    pub async fn conversation(&self, peer: &str, limit: i64) -> Result<Vec<StoredMessage>, ClientError> {
        let rows = sqlx::query("SELECT * FROM (SELECT * FROM messages WHERE peer = ? ORDER BY seq DESC LIMIT ?) ORDER BY seq")
            .bind(peer)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(rows.iter().map(row_to_message).collect())
    }

    /// Everyone this user has exchanged messages with.
    pub async fn peers(&self) -> Result<Vec<String>, ClientError> {
        let rows = sqlx::query("SELECT DISTINCT peer FROM messages ORDER BY peer").fetch_all(&self.pool).await.map_err(db)?;
        Ok(rows.iter().map(|r| r.get("peer")).collect())
    }

    /// Record a receipt.
    pub async fn record_receipt(&self, message_ids: &[String], from: &str, kind: &str, ts: i64) -> Result<(), ClientError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        for id in message_ids {
            sqlx::query("INSERT INTO receipts (message_id, from_user, kind, ts) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING")
                .bind(id)
                .bind(from)
                .bind(kind)
                .bind(ts)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    /// Receipts for a message: (from, kind).
    pub async fn receipts_of(&self, message_id: &str) -> Result<Vec<(String, String)>, ClientError> {
        let rows = sqlx::query("SELECT from_user, kind FROM receipts WHERE message_id = ? ORDER BY ts")
            .bind(message_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(rows.iter().map(|r| (r.get("from_user"), r.get("kind"))).collect())
    }

    /// Close the pool (flushes the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// End-to-end state in the local store.
impl LocalStore {
    /// A named state blob.
    pub async fn e2e_state(&self, name: &str) -> Result<Option<Vec<u8>>, ClientError> {
        let value = sqlx::query_scalar("SELECT value FROM e2e_state WHERE name = ?").bind(name).fetch_optional(&self.pool).await.map_err(db)?;
        self.unseal(value)
    }

    /// Store named state blobs in one transaction.
    pub async fn put_e2e_state(&self, items: &[(&str, Vec<u8>)]) -> Result<(), ClientError> {
        self.put_e2e_sessions(&[], items).await
    }

    /// The newest verified device revocation list seen for `user` (its encoding), kept to refuse an older one.
    pub async fn revocation_list(&self, user: &str) -> Result<Option<Vec<u8>>, ClientError> {
        self.e2e_state(&format!("revocation-list/{user}")).await
    }

    /// Keep a newer verified revocation list for `user`.
    pub async fn put_revocation_list(&self, user: &str, list: &[u8]) -> Result<(), ClientError> {
        self.put_e2e_state(&[(&format!("revocation-list/{user}"), list.to_vec())]).await
    }

    /// The stored pairwise session with a contact's device.
    pub async fn e2e_session(&self, user: &str, device: &str) -> Result<Option<Vec<u8>>, ClientError> {
        let value = sqlx::query_scalar("SELECT session FROM e2e_sessions WHERE peer_user = ? AND peer_device = ?")
            .bind(user)
            .bind(device)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        self.unseal(value)
    }

    /// Store pairwise sessions (and, in the same transaction, named state such as used-up prekeys).
    pub async fn put_e2e_sessions(&self, sessions: &[(String, String, Vec<u8>)], state: &[(&str, Vec<u8>)]) -> Result<(), ClientError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        for (user, device, blob) in sessions {
            sqlx::query(
                "INSERT INTO e2e_sessions (peer_user, peer_device, session, updated_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (peer_user, peer_device) DO UPDATE SET session = excluded.session, updated_at = excluded.updated_at",
            )
            .bind(user)
            .bind(device)
            .bind(self.seal(blob))
            .bind(crate::now_ms())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        for (name, value) in state {
            sqlx::query("INSERT INTO e2e_state (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value")
                .bind(*name)
                .bind(self.seal(value))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    /// The pinned identity key of a contact, and a different key seen since (not accepted).
    pub async fn pinned_identity(&self, user: &str) -> Result<Option<(Vec<u8>, Option<Vec<u8>>)>, ClientError> {
        let row: Option<(Vec<u8>, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT identity_key, changed_to FROM e2e_identities WHERE user = ?").bind(user).fetch_optional(&self.pool).await.map_err(db)?;
        Ok(row)
    }

    /// Pin a contact's identity key on first sight (does nothing if one is pinned).
    pub async fn pin_identity(&self, user: &str, key: &[u8]) -> Result<(), ClientError> {
        sqlx::query("INSERT INTO e2e_identities (user, identity_key, pinned_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
            .bind(user)
            .bind(key)
            .bind(crate::now_ms())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Record that the relay presented a different identity key for a contact.
    pub async fn note_identity_change(&self, user: &str, key: &[u8]) -> Result<(), ClientError> {
        sqlx::query("UPDATE e2e_identities SET changed_to = ? WHERE user = ?").bind(key).bind(user).execute(&self.pool).await.map_err(db)?;
        Ok(())
    }

    /// Accept a contact's new identity key: pin it and forget the sessions made with the old one.
    pub async fn accept_identity_change(&self, user: &str) -> Result<bool, ClientError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let done = sqlx::query("UPDATE e2e_identities SET identity_key = changed_to, changed_to = NULL, pinned_at = ? WHERE user = ? AND changed_to IS NOT NULL")
            .bind(crate::now_ms())
            .bind(user)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query("DELETE FROM e2e_sessions WHERE peer_user = ?").bind(user).execute(&mut *tx).await.map_err(db)?;
        if done.rows_affected() > 0 {
            // A new identity starts its own revocation lists at version 1.
            sqlx::query("DELETE FROM e2e_state WHERE name = ?").bind(format!("revocation-list/{user}")).execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}

/// A stored group (see [`crate::groups`]).
pub struct GroupRow {
    /// Group id (ULID).
    pub id: String,
    /// Local label.
    pub name: String,
    /// Verified membership state (JSON).
    pub state: Vec<u8>,
    /// Sender-key session (JSON), while a member.
    pub session: Option<Vec<u8>>,
    /// JSON list of "user/device/chain" the current chain went to.
    pub distributed: Vec<u8>,
    /// active, left, or "refused: …".
    pub status: String,
}

/// Group work waiting in the inbox.
pub struct InboxItem {
    /// Local order.
    pub seq: i64,
    /// Envelope id.
    pub envelope_id: String,
    /// message, update or sender_key.
    pub kind: String,
    /// Group id.
    pub group: String,
    /// Sender.
    pub from: String,
    /// Sending device (relay id).
    pub from_device: String,
    /// Relay time.
    pub ts: i64,
    /// Ciphertext or plaintext control body.
    pub body: Vec<u8>,
    /// Sender's identity key (pairwise items).
    pub sender_identity: Option<Vec<u8>>,
    /// Sender's certificate device id (pairwise items).
    pub sender_device: Option<i64>,
}

impl LocalStore {
    /// A group, if this device knows it.
    pub async fn group(&self, id: &str) -> Result<Option<GroupRow>, ClientError> {
        let row = sqlx::query("SELECT group_id, name, state, session, distributed, status FROM e2e_groups WHERE group_id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(GroupRow {
            id: r.get("group_id"),
            name: r.get("name"),
            state: r.get("state"),
            session: self.unseal(r.get("session"))?,
            distributed: r.get("distributed"),
            status: r.get("status"),
        }))
    }

    /// Every group this device knows, by id.
    pub async fn groups(&self) -> Result<Vec<(String, String, String)>, ClientError> {
        let rows = sqlx::query("SELECT group_id, name, status FROM e2e_groups ORDER BY group_id").fetch_all(&self.pool).await.map_err(db)?;
        Ok(rows.iter().map(|r| (r.get("group_id"), r.get("name"), r.get("status"))).collect())
    }

    /// Store a group (insert or replace).
    pub async fn put_group(&self, g: &GroupRow) -> Result<(), ClientError> {
        sqlx::query(
            "INSERT INTO e2e_groups (group_id, name, state, session, distributed, status, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (group_id) DO UPDATE SET name = excluded.name, state = excluded.state, session = excluded.session,
             distributed = excluded.distributed, status = excluded.status, updated_at = excluded.updated_at",
        )
        .bind(&g.id)
        .bind(&g.name)
        .bind(&g.state)
        .bind(g.session.as_deref().map(|s| self.seal(s)))
        .bind(&g.distributed)
        .bind(&g.status)
        .bind(crate::now_ms())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Whether an envelope already went into the group inbox (a redelivery after a crash before the ack).
    pub async fn in_group_inbox(&self, envelope_id: &str) -> Result<bool, ClientError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM group_inbox WHERE envelope_id = ?")
            .bind(envelope_id)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(n > 0)
    }

    /// Put group work into the inbox (ignored if the envelope is there already).
    pub async fn push_group_inbox(&self, items: &[InboxItem]) -> Result<(), ClientError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        for i in items {
            sqlx::query(
                "INSERT INTO group_inbox (envelope_id, kind, group_id, from_user, from_device, ts, body, sender_identity, sender_device)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (envelope_id) DO NOTHING",
            )
            .bind(&i.envelope_id)
            .bind(&i.kind)
            .bind(&i.group)
            .bind(&i.from)
            .bind(&i.from_device)
            .bind(i.ts)
            .bind(self.seal(&i.body))
            .bind(&i.sender_identity)
            .bind(i.sender_device)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    /// Group work not handled yet, oldest first.
    pub async fn group_inbox(&self) -> Result<Vec<InboxItem>, ClientError> {
        let rows = sqlx::query("SELECT * FROM group_inbox WHERE done = 0 ORDER BY seq LIMIT 512").fetch_all(&self.pool).await.map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(InboxItem {
                    seq: r.get("seq"),
                    envelope_id: r.get("envelope_id"),
                    kind: r.get("kind"),
                    group: r.get("group_id"),
                    from: r.get("from_user"),
                    from_device: r.get("from_device"),
                    ts: r.get("ts"),
                    body: self.unseal(Some(r.get("body")))?.unwrap_or_default(),
                    sender_identity: r.get("sender_identity"),
                    sender_device: r.get("sender_device"),
                })
            })
            .collect()
    }

    /// Mark an inbox item handled and drop its body (sender keys do not stay on disk longer than needed).
    pub async fn group_inbox_done(&self, seq: i64) -> Result<(), ClientError> {
        sqlx::query("UPDATE group_inbox SET done = 1, body = x'' WHERE seq = ?").bind(seq).execute(&self.pool).await.map_err(db)?;
        Ok(())
    }
}

impl LocalStore {
    /// One message by id.
    pub async fn message(&self, id: &str) -> Result<Option<StoredMessage>, ClientError> {
        let row = sqlx::query("SELECT * FROM messages WHERE id = ?").bind(id).fetch_optional(&self.pool).await.map_err(db)?;
        Ok(row.as_ref().map(row_to_message))
    }

    /// A plugin's value under `key`.
    pub async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, ClientError> {
        sqlx::query_scalar("SELECT value FROM plugin_kv WHERE namespace = ? AND key = ?")
            .bind(namespace)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    /// Store a plugin's value.
    pub async fn kv_set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), ClientError> {
        sqlx::query("INSERT INTO plugin_kv (namespace, key, value) VALUES (?, ?, ?) ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value")
            .bind(namespace)
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Remove a plugin's value.
    pub async fn kv_delete(&self, namespace: &str, key: &str) -> Result<(), ClientError> {
        sqlx::query("DELETE FROM plugin_kv WHERE namespace = ? AND key = ?").bind(namespace).bind(key).execute(&self.pool).await.map_err(db)?;
        Ok(())
    }

    /// A plugin's keys starting with `prefix`, sorted (at most 10,000).
    pub async fn kv_keys(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, ClientError> {
        sqlx::query_scalar("SELECT key FROM plugin_kv WHERE namespace = ? AND substr(key, 1, length(?)) = ? ORDER BY key LIMIT 10000")
            .bind(namespace)
            .bind(prefix)
            .bind(prefix)
            .fetch_all(&self.pool)
            .await
            .map_err(db)
    }

    /// Bytes of a plugin's keys and values.
    pub async fn kv_usage(&self, namespace: &str) -> Result<u64, ClientError> {
        let n: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(length(CAST(key AS BLOB)) + length(value)), 0) FROM plugin_kv WHERE namespace = ?")
            .bind(namespace)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(n.max(0) as u64)
    }
}
