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

use crate::encoding::{Canonical, Reader, b64};
use crate::error::E2eError;
use crate::identity::{UserIdentity, verify_ed25519};
use crate::kdf::sha256;

/// Label of an entry's signed bytes.
pub const ENTRY_LABEL: &str = "imfree/v1/membership-entry";
/// Label of an entry's hash.
pub const HASH_LABEL: &str = "imfree/v1/membership-hash";
/// Version byte of an entry's binary encoding.
pub const ENTRY_VERSION: u8 = 1;
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
            other => return Err(MembershipError::UnknownOp(other)),
        })
    }
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
    }

    /// `"imfree/v1/membership-entry" 0x00 || group_id 16 || seq u64 || prev 32 || op u8 || u32 len || user ||
    /// subject identity key 32 || actor 32 || timestamp u64`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut c = Canonical::labelled(ENTRY_LABEL);
        self.body(&mut c);
        c.0
    }

    /// Make and sign an entry with the actor's identity key.
    pub fn sign(
        actor: &UserIdentity,
        group_id: [u8; 16],
        seq: u64,
        prev: [u8; 32],
        op: MembershipOp,
        subject: Member,
        timestamp: u64,
    ) -> Self {
        let mut entry = MembershipEntry {
            group_id,
            seq,
            prev,
            op,
            subject,
            actor: actor.public_key(),
            timestamp,
            signature: [0; 64],
        };
        let key = SigningKey::from_bytes(&actor.seed());
        entry.signature = key.sign(&entry.signed_bytes()).to_bytes();
        entry
    }

    /// The genesis entry of a new group: `creator` (named `user`) becomes its first member and admin.
    pub fn create(creator: &UserIdentity, user: &str, group_id: [u8; 16], timestamp: u64) -> Self {
        let subject = Member { user: user.to_owned(), identity_key: creator.public_key() };
        Self::sign(creator, group_id, 0, [0; 32], MembershipOp::Create, subject, timestamp)
    }

    /// Binary encoding (what the relay stores): `0x01 || group_id 16 || seq u64 || prev 32 || op u8 || u32 len ||
    /// user || subject identity key 32 || actor 32 || timestamp u64 || signature 64`.
    pub fn encode(&self) -> Vec<u8> {
        let mut c = Canonical::default();
        c.u8(ENTRY_VERSION);
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
        if r.u8("entry version").map_err(bad)? != ENTRY_VERSION {
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
        let signature = r.array("signature").map_err(bad)?;
        if !r.rest().is_empty() {
            return Err(MembershipError::Malformed("trailing bytes"));
        }
        Ok(MembershipEntry { group_id, seq, prev, op, subject: Member { user, identity_key }, actor, timestamp, signature })
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
    /// Members by user identity key.
    members: BTreeMap<String, (Member, bool)>,
    /// Hash of every entry so far, by seq (the last is the head).
    heads: Vec<KnownHeadHash>,
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
        members.insert(member_key(&entry.actor), (entry.subject.clone(), true));
        Ok(GroupState { group_id: entry.group_id, members, heads: vec![KnownHeadHash(entry.hash())] })
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
        let actor = self.members.get(&member_key(&entry.actor));
        let actor_is_admin = actor.is_some_and(|(_, admin)| *admin);
        let subject_key = member_key(&entry.subject.identity_key);
        let subject = self.members.get(&subject_key);
        if let Some((m, _)) = subject
            && m.user != entry.subject.user
        {
            return Err(MembershipError::InvalidChange { seq, reason: "the member's name does not match the log" });
        }
        let invalid = |reason| Err(MembershipError::InvalidChange { seq, reason });
        let not_allowed = Err(MembershipError::NotAllowed { seq });
        match entry.op {
            MembershipOp::Create => return invalid("create after the genesis entry"),
            MembershipOp::Add => {
                if !actor_is_admin {
                    return not_allowed;
                }
                if subject.is_some() {
                    return invalid("already a member");
                }
                if self.members.len() >= MAX_MEMBERS {
                    return invalid("the group is full");
                }
                self.members.insert(subject_key, (entry.subject.clone(), false));
            }
            MembershipOp::Remove => {
                if !actor_is_admin {
                    return not_allowed;
                }
                if subject.is_none() {
                    return invalid("not a member");
                }
                if entry.actor == entry.subject.identity_key {
                    return invalid("an admin leaves with leave, not remove");
                }
                self.members.remove(&subject_key);
            }
            MembershipOp::Leave => {
                if entry.actor != entry.subject.identity_key {
                    return not_allowed;
                }
                if subject.is_none() {
                    return invalid("not a member");
                }
                self.members.remove(&subject_key);
            }
            MembershipOp::Promote => {
                if !actor_is_admin {
                    return not_allowed;
                }
                match subject {
                    None => return invalid("not a member"),
                    Some((_, true)) => return invalid("already an admin"),
                    Some(_) => {}
                }
                self.members.entry(subject_key).and_modify(|(_, admin)| *admin = true);
            }
            MembershipOp::Demote => {
                if !actor_is_admin {
                    return not_allowed;
                }
                if !matches!(subject, Some((_, true))) {
                    return invalid("not an admin");
                }
                if self.members.values().filter(|(_, admin)| *admin).count() < 2 {
                    return invalid("the last admin cannot be demoted");
                }
                self.members.entry(subject_key).and_modify(|(_, admin)| *admin = false);
            }
        }
        self.heads.push(KnownHeadHash(entry.hash()));
        Ok(())
    }

    /// Make and sign the next entry (`actor` must be allowed to make it; [`GroupState::apply`] checks).
    pub fn next_entry(&self, actor: &UserIdentity, op: MembershipOp, subject: Member, timestamp: u64) -> MembershipEntry {
        let head = self.head();
        MembershipEntry::sign(actor, self.group_id, head.seq + 1, head.head, op, subject, timestamp)
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

    /// The current members with their identity keys and whether each is an admin.
    pub fn members(&self) -> impl Iterator<Item = (&Member, bool)> {
        self.members.values().map(|(m, admin)| (m, *admin))
    }

    /// Whether a user identity key is a current member.
    pub fn is_member(&self, identity_key: &[u8; 32]) -> bool {
        self.members.contains_key(&member_key(identity_key))
    }

    /// Whether a user identity key is a current admin.
    pub fn is_admin(&self, identity_key: &[u8; 32]) -> bool {
        self.members.get(&member_key(identity_key)).is_some_and(|(_, admin)| *admin)
    }
}
