//! imfree's own construction vectors (tests/vectors/pqxdh_ratchet.json): fixed keys and every random draw given
//! explicitly → expected PQXDH output and the first ratchet messages both ways. Regenerate (after an intended
//! format change only) with `IMFREE_WRITE_VECTORS=1 cargo test -p imfree-crypto --test it vectors`.

use std::collections::{HashSet, VecDeque};

use imfree_crypto::device::DeviceKeys;
use imfree_crypto::envelope::InnerMessage;
use imfree_crypto::identity::UserIdentity;
use imfree_crypto::kdf::x25519_public;
use imfree_crypto::pqxdh;
use imfree_crypto::prekeys::{KemPrekeyKind, LocalPrekeys, PrekeyBundle};
use imfree_crypto::ratchet::{Session, SessionMessage};
use serde_json::{Value, json};

use crate::support::ScriptedRng;

fn filled(byte: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| byte.wrapping_add(i as u8)).collect()
}

fn h(v: &[u8]) -> String {
    hex::encode(v)
}

fn compute() -> Value {
    let a_user_seed: [u8; 32] = filled(0x10, 32).try_into().unwrap();
    let a_dev_sign: [u8; 32] = filled(0x20, 32).try_into().unwrap();
    let a_dev_x: [u8; 32] = filled(0x30, 32).try_into().unwrap();
    let b_user_seed: [u8; 32] = filled(0x40, 32).try_into().unwrap();
    let b_dev_sign: [u8; 32] = filled(0x50, 32).try_into().unwrap();
    let b_dev_x: [u8; 32] = filled(0x60, 32).try_into().unwrap();
    let b_spk = filled(0x70, 32);
    let b_opk = filled(0x80, 32);
    let b_kem_seed = filled(0x90, 64);
    let a_ephemeral = filled(0xa0, 32);
    let a_kem_m = filled(0xb0, 32);
    let a_ratchet1 = filled(0xc0, 32);
    let b_ratchet1 = filled(0xd0, 32);
    let a_ratchet2 = filled(0xe0, 32);
    let b_ratchet2 = filled(0xf0, 32);

    let a_keys = DeviceKeys::from_secrets(a_dev_sign, a_dev_x);
    let b_keys = DeviceKeys::from_secrets(b_dev_sign, b_dev_x);
    let a_cert = UserIdentity::from_seed(&a_user_seed).certify_device(1, &a_keys, 1_700_000_000);
    let b_cert = UserIdentity::from_seed(&b_user_seed).certify_device(2, &b_keys, 1_700_000_000);
    let mut b_store = LocalPrekeys::new();
    let mut rng = ScriptedRng(VecDeque::from([b_spk.clone(), b_opk.clone(), b_kem_seed.clone()]));
    let spk = b_store.new_signed_prekey(&mut rng, &b_keys, 1_700_000_100);
    let opk = b_store.new_one_time_prekeys(&mut rng, 1, 1_700_000_100).remove(0);
    let kpk = b_store.new_kem_prekey(&mut rng, &b_keys, KemPrekeyKind::OneTime, 1_700_000_100);
    let bundle = PrekeyBundle { certificate: b_cert.clone(), signed_prekey: spk, one_time_prekey: Some(opk), kem_prekey: kpk };

    // PQXDH alone.
    let mut rng = ScriptedRng(VecDeque::from([a_ephemeral.clone(), a_kem_m.clone()]));
    let out = pqxdh::initiate(&mut rng, &a_cert, &a_keys, &bundle).unwrap();

    // The session: Alice → Bob, Bob → Alice, Alice → Bob (two DH-ratchet steps).
    let mut rng = ScriptedRng(VecDeque::from([a_ephemeral.clone(), a_kem_m.clone(), a_ratchet1.clone()]));
    let mut alice = Session::initiate(&mut rng, &a_cert, &a_keys, &bundle).unwrap();
    let m1 = InnerMessage { id: [0x11; 16], sequence: 1, body: b"hello Bob".to_vec() };
    let wire1 = alice.encrypt(&m1).unwrap().to_bytes();
    let mut rng = ScriptedRng(VecDeque::from([b_ratchet1.clone()]));
    let accepted = Session::accept(
        &mut rng,
        &b_cert,
        &b_keys,
        &b_store,
        &mut HashSet::new(),
        &SessionMessage::from_bytes(&wire1).unwrap(),
    )
    .unwrap();
    assert_eq!(accepted.message, m1);
    let mut bob = accepted.session;
    let m2 = InnerMessage { id: [0x22; 16], sequence: 1, body: b"hello Alice".to_vec() };
    let wire2 = bob.encrypt(&m2).unwrap().to_bytes();
    let mut rng = ScriptedRng(VecDeque::from([a_ratchet2.clone()]));
    assert_eq!(alice.decrypt(&mut rng, &SessionMessage::from_bytes(&wire2).unwrap()).unwrap(), m2);
    let m3 = InnerMessage { id: [0x33; 16], sequence: 2, body: b"".to_vec() };
    let wire3 = alice.encrypt(&m3).unwrap().to_bytes();
    assert_eq!(bob.decrypt(&mut ScriptedRng(VecDeque::from([b_ratchet2.clone()])), &SessionMessage::from_bytes(&wire3).unwrap()).unwrap(), m3);

    json!({
        "description": "imfree PQXDH + Double Ratchet, v1. Byte strings are hex. Keys: Ed25519 seeds and X25519 secrets (RFC 7748 clamping applies); ML-KEM-768 seed is d || z. Random draws are listed in the order the initiator and responder make them.",
        "inputs": {
            "alice_user_identity_seed": h(&a_user_seed),
            "alice_device_signing_seed": h(&a_dev_sign),
            "alice_device_agreement_secret": h(&a_dev_x),
            "alice_device_id": 1,
            "bob_user_identity_seed": h(&b_user_seed),
            "bob_device_signing_seed": h(&b_dev_sign),
            "bob_device_agreement_secret": h(&b_dev_x),
            "bob_device_id": 2,
            "certificates_issued_at": 1_700_000_000u64,
            "prekeys_created_at": 1_700_000_100u64,
            "bob_signed_prekey": { "id": 0, "secret": h(&b_spk) },
            "bob_one_time_prekey": { "id": 0, "secret": h(&b_opk) },
            "bob_kem_one_time_prekey": { "id": 0, "seed": h(&b_kem_seed) },
            "alice_draws": { "pqxdh_ephemeral_secret": h(&a_ephemeral), "mlkem_encaps_m": h(&a_kem_m), "first_ratchet_secret": h(&a_ratchet1), "ratchet_secret_on_reply": h(&a_ratchet2) },
            "bob_draws": { "ratchet_secret_on_first_message": h(&b_ratchet1), "ratchet_secret_on_third_message": h(&b_ratchet2) },
            "messages": [
                { "from": "alice", "id": h(&m1.id), "sequence": m1.sequence, "body": h(&m1.body) },
                { "from": "bob", "id": h(&m2.id), "sequence": m2.sequence, "body": h(&m2.body) },
                { "from": "alice", "id": h(&m3.id), "sequence": m3.sequence, "body": h(&m3.body) }
            ]
        },
        "outputs": {
            "alice_certificate_signature": h(&a_cert.signature),
            "bob_certificate_signature": h(&b_cert.signature),
            "bob_signed_prekey_public": h(&bundle.signed_prekey.public),
            "bob_signed_prekey_signature": h(&bundle.signed_prekey.signature),
            "bob_kem_prekey_public_sha256": h(&imfree_crypto::kdf::sha256(&bundle.kem_prekey.public)),
            "bob_kem_prekey_signature": h(&bundle.kem_prekey.signature),
            "alice_ephemeral_public": h(&x25519_public(&a_ephemeral.clone().try_into().unwrap())),
            "kem_ciphertext_sha256": h(&imfree_crypto::kdf::sha256(&out.header.kem_ciphertext)),
            "pqxdh_transcript_hash": h(&out.secret.transcript),
            "pqxdh_root_key": h(&*out.secret.root_key),
            "session_associated_data": h(&out.secret.associated_data),
            "wire_messages": [h(&wire1), h(&wire2), h(&wire3)]
        }
    })
}

#[test]
fn pqxdh_and_ratchet_vectors_match() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/pqxdh_ratchet.json");
    let computed = compute();
    if std::env::var_os("IMFREE_WRITE_VECTORS").is_some() {
        std::fs::write(path, serde_json::to_string_pretty(&computed).unwrap() + "\n").unwrap();
    }
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(stored["inputs"], computed["inputs"]);
    assert_eq!(stored["outputs"], computed["outputs"], "imfree construction output changed: a wire-format break");
}
