//! The device revocation list: its vector (tests/vectors/revocation_list.json, also printed in docs/crypto.md, which
//! this test checks), and the construction written out again from docs/crypto.md without the crate's helpers.

use ed25519_dalek::Signer;
use imfree_crypto::identity::UserIdentity;
use imfree_crypto::revocation::{RevocationList, RevokedDevice};
use serde_json::json;

fn lists() -> (UserIdentity, RevocationList, RevocationList) {
    let identity = UserIdentity::from_seed(&[0x01; 32]);
    let first = RevocationList::revoke(&identity, None, 0x0000_0007, 1_700_000_000).unwrap();
    let second = RevocationList::revoke(&identity, Some(&first), 0x0102_0304, 1_700_000_100).unwrap();
    (identity, first, second)
}

#[test]
fn revocation_list_vectors_match() {
    let (identity, first, second) = lists();
    crate::vector_file::check(
        "revocation_list.json",
        json!({
            "description": "imfree device revocation list v1 (docs/crypto.md, Device revocation list). Identity: Ed25519 from the seed 32 × 0x01. List 1 revokes device 7 at 1700000000; list 2 adds device 0x01020304 at 1700000100. Encodings in hex.",
            "inputs": {
                "identity_seed": hex::encode([0x01; 32]),
                "revocations": [[7, 1_700_000_000u64], [0x0102_0304, 1_700_000_100u64]],
            },
            "outputs": {
                "identity_key": hex::encode(identity.public_key()),
                "list_1": hex::encode(first.encode()),
                "list_2": hex::encode(second.encode()),
            },
        }),
    );
    // The same bytes are printed in docs/crypto.md, so the document a second implementation reads is checked too.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/crypto.md")).expect("docs/crypto.md");
    let flat: String = doc.split_whitespace().collect();
    assert!(flat.contains(&hex::encode(second.encode())), "docs/crypto.md must show list 2 of the vector");
}

#[test]
fn construction_as_documented() {
    let (identity, _, second) = lists();
    let mut signed = b"imfree/v1/revocation-list\0".to_vec();
    signed.extend_from_slice(&identity.public_key());
    signed.extend_from_slice(&2u64.to_be_bytes());
    signed.extend_from_slice(&1_700_000_100u64.to_be_bytes());
    signed.extend_from_slice(&2u32.to_be_bytes());
    for (id, at) in [(7u32, 1_700_000_000u64), (0x0102_0304, 1_700_000_100)] {
        signed.extend_from_slice(&id.to_be_bytes());
        signed.extend_from_slice(&at.to_be_bytes());
    }
    let signature = ed25519_dalek::SigningKey::from_bytes(&[0x01; 32]).sign(&signed).to_bytes();
    let mut wire = vec![0x01];
    wire.extend_from_slice(&signed[b"imfree/v1/revocation-list\0".len()..]);
    wire.extend_from_slice(&signature);
    assert_eq!(second.encode(), wire);
    assert_eq!(
        second.revoked,
        [RevokedDevice { device_id: 7, revoked_at: 1_700_000_000 }, RevokedDevice { device_id: 0x0102_0304, revoked_at: 1_700_000_100 }]
    );
    RevocationList::decode(&wire).unwrap().verify(&identity.public_key()).unwrap();
}
