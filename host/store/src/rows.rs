//! Row shapes shared by both backends (`FromRow` is generic over the database) and their conversion into the public
//! record types. Queries of both backends select columns under exactly these names.

use crate::common::{DEFAULT_STATUS, key32, kind};
use crate::{
    DeviceRecord, PresenceRecord, QueueStats, QueuedEnvelope, SessionRecord, StoreError, UserRecord, UserSummary,
};

/// Columns of `users` as selected by [`user_columns!`].
#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    id: i64,
    name: String,
    password_hash: String,
    disabled: bool,
    totp_secret: Option<Vec<u8>>,
    totp_pending: Option<Vec<u8>>,
    totp_last_step: Option<i64>,
    failed_logins: i64,
    locked_until: Option<i64>,
    created_at: i64,
}

/// The select list matching [`UserRow`]; a macro so that `concat!` can build `&'static str` queries from it.
macro_rules! user_columns {
    () => {
        "id, name, password_hash, disabled, totp_secret, totp_pending, totp_last_step, failed_logins, locked_until, \
         created_at"
    };
}
pub(crate) use user_columns;

impl From<UserRow> for UserRecord {
    fn from(r: UserRow) -> Self {
        UserRecord {
            id: r.id,
            name: r.name,
            password_hash: r.password_hash,
            disabled: r.disabled,
            totp_secret: r.totp_secret,
            totp_pending: r.totp_pending,
            totp_last_step: r.totp_last_step,
            failed_logins: r.failed_logins,
            locked_until: r.locked_until,
            created_at: r.created_at,
        }
    }
}

/// A row of the account list.
#[derive(sqlx::FromRow)]
pub(crate) struct UserSummaryRow {
    name: String,
    disabled: bool,
    totp: bool,
    devices: i64,
    created_at: i64,
}

impl From<UserSummaryRow> for UserSummary {
    fn from(r: UserSummaryRow) -> Self {
        UserSummary { name: r.name, disabled: r.disabled, totp: r.totp, devices: r.devices, created_at: r.created_at }
    }
}

/// A device joined with its owner's name.
#[derive(sqlx::FromRow)]
pub(crate) struct DeviceRow {
    id: String,
    user_id: i64,
    user_name: String,
    signing_key: Vec<u8>,
    static_key: Vec<u8>,
    name: String,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl TryFrom<DeviceRow> for DeviceRecord {
    type Error = StoreError;
    fn try_from(r: DeviceRow) -> Result<Self, StoreError> {
        Ok(DeviceRecord {
            id: r.id,
            user_id: r.user_id,
            user_name: r.user_name,
            signing_key: key32(r.signing_key, "device signing key")?,
            static_key: key32(r.static_key, "device static key")?,
            name: r.name,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        })
    }
}

/// A session.
#[derive(sqlx::FromRow)]
pub(crate) struct SessionRow {
    user_id: i64,
    device_id: String,
    expires_at: i64,
    revoked_at: Option<i64>,
}

impl From<SessionRow> for SessionRecord {
    fn from(r: SessionRow) -> Self {
        SessionRecord { user_id: r.user_id, device_id: r.device_id, expires_at: r.expires_at, revoked_at: r.revoked_at }
    }
}

/// A queue entry joined with its envelope.
#[derive(sqlx::FromRow)]
pub(crate) struct QueuedRow {
    seq: i64,
    id: String,
    kind: i64,
    sender: String,
    sender_device: String,
    recipient: String,
    mime: String,
    payload: Vec<u8>,
    created_at: i64,
    ref_action: Option<String>,
    ref_id: Option<String>,
}

/// The clear reference of an envelope from its two nullable columns.
pub(crate) fn envelope_ref(action: Option<String>, id: Option<String>) -> Option<crate::EnvelopeRef> {
    Some(crate::EnvelopeRef { action: action?, id: id? })
}

impl TryFrom<QueuedRow> for QueuedEnvelope {
    type Error = StoreError;
    fn try_from(r: QueuedRow) -> Result<Self, StoreError> {
        Ok(QueuedEnvelope {
            seq: r.seq,
            id: r.id,
            kind: kind(r.kind)?,
            sender: r.sender,
            sender_device: r.sender_device,
            recipient: r.recipient,
            mime: r.mime,
            payload: r.payload,
            created_at: r.created_at,
            refers: envelope_ref(r.ref_action, r.ref_id),
        })
    }
}

/// A row of the queue statistics.
#[derive(sqlx::FromRow)]
pub(crate) struct QueueStatsRow {
    user_name: String,
    device_id: String,
    pending: i64,
    oldest: Option<i64>,
}

impl From<QueueStatsRow> for QueueStats {
    fn from(r: QueueStatsRow) -> Self {
        QueueStats { user: r.user_name, device: r.device_id, pending: r.pending, oldest: r.oldest }
    }
}

/// A user's name with their presence row, if any.
#[derive(sqlx::FromRow)]
pub(crate) struct PresenceRow {
    name: String,
    status: Option<String>,
    last_seen: Option<i64>,
}

impl From<PresenceRow> for PresenceRecord {
    fn from(r: PresenceRow) -> Self {
        PresenceRecord {
            user: r.name,
            status: r.status.unwrap_or_else(|| DEFAULT_STATUS.to_owned()),
            last_seen: r.last_seen,
        }
    }
}

/// A row of the audit log.
#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    seq: i64,
    at: i64,
    actor: String,
    actor_device: String,
    action: String,
    conversation: String,
    message_id: Option<String>,
    subject: Option<String>,
}

impl From<AuditRow> for crate::AuditRecord {
    fn from(r: AuditRow) -> Self {
        crate::AuditRecord {
            seq: r.seq,
            event: crate::AuditEvent {
                at: r.at,
                actor: r.actor,
                actor_device: r.actor_device,
                action: r.action,
                conversation: r.conversation,
                message_id: r.message_id,
                subject: r.subject,
            },
        }
    }
}
