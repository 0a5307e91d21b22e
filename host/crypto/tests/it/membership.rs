//! The membership log: an honest history, each attack a hostile relay could try (ghost member, forged or missing
//! signature, broken chain, fork, rollback, unknown operation, a leave signed by someone else), and the vectors
//! (tests/vectors/membership_log.json).

use imfree_crypto::identity::UserIdentity;
use imfree_crypto::membership::{
    GroupState, KnownHead, Member, MembershipEntry, MembershipError, MembershipOp,
};
use serde_json::json;

pub(crate) struct User {
    pub(crate) name: &'static str,
    pub(crate) identity: UserIdentity,
}

impl User {
    pub(crate) fn new(name: &'static str, seed: u8) -> Self {
        User { name, identity: UserIdentity::from_seed(&[seed; 32]) }
    }
    pub(crate) fn member(&self) -> Member {
        Member { user: self.name.to_owned(), identity_key: self.identity.public_key() }
    }
}

/// alice creates, adds bob and carol, promotes bob; bob removes carol; dave is added by bob.
fn honest_log(alice: &User, bob: &User, carol: &User, dave: &User) -> Vec<MembershipEntry> {
    let mut log = vec![MembershipEntry::create(&alice.identity, alice.name, [0x47; 16], 1_700_000_000)];
    let mut state = GroupState::genesis(&log[0]).unwrap();
    for (actor, op, subject) in [
        (alice, MembershipOp::Add, bob),
        (alice, MembershipOp::Add, carol),
        (alice, MembershipOp::Promote, bob),
        (bob, MembershipOp::Remove, carol),
        (bob, MembershipOp::Add, dave),
    ] {
        let e = state.next_entry(&actor.identity, op, subject.member(), 1_700_000_000 + log.len() as u64);
        state.apply(&e).unwrap();
        log.push(e);
    }
    log
}

fn users() -> (User, User, User, User) {
    (User::new("alice@example.org", 1), User::new("bob@example.org", 2), User::new("carol@example.org", 3), User::new("dave@example.org", 4))
}

#[test]
fn honest_log_replays_to_the_expected_members() {
    let (a, b, c, d) = users();
    let log = honest_log(&a, &b, &c, &d);
    let state = GroupState::replay(&log, None).unwrap();
    let mut members: Vec<_> = state.members().map(|(m, admin)| (m.user.clone(), admin)).collect();
    members.sort();
    assert_eq!(
        members,
        [("alice@example.org".into(), true), ("bob@example.org".into(), true), ("dave@example.org".into(), false)]
    );
    assert!(!state.is_member(&c.identity.public_key()));
    assert_eq!(state.head().seq, 5);
    assert_eq!(state.head().head, log[5].hash());
    // Binary and JSON encodings round-trip.
    for e in &log {
        assert_eq!(&MembershipEntry::decode(&e.encode()).unwrap(), e);
        assert_eq!(&serde_json::from_str::<MembershipEntry>(&serde_json::to_string(e).unwrap()).unwrap(), e);
    }
    // Replaying with the known head of any prefix works.
    for k in 0..log.len() {
        let known = GroupState::replay(&log[..=k], None).unwrap().head();
        assert_eq!(GroupState::replay(&log, Some(&known)).unwrap(), state);
    }
    let json = serde_json::to_string(&state).unwrap();
    assert_eq!(serde_json::from_str::<GroupState>(&json).unwrap(), state);
}

#[test]
fn ghost_member_added_by_a_non_admin_or_outsider_is_refused() {
    let (a, b, c, d) = users();
    let log = honest_log(&a, &b, &c, &d);
    let state = GroupState::replay(&log, None).unwrap();
    let ghost = User::new("ghost@relay.example", 66);
    // The relay signs with its own key; then dave (a plain member) tries; then the removed carol.
    for actor in [&ghost, &d, &c] {
        let e = state.next_entry(&actor.identity, MembershipOp::Add, ghost.member(), 1);
        let mut s = state.clone();
        assert_eq!(s.apply(&e), Err(MembershipError::NotAllowed { seq: 6 }));
        assert_eq!(s, state, "a refused entry leaves the state unchanged");
        let mut with_ghost = log.clone();
        with_ghost.push(e);
        assert!(GroupState::replay(&with_ghost, None).is_err());
    }
    // An entry naming alice as actor but not signed by her.
    let mut forged = state.next_entry(&ghost.identity, MembershipOp::Add, ghost.member(), 1);
    forged.actor = a.identity.public_key();
    assert_eq!(state.clone().apply(&forged), Err(MembershipError::BadSignature { seq: 6 }));
    // A signed entry altered afterwards.
    let mut altered = state.next_entry(&a.identity, MembershipOp::Add, ghost.member(), 1);
    altered.subject.identity_key = User::new("x", 67).identity.public_key();
    assert_eq!(state.clone().apply(&altered), Err(MembershipError::BadSignature { seq: 6 }));
}

#[test]
fn leave_only_by_the_leaver_and_invalid_changes() {
    let (a, b, c, d) = users();
    let state = GroupState::replay(&honest_log(&a, &b, &c, &d), None).unwrap();
    // Alice signs "dave leaves": not a leave.
    let e = state.next_entry(&a.identity, MembershipOp::Leave, d.member(), 1);
    assert_eq!(state.clone().apply(&e), Err(MembershipError::NotAllowed { seq: 6 }));
    let e = state.next_entry(&d.identity, MembershipOp::Leave, d.member(), 1);
    let mut s = state.clone();
    s.apply(&e).unwrap();
    assert!(!s.is_member(&d.identity.public_key()));
    for (actor, op, subject) in [
        (&a, MembershipOp::Add, &b),
        (&a, MembershipOp::Remove, &c),
        (&a, MembershipOp::Promote, &b),
        (&a, MembershipOp::Demote, &d),
        (&a, MembershipOp::Create, &c),
        (&a, MembershipOp::Remove, &a),
    ] {
        let e = state.next_entry(&actor.identity, op, subject.member(), 1);
        assert!(matches!(state.clone().apply(&e), Err(MembershipError::InvalidChange { .. })), "{op:?}");
    }
    // A member's name cannot be changed under the same key.
    let mut renamed = d.member();
    renamed.user = "mallory@example.org".into();
    let e = state.next_entry(&a.identity, MembershipOp::Promote, renamed, 1);
    assert!(matches!(state.clone().apply(&e), Err(MembershipError::InvalidChange { .. })));
}

#[test]
fn broken_chain_fork_and_rollback_are_refused() {
    let (a, b, c, d) = users();
    let log = honest_log(&a, &b, &c, &d);
    // Broken chain: an entry that names a prev not in the log, or skips a seq.
    let state3 = GroupState::replay(&log[..3], None).unwrap();
    let mut e = state3.next_entry(&a.identity, MembershipOp::Promote, b.member(), 1);
    e.prev = [9; 32];
    let e = MembershipEntry::sign(&a.identity, e.group_id, e.seq, e.prev, e.op, e.subject, e.timestamp, e.data);
    assert_eq!(state3.clone().apply(&e), Err(MembershipError::BrokenChain { seq: 3 }));
    let mut dropped = log.clone();
    dropped.remove(3);
    assert!(matches!(GroupState::replay(&dropped, None), Err(MembershipError::BrokenChain { .. })));
    let mut swapped = log.clone();
    swapped.swap(2, 3);
    assert!(GroupState::replay(&swapped, None).is_err());

    // Fork: alice signs a different entry 3 after entry 2 (a relay showing two histories). In one served log…
    let other3 = state3.next_entry(&a.identity, MembershipOp::Add, User::new("eve@example.org", 5).member(), 1);
    let mut forked = log[..4].to_vec();
    forked.push(other3.clone());
    assert_eq!(GroupState::replay(&forked, None), Err(MembershipError::Fork { seq: 3 }));
    // …and across time: the client knows head 4 of the honest log, the relay now serves the other branch.
    let known = GroupState::replay(&log[..5], None).unwrap().head();
    let mut branch = log[..3].to_vec();
    branch.push(other3);
    let mut s = GroupState::replay(&branch, None).unwrap();
    let e = s.next_entry(&a.identity, MembershipOp::Promote, b.member(), 1);
    s.apply(&e).unwrap();
    branch.push(e);
    assert_eq!(GroupState::replay(&branch, Some(&known)), Err(MembershipError::Fork { seq: 4 }));

    // Rollback: the relay serves the log as it was before carol's removal.
    let known = GroupState::replay(&log, None).unwrap().head();
    assert_eq!(GroupState::replay(&log[..4], Some(&known)), Err(MembershipError::Rollback { known: 5, got: 3 }));
    assert_eq!(GroupState::replay(&log[..4], Some(&KnownHead { seq: 3, head: [1; 32] })), Err(MembershipError::Fork { seq: 3 }));

    // Another group's entry.
    let other_group = MembershipEntry::create(&a.identity, a.name, [0x48; 16], 1);
    assert_eq!(state3.clone().apply(&other_group), Err(MembershipError::WrongGroup));
    // A log that does not start with a valid genesis entry.
    assert!(GroupState::replay(&log[1..], None).is_err());
    assert!(GroupState::replay(&[], None).is_err());
}

#[test]
fn unknown_ops_and_malformed_entries_are_refused() {
    let (a, b, c, d) = users();
    let log = honest_log(&a, &b, &c, &d);
    let enc = log[1].encode();
    let op_at = 1 + 16 + 8 + 32;
    assert_eq!(enc[op_at], MembershipOp::Add.code());
    let mut unknown = enc.clone();
    unknown[op_at] = 99;
    assert_eq!(MembershipEntry::decode(&unknown), Err(MembershipError::UnknownOp(99)));
    let json = serde_json::to_string(&log[1]).unwrap().replace("\"add\"", "\"rename\"");
    assert!(serde_json::from_str::<MembershipEntry>(&json).is_err());
    for cut in 0..enc.len() {
        assert!(MembershipEntry::decode(&enc[..cut]).is_err());
    }
    assert!(MembershipEntry::decode(&[&enc[..], &[0]].concat()).is_err());
    let mut long = enc.clone();
    long[op_at + 1..op_at + 5].copy_from_slice(&100_000u32.to_be_bytes());
    assert!(MembershipEntry::decode(&long).is_err());
}

#[test]
fn membership_log_vectors_match() {
    let (a, b, c, d) = users();
    let log = honest_log(&a, &b, &c, &d);
    let state = GroupState::replay(&log, None).unwrap();
    crate::vector_file::check(
        "membership_log.json",
        json!({
            "description": "imfree membership log v1 (docs/crypto.md, Group membership log). User identity keys are Ed25519 from the seeds given (32 bytes of the byte repeated). Entries in binary encoding, hex; hashes are the entry hashes.",
            "inputs": {
                "group_id": hex::encode([0x47; 16]),
                "users": [["alice@example.org", 1], ["bob@example.org", 2], ["carol@example.org", 3], ["dave@example.org", 4]],
                "history": ["alice creates (t=1700000000)", "alice adds bob", "alice adds carol", "alice promotes bob", "bob removes carol", "bob adds dave (t = 1700000000 + seq)"],
            },
            "outputs": {
                "entries": log.iter().map(|e| hex::encode(e.encode())).collect::<Vec<_>>(),
                "hashes": log.iter().map(|e| hex::encode(e.hash())).collect::<Vec<_>>(),
                "head": hex::encode(state.head().head),
            }
        }),
    );
}

fn with(state: &GroupState, actor: &User, op: MembershipOp, subject: &User, data: Vec<u8>) -> MembershipEntry {
    state.next_entry_with(&actor.identity, op, subject.member(), 1, data)
}

#[test]
fn roles_and_permissions_decide_who_may_do_what() {
    use imfree_crypto::membership::{InfoKind, Permissions, Role, info_commitment};
    let (a, b, c, d) = users();
    // alice (owner) adds bob, carol, dave; bob becomes an admin; dave read-only.
    let mut state = GroupState::genesis(&MembershipEntry::create(&a.identity, a.name, [0x47; 16], 1)).unwrap();
    for (op, subject, data) in [
        (MembershipOp::Add, &b, vec![]),
        (MembershipOp::Add, &c, vec![]),
        (MembershipOp::Add, &d, vec![]),
        (MembershipOp::SetRole, &b, vec![Role::Admin.code()]),
        (MembershipOp::SetRole, &d, vec![Role::ReadOnly.code()]),
    ] {
        state.apply(&with(&state, &a, op, subject, data)).unwrap();
    }
    let role = |s: &GroupState, u: &User| s.role_of(&u.identity.public_key());
    assert_eq!((role(&state, &a), role(&state, &b), role(&state, &c), role(&state, &d)), (Some(Role::Owner), Some(Role::Admin), Some(Role::Member), Some(Role::ReadOnly)));
    assert!(state.may_post(&c.identity.public_key()) && !state.may_post(&d.identity.public_key()), "read-only members do not post");
    assert!(state.may_delete_others(&b.identity.public_key()) && !state.may_delete_others(&c.identity.public_key()));

    let refused = |s: &GroupState, e: MembershipEntry| matches!(s.clone().apply(&e), Err(MembershipError::NotAllowed { .. }));
    // A plain member may not add, remove, rename, set roles or permissions.
    let name = info_commitment([0x47; 16], InfoKind::Name, &[7; 16], "launch");
    assert!(refused(&state, with(&state, &c, MembershipOp::Add, &User::new("eve@example.org", 5), vec![])));
    assert!(refused(&state, with(&state, &c, MembershipOp::Remove, &d, vec![])));
    assert!(refused(&state, with(&state, &c, MembershipOp::SetName, &c, name.to_vec())));
    assert!(refused(&state, with(&state, &c, MembershipOp::SetRole, &d, vec![Role::Member.code()])));
    assert!(refused(&state, with(&state, &c, MembershipOp::SetPermissions, &c, Permissions::default().encode())));
    // An admin may not touch the owner, make an owner, or change permissions; may rename and manage members.
    assert!(refused(&state, with(&state, &b, MembershipOp::Remove, &a, vec![])));
    assert!(refused(&state, with(&state, &b, MembershipOp::SetRole, &a, vec![Role::Member.code()])));
    assert!(refused(&state, with(&state, &b, MembershipOp::SetRole, &c, vec![Role::Owner.code()])));
    assert!(refused(&state, with(&state, &b, MembershipOp::SetPermissions, &b, Permissions::default().encode())));
    let mut renamed = state.clone();
    renamed.apply(&with(&state, &b, MembershipOp::SetName, &b, name.to_vec())).unwrap();
    assert_eq!(renamed.info(InfoKind::Name), Some(name));
    assert_eq!(renamed.info(InfoKind::Topic), None);

    // The owner lets members edit the group's information; then carol may rename.
    let open = Permissions { edit_info: Role::Member, ..Permissions::default() };
    let mut s = state.clone();
    s.apply(&with(&state, &a, MembershipOp::SetPermissions, &a, open.encode())).unwrap();
    assert_eq!(s.permissions(), open);
    let topic = info_commitment([0x47; 16], InfoKind::Topic, &[8; 16], "ship it");
    s.apply(&with(&s, &c, MembershipOp::SetTopic, &c, topic.to_vec())).unwrap();
    assert_eq!(s.info(InfoKind::Topic), Some(topic));

    // The last owner stays: not demoted, and may not leave while others remain; after handing over, may.
    let e = with(&state, &a, MembershipOp::SetRole, &a, vec![Role::Admin.code()]);
    assert!(matches!(state.clone().apply(&e), Err(MembershipError::InvalidChange { .. })));
    let e = with(&state, &a, MembershipOp::Leave, &a, vec![]);
    assert!(matches!(state.clone().apply(&e), Err(MembershipError::InvalidChange { .. })));
    let mut s = state.clone();
    s.apply(&with(&s, &a, MembershipOp::SetRole, &b, vec![Role::Owner.code()])).unwrap();
    s.apply(&with(&s, &a, MembershipOp::Leave, &a, vec![])).unwrap();
    assert_eq!(role(&s, &b), Some(Role::Owner));

    // Malformed data is refused, and data on a version 1 op does not decode.
    assert!(matches!(state.clone().apply(&with(&state, &a, MembershipOp::SetRole, &c, vec![9])), Err(MembershipError::InvalidChange { .. })));
    assert!(matches!(state.clone().apply(&with(&state, &a, MembershipOp::SetPermissions, &a, vec![1, 2])), Err(MembershipError::InvalidChange { .. })));
    let odd = with(&state, &a, MembershipOp::Add, &User::new("eve@example.org", 5), vec![1]);
    assert!(MembershipEntry::decode(&odd.encode()).is_err(), "an add with data is not a valid entry");
    // Entries with data round-trip, and their signature covers the data.
    let e = with(&state, &a, MembershipOp::SetRole, &c, vec![Role::Admin.code()]);
    assert_eq!(MembershipEntry::decode(&e.encode()).unwrap(), e);
    let mut tampered = e.clone();
    tampered.data = vec![Role::Owner.code()];
    assert_eq!(state.clone().apply(&tampered), Err(MembershipError::BadSignature { seq: e.seq }));
}

#[test]
fn a_state_stored_before_roles_still_loads() {
    let (a, b, c, d) = users();
    let state = GroupState::replay(&honest_log(&a, &b, &c, &d), None).unwrap();
    let mut old = serde_json::to_value(&state).unwrap();
    // What a client stored before roles: `[member, admin?]` pairs and no permissions or commitments.
    for (_, pair) in old["members"].as_object_mut().unwrap() {
        let admin = pair[1] != "member";
        pair[1] = json!(admin);
    }
    let object = old.as_object_mut().unwrap();
    object.remove("permissions");
    object.remove("name");
    object.remove("topic");
    let loaded: GroupState = serde_json::from_value(old).unwrap();
    let mut members: Vec<_> = loaded.members().map(|(m, admin)| (m.user.clone(), admin)).collect();
    members.sort();
    assert_eq!(members, [("alice@example.org".into(), true), ("bob@example.org".into(), true), ("dave@example.org".into(), false)]);
}

#[test]
fn invite_links_admit_whoever_holds_one_while_it_is_open() {
    use imfree_crypto::membership::{InviteKey, Role};
    let (a, b, c, _) = users();
    let mut state = GroupState::genesis(&MembershipEntry::create(&a.identity, a.name, [0x47; 16], 1)).unwrap();
    state.apply(&with(&state, &a, MembershipOp::Add, &b, vec![])).unwrap();
    let invite = InviteKey::from_seed(&[9; 32]);
    // A plain member may not open a link; an admin (here the owner) may.
    assert!(matches!(state.clone().apply(&with(&state, &b, MembershipOp::AddInvite, &b, invite.public_key().to_vec())), Err(MembershipError::NotAllowed { .. })));
    state.apply(&with(&state, &a, MembershipOp::AddInvite, &a, invite.public_key().to_vec())).unwrap();
    assert!(state.invite_open(&invite.public_key()));
    // The link lets carol read the log and join, as herself.
    assert!(state.may_read_with_invite(c.name, &invite.public_key(), &invite.sign_read(state.group_id(), c.name)));
    assert!(!state.may_read_with_invite(b.name, &invite.public_key(), &invite.sign_read(state.group_id(), c.name)), "bound to the reader");
    let head = state.head();
    let join = |state: &GroupState, key: &InviteKey, joiner: &User| {
        let head = state.head();
        state.next_entry_with(&joiner.identity, MembershipOp::JoinByInvite, joiner.member(), 1, key.join_data(state.group_id(), head.seq + 1, &head.head, &joiner.member()))
    };
    let entry = join(&state, &invite, &c);
    // A join whose proof is for another place in the log, or signed by a key that is not open, is refused.
    let stale = state.next_entry_with(&c.identity, MembershipOp::JoinByInvite, c.member(), 1, invite.join_data(state.group_id(), head.seq + 5, &head.head, &c.member()));
    assert!(matches!(state.clone().apply(&stale), Err(MembershipError::NotAllowed { .. })));
    let stranger = InviteKey::from_seed(&[10; 32]);
    assert!(matches!(state.clone().apply(&join(&state, &stranger, &c)), Err(MembershipError::NotAllowed { .. })));
    // Someone else cannot sign a join for carol (the entry is signed by its subject).
    let forged = state.next_entry_with(&b.identity, MembershipOp::JoinByInvite, c.member(), 1, invite.join_data(state.group_id(), head.seq + 1, &head.head, &c.member()));
    assert!(matches!(state.clone().apply(&forged), Err(MembershipError::NotAllowed { .. })));
    let mut joined = state.clone();
    joined.apply(&entry).unwrap();
    assert_eq!(joined.role_of(&c.identity.public_key()), Some(Role::Member));
    assert_eq!(MembershipEntry::decode(&entry.encode()).unwrap(), entry);
    // Once revoked, the link admits nobody and reads nothing.
    state.apply(&with(&state, &a, MembershipOp::RevokeInvite, &a, invite.public_key().to_vec())).unwrap();
    assert!(!state.may_read_with_invite(c.name, &invite.public_key(), &invite.sign_read(state.group_id(), c.name)));
    assert!(matches!(state.clone().apply(&join(&state, &invite, &c)), Err(MembershipError::NotAllowed { .. })));
}
