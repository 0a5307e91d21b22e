//! End-to-end encrypted files: the per-file key, STREAM-style chunk sealing, the optional password wrap of the file
//! key, and the file descriptor that travels inside the normal end-to-end message (content type [`FILE_MIME`]).
//!
//! The relay stores only sealed chunks under an unguessable 128-bit file id; whoever receives the descriptor (over an
//! end-to-end session) holds the key, the chunk layout and the SHA-256 of the plaintext. Chunk `i` of `n` is sealed
//! with ChaCha20-Poly1305 under a key derived from the file key, with `i` and a final-chunk flag in both the nonce
//! and the associated data (and the file id in the associated data), so a relay that reorders, drops, truncates,
//! extends or swaps chunks between files is caught when the chunk is opened. The descriptor's chunk count and
//! the whole-file hash close the remaining gap (a download that stops early is never mistaken for the file).
//!
//! This module owns the formats only (no I/O); the exact construction, labels and a test vector are in
//! `docs/crypto.md` ("Files").

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::kdf::hkdf_sha256;
use crate::keystore::KdfParams;

/// The content type of a file descriptor inside an end-to-end message.
pub const FILE_MIME: &str = "application/vnd.imfree.file+json";
/// Descriptor format version.
pub const DESCRIPTOR_VERSION: u32 = 1;
/// HKDF info of the chunk key, and the label at the start of every chunk's associated data.
pub const CHUNK_LABEL: &[u8] = b"imfree/v1/file-chunk";
/// HKDF info of the key-encryption key derived from a password, and the label of the wrap's associated data.
pub const WRAP_LABEL: &[u8] = b"imfree/v1/file-key-wrap";
/// Poly1305 tag appended to every sealed chunk.
pub const TAG_LEN: usize = 16;
/// Length of a password-wrapped file key: 32 bytes of key and the tag.
pub const WRAPPED_KEY_LEN: usize = 32 + TAG_LEN;
/// Smallest chunk size a descriptor may name (1 KiB): tiny chunks would make a file a million requests.
pub const MIN_CHUNK_SIZE: u32 = 1024;
/// Largest chunk size a descriptor may name (64 MiB): a recipient holds one chunk in memory at a time.
pub const MAX_CHUNK_SIZE: u32 = 64 << 20;
/// Largest file size a descriptor may name (1 TiB). Relays enforce their own, smaller limit.
pub const MAX_FILE_SIZE: u64 = 1 << 40;
/// Longest file name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 255;
/// Longest content type.
pub const MAX_MIME_BYTES: usize = 127;
/// Longest voice message (24 hours).
pub const MAX_DURATION_MS: u64 = 24 * 3600 * 1000;
/// Largest encoded descriptor accepted for decoding.
pub const MAX_DESCRIPTOR_BYTES: usize = 4096;

/// Why a descriptor or chunk was refused. Never carries key material or contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// Not a file descriptor (bad JSON, unknown field, wrong type).
    #[error("not a valid file descriptor: {0}")]
    Malformed(String),
    /// A field is present but not acceptable.
    #[error("file descriptor field `{field}` is not acceptable: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Written by a newer imfree.
    #[error("file descriptor version {0} is not supported: upgrade imfree")]
    UnsupportedVersion(u32),
    /// The file key is password-protected and no password was given.
    #[error("this file is password-protected: give the password")]
    PasswordRequired,
    /// The password does not unwrap the file key.
    #[error("wrong password for this file")]
    WrongPassword,
    /// Argon2 parameters outside what this build accepts.
    #[error("password parameters not accepted: {0}")]
    UnsupportedParameters(String),
    /// A chunk index outside the file.
    #[error("chunk {index} is outside the file ({chunks} chunks)")]
    ChunkOutOfRange {
        /// The index asked for.
        index: u64,
        /// The file's chunk count.
        chunks: u64,
    },
    /// A chunk of the wrong length (truncated or extended).
    #[error("chunk {index} has {actual} bytes, expected {expected}: the stored file was altered")]
    ChunkLength {
        /// Which chunk.
        index: u64,
        /// Expected length.
        expected: usize,
        /// Actual length.
        actual: usize,
    },
    /// A chunk failed authentication: altered, reordered or from another file.
    #[error("chunk {index} failed authentication: the stored file was altered, reordered or belongs to another file")]
    ChunkRejected {
        /// Which chunk.
        index: u64,
    },
}

/// A file's id: 16 random bytes, shown as 32 lowercase hex digits. Whoever knows it (and holds an account) may
/// fetch the sealed chunks, so it must come from a CSPRNG.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub [u8; 16]);

impl FileId {
    /// A fresh random id.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        FileId(id)
    }
}

impl std::fmt::Display for FileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for FileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileId({self})")
    }
}

impl std::str::FromStr for FileId {
    type Err = FileError;

    /// Exactly 32 lowercase hex digits (one spelling per id, so ids compare as strings too).
    fn from_str(s: &str) -> Result<Self, FileError> {
        let bad = || FileError::Invalid { field: "id", reason: "expected 32 lowercase hex digits".into() };
        if s.len() != 32 || !s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
            return Err(bad());
        }
        let mut id = [0u8; 16];
        for (i, out) in id.iter_mut().enumerate() {
            *out = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(FileId(id))
    }
}

impl Serialize for FileId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FileId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The random 32-byte key of one file. Zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct FileKey(Zeroizing<[u8; 32]>);

impl FileKey {
    /// A fresh random key.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(key.as_mut());
        FileKey(key)
    }

    /// A key from its bytes (test vectors, the local transfer state).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        FileKey(Zeroizing::new(bytes))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKey(..)")
    }
}

/// How many chunks a file of `size` bytes has at `chunk_size`: at least one (an empty file is one empty, final
/// chunk), so that "the final chunk arrived" is always provable.
pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
    let chunk_size = u64::from(chunk_size.max(1));
    size.div_ceil(chunk_size).max(1)
}

/// Plaintext length of chunk `index` of a file (`None` outside the file).
pub fn chunk_plain_len(size: u64, chunk_size: u32, index: u64) -> Option<usize> {
    let chunks = chunk_count(size, chunk_size);
    if index >= chunks {
        return None;
    }
    let start = index.checked_mul(u64::from(chunk_size))?;
    let len = (size - start.min(size)).min(u64::from(chunk_size));
    usize::try_from(len).ok()
}

/// Seals and opens the chunks of one file (STREAM: chunk key from the file key, nonce and associated data from the
/// chunk's index and final flag).
pub struct ChunkCipher {
    aead: ChaCha20Poly1305,
    file_id: FileId,
    size: u64,
    chunk_size: u32,
    chunks: u64,
}

impl std::fmt::Debug for ChunkCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCipher").field("file_id", &self.file_id).field("chunks", &self.chunks).finish_non_exhaustive()
    }
}

impl ChunkCipher {
    /// `chunk key = HKDF-SHA-256(salt = file id, ikm = file key, info = "imfree/v1/file-chunk")`.
    pub fn new(key: &FileKey, file_id: FileId, size: u64, chunk_size: u32) -> Self {
        let chunk_key = hkdf_sha256::<32>(&file_id.0, key.as_bytes(), &[CHUNK_LABEL]);
        ChunkCipher {
            aead: ChaCha20Poly1305::new(Key::from_slice(chunk_key.as_ref())),
            file_id,
            size,
            chunk_size: chunk_size.max(1),
            chunks: chunk_count(size, chunk_size),
        }
    }

    /// The number of chunks.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// Plaintext bytes per chunk (the last may be shorter).
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Plaintext length of chunk `index`.
    pub fn plain_len(&self, index: u64) -> Result<usize, FileError> {
        chunk_plain_len(self.size, self.chunk_size, index).ok_or(FileError::ChunkOutOfRange { index, chunks: self.chunks })
    }

    /// Sealed length of chunk `index` (plaintext and tag).
    pub fn sealed_len(&self, index: u64) -> Result<usize, FileError> {
        Ok(self.plain_len(index)? + TAG_LEN)
    }

    /// `nonce = index (u64 BE) || final (u8) || 0x000000`;
    /// `ad = "imfree/v1/file-chunk" || 0x00 || file id (16) || index (u64 BE) || final (u8)`.
    fn nonce_and_ad(&self, index: u64) -> (Nonce, [u8; CHUNK_AD_LEN]) {
        let last = u8::from(index + 1 == self.chunks);
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&index.to_be_bytes());
        nonce[8] = last;
        let mut ad = [0u8; CHUNK_AD_LEN];
        let l = CHUNK_LABEL.len();
        ad[..l].copy_from_slice(CHUNK_LABEL);
        ad[l + 1..l + 17].copy_from_slice(&self.file_id.0);
        ad[l + 17..l + 25].copy_from_slice(&index.to_be_bytes());
        ad[l + 25] = last;
        (*Nonce::from_slice(&nonce), ad)
    }

    /// Seal chunk `index` in place: `buf` holds its plaintext (exactly [`ChunkCipher::plain_len`] bytes) and gets
    /// the tag appended.
    pub fn seal_in_place(&self, index: u64, buf: &mut Vec<u8>) -> Result<(), FileError> {
        let expected = self.plain_len(index)?;
        if buf.len() != expected {
            return Err(FileError::ChunkLength { index, expected, actual: buf.len() });
        }
        let (nonce, ad) = self.nonce_and_ad(index);
        // Encryption fails only beyond 256 GiB per message; a chunk is at most MAX_CHUNK_SIZE.
        let tag = self.aead.encrypt_in_place_detached(&nonce, &ad, buf).map_err(|_| FileError::ChunkLength {
            index,
            expected,
            actual: buf.len(),
        })?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Seal chunk `index`, returning a new buffer.
    pub fn seal(&self, index: u64, plaintext: &[u8]) -> Result<Vec<u8>, FileError> {
        let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
        buf.extend_from_slice(plaintext);
        self.seal_in_place(index, &mut buf)?;
        Ok(buf)
    }

    /// Open chunk `index` in place: `buf` holds the sealed chunk and is left holding its plaintext.
    pub fn open_in_place(&self, index: u64, buf: &mut Vec<u8>) -> Result<(), FileError> {
        let expected = self.sealed_len(index)?;
        if buf.len() != expected {
            return Err(FileError::ChunkLength { index, expected, actual: buf.len() });
        }
        let (nonce, ad) = self.nonce_and_ad(index);
        let split = buf.len() - TAG_LEN;
        let tag = *Tag::from_slice(&buf[split..]);
        buf.truncate(split);
        self.aead.decrypt_in_place_detached(&nonce, &ad, buf, &tag).map_err(|_| FileError::ChunkRejected { index })
    }

    /// Open chunk `index`, returning its plaintext.
    pub fn open(&self, index: u64, sealed: &[u8]) -> Result<Vec<u8>, FileError> {
        let mut buf = sealed.to_vec();
        self.open_in_place(index, &mut buf)?;
        Ok(buf)
    }
}

const CHUNK_AD_LEN: usize = CHUNK_LABEL.len() + 1 + 16 + 8 + 1;

/// A file key wrapped under a password (Argon2id, then ChaCha20-Poly1305).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordWrap {
    /// Argon2id parameters.
    pub params: KdfParams,
    /// Argon2id salt (16 random bytes).
    pub salt: [u8; 16],
    /// The sealed file key (48 bytes).
    pub wrapped: [u8; WRAPPED_KEY_LEN],
}

fn argon2(params: KdfParams) -> Result<Argon2<'static>, FileError> {
    use crate::keystore::{MAX_ITERATIONS, MAX_MEMORY_KIB, MAX_PARALLELISM};
    if params.memory_kib > MAX_MEMORY_KIB || params.iterations > MAX_ITERATIONS || params.parallelism > MAX_PARALLELISM {
        return Err(FileError::UnsupportedParameters(format!(
            "m={} KiB, t={}, p={} exceed the limits m≤{MAX_MEMORY_KIB}, t≤{MAX_ITERATIONS}, p≤{MAX_PARALLELISM}",
            params.memory_kib, params.iterations, params.parallelism
        )));
    }
    let p = Params::new(params.memory_kib, params.iterations, params.parallelism, Some(32))
        .map_err(|e| FileError::UnsupportedParameters(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, p))
}

/// `K = Argon2id(password, salt, m, t, p, 32)`; `kek = HKDF-SHA-256(salt = file id, ikm = K,
/// info = "imfree/v1/file-key-wrap")`; the wrap's nonce is all zero (each salt gives a fresh kek) and its associated
/// data is `"imfree/v1/file-key-wrap" || 0x00 || file id`.
fn key_encryption_key(password: &[u8], params: KdfParams, salt: &[u8; 16], file_id: FileId) -> Result<(ChaCha20Poly1305, Vec<u8>), FileError> {
    let mut k = Zeroizing::new([0u8; 32]);
    argon2(params)?
        .hash_password_into(password, salt, k.as_mut())
        .map_err(|e| FileError::UnsupportedParameters(e.to_string()))?;
    let kek = hkdf_sha256::<32>(&file_id.0, k.as_ref(), &[WRAP_LABEL]);
    let mut ad = Vec::with_capacity(WRAP_LABEL.len() + 17);
    ad.extend_from_slice(WRAP_LABEL);
    ad.push(0);
    ad.extend_from_slice(&file_id.0);
    Ok((ChaCha20Poly1305::new(Key::from_slice(kek.as_ref())), ad))
}

impl PasswordWrap {
    /// Wrap `key` under `password` with a salt drawn from `rng`.
    pub fn wrap(rng: &mut impl CryptoRngCore, key: &FileKey, file_id: FileId, password: &[u8], params: KdfParams) -> Result<Self, FileError> {
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut salt);
        Self::wrap_with_salt(key, file_id, password, params, salt)
    }

    /// Wrap with a given salt (test vectors; use [`PasswordWrap::wrap`]).
    pub fn wrap_with_salt(key: &FileKey, file_id: FileId, password: &[u8], params: KdfParams, salt: [u8; 16]) -> Result<Self, FileError> {
        let (aead, ad) = key_encryption_key(password, params, &salt, file_id)?;
        let mut buf = key.as_bytes().to_vec();
        let tag = aead
            .encrypt_in_place_detached(Nonce::from_slice(&[0u8; 12]), &ad, &mut buf)
            .map_err(|_| FileError::UnsupportedParameters("key wrap failed".into()))?;
        buf.extend_from_slice(&tag);
        let mut wrapped = [0u8; WRAPPED_KEY_LEN];
        wrapped.copy_from_slice(&buf);
        Ok(PasswordWrap { params, salt, wrapped })
    }

    /// Unwrap with `password` (one Argon2id run at the recorded parameters, within the key store's limits).
    pub fn unwrap(&self, file_id: FileId, password: &[u8]) -> Result<FileKey, FileError> {
        let (aead, ad) = key_encryption_key(password, self.params, &self.salt, file_id)?;
        let mut buf = Zeroizing::new(self.wrapped[..32].to_vec());
        let tag = *Tag::from_slice(&self.wrapped[32..]);
        aead.decrypt_in_place_detached(Nonce::from_slice(&[0u8; 12]), &ad, &mut buf, &tag).map_err(|_| FileError::WrongPassword)?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&buf);
        Ok(FileKey::from_bytes(key))
    }
}

/// How the recipient gets the file key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// The key itself (the descriptor travels end-to-end encrypted).
    Plain(FileKey),
    /// The key wrapped under a password the recipient must also know.
    Password(PasswordWrap),
}

/// The file descriptor: everything a recipient needs to fetch, open and check a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDescriptor {
    /// The file's id on the relay.
    pub id: FileId,
    /// The file's name (a plain name, no directories).
    pub name: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Content type.
    pub mime: String,
    /// Plaintext bytes per chunk (the last chunk may be shorter).
    pub chunk_size: u32,
    /// Number of chunks (derived from size and chunk size, and checked against them).
    pub chunks: u64,
    /// SHA-256 of the whole plaintext.
    pub sha256: [u8; 32],
    /// The file key, or its password wrap.
    pub key: KeyMaterial,
    /// Shown as a voice message.
    pub voice: bool,
    /// Playing time, for audio.
    pub duration_ms: Option<u64>,
}

/// The wire form of the password wrap.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireWrap {
    kdf: String,
    m: u32,
    t: u32,
    p: u32,
    #[serde(with = "crate::encoding::b64")]
    salt: [u8; 16],
    #[serde(with = "crate::encoding::b64")]
    wrapped_key: [u8; WRAPPED_KEY_LEN],
}

/// The wire form of the descriptor (JSON), before validation.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireDescriptor {
    v: u32,
    id: FileId,
    name: String,
    size: u64,
    mime: String,
    chunk_size: u32,
    chunks: u64,
    sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::encoding::b64_opt")]
    key: Option<[u8; 32]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<WireWrap>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    voice: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> FileError {
    FileError::Invalid { field, reason: reason.into() }
}

/// Check a file name: 1–255 bytes, no path separators, no control characters, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<(), FileError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(invalid("name", format!("must be 1 to {MAX_NAME_BYTES} bytes")));
    }
    if name == "." || name == ".." {
        return Err(invalid("name", "must not be . or .."));
    }
    if name.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
        return Err(invalid("name", "must not contain / \\ or control characters"));
    }
    Ok(())
}

fn validate_mime(mime: &str) -> Result<(), FileError> {
    let ok = !mime.is_empty()
        && mime.len() <= MAX_MIME_BYTES
        && mime.bytes().all(|b| (0x20..0x7f).contains(&b))
        && mime.split_once('/').is_some_and(|(t, s)| !t.is_empty() && !s.is_empty());
    if ok { Ok(()) } else { Err(invalid("mime", format!("must be a type/subtype of printable ASCII, at most {MAX_MIME_BYTES} bytes"))) }
}

impl FileDescriptor {
    /// Check every field and their consistency (what [`FileDescriptor::decode`] enforces on untrusted input).
    pub fn validate(&self) -> Result<(), FileError> {
        validate_name(&self.name)?;
        validate_mime(&self.mime)?;
        if self.size > MAX_FILE_SIZE {
            return Err(invalid("size", format!("at most {MAX_FILE_SIZE} bytes")));
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(invalid("chunk_size", format!("must be {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}")));
        }
        if self.chunks != chunk_count(self.size, self.chunk_size) {
            return Err(invalid("chunks", "does not match size and chunk_size"));
        }
        if let Some(d) = self.duration_ms
            && d > MAX_DURATION_MS
        {
            return Err(invalid("duration_ms", format!("at most {MAX_DURATION_MS}")));
        }
        if self.voice && self.duration_ms.is_none() {
            return Err(invalid("duration_ms", "a voice message names its duration"));
        }
        if let KeyMaterial::Password(w) = &self.key {
            argon2(w.params)?;
        }
        Ok(())
    }

    /// Parse and validate a descriptor from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, FileError> {
        if bytes.len() > MAX_DESCRIPTOR_BYTES {
            return Err(FileError::Malformed(format!("longer than {MAX_DESCRIPTOR_BYTES} bytes")));
        }
        let wire: WireDescriptor = serde_json::from_slice(bytes).map_err(|e| FileError::Malformed(e.to_string()))?;
        if wire.v != DESCRIPTOR_VERSION {
            return Err(FileError::UnsupportedVersion(wire.v));
        }
        let sha256 = parse_sha256(&wire.sha256)?;
        let key = match (wire.key, wire.password) {
            (Some(k), None) => KeyMaterial::Plain(FileKey::from_bytes(k)),
            (None, Some(w)) => {
                if w.kdf != "argon2id" {
                    return Err(invalid("password.kdf", "only argon2id is supported"));
                }
                KeyMaterial::Password(PasswordWrap {
                    params: KdfParams { memory_kib: w.m, iterations: w.t, parallelism: w.p },
                    salt: w.salt,
                    wrapped: w.wrapped_key,
                })
            }
            _ => return Err(invalid("key", "exactly one of key and password must be present")),
        };
        let d = FileDescriptor {
            id: wire.id,
            name: wire.name,
            size: wire.size,
            mime: wire.mime,
            chunk_size: wire.chunk_size,
            chunks: wire.chunks,
            sha256,
            key,
            voice: wire.voice,
            duration_ms: wire.duration_ms,
        };
        d.validate()?;
        Ok(d)
    }

    /// The JSON encoding (compact, fields in a fixed order).
    pub fn encode(&self) -> Vec<u8> {
        let (key, password) = match &self.key {
            KeyMaterial::Plain(k) => (Some(*k.as_bytes()), None),
            KeyMaterial::Password(w) => (
                None,
                Some(WireWrap {
                    kdf: "argon2id".into(),
                    m: w.params.memory_kib,
                    t: w.params.iterations,
                    p: w.params.parallelism,
                    salt: w.salt,
                    wrapped_key: w.wrapped,
                }),
            ),
        };
        let wire = WireDescriptor {
            v: DESCRIPTOR_VERSION,
            id: self.id,
            name: self.name.clone(),
            size: self.size,
            mime: self.mime.clone(),
            chunk_size: self.chunk_size,
            chunks: self.chunks,
            sha256: self.sha256.iter().map(|b| format!("{b:02x}")).collect(),
            key,
            password,
            voice: self.voice,
            duration_ms: self.duration_ms,
        };
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// Whether a password is needed to open the file.
    pub fn needs_password(&self) -> bool {
        matches!(self.key, KeyMaterial::Password(_))
    }

    /// The file key: directly, or unwrapped with `password`.
    pub fn file_key(&self, password: Option<&[u8]>) -> Result<FileKey, FileError> {
        match (&self.key, password) {
            (KeyMaterial::Plain(k), _) => Ok(k.clone()),
            (KeyMaterial::Password(_), None) => Err(FileError::PasswordRequired),
            (KeyMaterial::Password(w), Some(p)) => w.unwrap(self.id, p),
        }
    }

    /// The chunk cipher of this file under `key`.
    pub fn cipher(&self, key: &FileKey) -> ChunkCipher {
        ChunkCipher::new(key, self.id, self.size, self.chunk_size)
    }
}

fn parse_sha256(text: &str) -> Result<[u8; 32], FileError> {
    let bad = || invalid("sha256", "expected 64 lowercase hex digits");
    if text.len() != 64 || !text.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(size: u64) -> ChunkCipher {
        ChunkCipher::new(&FileKey::from_bytes([1; 32]), FileId([2; 16]), size, 1024)
    }

    #[test]
    fn chunks_round_trip_and_refuse_every_rearrangement() {
        let c = cipher(2500);
        assert_eq!(c.chunks(), 3);
        let plain: Vec<Vec<u8>> = (0..3).map(|i| vec![i as u8; c.plain_len(i).unwrap()]).collect();
        let sealed: Vec<Vec<u8>> = plain.iter().enumerate().map(|(i, p)| c.seal(i as u64, p).unwrap()).collect();
        for (i, s) in sealed.iter().enumerate() {
            assert_eq!(c.open(i as u64, s).unwrap(), plain[i]);
        }
        // Swapped chunks.
        assert!(matches!(c.open(0, &sealed[1]), Err(FileError::ChunkRejected { index: 0 })));
        // A middle chunk presented as the final one (truncation): same length class refused by the flag.
        let short = cipher(2048);
        assert_eq!(short.chunks(), 2);
        assert!(short.open(1, &sealed[1]).is_err(), "a non-final chunk cannot end a file");
        // Extension: chunk 3 does not exist.
        assert!(matches!(c.open(3, &sealed[2]), Err(FileError::ChunkOutOfRange { .. })));
        // Another file's chunk.
        let other = ChunkCipher::new(&FileKey::from_bytes([1; 32]), FileId([3; 16]), 2500, 1024);
        assert!(other.open(0, &sealed[0]).is_err());
        // A flipped bit, a cut tag.
        let mut flipped = sealed[2].clone();
        flipped[0] ^= 1;
        assert!(c.open(2, &flipped).is_err());
        assert!(matches!(c.open(2, &sealed[2][..10]), Err(FileError::ChunkLength { .. })));
    }

    #[test]
    fn empty_file_is_one_final_chunk() {
        let c = cipher(0);
        assert_eq!(c.chunks(), 1);
        let s = c.seal(0, b"").unwrap();
        assert_eq!(s.len(), TAG_LEN);
        assert_eq!(c.open(0, &s).unwrap(), b"");
    }

    #[test]
    fn file_ids_have_one_spelling() {
        let id: FileId = "00112233445566778899aabbccddeeff".parse().unwrap();
        assert_eq!(id.to_string(), "00112233445566778899aabbccddeeff");
        for bad in ["00112233445566778899AABBCCDDEEFF", "0011", "zz112233445566778899aabbccddeeff", "+0112233445566778899aabbccddeeff"] {
            assert!(bad.parse::<FileId>().is_err(), "{bad}");
        }
    }
}
