//! End-to-end encrypted, resumable file transfer for front ends: [`Client::send_file`], [`Client::get_file`],
//! [`Client::files`], and [`audio_info`] for voice messages.
//!
//! Sending: the file is hashed, a random file id and key are drawn, chunks are sealed (imfree-crypto's
//! [`imfree_crypto::file`]) and PUT to the relay's chunk endpoints with a ticket obtained over the IMF session
//! (`file.begin`); once the relay holds every chunk, the descriptor goes to the recipient inside a normal end-to-end
//! message ([`FILE_MIME`]). Receiving: the descriptor arrives like any message; [`Client::get_file`] fetches a
//! ticket (`file.fetch`), downloads and opens each chunk into `<dest>.imfree-part`, checks the SHA-256, and only then
//! renames it to its final name.
//!
//! Resuming: both directions record their state in the local store (migration 0007). A rerun — after a dropped
//! connection, a killed client or a restarted relay — asks the relay which chunks it holds (uploads) or continues
//! after the last chunk recorded as written (downloads). Within one run, network failures are retried with backoff
//! for [`TransferOptions::retry_for`].
//!
//! What it must not do: log file names, keys or contents; write an unverified byte under the final name; re-encrypt
//! a changed file under a key and nonces already used (a changed file starts a new upload).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use imfree_crypto::file::{ChunkCipher, FileDescriptor, FileId, FileKey, KeyMaterial, PasswordWrap, chunk_count};
use imfree_crypto::keystore::KdfParams;
use imfree_proto::content::Content;
use imfree_proto::file::{FileBegin, FileFetch, FileTicket};
use imfree_proto::{ErrorCode, ErrorFrame, FrameBody};
use rand_core::OsRng;
use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio::net::TcpStream;

pub use imfree_crypto::file::FILE_MIME;

use crate::engine::{Client, Session, new_envelope_id};
use crate::{ClientError, now_ms};

/// Default plaintext bytes per chunk (4 MiB): few requests per file, little memory per chunk in flight.
pub const DEFAULT_CHUNK_SIZE: u32 = 4 << 20;
/// Sealed chunks in flight between the sealing thread and the network (and downloads prefetched).
const PIPELINE: usize = 3;
/// A download makes its partial file durable, and records how far it got, about this often (bytes): each fsync stalls
/// the pipeline, and a resume after a crash redoes at most this much.
const DOWNLOAD_SYNC_BYTES: u64 = 32 << 20;
/// Connections a download fetches chunks over at once.
const DOWNLOAD_CONNECTIONS: usize = 3;
/// Connections an upload uses at once: each chunk PUT waits for the relay's fsync, so a few in flight keep the link
/// busy meanwhile.
const UPLOAD_CONNECTIONS: usize = 3;
/// How long one HTTP request may take before the transfer counts it as a network failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Suffix of a download's partial file.
pub const PARTIAL_SUFFIX: &str = ".imfree-part";

/// Observes a transfer (the CLI draws a progress bar). Called from the transfer's task.
pub trait TransferProgress: Send + Sync {
    /// The transfer starts: `total` bytes, of which `done` were transferred by an earlier run.
    fn begin(&self, _total: u64, _done: u64) {}
    /// `bytes` more are done.
    fn advance(&self, _bytes: u64) {}
    /// The transfer ended (successfully or not).
    fn finish(&self) {}
}

/// No progress reporting.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl TransferProgress for NoProgress {}

/// How to send or fetch a file.
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// Password protection: the file key is wrapped under an Argon2id key from this password (sending), or the
    /// password to unwrap it (receiving).
    pub password: Option<String>,
    /// Plaintext bytes per chunk (sending).
    pub chunk_size: u32,
    /// Content type (sending); guessed from the extension when `None`.
    pub mime: Option<String>,
    /// Send as a voice message with this playing time (sending).
    pub voice_duration_ms: Option<u64>,
    /// Keep retrying network failures for this long within one call.
    pub retry_for: Duration,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions { password: None, chunk_size: DEFAULT_CHUNK_SIZE, mime: None, voice_duration_ms: None, retry_for: Duration::from_secs(60) }
    }
}

/// A file sent (or whose sending resumed and finished).
#[derive(Debug, Clone)]
pub struct SentFile {
    /// The id of the end-to-end message carrying the descriptor (what recipients pass to `file get`).
    pub message_id: String,
    /// The file id on the relay.
    pub file_id: String,
    /// Plaintext size.
    pub size: u64,
    /// Chunks the relay already held when this call started (non-zero: a resumed upload).
    pub resumed_chunks: u64,
    /// Whether the relay accepted the message yet (otherwise it is queued in the outbox).
    pub delivered: bool,
}

/// A file fetched.
#[derive(Debug, Clone)]
pub struct ReceivedFile {
    /// Where it was written.
    pub path: PathBuf,
    /// Plaintext size.
    pub size: u64,
    /// Chunks a previous run had already written (non-zero: a resumed download).
    pub resumed_chunks: u64,
    /// It had been downloaded before; nothing was transferred.
    pub already: bool,
}

/// A file message of a conversation, as [`Client::files`] lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileEntry {
    /// The message id (for `file get`).
    pub message_id: String,
    /// Sender.
    pub from: String,
    /// Time (Unix ms).
    pub ts: i64,
    /// Sent by this user.
    pub outgoing: bool,
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Content type.
    pub mime: String,
    /// A voice message.
    pub voice: bool,
    /// Playing time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Needs a password.
    pub password: bool,
    /// Where this device saved it, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_as: Option<String>,
}

/// The `file` object of a file message, for front ends (no key material).
pub fn file_summary(descriptor: &FileDescriptor) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": descriptor.id.to_string(),
        "name": descriptor.name,
        "size": descriptor.size,
        "mime": descriptor.mime,
        "chunks": descriptor.chunks,
        "sha256": hex::encode(descriptor.sha256),
        "password": descriptor.needs_password(),
    });
    if descriptor.voice {
        v["voice"] = true.into();
    }
    if let Some(d) = descriptor.duration_ms {
        v["duration_ms"] = d.into();
    }
    v
}

fn e2e(e: imfree_crypto::file::FileError) -> ClientError {
    ClientError::E2e(e.to_string())
}

fn io(what: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Io(format!("{what}: {e}"))
}

fn local(what: &str, path: &Path, e: std::io::Error) -> ClientError {
    ClientError::Config(format!("{what} {}: {e}", path.display()))
}

fn db(e: sqlx::Error) -> ClientError {
    ClientError::Store(e.to_string())
}

/// Failures worth another attempt: the network, a ticket that expired or died with a relay restart, a relay that
/// is restarting.
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Io(_) => true,
        ClientError::Refused { code, .. } => matches!(code, ErrorCode::BadTicket | ErrorCode::Internal | ErrorCode::ShuttingDown | ErrorCode::RateLimited),
        _ => false,
    }
}

/// A common content type from a file name's extension.
pub fn guess_mime(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "html" | "htm" => "text/html",
        "csv" => "text/csv",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "opus" => "audio/ogg; codecs=opus",
        "wav" => "audio/wav",
        _ => "application/octet-stream",
    }
}

// ----- voice messages -----

/// The content type and playing time (ms) of an audio file: WAV (from the `fmt ` byte rate and the `data` size) or
/// Ogg Opus / Vorbis (from the last page's granule position). Reads only the header and the last 64 KiB.
pub fn audio_info(path: &Path) -> Result<(String, u64), ClientError> {
    let mut f = std::fs::File::open(path).map_err(|e| local("cannot open", path, e))?;
    let len = f.metadata().map_err(|e| local("cannot read", path, e))?.len();
    let mut head = vec![0u8; 4096.min(len as usize)];
    f.read_exact(&mut head).map_err(|e| local("cannot read", path, e))?;
    let bad = |why: &str| ClientError::Config(format!("{} is not a voice recording imfree understands ({why}): use Ogg Opus or WAV", path.display()));
    if head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WAVE") {
        let duration = wav_duration(&head, len).ok_or_else(|| bad("WAV header without fmt or data"))?;
        return Ok(("audio/wav".into(), duration));
    }
    if head.starts_with(b"OggS") {
        let (mime, rate, pre_skip) = ogg_stream_info(&head).ok_or_else(|| bad("Ogg stream that is neither Opus nor Vorbis"))?;
        let tail_len = len.min(65_536);
        f.seek(SeekFrom::Start(len - tail_len)).map_err(|e| local("cannot read", path, e))?;
        let mut tail = vec![0u8; tail_len as usize];
        f.read_exact(&mut tail).map_err(|e| local("cannot read", path, e))?;
        let granule = last_granule(&tail).ok_or_else(|| bad("no Ogg page with a granule position at the end"))?;
        let samples = granule.saturating_sub(pre_skip);
        return Ok((mime, samples.saturating_mul(1000) / rate.max(1)));
    }
    Err(bad("unknown format"))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Walk the RIFF chunks: `fmt ` gives the byte rate, `data` the length of the samples.
fn wav_duration(head: &[u8], file_len: u64) -> Option<u64> {
    let mut at = 12;
    let mut byte_rate = None;
    while at + 8 <= head.len() {
        let id = &head[at..at + 4];
        let size = le_u32(head, at + 4)? as u64;
        if id == b"fmt " {
            byte_rate = Some(le_u32(head, at + 16)? as u64);
        } else if id == b"data" {
            let start = at as u64 + 8;
            // Streamed WAVs write 0 or 0xFFFFFFFF: the samples then run to the end of the file.
            let data = if size == 0 || size == u32::MAX as u64 { file_len.saturating_sub(start) } else { size.min(file_len.saturating_sub(start)) };
            let rate = byte_rate.filter(|r| *r > 0)?;
            return Some(data.saturating_mul(1000) / rate);
        }
        at = at.checked_add(8 + size as usize + (size as usize & 1))?;
    }
    None
}

/// From the first Ogg page: the codec's content type, sample rate of the granule positions, and pre-skip.
fn ogg_stream_info(head: &[u8]) -> Option<(String, u64, u64)> {
    let segments = *head.get(26)? as usize;
    let packet = head.get(27 + segments..)?;
    if packet.starts_with(b"OpusHead") {
        let pre_skip = u16::from_le_bytes(packet.get(10..12)?.try_into().ok()?) as u64;
        // Opus granule positions always count 48 kHz samples, whatever the input rate was.
        return Some(("audio/ogg; codecs=opus".into(), 48_000, pre_skip));
    }
    if packet.starts_with(b"\x01vorbis") {
        let rate = le_u32(packet, 12)? as u64;
        return Some(("audio/ogg; codecs=vorbis".into(), rate, 0));
    }
    None
}

/// The granule position of the last complete Ogg page header in `tail`.
fn last_granule(tail: &[u8]) -> Option<u64> {
    let mut at = tail.len().checked_sub(27)?;
    loop {
        if &tail[at..at + 4] == b"OggS" && tail[at + 4] == 0 {
            let granule = i64::from_le_bytes(tail[at + 6..at + 14].try_into().ok()?);
            if granule >= 0 {
                return Some(granule as u64);
            }
        }
        at = at.checked_sub(1)?;
    }
}

// ----- the relay's chunk endpoints -----

/// One HTTP/1.1 connection to the relay's `/v1/files/` endpoints (TLS with the pinned certificate on `wss://`); also
/// used for the sso plugin's provider list.
pub(crate) struct RelayHttp {
    sender: http1::SendRequest<Full<Bytes>>,
    authority: String,
}

/// The relay's answer to `GET /v1/files/{file}`.
#[derive(Debug, serde::Deserialize)]
struct RelayFileStatus {
    chunks: u64,
    complete: bool,
    present: Vec<[u64; 2]>,
}

pub(crate) fn split_server(server: &str) -> Result<(bool, String), ClientError> {
    let server = server.trim_end_matches('/');
    let (tls, rest) = if let Some(r) = server.strip_prefix("wss://") {
        (true, r)
    } else if let Some(r) = server.strip_prefix("ws://") {
        (false, r)
    } else {
        return Err(ClientError::Config(format!("server URL must be wss://HOST:PORT, not {server:?}")));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(ClientError::Config(format!("server URL {server:?} names no host")));
    }
    let authority = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    };
    Ok((tls, authority))
}

impl RelayHttp {
    pub(crate) async fn connect(server: &str, tls_pin: Option<&str>) -> Result<Self, ClientError> {
        let (tls, authority) = split_server(server)?;
        let tcp = tokio::time::timeout(crate::connection::CONNECT_TIMEOUT, TcpStream::connect(&authority))
            .await
            .map_err(|_| ClientError::Io(format!("timed out connecting to {server}")))?
            .map_err(|e| io(&format!("cannot connect to {server}"), e))?;
        let _ = tcp.set_nodelay(true);
        let sender = if tls {
            let (config, observed) = crate::tls::client_config(tls_pin);
            let host = authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(&authority).trim_start_matches('[').trim_end_matches(']');
            let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| ClientError::Config(format!("server name {host:?}: {e}")))?;
            let stream = match tokio_rustls::TlsConnector::from(config).connect(name, tcp).await {
                Ok(s) => s,
                Err(e) => {
                    if let (Some(pinned), Some(presented)) = (tls_pin, observed.get())
                        && crate::tls::normalise_fingerprint(pinned) != presented
                    {
                        return Err(ClientError::CertificateChanged { pinned: pinned.to_owned(), presented });
                    }
                    return Err(io(&format!("TLS to {server}"), e));
                }
            };
            let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(|e| io("HTTP handshake", e))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            sender
        } else {
            let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await.map_err(|e| io("HTTP handshake", e))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            sender
        };
        Ok(RelayHttp { sender, authority })
    }

    /// One request; `ticket` (when not empty) goes in `Authorization: Bearer`.
    pub(crate) async fn call(&mut self, method: hyper::Method, path: &str, ticket: &str, body: Bytes, max_response: usize) -> Result<Bytes, ClientError> {
        let exchange = async {
            self.sender.ready().await.map_err(|e| io("the relay closed the file connection", e))?;
            let mut request = hyper::Request::builder().method(method).uri(path).header(hyper::header::HOST, &self.authority);
            if !ticket.is_empty() {
                request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {ticket}"));
            }
            let request = request
                .body(Full::new(body))
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            let response = self.sender.send_request(request).await.map_err(|e| io("file transfer", e))?;
            let status = response.status();
            let limit = if status.is_success() { max_response } else { 64 * 1024 };
            let bytes = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|e| io("file transfer (reading the answer)", e))?
                .to_bytes();
            if status.is_success() {
                return Ok(bytes);
            }
            Err(match serde_json::from_slice::<ErrorFrame>(&bytes) {
                Ok(e) => ClientError::Refused { code: e.code, message: e.message },
                Err(_) => ClientError::Protocol(format!("the relay answered HTTP {status} to {path}")),
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.map_err(|_| ClientError::Io("a file request timed out".into()))?
    }

    async fn status(&mut self, file: &str, ticket: &str) -> Result<RelayFileStatus, ClientError> {
        let body = self.call(hyper::Method::GET, &format!("/v1/files/{file}"), ticket, Bytes::new(), 1 << 20).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(format!("file status: {e}")))
    }

    async fn put_chunk(&mut self, file: &str, n: u64, ticket: &str, sealed: Vec<u8>) -> Result<(), ClientError> {
        self.call(hyper::Method::PUT, &format!("/v1/files/{file}/chunks/{n}"), ticket, Bytes::from(sealed), 64 * 1024).await.map(|_| ())
    }

    async fn get_chunk(&mut self, file: &str, n: u64, ticket: &str, max: usize) -> Result<Bytes, ClientError> {
        self.call(hyper::Method::GET, &format!("/v1/files/{file}/chunks/{n}"), ticket, Bytes::new(), max + 1).await
    }
}

// ----- the IMF session side -----

impl Session<'_> {
    /// `file.begin`: reserve (or resume) an upload on the relay; returns an upload ticket.
    pub async fn file_begin(&mut self, file: &str, size: u64, chunk_size: u32) -> Result<FileTicket, ClientError> {
        let id = new_envelope_id();
        let begin = FileBegin { id: Some(id.clone()), file: file.into(), size, chunk_size, chunks: chunk_count(size, chunk_size) };
        match self.request(FrameBody::FileBegin(begin), &id).await? {
            FrameBody::FileTicket(t) => Ok(t),
            _ => Err(ClientError::Protocol("unexpected answer to file.begin".into())),
        }
    }

    /// `file.fetch`: a download ticket for a complete file.
    pub async fn file_fetch(&mut self, file: &str) -> Result<FileTicket, ClientError> {
        let id = new_envelope_id();
        match self.request(FrameBody::FileFetch(FileFetch { id: Some(id.clone()), file: file.into() }), &id).await? {
            FrameBody::FileTicket(t) => Ok(t),
            _ => Err(ClientError::Protocol("unexpected answer to file.fetch".into())),
        }
    }
}

// ----- local transfer state -----

struct UploadRow {
    file_id: String,
    message_id: String,
    key: FileKey,
    descriptor: FileDescriptor,
}

fn modified_ms(meta: &std::fs::Metadata) -> i64 {
    meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn hash_file(path: &Path, limit: Option<u64>) -> std::io::Result<[u8; 32]> {
    let f = std::fs::File::open(path)?;
    let mut reader: Box<dyn Read> = match limit {
        Some(n) => Box::new(f.take(n)),
        None => Box::new(f),
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

impl Client {
    async fn unfinished_upload(&self, path: &str, to: &str, len: u64, modified: i64) -> Result<Option<UploadRow>, ClientError> {
        let pool = self.store().pool();
        let row = sqlx::query(
            "SELECT file_id, message_id, file_len, modified_ms, file_key, descriptor FROM file_uploads
             WHERE path = ? AND recipient = ? AND status = 'uploading' ORDER BY updated_at DESC LIMIT 1",
        )
        .bind(path)
        .bind(to)
        .fetch_optional(pool)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let file_id: String = row.get("file_id");
        let same = row.get::<i64, _>("file_len") == len as i64 && row.get::<i64, _>("modified_ms") == modified;
        let key = self.store().unseal(Some(row.get("file_key")))?.unwrap_or_default();
        let descriptor = self.store().unseal(Some(row.get("descriptor")))?.unwrap_or_default();
        let parsed = <[u8; 32]>::try_from(key.as_slice()).ok().zip(FileDescriptor::decode(&descriptor).ok());
        match parsed {
            Some((key, descriptor)) if same => Ok(Some(UploadRow { file_id, message_id: row.get("message_id"), key: FileKey::from_bytes(key), descriptor })),
            _ => {
                self.set_upload_status(&file_id, "abandoned").await?;
                Ok(None)
            }
        }
    }

    async fn set_upload_status(&self, file_id: &str, status: &str) -> Result<(), ClientError> {
        sqlx::query("UPDATE file_uploads SET status = ?, updated_at = ? WHERE file_id = ?")
            .bind(status)
            .bind(now_ms())
            .bind(file_id)
            .execute(self.store().pool())
            .await
            .map_err(db)
            .map(|_| ())
    }

    /// Send a file (or continue sending it, when an earlier call for the same path and recipient did not finish and
    /// the file is unchanged). `to` is a user name or `group:<id>`. Returns once the relay holds every chunk and the
    /// descriptor message is accepted (or queued in the outbox, when the relay went away at that last step).
    pub async fn send_file(&self, to: &str, path: &Path, options: &TransferOptions, progress: &dyn TransferProgress) -> Result<SentFile, ClientError> {
        let meta = std::fs::metadata(path).map_err(|e| local("cannot read", path, e))?;
        if !meta.is_file() {
            return Err(ClientError::Config(format!("{} is not a regular file", path.display())));
        }
        let canonical = std::fs::canonicalize(path).map_err(|e| local("cannot resolve", path, e))?;
        let canonical_text = canonical.to_string_lossy().into_owned();
        let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| ClientError::Config(format!("{} has no usable file name", path.display())))?.to_owned();
        imfree_crypto::file::validate_name(&name).map_err(e2e)?;
        let len = meta.len();
        let modified = modified_ms(&meta);

        let mut upload = self.unfinished_upload(&canonical_text, to, len, modified).await?;
        if let Some(u) = &upload {
            // Same length and time stamp; the hash decides, so that chunks are never sealed twice with different
            // contents under one key and nonce.
            let hashed = {
                let p = canonical.clone();
                tokio::task::spawn_blocking(move || hash_file(&p, None)).await.map_err(|e| ClientError::Io(e.to_string()))?
            };
            if hashed.ok() != Some(u.descriptor.sha256) {
                self.set_upload_status(&u.file_id, "abandoned").await?;
                upload = None;
            }
        }
        let upload = match upload {
            Some(u) => {
                tracing::info!(size = len, "resuming an upload");
                u
            }
            None => self.new_upload(to, &canonical, &canonical_text, name, len, modified, options).await?,
        };

        let resumed_chunks = self.upload_chunks(&canonical, &upload, options, progress).await?;

        // Every chunk is on the relay: the descriptor goes out end-to-end encrypted (once, under its fixed id).
        if self.store().message(&upload.message_id).await?.is_none() {
            let content = Content::new(FILE_MIME, &upload.descriptor.encode(), None);
            self.compose_with_id(&upload.message_id, to, &content).await?;
        }
        self.set_upload_status(&upload.file_id, "sent").await?;
        let delivered = match self.connect_transfer().await {
            Ok(mut session) => {
                let r = session.sync_outbox(Duration::from_secs(30)).await;
                session.close().await;
                r.is_ok()
            }
            Err(ClientError::Io(_)) => false,
            Err(e) => return Err(e),
        };
        let failed = self.store().message(&upload.message_id).await?.is_some_and(|m| m.status == "failed");
        if failed {
            return Err(ClientError::Refused {
                code: ErrorCode::UnknownRecipient,
                message: format!("the file is on the relay, but the message {} carrying it was refused (is {to:?} a user or a group you are in?)", upload.message_id),
            });
        }
        Ok(SentFile { message_id: upload.message_id, file_id: upload.file_id, size: len, resumed_chunks, delivered })
    }

    #[allow(clippy::too_many_arguments)]
    async fn new_upload(
        &self,
        to: &str,
        path: &Path,
        path_text: &str,
        name: String,
        len: u64,
        modified: i64,
        options: &TransferOptions,
    ) -> Result<UploadRow, ClientError> {
        let sha256 = {
            let p = path.to_path_buf();
            tokio::task::spawn_blocking(move || hash_file(&p, None))
                .await
                .map_err(|e| ClientError::Io(e.to_string()))?
                .map_err(|e| local("cannot read", path, e))?
        };
        let id = FileId::generate(&mut OsRng);
        let key = FileKey::generate(&mut OsRng);
        let key_material = match &options.password {
            Some(pw) => {
                let (key, pw) = (key.clone(), pw.clone());
                let wrap = tokio::task::spawn_blocking(move || PasswordWrap::wrap(&mut OsRng, &key, id, pw.as_bytes(), KdfParams::OWASP))
                    .await
                    .map_err(|e| ClientError::Io(e.to_string()))?
                    .map_err(e2e)?;
                KeyMaterial::Password(wrap)
            }
            None => KeyMaterial::Plain(key.clone()),
        };
        let descriptor = FileDescriptor {
            id,
            mime: options.mime.clone().unwrap_or_else(|| guess_mime(&name).to_owned()),
            name,
            size: len,
            chunk_size: options.chunk_size,
            chunks: chunk_count(len, options.chunk_size),
            sha256,
            key: key_material,
            voice: options.voice_duration_ms.is_some(),
            duration_ms: options.voice_duration_ms,
        };
        descriptor.validate().map_err(e2e)?;
        let row = UploadRow { file_id: id.to_string(), message_id: new_envelope_id(), key, descriptor };
        sqlx::query(
            "INSERT INTO file_uploads (file_id, message_id, recipient, path, file_len, modified_ms, file_key, descriptor, status, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'uploading', ?)",
        )
        .bind(&row.file_id)
        .bind(&row.message_id)
        .bind(to)
        .bind(path_text)
        .bind(len as i64)
        .bind(modified)
        .bind(self.store().seal(row.key.as_bytes()))
        .bind(self.store().seal(&row.descriptor.encode()))
        .bind(now_ms())
        .execute(self.store().pool())
        .await
        .map_err(db)?;
        Ok(row)
    }

    /// Upload what the relay lacks, retrying network failures; returns how many chunks it held at the start.
    async fn upload_chunks(&self, path: &Path, upload: &UploadRow, options: &TransferOptions, progress: &dyn TransferProgress) -> Result<u64, ClientError> {
        let d = &upload.descriptor;
        let deadline = tokio::time::Instant::now() + options.retry_for;
        let mut first_present = None;
        let mut delay = Duration::from_millis(200);
        let mut started = false;
        let result = loop {
            let attempt = async {
                let mut session = self.connect_transfer_with_retry(deadline).await?;
                let ticket = session.file_begin(&upload.file_id, d.size, d.chunk_size).await;
                session.close().await;
                let ticket = ticket?;
                let mut http = RelayHttp::connect(&self.account().server, self.account().tls_pin.as_deref()).await?;
                let status = http.status(&upload.file_id, &ticket.ticket).await?;
                let mut present = vec![false; d.chunks as usize];
                for [a, b] in status.present {
                    for n in a..b.min(d.chunks) {
                        present[n as usize] = true;
                    }
                }
                let cipher = ChunkCipher::new(&upload.key, d.id, d.size, d.chunk_size);
                let held: u64 = (0..d.chunks).filter(|n| present[*n as usize]).map(|n| cipher.plain_len(n).unwrap_or(0) as u64).sum();
                if first_present.is_none() {
                    first_present = Some(present.iter().filter(|p| **p).count() as u64);
                }
                if !started {
                    progress.begin(d.size, held);
                    started = true;
                }
                let missing: Vec<u64> = (0..d.chunks).filter(|n| !present[*n as usize]).collect();
                if !missing.is_empty() {
                    let mut connections = vec![http];
                    for _ in 1..UPLOAD_CONNECTIONS.min(missing.len()) {
                        connections.push(RelayHttp::connect(&self.account().server, self.account().tls_pin.as_deref()).await?);
                    }
                    send_missing(&mut connections, path, cipher, &upload.file_id, &ticket.ticket, missing, progress).await?;
                    http = connections.swap_remove(0);
                }
                let status = http.status(&upload.file_id, &ticket.ticket).await?;
                if !status.complete || status.chunks != d.chunks {
                    return Err(ClientError::Io("the relay does not hold every chunk yet".into()));
                }
                Ok(())
            }
            .await;
            match attempt {
                Ok(()) => break Ok(()),
                Err(e) if retryable(&e) && tokio::time::Instant::now() + delay < deadline => {
                    tracing::info!(error = %e, "file upload interrupted; resuming");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(3));
                }
                Err(e) => break Err(e),
            }
        };
        progress.finish();
        result.map(|()| first_present.unwrap_or(0))
    }

    /// Fetch the file of message `message_id` to `dest` (a file path, or a directory to put it in under its own
    /// name; default: the current directory). Continues an interrupted download of the same message. The file
    /// appears under its final name only after every chunk authenticated and the SHA-256 matched.
    pub async fn get_file(&self, message_id: &str, dest: Option<&Path>, options: &TransferOptions, progress: &dyn TransferProgress) -> Result<ReceivedFile, ClientError> {
        let message = self
            .store()
            .message(message_id)
            .await?
            .ok_or_else(|| ClientError::Config(format!("no message {message_id} on this device: run `imfree client recv` first")))?;
        if message.mime != FILE_MIME {
            return Err(ClientError::Config(format!("message {message_id} is not a file ({})", message.mime)));
        }
        let d = FileDescriptor::decode(&message.body).map_err(e2e)?;
        let key = match &options.password {
            Some(pw) if d.needs_password() => {
                let (d2, pw) = (d.clone(), pw.clone());
                tokio::task::spawn_blocking(move || d2.file_key(Some(pw.as_bytes()))).await.map_err(|e| ClientError::Io(e.to_string()))?
            }
            _ => d.file_key(None),
        }
        .map_err(e2e)?;
        let dest = match dest {
            Some(p) if p.is_dir() => p.join(&d.name),
            Some(p) => p.to_path_buf(),
            None => PathBuf::from(&d.name),
        };
        let dest_text = std::path::absolute(&dest).unwrap_or_else(|_| dest.clone()).to_string_lossy().into_owned();
        let partial = PathBuf::from(format!("{}{PARTIAL_SUFFIX}", dest.display()));

        let pool = self.store().pool();
        let row = sqlx::query("SELECT file_id, dest, next_chunk, status FROM file_downloads WHERE message_id = ?")
            .bind(message_id)
            .fetch_optional(pool)
            .await
            .map_err(db)?;
        let mut next = 0u64;
        match row {
            Some(r) if r.get::<String, _>("dest") == dest_text && r.get::<String, _>("file_id") == d.id.to_string() => {
                if r.get::<String, _>("status") == "done" && dest.is_file() {
                    return Ok(ReceivedFile { path: dest, size: d.size, resumed_chunks: d.chunks, already: true });
                }
                if partial.is_file() {
                    next = (r.get::<i64, _>("next_chunk").max(0) as u64).min(d.chunks);
                }
            }
            _ => {}
        }
        if dest.exists() {
            return Err(ClientError::Config(format!("{} exists already: give another PATH (imfree never overwrites a file)", dest.display())));
        }
        sqlx::query(
            "INSERT INTO file_downloads (message_id, file_id, dest, next_chunk, status, error, updated_at) VALUES (?, ?, ?, ?, 'downloading', NULL, ?)
             ON CONFLICT (message_id) DO UPDATE SET file_id = excluded.file_id, dest = excluded.dest, next_chunk = excluded.next_chunk,
             status = 'downloading', error = NULL, updated_at = excluded.updated_at",
        )
        .bind(message_id)
        .bind(d.id.to_string())
        .bind(&dest_text)
        .bind(next as i64)
        .bind(now_ms())
        .execute(pool)
        .await
        .map_err(db)?;

        // The partial file holds exactly `next` verified chunks: cut anything after them, hash what stays.
        let prefix = next.saturating_mul(u64::from(d.chunk_size)).min(d.size);
        let (file, hasher) = {
            let partial_path = partial.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<(std::fs::File, Sha256)> {
                let mut f = std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&partial_path)?;
                f.set_len(prefix)?;
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; 1 << 20];
                let mut left = prefix;
                f.seek(SeekFrom::Start(0))?;
                while left > 0 {
                    let n = f.read(&mut buf[..(left.min(1 << 20)) as usize])?;
                    if n == 0 {
                        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "partial file shorter than recorded"));
                    }
                    hasher.update(&buf[..n]);
                    left -= n as u64;
                }
                Ok((f, hasher))
            })
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?
            .map_err(|e| local("cannot prepare", &partial, e))?
        };
        let resumed_chunks = next;
        if next > 0 {
            tracing::info!(chunks = next, "resuming a download");
        }
        let cipher = std::sync::Arc::new(d.cipher(&key));
        progress.begin(d.size, prefix);
        let mut writer = Some((file, hasher));
        let deadline = tokio::time::Instant::now() + options.retry_for;
        let mut delay = Duration::from_millis(200);
        let result = loop {
            if next >= d.chunks {
                break Ok(());
            }
            let attempt = self.download_chunks(&d, std::sync::Arc::clone(&cipher), &mut next, &mut writer, message_id, deadline, progress).await;
            match attempt {
                Ok(()) => break Ok(()),
                Err(e) if retryable(&e) && tokio::time::Instant::now() + delay < deadline => {
                    tracing::info!(error = %e, "file download interrupted; resuming");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(3));
                }
                Err(e) => break Err(e),
            }
        };
        progress.finish();
        let outcome = match result {
            Ok(()) => {
                let (file, hasher) = writer.take().ok_or_else(|| ClientError::Io("the download writer was lost".into()))?;
                let digest: [u8; 32] = hasher.finalize().into();
                if digest != d.sha256 {
                    Err(ClientError::E2e(format!(
                        "the downloaded file's SHA-256 does not match the one its sender sent: not saved (the partial file {} is kept for inspection)",
                        partial.display()
                    )))
                } else {
                    let (partial2, dest2) = (partial.clone(), dest.clone());
                    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                        file.sync_all()?;
                        drop(file);
                        std::fs::rename(&partial2, &dest2)?;
                        if let Some(dir) = dest2.parent().filter(|p| !p.as_os_str().is_empty()) {
                            std::fs::File::open(dir)?.sync_all()?;
                        }
                        Ok(())
                    })
                    .await
                    .map_err(|e| ClientError::Io(e.to_string()))?
                    .map_err(|e| local("cannot save", &dest, e))
                }
            }
            Err(e) => Err(e),
        };
        let (status, error) = match &outcome {
            Ok(()) => ("done", None),
            Err(e) if retryable(e) => ("downloading", Some(e.to_string())),
            Err(e) => ("failed", Some(e.to_string())),
        };
        sqlx::query("UPDATE file_downloads SET status = ?, error = ?, updated_at = ? WHERE message_id = ?")
            .bind(status)
            .bind(error)
            .bind(now_ms())
            .bind(message_id)
            .execute(pool)
            .await
            .map_err(db)?;
        outcome.map(|()| ReceivedFile { path: dest, size: d.size, resumed_chunks, already: false })
    }

    /// One attempt: a ticket, a connection, then chunks from `next` on, prefetched while the previous one is opened
    /// and written. `next` and `writer` advance past every chunk written; the partial file is fsynced, and `next` recorded,
    /// every [`DOWNLOAD_SYNC_BYTES`] and at the last chunk.
    #[allow(clippy::too_many_arguments)]
    async fn download_chunks(
        &self,
        d: &FileDescriptor,
        cipher: std::sync::Arc<ChunkCipher>,
        next: &mut u64,
        writer: &mut Option<(std::fs::File, Sha256)>,
        message_id: &str,
        deadline: tokio::time::Instant,
        progress: &dyn TransferProgress,
    ) -> Result<(), ClientError> {
        let mut session = self.connect_transfer_with_retry(deadline).await?;
        let ticket = session.file_fetch(&d.id.to_string()).await;
        session.close().await;
        let ticket = ticket?;
        if ticket.chunks != d.chunks {
            return Err(ClientError::E2e("the relay's record of the file does not match the descriptor: refusing it".into()));
        }
        // Several connections fetch chunks in order of index; the writer takes them in order. A chunk holds a permit
        // from fetch until written, so at most `window` chunks are in memory whichever connection is slow.
        let connections = DOWNLOAD_CONNECTIONS.min((d.chunks - *next) as usize).max(1);
        let window = std::sync::Arc::new(tokio::sync::Semaphore::new(PIPELINE + connections));
        let next_index = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(*next));
        // What the fetchers hand the writer: a chunk's index and plaintext (opened on the fetcher's side, so that
        // decryption runs beside the writer's hashing and writing).
        // A failed chunk is reported at its own place, so that every chunk before it is still written.
        type Fetched = (u64, Result<Vec<u8>, ClientError>, tokio::sync::OwnedSemaphorePermit);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Fetched>(PIPELINE + connections);
        let max = (d.chunk_size as usize) + imfree_crypto::file::TAG_LEN;
        let mut fetchers = Vec::with_capacity(connections);
        for _ in 0..connections {
            let mut http = RelayHttp::connect(&self.account().server, self.account().tls_pin.as_deref()).await?;
            let (tx, window, next_index) = (tx.clone(), std::sync::Arc::clone(&window), std::sync::Arc::clone(&next_index));
            let (file_id, ticket_text, chunks) = (d.id.to_string(), ticket.ticket.clone(), d.chunks);
            let cipher = std::sync::Arc::clone(&cipher);
            fetchers.push(tokio::spawn(async move {
                loop {
                    let Ok(permit) = std::sync::Arc::clone(&window).acquire_owned().await else { break };
                    let n = next_index.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if n >= chunks {
                        break;
                    }
                    let got = match http.get_chunk(&file_id, n, &ticket_text, max).await {
                        Ok(sealed) => {
                            let cipher = std::sync::Arc::clone(&cipher);
                            tokio::task::spawn_blocking(move || {
                                let mut buf = sealed.to_vec();
                                cipher.open_in_place(n, &mut buf).map(|()| buf).map_err(e2e)
                            })
                            .await
                            .map_err(|e| ClientError::Io(e.to_string()))
                            .and_then(|r| r)
                        }
                        Err(e) => Err(e),
                    };
                    let stop = got.is_err();
                    if tx.send((n, got, permit)).await.is_err() || stop {
                        break;
                    }
                }
            }));
        }
        drop(tx);
        let pool = self.store().pool();
        let outcome = async {
            let mut early: std::collections::BTreeMap<u64, (Result<Vec<u8>, ClientError>, tokio::sync::OwnedSemaphorePermit)> =
                std::collections::BTreeMap::new();
            while *next < d.chunks {
                let (plain, permit) = match early.remove(next) {
                    Some(ready) => ready,
                    None => loop {
                        let (n, got, permit) = rx.recv().await.ok_or_else(|| ClientError::Io("the download connection ended".into()))?;
                        if n == *next {
                            break (got, permit);
                        }
                        early.insert(n, (got, permit));
                    },
                };
                let plain = plain?;
                let n = *next;
                let (mut file, mut hasher) = writer.take().ok_or_else(|| ClientError::Io("the download writer was lost".into()))?;
                let sync_every = (DOWNLOAD_SYNC_BYTES / u64::from(d.chunk_size.max(1))).max(1);
                let durable = (n + 1).is_multiple_of(sync_every) || n + 1 == d.chunks;
                let (mut file, hasher, written) = tokio::task::spawn_blocking(move || {
                    let r = (|| -> Result<u64, ClientError> {
                        let buf = plain;
                        hasher.update(&buf);
                        file.write_all(&buf).map_err(|e| ClientError::Config(format!("cannot write the download: {e}")))?;
                        if durable {
                            file.sync_data().map_err(|e| ClientError::Config(format!("cannot write the download: {e}")))?;
                        }
                        Ok(buf.len() as u64)
                    })();
                    (file, hasher, r)
                })
                .await
                .map_err(|e| ClientError::Io(e.to_string()))?;
                let written = match written {
                    Ok(w) => w,
                    Err(e) => {
                        // A chunk that was not written whole must not stay in the partial file.
                        let keep = n.saturating_mul(u64::from(d.chunk_size)).min(d.size);
                        let _ = file.set_len(keep);
                        let _ = file.seek(SeekFrom::Start(keep));
                        *writer = Some((file, hasher));
                        return Err(e);
                    }
                };
                *writer = Some((file, hasher));
                *next = n + 1;
                // Only what is on disk for sure is recorded: a restart resumes from there (this run, from `next`).
                if durable {
                    sqlx::query("UPDATE file_downloads SET next_chunk = ?, updated_at = ? WHERE message_id = ?")
                        .bind(*next as i64)
                        .bind(now_ms())
                        .bind(message_id)
                        .execute(pool)
                        .await
                        .map_err(db)?;
                }
                drop(permit);
                progress.advance(written);
            }
            Ok(())
        }
        .await;
        for fetcher in fetchers {
            fetcher.abort();
        }
        outcome
    }

    /// The file messages of a conversation (`CONV`: a user name or `group:<id>`), oldest first.
    pub async fn files(&self, conversation: &str, limit: i64) -> Result<Vec<FileEntry>, ClientError> {
        let messages = self.store().conversation(conversation, limit).await?;
        let mut out = Vec::new();
        for m in messages.into_iter().filter(|m| m.mime == FILE_MIME) {
            let Ok(d) = FileDescriptor::decode(&m.body) else { continue };
            let saved_as: Option<String> = sqlx::query_scalar("SELECT dest FROM file_downloads WHERE message_id = ? AND status = 'done'")
                .bind(&m.id)
                .fetch_optional(self.store().pool())
                .await
                .map_err(db)?;
            out.push(FileEntry {
                message_id: m.id,
                from: m.from,
                ts: m.ts,
                outgoing: m.outgoing,
                password: d.needs_password(),
                name: d.name,
                size: d.size,
                mime: d.mime,
                voice: d.voice,
                duration_ms: d.duration_ms,
                saved_as,
            });
        }
        Ok(out)
    }
}

/// Seal the missing chunks on a blocking thread (reading the file at each chunk's offset) while the previous ones
/// are on the wire.
/// Seal the missing chunks in order (one blocking task reads and seals ahead) and put them over every connection in
/// `http` at once.
async fn send_missing(
    http: &mut [RelayHttp],
    path: &Path,
    cipher: ChunkCipher,
    file_id: &str,
    ticket: &str,
    missing: Vec<u64>,
    progress: &dyn TransferProgress,
) -> Result<(), ClientError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<(u64, Vec<u8>), ClientError>>(PIPELINE + http.len());
    let path = path.to_path_buf();
    let sealer = tokio::task::spawn_blocking(move || {
        let run = || -> Result<(), ClientError> {
            let mut f = std::fs::File::open(&path).map_err(|e| local("cannot open", &path, e))?;
            for n in missing {
                let len = cipher.plain_len(n).map_err(e2e)?;
                let offset = n.saturating_mul(u64::from(cipher.chunk_size()));
                let mut buf = Vec::with_capacity(len + imfree_crypto::file::TAG_LEN);
                buf.resize(len, 0);
                f.seek(SeekFrom::Start(offset)).map_err(|e| local("cannot read", &path, e))?;
                f.read_exact(&mut buf).map_err(|e| local("cannot read (did the file shrink?)", &path, e))?;
                cipher.seal_in_place(n, &mut buf).map_err(e2e)?;
                if tx.blocking_send(Ok((n, buf))).is_err() {
                    return Ok(());
                }
            }
            Ok(())
        };
        if let Err(e) = run() {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let rx = tokio::sync::Mutex::new(rx);
    let result = futures_util::future::try_join_all(http.iter_mut().map(|h| put_sealed(h, &rx, file_id, ticket, progress))).await.map(|_| ());
    drop(rx);
    let _ = sealer.await;
    result
}

type SealedChunks = tokio::sync::mpsc::Receiver<Result<(u64, Vec<u8>), ClientError>>;

/// One connection's share of an upload: take the next sealed chunk, put it, until none are left.
async fn put_sealed(
    http: &mut RelayHttp,
    chunks: &tokio::sync::Mutex<SealedChunks>,
    file_id: &str,
    ticket: &str,
    progress: &dyn TransferProgress,
) -> Result<(), ClientError> {
    loop {
        // The lock is held while waiting for the next sealed chunk, not while it is sent.
        let next = chunks.lock().await.recv().await;
        let Some(item) = next else { return Ok(()) };
        let (n, sealed) = item?;
        let plain = (sealed.len() - imfree_crypto::file::TAG_LEN) as u64;
        http.put_chunk(file_id, n, ticket, sealed).await?;
        progress.advance(plain);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(seconds_ms: u64, rate: u32) -> Vec<u8> {
        let data = (rate as u64 * 2 * seconds_ms / 1000) as u32;
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF");
        v.extend_from_slice(&(36 + data).to_le_bytes());
        v.extend_from_slice(b"WAVEfmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        v.extend_from_slice(&(rate * 2).to_le_bytes());
        v.extend_from_slice(&2u16.to_le_bytes());
        v.extend_from_slice(&16u16.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&data.to_le_bytes());
        v.resize(v.len() + data as usize, 0);
        v
    }

    fn ogg_page(granule: i64, packet: &[u8]) -> Vec<u8> {
        let mut v = b"OggS\0\x02".to_vec();
        v.extend_from_slice(&granule.to_le_bytes());
        v.extend_from_slice(&[0; 12]); // serial, sequence, checksum (not checked)
        v.push(1);
        v.push(packet.len() as u8);
        v.extend_from_slice(packet);
        v
    }

    #[test]
    fn voice_durations_come_from_wav_and_ogg_headers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.wav");
        std::fs::write(&p, wav(1500, 16_000)).unwrap();
        assert_eq!(audio_info(&p).unwrap(), ("audio/wav".to_owned(), 1500));

        let mut head = b"OpusHead\x01\x01".to_vec();
        head.extend_from_slice(&312u16.to_le_bytes());
        head.extend_from_slice(&48_000u32.to_le_bytes());
        head.extend_from_slice(&[0, 0, 0]);
        let mut ogg = ogg_page(0, &head);
        ogg.extend(ogg_page(0, b"OpusTags"));
        ogg.extend(ogg_page(-1, &[1, 2, 3]));
        ogg.extend(ogg_page(312 + 48_000 * 2 + 24_000, &[4, 5]));
        let p = dir.path().join("a.opus");
        std::fs::write(&p, ogg).unwrap();
        assert_eq!(audio_info(&p).unwrap(), ("audio/ogg; codecs=opus".to_owned(), 2500));

        let p = dir.path().join("a.txt");
        std::fs::write(&p, b"hello").unwrap();
        assert!(audio_info(&p).is_err());
    }

    #[test]
    fn server_urls_become_authorities() {
        assert_eq!(split_server("wss://127.0.0.1:7878").unwrap(), (true, "127.0.0.1:7878".into()));
        assert_eq!(split_server("ws://localhost:9/").unwrap(), (false, "localhost:9".into()));
        assert_eq!(split_server("wss://chat.example.org").unwrap(), (true, "chat.example.org:443".into()));
        assert!(split_server("https://x").is_err());
    }
}
