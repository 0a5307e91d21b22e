//! Shared test fixtures: parties with keys and prekeys, and an RNG that hands out scripted bytes.

use std::collections::VecDeque;

use imfree_crypto::device::DeviceKeys;
use imfree_crypto::identity::{DeviceCertificate, UserIdentity};
use imfree_crypto::prekeys::{KemPrekeyKind, LocalPrekeys, PrekeyBundle};
use rand_core::{CryptoRng, RngCore};

/// An RNG that returns exactly the scripted draws, in order, and panics on any other request: test vectors state
/// every random value explicitly.
pub(crate) struct ScriptedRng(pub(crate) VecDeque<Vec<u8>>);

impl RngCore for ScriptedRng {
    fn next_u32(&mut self) -> u32 {
        panic!("unscripted next_u32")
    }
    fn next_u64(&mut self) -> u64 {
        panic!("unscripted next_u64")
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let next = self.0.pop_front().expect("scripted draws exhausted");
        assert_eq!(next.len(), dest.len(), "scripted draw of the wrong length");
        dest.copy_from_slice(&next);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for ScriptedRng {}

/// A device of a user, with its prekey store.
pub(crate) struct Party {
    pub(crate) keys: DeviceKeys,
    pub(crate) cert: DeviceCertificate,
    pub(crate) prekeys: LocalPrekeys,
}

impl Party {
    pub(crate) fn new(rng: &mut (impl RngCore + CryptoRng), device_id: u32) -> Self {
        let user = UserIdentity::generate(rng);
        let mut signing = [0u8; 32];
        let mut agreement = [0u8; 32];
        rng.fill_bytes(&mut signing);
        rng.fill_bytes(&mut agreement);
        let keys = DeviceKeys::from_secrets(signing, agreement);
        let cert = user.certify_device(device_id, &keys, 1_700_000_000);
        Party { keys, cert, prekeys: LocalPrekeys::new() }
    }

    /// A bundle as the relay would serve it: with or without one-time prekeys.
    pub(crate) fn bundle(&mut self, rng: &mut (impl RngCore + CryptoRng), one_time: bool) -> PrekeyBundle {
        let now = 1_700_000_100;
        let signed_prekey = self.prekeys.new_signed_prekey(rng, &self.keys, now);
        let one_time_prekey = one_time.then(|| self.prekeys.new_one_time_prekeys(rng, 1, now).remove(0));
        let kind = if one_time { KemPrekeyKind::OneTime } else { KemPrekeyKind::LastResort };
        let kem_prekey = self.prekeys.new_kem_prekey(rng, &self.keys, kind, now);
        PrekeyBundle { certificate: self.cert.clone(), signed_prekey, one_time_prekey, kem_prekey }
    }
}

pub(crate) fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

pub(crate) fn unhex32(s: &str) -> [u8; 32] {
    unhex(s).try_into().expect("32 bytes")
}
