//! Device linking: a new device joins a user's account only when an existing device of that user approves it.
//!
//! One device shows a [`LinkCode`] (16 random bytes, as 26 base32 characters, or as a QR payload that also carries a
//! fingerprint of the showing device's agreement key) and the other enters or scans it. imfree's client shows it on
//! the NEW device and approves on the existing one (`imfree client devices link` / `devices approve CODE`, as a
//! phone scans a desktop's code); the handshake roles do not depend on who shows the code. The two run
//! `Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s` over an opaque byte channel (the relay forwards the four messages between
//! the two connections that name the same [`LinkCode::rendezvous_id`]), with a pre-shared key derived from the code.
//! Through it the existing device sends the user identity seed and a certificate for the new device's keys.
//!
//! A relay (or anyone) without the code cannot complete the handshake with either side; with the QR payload the
//! scanning device also checks the showing device's static key, so even a relay that learnt the code cannot sit in
//! the middle. Both sides' steps are types: a message can only be read in the state that expects it.
//!
//! This module owns the code, the handshake and the grant format; the relay channel and the UI are the client's.

use rand_core::CryptoRngCore;
use snow::{Builder, HandshakeState, TransportState};
use zeroize::Zeroizing;

use crate::device::DeviceKeys;
use crate::encoding::{Canonical, Reader};
use crate::error::E2eError;
use crate::identity::{DeviceCertificate, UserIdentity};
use crate::kdf::{hkdf_sha256, sha256};

/// The Noise protocol of the link handshake (same primitives as the relay handshake in `noise.rs`).
pub const LINK_PATTERN: &str = "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s";
/// Noise prologue of the link handshake.
pub const LINK_PROLOGUE: &[u8] = b"imfree/v1/device-link";
/// HKDF info of the pre-shared key derived from the code.
pub const LINK_PSK_INFO: &[u8] = b"imfree/v1/link-psk";
/// HKDF info of the rendezvous id derived from the code.
pub const LINK_RENDEZVOUS_INFO: &[u8] = b"imfree/v1/link-rendezvous";
/// Label of the agreement-key fingerprint in the QR payload.
pub const LINK_FINGERPRINT_LABEL: &str = "imfree/v1/link-fingerprint";
/// Prefix of the QR payload text.
pub const QR_PREFIX: &str = "imfree-link:";
/// Version byte of the QR payload and of the grant.
pub const LINK_VERSION: u8 = 1;
const MAX_LINK_MESSAGE: usize = 1024;
const GRANT_LEN: usize = 1 + 32 + 32 + 4 + 32 + 32 + 8 + 64;
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Why linking failed. A failed link leaves nothing behind: start again with a new code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The code is not a link code.
    #[error("not a valid link code: {0}")]
    BadCode(&'static str),
    /// The handshake failed: a wrong code, or someone altered the messages.
    #[error("device linking failed: the code is wrong or the connection was tampered with; start again with a new code")]
    Handshake,
    /// The other device's key is not the one the scanned QR code names.
    #[error("the device answering is not the one whose code was scanned: someone is in the middle; do not link")]
    WrongDevice,
    /// The grant does not certify this device, or its certificate is invalid.
    #[error("the linking device sent an invalid grant: {0}")]
    BadGrant(&'static str),
}

impl From<snow::Error> for LinkError {
    fn from(_: snow::Error) -> Self {
        LinkError::Handshake
    }
}

/// The secret the existing device shows and the new device enters.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkCode(Zeroizing<[u8; 16]>);

impl std::fmt::Debug for LinkCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkCode(..)")
    }
}

fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in bytes {
        acc = (acc << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// RFC 4648 base32 without padding; case-insensitive; spaces and dashes ignored; trailing bits must be zero.
fn base32_decode(text: &str) -> Result<Vec<u8>, LinkError> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.chars().filter(|c| !matches!(c, ' ' | '-')) {
        let c = c.to_ascii_uppercase() as u8;
        let v = BASE32.iter().position(|x| *x == c).ok_or(LinkError::BadCode("character outside base32"))? as u32;
        acc = ((acc << 5) | v) & 0xFFFF;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits >= 5 || acc & ((1 << bits) - 1) != 0 {
        return Err(LinkError::BadCode("base32 length"));
    }
    Ok(out)
}

/// First 16 bytes of `SHA-256("imfree/v1/link-fingerprint" 0x00 || agreement key)`.
pub fn agreement_fingerprint(agreement_key: &[u8; 32]) -> [u8; 16] {
    let mut c = Canonical::labelled(LINK_FINGERPRINT_LABEL);
    c.bytes(agreement_key);
    let mut out = [0u8; 16];
    out.copy_from_slice(&sha256(&c.0)[..16]);
    out
}

impl LinkCode {
    /// A fresh code (16 random bytes).
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut code = Zeroizing::new([0u8; 16]);
        rng.fill_bytes(code.as_mut());
        LinkCode(code)
    }

    /// From its 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        LinkCode(Zeroizing::new(bytes))
    }

    /// 26 base32 characters in groups of 5 (`ABCDE-FGHIJ-KLMNO-PQRST-UVWXY-Z`), to show and type.
    pub fn to_text(&self) -> String {
        let plain = base32_encode(self.0.as_ref());
        plain.as_bytes().chunks(5).map(|c| std::str::from_utf8(c).expect("ASCII")).collect::<Vec<_>>().join("-")
    }

    /// Parse a typed code (case, spaces and dashes do not matter).
    pub fn parse(text: &str) -> Result<Self, LinkError> {
        let bytes = base32_decode(text)?;
        let code: [u8; 16] = bytes.try_into().map_err(|_| LinkError::BadCode("a link code has 26 characters"))?;
        Ok(LinkCode::from_bytes(code))
    }

    /// The QR payload: `"imfree-link:" || base32(0x01 || code 16 || agreement_fingerprint 16)`, naming the agreement
    /// key of the device that shows it.
    pub fn qr_payload(&self, shown_by_agreement_key: &[u8; 32]) -> String {
        let mut bytes = Zeroizing::new(Vec::with_capacity(33));
        bytes.push(LINK_VERSION);
        bytes.extend_from_slice(self.0.as_ref());
        bytes.extend_from_slice(&agreement_fingerprint(shown_by_agreement_key));
        format!("{QR_PREFIX}{}", base32_encode(&bytes))
    }

    /// Parse a scanned QR payload: the code and the fingerprint the showing device's static key must have.
    pub fn parse_qr(text: &str) -> Result<(Self, [u8; 16]), LinkError> {
        let body = text.strip_prefix(QR_PREFIX).ok_or(LinkError::BadCode("not an imfree link QR code"))?;
        let bytes = Zeroizing::new(base32_decode(body)?);
        if bytes.len() != 33 || bytes[0] != LINK_VERSION {
            return Err(LinkError::BadCode("QR payload length or version"));
        }
        let mut code = [0u8; 16];
        code.copy_from_slice(&bytes[1..17]);
        let mut fingerprint = [0u8; 16];
        fingerprint.copy_from_slice(&bytes[17..33]);
        Ok((LinkCode::from_bytes(code), fingerprint))
    }

    /// What both devices give the relay to be paired (hex of 16 bytes derived from the code; reveals nothing of it).
    pub fn rendezvous_id(&self) -> String {
        hex_lower(&hkdf_sha256::<16>(&[0u8; 32], self.0.as_ref(), &[LINK_RENDEZVOUS_INFO])[..])
    }

    fn psk(&self) -> Zeroizing<[u8; 32]> {
        hkdf_sha256::<32>(&[0u8; 32], self.0.as_ref(), &[LINK_PSK_INFO])
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn handshake(code: &LinkCode, static_secret: &[u8; 32], initiator: bool) -> Result<HandshakeState, LinkError> {
    let psk = code.psk();
    let params = LINK_PATTERN.parse().map_err(|_| LinkError::Handshake)?;
    let builder = Builder::new(params).prologue(LINK_PROLOGUE)?.psk(3, &psk)?.local_private_key(static_secret)?;
    Ok(if initiator { builder.build_initiator()? } else { builder.build_responder()? })
}

fn write(hs: &mut HandshakeState, payload: &[u8]) -> Result<Vec<u8>, LinkError> {
    let mut buf = vec![0u8; MAX_LINK_MESSAGE];
    let n = hs.write_message(payload, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn read(hs: &mut HandshakeState, message: &[u8]) -> Result<Zeroizing<Vec<u8>>, LinkError> {
    if message.len() > MAX_LINK_MESSAGE {
        return Err(LinkError::Handshake);
    }
    let mut buf = Zeroizing::new(vec![0u8; MAX_LINK_MESSAGE]);
    let n = hs.read_message(message, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn remote_static(hs: &HandshakeState) -> Result<[u8; 32], LinkError> {
    hs.get_remote_static().and_then(|k| k.try_into().ok()).ok_or(LinkError::Handshake)
}

/// New device, step 1: send the first message.
pub struct NewDeviceLink;

/// New device, waiting for the existing device's reply (message 2).
pub struct NewDeviceAwaitingReply {
    hs: HandshakeState,
    expected_fingerprint: Option<[u8; 16]>,
    signing_key: [u8; 32],
}

/// New device, waiting for the grant.
pub struct NewDeviceAwaitingGrant {
    transport: TransportState,
    signing_key: [u8; 32],
}

/// What a linked device receives: the user identity and its own certificate.
pub struct LinkedDevice {
    /// The user identity (seed transferred from the existing device).
    pub identity: UserIdentity,
    /// The certificate for this device's keys.
    pub certificate: DeviceCertificate,
}

impl NewDeviceLink {
    /// Start linking `device` with the entered code (`expected_fingerprint` from a scanned QR payload, if any).
    /// Returns the state and message 1 to send.
    pub fn start(
        code: &LinkCode,
        expected_fingerprint: Option<[u8; 16]>,
        device: &DeviceKeys,
    ) -> Result<(NewDeviceAwaitingReply, Vec<u8>), LinkError> {
        let mut hs = handshake(code, &device.static_secret(), true)?;
        let msg = write(&mut hs, &[])?;
        Ok((NewDeviceAwaitingReply { hs, expected_fingerprint, signing_key: device.signing_public() }, msg))
    }
}

impl NewDeviceAwaitingReply {
    /// Read message 2 (checks the existing device's key against the QR fingerprint) and answer with message 3,
    /// which carries this device's signing key under the code's authentication.
    pub fn read_reply(mut self, message: &[u8]) -> Result<(NewDeviceAwaitingGrant, Vec<u8>), LinkError> {
        let payload = read(&mut self.hs, message)?;
        if !payload.is_empty() {
            return Err(LinkError::Handshake);
        }
        let existing = remote_static(&self.hs)?;
        if let Some(expected) = self.expected_fingerprint
            && agreement_fingerprint(&existing) != expected
        {
            return Err(LinkError::WrongDevice);
        }
        let mut payload = Vec::with_capacity(33);
        payload.push(LINK_VERSION);
        payload.extend_from_slice(&self.signing_key);
        let msg = write(&mut self.hs, &payload)?;
        let transport = self.hs.into_transport_mode()?;
        Ok((NewDeviceAwaitingGrant { transport, signing_key: self.signing_key }, msg))
    }
}

impl NewDeviceAwaitingGrant {
    /// Read the grant (message 4): the identity seed and this device's certificate, checked against this device's
    /// keys (`device` must be the keys the link was started with).
    pub fn finish(mut self, message: &[u8], device: &DeviceKeys) -> Result<LinkedDevice, LinkError> {
        if message.len() > MAX_LINK_MESSAGE {
            return Err(LinkError::Handshake);
        }
        let mut buf = Zeroizing::new(vec![0u8; MAX_LINK_MESSAGE]);
        let n = self.transport.read_message(message, &mut buf)?;
        let grant = &buf[..n];
        if grant.len() != GRANT_LEN || grant[0] != LINK_VERSION {
            return Err(LinkError::BadGrant("length or version"));
        }
        let bad = |_: E2eError| LinkError::BadGrant("encoding");
        let mut r = Reader::new(&grant[1..]);
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(r.array("identity seed").map_err(bad)?);
        let certificate = DeviceCertificate {
            user_identity: r.array("user identity").map_err(bad)?,
            device_id: r.u32("device id").map_err(bad)?,
            signing_key: r.array("signing key").map_err(bad)?,
            agreement_key: r.array("agreement key").map_err(bad)?,
            issued_at: r.u64("issued at").map_err(bad)?,
            signature: r.array("signature").map_err(bad)?,
        };
        let identity = UserIdentity::from_seed(&seed);
        if identity.public_key() != certificate.user_identity {
            return Err(LinkError::BadGrant("the certificate is not issued by the transferred identity"));
        }
        if certificate.signing_key != self.signing_key
            || certificate.signing_key != device.signing_public()
            || certificate.agreement_key != device.static_public()
        {
            return Err(LinkError::BadGrant("the certificate does not name this device's keys"));
        }
        certificate.verify().map_err(|_| LinkError::BadGrant("certificate signature"))?;
        Ok(LinkedDevice { identity, certificate })
    }
}

/// Existing device, waiting for message 1.
pub struct ExistingDeviceLink {
    hs: HandshakeState,
    expected_fingerprint: Option<[u8; 16]>,
}

/// Existing device, waiting for message 3.
pub struct ExistingAwaitingConfirm {
    hs: HandshakeState,
    expected_fingerprint: Option<[u8; 16]>,
}

/// Existing device: the new device proved it knows the code; approve (or drop) it.
pub struct PendingApproval {
    transport: TransportState,
    /// The new device's Ed25519 signing key.
    pub signing_key: [u8; 32],
    /// The new device's X25519 agreement key (its Noise static key in this handshake: possession is proven).
    pub agreement_key: [u8; 32],
}

impl ExistingDeviceLink {
    /// Start waiting for a new device with the code this device shows.
    pub fn new(code: &LinkCode, device: &DeviceKeys) -> Result<Self, LinkError> {
        Self::expecting(code, None, device)
    }

    /// Start with a code the NEW device showed: with `expected_fingerprint` from its scanned QR payload, message 3
    /// is refused ([`LinkError::WrongDevice`]) unless the new device's static key has that fingerprint.
    pub fn expecting(code: &LinkCode, expected_fingerprint: Option<[u8; 16]>, device: &DeviceKeys) -> Result<Self, LinkError> {
        Ok(ExistingDeviceLink { hs: handshake(code, &device.static_secret(), false)?, expected_fingerprint })
    }

    /// Read message 1, answer with message 2.
    pub fn respond(mut self, message: &[u8]) -> Result<(ExistingAwaitingConfirm, Vec<u8>), LinkError> {
        let payload = read(&mut self.hs, message)?;
        if !payload.is_empty() {
            return Err(LinkError::Handshake);
        }
        let msg = write(&mut self.hs, &[])?;
        Ok((ExistingAwaitingConfirm { hs: self.hs, expected_fingerprint: self.expected_fingerprint }, msg))
    }
}

impl ExistingAwaitingConfirm {
    /// Read message 3: it fails unless the new device used the same code.
    pub fn read_confirm(mut self, message: &[u8]) -> Result<PendingApproval, LinkError> {
        let payload = read(&mut self.hs, message)?;
        if payload.len() != 33 || payload[0] != LINK_VERSION {
            return Err(LinkError::Handshake);
        }
        let mut signing_key = [0u8; 32];
        signing_key.copy_from_slice(&payload[1..]);
        ed25519_dalek::VerifyingKey::from_bytes(&signing_key).map_err(|_| LinkError::Handshake)?;
        let agreement_key = remote_static(&self.hs)?;
        if crate::identity::is_low_order_x25519(&agreement_key) {
            return Err(LinkError::Handshake);
        }
        if let Some(expected) = self.expected_fingerprint
            && agreement_fingerprint(&agreement_key) != expected
        {
            return Err(LinkError::WrongDevice);
        }
        let transport = self.hs.into_transport_mode()?;
        Ok(PendingApproval { transport, signing_key, agreement_key })
    }
}

impl PendingApproval {
    /// Certify the new device as `device_id` and send it the identity seed: returns message 4 and the certificate
    /// (publish it with the user's device list).
    pub fn approve(
        mut self,
        identity: &UserIdentity,
        device_id: u32,
        issued_at: u64,
    ) -> Result<(Vec<u8>, DeviceCertificate), LinkError> {
        let certificate = identity.certify(device_id, self.signing_key, self.agreement_key, issued_at);
        let mut c = Canonical::default();
        c.u8(LINK_VERSION).bytes(identity.seed().as_ref());
        c.bytes(&certificate.user_identity)
            .u32(certificate.device_id)
            .bytes(&certificate.signing_key)
            .bytes(&certificate.agreement_key)
            .u64(certificate.issued_at)
            .bytes(&certificate.signature);
        let grant = Zeroizing::new(c.0);
        let mut buf = vec![0u8; MAX_LINK_MESSAGE];
        let n = self.transport.write_message(&grant, &mut buf)?;
        buf.truncate(n);
        Ok((buf, certificate))
    }
}
