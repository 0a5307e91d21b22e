//! Group membership logs on the relay: members append signed entries (`group.append`) and read them back
//! (`group.log`); group messages are fanned out to the members the log names.
//!
//! The relay checks every entry as a client would — signature, chain, who may make which change, and that a new
//! member's identity key is the one that user published — so that an honest relay stores only a valid log. Clients
//! do not rely on that: they verify the log themselves, so a relay that stores or serves something else is caught
//! (see docs/crypto.md, "What a hostile relay can do").

use imfree_crypto::membership::{GroupState, MembershipEntry, MembershipOp};
use imfree_proto::{ErrorCode, ErrorFrame, GroupId, Payload};
use imfree_store::{RelayStore, StoreError, UserId};

use crate::state::now_ms;

/// Entries in one `group.entries` frame (each at most 1 KiB): ask again from the next one for more.
pub const MAX_ENTRIES_PER_FRAME: usize = 256;

/// How a group is named in envelope rows: the recipient column of a group message.
pub fn envelope_recipient(group: &GroupId) -> String {
    format!("group:{group}")
}

/// The group of an envelope row's recipient, if it is a group message.
pub fn group_of_recipient(recipient: &str) -> Option<GroupId> {
    recipient.strip_prefix("group:").and_then(|g| g.parse().ok())
}

fn rejected(message: impl Into<String>) -> ErrorFrame {
    ErrorFrame::new(ErrorCode::GroupRejected, message)
}

fn internal(e: StoreError) -> ErrorFrame {
    tracing::error!(error = %e, "store failure in the group service");
    ErrorFrame::new(ErrorCode::Internal, "the relay could not complete the group operation; try again")
}

fn group_bytes(group: &GroupId) -> [u8; 16] {
    group.as_str().parse::<ulid::Ulid>().map(|u| u.to_bytes()).unwrap_or_default()
}

/// The log as stored, replayed. The relay only ever stores entries it verified, so a failure here means the
/// database was changed behind its back.
async fn current_state(store: &dyn RelayStore, group: &str, max_entries: usize) -> Result<Option<GroupState>, ErrorFrame> {
    let rows = store.group_entries(group, 0, max_entries as i64 + 1).await.map_err(internal)?;
    if rows.is_empty() {
        return Ok(None);
    }
    let entries = rows
        .iter()
        .map(|(_, bytes)| MembershipEntry::decode(bytes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| rejected(format!("the stored membership log is damaged: {e}")))?;
    GroupState::replay(&entries, None).map(Some).map_err(|e| rejected(format!("the stored membership log is damaged: {e}")))
}

/// Verify and store `group.append` from `user_id`, whose published identity key must be the entry's actor.
pub async fn append(
    store: &dyn RelayStore,
    user_id: UserId,
    group: &GroupId,
    bytes: &[u8],
    max_entries: usize,
) -> Result<(), ErrorFrame> {
    let entry = MembershipEntry::decode(bytes).map_err(|e| rejected(e.to_string()))?;
    if entry.group_id != group_bytes(group) {
        return Err(rejected("the entry names another group"));
    }
    let identity = store.user_identity(user_id).await.map_err(internal)?;
    if identity != Some(entry.actor) {
        return Err(rejected("the entry's actor is not your identity key: publish your keys first, and sign with your own"));
    }
    if entry.seq as usize >= max_entries {
        return Err(rejected(format!("a membership log holds at most {max_entries} entries")));
    }
    let state = match (entry.op, current_state(store, group.as_str(), max_entries).await?) {
        (MembershipOp::Create, None) => GroupState::genesis(&entry).map_err(|e| rejected(e.to_string()))?,
        (MembershipOp::Create, Some(_)) => {
            return Err(ErrorFrame::new(ErrorCode::GroupConflict, "a group with this id exists already; pick another id"));
        }
        (_, None) => return Err(ErrorFrame::new(ErrorCode::UnknownGroup, format!("no group {group}"))),
        (_, Some(mut state)) => {
            let head = state.head().seq;
            if entry.seq <= head {
                return Err(ErrorFrame::new(
                    ErrorCode::GroupConflict,
                    format!("entry {} exists already (the log is at {head}): fetch the log and try again", entry.seq),
                ));
            }
            state.apply(&entry).map_err(|e| rejected(e.to_string()))?;
            state
        }
    };
    // A member joins under the identity key that user published, so nobody can be added under a key of someone
    // else's choosing. Clients check the same against the key they pinned.
    let mut members = Vec::new();
    for (member, _) in state.members() {
        let Some(record) = store.user_by_name(&member.user).await.map_err(internal)? else {
            return Err(rejected(format!("no user named {:?}", member.user)));
        };
        if store.user_identity(record.id).await.map_err(internal)? != Some(member.identity_key) {
            return Err(rejected(format!("{}'s identity key in the entry is not the one {} published", member.user, member.user)));
        }
        members.push(record.id);
    }
    if !store.append_group_entry(group.as_str(), entry.seq as i64, bytes, &members, now_ms()).await.map_err(internal)? {
        return Err(ErrorFrame::new(ErrorCode::GroupConflict, "another entry took this place first: fetch the log and try again"));
    }
    tracing::debug!(%group, seq = entry.seq, op = ?entry.op, members = members.len(), "membership log appended");
    Ok(())
}

/// Answer `group.log`: entries `from` on, for anyone the log names (current or former members).
pub async fn log(store: &dyn RelayStore, user_id: UserId, group: &GroupId, from: u64) -> Result<(u64, Vec<Payload>), ErrorFrame> {
    let Some(head) = store.group_head(group.as_str()).await.map_err(internal)? else {
        return Err(ErrorFrame::new(ErrorCode::UnknownGroup, format!("no group {group}")));
    };
    if store.group_membership(group.as_str(), user_id).await.map_err(internal)?.is_none() {
        return Err(ErrorFrame::new(ErrorCode::NotAMember, "only members and former members may read a group's log"));
    }
    let from = i64::try_from(from).unwrap_or(i64::MAX);
    let rows = store.group_entries(group.as_str(), from, MAX_ENTRIES_PER_FRAME as i64).await.map_err(internal)?;
    Ok((head.max(0) as u64, rows.into_iter().map(|(_, e)| Payload(e)).collect()))
}

/// The current members of a group that `user_id` may send to: `Err` unless the sender is a current member.
pub async fn members_for_send(store: &dyn RelayStore, user_id: UserId, group: &GroupId) -> Result<Vec<UserId>, ErrorFrame> {
    match store.group_membership(group.as_str(), user_id).await.map_err(internal)? {
        Some(true) => store.group_members(group.as_str()).await.map_err(internal),
        Some(false) => Err(ErrorFrame::new(ErrorCode::NotAMember, "you are no longer a member of this group")),
        None if store.group_head(group.as_str()).await.map_err(internal)?.is_none() => {
            Err(ErrorFrame::new(ErrorCode::UnknownGroup, format!("no group {group}")))
        }
        None => Err(ErrorFrame::new(ErrorCode::NotAMember, "you are not a member of this group")),
    }
}
