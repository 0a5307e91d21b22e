//! The group membership log: a hash chain of membership changes, each signed by the user identity key of an admin
//! (or, for a leave, of the member leaving). Clients replay it from the genesis entry before they share sender keys
//! with anyone, and bind its head hash into every group message, so a relay that stores and serves the log cannot
//! add a ghost member, fork the history (show different members to different clients) or roll it back.
//!
//! This module owns the entry format, its signature and hash, and the rules of [`GroupState::apply`]; where the log
//! is stored and how new entries reach clients is the relay's and the client's.

use std::collections::BTreeMap;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::encoding::{Canonical, Reader, b64, b64_vec};
use crate::error::E2eError;
use crate::identity::{UserIdentity, verify_ed25519};
use crate::kdf::sha256;

/// Label of an entry's signed bytes.
pub const ENTRY_LABEL: &str = "imfree/v1/membership-entry";
/// Label of an entry's hash.
pub const HASH_LABEL: &str = "imfree/v1/membership-hash";
/// Version byte of an entry's binary encoding (the original ops, no data).
pub const ENTRY_VERSION: u8 = 1;
/// Version byte of entries whose op carries data.
pub const ENTRY_VERSION_DATA: u8 = 2;
/// Longest `data` of an entry, in bytes.
pub const MAX_DATA_LEN: usize = 96;
/// Label of what an invite key signs for a join.
pub const INVITE_JOIN_LABEL: &str = "imfree/v1/invite-join";
/// Label of what an invite key signs to let its holder read the group's log before joining.
pub const INVITE_READ_LABEL: &str = "imfree/v1/invite-read";
/// Most invite links open at once in a group.
pub const MAX_INVITES: usize = 32;

/// `"imfree/v1/invite-join" 0x00 || group_id 16 || seq u64 || prev 32 || joiner identity key 32 || u32 len || user`:
/// what the invite key signs in a join entry, so that a join cannot be moved to another place, key or name.
pub fn invite_join_bytes(group_id: [u8; 16], seq: u64, prev: &[u8; 32], joiner: &Member) -> Vec<u8> {
    let mut c = Canonical::labelled(INVITE_JOIN_LABEL);
    c.bytes(&group_id).u64(seq).bytes(prev).bytes(&joiner.identity_key).var(joiner.user.as_bytes());
    c.0
}

/// `"imfree/v1/invite-read" 0x00 || group_id 16 || u32 len || user`: what the invite key signs so that `user` may
/// read the log of a group it is not in yet.
pub fn invite_read_bytes(group_id: [u8; 16], user: &str) -> Vec<u8> {
    let mut c = Canonical::labelled(INVITE_READ_LABEL);
    c.bytes(&group_id).var(user.as_bytes());
    c.0
}

/// An invite link's key pair: the admin who opens the link puts the public key in the log; whoever holds the seed
/// (the link) may read the log and join.
pub struct InviteKey(SigningKey);

impl InviteKey {
    /// A new random invite key.
    pub fn generate(rng: &mut impl rand_core::CryptoRngCore) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        InviteKey(SigningKey::from_bytes(&seed))
    }

    /// The key of a link's seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        InviteKey(SigningKey::from_bytes(seed))
    }

    /// The seed (what the link carries).
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public key (what the log holds).
    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// Sign that `user` may read the group's log.
    pub fn sign_read(&self, group_id: [u8; 16], user: &str) -> [u8; 64] {
        self.0.sign(&invite_read_bytes(group_id, user)).to_bytes()
    }

    /// The `data` of a join entry for `joiner` at (`seq`, `prev`).
    pub fn join_data(&self, group_id: [u8; 16], seq: u64, prev: &[u8; 32], joiner: &Member) -> Vec<u8> {
        let signature = self.0.sign(&invite_join_bytes(group_id, seq, prev, joiner)).to_bytes();
        let mut data = self.public_key().to_vec();
        data.extend_from_slice(&signature);
        data
    }
}
/// Longest user name in an entry, in bytes.
pub const MAX_USER_LEN: usize = 256;
/// Most members of a group.
pub const MAX_MEMBERS: usize = 1000;

/// Why a membership log or entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Bytes that are not an entry.
    #[error("malformed membership entry: {0}")]
    Malformed(&'static str),
    /// An operation code this version does not know.
    #[error("unknown membership operation {0}: refusing a log this client cannot check; update imfree")]
    UnknownOp(u8),
    /// The signature is not the actor's.
    #[error("membership entry {seq} is not signed by its actor")]
    BadSignature {
        /// Sequence number of the entry.
        seq: u64,
    },
    /// The actor may not make this change (not an admin; or a leave signed by someone else).
    #[error("membership entry {seq}: the actor is not allowed to make this change")]
    NotAllowed {
        /// Sequence number of the entry.
        seq: u64,
    },
    /// The change does not fit the current members (adding a member twice, removing a non-member, …).
    #[error("membership entry {seq}: {reason}")]
    InvalidChange {
        /// Sequence number of the entry.
        seq: u64,
        /// What does not fit.
        reason: &'static str,
    },
    /// The entry does not follow the previous one (wrong `prev` or `seq`).
    #[error("membership log broken at entry {seq}: it does not follow the previous entry")]
    BrokenChain {
        /// Sequence number of the entry.
        seq: u64,
    },
    /// Two different entries follow the same entry: the log was forked.
    #[error("membership log forked at entry {seq}: two different histories exist; do not trust this group's members")]
    Fork {
        /// Sequence number where the histories diverge.
        seq: u64,
    },
    /// The log ends before a head this client has already verified.
    #[error("membership log rolled back: it ends at entry {got}, but entry {known} was already seen")]
    Rollback {
        /// The sequence number of the head this client knows.
        known: u64,
        /// The last sequence number of the log served.
        got: u64,
    },
    /// The entry belongs to another group.
    #[error("membership entry belongs to another group")]
    WrongGroup,
}

/// One membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipOp {
    /// Genesis: the creator (subject = actor) becomes the first member and admin.
    Create,
    /// An admin adds a member (not an admin).
    Add,
    /// An admin removes another member.
    Remove,
    /// A member leaves (subject = actor, signed by the leaver).
    Leave,
    /// An admin makes a member an admin.
    Promote,
    /// An admin makes an admin a plain member (at least one admin must remain).
    Demote,
    /// Give a member a role (`data`: one byte, [`Role::code`]). The actor must be an admin or owner and rank at
    /// least as high as both the member's current role and the new one; the last owner stays an owner.
    SetRole,
    /// Replace the group's permissions (`data`: [`Permissions::encode`]). Owners only.
    SetPermissions,
    /// Rename the group (`data`: the 32-byte [`info_commitment`] of the new name, which members receive end to end).
    SetName,
    /// Set the group's topic (`data`: the 32-byte [`info_commitment`] of the topic).
    SetTopic,
    /// Open an invite link (`data`: the invite's Ed25519 public key, 32 bytes). Needs `add_members`.
    AddInvite,
    /// Close an invite link (`data`: its public key). Needs `add_members`.
    RevokeInvite,
    /// Join through an open invite link: signed by the joiner (subject = actor), `data` = the invite's public key
    /// (32) || the invite key's signature (64) over [`invite_join_bytes`]. The joiner becomes a member.
    JoinByInvite,
}

impl MembershipOp {
    /// Its byte in signed and encoded entries.
    pub fn code(self) -> u8 {
        match self {
            MembershipOp::Create => 1,
            MembershipOp::Add => 2,
            MembershipOp::Remove => 3,
            MembershipOp::Leave => 4,
            MembershipOp::Promote => 5,
            MembershipOp::Demote => 6,
            MembershipOp::SetRole => 7,
            MembershipOp::SetPermissions => 8,
            MembershipOp::SetName => 9,
            MembershipOp::SetTopic => 10,
            MembershipOp::AddInvite => 11,
            MembershipOp::RevokeInvite => 12,
            MembershipOp::JoinByInvite => 13,
        }
    }

    /// The operation of a code; unknown codes are refused.
    pub fn from_code(code: u8) -> Result<Self, MembershipError> {
        Ok(match code {
            1 => MembershipOp::Create,
            2 => MembershipOp::Add,
            3 => MembershipOp::Remove,
            4 => MembershipOp::Leave,
            5 => MembershipOp::Promote,
            6 => MembershipOp::Demote,
            7 => MembershipOp::SetRole,
            8 => MembershipOp::SetPermissions,
            9 => MembershipOp::SetName,
            10 => MembershipOp::SetTopic,
            11 => MembershipOp::AddInvite,
            12 => MembershipOp::RevokeInvite,
            13 => MembershipOp::JoinByInvite,
            other => return Err(MembershipError::UnknownOp(other)),
        })
    }
}

impl MembershipOp {
    /// Whether entries of this op carry `data` (and so use the version 2 encoding).
    pub fn has_data(self) -> bool {
        !matches!(
            self,
            MembershipOp::Create | MembershipOp::Add | MembershipOp::Remove | MembershipOp::Leave | MembershipOp::Promote | MembershipOp::Demote
        )
    }
}

/// A member's role, lowest first. What each may do beyond posting is set by the group's [`Permissions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads, never posts.
    ReadOnly,
    /// An ordinary member.
    Member,
    /// Manages members (by default).
    Admin,
    /// Also sets roles of admins and the group's permissions. The creator is the first owner.
    Owner,
}

impl Role {
    /// Its byte in entries.
    pub fn code(self) -> u8 {
        match self {
            Role::ReadOnly => 0,
            Role::Member => 1,
            Role::Admin => 2,
            Role::Owner => 3,
        }
    }

    /// The role of a byte.
    pub fn from_code(code: u8) -> Option<Role> {
        Some(match code {
            0 => Role::ReadOnly,
            1 => Role::Member,
            2 => Role::Admin,
            3 => Role::Owner,
            _ => return None,
        })
    }

    /// Its name (`read_only`, `member`, `admin`, `owner`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadOnly => "read_only",
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    /// The role of a name (also `read-only`).
    pub fn parse(name: &str) -> Option<Role> {
        Some(match name {
            "read_only" | "read-only" | "readonly" => Role::ReadOnly,
            "member" => Role::Member,
            "admin" => Role::Admin,
            "owner" => Role::Owner,
            _ => return None,
        })
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // States stored before roles existed hold `true` (admin) or `false` (member).
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Legacy(bool),
            Named(String),
        }
        match Repr::deserialize(d)? {
            Repr::Legacy(true) => Ok(Role::Admin),
            Repr::Legacy(false) => Ok(Role::Member),
            Repr::Named(name) => Role::parse(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown role {name:?}"))),
        }
    }
}

/// What each role may do in a group: the lowest role allowed for each action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    /// Add members.
    pub add_members: Role,
    /// Remove members (never anyone of a higher role).
    pub remove_members: Role,
    /// Post messages.
    pub post: Role,
    /// Rename the group and set its topic.
    pub edit_info: Role,
    /// Delete other members' messages.
    pub delete_others: Role,
}

impl Default for Permissions {
    fn default() -> Self {
        Permissions { add_members: Role::Admin, remove_members: Role::Admin, post: Role::Member, edit_info: Role::Admin, delete_others: Role::Admin }
    }
}

impl Permissions {
    /// Five role bytes, in field order.
    pub fn encode(&self) -> Vec<u8> {
        [self.add_members, self.remove_members, self.post, self.edit_info, self.delete_others].iter().map(|r| r.code()).collect()
    }

    /// Strict decoding.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let [a, r, p, e, d] = bytes else { return None };
        Some(Permissions {
            add_members: Role::from_code(*a)?,
            remove_members: Role::from_code(*r)?,
            post: Role::from_code(*p)?,
            edit_info: Role::from_code(*e)?,
            delete_others: Role::from_code(*d)?,
        })
    }
}

/// Label of a group-info commitment.
pub const INFO_LABEL: &str = "imfree/v1/group-info";

/// Which piece of group information a commitment is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfoKind {
    /// The group's name.
    Name,
    /// Its topic.
    Topic,
}

/// `SHA-256("imfree/v1/group-info" 0x00 || group_id 16 || kind u8 (1 name, 2 topic) || salt 16 || u32 len || text)`:
/// what a `SetName`/`SetTopic` entry carries. The text itself goes to members end to end with the salt, so the relay
/// sees that the group was renamed, by whom, and can enforce who may — never the name.
pub fn info_commitment(group_id: [u8; 16], kind: InfoKind, salt: &[u8; 16], text: &str) -> [u8; 32] {
    let mut c = Canonical::labelled(INFO_LABEL);
    c.bytes(&group_id).u8(match kind {
        InfoKind::Name => 1,
        InfoKind::Topic => 2,
    });
    c.bytes(salt).var(text.as_bytes());
    sha256(&c.0)
}

/// A user as the log names them: the user name and the pinned user identity key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The user's name (e.g. `alice@example.org`).
    pub user: String,
    /// The user's Ed25519 identity key.
    #[serde(with = "b64")]
    pub identity_key: [u8; 32],
}

/// One signed entry of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipEntry {
    /// The group's id (chosen at random by the creator).
    #[serde(with = "b64")]
    pub group_id: [u8; 16],
    /// 0 for the genesis entry, then +1 per entry.
    pub seq: u64,
    /// Hash of the previous entry (32 zero bytes for the genesis entry).
    #[serde(with = "b64")]
    pub prev: [u8; 32],
    /// The change.
    pub op: MembershipOp,
    /// Whom it concerns.
    pub subject: Member,
    /// The identity key that signs: an admin's, or the leaver's.
    #[serde(with = "b64")]
    pub actor: [u8; 32],
    /// Unix seconds, as the actor's clock says (informative: not checked for order).
    pub timestamp: u64,
    /// What the op needs beyond the subject (a role, permissions, a commitment); empty for the ops of version 1.
    #[serde(default, with = "b64_vec")]
    pub data: Vec<u8>,
    /// Ed25519 signature by `actor` over [`MembershipEntry::signed_bytes`].
    #[serde(with = "b64")]
    pub signature: [u8; 64],
}

impl MembershipEntry {
    fn body(&self, c: &mut Canonical) {
        c.bytes(&self.group_id)
            .u64(self.seq)
            .bytes(&self.prev)
            .u8(self.op.code())
            .var(self.subject.user.as_bytes())
            .bytes(&self.subject.identity_key)
            .bytes(&self.actor)
            .u64(self.timestamp);
        if self.version() == ENTRY_VERSION_DATA {
            c.var(&self.data);
        }
    }

    /// Version 1 for the original ops (so that their bytes and hashes never change), 2 for ops that carry data.
    fn version(&self) -> u8 {
        if self.op.has_data() || !self.data.is_empty() { ENTRY_VERSION_DATA } else { ENTRY_VERSION }
    }

    /// `"imfree/v1/membership-entry" 0x00 || group_id 16 || seq u64 || prev 32 || op u8 || u32 len || user ||
    /// subject identity key 32 || actor 32 || timestamp u64` — and, for version 2 entries, `|| u32 len || data`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut c = Canonical::labelled(ENTRY_LABEL);
        self.body(&mut c);
        c.0
    }

    /// Make and sign an entry with the actor's identity key.
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        actor: &UserIdentity,
        group_id: [u8; 16],
        seq: u64,
        prev: [u8; 32],
        op: MembershipOp,
        subject: Member,
        timestamp: u64,
        data: Vec<u8>,
    ) -> Self {
        let mut entry = MembershipEntry {
            group_id,
            seq,
            prev,
            op,
            subject,
            actor: actor.public_key(),
            timestamp,
            data,
            signature: [0; 64],
        };
        let key = SigningKey::from_bytes(&actor.seed());
        entry.signature = key.sign(&entry.signed_bytes()).to_bytes();
        entry
    }

    /// The genesis entry of a new group: `creator` (named `user`) becomes its first member and admin.
    pub fn create(creator: &UserIdentity, user: &str, group_id: [u8; 16], timestamp: u64) -> Self {
        let subject = Member { user: user.to_owned(), identity_key: creator.public_key() };
        Self::sign(creator, group_id, 0, [0; 32], MembershipOp::Create, subject, timestamp, Vec::new())
    }

    /// Binary encoding (what the relay stores): `version u8 || group_id 16 || seq u64 || prev 32 || op u8 || u32 len ||
    /// user || subject identity key 32 || actor 32 || timestamp u64 || [version 2: u32 len || data] || signature 64`.
    pub fn encode(&self) -> Vec<u8> {
        let mut c = Canonical::default();
        c.u8(self.version());
        self.body(&mut c);
        c.bytes(&self.signature);
        c.0
    }

    /// Strict decoding of untrusted bytes (no trailing bytes, user name ≤ 256 bytes of UTF-8, known op). Nothing is
    /// verified here: replay the log.
    pub fn decode(bytes: &[u8]) -> Result<Self, MembershipError> {
        let bad = |e: E2eError| match e {
            E2eError::Malformed(what) => MembershipError::Malformed(what),
            _ => MembershipError::Malformed("entry"),
        };
        let mut r = Reader::new(bytes);
        let version = r.u8("entry version").map_err(bad)?;
        if version != ENTRY_VERSION && version != ENTRY_VERSION_DATA {
            return Err(MembershipError::Malformed("entry version"));
        }
        let group_id = r.array("group id").map_err(bad)?;
        let seq = r.u64("seq").map_err(bad)?;
        let prev = r.array("prev").map_err(bad)?;
        let op = MembershipOp::from_code(r.u8("op").map_err(bad)?)?;
        let len = r.u32("user length").map_err(bad)? as usize;
        if len > MAX_USER_LEN {
            return Err(MembershipError::Malformed("user name too long"));
        }
        let user = std::str::from_utf8(r.take(len, "user").map_err(bad)?)
            .map_err(|_| MembershipError::Malformed("user name is not UTF-8"))?
            .to_owned();
        let identity_key = r.array("subject identity key").map_err(bad)?;
        let actor = r.array("actor").map_err(bad)?;
        let timestamp = r.u64("timestamp").map_err(bad)?;
        let data = if version == ENTRY_VERSION_DATA {
            let len = r.u32("data length").map_err(bad)? as usize;
            if len > MAX_DATA_LEN {
                return Err(MembershipError::Malformed("entry data too long"));
            }
            r.take(len, "data").map_err(bad)?.to_vec()
        } else {
            Vec::new()
        };
        if op.has_data() != (version == ENTRY_VERSION_DATA) {
            return Err(MembershipError::Malformed("entry version does not fit its op"));
        }
        let signature = r.array("signature").map_err(bad)?;
        if !r.rest().is_empty() {
            return Err(MembershipError::Malformed("trailing bytes"));
        }
        Ok(MembershipEntry { group_id, seq, prev, op, subject: Member { user, identity_key }, actor, timestamp, data, signature })
    }

    /// `SHA-256("imfree/v1/membership-hash" 0x00 || encode())`: what the next entry's `prev` and group messages name.
    pub fn hash(&self) -> [u8; 32] {
        let mut c = Canonical::labelled(HASH_LABEL);
        c.bytes(&self.encode());
        sha256(&c.0)
    }

    fn verify_signature(&self) -> Result<(), MembershipError> {
        if self.subject.user.len() > MAX_USER_LEN {
            return Err(MembershipError::Malformed("user name too long"));
        }
        verify_ed25519(&self.actor, &self.signed_bytes(), &self.signature, "membership entry")
            .map_err(|_| MembershipError::BadSignature { seq: self.seq })
    }
}

/// A member's record in the verified state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The user's name.
    pub user: String,
    /// Whether the member may change the membership.
    pub admin: bool,
}

/// The last head a client verified for a group: persist it, and pass it to [`GroupState::replay`] next time so a
/// rolled-back or forked log is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownHead {
    /// Sequence number of the head entry.
    pub seq: u64,
    /// Its hash.
    #[serde(with = "b64")]
    pub head: [u8; 32],
}

/// The membership a verified log describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    #[serde(with = "b64")]
    group_id: [u8; 16],
    /// Members by user identity key, with their roles.
    members: BTreeMap<String, (Member, Role)>,
    /// Hash of every entry so far, by seq (the last is the head).
    heads: Vec<KnownHeadHash>,
    /// Who may do what.
    #[serde(default)]
    permissions: Permissions,
    /// Commitment to the current name, if it was ever set by a `SetName` entry.
    #[serde(default, with = "crate::encoding::b64_opt")]
    name: Option<[u8; 32]>,
    /// Commitment to the current topic.
    #[serde(default, with = "crate::encoding::b64_opt")]
    topic: Option<[u8; 32]>,
    /// Public keys of the open invite links (base64).
    #[serde(default)]
    invites: std::collections::BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct KnownHeadHash(#[serde(with = "b64")] [u8; 32]);

fn member_key(identity_key: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(identity_key)
}

impl GroupState {
    /// Start from a genesis entry (seq 0, prev all zero, `Create`, subject = actor, signed by the creator).
    pub fn genesis(entry: &MembershipEntry) -> Result<Self, MembershipError> {
        if entry.seq != 0 || entry.prev != [0; 32] {
            return Err(MembershipError::BrokenChain { seq: entry.seq });
        }
        if entry.op != MembershipOp::Create {
            return Err(MembershipError::InvalidChange { seq: 0, reason: "a log must start with create" });
        }
        entry.verify_signature()?;
        if entry.actor != entry.subject.identity_key {
            return Err(MembershipError::NotAllowed { seq: 0 });
        }
        let mut members = BTreeMap::new();
        members.insert(member_key(&entry.actor), (entry.subject.clone(), Role::Owner));
        Ok(GroupState {
            group_id: entry.group_id,
            members,
            heads: vec![KnownHeadHash(entry.hash())],
            permissions: Permissions::default(),
            name: None,
            topic: None,
            invites: Default::default(),
        })
    }

    /// Replay a whole log from its genesis entry; with `known`, also refuse a log that ends before that head
    /// ([`MembershipError::Rollback`]) or does not contain it ([`MembershipError::Fork`]).
    pub fn replay(entries: &[MembershipEntry], known: Option<&KnownHead>) -> Result<Self, MembershipError> {
        let (first, rest) = entries.split_first().ok_or(MembershipError::Malformed("empty log"))?;
        let mut state = GroupState::genesis(first)?;
        for entry in rest {
            state.apply(entry)?;
        }
        if let Some(known) = known {
            let got = state.head().seq;
            if got < known.seq {
                return Err(MembershipError::Rollback { known: known.seq, got });
            }
            if state.head_at(known.seq) != Some(known.head) {
                return Err(MembershipError::Fork { seq: known.seq });
            }
        }
        Ok(state)
    }

    /// Verify and apply the next entry; on any error the state is unchanged.
    pub fn apply(&mut self, entry: &MembershipEntry) -> Result<(), MembershipError> {
        let seq = entry.seq;
        if entry.group_id != self.group_id {
            return Err(MembershipError::WrongGroup);
        }
        let head = self.head();
        if entry.prev != head.head || seq != head.seq.wrapping_add(1) {
            // Following an older entry than the head: a second history branches off there.
            if let Some(at) = self.heads.iter().position(|h| h.0 == entry.prev)
                && entry.hash() != self.heads.get(at + 1).map_or([0; 32], |h| h.0)
            {
                return Err(MembershipError::Fork { seq: at as u64 + 1 });
            }
            return Err(MembershipError::BrokenChain { seq });
        }
        entry.verify_signature()?;
        let actor_role = self.members.get(&member_key(&entry.actor)).map(|(_, role)| *role);
        let subject_key = member_key(&entry.subject.identity_key);
        let subject_role = self.members.get(&subject_key).map(|(m, role)| (m, *role));
        if let Some((m, _)) = subject_role
            && m.user != entry.subject.user
        {
            return Err(MembershipError::InvalidChange { seq, reason: "the member's name does not match the log" });
        }
        let subject_role = subject_role.map(|(_, role)| role);
        let invalid = |reason| Err(MembershipError::InvalidChange { seq, reason });
        let not_allowed = Err(MembershipError::NotAllowed { seq });
        // Every op but a leave needs a member who holds at least `role`.
        let may = |role: Role| actor_role.is_some_and(|a| a >= role);
        let owners = self.members.values().filter(|(_, r)| *r == Role::Owner).count();
        let to_self = entry.actor == entry.subject.identity_key;
        match entry.op {
            MembershipOp::Create => return invalid("create after the genesis entry"),
            MembershipOp::Add => {
                if !may(self.permissions.add_members) {
                    return not_allowed;
                }
                if subject_role.is_some() {
                    return invalid("already a member");
                }
                if self.members.len() >= MAX_MEMBERS {
                    return invalid("the group is full");
                }
                self.members.insert(subject_key, (entry.subject.clone(), Role::Member));
            }
            MembershipOp::Remove => {
                let Some(subject_role) = subject_role else { return invalid("not a member") };
                // Nobody removes someone of a higher role.
                if !may(self.permissions.remove_members) || !may(subject_role) {
                    return not_allowed;
                }
                if to_self {
                    return invalid("a member leaves with leave, not remove");
                }
                self.members.remove(&subject_key);
            }
            MembershipOp::Leave => {
                if !to_self {
                    return not_allowed;
                }
                let Some(subject_role) = subject_role else { return invalid("not a member") };
                if subject_role == Role::Owner && owners == 1 && self.members.len() > 1 {
                    return invalid("the last owner must make someone else an owner before leaving");
                }
                self.members.remove(&subject_key);
            }
            MembershipOp::Promote => {
                if !may(Role::Admin) {
                    return not_allowed;
                }
                match subject_role {
                    None => return invalid("not a member"),
                    Some(r) if r >= Role::Admin => return invalid("already an admin"),
                    Some(_) => {}
                }
                self.members.entry(subject_key).and_modify(|(_, role)| *role = Role::Admin);
            }
            MembershipOp::Demote => {
                if !may(Role::Admin) {
                    return not_allowed;
                }
                if subject_role != Some(Role::Admin) {
                    return invalid("not an admin");
                }
                if self.members.values().filter(|(_, r)| *r >= Role::Admin).count() < 2 {
                    return invalid("the last admin cannot be demoted");
                }
                self.members.entry(subject_key).and_modify(|(_, role)| *role = Role::Member);
            }
            MembershipOp::SetRole => {
                let ([code], Some(subject_role)) = (entry.data.as_slice(), subject_role) else {
                    return invalid("a role change names a member and one role");
                };
                let Some(role) = Role::from_code(*code) else { return invalid("unknown role") };
                // Admins and owners set roles up to their own, of members not above them.
                if !may(Role::Admin) || !may(subject_role) || !may(role) {
                    return not_allowed;
                }
                if subject_role == Role::Owner && role != Role::Owner && owners == 1 {
                    return invalid("the last owner must make someone else an owner first");
                }
                self.members.entry(subject_key).and_modify(|(_, r)| *r = role);
            }
            MembershipOp::SetPermissions => {
                if !may(Role::Owner) {
                    return not_allowed;
                }
                if !to_self {
                    return invalid("a permissions change names its actor");
                }
                let Some(permissions) = Permissions::decode(&entry.data) else { return invalid("malformed permissions") };
                self.permissions = permissions;
            }
            MembershipOp::SetName | MembershipOp::SetTopic => {
                if !may(self.permissions.edit_info) {
                    return not_allowed;
                }
                if !to_self {
                    return invalid("a group information change names its actor");
                }
                let Ok(commitment) = <[u8; 32]>::try_from(entry.data.as_slice()) else { return invalid("malformed commitment") };
                if entry.op == MembershipOp::SetName {
                    self.name = Some(commitment);
                } else {
                    self.topic = Some(commitment);
                }
            }
            MembershipOp::AddInvite | MembershipOp::RevokeInvite => {
                if !may(self.permissions.add_members) {
                    return not_allowed;
                }
                if !to_self {
                    return invalid("an invite change names its actor");
                }
                let Ok(key) = <[u8; 32]>::try_from(entry.data.as_slice()) else { return invalid("malformed invite key") };
                let key = member_key(&key);
                if entry.op == MembershipOp::AddInvite {
                    if self.invites.len() >= MAX_INVITES {
                        return invalid("too many open invite links: close one first");
                    }
                    if !self.invites.insert(key) {
                        return invalid("that invite link is open already");
                    }
                } else if !self.invites.remove(&key) {
                    return invalid("no such open invite link");
                }
            }
            MembershipOp::JoinByInvite => {
                if !to_self {
                    return not_allowed;
                }
                if subject_role.is_some() {
                    return invalid("already a member");
                }
                if entry.data.len() != 96 {
                    return invalid("malformed invite proof");
                }
                let (key, signature) = entry.data.split_at(32);
                let (Ok(key), Ok(signature)) = (<[u8; 32]>::try_from(key), <[u8; 64]>::try_from(signature)) else {
                    return invalid("malformed invite proof");
                };
                if !self.invites.contains(&member_key(&key)) {
                    return not_allowed;
                }
                let signed = invite_join_bytes(self.group_id, seq, &entry.prev, &entry.subject);
                if verify_ed25519(&key, &signed, &signature, "invite").is_err() {
                    return not_allowed;
                }
                if self.members.len() >= MAX_MEMBERS {
                    return invalid("the group is full");
                }
                self.members.insert(subject_key, (entry.subject.clone(), Role::Member));
            }
        }
        self.heads.push(KnownHeadHash(entry.hash()));
        Ok(())
    }

    /// Make and sign the next entry (`actor` must be allowed to make it; [`GroupState::apply`] checks).
    pub fn next_entry(&self, actor: &UserIdentity, op: MembershipOp, subject: Member, timestamp: u64) -> MembershipEntry {
        self.next_entry_with(actor, op, subject, timestamp, Vec::new())
    }

    /// [`GroupState::next_entry`] for ops that carry data.
    pub fn next_entry_with(&self, actor: &UserIdentity, op: MembershipOp, subject: Member, timestamp: u64, data: Vec<u8>) -> MembershipEntry {
        let head = self.head();
        MembershipEntry::sign(actor, self.group_id, head.seq + 1, head.head, op, subject, timestamp, data)
    }

    /// The current members with their roles.
    pub fn roles(&self) -> impl Iterator<Item = (&Member, Role)> {
        self.members.values().map(|(m, role)| (m, *role))
    }

    /// A member's role (`None` for someone who is not a member).
    pub fn role_of(&self, identity_key: &[u8; 32]) -> Option<Role> {
        self.members.get(&member_key(identity_key)).map(|(_, role)| *role)
    }

    /// The group's permissions.
    pub fn permissions(&self) -> Permissions {
        self.permissions
    }

    /// Whether a member may post (read-only members may not).
    pub fn may_post(&self, identity_key: &[u8; 32]) -> bool {
        self.role_of(identity_key).is_some_and(|r| r >= self.permissions.post)
    }

    /// Whether a member may delete other members' messages.
    pub fn may_delete_others(&self, identity_key: &[u8; 32]) -> bool {
        self.role_of(identity_key).is_some_and(|r| r >= self.permissions.delete_others)
    }

    /// Whether `key` is an open invite link's public key.
    pub fn invite_open(&self, key: &[u8; 32]) -> bool {
        self.invites.contains(&member_key(key))
    }

    /// Whether `signature` shows that `user` holds an open invite link (`key`) and may read the log.
    pub fn may_read_with_invite(&self, user: &str, key: &[u8; 32], signature: &[u8; 64]) -> bool {
        self.invite_open(key) && verify_ed25519(key, &invite_read_bytes(self.group_id, user), signature, "invite").is_ok()
    }

    /// The commitment to the current name or topic, if one was ever set.
    pub fn info(&self, kind: InfoKind) -> Option<[u8; 32]> {
        match kind {
            InfoKind::Name => self.name,
            InfoKind::Topic => self.topic,
        }
    }

    /// The group id.
    pub fn group_id(&self) -> [u8; 16] {
        self.group_id
    }

    /// The head: the last entry's seq and hash. Bind it into every group message; persist it as a [`KnownHead`].
    pub fn head(&self) -> KnownHead {
        let seq = self.heads.len() as u64 - 1;
        KnownHead { seq, head: self.heads[self.heads.len() - 1].0 }
    }

    /// The hash of the entry at `seq`, if the log reaches it.
    pub fn head_at(&self, seq: u64) -> Option<[u8; 32]> {
        usize::try_from(seq).ok().and_then(|i| self.heads.get(i)).map(|h| h.0)
    }

    /// The seq of an entry hash in this log, if it is one (a group message may name an older head).
    pub fn seq_of(&self, head: &[u8; 32]) -> Option<u64> {
        self.heads.iter().position(|h| &h.0 == head).map(|i| i as u64)
    }

    /// The current members with their identity keys and whether each is an admin (or owner).
    pub fn members(&self) -> impl Iterator<Item = (&Member, bool)> {
        self.members.values().map(|(m, role)| (m, *role >= Role::Admin))
    }

    /// Whether a user identity key is a current member.
    pub fn is_member(&self, identity_key: &[u8; 32]) -> bool {
        self.members.contains_key(&member_key(identity_key))
    }

    /// Whether a user identity key is a current admin (or owner).
    pub fn is_admin(&self, identity_key: &[u8; 32]) -> bool {
        self.role_of(identity_key).is_some_and(|r| r >= Role::Admin)
    }
}
