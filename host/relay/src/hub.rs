//! The hub: what all connections share. It owns the registry of online devices, the group committer that makes
//! envelopes durable in batches, the routing cache (user -> devices) and presence fan-out.
//!
//! Delivery order and durability: every envelope goes through the single committer task, which stores a batch in
//! one transaction and only then answers the senders (`accepted`) and hands the envelopes to the online recipient
//! devices, in commit order. Offline devices find them in their queue on the next connect.
//!
//! What it must not touch: payload bytes. They pass through as opaque `Vec<u8>`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use imfree_proto::{Frame, FrameBody, Presence, Status};
use imfree_store::{EnqueueOutcome, NewEnvelope, RelayStore, StoreError, UnixMs, UserId};
use tokio::sync::mpsc;

use crate::metrics::RelayMetrics;

/// How long a cached route (a user's devices) is trusted before it is read from the store again.
const ROUTE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// Events a connection task receives from the hub.
#[derive(Debug)]
pub enum ConnEvent {
    /// A committed envelope for this device (live delivery).
    Envelope(Arc<imfree_store::QueuedEnvelope>),
    /// The device's queue may hold envelopes that were not handed over live: fetch from the store.
    Wake,
    /// The answer to a `send` or `receipt` of this connection. Boxed: inline it made every slot of the channel's
    /// first block (allocated up front, see `Frame`) four times as large as the other variants need.
    Committed(Box<Committed>),
    /// An ephemeral frame (presence, typing) to pass on. Boxed, like `Kick`: tokio allocates a channel's first block
    /// of 32 slots up front, so every byte of this enum costs 32 bytes on every idle connection.
    Frame(Box<Frame>),
    /// Close the connection with this error (account disabled, session revoked, shutdown).
    Kick(Box<Frame>),
}

/// The answer to a `send` or `receipt`: [`ConnEvent::Committed`].
#[derive(Debug)]
pub struct Committed {
    /// Envelope id.
    pub id: String,
    /// Outcome, or why it failed.
    pub outcome: Result<EnqueueOutcome, String>,
    /// Accepted time.
    pub ts: UnixMs,
}

/// A live connection's handle in the registry.
#[derive(Clone)]
struct Online {
    conn_id: u64,
    user_id: UserId,
    tx: mpsc::Sender<ConnEvent>,
}

/// A user's routing entry.
#[derive(Debug, Clone)]
pub struct Route {
    /// Internal id.
    pub user_id: UserId,
    /// Name.
    pub name: String,
    /// Device ids.
    pub devices: Vec<String>,
    /// The devices that published E2E keys (the ones an end-to-end `send` must address).
    pub e2e_devices: Vec<String>,
}

struct Commit {
    envelope: NewEnvelope,
    reply: Option<mpsc::Sender<ConnEvent>>,
}

/// Shared relay state for routing and delivery.
pub struct Hub {
    store: Arc<dyn RelayStore>,
    metrics: Arc<RelayMetrics>,
    online: Mutex<HashMap<String, Vec<Online>>>,
    user_devices_online: Mutex<HashMap<UserId, usize>>,
    routes: Mutex<HashMap<String, (std::time::Instant, Arc<Route>)>>,
    contacts: Mutex<HashSet<(UserId, UserId)>>,
    commit_tx: mpsc::Sender<Commit>,
    ack_tx: mpsc::Sender<(String, String)>,
}

impl Hub {
    /// Start the hub and its committer tasks.
    pub fn start(store: Arc<dyn RelayStore>, metrics: Arc<RelayMetrics>, commit_batch: usize) -> Arc<Self> {
        let (commit_tx, commit_rx) = mpsc::channel(commit_batch * 8);
        let (ack_tx, ack_rx) = mpsc::channel(commit_batch * 8);
        let hub = Arc::new(Hub {
            store,
            metrics,
            online: Mutex::new(HashMap::new()),
            user_devices_online: Mutex::new(HashMap::new()),
            routes: Mutex::new(HashMap::new()),
            contacts: Mutex::new(HashSet::new()),
            commit_tx,
            ack_tx,
        });
        tokio::spawn(Arc::clone(&hub).run_writer(commit_rx, ack_rx, commit_batch));
        hub
    }

    /// Forget envelope ids kept for de-duplication (and edit checks) once every device acked them and `retention`
    /// has passed, audit events older than `audit_retention`, and SSO login codes an hour after they expired.
    pub fn start_pruning(self: &Arc<Self>, retention: std::time::Duration, audit_retention: std::time::Duration) {
        let hub = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                tick.tick().await;
                let now = crate::state::now_ms();
                match hub.store.prune_envelopes(now - retention.as_millis() as i64).await {
                    Ok(n) if n > 0 => tracing::info!(pruned = n, "forgot acknowledged envelope ids past their retention"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "pruning envelope ids failed"),
                }
                match hub.store.prune_audit(now - audit_retention.as_millis() as i64).await {
                    Ok(n) if n > 0 => tracing::info!(pruned = n, "forgot audit events past their retention"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "pruning the audit log failed"),
                }
                // Login codes live two minutes; a used or expired one is kept an hour only for the record.
                match hub.store.prune_login_codes(now - 3_600_000).await {
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "pruning SSO login codes failed"),
                }
            }
        });
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn RelayStore> {
        &self.store
    }

    /// Queue an envelope for group commit. The connection's `reply` channel gets [`ConnEvent::Committed`].
    pub async fn submit(&self, envelope: NewEnvelope, reply: mpsc::Sender<ConnEvent>) -> bool {
        self.commit_tx.send(Commit { envelope, reply: Some(reply) }).await.is_ok()
    }

    /// Queue acknowledgements for group commit. Acks need no answer: a lost ack means a redelivery, which the
    /// client drops by id.
    pub async fn ack(&self, device: &str, ids: impl IntoIterator<Item = String>) {
        for id in ids {
            if self.ack_tx.send((device.to_owned(), id)).await.is_err() {
                return;
            }
        }
    }

    /// The single writer: each round takes every envelope and ack that is waiting (up to the batch limits) and
    /// makes them durable in ONE transaction, so that a round costs one fsync however much it carries. Senders are
    /// answered and online recipients served only after that commit.
    async fn run_writer(
        self: Arc<Self>,
        mut commits: mpsc::Receiver<Commit>,
        mut acks: mpsc::Receiver<(String, String)>,
        max_batch: usize,
    ) {
        let mut batch: Vec<Commit> = Vec::with_capacity(max_batch);
        let mut ack_batch: Vec<(String, String)> = Vec::with_capacity(max_batch * 4);
        let (mut commits_open, mut acks_open) = (true, true);
        while commits_open || acks_open {
            tokio::select! {
                n = commits.recv_many(&mut batch, max_batch), if commits_open => commits_open = n > 0,
                n = acks.recv_many(&mut ack_batch, max_batch * 4), if acks_open => acks_open = n > 0,
            }
            // Whatever else is already waiting rides along in the same transaction.
            while batch.len() < max_batch {
                match commits.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            while ack_batch.len() < max_batch * 4 {
                match acks.try_recv() {
                    Ok(a) => ack_batch.push(a),
                    Err(_) => break,
                }
            }
            if batch.is_empty() && ack_batch.is_empty() {
                continue;
            }
            let (envelopes, replies): (Vec<NewEnvelope>, Vec<Option<mpsc::Sender<ConnEvent>>>) =
                batch.drain(..).map(|c| (c.envelope, c.reply)).unzip();
            if !envelopes.is_empty() {
                self.metrics.enqueue_batch_size.observe(envelopes.len() as f64);
            }
            let started = std::time::Instant::now();
            let result = self.store.enqueue_and_ack(&envelopes, &ack_batch).await;
            self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
            match result {
                Ok((outcomes, _)) => {
                    self.metrics.acks.inc_by(ack_batch.len() as u64);
                    for ((envelope, reply), outcome) in envelopes.into_iter().zip(replies).zip(outcomes) {
                        self.after_commit(envelope, reply, Ok(outcome)).await;
                    }
                }
                Err(err) => {
                    // Nothing of the round is durable: senders retry (same ids), unacked envelopes are redelivered.
                    tracing::error!(error = %err, batch = envelopes.len(), acks = ack_batch.len(), "group commit failed");
                    for (envelope, reply) in envelopes.into_iter().zip(replies) {
                        self.after_commit(envelope, reply, Err(err.to_string())).await;
                    }
                }
            }
            ack_batch.clear();
        }
    }

    async fn after_commit(&self, mut env: NewEnvelope, reply: Option<mpsc::Sender<ConnEvent>>, outcome: Result<EnqueueOutcome, String>) {
        match &outcome {
            Ok(EnqueueOutcome::Stored) => {
                self.metrics.envelopes_accepted.inc();
                // The envelope is ours now: its payloads move into the deliveries instead of being copied.
                let envelope_for = |payload: Vec<u8>| {
                    Arc::new(imfree_store::QueuedEnvelope {
                        seq: 0,
                        id: env.id.clone(),
                        kind: env.kind,
                        sender: env.sender.clone(),
                        sender_device: env.sender_device.clone(),
                        recipient: env.recipient.clone(),
                        mime: env.mime.clone(),
                        payload,
                        created_at: env.created_at,
                        refers: env.refers.clone(),
                    })
                };
                let device_payloads = std::mem::take(&mut env.device_payloads);
                if device_payloads.is_empty() {
                    let shared = envelope_for(std::mem::take(&mut env.payload));
                    for device in &env.recipient_devices {
                        self.deliver_live(device, &shared);
                    }
                } else {
                    // End to end: each device gets the ciphertext made for it, live as from its queue.
                    for (device, payload) in env.recipient_devices.iter().zip(device_payloads) {
                        self.deliver_live(device, &envelope_for(payload));
                    }
                }
            }
            Ok(EnqueueOutcome::Duplicate { .. }) => {
                self.metrics.envelopes_duplicate.inc();
            }
            Err(_) => {}
        }
        if let Some(reply) = reply {
            let ts = match outcome {
                Ok(EnqueueOutcome::Duplicate { created_at }) => created_at,
                _ => env.created_at,
            };
            let _ = reply.send(ConnEvent::Committed(Box::new(Committed { id: env.id, outcome, ts }))).await;
        }
    }

    /// Hand a committed envelope to a device's live connections. If a connection cannot take it now, it is told
    /// to fetch from its queue instead (the envelope is durable there).
    fn deliver_live(&self, device: &str, envelope: &Arc<imfree_store::QueuedEnvelope>) {
        let conns = self.online.lock().map(|m| m.get(device).cloned()).ok().flatten();
        for conn in conns.into_iter().flatten() {
            if conn.tx.try_send(ConnEvent::Envelope(Arc::clone(envelope))).is_err() {
                // Full: the connection will notice the gap through Wake and re-read its queue.
                let tx = conn.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(ConnEvent::Wake).await;
                });
            }
        }
    }

    /// Register a live, authenticated connection. Returns true if it is the user's first online device.
    pub fn register(&self, device: &str, user_id: UserId, conn_id: u64, tx: mpsc::Sender<ConnEvent>) -> bool {
        if let Ok(mut online) = self.online.lock() {
            // Almost every device has one connection: room for exactly one (`or_default().push` reserves four).
            online.entry(device.to_owned()).or_insert_with(|| Vec::with_capacity(1)).push(Online { conn_id, user_id, tx });
        }
        let mut counts = match self.user_devices_online.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        let n = counts.entry(user_id).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Remove a connection. Returns true if the user has no online connection left.
    pub fn unregister(&self, device: &str, user_id: UserId, conn_id: u64) -> bool {
        if let Ok(mut online) = self.online.lock()
            && let Some(list) = online.get_mut(device) {
                list.retain(|o| o.conn_id != conn_id);
                if list.is_empty() {
                    online.remove(device);
                }
            }
        let mut counts = match self.user_devices_online.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        match counts.get_mut(&user_id) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                counts.remove(&user_id);
                true
            }
        }
    }

    /// Whether any device of the user is connected.
    pub fn is_online(&self, user_id: UserId) -> bool {
        self.user_devices_online.lock().map(|c| c.contains_key(&user_id)).unwrap_or(false)
    }

    /// Send an ephemeral frame to every live connection of a user. Dropped where a connection is congested:
    /// presence and typing are best-effort by design.
    pub fn send_to_user(&self, user_id: UserId, frame: &Frame) {
        let Ok(online) = self.online.lock() else { return };
        for conn in online.values().flatten().filter(|o| o.user_id == user_id) {
            let _ = conn.tx.try_send(ConnEvent::Frame(Box::new(frame.clone())));
        }
    }

    /// Tell every live connection of a user to close with `frame` (account disabled, sessions revoked).
    pub fn kick_user(&self, user_id: UserId, frame: &Frame) {
        let Ok(online) = self.online.lock() else { return };
        for conn in online.values().flatten().filter(|o| o.user_id == user_id) {
            let _ = conn.tx.try_send(ConnEvent::Kick(Box::new(frame.clone())));
        }
    }

    /// Tell every live connection of one device to close with `frame` (the device was revoked).
    pub fn kick_device(&self, device: &str, frame: &Frame) {
        let conns = self.online.lock().map(|m| m.get(device).cloned()).ok().flatten();
        for conn in conns.into_iter().flatten() {
            let _ = conn.tx.try_send(ConnEvent::Kick(Box::new(frame.clone())));
        }
    }

    /// Tell every live connection to close (shutdown).
    pub fn kick_all(&self, frame: &Frame) {
        let Ok(online) = self.online.lock() else { return };
        for conn in online.values().flatten() {
            let _ = conn.tx.try_send(ConnEvent::Kick(Box::new(frame.clone())));
        }
    }

    /// Number of live connections.
    pub fn connection_count(&self) -> usize {
        self.online.lock().map(|o| o.values().map(Vec::len).sum()).unwrap_or(0)
    }

    /// The routing entry of a user, cached.
    pub async fn route(&self, name: &str) -> Result<Option<Arc<Route>>, StoreError> {
        let now = std::time::Instant::now();
        let cached = self.routes.lock().ok().and_then(|r| r.get(name).cloned());
        if let Some((at, route)) = cached {
            // Changes this relay makes invalidate the entry at once; the TTL bounds how long a change made elsewhere
            // (another relay on the same database, the admin tool) goes unseen.
            if now.duration_since(at) < ROUTE_TTL {
                return Ok(Some(route));
            }
        }
        let Some(user) = self.store.user_by_name(name).await? else { return Ok(None) };
        let devices =
            self.store.devices_of(user.id).await?.into_iter().filter(|d| d.revoked_at.is_none()).map(|d| d.id).collect();
        let e2e_devices = self.store.device_certificates(user.id).await?.into_iter().map(|(d, _)| d).collect();
        let route = Arc::new(Route { user_id: user.id, name: user.name, devices, e2e_devices });
        if let Ok(mut routes) = self.routes.lock() {
            routes.insert(name.to_owned(), (now, Arc::clone(&route)));
        }
        Ok(Some(route))
    }

    /// Forget a cached route (after a device was added or published keys).
    pub fn invalidate_route(&self, name: &str) {
        if let Ok(mut routes) = self.routes.lock() {
            routes.remove(name);
        }
    }

    /// Record that two users exchanged envelopes (cached, so the store is written once per pair).
    pub async fn note_contact(&self, a: UserId, b: UserId) -> Result<(), StoreError> {
        if a == b {
            return Ok(());
        }
        let key = (a.min(b), a.max(b));
        if self.contacts.lock().map(|c| c.contains(&key)).unwrap_or(false) {
            return Ok(());
        }
        self.store.add_contact(a, b).await?;
        if let Ok(mut c) = self.contacts.lock() {
            c.insert(key);
        }
        Ok(())
    }

    /// The presence of a user as others should see it.
    pub async fn presence_of(&self, user_id: UserId, name: &str) -> Result<Presence, StoreError> {
        let stored = self.store.presence_of(user_id).await?;
        let last_seen = stored.as_ref().and_then(|p| p.last_seen).map(|t| t.max(0) as u64);
        let chosen = stored.as_ref().map(|p| p.status.as_str()).unwrap_or("online");
        let status = if !self.is_online(user_id) || chosen == "offline" {
            Status::Offline
        } else if chosen == "away" {
            Status::Away
        } else {
            Status::Online
        };
        Ok(Presence { user: Some(name.to_owned()), status, last_seen: (status == Status::Offline).then_some(last_seen).flatten() })
    }

    /// Push a user's current presence to their online contacts (and their own other devices).
    pub async fn broadcast_presence(&self, user_id: UserId, name: &str) -> Result<(), StoreError> {
        let presence = self.presence_of(user_id, name).await?;
        let frame = Frame::new(FrameBody::Presence(presence));
        for contact in self.store.contacts_of(user_id).await? {
            if self.is_online(contact) {
                self.send_to_user(contact, &frame);
            }
        }
        Ok(())
    }
}


#[cfg(test)]
mod tests {
    #[test]
    fn a_connection_event_stays_small() {
        // 32 of these are allocated per connection before anything is sent (see ConnEvent::Frame): every variant
        // carries at most one pointer.
        assert!(std::mem::size_of::<super::ConnEvent>() <= 16, "{}", std::mem::size_of::<super::ConnEvent>());
    }
}
