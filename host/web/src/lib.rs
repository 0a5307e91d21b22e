//! The imfree web client's engine: the client core ([`imfree_client_core`]) and the crypto crate compiled to
//! WebAssembly, driven by the browser — its WebSocket for the relay ([`socket`]) and IndexedDB for what the device
//! keeps ([`storage`], sealed under the user's passphrase). The page (`www/`) calls [`WebClient`] and draws what it
//! says; no key and no plaintext leaves this module except to the page that shows it.
//!
//! One connection at a time. Two tasks run on it: the reader opens frames and hands answers to the requests that
//! wait for them (a key directory lookup, the relay's `accepted` for a message); deliveries and receipts go to the
//! processor, which opens, stores and only then acknowledges them, in batches. Everything that touches end-to-end
//! state — opening deliveries, encrypting messages — takes the `work` lock, so a ratchet session is never advanced by
//! two tasks at once; the reader never takes it, so a request made under the lock always gets its answer.
//!
//! Messages go out through an outbox kept in IndexedDB: written with the message, sent at once when connected, sent
//! again at every connection until the relay accepted it (the relay drops duplicates by id).
#![forbid(unsafe_code)]

pub mod model;
mod socket;
mod storage;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use imfree_client_core::ClientError;
use imfree_client_core::device::DeviceE2e;
use imfree_client_core::device::DeviceSlot;
use imfree_client_core::directory::KeyDirectory;
use imfree_client_core::pairwise::{Opened, Pairwise};
use imfree_client_core::relay::{Channel, PasswordAuth, PasswordHandshake, Resume, ResumeHandshake, handshake_text};
use imfree_client_core::store::KeyStore;
use imfree_crypto::device::DeviceKeys;
use imfree_proto::auth::XxOp;
use imfree_proto::content::Content;
use imfree_proto::{
    Ack, DeviceBundle, EnvelopeId, ErrorCode, Frame, FrameBody, KeysClaim, KeysDeviceList, KeysDevices, KeysUpload, Limits, MessageRef,
    Payload, Presence, PresenceQuery, Receipt, ReceiptKind, Recipient, Send, Status, Typing, Welcome, mime,
};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::model::{Change, Decoded, Message};
use crate::socket::{Incoming, Socket};
use crate::storage::{IdbStore, Storage};

/// This browser's account: who it is at the relay and the device's secret keys (sealed at rest).
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct Account {
    user: String,
    device: String,
    token: Option<String>,
    /// The relay's Noise key, pinned at first contact (hex).
    relay_key: String,
    /// The device's Ed25519 seed and X25519 secret (hex).
    signing_seed: String,
    static_secret: String,
}

impl Account {
    fn new(keys: &DeviceKeys) -> Account {
        Account {
            user: String::new(),
            device: String::new(),
            token: None,
            relay_key: String::new(),
            signing_seed: hex::encode(*keys.signing_seed()),
            static_secret: hex::encode(*keys.static_secret()),
        }
    }

    fn keys(&self) -> Result<DeviceKeys, ClientError> {
        let decode = |h: &str| -> Result<[u8; 32], ClientError> {
            let mut bytes = hex::decode(h).map_err(|_| ClientError::Store("the account's keys are damaged".into()))?;
            let array = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| ClientError::Store("the account's keys are damaged".into()));
            bytes.zeroize();
            array
        };
        Ok(DeviceKeys::from_secrets(decode(&self.signing_seed)?, decode(&self.static_secret)?))
    }

    fn relay_key(&self) -> Option<[u8; 32]> {
        hex::decode(&self.relay_key).ok().and_then(|k| k.try_into().ok())
    }
}

/// An outbox entry: sent again at every connection until the relay accepted it.
#[derive(Serialize, Deserialize)]
struct Outgoing {
    id: String,
    to: String,
    /// The encoded content document.
    content: Vec<u8>,
    refers: Option<MessageRef>,
    /// The message it shows as, if any (changes have none of their own).
    peer_message: Option<String>,
}

/// A change that arrived before its target.
#[derive(Serialize, Deserialize)]
struct Orphan {
    by: String,
    change: Change,
}

/// The relay's answer to a request, or `Err` when the connection ended first.
type Answer = Result<FrameBody, ClientError>;

struct Link {
    socket: Socket,
    channel: Channel,
}

struct Shared {
    url: String,
    store: Storage,
    keys: DeviceSlot,
    account: RefCell<Option<Account>>,
    link: RefCell<Option<Link>>,
    /// Requests waiting for the relay's answer, by request or envelope id.
    pending: RefCell<HashMap<String, oneshot::Sender<Answer>>>,
    listener: RefCell<Option<js_sys::Function>>,
    /// Serialises everything that advances end-to-end state.
    work: futures_util::lock::Mutex<()>,
    /// Counts connections, so that a stale reader does not tear down its successor.
    generation: Cell<u64>,
    /// The user wants to be connected (cleared by `forget`).
    online: Cell<bool>,
}

const MAX_BATCH: usize = 256;

fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

fn new_id() -> String {
    let random = (u128::from(OsRng.next_u64()) << 64) | u128::from(OsRng.next_u64());
    EnvelopeId::from_parts(now_ms(), random).to_string()
}

fn msg_key(peer: &str, id: &str) -> String {
    format!("msg/{peer}/{id}")
}

async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(window) = web_sys::window() {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// A `ClientError` as a JavaScript `Error` whose `name` the page can branch on: `locked`, `not_logged_in`,
/// `identity_changed`, `relay_key_changed`, `refused:<code>` or `error`.
fn to_js(e: ClientError) -> JsValue {
    let name = match &e {
        ClientError::Locked(_) => "locked".to_owned(),
        ClientError::NotLoggedIn => "not_logged_in".to_owned(),
        ClientError::IdentityChanged { .. } => "identity_changed".to_owned(),
        ClientError::RelayKeyChanged { .. } => "relay_key_changed".to_owned(),
        ClientError::Refused { code, .. } => format!("refused:{}", code.as_str()),
        _ => "error".to_owned(),
    };
    let error = js_sys::Error::new(&e.to_string());
    error.set_name(&name);
    error.into()
}

fn promise<T: Into<JsValue>>(work: impl std::future::Future<Output = Result<T, ClientError>> + 'static) -> js_sys::Promise {
    wasm_bindgen_futures::future_to_promise(async move { work.await.map(Into::into).map_err(to_js) })
}

fn json(value: &impl Serialize) -> Result<String, ClientError> {
    serde_json::to_string(value).map_err(|e| ClientError::Protocol(e.to_string()))
}

/// The web client, as the page sees it. Every method that talks to the relay or the store returns a promise;
/// failures reject it with an `Error` whose `name` says what happened (see the page's `app.js`).
#[wasm_bindgen]
pub struct WebClient {
    shared: Rc<Shared>,
}

#[wasm_bindgen]
impl WebClient {
    /// A client for the relay at `url` (`wss://host:port`), keeping its state in `store`.
    #[wasm_bindgen(constructor)]
    pub fn new(store: IdbStore, url: String) -> WebClient {
        WebClient {
            shared: Rc::new(Shared {
                url: format!("{}{}", url.trim_end_matches('/'), "/v1/imf"),
                store: Storage::new(store),
                keys: DeviceSlot::new(None),
                account: RefCell::new(None),
                link: RefCell::new(None),
                pending: RefCell::new(HashMap::new()),
                listener: RefCell::new(None),
                work: futures_util::lock::Mutex::new(()),
                generation: Cell::new(0),
                online: Cell::new(false),
            }),
        }
    }

    /// Call `listener` with each event, a JSON string: `{"type":"changed","peer"}` (a conversation changed),
    /// `{"type":"connection","state":"online"|"offline"|"expired","reason"?}`, `{"type":"presence","user","status"}`,
    /// `{"type":"typing","from","active"}`, `{"type":"notice","text"}`.
    #[wasm_bindgen(js_name = onEvent)]
    pub fn on_event(&self, listener: js_sys::Function) {
        *self.shared.listener.borrow_mut() = Some(listener);
    }

    /// Whether this browser holds an account (then [`WebClient::unlock`] it), or not (then register).
    #[wasm_bindgen(js_name = hasAccount)]
    pub fn has_account(&self) -> js_sys::Promise {
        let s = self.shared.clone();
        promise(async move { s.store.exists().await })
    }

    /// The account's user name, once registered or unlocked.
    pub fn user(&self) -> Option<String> {
        self.shared.account.borrow().as_ref().map(|a| a.user.clone())
    }

    /// Register `user` at the relay with `password`; this browser becomes the account's first device and makes the
    /// account's identity. Its key store is sealed under `passphrase`.
    pub fn register(&self, user: String, password: String, passphrase: String, device_name: String) -> js_sys::Promise {
        let s = self.shared.clone();
        promise(async move {
            s.store.create(&passphrase).await?;
            let result = s.register(&user, &password, &device_name).await;
            if result.is_err() {
                // Nothing of a failed registration stays behind: the next attempt starts clean.
                s.online.set(false);
                s.disconnect("registration failed");
                let _ = s.store.wipe().await;
                s.account.borrow_mut().take();
            }
            result.map(|()| JsValue::UNDEFINED)
        })
    }

    /// Unlock this browser's key store with `passphrase` and connect as its device. Rejects with
    /// `refused:token_expired` (or another refusal) when the session must be renewed with [`WebClient::login`].
    pub fn unlock(&self, passphrase: String) -> js_sys::Promise {
        let s = self.shared.clone();
        promise(async move {
            s.store.unlock(&passphrase).await?;
            let account: Account = s.store.get_json("account").await?.ok_or(ClientError::NotLoggedIn)?;
            let e2e = DeviceE2e::load(&s.store, account.keys()?)
                .await?
                .ok_or_else(|| ClientError::E2e("this browser's device has no end-to-end keys".into()))?;
            s.keys.set(e2e);
            *s.account.borrow_mut() = Some(account);
            s.online.set(true);
            s.connect(None).await.map(|_| JsValue::UNDEFINED)
        })
    }

    /// Renew this device's session with the account's password (after the session expired or was revoked).
    pub fn login(&self, password: String, totp: Option<String>) -> js_sys::Promise {
        let s = self.shared.clone();
        promise(async move {
            let user = s.account.borrow().as_ref().map(|a| a.user.clone()).ok_or(ClientError::NotLoggedIn)?;
            s.online.set(true);
            s.connect(Some((XxOp::Login, user, password, totp, String::new()))).await.map(|_| JsValue::UNDEFINED)
        })
    }

    /// Forget this browser's account: close the connection and delete everything kept here.
    pub fn forget(&self) -> js_sys::Promise {
        let s = self.shared.clone();
        promise(async move {
            s.online.set(false);
            s.disconnect("forgotten");
            s.store.wipe().await?;
            s.account.borrow_mut().take();
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Send `text` (Markdown) to `to`, optionally answering message `reply_to`. Resolves to the message id once it
    /// is stored here; it goes out now if connected, else at the next connection.
    pub fn send(&self, to: String, text: String, reply_to: Option<String>) -> js_sys::Promise {
        let s = self.shared.clone();
        promise(async move {
            imfree_proto::validate_user_name(&to, &Limits::default()).map_err(|r| ClientError::Config(format!("recipient: {r}")))?;
            if text.trim().is_empty() {
                return Err(ClientError::Config("an empty message".into()));
            }
            let content = model::text_content(&text, reply_to.as_deref());
            s.compose(&to, content, Some(text), reply_to, None).await.map(JsValue::from)
        })
    }

    /// Replace the text of this user's message `id`.
    pub fn edit(&self, id: String, text: String) -> js_sys::Promise {
        let s = self.shared.clone();
        promise(async move { s.change(Change::Edit { target: id, text, mime: mime::MARKDOWN.into() }).await.map(JsValue::from) })
    }

    /// Delete this user's message `id`.
    pub fn delete(&self, id: String) -> js_sys::Promise {
        let s = self.shared.clone();
        promise(async move { s.change(Change::Delete { target: id }).await.map(JsValue::from) })
    }

    /// Add (or with `remove`, take back) a reaction to message `id`.
    pub fn react(&self, id: String, emoji: String, remove: bool) -> js_sys::Promise {
        let s = self.shared.clone();
        promise(async move { s.change(Change::React { target: id, emoji, remove }).await.map(JsValue::from) })
    }

    /// The conversation list as JSON: `[{peer, last, ts, unread}]`, newest first.
    pub fn conversations(&self) -> js_sys::Promise {
        let s = self.shared.clone();
        promise(async move {
            let messages = s.messages("msg/").await?;
            json(&model::summaries(&messages)).map(JsValue::from)
        })
    }

    /// The conversation with `peer` as JSON: `[Message]`, oldest first.
    pub fn history(&self, peer: String) -> js_sys::Promise {
        let s = self.shared.clone();
        promise(async move {
            let mut messages = s.messages(&format!("msg/{peer}/")).await?;
            messages.sort_by(|a, b| (a.ts, &a.id).cmp(&(b.ts, &b.id)));
            json(&messages).map(JsValue::from)
        })
    }

    /// Messages of every conversation that contain all words of `query`, as JSON `[Message]`, newest first.
    pub fn search(&self, query: String) -> js_sys::Promise {
        let s = self.shared.clone();
        promise(async move {
            let mut found: Vec<Message> = s.messages("msg/").await?.into_iter().filter(|m| model::matches(m, &query)).collect();
            found.sort_by_key(|m| std::cmp::Reverse(m.ts));
            json(&found).map(JsValue::from)
        })
    }

    /// Mark the conversation with `peer` read, and tell `peer` (a read receipt).
    #[wasm_bindgen(js_name = markRead)]
    pub fn mark_read(&self, peer: String) -> js_sys::Promise {
        let s = self.shared.clone();
        promise(async move { s.mark_read(&peer).await.map(|()| JsValue::UNDEFINED) })
    }

    /// Tell `peer` this user is typing (or stopped).
    pub fn typing(&self, peer: String, active: bool) -> Result<(), JsValue> {
        self.shared.send_frame(&Frame::new(FrameBody::Typing(Typing { to: Some(peer), from: None, active }))).map_err(to_js)
    }

    /// Set this user's presence: `online` or `away`.
    #[wasm_bindgen(js_name = setPresence)]
    pub fn set_presence(&self, status: String) -> Result<(), JsValue> {
        let status = if status == "away" { Status::Away } else { Status::Online };
        self.shared.send_frame(&Frame::new(FrameBody::Presence(Presence { user: None, status, last_seen: None }))).map_err(to_js)
    }

    /// Ask for the presence of `users` (answers arrive as `presence` events).
    #[wasm_bindgen(js_name = queryPresence)]
    pub fn query_presence(&self, users: Vec<String>) -> Result<(), JsValue> {
        self.shared.send_frame(&Frame::new(FrameBody::PresenceQuery(PresenceQuery { users }))).map_err(to_js)
    }

    /// The safety number to compare with `peer` (digits in groups), checked against the key pinned for them.
    /// Rejects with `identity_changed` when `peer` presents a new identity key.
    #[wasm_bindgen(js_name = safetyNumber)]
    pub fn safety_number(&self, peer: String) -> js_sys::Promise {
        let s = self.shared.clone();
        promise(async move { s.safety_number(&peer).await.map(JsValue::from) })
    }

    /// Accept `peer`'s changed identity key (after comparing safety numbers); messages held for them go out.
    pub fn trust(&self, peer: String) -> js_sys::Promise {
        let s = self.shared.clone();
        promise(async move { s.trust(&peer).await.map(|()| JsValue::UNDEFINED) })
    }

    /// Markdown `text` as sanitised HTML, the way every imfree client renders it.
    #[wasm_bindgen(js_name = renderMarkdown)]
    pub fn render_markdown(text: &str) -> String {
        imfree_markdown::render_html(text, &imfree_markdown::Options::default())
    }
}

/// Credentials of a first-contact handshake: operation, user, password, TOTP code, device name.
type Credentials = (XxOp, String, String, Option<String>, String);

impl Shared {
    fn emit(&self, event: serde_json::Value) {
        let listener = self.listener.borrow().clone();
        if let Some(listener) = listener {
            let _ = listener.call1(&JsValue::NULL, &JsValue::from_str(&event.to_string()));
        }
    }

    fn me(&self) -> Result<(String, String), ClientError> {
        self.account.borrow().as_ref().map(|a| (a.user.clone(), a.device.clone())).ok_or(ClientError::NotLoggedIn)
    }

    fn pairwise<'a>(&'a self, user: &'a str, device: &'a str) -> Pairwise<'a, Storage> {
        Pairwise { user, device, keys: &self.keys, store: &self.store }
    }

    async fn register(self: &Rc<Self>, user: &str, password: &str, device_name: &str) -> Result<(), ClientError> {
        let keys = DeviceKeys::generate();
        *self.account.borrow_mut() = Some(Account::new(&keys));
        self.online.set(true);
        let welcome = self.connect(Some((XxOp::Register, user.to_owned(), password.to_owned(), None, device_name.to_owned()))).await?;
        // The account's first device makes the identity and publishes its keys.
        let now = now_ms() / 1000;
        let mut fresh = DeviceE2e::create(keys, now);
        let upload = fresh.first_upload(&welcome.key_challenge.0, now);
        self.upload(&upload).await?;
        let _guard = self.work.lock().await;
        self.store.save(&[], &fresh.state()).await?;
        self.keys.set(fresh);
        Ok(())
    }

    /// Connect: a first-contact handshake with `credentials`, else resume as this device. Returns the welcome.
    async fn connect(self: &Rc<Self>, credentials: Option<Credentials>) -> Result<Welcome, ClientError> {
        self.disconnect("reconnecting");
        let (keys, pin, resume) = {
            let account = self.account.borrow();
            let account = account.as_ref().ok_or(ClientError::NotLoggedIn)?;
            (account.keys()?, account.relay_key(), (account.user.clone(), account.device.clone(), account.token.clone()))
        };
        let limits = Limits::default();
        let (socket, mut rx) = Socket::open(&self.url).await?;
        let (channel, welcome) = match credentials {
            Some((op, user, password, totp, device_name)) => {
                let (handshake, m1) = PasswordHandshake::start(&keys, limits)?;
                socket.send(&m1)?;
                let m2 = next_binary(&mut rx).await?;
                let auth = PasswordAuth {
                    op,
                    user: &user,
                    password: &password,
                    totp: totp.as_deref(),
                    login_code: None,
                    verifier: None,
                    device_name: if device_name.is_empty() { "browser" } else { &device_name },
                };
                let (mut channel, m3, relay_key) = handshake.finish(&m2, pin, &keys, &auth, now_ms())?;
                socket.send(&m3)?;
                let welcome = expect_welcome(&mut rx, &mut channel).await?;
                // What the relay said about this device is kept (sealed) before the connection is used.
                let record = {
                    let mut account = self.account.borrow_mut();
                    let account = account.as_mut().ok_or(ClientError::NotLoggedIn)?;
                    account.user.clone_from(&welcome.user);
                    account.device.clone_from(&welcome.device);
                    account.token.clone_from(&welcome.token);
                    account.relay_key = hex::encode(relay_key);
                    Zeroizing::new(serde_json::to_vec(&*account).map_err(|e| ClientError::Store(e.to_string()))?)
                };
                self.store.put(vec![("account".to_owned(), Some(record.as_slice()))]).await?;
                (channel, welcome)
            }
            None => {
                let (user, device, token) = resume;
                let token = token.ok_or(ClientError::NotLoggedIn)?;
                let relay_key = pin.ok_or(ClientError::NotLoggedIn)?;
                let resume = Resume { user: &user, device: &device, token: &token, transfer: false };
                let (handshake, m1) = ResumeHandshake::start(&keys, relay_key, &resume, limits, now_ms())?;
                socket.send(&m1)?;
                let m2 = next_binary(&mut rx).await.map_err(|e| handshake.refused(e))?;
                let mut channel = handshake.finish(&m2)?;
                let welcome = expect_welcome(&mut rx, &mut channel).await?;
                (channel, welcome)
            }
        };
        let generation = self.generation.get() + 1;
        self.generation.set(generation);
        *self.link.borrow_mut() = Some(Link { socket, channel });
        let (deliveries, to_process) = mpsc::unbounded();
        wasm_bindgen_futures::spawn_local(self.clone().read(rx, deliveries, generation));
        wasm_bindgen_futures::spawn_local(self.clone().process(to_process));
        self.emit(serde_json::json!({"type": "connection", "state": "online", "user": welcome.user}));
        if self.keys.ready() {
            // Keys running low (or due for rotation), then whatever the outbox still holds.
            if let Some(left) = welcome.prekeys_left {
                let _guard = self.work.lock().await;
                let now = now_ms() / 1000;
                let upload = self.keys.with(|e| Ok(e.replenish_upload(&welcome.key_challenge.0, left, now))).ok().flatten();
                if let Some(upload) = upload {
                    self.upload(&upload).await?;
                    self.keys.persist(&self.store, &[]).await?;
                }
            }
            wasm_bindgen_futures::spawn_local(self.clone().flush_outbox());
        }
        Ok(welcome)
    }

    fn disconnect(&self, reason: &str) {
        self.generation.set(self.generation.get() + 1);
        self.link.borrow_mut().take();
        for (_, waiting) in self.pending.borrow_mut().drain() {
            let _ = waiting.send(Err(ClientError::Io(format!("the connection ended ({reason})"))));
        }
    }

    /// The reader: opens frames, answers waiting requests, hands deliveries to the processor.
    async fn read(self: Rc<Self>, mut rx: mpsc::UnboundedReceiver<Incoming>, deliveries: mpsc::UnboundedSender<Frame>, generation: u64) {
        let reason = loop {
            let Some(incoming) = rx.next().await else { break "closed".to_owned() };
            if self.generation.get() != generation {
                return;
            }
            let opened = {
                let mut link = self.link.borrow_mut();
                let Some(link) = link.as_mut() else { return };
                match incoming {
                    Incoming::Binary(bytes) => link.channel.open(&bytes),
                    Incoming::Text(text) => link.channel.open_text(&text).map(Some),
                    Incoming::Closed(reason) => break reason,
                }
            };
            match opened {
                Ok(Some(frame)) => self.route(frame, &deliveries),
                Ok(None) => {}
                Err(e) => break e.to_string(),
            }
        };
        if self.generation.get() != generation {
            return;
        }
        self.disconnect(&reason);
        self.emit(serde_json::json!({"type": "connection", "state": "offline", "reason": reason}));
        wasm_bindgen_futures::spawn_local(self.reconnect());
    }

    /// Connect again with growing pauses while the user wants to be online and no other connection was made.
    async fn reconnect(self: Rc<Self>) {
        let mut pause = 1000;
        loop {
            sleep(pause).await;
            if !self.online.get() || self.link.borrow().is_some() {
                return;
            }
            match self.connect(None).await {
                Ok(_) => return,
                Err(ClientError::Io(_)) => pause = (pause * 2).min(30_000),
                Err(e) => {
                    self.emit(serde_json::json!({"type": "connection", "state": "expired", "reason": e.to_string()}));
                    return;
                }
            }
        }
    }

    fn route(&self, frame: Frame, deliveries: &mpsc::UnboundedSender<Frame>) {
        let answer = |id: &str, body: FrameBody| {
            if let Some(waiting) = self.pending.borrow_mut().remove(id) {
                let _ = waiting.send(Ok(body));
            }
        };
        match frame.body {
            FrameBody::Deliver(_) | FrameBody::Receipt(_) => {
                let _ = deliveries.unbounded_send(frame);
            }
            FrameBody::Accepted(a) => answer(&a.id.to_string(), FrameBody::Accepted(a)),
            FrameBody::Error(e) => match e.reference.clone() {
                Some(reference) => answer(&reference, FrameBody::Error(e)),
                None => self.emit(serde_json::json!({"type": "notice", "text": format!("the relay says: {}", e.message)})),
            },
            FrameBody::KeysDeviceList(list) => {
                if let Some(id) = list.reference.clone() {
                    answer(&id, FrameBody::KeysDeviceList(list));
                }
            }
            FrameBody::KeysBundles(bundles) => {
                if let Some(id) = bundles.reference.clone() {
                    answer(&id, FrameBody::KeysBundles(bundles));
                }
            }
            FrameBody::Ok(r) => {
                if let Some(id) = r.reference.clone() {
                    answer(&id, FrameBody::Ok(r));
                }
            }
            FrameBody::Presence(p) => {
                let status = serde_json::to_value(p.status).unwrap_or_default();
                self.emit(serde_json::json!({"type": "presence", "user": p.user, "status": status}));
            }
            FrameBody::Typing(t) => self.emit(serde_json::json!({"type": "typing", "from": t.from, "active": t.active})),
            _ => {}
        }
    }

    /// Ask the relay something; the answer (or a refusal naming `id`) comes back through the reader.
    async fn request(&self, body: FrameBody, id: &str) -> Result<FrameBody, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id.to_owned(), tx);
        if let Err(e) = self.send_frame(&Frame::new(body)) {
            self.pending.borrow_mut().remove(id);
            return Err(e);
        }
        match rx.await {
            Ok(Ok(FrameBody::Error(e))) => Err(ClientError::Refused { code: e.code, message: e.message }),
            Ok(answer) => answer,
            Err(_) => Err(ClientError::Io("the connection ended".into())),
        }
    }

    fn send_frame(&self, frame: &Frame) -> Result<(), ClientError> {
        let mut link = self.link.borrow_mut();
        let link = link.as_mut().ok_or_else(|| ClientError::Io("not connected to the relay".into()))?;
        for message in link.channel.seal(frame)? {
            link.socket.send(&message)?;
        }
        Ok(())
    }

    async fn upload(&self, upload: &imfree_crypto::prekeys::KeyUpload) -> Result<(), ClientError> {
        let id = new_id();
        let document = serde_json::to_value(upload).map_err(|e| ClientError::E2e(e.to_string()))?;
        self.request(FrameBody::KeysUpload(KeysUpload { id: Some(id.clone()), upload: document }), &id).await.map(|_| ())
    }

    /// The processor: deliveries and receipts, in batches, stored before they are acknowledged.
    async fn process(self: Rc<Self>, mut rx: mpsc::UnboundedReceiver<Frame>) {
        while let Some(first) = rx.next().await {
            let mut frames = vec![first];
            while frames.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(frame) => frames.push(frame),
                    _ => break,
                }
            }
            let guard = self.work.lock().await;
            let result = self.take(frames).await;
            drop(guard);
            if let Err(e) = result {
                // Nothing of the batch was stored or acknowledged: the relay delivers it again on the next connection.
                self.emit(serde_json::json!({"type": "notice", "text": format!("could not store what arrived: {e}")}));
                self.resync_keys().await;
                self.disconnect("a delivery could not be stored");
                self.emit(serde_json::json!({"type": "connection", "state": "offline", "reason": e.to_string()}));
                wasm_bindgen_futures::spawn_local(self.clone().reconnect());
                return;
            }
        }
    }

    /// After a failed batch, reload the device state from the store so memory and store agree again.
    async fn resync_keys(&self) {
        let keys = self.account.borrow().as_ref().and_then(|a| a.keys().ok());
        if let Some(keys) = keys
            && let Ok(Some(e2e)) = DeviceE2e::load(&self.store, keys).await
        {
            self.keys.set(e2e);
        }
    }

    async fn take(&self, frames: Vec<Frame>) -> Result<(), ClientError> {
        self.store.begin();
        let mut acks = Vec::new();
        let mut changed = BTreeSet::new();
        let result = self.take_batch(frames, &mut acks, &mut changed).await;
        let result = match result {
            Ok(()) => self.store.commit().await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            self.store.rollback();
            return Err(e);
        }
        for chunk in acks.chunks(Limits::default().max_ids_per_frame) {
            self.send_frame(&Frame::new(FrameBody::Ack(Ack { ids: chunk.to_vec() })))?;
        }
        for peer in changed {
            self.emit(serde_json::json!({"type": "changed", "peer": peer}));
        }
        Ok(())
    }

    async fn take_batch(&self, frames: Vec<Frame>, acks: &mut Vec<EnvelopeId>, changed: &mut BTreeSet<String>) -> Result<(), ClientError> {
        let (me, my_device) = self.me()?;
        let limits = Limits::default();
        for frame in frames {
            match frame.body {
                FrameBody::Deliver(d) => {
                    if d.group.is_some() {
                        // Not acknowledged: it waits at the relay for a client that takes part in groups.
                        self.emit(serde_json::json!({"type": "notice", "text": "a group message arrived; group conversations are not in the web client yet (use the imfree CLI)"}));
                        continue;
                    }
                    acks.push(d.id);
                    let id = d.id.to_string();
                    let seen = format!("seen/{id}");
                    if self.store.get(&seen).await?.is_some() {
                        continue; // stored before, its acknowledgement lost
                    }
                    self.store.put(vec![(seen, Some(&[]))]).await?;
                    let peer = if d.from == me { d.to.clone() } else { d.from.clone() };
                    let (decoded, status) = if d.mime != mime::E2E {
                        (Decoded::Unreadable("unencrypted messages are refused; imfree messages are end-to-end encrypted".into()), "undecodable")
                    } else {
                        match self.pairwise(&me, &my_device).open(&d.from, &d.from_device, &id, &d.data.0).await? {
                            Opened::Trusted { inner, .. } => (model::decode(&inner.body, d.refers, &limits), "received"),
                            Opened::IdentityChanged { inner } => (model::decode(&inner.body, d.refers, &limits), "identity-changed"),
                            Opened::Unreadable(reason) => (Decoded::Unreadable(reason), "undecodable"),
                        }
                    };
                    let mut message = Message {
                        id: id.clone(),
                        peer: peer.clone(),
                        from: d.from.clone(),
                        outgoing: d.from == me,
                        ts: d.ts,
                        mime: mime::TEXT.into(),
                        text: String::new(),
                        status: status.into(),
                        reply_to: None,
                        edited: false,
                        deleted: false,
                        reactions: Default::default(),
                        read: d.from == me,
                    };
                    match decoded {
                        Decoded::Text { mime, text, reply_to } => {
                            message.mime = mime;
                            message.text = text;
                            message.reply_to = reply_to;
                            self.adopt_orphans(&mut message).await?;
                            if message.outgoing {
                                message.status = "sent".into();
                            }
                        }
                        Decoded::Change(change) if status == "received" => {
                            self.apply_change(&peer, &d.from, &id, change).await?;
                            changed.insert(peer);
                            continue;
                        }
                        Decoded::Change(_) => message.text = "[a change sent under a changed identity key was ignored]".into(),
                        Decoded::Group => message.text = "[a group invitation or key arrived; groups are not in the web client yet]".into(),
                        Decoded::Unreadable(reason) => {
                            message.status = "undecodable".into();
                            message.text = format!("[undecodable message: {reason}]");
                        }
                    }
                    self.store.put_json(&msg_key(&peer, &id), &message).await?;
                    changed.insert(peer);
                }
                FrameBody::Receipt(r) => {
                    acks.push(r.id);
                    let Some(peer) = r.from else { continue };
                    for target in &r.refs {
                        let key = msg_key(&peer, &target.to_string());
                        if let Some(mut m) = self.store.get_json::<Message>(&key).await?
                            && m.outgoing
                            && m.status != "read"
                        {
                            m.status = if r.kind == ReceiptKind::Read { "read" } else { "delivered" }.into();
                            self.store.put_json(&key, &m).await?;
                        }
                    }
                    changed.insert(peer);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Apply a change by `by` to its target in the conversation with `peer`, or keep it until the target arrives.
    async fn apply_change(&self, peer: &str, by: &str, id: &str, change: Change) -> Result<(), ClientError> {
        let key = msg_key(peer, change.target());
        match self.store.get_json::<Message>(&key).await? {
            Some(mut target) => {
                let (me, _) = self.me()?;
                if model::apply(&mut target, by, &me, &change).is_ok() {
                    self.store.put_json(&key, &target).await?;
                }
            }
            None => {
                let orphan = Orphan { by: by.to_owned(), change };
                self.store.put_json(&format!("orphan/{}/{id}", orphan.change.target()), &orphan).await?;
            }
        }
        Ok(())
    }

    /// Apply the changes that arrived before `message`, in the order they were sent.
    async fn adopt_orphans(&self, message: &mut Message) -> Result<(), ClientError> {
        let (me, _) = self.me()?;
        let prefix = format!("orphan/{}/", message.id);
        for (key, bytes) in self.store.list(&prefix).await? {
            if let Ok(orphan) = serde_json::from_slice::<Orphan>(&bytes) {
                let _ = model::apply(message, &orphan.by, &me, &orphan.change);
            }
            self.store.put(vec![(key, None)]).await?;
        }
        Ok(())
    }

    async fn messages(&self, prefix: &str) -> Result<Vec<Message>, ClientError> {
        Ok(self.store.list(prefix).await?.into_iter().filter_map(|(_, bytes)| serde_json::from_slice(&bytes).ok()).collect())
    }

    /// Store an outgoing content document (and the message it shows as) with its outbox entry, then send it.
    async fn compose(
        self: &Rc<Self>,
        to: &str,
        content: Content,
        text: Option<String>,
        reply_to: Option<String>,
        change: Option<&Change>,
    ) -> Result<String, ClientError> {
        let (me, _) = self.me()?;
        let id = new_id();
        let out = Outgoing {
            id: id.clone(),
            to: to.to_owned(),
            content: content.encode(),
            refers: content.refers,
            peer_message: text.is_some().then(|| id.clone()),
        };
        {
            let _guard = self.work.lock().await;
            self.store.begin();
            let written = async {
                if let Some(text) = text {
                    let message = Message {
                        id: id.clone(),
                        peer: to.to_owned(),
                        from: me.clone(),
                        outgoing: true,
                        ts: now_ms(),
                        mime: mime::MARKDOWN.into(),
                        text,
                        status: "pending".into(),
                        reply_to,
                        edited: false,
                        deleted: false,
                        reactions: Default::default(),
                        read: true,
                    };
                    self.store.put_json(&msg_key(to, &id), &message).await?;
                }
                if let Some(change) = change {
                    self.apply_change(to, &me, &id, change.clone()).await?;
                }
                self.store.put_json(&format!("out/{id}"), &out).await?;
                self.store.commit().await
            }
            .await;
            if let Err(e) = written {
                self.store.rollback();
                return Err(e);
            }
        }
        self.emit(serde_json::json!({"type": "changed", "peer": to}));
        if self.link.borrow().is_some() {
            match self.deliver(&out).await {
                // Queued: it goes out at the next connection.
                Ok(()) | Err(ClientError::Io(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(id)
    }

    /// A change of this user's (or, for reactions, anyone's) message, sent to its conversation.
    async fn change(self: &Rc<Self>, change: Change) -> Result<String, ClientError> {
        let (me, _) = self.me()?;
        let target = self
            .messages("msg/")
            .await?
            .into_iter()
            .find(|m| m.id == change.target())
            .ok_or_else(|| ClientError::Config(format!("no message {} in this browser", change.target())))?;
        let mut preview = target.clone();
        model::apply(&mut preview, &me, &me, &change).map_err(|reason| ClientError::Config(reason.into()))?;
        let content = model::change_content(&change).map_err(ClientError::Config)?;
        self.compose(&target.peer, content, None, None, Some(&change)).await
    }

    /// Send every outbox entry, oldest first.
    async fn flush_outbox(self: Rc<Self>) {
        let entries = match self.store.list("out/").await {
            Ok(entries) => entries,
            Err(_) => return,
        };
        for (_, bytes) in entries {
            let Ok(out) = serde_json::from_slice::<Outgoing>(&bytes) else { continue };
            // A held or failed entry does not stop the others; a lost connection does (the next one flushes).
            if matches!(self.deliver(&out).await, Err(ClientError::Io(_))) || self.link.borrow().is_none() {
                return;
            }
        }
    }

    /// Encrypt an outbox entry for every device that must get it, send it and wait for the relay's answer. A
    /// refusal for good marks the message failed and drops the entry; a lost connection leaves it queued.
    async fn deliver(&self, out: &Outgoing) -> Result<(), ClientError> {
        let id: EnvelopeId = out.id.parse().map_err(|_| ClientError::Store(format!("outbox entry {} is damaged", out.id)))?;
        for _attempt in 0..6 {
            let (tx, rx) = oneshot::channel();
            {
                let _guard = self.work.lock().await;
                if self.store.get(&format!("out/{}", out.id)).await?.is_none() {
                    return Ok(()); // sent meanwhile
                }
                match self.encrypt(out).await {
                    Ok(Some(payloads)) => {
                        let send = Send {
                            id,
                            to: Recipient::User(out.to.clone()),
                            mime: mime::E2E.into(),
                            data: Payload::default(),
                            payloads,
                            refers: out.refers,
                        };
                        self.pending.borrow_mut().insert(out.id.clone(), tx);
                        self.send_frame(&Frame::new(FrameBody::Send(send)))?;
                    }
                    // A note to self with no other device: kept here, owed to nobody.
                    Ok(None) => return self.finish(out, "sent", Some(now_ms())).await,
                    Err(e) => return Err(e),
                }
            }
            let answer = rx.await;
            let _guard = self.work.lock().await;
            match answer {
                Ok(Ok(FrameBody::Accepted(a))) => return self.finish(out, "sent", Some(a.ts)).await,
                Ok(Ok(FrameBody::Error(e))) => match e.code {
                    ErrorCode::RateLimited => {
                        drop(_guard);
                        sleep(e.retry_after_ms.unwrap_or(200).min(5000) as i32).await;
                    }
                    ErrorCode::StaleDevices => {} // a device list changed: encrypt again
                    code if code.is_transient() => {
                        return Err(ClientError::Io(format!("the relay could not take the message now ({}); it stays queued", e.message)));
                    }
                    code => {
                        self.finish(out, "failed", None).await?;
                        return Err(ClientError::Refused { code, message: e.message });
                    }
                },
                Ok(Ok(_)) => return Err(ClientError::Protocol("unexpected answer to a message".into())),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(ClientError::Io("the connection ended".into())),
            }
        }
        Err(ClientError::Io("the relay kept refusing the message for now; it stays queued".into()))
    }

    /// The per-device payloads of an outbox entry (`None`: nobody else is owed a copy). Called under the `work`
    /// lock. A changed identity holds the message; a recipient without keys fails it.
    async fn encrypt(&self, out: &Outgoing) -> Result<Option<Vec<imfree_proto::DevicePayload>>, ClientError> {
        let (me, my_device) = self.me()?;
        match self.pairwise(&me, &my_device).encrypt_for(&mut Directory(self), &out.to, &out.id, &out.content).await {
            Ok(payloads) if payloads.is_empty() => Ok(None),
            Ok(payloads) => Ok(Some(payloads)),
            Err(e @ ClientError::IdentityChanged { .. }) => {
                self.set_status(out, "held").await?;
                self.emit(serde_json::json!({"type": "changed", "peer": out.to}));
                Err(e)
            }
            Err(e @ (ClientError::E2e(_) | ClientError::Refused { code: ErrorCode::UnknownRecipient, .. })) => {
                self.finish(out, "failed", None).await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Set the status of the message an outbox entry shows as. Called under the `work` lock.
    async fn set_status(&self, out: &Outgoing, status: &str) -> Result<(), ClientError> {
        if let Some(shown) = &out.peer_message {
            let key = msg_key(&out.to, shown);
            if let Some(mut m) = self.store.get_json::<Message>(&key).await? {
                m.status = status.into();
                self.store.put_json(&key, &m).await?;
            }
        }
        Ok(())
    }

    /// The entry is done with: sent (at the relay's time) or failed for good. Called under the `work` lock.
    async fn finish(&self, out: &Outgoing, status: &str, ts: Option<u64>) -> Result<(), ClientError> {
        self.store.begin();
        let done = async {
            if let Some(shown) = &out.peer_message {
                let key = msg_key(&out.to, shown);
                if let Some(mut m) = self.store.get_json::<Message>(&key).await? {
                    if m.status == "pending" || m.status == "held" || status == "failed" {
                        m.status = status.into();
                    }
                    if let Some(ts) = ts {
                        m.ts = ts;
                    }
                    self.store.put_json(&key, &m).await?;
                }
            }
            self.store.put(vec![(format!("out/{}", out.id), None)]).await?;
            self.store.commit().await
        }
        .await;
        if done.is_err() {
            self.store.rollback();
        }
        self.emit(serde_json::json!({"type": "changed", "peer": out.to}));
        done
    }

    async fn mark_read(&self, peer: &str) -> Result<(), ClientError> {
        let mut refs = Vec::new();
        {
            let _guard = self.work.lock().await;
            for (key, bytes) in self.store.list(&format!("msg/{peer}/")).await? {
                let Ok(mut m) = serde_json::from_slice::<Message>(&bytes) else { continue };
                if !m.outgoing && !m.read {
                    m.read = true;
                    if let Ok(id) = m.id.parse::<EnvelopeId>() {
                        refs.push(id);
                    }
                    self.store.put_json(&key, &m).await?;
                }
            }
        }
        if !refs.is_empty() {
            self.emit(serde_json::json!({"type": "changed", "peer": peer}));
            for chunk in refs.chunks(Limits::default().max_ids_per_frame) {
                let receipt =
                    Receipt { id: new_id().parse().map_err(|_| ClientError::Protocol("id".into()))?, to: Some(peer.into()), from: None, refs: chunk.to_vec(), kind: ReceiptKind::Read, ts: None };
                // Best effort: a receipt lost with the connection is not sent again.
                let _ = self.send_frame(&Frame::new(FrameBody::Receipt(receipt)));
            }
        }
        Ok(())
    }

    async fn safety_number(&self, peer: &str) -> Result<String, ClientError> {
        let (me, my_device) = self.me()?;
        let mine = self.keys.with(|e| Ok(e.identity_key()))?;
        let _guard = self.work.lock().await;
        let theirs = match self.pairwise(&me, &my_device).devices_of(&mut Directory(self), peer).await {
            Ok(devices) => devices.first().map(|(_, c)| c.user_identity),
            Err(e) => return Err(e),
        };
        let theirs = theirs.ok_or_else(|| ClientError::E2e(format!("{peer} has no end-to-end keys yet")))?;
        Ok(imfree_crypto::safety::SafetyNumber::new(&me, &mine, peer, &theirs).display())
    }

    async fn trust(self: &Rc<Self>, peer: &str) -> Result<(), ClientError> {
        {
            let _guard = self.work.lock().await;
            let changed = self.store.get(&format!("pin-changed/{peer}")).await?;
            let Some(changed) = changed else {
                return Err(ClientError::Config(format!("{peer}'s identity key has not changed")));
            };
            self.store.put(vec![(format!("pin/{peer}"), Some(changed.as_slice())), (format!("pin-changed/{peer}"), None)]).await?;
            // Held messages go out again.
            for (_, bytes) in self.store.list("out/").await? {
                if let Ok(out) = serde_json::from_slice::<Outgoing>(&bytes)
                    && out.to == peer
                {
                    self.set_status(&out, "pending").await?;
                }
            }
        }
        self.emit(serde_json::json!({"type": "changed", "peer": peer}));
        wasm_bindgen_futures::spawn_local(self.clone().flush_outbox());
        Ok(())
    }
}

/// The relay's key service over the live connection.
struct Directory<'a>(&'a Shared);

impl KeyDirectory for Directory<'_> {
    async fn device_list(&mut self, user: &str) -> Result<KeysDeviceList, ClientError> {
        let id = new_id();
        match self.0.request(FrameBody::KeysDevices(KeysDevices { id: Some(id.clone()), user: user.into() }), &id).await? {
            FrameBody::KeysDeviceList(list) => Ok(list),
            _ => Err(ClientError::Protocol("expected a device list".into())),
        }
    }

    async fn claim_bundles(&mut self, user: &str, devices: Vec<String>) -> Result<Vec<DeviceBundle>, ClientError> {
        let id = new_id();
        match self.0.request(FrameBody::KeysClaim(KeysClaim { id: Some(id.clone()), user: user.into(), devices }), &id).await? {
            FrameBody::KeysBundles(bundles) => Ok(bundles.bundles),
            _ => Err(ClientError::Protocol("expected bundles".into())),
        }
    }
}

async fn next_binary(rx: &mut mpsc::UnboundedReceiver<Incoming>) -> Result<Vec<u8>, ClientError> {
    match rx.next().await {
        Some(Incoming::Binary(bytes)) => Ok(bytes),
        // Errors before the handshake completes come as plaintext frames.
        Some(Incoming::Text(text)) => Err(handshake_text(&text)),
        Some(Incoming::Closed(reason)) => Err(ClientError::Io(format!("the relay closed the connection: {reason}"))),
        None => Err(ClientError::Io("the relay closed the connection".into())),
    }
}

async fn expect_welcome(rx: &mut mpsc::UnboundedReceiver<Incoming>, channel: &mut Channel) -> Result<Welcome, ClientError> {
    loop {
        let frame = match rx.next().await {
            Some(Incoming::Binary(bytes)) => match channel.open(&bytes)? {
                Some(frame) => frame,
                None => continue,
            },
            Some(Incoming::Text(text)) => channel.open_text(&text)?,
            Some(Incoming::Closed(reason)) => return Err(ClientError::Io(format!("the relay closed the connection: {reason}"))),
            None => return Err(ClientError::Io("the relay closed the connection".into())),
        };
        return imfree_client_core::relay::welcome(frame);
    }
}
