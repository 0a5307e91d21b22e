#![no_main]
//! Device revocation lists from untrusted bytes: strict decoding, the round trip, and verification against a key
//! the fuzzer cannot sign for.
use imfree_crypto::revocation::RevocationList;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = RevocationList::decode(data) {
        assert_eq!(list.encode(), data, "one encoding per list");
        for r in &list.revoked {
            assert!(list.is_revoked(r.device_id));
        }
        // The Ed25519 base point: a valid key whose signatures the fuzzer cannot make.
        let mut key = [0x66u8; 32];
        key[0] = 0x58;
        assert!(list.verify(&key).is_err());
        let _ = list.verify(&list.user_identity);
    }
});
