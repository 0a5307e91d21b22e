//! This account's devices and the signed device revocation list: listing the account's devices, revoking one
//! (`keys.revoke`), and the check every device list of every user goes through — devices on the user's verified
//! revocation list are left out, and a list older than the newest one seen for that user is refused (a relay that
//! serves one is trying to bring a revoked device back).
//!
//! It owns no keys: signing happens inside the user identity of [`imfree_client_core::device::DeviceE2e`]; the
//! checks themselves are the client core's ([`imfree_client_core::pairwise`]).

use std::time::Duration;

use imfree_crypto::identity::DeviceCertificate;
use imfree_crypto::linking::agreement_fingerprint;
use imfree_crypto::revocation::{RevocationList, RevokedDevice};
use imfree_proto::{FrameBody, KeysDevices, KeysRevoke, Payload};

use crate::engine::{Event, Session, new_envelope_id};
use crate::{ClientError, now_ms};

/// One device of this account.
#[derive(Debug, Clone)]
pub struct AccountDevice {
    /// The relay's id of the device.
    pub relay_device: String,
    /// Its name, as the relay knows it.
    pub name: Option<String>,
    /// Its certificate (`device_id` is the id `devices revoke` takes).
    pub certificate: DeviceCertificate,
    /// Whether it is the device running this code.
    pub this_device: bool,
}

/// This account's devices as the verified device list and revocation list describe them.
#[derive(Debug, Clone, Default)]
pub struct AccountDevices {
    /// The devices that are not revoked.
    pub active: Vec<AccountDevice>,
    /// The revoked devices (certificate ids and times), from the newest verified revocation list.
    pub revoked: Vec<RevokedDevice>,
    /// That list's version (0: no device was ever revoked).
    pub version: u64,
}

/// A short fingerprint of a device's agreement key, as both devices show it while linking: 32 hex digits in groups
/// of four.
pub fn device_fingerprint(agreement_key: &[u8; 32]) -> String {
    let hex = hex::encode(agreement_fingerprint(agreement_key));
    hex.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" ")
}

impl Session<'_> {
    /// This account's devices: the active ones (verified certificates, names from the relay) and the revoked ones.
    pub async fn account_devices(&mut self) -> Result<AccountDevices, ClientError> {
        let me = self.client().user().to_owned();
        let id = new_envelope_id();
        let FrameBody::KeysDeviceList(raw) = self.request(FrameBody::KeysDevices(KeysDevices { id: Some(id.clone()), user: me.clone() }), &id).await?
        else {
            return Err(ClientError::Protocol("expected a device list".into()));
        };
        let verified = self.devices_of(&me).await?;
        let this = self.client().device().to_owned();
        let active = verified
            .into_iter()
            .map(|(relay_device, certificate)| AccountDevice {
                name: raw.devices.iter().find(|d| d.device == relay_device).and_then(|d| d.name.clone()),
                this_device: relay_device == this,
                relay_device,
                certificate,
            })
            .collect();
        let list = match self.client().store().revocation_list(&me).await? {
            Some(bytes) => RevocationList::decode(&bytes).ok(),
            None => None,
        };
        Ok(AccountDevices {
            active,
            revoked: list.as_ref().map(|l| l.revoked.clone()).unwrap_or_default(),
            version: list.map_or(0, |l| l.version),
        })
    }

    /// Revoke one of this account's other devices by its certificate id: sign the next revocation list with the
    /// user identity and publish it. The relay then refuses the device's logins, drops its keys and queue, and every
    /// contact leaves it out. Returns the list's version.
    pub async fn revoke_device(&mut self, device_id: u32) -> Result<u64, ClientError> {
        let devices = self.account_devices().await?;
        let Some(target) = devices.active.iter().find(|d| d.certificate.device_id == device_id) else {
            if devices.revoked.iter().any(|r| r.device_id == device_id) {
                return Err(ClientError::Config(format!("device {device_id} is already revoked")));
            }
            return Err(ClientError::Config(format!("this account has no device {device_id}; `imfree client devices` lists them")));
        };
        if target.this_device {
            return Err(ClientError::Config(
                "a device cannot revoke itself: revoke it from another of your devices".into(),
            ));
        }
        let me = self.client().user().to_owned();
        let previous = match self.client().store().revocation_list(&me).await? {
            Some(bytes) => RevocationList::decode(&bytes).ok(),
            None => None,
        };
        let now = (now_ms() / 1000) as u64;
        let list = self.client().with_e2e(|e| {
            let identity = e.identity().ok_or_else(|| ClientError::E2e("this device does not hold the user identity".into()))?;
            RevocationList::revoke(identity, previous.as_ref(), device_id, now).map_err(|e| ClientError::E2e(e.to_string()))
        })?;
        let encoded = list.encode();
        let id = new_envelope_id();
        self.send_frame(&imfree_proto::Frame::new(FrameBody::KeysRevoke(KeysRevoke { id: Some(id.clone()), list: Payload(encoded.clone()) })))
            .await?;
        let answer = self
            .wait_for(Duration::from_secs(30), |e| match e {
                Event::Ok(Some(r)) => *r == id,
                Event::Refused(e) => e.reference.as_deref() == Some(&id),
                _ => false,
            })
            .await?;
        if let Event::Refused(e) = answer {
            return Err(ClientError::Refused { code: e.code, message: e.message });
        }
        self.client().store().put_revocation_list(&me, &encoded).await?;
        tracing::debug!(device_id, version = list.version, "device revoked");
        Ok(list.version)
    }
}
