#![no_main]
//! What arrives in the bridge's mailbox (any bytes, from anyone): `inbound::read` (parsing, loop detection, the
//! addresses and threading ids, quote and signature trimming, attachments) and `trim_reply` on any text. None may
//! panic; what is posted stays within the limits.
use email_gateway::inbound::{Inbound, InboundLimits, OwnIdentity, read, trim_reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let own = OwnIdentity { address: "bridge@example.org".into(), domain: "example.org".into() };
    let limits = InboundLimits { max_attachments: 3, max_text_chars: 500 };
    if let Inbound::Post(mail) = read(data, &own, limits) {
        assert!(mail.text.chars().count() <= 500 + 3, "{} chars", mail.text.chars().count());
        assert!(mail.attachments.len() <= 3);
        assert!(mail.attachments.iter().all(|a| !a.name.contains('/') && !a.name.contains('\\')));
        assert!(mail.from_address.contains('@'));
    }
    let _ = trim_reply(&String::from_utf8_lossy(data));
});
