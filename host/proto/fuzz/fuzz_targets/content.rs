#![no_main]
//! `Content::decode` and `body_bytes` (every decrypted message), and `Reaction::decode` of a body (a reaction's
//! document): never panics, and decompression stays under the cap.
use imfree_proto::Limits;
use imfree_proto::content::{Content, Reaction};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_decompressed_bytes: 1 << 16, ..Limits::default() };
    if let Ok(content) = Content::decode(data) {
        if let Ok(body) = content.body_bytes(&limits) {
            assert!(body.len() <= limits.max_decompressed_bytes || content.compress.is_none());
            if let Ok(reaction) = Reaction::decode(&body) {
                assert!(reaction.emoji.len() <= Reaction::MAX_EMOJI_BYTES);
            }
        }
    }
    let _ = Reaction::decode(data);
});
