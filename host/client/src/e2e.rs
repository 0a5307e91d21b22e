//! This device's end-to-end state: the user identity (on the account's first device), the device certificate, the
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
}

impl DeviceE2e {
    /// Make the account's identity on its first device, certify this device and make its first prekeys.
    pub fn create(keys: DeviceKeys) -> DeviceE2e {
        let identity = UserIdentity::generate(&mut OsRng);
        let certificate = identity.certify_device(OsRng.next_u32(), &keys, now_secs());
        DeviceE2e { keys, identity: Some(identity), certificate, prekeys: LocalPrekeys::new(), replay: HashSet::new(), sequence: 0 }
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
        let sequence = store
            .e2e_state("sequence")
            .await?
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        Ok(Some(DeviceE2e { keys, identity, certificate, prekeys, replay, sequence }))
    }

    /// Everything to persist, as (name, value) pairs.
    pub fn state(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut out = vec![
            ("certificate", json(&self.certificate)),
            ("prekeys", json(&self.prekeys)),
            ("replay", json(&self.replay)),
            ("sequence", self.sequence.to_be_bytes().to_vec()),
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
        let spk = self.prekeys.new_signed_prekey(&mut OsRng, &self.keys, now);
        let otpks = self.prekeys.new_one_time_prekeys(&mut OsRng, PREKEY_BATCH, now);
        let mut kems: Vec<_> =
            (0..PREKEY_BATCH).map(|_| self.prekeys.new_kem_prekey(&mut OsRng, &self.keys, KemPrekeyKind::OneTime, now)).collect();
        kems.push(self.prekeys.new_kem_prekey(&mut OsRng, &self.keys, KemPrekeyKind::LastResort, now));
        KeyUpload::sign(&self.keys, self.certificate.clone(), Some(spk), otpks, kems, challenge)
    }

    /// More one-time prekeys when the relay runs low.
    pub fn replenish_upload(&mut self, challenge: &[u8], left: (u64, u64)) -> Option<KeyUpload> {
        if left.0 >= PREKEY_LOW_WATER && left.1 >= PREKEY_LOW_WATER {
            return None;
        }
        let now = now_secs();
        let otpks = if left.0 < PREKEY_LOW_WATER { self.prekeys.new_one_time_prekeys(&mut OsRng, PREKEY_BATCH, now) } else { Vec::new() };
        let kems = if left.1 < PREKEY_LOW_WATER {
            (0..PREKEY_BATCH).map(|_| self.prekeys.new_kem_prekey(&mut OsRng, &self.keys, KemPrekeyKind::OneTime, now)).collect()
        } else {
            Vec::new()
        };
        Some(KeyUpload::sign(&self.keys, self.certificate.clone(), None, otpks, kems, challenge))
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
