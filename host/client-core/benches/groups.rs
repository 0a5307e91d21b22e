//! What the client core's group machine costs per message, over `MemoryStore` and a relay in memory (no network):
//! `Groups::encrypt` (the log synced, every member's device list checked, the record read and written, the message
//! encrypted and signed) and `Groups::open` (the record read, the signature verified, the message decrypted, the
//! record written), for groups of 2 and 20 members with one device each. The crypto alone is in
//! host/crypto/benches/e2e.rs ("group message").
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_executor::block_on;
use imfree_client_core::ClientError;
use imfree_client_core::device::{DeviceE2e, DeviceSlot};
use imfree_client_core::directory::KeyDirectory;
use imfree_client_core::groups::{self, GroupOpened, GroupRelay, Groups, SENDER_KEY_MIME};
use imfree_client_core::pairwise::{Opened, Pairwise};
use imfree_client_core::store::MemoryStore;
use imfree_crypto::device::DeviceKeys;
use imfree_crypto::membership::{Member, MembershipOp};
use imfree_crypto::prekeys::{KemPrekeyKind, KeyUpload, PrekeyBundle};
use imfree_proto::content::Content;
use imfree_proto::{DeviceBundle, DeviceEntry, DevicePayload, GroupEntries, GroupId, InviteProof, KeysDeviceList, Limits, Payload};

const NOW: u64 = 1_800_000_000;
const NOW_MS: u64 = NOW * 1000;

struct Party {
    user: String,
    keys: DeviceSlot,
    store: MemoryStore,
}

impl Party {
    fn groups(&self) -> Groups<'_, MemoryStore> {
        Groups::new(&self.user, &self.user, &self.keys, &self.store)
    }

    fn pairwise(&self) -> Pairwise<'_, MemoryStore> {
        Pairwise { user: &self.user, device: &self.user, keys: &self.keys, store: &self.store }
    }

    fn member(&self) -> Member {
        Member { user: self.user.clone(), identity_key: self.keys.with(|e| Ok(e.identity_key())).unwrap() }
    }
}

/// Key service, group logs and pairwise mail; each user has one device named like the user.
#[derive(Default)]
struct Relay {
    uploads: BTreeMap<String, KeyUpload>,
    logs: BTreeMap<GroupId, Vec<Vec<u8>>>,
    mail: BTreeMap<String, Vec<(String, String, Vec<u8>)>>,
    me: String,
}

impl Relay {
    fn party(&mut self, user: &str) -> Party {
        let mut state = DeviceE2e::create(DeviceKeys::generate(), NOW);
        self.uploads.insert(user.into(), state.first_upload(b"challenge", NOW));
        Party { user: user.into(), keys: DeviceSlot::new(Some(state)), store: MemoryStore::default() }
    }

    fn as_(&mut self, party: &Party) -> &mut Self {
        self.me = party.user.clone();
        self
    }
}

impl KeyDirectory for Relay {
    async fn device_list(&mut self, user: &str) -> Result<KeysDeviceList, ClientError> {
        let devices = self
            .uploads
            .get(user)
            .map(|u| vec![DeviceEntry { device: user.into(), certificate: serde_json::to_value(&u.certificate).unwrap(), name: None }])
            .unwrap_or_default();
        Ok(KeysDeviceList { reference: None, user: user.into(), devices, revocation: None })
    }

    async fn claim_bundles(&mut self, user: &str, _devices: Vec<String>) -> Result<Vec<DeviceBundle>, ClientError> {
        let upload = self.uploads.get_mut(user).unwrap();
        let bundle = PrekeyBundle {
            certificate: upload.certificate.clone(),
            signed_prekey: upload.signed_prekey.clone().unwrap(),
            one_time_prekey: Some(upload.one_time_prekeys.remove(0)),
            kem_prekey: upload.kem_prekeys.iter().find(|k| k.kind == KemPrekeyKind::OneTime).cloned().unwrap(),
        };
        Ok(vec![DeviceBundle { device: user.into(), bundle: serde_json::to_value(&bundle).unwrap() }])
    }
}

impl GroupRelay for Relay {
    async fn log_page(&mut self, group: &GroupId, from: u64, _invite: Option<InviteProof>) -> Result<GroupEntries, ClientError> {
        let log = &self.logs[group];
        let entries = log.iter().skip(from as usize).cloned().map(Payload).collect();
        Ok(GroupEntries { reference: None, group: *group, head: log.len() as u64 - 1, entries })
    }

    async fn append(&mut self, group: &GroupId, entry: Vec<u8>) -> Result<(), ClientError> {
        self.logs.entry(*group).or_default().push(entry);
        Ok(())
    }

    async fn send_now(&mut self, _to: &str, id: &str, payloads: Vec<DevicePayload>) -> Result<(), ClientError> {
        for p in payloads {
            self.mail.entry(p.device).or_default().push((self.me.clone(), id.to_owned(), p.data.0));
        }
        Ok(())
    }
}

/// A group of `n` members, everyone holding the sender key of the first (alice).
fn group_of(n: usize) -> (Relay, Vec<Party>, GroupId) {
    let mut relay = Relay::default();
    let parties: Vec<Party> = (0..n).map(|i| relay.party(&format!("user{i}"))).collect();
    let alice = &parties[0];
    let group = block_on(alice.groups().create(relay.as_(alice), "bench", NOW_MS)).unwrap();
    for p in &parties[1..] {
        let data = Vec::new();
        block_on(alice.groups().change(relay.as_(alice), &group, MembershipOp::Add, p.member(), &move |_, _| data.clone(), None, NOW_MS)).unwrap();
    }
    // The first message hands alice's sender key to everyone.
    post(&mut relay, alice, &group);
    for p in &parties[1..] {
        for (from, id, data) in relay.mail.remove(&p.user).unwrap_or_default() {
            let Opened::Trusted { inner, peer } = block_on(p.pairwise().open(&from, &from, &id, &data)).unwrap() else { panic!() };
            let content = Content::decode(&inner.body).unwrap();
            assert_eq!(content.mime, SENDER_KEY_MIME);
            let body = content.body_bytes(&Limits::default()).unwrap();
            block_on(p.groups().receive_sender_key(relay.as_(p), &from, peer.user_identity, peer.device_id, &body)).unwrap();
        }
    }
    (relay, parties, group)
}

fn post(relay: &mut Relay, party: &Party, group: &GroupId) -> (String, Vec<u8>) {
    let id = groups::new_id(NOW_MS);
    let content = Content::new("text/plain", &[0x61; 100], None).encode();
    let data = block_on(party.groups().encrypt(relay.as_(party), group, &id, &content, NOW_MS)).unwrap();
    (id, data)
}

fn bench(c: &mut Criterion) {
    for n in [2, 20] {
        let (mut relay, parties, group) = group_of(n);
        let alice = &parties[0];
        c.bench_function(&format!("group encrypt, {n} members, 100 B"), |b| b.iter(|| black_box(post(&mut relay, alice, &group))));
        // A fresh group: bob's chain of alice's must not be thousands of messages behind (the jump is capped).
        let (relay, parties, group) = group_of(n);
        let (alice, bob) = (&parties[0], &parties[1]);
        let relay = std::cell::RefCell::new(relay);
        c.bench_function(&format!("group open, {n} members, 100 B"), |b| {
            b.iter_batched(
                || post(&mut relay.borrow_mut(), alice, &group),
                |(id, data)| {
                    let mut relay = relay.borrow_mut();
                    let opened = block_on(bob.groups().open(relay.as_(bob), &group, &alice.user, &id, &data)).unwrap();
                    assert!(matches!(opened, GroupOpened::Message(_)), "{opened:?}");
                },
                BatchSize::SmallInput,
            )
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
