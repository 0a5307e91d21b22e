//! Group messages with sender keys: each member device has its own sending chain (a chain key advanced by
//! HMAC-SHA-256, as in the Double Ratchet's symmetric step, and an Ed25519 key that signs every message of the
//! chain). A device hands its chain to every other member device in a [`SenderKeyDistribution`] over the pairwise
//! sessions; a group message is encrypted once and fanned out by the relay.
//!
//! Every group message names the membership-log head its sender had verified, and a receiver accepts it only when
//! that head is in its own verified log and the sender is a current member. When a member leaves or is removed,
//! every remaining device starts a new chain ([`GroupSession::membership_changed`]) and distributes it only to the
//! remaining members: the removed member cannot read later messages. A new member receives each chain at its
//! current iteration: earlier message keys cannot be derived from it.
//!
//! This module owns the formats and the chain state; sending distributions over pairwise sessions and fetching the
//! membership log are the client's.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::{Signer, SigningKey};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::encoding::{Canonical, Reader, b64};
use crate::envelope::InnerMessage;
use crate::error::E2eError;
use crate::identity::verify_ed25519;
use crate::kdf::{hkdf_sha256, kdf_ck};
use crate::membership::GroupState;

/// Label of a group message's signed bytes.
pub const GROUP_MESSAGE_LABEL: &str = "imfree/v1/group-message";
/// HKDF info that expands a group message key into the AEAD key and nonce.
pub const GROUP_KEYS_INFO: &[u8] = b"imfree/v1/group-message-keys";
/// Version byte of group messages and sender-key distributions.
pub const GROUP_VERSION: u8 = 1;
/// Most message keys one group message may skip in a chain.
pub const MAX_GROUP_SKIP: u32 = 2000;
/// Most skipped message keys kept per receiving chain (oldest evicted).
pub const MAX_SKIPPED_GROUP_KEYS: usize = 2000;
/// Length of an encoded [`SenderKeyDistribution`].
pub const DISTRIBUTION_LEN: usize = 1 + 16 + 4 + 4 + 32 + 32;
/// Largest group message ciphertext accepted (the inner envelope's limit plus padding and tag).
pub const MAX_GROUP_CIPHERTEXT: usize = crate::envelope::MAX_BODY + 128;

/// Why a group operation was refused. Every variant leaves the group session as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// A lower-level refusal (malformed bytes, bad signature, duplicate, jump too far, failed decryption).
    #[error(transparent)]
    Crypto(#[from] E2eError),
    /// The message or distribution belongs to another group.
    #[error("group message or sender key belongs to another group")]
    WrongGroup,
    /// The message names a membership head that is not in this client's verified log.
    #[error("the message names a group membership this client has not verified: fetch and replay the membership log")]
    UnknownHead,
    /// The sender (or this device) is not a current member.
    #[error("not a current member of the group")]
    NotAMember,
    /// No sender key of that device and chain is known.
    #[error("no sender key for this device's chain: ask the sender to send its sender key again")]
    NoSenderKey,
}

/// A device's sending chain as handed to another member device (over a pairwise session: it is secret).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderKeyDistribution {
    /// The group.
    #[serde(with = "b64")]
    pub group_id: [u8; 16],
    /// The chain's random id.
    pub chain_id: u32,
    /// The iteration `chain_key` is at: the next message the sender sends has this iteration.
    pub iteration: u32,
    /// The chain key at `iteration`.
    #[serde(with = "b64")]
    pub chain_key: [u8; 32],
    /// The chain's Ed25519 public key.
    #[serde(with = "b64")]
    pub signing_key: [u8; 32],
}

impl std::fmt::Debug for SenderKeyDistribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderKeyDistribution")
            .field("chain_id", &self.chain_id)
            .field("iteration", &self.iteration)
            .finish_non_exhaustive()
    }
}

impl Drop for SenderKeyDistribution {
    fn drop(&mut self) {
        self.chain_key.zeroize();
    }
}

impl SenderKeyDistribution {
    /// `0x01 || group_id 16 || chain_id u32 || iteration u32 || chain_key 32 || signing_key 32` (89 bytes).
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut c = Canonical::default();
        c.u8(GROUP_VERSION).bytes(&self.group_id).u32(self.chain_id).u32(self.iteration);
        c.bytes(&self.chain_key).bytes(&self.signing_key);
        Zeroizing::new(c.0)
    }

    /// Strict decoding (exact length, known version, valid Ed25519 key).
    pub fn decode(bytes: &[u8]) -> Result<Self, E2eError> {
        if bytes.len() != DISTRIBUTION_LEN {
            return Err(E2eError::Malformed("sender key distribution length"));
        }
        let mut r = Reader::new(bytes);
        if r.u8("version")? != GROUP_VERSION {
            return Err(E2eError::Malformed("sender key distribution version"));
        }
        let d = SenderKeyDistribution {
            group_id: r.array("group id")?,
            chain_id: r.u32("chain id")?,
            iteration: r.u32("iteration")?,
            chain_key: r.array("chain key")?,
            signing_key: r.array("signing key")?,
        };
        ed25519_dalek::VerifyingKey::from_bytes(&d.signing_key).map_err(|_| E2eError::InvalidKey("sender signing key"))?;
        Ok(d)
    }
}

/// A group message as the relay fans it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMessage {
    /// The group.
    #[serde(with = "b64")]
    pub group_id: [u8; 16],
    /// The membership-log head the sender had verified.
    #[serde(with = "b64")]
    pub membership_head: [u8; 32],
    /// The sender's user identity key.
    #[serde(with = "b64")]
    pub sender: [u8; 32],
    /// The sender's device id.
    pub sender_device: u32,
    /// The sending chain.
    pub chain_id: u32,
    /// Message number in the chain.
    pub iteration: u32,
    /// ChaCha20-Poly1305 ciphertext of the encoded [`InnerMessage`], tag included.
    #[serde(with = "crate::encoding::b64_vec")]
    pub ciphertext: Vec<u8>,
    /// Ed25519 signature by the chain's signing key over [`GroupMessage::signed_bytes`].
    #[serde(with = "b64")]
    pub signature: [u8; 64],
}

impl GroupMessage {
    /// The header, also the AEAD associated data: `0x01 || group_id 16 || membership_head 32 || sender 32 ||
    /// sender_device u32 || chain_id u32 || iteration u32` (93 bytes).
    pub fn header(&self) -> Vec<u8> {
        let mut c = Canonical::default();
        c.u8(GROUP_VERSION).bytes(&self.group_id).bytes(&self.membership_head).bytes(&self.sender);
        c.u32(self.sender_device).u32(self.chain_id).u32(self.iteration);
        c.0
    }

    /// `"imfree/v1/group-message" 0x00 || header || ciphertext`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut c = Canonical::labelled(GROUP_MESSAGE_LABEL);
        c.bytes(&self.header()).bytes(&self.ciphertext);
        c.0
    }

    /// `header || u32 len || ciphertext || signature 64`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut c = Canonical(self.header());
        c.var(&self.ciphertext).bytes(&self.signature);
        c.0
    }

    /// Strict decoding of untrusted bytes; nothing is verified here.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, E2eError> {
        let mut r = Reader::new(bytes);
        if r.u8("group message version")? != GROUP_VERSION {
            return Err(E2eError::Malformed("group message version"));
        }
        let group_id = r.array("group id")?;
        let membership_head = r.array("membership head")?;
        let sender = r.array("sender")?;
        let sender_device = r.u32("sender device")?;
        let chain_id = r.u32("chain id")?;
        let iteration = r.u32("iteration")?;
        let len = r.u32("ciphertext length")? as usize;
        if !(crate::aead::TAG_LEN..=MAX_GROUP_CIPHERTEXT).contains(&len) {
            return Err(E2eError::Malformed("ciphertext length"));
        }
        let ciphertext = r.take(len, "ciphertext")?.to_vec();
        let signature = r.array("signature")?;
        if !r.rest().is_empty() {
            return Err(E2eError::Malformed("trailing bytes"));
        }
        Ok(GroupMessage { group_id, membership_head, sender, sender_device, chain_id, iteration, ciphertext, signature })
    }
}

fn cipher(message_key: &[u8; 32]) -> (ChaCha20Poly1305, Nonce) {
    let okm = hkdf_sha256::<44>(&[0u8; 32], message_key, &[GROUP_KEYS_INFO]);
    (ChaCha20Poly1305::new(Key::from_slice(&okm[..32])), *Nonce::from_slice(&okm[32..44]))
}

/// This device's own sending chain in one group.
#[derive(Clone, Serialize, Deserialize)]
pub struct SenderChain {
    #[serde(with = "b64")]
    group_id: [u8; 16],
    chain_id: u32,
    iteration: u32,
    #[serde(with = "b64")]
    chain_key: [u8; 32],
    #[serde(with = "b64")]
    signing_seed: [u8; 32],
}

impl Drop for SenderChain {
    fn drop(&mut self) {
        self.chain_key.zeroize();
        self.signing_seed.zeroize();
    }
}

impl SenderChain {
    /// A new chain. Draws, in order: the chain id (4 bytes, big-endian), the chain key (32), the signing seed (32).
    pub fn new(rng: &mut impl CryptoRngCore, group_id: [u8; 16]) -> Self {
        let mut id = [0u8; 4];
        rng.fill_bytes(&mut id);
        let mut chain = SenderChain { group_id, chain_id: u32::from_be_bytes(id), iteration: 0, chain_key: [0; 32], signing_seed: [0; 32] };
        rng.fill_bytes(&mut chain.chain_key);
        rng.fill_bytes(&mut chain.signing_seed);
        chain
    }

    /// The chain's id.
    pub fn chain_id(&self) -> u32 {
        self.chain_id
    }

    /// The distribution to hand to member devices (at the chain's current iteration).
    pub fn distribution(&self) -> SenderKeyDistribution {
        SenderKeyDistribution {
            group_id: self.group_id,
            chain_id: self.chain_id,
            iteration: self.iteration,
            chain_key: self.chain_key,
            signing_key: SigningKey::from_bytes(&self.signing_seed).verifying_key().to_bytes(),
        }
    }

    /// Encrypt and sign one message bound to `membership_head`.
    pub fn encrypt(
        &mut self,
        sender: [u8; 32],
        sender_device: u32,
        membership_head: [u8; 32],
        message: &InnerMessage,
    ) -> Result<GroupMessage, E2eError> {
        if self.iteration == u32::MAX {
            return Err(E2eError::Exhausted);
        }
        let plaintext = Zeroizing::new(message.encode()?);
        let (next, message_key) = kdf_ck(&self.chain_key);
        let mut msg = GroupMessage {
            group_id: self.group_id,
            membership_head,
            sender,
            sender_device,
            chain_id: self.chain_id,
            iteration: self.iteration,
            ciphertext: Vec::new(),
            signature: [0; 64],
        };
        let (cipher, nonce) = cipher(&message_key);
        msg.ciphertext = cipher
            .encrypt(&nonce, Payload { msg: &plaintext, aad: &msg.header() })
            .expect("plaintext within ChaCha20 limits");
        msg.signature = SigningKey::from_bytes(&self.signing_seed).sign(&msg.signed_bytes()).to_bytes();
        self.chain_key = *next;
        self.iteration += 1;
        Ok(msg)
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct SkippedGroupKey {
    iteration: u32,
    #[serde(with = "b64")]
    message_key: [u8; 32],
}

impl Drop for SkippedGroupKey {
    fn drop(&mut self) {
        self.message_key.zeroize();
    }
}

/// Another member device's chain, as received in its distribution.
#[derive(Clone, Serialize, Deserialize)]
pub struct ReceiverChain {
    #[serde(with = "b64")]
    sender: [u8; 32],
    sender_device: u32,
    #[serde(with = "b64")]
    group_id: [u8; 16],
    chain_id: u32,
    #[serde(with = "b64")]
    signing_key: [u8; 32],
    iteration: u32,
    #[serde(with = "b64")]
    chain_key: [u8; 32],
    skipped: Vec<SkippedGroupKey>,
}

impl Drop for ReceiverChain {
    fn drop(&mut self) {
        self.chain_key.zeroize();
    }
}

impl ReceiverChain {
    /// The chain of `sender`'s device `sender_device`, from its distribution (which arrived over the pairwise
    /// session with that device: that is what authenticates it).
    pub fn new(sender: [u8; 32], sender_device: u32, distribution: &SenderKeyDistribution) -> Self {
        ReceiverChain {
            sender,
            sender_device,
            group_id: distribution.group_id,
            chain_id: distribution.chain_id,
            signing_key: distribution.signing_key,
            iteration: distribution.iteration,
            chain_key: distribution.chain_key,
            skipped: Vec::new(),
        }
    }

    fn is_for(&self, msg: &GroupMessage) -> bool {
        self.sender == msg.sender && self.sender_device == msg.sender_device && self.chain_id == msg.chain_id
    }

    /// Verify the signature, then decrypt; the chain changes only when the message verifies and decrypts.
    pub fn decrypt(&mut self, msg: &GroupMessage) -> Result<InnerMessage, E2eError> {
        if !self.is_for(msg) || msg.group_id != self.group_id {
            return Err(E2eError::WrongSession);
        }
        verify_ed25519(&self.signing_key, &msg.signed_bytes(), &msg.signature, "group message")?;
        let header = msg.header();
        if msg.iteration < self.iteration {
            let pos = self.skipped.iter().position(|k| k.iteration == msg.iteration).ok_or(E2eError::Duplicate)?;
            let (cipher, nonce) = cipher(&self.skipped[pos].message_key);
            let plaintext = Zeroizing::new(
                cipher.decrypt(&nonce, Payload { msg: &msg.ciphertext, aad: &header }).map_err(|_| E2eError::DecryptFailed)?,
            );
            let inner = InnerMessage::decode(&plaintext)?;
            self.skipped.remove(pos);
            return Ok(inner);
        }
        if msg.iteration == u32::MAX {
            return Err(E2eError::Exhausted);
        }
        let jump = msg.iteration - self.iteration;
        if jump > MAX_GROUP_SKIP {
            return Err(E2eError::TooFarAhead { jump: u64::from(jump), limit: MAX_GROUP_SKIP });
        }
        let mut chain = Zeroizing::new(self.chain_key);
        let mut new_skipped = Vec::new();
        for iteration in self.iteration..msg.iteration {
            let (next, message_key) = kdf_ck(&chain);
            new_skipped.push(SkippedGroupKey { iteration, message_key: *message_key });
            *chain = *next;
        }
        let (next, message_key) = kdf_ck(&chain);
        let (cipher, nonce) = cipher(&message_key);
        let plaintext = Zeroizing::new(
            cipher.decrypt(&nonce, Payload { msg: &msg.ciphertext, aad: &header }).map_err(|_| E2eError::DecryptFailed)?,
        );
        let inner = InnerMessage::decode(&plaintext)?;
        // Verified: commit.
        self.chain_key = *next;
        self.iteration = msg.iteration + 1;
        self.skipped.extend(new_skipped);
        if self.skipped.len() > MAX_SKIPPED_GROUP_KEYS {
            let excess = self.skipped.len() - MAX_SKIPPED_GROUP_KEYS;
            self.skipped.drain(..excess);
        }
        Ok(inner)
    }

    /// Number of stored skipped keys.
    pub fn skipped_keys(&self) -> usize {
        self.skipped.len()
    }
}

/// One device's sender-key state for one group: its own chain and the chains of the other member devices. Serde:
/// it holds secrets, so persist it only in the encrypted key store.
#[derive(Clone, Serialize, Deserialize)]
pub struct GroupSession {
    #[serde(with = "b64")]
    group_id: [u8; 16],
    #[serde(with = "b64")]
    me: [u8; 32],
    my_device: u32,
    own: SenderChain,
    /// The members (identity keys, base64) when `own` was made: a removal among them needs a new chain.
    roster: Vec<String>,
    receivers: Vec<ReceiverChain>,
}

impl std::fmt::Debug for GroupSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSession")
            .field("chain_id", &self.own.chain_id)
            .field("iteration", &self.own.iteration)
            .field("receiving_chains", &self.receivers.len())
            .finish_non_exhaustive()
    }
}

fn roster(state: &GroupState) -> Vec<String> {
    use base64::Engine as _;
    state.members().map(|(m, _)| base64::engine::general_purpose::STANDARD.encode(m.identity_key)).collect()
}

impl GroupSession {
    /// This device's session for a verified group it belongs to (draws a new sending chain, see [`SenderChain::new`]).
    /// Send [`GroupSession::distribution`] to every other member device over the pairwise sessions.
    pub fn new(
        rng: &mut impl CryptoRngCore,
        state: &GroupState,
        my_identity: [u8; 32],
        my_device: u32,
    ) -> Result<Self, GroupError> {
        if !state.is_member(&my_identity) {
            return Err(GroupError::NotAMember);
        }
        Ok(GroupSession {
            group_id: state.group_id(),
            me: my_identity,
            my_device,
            own: SenderChain::new(rng, state.group_id()),
            roster: roster(state),
            receivers: Vec::new(),
        })
    }

    /// This device's sending chain, to hand to member devices (also to a newly added member's devices).
    pub fn distribution(&self) -> SenderKeyDistribution {
        self.own.distribution()
    }

    /// Start a new sending chain (e.g. after a member's device was revoked: the old chain may have reached it) and
    /// return its distribution, to be sent to the member devices that remain.
    pub fn new_chain(&mut self, rng: &mut impl CryptoRngCore) -> SenderKeyDistribution {
        self.own = SenderChain::new(rng, self.group_id);
        self.own.distribution()
    }

    /// Call after every verified membership change. Drops the chains of senders who are no longer members; when
    /// anyone who was a member at this chain's start is gone, starts a new sending chain and returns its
    /// distribution, to be sent to every current member device (and never to the removed ones).
    pub fn membership_changed(
        &mut self,
        rng: &mut impl CryptoRngCore,
        state: &GroupState,
    ) -> Result<Option<SenderKeyDistribution>, GroupError> {
        if state.group_id() != self.group_id {
            return Err(GroupError::WrongGroup);
        }
        if !state.is_member(&self.me) {
            return Err(GroupError::NotAMember);
        }
        self.receivers.retain(|r| state.is_member(&r.sender));
        let now = roster(state);
        let someone_left = self.roster.iter().any(|m| !now.contains(m));
        self.roster = now;
        if someone_left {
            self.own = SenderChain::new(rng, self.group_id);
            return Ok(Some(self.own.distribution()));
        }
        Ok(None)
    }

    /// Store a member device's chain from a distribution that arrived over the pairwise session with that device
    /// (`sender`, `sender_device` are what that session authenticates). Replaces the device's previous chain.
    pub fn receive_distribution(
        &mut self,
        state: &GroupState,
        sender: [u8; 32],
        sender_device: u32,
        distribution: &SenderKeyDistribution,
    ) -> Result<(), GroupError> {
        if distribution.group_id != self.group_id || state.group_id() != self.group_id {
            return Err(GroupError::WrongGroup);
        }
        if !state.is_member(&sender) {
            return Err(GroupError::NotAMember);
        }
        self.receivers.retain(|r| !(r.sender == sender && r.sender_device == sender_device));
        self.receivers.push(ReceiverChain::new(sender, sender_device, distribution));
        Ok(())
    }

    /// Encrypt a message to the group, bound to the current verified head.
    pub fn encrypt(&mut self, state: &GroupState, message: &InnerMessage) -> Result<GroupMessage, GroupError> {
        if state.group_id() != self.group_id {
            return Err(GroupError::WrongGroup);
        }
        if !state.is_member(&self.me) {
            return Err(GroupError::NotAMember);
        }
        Ok(self.own.encrypt(self.me, self.my_device, state.head().head, message)?)
    }

    /// Verify and decrypt a group message: its head must be in the verified log, its sender a current member with
    /// a known chain. On any error nothing changes.
    pub fn decrypt(&mut self, state: &GroupState, msg: &GroupMessage) -> Result<InnerMessage, GroupError> {
        if msg.group_id != self.group_id || state.group_id() != self.group_id {
            return Err(GroupError::WrongGroup);
        }
        if state.seq_of(&msg.membership_head).is_none() {
            return Err(GroupError::UnknownHead);
        }
        if !state.is_member(&msg.sender) {
            return Err(GroupError::NotAMember);
        }
        let chain = self.receivers.iter_mut().find(|r| r.is_for(msg)).ok_or(GroupError::NoSenderKey)?;
        Ok(chain.decrypt(msg)?)
    }
}
