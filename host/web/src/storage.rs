//! What the browser keeps, in IndexedDB through the page's small adapter (www/app.js, `IdbStore`: one object store,
//! string keys, byte values, several writes in one transaction), sealed here under the key store key.
//!
//! Every value but the key store's check record is sealed with XChaCha20-Poly1305 under a key derived from the
//! user's passphrase by Argon2id (imfree-crypto's `keystore`, the native client's format): device keys and session
//! token, identity and prekey secrets, ratchet sessions, pinned identities and every message. The keys (record names)
//! are not sealed: they name contacts and message ids, as the native client's SQLite tables do.
//!
//! Records: `keystore` (check value), `account`, `state/<name>` and `session/<user>/<device>` and `pin/<user>`,
//! `pin-changed/<user>` (the client core's [`KeyStore`]), `msg/<peer>/<id>` (a [`crate::model::Message`]),
//! `out/<id>` (an outbox entry), `orphan/<target>/<id>` (a change whose target has not arrived).
//!
//! [`Storage::begin`] … [`Storage::commit`] gathers writes and makes them in one IndexedDB transaction, reading its
//! own writes meanwhile: a delivery's advanced ratchet session and the stored message land together or not at all.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use imfree_client_core::ClientError;
use imfree_client_core::store::KeyStore;
use imfree_crypto::keystore::{KdfParams, KeyStoreError, KeyStoreKey};
use rand_core::OsRng;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use zeroize::Zeroizing;

use crate::socket::describe;

#[wasm_bindgen]
extern "C" {
    /// The page's IndexedDB adapter.
    pub type IdbStore;

    #[wasm_bindgen(method, catch)]
    async fn get(this: &IdbStore, key: &str) -> Result<JsValue, JsValue>;

    /// `entries`: an array of `[key, Uint8Array | null]` (null deletes), written in one transaction.
    #[wasm_bindgen(method, catch)]
    async fn put(this: &IdbStore, entries: js_sys::Array) -> Result<JsValue, JsValue>;

    /// Every `[key, Uint8Array]` whose key starts with `prefix`, in key order.
    #[wasm_bindgen(method, catch)]
    async fn list(this: &IdbStore, prefix: &str) -> Result<JsValue, JsValue>;
}

const CHECK_RECORD: &str = "keystore";
const CHECK_PLAINTEXT: &[u8] = b"imfree web key store v1";

/// The sealed store.
pub(crate) struct Storage {
    js: IdbStore,
    key: RefCell<Option<Rc<KeyStoreKey>>>,
    /// Writes gathered since [`Storage::begin`]: key → sealed value, or `None` to delete.
    batch: RefCell<Option<BTreeMap<String, Option<Vec<u8>>>>>,
}

fn js(e: JsValue) -> ClientError {
    ClientError::Store(format!("IndexedDB: {}", describe(&e)))
}

fn keystore_error(e: KeyStoreError) -> ClientError {
    match e {
        KeyStoreError::WrongPassphrase => ClientError::Locked("wrong passphrase for this browser's key store".into()),
        other => ClientError::Store(format!("key store: {other}")),
    }
}

fn bytes_of(value: &JsValue) -> Option<Vec<u8>> {
    value.dyn_ref::<js_sys::Uint8Array>().map(js_sys::Uint8Array::to_vec)
}

impl Storage {
    pub(crate) fn new(js: IdbStore) -> Self {
        Storage { js, key: RefCell::new(None), batch: RefCell::new(None) }
    }

    /// Whether this browser holds a key store (an account was set up here).
    pub(crate) async fn exists(&self) -> Result<bool, ClientError> {
        Ok(bytes_of(&self.js.get(CHECK_RECORD).await.map_err(js)?).is_some())
    }

    /// Make the key store for `passphrase` (Argon2id at OWASP parameters); nothing may be here yet.
    pub(crate) async fn create(&self, passphrase: &str) -> Result<(), ClientError> {
        if passphrase.is_empty() {
            return Err(ClientError::Config("the passphrase must not be empty".into()));
        }
        if self.exists().await? {
            return Err(ClientError::Config("this browser already holds an account".into()));
        }
        let key = KeyStoreKey::create(&mut OsRng, passphrase.as_bytes(), KdfParams::OWASP).map_err(keystore_error)?;
        let check = key.seal(&mut OsRng, CHECK_PLAINTEXT);
        self.write(vec![(CHECK_RECORD.to_owned(), Some(check))]).await?;
        *self.key.borrow_mut() = Some(Rc::new(key));
        Ok(())
    }

    /// Unlock the key store with `passphrase`.
    pub(crate) async fn unlock(&self, passphrase: &str) -> Result<(), ClientError> {
        let sealed = bytes_of(&self.js.get(CHECK_RECORD).await.map_err(js)?).ok_or(ClientError::NotLoggedIn)?;
        let (key, plaintext) = KeyStoreKey::unlock(passphrase.as_bytes(), &sealed).map_err(keystore_error)?;
        if plaintext.as_slice() != CHECK_PLAINTEXT {
            return Err(ClientError::Store("the key store's check value is not imfree's".into()));
        }
        *self.key.borrow_mut() = Some(Rc::new(key));
        Ok(())
    }

    /// Forget everything this browser keeps (after logging out).
    pub(crate) async fn wipe(&self) -> Result<(), ClientError> {
        let list = js_sys::Array::from(&self.js.list("").await.map_err(js)?);
        let deletes = list.iter().filter_map(|pair| js_sys::Array::from(&pair).get(0).as_string()).map(|k| (k, None)).collect();
        self.write(deletes).await?;
        *self.key.borrow_mut() = None;
        Ok(())
    }

    fn key(&self) -> Result<Rc<KeyStoreKey>, ClientError> {
        self.key.borrow().clone().ok_or_else(|| ClientError::Locked("the key store is locked".into()))
    }

    /// Start gathering writes (see the module's documentation).
    pub(crate) fn begin(&self) {
        *self.batch.borrow_mut() = Some(BTreeMap::new());
    }

    /// Write what was gathered since [`Storage::begin`], in one transaction.
    pub(crate) async fn commit(&self) -> Result<(), ClientError> {
        let Some(batch) = self.batch.borrow_mut().take() else { return Ok(()) };
        self.write(batch.into_iter().collect()).await
    }

    /// Drop what was gathered since [`Storage::begin`].
    pub(crate) fn rollback(&self) {
        self.batch.borrow_mut().take();
    }

    async fn write(&self, entries: Vec<(String, Option<Vec<u8>>)>) -> Result<(), ClientError> {
        if entries.is_empty() {
            return Ok(());
        }
        let array = js_sys::Array::new();
        for (key, value) in entries {
            let value = match value {
                Some(v) => JsValue::from(js_sys::Uint8Array::from(v.as_slice())),
                None => JsValue::NULL,
            };
            array.push(&js_sys::Array::of2(&JsValue::from_str(&key), &value));
        }
        self.js.put(array).await.map_err(js)?;
        Ok(())
    }

    /// Read and open one sealed record.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>, ClientError> {
        let pending = self.batch.borrow().as_ref().and_then(|b| b.get(key).cloned());
        let sealed = match pending {
            Some(value) => value,
            None => bytes_of(&self.js.get(key).await.map_err(js)?),
        };
        match sealed {
            Some(sealed) => Ok(Some(self.key()?.open(&sealed).map_err(keystore_error)?)),
            None => Ok(None),
        }
    }

    /// Seal and write records (`None` deletes): gathered when a batch is open, else written at once, together.
    pub(crate) async fn put(&self, entries: Vec<(String, Option<&[u8]>)>) -> Result<(), ClientError> {
        let key = self.key()?;
        let sealed: Vec<(String, Option<Vec<u8>>)> =
            entries.into_iter().map(|(k, v)| (k, v.map(|plain| key.seal(&mut OsRng, plain)))).collect();
        if let Some(batch) = self.batch.borrow_mut().as_mut() {
            batch.extend(sealed);
            return Ok(());
        }
        self.write(sealed).await
    }

    /// Every record under `prefix`, opened, in key order (with the open batch's writes).
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<(String, Zeroizing<Vec<u8>>)>, ClientError> {
        let key = self.key()?;
        let mut found: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for pair in js_sys::Array::from(&self.js.list(prefix).await.map_err(js)?).iter() {
            let pair = js_sys::Array::from(&pair);
            if let (Some(k), Some(v)) = (pair.get(0).as_string(), bytes_of(&pair.get(1))) {
                found.insert(k, v);
            }
        }
        if let Some(batch) = self.batch.borrow().as_ref() {
            for (k, v) in batch.range(prefix.to_owned()..).take_while(|(k, _)| k.starts_with(prefix)) {
                match v {
                    Some(v) => found.insert(k.clone(), v.clone()),
                    None => found.remove(k),
                };
            }
        }
        found.into_iter().map(|(k, v)| Ok((k, key.open(&v).map_err(keystore_error)?))).collect()
    }

    /// Read a JSON record.
    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ClientError> {
        match self.get(key).await? {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| ClientError::Store(format!("{key}: {e}"))),
            None => Ok(None),
        }
    }

    /// Write a JSON record.
    pub(crate) async fn put_json<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), ClientError> {
        let bytes = Zeroizing::new(serde_json::to_vec(value).map_err(|e| ClientError::Store(e.to_string()))?);
        self.put(vec![(key.to_owned(), Some(&bytes))]).await
    }
}

impl KeyStore for Storage {
    async fn state(&self, name: &str) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self.get(&format!("state/{name}")).await?.map(|v| v.to_vec()))
    }

    async fn session(&self, user: &str, device: &str) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self.get(&format!("session/{user}/{device}")).await?.map(|v| v.to_vec()))
    }

    async fn save(&self, sessions: &[(String, String, Vec<u8>)], state: &[(&str, Vec<u8>)]) -> Result<(), ClientError> {
        let mut entries: Vec<(String, Option<&[u8]>)> = Vec::with_capacity(sessions.len() + state.len());
        entries.extend(sessions.iter().map(|(u, d, record)| (format!("session/{u}/{d}"), Some(record.as_slice()))));
        entries.extend(state.iter().map(|(name, record)| (format!("state/{name}"), Some(record.as_slice()))));
        self.put(entries).await
    }

    async fn pinned_identity(&self, user: &str) -> Result<Option<[u8; 32]>, ClientError> {
        Ok(self.get(&format!("pin/{user}")).await?.and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok()))
    }

    async fn pin_identity(&self, user: &str, key: &[u8; 32]) -> Result<(), ClientError> {
        if self.pinned_identity(user).await?.is_none() {
            self.put(vec![(format!("pin/{user}"), Some(key))]).await?;
        }
        Ok(())
    }

    async fn note_identity_change(&self, user: &str, key: &[u8; 32]) -> Result<(), ClientError> {
        self.put(vec![(format!("pin-changed/{user}"), Some(key))]).await
    }
}
