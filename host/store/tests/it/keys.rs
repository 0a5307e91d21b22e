//! End-to-end keys: identities, device keys, claims that hand each one-time prekey out once, per-device payloads.

use imfree_store::{DeviceKeysUpload, EnqueueOutcome, SessionRecord};

use crate::fixtures::{ack, device, envelope, user};
use crate::harness::{Fixture, both_backends};

both_backends!(
    identity_is_set_once,
    claims_hand_out_each_one_time_prekey_once,
    per_device_payloads_reach_their_device,
    revocation_lists_only_move_forward_and_revoke_devices,
);

fn upload(user_id: i64, cert: &str, one_time: &[i64], kem: &[i64], last_resort: Option<&str>) -> DeviceKeysUpload {
    DeviceKeysUpload {
        user_id,
        certificate: cert.as_bytes().to_vec(),
        signed_prekey: Some(format!("spk-{cert}").into_bytes()),
        one_time: one_time.iter().map(|i| (*i, format!("otpk-{i}").into_bytes())).collect(),
        kem_one_time: kem.iter().map(|i| (*i, format!("kem-{i}").into_bytes())).collect(),
        kem_last_resort: last_resort.map(|l| l.as_bytes().to_vec()),
        at: 1,
    }
}

async fn identity_is_set_once(f: &mut Fixture) {
    let s = f.store();
    let alice = user(s, "alice").await;
    assert_eq!(s.user_identity(alice).await.unwrap(), None);
    assert!(s.set_user_identity(alice, &[7; 32], 1).await.unwrap());
    assert!(s.set_user_identity(alice, &[7; 32], 2).await.unwrap(), "the same key again is fine");
    assert!(!s.set_user_identity(alice, &[8; 32], 3).await.unwrap(), "a different key is refused");
    assert_eq!(s.user_identity(alice).await.unwrap(), Some([7; 32]));
}

async fn claims_hand_out_each_one_time_prekey_once(f: &mut Fixture) {
    let s = f.store();
    let bob = user(s, "bob").await;
    device(s, "b1", bob, 1).await;
    device(s, "b2", bob, 2).await;
    s.put_device_keys("b1", &upload(bob, "cert-b1", &[1, 2], &[10], Some("lr-b1"))).await.unwrap();
    assert_eq!(s.prekey_counts("b1").await.unwrap(), (2, 1));
    assert_eq!(s.prekey_counts("b2").await.unwrap(), (0, 0));
    let certs = s.device_certificates(bob).await.unwrap();
    assert_eq!(certs, [("b1".to_owned(), b"cert-b1".to_vec())], "b2 published nothing");

    let devices = ["b1".to_owned(), "b2".to_owned()];
    let first = s.claim_bundles(&devices).await.unwrap();
    assert_eq!(first.len(), 1, "a device without keys is left out");
    assert_eq!(first[0].one_time.as_deref(), Some(&b"otpk-1"[..]));
    assert_eq!(first[0].kem, b"kem-10");
    let second = s.claim_bundles(&devices[..1]).await.unwrap();
    assert_eq!(second[0].one_time.as_deref(), Some(&b"otpk-2"[..]));
    assert_eq!(second[0].kem, b"lr-b1", "last resort once the one-time ML-KEM prekeys are gone");
    let third = s.claim_bundles(&devices[..1]).await.unwrap();
    assert_eq!(third[0].one_time, None);
    assert_eq!(third[0].kem, b"lr-b1");
    assert_eq!(s.prekey_counts("b1").await.unwrap(), (0, 0));

    // A replenishing upload keeps the signed prekey and last resort it does not replace.
    let mut more = upload(bob, "cert-b1", &[3], &[], None);
    more.signed_prekey = None;
    s.put_device_keys("b1", &more).await.unwrap();
    let next = s.claim_bundles(&devices[..1]).await.unwrap();
    assert_eq!(next[0].signed_prekey, b"spk-cert-b1");
    assert_eq!(next[0].one_time.as_deref(), Some(&b"otpk-3"[..]));
    assert_eq!(next[0].kem, b"lr-b1");
}

async fn per_device_payloads_reach_their_device(f: &mut Fixture) {
    let s = f.store();
    let bob = user(s, "bob").await;
    device(s, "b1", bob, 1).await;
    device(s, "b2", bob, 2).await;
    let mut e = envelope("01HZY6Q0V2W8K3D9M5T7R4X1AB", &["b1", "b2"], 5);
    e.payload = Vec::new();
    e.device_payloads = vec![b"for-b1".to_vec(), b"for-b2".to_vec()];
    assert_eq!(s.enqueue(&[e]).await.unwrap(), [EnqueueOutcome::Stored]);
    let b1 = s.fetch_queue("b1", 0, 10).await.unwrap();
    let b2 = s.fetch_queue("b2", 0, 10).await.unwrap();
    assert_eq!(b1[0].payload, b"for-b1");
    assert_eq!(b2[0].payload, b"for-b2");
    s.ack(&[ack("b1", "01HZY6Q0V2W8K3D9M5T7R4X1AB")]).await.unwrap();
    assert_eq!(s.fetch_queue("b2", 0, 10).await.unwrap()[0].payload, b"for-b2", "b2's copy outlives b1's ack");
}

async fn revocation_lists_only_move_forward_and_revoke_devices(f: &mut Fixture) {
    let s = f.store();
    let bob = user(s, "bob").await;
    let carol = user(s, "carol").await;
    device(s, "b1", bob, 1).await;
    device(s, "b2", bob, 2).await;
    device(s, "c1", carol, 3).await;
    for d in ["b1", "b2"] {
        s.put_device_keys(d, &upload(bob, &format!("cert-{d}"), &[1, 2], &[10], Some("lr"))).await.unwrap();
    }
    let session = SessionRecord { user_id: bob, device_id: "b2".into(), expires_at: i64::MAX, revoked_at: None };
    s.create_session(&[9; 32], &session, 1).await.unwrap();
    let mut e = envelope("01HZY6Q0V2W8K3D9M5T7R4X1AB", &["b1", "b2"], 5);
    e.payload = Vec::new();
    e.device_payloads = vec![b"for-b1".to_vec(), b"for-b2".to_vec()];
    s.enqueue(&[e]).await.unwrap();
    assert_eq!(s.revocation_list(bob).await.unwrap(), None);

    // c1 is carol's: naming it in bob's list touches nothing of hers.
    assert!(s.revoke_devices(bob, 1, b"list-1", &["b2".into(), "c1".into()], 50).await.unwrap());
    assert_eq!(s.revocation_list(bob).await.unwrap(), Some((1, b"list-1".to_vec())));
    let b2 = s.device_by_id("b2").await.unwrap().unwrap();
    assert_eq!(b2.revoked_at, Some(50));
    assert_eq!(s.device_by_id("b1").await.unwrap().unwrap().revoked_at, None);
    assert_eq!(s.device_by_id("c1").await.unwrap().unwrap().revoked_at, None, "another user's device is untouched");
    assert_eq!(s.session(&[9; 32]).await.unwrap().unwrap().revoked_at, Some(50), "its sessions are revoked");
    let certs = s.device_certificates(bob).await.unwrap();
    assert_eq!(certs, [("b1".to_owned(), b"cert-b1".to_vec())], "a revoked device is no longer listed");
    assert_eq!(s.prekey_counts("b2").await.unwrap(), (0, 0), "its prekeys are gone");
    assert!(s.fetch_queue("b2", 0, 10).await.unwrap().is_empty(), "its queue is gone");
    assert_eq!(s.fetch_queue("b1", 0, 10).await.unwrap().len(), 1, "the other device's queue stays");

    // The same or an older version is refused and changes nothing; a newer one replaces it.
    assert!(!s.revoke_devices(bob, 1, b"list-1b", &["b1".into()], 60).await.unwrap());
    assert!(!s.revoke_devices(bob, 0, b"list-0", &["b1".into()], 60).await.unwrap());
    assert_eq!(s.device_by_id("b1").await.unwrap().unwrap().revoked_at, None);
    assert_eq!(s.revocation_list(bob).await.unwrap(), Some((1, b"list-1".to_vec())));
    assert!(s.revoke_devices(bob, 2, b"list-2", &["b2".into()], 70).await.unwrap());
    assert_eq!(s.revocation_list(bob).await.unwrap(), Some((2, b"list-2".to_vec())));
    assert_eq!(s.device_by_id("b2").await.unwrap().unwrap().revoked_at, Some(50), "the first revocation time stays");
    assert_eq!(s.revocation_list(carol).await.unwrap(), None);
    f.reopen().await;
    assert_eq!(f.store().revocation_list(bob).await.unwrap(), Some((2, b"list-2".to_vec())), "durable");
}
