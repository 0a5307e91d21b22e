//! A pairwise session: the Double Ratchet after Signal's specification, seeded by PQXDH.
//!
//! X25519 DH ratchet; KDF_RK = HKDF-SHA-256; KDF_CK = HMAC-SHA-256; messages sealed with ChaCha20-Poly1305 under
//! the session associated data (both identities and the PQXDH transcript hash) followed by the message header.
//! Forward jumps are capped ([`MAX_SKIP`]), stored skipped keys are bounded ([`MAX_SKIPPED_KEYS`], oldest evicted),
//! every message key is deleted once used. Decryption works on copies of the chain state and commits only after
//! the AEAD and the inner envelope have verified, so a failed or forged message leaves the session exactly as it
//! was. The session is serialisable (serde) for the client's encrypted store; it holds secrets.

use std::collections::HashSet;

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::aead;
use crate::device::DeviceKeys;
use crate::encoding::{Reader, b64, b64_opt, b64_vec};
use crate::envelope::InnerMessage;
use crate::error::E2eError;
use crate::identity::DeviceCertificate;
use crate::kdf::{kdf_ck, kdf_rk, x25519, x25519_public};
use crate::pqxdh::{self, PqxdhHeader};
use crate::prekeys::{ConsumedPrekeys, PrekeyBundle, PrekeySecrets};

/// Most message keys skipped by one incoming message, per chain (bounded work for a forged counter).
pub const MAX_SKIP: u32 = 1000;
/// Most skipped message keys kept per session; the oldest are evicted (those messages then cannot be read).
pub const MAX_SKIPPED_KEYS: usize = 2000;
/// Version byte of [`SessionMessage`].
pub const MESSAGE_VERSION: u8 = 1;

/// The cleartext header of a ratchet message; authenticated as associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageHeader {
    /// The sender's current ratchet public key.
    #[serde(with = "b64")]
    pub ratchet_key: [u8; 32],
    /// Number of messages in the sender's previous sending chain.
    pub previous_chain_length: u32,
    /// Message number in the current sending chain.
    pub number: u32,
}

impl MessageHeader {
    /// `version (1) || ratchet key (32) || previous chain length (u32 BE) || number (u32 BE)`.
    pub fn encode(&self) -> [u8; 41] {
        let mut out = [0u8; 41];
        out[0] = MESSAGE_VERSION;
        out[1..33].copy_from_slice(&self.ratchet_key);
        out[33..37].copy_from_slice(&self.previous_chain_length.to_be_bytes());
        out[37..41].copy_from_slice(&self.number.to_be_bytes());
        out
    }
}

/// A message on the wire: the PQXDH header while the session is unconfirmed, the ratchet header, the ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMessage {
    /// Present on the initiator's messages until the responder has answered.
    pub prekey: Option<PqxdhHeader>,
    /// Ratchet header.
    pub header: MessageHeader,
    /// ChaCha20-Poly1305 ciphertext of the encoded [`InnerMessage`], tag included.
    #[serde(with = "b64_vec")]
    pub ciphertext: Vec<u8>,
}

impl SessionMessage {
    /// `version (1) || 0x00 | 0x01 || [PQXDH header] || ratchet key (32) || previous chain length (u32 BE) ||
    /// number (u32 BE) || ciphertext`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.ciphertext.len() + if self.prekey.is_some() { 1400 } else { 0 });
        out.push(MESSAGE_VERSION);
        match &self.prekey {
            None => out.push(0),
            Some(h) => {
                out.push(1);
                h.encode(&mut out);
            }
        }
        out.extend_from_slice(&self.header.encode()[1..]);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Decode untrusted bytes; nothing is verified until decryption.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, E2eError> {
        let mut r = Reader::new(bytes);
        if r.u8("message version")? != MESSAGE_VERSION {
            return Err(E2eError::Malformed("message version"));
        }
        let prekey = match r.u8("prekey flag")? {
            0 => None,
            1 => Some(PqxdhHeader::decode(&mut r)?),
            _ => return Err(E2eError::Malformed("prekey flag")),
        };
        let header = MessageHeader {
            ratchet_key: r.array("ratchet key")?,
            previous_chain_length: r.u32("previous chain length")?,
            number: r.u32("message number")?,
        };
        let ciphertext = r.rest().to_vec();
        if ciphertext.len() < aead::TAG_LEN {
            return Err(E2eError::Malformed("ciphertext"));
        }
        Ok(SessionMessage { prekey, header, ciphertext })
    }
}

/// Where the responder remembers first messages made with a last-resort prekey. It must persist at least as long
/// as that prekey's secret is kept.
pub trait ReplayCache {
    /// Whether this set-up was accepted before.
    fn contains(&self, key: &[u8; 32]) -> bool;
    /// Remember an accepted set-up.
    fn insert(&mut self, key: [u8; 32]);
}

impl ReplayCache for HashSet<[u8; 32]> {
    fn contains(&self, key: &[u8; 32]) -> bool {
        HashSet::contains(self, key)
    }
    fn insert(&mut self, key: [u8; 32]) {
        HashSet::insert(self, key);
    }
}

#[derive(Serialize, Deserialize)]
struct SkippedKey {
    #[serde(with = "b64")]
    ratchet_key: [u8; 32],
    number: u32,
    #[serde(with = "b64")]
    message_key: [u8; 32],
}

impl Drop for SkippedKey {
    fn drop(&mut self) {
        self.message_key.zeroize();
    }
}

/// The chain part of the state: copied, advanced, and written back only on success.
#[derive(Clone, Serialize, Deserialize)]
struct Chains {
    #[serde(with = "b64")]
    root_key: [u8; 32],
    #[serde(with = "b64")]
    ratchet_secret: [u8; 32],
    #[serde(with = "b64")]
    ratchet_public: [u8; 32],
    #[serde(with = "b64_opt")]
    remote_ratchet_key: Option<[u8; 32]>,
    #[serde(with = "b64_opt")]
    sending_chain: Option<[u8; 32]>,
    #[serde(with = "b64_opt")]
    receiving_chain: Option<[u8; 32]>,
    sent: u32,
    received: u32,
    previous_sent: u32,
}

impl Drop for Chains {
    fn drop(&mut self) {
        self.root_key.zeroize();
        self.ratchet_secret.zeroize();
        self.sending_chain.zeroize();
        self.receiving_chain.zeroize();
    }
}

/// One pairwise session with one device of a contact.
#[derive(Serialize, Deserialize)]
pub struct Session {
    #[serde(with = "b64_vec")]
    associated_data: Vec<u8>,
    #[serde(with = "b64")]
    transcript: [u8; 32],
    peer: DeviceCertificate,
    initiator: bool,
    chains: Chains,
    skipped: Vec<SkippedKey>,
    /// The initiator's PQXDH header, sent until the first answer arrives.
    pending_prekey: Option<PqxdhHeader>,
    /// The responder's record of the set-up it accepted, to recognise the initiator's later copies.
    #[serde(with = "b64_opt")]
    accepted_prekey: Option<[u8; 32]>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer_device", &self.peer.device_id)
            .field("initiator", &self.initiator)
            .field("sent", &self.chains.sent)
            .field("received", &self.chains.received)
            .field("skipped_keys", &self.skipped.len())
            .finish_non_exhaustive()
    }
}

/// A session accepted from a first message.
pub struct Accepted {
    /// The new session.
    pub session: Session,
    /// The first message.
    pub message: InnerMessage,
    /// Prekeys to delete from the store now.
    pub consumed: ConsumedPrekeys,
}

impl Session {
    /// Start a session with a contact's device from its prekey bundle (verified here). Draws 96 bytes from `rng`:
    /// PQXDH's ephemeral secret and ML-KEM randomness, then the first ratchet secret.
    pub fn initiate(
        rng: &mut impl CryptoRngCore,
        my_certificate: &DeviceCertificate,
        my_keys: &DeviceKeys,
        bundle: &PrekeyBundle,
    ) -> Result<Session, E2eError> {
        let out = pqxdh::initiate(rng, my_certificate, my_keys, bundle)?;
        let mut ratchet_secret = [0u8; 32];
        rng.fill_bytes(&mut ratchet_secret);
        let dh = out.responder_ratchet_peer.agree(&ratchet_secret)?;
        let (root_key, sending_chain) = kdf_rk(&out.secret.root_key, &dh);
        Ok(Session {
            associated_data: out.secret.associated_data.clone(),
            transcript: out.secret.transcript,
            peer: bundle.certificate.clone(),
            initiator: true,
            chains: Chains {
                root_key: *root_key,
                ratchet_public: x25519_public(&ratchet_secret),
                ratchet_secret,
                remote_ratchet_key: Some(out.responder_ratchet_key),
                sending_chain: Some(*sending_chain),
                receiving_chain: None,
                sent: 0,
                received: 0,
                previous_sent: 0,
            },
            skipped: Vec::new(),
            pending_prekey: Some(out.header),
            accepted_prekey: None,
        })
    }

    /// Accept a first message (one carrying a PQXDH header) when no session for it exists. Nothing changes unless
    /// the message decrypts: only then is the replay cache updated and [`Accepted::consumed`] names the prekeys to
    /// delete. Draws 32 bytes from `rng` (the responder's next ratchet secret).
    pub fn accept(
        rng: &mut impl CryptoRngCore,
        my_certificate: &DeviceCertificate,
        my_keys: &DeviceKeys,
        prekeys: &impl PrekeySecrets,
        replay_cache: &mut impl ReplayCache,
        message: &SessionMessage,
    ) -> Result<Accepted, E2eError> {
        let prekey = message.prekey.as_ref().ok_or(E2eError::Malformed("not a first message"))?;
        let out = pqxdh::respond(my_certificate, my_keys, prekeys, prekey)?;
        if let Some(key) = &out.replay_key
            && replay_cache.contains(key)
        {
            return Err(E2eError::Replay);
        }
        let mut session = Session {
            associated_data: out.secret.associated_data.clone(),
            transcript: out.secret.transcript,
            peer: prekey.initiator.clone(),
            initiator: false,
            chains: Chains {
                root_key: *out.secret.root_key,
                ratchet_secret: *out.signed_prekey_secret,
                ratchet_public: out.signed_prekey_public,
                remote_ratchet_key: None,
                sending_chain: None,
                receiving_chain: None,
                sent: 0,
                received: 0,
                previous_sent: 0,
            },
            skipped: Vec::new(),
            pending_prekey: None,
            accepted_prekey: Some(prekey.digest()),
        };
        let first = session.decrypt(rng, message)?;
        if let Some(key) = out.replay_key {
            replay_cache.insert(key);
        }
        Ok(Accepted { session, message: first, consumed: out.consumed })
    }

    /// The contact device's certificate.
    pub fn peer(&self) -> &DeviceCertificate {
        &self.peer
    }

    /// The PQXDH transcript hash that identifies this session's set-up.
    pub fn transcript_hash(&self) -> &[u8; 32] {
        &self.transcript
    }

    /// Whether this side started the session.
    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// Whether `message` carries the set-up this session was accepted from (route it here, not to `accept`).
    pub fn is_from_this_setup(&self, message: &SessionMessage) -> bool {
        match (&message.prekey, &self.accepted_prekey) {
            (Some(h), Some(d)) => &h.digest() == d,
            _ => false,
        }
    }

    /// Encrypt one message. Needs no randomness: the DH ratchet draws when a reply arrives.
    pub fn encrypt(&mut self, message: &InnerMessage) -> Result<SessionMessage, E2eError> {
        let plaintext = Zeroizing::new(message.encode()?);
        let chains = &mut self.chains;
        let chain = chains.sending_chain.as_ref().ok_or(E2eError::Malformed("session has no sending chain yet"))?;
        if chains.sent == u32::MAX {
            return Err(E2eError::Exhausted);
        }
        let (next, message_key) = kdf_ck(chain);
        let header = MessageHeader {
            ratchet_key: chains.ratchet_public,
            previous_chain_length: chains.previous_sent,
            number: chains.sent,
        };
        let ad = [self.associated_data.as_slice(), &header.encode()].concat();
        let ciphertext = aead::seal(&message_key, &ad, &plaintext);
        chains.sending_chain = Some(*next);
        chains.sent += 1;
        Ok(SessionMessage { prekey: self.pending_prekey.clone(), header, ciphertext })
    }

    /// Decrypt one message of this session. On any error the session is unchanged. May draw 32 bytes from `rng`
    /// (a new ratchet secret when the sender's ratchet key is new).
    pub fn decrypt(&mut self, rng: &mut impl CryptoRngCore, message: &SessionMessage) -> Result<InnerMessage, E2eError> {
        if message.prekey.is_some() && !self.is_from_this_setup(message) {
            return Err(E2eError::WrongSession);
        }
        let header = &message.header;
        let ad = [self.associated_data.as_slice(), &header.encode()].concat();

        if let Some(pos) =
            self.skipped.iter().position(|k| k.ratchet_key == header.ratchet_key && k.number == header.number)
        {
            let plaintext = Zeroizing::new(aead::open(&self.skipped[pos].message_key, &ad, &message.ciphertext)?);
            let inner = InnerMessage::decode(&plaintext)?;
            self.skipped.remove(pos);
            self.pending_prekey = None;
            return Ok(inner);
        }

        let mut next = self.chains.clone();
        let mut new_skipped = Vec::new();
        if next.remote_ratchet_key != Some(header.ratchet_key) {
            if let (Some(chain), Some(remote)) = (next.receiving_chain, next.remote_ratchet_key) {
                let mut chain = Zeroizing::new(chain);
                skip(&mut chain, &mut next.received, header.previous_chain_length, remote, &mut new_skipped)?;
            }
            let dh = x25519(&next.ratchet_secret, &header.ratchet_key)?;
            let (root, receiving) = kdf_rk(&next.root_key, &dh);
            let mut secret = Zeroizing::new([0u8; 32]);
            rng.fill_bytes(secret.as_mut());
            let dh = x25519(&secret, &header.ratchet_key)?;
            let (root, sending) = kdf_rk(&root, &dh);
            next.previous_sent = next.sent;
            next.sent = 0;
            next.received = 0;
            next.remote_ratchet_key = Some(header.ratchet_key);
            next.root_key = *root;
            next.receiving_chain = Some(*receiving);
            next.sending_chain = Some(*sending);
            next.ratchet_secret = *secret;
            next.ratchet_public = x25519_public(&secret);
        }
        let mut chain = Zeroizing::new(next.receiving_chain.ok_or(E2eError::DecryptFailed)?);
        if header.number < next.received {
            return Err(E2eError::Duplicate);
        }
        skip(&mut chain, &mut next.received, header.number, header.ratchet_key, &mut new_skipped)?;
        let (following, message_key) = kdf_ck(&chain);
        let plaintext = Zeroizing::new(aead::open(&message_key, &ad, &message.ciphertext)?);
        let inner = InnerMessage::decode(&plaintext)?;

        // Verified: commit.
        next.receiving_chain = Some(*following);
        next.received = header.number + 1;
        self.chains = next;
        self.skipped.extend(new_skipped);
        if self.skipped.len() > MAX_SKIPPED_KEYS {
            let excess = self.skipped.len() - MAX_SKIPPED_KEYS;
            self.skipped.drain(..excess);
        }
        self.pending_prekey = None;
        Ok(inner)
    }

    /// Number of stored skipped message keys.
    pub fn skipped_keys(&self) -> usize {
        self.skipped.len()
    }
}

/// Advance `chain` from `*received` up to `until`, storing the keys passed over. Refuses before doing any work when
/// the jump exceeds [`MAX_SKIP`].
fn skip(
    chain: &mut Zeroizing<[u8; 32]>,
    received: &mut u32,
    until: u32,
    ratchet_key: [u8; 32],
    out: &mut Vec<SkippedKey>,
) -> Result<(), E2eError> {
    if until <= *received {
        return Ok(());
    }
    let jump = until - *received;
    if jump > MAX_SKIP {
        return Err(E2eError::TooFarAhead { jump: u64::from(jump), limit: MAX_SKIP });
    }
    while *received < until {
        let (next, message_key) = kdf_ck(chain);
        out.push(SkippedKey { ratchet_key, number: *received, message_key: *message_key });
        **chain = *next;
        *received += 1;
    }
    Ok(())
}
