//! Device linking over an opaque channel: the right code links (identity and certificate arrive and verify), a
//! wrong code fails, a relay in the middle without the code fails on both sides, and with the QR payload even a
//! relay that learnt the code cannot sit in the middle.

use imfree_crypto::device::DeviceKeys;
use imfree_crypto::identity::UserIdentity;
use imfree_crypto::linking::{ExistingDeviceLink, LinkCode, LinkError, NewDeviceLink, agreement_fingerprint};
use rand_core::OsRng;

struct Existing {
    identity: UserIdentity,
    keys: DeviceKeys,
}

fn existing() -> Existing {
    Existing { identity: UserIdentity::generate(&mut OsRng), keys: DeviceKeys::generate() }
}

#[test]
fn correct_code_links_and_transfers_the_identity() {
    let old = existing();
    let code = LinkCode::generate(&mut OsRng);
    // The code travels as text or QR; both parse back.
    let typed = LinkCode::parse(&code.to_text().to_lowercase().replace('-', " ")).unwrap();
    assert_eq!(typed, code);
    assert_eq!(code.to_text().len(), 26 + 5);
    let (scanned, fingerprint) = LinkCode::parse_qr(&code.qr_payload(&old.keys.static_public())).unwrap();
    assert_eq!(scanned, code);
    assert_eq!(fingerprint, agreement_fingerprint(&old.keys.static_public()));
    assert_eq!(typed.rendezvous_id(), code.rendezvous_id());

    let new_keys = DeviceKeys::generate();
    let (new_state, m1) = NewDeviceLink::start(&scanned, Some(fingerprint), &new_keys).unwrap();
    let (old_state, m2) = ExistingDeviceLink::new(&code, &old.keys).unwrap().respond(&m1).unwrap();
    let (new_state, m3) = new_state.read_reply(&m2).unwrap();
    let pending = old_state.read_confirm(&m3).unwrap();
    assert_eq!(pending.signing_key, new_keys.signing_public());
    assert_eq!(pending.agreement_key, new_keys.static_public());
    let (m4, cert) = pending.approve(&old.identity, 2, 1_700_000_000).unwrap();
    let linked = new_state.finish(&m4, &new_keys).unwrap();
    assert_eq!(linked.identity.public_key(), old.identity.public_key());
    assert_eq!(*linked.identity.seed(), *old.identity.seed());
    assert_eq!(linked.certificate, cert);
    linked.certificate.verify().unwrap();
    assert!(!m4.windows(32).any(|w| w == old.identity.seed().as_ref()), "the seed never travels in clear");
}

#[test]
fn wrong_code_fails() {
    let old = existing();
    let code = LinkCode::generate(&mut OsRng);
    let wrong = LinkCode::generate(&mut OsRng);
    let new_keys = DeviceKeys::generate();
    let (new_state, m1) = NewDeviceLink::start(&wrong, None, &new_keys).unwrap();
    let (old_state, m2) = ExistingDeviceLink::new(&code, &old.keys).unwrap().respond(&m1).unwrap();
    // Message 2 is not yet bound to the code (psk3); message 3 is, and the existing device refuses it.
    let (_new_state, m3) = new_state.read_reply(&m2).unwrap();
    assert_eq!(old_state.read_confirm(&m3).err(), Some(LinkError::Handshake));
    // Typos are refused before any handshake.
    assert!(LinkCode::parse("ABCDE").is_err());
    assert!(LinkCode::parse(&format!("0{}", &code.to_text()[1..])).is_err(), "0 is not in the base32 alphabet");
    assert!(LinkCode::parse_qr("imfree-link:AAAA").is_err());
}

#[test]
fn relay_in_the_middle_without_the_code_fails_on_both_sides() {
    let old = existing();
    let code = LinkCode::generate(&mut OsRng);
    let new_keys = DeviceKeys::generate();
    let relay_keys = DeviceKeys::generate();
    let guess = LinkCode::generate(&mut OsRng);

    // The relay answers the new device itself, and talks to the existing device as if it were the new one.
    let (new_state, m1) = NewDeviceLink::start(&code, None, &new_keys).unwrap();
    let (relay_as_old, r2) = ExistingDeviceLink::new(&guess, &relay_keys).unwrap().respond(&m1).unwrap();
    let (relay_as_new, r1) = NewDeviceLink::start(&guess, None, &relay_keys).unwrap();
    let (old_state, m2) = ExistingDeviceLink::new(&code, &old.keys).unwrap().respond(&r1).unwrap();
    // New device ↔ relay: the new device's message 3 does not open at the relay.
    let (_new_waiting, m3) = new_state.read_reply(&r2).unwrap();
    assert_eq!(relay_as_old.read_confirm(&m3).err(), Some(LinkError::Handshake));
    // Relay ↔ existing device: the relay's message 3 is refused; nothing is granted.
    let (_relay_waiting, r3) = relay_as_new.read_reply(&m2).unwrap();
    assert_eq!(old_state.read_confirm(&r3).err(), Some(LinkError::Handshake));
    // Forwarding the new device's own message 3 to the existing device fails too (different handshake).
    let (new_state, m1) = NewDeviceLink::start(&code, None, &new_keys).unwrap();
    let (_relay_as_old, r2) = ExistingDeviceLink::new(&guess, &relay_keys).unwrap().respond(&m1).unwrap();
    let (_, m3) = new_state.read_reply(&r2).unwrap();
    let (old_state, _) = ExistingDeviceLink::new(&code, &old.keys).unwrap().respond(&r1).unwrap();
    assert!(old_state.read_confirm(&m3).is_err());
}

#[test]
fn scanned_fingerprint_stops_a_relay_that_knows_the_code() {
    let old = existing();
    let code = LinkCode::generate(&mut OsRng);
    let (_, fingerprint) = LinkCode::parse_qr(&code.qr_payload(&old.keys.static_public())).unwrap();
    let relay_keys = DeviceKeys::generate();
    let new_keys = DeviceKeys::generate();
    let (new_state, m1) = NewDeviceLink::start(&code, Some(fingerprint), &new_keys).unwrap();
    let (_, r2) = ExistingDeviceLink::new(&code, &relay_keys).unwrap().respond(&m1).unwrap();
    assert_eq!(new_state.read_reply(&r2).err(), Some(LinkError::WrongDevice));
}

#[test]
fn a_grant_for_other_keys_or_altered_is_refused() {
    let old = existing();
    let new_keys = DeviceKeys::generate();
    let run = || {
        let code = LinkCode::generate(&mut OsRng);
        let (new_state, m1) = NewDeviceLink::start(&code, None, &new_keys).unwrap();
        let (old_state, m2) = ExistingDeviceLink::new(&code, &old.keys).unwrap().respond(&m1).unwrap();
        let (new_state, m3) = new_state.read_reply(&m2).unwrap();
        let (m4, _) = old_state.read_confirm(&m3).unwrap().approve(&old.identity, 2, 1).unwrap();
        (new_state, m4)
    };
    // Finishing with keys other than the ones the link started with: the certificate does not name them.
    let (new_state, m4) = run();
    assert!(matches!(new_state.finish(&m4, &DeviceKeys::generate()), Err(LinkError::BadGrant(_))));
    // An altered grant does not decrypt.
    let (new_state, mut m4) = run();
    let last = m4.len() - 1;
    m4[last] ^= 1;
    assert_eq!(new_state.finish(&m4, &new_keys).err(), Some(LinkError::Handshake));
}

#[test]
fn the_new_device_can_show_the_qr_code_and_the_existing_device_checks_it() {
    // imfree's CLI shows the code on the new device; the existing device scans (or types) it and approves.
    let old = existing();
    let new_keys = DeviceKeys::generate();
    let code = LinkCode::generate(&mut OsRng);
    let (scanned, fingerprint) = LinkCode::parse_qr(&code.qr_payload(&new_keys.static_public())).unwrap();
    let (new_state, m1) = NewDeviceLink::start(&code, None, &new_keys).unwrap();
    let (old_state, m2) = ExistingDeviceLink::expecting(&scanned, Some(fingerprint), &old.keys).unwrap().respond(&m1).unwrap();
    let (new_state, m3) = new_state.read_reply(&m2).unwrap();
    let pending = old_state.read_confirm(&m3).unwrap();
    let (m4, _) = pending.approve(&old.identity, 9, 1).unwrap();
    assert_eq!(new_state.finish(&m4, &new_keys).unwrap().certificate.device_id, 9);

    // A device in the middle that learnt the code (but not the QR payload's key) is refused by the scanner.
    let intruder = DeviceKeys::generate();
    let (intruder_state, m1) = NewDeviceLink::start(&code, None, &intruder).unwrap();
    let (old_state, m2) = ExistingDeviceLink::expecting(&scanned, Some(fingerprint), &old.keys).unwrap().respond(&m1).unwrap();
    let (_, m3) = intruder_state.read_reply(&m2).unwrap();
    assert_eq!(old_state.read_confirm(&m3).err(), Some(LinkError::WrongDevice));
}
