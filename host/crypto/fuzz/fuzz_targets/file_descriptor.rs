#![no_main]
//! The file descriptor decoder (E2E message content `application/vnd.imfree.file+json`): anything it accepts
//! re-encodes to a descriptor that decodes to the same value; a password wrap with cheap parameters is tried.
use imfree_crypto::file::{FileDescriptor, KeyMaterial};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = FileDescriptor::decode(data) {
        assert_eq!(FileDescriptor::decode(&d.encode()).unwrap(), d);
        if let KeyMaterial::Password(w) = &d.key {
            if w.params.memory_kib <= 64 && w.params.iterations <= 2 && w.params.parallelism <= 2 {
                let _ = d.file_key(Some(b"password"));
            }
        }
    }
});
