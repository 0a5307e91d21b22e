#![no_main]
//! Membership-log entries (binary, as the relay stores them) and a replay of a log made of consecutive entries.
use imfree_crypto::membership::{GroupState, MembershipEntry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Length-prefixed (u16 BE) entries, so one input can hold a whole log.
    let mut entries = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        if let Ok(e) = MembershipEntry::decode(&rest[2..2 + n]) {
            assert_eq!(e.encode(), &rest[2..2 + n]);
            entries.push(e);
        }
        rest = &rest[2 + n..];
    }
    let _ = GroupState::replay(&entries, None);
});
