//! End-to-end encrypted file transfer on the relay: the `[files]` configuration, short-lived capability tickets,
//! the `file.begin` / `file.fetch` frames, the binary HTTP endpoints for sealed chunks, and the expiry sweeper.
//!
//! The relay stores ciphertext only: chunk `n` of file `F` is the file `<data_dir>/files/F/n`, written to a temporary
//! name, fsynced, renamed and the directory fsynced before the upload is acknowledged. Metadata (owner, declared
//! size, layout, expiry) lives in the store. The relay never sees names, types, keys or hashes: those travel in the
//! end-to-end message. Logs name the account and sizes, never file ids (a file id is a capability).
//!
//! Tickets: the HTTP endpoints do not accept the session token. A device asks over its authenticated IMF session
//! (`file.begin`, `file.fetch`) and gets a ticket bound to one file, one use (upload or download), its account and an
//! expiry, MACed with a key that lives only in this process (a restart invalidates every ticket; clients ask again).
//! A TLS-terminating proxy therefore only ever sees narrow, expiring tickets.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use imfree_proto::file::{FileBegin, FileFetch, FileTicket, TicketMode};
use imfree_proto::{ErrorCode, ErrorFrame, FrameBody};
use imfree_store::{FileCreated, FileRecord, StoreError, UserId};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::state::RelayState;

/// Bytes a sealed chunk carries beyond its plaintext (the Poly1305 tag).
const TAG_LEN: u64 = 16;
/// Label of the ticket MAC.
const TICKET_LABEL: &[u8] = b"imfree/v1/file-ticket";
/// Ticket body: file id 16, account 8, mode 1, expiry 8.
const TICKET_BODY: usize = 16 + 8 + 1 + 8;
/// Expired files deleted per sweeper query.
const SWEEP_BATCH: i64 = 256;

/// `[files]`: limits of end-to-end encrypted file transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// Largest file (plaintext bytes). Default 2 GiB. 0 turns file transfer off.
    pub max_file_bytes: u64,
    /// Largest chunk (plaintext bytes). Default 8 MiB.
    pub max_chunk_bytes: u32,
    /// Smallest chunk (plaintext bytes; a file smaller than this is one chunk). Default 16 KiB.
    pub min_chunk_bytes: u32,
    /// Bytes of files each account may keep on the relay (declared sizes of its unexpired files). Default 10 GiB.
    pub quota_bytes: u64,
    /// Seconds a file is kept after its upload completed (an unfinished upload: after it began). Default 30 days.
    pub expiry_secs: u64,
    /// Seconds a transfer ticket is valid. Default 1 hour.
    pub ticket_ttl_secs: u64,
    /// Seconds between sweeps for expired files. Default 10 minutes.
    pub sweep_interval_secs: u64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            max_file_bytes: 2 << 30,
            max_chunk_bytes: 8 << 20,
            min_chunk_bytes: 16 << 10,
            quota_bytes: 10 << 30,
            expiry_secs: 30 * 24 * 3600,
            ticket_ttl_secs: 3600,
            sweep_interval_secs: 600,
        }
    }
}

impl FilesConfig {
    /// Check values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_chunk_bytes < 1024 || self.min_chunk_bytes > self.max_chunk_bytes || self.max_chunk_bytes > (64 << 20) {
            return Err("files: need 1024 <= min_chunk_bytes <= max_chunk_bytes <= 67108864".into());
        }
        if self.expiry_secs == 0 || self.ticket_ttl_secs == 0 || self.sweep_interval_secs == 0 {
            return Err("files: expiry_secs, ticket_ttl_secs and sweep_interval_secs must be at least 1".into());
        }
        Ok(())
    }
}

/// The relay's file service: where chunks live and the ticket key.
pub struct FileService {
    dir: PathBuf,
    ticket_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for FileService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileService").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn file_bytes(id: &str) -> Option<[u8; 16]> {
    imfree_proto::file::validate_file_id(id).ok()?;
    let bytes = hex::decode(id).ok()?;
    bytes.try_into().ok()
}

fn mode_byte(mode: TicketMode) -> u8 {
    match mode {
        TicketMode::Upload => 1,
        TicketMode::Download => 2,
    }
}

/// Why a ticket was refused (all answered `401 bad_ticket`; the reason is for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// No `Authorization: Bearer` header.
    #[error("no ticket")]
    Missing,
    /// Not a ticket, or its MAC does not verify (altered, or issued before a restart).
    #[error("invalid ticket")]
    Invalid,
    /// Past its expiry.
    #[error("expired ticket")]
    Expired,
    /// Issued for another file or use.
    #[error("ticket for another file or use")]
    WrongScope,
}

impl FileService {
    /// The service for a data dir, with a fresh ticket key.
    pub fn new(data_dir: &Path) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(key.as_mut());
        FileService { dir: data_dir.join("files"), ticket_key: key }
    }

    /// The directory of a file's chunks (the id must be validated).
    fn file_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn mac(&self, body: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.ticket_key.as_ref()).expect("HMAC takes any key length");
        mac.update(TICKET_LABEL);
        mac.update(&[0]);
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// `base64url(file id 16 || account u64 BE || mode u8 || expiry ms u64 BE || HMAC-SHA-256(key, label || 0x00 || those))`.
    pub fn issue(&self, file: &[u8; 16], user: UserId, mode: TicketMode, expires: i64) -> String {
        let mut body = Vec::with_capacity(TICKET_BODY + 32);
        body.extend_from_slice(file);
        body.extend_from_slice(&user.to_be_bytes());
        body.push(mode_byte(mode));
        body.extend_from_slice(&expires.to_be_bytes());
        let mac = self.mac(&body);
        body.extend_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(body)
    }

    /// Check a ticket for `file` and `mode` at `now`; returns the account it was issued to.
    pub fn verify(&self, ticket: &str, file: &[u8; 16], mode: TicketMode, now: i64) -> Result<UserId, TicketError> {
        let raw = URL_SAFE_NO_PAD.decode(ticket.as_bytes()).map_err(|_| TicketError::Invalid)?;
        if raw.len() != TICKET_BODY + 32 {
            return Err(TicketError::Invalid);
        }
        let (body, mac) = raw.split_at(TICKET_BODY);
        let expected = self.mac(body);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], mac)) {
            return Err(TicketError::Invalid);
        }
        let user = i64::from_be_bytes(body[16..24].try_into().map_err(|_| TicketError::Invalid)?);
        let expires = i64::from_be_bytes(body[25..33].try_into().map_err(|_| TicketError::Invalid)?);
        if &body[..16] != file || body[24] != mode_byte(mode) {
            return Err(TicketError::WrongScope);
        }
        if now >= expires {
            return Err(TicketError::Expired);
        }
        Ok(user)
    }
}

fn internal(e: impl std::fmt::Display) -> ErrorFrame {
    tracing::error!(error = %e, "file service failure");
    ErrorFrame::new(ErrorCode::Internal, "the relay could not complete the file operation; try again")
}

fn store_err(e: StoreError) -> ErrorFrame {
    internal(e)
}

/// Plaintext length of chunk `n` of a file.
fn plain_len(size: u64, chunk_size: u64, n: u64) -> u64 {
    size.saturating_sub(n.saturating_mul(chunk_size)).min(chunk_size)
}

fn ticket_frame(state: &RelayState, reference: Option<String>, record: &FileRecord, file: &[u8; 16], user: UserId, mode: TicketMode) -> FrameBody {
    let expires = now_ms().saturating_add(state.config.files.ticket_ttl_secs.saturating_mul(1000).min(i64::MAX as u64) as i64);
    FrameBody::FileTicket(FileTicket {
        reference,
        file: record.id.clone(),
        mode,
        ticket: state.files.issue(file, user, mode, expires),
        expires: expires.max(0) as u64,
        size: record.size.max(0) as u64,
        chunk_size: u32::try_from(record.chunk_size).unwrap_or(u32::MAX),
        chunks: record.chunks.max(0) as u64,
        complete: record.complete,
    })
}

/// `file.begin`: check the limits and the quota, record the upload (or find the one being resumed), issue an upload
/// ticket.
pub async fn begin(state: &RelayState, user: UserId, f: &FileBegin) -> Result<FrameBody, ErrorFrame> {
    let c = &state.config.files;
    let file = file_bytes(&f.file).ok_or_else(|| ErrorFrame::new(ErrorCode::InvalidField, "file must be 32 lowercase hex digits"))?;
    if f.size > c.max_file_bytes {
        return Err(ErrorFrame::new(
            ErrorCode::FileTooLarge,
            format!("the file has {} bytes; this relay accepts files of at most {} bytes", f.size, c.max_file_bytes),
        ));
    }
    if f.chunk_size > c.max_chunk_bytes || f.chunk_size < c.min_chunk_bytes {
        return Err(ErrorFrame::new(
            ErrorCode::FileTooLarge,
            format!("chunk size {} is outside this relay's limits ({} to {} bytes)", f.chunk_size, c.min_chunk_bytes, c.max_chunk_bytes),
        ));
    }
    let chunks = f.size.div_ceil(u64::from(f.chunk_size)).max(1);
    if f.chunks != chunks {
        return Err(ErrorFrame::new(ErrorCode::InvalidField, format!("chunks must be {chunks} for this size and chunk size")));
    }
    let now = now_ms();
    let expiry = i64::try_from(c.expiry_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let record = FileRecord {
        id: f.file.clone(),
        owner: user,
        size: f.size as i64,
        chunk_size: i64::from(f.chunk_size),
        chunks: chunks as i64,
        complete: false,
        created_at: now,
        expires_at: now.saturating_add(expiry),
    };
    let quota = i64::try_from(c.quota_bytes).unwrap_or(i64::MAX);
    let record = match state.store.create_file(&record, quota, now).await.map_err(store_err)? {
        FileCreated::Created => {
            tracing::info!(user, size = f.size, chunks, "file upload begun");
            record
        }
        FileCreated::Exists(existing)
            if existing.owner == user
                && existing.size == record.size
                && existing.chunk_size == record.chunk_size
                && existing.expires_at > now =>
        {
            existing
        }
        FileCreated::Exists(_) => {
            return Err(ErrorFrame::new(ErrorCode::FileConflict, "this file id is taken by another upload; start again with a new file id"));
        }
        FileCreated::OverQuota { used } => {
            return Err(ErrorFrame::new(
                ErrorCode::OverQuota,
                format!(
                    "over quota: your files on this relay hold {used} of {} bytes and this one needs {}; wait for old files to expire",
                    c.quota_bytes, f.size
                ),
            ));
        }
    };
    Ok(ticket_frame(state, f.id.clone(), &record, &file, user, TicketMode::Upload))
}

/// A live record, completed if every chunk is on disk now.
async fn live_record(state: &RelayState, id: &str) -> Result<FileRecord, ErrorFrame> {
    let now = now_ms();
    let mut record = match state.store.file(id).await.map_err(store_err)? {
        Some(r) if r.expires_at > now => r,
        _ => return Err(ErrorFrame::new(ErrorCode::UnknownFile, "no such file on this relay (never uploaded, or expired)")),
    };
    if !record.complete {
        let chunks = record.chunks.max(0) as u64;
        let dir = state.files.file_dir(id);
        let present = tokio::task::spawn_blocking(move || list_chunks(&dir, chunks)).await.map_err(internal)?.map_err(internal)?;
        if present.len() as u64 == chunks {
            let expiry = i64::try_from(state.config.files.expiry_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            let expires = now.saturating_add(expiry);
            state.store.complete_file(id, expires).await.map_err(store_err)?;
            record.complete = true;
            record.expires_at = expires;
            tracing::info!(owner = record.owner, size = record.size, "file upload complete");
        }
    }
    Ok(record)
}

/// `file.fetch`: any authenticated account that knows the file id may download a complete file.
pub async fn fetch(state: &RelayState, user: UserId, f: &FileFetch) -> Result<FrameBody, ErrorFrame> {
    let file = file_bytes(&f.file).ok_or_else(|| ErrorFrame::new(ErrorCode::InvalidField, "file must be 32 lowercase hex digits"))?;
    let record = live_record(state, &f.file).await?;
    if !record.complete {
        return Err(ErrorFrame::new(ErrorCode::FileIncomplete, "the file's upload has not finished yet; try again later"));
    }
    Ok(ticket_frame(state, f.id.clone(), &record, &file, user, TicketMode::Download))
}

// ----- HTTP -----

/// The chunk endpoints, under `/v1/files/`.
pub(crate) fn routes() -> Router<Arc<RelayState>> {
    Router::new()
        .route("/v1/files/{file}", get(status))
        .route("/v1/files/{file}/chunks/{n}", put(put_chunk).get(get_chunk))
}

fn http_error(code: ErrorCode, message: impl Into<String>) -> Response {
    let status = match code {
        ErrorCode::BadTicket => StatusCode::UNAUTHORIZED,
        ErrorCode::UnknownFile => StatusCode::NOT_FOUND,
        ErrorCode::FileIncomplete | ErrorCode::FileConflict => StatusCode::CONFLICT,
        ErrorCode::ChunkOutOfRange => StatusCode::RANGE_NOT_SATISFIABLE,
        ErrorCode::FileTooLarge | ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::ChunkRejected | ErrorCode::InvalidField => StatusCode::BAD_REQUEST,
        ErrorCode::OverQuota => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, axum::Json(ErrorFrame::new(code, message))).into_response()
}

fn frame_error(e: ErrorFrame) -> Response {
    http_error(e.code, e.message)
}

/// Check the bearer ticket against the file and use; returns the file id bytes and the account.
fn authorise(state: &RelayState, headers: &HeaderMap, file: &str, modes: &[TicketMode]) -> Result<([u8; 16], UserId), ErrorFrame> {
    let Some(bytes) = file_bytes(file) else {
        return Err(ErrorFrame::new(ErrorCode::UnknownFile, "no such file on this relay"));
    };
    let ticket = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(TicketError::Missing);
    let now = now_ms();
    let mut why = TicketError::Missing;
    if let Ok(ticket) = ticket {
        for mode in modes {
            match state.files.verify(ticket, &bytes, *mode, now) {
                Ok(user) => return Ok((bytes, user)),
                Err(e) => why = e,
            }
        }
    }
    state.metrics.errors.get_or_create(&crate::metrics::CodeLabel { code: "bad_ticket" }).inc();
    Err(ErrorFrame::new(ErrorCode::BadTicket, format!("{why}: ask for a new ticket over the IMF session (file.begin or file.fetch)")))
}

fn chunk_index(n: &str, record: &FileRecord) -> Result<u64, ErrorFrame> {
    let chunks = record.chunks.max(0) as u64;
    match n.parse::<u64>() {
        Ok(i) if i < chunks => Ok(i),
        _ => Err(ErrorFrame::new(ErrorCode::ChunkOutOfRange, format!("chunk index {n:.20} is outside the file (chunks 0 to {})", chunks.saturating_sub(1)))),
    }
}

/// The status a client resumes from.
#[derive(Debug, Serialize)]
struct FileStatus {
    file: String,
    size: u64,
    chunk_size: u64,
    chunks: u64,
    complete: bool,
    /// Stored chunks as half-open ranges `[start, end)`.
    present: Vec<[u64; 2]>,
}

fn ranges(present: &[u64]) -> Vec<[u64; 2]> {
    let mut out: Vec<[u64; 2]> = Vec::new();
    for &n in present {
        match out.last_mut() {
            Some(last) if last[1] == n => last[1] = n + 1,
            _ => out.push([n, n + 1]),
        }
    }
    out
}

/// `GET /v1/files/{file}`: which chunks are stored (upload or download ticket).
async fn status(State(state): State<Arc<RelayState>>, UrlPath(file): UrlPath<String>, headers: HeaderMap) -> Response {
    if let Err(e) = authorise(&state, &headers, &file, &[TicketMode::Upload, TicketMode::Download]) {
        return frame_error(e);
    }
    let record = match live_record(&state, &file).await {
        Ok(r) => r,
        Err(e) => return frame_error(e),
    };
    let chunks = record.chunks.max(0) as u64;
    let present = if record.complete {
        vec![[0, chunks]]
    } else {
        let dir = state.files.file_dir(&file);
        match tokio::task::spawn_blocking(move || list_chunks(&dir, chunks)).await {
            Ok(Ok(p)) => ranges(&p),
            Ok(Err(e)) => return frame_error(internal(e)),
            Err(e) => return frame_error(internal(e)),
        }
    };
    axum::Json(FileStatus {
        file: record.id,
        size: record.size.max(0) as u64,
        chunk_size: record.chunk_size.max(0) as u64,
        chunks,
        complete: record.complete,
        present,
    })
    .into_response()
}

/// Indices of the chunks stored for a file (renamed into place, so fsynced), below `chunks`.
fn list_chunks(dir: &Path, chunks: u64) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        if let Some(n) = entry?.file_name().to_str().and_then(|n| n.parse::<u64>().ok())
            && n < chunks
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Write a chunk durably: temporary file, fsync, rename, fsync the directory.
fn write_chunk(dir: &Path, n: u64, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{n}.part"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(n.to_string()))?;
    std::fs::File::open(dir)?.sync_all()
}

/// `PUT /v1/files/{file}/chunks/{n}`: store one sealed chunk (upload ticket of the file's owner). `204` once the
/// chunk is on disk.
async fn put_chunk(State(state): State<Arc<RelayState>>, UrlPath((file, n)): UrlPath<(String, String)>, headers: HeaderMap, body: Body) -> Response {
    let user = match authorise(&state, &headers, &file, &[TicketMode::Upload]) {
        Ok((_, user)) => user,
        Err(e) => return frame_error(e),
    };
    let record = match state.store.file(&file).await {
        Ok(Some(r)) if r.expires_at > now_ms() && r.owner == user => r,
        Ok(_) => return http_error(ErrorCode::UnknownFile, "no such upload on this relay (expired, or not yours)"),
        Err(e) => return frame_error(store_err(e)),
    };
    let n = match chunk_index(&n, &record) {
        Ok(n) => n,
        Err(e) => return frame_error(e),
    };
    let expected = plain_len(record.size.max(0) as u64, record.chunk_size.max(1) as u64, n) + TAG_LEN;
    let limit = usize::try_from(expected).unwrap_or(usize::MAX);
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return http_error(ErrorCode::ChunkRejected, format!("chunk {n} must be exactly {expected} bytes (or the upload broke off)")),
    };
    if bytes.len() as u64 != expected {
        return http_error(ErrorCode::ChunkRejected, format!("chunk {n} has {} bytes; it must be exactly {expected}", bytes.len()));
    }
    let dir = state.files.file_dir(&file);
    match tokio::task::spawn_blocking(move || write_chunk(&dir, n, &bytes)).await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => frame_error(internal(e)),
        Err(e) => frame_error(internal(e)),
    }
}

/// `GET /v1/files/{file}/chunks/{n}`: one sealed chunk of a complete file (download ticket).
async fn get_chunk(State(state): State<Arc<RelayState>>, UrlPath((file, n)): UrlPath<(String, String)>, headers: HeaderMap) -> Response {
    if let Err(e) = authorise(&state, &headers, &file, &[TicketMode::Download]) {
        return frame_error(e);
    }
    let record = match state.store.file(&file).await {
        Ok(Some(r)) if r.expires_at > now_ms() => r,
        Ok(_) => return http_error(ErrorCode::UnknownFile, "no such file on this relay (never uploaded, or expired)"),
        Err(e) => return frame_error(store_err(e)),
    };
    if !record.complete {
        return http_error(ErrorCode::FileIncomplete, "the file's upload has not finished yet");
    }
    let n = match chunk_index(&n, &record) {
        Ok(n) => n,
        Err(e) => return frame_error(e),
    };
    let path = state.files.file_dir(&file).join(n.to_string());
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => http_error(ErrorCode::FileIncomplete, format!("chunk {n} is missing on the relay")),
        Err(e) => frame_error(internal(e)),
    }
}

// ----- expiry -----

/// Delete expired files (their chunks first, then the record) every `sweep_interval_secs`.
pub fn spawn_sweeper(state: Arc<RelayState>) {
    let interval = std::time::Duration::from_secs(state.config.files.sweep_interval_secs);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match sweep(&state).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "expired files deleted"),
                Err(e) => tracing::warn!(error = %e, "file sweep failed; retrying at the next interval"),
            }
        }
    });
}

/// One sweep: returns how many files were deleted.
pub async fn sweep(state: &RelayState) -> Result<usize, String> {
    let mut deleted = 0;
    loop {
        let expired = state.store.expired_files(now_ms(), SWEEP_BATCH).await.map_err(|e| e.to_string())?;
        if expired.is_empty() {
            return Ok(deleted);
        }
        let batch = expired.len() as i64;
        for id in expired {
            if file_bytes(&id).is_none() {
                // Not an id this relay would have made a directory for: forget the record only.
                state.store.delete_file(&id).await.map_err(|e| e.to_string())?;
                continue;
            }
            let dir = state.files.file_dir(&id);
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.to_string()),
            }
            state.store.delete_file(&id).await.map_err(|e| e.to_string())?;
            deleted += 1;
        }
        if batch < SWEEP_BATCH {
            return Ok(deleted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_bound_to_file_use_and_time() {
        let service = FileService::new(Path::new("/nonexistent"));
        let file = [7u8; 16];
        let t = service.issue(&file, 42, TicketMode::Upload, 1_000);
        assert_eq!(service.verify(&t, &file, TicketMode::Upload, 999), Ok(42));
        assert_eq!(service.verify(&t, &file, TicketMode::Upload, 1_000), Err(TicketError::Expired));
        assert_eq!(service.verify(&t, &file, TicketMode::Download, 999), Err(TicketError::WrongScope));
        assert_eq!(service.verify(&t, &[8u8; 16], TicketMode::Upload, 999), Err(TicketError::WrongScope));
        // Altered, or from another relay process (another key).
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[20] ^= 1;
        assert_eq!(service.verify(&URL_SAFE_NO_PAD.encode(&raw), &file, TicketMode::Upload, 999), Err(TicketError::Invalid));
        let other = FileService::new(Path::new("/nonexistent"));
        assert_eq!(other.verify(&t, &file, TicketMode::Upload, 999), Err(TicketError::Invalid));
        assert_eq!(service.verify("not a ticket", &file, TicketMode::Upload, 999), Err(TicketError::Invalid));
    }

    #[test]
    fn present_chunks_become_ranges() {
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), vec![[0, 3], [5, 6], [7, 9]]);
        assert!(ranges(&[]).is_empty());
        assert_eq!(plain_len(2500, 1024, 2), 452);
        assert_eq!(plain_len(0, 1024, 0), 0);
    }

    #[test]
    fn config_limits_are_checked() {
        assert!(FilesConfig::default().validate().is_ok());
        assert!(FilesConfig { min_chunk_bytes: 10, ..FilesConfig::default() }.validate().is_err());
        assert!(FilesConfig { max_chunk_bytes: 128 << 20, ..FilesConfig::default() }.validate().is_err());
        assert!(FilesConfig { expiry_secs: 0, ..FilesConfig::default() }.validate().is_err());
    }
}
