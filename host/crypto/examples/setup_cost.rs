//! PQXDH set-up cost per side, and its primitives, as the minimum and percentiles over many short batches.
//!
//! `cargo run --release -p imfree-crypto --example setup_cost [-- NAME-SUBSTRING]`
//!
//! Criterion (benches/e2e.rs) reports means, which on this shared 2-core machine move with the other builds by 2–3×.
//! A batch of about half a millisecond usually runs without being descheduled, so the fastest batches (min, p10)
//! show the cost of the code itself even under load; the median shows what the load did. docs/crypto.md, "Cost".
#![allow(missing_docs)]

use std::collections::HashSet;
use std::hint::black_box;
use std::time::Instant;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use imfree_crypto::device::DeviceKeys;
use imfree_crypto::envelope::InnerMessage;
use imfree_crypto::identity::UserIdentity;
use imfree_crypto::kdf::{hkdf_sha256, x25519, x25519_public};
use imfree_crypto::kem;
use imfree_crypto::pqxdh;
use imfree_crypto::prekeys::{KemPrekeyKind, LocalPrekeys, PrekeyBundle};
use imfree_crypto::ratchet::Session;
use rand_core::{OsRng, RngCore};

fn measure<R>(name: &str, mut f: impl FnMut() -> R) {
    if std::env::args().nth(1).is_some_and(|only| !name.contains(&only)) {
        return;
    }
    for _ in 0..50 {
        black_box(f());
    }
    let start = Instant::now();
    for _ in 0..50 {
        black_box(f());
    }
    let per_call = start.elapsed().as_secs_f64() / 50.0;
    let calls = ((0.0005 / per_call) as usize).max(1);
    let mut batches: Vec<f64> = (0..400)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                black_box(f());
            }
            start.elapsed().as_secs_f64() * 1e6 / calls as f64
        })
        .collect();
    batches.sort_by(f64::total_cmp);
    println!(
        "{name:<62} min {:>7.1} µs   p10 {:>7.1} µs   median {:>7.1} µs",
        batches[0],
        batches[batches.len() / 10],
        batches[batches.len() / 2]
    );
}

fn main() {
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    let peer = DeviceKeys::generate().static_public();
    measure("x25519 one DH", || x25519(&secret, &peer).unwrap());
    measure("x25519 base-point keygen", || x25519_public(&secret));
    let signing = SigningKey::from_bytes(&secret);
    let public = signing.verifying_key().to_bytes();
    let message = [0x5a; 120];
    let signature = signing.sign(&message);
    measure("ed25519 sign (120 B)", || signing.sign(&message));
    measure("ed25519 parse public key (decompress)", || VerifyingKey::from_bytes(&public).unwrap());
    let key = VerifyingKey::from_bytes(&public).unwrap();
    measure("ed25519 verify_strict (parsed key, 120 B)", || key.verify_strict(&message, &signature).unwrap());
    let pair = kem::KemKeyPair::from_seed([5; 64]);
    let (ct, _) = kem::encapsulate(pair.public_key(), [9; 32]).unwrap();
    measure("ML-KEM-768 encaps (key check included)", || kem::encapsulate(pair.public_key(), [9; 32]).unwrap());
    measure("ML-KEM-768 decaps", || pair.decapsulate(&ct).unwrap());
    let ikm = [0x11u8; 192];
    measure("HKDF-SHA-256 (192 B in, 32 B out)", || hkdf_sha256::<32>(&[0u8; 32], &ikm, &[b"info", &[3u8; 32]]));

    let alice_keys = DeviceKeys::generate();
    let alice_cert = UserIdentity::generate(&mut OsRng).certify_device(1, &alice_keys, 1);
    let bob_keys = DeviceKeys::generate();
    let bob_cert = UserIdentity::generate(&mut OsRng).certify_device(2, &bob_keys, 1);
    let mut bob_prekeys = LocalPrekeys::new();
    let bundle = PrekeyBundle {
        certificate: bob_cert.clone(),
        signed_prekey: bob_prekeys.new_signed_prekey(&mut OsRng, &bob_keys, 1),
        one_time_prekey: Some(bob_prekeys.new_one_time_prekeys(&mut OsRng, 1, 1).remove(0)),
        kem_prekey: bob_prekeys.new_kem_prekey(&mut OsRng, &bob_keys, KemPrekeyKind::LastResort, 1),
    };
    measure("bundle verify (3 signatures, key checks)", || bundle.verify().unwrap());
    measure("certificate verify (1 signature, key checks)", || bob_cert.verify().unwrap());
    measure("PQXDH initiator, hybrid, everything included", || {
        pqxdh::initiate(&mut OsRng, &alice_cert, &alice_keys, &bundle).unwrap()
    });
    let out = pqxdh::initiate(&mut OsRng, &alice_cert, &alice_keys, &bundle).unwrap();
    measure("PQXDH responder, hybrid, everything included", || {
        pqxdh::respond(&bob_cert, &bob_keys, &bob_prekeys, &out.header).unwrap()
    });
    let first_message = InnerMessage { id: [7; 16], sequence: 0, body: vec![0x61; 100] };
    measure("Session::initiate + first encrypt", || {
        let mut s = Session::initiate(&mut OsRng, &alice_cert, &alice_keys, &bundle).unwrap();
        s.encrypt(&first_message).unwrap()
    });
    let mut s = Session::initiate(&mut OsRng, &alice_cert, &alice_keys, &bundle).unwrap();
    let first = s.encrypt(&first_message).unwrap();
    measure("Session::accept first message", || {
        Session::accept(&mut OsRng, &bob_cert, &bob_keys, &bob_prekeys, &mut HashSet::new(), &first).unwrap()
    });
}
