//! One connection to a relay: TLS with a pinned certificate and the WebSocket, carrying the client core's IMF Noise
//! handshake and sealed frames ([`imfree_client_core::relay`]).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use imfree_client_core::relay::{Channel, PasswordHandshake, Resume, ResumeHandshake, handshake_text};
use imfree_crypto::device::DeviceKeys;
use imfree_proto::{Frame, Limits, Welcome};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::ClientError;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long to wait for each step of connecting.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

pub use imfree_client_core::relay::PasswordAuth;

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
    channel: Channel,
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
            // Errors before the handshake completes come as plaintext frames.
            Some(Ok(Message::Text(t))) => return Err(handshake_text(&t)),
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
        let (mut ws, tls_fingerprint) = open_socket(server, tls_pin).await?;
        let (handshake, m1) = PasswordHandshake::start(keys, Limits::default())?;
        ws.send(Message::Binary(m1.into())).await.map_err(io)?;
        let m2 = next_binary(&mut ws).await?;
        let (channel, m3, relay_key) = handshake.finish(&m2, relay_pin, keys, &auth, now_ms())?;
        ws.send(Message::Binary(m3.into())).await.map_err(io)?;
        let mut conn = Connection { ws, channel };
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
        let (mut ws, _) = open_socket(server, tls_pin).await?;
        let resume = Resume { user, device, token, transfer };
        let (handshake, m1) = ResumeHandshake::start(keys, relay_key, &resume, Limits::default(), now_ms())?;
        ws.send(Message::Binary(m1.into())).await.map_err(io)?;
        let m2 = next_binary(&mut ws).await.map_err(|e| handshake.refused(e))?;
        let mut conn = Connection { ws, channel: handshake.finish(&m2)? };
        let welcome = conn.expect_welcome().await?;
        Ok((conn, welcome))
    }

    async fn expect_welcome(&mut self) -> Result<Welcome, ClientError> {
        imfree_client_core::relay::welcome(self.recv().await?)
    }

    /// Send a frame.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), ClientError> {
        self.feed(frame).await?;
        self.ws.flush().await.map_err(io)
    }

    /// Queue a frame without flushing (call [`Connection::flush`]).
    pub async fn feed(&mut self, frame: &Frame) -> Result<(), ClientError> {
        for m in self.channel.seal(frame)? {
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
        for m in self.channel.seal_raw(bytes)? {
            self.ws.send(Message::Binary(m.into())).await.map_err(io)?;
        }
        Ok(())
    }

    /// The next frame from the relay.
    pub async fn recv(&mut self) -> Result<Frame, ClientError> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    if let Some(frame) = self.channel.open(&b)? {
                        return Ok(frame);
                    }
                }
                Some(Ok(Message::Text(t))) => return self.channel.open_text(&t),
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
