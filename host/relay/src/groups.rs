//! Group membership logs on the relay: members append signed entries (`group.append`) and read them back
//! (`group.log`); group messages are fanned out to the members the log names.
//!
//! The relay checks every entry as a client would — signature, chain, who may make which change, and that a new
//! member's identity key is the one that user published — so that an honest relay stores only a valid log. Clients
//! do not rely on that: they verify the log themselves, so a relay that stores or serves something else is caught
//! (see docs/crypto.md, "What a hostile relay can do").

use imfree_crypto::membership::{GroupState, MembershipEntry, MembershipOp, Role};
use imfree_proto::{ErrorCode, ErrorFrame, GroupId, InviteProof, Payload};
use imfree_store::{AuditEvent, RelayStore, StoreError, UserId};

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

/// A membership entry's action in the audit log: `group.<op>`, with the new role for a role change.
fn audit_action(entry: &MembershipEntry) -> String {
    let op = match entry.op {
        MembershipOp::Create => "create",
        MembershipOp::Add => "add",
        MembershipOp::Remove => "remove",
        MembershipOp::Leave => "leave",
        MembershipOp::Promote => "promote",
        MembershipOp::Demote => "demote",
        MembershipOp::SetRole => {
            let role = entry.data.first().and_then(|c| Role::from_code(*c)).map_or("?", Role::as_str);
            return format!("group.set_role.{role}");
        }
        MembershipOp::SetPermissions => "set_permissions",
        MembershipOp::SetName => "rename",
        MembershipOp::SetTopic => "set_topic",
        MembershipOp::AddInvite => "open_invite_link",
        MembershipOp::RevokeInvite => "close_invite_link",
        MembershipOp::JoinByInvite => "join_by_invite",
    };
    format!("group.{op}")
}

fn group_bytes(group: &GroupId) -> [u8; 16] {
    group.as_str().parse::<ulid::Ulid>().map(|u| u.to_bytes()).unwrap_or_default()
}

/// Verified group states by group id, each with the log position it reflects, so that an append verifies only the
/// new entry. A state is used only while the stored log still ends where it did (another relay on the same
/// database may have appended); otherwise the log is replayed again.
#[derive(Default)]
pub struct GroupCache {
    states: std::sync::Mutex<std::collections::HashMap<String, (u64, GroupState)>>,
}

/// Groups whose verified state is kept in memory at most.
const CACHED_GROUPS: usize = 10_000;

impl GroupCache {
    fn get(&self, group: &str, head: u64) -> Option<GroupState> {
        let states = self.states.lock().ok()?;
        states.get(group).filter(|(at, _)| *at == head).map(|(_, s)| s.clone())
    }

    fn put(&self, group: &str, state: GroupState) {
        if let Ok(mut states) = self.states.lock() {
            if states.len() >= CACHED_GROUPS && !states.contains_key(group) {
                // Simple and bounded: start over rather than track recency.
                states.clear();
            }
            states.insert(group.to_owned(), (state.head().seq, state));
        }
    }
}

/// The log as stored, verified: from the cache when it is current, else replayed. The relay only ever stores
/// entries it verified, so a replay failure means the database was changed behind its back.
pub(crate) async fn current_state(store: &dyn RelayStore, cache: &GroupCache, group: &str, max_entries: usize) -> Result<Option<GroupState>, ErrorFrame> {
    let Some(head) = store.group_head(group).await.map_err(internal)? else { return Ok(None) };
    if let Some(state) = cache.get(group, head.max(0) as u64) {
        return Ok(Some(state));
    }
    let rows = store.group_entries(group, 0, max_entries as i64 + 1).await.map_err(internal)?;
    if rows.is_empty() {
        return Ok(None);
    }
    let entries = rows
        .iter()
        .map(|(_, bytes)| MembershipEntry::decode(bytes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| rejected(format!("the stored membership log is damaged: {e}")))?;
    let state = GroupState::replay(&entries, None).map_err(|e| rejected(format!("the stored membership log is damaged: {e}")))?;
    cache.put(group, state.clone());
    Ok(Some(state))
}

/// Who appends: the account, its name and the device (for the audit log).
pub struct Appender<'a> {
    /// The account.
    pub user_id: UserId,
    /// Its name.
    pub user: &'a str,
    /// The device.
    pub device: &'a str,
}

/// Verify and store `group.append` from `user_id`, whose published identity key must be the entry's actor.
pub async fn append(
    store: &dyn RelayStore,
    cache: &GroupCache,
    by: Appender<'_>,
    group: &GroupId,
    bytes: &[u8],
    max_entries: usize,
) -> Result<(), ErrorFrame> {
    let entry = MembershipEntry::decode(bytes).map_err(|e| rejected(e.to_string()))?;
    if entry.group_id != group_bytes(group) {
        return Err(rejected("the entry names another group"));
    }
    let identity = store.user_identity(by.user_id).await.map_err(internal)?;
    if identity != Some(entry.actor) {
        return Err(rejected("the entry's actor is not your identity key: publish your keys first, and sign with your own"));
    }
    if entry.seq as usize >= max_entries {
        return Err(rejected(format!("a membership log holds at most {max_entries} entries")));
    }
    let state = match (entry.op, current_state(store, cache, group.as_str(), max_entries).await?) {
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
    let now = now_ms();
    let audit = AuditEvent {
        at: now,
        actor: by.user.to_owned(),
        actor_device: by.device.to_owned(),
        action: audit_action(&entry),
        conversation: envelope_recipient(group),
        message_id: None,
        subject: Some(entry.subject.user.clone()),
    };
    if !store.append_group_entry(group.as_str(), entry.seq as i64, bytes, &members, now, &[audit]).await.map_err(internal)? {
        return Err(ErrorFrame::new(ErrorCode::GroupConflict, "another entry took this place first: fetch the log and try again"));
    }
    cache.put(group.as_str(), state);
    tracing::debug!(%group, seq = entry.seq, op = ?entry.op, members = members.len(), "membership log appended");
    Ok(())
}

/// Answer `group.log`: entries `from` on, for anyone the log names (current or former members).
/// Someone the log never named may read it with proof of an open invite link (to join through it).
pub async fn log(
    store: &dyn RelayStore,
    cache: &GroupCache,
    reader: (UserId, &str),
    group: &GroupId,
    from: u64,
    invite: Option<&InviteProof>,
    max_entries: usize,
) -> Result<(u64, Vec<Payload>), ErrorFrame> {
    let Some(head) = store.group_head(group.as_str()).await.map_err(internal)? else {
        return Err(ErrorFrame::new(ErrorCode::UnknownGroup, format!("no group {group}")));
    };
    if store.group_membership(group.as_str(), reader.0).await.map_err(internal)?.is_none() {
        let invited = match (invite, current_state(store, cache, group.as_str(), max_entries).await?) {
            (Some(proof), Some(state)) => match (<[u8; 32]>::try_from(proof.key.0.as_slice()), <[u8; 64]>::try_from(proof.signature.0.as_slice())) {
                (Ok(key), Ok(signature)) => state.may_read_with_invite(reader.1, &key, &signature),
                _ => false,
            },
            _ => false,
        };
        if !invited {
            return Err(ErrorFrame::new(ErrorCode::NotAMember, "only members, former members and holders of an open invite link may read a group's log"));
        }
    }
    let from = i64::try_from(from).unwrap_or(i64::MAX);
    let rows = store.group_entries(group.as_str(), from, MAX_ENTRIES_PER_FRAME as i64).await.map_err(internal)?;
    Ok((head.max(0) as u64, rows.into_iter().map(|(_, e)| Payload(e)).collect()))
}

/// The current members of a group that `user_id` may send to: `Err` unless the sender is a current member whose
/// role may post (a read-only member may not).
pub async fn members_for_send(
    store: &dyn RelayStore,
    cache: &GroupCache,
    user_id: UserId,
    group: &GroupId,
    max_entries: usize,
) -> Result<Vec<UserId>, ErrorFrame> {
    match store.group_membership(group.as_str(), user_id).await.map_err(internal)? {
        Some(true) => {}
        Some(false) => return Err(ErrorFrame::new(ErrorCode::NotAMember, "you are no longer a member of this group")),
        None if store.group_head(group.as_str()).await.map_err(internal)?.is_none() => {
            return Err(ErrorFrame::new(ErrorCode::UnknownGroup, format!("no group {group}")));
        }
        None => return Err(ErrorFrame::new(ErrorCode::NotAMember, "you are not a member of this group")),
    }
    let identity = store.user_identity(user_id).await.map_err(internal)?;
    let state = current_state(store, cache, group.as_str(), max_entries).await?;
    if !matches!((&state, identity), (Some(state), Some(key)) if state.may_post(&key)) {
        return Err(ErrorFrame::new(ErrorCode::NotAllowed, "your role in this group does not allow posting (read-only)"));
    }
    store.group_members(group.as_str()).await.map_err(internal)
}

#[cfg(test)]
mod tests {
    use imfree_crypto::identity::UserIdentity;
    use imfree_crypto::membership::Member;
    use imfree_store::{NewUser, SqliteStore};
    use rand_core::OsRng;

    use super::*;

    async fn user(store: &SqliteStore, name: &str) -> (UserId, UserIdentity) {
        let id = store.create_user(&NewUser { name: name.into(), password_hash: "x".into(), created_at: 0 }).await.unwrap();
        let identity = UserIdentity::generate(&mut OsRng);
        store.set_user_identity(id, &identity.public_key(), 0).await.unwrap();
        (id, identity)
    }

    fn by(user_id: UserId) -> Appender<'static> {
        Appender { user_id, user: "alice", device: "alice-device" }
    }

    #[tokio::test]
    async fn an_append_after_another_relay_appended_replays_instead_of_trusting_its_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("relay.db")).await.unwrap();
        let (alice, alice_key) = user(&store, "alice").await;
        let (bob, bob_key) = user(&store, "bob").await;
        let (_, carol_key) = user(&store, "carol").await;
        let group: GroupId = "01JD0000000000000000000000".parse().unwrap();
        let gid = ulid::Ulid::from_string(group.as_str()).unwrap().to_bytes();
        let (relay_a, relay_b) = (GroupCache::default(), GroupCache::default());

        let create = MembershipEntry::create(&alice_key, "alice", gid, 1);
        append(&store, &relay_a, by(alice), &group, &create.encode(), 100).await.unwrap();
        let mut state = GroupState::genesis(&create).unwrap();
        let add_bob = state.next_entry(&alice_key, MembershipOp::Add, Member { user: "bob".into(), identity_key: bob_key.public_key() }, 2);
        state.apply(&add_bob).unwrap();
        // Relay B, sharing the database, appends the next entry; relay A's cache still ends at the create.
        append(&store, &relay_b, by(alice), &group, &add_bob.encode(), 100).await.unwrap();
        let add_carol = state.next_entry(&alice_key, MembershipOp::Add, Member { user: "carol".into(), identity_key: carol_key.public_key() }, 3);
        append(&store, &relay_a, by(alice), &group, &add_carol.encode(), 100).await.expect("relay A reads the log again");
        assert_eq!(store.group_head(group.as_str()).await.unwrap(), Some(2));

        // A stale entry (its place is taken) is a conflict, from the cache or not.
        let late = state.next_entry(&alice_key, MembershipOp::Add, Member { user: "carol".into(), identity_key: carol_key.public_key() }, 4);
        let err = append(&store, &relay_b, by(alice), &group, &late.encode(), 100).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::GroupConflict, "{}", err.message);
        // And a change its actor may not make is refused with the cache warm, too: bob is no admin.
        let forged = MembershipEntry::sign(&bob_key, gid, 3, add_carol.hash(), MembershipOp::Remove, Member { user: "alice".into(), identity_key: alice_key.public_key() }, 5, Vec::new());
        let err = append(&store, &relay_a, Appender { user_id: bob, user: "bob", device: "bob-device" }, &group, &forged.encode(), 100).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::GroupRejected, "{}", err.message);
    }
}
