//! Relay persistence: accounts, devices, sessions, per-device offline queues, contacts and presence.
//!
//! One trait, [`RelayStore`], with two implementations that the same test suite runs against: [`SqliteStore`] (the
//! embedded default: one file under the data dir, WAL, `synchronous=FULL`) and [`PgStore`] (shared deployments).
//! Everything the relay keeps goes through here; the relay never writes SQL itself.
//!
//! Durability contract: when [`RelayStore::enqueue`] or [`RelayStore::ack`] returns `Ok`, the change is on disk
//! (fsynced). Callers batch many envelopes into one call (group commit) so that durability stays cheap.
//!
//! What it must not touch: payload bytes are opaque. It stores and returns them and never parses, indexes or logs them.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod common;
mod files;
mod identities;
mod postgres;
mod rows;
mod sqlite;

pub use files::{FileCreated, FileRecord, FileStore};
pub use identities::{AccountProfile, ExternalIdentityRef, IdentityStore, NO_PASSWORD, RedeemedCode};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Unix time in milliseconds.
pub type UnixMs = i64;

/// Internal numeric user id.
pub type UserId = i64;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint was violated (user name taken, device key already registered, …).
    #[error("already exists: {0}")]
    Conflict(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The configuration is unusable (bad URL, unwritable path).
    #[error("store configuration: {0}")]
    Config(String),
}

/// Result alias.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A new account.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Lower-case user name, already validated.
    pub name: String,
    /// PHC string of the Argon2id hash.
    pub password_hash: String,
    /// Creation time.
    pub created_at: UnixMs,
}

/// An account as stored.
#[derive(Clone)]
pub struct UserRecord {
    /// Internal id.
    pub id: UserId,
    /// User name.
    pub name: String,
    /// PHC string of the Argon2id hash.
    pub password_hash: String,
    /// Disabled by an operator.
    pub disabled: bool,
    /// The confirmed TOTP secret (raw bytes), when 2FA is on.
    pub totp_secret: Option<Vec<u8>>,
    /// A TOTP secret awaiting confirmation.
    pub totp_pending: Option<Vec<u8>>,
    /// The last TOTP time step accepted; a step `<=` this is refused.
    pub totp_last_step: Option<i64>,
    /// Consecutive failed logins.
    pub failed_logins: i64,
    /// No login is accepted before this time.
    pub locked_until: Option<UnixMs>,
    /// Creation time.
    pub created_at: UnixMs,
}

impl std::fmt::Debug for UserRecord {
    // Hashes and secrets stay out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("disabled", &self.disabled)
            .field("totp", &self.totp_secret.is_some())
            .finish_non_exhaustive()
    }
}

/// A row of `imfree admin users`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    /// User name.
    pub name: String,
    /// Disabled by an operator.
    pub disabled: bool,
    /// 2FA enabled.
    pub totp: bool,
    /// Registered devices.
    pub devices: i64,
    /// Creation time.
    pub created_at: UnixMs,
}

/// A device to register.
#[derive(Debug, Clone)]
pub struct NewDevice {
    /// Public device id (chosen by the relay, unique).
    pub id: String,
    /// Owner.
    pub user_id: UserId,
    /// Ed25519 signing public key.
    pub signing_key: [u8; 32],
    /// X25519 static public key (the device's Noise static key). Unique across the relay.
    pub static_key: [u8; 32],
    /// Human-readable name ("laptop").
    pub name: String,
    /// Registration time.
    pub created_at: UnixMs,
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Public device id.
    pub id: String,
    /// Owner.
    pub user_id: UserId,
    /// Owner's name.
    pub user_name: String,
    /// Ed25519 signing public key.
    pub signing_key: [u8; 32],
    /// X25519 static public key.
    pub static_key: [u8; 32],
    /// Human-readable name.
    pub name: String,
    /// Registration time.
    pub created_at: UnixMs,
    /// When its owner revoked it (a revoked device can no longer log in or resume).
    pub revoked_at: Option<UnixMs>,
}

/// A session (login) as stored. Only the SHA-256 of the token is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The user.
    pub user_id: UserId,
    /// The device the token was issued to.
    pub device_id: String,
    /// Expiry.
    pub expires_at: UnixMs,
    /// When it was revoked, if it was.
    pub revoked_at: Option<UnixMs>,
}

/// What kind of thing a queued envelope is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeKind {
    /// A message (`deliver`).
    Message = 0,
    /// A receipt (`receipt`).
    Receipt = 1,
}

impl EnvelopeKind {
    /// From the stored integer.
    pub fn from_i64(v: i64) -> Option<Self> {
        match v {
            0 => Some(EnvelopeKind::Message),
            1 => Some(EnvelopeKind::Receipt),
            _ => None,
        }
    }
}

/// An envelope to store and queue for its recipient devices.
#[derive(Debug, Clone)]
pub struct NewEnvelope {
    /// The sender's envelope id (ULID string). Unique: a second enqueue of the same id is a duplicate.
    pub id: String,
    /// Message or receipt.
    pub kind: EnvelopeKind,
    /// Sending user's name.
    pub sender: String,
    /// Sending device.
    pub sender_device: String,
    /// Recipient user's name.
    pub recipient: String,
    /// Outer content type (for messages) or receipt kind (for receipts).
    pub mime: String,
    /// Opaque payload bytes (for receipts: the JSON list of referenced ids).
    pub payload: Vec<u8>,
    /// When the relay accepted it.
    pub created_at: UnixMs,
    /// The device ids whose queues get it.
    pub recipient_devices: Vec<String>,
    /// Per-device payloads (end-to-end: each encrypted for its device): empty, or exactly one per
    /// `recipient_devices` entry in the same order, in which case `payload` is unused.
    pub device_payloads: Vec<Vec<u8>>,
    /// For an edit or deletion: the message it changes. Stored with the envelope (and delivered with it), and
    /// recorded in the audit log in the same transaction.
    pub refers: Option<EnvelopeRef>,
}

/// An edit or deletion of an earlier message, in the envelope's clear metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeRef {
    /// `edit` or `delete`.
    pub action: String,
    /// The envelope id of the message changed.
    pub id: String,
}

/// What the relay remembers of an accepted envelope after delivery (for as long as it keeps the id): enough to
/// decide who may edit or delete it, never its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeRecord {
    /// Envelope id.
    pub id: String,
    /// Message or receipt.
    pub kind: EnvelopeKind,
    /// Sending user.
    pub sender: String,
    /// Recipient user, or the group's recipient name.
    pub recipient: String,
    /// What the envelope itself changes, if it is an edit or deletion.
    pub refers: Option<EnvelopeRef>,
    /// Accepted time.
    pub created_at: UnixMs,
}

/// One event of the audit log: metadata only (who, when, which message or member), never content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// When it happened.
    pub at: UnixMs,
    /// The user who did it.
    pub actor: String,
    /// The device it was done from.
    pub actor_device: String,
    /// What was done: `message.edit`, `message.delete`, `group.create`, `group.add`, `group.remove`, `group.leave`,
    /// `group.promote`, `group.demote`.
    pub action: String,
    /// The conversation: see [`audit_conversation`].
    pub conversation: String,
    /// The message edited or deleted.
    pub message_id: Option<String>,
    /// The user a membership change is about.
    pub subject: Option<String>,
}

/// An audit-log event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the log.
    pub seq: i64,
    /// The event.
    pub event: AuditEvent,
}

/// Which audit-log events to read (every filter given must match), newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this conversation.
    pub conversation: Option<String>,
    /// Only events this user did, or membership changes about this user.
    pub user: Option<String>,
    /// Only events at or after this time.
    pub since: Option<UnixMs>,
    /// Only events before this time.
    pub until: Option<UnixMs>,
    /// At most this many.
    pub limit: i64,
}

/// How the audit log names a conversation: a group by its recipient name (`group:<id>`), two users by both names in
/// order (`dm:alice,bob`), whoever sent.
pub fn audit_conversation(sender: &str, recipient: &str) -> String {
    if recipient.starts_with("group:") {
        recipient.to_owned()
    } else {
        let (a, b) = if sender <= recipient { (sender, recipient) } else { (recipient, sender) };
        format!("dm:{a},{b}")
    }
}

impl AuditEvent {
    /// The audit event an edit or deletion envelope makes, if it is one.
    pub fn of_envelope(e: &NewEnvelope) -> Option<AuditEvent> {
        let r = e.refers.as_ref()?;
        Some(AuditEvent {
            at: e.created_at,
            actor: e.sender.clone(),
            actor_device: e.sender_device.clone(),
            action: format!("message.{}", r.action),
            conversation: audit_conversation(&e.sender, &e.recipient),
            message_id: Some(r.id.clone()),
            subject: None,
        })
    }
}

/// What happened to one envelope of an [`RelayStore::enqueue`] batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// Stored and queued; `created_at` is the accepted time.
    Stored,
    /// The id was already known; nothing was queued. `created_at` is the original accepted time.
    Duplicate {
        /// When the original was accepted.
        created_at: UnixMs,
    },
}

/// An envelope in a device's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEnvelope {
    /// Position in this device's queue, strictly increasing in enqueue order.
    pub seq: i64,
    /// Envelope id.
    pub id: String,
    /// Message or receipt.
    pub kind: EnvelopeKind,
    /// Sending user.
    pub sender: String,
    /// Sending device.
    pub sender_device: String,
    /// Recipient user.
    pub recipient: String,
    /// Outer content type.
    pub mime: String,
    /// Opaque payload.
    pub payload: Vec<u8>,
    /// Accepted time.
    pub created_at: UnixMs,
    /// For an edit or deletion: the message it changes.
    pub refers: Option<EnvelopeRef>,
}

/// A row of `imfree admin queues`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    /// User name.
    pub user: String,
    /// Device id.
    pub device: String,
    /// Envelopes waiting.
    pub pending: i64,
    /// Accepted time of the oldest waiting envelope.
    pub oldest: Option<UnixMs>,
}

/// A user's stored presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRecord {
    /// User name.
    pub user: String,
    /// The status the user chose ("online" or "away"); "offline" when appearing offline.
    pub status: String,
    /// Last time a device of theirs was connected.
    pub last_seen: Option<UnixMs>,
}

/// A device's end-to-end keys as published, already verified by the relay with imfree-crypto. The documents are
/// opaque JSON to the store.
#[derive(Debug, Clone)]
pub struct DeviceKeysUpload {
    /// The device's owner.
    pub user_id: UserId,
    /// The device certificate (replaces the stored one).
    pub certificate: Vec<u8>,
    /// A new signed prekey (replaces the stored one), or `None` to keep it.
    pub signed_prekey: Option<Vec<u8>>,
    /// One-time X25519 prekeys to add: (key id, document).
    pub one_time: Vec<(i64, Vec<u8>)>,
    /// One-time ML-KEM prekeys to add: (key id, document).
    pub kem_one_time: Vec<(i64, Vec<u8>)>,
    /// A new last-resort ML-KEM prekey (replaces the stored one), or `None` to keep it.
    pub kem_last_resort: Option<Vec<u8>>,
    /// Upload time.
    pub at: UnixMs,
}

/// What a claim hands out for one device: enough for one session set-up. One-time prekeys in it are gone from the
/// store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedBundle {
    /// The device.
    pub device: String,
    /// Its certificate document.
    pub certificate: Vec<u8>,
    /// Its signed prekey document.
    pub signed_prekey: Vec<u8>,
    /// A one-time X25519 prekey document, while any are left.
    pub one_time: Option<Vec<u8>>,
    /// A one-time ML-KEM prekey document, or the last-resort one when none are left.
    pub kem: Vec<u8>,
}

/// Persistence for the relay. Implementations are cheap to clone handles over a pool.
#[async_trait::async_trait]
pub trait RelayStore: FileStore + IdentityStore + Send + Sync + 'static {
    // ----- accounts -----
    /// Create an account. `Conflict` if the name is taken.
    async fn create_user(&self, user: &NewUser) -> Result<UserId>;
    /// Look an account up by name.
    async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>>;
    /// Look an account up by id.
    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>>;
    /// All accounts, by name.
    async fn list_users(&self) -> Result<Vec<UserSummary>>;
    /// Disable or enable an account. Returns false if no such user.
    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool>;
    /// Set (or clear) the pending TOTP secret.
    async fn set_totp_pending(&self, user: UserId, secret: Option<&[u8]>) -> Result<()>;
    /// Set (or clear) the confirmed TOTP secret; clears the pending one and records `step` as used.
    async fn set_totp_secret(&self, user: UserId, secret: Option<&[u8]>, step: Option<i64>) -> Result<()>;
    /// Atomically mark TOTP time step `step` as used. Returns false (and changes nothing) if a step `>= step` was
    /// already used — so that a code is never accepted twice, even by two relays racing.
    async fn use_totp_step(&self, user: UserId, step: i64) -> Result<bool>;
    /// Count a failed login; set `locked_until` (when given). Returns the new consecutive failure count.
    async fn record_login_failure(&self, user: UserId, locked_until: Option<UnixMs>) -> Result<i64>;
    /// Reset the failure count and lock after a successful login.
    async fn reset_login_failures(&self, user: UserId) -> Result<()>;

    // ----- devices -----
    /// Register a device. `Conflict` if its static key is already registered.
    async fn add_device(&self, device: &NewDevice) -> Result<()>;
    /// The device with this X25519 static key.
    async fn device_by_static_key(&self, key: &[u8; 32]) -> Result<Option<DeviceRecord>>;
    /// The device with this id.
    async fn device_by_id(&self, id: &str) -> Result<Option<DeviceRecord>>;
    /// All devices of a user, oldest first.
    async fn devices_of(&self, user: UserId) -> Result<Vec<DeviceRecord>>;

    // ----- sessions -----
    /// Store a session under the SHA-256 of its token.
    async fn create_session(&self, token_hash: &[u8; 32], session: &SessionRecord, created_at: UnixMs) -> Result<()>;
    /// The session with this token hash.
    async fn session(&self, token_hash: &[u8; 32]) -> Result<Option<SessionRecord>>;
    /// Revoke one session. Returns false if unknown.
    async fn revoke_session(&self, token_hash: &[u8; 32], at: UnixMs) -> Result<bool>;
    /// Revoke every session of a user. Returns how many.
    async fn revoke_user_sessions(&self, user: UserId, at: UnixMs) -> Result<u64>;

    // ----- queues -----
    /// Store a batch of envelopes and queue each for its recipient devices, in one transaction, durably. The
    /// outcomes are in the batch's order. Queue order per device follows the batch order.
    async fn enqueue(&self, batch: &[NewEnvelope]) -> Result<Vec<EnqueueOutcome>>;
    /// Up to `limit` queued envelopes of a device with `seq > after`, in queue order.
    async fn fetch_queue(&self, device: &str, after: i64, limit: i64) -> Result<Vec<QueuedEnvelope>>;
    /// Remove acknowledged envelopes from devices' queues, durably, in one transaction: each pair is (device, id).
    /// Unknown pairs are ignored. Returns how many queue entries were removed.
    async fn ack(&self, acks: &[(String, String)]) -> Result<u64>;
    /// [`RelayStore::enqueue`] `batch` and then [`RelayStore::ack`] `acks`, in ONE durable transaction. A relay that
    /// group-commits both kinds of work pays one fsync per round instead of two. The default runs the two calls one
    /// after the other (two transactions); both backends override it with a single one.
    async fn enqueue_and_ack(
        &self,
        batch: &[NewEnvelope],
        acks: &[(String, String)],
    ) -> Result<(Vec<EnqueueOutcome>, u64)> {
        let outcomes = self.enqueue(batch).await?;
        let removed = self.ack(acks).await?;
        Ok((outcomes, removed))
    }
    /// Number of envelopes waiting for a device.
    async fn queue_len(&self, device: &str) -> Result<i64>;
    /// Queue statistics for every device with a non-empty queue.
    async fn queue_stats(&self) -> Result<Vec<QueueStats>>;
    /// Forget envelope ids (kept for de-duplication) accepted before `before` that no queue holds any more.
    /// Returns how many were removed.
    async fn prune_envelopes(&self, before: UnixMs) -> Result<u64>;

    // ----- contacts and presence -----
    /// Record that two users exchanged envelopes (symmetric; idempotent).
    async fn add_contact(&self, a: UserId, b: UserId) -> Result<()>;
    /// The user ids that are contacts of `user`.
    async fn contacts_of(&self, user: UserId) -> Result<Vec<UserId>>;
    /// Whether two users are contacts.
    async fn are_contacts(&self, a: UserId, b: UserId) -> Result<bool>;
    /// Store a user's chosen status and/or last-seen time (`None` leaves that field as is).
    async fn set_presence(&self, user: UserId, status: Option<&str>, last_seen: Option<UnixMs>) -> Result<()>;
    /// Stored presence of a user (status defaults to "online" when never set).
    async fn presence_of(&self, user: UserId) -> Result<Option<PresenceRecord>>;

    // ----- end-to-end keys -----
    /// The user's identity key, once a device published it.
    async fn user_identity(&self, user: UserId) -> Result<Option<[u8; 32]>>;
    /// Record the user's identity key if none is set. Returns false (changing nothing) if a different key is set.
    async fn set_user_identity(&self, user: UserId, key: &[u8; 32], at: UnixMs) -> Result<bool>;
    /// Store a device's published keys (certificate, signed prekey, one-time and last-resort prekeys).
    async fn put_device_keys(&self, device: &str, keys: &DeviceKeysUpload) -> Result<()>;
    /// The certificates of a user's devices that published keys: (device id, certificate document), oldest first.
    async fn device_certificates(&self, user: UserId) -> Result<Vec<(String, Vec<u8>)>>;
    /// Claim one bundle per device, in one transaction: each one-time prekey handed out is deleted. Devices without a
    /// complete set of keys are left out.
    async fn claim_bundles(&self, devices: &[String]) -> Result<Vec<ClaimedBundle>>;
    /// Unclaimed one-time prekeys of a device: (X25519, ML-KEM).
    async fn prekey_counts(&self, device: &str) -> Result<(i64, i64)>;

    /// What the relay still remembers of an accepted envelope (until its id is pruned), without its payload.
    async fn envelope_record(&self, id: &str) -> Result<Option<EnvelopeRecord>>;

    // ----- audit log -----
    /// Record audit events (outside envelopes and group entries, which record theirs in their own transaction).
    async fn append_audit(&self, events: &[AuditEvent]) -> Result<()>;
    /// Read the audit log, newest first.
    async fn audit_log(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;
    /// Forget audit events older than `before`; returns how many.
    async fn prune_audit(&self, before: UnixMs) -> Result<u64>;

    // ----- groups -----
    /// Append entry `seq` to a group's membership log and make `members` the group's current members (everyone
    /// else the log named stays on as a former member), in one transaction. `Ok(false)`: the log already has an
    /// entry `seq` (another client appended first); nothing changed. The caller has verified the entry.
    /// `audit` is recorded in the same transaction when the entry is appended.
    async fn append_group_entry(&self, group: &str, seq: i64, entry: &[u8], members: &[UserId], at: UnixMs, audit: &[AuditEvent]) -> Result<bool>;
    /// Entries `from` on, oldest first, at most `limit`.
    async fn group_entries(&self, group: &str, from: i64, limit: i64) -> Result<Vec<(i64, Vec<u8>)>>;
    /// The sequence number of the log's last entry; `None` when the group does not exist.
    async fn group_head(&self, group: &str) -> Result<Option<i64>>;
    /// Current members.
    async fn group_members(&self, group: &str) -> Result<Vec<UserId>>;
    /// `Some(true)` for a current member, `Some(false)` for a former one, `None` for someone the log never named.
    async fn group_membership(&self, group: &str, user: UserId) -> Result<Option<bool>>;

    // ----- plugin key-value data (relay scope) -----
    /// The value under `key` in `namespace`.
    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>>;
    /// Store `value` under `key` (replacing any).
    async fn kv_set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<()>;
    /// Remove `key`.
    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<()>;
    /// Keys of `namespace` that start with `prefix`, sorted, at most `limit`.
    async fn kv_keys(&self, namespace: &str, prefix: &str, limit: i64) -> Result<Vec<String>>;
    /// Bytes of keys and values in `namespace`.
    async fn kv_usage(&self, namespace: &str) -> Result<i64>;
    // ----- device revocation -----
    /// The user's newest device revocation list: (version, encoded list).
    async fn revocation_list(&self, user: UserId) -> Result<Option<(i64, Vec<u8>)>>;
    /// In one transaction: store `list` as the user's revocation list if `version` is higher than the stored one's
    /// (returns false and changes nothing otherwise), and revoke each of `devices` that belongs to the user: mark it
    /// revoked, revoke its sessions, delete its published keys, one-time prekeys and queue.
    async fn revoke_devices(&self, user: UserId, version: i64, list: &[u8], devices: &[String], at: UnixMs) -> Result<bool>;
}
