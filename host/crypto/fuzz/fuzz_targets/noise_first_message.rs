#![no_main]
//! `noise::Responder::read_first` (the first bytes any unauthenticated peer sends the relay) and, for an accepted IK
//! message, `IkResponder::accept`: never panic, whatever the bytes.
use imfree_crypto::noise::{MAX_NOISE_MESSAGE, Responder};
use libfuzzer_sys::fuzz_target;

const RELAY_SECRET: [u8; 32] = [7u8; 32];

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_NOISE_MESSAGE + 1 {
        return;
    }
    if let Ok(Responder::Ik(ik)) = Responder::read_first(&RELAY_SECRET, data, 1 << 20) {
        let _ = ik.accept(&[]);
    }
});
