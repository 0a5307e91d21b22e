//! The shared-deployment backend: PostgreSQL through a connection pool.
//!
//! Batches travel as arrays: each table of an enqueue or ack batch gets one `UNNEST(...)` statement, whatever the
//! batch size. Several relays may share one database, so the two places where concurrent transactions could
//! otherwise misbehave take locks (see `enqueue` and `ack`).

use std::collections::HashMap;
use std::time::Duration;

use sqlx::PgConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::common::{EnqueuePlan, conflict_or, queue_payload, stored_payload};
use crate::rows::{
    AuditRow, DeviceRow, PresenceRow, QueueStatsRow, QueuedRow, SessionRow, UserRow, UserSummaryRow, envelope_ref, user_columns,
};
use crate::common::kind;
use crate::{
    AuditEvent, AuditFilter, AuditRecord, EnvelopeRecord, ClaimedBundle, DeviceKeysUpload, DeviceRecord, EnqueueOutcome, NewDevice, NewEnvelope, NewUser, PresenceRecord, QueueStats, QueuedEnvelope,
    RelayStore, Result, SessionRecord, StoreError, UnixMs, UserId, UserRecord, UserSummary,
};

/// Pool size: enough for a relay's concurrent reads and its one group-commit writer, small enough to share a server.
const MAX_CONNECTIONS: u32 = 8;

/// How long a caller waits for a free connection before the call fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL implementation of [`RelayStore`]. Cloning shares the pool.
#[derive(Clone, Debug)]
pub struct PgStore {
    pub(crate) pool: PgPool,
    /// The schema every connection uses, when one was chosen with [`PgStore::connect_with_schema`].
    schema: Option<String>,
}

impl PgStore {
    /// Connect to `url` (e.g. `postgres://user@host/db`) and bring the schema up to date, in the connection's default
    /// `search_path`.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = parse_url(url)?;
        let pool = pool_options().connect_with(options).await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool, schema: None })
    }

    /// Connect to `url` and keep every table in `schema` (created if missing): each connection of the pool gets
    /// `search_path` set to it. Lets several relays or test runs share one database without seeing each other.
    ///
    /// `schema` must match `[a-z_][a-z0-9_]*` (at most 63 bytes), since it is written into SQL as an identifier.
    pub async fn connect_with_schema(url: &str, schema: &str) -> Result<Self> {
        validate_schema(schema)?;
        let base = parse_url(url)?;
        {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect_with(&base).await?;
            // Validated above: only lower-case letters, digits and underscores.
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"")))
                .execute(&mut conn)
                .await?;
            conn.close().await?;
        }
        // A startup parameter rather than an `after_connect` SET: no extra round trip per new connection.
        let options = base.options([("search_path", schema)]);
        let pool = pool_options().connect_with(options).await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool, schema: Some(schema.to_owned()) })
    }

    /// The schema chosen with [`PgStore::connect_with_schema`], if any.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Drop the schema chosen with [`PgStore::connect_with_schema`] with everything in it, then close the pool.
    /// For tests and operators removing a deployment; it destroys all data of this store. Does nothing to a store
    /// opened with [`PgStore::connect`].
    pub async fn drop_schema(self) -> Result<()> {
        if let Some(schema) = &self.schema {
            // Validated when the store was opened.
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")))
                .execute(&self.pool)
                .await?;
        }
        self.pool.close().await;
        Ok(())
    }

    /// Close the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new().max_connections(MAX_CONNECTIONS).acquire_timeout(ACQUIRE_TIMEOUT)
}

fn parse_url(url: &str) -> Result<PgConnectOptions> {
    // The URL may hold a password: do not repeat it in the error.
    url.parse().map_err(|e: sqlx::Error| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))
}

/// Schema names end up inside SQL text, so only a conservative identifier shape is accepted.
fn validate_schema(schema: &str) -> Result<()> {
    let mut chars = schema.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && schema.len() <= 63 {
        Ok(())
    } else {
        Err(StoreError::Config(format!("invalid schema name {schema:?}: use [a-z_][a-z0-9_]*, at most 63 bytes")))
    }
}

#[async_trait::async_trait]
impl RelayStore for PgStore {
    async fn create_user(&self, user: &NewUser) -> Result<UserId> {
        sqlx::query_scalar("INSERT INTO users (name, password_hash, created_at) VALUES ($1, $2, $3) RETURNING id")
            .bind(&user.name)
            .bind(&user.password_hash)
            .bind(user.created_at)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| conflict_or(e, &format!("user name {:?}", user.name)))
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>> {
        let row: Option<UserRow> = sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Into::into))
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>> {
        let row: Option<UserRow> = sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Into::into))
    }

    async fn list_users(&self) -> Result<Vec<UserSummary>> {
        let rows: Vec<UserSummaryRow> = sqlx::query_as(
            "SELECT u.name, u.disabled, u.totp_secret IS NOT NULL AS totp, \
             (SELECT COUNT(*) FROM devices d WHERE d.user_id = u.id) AS devices, u.created_at \
             FROM users u ORDER BY u.name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool> {
        let done = sqlx::query("UPDATE users SET disabled = $2 WHERE name = $1")
            .bind(name)
            .bind(disabled)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_totp_pending(&self, user: UserId, secret: Option<&[u8]>) -> Result<()> {
        sqlx::query("UPDATE users SET totp_pending = $2 WHERE id = $1")
            .bind(user)
            .bind(secret)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_totp_secret(&self, user: UserId, secret: Option<&[u8]>, step: Option<i64>) -> Result<()> {
        // The used step only ever moves forward (GREATEST ignores NULLs), so that replacing the secret cannot
        // re-open an already used code.
        sqlx::query(
            "UPDATE users SET totp_secret = $2, totp_pending = NULL, \
             totp_last_step = GREATEST(totp_last_step, $3::BIGINT) WHERE id = $1",
        )
        .bind(user)
        .bind(secret)
        .bind(step)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn use_totp_step(&self, user: UserId, step: i64) -> Result<bool> {
        // One conditional UPDATE: its row lock and re-check make two racing uses of a code resolve to one winner.
        let done = sqlx::query(
            "UPDATE users SET totp_last_step = $2 WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)",
        )
        .bind(user)
        .bind(step)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_login_failure(&self, user: UserId, locked_until: Option<UnixMs>) -> Result<i64> {
        let count: Option<i64> = sqlx::query_scalar(
            "UPDATE users SET failed_logins = failed_logins + 1, locked_until = COALESCE($2, locked_until) \
             WHERE id = $1 RETURNING failed_logins",
        )
        .bind(user)
        .bind(locked_until)
        .fetch_optional(&self.pool)
        .await?;
        // An unknown user has no failures to count.
        Ok(count.unwrap_or(0))
    }

    async fn reset_login_failures(&self, user: UserId) -> Result<()> {
        sqlx::query("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = $1")
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn add_device(&self, device: &NewDevice) -> Result<()> {
        sqlx::query(
            "INSERT INTO devices (id, user_id, signing_key, static_key, name, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&device.id)
        .bind(device.user_id)
        .bind(&device.signing_key[..])
        .bind(&device.static_key[..])
        .bind(&device.name)
        .bind(device.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict_or(e, &format!("device {:?} or its static key", device.id)))?;
        Ok(())
    }

    async fn device_by_static_key(&self, key: &[u8; 32]) -> Result<Option<DeviceRecord>> {
        let row: Option<DeviceRow> = sqlx::query_as(
            "SELECT d.id, d.user_id, u.name AS user_name, d.signing_key, d.static_key, d.name, d.created_at, d.revoked_at \
             FROM devices d JOIN users u ON u.id = d.user_id WHERE d.static_key = $1",
        )
        .bind(&key[..])
        .fetch_optional(&self.pool)
        .await?;
        row.map(TryInto::try_into).transpose()
    }

    async fn device_by_id(&self, id: &str) -> Result<Option<DeviceRecord>> {
        let row: Option<DeviceRow> = sqlx::query_as(
            "SELECT d.id, d.user_id, u.name AS user_name, d.signing_key, d.static_key, d.name, d.created_at, d.revoked_at \
             FROM devices d JOIN users u ON u.id = d.user_id WHERE d.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(TryInto::try_into).transpose()
    }

    async fn devices_of(&self, user: UserId) -> Result<Vec<DeviceRecord>> {
        let rows: Vec<DeviceRow> = sqlx::query_as(
            "SELECT d.id, d.user_id, u.name AS user_name, d.signing_key, d.static_key, d.name, d.created_at, d.revoked_at \
             FROM devices d JOIN users u ON u.id = d.user_id WHERE d.user_id = $1 ORDER BY d.created_at, d.id",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn create_session(&self, token_hash: &[u8; 32], session: &SessionRecord, created_at: UnixMs) -> Result<()> {
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, device_id, expires_at, revoked_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&token_hash[..])
        .bind(session.user_id)
        .bind(&session.device_id)
        .bind(session.expires_at)
        .bind(session.revoked_at)
        .bind(created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict_or(e, "session token"))?;
        Ok(())
    }

    async fn session(&self, token_hash: &[u8; 32]) -> Result<Option<SessionRecord>> {
        let row: Option<SessionRow> =
            sqlx::query_as("SELECT user_id, device_id, expires_at, revoked_at FROM sessions WHERE token_hash = $1")
                .bind(&token_hash[..])
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(Into::into))
    }

    async fn revoke_session(&self, token_hash: &[u8; 32], at: UnixMs) -> Result<bool> {
        // A second revocation keeps the first time.
        let done = sqlx::query("UPDATE sessions SET revoked_at = COALESCE(revoked_at, $2) WHERE token_hash = $1")
            .bind(&token_hash[..])
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn revoke_user_sessions(&self, user: UserId, at: UnixMs) -> Result<u64> {
        let done = sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
            .bind(user)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn enqueue(&self, batch: &[NewEnvelope]) -> Result<Vec<EnqueueOutcome>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
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
        // Enqueue first: it takes the advisory lock before any envelope row lock, the same order as a plain
        // enqueue, and a plain ack never waits for the advisory lock, so no lock cycle can form.
        let mut tx = self.pool.begin().await?;
        let outcomes = if batch.is_empty() { Vec::new() } else { enqueue_in(&mut tx, batch).await? };
        let removed = if acks.is_empty() { 0 } else { ack_in(&mut tx, acks).await? };
        tx.commit().await?;
        Ok((outcomes, removed))
    }

    async fn fetch_queue(&self, device: &str, after: i64, limit: i64) -> Result<Vec<QueuedEnvelope>> {
        let rows: Vec<QueuedRow> = sqlx::query_as(
            // The page is cut from the queue before the join (MATERIALIZED keeps it that way): otherwise, while
            // the table has no statistics yet (a fresh or fast-growing queue), the planner joins the device's whole
            // backlog with the envelopes and only then sorts and cuts — hundreds of times slower on a long queue.
            "WITH page AS MATERIALIZED (SELECT seq, envelope_id, payload FROM queue WHERE device_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3) \
             SELECT p.seq, e.id, e.kind::BIGINT AS kind, e.sender, e.sender_device, e.recipient, e.mime, \
             COALESCE(p.payload, e.payload) AS payload, \
             e.created_at, e.ref_action, e.ref_id FROM page p JOIN envelopes e ON e.id = p.envelope_id ORDER BY p.seq",
        )
        .bind(device)
        .bind(after)
        // PostgreSQL rejects a negative LIMIT; the caller meant none.
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn ack(&self, acks: &[(String, String)]) -> Result<u64> {
        if acks.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        let removed = ack_in(&mut tx, acks).await?;
        tx.commit().await?;
        Ok(removed)
    }

    async fn queue_len(&self, device: &str) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM queue WHERE device_id = $1")
            .bind(device)
            .fetch_one(&self.pool)
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
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn prune_envelopes(&self, before: UnixMs) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM envelopes e WHERE e.created_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.envelope_id = e.id)",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn add_contact(&self, a: UserId, b: UserId) -> Result<()> {
        sqlx::query("INSERT INTO contacts (a, b) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(a.min(b))
            .bind(a.max(b))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn contacts_of(&self, user: UserId) -> Result<Vec<UserId>> {
        Ok(sqlx::query_scalar(
            "SELECT b AS c FROM contacts WHERE a = $1 UNION SELECT a AS c FROM contacts WHERE b = $1 ORDER BY c",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn are_contacts(&self, a: UserId, b: UserId) -> Result<bool> {
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM contacts WHERE a = $1 AND b = $2)")
            .bind(a.min(b))
            .bind(a.max(b))
            .fetch_one(&self.pool)
            .await?)
    }

    async fn set_presence(&self, user: UserId, status: Option<&str>, last_seen: Option<UnixMs>) -> Result<()> {
        // Inserting from `users` makes an unknown user a no-op instead of a foreign-key error.
        sqlx::query(
            "INSERT INTO presence (user_id, status, last_seen) SELECT id, $2, $3 FROM users WHERE id = $1 \
             ON CONFLICT (user_id) DO UPDATE SET status = COALESCE(excluded.status, presence.status), \
             last_seen = COALESCE(excluded.last_seen, presence.last_seen)",
        )
        .bind(user)
        .bind(status)
        .bind(last_seen)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn presence_of(&self, user: UserId) -> Result<Option<PresenceRecord>> {
        let row: Option<PresenceRow> = sqlx::query_as(
            "SELECT u.name, p.status, p.last_seen FROM users u LEFT JOIN presence p ON p.user_id = u.id \
             WHERE u.id = $1",
        )
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Into::into))
    }

    async fn user_identity(&self, user: UserId) -> Result<Option<[u8; 32]>> {
        let key: Option<Vec<u8>> = sqlx::query_scalar("SELECT identity_key FROM identities WHERE user_id = $1")
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        Ok(key.and_then(|k| k.try_into().ok()))
    }

    async fn set_user_identity(&self, user: UserId, key: &[u8; 32], at: UnixMs) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO identities (user_id, identity_key, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(user)
            .bind(&key[..])
            .bind(at)
            .execute(&mut *tx)
            .await?;
        let stored: Vec<u8> = sqlx::query_scalar("SELECT identity_key FROM identities WHERE user_id = $1")
            .bind(user)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(stored == key)
    }

    async fn put_device_keys(&self, device: &str, keys: &DeviceKeysUpload) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO device_keys (device_id, user_id, certificate, signed_prekey, kem_last_resort, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (device_id) DO UPDATE SET certificate = EXCLUDED.certificate, \
             signed_prekey = COALESCE(EXCLUDED.signed_prekey, device_keys.signed_prekey), \
             kem_last_resort = COALESCE(EXCLUDED.kem_last_resort, device_keys.kem_last_resort), \
             updated_at = EXCLUDED.updated_at",
        )
        .bind(device)
        .bind(keys.user_id)
        .bind(&keys.certificate)
        .bind(keys.signed_prekey.as_deref())
        .bind(keys.kem_last_resort.as_deref())
        .bind(keys.at)
        .execute(&mut *tx)
        .await?;
        for (kind, list) in [(0i16, &keys.one_time), (1i16, &keys.kem_one_time)] {
            if list.is_empty() {
                continue;
            }
            let ids: Vec<i64> = list.iter().map(|(id, _)| *id).collect();
            let bodies: Vec<&[u8]> = list.iter().map(|(_, b)| b.as_slice()).collect();
            sqlx::query(
                "INSERT INTO one_time_prekeys (device_id, kind, key_id, body) \
                 SELECT $1, $2, i, b FROM UNNEST($3::BIGINT[], $4::BYTEA[]) AS t (i, b) ON CONFLICT DO NOTHING",
            )
            .bind(device)
            .bind(kind)
            .bind(&ids)
            .bind(&bodies)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn device_certificates(&self, user: UserId) -> Result<Vec<(String, Vec<u8>)>> {
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT k.device_id, k.certificate FROM device_keys k JOIN devices d ON d.id = k.device_id \
             WHERE k.user_id = $1 AND d.revoked_at IS NULL ORDER BY d.created_at, k.device_id",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    async fn claim_bundles(&self, devices: &[String]) -> Result<Vec<ClaimedBundle>> {
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(devices.len());
        for device in devices {
            let row: Option<(Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>)> = sqlx::query_as(
                "SELECT certificate, signed_prekey, kem_last_resort FROM device_keys WHERE device_id = $1",
            )
            .bind(device)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((certificate, Some(signed_prekey), last_resort)) = row else { continue };
            let mut take = async |kind: i16| -> Result<Option<Vec<u8>>> {
                // SKIP LOCKED: two relays claiming at once never hand out the same one-time prekey.
                let body: Option<Vec<u8>> = sqlx::query_scalar(
                    "DELETE FROM one_time_prekeys WHERE (device_id, kind, key_id) = \
                     (SELECT device_id, kind, key_id FROM one_time_prekeys WHERE device_id = $1 AND kind = $2 \
                      ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING body",
                )
                .bind(device)
                .bind(kind)
                .fetch_optional(&mut *tx)
                .await?;
                Ok(body)
            };
            let one_time = take(0).await?;
            let Some(kem) = take(1).await?.or(last_resort) else { continue };
            out.push(ClaimedBundle { device: device.clone(), certificate, signed_prekey, one_time, kem });
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn prekey_counts(&self, device: &str) -> Result<(i64, i64)> {
        let rows: Vec<(i16, i64)> =
            sqlx::query_as("SELECT kind, COUNT(*) FROM one_time_prekeys WHERE device_id = $1 GROUP BY kind")
                .bind(device)
                .fetch_all(&self.pool)
                .await?;
        let count = |k: i16| rows.iter().find(|(kind, _)| *kind == k).map_or(0, |(_, n)| *n);
        Ok((count(0), count(1)))
    }

    async fn revocation_list(&self, user: UserId) -> Result<Option<(i64, Vec<u8>)>> {
        let row: Option<(i64, Vec<u8>)> = sqlx::query_as("SELECT version, list FROM revocation_lists WHERE user_id = $1")
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row)
    }

    async fn revoke_devices(&self, user: UserId, version: i64, list: &[u8], devices: &[String], at: UnixMs) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let stored: Option<i64> = sqlx::query_scalar("SELECT version FROM revocation_lists WHERE user_id = $1 FOR UPDATE")
            .bind(user)
            .fetch_optional(&mut *tx)
            .await?;
        if stored.is_some_and(|v| v >= version) {
            return Ok(false);
        }
        let stored_now = sqlx::query(
            "INSERT INTO revocation_lists (user_id, version, list, updated_at) VALUES ($1, $2, $3, $4) \
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
            let owned = sqlx::query("UPDATE devices SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND user_id = $3")
                .bind(at)
                .bind(device)
                .bind(user)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if owned == 0 {
                continue;
            }
            sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE device_id = $2 AND revoked_at IS NULL")
                .bind(at)
                .bind(device)
                .execute(&mut *tx)
                .await?;
            for delete in [
                "DELETE FROM device_keys WHERE device_id = $1",
                "DELETE FROM one_time_prekeys WHERE device_id = $1",
                "DELETE FROM queue WHERE device_id = $1",
            ] {
                sqlx::query(delete).bind(device).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn append_group_entry(&self, group: &str, seq: i64, entry: &[u8], members: &[UserId], at: UnixMs, audit: &[AuditEvent]) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO group_log (group_id, seq, entry, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
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
        sqlx::query("UPDATE group_members SET active = FALSE WHERE group_id = $1").bind(group).execute(&mut *tx).await?;
        for user in members {
            sqlx::query(
                "INSERT INTO group_members (group_id, user_id, active) VALUES ($1, $2, TRUE) \
                 ON CONFLICT (group_id, user_id) DO UPDATE SET active = TRUE",
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
        let row: Option<(String, i16, String, String, Option<String>, Option<String>, i64)> = sqlx::query_as(
            "SELECT id, kind, sender, recipient, ref_action, ref_id, created_at FROM envelopes WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(id, k, sender, recipient, action, ref_id, created_at)| {
            Ok(EnvelopeRecord { id, kind: kind(i64::from(k))?, sender, recipient, refers: envelope_ref(action, ref_id), created_at })
        })
        .transpose()
    }

    async fn append_audit(&self, events: &[AuditEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for event in events {
            insert_audit(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn audit_log(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT seq, at, actor, actor_device, action, conversation, message_id, subject FROM audit_log \
             WHERE ($1::TEXT IS NULL OR conversation = $1) AND ($2::TEXT IS NULL OR actor = $2 OR subject = $2) \
             AND ($3::BIGINT IS NULL OR at >= $3) AND ($4::BIGINT IS NULL OR at < $4) ORDER BY seq DESC LIMIT $5",
        )
        .bind(filter.conversation.as_deref())
        .bind(filter.user.as_deref())
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn prune_audit(&self, before: UnixMs) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM audit_log WHERE at < $1").bind(before).execute(&self.pool).await?.rows_affected())
    }

    async fn group_entries(&self, group: &str, from: i64, limit: i64) -> Result<Vec<(i64, Vec<u8>)>> {
        Ok(sqlx::query_as("SELECT seq, entry FROM group_log WHERE group_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3")
            .bind(group)
            .bind(from)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn group_head(&self, group: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT MAX(seq) FROM group_log WHERE group_id = $1").bind(group).fetch_one(&self.pool).await?)
    }

    async fn group_members(&self, group: &str) -> Result<Vec<UserId>> {
        Ok(sqlx::query_scalar("SELECT user_id FROM group_members WHERE group_id = $1 AND active ORDER BY user_id")
            .bind(group)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn group_membership(&self, group: &str, user: UserId) -> Result<Option<bool>> {
        Ok(sqlx::query_scalar("SELECT active FROM group_members WHERE group_id = $1 AND user_id = $2")
            .bind(group)
            .bind(user)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar("SELECT value FROM plugin_kv WHERE namespace = $1 AND key = $2")
            .bind(namespace)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn kv_set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO plugin_kv (namespace, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(namespace)
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM plugin_kv WHERE namespace = $1 AND key = $2").bind(namespace).bind(key).execute(&self.pool).await?;
        Ok(())
    }

    async fn kv_keys(&self, namespace: &str, prefix: &str, limit: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT key FROM plugin_kv WHERE namespace = $1 AND starts_with(key, $2) ORDER BY key COLLATE \"C\" LIMIT $3")
            .bind(namespace)
            .bind(prefix)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn kv_usage(&self, namespace: &str) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COALESCE(SUM(octet_length(key) + octet_length(value)), 0)::BIGINT FROM plugin_kv WHERE namespace = $1")
            .bind(namespace)
            .fetch_one(&self.pool)
            .await?)
    }
}

/// The body of [`RelayStore::enqueue`] inside a transaction the caller opened and commits.
async fn enqueue_in(conn: &mut PgConnection, batch: &[NewEnvelope]) -> Result<Vec<EnqueueOutcome>> {
    let plan = EnqueuePlan::new(batch);
    // Queue seqs come from an identity column, allocated when rows are inserted but visible only at commit. Two
    // overlapping enqueues could commit out of seq order, and a reader that already moved its cursor past the
    // later seq would skip the earlier one for good. Serialising enqueues (per schema) makes seq order commit
    // order; batches are group commits, so this costs little.
    sqlx::query("SELECT pg_advisory_xact_lock(1768777074, hashtext(current_schema()))").execute(&mut *conn).await?;

    let n = plan.candidates.len();
    let (mut ids, mut kinds, mut senders, mut sender_devices) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut recipients, mut mimes, mut payloads, mut times) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut ref_actions, mut ref_ids): (Vec<Option<&str>>, Vec<Option<&str>>) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut index_of: HashMap<&str, usize> = HashMap::with_capacity(n);
    for &i in &plan.candidates {
        let e = &batch[i];
        index_of.insert(e.id.as_str(), i);
        ids.push(e.id.as_str());
        kinds.push(e.kind as i16);
        senders.push(e.sender.as_str());
        sender_devices.push(e.sender_device.as_str());
        recipients.push(e.recipient.as_str());
        mimes.push(e.mime.as_str());
        payloads.push(stored_payload(e));
        times.push(e.created_at);
        ref_actions.push(e.refers.as_ref().map(|r| r.action.as_str()));
        ref_ids.push(e.refers.as_ref().map(|r| r.id.as_str()));
    }
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO envelopes (id, kind, sender, sender_device, recipient, mime, payload, created_at, ref_action, ref_id) \
             SELECT * FROM UNNEST($1::TEXT[], $2::SMALLINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], \
             $7::BYTEA[], $8::BIGINT[], $9::TEXT[], $10::TEXT[]) ON CONFLICT (id) DO NOTHING RETURNING id",
    )
    .bind(&ids)
    .bind(&kinds)
    .bind(&senders)
    .bind(&sender_devices)
    .bind(&recipients)
    .bind(&mimes)
    .bind(&payloads)
    .bind(&times)
    .bind(&ref_actions)
    .bind(&ref_ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut stored = vec![false; batch.len()];
    for id in &inserted {
        if let Some(&i) = index_of.get(id.as_str()) {
            stored[i] = true;
        }
    }
    // Edits and deletions are rare: their audit events go in one by one, in the same transaction.
    for event in plan.candidates.iter().filter(|&&i| stored[i]).filter_map(|&i| AuditEvent::of_envelope(&batch[i])) {
        insert_audit(&mut *conn, &event).await?;
    }

    // Duplicates of earlier batches: fetch their original acceptance time.
    let known: Vec<&str> = plan.candidates.iter().filter(|&&i| !stored[i]).map(|&i| batch[i].id.as_str()).collect();
    let mut existing = HashMap::with_capacity(known.len());
    if !known.is_empty() {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT id, created_at FROM envelopes WHERE id = ANY($1::TEXT[])")
                .bind(&known)
                .fetch_all(&mut *conn)
                .await?;
        existing.extend(rows);
    }

    // Queue rows in batch order (WITH ORDINALITY … ORDER BY), so that the identity seq follows it per device.
    let (mut devices, mut envelope_ids, mut payloads) = (Vec::new(), Vec::new(), Vec::new());
    for &i in plan.candidates.iter().filter(|&&i| stored[i]) {
        for (n, d) in batch[i].recipient_devices.iter().enumerate() {
            devices.push(d.as_str());
            envelope_ids.push(batch[i].id.as_str());
            payloads.push(queue_payload(&batch[i], n));
        }
    }
    if !devices.is_empty() {
        // Duplicate device ids in one envelope's list are ignored rather than failing the whole group commit.
        sqlx::query(
            "INSERT INTO queue (device_id, envelope_id, payload) \
                 SELECT d, e, p FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BYTEA[]) WITH ORDINALITY AS t (d, e, p, n) \
                 ORDER BY n ON CONFLICT DO NOTHING",
        )
        .bind(&devices)
        .bind(&envelope_ids)
        .bind(&payloads)
        .execute(&mut *conn)
        .await?;
    }

    plan.outcomes(batch, &stored, &existing)
}

async fn insert_audit(conn: &mut PgConnection, e: &AuditEvent) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, actor_device, action, conversation, message_id, subject) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
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

/// The body of [`RelayStore::ack`] inside a transaction the caller opened and commits.
async fn ack_in(conn: &mut PgConnection, acks: &[(String, String)]) -> Result<u64> {
    let devices: Vec<&str> = acks.iter().map(|(d, _)| d.as_str()).collect();
    let ids: Vec<&str> = acks.iter().map(|(_, e)| e.as_str()).collect();
    // Lock the envelopes first (in id order, so concurrent acks cannot deadlock). Without it, two relays acking
    // the last two queue entries of one envelope would each still see the other's entry and neither would clear
    // the payload.
    sqlx::query("SELECT id FROM envelopes WHERE id = ANY($1::TEXT[]) ORDER BY id FOR NO KEY UPDATE")
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    let removed = sqlx::query(
        "DELETE FROM queue q USING UNNEST($1::TEXT[], $2::TEXT[]) AS a (d, e) \
             WHERE q.device_id = a.d AND q.envelope_id = a.e",
    )
    .bind(&devices)
    .bind(&ids)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    // Ciphertext nobody will fetch again is not kept; the row stays for de-duplication. Every acknowledged id is
    // a candidate (the NOT EXISTS decides).
    sqlx::query(
        "UPDATE envelopes e SET payload = ''::BYTEA WHERE e.id = ANY($1::TEXT[]) \
             AND octet_length(e.payload) > 0 \
             AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.envelope_id = e.id)",
    )
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::validate_schema;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["it_123_abc", "_x", "relay"] {
            assert!(validate_schema(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1abc", "Relay", "a-b", "a\"; DROP TABLE users; --", "a b", &"a".repeat(64)] {
            assert!(validate_schema(bad).is_err(), "{bad}");
        }
    }
}
