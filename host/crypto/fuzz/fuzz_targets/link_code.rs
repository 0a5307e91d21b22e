#![no_main]
//! Typed link codes and scanned QR payloads (text from the user or a camera).
use imfree_crypto::linking::LinkCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(code) = LinkCode::parse(text) {
            assert_eq!(LinkCode::parse(&code.to_text()).unwrap(), code);
        }
        let _ = LinkCode::parse_qr(text);
    }
});
