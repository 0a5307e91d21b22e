#![no_main]
//! The key store header parser, and opening with a passphrase when the header's Argon2 parameters are cheap.
use imfree_crypto::keystore::{self, SealedHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, _)) = SealedHeader::parse(data) {
        if header.params.memory_kib <= 64 && header.params.iterations <= 2 && header.params.parallelism <= 2 {
            let _ = keystore::open(b"passphrase", data);
        }
    }
});
