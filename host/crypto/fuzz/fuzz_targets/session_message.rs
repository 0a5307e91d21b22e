#![no_main]
//! `SessionMessage::from_bytes` (every pairwise message from the relay), and re-encoding what it accepts.
use imfree_crypto::ratchet::SessionMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = SessionMessage::from_bytes(data) {
        assert_eq!(SessionMessage::from_bytes(&m.to_bytes()).as_ref(), Ok(&m));
    }
});
