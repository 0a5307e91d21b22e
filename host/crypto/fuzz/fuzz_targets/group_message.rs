#![no_main]
//! Group messages and sender-key distributions from untrusted bytes, and decryption by a receiver chain.
use imfree_crypto::group::{GroupMessage, ReceiverChain, SenderKeyDistribution};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = SenderKeyDistribution::decode(data);
    if let Ok(m) = GroupMessage::from_bytes(data) {
        assert_eq!(GroupMessage::from_bytes(&m.to_bytes()).as_ref(), Ok(&m));
        let dist = SenderKeyDistribution {
            group_id: m.group_id,
            chain_id: m.chain_id,
            iteration: 0,
            chain_key: [7; 32],
            // The Ed25519 base point: a valid key whose signatures the fuzzer cannot make.
            signing_key: [
                0x58, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
                0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
            ],
        };
        let mut chain = ReceiverChain::new(m.sender, m.sender_device, &dist);
        assert!(chain.decrypt(&m).is_err());
    }
});
