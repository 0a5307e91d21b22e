//! This device's end-to-end state: the user identity (made on the account's first device, handed to each device
//! linked from it), the device certificate, the
//! prekey secrets and the replay cache of last-resort set-ups; how uploads are made; how a delivery is decrypted and
//! a message encrypted for a contact's device.
//!
//! It owns key material and must not touch the network: the engine fetches bundles and sends frames.

use std::collections::HashSet;

use imfree_crypto::device::DeviceKeys;
use imfree_crypto::envelope::InnerMessage;
use imfree_crypto::identity::{DeviceCertificate, UserIdentity};
use imfree_crypto::prekeys::{KemPrekeyKind, KeyUpload, LocalPrekeys};
use imfree_crypto::ratchet::{Session as RatchetSession, SessionMessage};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::ClientError;
use crate::store::LocalStore;

/// One-time prekeys of each kind in a first upload, and the level under which they are replenished.
pub const PREKEY_BATCH: usize = 50;
/// Replenish when fewer than this many one-time prekeys of a kind are left on the relay.
pub const PREKEY_LOW_WATER: u64 = 10;
/// A new signed prekey every 7 days; old signed prekeys are kept 30 days for first messages still in flight.
pub const SIGNED_PREKEY_ROTATION_SECS: u64 = 7 * 24 * 3600;
/// A new last-resort ML-KEM prekey every 30 days, the old one kept 30 days more.
pub const LAST_RESORT_ROTATION_SECS: u64 = 30 * 24 * 3600;
/// How long a replaced signed or last-resort prekey is kept.
pub const RETIRED_PREKEY_RETENTION_SECS: u64 = 30 * 24 * 3600;

fn now_secs() -> u64 {
    (crate::now_ms() / 1000) as u64
}

fn e2e(e: imfree_crypto::E2eError) -> ClientError {
    ClientError::E2e(e.to_string())
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// The device's E2E state, loaded from the local store.
pub struct DeviceE2e {
    keys: DeviceKeys,
    /// The user identity, on the device that created it (or one it was linked from).
    identity: Option<UserIdentity>,
    /// This device's certificate.
    pub certificate: DeviceCertificate,
    prekeys: LocalPrekeys,
    replay: HashSet<[u8; 32]>,
    sequence: u64,
    /// When the current signed prekey was made (Unix seconds).
    signed_at: u64,
    /// When the current last-resort ML-KEM prekey was made (Unix seconds).
    last_resort_at: u64,
}

impl DeviceE2e {
    /// Make the account's identity on its first device, certify this device and make its first prekeys.
    pub fn create(keys: DeviceKeys) -> DeviceE2e {
        let identity = UserIdentity::generate(&mut OsRng);
        let certificate = identity.certify_device(OsRng.next_u32(), &keys, now_secs());
        Self::linked(keys, identity, certificate)
    }

    /// The state of a device that was just linked: the user identity and this device's certificate from the
    /// approving device; no prekeys yet (make them with [`DeviceE2e::first_upload`]).
    pub fn linked(keys: DeviceKeys, identity: UserIdentity, certificate: DeviceCertificate) -> DeviceE2e {
        DeviceE2e {
            keys,
            identity: Some(identity),
            certificate,
            prekeys: LocalPrekeys::new(),
            replay: HashSet::new(),
            sequence: 0,
            signed_at: 0,
            last_resort_at: 0,
        }
    }

    /// The user identity, if this device holds it (every device made by `create` or `linked` does).
    pub fn identity(&self) -> Option<&UserIdentity> {
        self.identity.as_ref()
    }

    /// Load the state, if this device has one.
    pub async fn load(store: &LocalStore, keys: DeviceKeys) -> Result<Option<DeviceE2e>, ClientError> {
        let Some(cert) = store.e2e_state("certificate").await? else { return Ok(None) };
        let certificate: DeviceCertificate = serde_json::from_slice(&cert).map_err(|e| ClientError::Store(format!("certificate: {e}")))?;
        let mut prekeys: LocalPrekeys = match store.e2e_state("prekeys").await? {
            Some(p) => serde_json::from_slice(&p).map_err(|e| ClientError::Store(format!("prekeys: {e}")))?,
            None => LocalPrekeys::new(),
        };
        prekeys.expand();
        let replay = match store.e2e_state("replay").await? {
            Some(r) => serde_json::from_slice(&r).unwrap_or_default(),
            None => HashSet::new(),
        };
        let identity = match store.e2e_state("identity").await? {
            Some(seed) if seed.len() == 32 => {
                let mut s = Zeroizing::new([0u8; 32]);
                s.copy_from_slice(&seed);
                Some(UserIdentity::from_seed(&s))
            }
            _ => None,
        };
        let number = async |name: &str| -> Result<u64, ClientError> {
            Ok(store.e2e_state(name).await?.and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0))
        };
        let (sequence, signed_at, last_resort_at) = (number("sequence").await?, number("signed_at").await?, number("last_resort_at").await?);
        Ok(Some(DeviceE2e { keys, identity, certificate, prekeys, replay, sequence, signed_at, last_resort_at }))
    }

    /// Everything to persist, as (name, value) pairs.
    pub fn state(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut out = vec![
            ("certificate", json(&self.certificate)),
            ("prekeys", json(&self.prekeys)),
            ("replay", json(&self.replay)),
            ("sequence", self.sequence.to_be_bytes().to_vec()),
            ("signed_at", self.signed_at.to_be_bytes().to_vec()),
            ("last_resort_at", self.last_resort_at.to_be_bytes().to_vec()),
        ];
        if let Some(id) = &self.identity {
            out.push(("identity", id.seed().to_vec()));
        }
        out
    }

    /// The user identity key this device is certified by.
    pub fn identity_key(&self) -> [u8; 32] {
        self.certificate.user_identity
    }

    /// A first upload (signed prekey, one-time prekeys of both kinds, a last-resort ML-KEM prekey), signed over the
    /// relay's `challenge`.
    pub fn first_upload(&mut self, challenge: &[u8]) -> KeyUpload {
        let now = now_secs();
        self.signed_at = now;
        self.last_resort_at = now;
        let spk = self.prekeys.new_signed_prekey(&mut OsRng, &self.keys, now);
        let otpks = self.prekeys.new_one_time_prekeys(&mut OsRng, PREKEY_BATCH, now);
        let mut kems: Vec<_> =
            (0..PREKEY_BATCH).map(|_| self.prekeys.new_kem_prekey(&mut OsRng, &self.keys, KemPrekeyKind::OneTime, now)).collect();
        kems.push(self.prekeys.new_kem_prekey(&mut OsRng, &self.keys, KemPrekeyKind::LastResort, now));
        KeyUpload::sign(&self.keys, self.certificate.clone(), Some(spk), otpks, kems, challenge)
    }

    /// What the relay needs next, if anything: more one-time prekeys when it runs low, and a new signed or
    /// last-resort prekey when the current one is due for rotation (the replaced secrets are kept a while for first
    /// messages still in flight, then deleted). `now` is Unix seconds.
    pub fn replenish_upload(&mut self, challenge: &[u8], left: (u64, u64), now: u64) -> Option<KeyUpload> {
        let rotate_signed = now >= self.signed_at.saturating_add(SIGNED_PREKEY_ROTATION_SECS);
        let rotate_last_resort = now >= self.last_resort_at.saturating_add(LAST_RESORT_ROTATION_SECS);
        if left.0 >= PREKEY_LOW_WATER && left.1 >= PREKEY_LOW_WATER && !rotate_signed && !rotate_last_resort {
            return None;
        }
        let spk = rotate_signed.then(|| {
            self.signed_at = now;
            self.prekeys.new_signed_prekey(&mut OsRng, &self.keys, now)
        });
        let otpks = if left.0 < PREKEY_LOW_WATER { self.prekeys.new_one_time_prekeys(&mut OsRng, PREKEY_BATCH, now) } else { Vec::new() };
        let mut kems: Vec<_> = if left.1 < PREKEY_LOW_WATER {
            (0..PREKEY_BATCH).map(|_| self.prekeys.new_kem_prekey(&mut OsRng, &self.keys, KemPrekeyKind::OneTime, now)).collect()
        } else {
            Vec::new()
        };
        if rotate_last_resort {
            self.last_resort_at = now;
            kems.push(self.prekeys.new_kem_prekey(&mut OsRng, &self.keys, KemPrekeyKind::LastResort, now));
        }
        let cutoff = now.saturating_sub(RETIRED_PREKEY_RETENTION_SECS);
        self.prekeys.retire_signed_before(cutoff);
        self.prekeys.retire_last_resort_before(cutoff);
        Some(KeyUpload::sign(&self.keys, self.certificate.clone(), spk, otpks, kems, challenge))
    }

    /// Start a session with a contact's device from its bundle.
    pub fn initiate(&self, bundle: &imfree_crypto::prekeys::PrekeyBundle) -> Result<RatchetSession, ClientError> {
        RatchetSession::initiate(&mut OsRng, &self.certificate, &self.keys, bundle).map_err(e2e)
    }

    /// The next sequence number for a message from this device.
    pub fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    /// Decrypt a session message from a contact's device, with the stored session if there is one that it belongs
    /// to, else by accepting it as a new session (a first message). Returns the new session state and the message.
    pub fn decrypt(&mut self, existing: Option<RatchetSession>, message: &SessionMessage) -> Result<(RatchetSession, InnerMessage), ClientError> {
        if let Some(mut session) = existing
            && (message.prekey.is_none() || session.is_from_this_setup(message)) {
                let inner = session.decrypt(&mut OsRng, message).map_err(e2e)?;
                return Ok((session, inner));
            }
        let accepted = RatchetSession::accept(&mut OsRng, &self.certificate, &self.keys, &self.prekeys, &mut self.replay, message).map_err(e2e)?;
        self.prekeys.consume(&accepted.consumed);
        Ok((accepted.session, accepted.message))
    }
}

/// Envelope ids are ULIDs; inside the ciphertext they travel as their 16 bytes.
pub fn id_bytes(id: &str) -> Option<[u8; 16]> {
    ulid::Ulid::from_string(id).ok().map(|u| u.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prekeys_are_replenished_and_rotated_on_schedule() {
        let mut e2e = DeviceE2e::create(DeviceKeys::generate());
        let first = e2e.first_upload(b"c");
        assert!(first.signed_prekey.is_some());
        let t0 = e2e.signed_at;
        let day = 24 * 3600;
        let plenty = (PREKEY_LOW_WATER, PREKEY_LOW_WATER);
        assert!(e2e.replenish_upload(b"c", plenty, t0 + day).is_none(), "nothing due");

        let low = e2e.replenish_upload(b"c", (0, PREKEY_LOW_WATER), t0 + day).expect("low on X25519 prekeys");
        assert_eq!(low.one_time_prekeys.len(), PREKEY_BATCH);
        assert!(low.kem_prekeys.is_empty() && low.signed_prekey.is_none());

        let week = e2e.replenish_upload(b"c", plenty, t0 + 8 * day).expect("signed prekey due");
        assert!(week.signed_prekey.is_some() && week.one_time_prekeys.is_empty());
        assert!(e2e.replenish_upload(b"c", plenty, t0 + 9 * day).is_none(), "rotated once, not again");

        let month = e2e.replenish_upload(b"c", plenty, t0 + 31 * day).expect("last resort due");
        assert!(month.kem_prekeys.iter().any(|k| k.kind == KemPrekeyKind::LastResort));
        month.verify(b"c").expect("a rotation upload verifies like any other");
    }
}
