//! Accounts, TOTP, login failures, devices and sessions.

use imfree_store::{NewUser, SessionRecord, StoreError, UserSummary};

use crate::fixtures::{device, new_device, user};
use crate::harness::{Fixture, both_backends};

both_backends!(
    users_are_created_looked_up_listed_and_disabled,
    totp_secrets_and_steps,
    totp_step_race_has_exactly_one_winner,
    login_failures_count_and_lock,
    devices_are_unique_by_static_key,
    sessions_are_created_and_revoked,
);

async fn users_are_created_looked_up_listed_and_disabled(f: &mut Fixture) {
    let s = f.store();
    let bob = user(s, "bob").await;
    let alice = user(s, "alice").await;
    assert_ne!(alice, bob);

    let again = s
        .create_user(&NewUser { name: "bob".into(), password_hash: "x".into(), created_at: 5 })
        .await
        .expect_err("name taken");
    assert!(matches!(again, StoreError::Conflict(_)), "{again:?}");

    let rec = s.user_by_name("alice").await.unwrap().expect("alice exists");
    assert_eq!((rec.id, rec.name.as_str(), rec.password_hash.as_str()), (alice, "alice", "$argon2id$fake$alice"));
    assert!(!rec.disabled && rec.totp_secret.is_none() && rec.totp_pending.is_none());
    assert_eq!((rec.totp_last_step, rec.failed_logins, rec.locked_until, rec.created_at), (None, 0, None, 1_000));
    assert_eq!(s.user_by_id(bob).await.unwrap().expect("bob by id").name, "bob");
    assert!(s.user_by_name("carol").await.unwrap().is_none());
    assert!(s.user_by_id(bob + alice + 100).await.unwrap().is_none());

    device(s, "b1", bob, 1).await;
    device(s, "b2", bob, 2).await;
    s.set_totp_secret(bob, Some(b"secret"), Some(7)).await.unwrap();
    assert!(s.set_user_disabled("alice", true).await.unwrap());
    assert!(!s.set_user_disabled("carol", true).await.unwrap(), "unknown user");

    let list = s.list_users().await.unwrap();
    assert_eq!(
        list,
        vec![
            UserSummary { name: "alice".into(), disabled: true, totp: false, devices: 0, created_at: 1_000 },
            UserSummary { name: "bob".into(), disabled: false, totp: true, devices: 2, created_at: 1_000 },
        ]
    );
    assert!(s.user_by_name("alice").await.unwrap().unwrap().disabled);
    assert!(s.set_user_disabled("alice", false).await.unwrap());
    assert!(!s.user_by_name("alice").await.unwrap().unwrap().disabled);
}

async fn totp_secrets_and_steps(f: &mut Fixture) {
    let s = f.store();
    let u = user(s, "alice").await;

    s.set_totp_pending(u, Some(b"pending")).await.unwrap();
    let rec = s.user_by_id(u).await.unwrap().unwrap();
    assert_eq!((rec.totp_pending.as_deref(), rec.totp_secret.as_deref()), (Some(&b"pending"[..]), None));

    // Confirming moves the secret over, clears the pending one and burns the confirming step.
    s.set_totp_secret(u, Some(b"pending"), Some(100)).await.unwrap();
    let rec = s.user_by_id(u).await.unwrap().unwrap();
    assert_eq!((rec.totp_pending.as_deref(), rec.totp_secret.as_deref()), (None, Some(&b"pending"[..])));
    assert_eq!(rec.totp_last_step, Some(100));

    assert!(!s.use_totp_step(u, 100).await.unwrap(), "the confirming step cannot be reused");
    assert!(!s.use_totp_step(u, 99).await.unwrap(), "an older step is refused");
    assert!(s.use_totp_step(u, 101).await.unwrap());
    assert!(!s.use_totp_step(u, 101).await.unwrap(), "a code is accepted once");
    assert!(s.use_totp_step(u, 105).await.unwrap());
    assert!(!s.use_totp_step(u, 103).await.unwrap());
    assert_eq!(s.user_by_id(u).await.unwrap().unwrap().totp_last_step, Some(105));

    // Replacing the secret with an older step never moves the used step backwards.
    s.set_totp_secret(u, Some(b"other"), Some(50)).await.unwrap();
    assert_eq!(s.user_by_id(u).await.unwrap().unwrap().totp_last_step, Some(105));

    // Turning 2FA off clears both secrets.
    s.set_totp_pending(u, Some(b"again")).await.unwrap();
    s.set_totp_secret(u, None, None).await.unwrap();
    let rec = s.user_by_id(u).await.unwrap().unwrap();
    assert!(rec.totp_secret.is_none() && rec.totp_pending.is_none());
    assert_eq!(rec.totp_last_step, Some(105));

    // A first use on an account that never used a step.
    let v = user(s, "victor").await;
    assert!(s.use_totp_step(v, 1).await.unwrap());
}

async fn totp_step_race_has_exactly_one_winner(f: &mut Fixture) {
    let first = f.store();
    // Two independent stores on the same data, as two relays would be.
    let second = f.open_second().await;
    let u = user(first, "alice").await;
    for step in 1..=20 {
        let (a, b) = tokio::join!(first.use_totp_step(u, step), second.use_totp_step(u, step));
        let wins = [a.unwrap(), b.unwrap()].iter().filter(|w| **w).count();
        assert_eq!(wins, 1, "step {step}");
    }
    // And within one store, many tasks at once.
    let results = futures_util::future::join_all((0..8).map(|_| first.use_totp_step(u, 21))).await;
    assert_eq!(results.into_iter().map(Result::unwrap).filter(|w| *w).count(), 1);
}

async fn login_failures_count_and_lock(f: &mut Fixture) {
    let s = f.store();
    let u = user(s, "alice").await;
    assert_eq!(s.record_login_failure(u, None).await.unwrap(), 1);
    assert_eq!(s.record_login_failure(u, None).await.unwrap(), 2);
    assert_eq!(s.record_login_failure(u, Some(9_000)).await.unwrap(), 3);
    let rec = s.user_by_id(u).await.unwrap().unwrap();
    assert_eq!((rec.failed_logins, rec.locked_until), (3, Some(9_000)));
    // A later failure without a new lock keeps the existing one.
    assert_eq!(s.record_login_failure(u, None).await.unwrap(), 4);
    assert_eq!(s.user_by_id(u).await.unwrap().unwrap().locked_until, Some(9_000));

    s.reset_login_failures(u).await.unwrap();
    let rec = s.user_by_id(u).await.unwrap().unwrap();
    assert_eq!((rec.failed_logins, rec.locked_until), (0, None));
    assert_eq!(s.record_login_failure(u, None).await.unwrap(), 1);
}

async fn devices_are_unique_by_static_key(f: &mut Fixture) {
    let s = f.store();
    let alice = user(s, "alice").await;
    let bob = user(s, "bob").await;
    s.add_device(&new_device("a2", alice, 2, 3_000)).await.unwrap();
    s.add_device(&new_device("a1", alice, 1, 2_000)).await.unwrap();
    s.add_device(&new_device("b1", bob, 3, 2_500)).await.unwrap();

    let stolen = s.add_device(&new_device("b2", bob, 1, 4_000)).await.expect_err("static key taken");
    assert!(matches!(stolen, StoreError::Conflict(_)), "{stolen:?}");
    let same_id = s.add_device(&new_device("a1", bob, 9, 4_000)).await.expect_err("device id taken");
    assert!(matches!(same_id, StoreError::Conflict(_)), "{same_id:?}");

    let by_key = s.device_by_static_key(&[1; 32]).await.unwrap().expect("a1 by key");
    assert_eq!((by_key.id.as_str(), by_key.user_id, by_key.user_name.as_str()), ("a1", alice, "alice"));
    assert_eq!((by_key.signing_key, by_key.static_key), ([101; 32], [1; 32]));
    assert_eq!((by_key.name.as_str(), by_key.created_at), ("a1 name", 2_000));
    assert!(s.device_by_static_key(&[42; 32]).await.unwrap().is_none());

    assert_eq!(s.device_by_id("b1").await.unwrap().expect("b1").user_name, "bob");
    assert!(s.device_by_id("zz").await.unwrap().is_none());

    let ids: Vec<String> = s.devices_of(alice).await.unwrap().into_iter().map(|d| d.id).collect();
    assert_eq!(ids, ["a1", "a2"], "oldest first");
    assert_eq!(s.devices_of(bob).await.unwrap().len(), 1);
    assert!(s.devices_of(bob + alice + 100).await.unwrap().is_empty());
}

async fn sessions_are_created_and_revoked(f: &mut Fixture) {
    let s = f.store();
    let u = user(s, "alice").await;
    let other = user(s, "bob").await;
    let session = |user_id, device: &str| SessionRecord {
        user_id,
        device_id: device.to_owned(),
        expires_at: 50_000,
        revoked_at: None,
    };
    s.create_session(&[1; 32], &session(u, "a1"), 10).await.unwrap();
    s.create_session(&[2; 32], &session(u, "a2"), 11).await.unwrap();
    s.create_session(&[3; 32], &session(u, "a1"), 12).await.unwrap();
    s.create_session(&[4; 32], &session(other, "b1"), 13).await.unwrap();
    let dup = s.create_session(&[1; 32], &session(other, "b1"), 14).await.expect_err("same token hash");
    assert!(matches!(dup, StoreError::Conflict(_)), "{dup:?}");

    assert_eq!(s.session(&[1; 32]).await.unwrap(), Some(session(u, "a1")));
    assert_eq!(s.session(&[9; 32]).await.unwrap(), None);

    assert!(s.revoke_session(&[1; 32], 100).await.unwrap());
    assert_eq!(s.session(&[1; 32]).await.unwrap().unwrap().revoked_at, Some(100));
    assert!(s.revoke_session(&[1; 32], 200).await.unwrap(), "known, already revoked");
    assert_eq!(s.session(&[1; 32]).await.unwrap().unwrap().revoked_at, Some(100), "first revocation time kept");
    assert!(!s.revoke_session(&[9; 32], 100).await.unwrap(), "unknown");

    // Only the two still-live sessions of the user are revoked; the other user's stays.
    assert_eq!(s.revoke_user_sessions(u, 300).await.unwrap(), 2);
    assert_eq!(s.session(&[2; 32]).await.unwrap().unwrap().revoked_at, Some(300));
    assert_eq!(s.session(&[3; 32]).await.unwrap().unwrap().revoked_at, Some(300));
    assert_eq!(s.session(&[1; 32]).await.unwrap().unwrap().revoked_at, Some(100));
    assert_eq!(s.session(&[4; 32]).await.unwrap().unwrap().revoked_at, None);
    assert_eq!(s.revoke_user_sessions(u, 400).await.unwrap(), 0);
}
