//! One WebSocket connection: the Noise handshake, then the authenticated frame loop.
//!
//! Before the handshake completes nothing but handshake messages is accepted; errors before that point are sent as
//! plaintext `error` frames (WebSocket text) and the connection closes. After it, every frame is a Noise transport
//! message, and errors are frames like any other.
//!
//! Delivery: the connection first drains the device's durable queue from the store (backlog mode), then switches to
//! live mode, where the hub hands it committed envelopes directly. At most `delivery_window` deliveries are in
//! flight unacknowledged; past that, or whenever the hub could not hand an envelope over, the connection goes back
//! to reading its queue — so order is kept and nothing is skipped. Duplicates that the switch can produce are
//! filtered by id; a client drops any that remain by id too.

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use futures_util::SinkExt;
use imfree_crypto::noise::{Responder, Transport};
use imfree_proto::{
    Accepted, Deliver, ErrorCode, ErrorFrame, Frame, FrameBody, MessageRef, RefAction, Payload, Receipt, ReceiptKind, Recipient, Request, TotpSecret,
    Typing,
};
use imfree_store::{EnqueueOutcome, EnvelopeKind, NewEnvelope, QueuedEnvelope};
use tokio::sync::mpsc;

use crate::auth::{self, Authenticated};
use crate::hub::ConnEvent;
use crate::limits::{ConnectionGuard, TokenBucket};
use crate::state::{RelayState, now_ms};
use crate::totp;

/// Serve one upgraded WebSocket until it closes.
pub(crate) async fn serve(state: Arc<RelayState>, mut ws: WebSocket, ip: IpAddr, ip_guard: ConnectionGuard<IpAddr>) {
    // Boxed, like every rarely taken path below: an async fn's state is as large as its largest await point, and
    // this future is held for the whole life of every connection (docs/performance.md, "Idle memory").
    let Some((transport, who, token_hash)) = Box::pin(handshake(&state, &mut ws, ip)).await else {
        let _ = ws.close().await;
        return;
    };
    let Some(account_guard) =
        state.account_conns.try_acquire(who.user_id, state.config.limits.connections_per_account)
    else {
        let mut conn = Conn::new(Arc::clone(&state), ws, transport, &who, token_hash);
        let frame = Frame::error(ErrorCode::TooManyConnections, "this account has too many live connections");
        let _ = conn.send(&frame).await;
        let _ = conn.ws.close().await;
        return;
    };
    state.metrics.connections.inc();
    let mut conn = Conn::new(Arc::clone(&state), ws, transport, &who, token_hash);
    // Only the welcome is needed from here on: the rest of `who` is dropped now, not held for the connection's life.
    let welcome = { who }.welcome;
    conn.run(welcome).await;
    state.metrics.connections.dec();
    drop(account_guard);
    drop(ip_guard);
}

async fn send_plain_error(ws: &mut WebSocket, code: ErrorCode, message: &str) {
    let frame = Frame::error(code, message);
    let _ = ws.send(Message::Text(frame.encode().into())).await;
}

/// Wait for the next binary message of the handshake.
async fn next_binary(ws: &mut WebSocket, timeout: Duration) -> Result<Vec<u8>, (ErrorCode, &'static str)> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, ws.recv()).await {
            Err(_) => return Err((ErrorCode::HandshakeFailed, "handshake timed out")),
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => {
                return Err((ErrorCode::HandshakeFailed, "connection closed during the handshake"));
            }
            Ok(Some(Ok(Message::Binary(b)))) => return Ok(b.to_vec()),
            Ok(Some(Ok(Message::Text(_)))) => {
                return Err((
                    ErrorCode::HandshakeRequired,
                    "the first messages on a connection must be the IMF Noise handshake (binary); see docs/protocol.md",
                ));
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Run the Noise handshake and authenticate. On failure the peer has been told why.
async fn handshake(
    state: &Arc<RelayState>,
    ws: &mut WebSocket,
    ip: IpAddr,
) -> Option<(Transport, Authenticated, Option<[u8; 32]>)> {
    let result = |r: &'static str| state.metrics.handshakes.get_or_create(&crate::metrics::ResultLabel { result: r }).inc();
    if state.handshake_rate.check(&ip, Instant::now()).is_err() {
        result("rate_limited");
        send_plain_error(ws, ErrorCode::RateLimited, "too many handshakes from this address; wait and retry").await;
        return None;
    }
    let timeout = Duration::from_secs(state.config.limits.handshake_timeout_secs);
    let max_frame = state.config.limits.protocol.max_frame_bytes;
    let first = match next_binary(ws, timeout).await {
        Ok(b) => b,
        Err((code, msg)) => {
            result("refused");
            send_plain_error(ws, code, msg).await;
            return None;
        }
    };
    let responder = match Responder::read_first(&state.static_secret, &first, max_frame) {
        Ok(r) => r,
        Err(e) => {
            result("failed");
            tracing::debug!(%ip, error = %e, "handshake message 1 rejected");
            send_plain_error(ws, ErrorCode::HandshakeFailed, "handshake failed: the message was tampered with, or made for another relay key").await;
            return None;
        }
    };
    let (transport, outcome, token_hash) = match responder {
        Responder::Ik(ik) => {
            let payload = ik.payload().to_vec();
            let token_hash = serde_json::from_slice::<imfree_proto::auth::IkAuth>(&payload)
                .ok()
                .map(|a| crate::token::hash_token(&a.token));
            let outcome = auth::authenticate_ik(state, ik.device_static(), ik.ephemeral(), &payload).await;
            if let Err(e) = &outcome
                && e.code == ErrorCode::HandshakeReplayed {
                    result("replayed");
                    send_plain_error(ws, e.code, &e.message).await;
                    return None;
                }
            let Ok((transport, message2)) = ik.accept(&[]) else {
                result("failed");
                return None;
            };
            if ws.send(Message::Binary(message2.into())).await.is_err() {
                return None;
            }
            (transport, outcome, token_hash)
        }
        Responder::Xx(xx) => {
            if ws.send(Message::Binary(xx.message2().to_vec().into())).await.is_err() {
                return None;
            }
            let third = match next_binary(ws, timeout).await {
                Ok(b) => b,
                Err((code, msg)) => {
                    result("refused");
                    send_plain_error(ws, code, msg).await;
                    return None;
                }
            };
            let done = match xx.finish(&third) {
                Ok(d) => d,
                Err(_) => {
                    result("failed");
                    send_plain_error(ws, ErrorCode::HandshakeFailed, "handshake failed: message 3 was rejected").await;
                    return None;
                }
            };
            let outcome = auth::authenticate_xx(state, ip, done.device_static, done.binding_hash, &done.payload).await;
            (done.transport, outcome, None)
        }
    };
    match outcome {
        Ok(who) => {
            result("ok");
            let token_hash = token_hash.or_else(|| who.welcome.token.as_deref().map(crate::token::hash_token));
            Some((transport, who, token_hash))
        }
        Err(err) => {
            result("refused");
            state.metrics.errors.get_or_create(&crate::metrics::CodeLabel { code: err.code.as_str() }).inc();
            // The handshake completed, so the refusal travels authenticated and encrypted.
            let mut transport = transport;
            if let Ok(msgs) = transport.seal(Frame::new(FrameBody::Error(err)).encode().as_bytes()) {
                for m in msgs {
                    let _ = ws.send(Message::Binary(m.into())).await;
                }
            }
            None
        }
    }
}

/// The route of a user named in a key request, or the error to answer with. A free function: `Conn` is not `Sync`,
/// so a `&self` held across this await would make the connection future not `Send`.
async fn key_route(hub: &crate::hub::Hub, user: &str, failure: &str) -> Result<Arc<crate::hub::Route>, ErrorFrame> {
    match hub.route(user).await {
        Ok(Some(route)) => Ok(route),
        Ok(None) => Err(ErrorFrame::new(ErrorCode::UnknownRecipient, format!("no user named {user:?}"))),
        Err(_) => Err(ErrorFrame::new(ErrorCode::Internal, failure)),
    }
}

/// Ids recently pushed, so that the switch between backlog and live delivery sends nothing twice.
struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<String>,
    cap: usize,
}

impl RecentIds {
    fn new(cap: usize) -> Self {
        RecentIds { set: HashSet::new(), order: VecDeque::new(), cap }
    }

    /// Record `id`; false if it was recorded already.
    fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= self.cap
            && let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        self.set.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

struct Conn {
    state: Arc<RelayState>,
    ws: WebSocket,
    transport: Transport,
    user_id: i64,
    user: String,
    device: String,
    token_hash: Option<[u8; 32]>,
    conn_id: u64,
    tx: mpsc::Sender<ConnEvent>,
    rx: mpsc::Receiver<ConnEvent>,
    frames: TokenBucket,
    messages: TokenBucket,
    violations: u32,
    in_flight: HashSet<String>,
    recent: RecentIds,
    live: bool,
    dirty: bool,
    fetched_after: i64,
    drained_sent: bool,
    closing: bool,
    key_challenge: [u8; 32],
    /// A transfer-only session: never delivered to, not registered as online.
    transfer: bool,
}

impl Conn {
    fn new(state: Arc<RelayState>, ws: WebSocket, transport: Transport, who: &Authenticated, token_hash: Option<[u8; 32]>) -> Self {
        let window = state.config.limits.delivery_window;
        let (tx, rx) = mpsc::channel(window * 2 + 64);
        let now = Instant::now();
        Conn {
            frames: TokenBucket::new(state.config.limits.frames_per_connection, now),
            messages: TokenBucket::new(state.config.limits.messages_per_connection, now),
            conn_id: state.next_conn_id(),
            state,
            ws,
            transport,
            user_id: who.user_id,
            user: who.user.clone(),
            device: who.device.clone(),
            token_hash,
            tx,
            rx,
            violations: 0,
            in_flight: HashSet::new(),
            recent: RecentIds::new(window * 4),
            live: false,
            dirty: !who.transfer,
            transfer: who.transfer,
            fetched_after: 0,
            drained_sent: false,
            closing: false,
            key_challenge: {
                let mut c = [0u8; 32];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut c);
                c
            },
        }
    }

    async fn run(&mut self, mut welcome: imfree_proto::Welcome) {
        welcome.key_challenge = Payload(self.key_challenge.to_vec());
        welcome.prekeys_left = self.state.store.prekey_counts(&self.device).await.ok().map(|(a, b)| (a.max(0) as u64, b.max(0) as u64));
        if self.send(&Frame::new(FrameBody::Welcome(welcome))).await.is_err() {
            return;
        }
        let hub = Arc::clone(&self.state.hub);
        // A transfer-only session takes no deliveries and is not presence: it is not registered with the hub.
        let first_online = !self.transfer && hub.register(&self.device, self.user_id, self.conn_id, self.tx.clone());
        tracing::debug!(user = %self.user, device = %self.device, conn = self.conn_id, transfer = self.transfer, "connected");
        if first_online {
            Box::pin(self.announce_presence()).await;
        }
        let _ = self.loop_frames().await;
        self.state.links.leave(self.user_id, self.conn_id, None, "the other device disconnected");
        if !self.transfer && hub.unregister(&self.device, self.user_id, self.conn_id) {
            let _ = self.state.store.set_presence(self.user_id, None, Some(now_ms())).await;
            Box::pin(self.announce_presence()).await;
        }
        tracing::debug!(user = %self.user, device = %self.device, conn = self.conn_id, "disconnected");
        let _ = self.ws.close().await;
    }

    async fn announce_presence(&mut self) {
        let hub = Arc::clone(&self.state.hub);
        if let Err(e) = hub.broadcast_presence(self.user_id, &self.user).await {
            tracing::warn!(error = %e, "presence broadcast failed");
        }
        if self.state.plugins.host().is_some()
            && let Ok(p) = hub.presence_of(self.user_id, &self.user).await
        {
            // Off the connection's path: a slow plugin must not hold up this user's frames.
            let (plugins, user) = (Arc::clone(&self.state.plugins), self.user.clone());
            tokio::spawn(async move { plugins.status_change(&user, p.status).await });
        }
    }

    /// Run the relay's envelope filters (plugins); answers the sender and returns false when one refused.
    async fn envelope_passes(&mut self, reference: &str, conversation: String, recipients: Vec<String>, mime: &str, size: usize) -> Result<bool, ()> {
        if self.state.plugins.host().is_none() {
            return Ok(true);
        }
        let env = imfree_plugin_host::Envelope {
            sender: self.user.clone(),
            recipients,
            conversation,
            content_type: mime.to_owned(),
            size: size as u64,
            time: now_ms().max(0) as u64,
        };
        let plugins = Arc::clone(&self.state.plugins);
        match plugins.envelope(&env).await {
            imfree_plugin_host::EnvelopeOutcome::Deliver => Ok(true),
            imfree_plugin_host::EnvelopeOutcome::Reject { plugin, reason } => {
                tracing::info!(user = %self.user, %plugin, "envelope refused by a relay policy");
                self.error(ErrorCode::PolicyRejected, &format!("{plugin}: {reason}"), Some(reference.to_owned())).await?;
                Ok(false)
            }
        }
    }

    async fn loop_frames(&mut self) -> Result<(), ()> {
        loop {
            if self.dirty && !self.transfer && !self.closing && self.in_flight.len() < self.state.config.limits.delivery_window {
                Box::pin(self.refill()).await?;
            }
            self.ws.flush().await.map_err(|_| ())?;
            if self.closing {
                return Ok(());
            }
            tokio::select! {
                msg = self.ws.recv() => match msg {
                    // Boxed (here and below): each holds frames across its awaits, which an idle connection should not
                    // carry in its task; the allocation lives only while one frame or event is handled.
                    Some(Ok(Message::Binary(bytes))) => Box::pin(self.on_binary(&bytes)).await?,
                    Some(Ok(Message::Text(_))) => {
                        // After the handshake, every frame is a Noise transport message; plaintext is refused.
                        Box::pin(self.error(ErrorCode::HandshakeRequired, "frames must be Noise transport messages (binary) after the handshake", None)).await?;
                    }
                    Some(Ok(_)) => {}
                    None | Some(Err(_)) => return Ok(()),
                },
                event = self.rx.recv() => {
                    let Some(event) = event else { return Ok(()) };
                    Box::pin(self.on_events(event)).await?;
                }
            }
        }
    }

    /// Read the device's queue from the store, pushing what is not in flight, until it is empty or the window is
    /// full. Then switch to live delivery.
    async fn refill(&mut self) -> Result<(), ()> {
        let window = self.state.config.limits.delivery_window;
        self.live = false;
        loop {
            let room = window.saturating_sub(self.in_flight.len());
            if room == 0 {
                self.dirty = true;
                return Ok(());
            }
            self.dirty = false;
            let batch = match self.state.store.fetch_queue(&self.device, self.fetched_after, room as i64).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, device = %self.device, "queue fetch failed");
                    self.dirty = true;
                    return Err(());
                }
            };
            let n = batch.len();
            for env in batch {
                self.fetched_after = self.fetched_after.max(env.seq);
                self.push(&env).await?;
            }
            if n < room {
                self.live = true;
                if !self.drained_sent {
                    self.drained_sent = true;
                    self.feed(&Frame::new(FrameBody::Drained(Request::default()))).await?;
                }
                return Ok(());
            }
        }
    }

    async fn push(&mut self, env: &QueuedEnvelope) -> Result<(), ()> {
        if self.in_flight.contains(&env.id) || !self.recent.insert(&env.id) {
            return Ok(());
        }
        let Ok(id) = env.id.parse() else {
            tracing::error!(device = %self.device, "stored envelope id is not a ULID; skipping");
            return Ok(());
        };
        let ts = env.created_at.max(0) as u64;
        let group = crate::groups::group_of_recipient(&env.recipient);
        let body = match env.kind {
            EnvelopeKind::Message => FrameBody::Deliver(Deliver {
                id,
                from: env.sender.clone(),
                from_device: env.sender_device.clone(),
                to: if group.is_some() { self.user.clone() } else { env.recipient.clone() },
                group,
                ts,
                mime: env.mime.clone(),
                data: Payload(env.payload.clone()),
                refers: env.refers.as_ref().and_then(|r| Some(MessageRef { action: RefAction::parse(&r.action)?, id: r.id.parse().ok()? })),
            }),
            EnvelopeKind::Receipt => FrameBody::Receipt(Receipt {
                id,
                to: None,
                from: Some(env.sender.clone()),
                refs: serde_json::from_slice(&env.payload).unwrap_or_default(),
                kind: if env.mime == "read" { ReceiptKind::Read } else { ReceiptKind::Delivered },
                ts: Some(ts),
            }),
        };
        self.in_flight.insert(env.id.clone());
        self.state.metrics.envelopes_delivered.inc();
        self.feed(&Frame::new(body)).await
    }

    /// Handle `first` and whatever else is ready, into the same flush.
    async fn on_events(&mut self, first: ConnEvent) -> Result<(), ()> {
        self.on_event(first).await?;
        for _ in 0..256 {
            match self.rx.try_recv() {
                Ok(event) => self.on_event(event).await?,
                Err(_) => break,
            }
        }
        Ok(())
    }

    async fn on_event(&mut self, event: ConnEvent) -> Result<(), ()> {
        match event {
            ConnEvent::Envelope(env) => {
                if self.live && self.in_flight.len() < self.state.config.limits.delivery_window {
                    self.push(&env).await?;
                } else {
                    // It is durable in the queue: the next refill pushes it, in order.
                    self.live = false;
                    self.dirty = true;
                }
            }
            ConnEvent::Wake => {
                self.live = false;
                self.dirty = true;
            }
            ConnEvent::Committed(committed) => match committed.outcome {
                Ok(o) => {
                    let ts = committed.ts;
                    let Ok(id) = committed.id.parse() else { return Ok(()) };
                    let duplicate = matches!(o, EnqueueOutcome::Duplicate { .. });
                    self.feed(&Frame::new(FrameBody::Accepted(Accepted { id, duplicate, ts: ts.max(0) as u64 }))).await?;
                }
                Err(_) => {
                    self.error(ErrorCode::Internal, "the relay could not store this envelope; send it again", Some(committed.id)).await?;
                }
            },
            ConnEvent::Frame(frame) => self.feed(&frame).await?,
            ConnEvent::Kick(frame) => {
                self.feed(&frame).await?;
                self.closing = true;
            }
        }
        Ok(())
    }

    async fn on_binary(&mut self, bytes: &[u8]) -> Result<(), ()> {
        let plain = match self.transport.open(bytes) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(()),
            Err(imfree_crypto::noise::NoiseError::FrameTooLarge { limit }) => {
                self.error(ErrorCode::FrameTooLarge, &format!("frame exceeds {limit} bytes"), None).await?;
                return Ok(());
            }
            Err(_) => {
                // The Noise session is broken (tampered or out of order): nothing after this can be trusted.
                tracing::info!(user = %self.user, device = %self.device, "transport message rejected; closing");
                return Err(());
            }
        };
        self.state.metrics.frames_in.inc();
        if let Err(retry) = self.frames.try_take(Instant::now()) {
            return self.rate_limited(retry, None).await;
        }
        let frame = match Frame::decode(&plain, &self.state.config.limits.protocol) {
            Ok(f) => f,
            Err(e) => {
                let frame = Frame::new(FrameBody::Error(ErrorFrame::from(&e)));
                self.count_error(e.code());
                return self.feed(&frame).await;
            }
        };
        self.violations = 0;
        // Boxed: `on_frame` holds the state of every request type, which an idle connection should not carry.
        Box::pin(self.on_frame(frame)).await
    }

    async fn rate_limited(&mut self, retry: Duration, reference: Option<String>) -> Result<(), ()> {
        self.violations += 1;
        let mut e = ErrorFrame::new(ErrorCode::RateLimited, "too many frames; slow down");
        e.retry_after_ms = Some(retry.as_millis().max(1) as u64);
        e.reference = reference;
        self.count_error(ErrorCode::RateLimited);
        self.feed(&Frame::new(FrameBody::Error(e))).await?;
        if self.violations > self.state.config.limits.max_violations {
            tracing::info!(user = %self.user, device = %self.device, "closing a connection that keeps flooding");
            self.closing = true;
        }
        Ok(())
    }

    fn count_error(&self, code: ErrorCode) {
        self.state.metrics.errors.get_or_create(&crate::metrics::CodeLabel { code: code.as_str() }).inc();
    }

    async fn error(&mut self, code: ErrorCode, message: &str, reference: Option<String>) -> Result<(), ()> {
        self.count_error(code);
        let mut e = ErrorFrame::new(code, message);
        e.reference = reference;
        self.feed(&Frame::new(FrameBody::Error(e))).await
    }

    async fn envelope_allowed(&mut self, reference: &str) -> Result<bool, ()> {
        let now = Instant::now();
        let verdict = self.messages.try_take(now).and_then(|_| self.state.account_rate.check(&self.user_id, now));
        match verdict {
            Ok(()) => Ok(true),
            Err(retry) => {
                self.rate_limited(retry, Some(reference.to_owned())).await?;
                Ok(false)
            }
        }
    }

    /// The devices an envelope to `to` goes to: all of theirs and the sender's other devices.
    async fn recipients(&mut self, to: &str, reference: &str) -> Result<Option<(i64, Vec<String>, Vec<String>)>, ()> {
        let hub = Arc::clone(&self.state.hub);
        let route = match hub.route(to).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.error(ErrorCode::UnknownRecipient, &format!("no user named {to:?}"), Some(reference.to_owned())).await?;
                return Ok(None);
            }
            Err(e) => {
                tracing::error!(error = %e, "route lookup failed");
                self.error(ErrorCode::Internal, "the relay could not route this; send it again", Some(reference.to_owned())).await?;
                return Ok(None);
            }
        };
        let mut devices = route.devices.clone();
        let mut e2e = route.e2e_devices.clone();
        if route.user_id != self.user_id {
            if let Ok(Some(own)) = hub.route(&self.user).await {
                devices.extend(own.devices.iter().filter(|d| **d != self.device).cloned());
                e2e.extend(own.e2e_devices.iter().filter(|d| **d != self.device).cloned());
            }
            if let Err(e) = hub.note_contact(self.user_id, route.user_id).await {
                tracing::warn!(error = %e, "could not record contact");
            }
        } else {
            devices.retain(|d| *d != self.device);
            e2e.retain(|d| *d != self.device);
        }
        Ok(Some((route.user_id, devices, e2e)))
    }

    /// A group message: one sender-key ciphertext for every E2E device of every current member but this one.
    async fn send_to_group(&mut self, reference: String, group: imfree_proto::GroupId, mime: String, data: Vec<u8>, refers: Option<MessageRef>) -> Result<(), ()> {
        let store = Arc::clone(&self.state.store);
        let max = self.state.config.limits.max_group_log_entries;
        let members = match crate::groups::members_for_send(store.as_ref(), &self.state.groups, self.user_id, &group, max).await {
            Ok(m) => m,
            Err(mut e) => {
                e.reference = Some(reference);
                self.count_error(e.code);
                return self.feed(&Frame::new(FrameBody::Error(e))).await;
            }
        };
        let hub = Arc::clone(&self.state.hub);
        let mut devices = Vec::new();
        let mut names = Vec::new();
        for member in members {
            let route = match store.user_by_id(member).await {
                Ok(Some(user)) => hub.route(&user.name).await,
                Ok(None) => continue,
                Err(e) => Err(e),
            };
            match route {
                Ok(Some(route)) => {
                    devices.extend(route.e2e_devices.iter().filter(|d| **d != self.device).cloned());
                    names.push(route.name.clone());
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "group route lookup failed");
                    return self.error(ErrorCode::Internal, "the relay could not route this; send it again", Some(reference)).await;
                }
            }
        }
        let conversation = crate::groups::envelope_recipient(&group);
        let refers = match self.check_change(&reference, &conversation, refers).await? {
            Checked::Plain => None,
            Checked::Change(r) => Some(r),
            Checked::Refused => return Ok(()),
        };
        if !self.envelope_passes(&reference, conversation, names, &mime, data.len()).await? {
            return Ok(());
        }
        self.submit(NewEnvelope {
            id: reference,
            kind: EnvelopeKind::Message,
            sender: self.user.clone(),
            sender_device: self.device.clone(),
            recipient: crate::groups::envelope_recipient(&group),
            mime,
            payload: data,
            created_at: now_ms(),
            recipient_devices: devices,
            device_payloads: Vec::new(),
            refers,
        })
        .await
    }

    /// Check an edit's or deletion's clear reference (see [`crate::edits`]); a refusal has been answered.
    async fn check_change(&mut self, reference: &str, conversation: &str, refers: Option<MessageRef>) -> Result<Checked, ()> {
        let Some(refers) = refers else { return Ok(Checked::Plain) };
        let rules = crate::edits::EditRules {
            window_ms: (self.state.config.limits.edit_window_secs as i64).saturating_mul(1000),
            max_group_entries: self.state.config.limits.max_group_log_entries,
        };
        let change = crate::edits::Change { user_id: self.user_id, user: &self.user, conversation, refers };
        let store = Arc::clone(&self.state.store);
        match crate::edits::check(store.as_ref(), &self.state.groups, &rules, &change, now_ms()).await {
            Ok(r) => Ok(Checked::Change(r)),
            Err(mut e) => {
                tracing::info!(user = %self.user, action = refers.action.as_str(), code = %e.code, "change of a message refused");
                e.reference = Some(reference.to_owned());
                self.count_error(e.code);
                self.feed(&Frame::new(FrameBody::Error(e))).await?;
                Ok(Checked::Refused)
            }
        }
    }

    async fn submit(&mut self, envelope: NewEnvelope) -> Result<(), ()> {
        if !self.state.hub.submit(envelope, self.tx.clone()).await {
            return Err(());
        }
        Ok(())
    }

    async fn on_frame(&mut self, frame: Frame) -> Result<(), ()> {
        match frame.body {
            FrameBody::Send(send) => {
                let reference = send.id.to_string();
                if !self.envelope_allowed(&reference).await? {
                    return Ok(());
                }
                let to = match send.to {
                    Recipient::User(to) => to,
                    Recipient::Group(group) => return self.send_to_group(reference, group, send.mime, send.data.0, send.refers).await,
                };
                let Some((_, devices, e2e)) = self.recipients(&to, &reference).await? else { return Ok(()) };
                let refers = match self.check_change(&reference, &to, send.refers).await? {
                    Checked::Plain => None,
                    Checked::Change(r) => Some(r),
                    Checked::Refused => return Ok(()),
                };
                let size = send.data.0.len() + send.payloads.iter().map(|p| p.data.0.len()).sum::<usize>();
                if !self.envelope_passes(&reference, to.clone(), vec![to.clone()], &send.mime, size).await? {
                    return Ok(());
                }
                let (recipient_devices, device_payloads) = if send.payloads.is_empty() {
                    (devices, Vec::new())
                } else {
                    // End to end: exactly one ciphertext per current E2E device, or the sender re-reads the list.
                    let given: std::collections::BTreeSet<&str> = send.payloads.iter().map(|p| p.device.as_str()).collect();
                    let expected: std::collections::BTreeSet<&str> = e2e.iter().map(String::as_str).collect();
                    if given != expected || given.len() != send.payloads.len() {
                        let missing: Vec<&str> = expected.difference(&given).copied().collect();
                        let extra: Vec<&str> = given.difference(&expected).copied().collect();
                        let msg = format!("device list changed: missing {missing:?}, not current {extra:?}; fetch keys.devices again");
                        return self.error(ErrorCode::StaleDevices, &msg, Some(reference)).await;
                    }
                    send.payloads.into_iter().map(|p| (p.device, p.data.0)).unzip()
                };
                self.submit(NewEnvelope {
                    id: reference,
                    kind: EnvelopeKind::Message,
                    sender: self.user.clone(),
                    sender_device: self.device.clone(),
                    recipient: to,
                    mime: send.mime,
                    payload: send.data.0,
                    created_at: now_ms(),
                    recipient_devices,
                    device_payloads,
                    refers,
                })
                .await
            }
            FrameBody::Receipt(receipt) => {
                let reference = receipt.id.to_string();
                let Some(to) = receipt.to.clone() else {
                    return self.error(ErrorCode::InvalidField, "a receipt needs `to`", Some(reference)).await;
                };
                if !self.envelope_allowed(&reference).await? {
                    return Ok(());
                }
                let Some((_, devices, _)) = self.recipients(&to, &reference).await? else { return Ok(()) };
                let kind = match receipt.kind {
                    ReceiptKind::Delivered => "delivered",
                    ReceiptKind::Read => "read",
                };
                self.submit(NewEnvelope {
                    id: reference,
                    kind: EnvelopeKind::Receipt,
                    sender: self.user.clone(),
                    sender_device: self.device.clone(),
                    recipient: to,
                    mime: kind.into(),
                    payload: serde_json::to_vec(&receipt.refs).unwrap_or_default(),
                    created_at: now_ms(),
                    recipient_devices: devices,
                    device_payloads: Vec::new(),
                    refers: None,
                })
                .await
            }
            FrameBody::Ack(ack) => {
                let ids: Vec<String> = ack.ids.iter().map(|i| i.to_string()).collect();
                for id in &ids {
                    self.in_flight.remove(id);
                }
                self.state.hub.ack(&self.device, ids).await;
                if self.in_flight.len() < self.state.config.limits.delivery_window && !self.live {
                    self.dirty = true;
                }
                Ok(())
            }
            FrameBody::Presence(p) => {
                if p.user.is_some() {
                    return self.error(ErrorCode::InvalidField, "set your own presence without `user`", None).await;
                }
                if let Err(e) = self.state.store.set_presence(self.user_id, Some(p.status.as_str()), None).await {
                    tracing::error!(error = %e, "presence update failed");
                    return self.error(ErrorCode::Internal, "could not store presence", None).await;
                }
                self.announce_presence().await;
                Ok(())
            }
            FrameBody::PresenceQuery(q) => {
                for name in q.users {
                    let hub = Arc::clone(&self.state.hub);
                    let presence = match hub.route(&name).await {
                        Ok(Some(route)) => {
                            let visible = route.user_id == self.user_id
                                || self.state.store.are_contacts(self.user_id, route.user_id).await.unwrap_or(false);
                            if visible {
                                hub.presence_of(route.user_id, &name).await.ok()
                            } else {
                                None
                            }
                        }
                        _ => None,
                    };
                    // Non-contacts and unknown users look the same: offline, no last-seen.
                    let presence = presence.unwrap_or(imfree_proto::Presence {
                        user: Some(name),
                        status: imfree_proto::Status::Offline,
                        last_seen: None,
                    });
                    self.feed(&Frame::new(FrameBody::Presence(presence))).await?;
                }
                Ok(())
            }
            FrameBody::Typing(t) => {
                let Some(to) = t.to else {
                    return self.error(ErrorCode::InvalidField, "typing needs `to`", None).await;
                };
                let hub = Arc::clone(&self.state.hub);
                if let Ok(Some(route)) = hub.route(&to).await
                    && self.state.store.are_contacts(self.user_id, route.user_id).await.unwrap_or(false) {
                        let frame = Frame::new(FrameBody::Typing(Typing { to: None, from: Some(self.user.clone()), active: t.active }));
                        hub.send_to_user(route.user_id, &frame);
                    }
                Ok(())
            }
            FrameBody::Ping(r) => self.feed(&Frame::new(FrameBody::Pong(Request { id: None, reference: r.id }))).await,
            FrameBody::KeysUpload(k) => {
                let store = Arc::clone(&self.state.store);
                let max = self.state.config.limits.max_prekeys_per_device;
                let answer = match crate::e2e::upload(store.as_ref(), self.user_id, &self.device, &self.key_challenge, k.upload, max).await {
                    Ok(()) => {
                        self.state.hub.invalidate_route(&self.user);
                        Ok(FrameBody::Ok(Request { id: None, reference: k.id.clone() }))
                    }
                    Err(e) => {
                        tracing::info!(user = %self.user, device = %self.device, reason = %e.message, "key upload refused");
                        self.count_error(e.code);
                        Err(e)
                    }
                };
                self.answer(k.id, answer).await
            }
            FrameBody::KeysDevices(k) => {
                let hub = Arc::clone(&self.state.hub);
                let answer = match key_route(&hub, &k.user, "could not read the device list").await {
                    Ok(route) => crate::e2e::device_list(self.state.store.as_ref(), route.user_id, route.user_id == self.user_id).await.map(|(devices, list)| {
                        FrameBody::KeysDeviceList(imfree_proto::KeysDeviceList {
                            reference: k.id.clone(),
                            user: k.user,
                            devices,
                            revocation: list.map(Payload),
                        })
                    }),
                    Err(e) => Err(e),
                };
                self.answer(k.id, answer).await
            }
            FrameBody::KeysClaim(k) => {
                // Claims use up one-time prekeys: they count against the envelope rate.
                if !self.envelope_allowed(k.id.as_deref().unwrap_or("")).await? {
                    return Ok(());
                }
                let hub = Arc::clone(&self.state.hub);
                let answer = match key_route(&hub, &k.user, "could not claim keys").await {
                    Ok(route) => crate::e2e::claim(self.state.store.as_ref(), &route.devices, &k.devices).await.map(|bundles| {
                        FrameBody::KeysBundles(imfree_proto::KeysBundles { reference: k.id.clone(), user: k.user, bundles })
                    }),
                    Err(e) => Err(e),
                };
                self.answer(k.id, answer).await
            }
            FrameBody::GroupAppend(g) => {
                // Each append replays and verifies the group's log: it counts against the envelope rate.
                if !self.envelope_allowed(g.id.as_deref().unwrap_or("")).await? {
                    return Ok(());
                }
                let store = Arc::clone(&self.state.store);
                let max = self.state.config.limits.max_group_log_entries;
                let state = Arc::clone(&self.state);
                let answer = match crate::groups::append(store.as_ref(), &state.groups, crate::groups::Appender { user_id: self.user_id, user: &self.user, device: &self.device }, &g.group, &g.entry.0, max).await {
                    Ok(()) => Ok(FrameBody::Ok(Request { id: None, reference: g.id.clone() })),
                    Err(e) => {
                        tracing::info!(user = %self.user, group = %g.group, reason = %e.message, "membership entry refused");
                        self.count_error(e.code);
                        Err(e)
                    }
                };
                self.answer(g.id, answer).await
            }
            FrameBody::GroupLog(g) => {
                let store = Arc::clone(&self.state.store);
                let max = self.state.config.limits.max_group_log_entries;
                let reader = (self.user_id, self.user.as_str());
                let answer = crate::groups::log(store.as_ref(), &self.state.groups, reader, &g.group, g.from, g.invite.as_ref(), max).await.map(|(head, entries)| {
                    FrameBody::GroupEntries(imfree_proto::GroupEntries { reference: g.id.clone(), group: g.group, head, entries })
                });
                self.answer(g.id, answer).await
            }
            FrameBody::KeysRevoke(k) => {
                let store = Arc::clone(&self.state.store);
                let answer = match crate::e2e::revoke(store.as_ref(), self.user_id, &self.device, &k.list.0).await {
                    Ok(revoked) => {
                        let hub = Arc::clone(&self.state.hub);
                        hub.invalidate_route(&self.user);
                        let frame = Frame::error(ErrorCode::DeviceRevoked, "this device was revoked by its owner");
                        for device in &revoked {
                            hub.kick_device(device, &frame);
                        }
                        tracing::info!(user = %self.user, device = %self.device, revoked = revoked.len(), "devices revoked");
                        Ok(FrameBody::Ok(Request { id: None, reference: k.id.clone() }))
                    }
                    Err(e) => {
                        tracing::info!(user = %self.user, device = %self.device, reason = %e.message, "revocation refused");
                        self.count_error(e.code);
                        Err(e)
                    }
                };
                self.answer(k.id, answer).await
            }
            FrameBody::LinkOpen(l) => {
                let name = match self.state.store.device_by_id(&self.device).await {
                    Ok(Some(d)) => d.name,
                    _ => String::new(),
                };
                let member = crate::link::LinkMember { conn_id: self.conn_id, device: self.device.clone(), device_name: name, tx: self.tx.clone() };
                match self.state.links.open(self.user_id, &l.rendezvous, member) {
                    Ok(paired) => {
                        self.feed(&Frame::new(FrameBody::Ok(Request { id: None, reference: l.id }))).await?;
                        match paired {
                            Some(frame) => self.feed(&frame).await,
                            None => Ok(()),
                        }
                    }
                    Err(e) => {
                        self.count_error(e.code);
                        self.answer(l.id, Err(e)).await
                    }
                }
            }
            FrameBody::LinkData(l) => match self.state.links.forward(self.user_id, self.conn_id, &l.rendezvous, l.data) {
                Ok(()) => Ok(()),
                Err(e) => {
                    self.count_error(e.code);
                    self.feed(&Frame::new(FrameBody::Error(e))).await
                }
            },
            FrameBody::LinkClose(l) => {
                let reason = l.reason.as_deref().unwrap_or("the other device closed the rendezvous");
                self.state.links.leave(self.user_id, self.conn_id, Some(&l.rendezvous), reason);
                Ok(())
            }
            FrameBody::FileBegin(f) => {
                // Each begin may reserve quota and touches the store: it counts against the envelope rate.
                if !self.envelope_allowed(f.id.as_deref().unwrap_or("")).await? {
                    return Ok(());
                }
                let answer = crate::files::begin(&self.state, self.user_id, &f).await;
                if let Err(e) = &answer {
                    self.count_error(e.code);
                }
                self.answer(f.id, answer).await
            }
            FrameBody::FileFetch(f) => {
                let answer = crate::files::fetch(&self.state, self.user_id, &f).await;
                if let Err(e) = &answer {
                    self.count_error(e.code);
                }
                self.answer(f.id, answer).await
            }
            FrameBody::TotpSetup(r) => self.totp_setup(r.id).await,
            FrameBody::TotpConfirm(c) => self.totp_confirm(c.id, &c.code, true).await,
            FrameBody::TotpDisable(c) => self.totp_confirm(c.id, &c.code, false).await,
            FrameBody::Logout(r) => {
                if let Some(hash) = self.token_hash
                    && let Err(e) = self.state.store.revoke_session(&hash, now_ms()).await {
                        tracing::error!(error = %e, "revoking a session failed");
                        return self.error(ErrorCode::Internal, "logout failed; try again", r.id).await;
                    }
                self.feed(&Frame::new(FrameBody::Ok(Request { id: None, reference: r.id }))).await?;
                self.closing = true;
                Ok(())
            }
            other => {
                let name = Frame::new(other).type_name();
                self.error(ErrorCode::InvalidField, &format!("`{name}` frames are sent by the relay, not to it"), None).await
            }
        }
    }

    async fn totp_setup(&mut self, reference: Option<String>) -> Result<(), ()> {
        let secret = totp::generate_secret();
        if let Err(e) = self.state.store.set_totp_pending(self.user_id, Some(&secret)).await {
            tracing::error!(error = %e, "storing a pending TOTP secret failed");
            return self.error(ErrorCode::Internal, "could not start TOTP set-up", reference).await;
        }
        let uri = totp::otpauth_uri(&secret, &self.state.config.accounts.totp_issuer, &self.user);
        self.feed(&Frame::new(FrameBody::TotpSecret(TotpSecret { secret: totp::secret_to_base32(&secret), uri }))).await
    }

    /// Confirm a pending secret (`enable`) or disable TOTP, each proven by a current code that is then used up.
    async fn totp_confirm(&mut self, reference: Option<String>, code: &str, enable: bool) -> Result<(), ()> {
        let store = Arc::clone(&self.state.store);
        let user = match store.user_by_id(self.user_id).await {
            Ok(Some(u)) => u,
            _ => return self.error(ErrorCode::Internal, "could not read the account", reference).await,
        };
        let secret = if enable { user.totp_pending.clone() } else { user.totp_secret.clone() };
        let Some(secret) = secret else {
            let msg = if enable { "no TOTP set-up is pending: send totp.setup first" } else { "TOTP is not enabled" };
            return self.error(ErrorCode::InvalidField, msg, reference).await;
        };
        let now = (now_ms() / 1000) as u64;
        let Some(step) = totp::verify(&secret, code, now, 1) else {
            return self.error(ErrorCode::TotpInvalid, "wrong TOTP code", reference).await;
        };
        let stored = if enable {
            if user.totp_last_step.is_some_and(|last| last >= step) {
                return self.error(ErrorCode::TotpInvalid, "this TOTP code was already used; wait for the next one", reference).await;
            }
            store.set_totp_secret(self.user_id, Some(&secret), Some(step)).await
        } else {
            match store.use_totp_step(self.user_id, step).await {
                Ok(true) => store.set_totp_secret(self.user_id, None, None).await,
                Ok(false) => {
                    return self.error(ErrorCode::TotpInvalid, "this TOTP code was already used; wait for the next one", reference).await;
                }
                Err(e) => Err(e),
            }
        };
        if let Err(e) = stored {
            tracing::error!(error = %e, "updating TOTP failed");
            return self.error(ErrorCode::Internal, "could not update TOTP", reference).await;
        }
        tracing::info!(user = %self.user, enabled = enable, "two-factor authentication changed");
        self.feed(&Frame::new(FrameBody::Ok(Request { id: None, reference }))).await
    }

    /// Answer a request: the answer frame, or the error with the request's id as `ref`.
    async fn answer(&mut self, reference: Option<String>, answer: Result<FrameBody, ErrorFrame>) -> Result<(), ()> {
        match answer {
            Ok(body) => self.feed(&Frame::new(body)).await,
            Err(mut e) => {
                e.reference = reference;
                self.feed(&Frame::new(FrameBody::Error(e))).await
            }
        }
    }

    /// Seal a frame and queue it on the socket (flushed by the loop).
    async fn feed(&mut self, frame: &Frame) -> Result<(), ()> {
        let msgs = self.transport.seal(frame.encode().as_bytes()).map_err(|_| ())?;
        self.state.metrics.frames_out.inc();
        for m in msgs {
            self.ws.feed(Message::Binary(m.into())).await.map_err(|_| ())?;
        }
        Ok(())
    }

    /// Seal a frame and send it now.
    async fn send(&mut self, frame: &Frame) -> Result<(), ()> {
        self.feed(frame).await?;
        self.ws.flush().await.map_err(|_| ())
    }
}

/// What the check of an envelope's clear reference decided.
enum Checked {
    /// Not an edit or deletion.
    Plain,
    /// An allowed change, to store with the envelope.
    Change(imfree_store::EnvelopeRef),
    /// Refused; the sender has been told.
    Refused,
}
