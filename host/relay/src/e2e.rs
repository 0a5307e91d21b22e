//! End-to-end key service: devices publish certificates and prekeys (`keys.upload`), contacts fetch device lists
//! (`keys.devices`) and claim prekey bundles (`keys.claim`). The relay verifies every signature it can — so that
//! nobody can publish keys for a device that is not theirs — but holds nothing that decrypts a message.

use imfree_crypto::prekeys::{KemPrekeyKind, KeyUpload};
use imfree_proto::{DeviceBundle, DeviceEntry, ErrorCode, ErrorFrame};
use imfree_store::{DeviceKeysUpload, RelayStore, StoreError, UserId};

use crate::state::now_ms;

fn rejected(message: impl Into<String>) -> ErrorFrame {
    ErrorFrame::new(ErrorCode::KeysRejected, message)
}

fn internal(e: StoreError) -> ErrorFrame {
    tracing::error!(error = %e, "store failure in the key service");
    ErrorFrame::new(ErrorCode::Internal, "the relay could not complete the key operation; try again")
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Verify and store a device's upload. `challenge` is the value this connection's `welcome` carried.
pub async fn upload(
    store: &dyn RelayStore,
    user_id: UserId,
    device: &str,
    challenge: &[u8],
    document: serde_json::Value,
) -> Result<(), ErrorFrame> {
    let upload: KeyUpload =
        serde_json::from_value(document).map_err(|e| rejected(format!("not a key upload document: {e}")))?;
    upload.verify(challenge).map_err(|e| rejected(format!("the upload does not verify: {e}")))?;
    let record = store.device_by_id(device).await.map_err(internal)?.ok_or_else(|| rejected("unknown device"))?;
    let cert = &upload.certificate;
    if cert.agreement_key != record.static_key || cert.signing_key != record.signing_key {
        return Err(rejected("the certificate is for other keys than this device's"));
    }
    let has_keys = store.device_certificates(user_id).await.map_err(internal)?.iter().any(|(d, _)| d == device);
    if upload.signed_prekey.is_none() && !has_keys {
        return Err(rejected("a device's first upload must include a signed prekey"));
    }
    let last_resort = upload.kem_prekeys.iter().rfind(|k| k.kind == KemPrekeyKind::LastResort);
    if last_resort.is_none() && !has_keys {
        return Err(rejected("a device's first upload must include a last-resort ML-KEM prekey"));
    }
    // Last, so that a refused upload records nothing: the first accepted upload fixes the account's identity.
    if !store.set_user_identity(user_id, &cert.user_identity, now_ms()).await.map_err(internal)? {
        return Err(rejected(
            "the certificate is signed by another identity than this account's: link this device from an existing one",
        ));
    }
    let keys = DeviceKeysUpload {
        user_id,
        certificate: to_json(cert),
        signed_prekey: upload.signed_prekey.as_ref().map(to_json),
        one_time: upload.one_time_prekeys.iter().map(|k| (i64::from(k.id), to_json(k))).collect(),
        kem_one_time: upload
            .kem_prekeys
            .iter()
            .filter(|k| k.kind == KemPrekeyKind::OneTime)
            .map(|k| (i64::from(k.id), to_json(k)))
            .collect(),
        kem_last_resort: last_resort.map(to_json),
        at: now_ms(),
    };
    store.put_device_keys(device, &keys).await.map_err(internal)?;
    tracing::debug!(device, one_time = keys.one_time.len(), kem = keys.kem_one_time.len(), "keys published");
    Ok(())
}

fn document(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or(serde_json::Value::Null)
}

/// The E2E devices of a user with their certificates.
pub async fn device_list(store: &dyn RelayStore, user_id: UserId) -> Result<Vec<DeviceEntry>, ErrorFrame> {
    Ok(store
        .device_certificates(user_id)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|(device, cert)| DeviceEntry { device, certificate: document(&cert) })
        .collect())
}

/// Claim one bundle per device (only devices of `owned`, the user's devices).
pub async fn claim(store: &dyn RelayStore, owned: &[String], devices: &[String]) -> Result<Vec<DeviceBundle>, ErrorFrame> {
    let wanted: Vec<String> = devices.iter().filter(|d| owned.contains(d)).cloned().collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    Ok(store
        .claim_bundles(&wanted)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|b| DeviceBundle {
            device: b.device,
            bundle: serde_json::json!({
                "certificate": document(&b.certificate),
                "signed_prekey": document(&b.signed_prekey),
                "one_time_prekey": b.one_time.as_deref().map(document),
                "kem_prekey": document(&b.kem),
            }),
        })
        .collect())
}
