//! Where a client keeps its end-to-end state: the [`KeyStore`] a driver implements (the native engine on SQLite,
//! the browser on IndexedDB), and [`MemoryStore`], which keeps everything in memory.
//!
//! Every value is opaque to the store. A store that encrypts at rest (as the native one does under the key-store
//! passphrase) does so below this interface.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::ClientError;
use crate::groups::{GroupRecord, GroupStore};

/// The state of a client's end-to-end encryption.
///
/// - named records of the device state (`certificate`, `prekeys`, `replay`, `identity`, counters — see
///   [`crate::device::DeviceE2e::state`]) and each user's newest verified revocation list;
/// - one record per contact device with the sessions kept for it ([`crate::device::PeerSessions`]);
/// - the identity key pinned for each contact on first sight, and the key it changed to, if it did.
///
/// [`KeyStore::save`] must write sessions and state together or not at all: a session advanced without the replay
/// cache or the consumed prekey that go with it (or the reverse) would let a message be read twice or not at all.
// The futures are not required to be `Send`: the browser's store is single-threaded, and the native engine's
// concrete store has `Send` futures, which callers keep because they use it by its concrete type.
#[allow(async_fn_in_trait)]
pub trait KeyStore {
    /// A named state record.
    async fn state(&self, name: &str) -> Result<Option<Vec<u8>>, ClientError>;
    /// The sessions kept for a contact's device.
    async fn session(&self, user: &str, device: &str) -> Result<Option<Vec<u8>>, ClientError>;
    /// Write sessions (user, device, record) and state records in one atomic step.
    async fn save(&self, sessions: &[(String, String, Vec<u8>)], state: &[(&str, Vec<u8>)]) -> Result<(), ClientError>;
    /// The identity key pinned for `user`, if any.
    async fn pinned_identity(&self, user: &str) -> Result<Option<[u8; 32]>, ClientError>;
    /// Pin `key` for `user` unless a key is pinned already.
    async fn pin_identity(&self, user: &str, key: &[u8; 32]) -> Result<(), ClientError>;
    /// Remember that `user` now presents `key`, which differs from the pinned one (the pin stays until the user
    /// accepts the change).
    async fn note_identity_change(&self, user: &str, key: &[u8; 32]) -> Result<(), ClientError>;

    /// The newest verified revocation list seen for `user`.
    async fn revocation_list(&self, user: &str) -> Result<Option<Vec<u8>>, ClientError> {
        self.state(&revocation_record(user)).await
    }

    /// Remember a newer verified revocation list for `user`.
    async fn put_revocation_list(&self, user: &str, list: &[u8]) -> Result<(), ClientError> {
        self.save(&[], &[(&revocation_record(user), list.to_vec())]).await
    }
}

/// The state record that holds `user`'s revocation list.
pub fn revocation_record(user: &str) -> String {
    format!("revocation-list/{user}")
}

/// A [`KeyStore`] and [`GroupStore`] in memory: for tests, and for a client that keeps nothing (a kiosk view).
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Memory>,
}

#[derive(Default)]
struct Memory {
    state: BTreeMap<String, Vec<u8>>,
    sessions: BTreeMap<(String, String), Vec<u8>>,
    /// Pinned key and the key it changed to.
    identities: BTreeMap<String, ([u8; 32], Option<[u8; 32]>)>,
    groups: BTreeMap<String, GroupRecord>,
}

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut Memory) -> T) -> Result<T, ClientError> {
        let mut guard = self.inner.lock().map_err(|_| ClientError::Store("memory store lock poisoned".into()))?;
        Ok(f(&mut guard))
    }

    /// The key `user` changed to, if a change was noted and not accepted.
    pub fn identity_change(&self, user: &str) -> Option<[u8; 32]> {
        self.with(|m| m.identities.get(user).and_then(|(_, changed)| *changed)).ok().flatten()
    }

    /// Accept the key `user` changed to: it becomes the pinned one.
    pub fn accept_identity_change(&self, user: &str) -> Result<(), ClientError> {
        self.with(|m| {
            if let Some((pinned, changed)) = m.identities.get_mut(user)
                && let Some(new) = changed.take()
            {
                *pinned = new;
            }
        })
    }
}

impl KeyStore for MemoryStore {
    async fn state(&self, name: &str) -> Result<Option<Vec<u8>>, ClientError> {
        self.with(|m| m.state.get(name).cloned())
    }

    async fn session(&self, user: &str, device: &str) -> Result<Option<Vec<u8>>, ClientError> {
        self.with(|m| m.sessions.get(&(user.to_owned(), device.to_owned())).cloned())
    }

    async fn save(&self, sessions: &[(String, String, Vec<u8>)], state: &[(&str, Vec<u8>)]) -> Result<(), ClientError> {
        self.with(|m| {
            for (user, device, record) in sessions {
                m.sessions.insert((user.clone(), device.clone()), record.clone());
            }
            for (name, value) in state {
                m.state.insert((*name).to_owned(), value.clone());
            }
        })
    }

    async fn pinned_identity(&self, user: &str) -> Result<Option<[u8; 32]>, ClientError> {
        self.with(|m| m.identities.get(user).map(|(pinned, _)| *pinned))
    }

    async fn pin_identity(&self, user: &str, key: &[u8; 32]) -> Result<(), ClientError> {
        self.with(|m| {
            m.identities.entry(user.to_owned()).or_insert((*key, None));
        })
    }

    async fn note_identity_change(&self, user: &str, key: &[u8; 32]) -> Result<(), ClientError> {
        self.with(|m| {
            if let Some((_, changed)) = m.identities.get_mut(user) {
                *changed = Some(*key);
            }
        })
    }
}

impl GroupStore for MemoryStore {
    async fn group(&self, id: &str) -> Result<Option<GroupRecord>, ClientError> {
        self.with(|m| m.groups.get(id).cloned())
    }

    async fn put_group(&self, record: &GroupRecord) -> Result<(), ClientError> {
        self.with(|m| {
            m.groups.insert(record.id.clone(), record.clone());
        })
    }
}
