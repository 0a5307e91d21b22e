//! Groups on this device, without I/O: the membership log as verified here, roles, sender keys, group messages.
//!
//! The relay stores the log and fans group messages out; nothing here trusts it for either:
//! - the log is replayed and verified entry by entry (signatures, chain, who may do what) and every head hash seen
//!   is kept, so an entry that is not signed by an admin, a fork (another entry where one was seen) or a rollback
//!   (a log shorter than one seen) is refused, and the group marked refused with the reason;
//! - whoever changes the membership tells every member in a pairwise end-to-end message which head the log now
//!   has (an *update*, [`GroupUpdate`]); a member checks that the log the relay serves has exactly that head;
//! - this device's sender key goes, over pairwise sessions, only to the devices of members in the verified log —
//!   a member the relay adds on its own receives ciphertext it cannot read. When someone leaves or is removed,
//!   every device starts a new chain, so they cannot read what follows; a new member receives chains at their
//!   current position, so it cannot read what came before. A device that had this device's chain and is no longer
//!   listed (revoked) gets a new chain started without it.
//!
//! A driver supplies a [`GroupStore`] (one record per group, [`GroupRecord`]), a [`GroupRelay`] (the relay's group
//! log and an immediate pairwise send) and a [`KeyDirectory`], and calls [`Groups`]. What the user should see —
//! each membership change, a refused log — comes back as [`GroupEvent`]s for the driver to record. The durable
//! inbox of group work and the order in which it is handled stay with the driver.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use imfree_crypto::envelope::InnerMessage;
use imfree_crypto::group::{GroupError, GroupMessage, GroupSession, SenderKeyDistribution};
use imfree_crypto::membership::{
    GroupState, InfoKind, InviteKey, KnownHead, Member, MembershipEntry, MembershipError, MembershipOp, Permissions, Role, info_commitment,
};
use imfree_proto::content::Content;
use imfree_proto::{DevicePayload, ErrorCode, GroupEntries, GroupId, InviteProof, Payload};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::ClientError;
use crate::device::{DeviceSlot, id_bytes};
use crate::directory::KeyDirectory;
use crate::pairwise::Pairwise;
use crate::store::KeyStore;

/// How a group is named where a user name could stand: `group:<id>` (never a valid user name).
pub const GROUP_PREFIX: &str = "group:";
/// Content type of a membership update (pairwise, inside the encryption).
pub const UPDATE_MIME: &str = "application/vnd.imfree.group-update+json";
/// Content type of a sender-key distribution (pairwise, inside the encryption).
pub const SENDER_KEY_MIME: &str = "application/vnd.imfree.sender-key";
/// How an invite link is written: `imfree-invite:<group id>:<the invite key's seed, base64url>`.
pub const INVITE_PREFIX: &str = "imfree-invite:";

/// [`Group::status`] of a group this device is a member of.
pub const ACTIVE: &str = "active";
/// [`Group::status`] of a group this user left or was removed from.
pub const LEFT: &str = "left";
const REFUSED_PREFIX: &str = "refused: ";

/// A membership update: the group and the head its log has after the sender's change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupUpdate {
    /// Group id.
    pub group: String,
    /// The name the group goes by (a label, end-to-end encrypted like everything in the update).
    #[serde(default)]
    pub name: String,
    /// The log's head after the change.
    pub head: KnownHead,
    /// The name and topic with their salts, for checking against the log's commitments (see docs/crypto.md).
    #[serde(default, skip_serializing_if = "GroupTexts::is_empty")]
    pub info: GroupTexts,
}

impl GroupUpdate {
    /// The content document that carries it (pairwise, to each member and to this user's other devices).
    pub fn content(&self) -> Content {
        Content::new(UPDATE_MIME, &serde_json::to_vec(self).unwrap_or_default(), None)
    }
}

/// A group's name and topic as set through its log: each text with the salt of its commitment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupTexts {
    /// The name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<SaltedText>,
    /// The topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<SaltedText>,
}

impl GroupTexts {
    /// Neither a name nor a topic.
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.topic.is_none()
    }
}

/// A text and the salt of its commitment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaltedText {
    /// The text.
    pub text: String,
    /// 16 random bytes, base64.
    pub salt: String,
}

impl SaltedText {
    /// `text` with a fresh salt, and the salt.
    pub fn new(text: &str) -> (Self, [u8; 16]) {
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        (SaltedText { text: text.to_owned(), salt: base64::engine::general_purpose::STANDARD.encode(salt) }, salt)
    }

    /// Whether it is what `commitment` commits to.
    pub fn matches(&self, group_id: [u8; 16], kind: InfoKind, commitment: Option<[u8; 32]>) -> bool {
        let Ok(salt) = base64::engine::general_purpose::STANDARD.decode(&self.salt) else { return false };
        let Ok(salt) = <[u8; 16]>::try_from(salt.as_slice()) else { return false };
        commitment == Some(info_commitment(group_id, kind, &salt, &self.text))
    }
}

/// What `imfree client group info` shows.
#[derive(Debug, Clone, Serialize)]
pub struct GroupInfo {
    /// Group id.
    pub id: String,
    /// Label.
    pub name: String,
    /// The topic, if one was set (and matches the log).
    pub topic: Option<String>,
    /// active, left, or "refused: …".
    pub status: String,
    /// Members and whether each is an admin (or owner).
    pub members: Vec<(String, bool)>,
    /// Members and their roles.
    pub roles: Vec<(String, Role)>,
    /// Who may do what.
    pub permissions: Permissions,
    /// The verified log's last entry.
    pub head_seq: u64,
}

/// A group as a [`GroupStore`] keeps it: one record per group. The session holds sender-key secrets (this device's
/// chain and every member device's chain received): a store seals it at rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// Group id (ULID).
    pub id: String,
    /// Local label.
    pub name: String,
    /// Verified membership state (JSON): members, roles, permissions, every head hash seen.
    pub state: Vec<u8>,
    /// Sender-key session (JSON), while a member.
    pub session: Option<Vec<u8>>,
    /// JSON list of "user/device/chain" the current chain went to.
    pub distributed: Vec<u8>,
    /// active, left, or "refused: …".
    pub status: String,
    /// Verified name and topic with their salts (JSON), if ever set through the log.
    pub info: Option<String>,
}

/// Where a client keeps its groups. Like [`KeyStore`], its futures are not required to be `Send`.
#[allow(async_fn_in_trait)]
pub trait GroupStore {
    /// The group, if this device knows it.
    async fn group(&self, id: &str) -> Result<Option<GroupRecord>, ClientError>;
    /// Store a group (insert or replace).
    async fn put_group(&self, record: &GroupRecord) -> Result<(), ClientError>;
}

/// The relay's group service as the client core sees it. A driver answers over its connection (`group.log` →
/// `group.entries`, `group.append` → `ok`, `send` → `accepted`); nothing it returns is trusted.
#[allow(async_fn_in_trait)]
pub trait GroupRelay {
    /// A page of a group's log from entry `from` on, with the relay's head; `invite` proves an invite link's use
    /// to read the log of a group this user is joining.
    async fn log_page(&mut self, group: &GroupId, from: u64, invite: Option<InviteProof>) -> Result<GroupEntries, ClientError>;
    /// Append an encoded entry; a relay whose log moved on answers [`ErrorCode::GroupConflict`] as
    /// [`ClientError::Refused`].
    async fn append(&mut self, group: &GroupId, entry: Vec<u8>) -> Result<(), ClientError>;
    /// Send a pairwise end-to-end message (envelope `id`, one payload per device) to `to` and wait until the relay
    /// accepted it; a device list that changed meanwhile is [`ErrorCode::StaleDevices`] as [`ClientError::Refused`].
    async fn send_now(&mut self, to: &str, id: &str, payloads: Vec<DevicePayload>) -> Result<(), ClientError>;
}

/// Something the user should see in the group's conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// A verified membership change.
    Change {
        /// The group.
        group: GroupId,
        /// A stable id for the note (`<group>-<seq>`): recording it twice shows it once.
        id: String,
        /// Who made it.
        actor: String,
        /// What happened, for people.
        text: String,
    },
    /// The relay served a log that does not verify: the group is refused from now on.
    Refused {
        /// The group.
        group: GroupId,
        /// Why.
        reason: String,
    },
}

impl GroupEvent {
    /// The warning shown for [`GroupEvent::Refused`].
    pub fn refusal_text(reason: &str) -> String {
        format!("WARNING: the relay served a membership log that does not verify ({reason}); this group is refused until it is recreated")
    }
}

/// What a group delivery opened to.
#[derive(Debug)]
pub enum GroupOpened {
    /// Decrypted and verified: from a member allowed to post, on a head of the verified log, its inner id the
    /// envelope's. The sender-key state advanced and is stored.
    Message(InnerMessage),
    /// Not readable, and why (shown to the user in place of the message).
    Unreadable(String),
}

/// What a membership change made here must be followed by: the update, sent pairwise to each of `told` (members
/// now, and whoever just left or was removed) and to this user's other devices.
#[derive(Debug)]
pub struct MembershipChanged {
    /// The update to send.
    pub update: GroupUpdate,
    /// The users to send it to (not this user: the driver adds a note to self for this user's other devices).
    pub told: Vec<String>,
}

/// The data of an entry, made from the state it is appended to and its subject (a join's proof depends on where
/// it lands in the log).
pub type EntryData<'d> = &'d (dyn Fn(&GroupState, &Member) -> Vec<u8> + Send + Sync);

/// A group as this device holds it.
#[derive(Debug)]
pub struct Group {
    /// The id.
    pub id: GroupId,
    /// The label (the verified name once one was set through the log).
    pub name: String,
    /// The verified membership.
    pub state: GroupState,
    /// This device's sender-key session, while a member.
    pub session: Option<GroupSession>,
    /// "user/device/chain" for every device the current chain went to.
    pub distributed: BTreeSet<String>,
    /// [`ACTIVE`], [`LEFT`], or "refused: …".
    pub status: String,
    /// Name and topic as verified against the log.
    pub info: GroupTexts,
}

impl Group {
    /// Read a stored record.
    pub fn from_record(record: GroupRecord) -> Result<Self, ClientError> {
        let bad = |what: &str, e: serde_json::Error| ClientError::Store(format!("group {}: {what}: {e}", record.id));
        Ok(Group {
            id: record.id.parse().map_err(|_| ClientError::Store(format!("group id {} is not a ULID", record.id)))?,
            name: record.name.clone(),
            state: serde_json::from_slice(&record.state).map_err(|e| bad("state", e))?,
            session: match &record.session {
                Some(s) => Some(serde_json::from_slice(s).map_err(|e| bad("session", e))?),
                None => None,
            },
            distributed: serde_json::from_slice(&record.distributed).map_err(|e| bad("distribution list", e))?,
            info: record.info.as_deref().map(serde_json::from_str).transpose().map_err(|e| bad("information", e))?.unwrap_or_default(),
            status: record.status,
        })
    }

    /// The stored form.
    pub fn to_record(&self) -> GroupRecord {
        GroupRecord {
            id: self.id.to_string(),
            name: self.name.clone(),
            state: serde_json::to_vec(&self.state).unwrap_or_default(),
            session: self.session.as_ref().map(|s| serde_json::to_vec(s).unwrap_or_default()),
            distributed: serde_json::to_vec(&self.distributed).unwrap_or_default(),
            status: self.status.clone(),
            info: (!self.info.is_empty()).then(|| serde_json::to_string(&self.info).unwrap_or_default()),
        }
    }

    /// Why the group is refused, if it is.
    pub fn refused(&self) -> Option<&str> {
        self.status.strip_prefix(REFUSED_PREFIX)
    }

    /// The member with this identity key.
    pub fn member_name(&self, identity: &[u8; 32]) -> Option<String> {
        self.state.members().find(|(m, _)| m.identity_key == *identity).map(|(m, _)| m.user.clone())
    }

    /// The member named `user`.
    pub fn member_named(&self, user: &str) -> Result<Member, ClientError> {
        self.state
            .members()
            .find(|(m, _)| m.user == user)
            .map(|(m, _)| m.clone())
            .ok_or_else(|| ClientError::Config(format!("{user} is not a member of this group")))
    }

    /// What `imfree client group info` shows of it.
    pub fn info(&self) -> GroupInfo {
        let gid = group_bytes(&self.id);
        GroupInfo {
            id: self.id.to_string(),
            name: self.name.clone(),
            topic: self
                .info
                .topic
                .as_ref()
                .filter(|t| t.matches(gid, InfoKind::Topic, self.state.info(InfoKind::Topic)))
                .map(|t| t.text.clone()),
            status: self.status.clone(),
            members: sorted(self.state.members().map(|(m, admin)| (m.user.clone(), admin)).collect()),
            roles: sorted(self.state.roles().map(|(m, role)| (m.user.clone(), role)).collect()),
            permissions: self.state.permissions(),
            head_seq: self.state.head().seq,
        }
    }

    fn refuse(&mut self, reason: &str) {
        self.status = format!("{REFUSED_PREFIX}{reason}");
        self.session = None;
    }
}

/// The members of a group and their roles as this device last verified them (no network: the log is read as it
/// was synced), or `None` if this device does not know the group, was refused it or left it.
pub async fn verified_roles(store: &impl GroupStore, group: &GroupId) -> Result<Option<Vec<(String, Role)>>, ClientError> {
    let Some(g) = load(store, group).await? else { return Ok(None) };
    if g.status != ACTIVE {
        return Ok(None);
    }
    Ok(Some(sorted(g.state.roles().map(|(m, role)| (m.user.clone(), role)).collect())))
}

/// Whether `user`'s role in the group, per the verified membership log in `store`, allows deleting other members'
/// messages.
pub async fn may_delete_others(store: &impl GroupStore, group: &GroupId, user: &str) -> Result<bool, ClientError> {
    let Some(g) = load(store, group).await? else { return Ok(false) };
    if g.refused().is_some() {
        return Ok(false);
    }
    Ok(g.state.roles().any(|(m, _)| m.user == user && g.state.may_delete_others(&m.identity_key)))
}

/// The group as stored, if this device knows it.
pub async fn load(store: &impl GroupStore, group: &GroupId) -> Result<Option<Group>, ClientError> {
    store.group(group.as_str()).await?.map(Group::from_record).transpose()
}

/// Parse `group:<id>` (or a bare id).
pub fn parse_group(text: &str) -> Result<GroupId, ClientError> {
    text.strip_prefix(GROUP_PREFIX)
        .unwrap_or(text)
        .parse()
        .map_err(|_| ClientError::Config(format!("{text:?} is not a group (group:<26-character id>)")))
}

/// Whether a content type is a group control message (never shown as a message).
pub fn is_control(content_mime: &str) -> bool {
    matches!(content_mime, UPDATE_MIME | SENDER_KEY_MIME)
}

/// The link for an invite key's seed.
pub fn invite_link(group: &GroupId, seed: &[u8; 32]) -> String {
    format!("{INVITE_PREFIX}{group}:{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(seed))
}

/// The group and invite seed of a link.
pub fn parse_invite_link(link: &str) -> Result<(GroupId, [u8; 32]), ClientError> {
    let bad = || ClientError::Config("not an invite link: it looks like imfree-invite:<group>:<key>".into());
    let rest = link.trim().strip_prefix(INVITE_PREFIX).ok_or_else(bad)?;
    let (group, seed) = rest.split_once(':').ok_or_else(bad)?;
    let group = group.parse().map_err(|_| bad())?;
    let seed = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(seed).map_err(|_| bad())?;
    Ok((group, seed.try_into().map_err(|_| bad())?))
}

/// A new envelope id (ULID) at `now_ms`, its random part from the platform's generator.
pub fn new_id(now_ms: u64) -> String {
    let mut random = [0u8; 16];
    OsRng.fill_bytes(&mut random);
    ulid::Ulid::from_parts(now_ms, u128::from_be_bytes(random)).to_string()
}

/// The 16 bytes of a group id.
pub fn group_bytes(id: &GroupId) -> [u8; 16] {
    id_bytes(id.as_str()).unwrap_or_default()
}

/// What a membership entry did, for people.
pub fn describe(entry: &MembershipEntry, actor: &str) -> String {
    let who = &entry.subject.user;
    match entry.op {
        MembershipOp::Create => format!("{actor} created the group"),
        MembershipOp::Add => format!("{actor} added {who}"),
        MembershipOp::Remove => format!("{actor} removed {who}"),
        MembershipOp::Leave => format!("{who} left"),
        MembershipOp::Promote => format!("{actor} made {who} an admin"),
        MembershipOp::Demote => format!("{actor} made {who} a member"),
        MembershipOp::SetRole => {
            let role = entry.data.first().and_then(|c| Role::from_code(*c)).map_or("?", |r| r.as_str());
            format!("{actor} made {who} {}", role.replace('_', "-"))
        }
        MembershipOp::SetPermissions => format!("{actor} changed the group's permissions"),
        MembershipOp::SetName => format!("{actor} renamed the group"),
        MembershipOp::SetTopic => format!("{actor} changed the group's topic"),
        MembershipOp::AddInvite => format!("{actor} opened an invite link"),
        MembershipOp::RevokeInvite => format!("{actor} closed an invite link"),
        MembershipOp::JoinByInvite => format!("{who} joined through an invite link"),
    }
}

/// By user name.
fn sorted<T: Ord>(mut v: Vec<(String, T)>) -> Vec<(String, T)> {
    v.sort();
    v
}

fn e2e(e: impl std::fmt::Display) -> ClientError {
    ClientError::E2e(e.to_string())
}

/// Whether an error is the driver's own (network or storage) rather than something about the group: those end
/// the operation, so that nothing is acknowledged that was not handled.
fn is_local(e: &ClientError) -> bool {
    matches!(e, ClientError::Io(_) | ClientError::Store(_))
}

/// The verified log's entries that extend `state`, or why the relay's log (`entries` from `state`'s head on, and
/// the relay's head `relay_head`) cannot be trusted: a rollback (shorter than seen), a fork (another entry where
/// one was seen), or an entry that does not verify.
pub fn verify_continuation<'e>(state: &GroupState, entries: &'e [MembershipEntry], relay_head: u64) -> Result<&'e [MembershipEntry], String> {
    let head = state.head();
    if relay_head < head.seq {
        return Err(MembershipError::Rollback { known: head.seq, got: relay_head }.to_string());
    }
    let Some((first, rest)) = entries.split_first() else {
        return Err(MembershipError::Rollback { known: head.seq, got: 0 }.to_string());
    };
    if first.seq != head.seq || first.hash() != head.head {
        return Err(MembershipError::Fork { seq: head.seq }.to_string());
    }
    let mut probe = state.clone();
    for e in rest {
        probe.apply(e).map_err(|e| e.to_string())?;
    }
    Ok(rest)
}

/// This device's groups: who it is, its key store, where groups are kept, and a join in progress. Calls collect
/// [`GroupEvent`]s in [`Groups::events`] (also when they fail part-way) for the driver to record.
pub struct Groups<'a, S> {
    /// This user's name.
    pub user: &'a str,
    /// This device's id at the relay.
    pub device: &'a str,
    /// This device's E2E state.
    pub keys: &'a DeviceSlot,
    /// Where groups, sessions, pins and the device state are kept.
    pub store: &'a S,
    /// The group and invite seed of a join in progress (its log may be read before this user is a member).
    pub invite: Option<(GroupId, [u8; 32])>,
    /// What the user should see, in order.
    pub events: Vec<GroupEvent>,
}

impl<'a, S: KeyStore + GroupStore> Groups<'a, S> {
    /// Groups as this device.
    pub fn new(user: &'a str, device: &'a str, keys: &'a DeviceSlot, store: &'a S) -> Self {
        Groups { user, device, keys, store, invite: None, events: Vec::new() }
    }

    fn pairwise(&self) -> Pairwise<'a, S> {
        Pairwise { user: self.user, device: self.device, keys: self.keys, store: self.store }
    }

    /// The events collected so far, taken out.
    pub fn take_events(&mut self) -> Vec<GroupEvent> {
        std::mem::take(&mut self.events)
    }

    /// This user as a member: name and identity key.
    pub fn own_member(&self) -> Result<Member, ClientError> {
        let key = self.keys.with(|e| Ok(e.identity_key()))?;
        Ok(Member { user: self.user.to_owned(), identity_key: key })
    }

    async fn put(&self, g: &Group) -> Result<(), ClientError> {
        self.store.put_group(&g.to_record()).await
    }

    fn note(&mut self, g: &Group, entry: &MembershipEntry, actor: &str, seq: u64) {
        self.events.push(GroupEvent::Change { group: g.id, id: format!("{}-{seq}", g.id), actor: actor.to_owned(), text: describe(entry, actor) });
    }

    /// Create a group (id made at `now_ms`) with this user as its only member and owner. Returns its id.
    pub async fn create(&mut self, relay: &mut impl GroupRelay, name: &str, now_ms: u64) -> Result<GroupId, ClientError> {
        let id: GroupId = new_id(now_ms).parse().map_err(|_| ClientError::Protocol("bad id".into()))?;
        let (entry, my_device) = self.keys.with(|e| {
            let identity = e.identity().ok_or_else(|| e2e("this device has no user identity: link it first"))?;
            Ok((MembershipEntry::create(identity, self.user, group_bytes(&id), now_ms), e.certificate.device_id))
        })?;
        relay.append(&id, entry.encode()).await?;
        let state = GroupState::genesis(&entry).map_err(e2e)?;
        let session = GroupSession::new(&mut OsRng, &state, entry.actor, my_device).map_err(e2e)?;
        let group = Group { id, name: name.to_owned(), state, session: Some(session), distributed: BTreeSet::new(), status: ACTIVE.into(), info: GroupTexts::default() };
        self.put(&group).await?;
        let me = self.user.to_owned();
        self.note(&group, &entry, &me, 0);
        Ok(id)
    }

    /// Proof of the invite link being used to join `group`, if any.
    fn invite_proof(&self, group: &GroupId) -> Option<InviteProof> {
        let (g, seed) = self.invite.as_ref().filter(|(g, _)| g == group)?;
        let key = InviteKey::from_seed(seed);
        let signature = key.sign_read(group_bytes(g), self.user);
        Some(InviteProof { key: Payload(key.public_key().to_vec()), signature: Payload(signature.to_vec()) })
    }

    /// Read new entries of a group's log from the relay and verify them against what this device has seen. On a
    /// verification failure the group is marked refused (sending stops, incoming messages are not shown), a
    /// [`GroupEvent::Refused`] noted and the reason returned.
    pub async fn sync_log(&mut self, relay: &mut (impl KeyDirectory + GroupRelay), group: &GroupId) -> Result<Group, ClientError> {
        let local = load(self.store, group).await?;
        if let Some(g) = &local
            && let Some(reason) = g.refused()
        {
            return Err(e2e(format!("group {group} is refused: {reason}")));
        }
        let mut from = local.as_ref().map_or(0, |g| g.state.head().seq);
        let mut entries: Vec<MembershipEntry> = Vec::new();
        let relay_head = loop {
            let page = relay.log_page(group, from, self.invite_proof(group)).await?;
            let count = page.entries.len() as u64;
            for e in page.entries {
                entries.push(MembershipEntry::decode(&e.0).map_err(e2e)?);
            }
            if count == 0 || from + count > page.head {
                break page.head;
            }
            from += count;
        };
        match local {
            None => {
                // A group this device has not seen: verify the whole log, then take it on.
                GroupState::replay(&entries, None).map_err(|e| e2e(format!("group {group}: {e}")))?;
                let (genesis, rest) = entries.split_first().ok_or_else(|| e2e(format!("group {group}: the log is empty")))?;
                let state = GroupState::genesis(genesis).map_err(e2e)?;
                if state.group_id() != group_bytes(group) {
                    return Err(e2e(format!("group {group}: the relay served another group's log")));
                }
                let mut g = Group { id: *group, name: String::new(), state, session: None, distributed: BTreeSet::new(), status: ACTIVE.into(), info: GroupTexts::default() };
                let creator = genesis.subject.user.clone();
                self.note(&g, genesis, &creator, 0);
                self.apply_verified(&mut g, rest).await?;
                Ok(g)
            }
            Some(mut g) => match verify_continuation(&g.state, &entries, relay_head) {
                Ok(new) => {
                    self.apply_verified(&mut g, new).await?;
                    Ok(g)
                }
                Err(reason) => {
                    tracing::warn!(%group, %reason, "group membership log refused");
                    self.refuse(&mut g, &reason).await?;
                    Err(e2e(format!("group {group} is refused: {reason}")))
                }
            },
        }
    }

    async fn refuse(&mut self, g: &mut Group, reason: &str) -> Result<(), ClientError> {
        g.refuse(reason);
        self.put(g).await?;
        self.events.push(GroupEvent::Refused { group: g.id, reason: reason.to_owned() });
        Ok(())
    }

    /// The group, synced, or an error if it is refused or this user left it (unless joining it by invite now).
    pub async fn synced(&mut self, relay: &mut (impl KeyDirectory + GroupRelay), group: &GroupId) -> Result<Group, ClientError> {
        let g = self.sync_log(relay, group).await?;
        if g.status == LEFT && self.invite.as_ref().is_none_or(|(g, _)| g != group) {
            return Err(ClientError::Config(format!("you are not a member of group {group}")));
        }
        Ok(g)
    }

    /// Apply entries already verified against `g.state`, note them as events, check members' identities and make
    /// the sender-key session follow; stores the group.
    async fn apply_verified(&mut self, g: &mut Group, entries: &[MembershipEntry]) -> Result<(), ClientError> {
        for entry in entries {
            let actor = g.member_name(&entry.actor).unwrap_or_else(|| entry.subject.user.clone());
            g.state.apply(entry).map_err(e2e)?;
            self.note(g, entry, &actor, entry.seq);
        }
        // Members' identity keys in the log must be the ones pinned for them here (pinned now on first sight).
        let members: Vec<Member> = g.state.members().map(|(m, _)| m.clone()).collect();
        let pairwise = self.pairwise();
        for m in members {
            pairwise.check_identity(&m.user, &m.identity_key).await?;
        }
        self.refresh_session(g)?;
        self.put(g).await
    }

    /// Make the sender-key session follow the verified membership: start one on joining, a new chain when
    /// someone left, none after leaving.
    fn refresh_session(&self, g: &mut Group) -> Result<(), ClientError> {
        let (me, my_device) = self.keys.with(|e| Ok((e.identity_key(), e.certificate.device_id)))?;
        if !g.state.is_member(&me) {
            g.session = None;
            g.distributed.clear();
            g.status = LEFT.into();
            return Ok(());
        }
        g.status = ACTIVE.into();
        match &mut g.session {
            None => {
                g.session = Some(GroupSession::new(&mut OsRng, &g.state, me, my_device).map_err(e2e)?);
                g.distributed.clear();
            }
            Some(session) => {
                if session.membership_changed(&mut OsRng, &g.state).map_err(e2e)?.is_some() {
                    g.distributed.clear();
                }
            }
        }
        Ok(())
    }

    /// Append a change to the log (retrying on a conflict with a newer log), apply it here and say who must be
    /// told. `data` makes the entry's data; `text` is the name or topic a set-name or set-topic entry commits to.
    /// A change this user's role does not allow is refused here, before a round trip.
    #[allow(clippy::too_many_arguments)]
    pub async fn change(
        &mut self,
        relay: &mut (impl KeyDirectory + GroupRelay),
        group: &GroupId,
        op: MembershipOp,
        subject: Member,
        data: EntryData<'_>,
        text: Option<(InfoKind, SaltedText)>,
        now_ms: u64,
    ) -> Result<MembershipChanged, ClientError> {
        let mut attempt = 0;
        let (mut g, entry) = loop {
            let g = self.synced(relay, group).await?;
            let entry = self.keys.with(|e| {
                let identity = e.identity().ok_or_else(|| e2e("this device has no user identity: link it first"))?;
                Ok(g.state.next_entry_with(identity, op, subject.clone(), now_ms, data(&g.state, &subject)))
            })?;
            let mut next = g.state.clone();
            next.apply(&entry).map_err(|e| match e {
                MembershipError::NotAllowed { .. } => ClientError::Config("your role in this group does not allow that".into()),
                other => e2e(other),
            })?;
            match relay.append(group, entry.encode()).await {
                Ok(()) => break (g, entry),
                Err(ClientError::Refused { code: ErrorCode::GroupConflict, .. }) if attempt < 3 => attempt += 1,
                Err(e) => return Err(e),
            }
        };
        let before: Vec<Member> = g.state.members().map(|(m, _)| m.clone()).collect();
        self.apply_verified(&mut g, std::slice::from_ref(&entry)).await?;
        match text {
            Some((InfoKind::Name, t)) => {
                g.name = t.text.clone();
                g.info.name = Some(t);
            }
            Some((InfoKind::Topic, t)) => g.info.topic = Some(t),
            None => {}
        }
        self.put(&g).await?;
        let mut told: BTreeSet<String> = g.state.members().map(|(m, _)| m.user.clone()).collect();
        told.extend(before.into_iter().map(|m| m.user));
        told.remove(self.user);
        let update = GroupUpdate { group: group.to_string(), name: g.name.clone(), head: g.state.head(), info: g.info.clone() };
        Ok(MembershipChanged { update, told: told.into_iter().collect() })
    }

    /// Follow a membership update from `from` (pairwise, from the identity pinned for them): read the log, take a
    /// name or topic that matches its commitments, and refuse the group if the log lacks the head the sender saw.
    pub async fn receive_update(&mut self, relay: &mut (impl KeyDirectory + GroupRelay), from: &str, body: &[u8]) -> Result<(), ClientError> {
        let Ok(update) = serde_json::from_slice::<GroupUpdate>(body) else {
            tracing::warn!(%from, "malformed group update; dropped");
            return Ok(());
        };
        let Ok(group) = update.group.parse::<GroupId>() else { return Ok(()) };
        let mut g = match self.sync_log(relay, &group).await {
            Ok(g) => g,
            Err(e) if is_local(&e) => return Err(e),
            Err(e) => {
                tracing::warn!(%group, error = %e, "group update could not be followed");
                return Ok(());
            }
        };
        // A name or topic counts only when it is what the verified log commits to; before any rename, the name in
        // the update is a label.
        let gid = group_bytes(&group);
        let mut changed = false;
        if let Some(name) = update.info.name.filter(|t| t.matches(gid, InfoKind::Name, g.state.info(InfoKind::Name))) {
            g.name = name.text.clone();
            g.info.name = Some(name);
            changed = true;
        } else if g.state.info(InfoKind::Name).is_none() && g.name.is_empty() && !update.name.is_empty() {
            g.name = update.name.chars().take(128).collect();
            changed = true;
        }
        if let Some(topic) = update.info.topic.filter(|t| t.matches(gid, InfoKind::Topic, g.state.info(InfoKind::Topic))) {
            g.info.topic = Some(topic);
            changed = true;
        }
        if changed {
            self.put(&g).await?;
        }
        // The sender saw this head; the log from the relay must contain exactly it.
        let seen = g.state.head();
        if g.state.head_at(update.head.seq) != Some(update.head.head) {
            let reason = if seen.seq < update.head.seq {
                MembershipError::Rollback { known: update.head.seq, got: seen.seq }.to_string()
            } else {
                MembershipError::Fork { seq: update.head.seq }.to_string()
            };
            tracing::warn!(%group, %reason, %from, "group log differs from what a member saw");
            self.refuse(&mut g, &reason).await?;
        }
        Ok(())
    }

    /// Take a sender-key distribution from `from`'s device (`identity` and certificate `device` as the pairwise
    /// session authenticated them). Dropped unless the sender is a member of the verified log under that identity.
    pub async fn receive_sender_key(
        &mut self,
        relay: &mut (impl KeyDirectory + GroupRelay),
        from: &str,
        identity: [u8; 32],
        device: u32,
        body: &[u8],
    ) -> Result<(), ClientError> {
        let Ok(distribution) = SenderKeyDistribution::decode(body) else {
            tracing::warn!(%from, "malformed sender key; dropped");
            return Ok(());
        };
        let Ok(group) = ulid::Ulid::from_bytes(distribution.group_id).to_string().parse::<GroupId>() else { return Ok(()) };
        // The log is read from the relay only when this device does not know the sender as a member yet.
        let known = load(self.store, &group).await?.filter(|g| g.refused().is_none() && g.member_name(&identity).is_some());
        let mut g = match known {
            Some(g) => g,
            None => match self.sync_log(relay, &group).await {
                Ok(g) => g,
                Err(e) if is_local(&e) => return Err(e),
                Err(e) => {
                    tracing::warn!(%group, error = %e, "sender key for a group that cannot be followed; dropped");
                    return Ok(());
                }
            },
        };
        if g.member_name(&identity).as_deref() != Some(from) {
            tracing::warn!(%group, %from, "sender key from someone who is not a member; dropped");
            return Ok(());
        }
        let Some(session) = g.session.as_mut() else { return Ok(()) };
        match session.receive_distribution(&g.state, identity, device, &distribution) {
            Ok(()) => self.put(&g).await,
            Err(e) => {
                tracing::warn!(%group, %from, error = %e, "sender key refused");
                Ok(())
            }
        }
    }

    /// Open a group delivery (envelope `envelope_id` from `from`, as the relay labels it). Only a failing store or
    /// network is an error; anything about the message is [`GroupOpened::Unreadable`].
    pub async fn open(
        &mut self,
        relay: &mut (impl KeyDirectory + GroupRelay),
        group: &GroupId,
        from: &str,
        envelope_id: &str,
        body: &[u8],
    ) -> Result<GroupOpened, ClientError> {
        let unreadable = |reason: String| Ok(GroupOpened::Unreadable(reason));
        let msg = match GroupMessage::from_bytes(body) {
            Ok(m) => m,
            Err(e) => return unreadable(format!("not a group message: {e}")),
        };
        if msg.group_id != group_bytes(group) {
            return unreadable("the message belongs to another group".into());
        }
        let mut g = match load(self.store, group).await? {
            Some(g) => g,
            None => match self.sync_log(relay, group).await {
                Ok(g) => g,
                Err(e) if is_local(&e) => return Err(e),
                Err(e) => return unreadable(format!("from a group this device cannot follow: {e}")),
            },
        };
        if let Some(reason) = g.refused() {
            return unreadable(format!("the group is refused: {reason}"));
        }
        // A head this device has not verified yet: read the log first.
        if g.state.seq_of(&msg.membership_head).is_none() {
            match self.sync_log(relay, group).await {
                Ok(fresh) => g = fresh,
                Err(e) if is_local(&e) => return Err(e),
                Err(e) => return unreadable(e.to_string()),
            }
        }
        // The relay says who sent it; the log says whose identity key signed it. They must agree.
        if g.member_name(&msg.sender).as_deref() != Some(from) {
            return unreadable(format!("the relay labels this as from {from}, but its sender is not that member"));
        }
        if !g.state.may_post(&msg.sender) {
            return unreadable(format!("{from} may not post in this group (read-only); the message was refused"));
        }
        let Some(session) = g.session.as_mut() else {
            return unreadable("this device is not a member of the group".into());
        };
        let inner = match session.decrypt(&g.state, &msg) {
            Ok(inner) => inner,
            Err(GroupError::NoSenderKey) => return unreadable("no sender key from this device: it was not sent to you".into()),
            Err(e) => return unreadable(e.to_string()),
        };
        self.put(&g).await?;
        if id_bytes(envelope_id) != Some(inner.id) {
            return unreadable("the envelope id does not match the authenticated id inside".into());
        }
        Ok(GroupOpened::Message(inner))
    }

    /// Encrypt a content document (envelope `id`) to the group: sync the log, make sure every member device has
    /// this device's current sender key (sent pairwise first, and accepted by the relay before the message goes;
    /// a new chain first if a device that had the current one is no longer listed), then encrypt once for all,
    /// bound to the verified head. The sender-key state and the sequence counter are stored before the ciphertext
    /// is returned.
    pub async fn encrypt(
        &mut self,
        relay: &mut (impl KeyDirectory + GroupRelay),
        group: &GroupId,
        id: &str,
        content: &[u8],
        now_ms: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let mut g = self.synced(relay, group).await?;
        let me = self.user.to_owned();
        let my_device = self.device.to_owned();
        let members: Vec<Member> = g.state.members().map(|(m, _)| m.clone()).collect();
        let pairwise = self.pairwise();
        // Every member's current devices, each certified by the identity key the log names for that member.
        let mut listed: Vec<(String, String)> = Vec::new();
        for m in &members {
            for (device, cert) in pairwise.devices_of(relay, &m.user).await? {
                if cert.user_identity != m.identity_key {
                    return Err(e2e(format!("{}'s devices are certified by another identity than the group log names; refusing", m.user)));
                }
                listed.push((m.user.clone(), device));
            }
        }
        // A device that had this chain and is no longer listed was revoked (or removed): the chain may be in the
        // wrong hands now, so start a new one and send it only to the devices that remain.
        let prefix_of = |key: &str| key.rsplit_once('/').map(|(p, _)| p.to_owned()).unwrap_or_default();
        let current: BTreeSet<String> = listed.iter().map(|(u, d)| format!("{u}/{d}")).collect();
        if g.distributed.iter().any(|k| !current.contains(&prefix_of(k))) {
            if let Some(session) = g.session.as_mut() {
                session.new_chain(&mut OsRng);
            }
            g.distributed.clear();
            self.put(&g).await?;
        }
        let chain = g.session.as_ref().map(|s| s.distribution().chain_id).ok_or_else(|| e2e("no sender key"))?;
        // Devices that lack this device's current sender key, by user; a pairwise message to a user also reaches
        // this user's other devices.
        let mut owed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut my_other_devices = Vec::new();
        for (user, device) in &listed {
            if *user == me && *device == my_device {
                continue;
            }
            let key = format!("{user}/{device}/{chain}");
            if *user == me {
                my_other_devices.push(key.clone());
            }
            if !g.distributed.contains(&key) {
                owed.entry(user.clone()).or_default().push(key);
            }
        }
        if !owed.is_empty() {
            let distribution = g.session.as_ref().map(|s| s.distribution()).ok_or_else(|| e2e("no sender key"))?;
            let content = Content::new(SENDER_KEY_MIME, &distribution.encode(), None);
            for (user, keys) in owed {
                self.send_now(relay, &user, &content, now_ms).await?;
                g.distributed.extend(keys);
                g.distributed.extend(my_other_devices.iter().cloned());
                self.put(&g).await?;
            }
        }
        let id_bytes = id_bytes(id).ok_or_else(|| e2e(format!("envelope id {id} is not a ULID")))?;
        let sequence = self.keys.with(|e| Ok(e.next_sequence()))?;
        let inner = InnerMessage { id: id_bytes, sequence, body: content.to_vec() };
        let session = g.session.as_mut().ok_or_else(|| e2e("no sender key"))?;
        let message = session.encrypt(&g.state, &inner).map_err(e2e)?;
        self.put(&g).await?;
        self.keys.persist(self.store, &[]).await?;
        Ok(message.to_bytes())
    }

    /// Send a pairwise control message now and wait until the relay has it (encrypted again if the relay says
    /// the device list changed meanwhile).
    async fn send_now(&self, relay: &mut (impl KeyDirectory + GroupRelay), user: &str, content: &Content, now_ms: u64) -> Result<(), ClientError> {
        let pairwise = self.pairwise();
        for _ in 0..3 {
            let id = new_id(now_ms);
            let payloads = pairwise.encrypt_for(relay, user, &id, &content.encode()).await?;
            match relay.send_now(user, &id, payloads).await {
                Ok(()) => return Ok(()),
                Err(ClientError::Refused { code: ErrorCode::StaleDevices, .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Protocol(format!("{user}'s device list kept changing; try again")))
    }
}
