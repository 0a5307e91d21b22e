#![no_main]
//! Prekey bundles (keys.claim answers) and key uploads (keys.upload requests) as JSON, then their verification.
use imfree_crypto::prekeys::{KeyUpload, PrekeyBundle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = serde_json::from_slice::<PrekeyBundle>(data) {
        let _ = bundle.verify();
    }
    if let Ok(upload) = serde_json::from_slice::<KeyUpload>(data) {
        let _ = upload.verify(b"fuzz challenge");
    }
});
