use std::collections::BTreeMap;

use futures_executor::block_on;
use imfree_client_core::ClientError;
use imfree_client_core::device::{DeviceE2e, DeviceSlot};
use imfree_client_core::directory::KeyDirectory;
use imfree_client_core::pairwise::{Opened, Pairwise};
use imfree_client_core::store::{KeyStore, MemoryStore};
use imfree_crypto::device::DeviceKeys;
use imfree_crypto::identity::UserIdentity;
use imfree_crypto::prekeys::{KemPrekeyKind, KeyUpload, PrekeyBundle};
use imfree_crypto::revocation::RevocationList;
use imfree_proto::{DeviceBundle, DeviceEntry, DevicePayload, KeysDeviceList, Payload};

const NOW: u64 = 1_800_000_000;

/// One device of a user: its state slot and its store.
pub(crate) struct Party {
    pub(crate) user: String,
    pub(crate) device: String,
    pub(crate) keys: DeviceSlot,
    pub(crate) store: MemoryStore,
}

impl Party {
    pub(crate) fn pairwise(&self) -> Pairwise<'_, MemoryStore> {
        Pairwise { user: &self.user, device: &self.device, keys: &self.keys, store: &self.store }
    }

    pub(crate) fn identity(&self) -> UserIdentity {
        self.keys.with(|e| Ok(UserIdentity::from_seed(&e.identity().expect("holds the identity").seed()))).unwrap()
    }

    pub(crate) fn certificate_id(&self) -> u32 {
        self.keys.certificate().unwrap().device_id
    }
}

/// What the relay's key service holds: per user, per device, the certificate and the uploaded prekeys; and the
/// newest revocation list. `tamper` rewrites what it serves.
#[derive(Default)]
pub(crate) struct Directory {
    pub(crate) devices: BTreeMap<String, Vec<(String, KeyUpload)>>,
    revocation: BTreeMap<String, Vec<u8>>,
    claims: usize,
    swap_bundle_of: Option<String>,
}

impl Directory {
    /// A user's first device: makes the identity and uploads its keys.
    pub(crate) fn first_device(&mut self, user: &str, device: &str) -> Party {
        let mut state = DeviceE2e::create(DeviceKeys::generate(), NOW);
        self.publish(user, device, &mut state);
        Party { user: user.into(), device: device.into(), keys: DeviceSlot::new(Some(state)), store: MemoryStore::default() }
    }

    /// Another device certified by `identity` (linking's outcome), its keys uploaded.
    pub(crate) fn linked_device(&mut self, user: &str, device: &str, identity: UserIdentity, certificate_id: u32) -> Party {
        let keys = DeviceKeys::generate();
        let certificate = identity.certify_device(certificate_id, &keys, NOW);
        let mut state = DeviceE2e::linked(keys, identity, certificate);
        self.publish(user, device, &mut state);
        Party { user: user.into(), device: device.into(), keys: DeviceSlot::new(Some(state)), store: MemoryStore::default() }
    }

    fn publish(&mut self, user: &str, device: &str, state: &mut DeviceE2e) {
        let upload = state.first_upload(b"challenge", NOW);
        upload.verify(b"challenge").expect("an upload the relay accepts");
        let devices = self.devices.entry(user.into()).or_default();
        devices.retain(|(d, _)| d != device);
        devices.push((device.into(), upload));
    }
}

impl KeyDirectory for Directory {
    async fn device_list(&mut self, user: &str) -> Result<KeysDeviceList, ClientError> {
        let devices = self
            .devices
            .get(user)
            .map(|ds| {
                ds.iter()
                    .map(|(device, upload)| DeviceEntry {
                        device: device.clone(),
                        certificate: serde_json::to_value(&upload.certificate).unwrap(),
                        name: None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(KeysDeviceList { reference: None, user: user.into(), devices, revocation: self.revocation.get(user).cloned().map(Payload) })
    }

    async fn claim_bundles(&mut self, user: &str, devices: Vec<String>) -> Result<Vec<DeviceBundle>, ClientError> {
        self.claims += 1;
        let swap = self.swap_bundle_of.as_deref() == Some(user);
        let stranger = swap.then(|| {
            let mut other = DeviceE2e::create(DeviceKeys::generate(), NOW);
            other.first_upload(b"challenge", NOW)
        });
        let mut out = Vec::new();
        for (device, upload) in self.devices.get_mut(user).into_iter().flatten() {
            if !devices.contains(device) {
                continue;
            }
            let upload = stranger.as_ref().unwrap_or(upload);
            let bundle = PrekeyBundle {
                certificate: upload.certificate.clone(),
                signed_prekey: upload.signed_prekey.clone().expect("a signed prekey"),
                one_time_prekey: upload.one_time_prekeys.first().cloned(),
                kem_prekey: upload.kem_prekeys.iter().find(|k| k.kind == KemPrekeyKind::OneTime).cloned().expect("a KEM prekey"),
            };
            out.push(DeviceBundle { device: device.clone(), bundle: serde_json::to_value(&bundle).unwrap() });
        }
        // Each one-time prekey is handed out once.
        for (device, upload) in self.devices.get_mut(user).into_iter().flatten() {
            if devices.contains(device) && !swap {
                upload.one_time_prekeys.remove(0);
                let i = upload.kem_prekeys.iter().position(|k| k.kind == KemPrekeyKind::OneTime).unwrap();
                upload.kem_prekeys.remove(i);
            }
        }
        Ok(out)
    }
}

fn ulid(n: u8) -> String {
    // A fixed, valid ULID per message: 26 Crockford base-32 digits.
    format!("01J{:0>23}", n)
}

fn payload_for<'a>(payloads: &'a [DevicePayload], device: &str) -> &'a [u8] {
    &payloads.iter().find(|p| p.device == device).unwrap_or_else(|| panic!("no payload for {device}")).data.0
}

fn open(party: &Party, from: &Party, id: &str, data: &[u8]) -> Opened {
    block_on(party.pairwise().open(&from.user, &from.device, id, data)).expect("the store works")
}

/// A message reaches every device of the recipient and the sender's other devices, each opens it exactly once, and
/// the next message goes on the sessions made by the first (no second claim).
#[test]
fn a_message_reaches_every_device_once_and_sessions_are_reused() {
    let mut dir = Directory::default();
    let alice = dir.first_device("alice", "a1");
    let alice2 = dir.linked_device("alice", "a2", alice.identity(), alice.certificate_id() + 1);
    let bob = dir.first_device("bob", "b1");
    let bob2 = dir.linked_device("bob", "b2", bob.identity(), bob.certificate_id() + 1);

    let id = ulid(1);
    let payloads = block_on(alice.pairwise().encrypt_for(&mut dir, "bob", &id, b"hello bob")).unwrap();
    let mut devices: Vec<&str> = payloads.iter().map(|p| p.device.as_str()).collect();
    devices.sort();
    assert_eq!(devices, ["a2", "b1", "b2"], "bob's devices and alice's other device, not the sending one");
    assert_eq!(dir.claims, 2, "one claim per user");

    for (reader, device) in [(&bob, "b1"), (&bob2, "b2"), (&alice2, "a2")] {
        let Opened::Trusted { inner, peer } = open(reader, &alice, &id, payload_for(&payloads, device)) else {
            panic!("{device} reads alice's message");
        };
        assert_eq!(inner.body, b"hello bob");
        assert_eq!(peer.user_identity, alice.identity().public_key());
        // The same payload again (a relay replaying it, first message or not) does not open a second time.
        assert!(matches!(open(reader, &alice, &id, payload_for(&payloads, device)), Opened::Unreadable(_)), "{device}: replay refused");
    }

    let second = block_on(alice.pairwise().encrypt_for(&mut dir, "bob", &ulid(2), b"again")).unwrap();
    assert_eq!(dir.claims, 2, "existing sessions are used, no new bundle is claimed");
    let Opened::Trusted { inner, .. } = open(&bob, &alice, &ulid(2), payload_for(&second, "b1")) else { panic!("bob reads the second") };
    assert_eq!((inner.body.as_slice(), inner.sequence), (&b"again"[..], 2));

    // Bob answers on the session alice started: no claim for alice's devices.
    let answer = block_on(bob.pairwise().encrypt_for(&mut dir, "alice", &ulid(3), b"hi alice")).unwrap();
    assert!(matches!(open(&alice, &bob, &ulid(3), payload_for(&answer, "a1")), Opened::Trusted { .. }));
}

/// A relay that rewrites the envelope id is caught by the authenticated id inside; a flipped byte does not open and
/// leaves the session as it was, so the untouched message still opens.
#[test]
fn a_rewritten_id_or_a_flipped_byte_does_not_open_and_changes_nothing() {
    let mut dir = Directory::default();
    let alice = dir.first_device("alice", "a1");
    let bob = dir.first_device("bob", "b1");
    let payloads = block_on(alice.pairwise().encrypt_for(&mut dir, "bob", &ulid(1), b"one")).unwrap();
    let data = payload_for(&payloads, "b1").to_vec();

    for i in (0..data.len()).step_by(97) {
        let mut flipped = data.clone();
        flipped[i] ^= 0x01;
        assert!(matches!(open(&bob, &alice, &ulid(1), &flipped), Opened::Unreadable(_)), "byte {i} flipped");
    }
    assert!(block_on(bob.store.session("alice", "a1")).unwrap().is_none(), "nothing stored for a message that did not open");
    match open(&bob, &alice, &ulid(9), &data) {
        Opened::Unreadable(reason) => assert!(reason.contains("envelope id"), "{reason}"),
        other => panic!("a rewritten envelope id must not open: {other:?}"),
    }
    // That message was consumed (the session advanced) but nothing of it was shown; a later one opens.
    let next = block_on(alice.pairwise().encrypt_for(&mut dir, "bob", &ulid(2), b"two")).unwrap();
    assert!(matches!(open(&bob, &alice, &ulid(2), payload_for(&next, "b1")), Opened::Trusted { .. }));
}

/// A contact's identity key that changes is pinned-against: sending is refused with `IdentityChanged` (the caller
/// holds the message), a message from the new identity opens marked and leaves no session, and after the user
/// accepts the change both work.
#[test]
fn a_changed_identity_holds_messages_until_accepted() {
    let mut dir = Directory::default();
    let alice = dir.first_device("alice", "a1");
    let bob = dir.first_device("bob", "b1");
    block_on(alice.pairwise().encrypt_for(&mut dir, "bob", &ulid(1), b"first")).unwrap();
    let pinned = block_on(alice.store.pinned_identity("bob")).unwrap().expect("pinned on first sight");
    assert_eq!(pinned, bob.identity().public_key());

    // Bob "reinstalls": a new identity on a new device; the relay now lists only that one.
    dir.devices.remove("bob");
    let new_bob = dir.first_device("bob", "b9");
    let refused = block_on(alice.pairwise().encrypt_for(&mut dir, "bob", &ulid(2), b"held"));
    assert!(matches!(refused, Err(ClientError::IdentityChanged { ref user }) if user == "bob"), "{refused:?}");
    assert_eq!(alice.store.identity_change("bob"), Some(new_bob.identity().public_key()));

    let from_new = block_on(new_bob.pairwise().encrypt_for(&mut dir, "alice", &ulid(3), b"it's me")).unwrap();
    let Opened::IdentityChanged { inner } = open(&alice, &new_bob, &ulid(3), payload_for(&from_new, "a1")) else {
        panic!("a message from a changed identity opens marked");
    };
    assert_eq!(inner.body, b"it's me");
    assert!(block_on(alice.store.session("bob", "b9")).unwrap().is_none(), "no session kept with an unaccepted identity");

    alice.store.accept_identity_change("bob").unwrap();
    let sent = block_on(alice.pairwise().encrypt_for(&mut dir, "bob", &ulid(4), b"welcome back")).unwrap();
    assert!(matches!(open(&new_bob, &alice, &ulid(4), payload_for(&sent, "b9")), Opened::Trusted { .. }));
}

/// What a hostile key service can try: devices certified by two identities, a bundle swapped for a stranger's, a
/// revoked device brought back with an older revocation list. Each is refused and nothing is encrypted.
#[test]
fn a_hostile_key_directory_is_refused() {
    let mut dir = Directory::default();
    let alice = dir.first_device("alice", "a1");
    let bob = dir.first_device("bob", "b1");
    let bob2 = dir.linked_device("bob", "b2", bob.identity(), bob.certificate_id() + 1);

    // A stranger's device slipped into bob's list.
    let mallory = dir.first_device("mallory", "m1");
    let ghost = dir.devices["mallory"][0].1.clone();
    dir.devices.get_mut("bob").unwrap().push(("m1".into(), ghost));
    let mixed = block_on(alice.pairwise().encrypt_for(&mut dir, "bob", &ulid(1), b"x"));
    assert!(matches!(mixed, Err(ClientError::E2e(ref m)) if m.contains("different identities")), "{mixed:?}");
    dir.devices.get_mut("bob").unwrap().retain(|(d, _)| d != "m1");
    drop(mallory);

    // A bundle that is not the listed device's.
    dir.swap_bundle_of = Some("bob".into());
    let swapped = block_on(alice.pairwise().encrypt_for(&mut dir, "bob", &ulid(2), b"x"));
    assert!(matches!(swapped, Err(ClientError::E2e(ref m)) if m.contains("does not match")), "{swapped:?}");
    dir.swap_bundle_of = None;

    // Bob revokes b2: alice leaves it out; a relay serving the older (empty) state again cannot bring it back.
    let list = RevocationList::revoke(&bob.identity(), None, bob2.certificate_id(), NOW).unwrap();
    dir.revocation.insert("bob".into(), list.encode());
    let payloads = block_on(alice.pairwise().encrypt_for(&mut dir, "bob", &ulid(3), b"x")).unwrap();
    assert_eq!(payloads.iter().map(|p| p.device.as_str()).collect::<Vec<_>>(), ["b1"], "the revoked device gets nothing");
    dir.revocation.remove("bob");
    let rolled_back = block_on(alice.pairwise().encrypt_for(&mut dir, "bob", &ulid(4), b"x"));
    assert!(matches!(rolled_back, Err(ClientError::E2e(ref m)) if m.contains("revocation list")), "{rolled_back:?}");
}

/// The key store survives a restart: the state written by `persist` loads into an equal device, which goes on
/// reading the sessions it had.
#[test]
fn the_device_state_reloads_from_its_store() {
    let mut dir = Directory::default();
    let alice = dir.first_device("alice", "a1");
    let bob = dir.first_device("bob", "b1");
    block_on(bob.keys.persist(&bob.store, &[])).unwrap();
    let first = block_on(alice.pairwise().encrypt_for(&mut dir, "bob", &ulid(1), b"one")).unwrap();
    assert!(matches!(open(&bob, &alice, &ulid(1), payload_for(&first, "b1")), Opened::Trusted { .. }));

    let keys = bob.keys.with(|e| Ok(DeviceKeys::from_secrets(*e.keys().signing_seed(), *e.keys().static_secret()))).unwrap();
    let reloaded = block_on(DeviceE2e::load(&bob.store, keys)).unwrap().expect("a stored state");
    let bob_again = Party { user: "bob".into(), device: "b1".into(), keys: DeviceSlot::new(Some(reloaded)), store: bob.store };
    assert_eq!(bob_again.keys.certificate(), Some(dir.devices["bob"][0].1.certificate.clone()));
    let second = block_on(alice.pairwise().encrypt_for(&mut dir, "bob", &ulid(2), b"two")).unwrap();
    let Opened::Trusted { inner, .. } = open(&bob_again, &alice, &ulid(2), payload_for(&second, "b1")) else { panic!("reads after reload") };
    assert_eq!(inner.body, b"two");
}
