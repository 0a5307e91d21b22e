//! Stable, machine-readable error codes (sent in `error` frames) and the typed decode error.

use serde::{Deserialize, Serialize};

/// The stable error codes of IMF v1. New codes may be added in later versions; clients treat an unknown code as a
/// generic failure and show its message. `docs/protocol.md` lists what each means and what the peer does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is not valid JSON, or not valid UTF-8, or a field has the wrong type.
    MalformedFrame,
    /// The `type` is not one this relay knows. The connection stays open.
    UnknownType,
    /// `v` is missing or not a version this peer speaks.
    UnsupportedVersion,
    /// The frame (or a reassembled fragment sequence) is larger than `max_frame_bytes`.
    FrameTooLarge,
    /// The payload is larger than `max_payload_bytes`.
    PayloadTooLarge,
    /// Decompressing a payload would exceed `max_decompressed_bytes`, or the compressed data is corrupt.
    DecompressionFailed,
    /// A field fails validation (empty name, bad id, too many ids, …). The message names the field.
    InvalidField,
    /// Something other than a Noise handshake message arrived before the handshake completed.
    HandshakeRequired,
    /// The Noise handshake failed: tampered, truncated, wrong relay key, or wrong pattern.
    HandshakeFailed,
    /// The handshake's first message was seen before (or its timestamp is outside the allowed window).
    HandshakeReplayed,
    /// User name or password is wrong (deliberately not saying which).
    InvalidCredentials,
    /// The account has TOTP enabled and no code was given.
    TotpRequired,
    /// The TOTP code is wrong, or its time step was already used.
    TotpInvalid,
    /// Too many failed logins: try again after `retry_after_ms`.
    LoginLocked,
    /// The session token has expired: log in again.
    TokenExpired,
    /// The session token was revoked (logout, admin action): log in again.
    TokenRevoked,
    /// The token or device is not known to this relay.
    Unauthenticated,
    /// The account is disabled by an operator.
    AccountDisabled,
    /// Registration refused: the name is taken.
    UserExists,
    /// Registration is closed on this relay.
    RegistrationClosed,
    /// The recipient does not exist.
    UnknownRecipient,
    /// Too many frames or messages in the current window: slow down for `retry_after_ms`.
    RateLimited,
    /// Too many connections for this account or address.
    TooManyConnections,
    /// The account already has the most devices allowed.
    TooManyDevices,
    /// A browser connection from an origin this relay does not allow.
    OriginNotAllowed,
    /// The relay failed internally; the frame was not processed and may be retried.
    Internal,
    /// The relay is shutting down; reconnect later.
    ShuttingDown,
    /// An end-to-end `send` did not carry exactly one payload per current device of the recipients: fetch the
    /// device list (`keys.devices`) again and re-encrypt.
    StaleDevices,
    /// A key upload was refused: bad proof or signature, or a certificate from another identity than the account's.
    KeysRejected,
    /// No group with this id exists on the relay.
    UnknownGroup,
    /// The sender is not a member of the group (per the membership log).
    NotAMember,
    /// A membership-log entry was refused: malformed, badly signed, or a change its actor may not make.
    GroupRejected,
    /// Another entry took this place in the membership log first: fetch the log (`group.log`), re-apply and retry.
    GroupConflict,
    /// A relay policy (an administrator's plugin) refused the envelope; the message says which and why.
    PolicyRejected,
    /// This device was revoked by its owner (a signed device revocation list names it): it can no longer log in.
    DeviceRevoked,
    /// A device revocation list was refused: malformed, not signed by the account's identity, not newer than the
    /// stored one, un-revoking a device, or leaving the account without any device.
    RevocationRejected,
    /// The linking rendezvous already has two connections, or this connection or account has too many open.
    LinkBusy,
    /// No open rendezvous of this connection has that id (never opened, expired, closed, or not paired yet).
    LinkUnknown,
    /// A linking message is too large, or a rendezvous carried too many: start linking again.
    LinkLimit,
    /// An edit or deletion names a message the relay does not know in this conversation (never sent there, or
    /// older than the relay keeps message references).
    UnknownMessage,
    /// An edit of someone else's message, or a deletion the sender's role does not allow.
    NotAllowed,
    /// A file is larger than the relay's `files.max_file_bytes`, or a chunk size is outside its limits.
    FileTooLarge,
    /// The account's files would exceed its quota (`files.quota_bytes`).
    OverQuota,
    /// No such file on the relay (never uploaded, or expired and deleted).
    UnknownFile,
    /// The file's upload has not finished: not every chunk is stored yet.
    FileIncomplete,
    /// The file id is taken by another upload or another layout.
    FileConflict,
    /// A file ticket is missing, altered, expired, or for another file or use (HTTP endpoints).
    BadTicket,
    /// A chunk index beyond the file's last chunk (HTTP endpoints).
    ChunkOutOfRange,
    /// A chunk upload of the wrong length (HTTP endpoints).
    ChunkRejected,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::DecompressionFailed => "decompression_failed",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::HandshakeRequired => "handshake_required",
            ErrorCode::HandshakeFailed => "handshake_failed",
            ErrorCode::HandshakeReplayed => "handshake_replayed",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::TotpRequired => "totp_required",
            ErrorCode::TotpInvalid => "totp_invalid",
            ErrorCode::LoginLocked => "login_locked",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenRevoked => "token_revoked",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::AccountDisabled => "account_disabled",
            ErrorCode::UserExists => "user_exists",
            ErrorCode::RegistrationClosed => "registration_closed",
            ErrorCode::UnknownRecipient => "unknown_recipient",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::TooManyDevices => "too_many_devices",
            ErrorCode::OriginNotAllowed => "origin_not_allowed",
            ErrorCode::Internal => "internal",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::StaleDevices => "stale_devices",
            ErrorCode::KeysRejected => "keys_rejected",
            ErrorCode::UnknownGroup => "unknown_group",
            ErrorCode::NotAMember => "not_a_member",
            ErrorCode::GroupRejected => "group_rejected",
            ErrorCode::GroupConflict => "group_conflict",
            ErrorCode::PolicyRejected => "policy_rejected",
            ErrorCode::DeviceRevoked => "device_revoked",
            ErrorCode::RevocationRejected => "revocation_rejected",
            ErrorCode::LinkBusy => "link_busy",
            ErrorCode::LinkUnknown => "link_unknown",
            ErrorCode::LinkLimit => "link_limit",
            ErrorCode::UnknownMessage => "unknown_message",
            ErrorCode::NotAllowed => "not_allowed",
            ErrorCode::FileTooLarge => "file_too_large",
            ErrorCode::OverQuota => "over_quota",
            ErrorCode::UnknownFile => "unknown_file",
            ErrorCode::FileIncomplete => "file_incomplete",
            ErrorCode::FileConflict => "file_conflict",
            ErrorCode::BadTicket => "bad_ticket",
            ErrorCode::ChunkOutOfRange => "chunk_out_of_range",
            ErrorCode::ChunkRejected => "chunk_rejected",
        }
    }

    /// A refusal for now, not for good: the relay is busy or going down, or the sender must slow down or encrypt
    /// again for a changed device list. A client keeps the message queued and sends it again.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorCode::RateLimited | ErrorCode::Internal | ErrorCode::ShuttingDown | ErrorCode::StaleDevices)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why bytes from a peer did not decode into a frame. Each maps onto an [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not UTF-8.
    #[error("frame is not valid UTF-8")]
    InvalidUtf8,
    /// Not JSON, or the wrong shape.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The `type` field names no known frame.
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
    /// Wrong or missing `v`.
    #[error("unsupported protocol version {0:?}; this peer speaks v1")]
    UnsupportedVersion(Option<u64>),
    /// Larger than the frame limit.
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    FrameTooLarge {
        /// The frame's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Payload larger than its limit.
    #[error("payload of {size} bytes exceeds the limit of {limit}")]
    PayloadTooLarge {
        /// The payload's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A field failed validation.
    #[error("invalid field {field}: {reason}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl DecodeError {
    /// The wire error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::InvalidUtf8 | DecodeError::Malformed(_) => ErrorCode::MalformedFrame,
            DecodeError::UnknownType(_) => ErrorCode::UnknownType,
            DecodeError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            DecodeError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            DecodeError::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            DecodeError::InvalidField { .. } => ErrorCode::InvalidField,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for code in [ErrorCode::MalformedFrame, ErrorCode::HandshakeReplayed, ErrorCode::TotpInvalid, ErrorCode::ShuttingDown, ErrorCode::GroupConflict, ErrorCode::DeviceRevoked, ErrorCode::LinkLimit, ErrorCode::UnknownMessage, ErrorCode::NotAllowed] {
            assert_eq!(serde_json::to_value(code).unwrap(), serde_json::Value::String(code.as_str().into()));
        }
    }
}
