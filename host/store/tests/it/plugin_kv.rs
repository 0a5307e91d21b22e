//! Plugin key-value data: namespaces kept apart, prefix listing in byte order, usage for the quota.

use crate::harness::{Fixture, both_backends};

both_backends!(namespaces_are_apart_and_prefixes_list_in_order);

async fn namespaces_are_apart_and_prefixes_list_in_order(f: &mut Fixture) {
    let s = f.store();
    s.kv_set("a", "count", b"1").await.unwrap();
    s.kv_set("a", "count", b"22").await.unwrap();
    s.kv_set("a", "user:bob", b"x").await.unwrap();
    s.kv_set("a", "user:alice", b"y").await.unwrap();
    s.kv_set("a", "user_", b"z").await.unwrap();
    s.kv_set("b", "count", b"9").await.unwrap();
    assert_eq!(s.kv_get("a", "count").await.unwrap().as_deref(), Some(&b"22"[..]), "replaced");
    assert_eq!(s.kv_get("b", "count").await.unwrap().as_deref(), Some(&b"9"[..]), "another namespace");
    assert_eq!(s.kv_get("c", "count").await.unwrap(), None);
    assert_eq!(s.kv_keys("a", "user:", 10).await.unwrap(), ["user:alice", "user:bob"], "a prefix, not a LIKE pattern");
    assert_eq!(s.kv_keys("a", "", 2).await.unwrap().len(), 2, "limited");
    assert_eq!(s.kv_usage("a").await.unwrap(), (5 + 2) + (8 + 1) + (10 + 1) + (5 + 1));
    s.kv_delete("a", "count").await.unwrap();
    assert_eq!(s.kv_get("a", "count").await.unwrap(), None);
    assert_eq!(s.kv_usage("b").await.unwrap(), 6);
}
