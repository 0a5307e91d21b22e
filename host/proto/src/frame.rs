//! IMF v1 frames: one JSON object per frame, `{"v":1,"type":"…",…}`. See `docs/protocol.md` for each type.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{DecodeError, EnvelopeId, ErrorCode, Limits, PROTOCOL_VERSION};

/// One IMF frame: the version and a typed body. The body's `type` tag and fields sit at the top level of the JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// Protocol version; always [`PROTOCOL_VERSION`] for frames this crate builds.
    pub v: u32,
    /// The frame's type and fields.
    #[serde(flatten)]
    pub body: FrameBody,
}

/// The largest encoded membership-log entry (a 64-character user name makes one of under 300 bytes).
pub const MAX_GROUP_ENTRY_BYTES: usize = 1024;

/// Every frame type of IMF v1. Unknown types are rejected with [`ErrorCode::UnknownType`] (the connection stays).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FrameBody {
    // ----- client -> relay -----
    /// Send an envelope to a user (all of their devices, and the sender's other devices).
    Send(Send),
    /// Acknowledge deliveries; the relay removes them from this device's queue.
    Ack(Ack),
    /// Ask for the presence of some users (answered with one `presence` frame each, for contacts only).
    #[serde(rename = "presence.query")]
    PresenceQuery(PresenceQuery),
    /// Begin enabling TOTP: the relay answers with `totp.secret`.
    #[serde(rename = "totp.setup")]
    TotpSetup(Request),
    /// Confirm the pending TOTP secret with a current code; TOTP is then required at login.
    #[serde(rename = "totp.confirm")]
    TotpConfirm(TotpCode),
    /// Disable TOTP, proving possession with a current code.
    #[serde(rename = "totp.disable")]
    TotpDisable(TotpCode),
    /// Revoke this session's token; the relay answers `ok` and closes.
    Logout(Request),
    /// Liveness check; answered with `pong`.
    Ping(Request),
    /// Publish this device's certificate and prekeys (E2E); answered with `ok`.
    #[serde(rename = "keys.upload")]
    KeysUpload(KeysUpload),
    /// Ask for a user's E2E devices and their certificates; answered with `keys.device_list`.
    #[serde(rename = "keys.devices")]
    KeysDevices(KeysDevices),
    /// Claim one prekey bundle per named device of a user (one-time prekeys are handed out once); answered with
    /// `keys.bundles`.
    #[serde(rename = "keys.claim")]
    KeysClaim(KeysClaim),
    /// Append a signed entry to a group's membership log (the genesis entry creates the group); answered with `ok`.
    #[serde(rename = "group.append")]
    GroupAppend(GroupAppend),
    /// Ask for a group's membership log from an entry on; answered with `group.entries`.
    #[serde(rename = "group.log")]
    GroupLog(GroupLog),
    /// Publish a new signed device revocation list for this account; answered with `ok`.
    #[serde(rename = "keys.revoke")]
    KeysRevoke(KeysRevoke),
    /// Join a device-linking rendezvous of this account; answered with `ok`, then `link.paired` once two
    /// connections have joined.
    #[serde(rename = "link.open")]
    LinkOpen(LinkOpen),
    /// Start or resume a file upload; answered with `file.ticket` (see `crate::file`).
    #[serde(rename = "file.begin")]
    FileBegin(crate::file::FileBegin),
    /// Ask for a file download ticket; answered with `file.ticket`.
    #[serde(rename = "file.fetch")]
    FileFetch(crate::file::FileFetch),

    // ----- both directions -----
    /// Client -> relay: set own status. Relay -> client: a contact's status.
    Presence(Presence),
    /// Client -> relay: typing state towards `to`. Relay -> client: typing state of `from`.
    Typing(Typing),
    /// Client -> relay: delivery/read receipt for envelopes from `to`. Relay -> client: a receipt from `from`,
    /// queued and acked like a delivery.
    Receipt(Receipt),
    /// An opaque device-linking message: client -> relay for the other connection of the rendezvous, relay ->
    /// client from it. Forwarded live only, never stored.
    #[serde(rename = "link.data")]
    LinkData(LinkData),
    /// Client -> relay: leave the rendezvous. Relay -> client: the rendezvous ended (the other side left or closed,
    /// or it expired).
    #[serde(rename = "link.close")]
    LinkClose(LinkClose),

    // ----- relay -> client -----
    /// First frame after a successful handshake.
    Welcome(Welcome),
    /// An envelope for this device. Ack it once it is stored.
    Deliver(Deliver),
    /// The relay has durably stored a `send` or `receipt`: it will not be lost.
    Accepted(Accepted),
    /// Everything queued for this device at connect time has been pushed.
    Drained(Request),
    /// The answer to `totp.setup`.
    #[serde(rename = "totp.secret")]
    TotpSecret(TotpSecret),
    /// A request succeeded.
    Ok(Request),
    /// The answer to `ping`.
    Pong(Request),
    /// The answer to `keys.devices`.
    #[serde(rename = "keys.device_list")]
    KeysDeviceList(KeysDeviceList),
    /// The answer to `keys.claim`.
    #[serde(rename = "keys.bundles")]
    KeysBundles(KeysBundles),
    /// The answer to `group.log`.
    #[serde(rename = "group.entries")]
    GroupEntries(GroupEntries),
    /// Two connections of this account have joined the rendezvous: linking messages can flow.
    #[serde(rename = "link.paired")]
    LinkPaired(LinkPaired),
    /// The answer to `file.begin` and `file.fetch`.
    #[serde(rename = "file.ticket")]
    FileTicket(crate::file::FileTicket),
    /// A request failed, or the connection is about to close.
    Error(ErrorFrame),
}

/// The frame types of IMF v1, as they appear in `type`.
pub const FRAME_TYPES: &[&str] = &[
    "send", "ack", "presence.query", "totp.setup", "totp.confirm", "totp.disable", "logout", "ping", "presence",
    "typing", "receipt", "welcome", "deliver", "accepted", "drained", "totp.secret", "ok", "pong", "error",
    "keys.upload", "keys.devices", "keys.claim", "keys.device_list", "keys.bundles", "keys.revoke", "link.open",
    "link.data", "link.close", "link.paired", "group.append", "group.log", "group.entries",
    "file.begin", "file.fetch", "file.ticket",
];

/// Whom an envelope is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recipient {
    /// A user, by name: every device of theirs.
    #[serde(rename = "to")]
    User(String),
    /// A group, by id: every device of every member but the sending one. The payload is one group message
    /// (sender-key ciphertext) for all of them.
    #[serde(rename = "group")]
    Group(GroupId),
}

/// A group id: a ULID, the 16 bytes that the membership log names, in its 26-character text form.
pub type GroupId = EnvelopeId;

/// Opaque payload bytes, base64 (standard alphabet, padded) on the wire. The relay never looks inside.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Payload(pub Vec<u8>);

impl Payload {
    /// No bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload(v)
    }
}

impl std::fmt::Debug for Payload {
    // Never print payload bytes: they may be message content.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        B64.decode(s.as_bytes()).map(Payload).map_err(|_| serde::de::Error::custom("data is not valid base64"))
    }
}

/// `send`: an envelope from this device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Send {
    /// The envelope id (a ULID chosen by the sender; a resend with the same id is accepted once).
    pub id: EnvelopeId,
    /// The recipient.
    #[serde(flatten)]
    pub to: Recipient,
    /// The outer content type: [`crate::mime::E2E`], or [`crate::mime::PLAIN_CONTENT`] before E2E.
    pub mime: String,
    /// The opaque payload, the same for every recipient device (empty when `payloads` is used).
    #[serde(default, skip_serializing_if = "Payload::is_empty")]
    pub data: Payload,
    /// One payload per recipient device (E2E: each encrypted for its device). When present, it must name exactly
    /// the recipient's current E2E devices and the sender's other E2E devices, or the relay answers
    /// `stale_devices`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payloads: Vec<DevicePayload>,
    /// For an edit or a deletion: which earlier message it changes, in clear so that the relay can check that the
    /// sender may change it and record the change in its audit log. The new content stays encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refers: Option<MessageRef>,
}

/// An edit or deletion of an earlier message, as envelope metadata (and, identically, inside the encrypted content,
/// where the recipients' clients check it again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MessageRef {
    /// What is done to the message.
    pub action: RefAction,
    /// The envelope id of the message edited or deleted.
    pub id: EnvelopeId,
}

/// What an envelope does to the message it refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefAction {
    /// Replaces its content (by its author only).
    Edit,
    /// Deletes it (by its author, or in a group by a member whose role allows deleting others' messages).
    Delete,
}

impl RefAction {
    /// The action's name on the wire and in stores.
    pub fn as_str(self) -> &'static str {
        match self {
            RefAction::Edit => "edit",
            RefAction::Delete => "delete",
        }
    }

    /// The action of a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "edit" => Some(RefAction::Edit),
            "delete" => Some(RefAction::Delete),
            _ => None,
        }
    }
}

/// A payload for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicePayload {
    /// The device id.
    pub device: String,
    /// The payload (for E2E, a session message for that device).
    pub data: Payload,
}

/// `keys.upload`: the upload document (see docs/crypto.md, `KeyUpload`), signed over the relay's challenge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeysUpload {
    /// Request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The upload document.
    pub upload: serde_json::Value,
}

/// `keys.devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysDevices {
    /// Request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Whose devices.
    pub user: String,
}

/// `keys.claim`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysClaim {
    /// Request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Whose devices.
    pub user: String,
    /// Which devices (ids from `keys.device_list`).
    pub devices: Vec<String>,
}

/// One E2E device in `keys.device_list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceEntry {
    /// The device id.
    pub device: String,
    /// Its certificate from the user's identity key (see docs/crypto.md, `DeviceCertificate`).
    pub certificate: serde_json::Value,
    /// The device's name, only in the answer about the asker's own account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `keys.device_list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeysDeviceList {
    /// The request answered.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Whose devices.
    pub user: String,
    /// The devices that have published keys (revoked devices are not listed).
    pub devices: Vec<DeviceEntry>,
    /// The user's newest signed device revocation list (see docs/crypto.md), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<Payload>,
}

/// `keys.revoke`: a new signed device revocation list for this account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysRevoke {
    /// Request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The list in its binary encoding (see docs/crypto.md, "Device revocation list").
    pub list: Payload,
}

/// Length of a rendezvous id: 32 lowercase hex digits.
pub const RENDEZVOUS_LEN: usize = 32;
/// Longest `reason` of a `link.close`.
pub const MAX_LINK_REASON: usize = 200;

/// `link.open`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkOpen {
    /// Request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The rendezvous id both devices derive from the link code (32 lowercase hex digits).
    pub rendezvous: String,
}

/// `link.paired`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPaired {
    /// The rendezvous.
    pub rendezvous: String,
    /// The other connection's device id (as the relay knows it; informative, not authenticated end to end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The other device's name (as the relay knows it; informative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
}

/// `link.data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkData {
    /// The rendezvous.
    pub rendezvous: String,
    /// One opaque handshake or transport message of the linking protocol.
    pub data: Payload,
}

/// `link.close`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkClose {
    /// The rendezvous.
    pub rendezvous: String,
    /// Why, in words (at most 200 characters): "linked", "cancelled", "expired", "the other device left", …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One bundle in `keys.bundles`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceBundle {
    /// The device id.
    pub device: String,
    /// The prekey bundle (see docs/crypto.md, `PrekeyBundle`).
    pub bundle: serde_json::Value,
}

/// `keys.bundles`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeysBundles {
    /// The request answered.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Whose devices.
    pub user: String,
    /// One bundle per claimed device that has keys.
    pub bundles: Vec<DeviceBundle>,
}

/// `group.append`: one membership-log entry (see docs/crypto.md, `MembershipEntry`), in its canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupAppend {
    /// Request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The group.
    pub group: GroupId,
    /// The encoded entry; its `seq` must be the log's next.
    pub entry: Payload,
}

/// `group.log`: entries `from` on (0 for the whole log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupLog {
    /// Request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The group.
    pub group: GroupId,
    /// The first entry wanted.
    #[serde(default)]
    pub from: u64,
    /// For someone not in the group yet who holds an invite link: proof of it, to read the log before joining.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<InviteProof>,
}

/// Proof that the requester holds an open invite link of a group (docs/crypto.md, "Invite links").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteProof {
    /// The invite's Ed25519 public key (32 bytes).
    pub key: Payload,
    /// The invite key's signature (64 bytes) over `invite_read_bytes(group, requester)`.
    pub signature: Payload,
}

/// `group.entries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEntries {
    /// The request answered.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The group.
    pub group: GroupId,
    /// The sequence number of the log's last entry as the relay has it.
    pub head: u64,
    /// Encoded entries from the requested one on, in order (at most `max_group_entries_per_frame`; ask again from
    /// the next one for more).
    pub entries: Vec<Payload>,
}

/// `deliver`: an envelope for this device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deliver {
    /// The envelope id, as the sender chose it.
    pub id: EnvelopeId,
    /// The sending user.
    pub from: String,
    /// The sending device.
    pub from_device: String,
    /// The recipient user.
    pub to: String,
    /// For a group message: the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
    /// When the relay accepted the envelope (Unix milliseconds).
    pub ts: u64,
    /// The outer content type.
    pub mime: String,
    /// The opaque payload.
    pub data: Payload,
    /// For an edit or deletion: the message it changes, as the sender declared it and the relay checked it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refers: Option<MessageRef>,
}

/// `ack`: deliveries this device has stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// The envelope ids.
    pub ids: Vec<EnvelopeId>,
}

/// `accepted`: the relay stored an envelope durably.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    /// The envelope id from the `send` or `receipt`.
    pub id: EnvelopeId,
    /// True when the relay had already accepted this id (a resend); nothing was queued twice.
    #[serde(default)]
    pub duplicate: bool,
    /// When the relay accepted the envelope (Unix milliseconds).
    pub ts: u64,
}

/// A user's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Connected and available.
    Online,
    /// Connected, away.
    Away,
    /// No device connected (or appearing offline).
    Offline,
}

impl Status {
    /// The status as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::Offline => "offline",
        }
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "online" => Ok(Status::Online),
            "away" => Ok(Status::Away),
            "offline" => Ok(Status::Offline),
            other => Err(format!("unknown status {other:?}; use online, away or offline")),
        }
    }
}

/// `presence`: own status (client -> relay, `user` absent) or a contact's (relay -> client).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    /// Whose presence (relay -> client only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The status.
    pub status: Status,
    /// Last time a device of this user was connected (Unix ms), when offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<u64>,
}

/// `presence.query`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceQuery {
    /// The users asked about.
    pub users: Vec<String>,
}

/// `typing`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Typing {
    /// Towards whom (client -> relay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Who is typing (relay -> client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Typing now, or stopped.
    pub active: bool,
}

/// The kind of a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    /// The envelopes reached a device of the recipient.
    Delivered,
    /// The recipient displayed them.
    Read,
}

/// `receipt`: routed and queued like an envelope; it has its own id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// The receipt's own envelope id.
    pub id: EnvelopeId,
    /// Recipient of the receipt: the original sender (client -> relay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Who sent the receipt (relay -> client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The envelopes it is about.
    pub refs: Vec<EnvelopeId>,
    /// Delivered or read.
    pub kind: ReceiptKind,
    /// When the relay accepted it (relay -> client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<u64>,
}

/// A frame with only an optional request id, echoed as `ref` in the answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Request {
    /// Request id chosen by the sender (at most 64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// For answers: the id of the request answered.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// `totp.confirm` / `totp.disable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpCode {
    /// Request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The current six-digit code.
    pub code: String,
}

/// `totp.secret`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpSecret {
    /// The shared secret, base32 (RFC 4648, no padding).
    pub secret: String,
    /// An `otpauth://` URI for authenticator apps.
    pub uri: String,
}

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(..)")
    }
}

/// `welcome`: the session is authenticated.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The account's user name.
    pub user: String,
    /// This device's id.
    pub device: String,
    /// A new session token (only after a password login or registration). Keep it secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// When the token expires (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires: Option<u64>,
    /// Envelopes waiting in this device's queue.
    pub queued: u64,
    /// The relay's clock (Unix ms).
    pub server_time: u64,
    /// A fresh value this connection's `keys.upload` must sign (so an old upload cannot be replayed).
    #[serde(default, skip_serializing_if = "Payload::is_empty")]
    pub key_challenge: Payload,
    /// This device's unclaimed one-time prekeys on the relay, (X25519, ML-KEM): replenish when low.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prekeys_left: Option<(u64, u64)>,
    /// The account has no identity key yet (an account made by single sign-on, before its first device set up
    /// end-to-end encryption): this device should make one and publish its keys, as a registering device does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub needs_identity: bool,
}

impl std::fmt::Debug for Welcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Welcome")
            .field("user", &self.user)
            .field("device", &self.device)
            .field("token", &self.token.as_ref().map(|_| "<secret>"))
            .field("queued", &self.queued)
            .finish()
    }
}

/// `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// The stable machine-readable code.
    pub code: ErrorCode,
    /// A human-readable explanation that says what to do.
    pub message: String,
    /// The id of the frame that caused it, when known.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// For rate limits and lockouts: when to try again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorFrame {
    /// An error frame with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorFrame { code, message: message.into(), reference: None, retry_after_ms: None }
    }
}

impl Frame {
    /// A v1 frame with this body.
    pub fn new(body: FrameBody) -> Self {
        Frame { v: PROTOCOL_VERSION, body }
    }

    /// An `error` frame.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Frame::new(FrameBody::Error(ErrorFrame::new(code, message)))
    }

    /// Encode as JSON.
    pub fn encode(&self) -> String {
        // Serialising these types cannot fail: every map key is a string and no Serialize impl errors.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The frame's `type` as on the wire.
    pub fn type_name(&self) -> &'static str {
        match &self.body {
            FrameBody::Send(_) => "send",
            FrameBody::Ack(_) => "ack",
            FrameBody::PresenceQuery(_) => "presence.query",
            FrameBody::TotpSetup(_) => "totp.setup",
            FrameBody::TotpConfirm(_) => "totp.confirm",
            FrameBody::TotpDisable(_) => "totp.disable",
            FrameBody::Logout(_) => "logout",
            FrameBody::Ping(_) => "ping",
            FrameBody::KeysUpload(_) => "keys.upload",
            FrameBody::KeysDevices(_) => "keys.devices",
            FrameBody::KeysClaim(_) => "keys.claim",
            FrameBody::KeysDeviceList(_) => "keys.device_list",
            FrameBody::KeysBundles(_) => "keys.bundles",
            FrameBody::GroupAppend(_) => "group.append",
            FrameBody::GroupLog(_) => "group.log",
            FrameBody::GroupEntries(_) => "group.entries",
            FrameBody::KeysRevoke(_) => "keys.revoke",
            FrameBody::LinkOpen(_) => "link.open",
            FrameBody::LinkData(_) => "link.data",
            FrameBody::LinkClose(_) => "link.close",
            FrameBody::LinkPaired(_) => "link.paired",
            FrameBody::FileBegin(_) => "file.begin",
            FrameBody::FileFetch(_) => "file.fetch",
            FrameBody::FileTicket(_) => "file.ticket",
            FrameBody::Presence(_) => "presence",
            FrameBody::Typing(_) => "typing",
            FrameBody::Receipt(_) => "receipt",
            FrameBody::Welcome(_) => "welcome",
            FrameBody::Deliver(_) => "deliver",
            FrameBody::Accepted(_) => "accepted",
            FrameBody::Drained(_) => "drained",
            FrameBody::TotpSecret(_) => "totp.secret",
            FrameBody::Ok(_) => "ok",
            FrameBody::Pong(_) => "pong",
            FrameBody::Error(_) => "error",
        }
    }

    /// Decode and validate one frame from untrusted bytes. Never panics; every failure is a typed
    /// [`DecodeError`] whose [`DecodeError::code`] is what the peer is told.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Frame, DecodeError> {
        if bytes.len() > limits.max_frame_bytes {
            return Err(DecodeError::FrameTooLarge { size: bytes.len(), limit: limits.max_frame_bytes });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
        match serde_json::from_str::<Frame>(text) {
            Ok(frame) if frame.v != PROTOCOL_VERSION => {
                Err(DecodeError::UnsupportedVersion(Some(u64::from(frame.v))))
            }
            Ok(frame) => {
                frame.validate(limits)?;
                Ok(frame)
            }
            Err(err) => Err(diagnose(text, err)),
        }
    }

    /// Check field-level rules that serde cannot express: lengths, counts, name syntax.
    pub fn validate(&self, limits: &Limits) -> Result<(), DecodeError> {
        let ids = |field: &'static str, n: usize| {
            if n == 0 || n > limits.max_ids_per_frame {
                Err(DecodeError::InvalidField {
                    field,
                    reason: format!("must hold 1 to {} ids", limits.max_ids_per_frame),
                })
            } else {
                Ok(())
            }
        };
        let payload = |p: &Payload| {
            if p.0.len() > limits.max_payload_bytes {
                Err(DecodeError::PayloadTooLarge { size: p.0.len(), limit: limits.max_payload_bytes })
            } else {
                Ok(())
            }
        };
        let name = |field: &'static str, n: &str| validate_user_name(n, limits).map_err(|reason| DecodeError::InvalidField { field, reason });
        let opt_name = |field: &'static str, n: &Option<String>| n.as_deref().map_or(Ok(()), |n| name(field, n));
        let mime = |m: &str| {
            if m.is_empty() || m.len() > 255 || !m.is_ascii() {
                Err(DecodeError::InvalidField { field: "mime", reason: "must be 1 to 255 ASCII characters".into() })
            } else {
                Ok(())
            }
        };
        let rendezvous = |r: &str| {
            if r.len() != RENDEZVOUS_LEN || !r.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                Err(DecodeError::InvalidField { field: "rendezvous", reason: "must be 32 lowercase hex digits".into() })
            } else {
                Ok(())
            }
        };
        let request = |id: &Option<String>| match id {
            Some(id) if id.len() > 64 => {
                Err(DecodeError::InvalidField { field: "id", reason: "request ids are at most 64 characters".into() })
            }
            _ => Ok(()),
        };
        match &self.body {
            FrameBody::Send(s) => {
                if let Recipient::User(to) = &s.to {
                    name("to", to)?;
                } else if !s.payloads.is_empty() {
                    return Err(DecodeError::InvalidField { field: "payloads", reason: "a group message has one payload, in data".into() });
                }
                mime(&s.mime)?;
                payload(&s.data)?;
                if s.payloads.len() > limits.max_devices_per_send {
                    return Err(DecodeError::InvalidField {
                        field: "payloads",
                        reason: format!("at most {} device payloads", limits.max_devices_per_send),
                    });
                }
                let total: usize = s.payloads.iter().map(|p| p.data.0.len()).sum();
                if total > limits.max_payload_bytes {
                    return Err(DecodeError::PayloadTooLarge { size: total, limit: limits.max_payload_bytes });
                }
                if !s.payloads.is_empty() && !s.data.is_empty() {
                    return Err(DecodeError::InvalidField { field: "data", reason: "use either data or payloads".into() });
                }
                Ok(())
            }
            FrameBody::KeysUpload(k) => request(&k.id),
            FrameBody::KeysDevices(k) => {
                request(&k.id)?;
                name("user", &k.user)
            }
            FrameBody::KeysClaim(k) => {
                request(&k.id)?;
                name("user", &k.user)?;
                if k.devices.is_empty() || k.devices.len() > limits.max_devices_per_send {
                    return Err(DecodeError::InvalidField {
                        field: "devices",
                        reason: format!("claim 1 to {} devices", limits.max_devices_per_send),
                    });
                }
                Ok(())
            }
            FrameBody::GroupAppend(g) => {
                request(&g.id)?;
                if g.entry.0.len() > MAX_GROUP_ENTRY_BYTES {
                    return Err(DecodeError::PayloadTooLarge { size: g.entry.0.len(), limit: MAX_GROUP_ENTRY_BYTES });
                }
                Ok(())
            }
            FrameBody::GroupLog(g) => request(&g.id),
            FrameBody::GroupEntries(g) => g.entries.iter().try_for_each(|e| {
                if e.0.len() > MAX_GROUP_ENTRY_BYTES {
                    Err(DecodeError::PayloadTooLarge { size: e.0.len(), limit: MAX_GROUP_ENTRY_BYTES })
                } else {
                    Ok(())
                }
            }),
            FrameBody::KeysDeviceList(l) => l.revocation.as_ref().map_or(Ok(()), payload),
            FrameBody::KeysBundles(_) => Ok(()),
            FrameBody::KeysRevoke(k) => {
                request(&k.id)?;
                payload(&k.list)
            }
            FrameBody::LinkOpen(l) => {
                request(&l.id)?;
                rendezvous(&l.rendezvous)
            }
            FrameBody::LinkPaired(l) => rendezvous(&l.rendezvous),
            FrameBody::FileBegin(f) => {
                request(&f.id)?;
                crate::file::validate_file_id(&f.file)
            }
            FrameBody::FileFetch(f) => {
                request(&f.id)?;
                crate::file::validate_file_id(&f.file)
            }
            FrameBody::FileTicket(f) => crate::file::validate_file_id(&f.file),
            FrameBody::LinkData(l) => {
                rendezvous(&l.rendezvous)?;
                payload(&l.data)
            }
            FrameBody::LinkClose(l) => {
                rendezvous(&l.rendezvous)?;
                match &l.reason {
                    Some(r) if r.chars().count() > MAX_LINK_REASON => {
                        Err(DecodeError::InvalidField { field: "reason", reason: format!("at most {MAX_LINK_REASON} characters") })
                    }
                    _ => Ok(()),
                }
            }
            FrameBody::Deliver(d) => {
                name("from", &d.from)?;
                name("to", &d.to)?;
                mime(&d.mime)?;
                payload(&d.data)
            }
            FrameBody::Ack(a) => ids("ids", a.ids.len()),
            FrameBody::Receipt(r) => {
                opt_name("to", &r.to)?;
                opt_name("from", &r.from)?;
                ids("refs", r.refs.len())
            }
            FrameBody::PresenceQuery(q) => {
                ids("users", q.users.len())?;
                q.users.iter().try_for_each(|u| name("users", u))
            }
            FrameBody::Presence(p) => opt_name("user", &p.user),
            FrameBody::Typing(t) => {
                opt_name("to", &t.to)?;
                opt_name("from", &t.from)
            }
            FrameBody::TotpConfirm(c) | FrameBody::TotpDisable(c) => {
                request(&c.id)?;
                if c.code.len() > 10 {
                    return Err(DecodeError::InvalidField { field: "code", reason: "too long".into() });
                }
                Ok(())
            }
            FrameBody::TotpSetup(r)
            | FrameBody::Logout(r)
            | FrameBody::Ping(r)
            | FrameBody::Drained(r)
            | FrameBody::Ok(r)
            | FrameBody::Pong(r) => request(&r.id),
            FrameBody::Welcome(_) | FrameBody::Accepted(_) | FrameBody::TotpSecret(_) | FrameBody::Error(_) => Ok(()),
        }
    }
}

/// User names: 1 to `max_name_len` characters of `a-z 0-9 . _ -`, starting with a letter or digit. Lower case only,
/// so that two accounts can never differ by case alone.
pub fn validate_user_name(name: &str, limits: &Limits) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > limits.max_name_len {
        return Err(format!("user names are 1 to {} characters", limits.max_name_len));
    }
    if !name.chars().all(ok_char) || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("user names use a-z, 0-9, '.', '_' and '-', and start with a letter or digit".into());
    }
    Ok(())
}

/// After serde refused a frame, find the most useful error: wrong version and unknown type are reported as such,
/// everything else as malformed.
fn diagnose(text: &str, err: serde_json::Error) -> DecodeError {
    #[derive(Deserialize)]
    struct Header {
        v: Option<serde_json::Value>,
        #[serde(rename = "type")]
        kind: Option<serde_json::Value>,
    }
    let Ok(header) = serde_json::from_str::<Header>(text) else {
        return DecodeError::Malformed(err.to_string());
    };
    match header.v {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(u64::from(PROTOCOL_VERSION)) => {}
        Some(serde_json::Value::Number(n)) => return DecodeError::UnsupportedVersion(n.as_u64()),
        _ => return DecodeError::UnsupportedVersion(None),
    }
    match header.kind {
        Some(serde_json::Value::String(kind)) if !FRAME_TYPES.contains(&kind.as_str()) => {
            let mut shown: String = kind.chars().take(40).collect();
            if shown.len() < kind.len() {
                shown.push('…');
            }
            DecodeError::UnknownType(shown)
        }
        _ => DecodeError::Malformed(err.to_string()),
    }
}

impl From<&DecodeError> for ErrorFrame {
    fn from(e: &DecodeError) -> Self {
        ErrorFrame::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> EnvelopeId {
        EnvelopeId::from_parts(1_700_000_000_000, 7)
    }

    fn decode(s: &str) -> Result<Frame, DecodeError> {
        Frame::decode(s.as_bytes(), &Limits::default())
    }

    #[test]
    fn every_type_round_trips() {
        let bodies = vec![
            FrameBody::Send(Send { id: id(), to: Recipient::User("bob".into()), mime: "text/plain".into(), data: b"hi".to_vec().into(), payloads: vec![], refers: None }),
            FrameBody::Send(Send { id: id(), to: Recipient::User("bob".into()), mime: "application/vnd.imfree.e2e".into(), data: Payload::default(), payloads: vec![DevicePayload { device: "d1".into(), data: b"x".to_vec().into() }], refers: None }),
            FrameBody::Ack(Ack { ids: vec![id()] }),
            FrameBody::PresenceQuery(PresenceQuery { users: vec!["bob".into()] }),
            FrameBody::TotpSetup(Request::default()),
            FrameBody::TotpConfirm(TotpCode { id: None, code: "123456".into() }),
            FrameBody::TotpDisable(TotpCode { id: Some("r1".into()), code: "123456".into() }),
            FrameBody::Logout(Request::default()),
            FrameBody::Ping(Request { id: Some("p".into()), reference: None }),
            FrameBody::Presence(Presence { user: Some("bob".into()), status: Status::Away, last_seen: Some(5) }),
            FrameBody::Typing(Typing { to: Some("bob".into()), from: None, active: true }),
            FrameBody::Receipt(Receipt { id: id(), to: Some("a".into()), from: None, refs: vec![id()], kind: ReceiptKind::Read, ts: None }),
            FrameBody::Welcome(Welcome { user: "a".into(), device: "d".into(), token: None, token_expires: None, queued: 3, server_time: 9, key_challenge: Payload(vec![1, 2]), prekeys_left: Some((3, 4)), needs_identity: false }),
            FrameBody::Deliver(Deliver { id: id(), from: "a".into(), from_device: "d".into(), to: "b".into(), group: None, ts: 1, mime: "x/y".into(), data: vec![0, 255].into(), refers: None }),
            FrameBody::Accepted(Accepted { id: id(), duplicate: true, ts: 3 }),
            FrameBody::Drained(Request::default()),
            FrameBody::TotpSecret(TotpSecret { secret: "ABC".into(), uri: "otpauth://x".into() }),
            FrameBody::Ok(Request { id: None, reference: Some("r".into()) }),
            FrameBody::Pong(Request::default()),
            FrameBody::Error(ErrorFrame::new(ErrorCode::RateLimited, "slow down")),
            FrameBody::KeysUpload(KeysUpload { id: None, upload: serde_json::json!({"x": 1}) }),
            FrameBody::KeysDevices(KeysDevices { id: Some("q".into()), user: "bob".into() }),
            FrameBody::KeysClaim(KeysClaim { id: None, user: "bob".into(), devices: vec!["d1".into()] }),
            FrameBody::KeysDeviceList(KeysDeviceList { reference: None, user: "bob".into(), devices: vec![DeviceEntry { device: "d1".into(), certificate: serde_json::json!({}), name: Some("laptop".into()) }], revocation: Some(Payload(vec![1, 2])) }),
            FrameBody::KeysRevoke(KeysRevoke { id: Some("r".into()), list: Payload(vec![1]) }),
            FrameBody::LinkOpen(LinkOpen { id: Some("l".into()), rendezvous: "0123456789abcdef0123456789abcdef".into() }),
            FrameBody::LinkPaired(LinkPaired { rendezvous: "0123456789abcdef0123456789abcdef".into(), device: Some("d2".into()), device_name: None }),
            FrameBody::LinkData(LinkData { rendezvous: "0123456789abcdef0123456789abcdef".into(), data: Payload(vec![9; 48]) }),
            FrameBody::LinkClose(LinkClose { rendezvous: "0123456789abcdef0123456789abcdef".into(), reason: Some("linked".into()) }),
            FrameBody::KeysBundles(KeysBundles { reference: Some("q".into()), user: "bob".into(), bundles: vec![] }),
            FrameBody::Send(Send { id: id(), to: Recipient::Group(id()), mime: "application/vnd.imfree.e2e".into(), data: b"g".to_vec().into(), payloads: vec![], refers: None }),
            FrameBody::Deliver(Deliver { id: id(), from: "a".into(), from_device: "d".into(), to: "b".into(), group: Some(id()), ts: 1, mime: "x/y".into(), data: vec![1].into(), refers: None }),
            FrameBody::GroupAppend(GroupAppend { id: Some("g".into()), group: id(), entry: vec![1, 2].into() }),
            FrameBody::GroupLog(GroupLog { id: None, group: id(), from: 3, invite: None }),
            FrameBody::GroupEntries(GroupEntries { reference: Some("g".into()), group: id(), head: 4, entries: vec![vec![1].into()] }),
            FrameBody::FileBegin(crate::file::FileBegin { id: Some("f".into()), file: "00112233445566778899aabbccddeeff".into(), size: 5, chunk_size: 1024, chunks: 1 }),
            FrameBody::FileFetch(crate::file::FileFetch { id: None, file: "00112233445566778899aabbccddeeff".into() }),
            FrameBody::FileTicket(crate::file::FileTicket { reference: Some("f".into()), file: "00112233445566778899aabbccddeeff".into(), mode: crate::file::TicketMode::Download, ticket: "t".into(), expires: 9, size: 5, chunk_size: 1024, chunks: 1, complete: true }),
        ];
        assert_eq!(bodies.len(), FRAME_TYPES.len() + 3);
        for body in bodies {
            let frame = Frame::new(body);
            let json = frame.encode();
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(value["type"], frame.type_name(), "{json}");
            assert!(FRAME_TYPES.contains(&frame.type_name()));
            assert_eq!(decode(&json).unwrap(), frame, "{json}");
        }
    }

    #[test]
    fn a_group_message_names_its_group_and_carries_one_payload() {
        let json = r#"{"v":1,"type":"send","id":"01HZY6Q0V2W8K3D9M5T7R4X1AB","group":"01HZY6Q0V2W8K3D9M5T7R4X1AC","mime":"application/vnd.imfree.e2e","data":"aGk="}"#;
        let FrameBody::Send(send) = decode(json).unwrap().body else { panic!("not a send") };
        assert_eq!(send.to, Recipient::Group("01HZY6Q0V2W8K3D9M5T7R4X1AC".parse().unwrap()));
        let split = r#"{"v":1,"type":"send","id":"01HZY6Q0V2W8K3D9M5T7R4X1AB","group":"01HZY6Q0V2W8K3D9M5T7R4X1AC","mime":"application/vnd.imfree.e2e","payloads":[{"device":"d","data":"aGk="}]}"#;
        assert!(matches!(decode(split), Err(DecodeError::InvalidField { field: "payloads", .. })));
        let entry = format!(r#"{{"v":1,"type":"group.append","group":"01HZY6Q0V2W8K3D9M5T7R4X1AC","entry":"{}"}}"#, "A".repeat(1400));
        assert!(matches!(decode(&entry), Err(DecodeError::PayloadTooLarge { .. })), "entries are small");
    }

    #[test]
    fn wire_shape_of_send_is_flat() {
        let json = r#"{"v":1,"type":"send","id":"01HZY6Q0V2W8K3D9M5T7R4X1AB","to":"bob","mime":"text/plain","data":"aGk="}"#;
        let frame = decode(json).unwrap();
        let FrameBody::Send(send) = frame.body else { panic!("not a send") };
        assert_eq!(send.to, Recipient::User("bob".into()));
        assert_eq!(send.data.0, b"hi");
    }

    #[test]
    fn bad_input_gets_the_right_code() {
        let cases: &[(&[u8], ErrorCode)] = &[
            (b"{not json", ErrorCode::MalformedFrame),
            (b"[]", ErrorCode::MalformedFrame),
            (b"\xff\xfe{}", ErrorCode::MalformedFrame),
            (br#"{"v":1,"type":"teleport"}"#, ErrorCode::UnknownType),
            (br#"{"v":2,"type":"ping"}"#, ErrorCode::UnsupportedVersion),
            (br#"{"type":"ping"}"#, ErrorCode::UnsupportedVersion),
            (br#"{"v":"1","type":"ping"}"#, ErrorCode::UnsupportedVersion),
            (br#"{"v":1,"type":"send","id":"nope","to":"bob","mime":"a/b","data":""}"#, ErrorCode::MalformedFrame),
            (br#"{"v":1,"type":"send","id":"01HZY6Q0V2W8K3D9M5T7R4X1AB","to":"Bob","mime":"a/b","data":""}"#, ErrorCode::InvalidField),
            (br#"{"v":1,"type":"send","id":"01HZY6Q0V2W8K3D9M5T7R4X1AB","to":"bob","mime":"a/b","data":"!!"}"#, ErrorCode::MalformedFrame),
            (br#"{"v":1,"type":"ack","ids":[]}"#, ErrorCode::InvalidField),
            (br#"{"v":1,"type":"link.open","rendezvous":"ABCDEF0123456789abcdef0123456789"}"#, ErrorCode::InvalidField),
            (br#"{"v":1,"type":"link.data","rendezvous":"abc","data":""}"#, ErrorCode::InvalidField),
        ];
        for (bytes, code) in cases {
            let err = Frame::decode(bytes, &Limits::default()).unwrap_err();
            assert_eq!(err.code(), *code, "{:?}: {err}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let frame = decode(r#"{"v":1,"type":"ping","future":{"x":1}}"#).unwrap();
        assert_eq!(frame.body, FrameBody::Ping(Request::default()));
    }

    #[test]
    fn oversize_frames_and_payloads_are_refused() {
        let limits = Limits { max_frame_bytes: 64, max_payload_bytes: 4, ..Limits::default() };
        let big = vec![b' '; 65];
        assert_eq!(Frame::decode(&big, &limits).unwrap_err().code(), ErrorCode::FrameTooLarge);
        let json = br#"{"v":1,"type":"send","id":"01HZY6Q0V2W8K3D9M5T7R4X1AB","to":"b","mime":"a","data":"AAAAAAA="}"#;
        let limits = Limits { max_payload_bytes: 4, ..Limits::default() };
        assert_eq!(Frame::decode(json, &limits).unwrap_err().code(), ErrorCode::PayloadTooLarge);
    }

    #[test]
    fn payload_debug_never_shows_bytes() {
        assert_eq!(format!("{:?}", Payload(b"secret".to_vec())), "Payload(6 bytes)");
    }
}
