//! The relay's key service as the client core sees it: a contact's device list and prekey bundles. A driver answers
//! these over its connection (`keys.devices` → `keys.device_list`, `keys.claim` → `keys.bundles`); nothing it
//! returns is trusted — [`crate::pairwise`] checks every certificate, signature and pin.

use imfree_proto::{DeviceBundle, KeysDeviceList};

use crate::ClientError;

/// Asks the relay's key service.
// Not `Send`-bound, like [`crate::store::KeyStore`]: the browser's transport is single-threaded.
#[allow(async_fn_in_trait)]
pub trait KeyDirectory {
    /// `user`'s device list as the relay serves it (certificates and the signed revocation list, unchecked).
    async fn device_list(&mut self, user: &str) -> Result<KeysDeviceList, ClientError>;
    /// One prekey bundle for each of `devices` of `user` that has keys left (each one-time prekey is handed out
    /// once).
    async fn claim_bundles(&mut self, user: &str, devices: Vec<String>) -> Result<Vec<DeviceBundle>, ClientError>;
}
