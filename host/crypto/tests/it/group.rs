//! Sender keys: a three-member group with shuffles, drops and duplicates; tampering refused with the state unchanged;
//! a removed member cannot read later messages; a new member cannot read earlier ones; a ghost head and a
//! non-member sender are refused; vectors (tests/vectors/group_sender_keys.json).

use std::collections::VecDeque;

use imfree_crypto::E2eError;
use imfree_crypto::envelope::InnerMessage;
use imfree_crypto::group::{
    GroupError, GroupMessage, GroupSession, MAX_GROUP_SKIP, ReceiverChain, SenderChain, SenderKeyDistribution,
};
use imfree_crypto::membership::{GroupState, MembershipEntry, MembershipOp};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::membership::User;
use crate::support::ScriptedRng;

fn msg(n: u64) -> InnerMessage {
    InnerMessage { id: [n as u8; 16], sequence: n, body: format!("message {n}").into_bytes() }
}

struct Device {
    user: User,
    session: GroupSession,
}

fn state_json(s: &GroupSession) -> String {
    serde_json::to_string(s).unwrap()
}

/// alice (admin) creates the group and adds bob and carol; every device distributes its chain to every other.
fn group(rng: &mut StdRng) -> (GroupState, Vec<MembershipEntry>, Vec<Device>) {
    let users = [User::new("alice@example.org", 1), User::new("bob@example.org", 2), User::new("carol@example.org", 3)];
    let mut log = vec![MembershipEntry::create(&users[0].identity, users[0].name, [7; 16], 1)];
    let mut state = GroupState::genesis(&log[0]).unwrap();
    for u in &users[1..] {
        let e = state.next_entry(&users[0].identity, MembershipOp::Add, u.member(), 2);
        state.apply(&e).unwrap();
        log.push(e);
    }
    let mut devices: Vec<Device> = users
        .into_iter()
        .map(|user| {
            let session = GroupSession::new(rng, &state, user.identity.public_key(), 1).unwrap();
            Device { user, session }
        })
        .collect();
    distribute_all(&state, &mut devices);
    (state, log, devices)
}

fn distribute_all(state: &GroupState, devices: &mut [Device]) {
    let dists: Vec<_> = devices.iter().map(|d| (d.user.identity.public_key(), d.session.distribution())).collect();
    for d in devices.iter_mut() {
        for (sender, dist) in &dists {
            if *sender != d.user.identity.public_key() {
                d.session.receive_distribution(state, *sender, 1, dist).unwrap();
            }
        }
    }
}

#[test]
#[allow(clippy::needless_range_loop)]
fn randomised_group_traffic_decrypts_each_message_exactly_once() {
    let mut rng = StdRng::seed_from_u64(0x6709);
    let (state, _, mut devices) = group(&mut rng);
    let mut in_flight: Vec<(usize, u64, GroupMessage)> = Vec::new();
    for n in 0..300u64 {
        let from = rng.gen_range(0..3);
        let m = devices[from].session.encrypt(&state, &msg(n)).unwrap();
        assert_eq!(GroupMessage::from_bytes(&m.to_bytes()).unwrap(), m);
        in_flight.push((from, n, m));
    }
    in_flight.shuffle(&mut rng);
    for (from, n, m) in &in_flight {
        for to in 0..3 {
            if to == *from || rng.gen_bool(0.1) {
                continue; // dropped for this receiver
            }
            // A flipped byte anywhere is refused and changes nothing.
            let before = state_json(&devices[to].session);
            let mut bytes = m.to_bytes();
            let i = rng.gen_range(0..bytes.len());
            bytes[i] ^= 1 << rng.gen_range(0..8);
            if let Ok(bad) = GroupMessage::from_bytes(&bytes) {
                assert!(devices[to].session.decrypt(&state, &bad).is_err());
            }
            assert_eq!(state_json(&devices[to].session), before);
            assert_eq!(devices[to].session.decrypt(&state, m).unwrap(), msg(*n));
            // A duplicate is refused.
            assert!(devices[to].session.decrypt(&state, m).is_err());
        }
    }
    // State survives serde.
    let copy: GroupSession = serde_json::from_str(&state_json(&devices[0].session)).unwrap();
    assert_eq!(state_json(&copy), state_json(&devices[0].session));
}

#[test]
fn removed_member_cannot_read_later_messages_and_new_member_cannot_read_earlier_ones() {
    let mut rng = StdRng::seed_from_u64(0x6710);
    let (mut state, _, mut devices) = group(&mut rng);
    let before_removal = devices[0].session.encrypt(&state, &msg(1)).unwrap();
    assert_eq!(devices[2].session.decrypt(&state, &before_removal).unwrap(), msg(1));

    // Alice removes carol. Alice and bob start new chains and hand them to each other only.
    let carol_view = state.clone();
    let e = state.next_entry(&devices[0].user.identity, MembershipOp::Remove, devices[2].user.member(), 3);
    state.apply(&e).unwrap();
    let mut new_dists = Vec::new();
    for d in devices[..2].iter_mut() {
        let dist = d.session.membership_changed(&mut rng, &state).unwrap().expect("a member left: new chain");
        new_dists.push((d.user.identity.public_key(), dist));
    }
    for d in devices[..2].iter_mut() {
        for (sender, dist) in &new_dists {
            if *sender != d.user.identity.public_key() {
                d.session.receive_distribution(&state, *sender, 1, dist).unwrap();
            }
        }
    }
    let after = devices[0].session.encrypt(&state, &msg(2)).unwrap();
    assert_eq!(devices[1].session.decrypt(&state, &after).unwrap(), msg(2));
    // Carol, with everything she held, under her old view or the new one: nothing.
    assert_eq!(devices[2].session.decrypt(&carol_view, &after), Err(GroupError::UnknownHead));
    assert_eq!(devices[2].session.decrypt(&state, &after), Err(GroupError::NoSenderKey));
    // Carol's chain is dropped by the others, and her later messages are refused.
    assert!(devices[2].session.encrypt(&state, &msg(3)).is_err());
    let from_carol = devices[2].session.encrypt(&carol_view, &msg(3)).unwrap();
    assert_eq!(devices[1].session.decrypt(&state, &from_carol), Err(GroupError::NotAMember), "an older head is known, but carol is no longer a member");

    // Alice adds dave; he gets the current chains, at their current iteration.
    let early = devices[0].session.encrypt(&state, &msg(4)).unwrap();
    let dave = User::new("dave@example.org", 4);
    let e = state.next_entry(&devices[0].user.identity, MembershipOp::Add, dave.member(), 4);
    state.apply(&e).unwrap();
    assert!(devices[0].session.membership_changed(&mut rng, &state).unwrap().is_none(), "no rotation on add");
    let mut dave_session = GroupSession::new(&mut rng, &state, dave.identity.public_key(), 1).unwrap();
    dave_session.receive_distribution(&state, devices[0].user.identity.public_key(), 1, &devices[0].session.distribution()).unwrap();
    assert_eq!(dave_session.decrypt(&state, &early), Err(GroupError::Crypto(E2eError::Duplicate)));
    assert_eq!(dave_session.decrypt(&state, &before_removal), Err(GroupError::NoSenderKey));
    let late = devices[0].session.encrypt(&state, &msg(5)).unwrap();
    assert_eq!(dave_session.decrypt(&state, &late).unwrap(), msg(5));
}

#[test]
fn ghost_heads_outsiders_and_far_jumps_are_refused() {
    let mut rng = StdRng::seed_from_u64(0x6711);
    let (state, _, mut devices) = group(&mut rng);
    // A message bound to a head outside the verified log (a forked log shown to the sender).
    let mut chain = SenderChain::new(&mut rng, state.group_id());
    let ghost_head = chain.encrypt(devices[0].user.identity.public_key(), 1, [9; 32], &msg(1)).unwrap();
    assert_eq!(devices[1].session.decrypt(&state, &ghost_head), Err(GroupError::UnknownHead));
    // An outsider's chain is not even stored.
    let outsider = User::new("mallory@example.org", 9);
    assert_eq!(
        devices[1].session.receive_distribution(&state, outsider.identity.public_key(), 1, &chain.distribution()),
        Err(GroupError::NotAMember)
    );
    let from_outsider = chain.encrypt(outsider.identity.public_key(), 1, state.head().head, &msg(2)).unwrap();
    assert_eq!(devices[1].session.decrypt(&state, &from_outsider), Err(GroupError::NotAMember));
    // A message re-signed by someone else's chain key under alice's name.
    let real = devices[0].session.encrypt(&state, &msg(3)).unwrap();
    let mut forged = real.clone();
    forged.signature = from_outsider.signature;
    assert_eq!(devices[1].session.decrypt(&state, &forged), Err(GroupError::Crypto(E2eError::BadSignature("group message"))));
    // A jump beyond the cap is refused without work; the chain is unchanged and still reads the real message.
    let dist = devices[0].session.distribution();
    let mut receiver = ReceiverChain::new(devices[0].user.identity.public_key(), 1, &dist);
    let mut sender = devices[0].session.clone();
    for _ in 0..MAX_GROUP_SKIP + 1 {
        let _ = sender.encrypt(&state, &msg(0)).unwrap();
    }
    let jump = sender.encrypt(&state, &msg(0)).unwrap();
    assert!(matches!(receiver.decrypt(&jump), Err(E2eError::TooFarAhead { .. })));
    assert_eq!(receiver.skipped_keys(), 0);
    let next = devices[0].session.encrypt(&state, &msg(4)).unwrap();
    assert_eq!(receiver.decrypt(&next).unwrap(), msg(4));
    // Distributions: strict decoding.
    let enc = dist.encode();
    assert_eq!(SenderKeyDistribution::decode(&enc).unwrap(), dist);
    assert!(SenderKeyDistribution::decode(&enc[..88]).is_err());
}

#[test]
fn group_sender_key_vectors_match() {
    let alice = User::new("alice@example.org", 1);
    let genesis = MembershipEntry::create(&alice.identity, alice.name, [7; 16], 1);
    let head = genesis.hash();
    let chain_id = vec![0x01, 0x02, 0x03, 0x04];
    let chain_key: Vec<u8> = (0x20..0x40).collect();
    let signing_seed: Vec<u8> = (0x40..0x60).collect();
    let mut rng = ScriptedRng(VecDeque::from([chain_id.clone(), chain_key.clone(), signing_seed.clone()]));
    let mut chain = SenderChain::new(&mut rng, [7; 16]);
    let dist = chain.distribution();
    let m0 = chain.encrypt(alice.identity.public_key(), 1, head, &msg(0)).unwrap();
    let m1 = chain.encrypt(alice.identity.public_key(), 1, head, &msg(1)).unwrap();
    let mut receiver = ReceiverChain::new(alice.identity.public_key(), 1, &dist);
    assert_eq!(receiver.decrypt(&m1).unwrap(), msg(1));
    assert_eq!(receiver.decrypt(&m0).unwrap(), msg(0));
    crate::vector_file::check(
        "group_sender_keys.json",
        json!({
            "description": "imfree sender keys v1 (docs/crypto.md, Group messages). Sender: alice (identity seed 32 × 0x01), device 1; head = hash of alice's genesis entry for group 07×16 at t=1. Draws in order: chain id (u32 BE), chain key, signing seed. Inner messages: id = 16 × n, sequence n, body \"message n\". Hex.",
            "inputs": {
                "group_id": hex::encode([7u8; 16]),
                "membership_head": hex::encode(head),
                "sender_identity_key": hex::encode(alice.identity.public_key()),
                "draws": [hex::encode(&chain_id), hex::encode(&chain_key), hex::encode(&signing_seed)],
            },
            "outputs": {
                "distribution": hex::encode(&*dist.encode()),
                "message_0": hex::encode(m0.to_bytes()),
                "message_1": hex::encode(m1.to_bytes()),
            }
        }),
    );
}
