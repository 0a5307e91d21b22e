//! The fuzz corpora (host/crypto/fuzz/corpus/<target>/) replayed as ordinary tests, through the same calls as the
//! fuzz targets (host/crypto/fuzz/fuzz_targets/<target>.rs): every file must decode or be refused without a panic,
//! and what decodes must round-trip. `IMFREE_WRITE_CORPUS=1` (re)writes the seed files from valid objects.

use std::collections::HashSet;
use std::path::PathBuf;

use imfree_crypto::envelope::InnerMessage;
use imfree_crypto::file::{FileDescriptor, FileId, FileKey, KeyMaterial, PasswordWrap};
use imfree_crypto::group::{GroupMessage, GroupSession, ReceiverChain, SenderKeyDistribution};
use imfree_crypto::keystore::{self, KdfParams, KeyStoreKey, SealedHeader};
use imfree_crypto::linking::LinkCode;
use imfree_crypto::membership::{GroupState, MembershipEntry, MembershipOp};
use imfree_crypto::prekeys::{KeyUpload, PrekeyBundle};
use imfree_crypto::ratchet::{Session, SessionMessage};
use imfree_crypto::revocation::RevocationList;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::membership::User;
use crate::support::Party;

const TARGETS: [&str; 10] = [
    "session_message",
    "inner_message",
    "prekey_json",
    "membership_entry",
    "group_message",
    "keystore_open",
    "link_code",
    "noise_first_message",
    "revocation_list",
    "file_descriptor",
];

/// The body of each fuzz target.
fn exercise(target: &str, data: &[u8]) {
    match target {
        "noise_first_message" => {
            if data.len() <= imfree_crypto::noise::MAX_NOISE_MESSAGE + 1
                && let Ok(imfree_crypto::noise::Responder::Ik(ik)) =
                    imfree_crypto::noise::Responder::read_first(&[7u8; 32], data, 1 << 20)
            {
                let _ = ik.accept(&[]);
            }
        }
        "session_message" => {
            if let Ok(m) = SessionMessage::from_bytes(data) {
                assert_eq!(SessionMessage::from_bytes(&m.to_bytes()).as_ref(), Ok(&m));
            }
        }
        "inner_message" => {
            if let Ok(m) = InnerMessage::decode(data) {
                assert_eq!(InnerMessage::decode(&m.encode().unwrap()).unwrap(), m);
            }
        }
        "prekey_json" => {
            if let Ok(bundle) = serde_json::from_slice::<PrekeyBundle>(data) {
                let _ = bundle.verify();
            }
            if let Ok(upload) = serde_json::from_slice::<KeyUpload>(data) {
                let _ = upload.verify(b"fuzz challenge");
            }
        }
        "membership_entry" => {
            let mut entries = Vec::new();
            let mut rest = data;
            while rest.len() >= 2 {
                let n = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
                if let Ok(e) = MembershipEntry::decode(&rest[2..2 + n]) {
                    assert_eq!(e.encode(), &rest[2..2 + n]);
                    entries.push(e);
                }
                rest = &rest[2 + n..];
            }
            let _ = GroupState::replay(&entries, None);
        }
        "group_message" => {
            let _ = SenderKeyDistribution::decode(data);
            if let Ok(m) = GroupMessage::from_bytes(data) {
                assert_eq!(GroupMessage::from_bytes(&m.to_bytes()).as_ref(), Ok(&m));
                let mut signing_key = [0x66u8; 32];
                signing_key[0] = 0x58;
                let dist = SenderKeyDistribution {
                    group_id: m.group_id,
                    chain_id: m.chain_id,
                    iteration: 0,
                    chain_key: [7; 32],
                    signing_key,
                };
                let mut chain = ReceiverChain::new(m.sender, m.sender_device, &dist);
                assert!(chain.decrypt(&m).is_err());
            }
        }
        "keystore_open" => {
            if let Ok((header, _)) = SealedHeader::parse(data)
                && header.params.memory_kib <= 64
                && header.params.iterations <= 2
                && header.params.parallelism <= 2
            {
                let _ = keystore::open(b"passphrase", data);
            }
        }
        "link_code" => {
            if let Ok(text) = std::str::from_utf8(data) {
                if let Ok(code) = LinkCode::parse(text) {
                    assert_eq!(LinkCode::parse(&code.to_text()).unwrap(), code);
                }
                let _ = LinkCode::parse_qr(text);
            }
        }
        "revocation_list" => {
            if let Ok(list) = RevocationList::decode(data) {
                assert_eq!(list.encode(), data, "one encoding per list");
                for r in &list.revoked {
                    assert!(list.is_revoked(r.device_id));
                }
                let mut key = [0x66u8; 32];
                key[0] = 0x58;
                assert!(list.verify(&key).is_err());
                let _ = list.verify(&list.user_identity);
            }
        }
        "file_descriptor" => {
            if let Ok(d) = FileDescriptor::decode(data) {
                assert_eq!(FileDescriptor::decode(&d.encode()).unwrap(), d);
                if let KeyMaterial::Password(w) = &d.key
                    && w.params.memory_kib <= 64
                    && w.params.iterations <= 2
                    && w.params.parallelism <= 2
                {
                    let _ = d.file_key(Some(b"password"));
                }
            }
        }
        other => panic!("unknown fuzz target {other}"),
    }
}

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target)
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut rng = StdRng::seed_from_u64(0xF022);
    let mut out = Vec::new();
    // Pairwise: a first message (with PQXDH header) and a reply; bundle and upload JSON.
    let alice = Party::new(&mut rng, 1);
    let mut bob = Party::new(&mut rng, 2);
    let bundle = bob.bundle(&mut rng, true);
    let mut a = Session::initiate(&mut rng, &alice.cert, &alice.keys, &bundle).unwrap();
    let inner = InnerMessage { id: [1; 16], sequence: 1, body: b"seed".to_vec() };
    let first = a.encrypt(&inner).unwrap();
    let mut b = Session::accept(&mut rng, &bob.cert, &bob.keys, &bob.prekeys, &mut HashSet::new(), &first).unwrap().session;
    let reply = b.encrypt(&inner).unwrap();
    out.push(("session_message", first.to_bytes()));
    out.push(("session_message", reply.to_bytes()));
    out.push(("inner_message", inner.encode().unwrap()));
    out.push(("inner_message", InnerMessage { id: [2; 16], sequence: 0, body: vec![] }.encode().unwrap()));
    out.push(("prekey_json", serde_json::to_vec(&bundle).unwrap()));
    let upload = KeyUpload::sign(&bob.keys, bob.cert.clone(), Some(bundle.signed_prekey.clone()), bob.prekeys.new_one_time_prekeys(&mut rng, 2, 1), vec![bundle.kem_prekey.clone()], b"fuzz challenge");
    out.push(("prekey_json", serde_json::to_vec(&upload).unwrap()));
    // Membership: a three-entry log, length-prefixed.
    let (u1, u2) = (User::new("alice@example.org", 1), User::new("bob@example.org", 2));
    let mut log = vec![MembershipEntry::create(&u1.identity, u1.name, [7; 16], 1)];
    let mut state = GroupState::genesis(&log[0]).unwrap();
    for op in [MembershipOp::Add, MembershipOp::Promote] {
        let e = state.next_entry(&u1.identity, op, u2.member(), 2);
        state.apply(&e).unwrap();
        log.push(e);
    }
    let mut framed = Vec::new();
    for e in &log {
        let enc = e.encode();
        framed.extend_from_slice(&(enc.len() as u16).to_be_bytes());
        framed.extend_from_slice(&enc);
    }
    out.push(("membership_entry", framed));
    // Group: a distribution and a message.
    let mut session = GroupSession::new(&mut rng, &state, u1.identity.public_key(), 1).unwrap();
    out.push(("group_message", session.distribution().encode().to_vec()));
    out.push(("group_message", session.encrypt(&state, &inner).unwrap().to_bytes()));
    // Key store with cheap parameters and the passphrase the target tries.
    let key = KeyStoreKey::derive(b"passphrase", KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 }, [3; 16]).unwrap();
    out.push(("keystore_open", key.seal_with_nonce([4; 24], b"seed state")));
    // Link codes.
    let code = LinkCode::from_bytes([0x5a; 16]);
    out.push(("link_code", code.to_text().into_bytes()));
    out.push(("link_code", code.qr_payload(&[9; 32]).into_bytes()));
    // Revocation lists: a first one and its successor.
    let first = RevocationList::revoke(&u1.identity, None, 7, 1).unwrap();
    out.push(("revocation_list", first.encode()));
    out.push(("revocation_list", RevocationList::revoke(&u1.identity, Some(&first), 9, 2).unwrap().encode()));
    // File descriptors: a plain key, and a password wrap with cheap parameters and the password the target tries.
    let plain = FileDescriptor {
        id: FileId([0xa5; 16]),
        name: "report.pdf".into(),
        size: 5000,
        mime: "application/pdf".into(),
        chunk_size: 1024,
        chunks: 5,
        sha256: [1; 32],
        key: KeyMaterial::Plain(FileKey::from_bytes([2; 32])),
        voice: false,
        duration_ms: None,
    };
    out.push(("file_descriptor", plain.encode()));
    let wrap = PasswordWrap::wrap_with_salt(&FileKey::from_bytes([2; 32]), FileId([0xa5; 16]), b"password", KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 }, [3; 16]).unwrap();
    let voice = FileDescriptor { name: "memo.ogg".into(), mime: "audio/ogg; codecs=opus".into(), key: KeyMaterial::Password(wrap), voice: true, duration_ms: Some(2500), ..plain };
    out.push(("file_descriptor", voice.encode()));
    out
}

#[test]
fn fuzz_corpora_replay() {
    if std::env::var_os("IMFREE_WRITE_CORPUS").is_some() {
        let mut n = std::collections::HashMap::new();
        for (target, bytes) in seeds() {
            let i = n.entry(target).or_insert(0);
            *i += 1;
            std::fs::create_dir_all(corpus_dir(target)).unwrap();
            std::fs::write(corpus_dir(target).join(format!("seed-{i}")), bytes).unwrap();
        }
    }
    let mut replayed = 0;
    for target in TARGETS {
        let dir = corpus_dir(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            exercise(target, &std::fs::read(&path).unwrap());
            replayed += 1;
        }
    }
    assert!(replayed >= TARGETS.len(), "every target has a seed corpus");
}

#[test]
fn seeds_are_valid_inputs() {
    // The seeds exercise the accepting paths, not only the refusals.
    for (target, bytes) in seeds() {
        match target {
            "session_message" => assert!(SessionMessage::from_bytes(&bytes).is_ok()),
            "inner_message" => assert!(InnerMessage::decode(&bytes).is_ok()),
            "group_message" => assert!(GroupMessage::from_bytes(&bytes).is_ok() || SenderKeyDistribution::decode(&bytes).is_ok()),
            "keystore_open" => assert_eq!(&*keystore::open(b"passphrase", &bytes).unwrap(), b"seed state"),
            "revocation_list" => assert!(RevocationList::decode(&bytes).is_ok()),
            "file_descriptor" => assert!(FileDescriptor::decode(&bytes).is_ok()),
            "link_code" => assert!(LinkCode::parse(std::str::from_utf8(&bytes).unwrap()).is_ok() || LinkCode::parse_qr(std::str::from_utf8(&bytes).unwrap()).is_ok()),
            _ => {}
        }
        exercise(target, &bytes);
    }
}
