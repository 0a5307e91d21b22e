//! Group membership logs: append-once entries, the member set each append leaves, former members.

use crate::fixtures::user;
use crate::harness::{Fixture, both_backends};

both_backends!(an_entry_is_appended_once_and_sets_the_members, entries_are_read_from_a_point_in_order);

async fn an_entry_is_appended_once_and_sets_the_members(f: &mut Fixture) {
    let s = f.store();
    let (alice, bob, carol) = (user(s, "alice").await, user(s, "bob").await, user(s, "carol").await);
    let g = "01JD0000000000000000000000";
    assert_eq!(s.group_head(g).await.unwrap(), None, "no such group yet");
    assert!(s.append_group_entry(g, 0, b"create", &[alice], 1, &[]).await.unwrap());
    assert!(s.append_group_entry(g, 1, b"add bob", &[alice, bob], 2, &[]).await.unwrap());
    assert!(!s.append_group_entry(g, 1, b"add carol", &[alice, carol], 3, &[]).await.unwrap(), "seq 1 is taken");
    assert_eq!(s.group_members(g).await.unwrap(), [alice, bob], "the refused append changed nothing");
    assert_eq!(s.group_membership(g, carol).await.unwrap(), None);

    assert!(s.append_group_entry(g, 2, b"remove bob", &[alice], 4, &[]).await.unwrap());
    assert_eq!(s.group_members(g).await.unwrap(), [alice]);
    assert_eq!(s.group_membership(g, bob).await.unwrap(), Some(false), "a former member");
    assert_eq!(s.group_membership(g, alice).await.unwrap(), Some(true));
    assert_eq!(s.group_head(g).await.unwrap(), Some(2));
    assert!(s.append_group_entry(g, 3, b"add bob again", &[alice, bob], 5, &[]).await.unwrap());
    assert_eq!(s.group_membership(g, bob).await.unwrap(), Some(true), "re-added");
}

async fn entries_are_read_from_a_point_in_order(f: &mut Fixture) {
    let s = f.store();
    let alice = user(s, "alice").await;
    let (g, other) = ("01JD0000000000000000000001", "01JD0000000000000000000002");
    for seq in 0..5i64 {
        assert!(s.append_group_entry(g, seq, format!("e{seq}").as_bytes(), &[alice], seq, &[]).await.unwrap());
    }
    assert!(s.append_group_entry(other, 0, b"x", &[alice], 0, &[]).await.unwrap());
    let got = s.group_entries(g, 2, 2).await.unwrap();
    assert_eq!(got, [(2, b"e2".to_vec()), (3, b"e3".to_vec())]);
    assert_eq!(s.group_entries(g, 0, 100).await.unwrap().len(), 5, "only this group's entries");
    assert!(s.group_entries(g, 5, 100).await.unwrap().is_empty());
}
