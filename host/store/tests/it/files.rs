//! File metadata: quota reserved at creation, an existing id returned unchanged, completion and expiry, the
//! sweeper's listing, deletion, and durability across a reopen.

use imfree_store::{FileCreated, FileRecord};

use crate::fixtures::user;
use crate::harness::{Fixture, both_backends};

both_backends!(quota_existing_ids_completion_and_expiry);

fn record(id: &str, owner: i64, size: i64, expires_at: i64) -> FileRecord {
    FileRecord { id: id.into(), owner, size, chunk_size: 1024, chunks: (size + 1023) / 1024, complete: false, created_at: 1_000, expires_at }
}

async fn quota_existing_ids_completion_and_expiry(f: &mut Fixture) {
    let alice = user(f.store(), "alice").await;
    let bob = user(f.store(), "bob").await;
    let s = f.store();
    let a1 = record(&"a1".repeat(16), alice, 600, 10_000);
    assert_eq!(s.create_file(&a1, 1000, 2_000).await.unwrap(), FileCreated::Created);
    // Same id again (a resumed upload): the stored record, unchanged, even with other numbers.
    assert_eq!(s.create_file(&record(&"a1".repeat(16), alice, 5, 10_000), 1000, 2_000).await.unwrap(), FileCreated::Exists(a1.clone()));
    // 600 + 500 > 1000: refused, with what is used.
    assert_eq!(s.create_file(&record(&"a2".repeat(16), alice, 500, 10_000), 1000, 2_000).await.unwrap(), FileCreated::OverQuota { used: 600 });
    // Another account has its own quota.
    assert_eq!(s.create_file(&record(&"b1".repeat(16), bob, 900, 5_000), 1000, 2_000).await.unwrap(), FileCreated::Created);
    assert_eq!(s.file_usage(alice, 2_000).await.unwrap(), 600);
    assert_eq!(s.file_usage(bob, 2_000).await.unwrap(), 900);
    // Expired files no longer count.
    assert_eq!(s.file_usage(bob, 5_000).await.unwrap(), 0);
    assert_eq!(s.create_file(&record(&"b2".repeat(16), bob, 900, 20_000), 1000, 6_000).await.unwrap(), FileCreated::Created);

    assert!(s.complete_file(&a1.id, 50_000).await.unwrap());
    assert!(!s.complete_file(&"ff".repeat(16), 50_000).await.unwrap());
    f.reopen().await;
    let s = f.store();
    let got = s.file(&a1.id).await.unwrap().unwrap();
    assert!(got.complete);
    assert_eq!(got.expires_at, 50_000);
    assert_eq!(s.file(&"ff".repeat(16)).await.unwrap(), None);

    // The sweeper's view: expired first, limited.
    assert_eq!(s.expired_files(30_000, 10).await.unwrap(), ["b1".repeat(16), "b2".repeat(16)]);
    assert_eq!(s.expired_files(30_000, 1).await.unwrap(), ["b1".repeat(16)]);
    assert!(s.delete_file(&"b1".repeat(16)).await.unwrap());
    assert!(!s.delete_file(&"b1".repeat(16)).await.unwrap());
    assert_eq!(s.expired_files(30_000, 10).await.unwrap(), ["b2".repeat(16)]);
}
