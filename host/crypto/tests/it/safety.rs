//! Safety-number vectors (tests/vectors/safety_number.json) and an independent recomputation of the digit rule.

use imfree_crypto::safety::{SafetyNumber, fingerprint};
use serde_json::json;
use sha2::{Digest, Sha512};

use crate::support::unhex32;

/// The construction written out again from docs/crypto.md, step by step, without the crate's helpers.
fn independent_half(key: &[u8; 32], id: &str) -> String {
    let mut h = Sha512::digest([&[0u8, 0u8][..], key, id.as_bytes()].concat()).to_vec();
    for _ in 1..5200 {
        h = Sha512::digest([&h[..], key].concat()).to_vec();
    }
    (0..6)
        .map(|i| {
            let mut v = 0u64;
            for b in &h[i * 5..i * 5 + 5] {
                v = v * 256 + u64::from(*b);
            }
            format!("{:05}", v % 100_000)
        })
        .collect()
}

#[test]
fn safety_number_vectors_match() {
    let alice_key = unhex32("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
    let bob_key = unhex32("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c");
    let (alice, bob) = ("alice@example.org", "bob@example.org");
    let a = SafetyNumber::new(alice, &alice_key, bob, &bob_key);
    let b = SafetyNumber::new(bob, &bob_key, alice, &alice_key);
    assert_eq!(a.digits(), b.digits());
    let (ha, hb) = (independent_half(&alice_key, alice), independent_half(&bob_key, bob));
    let expected = if ha <= hb { ha + &hb } else { hb + &ha };
    assert_eq!(a.digits(), expected);
    crate::vector_file::check(
        "safety_number.json",
        json!({
            "description": "imfree safety number v0 (docs/crypto.md, Safety numbers). Keys are Ed25519 user identity public keys (hex); ids are UTF-8.",
            "inputs": {
                "alice_id": alice, "alice_identity_key": hex::encode(alice_key),
                "bob_id": bob, "bob_identity_key": hex::encode(bob_key),
            },
            "outputs": {
                "alice_fingerprint_sha512_iterated": hex::encode(fingerprint(&alice_key, alice)),
                "bob_fingerprint_sha512_iterated": hex::encode(fingerprint(&bob_key, bob)),
                "safety_number": a.display(),
                "alice_qr_payload": hex::encode(a.qr_payload()),
                "bob_qr_payload": hex::encode(b.qr_payload()),
            }
        }),
    );
}
