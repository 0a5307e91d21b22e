//! The key store at rest: vectors (tests/vectors/keystore.json, cheap Argon2 parameters, fixed salt and nonce), the
//! wrong passphrase, every flipped byte, parameter limits, and the default (OWASP) parameters once.

use imfree_crypto::keystore::{self, HEADER_LEN, KdfParams, KeyStoreError, KeyStoreKey, SealedHeader};
use rand_core::OsRng;
use serde_json::json;

const CHEAP: KdfParams = KdfParams { memory_kib: 256, iterations: 2, parallelism: 1 };

fn vector_store() -> (Vec<u8>, Vec<u8>) {
    let key = KeyStoreKey::derive(b"correct horse battery staple", CHEAP, [0x5a; 16]).unwrap();
    let plaintext = b"{\"identity_seed\":\"...\"}".to_vec();
    (key.seal_with_nonce(core::array::from_fn(|i| i as u8), &plaintext), plaintext)
}

#[test]
fn keystore_vectors_match() {
    let (sealed, plaintext) = vector_store();
    assert_eq!(&*keystore::open(b"correct horse battery staple", &sealed).unwrap(), &plaintext);
    crate::vector_file::check(
        "keystore.json",
        json!({
            "description": "imfree key store v1 (docs/crypto.md, Key store at rest): Argon2id v0x13 → HMAC-SHA-256 labels → XChaCha20-Poly1305 with the 75-byte header as AD. Hex.",
            "inputs": {
                "passphrase_utf8": "correct horse battery staple",
                "argon2id": {"memory_kib": 256, "iterations": 2, "parallelism": 1},
                "salt": hex::encode([0x5a; 16]),
                "nonce": hex::encode(core::array::from_fn::<u8, 24, _>(|i| i as u8)),
                "plaintext_utf8": String::from_utf8(plaintext).unwrap(),
            },
            "outputs": { "sealed": hex::encode(&sealed) }
        }),
    );
}

#[test]
fn wrong_passphrase_and_tampering_are_refused_clearly() {
    let (sealed, plaintext) = vector_store();
    assert_eq!(keystore::open(b"correct horse battery stapler", &sealed).unwrap_err(), KeyStoreError::WrongPassphrase);
    let (key, opened) = KeyStoreKey::unlock(b"correct horse battery staple", &sealed).unwrap();
    assert_eq!(&*opened, &plaintext);
    // Every single flipped byte is refused; the header's fields are AD, the check value tells a wrong key apart.
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        let err = key.open(&bad).unwrap_err();
        match i {
            0..4 | 5 | 34 => assert!(matches!(err, KeyStoreError::Malformed(_) | KeyStoreError::UnsupportedParameters(_)), "{i}: {err}"),
            4 => assert_eq!(err, KeyStoreError::UnsupportedVersion(0)),
            6..34 | 59..75 => assert_eq!(err, KeyStoreError::WrongPassphrase, "byte {i}"),
            _ => assert_eq!(err, KeyStoreError::Damaged, "byte {i}"),
        }
    }
    // Truncation and trailing bytes.
    assert!(key.open(&sealed[..HEADER_LEN + 15]).is_err());
    assert_eq!(key.open(&[&sealed[..], &[0]].concat()).unwrap_err(), KeyStoreError::Damaged);
    assert!(matches!(keystore::open(b"x", b"IMFK"), Err(KeyStoreError::Malformed(_))));
}

#[test]
fn planted_parameters_are_bounded() {
    let (sealed, _) = vector_store();
    let (mut header, ct) = SealedHeader::parse(&sealed).unwrap();
    header.params.memory_kib = u32::MAX;
    let planted = [&header.encode()[..], ct].concat();
    let started = std::time::Instant::now();
    assert!(matches!(keystore::open(b"correct horse battery staple", &planted), Err(KeyStoreError::UnsupportedParameters(_))));
    assert!(started.elapsed().as_secs() < 5);
    header.params = KdfParams { memory_kib: 1, iterations: 1, parallelism: 1 };
    let planted = [&header.encode()[..], ct].concat();
    assert!(matches!(keystore::open(b"correct horse battery staple", &planted), Err(KeyStoreError::UnsupportedParameters(_))));
}

#[test]
fn default_parameters_round_trip_and_reseal_without_rederiving() {
    let sealed = keystore::seal(&mut OsRng, "pässwörd".as_bytes(), KdfParams::default(), b"secret state").unwrap();
    let (key, opened) = KeyStoreKey::unlock("pässwörd".as_bytes(), &sealed).unwrap();
    assert_eq!(&*opened, b"secret state");
    assert_eq!(key.params(), KdfParams::OWASP);
    let again = key.seal(&mut OsRng, b"secret state, later");
    assert_ne!(again[..HEADER_LEN], sealed[..HEADER_LEN], "a fresh nonce per seal");
    assert_eq!(&*key.open(&again).unwrap(), b"secret state, later");
    assert_eq!(keystore::open(b"passwort", &again).unwrap_err(), KeyStoreError::WrongPassphrase);
}
