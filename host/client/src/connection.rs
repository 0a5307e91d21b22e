//! One connection to a relay: TLS with a pinned certificate, the WebSocket, the IMF Noise handshake, and sealed
//! frames after it.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use imfree_crypto::device::DeviceKeys;
use imfree_crypto::noise::{IkInitiator, Transport, XxInitiator};
use imfree_proto::auth::{IkAuth, XxAuth, XxOp, device_binding_message};
use imfree_proto::{ErrorCode, Frame, FrameBody, Limits, PROTOCOL_VERSION, Payload, Welcome};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::ClientError;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long to wait for each step of connecting.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

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

/// What the TLS and Noise layers presented, for pinning after first contact.
#[derive(Debug, Clone)]
pub struct Presented {
    /// TLS certificate fingerprint (None on plaintext `ws://`).
    pub tls_fingerprint: Option<String>,
    /// The relay's Noise static key.
    pub relay_key: [u8; 32],
}

/// An authenticated connection.
pub struct Connection {
    ws: Ws,
    transport: Transport,
    limits: Limits,
}

fn ws_url(server: &str) -> Result<String, ClientError> {
    let server = server.trim_end_matches('/');
    if !(server.starts_with("wss://") || server.starts_with("ws://")) {
        return Err(ClientError::Config(format!("server URL must be wss://HOST:PORT, not {server:?}")));
    }
    Ok(format!("{server}/v1/imf"))
}

async fn open_socket(server: &str, tls_pin: Option<&str>) -> Result<(Ws, Option<String>), ClientError> {
    let url = ws_url(server)?;
    let tls = url.starts_with("wss://");
    let (config, observed) = crate::tls::client_config(tls_pin);
    let connector = if tls { Connector::Rustls(config) } else { Connector::Plain };
    let attempt = tokio_tungstenite::connect_async_tls_with_config(url.as_str(), None, true, Some(connector));
    let result = tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .map_err(|_| ClientError::Io(format!("timed out connecting to {server}")))?;
    match result {
        Ok((ws, _)) => Ok((ws, if tls { observed.get() } else { None })),
        Err(e) => {
            let text = e.to_string();
            if let (Some(pinned), Some(presented)) = (tls_pin, observed.get())
                && (text.contains("server certificate changed") || crate::tls::normalise_fingerprint(pinned) != presented) {
                    return Err(ClientError::CertificateChanged { pinned: pinned.to_owned(), presented });
                }
            Err(ClientError::Io(format!("cannot connect to {server}: {text}")))
        }
    }
}

async fn next_binary(ws: &mut Ws) -> Result<Vec<u8>, ClientError> {
    loop {
        let msg = tokio::time::timeout(CONNECT_TIMEOUT, ws.next())
            .await
            .map_err(|_| ClientError::Io("timed out waiting for the relay".into()))?;
        match msg {
            Some(Ok(Message::Binary(b))) => return Ok(b.to_vec()),
            Some(Ok(Message::Text(t))) => {
                // Errors before the handshake completes come as plaintext frames.
                return Err(match Frame::decode(t.as_bytes(), &Limits::default()) {
                    Ok(Frame { body: FrameBody::Error(e), .. }) => ClientError::Refused { code: e.code, message: e.message },
                    _ => ClientError::Protocol("unexpected text message during the handshake".into()),
                });
            }
            Some(Ok(Message::Close(_))) | None => return Err(ClientError::Io("the relay closed the connection".into())),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ClientError::Io(e.to_string())),
        }
    }
}

fn now_ms() -> u64 {
    crate::now_ms() as u64
}

impl Connection {
    /// First contact with password (or SSO login code) auth (Noise XX). Checks the relay key against `relay_pin` when given.
    pub async fn password(
        server: &str,
        tls_pin: Option<&str>,
        relay_pin: Option<[u8; 32]>,
        keys: &DeviceKeys,
        auth: PasswordAuth<'_>,
    ) -> Result<(Connection, Welcome, Presented), ClientError> {
        let limits = Limits::default();
        let (mut ws, tls_fingerprint) = open_socket(server, tls_pin).await?;
        let (init, m1) = XxInitiator::start(&keys.static_secret(), limits.max_frame_bytes).map_err(noise)?;
        ws.send(Message::Binary(m1.into())).await.map_err(io)?;
        let m2 = next_binary(&mut ws).await?;
        let knows = init.read_response(&m2).map_err(noise)?;
        let relay_key = knows.relay_static();
        if let Some(pinned) = relay_pin
            && pinned != relay_key {
                return Err(ClientError::RelayKeyChanged { pinned: hex::encode(pinned), presented: hex::encode(relay_key) });
            }
        let binding = device_binding_message(
            imfree_crypto::noise::DEVICE_BINDING_CONTEXT,
            &knows.binding_hash(),
            &keys.static_public(),
            auth.user,
        );
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
            ts: now_ms(),
        };
        let payload = zeroize::Zeroizing::new(serde_json::to_vec(&payload).unwrap_or_default());
        let (transport, m3) = knows.finish(&payload).map_err(noise)?;
        ws.send(Message::Binary(m3.into())).await.map_err(io)?;
        let mut conn = Connection { ws, transport, limits };
        let welcome = conn.expect_welcome().await?;
        Ok((conn, welcome, Presented { tls_fingerprint, relay_key }))
    }

    /// Reconnect as a known device (Noise IK with the pinned relay key and the session token). A `transfer`
    /// session is for file transfers and sending only: the relay delivers nothing to it.
    #[allow(clippy::too_many_arguments)]
    pub async fn resume(
        server: &str,
        tls_pin: Option<&str>,
        relay_key: [u8; 32],
        keys: &DeviceKeys,
        user: &str,
        device: &str,
        token: &str,
        transfer: bool,
    ) -> Result<(Connection, Welcome), ClientError> {
        let limits = Limits::default();
        let (mut ws, _) = open_socket(server, tls_pin).await?;
        let auth = IkAuth { v: PROTOCOL_VERSION, user: user.into(), device: device.into(), token: token.into(), ts: now_ms(), transfer };
        let payload = zeroize::Zeroizing::new(serde_json::to_vec(&auth).unwrap_or_default());
        let (init, m1) = IkInitiator::start(&keys.static_secret(), &relay_key, &payload, limits.max_frame_bytes).map_err(noise)?;
        ws.send(Message::Binary(m1.into())).await.map_err(io)?;
        let m2 = match next_binary(&mut ws).await {
            Ok(m) => m,
            // The relay could not open message 1: it holds a different Noise key than the one pinned.
            Err(ClientError::Refused { code: ErrorCode::HandshakeFailed, .. }) => {
                return Err(ClientError::RelayKeyChanged { pinned: hex::encode(relay_key), presented: "unknown (the relay could not read a handshake made for the pinned key)".into() });
            }
            Err(e) => return Err(e),
        };
        let (transport, _) = init.finish(&m2).map_err(noise)?;
        let mut conn = Connection { ws, transport, limits };
        let welcome = conn.expect_welcome().await?;
        Ok((conn, welcome))
    }

    async fn expect_welcome(&mut self) -> Result<Welcome, ClientError> {
        match self.recv().await?.body {
            FrameBody::Welcome(w) => Ok(w),
            FrameBody::Error(e) => Err(ClientError::Refused { code: e.code, message: e.message }),
            other => Err(ClientError::Protocol(format!("expected welcome, got {}", Frame::new(other).type_name()))),
        }
    }

    /// Send a frame.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), ClientError> {
        self.feed(frame).await?;
        self.ws.flush().await.map_err(io)
    }

    /// Queue a frame without flushing (call [`Connection::flush`]).
    pub async fn feed(&mut self, frame: &Frame) -> Result<(), ClientError> {
        for m in self.transport.seal(frame.encode().as_bytes()).map_err(noise)? {
            self.ws.feed(Message::Binary(m.into())).await.map_err(io)?;
        }
        Ok(())
    }

    /// Flush queued frames.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.ws.flush().await.map_err(io)
    }

    /// Send raw bytes as one sealed frame (tests use this to send invalid frames).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        for m in self.transport.seal(bytes).map_err(noise)? {
            self.ws.send(Message::Binary(m.into())).await.map_err(io)?;
        }
        Ok(())
    }

    /// The next frame from the relay.
    pub async fn recv(&mut self) -> Result<Frame, ClientError> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    let Some(plain) = self.transport.open(&b).map_err(noise)? else { continue };
                    return Frame::decode(&plain, &self.limits).map_err(|e| ClientError::Protocol(format!("bad frame from relay: {e}")));
                }
                Some(Ok(Message::Text(t))) => {
                    return Frame::decode(t.as_bytes(), &self.limits).map_err(|e| ClientError::Protocol(format!("bad frame from relay: {e}")));
                }
                Some(Ok(Message::Close(_))) | None => return Err(ClientError::Io("the relay closed the connection".into())),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(ClientError::Io(e.to_string())),
            }
        }
    }

    /// Close politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

fn io(e: tokio_tungstenite::tungstenite::Error) -> ClientError {
    ClientError::Io(e.to_string())
}

fn noise(e: imfree_crypto::noise::NoiseError) -> ClientError {
    ClientError::Protocol(e.to_string())
}
