//! The connection to the relay without the socket: the IMF Noise handshakes a device makes (XX at first contact,
//! with a password or single sign-on login code; IK to resume as a known device) and the sealed frame channel after
//! them. A driver carries the bytes — `tokio-tungstenite` in the native engine, the browser's `WebSocket` — and
//! this module decides what they are. docs/protocol.md, section 3, specifies the pattern, prologue and payloads.

use imfree_crypto::device::DeviceKeys;
use imfree_crypto::noise::{IkInitiator, NoiseError, Transport, XxInitiator};
use imfree_proto::auth::{IkAuth, XxAuth, XxOp, device_binding_message};
use imfree_proto::{ErrorCode, Frame, FrameBody, Limits, PROTOCOL_VERSION, Payload, Welcome};
use zeroize::Zeroizing;

use crate::ClientError;

/// Credentials for a first-contact (XX) handshake.
pub struct PasswordAuth<'a> {
    /// Register, log in, or finish a single sign-on login.
    pub op: XxOp,
    /// User name (empty for an SSO login).
    pub user: &'a str,
    /// Password (empty for an SSO login).
    pub password: &'a str,
    /// TOTP code.
    pub totp: Option<&'a str>,
    /// SSO login: the login code from the sign-in redirect.
    pub login_code: Option<&'a str>,
    /// SSO login: the PKCE verifier whose challenge the code was issued for.
    pub verifier: Option<&'a str>,
    /// Device name.
    pub device_name: &'a str,
}

/// A first-contact handshake after message 1 was sent.
pub struct PasswordHandshake {
    init: XxInitiator,
    limits: Limits,
}

impl PasswordHandshake {
    /// Start: returns the handshake and message 1, to send as one binary WebSocket message.
    pub fn start(keys: &DeviceKeys, limits: Limits) -> Result<(Self, Vec<u8>), ClientError> {
        let (init, m1) = XxInitiator::start(&keys.static_secret(), limits.max_frame_bytes).map_err(noise)?;
        Ok((PasswordHandshake { init, limits }, m1))
    }

    /// Read the relay's message 2, check its static key against `relay_pin` (when this device has pinned one), and
    /// write message 3 with the credentials and this device's signing key bound to the handshake. Returns the
    /// channel, message 3 to send, and the relay's static key (to pin). `now_ms` is Unix milliseconds.
    pub fn finish(
        self,
        message2: &[u8],
        relay_pin: Option<[u8; 32]>,
        keys: &DeviceKeys,
        auth: &PasswordAuth<'_>,
        now_ms: u64,
    ) -> Result<(Channel, Vec<u8>, [u8; 32]), ClientError> {
        let knows = self.init.read_response(message2).map_err(noise)?;
        let relay_key = knows.relay_static();
        if let Some(pinned) = relay_pin
            && pinned != relay_key
        {
            return Err(ClientError::RelayKeyChanged { pinned: hex::encode(pinned), presented: hex::encode(relay_key) });
        }
        let binding =
            device_binding_message(imfree_crypto::noise::DEVICE_BINDING_CONTEXT, &knows.binding_hash(), &keys.static_public(), auth.user);
        let payload = XxAuth {
            v: PROTOCOL_VERSION,
            op: auth.op,
            user: auth.user.to_owned(),
            password: auth.password.to_owned(),
            totp: auth.totp.map(str::to_owned),
            login_code: auth.login_code.map(str::to_owned),
            verifier: auth.verifier.map(str::to_owned),
            device_name: auth.device_name.to_owned(),
            signing_key: Payload(keys.signing_public().to_vec()),
            binding_sig: Payload(keys.sign(&binding).to_vec()),
            ts: now_ms,
        };
        let payload = Zeroizing::new(serde_json::to_vec(&payload).map_err(|e| ClientError::Protocol(format!("auth payload: {e}")))?);
        let (transport, m3) = knows.finish(&payload).map_err(noise)?;
        Ok((Channel { transport, limits: self.limits }, m3, relay_key))
    }
}

/// A resuming (IK) handshake after message 1 was sent.
pub struct ResumeHandshake {
    init: IkInitiator,
    relay_key: [u8; 32],
    limits: Limits,
}

/// Who resumes, and for what.
pub struct Resume<'a> {
    /// The account.
    pub user: &'a str,
    /// This device's id at the relay.
    pub device: &'a str,
    /// The session token.
    pub token: &'a str,
    /// A session for file transfers and sending only: the relay delivers nothing to it.
    pub transfer: bool,
}

impl ResumeHandshake {
    /// Start towards the relay whose pinned static key is `relay_key`; message 1 carries the session token. Returns
    /// the handshake and message 1. `now_ms` is Unix milliseconds (the relay refuses stale handshakes).
    pub fn start(keys: &DeviceKeys, relay_key: [u8; 32], resume: &Resume<'_>, limits: Limits, now_ms: u64) -> Result<(Self, Vec<u8>), ClientError> {
        let auth = IkAuth {
            v: PROTOCOL_VERSION,
            user: resume.user.into(),
            device: resume.device.into(),
            token: resume.token.into(),
            ts: now_ms,
            transfer: resume.transfer,
        };
        let payload = Zeroizing::new(serde_json::to_vec(&auth).map_err(|e| ClientError::Protocol(format!("auth payload: {e}")))?);
        let (init, m1) = IkInitiator::start(&keys.static_secret(), &relay_key, &payload, limits.max_frame_bytes).map_err(noise)?;
        Ok((ResumeHandshake { init, relay_key, limits }, m1))
    }

    /// Read the relay's message 2 and enter transport mode.
    pub fn finish(self, message2: &[u8]) -> Result<Channel, ClientError> {
        let (transport, _) = self.init.finish(message2).map_err(noise)?;
        Ok(Channel { transport, limits: self.limits })
    }

    /// What a refusal of message 1 means: a relay that could not open it holds another Noise key than the one
    /// pinned, which the user must hear about as such; other refusals pass through.
    pub fn refused(&self, error: ClientError) -> ClientError {
        match error {
            ClientError::Refused { code: ErrorCode::HandshakeFailed, .. } => ClientError::RelayKeyChanged {
                pinned: hex::encode(self.relay_key),
                presented: "unknown (the relay could not read a handshake made for the pinned key)".into(),
            },
            other => other,
        }
    }
}

/// A text message from the relay while a handshake is under way: only an error frame is expected there (errors
/// before the handshake completes travel in plaintext).
pub fn handshake_text(text: &str) -> ClientError {
    match Frame::decode(text.as_bytes(), &Limits::default()) {
        Ok(Frame { body: FrameBody::Error(e), .. }) => ClientError::Refused { code: e.code, message: e.message },
        _ => ClientError::Protocol("unexpected text message during the handshake".into()),
    }
}

/// The first frame after a handshake: the relay's welcome, or its refusal.
pub fn welcome(frame: Frame) -> Result<Welcome, ClientError> {
    match frame.body {
        FrameBody::Welcome(w) => Ok(w),
        FrameBody::Error(e) => Err(ClientError::Refused { code: e.code, message: e.message }),
        other => Err(ClientError::Protocol(format!("expected welcome, got {}", Frame::new(other).type_name()))),
    }
}

/// The authenticated channel after a handshake: frames sealed by the Noise transport (large frames in several
/// WebSocket messages), and decoded under the protocol limits.
pub struct Channel {
    transport: Transport,
    limits: Limits,
}

impl Channel {
    /// The WebSocket messages that carry `frame`.
    pub fn seal(&mut self, frame: &Frame) -> Result<Vec<Vec<u8>>, ClientError> {
        self.seal_raw(frame.encode().as_bytes())
    }

    /// The WebSocket messages that carry `bytes` as one frame (tests send invalid frames this way).
    pub fn seal_raw(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, ClientError> {
        self.transport.seal(bytes).map_err(noise)
    }

    /// Open a binary WebSocket message: a frame, or `None` while a chunked frame is incomplete.
    pub fn open(&mut self, message: &[u8]) -> Result<Option<Frame>, ClientError> {
        match self.transport.open(message).map_err(noise)? {
            Some(plain) => self.decode(&plain).map(Some),
            None => Ok(None),
        }
    }

    /// Decode a plaintext text message (the relay's error frames outside the Noise transport).
    pub fn open_text(&self, text: &str) -> Result<Frame, ClientError> {
        self.decode(text.as_bytes())
    }

    fn decode(&self, bytes: &[u8]) -> Result<Frame, ClientError> {
        Frame::decode(bytes, &self.limits).map_err(|e| ClientError::Protocol(format!("bad frame from relay: {e}")))
    }
}

fn noise(e: NoiseError) -> ClientError {
    ClientError::Protocol(e.to_string())
}
