//! Groups in the client core without a network: several users and devices over in-memory stores, and a relay in
//! memory that keeps the membership logs, carries pairwise messages, and — in the hostile tests — forges, forks or
//! rolls back a log. The native engine drives the same code against the real relay (host/cli/tests/it/groups*.rs).

use std::collections::BTreeMap;

use futures_executor::block_on;
use imfree_client_core::ClientError;
use imfree_client_core::directory::KeyDirectory;
use imfree_client_core::groups::{
    self, ACTIVE, GroupEvent, GroupOpened, GroupRelay, Groups, LEFT, MembershipChanged, SENDER_KEY_MIME, UPDATE_MIME,
};
use imfree_client_core::pairwise::Opened;
use imfree_crypto::group::GroupMessage;
use imfree_crypto::membership::{GroupState, Member, MembershipEntry, MembershipOp};
use imfree_proto::content::Content;
use imfree_proto::{DeviceBundle, DevicePayload, ErrorCode, GroupEntries, GroupId, InviteProof, KeysDeviceList, Limits, Payload};

use crate::pairwise::{Directory, Party};

const NOW_MS: u64 = 1_800_000_000_000;

/// A pairwise delivery waiting for a device.
struct Mail {
    from: String,
    from_device: String,
    id: String,
    data: Vec<u8>,
}

/// The relay: key service, group logs (encoded entries, in order) and each device's queue of pairwise deliveries.
#[derive(Default)]
struct Relay {
    keys: Directory,
    logs: BTreeMap<GroupId, Vec<Vec<u8>>>,
    mail: BTreeMap<String, Vec<Mail>>,
}

/// The relay as one device's connection sees it.
struct Link<'r> {
    relay: &'r mut Relay,
    user: String,
    device: String,
}

impl KeyDirectory for Link<'_> {
    async fn device_list(&mut self, user: &str) -> Result<KeysDeviceList, ClientError> {
        self.relay.keys.device_list(user).await
    }

    async fn claim_bundles(&mut self, user: &str, devices: Vec<String>) -> Result<Vec<DeviceBundle>, ClientError> {
        self.relay.keys.claim_bundles(user, devices).await
    }
}

impl GroupRelay for Link<'_> {
    async fn log_page(&mut self, group: &GroupId, from: u64, _invite: Option<InviteProof>) -> Result<GroupEntries, ClientError> {
        let log = self.relay.logs.get(group).ok_or(ClientError::Refused { code: ErrorCode::NotAllowed, message: "no such group".into() })?;
        // Pages of two entries, so that the client has to ask again.
        let entries: Vec<Payload> = log.iter().skip(from as usize).take(2).cloned().map(Payload).collect();
        Ok(GroupEntries { reference: None, group: *group, head: log.len().saturating_sub(1) as u64, entries })
    }

    async fn append(&mut self, group: &GroupId, entry: Vec<u8>) -> Result<(), ClientError> {
        let seq = MembershipEntry::decode(&entry).map_err(|e| ClientError::Protocol(e.to_string()))?.seq;
        let log = self.relay.logs.entry(*group).or_default();
        if seq != log.len() as u64 {
            return Err(ClientError::Refused { code: ErrorCode::GroupConflict, message: "the log moved on".into() });
        }
        log.push(entry);
        Ok(())
    }

    async fn send_now(&mut self, _to: &str, id: &str, payloads: Vec<DevicePayload>) -> Result<(), ClientError> {
        for p in payloads {
            let mail = Mail { from: self.user.clone(), from_device: self.device.clone(), id: id.to_owned(), data: p.data.0 };
            self.relay.mail.entry(p.device).or_default().push(mail);
        }
        Ok(())
    }
}

impl Relay {
    fn link(&mut self, party: &Party) -> Link<'_> {
        Link { relay: self, user: party.user.clone(), device: party.device.clone() }
    }
}

fn groups(party: &Party) -> Groups<'_, imfree_client_core::store::MemoryStore> {
    Groups::new(&party.user, &party.device, &party.keys, &party.store)
}

/// The users and devices of these tests: alice (a1, a2), bob (b1, b2), carol (c1).
struct World {
    relay: Relay,
    a1: Party,
    a2: Party,
    b1: Party,
    b2: Party,
    c1: Party,
}

fn world() -> World {
    let mut relay = Relay::default();
    let a1 = relay.keys.first_device("alice", "a1");
    let a2 = relay.keys.linked_device("alice", "a2", a1.identity(), a1.certificate_id() + 1);
    let b1 = relay.keys.first_device("bob", "b1");
    let b2 = relay.keys.linked_device("bob", "b2", b1.identity(), b1.certificate_id() + 1);
    let c1 = relay.keys.first_device("carol", "c1");
    World { relay, a1, a2, b1, b2, c1 }
}

fn create(relay: &mut Relay, party: &Party) -> GroupId {
    let mut g = groups(party);
    block_on(g.create(&mut relay.link(party), "friends", NOW_MS)).expect("group created")
}

/// `party` makes a change; the update goes pairwise to everyone told and to the party's other devices.
fn change(relay: &mut Relay, party: &Party, group: &GroupId, op: MembershipOp, subject: Member) -> Result<(), ClientError> {
    let mut g = groups(party);
    let data = Vec::new();
    let changed = block_on(g.change(&mut relay.link(party), group, op, subject, &move |_, _| data.clone(), None, NOW_MS))?;
    let MembershipChanged { update, told } = changed;
    let content = update.content().encode();
    for user in told.iter().map(String::as_str).chain([party.user.as_str()]) {
        let id = groups::new_id(NOW_MS);
        let payloads = block_on(party.pairwise().encrypt_for(&mut relay.link(party), user, &id, &content))?;
        block_on(relay.link(party).send_now(user, &id, payloads))?;
    }
    Ok(())
}

fn member(party: &Party) -> Member {
    Member { user: party.user.clone(), identity_key: party.identity().public_key() }
}

/// `party` handles its pairwise deliveries: updates and sender keys go to the group machine. Returns its events.
fn pump(relay: &mut Relay, party: &Party) -> Vec<GroupEvent> {
    let mut g = groups(party);
    let mail = relay.mail.remove(&party.device).unwrap_or_default();
    for m in mail {
        let opened = block_on(party.pairwise().open(&m.from, &m.from_device, &m.id, &m.data)).expect("the store works");
        let Opened::Trusted { inner, peer } = opened else { panic!("{}: a pairwise message from {} did not open", party.device, m.from) };
        let content = Content::decode(&inner.body).expect("a content document");
        let body = content.body_bytes(&Limits::default()).expect("a body");
        let mut link = relay.link(party);
        match content.mime.as_str() {
            UPDATE_MIME => block_on(g.receive_update(&mut link, &m.from, &body)).expect("update handled"),
            SENDER_KEY_MIME => block_on(g.receive_sender_key(&mut link, &m.from, peer.user_identity, peer.device_id, &body)).expect("key handled"),
            other => panic!("unexpected {other}"),
        }
    }
    g.take_events()
}

/// `party` posts `text`: the envelope id and the ciphertext the relay fans out.
fn post(relay: &mut Relay, party: &Party, group: &GroupId, text: &str) -> Result<(String, Vec<u8>), ClientError> {
    let id = groups::new_id(NOW_MS);
    let content = Content::new("text/plain", text.as_bytes(), None).encode();
    let data = block_on(groups(party).encrypt(&mut relay.link(party), group, &id, &content, NOW_MS))?;
    Ok((id, data))
}

/// What `party` reads of a group delivery from `from`: the text, or why not.
fn read(relay: &mut Relay, party: &Party, group: &GroupId, from: &str, message: &(String, Vec<u8>)) -> Result<String, String> {
    let opened = block_on(groups(party).open(&mut relay.link(party), group, from, &message.0, &message.1)).expect("store and relay work");
    match opened {
        GroupOpened::Message(inner) => {
            let content = Content::decode(&inner.body).map_err(|e| e.to_string())?;
            Ok(String::from_utf8(content.body_bytes(&Limits::default()).map_err(|e| e.to_string())?).unwrap())
        }
        GroupOpened::Unreadable(reason) => Err(reason),
    }
}

fn status(party: &Party, group: &GroupId) -> String {
    block_on(groups::load(&party.store, group)).unwrap().map(|g| g.status).unwrap_or_else(|| "unknown".into())
}

/// Create, add, remove and leave with three users on five devices: everyone in the verified log reads, every device
/// of theirs; whoever was removed or left reads nothing sent afterwards.
#[test]
fn members_on_every_device_read_and_those_who_left_do_not() {
    let World { mut relay, a1, a2, b1, b2, c1 } = world();
    let r = &mut relay;
    let group = create(r, &a1);
    change(r, &a1, &group, MembershipOp::Add, member(&b1)).unwrap();
    change(r, &a1, &group, MembershipOp::Add, member(&c1)).unwrap();
    for p in [&a2, &b1, &b2, &c1] {
        let events = pump(r, p);
        assert!(events.iter().any(|e| matches!(e, GroupEvent::Change { text, .. } if text == "alice added carol")), "{}: {events:?}", p.device);
        assert_eq!(status(p, &group), ACTIVE, "{} follows the group", p.device);
    }
    let info = block_on(groups::load(&b2.store, &group)).unwrap().unwrap().info();
    assert_eq!(info.members, [("alice".to_owned(), true), ("bob".to_owned(), false), ("carol".to_owned(), false)]);
    assert_eq!(info.head_seq, 2);

    let m1 = post(r, &a1, &group, "hello all").unwrap();
    for p in [&a2, &b1, &b2, &c1] {
        pump(r, p);
        assert_eq!(read(r, p, &group, "alice", &m1).as_deref(), Ok("hello all"), "{} reads alice", p.device);
    }
    let m2 = post(r, &b2, &group, "bob here").unwrap();
    for p in [&a1, &a2, &b1, &c1] {
        pump(r, p);
        assert_eq!(read(r, p, &group, "bob", &m2).as_deref(), Ok("bob here"), "{} reads bob's second device", p.device);
    }

    // Carol is removed: she is told, follows, and reads nothing sent from then on by anyone — not even with the
    // sender keys she held before (a client that ignores its removal): every member starts a new chain.
    let carol_before = block_on(groups::load(&c1.store, &group)).unwrap().unwrap();
    change(r, &a1, &group, MembershipOp::Remove, member(&c1)).unwrap();
    for p in [&a2, &b1, &b2, &c1] {
        pump(r, p);
    }
    assert_eq!(status(&c1, &group), LEFT);
    let m3 = post(r, &a1, &group, "without carol").unwrap();
    let m4 = post(r, &b1, &group, "bob without carol").unwrap();
    for p in [&a2, &b1, &b2, &c1] {
        pump(r, p);
    }
    assert!(read(r, &c1, &group, "alice", &m3).is_err(), "a removed member cannot read alice's later message");
    assert!(read(r, &c1, &group, "bob", &m4).is_err(), "nor bob's");
    let state_now = block_on(groups::load(&a1.store, &group)).unwrap().unwrap().state;
    let mut kept = carol_before.session.expect("carol had a session");
    for m in [&m3, &m4] {
        let message = GroupMessage::from_bytes(&m.1).unwrap();
        assert!(kept.decrypt(&state_now, &message).is_err(), "the chains carol kept do not open what came after her removal");
    }
    assert_eq!(read(r, &b2, &group, "alice", &m3).as_deref(), Ok("without carol"));
    assert_eq!(read(r, &a2, &group, "bob", &m4).as_deref(), Ok("bob without carol"));
    assert!(matches!(post(r, &c1, &group, "still here?"), Err(ClientError::Config(_))), "a removed member cannot post");

    // Bob leaves on his own: alice's next message does not reach either of his devices.
    change(r, &b1, &group, MembershipOp::Leave, member(&b1)).unwrap();
    for p in [&a1, &a2, &b2] {
        pump(r, p);
    }
    assert_eq!(status(&b2, &group), LEFT, "bob's other device follows his leaving");
    let m5 = post(r, &a1, &group, "alone now").unwrap();
    for p in [&a2, &b1, &b2] {
        pump(r, p);
    }
    assert!(read(r, &b1, &group, "alice", &m5).is_err());
    assert!(read(r, &b2, &group, "alice", &m5).is_err());
    assert_eq!(read(r, &a2, &group, "alice", &m5).as_deref(), Ok("alone now"));

    // Only an admin may remove: bob, a member again, may not remove alice.
    change(r, &a1, &group, MembershipOp::Add, member(&b1)).unwrap();
    pump(r, &b1);
    match change(r, &b1, &group, MembershipOp::Remove, member(&a1)) {
        Err(ClientError::Config(reason)) => assert!(reason.contains("role"), "{reason}"),
        other => panic!("a member removed the admin: {other:?}"),
    }
}

/// A member added later receives chains at their current position: what was sent before stays unreadable to it.
#[test]
fn an_added_member_cannot_read_earlier_messages() {
    let World { mut relay, a1, b1, c1, .. } = world();
    let r = &mut relay;
    let group = create(r, &a1);
    change(r, &a1, &group, MembershipOp::Add, member(&b1)).unwrap();
    pump(r, &b1);
    let before = post(r, &a1, &group, "before carol").unwrap();
    pump(r, &b1);
    assert_eq!(read(r, &b1, &group, "alice", &before).as_deref(), Ok("before carol"));

    change(r, &a1, &group, MembershipOp::Add, member(&c1)).unwrap();
    pump(r, &c1);
    let after = post(r, &a1, &group, "after carol").unwrap();
    pump(r, &c1);
    assert!(read(r, &c1, &group, "alice", &before).is_err(), "the new member cannot read what came before");
    assert_eq!(read(r, &c1, &group, "alice", &after).as_deref(), Ok("after carol"));
}

/// A device that had this device's chain and is no longer listed (revoked) gets no new chain: the sender starts
/// one without it.
#[test]
fn a_device_no_longer_listed_cannot_read_what_follows() {
    let World { mut relay, a1, b1, b2, .. } = world();
    let r = &mut relay;
    let group = create(r, &a1);
    change(r, &a1, &group, MembershipOp::Add, member(&b1)).unwrap();
    pump(r, &b1);
    pump(r, &b2);
    let first = post(r, &a1, &group, "first").unwrap();
    pump(r, &b2);
    assert_eq!(read(r, &b2, &group, "alice", &first).as_deref(), Ok("first"));

    r.keys.devices.get_mut("bob").unwrap().retain(|(d, _)| d != "b2");
    let second = post(r, &a1, &group, "second").unwrap();
    pump(r, &b1);
    pump(r, &b2);
    assert_eq!(read(r, &b1, &group, "alice", &second).as_deref(), Ok("second"));
    let refused = read(r, &b2, &group, "alice", &second).unwrap_err();
    assert!(refused.contains("sender key"), "{refused}");
}

/// An entry the relay adds without an admin's signature — a ghost member — is refused and the group with it; the
/// ghost gets no sender key. An entry with a broken signature is refused too.
#[test]
fn a_forged_or_unsigned_entry_is_refused() {
    let World { mut relay, a1, b1, c1, .. } = world();
    let r = &mut relay;
    let group = create(r, &a1);
    change(r, &a1, &group, MembershipOp::Add, member(&b1)).unwrap();
    pump(r, &b1);

    // The ghost signs its own addition: carol's identity is not an admin's.
    let state: GroupState = block_on(groups::load(&a1.store, &group)).unwrap().unwrap().state;
    let forged = state.next_entry(&c1.identity(), MembershipOp::Add, member(&c1), NOW_MS);
    r.logs.get_mut(&group).unwrap().push(forged.encode());
    let mut g = groups(&b1);
    let err = block_on(g.sync_log(&mut r.link(&b1), &group)).unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(status(&b1, &group).starts_with("refused: "), "{}", status(&b1, &group));
    assert!(matches!(g.take_events().as_slice(), [GroupEvent::Refused { .. }]));
    assert!(post(r, &a1, &group, "to the ghost?").is_err(), "alice refuses to send on a log that does not verify");
    assert!(r.mail.get("c1").is_none_or(Vec::is_empty), "the ghost received nothing");

    // An admin's entry with its signature broken.
    let group2 = create(r, &a1);
    change(r, &a1, &group2, MembershipOp::Add, member(&b1)).unwrap();
    pump(r, &b1);
    let state: GroupState = block_on(groups::load(&a1.store, &group2)).unwrap().unwrap().state;
    let mut unsigned = state.next_entry(&a1.identity(), MembershipOp::Add, member(&c1), NOW_MS);
    unsigned.signature = [0u8; 64];
    r.logs.get_mut(&group2).unwrap().push(unsigned.encode());
    assert!(block_on(groups(&b1).sync_log(&mut r.link(&b1), &group2)).is_err());
    let g2 = block_on(groups::load(&b1.store, &group2)).unwrap().unwrap();
    assert!(!g2.state.is_member(&c1.identity().public_key()), "the unsigned entry was not applied");
}

/// A relay that rolls the log back (drops an entry a member saw) or forks it (serves another entry where one was
/// seen) is caught, whether the member syncs on its own or follows an update that names the hidden head.
#[test]
fn a_fork_or_a_rollback_of_the_log_is_refused() {
    let World { mut relay, a1, b1, b2, c1, .. } = world();
    let r = &mut relay;
    let group = create(r, &a1);
    change(r, &a1, &group, MembershipOp::Add, member(&b1)).unwrap();
    pump(r, &b1);
    pump(r, &b2);

    // Rollback seen on a sync: b1 knows seq 1; the relay serves only seq 0.
    r.logs.get_mut(&group).unwrap().truncate(1);
    let err = block_on(groups(&b1).sync_log(&mut r.link(&b1), &group)).unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");

    // Rollback hidden behind an update: carol's addition reaches the members, the relay then drops it.
    let group = create(r, &a1);
    change(r, &a1, &group, MembershipOp::Add, member(&b1)).unwrap();
    pump(r, &b1);
    pump(r, &b2);
    change(r, &a1, &group, MembershipOp::Add, member(&c1)).unwrap();
    r.logs.get_mut(&group).unwrap().truncate(2);
    let events = pump(r, &b2);
    assert!(status(&b2, &group).starts_with("refused: "), "{}", status(&b2, &group));
    assert!(events.iter().any(|e| matches!(e, GroupEvent::Refused { .. })), "{events:?}");

    // Fork: b1 saw seq 2 (carol added); the relay swaps in another admin-signed seq 2 (carol removed... never
    // added: alice's own entry for a different change).
    let group = create(r, &a1);
    change(r, &a1, &group, MembershipOp::Add, member(&b1)).unwrap();
    change(r, &a1, &group, MembershipOp::Add, member(&c1)).unwrap();
    pump(r, &b1);
    assert_eq!(status(&b1, &group), ACTIVE);
    let log = r.logs.get_mut(&group).unwrap();
    let entries: Vec<MembershipEntry> = log.iter().map(|e| MembershipEntry::decode(e).unwrap()).collect();
    let at_one = GroupState::replay(&entries[..2], None).unwrap();
    let other = at_one.next_entry(&a1.identity(), MembershipOp::Promote, member(&b1), NOW_MS + 1);
    log[2] = other.encode();
    let err = block_on(groups(&b1).sync_log(&mut r.link(&b1), &group)).unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    let reason = status(&b1, &group);
    assert!(reason.contains("fork"), "{reason}");
}

/// A flipped byte anywhere in a group message, a rewritten envelope id, or a relay that labels the message as
/// another member's: not shown, and nothing changes — the untouched message still opens.
#[test]
fn flipped_bytes_and_relabelled_messages_are_refused() {
    let World { mut relay, a1, b1, c1, .. } = world();
    let r = &mut relay;
    let group = create(r, &a1);
    change(r, &a1, &group, MembershipOp::Add, member(&b1)).unwrap();
    change(r, &a1, &group, MembershipOp::Add, member(&c1)).unwrap();
    pump(r, &b1);
    pump(r, &c1);
    let (id, data) = post(r, &a1, &group, "integrity").unwrap();
    pump(r, &b1);
    for i in 0..data.len() {
        let mut flipped = data.clone();
        flipped[i] ^= 0x01;
        assert!(read(r, &b1, &group, "alice", &(id.clone(), flipped)).is_err(), "byte {i} of {} flipped", data.len());
    }
    let relabelled = read(r, &b1, &group, "carol", &(id.clone(), data.clone())).unwrap_err();
    assert!(relabelled.contains("not that member"), "{relabelled}");
    assert_eq!(read(r, &b1, &group, "alice", &(id.clone(), data.clone())).as_deref(), Ok("integrity"), "nothing changed");
    assert!(read(r, &b1, &group, "alice", &(id, data)).is_err(), "a replay does not open twice");

    // A rewritten envelope id: the authenticated id inside differs.
    let (_, second) = post(r, &a1, &group, "second").unwrap();
    let rewritten = read(r, &b1, &group, "alice", &(groups::new_id(NOW_MS + 5), second)).unwrap_err();
    assert!(rewritten.contains("envelope id"), "{rewritten}");
    let third = post(r, &a1, &group, "third").unwrap();
    assert_eq!(read(r, &b1, &group, "alice", &third).as_deref(), Ok("third"));
}
