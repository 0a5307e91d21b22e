#![no_main]
//! `InnerMessage::decode` (every decrypted plaintext): strict; what it accepts re-encodes to the same message.
use imfree_crypto::envelope::InnerMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = InnerMessage::decode(data) {
        assert_eq!(InnerMessage::decode(&m.encode().unwrap()).unwrap(), m);
    }
});
