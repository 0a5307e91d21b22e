//! The frames of end-to-end encrypted file transfer (`file.begin`, `file.fetch`, `file.ticket`): over the
//! authenticated IMF session a device obtains a short-lived ticket, with which it then moves sealed chunks over the
//! relay's HTTP endpoints (`/v1/files/{file}/…`). The frames carry only the random file id and the chunk layout; the
//! name, type, key and hash travel inside the end-to-end message.

use serde::{Deserialize, Serialize};

use crate::DecodeError;

/// Length of a file id in text form (16 random bytes as lowercase hex).
pub const FILE_ID_LEN: usize = 32;

/// `file.begin`: start an upload, or resume one (same id, same layout): answered with an upload `file.ticket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileBegin {
    /// Request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The file id (32 lowercase hex digits, random).
    pub file: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Number of chunks (`max(1, ceil(size / chunk_size))`).
    pub chunks: u64,
}

/// `file.fetch`: ask for a download ticket of a complete file: answered with a download `file.ticket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFetch {
    /// Request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The file id.
    pub file: String,
}

/// What a ticket allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketMode {
    /// PUT chunks and read the status of one file.
    Upload,
    /// GET chunks and read the status of one file.
    Download,
}

/// `file.ticket`: the answer to `file.begin` and `file.fetch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileTicket {
    /// The request answered.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The file id.
    pub file: String,
    /// What the ticket allows.
    pub mode: TicketMode,
    /// The bearer ticket for `Authorization: Bearer …` on the HTTP endpoints (opaque to the client).
    pub ticket: String,
    /// When the ticket expires (Unix ms); ask again after that.
    pub expires: u64,
    /// The file's plaintext size as the relay recorded it.
    pub size: u64,
    /// Its chunk size.
    pub chunk_size: u32,
    /// Its chunk count.
    pub chunks: u64,
    /// Every chunk is stored.
    pub complete: bool,
}

/// The file id rule: 32 lowercase hex digits.
pub fn validate_file_id(file: &str) -> Result<(), DecodeError> {
    if file.len() != FILE_ID_LEN || !file.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(DecodeError::InvalidField { field: "file", reason: "must be 32 lowercase hex digits".into() });
    }
    Ok(())
}
