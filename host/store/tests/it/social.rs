//! Contacts and presence.

use imfree_store::PresenceRecord;

use crate::fixtures::user;
use crate::harness::{Fixture, both_backends};

both_backends!(contacts_are_symmetric_and_idempotent, presence_defaults_and_updates);

async fn contacts_are_symmetric_and_idempotent(f: &mut Fixture) {
    let s = f.store();
    let alice = user(s, "alice").await;
    let bob = user(s, "bob").await;
    let carol = user(s, "carol").await;
    assert!(!s.are_contacts(alice, bob).await.unwrap());
    assert!(s.contacts_of(alice).await.unwrap().is_empty());

    s.add_contact(bob, alice).await.unwrap();
    s.add_contact(alice, bob).await.unwrap();
    s.add_contact(bob, alice).await.unwrap();
    s.add_contact(carol, alice).await.unwrap();
    assert!(s.are_contacts(alice, bob).await.unwrap());
    assert!(s.are_contacts(bob, alice).await.unwrap());
    assert!(!s.are_contacts(bob, carol).await.unwrap());
    let mut expected = vec![bob, carol];
    expected.sort();
    assert_eq!(s.contacts_of(alice).await.unwrap(), expected);
    assert_eq!(s.contacts_of(bob).await.unwrap(), [alice]);
    assert_eq!(s.contacts_of(carol).await.unwrap(), [alice]);
}

async fn presence_defaults_and_updates(f: &mut Fixture) {
    let s = f.store();
    let alice = user(s, "alice").await;
    let rec = |status: &str, last_seen| PresenceRecord { user: "alice".into(), status: status.into(), last_seen };
    assert_eq!(s.presence_of(alice).await.unwrap(), Some(rec("online", None)));
    assert_eq!(s.presence_of(alice + 100).await.unwrap(), None, "unknown user");

    s.set_presence(alice, None, Some(1_000)).await.unwrap();
    assert_eq!(s.presence_of(alice).await.unwrap(), Some(rec("online", Some(1_000))));
    s.set_presence(alice, Some("away"), None).await.unwrap();
    assert_eq!(s.presence_of(alice).await.unwrap(), Some(rec("away", Some(1_000))));
    s.set_presence(alice, None, Some(2_000)).await.unwrap();
    assert_eq!(s.presence_of(alice).await.unwrap(), Some(rec("away", Some(2_000))));
    s.set_presence(alice, Some("offline"), Some(3_000)).await.unwrap();
    assert_eq!(s.presence_of(alice).await.unwrap(), Some(rec("offline", Some(3_000))));
    s.set_presence(alice, None, None).await.unwrap();
    assert_eq!(s.presence_of(alice).await.unwrap(), Some(rec("offline", Some(3_000))));

    // An unknown user is ignored rather than an error.
    s.set_presence(alice + 100, Some("away"), None).await.unwrap();
    assert_eq!(s.presence_of(alice + 100).await.unwrap(), None);
}
