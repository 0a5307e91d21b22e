#![no_main]
//! The handshake auth payloads a relay parses from a Noise message (IK and XX): never panic.
use imfree_proto::auth::{IkAuth, XxAuth};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<IkAuth>(data);
    let _ = serde_json::from_slice::<XxAuth>(data);
});
