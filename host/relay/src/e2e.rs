//! End-to-end key service: devices publish certificates and prekeys (`keys.upload`), contacts fetch device lists
//! (`keys.devices`) and claim prekey bundles (`keys.claim`), and a user's device publishes a signed device
//! revocation list (`keys.revoke`). The relay verifies every signature it can — so that nobody can publish keys for a
//! device that is not theirs, or revoke another user's devices — but holds nothing that decrypts a message.

use imfree_crypto::identity::DeviceCertificate;
use imfree_crypto::prekeys::{KemPrekeyKind, KeyUpload};
use imfree_crypto::revocation::RevocationList;
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

/// Verify and store a device's upload. `challenge` is the value this connection's `welcome` carried; at most
/// `max_prekeys` unclaimed one-time prekeys of each kind are kept per device.
pub async fn upload(
    store: &dyn RelayStore,
    user_id: UserId,
    device: &str,
    challenge: &[u8],
    document: serde_json::Value,
    max_prekeys: usize,
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
    let (x25519_left, kem_left) = store.prekey_counts(device).await.map_err(internal)?;
    let kem_one_time = upload.kem_prekeys.iter().filter(|k| k.kind == KemPrekeyKind::OneTime).count();
    if x25519_left.max(0) as usize + upload.one_time_prekeys.len() > max_prekeys
        || kem_left.max(0) as usize + kem_one_time > max_prekeys
    {
        return Err(rejected(format!("a device keeps at most {max_prekeys} unclaimed one-time prekeys of each kind")));
    }
    if upload.signed_prekey.is_none() && !has_keys {
        return Err(rejected("a device's first upload must include a signed prekey"));
    }
    let last_resort = upload.kem_prekeys.iter().rfind(|k| k.kind == KemPrekeyKind::LastResort);
    if last_resort.is_none() && !has_keys {
        return Err(rejected("a device's first upload must include a last-resort ML-KEM prekey"));
    }
    if let Some(list) = stored_revocation_list(store, user_id).await?
        && list.is_revoked(cert.device_id)
    {
        return Err(rejected(format!("device {} was revoked by this account's owner; link a new device instead", cert.device_id)));
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

/// The E2E devices of a user with their certificates (revoked ones are not listed; with `names`, for the asker's own
/// account, each device's name too), and the user's newest revocation list as stored.
pub async fn device_list(
    store: &dyn RelayStore,
    user_id: UserId,
    names: bool,
) -> Result<(Vec<DeviceEntry>, Option<Vec<u8>>), ErrorFrame> {
    let mut devices: Vec<DeviceEntry> = store
        .device_certificates(user_id)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|(device, cert)| DeviceEntry { device, certificate: document(&cert), name: None })
        .collect();
    if names {
        let records = store.devices_of(user_id).await.map_err(internal)?;
        for entry in &mut devices {
            entry.name = records.iter().find(|r| r.id == entry.device).map(|r| r.name.clone());
        }
    }
    let list = store.revocation_list(user_id).await.map_err(internal)?.map(|(_, list)| list);
    Ok((devices, list))
}

async fn stored_revocation_list(store: &dyn RelayStore, user_id: UserId) -> Result<Option<RevocationList>, ErrorFrame> {
    match store.revocation_list(user_id).await.map_err(internal)? {
        None => Ok(None),
        Some((_, bytes)) => RevocationList::decode(&bytes).map(Some).map_err(|e| {
            tracing::error!(user_id, error = %e, "the stored revocation list does not decode");
            ErrorFrame::new(ErrorCode::Internal, "the stored device revocation list is damaged; ask the operator")
        }),
    }
}

fn revocation_rejected(message: impl Into<String>) -> ErrorFrame {
    ErrorFrame::new(ErrorCode::RevocationRejected, message)
}

/// Verify and store a new revocation list sent by `device` of `user_id`, and revoke the relay devices whose
/// certificates it names (their sessions, keys, prekeys and queues go). Returns those device ids, so that their
/// live connections can be closed.
pub async fn revoke(store: &dyn RelayStore, user_id: UserId, device: &str, bytes: &[u8]) -> Result<Vec<String>, ErrorFrame> {
    let list = RevocationList::decode(bytes).map_err(|e| revocation_rejected(e.to_string()))?;
    let identity = store
        .user_identity(user_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| revocation_rejected("this account has no identity key yet: there is nothing to revoke"))?;
    list.verify(&identity).map_err(|e| revocation_rejected(e.to_string()))?;
    if let Some(previous) = stored_revocation_list(store, user_id).await? {
        list.follows(&previous).map_err(|e| revocation_rejected(e.to_string()))?;
    }
    let version = i64::try_from(list.version).map_err(|_| revocation_rejected("version out of range"))?;
    let mut targets = Vec::new();
    let mut remaining = 0usize;
    for (relay_device, cert) in store.device_certificates(user_id).await.map_err(internal)? {
        // The relay verified each certificate on upload; one that no longer parses is left alone.
        let Ok(cert) = serde_json::from_slice::<DeviceCertificate>(&cert) else { continue };
        if list.is_revoked(cert.device_id) {
            targets.push(relay_device);
        } else {
            remaining += 1;
        }
    }
    if targets.iter().any(|d| d == device) {
        return Err(revocation_rejected("a device cannot revoke itself: revoke it from another of the account's devices"));
    }
    if remaining == 0 {
        return Err(revocation_rejected("this list would revoke every device of the account; keep at least one"));
    }
    if !store.revoke_devices(user_id, version, bytes, &targets, now_ms()).await.map_err(internal)? {
        return Err(revocation_rejected("a revocation list of the same or a newer version is already stored"));
    }
    tracing::info!(user_id, version, revoked = targets.len(), "device revocation list stored");
    Ok(targets)
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

#[cfg(test)]
mod tests {
    use imfree_crypto::device::DeviceKeys;
    use imfree_crypto::identity::UserIdentity;
    use imfree_crypto::prekeys::{KemPrekeyKind, KeyUpload, LocalPrekeys};
    use imfree_store::{NewDevice, NewUser, RelayStore, SqliteStore};
    use rand_core::OsRng;

    use super::*;

    #[tokio::test]
    async fn uploads_are_checked_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("relay.db")).await.unwrap();
        let user = store.create_user(&NewUser { name: "bob".into(), password_hash: "x".into(), created_at: 0 }).await.unwrap();
        let keys = DeviceKeys::generate();
        store
            .add_device(&NewDevice {
                id: "d1".into(),
                user_id: user,
                signing_key: keys.signing_public(),
                static_key: keys.static_public(),
                name: "d".into(),
                created_at: 0,
            })
            .await
            .unwrap();
        let identity = UserIdentity::generate(&mut OsRng);
        let cert = identity.certify_device(7, &keys, 1);
        let mut local = LocalPrekeys::new();
        let challenge = b"challenge";
        let upload = |local: &mut LocalPrekeys, n: usize, first: bool| {
            let spk = first.then(|| local.new_signed_prekey(&mut OsRng, &keys, 1));
            let otpks = local.new_one_time_prekeys(&mut OsRng, n, 1);
            let mut kems: Vec<_> = (0..n).map(|_| local.new_kem_prekey(&mut OsRng, &keys, KemPrekeyKind::OneTime, 1)).collect();
            if first {
                kems.push(local.new_kem_prekey(&mut OsRng, &keys, KemPrekeyKind::LastResort, 1));
            }
            serde_json::to_value(KeyUpload::sign(&keys, cert.clone(), spk, otpks, kems, challenge)).unwrap()
        };

        // The proof covers the connection's challenge: an upload signed for another one is refused.
        let replayed = upload(&mut local, 5, true);
        let err = super::upload(&store, user, "d1", b"another challenge", replayed, 100).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::KeysRejected);

        super::upload(&store, user, "d1", challenge, upload(&mut local, 60, true), 100).await.unwrap();
        assert_eq!(store.prekey_counts("d1").await.unwrap(), (60, 60));
        assert_eq!(store.user_identity(user).await.unwrap(), Some(identity.public_key()));
        let err = super::upload(&store, user, "d1", challenge, upload(&mut local, 50, false), 100).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::KeysRejected, "{}", err.message);
        assert_eq!(store.prekey_counts("d1").await.unwrap(), (60, 60), "a refused upload stores nothing");
        super::upload(&store, user, "d1", challenge, upload(&mut local, 40, false), 100).await.unwrap();
        assert_eq!(store.prekey_counts("d1").await.unwrap(), (100, 100));
    }

    #[tokio::test]
    async fn revocation_lists_are_verified_and_cut_devices_off() {
        use imfree_crypto::revocation::RevocationList;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("relay.db")).await.unwrap();
        let user = store.create_user(&NewUser { name: "alice".into(), password_hash: "x".into(), created_at: 0 }).await.unwrap();
        let identity = UserIdentity::generate(&mut OsRng);
        let challenge = b"challenge";
        let mut certs = Vec::new();
        for (n, device) in ["a1", "a2", "a3"].into_iter().enumerate() {
            let keys = DeviceKeys::generate();
            let new = NewDevice {
                id: device.into(),
                user_id: user,
                signing_key: keys.signing_public(),
                static_key: keys.static_public(),
                name: device.into(),
                created_at: n as i64,
            };
            store.add_device(&new).await.unwrap();
            let cert = identity.certify_device(n as u32 + 1, &keys, 1);
            let mut local = LocalPrekeys::new();
            let spk = local.new_signed_prekey(&mut OsRng, &keys, 1);
            let kems = vec![local.new_kem_prekey(&mut OsRng, &keys, KemPrekeyKind::LastResort, 1)];
            let doc = serde_json::to_value(KeyUpload::sign(&keys, cert.clone(), Some(spk), Vec::new(), kems, challenge)).unwrap();
            super::upload(&store, user, device, challenge, doc, 100).await.unwrap();
            certs.push((keys, cert));
        }
        let code = |r: Result<Vec<String>, ErrorFrame>| r.unwrap_err().code;

        // Not the account's identity, not decodable, naming the sender: refused, nothing stored.
        let stranger = UserIdentity::generate(&mut OsRng);
        let forged = RevocationList::revoke(&stranger, None, 2, 1).unwrap().encode();
        assert_eq!(code(revoke(&store, user, "a1", &forged).await), ErrorCode::RevocationRejected);
        assert_eq!(code(revoke(&store, user, "a1", b"junk").await), ErrorCode::RevocationRejected);
        let own = RevocationList::revoke(&identity, None, 1, 1).unwrap();
        assert_eq!(code(revoke(&store, user, "a1", &own.encode()).await), ErrorCode::RevocationRejected);
        assert_eq!(store.revocation_list(user).await.unwrap(), None);

        // Revoke a2 (certificate id 2): its keys go, its later uploads are refused.
        let v1 = RevocationList::revoke(&identity, None, 2, 1).unwrap();
        assert_eq!(revoke(&store, user, "a1", &v1.encode()).await.unwrap(), ["a2"]);
        let listed: Vec<String> = device_list(&store, user, false).await.unwrap().0.into_iter().map(|d| d.device).collect();
        assert_eq!(listed, ["a1", "a3"]);
        assert_eq!(device_list(&store, user, false).await.unwrap().1, Some(v1.encode()));
        // A replay of the same version, and a newer list that un-revokes a2, are refused.
        assert_eq!(code(revoke(&store, user, "a1", &v1.encode()).await), ErrorCode::RevocationRejected);
        let unrevoke = RevocationList::sign(&identity, 2, 2, vec![]).unwrap();
        assert_eq!(code(revoke(&store, user, "a1", &unrevoke.encode()).await), ErrorCode::RevocationRejected);
        // Revoking every remaining device but the sender is fine; revoking the last one is not.
        let v2 = RevocationList::revoke(&identity, Some(&v1), 3, 2).unwrap();
        assert_eq!(revoke(&store, user, "a1", &v2.encode()).await.unwrap(), ["a3"]);
        let v3 = RevocationList::revoke(&identity, Some(&v2), 1, 3).unwrap();
        assert_eq!(code(revoke(&store, user, "a3", &v3.encode()).await), ErrorCode::RevocationRejected);
        assert_eq!(store.revocation_list(user).await.unwrap().map(|(v, _)| v), Some(2));
    }
}
