//! The IMF session handshake and transport: how a device and its relay authenticate each other and protect every
//! frame, independently of TLS (so that a TLS-terminating proxy can neither read nor forge IMF frames).
//!
//! Two Noise patterns, both `25519_ChaChaPoly_BLAKE2s`, with the prologue [`PROLOGUE`]:
//! - **IK** for every ordinary connection: the device knows (has pinned) the relay's static key. Message 1 carries
//!   the device's static key and its auth payload (user, device, session token, timestamp); message 2 completes
//!   the handshake. One round trip.
//! - **XX** on first contact (registration, or logging a new device in): the relay's static key is learned from
//!   message 2 and pinned; message 3 carries the device's static key and the password-auth payload.
//!
//! On the WebSocket, the first binary message from the device is `[kind] || noise message 1`, with `kind` 1 for IK
//! and 2 for XX; the other handshake messages are bare. After the handshake every WebSocket binary message is one
//! Noise transport message whose plaintext is `[flags] || chunk` — bit 0 of `flags` set when more chunks of the same
//! frame follow — so that frames larger than a Noise message (65,535 bytes) can travel, reassembled under a cap.
//!
//! Types are the states: a handshake can only be finished once, and a [`Transport`] exists only after a complete
//! handshake.

use snow::{Builder, HandshakeState, TransportState};
use zeroize::Zeroizing;

/// The Noise pattern of ordinary connections.
pub const PATTERN_IK: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// The Noise pattern of first contact.
pub const PATTERN_XX: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// The prologue bound into both handshakes: protocol name and version.
pub const PROLOGUE: &[u8] = b"imfree IMF/1";
/// Largest Noise message (the spec's limit).
pub const MAX_NOISE_MESSAGE: usize = 65_535;
/// Poly1305 tag length.
const TAG_LEN: usize = 16;
/// Largest chunk of a frame in one transport message.
pub const MAX_CHUNK: usize = MAX_NOISE_MESSAGE - TAG_LEN - 1;
/// Context string of the device-key binding signature sent in the XX auth payload.
pub const DEVICE_BINDING_CONTEXT: &[u8] = b"imfree device binding v1";

const FLAG_MORE: u8 = 0x01;

/// Which handshake a connection opens with; the first byte of the first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeKind {
    /// Noise IK: the device already knows the relay's static key.
    Ik = 1,
    /// Noise XX: first contact.
    Xx = 2,
}

/// Why a handshake or transport step failed. None of these reveal secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoiseError {
    /// The first message is empty or names no known handshake.
    #[error("unknown handshake kind")]
    UnknownKind,
    /// Decryption or a DH failed: tampered, truncated, or made for another key.
    #[error("handshake message rejected (tampered, truncated, or for another relay key)")]
    Rejected,
    /// A transport message failed to decrypt: tampered, reordered or replayed.
    #[error("transport message rejected (tampered, reordered or replayed)")]
    TransportRejected,
    /// A reassembled frame exceeds the cap.
    #[error("frame exceeds {limit} bytes")]
    FrameTooLarge {
        /// The cap.
        limit: usize,
    },
    /// A message is larger than Noise allows, or a payload too large to fit.
    #[error("noise message too large")]
    MessageTooLarge,
    /// snow refused to build the state (a bug or a bad key length).
    #[error("noise set-up failed: {0}")]
    Setup(String),
}

fn builder(pattern: &'static str) -> Result<Builder<'static>, NoiseError> {
    let params = pattern.parse().map_err(|e: snow::Error| NoiseError::Setup(e.to_string()))?;
    Builder::new(params).prologue(PROLOGUE).map_err(|e| NoiseError::Setup(e.to_string()))
}

fn read(hs: &mut HandshakeState, msg: &[u8]) -> Result<Vec<u8>, NoiseError> {
    if msg.len() > MAX_NOISE_MESSAGE {
        return Err(NoiseError::MessageTooLarge);
    }
    let mut buf = vec![0u8; msg.len()];
    let n = hs.read_message(msg, &mut buf).map_err(|_| NoiseError::Rejected)?;
    buf.truncate(n);
    Ok(buf)
}

fn write(hs: &mut HandshakeState, payload: &[u8]) -> Result<Vec<u8>, NoiseError> {
    let mut buf = vec![0u8; MAX_NOISE_MESSAGE];
    let n = hs.write_message(payload, &mut buf).map_err(|_| NoiseError::MessageTooLarge)?;
    buf.truncate(n);
    Ok(buf)
}

fn static_of(hs: &HandshakeState) -> Result<[u8; 32], NoiseError> {
    hs.get_remote_static().and_then(|k| k.try_into().ok()).ok_or(NoiseError::Rejected)
}

fn into_transport(hs: HandshakeState, max_frame: usize) -> Result<Transport, NoiseError> {
    let hash: [u8; 32] = hs.get_handshake_hash().try_into().map_err(|_| NoiseError::Rejected)?;
    let state = hs.into_transport_mode().map_err(|_| NoiseError::Rejected)?;
    Ok(Transport { state, max_frame, partial: Vec::new(), discarding: false, handshake_hash: hash })
}

// ---------------------------------------------------------------- initiator (device)

/// Device side of IK, after message 1 was written.
pub struct IkInitiator {
    hs: HandshakeState,
    max_frame: usize,
}

impl IkInitiator {
    /// Start IK towards the relay whose pinned static key is `relay_static`, carrying `payload` (the auth
    /// payload). Returns the state and the first WebSocket message (`[1] || message 1`).
    pub fn start(
        device_static_secret: &[u8; 32],
        relay_static: &[u8; 32],
        payload: &[u8],
        max_frame: usize,
    ) -> Result<(Self, Vec<u8>), NoiseError> {
        let mut hs = builder(PATTERN_IK)?
            .local_private_key(device_static_secret)
            .and_then(|b| b.remote_public_key(relay_static))
            .and_then(|b| b.build_initiator())
            .map_err(|e| NoiseError::Setup(e.to_string()))?;
        let mut out = vec![HandshakeKind::Ik as u8];
        out.extend(write(&mut hs, payload)?);
        Ok((IkInitiator { hs, max_frame }, out))
    }

    /// Read the relay's message 2 and enter transport mode. Returns the relay's payload.
    pub fn finish(mut self, message2: &[u8]) -> Result<(Transport, Vec<u8>), NoiseError> {
        let payload = read(&mut self.hs, message2)?;
        Ok((into_transport(self.hs, self.max_frame)?, payload))
    }
}

/// Device side of XX, after message 1 was written.
pub struct XxInitiator {
    hs: HandshakeState,
    max_frame: usize,
}

/// Device side of XX after message 2: the relay's static key is known and can be checked against a pin before
/// the device reveals itself and its credentials in message 3.
pub struct XxInitiatorKnowsRelay {
    hs: HandshakeState,
    relay_static: [u8; 32],
    max_frame: usize,
}

impl XxInitiator {
    /// Start XX. Returns the state and the first WebSocket message (`[2] || message 1`).
    pub fn start(device_static_secret: &[u8; 32], max_frame: usize) -> Result<(Self, Vec<u8>), NoiseError> {
        let mut hs = builder(PATTERN_XX)?
            .local_private_key(device_static_secret)
            .and_then(|b| b.build_initiator())
            .map_err(|e| NoiseError::Setup(e.to_string()))?;
        let mut out = vec![HandshakeKind::Xx as u8];
        out.extend(write(&mut hs, &[])?);
        Ok((XxInitiator { hs, max_frame }, out))
    }

    /// Read message 2, learning (and authenticating) the relay's static key.
    pub fn read_response(mut self, message2: &[u8]) -> Result<XxInitiatorKnowsRelay, NoiseError> {
        let _ = read(&mut self.hs, message2)?;
        let relay_static = static_of(&self.hs)?;
        Ok(XxInitiatorKnowsRelay { hs: self.hs, relay_static, max_frame: self.max_frame })
    }
}

impl XxInitiatorKnowsRelay {
    /// The relay's static key, to compare with a pin (or to pin).
    pub fn relay_static(&self) -> [u8; 32] {
        self.relay_static
    }

    /// The handshake hash so far; the device signs it (with [`DEVICE_BINDING_CONTEXT`]) to bind its signing key to
    /// this handshake.
    pub fn binding_hash(&self) -> [u8; 32] {
        self.hs.get_handshake_hash().try_into().unwrap_or([0; 32])
    }

    /// Write message 3 carrying `payload`, and enter transport mode.
    pub fn finish(mut self, payload: &[u8]) -> Result<(Transport, Vec<u8>), NoiseError> {
        let msg = write(&mut self.hs, payload)?;
        Ok((into_transport(self.hs, self.max_frame)?, msg))
    }
}

// ---------------------------------------------------------------- responder (relay)

/// What the relay learned from a device's first message.
pub enum Responder {
    /// An IK handshake: the device is identified already.
    Ik(IkResponder),
    /// An XX handshake: message 2 must be sent, then message 3 read.
    Xx(XxResponder),
}

/// Relay side of IK after reading message 1.
pub struct IkResponder {
    hs: HandshakeState,
    device_static: [u8; 32],
    ephemeral: [u8; 32],
    payload: Vec<u8>,
    max_frame: usize,
}

/// Relay side of XX after reading message 1; holds message 2 to send.
pub struct XxResponder {
    hs: HandshakeState,
    message2: Vec<u8>,
    max_frame: usize,
}

impl Responder {
    /// Read a device's first WebSocket message with the relay's static secret.
    pub fn read_first(relay_static_secret: &[u8; 32], first: &[u8], max_frame: usize) -> Result<Self, NoiseError> {
        let (&kind, msg) = first.split_first().ok_or(NoiseError::UnknownKind)?;
        match kind {
            k if k == HandshakeKind::Ik as u8 => {
                let mut hs = builder(PATTERN_IK)?
                    .local_private_key(relay_static_secret)
                    .and_then(|b| b.build_responder())
                    .map_err(|e| NoiseError::Setup(e.to_string()))?;
                let payload = read(&mut hs, msg)?;
                let device_static = static_of(&hs)?;
                // The initiator's ephemeral key is the first 32 bytes of message 1: the relay's replay cache keys
                // on it.
                let ephemeral = msg.get(..32).and_then(|e| e.try_into().ok()).ok_or(NoiseError::Rejected)?;
                Ok(Responder::Ik(IkResponder { hs, device_static, ephemeral, payload, max_frame }))
            }
            k if k == HandshakeKind::Xx as u8 => {
                let mut hs = builder(PATTERN_XX)?
                    .local_private_key(relay_static_secret)
                    .and_then(|b| b.build_responder())
                    .map_err(|e| NoiseError::Setup(e.to_string()))?;
                let _ = read(&mut hs, msg)?;
                let message2 = write(&mut hs, &[])?;
                Ok(Responder::Xx(XxResponder { hs, message2, max_frame }))
            }
            _ => Err(NoiseError::UnknownKind),
        }
    }
}

impl IkResponder {
    /// The device's static key, authenticated by message 1.
    pub fn device_static(&self) -> [u8; 32] {
        self.device_static
    }

    /// The device's ephemeral key from message 1 (for the replay cache).
    pub fn ephemeral(&self) -> [u8; 32] {
        self.ephemeral
    }

    /// The device's auth payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Accept: write message 2 (with `payload`) and enter transport mode.
    pub fn accept(mut self, payload: &[u8]) -> Result<(Transport, Vec<u8>), NoiseError> {
        let msg = write(&mut self.hs, payload)?;
        Ok((into_transport(self.hs, self.max_frame)?, msg))
    }
}

/// What the relay learned from XX message 3.
pub struct XxCompleted {
    /// The transport.
    pub transport: Transport,
    /// The device's static key.
    pub device_static: [u8; 32],
    /// The device's auth payload.
    pub payload: Vec<u8>,
    /// The handshake hash before message 3, which the device signed to bind its signing key.
    pub binding_hash: [u8; 32],
}

impl XxResponder {
    /// Message 2, to send to the device.
    pub fn message2(&self) -> &[u8] {
        &self.message2
    }

    /// Read message 3 and enter transport mode.
    pub fn finish(mut self, message3: &[u8]) -> Result<XxCompleted, NoiseError> {
        let binding_hash: [u8; 32] = self.hs.get_handshake_hash().try_into().map_err(|_| NoiseError::Rejected)?;
        let payload = read(&mut self.hs, message3)?;
        let device_static = static_of(&self.hs)?;
        Ok(XxCompleted { transport: into_transport(self.hs, self.max_frame)?, device_static, payload, binding_hash })
    }
}

// ---------------------------------------------------------------- transport

/// An established session: seals frames into transport messages and opens them, reassembling chunks.
pub struct Transport {
    state: TransportState,
    max_frame: usize,
    partial: Vec<u8>,
    /// Set after an oversize frame: its remaining chunks are dropped, so that they are not mistaken for new frames.
    discarding: bool,
    handshake_hash: [u8; 32],
}

impl Transport {
    /// The final handshake hash (channel binding).
    pub fn handshake_hash(&self) -> [u8; 32] {
        self.handshake_hash
    }

    /// Seal one frame into one or more transport messages, each to be sent as its own WebSocket binary message.
    pub fn seal(&mut self, frame: &[u8]) -> Result<Vec<Vec<u8>>, NoiseError> {
        if frame.len() > self.max_frame {
            return Err(NoiseError::FrameTooLarge { limit: self.max_frame });
        }
        let mut out = Vec::with_capacity(frame.len() / MAX_CHUNK + 1);
        let mut chunks = frame.chunks(MAX_CHUNK).peekable();
        if frame.is_empty() {
            out.push(self.seal_chunk(&[], false)?);
        }
        while let Some(chunk) = chunks.next() {
            let more = chunks.peek().is_some();
            out.push(self.seal_chunk(chunk, more)?);
        }
        Ok(out)
    }

    fn seal_chunk(&mut self, chunk: &[u8], more: bool) -> Result<Vec<u8>, NoiseError> {
        let mut plain = Zeroizing::new(Vec::with_capacity(chunk.len() + 1));
        plain.push(if more { FLAG_MORE } else { 0 });
        plain.extend_from_slice(chunk);
        let mut buf = vec![0u8; plain.len() + TAG_LEN];
        let n = self.state.write_message(&plain, &mut buf).map_err(|_| NoiseError::MessageTooLarge)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Open one transport message. Returns a complete frame once its last chunk arrived, `None` while more chunks
    /// are expected. Any failure is fatal for the session (nonces are sequential: a dropped, replayed or reordered
    /// message fails).
    pub fn open(&mut self, message: &[u8]) -> Result<Option<Vec<u8>>, NoiseError> {
        if message.len() > MAX_NOISE_MESSAGE {
            return Err(NoiseError::MessageTooLarge);
        }
        let mut plain = Zeroizing::new(vec![0u8; message.len()]);
        let n = self.state.read_message(message, &mut plain).map_err(|_| NoiseError::TransportRejected)?;
        let (&flags, chunk) = plain[..n].split_first().ok_or(NoiseError::TransportRejected)?;
        let more = flags & FLAG_MORE != 0;
        if self.discarding {
            self.discarding = more;
            return Ok(None);
        }
        if self.partial.len() + chunk.len() > self.max_frame {
            self.partial = Vec::new();
            self.discarding = more;
            return Err(NoiseError::FrameTooLarge { limit: self.max_frame });
        }
        self.partial.extend_from_slice(chunk);
        if more {
            return Ok(None);
        }
        Ok(Some(std::mem::take(&mut self.partial)))
    }
}

/// Generate a fresh X25519 static key pair for a relay: (secret, public).
pub fn generate_static_keypair() -> Result<(Zeroizing<[u8; 32]>, [u8; 32]), NoiseError> {
    let kp = builder(PATTERN_IK)?.generate_keypair().map_err(|e| NoiseError::Setup(e.to_string()))?;
    let secret: [u8; 32] = kp.private.as_slice().try_into().map_err(|_| NoiseError::Setup("key length".into()))?;
    let public: [u8; 32] = kp.public.as_slice().try_into().map_err(|_| NoiseError::Setup("key length".into()))?;
    Ok((Zeroizing::new(secret), public))
}

/// The X25519 public key of a secret.
pub fn public_of(secret: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn keys() -> ([u8; 32], [u8; 32]) {
        let (s, p) = generate_static_keypair().unwrap();
        (*s, p)
    }

    fn ik_pair() -> (Transport, Transport) {
        let (dev_s, dev_p) = keys();
        let (relay_s, relay_p) = keys();
        let (init, m1) = IkInitiator::start(&dev_s, &relay_p, b"auth", MAX).unwrap();
        let Responder::Ik(resp) = Responder::read_first(&relay_s, &m1, MAX).unwrap() else { panic!("not IK") };
        assert_eq!(resp.device_static(), dev_p);
        assert_eq!(resp.payload(), b"auth");
        let (relay_t, m2) = resp.accept(b"").unwrap();
        let (dev_t, _) = init.finish(&m2).unwrap();
        assert_eq!(relay_t.handshake_hash(), dev_t.handshake_hash());
        (dev_t, relay_t)
    }

    #[test]
    fn ik_round_trip_with_large_frames() {
        let (mut dev, mut relay) = ik_pair();
        for size in [0usize, 1, MAX_CHUNK, MAX_CHUNK + 1, 200_000] {
            let frame: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let msgs = dev.seal(&frame).unwrap();
            assert_eq!(msgs.len(), size.div_ceil(MAX_CHUNK).max(1));
            let mut got = None;
            for m in &msgs {
                assert!(m.len() <= MAX_NOISE_MESSAGE);
                got = relay.open(m).unwrap();
            }
            assert_eq!(got.unwrap(), frame);
        }
    }

    #[test]
    fn xx_learns_relay_key_and_binds_device() {
        let (dev_s, dev_p) = keys();
        let (relay_s, relay_p) = keys();
        let (init, m1) = XxInitiator::start(&dev_s, MAX).unwrap();
        let Responder::Xx(resp) = Responder::read_first(&relay_s, &m1, MAX).unwrap() else { panic!("not XX") };
        let knows = init.read_response(resp.message2()).unwrap();
        assert_eq!(knows.relay_static(), relay_p);
        let binding = knows.binding_hash();
        let (mut dev_t, m3) = knows.finish(b"password payload").unwrap();
        let done = resp.finish(&m3).unwrap();
        assert_eq!(done.device_static, dev_p);
        assert_eq!(done.payload, b"password payload");
        assert_eq!(done.binding_hash, binding);
        let mut relay_t = done.transport;
        let sealed = relay_t.seal(b"welcome").unwrap();
        assert_eq!(dev_t.open(&sealed[0]).unwrap().unwrap(), b"welcome");
    }

    #[test]
    fn wrong_relay_key_and_tampering_are_rejected() {
        let (dev_s, _) = keys();
        let (relay_s, _) = keys();
        let (_, other_p) = keys();
        let (_, m1) = IkInitiator::start(&dev_s, &other_p, b"auth", MAX).unwrap();
        assert_eq!(Responder::read_first(&relay_s, &m1, MAX).err(), Some(NoiseError::Rejected));

        let (_, relay_p) = (0, public_of(&relay_s));
        let (_, mut m1) = IkInitiator::start(&dev_s, &relay_p, b"auth", MAX).unwrap();
        let last = m1.len() - 1;
        m1[last] ^= 1;
        assert_eq!(Responder::read_first(&relay_s, &m1, MAX).err(), Some(NoiseError::Rejected));
        assert_eq!(Responder::read_first(&relay_s, &[9, 1, 2], MAX).err(), Some(NoiseError::UnknownKind));
        assert_eq!(Responder::read_first(&relay_s, &[], MAX).err(), Some(NoiseError::UnknownKind));
        assert_eq!(Responder::read_first(&relay_s, &[1], MAX).err(), Some(NoiseError::Rejected));
    }

    #[test]
    fn transport_refuses_tampered_replayed_and_oversize() {
        let (mut dev, mut relay) = ik_pair();
        let a = dev.seal(b"one").unwrap().remove(0);
        let mut bad = a.clone();
        bad[0] ^= 0x80;
        assert_eq!(relay.open(&bad), Err(NoiseError::TransportRejected));

        let (mut dev, mut relay) = ik_pair();
        let a = dev.seal(b"one").unwrap().remove(0);
        relay.open(&a).unwrap();
        assert_eq!(relay.open(&a), Err(NoiseError::TransportRejected), "replay");

        let (mut dev, _) = ik_pair();
        dev.max_frame = 10;
        assert_eq!(dev.seal(&[0; 11]).err(), Some(NoiseError::FrameTooLarge { limit: 10 }));
        let (mut dev, mut relay) = ik_pair();
        relay.max_frame = 100_000;
        let msgs = dev.seal(&vec![1u8; 200_000]).unwrap();
        let results: Vec<_> = msgs.iter().map(|m| relay.open(m)).collect();
        let errors = results.iter().filter(|r| r.is_err()).count();
        assert_eq!(errors, 1, "one error per oversize frame: {results:?}");
        assert!(results.iter().all(|r| matches!(r, Ok(None) | Err(NoiseError::FrameTooLarge { limit: 100_000 }))));
        // The rest of the oversize frame was dropped; the next frame reads normally.
        let next = dev.seal(b"after").unwrap();
        assert_eq!(relay.open(&next[0]).unwrap().as_deref(), Some(&b"after"[..]));
    }
}
