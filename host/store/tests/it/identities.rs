//! Single sign-on: linked external identities, provisioned accounts, directory profiles and login codes.

use imfree_store::{AccountProfile, ExternalIdentityRef, NO_PASSWORD, RedeemedCode, StoreError};

use crate::fixtures::user;
use crate::harness::{Fixture, both_backends};

both_backends!(
    provision_links_and_finds_in_one_transaction,
    an_identity_is_linked_once,
    profiles_are_replaced,
    login_code_is_redeemed_once,
    login_code_race_has_exactly_one_winner,
    expired_login_code_is_refused,
);

fn ident(issuer: &str, subject: &str) -> ExternalIdentityRef {
    ExternalIdentityRef { issuer: issuer.to_owned(), subject: subject.to_owned() }
}

fn profile(name: &str, groups: &[&str]) -> AccountProfile {
    AccountProfile {
        display_name: Some(name.to_owned()),
        email: Some(format!("{}@example.org", name.to_lowercase())),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

async fn provision_links_and_finds_in_one_transaction(f: &mut Fixture) {
    let s = f.store();
    let idp = ident("https://idp.example", "sub-1");
    assert_eq!(s.linked_account(&idp).await.unwrap(), None);
    let id = s.provision_user("alice", &idp, &profile("Alice", &["staff", "eng", "staff"]), 5_000).await.unwrap();
    assert_eq!(s.linked_account(&idp).await.unwrap().as_deref(), Some("alice"));
    assert_eq!(s.linked_account(&ident("https://other.example", "sub-1")).await.unwrap(), None, "the issuer is part of the key");

    let rec = s.user_by_name("alice").await.unwrap().expect("provisioned");
    assert_eq!((rec.id, rec.password_hash.as_str(), rec.created_at), (id, NO_PASSWORD, 5_000));
    assert!(!rec.password_hash.starts_with('$'), "not a PHC string: no password verifies against it");
    assert_eq!(s.identities_of(id).await.unwrap(), vec![idp.clone()]);
    assert_eq!(s.profile(id).await.unwrap(), Some(profile("Alice", &["eng", "staff"])), "groups sorted, deduplicated");
    assert_eq!(s.list_users().await.unwrap().len(), 1);

    // A taken name creates nothing: not the user, not the link.
    user(s, "bob").await;
    let other = ident("https://idp.example", "sub-2");
    let e = s.provision_user("bob", &other, &AccountProfile::default(), 6_000).await.expect_err("name taken");
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    assert_eq!(s.linked_account(&other).await.unwrap(), None, "the failed provision linked nothing");

    // A linked identity creates nothing either: the new user row is rolled back with it.
    let e = s.provision_user("carol", &idp, &AccountProfile::default(), 6_000).await.expect_err("identity linked");
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    assert!(s.user_by_name("carol").await.unwrap().is_none(), "the failed provision left no account");
}

async fn an_identity_is_linked_once(f: &mut Fixture) {
    let s = f.store();
    let alice = user(s, "alice").await;
    let bob = user(s, "bob").await;
    let idp = ident("https://idp.example", "sub-1");
    assert!(!s.link_identity("nobody", &idp, 1).await.unwrap(), "no such account");
    assert!(s.link_identity("alice", &idp, 1).await.unwrap());
    for name in ["alice", "bob"] {
        let e = s.link_identity(name, &idp, 2).await.expect_err("linked twice");
        assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    }
    assert_eq!(s.linked_account(&idp).await.unwrap().as_deref(), Some("alice"));
    let second = ident("https://other.example", "x");
    assert!(s.link_identity("alice", &second, 3).await.unwrap(), "an account may have identities at several providers");
    assert_eq!(s.identities_of(alice).await.unwrap(), vec![idp, second]);
    assert!(s.identities_of(bob).await.unwrap().is_empty());
    // A password account stays one: linking changes no password.
    assert!(s.user_by_id(alice).await.unwrap().unwrap().password_hash.starts_with("$argon2id$"));
}

async fn profiles_are_replaced(f: &mut Fixture) {
    let s = f.store();
    let alice = user(s, "alice").await;
    assert_eq!(s.profile(alice).await.unwrap(), None);
    assert!(s.set_profile("alice", &profile("Alice", &["a", "b"]), 1).await.unwrap());
    assert!(s.set_profile("alice", &AccountProfile { display_name: None, email: None, groups: vec!["c".into()] }, 2).await.unwrap());
    assert_eq!(s.profile(alice).await.unwrap(), Some(AccountProfile { display_name: None, email: None, groups: vec!["c".into()] }));
    assert!(!s.set_profile("nobody", &AccountProfile::default(), 3).await.unwrap());
}

async fn login_code_is_redeemed_once(f: &mut Fixture) {
    let s = f.store();
    let alice = user(s, "alice").await;
    let hash = [7u8; 32];
    s.create_login_code(&hash, alice, "challenge-a", 10_000, 1_000).await.unwrap();
    assert_eq!(s.redeem_login_code(&[8u8; 32], 2_000).await.unwrap(), None, "unknown code");
    assert_eq!(
        s.redeem_login_code(&hash, 2_000).await.unwrap(),
        Some(RedeemedCode { user_id: alice, challenge: "challenge-a".into() })
    );
    assert_eq!(s.redeem_login_code(&hash, 2_001).await.unwrap(), None, "a code is single use");
    f.reopen().await;
    assert_eq!(f.store().redeem_login_code(&hash, 2_002).await.unwrap(), None, "its use is durable");
}

async fn login_code_race_has_exactly_one_winner(f: &mut Fixture) {
    let first = f.store();
    // Two independent stores on the same data, as two relays would be.
    let second = f.open_second().await;
    let u = user(first, "alice").await;
    for i in 0..20u8 {
        let hash = [i; 32];
        first.create_login_code(&hash, u, "c", 10_000, 1_000).await.unwrap();
        let (a, b) = tokio::join!(first.redeem_login_code(&hash, 2_000), second.redeem_login_code(&hash, 2_000));
        let wins = [a.unwrap(), b.unwrap()].iter().filter(|w| w.is_some()).count();
        assert_eq!(wins, 1, "code {i}: exactly one redemption wins");
    }
}

async fn expired_login_code_is_refused(f: &mut Fixture) {
    let s = f.store();
    let u = user(s, "alice").await;
    s.create_login_code(&[1; 32], u, "c", 10_000, 1_000).await.unwrap();
    s.create_login_code(&[2; 32], u, "c", 20_000, 1_000).await.unwrap();
    assert_eq!(s.redeem_login_code(&[1; 32], 10_000).await.unwrap(), None, "expired at its expiry time");
    assert_eq!(s.prune_login_codes(15_000).await.unwrap(), 1);
    assert!(s.redeem_login_code(&[2; 32], 19_999).await.unwrap().is_some());
}
