//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! SQLite admits one writer at a time, so every write goes through a pool of exactly one connection: writes queue in
//! this process instead of failing with `SQLITE_BUSY`, and a batch is one `BEGIN IMMEDIATE` transaction (one fsync).
//! Reads use a separate small pool and, thanks to WAL, run beside the writer. Another process (`imfree admin`) may
//! open the same file at the same time; `busy_timeout` makes the two wait for each other instead of failing.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqliteConnection, Transaction};

use crate::common::{EnqueuePlan, MultiRowSql, chunk_sizes, conflict_or, queue_payload, stored_payload};
use crate::rows::{
    AuditRow, DeviceRow, PresenceRow, QueueStatsRow, QueuedRow, SessionRow, UserRow, UserSummaryRow, envelope_ref, user_columns,
};
use crate::common::kind;
use crate::{
    AuditEvent, AuditFilter, AuditRecord, EnvelopeRecord, ClaimedBundle, DeviceKeysUpload, DeviceRecord, EnqueueOutcome, NewDevice, NewEnvelope, NewUser, PresenceRecord, QueueStats, QueuedEnvelope,
    RelayStore, Result, SessionRecord, StoreError, UnixMs, UserId, UserRecord, UserSummary,
};

/// How long a connection waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// WAL pages (4 KiB each) between automatic checkpoints.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// Bytes the WAL file is truncated to after a checkpoint.
const JOURNAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

/// Page cache of the writer connection, in KiB (SQLite's default is 2,000). A group commit of `commit_batch`
/// envelopes dirties several MiB of table and index pages; with the default cache SQLite spilled dirty pages to the
/// WAL in the middle of the transaction (`pagerStress`: the same page written more than once per commit) and read
/// evicted index pages back with `pread`, about a tenth of the relay's CPU under load (docs/performance.md). Pages
/// are allocated as they are used, so a quiet relay does not reach it.
const WRITER_CACHE_KIB: u32 = 32 * 1024;

/// Concurrent readers. Small: reads are short, and the machine the relay targets has few cores.
const READERS: u32 = 4;

// Multi-row statements use anonymous `?` parameters, never `?NNN`: sqlx asks SQLite for each numbered parameter's
// name, a linear scan, which made binding 2048 numbered parameters quadratic (40 % of enqueue time).

/// Room for every multi-row statement shape (9 sizes × 5 statements) plus the single-row ones.
const STATEMENT_CACHE: usize = 256;

static INSERT_ENVELOPES: LazyLock<MultiRowSql> = LazyLock::new(|| {
    MultiRowSql::new(
        "INSERT INTO envelopes (id, kind, sender, sender_device, recipient, mime, payload, created_at, ref_action, ref_id) \
         VALUES ",
        // No ON CONFLICT: enqueue has filtered known ids under the write lock, so a conflict here is a bug to surface.
        "",
        |_| "(?,?,?,?,?,?,?,?,?,?)".to_owned(),
        10,
    )
});

static EXISTING_ENVELOPES: LazyLock<MultiRowSql> = LazyLock::new(|| {
    MultiRowSql::new("SELECT id, created_at FROM envelopes WHERE id IN (", ")", |_| "?".to_owned(), 1)
});

// Duplicate device ids in one envelope's recipient list are ignored rather than failing the whole group commit.
static INSERT_QUEUE: LazyLock<MultiRowSql> = LazyLock::new(|| {
    MultiRowSql::new(
        "INSERT INTO queue (device_id, envelope_id, payload) VALUES ",
        " ON CONFLICT DO NOTHING",
        |_| "(?,?,?)".to_owned(),
        3,
    )
});

static DELETE_ACKED: LazyLock<MultiRowSql> = LazyLock::new(|| {
    MultiRowSql::new(
        "WITH acked (d, e) AS (VALUES ",
        ") DELETE FROM queue WHERE seq IN (SELECT q.seq FROM acked JOIN queue q ON q.envelope_id = acked.e \
         AND q.device_id = acked.d)",
        |_| "(?,?)".to_owned(),
        2,
    )
});

static CLEAR_PAYLOADS: LazyLock<MultiRowSql> = LazyLock::new(|| {
    MultiRowSql::new(
        "UPDATE envelopes SET payload = X'' WHERE id IN (",
        ") AND length(payload) > 0 AND NOT EXISTS (SELECT 1 FROM queue WHERE queue.envelope_id = envelopes.id)",
        |_| "?".to_owned(),
        1,
    )
});

/// The SQLite implementation of [`RelayStore`]. Cloning shares the pools.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// Exactly one connection: the only writer of this process.
    pub(crate) writer: SqlitePool,
    /// Read-only work.
    pub(crate) reader: SqlitePool,
}

impl SqliteStore {
    /// Open (creating the file and its directory if missing) the database at `path` and bring its schema up to date.
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| StoreError::Config(format!("cannot create directory {}: {e}", dir.display())))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged enqueue or ack must survive power loss, not only a process crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .statement_cache_capacity(STATEMENT_CACHE)
            // Checkpoint every ~40 MB of WAL instead of ~4 MB: the writer runs each checkpoint inside a commit, and
            // queue and index pages rewritten by many batches are copied back once instead of many times.
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
            // …and give the space back after a burst, so the WAL file does not stay at its high-water mark.
            .pragma("journal_size_limit", JOURNAL_SIZE_LIMIT.to_string());

        // Statement journals (a multi-row INSERT may have to undo itself) in memory rather than in a temporary file.
        let writer_options =
            options.clone().pragma("cache_size", format!("-{WRITER_CACHE_KIB}")).pragma("temp_store", "MEMORY");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // Never recycle the writer for idleness: it holds the warm statement cache.
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(writer_options)
            .await
            .map_err(|e| open_error(path, e))?;
        sqlx::migrate!("migrations/sqlite").run(&writer).await?;

        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options.create_if_missing(false))
            .await
            .map_err(|e| open_error(path, e))?;
        tracing::debug!(path = %path.display(), "sqlite store open");
        Ok(SqliteStore { writer, reader })
    }

    /// Open a write transaction. IMMEDIATE takes the write lock up front, so that another process holding it makes
    /// us wait (busy_timeout) rather than fail half-way when a read lock would have to be upgraded.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Close both pools, waiting for connections in use to be returned. Dropping the store also closes them, but
    /// without waiting.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// Connecting can only fail on the file itself (permissions, not a database); say which file.
fn open_error(path: &Path, err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::Database(_) | sqlx::Error::Io(_) => {
            StoreError::Config(format!("cannot open database {}: {err}", path.display()))
        }
        other => StoreError::Database(other),
    }
}

#[async_trait::async_trait]
impl RelayStore for SqliteStore {
    async fn create_user(&self, user: &NewUser) -> Result<UserId> {
        sqlx::query_scalar("INSERT INTO users (name, password_hash, created_at) VALUES (?1, ?2, ?3) RETURNING id")
            .bind(&user.name)
            .bind(&user.password_hash)
            .bind(user.created_at)
            .fetch_one(&self.writer)
            .await
            .map_err(|e| conflict_or(e, &format!("user name {:?}", user.name)))
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>> {
        let row: Option<UserRow> = sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE name = ?1"))
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(Into::into))
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>> {
        let row: Option<UserRow> = sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE id = ?1"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(Into::into))
    }

    async fn list_users(&self) -> Result<Vec<UserSummary>> {
        let rows: Vec<UserSummaryRow> = sqlx::query_as(
            "SELECT u.name, u.disabled, u.totp_secret IS NOT NULL AS totp, \
             (SELECT COUNT(*) FROM devices d WHERE d.user_id = u.id) AS devices, u.created_at \
             FROM users u ORDER BY u.name",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool> {
        let done = sqlx::query("UPDATE users SET disabled = ?2 WHERE name = ?1")
            .bind(name)
            .bind(disabled)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_totp_pending(&self, user: UserId, secret: Option<&[u8]>) -> Result<()> {
        sqlx::query("UPDATE users SET totp_pending = ?2 WHERE id = ?1")
            .bind(user)
            .bind(secret)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn set_totp_secret(&self, user: UserId, secret: Option<&[u8]>, step: Option<i64>) -> Result<()> {
        // The used step only ever moves forward, so that replacing the secret cannot re-open an already used code.
        sqlx::query(
            "UPDATE users SET totp_secret = ?2, totp_pending = NULL, totp_last_step = CASE \
             WHEN ?3 IS NOT NULL AND (totp_last_step IS NULL OR totp_last_step < ?3) THEN ?3 \
             ELSE totp_last_step END WHERE id = ?1",
        )
        .bind(user)
        .bind(secret)
        .bind(step)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn use_totp_step(&self, user: UserId, step: i64) -> Result<bool> {
        // One conditional UPDATE: the check and the write cannot be separated by another relay's use of the code.
        let done = sqlx::query(
            "UPDATE users SET totp_last_step = ?2 WHERE id = ?1 AND (totp_last_step IS NULL OR totp_last_step < ?2)",
        )
        .bind(user)
        .bind(step)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_login_failure(&self, user: UserId, locked_until: Option<UnixMs>) -> Result<i64> {
        let count: Option<i64> = sqlx::query_scalar(
            "UPDATE users SET failed_logins = failed_logins + 1, locked_until = COALESCE(?2, locked_until) \
             WHERE id = ?1 RETURNING failed_logins",
        )
        .bind(user)
        .bind(locked_until)
        .fetch_optional(&self.writer)
        .await?;
        // An unknown user has no failures to count.
        Ok(count.unwrap_or(0))
    }

    async fn reset_login_failures(&self, user: UserId) -> Result<()> {
        sqlx::query("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = ?1")
            .bind(user)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn add_device(&self, device: &NewDevice) -> Result<()> {
        sqlx::query(
            "INSERT INTO devices (id, user_id, signing_key, static_key, name, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(&device.id)
        .bind(device.user_id)
        .bind(&device.signing_key[..])
        .bind(&device.static_key[..])
        .bind(&device.name)
        .bind(device.created_at)
        .execute(&self.writer)
        .await
        .map_err(|e| conflict_or(e, &format!("device {:?} or its static key", device.id)))?;
        Ok(())
    }

    async fn device_by_static_key(&self, key: &[u8; 32]) -> Result<Option<DeviceRecord>> {
        let row: Option<DeviceRow> = sqlx::query_as(
            "SELECT d.id, d.user_id, u.name AS user_name, d.signing_key, d.static_key, d.name, d.created_at, d.revoked_at \
             FROM devices d JOIN users u ON u.id = d.user_id WHERE d.static_key = ?1",
        )
        .bind(&key[..])
        .fetch_optional(&self.reader)
        .await?;
        row.map(TryInto::try_into).transpose()
    }

    async fn device_by_id(&self, id: &str) -> Result<Option<DeviceRecord>> {
        let row: Option<DeviceRow> = sqlx::query_as(
            "SELECT d.id, d.user_id, u.name AS user_name, d.signing_key, d.static_key, d.name, d.created_at, d.revoked_at \
             FROM devices d JOIN users u ON u.id = d.user_id WHERE d.id = ?1",
        )
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        row.map(TryInto::try_into).transpose()
    }

    async fn devices_of(&self, user: UserId) -> Result<Vec<DeviceRecord>> {
        let rows: Vec<DeviceRow> = sqlx::query_as(
            "SELECT d.id, d.user_id, u.name AS user_name, d.signing_key, d.static_key, d.name, d.created_at, d.revoked_at \
             FROM devices d JOIN users u ON u.id = d.user_id WHERE d.user_id = ?1 ORDER BY d.created_at, d.id",
        )
        .bind(user)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn create_session(&self, token_hash: &[u8; 32], session: &SessionRecord, created_at: UnixMs) -> Result<()> {
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, device_id, expires_at, revoked_at, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(&token_hash[..])
        .bind(session.user_id)
        .bind(&session.device_id)
        .bind(session.expires_at)
        .bind(session.revoked_at)
        .bind(created_at)
        .execute(&self.writer)
        .await
        .map_err(|e| conflict_or(e, "session token"))?;
        Ok(())
    }

    async fn session(&self, token_hash: &[u8; 32]) -> Result<Option<SessionRecord>> {
        let row: Option<SessionRow> =
            sqlx::query_as("SELECT user_id, device_id, expires_at, revoked_at FROM sessions WHERE token_hash = ?1")
                .bind(&token_hash[..])
                .fetch_optional(&self.reader)
                .await?;
        Ok(row.map(Into::into))
    }

    async fn revoke_session(&self, token_hash: &[u8; 32], at: UnixMs) -> Result<bool> {
        // A second revocation keeps the first time.
        let done = sqlx::query("UPDATE sessions SET revoked_at = COALESCE(revoked_at, ?2) WHERE token_hash = ?1")
            .bind(&token_hash[..])
            .bind(at)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn revoke_user_sessions(&self, user: UserId, at: UnixMs) -> Result<u64> {
        let done = sqlx::query("UPDATE sessions SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL")
            .bind(user)
            .bind(at)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    async fn enqueue(&self, batch: &[NewEnvelope]) -> Result<Vec<EnqueueOutcome>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let outcomes = enqueue_in(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn enqueue_and_ack(
        &self,
        batch: &[NewEnvelope],
        acks: &[(String, String)],
    ) -> Result<(Vec<EnqueueOutcome>, u64)> {
        if batch.is_empty() && acks.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let mut tx = self.begin_write().await?;
        let outcomes = if batch.is_empty() { Vec::new() } else { enqueue_in(&mut tx, batch).await? };
        let removed = if acks.is_empty() { 0 } else { ack_in(&mut tx, acks).await? };
        tx.commit().await?;
        Ok((outcomes, removed))
    }

    async fn fetch_queue(&self, device: &str, after: i64, limit: i64) -> Result<Vec<QueuedEnvelope>> {
        let rows: Vec<QueuedRow> = sqlx::query_as(
            "SELECT q.seq, e.id, e.kind, e.sender, e.sender_device, e.recipient, e.mime, \
             COALESCE(q.payload, e.payload) AS payload, e.created_at, e.ref_action, e.ref_id \
             FROM queue q JOIN envelopes e ON e.id = q.envelope_id \
             WHERE q.device_id = ?1 AND q.seq > ?2 ORDER BY q.seq LIMIT ?3",
        )
        .bind(device)
        .bind(after)
        // SQLite reads a negative limit as "no limit"; the caller meant none.
        .bind(limit.max(0))
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn ack(&self, acks: &[(String, String)]) -> Result<u64> {
        if acks.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let removed = ack_in(&mut tx, acks).await?;
        tx.commit().await?;
        Ok(removed)
    }

    async fn queue_len(&self, device: &str) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM queue WHERE device_id = ?1")
            .bind(device)
            .fetch_one(&self.reader)
            .await?)
    }

    async fn queue_stats(&self) -> Result<Vec<QueueStats>> {
        // LEFT JOIN: a queue for a device id that is not registered is still shown (with an empty user name), since
        // it is exactly what an operator looking at queues wants to see.
        let rows: Vec<QueueStatsRow> = sqlx::query_as(
            "SELECT COALESCE(u.name, '') AS user_name, q.device_id, COUNT(*) AS pending, \
             MIN(e.created_at) AS oldest \
             FROM queue q JOIN envelopes e ON e.id = q.envelope_id \
             LEFT JOIN devices d ON d.id = q.device_id LEFT JOIN users u ON u.id = d.user_id \
             GROUP BY u.name, q.device_id ORDER BY user_name, q.device_id",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn prune_envelopes(&self, before: UnixMs) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM envelopes WHERE created_at < ?1 \
             AND NOT EXISTS (SELECT 1 FROM queue WHERE queue.envelope_id = envelopes.id)",
        )
        .bind(before)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    async fn add_contact(&self, a: UserId, b: UserId) -> Result<()> {
        sqlx::query("INSERT INTO contacts (a, b) VALUES (?1, ?2) ON CONFLICT DO NOTHING")
            .bind(a.min(b))
            .bind(a.max(b))
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn contacts_of(&self, user: UserId) -> Result<Vec<UserId>> {
        Ok(sqlx::query_scalar(
            "SELECT b AS c FROM contacts WHERE a = ?1 UNION SELECT a AS c FROM contacts WHERE b = ?1 ORDER BY c",
        )
        .bind(user)
        .fetch_all(&self.reader)
        .await?)
    }

    async fn are_contacts(&self, a: UserId, b: UserId) -> Result<bool> {
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM contacts WHERE a = ?1 AND b = ?2)")
            .bind(a.min(b))
            .bind(a.max(b))
            .fetch_one(&self.reader)
            .await?)
    }

    async fn set_presence(&self, user: UserId, status: Option<&str>, last_seen: Option<UnixMs>) -> Result<()> {
        // Inserting from `users` makes an unknown user a no-op instead of a foreign-key error.
        sqlx::query(
            "INSERT INTO presence (user_id, status, last_seen) SELECT id, ?2, ?3 FROM users WHERE id = ?1 \
             ON CONFLICT (user_id) DO UPDATE SET status = COALESCE(excluded.status, presence.status), \
             last_seen = COALESCE(excluded.last_seen, presence.last_seen)",
        )
        .bind(user)
        .bind(status)
        .bind(last_seen)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn presence_of(&self, user: UserId) -> Result<Option<PresenceRecord>> {
        let row: Option<PresenceRow> = sqlx::query_as(
            "SELECT u.name, p.status, p.last_seen FROM users u LEFT JOIN presence p ON p.user_id = u.id \
             WHERE u.id = ?1",
        )
        .bind(user)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(Into::into))
    }

    async fn user_identity(&self, user: UserId) -> Result<Option<[u8; 32]>> {
        let key: Option<Vec<u8>> = sqlx::query_scalar("SELECT identity_key FROM identities WHERE user_id = ?1")
            .bind(user)
            .fetch_optional(&self.reader)
            .await?;
        Ok(key.and_then(|k| k.try_into().ok()))
    }

    async fn set_user_identity(&self, user: UserId, key: &[u8; 32], at: UnixMs) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO identities (user_id, identity_key, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")
            .bind(user)
            .bind(&key[..])
            .bind(at)
            .execute(&mut *tx)
            .await?;
        let stored: Vec<u8> = sqlx::query_scalar("SELECT identity_key FROM identities WHERE user_id = ?1")
            .bind(user)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(stored == key)
    }

    async fn put_device_keys(&self, device: &str, keys: &DeviceKeysUpload) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO device_keys (device_id, user_id, certificate, signed_prekey, kem_last_resort, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (device_id) DO UPDATE SET certificate = excluded.certificate, \
             signed_prekey = COALESCE(excluded.signed_prekey, device_keys.signed_prekey), \
             kem_last_resort = COALESCE(excluded.kem_last_resort, device_keys.kem_last_resort), \
             updated_at = excluded.updated_at",
        )
        .bind(device)
        .bind(keys.user_id)
        .bind(&keys.certificate)
        .bind(keys.signed_prekey.as_deref())
        .bind(keys.kem_last_resort.as_deref())
        .bind(keys.at)
        .execute(&mut *tx)
        .await?;
        for (kind, list) in [(0i64, &keys.one_time), (1i64, &keys.kem_one_time)] {
            for (id, body) in list {
                sqlx::query(
                    "INSERT INTO one_time_prekeys (device_id, kind, key_id, body) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(device)
                .bind(kind)
                .bind(*id)
                .bind(body)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn device_certificates(&self, user: UserId) -> Result<Vec<(String, Vec<u8>)>> {
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT k.device_id, k.certificate FROM device_keys k JOIN devices d ON d.id = k.device_id \
             WHERE k.user_id = ?1 AND d.revoked_at IS NULL ORDER BY d.created_at, k.device_id",
        )
        .bind(user)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows)
    }

    async fn claim_bundles(&self, devices: &[String]) -> Result<Vec<ClaimedBundle>> {
        let mut tx = self.begin_write().await?;
        let mut out = Vec::with_capacity(devices.len());
        for device in devices {
            let row: Option<(Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>)> = sqlx::query_as(
                "SELECT certificate, signed_prekey, kem_last_resort FROM device_keys WHERE device_id = ?1",
            )
            .bind(device)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((certificate, Some(signed_prekey), last_resort)) = row else { continue };
            let mut take = async |kind: i64| -> Result<Option<Vec<u8>>> {
                let body: Option<(i64, Vec<u8>)> = sqlx::query_as(
                    "SELECT key_id, body FROM one_time_prekeys WHERE device_id = ?1 AND kind = ?2 ORDER BY key_id LIMIT 1",
                )
                .bind(device)
                .bind(kind)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some((id, _)) = &body {
                    sqlx::query("DELETE FROM one_time_prekeys WHERE device_id = ?1 AND kind = ?2 AND key_id = ?3")
                        .bind(device)
                        .bind(kind)
                        .bind(*id)
                        .execute(&mut *tx)
                        .await?;
                }
                Ok(body.map(|(_, b)| b))
            };
            let one_time = take(0).await?;
            let Some(kem) = take(1).await?.or(last_resort) else { continue };
            out.push(ClaimedBundle { device: device.clone(), certificate, signed_prekey, one_time, kem });
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn prekey_counts(&self, device: &str) -> Result<(i64, i64)> {
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT kind, COUNT(*) FROM one_time_prekeys WHERE device_id = ?1 GROUP BY kind")
                .bind(device)
                .fetch_all(&self.reader)
                .await?;
        let count = |k: i64| rows.iter().find(|(kind, _)| *kind == k).map_or(0, |(_, n)| *n);
        Ok((count(0), count(1)))
    }

    async fn revocation_list(&self, user: UserId) -> Result<Option<(i64, Vec<u8>)>> {
        let row: Option<(i64, Vec<u8>)> = sqlx::query_as("SELECT version, list FROM revocation_lists WHERE user_id = ?1")
            .bind(user)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row)
    }

    async fn revoke_devices(&self, user: UserId, version: i64, list: &[u8], devices: &[String], at: UnixMs) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let stored: Option<i64> = sqlx::query_scalar("SELECT version FROM revocation_lists WHERE user_id = ?1")
            .bind(user)
            .fetch_optional(&mut *tx)
            .await?;
        if stored.is_some_and(|v| v >= version) {
            return Ok(false);
        }
        let stored_now = sqlx::query(
            "INSERT INTO revocation_lists (user_id, version, list, updated_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (user_id) DO UPDATE SET version = excluded.version, list = excluded.list, updated_at = excluded.updated_at \
             WHERE revocation_lists.version < excluded.version",
        )
        .bind(user)
        .bind(version)
        .bind(list)
        .bind(at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if stored_now == 0 {
            // Another revocation of the same or a newer version won the race.
            return Ok(false);
        }
        for device in devices {
            let owned = sqlx::query("UPDATE devices SET revoked_at = COALESCE(revoked_at, ?1) WHERE id = ?2 AND user_id = ?3")
                .bind(at)
                .bind(device)
                .bind(user)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if owned == 0 {
                continue;
            }
            sqlx::query("UPDATE sessions SET revoked_at = ?1 WHERE device_id = ?2 AND revoked_at IS NULL")
                .bind(at)
                .bind(device)
                .execute(&mut *tx)
                .await?;
            for delete in [
                "DELETE FROM device_keys WHERE device_id = ?1",
                "DELETE FROM one_time_prekeys WHERE device_id = ?1",
                "DELETE FROM queue WHERE device_id = ?1",
            ] {
                sqlx::query(delete).bind(device).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn append_group_entry(&self, group: &str, seq: i64, entry: &[u8], members: &[UserId], at: UnixMs, audit: &[AuditEvent]) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO group_log (group_id, seq, entry, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        )
        .bind(group)
        .bind(seq)
        .bind(entry)
        .bind(at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        sqlx::query("UPDATE group_members SET active = 0 WHERE group_id = ?1").bind(group).execute(&mut *tx).await?;
        for user in members {
            sqlx::query(
                "INSERT INTO group_members (group_id, user_id, active) VALUES (?1, ?2, 1) \
                 ON CONFLICT (group_id, user_id) DO UPDATE SET active = 1",
            )
            .bind(group)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        }
        for event in audit {
            insert_audit(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn envelope_record(&self, id: &str) -> Result<Option<EnvelopeRecord>> {
        let row: Option<(String, i64, String, String, Option<String>, Option<String>, i64)> = sqlx::query_as(
            "SELECT id, kind, sender, recipient, ref_action, ref_id, created_at FROM envelopes WHERE id = ?1",
        )
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|(id, k, sender, recipient, action, ref_id, created_at)| {
            Ok(EnvelopeRecord { id, kind: kind(k)?, sender, recipient, refers: envelope_ref(action, ref_id), created_at })
        })
        .transpose()
    }

    async fn append_audit(&self, events: &[AuditEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for event in events {
            insert_audit(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn audit_log(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT seq, at, actor, actor_device, action, conversation, message_id, subject FROM audit_log \
             WHERE (?1 IS NULL OR conversation = ?1) AND (?2 IS NULL OR actor = ?2 OR subject = ?2) \
             AND (?3 IS NULL OR at >= ?3) AND (?4 IS NULL OR at < ?4) ORDER BY seq DESC LIMIT ?5",
        )
        .bind(filter.conversation.as_deref())
        .bind(filter.user.as_deref())
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.limit.max(0))
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn prune_audit(&self, before: UnixMs) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM audit_log WHERE at < ?1").bind(before).execute(&self.writer).await?.rows_affected())
    }

    async fn group_entries(&self, group: &str, from: i64, limit: i64) -> Result<Vec<(i64, Vec<u8>)>> {
        Ok(sqlx::query_as("SELECT seq, entry FROM group_log WHERE group_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3")
            .bind(group)
            .bind(from)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?)
    }

    async fn group_head(&self, group: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT MAX(seq) FROM group_log WHERE group_id = ?1").bind(group).fetch_one(&self.reader).await?)
    }

    async fn group_members(&self, group: &str) -> Result<Vec<UserId>> {
        Ok(sqlx::query_scalar("SELECT user_id FROM group_members WHERE group_id = ?1 AND active = 1 ORDER BY user_id")
            .bind(group)
            .fetch_all(&self.reader)
            .await?)
    }

    async fn group_membership(&self, group: &str, user: UserId) -> Result<Option<bool>> {
        Ok(sqlx::query_scalar("SELECT active FROM group_members WHERE group_id = ?1 AND user_id = ?2")
            .bind(group)
            .bind(user)
            .fetch_optional(&self.reader)
            .await?)
    }

    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar("SELECT value FROM plugin_kv WHERE namespace = ?1 AND key = ?2")
            .bind(namespace)
            .bind(key)
            .fetch_optional(&self.reader)
            .await?)
    }

    async fn kv_set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO plugin_kv (namespace, key, value) VALUES (?1, ?2, ?3) \
             ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
        )
        .bind(namespace)
        .bind(key)
        .bind(value)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM plugin_kv WHERE namespace = ?1 AND key = ?2").bind(namespace).bind(key).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn kv_keys(&self, namespace: &str, prefix: &str, limit: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT key FROM plugin_kv WHERE namespace = ?1 AND substr(key, 1, length(?2)) = ?2 ORDER BY key LIMIT ?3",
        )
        .bind(namespace)
        .bind(prefix)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?)
    }

    async fn kv_usage(&self, namespace: &str) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COALESCE(SUM(length(CAST(key AS BLOB)) + length(value)), 0) FROM plugin_kv WHERE namespace = ?1")
            .bind(namespace)
            .fetch_one(&self.reader)
            .await?)
    }
}

/// The body of [`RelayStore::enqueue`] inside a write transaction the caller opened (IMMEDIATE) and commits.
async fn insert_audit(conn: &mut SqliteConnection, e: &AuditEvent) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, actor_device, action, conversation, message_id, subject) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .bind(e.at)
    .bind(&e.actor)
    .bind(&e.actor_device)
    .bind(&e.action)
    .bind(&e.conversation)
    .bind(e.message_id.as_deref())
    .bind(e.subject.as_deref())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn enqueue_in(conn: &mut SqliteConnection, batch: &[NewEnvelope]) -> Result<Vec<EnqueueOutcome>> {
    let plan = EnqueuePlan::new(batch);

    // Which ids are already known (normally none: one indexed lookup that returns nothing). Looking first and
    // then inserting plainly is safe because this transaction holds the database's only write lock, and it
    // avoids streaming one RETURNING row per envelope back from the SQLite worker thread.
    let mut existing: HashMap<String, UnixMs> = HashMap::new();
    let mut rest = &plan.candidates[..];
    for size in chunk_sizes(rest.len()) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let mut q = sqlx::query(EXISTING_ENVELOPES.get(size));
        for &i in chunk {
            q = q.bind(batch[i].id.as_str());
        }
        for row in q.fetch_all(&mut *conn).await? {
            existing.insert(row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?);
        }
    }
    let mut stored = vec![false; batch.len()];
    for &i in &plan.candidates {
        stored[i] = !existing.contains_key(&batch[i].id);
    }

    let new: Vec<&NewEnvelope> = plan.candidates.iter().filter(|&&i| stored[i]).map(|&i| &batch[i]).collect();
    let mut rest = &new[..];
    for size in chunk_sizes(rest.len()) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let mut q = sqlx::query(INSERT_ENVELOPES.get(size));
        for e in chunk {
            q = q
                .bind(e.id.as_str())
                .bind(e.kind as i64)
                .bind(e.sender.as_str())
                .bind(e.sender_device.as_str())
                .bind(e.recipient.as_str())
                .bind(e.mime.as_str())
                .bind(stored_payload(e))
                .bind(e.created_at)
                .bind(e.refers.as_ref().map(|r| r.action.as_str()))
                .bind(e.refers.as_ref().map(|r| r.id.as_str()));
        }
        q.execute(&mut *conn).await?;
    }
    // Edits and deletions are rare: their audit events go in one by one, in the same transaction.
    for event in new.iter().filter_map(|e| AuditEvent::of_envelope(e)) {
        insert_audit(&mut *conn, &event).await?;
    }

    // Queue rows in batch order, so that the autoincrement seq follows it for every device.
    let entries: Vec<(&str, &str, Option<&[u8]>)> = plan
        .candidates
        .iter()
        .filter(|&&i| stored[i])
        .flat_map(|&i| {
            let e = &batch[i];
            e.recipient_devices
                .iter()
                .enumerate()
                .map(move |(n, d)| (d.as_str(), e.id.as_str(), queue_payload(e, n)))
        })
        .collect();
    let mut rest = &entries[..];
    for size in chunk_sizes(rest.len()) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let mut q = sqlx::query(INSERT_QUEUE.get(size));
        for (device, id, payload) in chunk {
            q = q.bind(*device).bind(*id).bind(*payload);
        }
        q.execute(&mut *conn).await?;
    }

    plan.outcomes(batch, &stored, &existing)
}

/// The body of [`RelayStore::ack`] inside a write transaction the caller opened (IMMEDIATE) and commits.
async fn ack_in(conn: &mut SqliteConnection, acks: &[(String, String)]) -> Result<u64> {
    let mut removed = 0u64;
    let mut rest = acks;
    for size in chunk_sizes(rest.len()) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let mut q = sqlx::query(DELETE_ACKED.get(size));
        for (device, id) in chunk {
            q = q.bind(device.as_str()).bind(id.as_str());
        }
        removed += q.execute(&mut *conn).await?.rows_affected();
    }

    // Ciphertext nobody will fetch again is not kept; the row stays for de-duplication. Every acknowledged id is
    // a candidate (the NOT EXISTS decides), which spares returning the deleted rows one by one.
    let touched: Vec<&str> = acks.iter().map(|(_, id)| id.as_str()).collect::<HashSet<_>>().into_iter().collect();
    let mut rest = &touched[..];
    for size in chunk_sizes(rest.len()) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let mut q = sqlx::query(CLEAR_PAYLOADS.get(size));
        for id in chunk {
            q = q.bind(*id);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(removed)
}
