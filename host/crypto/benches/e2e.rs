//! End-to-end encryption costs: the primitives one set-up is made of (X25519, Ed25519, ML-KEM-768, HKDF), the
//! ratchet's symmetric step and DH-ratchet step (encrypt + decrypt), and PQXDH set-up per side with and without the
//! ML-KEM part, prekey and certificate signature checks included.
#![allow(missing_docs)]

use std::collections::HashSet;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use imfree_crypto::device::DeviceKeys;
use imfree_crypto::envelope::InnerMessage;
use imfree_crypto::identity::{DeviceCertificate, UserIdentity};
use imfree_crypto::kdf::{X25519Peer, x25519, x25519_public};
use imfree_crypto::kem;
use imfree_crypto::pqxdh;
use imfree_crypto::prekeys::{KemPrekeyKind, LocalPrekeys, PrekeyBundle, PrekeySecrets};
use imfree_crypto::ratchet::Session;
use rand_core::{OsRng, RngCore};

struct Party {
    keys: DeviceKeys,
    cert: DeviceCertificate,
    prekeys: LocalPrekeys,
}

fn party(id: u32) -> Party {
    let keys = DeviceKeys::generate();
    let cert = UserIdentity::generate(&mut OsRng).certify_device(id, &keys, 1);
    Party { keys, cert, prekeys: LocalPrekeys::new() }
}

fn bundle(p: &mut Party) -> PrekeyBundle {
    let signed_prekey = p.prekeys.new_signed_prekey(&mut OsRng, &p.keys, 1);
    let one_time_prekey = Some(p.prekeys.new_one_time_prekeys(&mut OsRng, 1, 1).remove(0));
    let kem_prekey = p.prekeys.new_kem_prekey(&mut OsRng, &p.keys, KemPrekeyKind::LastResort, 1);
    PrekeyBundle { certificate: p.cert.clone(), signed_prekey, one_time_prekey, kem_prekey }
}

fn message(n: u64) -> InnerMessage {
    InnerMessage { id: [7; 16], sequence: n, body: vec![0x61; 100] }
}

fn sessions() -> (Session, Session) {
    let alice = party(1);
    let mut bob = party(2);
    let b = bundle(&mut bob);
    let mut a = Session::initiate(&mut OsRng, &alice.cert, &alice.keys, &b).unwrap();
    let first = a.encrypt(&message(0)).unwrap();
    let bs = Session::accept(&mut OsRng, &bob.cert, &bob.keys, &bob.prekeys, &mut HashSet::new(), &first)
        .unwrap()
        .session;
    (a, bs)
}

/// One operation each, so that the set-up figures can be read as a sum (docs/crypto.md, "Cost").
fn primitives(c: &mut Criterion) {
    use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    let peer = DeviceKeys::generate().static_public();
    c.bench_function("primitive/x25519 one DH", |bench| bench.iter(|| black_box(x25519(&secret, &peer).unwrap())));
    c.bench_function("primitive/x25519 base-point keygen", |bench| bench.iter(|| black_box(x25519_public(&secret))));
    let signing = SigningKey::from_bytes(&secret);
    let public = signing.verifying_key().to_bytes();
    let message = [0x5a; 120];
    let signature = signing.sign(&message);
    c.bench_function("primitive/ed25519 sign (120 B)", |bench| bench.iter(|| black_box(signing.sign(&message))));
    c.bench_function("primitive/ed25519 parse public key (decompress)", |bench| {
        bench.iter(|| black_box(VerifyingKey::from_bytes(&public).unwrap()))
    });
    let key = VerifyingKey::from_bytes(&public).unwrap();
    c.bench_function("primitive/ed25519 verify_strict (parsed key, 120 B)", |bench| {
        bench.iter(|| key.verify_strict(&message, &signature).unwrap())
    });
    let pair = kem::KemKeyPair::from_seed([5; 64]);
    let (ct, _) = kem::encapsulate(pair.public_key(), [9; 32]).unwrap();
    c.bench_function("primitive/mlkem768 encaps (key check included)", |bench| {
        bench.iter(|| black_box(kem::encapsulate(pair.public_key(), [9; 32]).unwrap()))
    });
    c.bench_function("primitive/mlkem768 decaps", |bench| bench.iter(|| black_box(pair.decapsulate(&ct).unwrap())));
    let ikm = [0x11u8; 192];
    c.bench_function("primitive/hkdf-sha256 (192 B in, 32 B out)", |bench| {
        bench.iter(|| black_box(imfree_crypto::kdf::hkdf_sha256::<32>(&[0u8; 32], &ikm, &[b"info", &[3u8; 32]])))
    });
}

fn ratchet(c: &mut Criterion) {
    let (mut a, mut b) = sessions();
    let mut n = 0;
    c.bench_function("ratchet/symmetric step (encrypt+decrypt, 100 B)", |bench| {
        bench.iter(|| {
            n += 1;
            let m = a.encrypt(&message(n)).unwrap();
            black_box(b.decrypt(&mut OsRng, &m).unwrap());
        })
    });
    let (mut a, mut b) = sessions();
    c.bench_function("ratchet/DH step (A→B then B→A, each a new ratchet key)", |bench| {
        bench.iter(|| {
            let m = a.encrypt(&message(1)).unwrap();
            black_box(b.decrypt(&mut OsRng, &m).unwrap());
            let m = b.encrypt(&message(2)).unwrap();
            black_box(a.decrypt(&mut OsRng, &m).unwrap());
        })
    });
}

fn setup(c: &mut Criterion) {
    let alice = party(1);
    let mut bob = party(2);
    let b = bundle(&mut bob);
    // Per side, everything a real set-up does: the initiator checks the whole bundle (device certificate, signed
    // prekey and ML-KEM prekey signatures, batched; the key checks), makes its ephemeral key, 4 X25519, encaps; the
    // responder checks the initiator's certificate, 4 X25519, decaps. Issue 3's target: ≤ 250 µs per side.
    c.bench_function("pqxdh/initiator hybrid (bundle: 3 signatures + keys, ephemeral, 4 DH, encaps)", |bench| {
        bench.iter(|| black_box(pqxdh::initiate(&mut OsRng, &alice.cert, &alice.keys, &b).unwrap()))
    });
    let out = pqxdh::initiate(&mut OsRng, &alice.cert, &alice.keys, &b).unwrap();
    c.bench_function("pqxdh/responder hybrid (certificate, 4 DH, decaps)", |bench| {
        bench.iter(|| black_box(pqxdh::respond(&bob.cert, &bob.keys, &bob.prekeys, &out.header).unwrap()))
    });
    c.bench_function("session/initiate + first encrypt (hybrid)", |bench| {
        bench.iter(|| {
            let mut s = Session::initiate(&mut OsRng, &alice.cert, &alice.keys, &b).unwrap();
            black_box(s.encrypt(&message(0)).unwrap())
        })
    });
    let mut s = Session::initiate(&mut OsRng, &alice.cert, &alice.keys, &b).unwrap();
    let first = s.encrypt(&message(0)).unwrap();
    c.bench_function("session/accept first message (hybrid)", |bench| {
        bench.iter(|| {
            black_box(
                Session::accept(&mut OsRng, &bob.cert, &bob.keys, &bob.prekeys, &mut HashSet::new(), &first).unwrap(),
            )
        })
    });
    // The classical part alone (what each side would cost without ML-KEM), with the same X25519 code as pqxdh.rs.
    // The initiator's two remaining signatures (certificate, signed prekey) are checked one by one here, as a
    // classical-only protocol without the batch would: an upper bound.
    c.bench_function("pqxdh/initiator without ML-KEM (certificate + signed prekey, ephemeral, 4 DH)", |bench| {
        bench.iter(|| {
            b.certificate.verify().unwrap();
            b.signed_prekey.verify(&b.certificate.signing_key).unwrap();
            let mut ek = [0u8; 32];
            OsRng.fill_bytes(&mut ek);
            let id = alice.keys.static_secret();
            let spk = X25519Peer::new(&b.signed_prekey.public);
            black_box(spk.agree(&id).unwrap());
            black_box(x25519(&ek, &b.certificate.agreement_key).unwrap());
            black_box(spk.agree(&ek).unwrap());
            black_box(x25519(&ek, &b.one_time_prekey.as_ref().unwrap().public).unwrap());
            black_box(x25519_public(&ek))
        })
    });
    let spk_secret = bob.prekeys.signed_prekey(b.signed_prekey.id).unwrap().secret;
    let otpk_secret = bob.prekeys.one_time_prekey(b.one_time_prekey.as_ref().unwrap().id).unwrap().secret;
    c.bench_function("pqxdh/responder without ML-KEM (certificate, 4 DH)", |bench| {
        bench.iter(|| {
            out.header.initiator.verify().unwrap();
            let id = bob.keys.static_secret();
            let ek = X25519Peer::new(&out.header.ephemeral);
            black_box(x25519(&spk_secret, &out.header.initiator.agreement_key).unwrap());
            black_box(ek.agree(&id).unwrap());
            black_box(ek.agree(&spk_secret).unwrap());
            black_box(ek.agree(&otpk_secret).unwrap())
        })
    });
    c.bench_function("bundle/verify (3 signatures batched + key checks)", |bench| bench.iter(|| b.verify().unwrap()));
    c.bench_function("bundle/verify_each (3 signatures one by one + key checks)", |bench| {
        bench.iter(|| b.verify_each().unwrap())
    });
    c.bench_function("mlkem768/verify signed prekey + encaps", |bench| {
        bench.iter(|| {
            b.kem_prekey.verify(&b.certificate.signing_key).unwrap();
            black_box(kem::encapsulate(&b.kem_prekey.public, [9; 32]).unwrap())
        })
    });
    let pair = kem::KemKeyPair::from_seed([5; 64]);
    let (ct, _) = kem::encapsulate(pair.public_key(), [9; 32]).unwrap();
    c.bench_function("mlkem768/keygen", |bench| bench.iter(|| black_box(kem::KemKeyPair::from_seed([5; 64]))));
    c.bench_function("mlkem768/decaps", |bench| bench.iter(|| black_box(pair.decapsulate(&ct).unwrap())));
}

fn groups(c: &mut Criterion) {
    use imfree_crypto::group::GroupSession;
    use imfree_crypto::membership::{GroupState, Member, MembershipEntry, MembershipOp};
    let alice = UserIdentity::generate(&mut OsRng);
    let bob = UserIdentity::generate(&mut OsRng);
    let genesis = MembershipEntry::create(&alice, "alice", [7; 16], 1);
    let mut state = GroupState::genesis(&genesis).unwrap();
    let add = state.next_entry(&alice, MembershipOp::Add, Member { user: "bob".into(), identity_key: bob.public_key() }, 2);
    state.apply(&add).unwrap();
    let mut a = GroupSession::new(&mut OsRng, &state, alice.public_key(), 1).unwrap();
    c.bench_function("group/encrypt + sign (100 B)", |bench| {
        bench.iter(|| black_box(a.encrypt(&state, &message(1)).unwrap()))
    });
    let mut a2 = GroupSession::new(&mut OsRng, &state, alice.public_key(), 1).unwrap();
    let mut b2 = GroupSession::new(&mut OsRng, &state, bob.public_key(), 1).unwrap();
    b2.receive_distribution(&state, alice.public_key(), 1, &a2.distribution()).unwrap();
    c.bench_function("group/encrypt + verify + decrypt (100 B)", |bench| {
        bench.iter(|| {
            let m = a2.encrypt(&state, &message(1)).unwrap();
            black_box(b2.decrypt(&state, &m).unwrap())
        })
    });
    let next = state.next_entry(&alice, MembershipOp::Promote, Member { user: "bob".into(), identity_key: bob.public_key() }, 3);
    c.bench_function("membership/verify and apply one entry", |bench| {
        bench.iter(|| {
            let mut s = state.clone();
            s.apply(&next).unwrap();
            black_box(s)
        })
    });
    c.bench_function("safety number (2 × 5200 SHA-512)", |bench| {
        bench.iter(|| black_box(imfree_crypto::safety::SafetyNumber::new("alice", &alice.public_key(), "bob", &bob.public_key())))
    });
}

criterion_group!(benches, primitives, ratchet, setup, groups);
criterion_main!(benches);
