//! The client engine: account set-up (register, login), sessions with the relay, sending through a durable outbox,
//! and receiving into the local store before acknowledging.
//!
//! Exactly-once as the user sees it: a delivery is stored (de-duplicated by envelope id) before it is acked, and
//! shown only from the store. A send is written to the outbox before it goes out and leaves the outbox only when
//! the relay answers `accepted` (after which the relay has it durably); an unanswered send is sent again with the
//! same id on the next connection, and the relay drops the duplicate.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use imfree_proto::auth::XxOp;
use imfree_proto::content::Content;
use imfree_proto::{
    Ack, EnvelopeId, ErrorCode, ErrorFrame, Frame, FrameBody, Limits, Payload, Presence, PresenceQuery, Receipt,
    ReceiptKind, Recipient, Request, Send, Status, TotpCode, TotpSecret, Typing, mime,
};

use crate::connection::{Connection, PasswordAuth};
use crate::home::{Account, Home};
use crate::store::{LocalStore, OutboxItem, StoredMessage};
use crate::{ClientError, now_ms};

/// What to do when the relay presents something other than what was pinned.
#[derive(Debug, Clone, Copy, Default)]
pub struct Trust {
    /// Accept (and pin) a changed TLS certificate.
    pub accept_new_certificate: bool,
    /// Accept (and pin) a changed relay Noise key.
    pub accept_new_relay_key: bool,
}

/// A client bound to a home directory with a logged-in account.
pub struct Client {
    home: Home,
    account: Account,
    store: LocalStore,
}

/// Something that happened on a session.
#[derive(Debug, Clone)]
pub enum Event {
    /// A new message (already stored and acknowledged).
    Message(StoredMessage),
    /// A receipt for messages this user sent.
    Receipt {
        /// Who sent the receipt.
        from: String,
        /// Which messages.
        refs: Vec<String>,
        /// Delivered or read.
        kind: ReceiptKind,
    },
    /// A contact's presence.
    Presence(Presence),
    /// A contact is typing (or stopped).
    Typing {
        /// Who.
        from: String,
        /// Typing now.
        active: bool,
    },
    /// Everything queued at connect time has arrived.
    Drained,
    /// The relay stored an envelope of ours.
    Accepted {
        /// Envelope id.
        id: String,
        /// It had been accepted before.
        duplicate: bool,
    },
    /// The relay refused a frame of ours.
    Refused(ErrorFrame),
    /// The answer to `totp.setup`.
    TotpSecret(TotpSecret),
    /// A request succeeded.
    Ok(Option<String>),
    /// The answer to a ping.
    Pong(Option<String>),
}

impl Client {
    /// Register a new account on `server` from this home, pinning the relay's certificate and key.
    pub async fn register(home: Option<&Path>, server: &str, user: &str, password: &str, trust: Trust) -> Result<Client, ClientError> {
        Self::password_auth(home, server, XxOp::Register, user, password, None, trust).await
    }

    /// Log in to an existing account from this home (registering this device if it is new).
    pub async fn login(
        home: Option<&Path>,
        server: &str,
        user: &str,
        password: &str,
        totp: Option<&str>,
        trust: Trust,
    ) -> Result<Client, ClientError> {
        Self::password_auth(home, server, XxOp::Login, user, password, totp, trust).await
    }

    async fn password_auth(
        home: Option<&Path>,
        server: &str,
        op: XxOp,
        user: &str,
        password: &str,
        totp: Option<&str>,
        trust: Trust,
    ) -> Result<Client, ClientError> {
        let home = Home::open(home)?;
        let mut account = home.load_or_new(server)?;
        let keys = account.device_keys()?;
        let tls_pin = if trust.accept_new_certificate { None } else { account.tls_pin.clone() };
        let relay_pin = if trust.accept_new_relay_key { None } else { account.relay_key()? };
        let device_name = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty() && h.len() <= 64).unwrap_or_else(|| "cli".into());
        let auth = PasswordAuth { op, user, password, totp, device_name: &device_name };
        let (conn, welcome, presented) = Connection::password(server, tls_pin.as_deref(), relay_pin, &keys, auth).await?;
        conn.close().await;
        account.user = Some(welcome.user);
        account.device = Some(welcome.device);
        account.token = welcome.token;
        account.token_expires = welcome.token_expires;
        account.tls_pin = presented.tls_fingerprint;
        account.relay_key = Some(hex::encode(presented.relay_key));
        home.save(&account)?;
        let store = LocalStore::open(&home.database()).await?;
        Ok(Client { home, account, store })
    }

    /// Open the account set up in this home.
    pub async fn open(home: Option<&Path>) -> Result<Client, ClientError> {
        let home = Home::open(home)?;
        let account = home.load()?.ok_or(ClientError::NotLoggedIn)?;
        if account.user.is_none() || account.token.is_none() {
            return Err(ClientError::NotLoggedIn);
        }
        let store = LocalStore::open(&home.database()).await?;
        Ok(Client { home, account, store })
    }

    /// The user name.
    pub fn user(&self) -> &str {
        self.account.user.as_deref().unwrap_or_default()
    }

    /// This device's id.
    pub fn device(&self) -> &str {
        self.account.device.as_deref().unwrap_or_default()
    }

    /// The home directory.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// The account (pins, ids).
    pub fn account(&self) -> &Account {
        &self.account
    }

    /// The local store.
    pub fn store(&self) -> &LocalStore {
        &self.store
    }

    /// Forget the session token locally (after logout).
    pub fn forget_token(&mut self) -> Result<(), ClientError> {
        self.account.token = None;
        self.account.token_expires = None;
        self.home.save(&self.account)
    }

    /// Connect to the relay as this device.
    pub async fn connect(&self) -> Result<Session<'_>, ClientError> {
        let (Some(user), Some(device), Some(token)) = (&self.account.user, &self.account.device, &self.account.token) else {
            return Err(ClientError::NotLoggedIn);
        };
        let relay_key = self.account.relay_key()?.ok_or(ClientError::NotLoggedIn)?;
        let keys = self.account.device_keys()?;
        let (conn, welcome) =
            Connection::resume(&self.account.server, self.account.tls_pin.as_deref(), relay_key, &keys, user, device, token).await?;
        Ok(Session { client: self, conn, events: VecDeque::new(), queued_at_connect: welcome.queued })
    }

    /// Connect, retrying with backoff on network failures until `deadline`. Refusals (bad token, changed keys)
    /// are not retried.
    pub async fn connect_with_retry(&self, deadline: tokio::time::Instant) -> Result<Session<'_>, ClientError> {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.connect().await {
                Ok(s) => return Ok(s),
                Err(e @ ClientError::Io(_)) if tokio::time::Instant::now() + delay < deadline => {
                    tracing::debug!(error = %e, "connect failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(3));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Write a text message to the outbox (and the conversation); it goes out on the next flush.
    pub async fn compose(&self, to: &str, body_mime: &str, body: &[u8]) -> Result<String, ClientError> {
        imfree_proto::validate_user_name(to, &Limits::default()).map_err(|r| ClientError::Config(format!("recipient: {r}")))?;
        let id = new_envelope_id();
        let content = Content::new(body_mime, body, Some(imfree_proto::compress::Compression::Gzip));
        let item = OutboxItem { id: id.clone(), kind: "message".into(), to: to.into(), mime: mime::PLAIN_CONTENT.into(), payload: content.encode() };
        let message = StoredMessage {
            seq: 0,
            id: id.clone(),
            outgoing: true,
            from: self.user().into(),
            from_device: self.device().into(),
            to: to.into(),
            ts: now_ms(),
            mime: body_mime.into(),
            body: body.to_vec(),
            status: "pending".into(),
        };
        self.store.insert_outgoing(&message, &item).await?;
        Ok(id)
    }
}

/// A new envelope id (ULID).
pub fn new_envelope_id() -> String {
    ulid::Ulid::new().to_string()
}

/// A live session with the relay.
pub struct Session<'c> {
    client: &'c Client,
    conn: Connection,
    events: VecDeque<Event>,
    /// How many envelopes the relay said were queued at connect time.
    pub queued_at_connect: u64,
}

impl Session<'_> {
    /// The underlying connection (tests send raw frames through it).
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Send a frame.
    pub async fn send_frame(&mut self, frame: &Frame) -> Result<(), ClientError> {
        self.conn.send(frame).await
    }

    /// Send every outbox entry (oldest first). Answers arrive as [`Event::Accepted`] / [`Event::Refused`].
    pub async fn flush_outbox(&mut self) -> Result<usize, ClientError> {
        let items = self.client.store.outbox().await?;
        for item in &items {
            let Ok(id) = item.id.parse::<EnvelopeId>() else {
                self.client.store.mark_failed(&item.id).await?;
                continue;
            };
            let body = if item.kind == "receipt" {
                let refs: Vec<EnvelopeId> = serde_json::from_slice(&item.payload).unwrap_or_default();
                let kind = if item.mime == "read" { ReceiptKind::Read } else { ReceiptKind::Delivered };
                FrameBody::Receipt(Receipt { id, to: Some(item.to.clone()), from: None, refs, kind, ts: None })
            } else {
                FrameBody::Send(Send { id, to: Recipient::User(item.to.clone()), mime: item.mime.clone(), data: Payload(item.payload.clone()) })
            };
            self.conn.feed(&Frame::new(body)).await?;
        }
        self.conn.flush().await?;
        Ok(items.len())
    }

    /// Flush the outbox and wait until the relay answered every entry (accepted, or refused for good). Rate-limited
    /// entries are sent again after the relay's delay. Other events that arrive meanwhile are kept for
    /// [`Session::next_event`].
    pub async fn sync_outbox(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.flush_outbox().await?;
        let mut held = VecDeque::new();
        loop {
            if self.client.store.outbox().await?.is_empty() {
                break;
            }
            let event = match tokio::time::timeout_at(deadline, self.read_event()).await {
                Ok(e) => e?,
                Err(_) => return Err(ClientError::Io("the relay did not accept every message in time; they stay queued".into())),
            };
            match event {
                Event::Refused(e) if e.code == ErrorCode::RateLimited => {
                    tokio::time::sleep(Duration::from_millis(e.retry_after_ms.unwrap_or(100).min(5000))).await;
                    self.flush_outbox().await?;
                }
                Event::Accepted { .. } | Event::Refused(_) => {}
                other => held.push_back(other),
            }
        }
        held.extend(self.events.drain(..));
        self.events = held;
        Ok(())
    }

    /// The next event. Deliveries are stored and acknowledged before they are returned; duplicates are dropped.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        if let Some(e) = self.events.pop_front() {
            return Ok(e);
        }
        self.read_event().await
    }

    async fn read_event(&mut self) -> Result<Event, ClientError> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(e);
            }
            let first = self.conn.recv().await?;
            // Take whatever else is already here, so that a burst of deliveries is stored in one transaction and
            // acked in one frame.
            let mut frames = vec![first];
            while frames.len() < 512 {
                match tokio::time::timeout(Duration::ZERO, self.conn.recv()).await {
                    Ok(Ok(f)) => frames.push(f),
                    Ok(Err(e)) if frames.is_empty() => return Err(e),
                    _ => break,
                }
            }
            self.process(frames).await?;
        }
    }

    async fn process(&mut self, frames: Vec<Frame>) -> Result<(), ClientError> {
        let store = &self.client.store;
        let me = self.client.user().to_owned();
        let limits = Limits::default();
        let mut incoming = Vec::new();
        let mut acks = Vec::new();
        let mut after = Vec::new();
        for frame in frames {
            match frame.body {
                FrameBody::Deliver(d) => {
                    acks.push(d.id);
                    incoming.push(decode_delivery(&d, &limits, &me));
                }
                FrameBody::Receipt(r) => {
                    acks.push(r.id);
                    let refs: Vec<String> = r.refs.iter().map(|i| i.to_string()).collect();
                    let from = r.from.unwrap_or_default();
                    let kind = match r.kind {
                        ReceiptKind::Delivered => "delivered",
                        ReceiptKind::Read => "read",
                    };
                    store.record_receipt(&refs, &from, kind, r.ts.unwrap_or(0) as i64).await?;
                    after.push(Event::Receipt { from, refs, kind: r.kind });
                }
                FrameBody::Accepted(a) => {
                    store.mark_sent(a.id.as_str(), a.ts as i64).await?;
                    after.push(Event::Accepted { id: a.id.to_string(), duplicate: a.duplicate });
                }
                FrameBody::Error(e) => {
                    if let Some(reference) = &e.reference {
                        // Refused for good: the outbox entry will never be accepted. Transient refusals are retried.
                        if !matches!(e.code, ErrorCode::RateLimited | ErrorCode::Internal | ErrorCode::ShuttingDown) {
                            store.mark_failed(reference).await?;
                        }
                    }
                    after.push(Event::Refused(e));
                }
                FrameBody::Drained(_) => after.push(Event::Drained),
                FrameBody::Presence(p) => after.push(Event::Presence(p)),
                FrameBody::Typing(t) => after.push(Event::Typing { from: t.from.unwrap_or_default(), active: t.active }),
                FrameBody::TotpSecret(s) => after.push(Event::TotpSecret(s)),
                FrameBody::Ok(r) => after.push(Event::Ok(r.reference)),
                FrameBody::Pong(r) => after.push(Event::Pong(r.reference)),
                other => tracing::debug!(frame = Frame::new(other).type_name(), "ignoring unexpected frame"),
            }
        }
        if !incoming.is_empty() {
            let fresh = store.insert_incoming(&incoming, &me).await?;
            for (message, new) in incoming.into_iter().zip(fresh) {
                if new {
                    self.events.push_back(Event::Message(message));
                }
            }
        }
        if !acks.is_empty() {
            if std::env::var_os("IMFREE_FAULT_EXIT_BEFORE_ACK").is_some() {
                // Fault injection for the crash-between-receive-and-ack test: stored, never acked.
                std::process::exit(86);
            }
            for chunk in acks.chunks(limits.max_ids_per_frame) {
                self.conn.feed(&Frame::new(FrameBody::Ack(Ack { ids: chunk.to_vec() }))).await?;
            }
            self.conn.flush().await?;
        }
        self.events.extend(after);
        Ok(())
    }

    /// Set this user's presence.
    pub async fn set_presence(&mut self, status: Status) -> Result<(), ClientError> {
        self.conn.send(&Frame::new(FrameBody::Presence(Presence { user: None, status, last_seen: None }))).await
    }

    /// Ask for the presence of users (answers arrive as [`Event::Presence`]).
    pub async fn query_presence(&mut self, users: Vec<String>) -> Result<(), ClientError> {
        self.conn.send(&Frame::new(FrameBody::PresenceQuery(PresenceQuery { users }))).await
    }

    /// Tell `to` that this user is typing (or stopped).
    pub async fn typing(&mut self, to: &str, active: bool) -> Result<(), ClientError> {
        self.conn.send(&Frame::new(FrameBody::Typing(Typing { to: Some(to.into()), from: None, active }))).await
    }

    /// Queue a read receipt for messages from `to` and send it.
    pub async fn send_receipt(&mut self, to: &str, refs: &[String], kind: ReceiptKind) -> Result<(), ClientError> {
        let kind = match kind {
            ReceiptKind::Delivered => "delivered",
            ReceiptKind::Read => "read",
        };
        let item = OutboxItem { id: new_envelope_id(), kind: "receipt".into(), to: to.into(), mime: kind.into(), payload: serde_json::to_vec(refs).unwrap_or_default() };
        self.client.store.queue_receipt(&item).await?;
        self.flush_outbox().await.map(|_| ())
    }

    /// Round trip: every frame sent before has been processed by the relay when this returns.
    pub async fn ping(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let id = new_envelope_id();
        self.conn.send(&Frame::new(FrameBody::Ping(Request { id: Some(id.clone()), reference: None }))).await?;
        self.wait_for(timeout, |e| matches!(e, Event::Pong(Some(r)) if *r == id)).await.map(|_| ())
    }

    /// Wait for an event matching `pred`, keeping the others for later.
    pub async fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Result<Event, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut held = VecDeque::new();
        let found = loop {
            let event = match tokio::time::timeout_at(deadline, self.read_event()).await {
                Ok(e) => e?,
                Err(_) => {
                    held.extend(self.events.drain(..));
                    self.events = held;
                    return Err(ClientError::Io("timed out waiting for the relay".into()));
                }
            };
            if pred(&event) {
                break event;
            }
            held.push_back(event);
        };
        held.extend(self.events.drain(..));
        self.events = held;
        Ok(found)
    }

    /// Start enabling TOTP: returns the secret to put into an authenticator.
    pub async fn totp_setup(&mut self) -> Result<TotpSecret, ClientError> {
        self.conn.send(&Frame::new(FrameBody::TotpSetup(Request::default()))).await?;
        match self.wait_for(Duration::from_secs(15), |e| matches!(e, Event::TotpSecret(_) | Event::Refused(_))).await? {
            Event::TotpSecret(s) => Ok(s),
            Event::Refused(e) => Err(ClientError::Refused { code: e.code, message: e.message }),
            _ => Err(ClientError::Protocol("unexpected answer to totp.setup".into())),
        }
    }

    /// Confirm (enable) or disable TOTP with a current code.
    pub async fn totp_code(&mut self, code: &str, enable: bool) -> Result<(), ClientError> {
        let id = new_envelope_id();
        let c = TotpCode { id: Some(id.clone()), code: code.into() };
        let body = if enable { FrameBody::TotpConfirm(c) } else { FrameBody::TotpDisable(c) };
        self.conn.send(&Frame::new(body)).await?;
        let event = self
            .wait_for(Duration::from_secs(15), |e| match e {
                Event::Ok(Some(r)) => *r == id,
                Event::Refused(e) => e.reference.is_none() || e.reference.as_deref() == Some(&id),
                _ => false,
            })
            .await?;
        match event {
            Event::Refused(e) => Err(ClientError::Refused { code: e.code, message: e.message }),
            _ => Ok(()),
        }
    }

    /// Revoke this session's token on the relay.
    pub async fn logout(mut self) -> Result<(), ClientError> {
        let id = new_envelope_id();
        self.conn.send(&Frame::new(FrameBody::Logout(Request { id: Some(id.clone()), reference: None }))).await?;
        self.wait_for(Duration::from_secs(15), |e| matches!(e, Event::Ok(Some(r)) if *r == id)).await?;
        self.conn.close().await;
        Ok(())
    }

    /// Close the connection.
    pub async fn close(self) {
        self.conn.close().await;
    }
}

/// Turn a delivery into a stored message: decode the plaintext content document, or record why it could not be
/// read (unknown outer type, malformed, a compression bomb) as an `undecodable` message that says so.
fn decode_delivery(d: &imfree_proto::Deliver, limits: &Limits, me: &str) -> StoredMessage {
    let (body_mime, body, status) = if d.mime == mime::PLAIN_CONTENT {
        match Content::decode(&d.data.0).and_then(|c| Ok((c.mime.clone(), c.body_bytes(limits)?))) {
            Ok((m, b)) => (m, b, "received"),
            Err(e) => (mime::TEXT.to_owned(), format!("[undecodable message: {e}]").into_bytes(), "undecodable"),
        }
    } else {
        (mime::TEXT.to_owned(), format!("[undecodable message: unsupported content type {}]", d.mime).into_bytes(), "undecodable")
    };
    StoredMessage {
        seq: 0,
        id: d.id.to_string(),
        outgoing: d.from == me,
        from: d.from.clone(),
        from_device: d.from_device.clone(),
        to: d.to.clone(),
        ts: d.ts as i64,
        mime: body_mime,
        body,
        status: status.into(),
    }
}
