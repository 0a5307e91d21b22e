//! End-to-end messages between users' devices, without I/O: which devices must get a message and whether they are
//! who they claim to be, the sessions to encrypt on (made from prekey bundles where none exists), and opening what
//! arrives.
//!
//! Every contact's device list goes through the same checks before anything is encrypted to it: each certificate
//! verifies and all are from one identity key; that key is the one pinned for the contact (pinned on first sight;
//! a different one is [`ClientError::IdentityChanged`] and the caller holds the message); devices on the contact's
//! signed revocation list are left out, and a list older than the newest one seen is refused.

use imfree_crypto::envelope::InnerMessage;
use imfree_crypto::identity::DeviceCertificate;
use imfree_crypto::prekeys::PrekeyBundle;
use imfree_crypto::ratchet::SessionMessage;
use imfree_crypto::revocation::{RevocationList, check_not_rolled_back};
use imfree_proto::{DevicePayload, Payload};

use crate::ClientError;
use crate::device::{DeviceSlot, PeerSessions, id_bytes};
use crate::directory::KeyDirectory;
use crate::store::KeyStore;

/// This device's view of pairwise end-to-end messaging: who it is, its key store, and where state is kept.
pub struct Pairwise<'a, S> {
    /// This user's name.
    pub user: &'a str,
    /// This device's id at the relay.
    pub device: &'a str,
    /// This device's E2E state.
    pub keys: &'a DeviceSlot,
    /// Where sessions, pins and the device state are kept.
    pub store: &'a S,
}

/// What a delivery opened to.
#[derive(Debug)]
pub enum Opened {
    /// Decrypted, from a device certified by the identity pinned for the sender; the session is stored.
    Trusted {
        /// The authenticated inner message (its id is the envelope's).
        inner: InnerMessage,
        /// The sending device's certificate.
        peer: DeviceCertificate,
    },
    /// Decrypted, but the sender's identity key is not the pinned one: the caller shows it marked and acts on
    /// nothing in it. The session is not kept and the pin stays until the user accepts the new key.
    IdentityChanged {
        /// The authenticated inner message.
        inner: InnerMessage,
    },
    /// Not readable, and why (shown to the user in place of the message).
    Unreadable(String),
}

impl<S: KeyStore> Pairwise<'_, S> {
    /// `user`'s devices with verified certificates, checked against the identity key pinned for the user (pinned
    /// now on first sight) and the user's revocation list.
    pub async fn devices_of(&self, directory: &mut impl KeyDirectory, user: &str) -> Result<Vec<(String, DeviceCertificate)>, ClientError> {
        let list = directory.device_list(user).await?;
        let mut out = Vec::with_capacity(list.devices.len());
        let mut identity: Option<[u8; 32]> = None;
        for entry in list.devices {
            let cert: DeviceCertificate = serde_json::from_value(entry.certificate)
                .map_err(|e| ClientError::E2e(format!("{user}'s device certificate is malformed: {e}")))?;
            cert.verify().map_err(|e| ClientError::E2e(format!("{user}'s device certificate does not verify: {e}")))?;
            // Every device of a user must be certified by the same identity, or the relay is mixing in a stranger.
            match identity {
                None => identity = Some(cert.user_identity),
                Some(k) if k != cert.user_identity => {
                    return Err(ClientError::E2e(format!("{user}'s devices are certified by different identities; refusing")));
                }
                Some(_) => {}
            }
            out.push((entry.device, cert));
        }
        if let Some(key) = identity {
            self.check_identity(user, &key).await?;
        }
        self.drop_revoked(user, identity, list.revocation.as_ref().map(|p| p.0.as_slice()), &mut out).await?;
        Ok(out)
    }

    /// Compare a contact's identity key with the pinned one; pin on first sight. For this user, the key must be
    /// this device's own identity.
    pub async fn check_identity(&self, user: &str, key: &[u8; 32]) -> Result<(), ClientError> {
        if user == self.user {
            let mine = self.keys.with(|e| Ok(e.identity_key()))?;
            if &mine != key {
                return Err(ClientError::E2e("the relay presented another identity for this account; refusing".into()));
            }
            return Ok(());
        }
        match self.store.pinned_identity(user).await? {
            None => self.store.pin_identity(user, key).await,
            Some(pinned) if &pinned == key => Ok(()),
            Some(_) => {
                self.store.note_identity_change(user, key).await?;
                Err(ClientError::IdentityChanged { user: user.to_owned() })
            }
        }
    }

    /// Leave out of `devices` (a user's verified device certificates) those on the user's revocation list, after
    /// checking the list: signed by `identity` (the identity the certificates share, else the pinned one) and not
    /// older than the newest list seen for the user, which is then remembered.
    async fn drop_revoked(
        &self,
        user: &str,
        identity: Option<[u8; 32]>,
        served: Option<&[u8]>,
        devices: &mut Vec<(String, DeviceCertificate)>,
    ) -> Result<(), ClientError> {
        let refused =
            |reason: &dyn std::fmt::Display| ClientError::E2e(format!("{user}'s device revocation list: {reason}; refusing to use this device list"));
        let known = match self.store.revocation_list(user).await? {
            Some(bytes) => RevocationList::decode(&bytes).map(|l| l.version).unwrap_or(0),
            None => 0,
        };
        let identity = match identity {
            Some(k) => Some(k),
            None => self.store.pinned_identity(user).await?,
        };
        let list = match (served, identity) {
            (Some(bytes), Some(identity)) => {
                let list = RevocationList::decode(bytes).map_err(|e| refused(&e))?;
                list.verify(&identity).map_err(|e| refused(&e))?;
                Some(list)
            }
            // Without a known identity nothing can be checked: the list is not used (and not remembered).
            _ => None,
        };
        check_not_rolled_back(known, list.as_ref())
            .map_err(|e| refused(&format!("{e} (the relay may be trying to bring back a revoked device)")))?;
        if let Some(list) = list {
            devices.retain(|(_, cert)| !list.is_revoked(cert.device_id));
            if list.version > known {
                self.store.put_revocation_list(user, &list.encode()).await?;
            }
        }
        Ok(())
    }

    /// Encrypt a content document (envelope `id`, a ULID) for every current device of `to` and this user's other
    /// devices: on the session each already has, else on a new one from a claimed prekey bundle. The sessions and
    /// the sequence counter are stored before the payloads are returned. A note to oneself with no other device
    /// gives no payload.
    pub async fn encrypt_for(&self, directory: &mut impl KeyDirectory, to: &str, id: &str, content: &[u8]) -> Result<Vec<DevicePayload>, ClientError> {
        let me = self.user;
        let mut targets: Vec<(String, String, DeviceCertificate)> = Vec::new();
        for user in if to == me { vec![me] } else { vec![to, me] } {
            for (device, cert) in self.devices_of(directory, user).await? {
                if !(user == me && device == self.device) {
                    targets.push((user.to_owned(), device, cert));
                }
            }
        }
        if !targets.iter().any(|(u, _, _)| u == to) && to != me {
            return Err(ClientError::E2e(format!("{to} has no device that can receive end-to-end encrypted messages yet")));
        }
        let id_bytes = id_bytes(id).ok_or_else(|| ClientError::E2e(format!("envelope id {id} is not a ULID")))?;
        // Sessions that exist and still belong to the listed certificate; bundles for the rest.
        let mut sessions: Vec<(String, String, PeerSessions)> = Vec::new();
        let mut missing: std::collections::BTreeMap<String, Vec<(String, DeviceCertificate)>> = Default::default();
        for (user, device, cert) in targets {
            let existing =
                self.store.session(&user, &device).await?.and_then(|b| PeerSessions::decode(&b)).filter(|s| *s.current.peer() == cert);
            match existing {
                Some(s) => sessions.push((user, device, s)),
                None => missing.entry(user).or_default().push((device, cert)),
            }
        }
        for (user, devices) in missing {
            let wanted: Vec<String> = devices.iter().map(|(d, _)| d.clone()).collect();
            for b in directory.claim_bundles(&user, wanted).await? {
                let Some((_, cert)) = devices.iter().find(|(d, _)| *d == b.device) else { continue };
                let bundle: PrekeyBundle = serde_json::from_value(b.bundle).map_err(|e| ClientError::E2e(format!("bundle: {e}")))?;
                // The bundle must be for the device the list certified, so a relay cannot swap keys in.
                if bundle.certificate != *cert {
                    return Err(ClientError::E2e(format!("{user}'s prekey bundle does not match the device's certificate; refusing")));
                }
                let session = self.keys.with(|e| e.initiate(&bundle))?;
                sessions.push((user.clone(), b.device, PeerSessions::new(session)));
            }
        }
        let sequence = self.keys.with(|e| Ok(e.next_sequence()))?;
        let inner = InnerMessage { id: id_bytes, sequence, body: content.to_vec() };
        let mut payloads = Vec::with_capacity(sessions.len());
        let mut saved = Vec::with_capacity(sessions.len());
        for (user, device, mut session) in sessions {
            let message = session.current.encrypt(&inner)?;
            payloads.push(DevicePayload { device: device.clone(), data: Payload(message.to_bytes()) });
            saved.push((user, device, session.encode()));
        }
        self.keys.persist(self.store, &saved).await?;
        Ok(payloads)
    }

    /// Open a pairwise delivery: envelope `id` from `from`'s device `from_device`, carrying `data`. A message that
    /// cannot be read is [`Opened::Unreadable`] (the caller shows why and acknowledges it); only a failing store is
    /// an error, so that nothing is acknowledged that was not recorded.
    pub async fn open(&self, from: &str, from_device: &str, id: &str, data: &[u8]) -> Result<Opened, ClientError> {
        let message = match SessionMessage::from_bytes(data) {
            Ok(m) => m,
            Err(e) => return Ok(Opened::Unreadable(format!("not a session message: {e}"))),
        };
        let existing = self.store.session(from, from_device).await?.and_then(|b| PeerSessions::decode(&b));
        let (sessions, inner) = match self.keys.with(|e| e.decrypt(existing, &message)) {
            Ok(x) => x,
            Err(e) => return Ok(Opened::Unreadable(e.to_string())),
        };
        // The id inside the ciphertext is the authenticated one: a relay that rewrote the envelope id is caught here.
        let id_matches = id_bytes(id) == Some(inner.id);
        // The sender's certificate must belong to the identity pinned for the sender.
        let peer = sessions.current.peer().clone();
        match self.check_identity(from, &peer.user_identity).await {
            Ok(()) => {}
            Err(ClientError::IdentityChanged { .. }) if id_matches => return Ok(Opened::IdentityChanged { inner }),
            Err(e @ ClientError::Store(_)) => return Err(e),
            Err(ClientError::IdentityChanged { .. }) => return Ok(Opened::Unreadable(ID_MISMATCH.into())),
            Err(e) => return Ok(Opened::Unreadable(e.to_string())),
        }
        // Trusted: the session advanced and is kept, whatever the message turns out to be.
        self.keys.persist(self.store, &[(from.to_owned(), from_device.to_owned(), sessions.encode())]).await?;
        if !id_matches {
            return Ok(Opened::Unreadable(ID_MISMATCH.into()));
        }
        Ok(Opened::Trusted { inner, peer })
    }
}

const ID_MISMATCH: &str = "the envelope id does not match the authenticated id inside";
