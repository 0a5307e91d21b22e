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
    /// received, pending, sent, failed, undecodable, identity-changed, refused (a change its sender may not
    /// make; the body says why), event, warning.
    #[serde(skip)]
    pub status: String,
    /// The message this one replies to.
    #[serde(skip)]
    pub reply_to: Option<String>,
    /// For an edit, deletion or reaction: what it does to which message.
    #[serde(skip)]
    pub change: Option<MessageChange>,
    /// On a message an edit replaced: when the latest edit was made.
    #[serde(skip)]
    pub edited_at: Option<i64>,
    /// On a deleted message: its body is gone.
    #[serde(skip)]
    pub deleted: bool,
    /// Users mentioned.
    #[serde(skip)]
    pub mentions: Vec<String>,
}

/// What an edit, deletion or reaction does, and to which message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageChange {
    /// Edit, delete or react.
    pub action: ChangeAction,
    /// The message it changes.
    pub target: String,
    /// A deletion by a group admin of someone else's message: set only after checking the sender's role in the
    /// verified membership log.
    pub by_admin: bool,
}

/// The kinds of change one message makes to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeAction {
    /// New content, by the author.
    Edit,
    /// Deleted, by the author or a group admin.
    Delete,
    /// A reaction added or taken back (the body is the [`imfree_proto::content::Reaction`]).
    React,
}

impl ChangeAction {
    /// Its name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeAction::Edit => "edit",
            ChangeAction::Delete => "delete",
            ChangeAction::React => "react",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "edit" => Some(ChangeAction::Edit),
            "delete" => Some(ChangeAction::Delete),
            "react" => Some(ChangeAction::React),
            _ => None,
        }
    }
}

impl StoredMessage {
    /// A message with no reply, change, edit or mentions (fill those in after).
    #[allow(clippy::too_many_arguments)]
    pub fn new(id: String, outgoing: bool, from: String, from_device: String, to: String, ts: i64, mime: String, body: Vec<u8>, status: &str) -> Self {
        StoredMessage {
            seq: 0,
            id,
            outgoing,
            from,
            from_device,
            to,
            ts,
            mime,
            body,
            status: status.into(),
            reply_to: None,
            change: None,
            edited_at: None,
            deleted: false,
            mentions: Vec::new(),
        }
    }

    /// The conversation this message belongs to, for a user `me`: the other user, or the group.
    pub fn peer(&self, me: &str) -> &str {
        if self.from == me || self.to.starts_with(crate::groups::GROUP_PREFIX) { &self.to } else { &self.from }
    }
}

/// What the user chose to share, on this device. Both on by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Preferences {
    /// Send typing indicators, and show others'.
    pub typing: bool,
    /// Send read receipts, and show others'.
    pub read_receipts: bool,
}

/// One version of an edited message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageVersion {
    /// The envelope that carried it (the message's own id for the original).
    pub envelope_id: String,
    /// When it was sent.
    pub ts: i64,
    /// Its content type.
    pub mime: String,
    /// Its body.
    pub body: Vec<u8>,
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
    /// For an edit or deletion: the clear reference the relay checks.
    pub refers: Option<imfree_proto::MessageRef>,
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
        reply_to: r.get("reply_to"),
        change: r.get::<Option<String>, _>("ref_action").and_then(|a| ChangeAction::parse(&a)).zip(r.get::<Option<String>, _>("ref_id")).map(
            |(action, target)| MessageChange { action, target, by_admin: r.get::<i64, _>("by_admin") != 0 },
        ),
        edited_at: r.get("edited_at"),
        deleted: r.get::<i64, _>("deleted") != 0,
        mentions: r.get::<Option<String>, _>("mentions").and_then(|m| serde_json::from_str(&m).ok()).unwrap_or_default(),
    }
}

/// The store holds decrypted messages and their search index: readable and writable by the owner alone. SQLite
/// gives its -wal and -shm files the database file's mode; ones left by an older version are narrowed too.
fn owner_only(path: &Path) -> Result<(), ClientError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let denied = |p: &Path, e: std::io::Error| ClientError::Store(format!("cannot restrict {} to its owner: {e}", p.display()));
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path).map_err(|e| denied(path, e))?;
        for suffix in ["", "-wal", "-shm"] {
            let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(|e| denied(&file, e))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl LocalStore {
    /// Open (and migrate) the store at `path`.
    pub async fn open(path: &Path) -> Result<Self, ClientError> {
        owner_only(path)?;
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(db)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Stored-before-acked must survive a crash.
            .synchronous(SqliteSynchronous::Full)
            // INSERT OR REPLACE deletes the row it replaces; only with this do the DELETE triggers (the search
            // index's, migration 0006) see that deletion.
            .pragma("recursive_triggers", "ON")
            // A deleted message (or edit version, or spent key) is overwritten with zeros in the file, not left in a
            // free page for anyone who copies the file later.
            .pragma("secure_delete", "ON")
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

    /// The connection pool, for the store's other modules (search, files).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(crate) fn seal(&self, value: &[u8]) -> Vec<u8> {
        crate::vault::seal_opt(self.vault.as_ref(), value)
    }

    pub(crate) fn unseal(&self, value: Option<Vec<u8>>) -> Result<Option<Vec<u8>>, ClientError> {
        value.map(|v| crate::vault::open_opt(self.vault.as_ref(), v)).transpose()
    }

    /// Store incoming messages in one transaction; returns, for each, whether it was new (not a duplicate). An
    /// edit, deletion or reaction takes effect here too, if its sender may make it (see [`MessageChange`]).
    pub async fn insert_incoming(&self, messages: &[StoredMessage], me: &str) -> Result<Vec<bool>, ClientError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let mut fresh = Vec::with_capacity(messages.len());
        for m in messages {
            fresh.push(insert_message(&mut tx, m, m.peer(me), false).await?);
        }
        tx.commit().await.map_err(db)?;
        Ok(fresh)
    }

    /// Store an outgoing message and its outbox entry in one transaction (an edit, deletion or reaction of this
    /// user's takes effect locally at once).
    pub async fn insert_outgoing(&self, message: &StoredMessage, item: &OutboxItem) -> Result<(), ClientError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let mut pending = message.clone();
        pending.outgoing = true;
        pending.status = "pending".into();
        insert_message(&mut tx, &pending, &message.to, true).await?;
        self.insert_outbox(&mut tx, item).await?;
        tx.commit().await.map_err(db)
    }

    async fn insert_outbox(&self, tx: &mut sqlx::SqliteConnection, item: &OutboxItem) -> Result<(), ClientError> {
        sqlx::query("INSERT INTO outbox (id, kind, to_user, mime, payload, created_at, ref_action, ref_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(&item.id)
            .bind(&item.kind)
            .bind(&item.to)
            .bind(&item.mime)
            .bind(&item.payload)
            .bind(crate::now_ms())
            .bind(item.refers.map(|r| r.action.as_str()))
            .bind(item.refers.map(|r| r.id.to_string()))
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
        let rows = sqlx::query("SELECT id, kind, to_user, mime, payload, ref_action, ref_id FROM outbox ORDER BY seq")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| OutboxItem {
                id: r.get("id"),
                kind: r.get("kind"),
                to: r.get("to_user"),
                mime: r.get("mime"),
                payload: r.get("payload"),
                refers: message_ref(r.get("ref_action"), r.get("ref_id")),
            })
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

    /// The user's preferences.
    pub async fn preferences(&self) -> Result<Preferences, ClientError> {
        let rows = sqlx::query("SELECT name, value FROM preferences").fetch_all(&self.pool).await.map_err(db)?;
        let on = |name: &str| rows.iter().find(|r| r.get::<String, _>("name") == name).is_none_or(|r| r.get::<String, _>("value") != "off");
        Ok(Preferences { typing: on("typing"), read_receipts: on("read_receipts") })
    }

    /// Turn a preference (`typing`, `read_receipts`) on or off.
    pub async fn set_preference(&self, name: &str, on: bool) -> Result<(), ClientError> {
        if !matches!(name, "typing" | "read_receipts") {
            return Err(ClientError::Config(format!("no preference {name:?}: typing, read_receipts")));
        }
        sqlx::query("INSERT INTO preferences (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value")
            .bind(name)
            .bind(if on { "on" } else { "off" })
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Every version of a message, oldest (the original) first; empty when it was never edited.
    pub async fn versions(&self, message_id: &str) -> Result<Vec<MessageVersion>, ClientError> {
        let rows = sqlx::query("SELECT envelope_id, ts, mime, body FROM message_versions WHERE message_id = ? ORDER BY ts, envelope_id")
            .bind(message_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(rows.iter().map(|r| MessageVersion { envelope_id: r.get("envelope_id"), ts: r.get("ts"), mime: r.get("mime"), body: r.get("body") }).collect())
    }

    /// The reactions on a message, aggregated: each emoji with who reacted, in order of first use.
    pub async fn reactions(&self, message_id: &str) -> Result<Vec<(String, Vec<String>)>, ClientError> {
        // Only reactions that came in the message's own conversation count.
        let rows = sqlx::query(
            "SELECT r.emoji, r.user FROM reactions r JOIN messages m ON m.id = r.message_id AND m.peer = r.peer \
             WHERE r.message_id = ? AND r.removed = 0 ORDER BY r.ts, r.user",
        )
        .bind(message_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in &rows {
            let (emoji, user): (String, String) = (r.get("emoji"), r.get("user"));
            match out.iter_mut().find(|(e, _)| *e == emoji) {
                Some((_, users)) => users.push(user),
                None => out.push((emoji, vec![user])),
            }
        }
        Ok(out)
    }

    /// The messages of a conversation as they stand (edits applied, deletions as tombstones), without the change
    /// rows themselves; oldest first.
    pub async fn history(&self, peer: &str, limit: i64) -> Result<Vec<StoredMessage>, ClientError> {
        let rows = sqlx::query(
            "SELECT * FROM (SELECT * FROM messages WHERE peer = ? AND ref_action IS NULL ORDER BY seq DESC LIMIT ?) ORDER BY seq",
        )
        .bind(peer)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.iter().map(row_to_message).collect())
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

    /// Receipts for a message: (from, kind) — read receipts only while this user shares them.
    pub async fn receipts_of(&self, message_id: &str) -> Result<Vec<(String, String)>, ClientError> {
        let rows = sqlx::query("SELECT from_user, kind FROM receipts WHERE message_id = ? ORDER BY ts")
            .bind(message_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        // Whoever does not send read receipts does not see others' either.
        let reads = self.preferences().await?.read_receipts;
        Ok(rows.iter().map(|r| (r.get::<String, _>("from_user"), r.get::<String, _>("kind"))).filter(|(_, k)| reads || k != "read").collect())
    }

    /// Close the pool (flushes the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The client core's key store on SQLite: every value sealed under the home's vault key when it has one, sessions
/// and state written in one transaction.
impl imfree_client_core::store::KeyStore for LocalStore {
    async fn state(&self, name: &str) -> Result<Option<Vec<u8>>, ClientError> {
        self.e2e_state(name).await
    }

    async fn session(&self, user: &str, device: &str) -> Result<Option<Vec<u8>>, ClientError> {
        self.e2e_session(user, device).await
    }

    async fn save(&self, sessions: &[(String, String, Vec<u8>)], state: &[(&str, Vec<u8>)]) -> Result<(), ClientError> {
        self.put_e2e_sessions(sessions, state).await
    }

    async fn pinned_identity(&self, user: &str) -> Result<Option<[u8; 32]>, ClientError> {
        match LocalStore::pinned_identity(self, user).await? {
            None => Ok(None),
            Some((key, _)) => key.try_into().map(Some).map_err(|_| ClientError::Store(format!("the identity key pinned for {user} is not 32 bytes"))),
        }
    }

    async fn pin_identity(&self, user: &str, key: &[u8; 32]) -> Result<(), ClientError> {
        LocalStore::pin_identity(self, user, key).await
    }

    async fn note_identity_change(&self, user: &str, key: &[u8; 32]) -> Result<(), ClientError> {
        LocalStore::note_identity_change(self, user, key).await
    }

    async fn revocation_list(&self, user: &str) -> Result<Option<Vec<u8>>, ClientError> {
        LocalStore::revocation_list(self, user).await
    }

    async fn put_revocation_list(&self, user: &str, list: &[u8]) -> Result<(), ClientError> {
        LocalStore::put_revocation_list(self, user, list).await
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
        self.e2e_state(&imfree_client_core::store::revocation_record(user)).await
    }

    /// Keep a newer verified revocation list for `user`.
    pub async fn put_revocation_list(&self, user: &str, list: &[u8]) -> Result<(), ClientError> {
        self.put_e2e_state(&[(&imfree_client_core::store::revocation_record(user), list.to_vec())]).await
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

/// A stored group: the client core's record (see [`imfree_client_core::groups`]), one row of `e2e_groups` with the
/// sender-key session sealed under the key-store key.
pub use imfree_client_core::groups::GroupRecord as GroupRow;

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
    /// The clear reference the delivery came with (an edit or deletion).
    pub refers: Option<imfree_proto::MessageRef>,
}

/// The groups of the client core, in `e2e_groups`.
impl imfree_client_core::groups::GroupStore for LocalStore {
    async fn group(&self, id: &str) -> Result<Option<GroupRow>, ClientError> {
        LocalStore::group(self, id).await
    }

    async fn put_group(&self, record: &GroupRow) -> Result<(), ClientError> {
        LocalStore::put_group(self, record).await
    }
}

impl LocalStore {
    /// A group, if this device knows it.
    pub async fn group(&self, id: &str) -> Result<Option<GroupRow>, ClientError> {
        let row = sqlx::query("SELECT group_id, name, state, session, distributed, status, info FROM e2e_groups WHERE group_id = ?")
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
            info: r.get("info"),
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
            "INSERT INTO e2e_groups (group_id, name, state, session, distributed, status, updated_at, info) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (group_id) DO UPDATE SET name = excluded.name, state = excluded.state, session = excluded.session,
             distributed = excluded.distributed, status = excluded.status, updated_at = excluded.updated_at, info = excluded.info",
        )
        .bind(&g.id)
        .bind(&g.name)
        .bind(&g.state)
        .bind(g.session.as_deref().map(|s| self.seal(s)))
        .bind(&g.distributed)
        .bind(&g.status)
        .bind(crate::now_ms())
        .bind(&g.info)
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
                "INSERT INTO group_inbox (envelope_id, kind, group_id, from_user, from_device, ts, body, sender_identity, sender_device,
                 ref_action, ref_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (envelope_id) DO NOTHING",
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
            .bind(i.refers.map(|r| r.action.as_str()))
            .bind(i.refers.map(|r| r.id.to_string()))
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
                    refers: message_ref(r.get("ref_action"), r.get("ref_id")),
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

/// A clear reference from its two stored columns.
fn message_ref(action: Option<String>, id: Option<String>) -> Option<imfree_proto::MessageRef> {
    Some(imfree_proto::MessageRef { action: imfree_proto::RefAction::parse(&action?)?, id: id?.parse().ok()? })
}

/// Insert one message (a duplicate id changes nothing) and apply what it changes; returns whether it was new.
async fn insert_message(tx: &mut sqlx::SqliteConnection, m: &StoredMessage, peer: &str, shown: bool) -> Result<bool, ClientError> {
    let mentions = (!m.mentions.is_empty()).then(|| serde_json::to_string(&m.mentions).unwrap_or_default());
    let done = sqlx::query(
        "INSERT INTO messages (id, outgoing, peer, from_user, from_device, to_user, ts, mime, body, status, shown, reply_to,
         ref_action, ref_id, by_admin, mentions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING",
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
    .bind(shown as i64)
    .bind(&m.reply_to)
    .bind(m.change.as_ref().map(|c| c.action.as_str()))
    .bind(m.change.as_ref().map(|c| c.target.as_str()))
    .bind(m.change.as_ref().is_some_and(|c| c.by_admin) as i64)
    .bind(mentions)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    if m.change.is_some() {
        apply_change(tx, m, peer).await?;
    } else {
        // Edits and deletions of this message that arrived before it take effect now, in the order they were sent.
        let rows = sqlx::query("SELECT * FROM messages WHERE ref_id = ? AND ref_action IN ('edit', 'delete') AND status != 'refused' ORDER BY ts, seq")
            .bind(&m.id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        for change in rows.iter().map(row_to_message) {
            let peer = peer_of_row(tx, &change.id).await?;
            apply_change(tx, &change, &peer).await?;
        }
    }
    Ok(true)
}

async fn peer_of_row(tx: &mut sqlx::SqliteConnection, id: &str) -> Result<String, ClientError> {
    sqlx::query_scalar("SELECT peer FROM messages WHERE id = ?").bind(id).fetch_one(&mut *tx).await.map_err(db)
}

/// The rules of who may change what, checked on every device (the relay checks them too, but is not trusted).
fn may_change(change: &StoredMessage, target_from: &str, target_peer: &str, target_is_change: bool, peer: &str) -> Result<(), &'static str> {
    let Some(c) = &change.change else { return Ok(()) };
    if target_peer != peer {
        return Err("it names a message of another conversation");
    }
    if target_is_change {
        return Err("it names an edit, deletion or reaction, not a message");
    }
    match c.action {
        ChangeAction::Edit if target_from != change.from => Err("only its author may edit a message"),
        ChangeAction::Delete if target_from != change.from && !(c.by_admin && peer.starts_with(crate::groups::GROUP_PREFIX)) => {
            Err("only its author, or a group admin, may delete a message")
        }
        _ => Ok(()),
    }
}

/// Apply a change row to the message it names. A change whose message is not here yet waits (see
/// [`insert_message`]); one its sender may not make is marked `refused`, with the reason as its body.
async fn apply_change(tx: &mut sqlx::SqliteConnection, m: &StoredMessage, peer: &str) -> Result<(), ClientError> {
    let Some(change) = &m.change else { return Ok(()) };
    let target = sqlx::query("SELECT from_user, peer, ref_action, deleted, ts, mime, body FROM messages WHERE id = ?")
        .bind(&change.target)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
    if change.action == ChangeAction::React {
        if let Some(t) = &target
            && let Err(reason) = may_change(m, t.get("from_user"), t.get("peer"), t.get::<Option<String>, _>("ref_action").is_some(), peer)
        {
            return refuse(tx, m, reason).await;
        }
        let Ok(reaction) = imfree_proto::content::Reaction::decode(&m.body) else {
            return refuse(tx, m, "the reaction cannot be read").await;
        };
        sqlx::query(
            "INSERT INTO reactions (message_id, user, emoji, peer, ts, removed) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (message_id, user, emoji) DO UPDATE SET removed = excluded.removed, ts = excluded.ts, peer = excluded.peer
             WHERE excluded.ts >= reactions.ts",
        )
        .bind(&change.target)
        .bind(&m.from)
        .bind(&reaction.emoji)
        .bind(peer)
        .bind(m.ts)
        .bind(reaction.remove as i64)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        return Ok(());
    }
    let Some(t) = target else { return Ok(()) };
    if let Err(reason) = may_change(m, t.get("from_user"), t.get("peer"), t.get::<Option<String>, _>("ref_action").is_some(), peer) {
        return refuse(tx, m, reason).await;
    }
    if t.get::<i64, _>("deleted") != 0 {
        return Ok(()); // deleted stays deleted
    }
    match change.action {
        ChangeAction::Edit => {
            // The original is the first version; then each edit; the newest (by send time) is what is shown.
            sqlx::query("INSERT INTO message_versions (message_id, envelope_id, ts, mime, body) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
                .bind(&change.target)
                .bind(&change.target)
                .bind(t.get::<i64, _>("ts"))
                .bind(t.get::<String, _>("mime"))
                .bind(t.get::<Vec<u8>, _>("body"))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            sqlx::query("INSERT INTO message_versions (message_id, envelope_id, ts, mime, body) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
                .bind(&change.target)
                .bind(&m.id)
                .bind(m.ts)
                .bind(&m.mime)
                .bind(&m.body)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            sqlx::query(
                "UPDATE messages SET (mime, body, edited_at) = (SELECT mime, body, ts FROM message_versions v
                 WHERE v.message_id = messages.id AND v.envelope_id != v.message_id ORDER BY ts DESC, envelope_id DESC LIMIT 1)
                 WHERE id = ?",
            )
            .bind(&change.target)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        ChangeAction::Delete => {
            // Nothing of a deleted message stays: not its body, its versions, nor the text its edits carried.
            sqlx::query("UPDATE messages SET body = x'', deleted = 1 WHERE id = ?").bind(&change.target).execute(&mut *tx).await.map_err(db)?;
            sqlx::query("DELETE FROM message_versions WHERE message_id = ?").bind(&change.target).execute(&mut *tx).await.map_err(db)?;
            sqlx::query("UPDATE messages SET body = x'' WHERE ref_id = ? AND ref_action = 'edit'")
                .bind(&change.target)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        ChangeAction::React => {}
    }
    Ok(())
}

/// Mark a change its sender may not make: it does nothing, and shows why.
async fn refuse(tx: &mut sqlx::SqliteConnection, m: &StoredMessage, reason: &str) -> Result<(), ClientError> {
    tracing::warn!(id = %m.id, from = %m.from, reason, "refused a change of a message");
    sqlx::query("UPDATE messages SET status = 'refused', mime = 'text/plain', body = ? WHERE id = ?")
        .bind(reason.as_bytes())
        .bind(&m.id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    Ok(())
}
