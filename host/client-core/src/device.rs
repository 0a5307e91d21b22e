//! This device's end-to-end state — its key store: the user identity (made on the account's first device, handed to
//! each device linked from it), the device certificate, the prekey secrets and the replay cache of last-resort
//! set-ups; how uploads are made; how a session message is decrypted, and the sessions kept per contact device.
//!
//! It owns key material and touches neither the network nor a clock: callers pass the time and fetch bundles.

use std::collections::HashSet;

use imfree_crypto::device::DeviceKeys;
use imfree_crypto::envelope::InnerMessage;
use imfree_crypto::identity::{DeviceCertificate, UserIdentity};
use imfree_crypto::prekeys::{KemPrekeyKind, KeyUpload, LocalPrekeys};
use imfree_crypto::ratchet::{Session as RatchetSession, SessionMessage};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::ClientError;
use crate::store::KeyStore;

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
/// Earlier sessions kept per contact device for messages still arriving on them.
pub const MAX_PREVIOUS_SESSIONS: usize = 4;

/// The sessions with one contact's device: the one this device sends on, and earlier ones kept to decrypt what still
/// arrives on them. Two devices that start a session with each other at the same time (simultaneous initiation)
/// each accept the other's set-up, so for a while each sends on a different session. A message that decrypts on an
/// earlier session makes that one current again, so both sides settle on the session the other last used, as
/// Signal's session records do. Stored as one (sealed) row per contact device.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct PeerSessions {
    /// The session messages are sent on.
    pub current: RatchetSession,
    /// Earlier sessions, most recent first, at most [`MAX_PREVIOUS_SESSIONS`].
    #[serde(default)]
    pub previous: Vec<RatchetSession>,
}

impl PeerSessions {
    /// A record holding only `session`.
    pub fn new(session: RatchetSession) -> Self {
        PeerSessions { current: session, previous: Vec::new() }
    }

    /// Read a stored record (also the single session that versions before simultaneous-initiation handling stored).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice::<PeerSessions>(bytes)
            .ok()
            .or_else(|| serde_json::from_slice::<RatchetSession>(bytes).ok().map(Self::new))
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        json(self)
    }

    /// Make `session` current, keeping the one it replaces first among the earlier ones.
    fn promote(mut self, session: RatchetSession) -> Self {
        let replaced = std::mem::replace(&mut self.current, session);
        self.previous.insert(0, replaced);
        self.previous.truncate(MAX_PREVIOUS_SESSIONS);
        self
    }
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
    /// Make the account's identity on its first device and certify this device (`now`: Unix seconds); the first
    /// prekeys come with [`DeviceE2e::first_upload`].
    pub fn create(keys: DeviceKeys, now: u64) -> DeviceE2e {
        let identity = UserIdentity::generate(&mut OsRng);
        let certificate = identity.certify_device(OsRng.next_u32(), &keys, now);
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
    pub async fn load(store: &impl KeyStore, keys: DeviceKeys) -> Result<Option<DeviceE2e>, ClientError> {
        let Some(cert) = store.state("certificate").await? else { return Ok(None) };
        let certificate: DeviceCertificate = serde_json::from_slice(&cert).map_err(|e| ClientError::Store(format!("certificate: {e}")))?;
        let mut prekeys: LocalPrekeys = match store.state("prekeys").await? {
            Some(p) => serde_json::from_slice(&p).map_err(|e| ClientError::Store(format!("prekeys: {e}")))?,
            None => LocalPrekeys::new(),
        };
        prekeys.expand();
        let replay = match store.state("replay").await? {
            Some(r) => serde_json::from_slice(&r).unwrap_or_default(),
            None => HashSet::new(),
        };
        let identity = match store.state("identity").await? {
            Some(seed) if seed.len() == 32 => {
                let mut s = Zeroizing::new([0u8; 32]);
                s.copy_from_slice(&seed);
                Some(UserIdentity::from_seed(&s))
            }
            _ => None,
        };
        let number = async |name: &str| -> Result<u64, ClientError> {
            Ok(store.state(name).await?.and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0))
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
    /// relay's `challenge`; `now` is Unix seconds.
    pub fn first_upload(&mut self, challenge: &[u8], now: u64) -> KeyUpload {
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

    /// This device's keys (for the Noise handshake with the relay and for linking).
    pub fn keys(&self) -> &DeviceKeys {
        &self.keys
    }

    /// The next sequence number for a message from this device.
    pub fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    /// Decrypt a session message from a contact's device: in the current session or an earlier one it belongs to
    /// (which then becomes current), else by accepting it as a new session (a first message), which becomes current
    /// with the others kept. Returns the sessions to store and the message; on failure nothing changes.
    pub fn decrypt(&mut self, existing: Option<PeerSessions>, message: &SessionMessage) -> Result<(PeerSessions, InnerMessage), ClientError> {
        if let Some(mut sessions) = existing {
            let mut failure = None;
            // A session's `decrypt` leaves it unchanged when it fails, so trying each in turn is safe.
            for i in 0..=sessions.previous.len() {
                let session = if i == 0 { &mut sessions.current } else { &mut sessions.previous[i - 1] };
                if message.prekey.is_some() && !session.is_from_this_setup(message) {
                    continue;
                }
                match session.decrypt(&mut OsRng, message) {
                    Ok(inner) if i == 0 => return Ok((sessions, inner)),
                    Ok(inner) => {
                        let session = sessions.previous.remove(i - 1);
                        return Ok((sessions.promote(session), inner));
                    }
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                }
            }
            if message.prekey.is_none() || failure.is_some() {
                return Err(e2e(failure.unwrap_or(imfree_crypto::E2eError::Malformed("no session for this message"))));
            }
            let accepted = RatchetSession::accept(&mut OsRng, &self.certificate, &self.keys, &self.prekeys, &mut self.replay, message).map_err(e2e)?;
            self.prekeys.consume(&accepted.consumed);
            return Ok((sessions.promote(accepted.session), accepted.message));
        }
        let accepted = RatchetSession::accept(&mut OsRng, &self.certificate, &self.keys, &self.prekeys, &mut self.replay, message).map_err(e2e)?;
        self.prekeys.consume(&accepted.consumed);
        Ok((PeerSessions::new(accepted.session), accepted.message))
    }
}

/// Envelope ids are ULIDs; inside the ciphertext they travel as their 16 bytes.
pub fn id_bytes(id: &str) -> Option<[u8; 16]> {
    ulid::Ulid::from_string(id).ok().map(|u| u.to_bytes())
}

/// The device's E2E state as a client holds it: absent until the device has a certificate (a first device makes
/// its identity; a later one is linked), then shared by everything that encrypts, decrypts or signs. Each use
/// borrows the state for one synchronous step, so no lock is held across an `await`.
#[derive(Default)]
pub struct DeviceSlot(std::sync::Mutex<Option<DeviceE2e>>);

impl DeviceSlot {
    /// A slot holding `state`, if any.
    pub fn new(state: Option<DeviceE2e>) -> Self {
        DeviceSlot(std::sync::Mutex::new(state))
    }

    /// Whether the device takes part in end-to-end encryption (it has a certificate).
    pub fn ready(&self) -> bool {
        self.0.lock().map(|e| e.is_some()).unwrap_or(false)
    }

    /// This device's certificate, once it has one.
    pub fn certificate(&self) -> Option<DeviceCertificate> {
        self.0.lock().ok().and_then(|e| e.as_ref().map(|e| e.certificate.clone()))
    }

    /// Run `f` on the state; an error if the device has none yet.
    pub fn with<T>(&self, f: impl FnOnce(&mut DeviceE2e) -> Result<T, ClientError>) -> Result<T, ClientError> {
        let mut guard = self.0.lock().map_err(|_| ClientError::E2e("state lock poisoned".into()))?;
        let e2e = guard.as_mut().ok_or_else(|| {
            ClientError::E2e("this device has no end-to-end keys: link it with `imfree client devices link` and approve it on a linked device".into())
        })?;
        f(e2e)
    }

    /// Install the state (a new identity, or a device just linked), once it is persisted.
    pub fn set(&self, state: DeviceE2e) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(state);
        }
    }

    /// Store `sessions` (user, device, encoded [`PeerSessions`]) together with the device state, in one write.
    pub async fn persist(&self, store: &impl KeyStore, sessions: &[(String, String, Vec<u8>)]) -> Result<(), ClientError> {
        let state = self.with(|e| Ok(e.state()))?;
        store.save(sessions, &state).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device and the bundle a relay would hand out for it (from its first upload).
    fn device() -> (DeviceE2e, imfree_crypto::prekeys::PrekeyBundle) {
        let mut e2e = DeviceE2e::create(DeviceKeys::generate(), 1_800_000_000);
        let upload = e2e.first_upload(b"c", 1_800_000_000);
        let bundle = imfree_crypto::prekeys::PrekeyBundle {
            certificate: upload.certificate.clone(),
            signed_prekey: upload.signed_prekey.clone().expect("a signed prekey"),
            one_time_prekey: upload.one_time_prekeys.first().cloned(),
            kem_prekey: upload.kem_prekeys.iter().find(|k| k.kind == KemPrekeyKind::OneTime).cloned().expect("a KEM prekey"),
        };
        (e2e, bundle)
    }

    fn inner(n: u64) -> InnerMessage {
        InnerMessage { id: [n as u8; 16], sequence: n, body: format!("message {n}").into_bytes() }
    }

    /// Alice and Bob each start a session before reading the other's first message. Every message decrypts,
    /// whoever sends on whichever session, and once one of them reads before answering both send on one session.
    #[test]
    fn simultaneous_initiation_settles_on_one_session_and_loses_nothing() {
        let ((mut alice, alice_bundle), (mut bob, bob_bundle)) = (device(), device());
        let mut at_alice = Some(PeerSessions::new(alice.initiate(&bob_bundle).unwrap()));
        let mut at_bob = Some(PeerSessions::new(bob.initiate(&alice_bundle).unwrap()));
        let mut n = 0;
        let mut send = |sessions: &mut Option<PeerSessions>| {
            n += 1;
            let m = sessions.as_mut().unwrap().current.encrypt(&inner(n)).unwrap();
            (n, SessionMessage::from_bytes(&m.to_bytes()).unwrap())
        };
        // The two first messages cross, then both keep sending; each side reads after every round.
        for _ in 0..4 {
            let (to_bob, a) = send(&mut at_alice);
            let (to_alice, b) = send(&mut at_bob);
            let (sessions, got) = alice.decrypt(at_alice.take(), &b).expect("alice reads bob's message");
            assert_eq!(got.sequence, to_alice);
            at_alice = Some(sessions);
            let (sessions, got) = bob.decrypt(at_bob.take(), &a).expect("bob reads alice's message");
            assert_eq!(got.sequence, to_bob);
            at_bob = Some(sessions);
        }
        // Sending in lockstep, the two may keep switching sessions, but nothing is lost. Once one side reads before it
        // answers, both send on the same session: each message decrypts on the receiver's current one.
        let (_, a) = send(&mut at_alice);
        let (sessions, _) = bob.decrypt(at_bob.take(), &a).unwrap();
        at_bob = Some(sessions);
        for _ in 0..2 {
            let (_, b) = send(&mut at_bob);
            at_alice.as_mut().unwrap().current.decrypt(&mut OsRng, &b).expect("bob answers on the session alice sends on");
            let (_, a) = send(&mut at_alice);
            at_bob.as_mut().unwrap().current.decrypt(&mut OsRng, &a).expect("alice answers on the session bob sends on");
        }
        let (alice_sessions, bob_sessions) = (at_alice.unwrap(), at_bob.unwrap());
        assert!(alice_sessions.previous.len() <= MAX_PREVIOUS_SESSIONS && bob_sessions.previous.len() <= MAX_PREVIOUS_SESSIONS);

        // A record from before (a single session) still reads.
        let single = json(&bob_sessions.current);
        assert!(PeerSessions::decode(&single).is_some_and(|s| s.previous.is_empty()));
        assert!(PeerSessions::decode(b"not a session").is_none());
    }

    #[test]
    fn prekeys_are_replenished_and_rotated_on_schedule() {
        let mut e2e = DeviceE2e::create(DeviceKeys::generate(), 1_800_000_000);
        let first = e2e.first_upload(b"c", 1_800_000_000);
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
