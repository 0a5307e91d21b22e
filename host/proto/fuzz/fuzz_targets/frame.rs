#![no_main]
//! `Frame::decode` (every frame a relay or client receives): never panics; what it accepts re-encodes and decodes to
//! the same frame.
use imfree_proto::{Frame, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(frame) = Frame::decode(data, &limits) {
        let again = Frame::decode(frame.encode().as_bytes(), &limits).expect("a decoded frame re-encodes validly");
        assert_eq!(again, frame);
    }
});
