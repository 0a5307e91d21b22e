//! Groups on this device: the membership log as verified here, sender keys, group messages.
//!
//! The relay stores the log and fans group messages out; nothing here trusts it for either:
//! - the log is replayed and verified entry by entry (signatures, chain, who may do what) and every head hash seen
//!   is kept, so an entry that is not signed by an admin, a fork (another entry where one was seen) or a rollback
//!   (a log shorter than one seen) is refused, and the group marked refused with the reason;
//! - whoever changes the membership tells every member in a pairwise end-to-end message which head the log now
//!   has (an *update*); a member checks that the log the relay serves has exactly that head;
//! - this device's sender key goes, over pairwise sessions, only to the devices of members in the verified log —
//!   a member the relay adds on its own receives ciphertext it cannot read. When someone leaves or is removed,
//!   every device starts a new chain, so they cannot read what follows; a new member receives chains at their
//!   current position, so it cannot read what came before.
//!
//! Group work that arrives is put in the local inbox before it is acknowledged and handled after the batch
//! ([`Session::settle_groups`]), because it may need the log from the relay.

use std::collections::{BTreeMap, BTreeSet};

use imfree_crypto::envelope::InnerMessage;
use imfree_crypto::group::{GroupError, GroupMessage, GroupSession, SenderKeyDistribution};
use imfree_crypto::identity::DeviceCertificate;
use base64::Engine as _;
use imfree_crypto::membership::{
    GroupState, InfoKind, InviteKey, KnownHead, Member, MembershipEntry, MembershipError, MembershipOp, Permissions, Role, info_commitment,
};
use imfree_proto::content::Content;
use imfree_proto::{ErrorCode, Frame, FrameBody, GroupAppend, GroupId, GroupLog, Limits, Payload, Recipient, Send, mime};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};

use crate::engine::{Event, Session, new_envelope_id};
use imfree_client_core::device::id_bytes;
use crate::store::{GroupRow, InboxItem, OutboxItem, StoredMessage};
use crate::{ClientError, now_ms};

/// How a group is named where a user name could stand: `group:<id>` (never a valid user name).
pub const GROUP_PREFIX: &str = "group:";
/// Content type of a membership update (pairwise, inside the encryption).
pub const UPDATE_MIME: &str = "application/vnd.imfree.group-update+json";
/// Content type of a sender-key distribution (pairwise, inside the encryption).
pub const SENDER_KEY_MIME: &str = "application/vnd.imfree.sender-key";

const ACTIVE: &str = "active";
const LEFT: &str = "left";

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
    fn is_empty(&self) -> bool {
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
    fn new(text: &str) -> (Self, [u8; 16]) {
        let mut salt = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut OsRng, &mut salt);
        (SaltedText { text: text.to_owned(), salt: base64::engine::general_purpose::STANDARD.encode(salt) }, salt)
    }

    /// Whether it is what `commitment` commits to.
    fn matches(&self, group_id: [u8; 16], kind: InfoKind, commitment: Option<[u8; 32]>) -> bool {
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

/// A group as this device holds it.
pub(crate) struct LocalGroup {
    pub(crate) id: GroupId,
    pub(crate) name: String,
    pub(crate) state: GroupState,
    pub(crate) session: Option<GroupSession>,
    /// "user/device/chain" for every device the current chain went to.
    pub(crate) distributed: BTreeSet<String>,
    pub(crate) status: String,
    /// Name and topic as verified against the log.
    pub(crate) info: GroupTexts,
}

impl LocalGroup {
    fn from_row(row: GroupRow) -> Result<Self, ClientError> {
        let bad = |what: &str, e: serde_json::Error| ClientError::Store(format!("group {}: {what}: {e}", row.id));
        Ok(LocalGroup {
            id: row.id.parse().map_err(|_| ClientError::Store(format!("group id {} is not a ULID", row.id)))?,
            name: row.name.clone(),
            state: serde_json::from_slice(&row.state).map_err(|e| bad("state", e))?,
            session: match &row.session {
                Some(s) => Some(serde_json::from_slice(s).map_err(|e| bad("session", e))?),
                None => None,
            },
            distributed: serde_json::from_slice(&row.distributed).map_err(|e| bad("distribution list", e))?,
            info: row.info.as_deref().map(serde_json::from_str).transpose().map_err(|e| bad("information", e))?.unwrap_or_default(),
            status: row.status,
        })
    }

    fn to_row(&self) -> GroupRow {
        GroupRow {
            id: self.id.to_string(),
            name: self.name.clone(),
            state: serde_json::to_vec(&self.state).unwrap_or_default(),
            session: self.session.as_ref().map(|s| serde_json::to_vec(s).unwrap_or_default()),
            distributed: serde_json::to_vec(&self.distributed).unwrap_or_default(),
            status: self.status.clone(),
            info: (!self.info.is_empty()).then(|| serde_json::to_string(&self.info).unwrap_or_default()),
        }
    }

    fn refused(&self) -> Option<&str> {
        self.status.strip_prefix("refused: ")
    }

    fn member_name(&self, identity: &[u8; 32]) -> Option<String> {
        self.state.members().find(|(m, _)| m.identity_key == *identity).map(|(m, _)| m.user.clone())
    }
}

/// The members of a group and their roles as this device last verified them (no network: the log is read as it
/// was synced), or `None` if this device does not know the group, was refused it or left it.
pub async fn verified_roles(store: &crate::store::LocalStore, group: &GroupId) -> Result<Option<Vec<(String, Role)>>, ClientError> {
    let Some(g) = store.group(group.as_str()).await?.map(LocalGroup::from_row).transpose()? else { return Ok(None) };
    if g.status != ACTIVE {
        return Ok(None);
    }
    Ok(Some(sorted(g.state.roles().map(|(m, role)| (m.user.clone(), role)).collect())))
}

/// Parse `group:<id>` (or a bare id).
pub fn parse_group(text: &str) -> Result<GroupId, ClientError> {
    text.strip_prefix(GROUP_PREFIX)
        .unwrap_or(text)
        .parse()
        .map_err(|_| ClientError::Config(format!("{text:?} is not a group (group:<26-character id>)")))
}

fn group_bytes(id: &GroupId) -> [u8; 16] {
    id_bytes(id.as_str()).unwrap_or_default()
}

fn e2e(e: impl std::fmt::Display) -> ClientError {
    ClientError::E2e(e.to_string())
}

fn describe(entry: &MembershipEntry, actor: &str) -> String {
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

impl Session<'_> {
    /// Create a group with this user as its only member and admin. Returns its id.
    pub async fn create_group(&mut self, name: &str) -> Result<GroupId, ClientError> {
        let id: GroupId = new_envelope_id().parse().map_err(|_| ClientError::Protocol("bad id".into()))?;
        let me = self.client.user().to_owned();
        let (entry, my_device) = self.client.with_e2e(|e| {
            let identity = e.identity().ok_or_else(|| e2e("this device has no user identity: link it first"))?;
            Ok((MembershipEntry::create(identity, &me, group_bytes(&id), now_ms() as u64), e.certificate.device_id))
        })?;
        self.append(&id, &entry).await?;
        let state = GroupState::genesis(&entry).map_err(e2e)?;
        let session = GroupSession::new(&mut OsRng, &state, entry.actor, my_device).map_err(e2e)?;
        let group = LocalGroup {
            id,
            name: name.to_owned(),
            state,
            session: Some(session),
            distributed: BTreeSet::new(),
            status: ACTIVE.into(),
            info: GroupTexts::default(),
        };
        self.client.store().put_group(&group.to_row()).await?;
        self.note_event(&group, &entry, &me, 0).await?;
        Ok(id)
    }

    /// Add `user` to a group (this user must be an admin). The new member can read what is sent from now on.
    pub async fn group_add(&mut self, group: &GroupId, user: &str) -> Result<(), ClientError> {
        let devices = self.devices_of(user).await?;
        let identity_key = devices
            .first()
            .map(|(_, c)| c.user_identity)
            .ok_or_else(|| e2e(format!("{user} has no device that can take part in end-to-end encryption yet")))?;
        let subject = Member { user: user.to_owned(), identity_key };
        self.change_membership(group, MembershipOp::Add, subject).await
    }

    /// Remove `user` from a group (this user must be an admin). Everyone's sender keys are replaced.
    pub async fn group_remove(&mut self, group: &GroupId, user: &str) -> Result<(), ClientError> {
        let g = self.synced_group(group).await?;
        let subject = g
            .state
            .members()
            .find(|(m, _)| m.user == user)
            .map(|(m, _)| m.clone())
            .ok_or_else(|| ClientError::Config(format!("{user} is not a member of this group")))?;
        self.change_membership(group, MembershipOp::Remove, subject).await
    }

    /// Leave a group.
    pub async fn group_leave(&mut self, group: &GroupId) -> Result<(), ClientError> {
        let me = self.client.user().to_owned();
        let key = self.client.with_e2e(|e| Ok(e.identity_key()))?;
        self.change_membership(group, MembershipOp::Leave, Member { user: me, identity_key: key }).await
    }

    /// Give `user` a role (this user must be an admin or owner ranking at least as high as both roles).
    pub async fn group_set_role(&mut self, group: &GroupId, user: &str, role: Role) -> Result<(), ClientError> {
        let subject = self.member_named(group, user).await?;
        self.change_membership_with(group, MembershipOp::SetRole, subject, vec![role.code()], None).await
    }

    /// Replace the group's permissions (owners only).
    pub async fn group_set_permissions(&mut self, group: &GroupId, permissions: Permissions) -> Result<(), ClientError> {
        let me = self.own_member()?;
        self.change_membership_with(group, MembershipOp::SetPermissions, me, permissions.encode(), None).await
    }

    /// Rename the group, or set its topic: the log gets a commitment, the members the text, end to end.
    pub async fn group_set_info(&mut self, group: &GroupId, kind: InfoKind, text: &str) -> Result<(), ClientError> {
        let limit = if kind == InfoKind::Name { 128 } else { 1024 };
        if text.chars().count() > limit || text.chars().any(char::is_control) {
            return Err(ClientError::Config(format!("at most {limit} characters, without control characters")));
        }
        let (salted, salt) = SaltedText::new(text);
        let commitment = info_commitment(group_bytes(group), kind, &salt, text);
        let op = if kind == InfoKind::Name { MembershipOp::SetName } else { MembershipOp::SetTopic };
        let me = self.own_member()?;
        self.change_membership_with(group, op, me, commitment.to_vec(), Some((kind, salted))).await
    }

    /// Open an invite link (as a member allowed to add members): whoever holds it may read the group's log and join
    /// as a member until it is closed. Returns the link to share (over a channel you trust: it admits anyone).
    pub async fn group_invite_link(&mut self, group: &GroupId) -> Result<String, ClientError> {
        let key = InviteKey::generate(&mut OsRng);
        let me = self.own_member()?;
        self.change_membership_with(group, MembershipOp::AddInvite, me, key.public_key().to_vec(), None).await?;
        Ok(invite_link(group, &key.seed()))
    }

    /// Close an invite link of a group.
    pub async fn group_close_invite_link(&mut self, link: &str) -> Result<GroupId, ClientError> {
        let (group, seed) = parse_invite_link(link)?;
        let me = self.own_member()?;
        let key = InviteKey::from_seed(&seed).public_key();
        self.change_membership_with(&group, MembershipOp::RevokeInvite, me, key.to_vec(), None).await?;
        Ok(group)
    }

    /// Join a group through an invite link. The other members learn of it end to end and share their keys; this
    /// device reads what is sent from now on.
    pub async fn group_join(&mut self, link: &str) -> Result<GroupId, ClientError> {
        let (group, seed) = parse_invite_link(link)?;
        let me = self.own_member()?;
        self.invite = Some((group, seed));
        let key = InviteKey::from_seed(&seed);
        let join = move |state: &GroupState, joiner: &Member| {
            let head = state.head();
            key.join_data(state.group_id(), head.seq + 1, &head.head, joiner)
        };
        let result = self.change_membership_made(&group, MembershipOp::JoinByInvite, me, &join, None).await;
        self.invite = None;
        result.map(|()| group)
    }

    /// Proof of the invite link being used to join `group`, if any.
    fn invite_proof(&self, group: &GroupId) -> Option<imfree_proto::InviteProof> {
        let (g, seed) = self.invite.as_ref().filter(|(g, _)| g == group)?;
        let key = InviteKey::from_seed(seed);
        let signature = key.sign_read(group_bytes(g), self.client.user());
        Some(imfree_proto::InviteProof { key: Payload(key.public_key().to_vec()), signature: Payload(signature.to_vec()) })
    }

    async fn member_named(&mut self, group: &GroupId, user: &str) -> Result<Member, ClientError> {
        let g = self.synced_group(group).await?;
        g.state
            .members()
            .find(|(m, _)| m.user == user)
            .map(|(m, _)| m.clone())
            .ok_or_else(|| ClientError::Config(format!("{user} is not a member of this group")))
    }

    fn own_member(&self) -> Result<Member, ClientError> {
        let key = self.client.with_e2e(|e| Ok(e.identity_key()))?;
        Ok(Member { user: self.client.user().to_owned(), identity_key: key })
    }

    /// The group as verified here, after reading any new log entries from the relay.
    pub async fn group_info(&mut self, group: &GroupId) -> Result<GroupInfo, ClientError> {
        let g = match self.sync_log(group).await {
            Ok(g) => g,
            Err(e) => match self.load_group(group).await? {
                // A refused group still answers what it is and why.
                Some(g) if g.refused().is_some() => g,
                _ => return Err(e),
            },
        };
        // Updates that arrived while the log was read were handled after it: read the group as they left it.
        let g = self.load_group(group).await?.unwrap_or(g);
        let gid = group_bytes(&g.id);
        Ok(GroupInfo {
            id: g.id.to_string(),
            name: g.name.clone(),
            topic: g.info.topic.as_ref().filter(|t| t.matches(gid, InfoKind::Topic, g.state.info(InfoKind::Topic))).map(|t| t.text.clone()),
            status: g.status.clone(),
            members: sorted(g.state.members().map(|(m, admin)| (m.user.clone(), admin)).collect()),
            roles: sorted(g.state.roles().map(|(m, role)| (m.user.clone(), role)).collect()),
            permissions: g.state.permissions(),
            head_seq: g.state.head().seq,
        })
    }

    async fn change_membership(&mut self, group: &GroupId, op: MembershipOp, subject: Member) -> Result<(), ClientError> {
        self.change_membership_with(group, op, subject, Vec::new(), None).await
    }

    /// Append a change (with its data) to the log and tell everyone concerned; `text` is the name or topic a
    /// set-name or set-topic entry commits to.
    async fn change_membership_with(
        &mut self,
        group: &GroupId,
        op: MembershipOp,
        subject: Member,
        data: Vec<u8>,
        text: Option<(InfoKind, SaltedText)>,
    ) -> Result<(), ClientError> {
        self.change_membership_made(group, op, subject, &move |_, _| data.clone(), text).await
    }

    /// [`Session::change_membership_with`] for data that depends on where the entry lands in the log (a join).
    async fn change_membership_made(
        &mut self,
        group: &GroupId,
        op: MembershipOp,
        subject: Member,
        data: &(dyn Fn(&GroupState, &Member) -> Vec<u8> + std::marker::Send + Sync),
        text: Option<(InfoKind, SaltedText)>,
    ) -> Result<(), ClientError> {
        let held = self.hold_group_inbox();
        let result = self.change_membership_held(group, op, subject, data, text).await;
        self.release_group_inbox(held).await?;
        result
    }

    async fn change_membership_held(
        &mut self,
        group: &GroupId,
        op: MembershipOp,
        subject: Member,
        data: &(dyn Fn(&GroupState, &Member) -> Vec<u8> + std::marker::Send + Sync),
        text: Option<(InfoKind, SaltedText)>,
    ) -> Result<(), ClientError> {
        let mut attempt = 0;
        let (mut g, entry) = loop {
            let g = self.synced_group(group).await?;
            let entry = self.client.with_e2e(|e| {
                let identity = e.identity().ok_or_else(|| e2e("this device has no user identity: link it first"))?;
                Ok(g.state.next_entry_with(identity, op, subject.clone(), now_ms() as u64, data(&g.state, &subject)))
            })?;
            // Check locally first: a change this user may not make gets a clear answer without a round trip.
            let mut next = g.state.clone();
            next.apply(&entry).map_err(|e| match e {
                MembershipError::NotAllowed { .. } => ClientError::Config("your role in this group does not allow that".into()),
                other => e2e(other),
            })?;
            match self.append(group, &entry).await {
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
        self.client.store().put_group(&g.to_row()).await?;
        // Everyone concerned learns the new head: the members now, and whoever just left or was removed.
        let mut told: BTreeSet<String> = g.state.members().map(|(m, _)| m.user.clone()).collect();
        told.extend(before.into_iter().map(|m| m.user));
        told.remove(self.client.user());
        let update = GroupUpdate { group: group.to_string(), name: g.name.clone(), head: g.state.head(), info: g.info.clone() };
        let content = Content::new(UPDATE_MIME, &serde_json::to_vec(&update).unwrap_or_default(), None);
        for user in told {
            let item = OutboxItem { id: new_envelope_id(), kind: "control".into(), to: user, mime: mime::E2E.into(), payload: content.encode(), refers: None };
            self.client.store().queue_outbox(&item).await?;
        }
        // A note to self for this user's other devices, so they follow too.
        let item = OutboxItem { id: new_envelope_id(), kind: "control".into(), to: self.client.user().to_owned(), mime: mime::E2E.into(), payload: content.encode(), refers: None };
        self.client.store().queue_outbox(&item).await?;
        self.flush_outbox().await?;
        Ok(())
    }

    async fn append(&mut self, group: &GroupId, entry: &MembershipEntry) -> Result<(), ClientError> {
        let id = new_envelope_id();
        let body = FrameBody::GroupAppend(GroupAppend { id: Some(id.clone()), group: *group, entry: Payload(entry.encode()) });
        self.request(body, &id).await.map(|_| ())
    }

    async fn load_group(&self, group: &GroupId) -> Result<Option<LocalGroup>, ClientError> {
        self.client.store().group(group.as_str()).await?.map(LocalGroup::from_row).transpose()
    }

    /// The group, synced, or an error if it is refused or this user left it (unless joining it by invite now).
    async fn synced_group(&mut self, group: &GroupId) -> Result<LocalGroup, ClientError> {
        let g = self.sync_log(group).await?;
        if g.status == LEFT && self.invite.as_ref().is_none_or(|(g, _)| g != group) {
            return Err(ClientError::Config(format!("you are not a member of group {group}")));
        }
        Ok(g)
    }

    /// Read new entries of a group's log from the relay and verify them against what this device has seen. On a
    /// verification failure the group is marked refused (sending stops, incoming messages are not shown) and the
    /// reason returned.
    pub(crate) async fn sync_log(&mut self, group: &GroupId) -> Result<LocalGroup, ClientError> {
        let held = self.hold_group_inbox();
        let result = self.sync_log_held(group).await;
        self.release_group_inbox(held).await?;
        result
    }

    async fn sync_log_held(&mut self, group: &GroupId) -> Result<LocalGroup, ClientError> {
        let local = self.load_group(group).await?;
        if let Some(g) = &local
            && let Some(reason) = g.refused()
        {
            return Err(e2e(format!("group {group} is refused: {reason}")));
        }
        let mut from = local.as_ref().map_or(0, |g| g.state.head().seq);
        let mut entries: Vec<MembershipEntry> = Vec::new();
        let relay_head = loop {
            let id = new_envelope_id();
            let FrameBody::GroupEntries(page) = self.request(FrameBody::GroupLog(GroupLog { id: Some(id.clone()), group: *group, from, invite: self.invite_proof(group) }), &id).await? else {
                return Err(ClientError::Protocol("expected group.entries".into()));
            };
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
                let mut g = LocalGroup {
                    id: *group,
                    name: String::new(),
                    state,
                    session: None,
                    distributed: BTreeSet::new(),
                    status: ACTIVE.into(),
                    info: GroupTexts::default(),
                };
                let creator = genesis.subject.user.clone();
                self.note_event(&g, genesis, &creator, 0).await?;
                self.apply_verified(&mut g, rest).await?;
                Ok(g)
            }
            Some(mut g) => {
                let verdict = self.verify_continuation(&g, &entries, relay_head);
                match verdict {
                    Ok(new) => {
                        self.apply_verified(&mut g, new).await?;
                        Ok(g)
                    }
                    Err(reason) => {
                        tracing::warn!(%group, %reason, "group membership log refused");
                        g.status = format!("refused: {reason}");
                        g.session = None;
                        self.client.store().put_group(&g.to_row()).await?;
                        self.warn(&g, &reason).await?;
                        Err(e2e(format!("group {group} is refused: {reason}")))
                    }
                }
            }
        }
    }

    /// The entries that extend the verified log, or why the relay's log cannot be trusted.
    fn verify_continuation<'e>(&self, g: &LocalGroup, entries: &'e [MembershipEntry], relay_head: u64) -> Result<&'e [MembershipEntry], String> {
        let head = g.state.head();
        if relay_head < head.seq {
            return Err(MembershipError::Rollback { known: head.seq, got: relay_head }.to_string());
        }
        let Some((first, rest)) = entries.split_first() else {
            return Err(MembershipError::Rollback { known: head.seq, got: 0 }.to_string());
        };
        if first.seq != head.seq || first.hash() != head.head {
            return Err(MembershipError::Fork { seq: head.seq }.to_string());
        }
        let mut probe = g.state.clone();
        for e in rest {
            probe.apply(e).map_err(|e| e.to_string())?;
        }
        Ok(rest)
    }

    /// Apply entries already verified against `g.state`, record them as events, and update the sender-key session.
    async fn apply_verified(&mut self, g: &mut LocalGroup, entries: &[MembershipEntry]) -> Result<(), ClientError> {
        for entry in entries {
            let actor = g.member_name(&entry.actor).unwrap_or_else(|| entry.subject.user.clone());
            g.state.apply(entry).map_err(e2e)?;
            self.note_event(g, entry, &actor, entry.seq).await?;
        }
        self.check_members(g).await?;
        self.refresh_session(g)?;
        self.client.store().put_group(&g.to_row()).await
    }

    /// Members' identity keys in the log must be the ones pinned for them here (pinned now on first sight).
    async fn check_members(&mut self, g: &LocalGroup) -> Result<(), ClientError> {
        let members: Vec<Member> = g.state.members().map(|(m, _)| m.clone()).collect();
        for m in members {
            self.check_identity(&m.user, &m.identity_key).await?;
        }
        Ok(())
    }

    /// Make the sender-key session follow the verified membership: start one on joining, a new chain when
    /// someone left, none after leaving.
    fn refresh_session(&self, g: &mut LocalGroup) -> Result<(), ClientError> {
        let (me, my_device) = self.client.with_e2e(|e| Ok((e.identity_key(), e.certificate.device_id)))?;
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

    /// Record a membership change in the group's conversation.
    async fn note_event(&mut self, g: &LocalGroup, entry: &MembershipEntry, actor: &str, seq: u64) -> Result<(), ClientError> {
        let text = describe(entry, actor);
        self.system_message(g, &format!("{}-{seq}", g.id), actor, &text, "event").await
    }

    async fn warn(&mut self, g: &LocalGroup, reason: &str) -> Result<(), ClientError> {
        let text = format!("WARNING: the relay served a membership log that does not verify ({reason}); this group is refused until it is recreated");
        self.system_message(g, &format!("{}-refused-{}", g.id, now_ms()), "imfree", &text, "warning").await
    }

    async fn system_message(&mut self, g: &LocalGroup, id: &str, from: &str, text: &str, status: &str) -> Result<(), ClientError> {
        let message = StoredMessage::new(
            id.to_owned(),
            false,
            from.to_owned(),
            String::new(),
            format!("{GROUP_PREFIX}{}", g.id),
            now_ms(),
            mime::TEXT.into(),
            text.as_bytes().to_vec(),
            status,
        );
        let me = self.client.user().to_owned();
        if self.client.store().insert_incoming(std::slice::from_ref(&message), &me).await?.first() == Some(&true) {
            self.events.push_back(Event::Message(message));
        }
        Ok(())
    }

    /// Encrypt a group message: sync the log, make sure every member device has this device's current sender key
    /// (sent pairwise first, and accepted by the relay before the message goes), then encrypt once for all.
    pub(crate) async fn encrypt_group(&mut self, group: &GroupId, id: &str, content: &[u8]) -> Result<Vec<u8>, ClientError> {
        let held = self.hold_group_inbox();
        let result = self.encrypt_group_held(group, id, content).await;
        self.release_group_inbox(held).await?;
        result
    }

    async fn encrypt_group_held(&mut self, group: &GroupId, id: &str, content: &[u8]) -> Result<Vec<u8>, ClientError> {
        let mut g = self.synced_group(group).await?;
        let me = self.client.user().to_owned();
        let my_device = self.client.device().to_owned();
        let members: Vec<Member> = g.state.members().map(|(m, _)| m.clone()).collect();
        // Every member's current devices, each certified by the identity key the log names for that member.
        let mut listed: Vec<(String, String)> = Vec::new();
        for m in &members {
            for (device, cert) in self.devices_of(&m.user).await? {
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
            self.client.store().put_group(&g.to_row()).await?;
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
                self.send_pairwise_now(&user, &content).await?;
                g.distributed.extend(keys);
                g.distributed.extend(my_other_devices.iter().cloned());
                self.client.store().put_group(&g.to_row()).await?;
            }
        }
        let id_bytes = id_bytes(id).ok_or_else(|| e2e(format!("envelope id {id} is not a ULID")))?;
        let sequence = self.client.with_e2e(|e| Ok(e.next_sequence()))?;
        let inner = InnerMessage { id: id_bytes, sequence, body: content.to_vec() };
        let session = g.session.as_mut().ok_or_else(|| e2e("no sender key"))?;
        let message = session.encrypt(&g.state, &inner).map_err(e2e)?;
        self.client.store().put_group(&g.to_row()).await?;
        self.client.persist_e2e(&[]).await?;
        Ok(message.to_bytes())
    }

    /// Send a pairwise control message now and wait until the relay has it.
    async fn send_pairwise_now(&mut self, user: &str, content: &Content) -> Result<(), ClientError> {
        for _ in 0..3 {
            let id = new_envelope_id();
            let payloads = self.encrypt_for(user, &id, &content.encode()).await?;
            let send = Send { id: id.parse().map_err(|_| ClientError::Protocol("bad id".into()))?, to: Recipient::User(user.into()), mime: mime::E2E.into(), data: Payload::default(), payloads, refers: None };
            self.conn.send(&Frame::new(FrameBody::Send(send))).await?;
            let answer = self
                .wait_for(std::time::Duration::from_secs(30), |e| match e {
                    Event::Accepted { id: a, .. } => *a == id,
                    Event::Refused(r) => r.reference.as_deref() == Some(&id),
                    _ => false,
                })
                .await?;
            match answer {
                Event::Accepted { .. } => return Ok(()),
                Event::Refused(r) if r.code == ErrorCode::StaleDevices => continue,
                Event::Refused(r) => return Err(ClientError::Refused { code: r.code, message: r.message }),
                _ => {}
            }
        }
        Err(ClientError::Protocol(format!("{user}'s device list kept changing; try again")))
    }

    /// Operations that read a group's row, make round trips to the relay, and write the row back (syncing the log,
    /// sending to the group, changing its members) hold the group inbox: deliveries that arrive during their round
    /// trips are stored in the inbox as always but handled only afterwards — otherwise a sender key stored meanwhile
    /// would be overwritten by the operation's older copy of the row, and that member's messages would be unreadable
    /// here. Returns whether the inbox was already held (by an outer operation, or by the inbox's own handling).
    fn hold_group_inbox(&mut self) -> bool {
        std::mem::replace(&mut self.settling, true)
    }

    /// End a hold: the outermost one handles what arrived meanwhile.
    async fn release_group_inbox(&mut self, held: bool) -> Result<(), ClientError> {
        self.settling = held;
        if held {
            return Ok(());
        }
        // Boxed: handling the inbox syncs logs, which holds the inbox again.
        Box::pin(self.settle_groups()).await
    }

    /// Handle the group inbox: membership updates, sender keys, group messages, in the order they arrived.
    pub(crate) async fn settle_groups(&mut self) -> Result<(), ClientError> {
        if self.settling {
            return Ok(());
        }
        self.settling = true;
        let result = self.settle_inbox().await;
        self.settling = false;
        result
    }

    async fn settle_inbox(&mut self) -> Result<(), ClientError> {
        loop {
            let items = self.client.store().group_inbox().await?;
            if items.is_empty() {
                return Ok(());
            }
            for item in items {
                let seq = item.seq;
                match item.kind.as_str() {
                    "message" => self.handle_group_message(item).await?,
                    "update" => self.handle_update(item).await?,
                    "sender_key" => self.handle_sender_key(item).await?,
                    other => tracing::warn!(kind = other, "unknown group inbox item; dropped"),
                }
                self.client.store().group_inbox_done(seq).await?;
            }
        }
    }

    /// A group the inbox names: known here, or fetched now (a group this device was just added to).
    async fn group_for(&mut self, group: &GroupId) -> Result<LocalGroup, ClientError> {
        self.sync_log(group).await
    }

    async fn handle_update(&mut self, item: InboxItem) -> Result<(), ClientError> {
        let Ok(update) = serde_json::from_slice::<GroupUpdate>(&item.body) else {
            tracing::warn!(from = %item.from, "malformed group update; dropped");
            return Ok(());
        };
        let Ok(group) = update.group.parse::<GroupId>() else { return Ok(()) };
        let mut g = match self.group_for(&group).await {
            Ok(g) => g,
            Err(e @ (ClientError::Io(_) | ClientError::Store(_))) => return Err(e),
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
            self.client.store().put_group(&g.to_row()).await?;
        }
        // The sender saw this head; the log from the relay must contain exactly it.
        let seen = g.state.head();
        if g.state.head_at(update.head.seq) != Some(update.head.head) {
            let reason = if seen.seq < update.head.seq {
                MembershipError::Rollback { known: update.head.seq, got: seen.seq }.to_string()
            } else {
                MembershipError::Fork { seq: update.head.seq }.to_string()
            };
            tracing::warn!(%group, %reason, from = %item.from, "group log differs from what a member saw");
            g.status = format!("refused: {reason}");
            g.session = None;
            self.client.store().put_group(&g.to_row()).await?;
            self.warn(&g, &reason).await?;
        }
        Ok(())
    }

    async fn handle_sender_key(&mut self, item: InboxItem) -> Result<(), ClientError> {
        let (Some(identity), Some(device)) = (item.sender_identity.as_deref(), item.sender_device) else { return Ok(()) };
        let Ok(identity) = <[u8; 32]>::try_from(identity) else { return Ok(()) };
        let Ok(distribution) = SenderKeyDistribution::decode(&item.body) else {
            tracing::warn!(from = %item.from, "malformed sender key; dropped");
            return Ok(());
        };
        let Ok(group) = ulid::Ulid::from_bytes(distribution.group_id).to_string().parse::<GroupId>() else { return Ok(()) };
        // The log is read from the relay only when this device does not know the sender as a member yet.
        let known = self.load_group(&group).await?.filter(|g| g.refused().is_none() && g.member_name(&identity).is_some());
        let mut g = match known {
            Some(g) => g,
            None => match self.group_for(&group).await {
                Ok(g) => g,
                Err(e @ (ClientError::Io(_) | ClientError::Store(_))) => return Err(e),
                Err(e) => {
                    tracing::warn!(%group, error = %e, "sender key for a group that cannot be followed; dropped");
                    return Ok(());
                }
            },
        };
        if g.member_name(&identity).as_deref() != Some(item.from.as_str()) {
            tracing::warn!(%group, from = %item.from, "sender key from someone who is not a member; dropped");
            return Ok(());
        }
        let Some(session) = g.session.as_mut() else { return Ok(()) };
        match session.receive_distribution(&g.state, identity, device as u32, &distribution) {
            Ok(()) => self.client.store().put_group(&g.to_row()).await,
            Err(e) => {
                tracing::warn!(%group, from = %item.from, error = %e, "sender key refused");
                Ok(())
            }
        }
    }

    async fn handle_group_message(&mut self, item: InboxItem) -> Result<(), ClientError> {
        let group: GroupId = match item.group.parse() {
            Ok(g) => g,
            Err(_) => return Ok(()),
        };
        let outcome = self.open_group_message(&group, &item).await?;
        let conversation = format!("{GROUP_PREFIX}{group}");
        let me = self.client.user().to_owned();
        let undecodable = |reason: &str| {
            StoredMessage::new(
                item.envelope_id.clone(),
                item.from == me,
                item.from.clone(),
                item.from_device.clone(),
                conversation.clone(),
                item.ts,
                mime::TEXT.to_owned(),
                format!("[undecodable message: {reason}]").into_bytes(),
                "undecodable",
            )
        };
        let message = match outcome.and_then(|bytes| Content::decode(&bytes).map_err(|e| e.to_string())) {
            Err(reason) => undecodable(&reason),
            Ok(content) => match content.body_bytes(&Limits::default()) {
                Err(e) => undecodable(&e.to_string()),
                Ok(body) => {
                    let mut m = StoredMessage::new(
                        item.envelope_id.clone(),
                        item.from == me,
                        item.from.clone(),
                        item.from_device.clone(),
                        conversation.clone(),
                        item.ts,
                        content.mime.clone(),
                        body,
                        "received",
                    );
                    crate::conversation::describe(&mut m, &content);
                    match crate::conversation::check_clear_reference(&content, item.refers) {
                        Err(reason) => undecodable(reason),
                        Ok(()) => {
                            if let Some(change) = m.change.as_mut()
                                && change.action == crate::store::ChangeAction::Delete
                            {
                                // Whether the sender may delete others' messages is read from the verified log here,
                                // where it is at hand; the store checks the rest.
                                change.by_admin = self.may_delete_others(&group, &item.from).await?;
                            }
                            m
                        }
                    }
                }
            },
        };
        if self.client.store().insert_incoming(std::slice::from_ref(&message), &me).await?.first() == Some(&true) {
            self.events.push_back(Event::Message(message));
        }
        Ok(())
    }

    /// Whether `user`'s role in the group, per the verified membership log this device holds, allows deleting
    /// other members' messages.
    pub(crate) async fn may_delete_others(&mut self, group: &GroupId, user: &str) -> Result<bool, ClientError> {
        may_delete_others(self.client.store(), group, user).await
    }

    /// Decrypt a group message: `Ok(Err(reason))` when it cannot be shown.
    async fn open_group_message(&mut self, group: &GroupId, item: &InboxItem) -> Result<Result<Vec<u8>, String>, ClientError> {
        let msg = match GroupMessage::from_bytes(&item.body) {
            Ok(m) => m,
            Err(e) => return Ok(Err(format!("not a group message: {e}"))),
        };
        if msg.group_id != group_bytes(group) {
            return Ok(Err("the message belongs to another group".into()));
        }
        let mut g = match self.load_group(group).await? {
            Some(g) => g,
            None => match self.group_for(group).await {
                Ok(g) => g,
                Err(e @ (ClientError::Io(_) | ClientError::Store(_))) => return Err(e),
                Err(e) => return Ok(Err(format!("from a group this device cannot follow: {e}"))),
            },
        };
        if let Some(reason) = g.refused() {
            return Ok(Err(format!("the group is refused: {reason}")));
        }
        // A head this device has not verified yet: read the log first.
        if g.state.seq_of(&msg.membership_head).is_none() {
            match self.sync_log(group).await {
                Ok(fresh) => g = fresh,
                Err(e @ (ClientError::Io(_) | ClientError::Store(_))) => return Err(e),
                Err(e) => return Ok(Err(e.to_string())),
            }
        }
        // The relay says who sent it; the log says whose identity key signed it. They must agree.
        if g.member_name(&msg.sender).as_deref() != Some(item.from.as_str()) {
            return Ok(Err(format!("the relay labels this as from {}, but its sender is not that member", item.from)));
        }
        if !g.state.may_post(&msg.sender) {
            return Ok(Err(format!("{} may not post in this group (read-only); the message was refused", item.from)));
        }
        let Some(session) = g.session.as_mut() else {
            return Ok(Err("this device is not a member of the group".into()));
        };
        let inner = match session.decrypt(&g.state, &msg) {
            Ok(inner) => inner,
            Err(GroupError::NoSenderKey) => return Ok(Err("no sender key from this device: it was not sent to you".into())),
            Err(e) => return Ok(Err(e.to_string())),
        };
        self.client.store().put_group(&g.to_row()).await?;
        if id_bytes(&item.envelope_id) != Some(inner.id) {
            return Ok(Err("the envelope id does not match the authenticated id inside".into()));
        }
        Ok(Ok(inner.body))
    }
}

/// Whether `user`'s role in the group, per the verified membership log in `store`, allows deleting other members'
/// messages.
pub(crate) async fn may_delete_others(store: &crate::store::LocalStore, group: &GroupId, user: &str) -> Result<bool, ClientError> {
    let Some(g) = store.group(group.as_str()).await?.map(LocalGroup::from_row).transpose()? else { return Ok(false) };
    if g.refused().is_some() {
        return Ok(false);
    }
    Ok(g.state.roles().any(|(m, _)| m.user == user && g.state.may_delete_others(&m.identity_key)))
}

/// How an invite link is written: `imfree-invite:<group id>:<the invite key's seed, base64url>`.
pub const INVITE_PREFIX: &str = "imfree-invite:";

fn invite_link(group: &GroupId, seed: &[u8; 32]) -> String {
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

/// By user name.
fn sorted<T: Ord>(mut v: Vec<(String, T)>) -> Vec<(String, T)> {
    v.sort();
    v
}

/// Whether a content type is a group control message (never shown as a message).
pub fn is_control(content_mime: &str) -> bool {
    matches!(content_mime, UPDATE_MIME | SENDER_KEY_MIME)
}

/// Group work found in a delivery batch, to be put in the inbox before the batch is acknowledged.
pub(crate) fn inbox_message(d: &imfree_proto::Deliver, group: &GroupId) -> InboxItem {
    InboxItem {
        seq: 0,
        envelope_id: d.id.to_string(),
        kind: "message".into(),
        group: group.to_string(),
        from: d.from.clone(),
        from_device: d.from_device.clone(),
        ts: d.ts as i64,
        body: d.data.0.clone(),
        sender_identity: None,
        sender_device: None,
        refers: d.refers,
    }
}

/// A pairwise control message (update or sender key) from `peer`, for the inbox; `None` if `content_mime` is not one.
pub(crate) fn inbox_control(d: &imfree_proto::Deliver, content_mime: &str, body: Vec<u8>, peer: &DeviceCertificate) -> Option<InboxItem> {
    let (kind, group) = match content_mime {
        UPDATE_MIME => ("update", serde_json::from_slice::<GroupUpdate>(&body).map(|u| u.group).unwrap_or_default()),
        SENDER_KEY_MIME => ("sender_key", String::new()),
        _ => return None,
    };
    Some(InboxItem {
        seq: 0,
        envelope_id: d.id.to_string(),
        kind: kind.into(),
        group,
        from: d.from.clone(),
        from_device: d.from_device.clone(),
        ts: d.ts as i64,
        body,
        sender_identity: Some(peer.user_identity.to_vec()),
        sender_device: Some(i64::from(peer.device_id)),
        refers: None,
    })
}
