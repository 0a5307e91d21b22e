//! Metadata of end-to-end encrypted files on the relay: who uploaded which file id, its declared size and chunk
//! layout, whether every chunk has arrived, and when it expires. The sealed chunks themselves are files under the
//! relay's data dir, written by the relay; this module never sees chunk bytes.
//!
//! Quota: an account's usage is the sum of the declared sizes of its files that have not expired, reserved when an
//! upload begins ([`FileStore::create_file`] checks and inserts in one transaction, so two concurrent uploads cannot
//! both slip under the quota).

use crate::{PgStore, Result, SqliteStore, UnixMs, UserId};

/// A file as the relay records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// The file id (32 lowercase hex digits).
    pub id: String,
    /// The uploading account.
    pub owner: UserId,
    /// Declared plaintext size in bytes.
    pub size: i64,
    /// Plaintext bytes per chunk.
    pub chunk_size: i64,
    /// Number of chunks.
    pub chunks: i64,
    /// Every chunk is stored.
    pub complete: bool,
    /// When the upload began.
    pub created_at: UnixMs,
    /// When the sweeper deletes it.
    pub expires_at: UnixMs,
}

/// What [`FileStore::create_file`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileCreated {
    /// A new record.
    Created,
    /// The id is already taken; here is its record (a resumed upload, or a collision the caller refuses).
    Exists(FileRecord),
    /// The account's files would exceed the quota; `used` bytes are reserved already.
    OverQuota {
        /// Bytes reserved by the account's unexpired files.
        used: i64,
    },
}

/// File metadata, implemented by both backends (and part of every [`crate::RelayStore`]).
#[async_trait::async_trait]
pub trait FileStore: Send + Sync + 'static {
    /// Record a new upload, unless the account's unexpired files plus this one would exceed `quota` bytes. An
    /// existing id is returned as it is, unchanged.
    async fn create_file(&self, file: &FileRecord, quota: i64, now: UnixMs) -> Result<FileCreated>;
    /// The record of a file id.
    async fn file(&self, id: &str) -> Result<Option<FileRecord>>;
    /// Mark a file complete and set its expiry (counted from completion). `false` if it does not exist.
    async fn complete_file(&self, id: &str, expires_at: UnixMs) -> Result<bool>;
    /// Bytes reserved by an account's files that expire after `now`.
    async fn file_usage(&self, owner: UserId, now: UnixMs) -> Result<i64>;
    /// Ids of files that expired at or before `now`, oldest first, at most `limit`.
    async fn expired_files(&self, now: UnixMs, limit: i64) -> Result<Vec<String>>;
    /// Forget a file. `false` if it did not exist.
    async fn delete_file(&self, id: &str) -> Result<bool>;
}

fn sqlite_row(r: &sqlx::sqlite::SqliteRow) -> FileRecord {
    use sqlx::Row;
    FileRecord {
        id: r.get("id"),
        owner: r.get("owner"),
        size: r.get("size"),
        chunk_size: r.get("chunk_size"),
        chunks: r.get("chunks"),
        complete: r.get::<i64, _>("complete") != 0,
        created_at: r.get("created_at"),
        expires_at: r.get("expires_at"),
    }
}

fn pg_row(r: &sqlx::postgres::PgRow) -> FileRecord {
    use sqlx::Row;
    FileRecord {
        id: r.get("id"),
        owner: r.get("owner"),
        size: r.get("size"),
        chunk_size: r.get("chunk_size"),
        chunks: r.get("chunks"),
        complete: r.get("complete"),
        created_at: r.get("created_at"),
        expires_at: r.get("expires_at"),
    }
}

#[async_trait::async_trait]
impl FileStore for SqliteStore {
    async fn create_file(&self, file: &FileRecord, quota: i64, now: UnixMs) -> Result<FileCreated> {
        // IMMEDIATE: the write lock is held from the usage check to the insert.
        let mut tx = self.begin_write().await?;
        let existing = sqlx::query("SELECT id, owner, size, chunk_size, chunks, complete, created_at, expires_at FROM files WHERE id = ?1").bind(&file.id).fetch_optional(&mut *tx).await?;
        if let Some(row) = existing {
            return Ok(FileCreated::Exists(sqlite_row(&row)));
        }
        let used: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(size), 0) FROM files WHERE owner = ?1 AND expires_at > ?2")
            .bind(file.owner)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        if used.saturating_add(file.size) > quota {
            return Ok(FileCreated::OverQuota { used });
        }
        sqlx::query("INSERT INTO files (id, owner, size, chunk_size, chunks, complete, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
            .bind(&file.id)
            .bind(file.owner)
            .bind(file.size)
            .bind(file.chunk_size)
            .bind(file.chunks)
            .bind(i64::from(file.complete))
            .bind(file.created_at)
            .bind(file.expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(FileCreated::Created)
    }

    async fn file(&self, id: &str) -> Result<Option<FileRecord>> {
        let row = sqlx::query("SELECT id, owner, size, chunk_size, chunks, complete, created_at, expires_at FROM files WHERE id = ?1").bind(id).fetch_optional(&self.reader).await?;
        Ok(row.as_ref().map(sqlite_row))
    }

    async fn complete_file(&self, id: &str, expires_at: UnixMs) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("UPDATE files SET complete = 1, expires_at = ?2 WHERE id = ?1").bind(id).bind(expires_at).execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn file_usage(&self, owner: UserId, now: UnixMs) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COALESCE(SUM(size), 0) FROM files WHERE owner = ?1 AND expires_at > ?2")
            .bind(owner)
            .bind(now)
            .fetch_one(&self.reader)
            .await?)
    }

    async fn expired_files(&self, now: UnixMs, limit: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT id FROM files WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2")
            .bind(now)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?)
    }

    async fn delete_file(&self, id: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("DELETE FROM files WHERE id = ?1").bind(id).execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }
}

#[async_trait::async_trait]
impl FileStore for PgStore {
    async fn create_file(&self, file: &FileRecord, quota: i64, now: UnixMs) -> Result<FileCreated> {
        let mut tx = self.pool.begin().await?;
        // Lock the owner's row: concurrent uploads of one account check the quota one after the other.
        sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE").bind(file.owner).fetch_optional(&mut *tx).await?;
        let existing = sqlx::query("SELECT id, owner, size, chunk_size, chunks, complete, created_at, expires_at FROM files WHERE id = $1").bind(&file.id).fetch_optional(&mut *tx).await?;
        if let Some(row) = existing {
            return Ok(FileCreated::Exists(pg_row(&row)));
        }
        let used: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(size), 0)::BIGINT FROM files WHERE owner = $1 AND expires_at > $2")
            .bind(file.owner)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        if used.saturating_add(file.size) > quota {
            return Ok(FileCreated::OverQuota { used });
        }
        // ON CONFLICT: another owner may insert the same id between our look and this insert (ids are random, so
        // only a buggy or hostile client does); the loser sees the winner's record.
        let inserted = sqlx::query(
            "INSERT INTO files (id, owner, size, chunk_size, chunks, complete, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&file.id)
        .bind(file.owner)
        .bind(file.size)
        .bind(file.chunk_size)
        .bind(file.chunks)
        .bind(file.complete)
        .bind(file.created_at)
        .bind(file.expires_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        if inserted == 0 {
            return Ok(match self.file(&file.id).await? {
                Some(r) => FileCreated::Exists(r),
                None => FileCreated::Created,
            });
        }
        Ok(FileCreated::Created)
    }

    async fn file(&self, id: &str) -> Result<Option<FileRecord>> {
        let row = sqlx::query("SELECT id, owner, size, chunk_size, chunks, complete, created_at, expires_at FROM files WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(pg_row))
    }

    async fn complete_file(&self, id: &str, expires_at: UnixMs) -> Result<bool> {
        let n = sqlx::query("UPDATE files SET complete = TRUE, expires_at = $2 WHERE id = $1").bind(id).bind(expires_at).execute(&self.pool).await?.rows_affected();
        Ok(n > 0)
    }

    async fn file_usage(&self, owner: UserId, now: UnixMs) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COALESCE(SUM(size), 0)::BIGINT FROM files WHERE owner = $1 AND expires_at > $2")
            .bind(owner)
            .bind(now)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn expired_files(&self, now: UnixMs, limit: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT id FROM files WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2")
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn delete_file(&self, id: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM files WHERE id = $1").bind(id).execute(&self.pool).await?.rows_affected();
        Ok(n > 0)
    }
}
