//! Envelope queues: order, de-duplication, paging, acknowledgement, statistics, pruning and durability.

use imfree_store::{EnqueueOutcome, EnvelopeKind, QueueStats};

use crate::fixtures::{ack, device, envelope, queued_ids, user};
use crate::harness::{Fixture, both_backends};

both_backends!(
    per_device_order_follows_batch_order,
    duplicates_across_and_within_batches,
    fetch_pages_with_after_and_limit,
    ack_removes_entries_and_clears_finished_payloads,
    queue_len_and_stats,
    prune_forgets_only_old_unqueued_envelopes,
    large_batches_cross_statement_chunks,
    concurrent_enqueues_lose_nothing_and_keep_seq_order,
    queues_survive_reopen,
    second_handle_on_same_data_works,
    enqueue_and_ack_in_one_call,
);

fn ids(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i:04}")).collect()
}

async fn per_device_order_follows_batch_order(f: &mut Fixture) {
    let s = f.store();
    // Interleaved batches for several devices: each device's queue follows the order of enqueue.
    let b1 = vec![envelope("m1", &["d1", "d2"], 1), envelope("m2", &["d2"], 2), envelope("m3", &["d1", "d3"], 3)];
    let b2 = vec![envelope("m4", &["d3", "d1"], 4), envelope("m5", &["d2", "d3"], 5)];
    let b3 = vec![envelope("m6", &["d1"], 6), envelope("m7", &["d3", "d2", "d1"], 7)];
    for b in [&b1, &b2, &b3] {
        let out = s.enqueue(b).await.unwrap();
        assert!(out.iter().all(|o| *o == EnqueueOutcome::Stored), "{out:?}");
    }
    assert_eq!(queued_ids(s, "d1").await, ["m1", "m3", "m4", "m6", "m7"]);
    assert_eq!(queued_ids(s, "d2").await, ["m1", "m2", "m5", "m7"]);
    assert_eq!(queued_ids(s, "d3").await, ["m3", "m4", "m5", "m7"]);

    let q = s.fetch_queue("d1", 0, 100).await.unwrap();
    assert!(q.windows(2).all(|w| w[0].seq < w[1].seq), "strictly increasing seq");
    let m1 = &q[0];
    assert_eq!((m1.kind, m1.sender.as_str(), m1.sender_device.as_str()), (EnvelopeKind::Message, "alice", "a1"));
    assert_eq!((m1.recipient.as_str(), m1.mime.as_str(), m1.created_at), ("bob", "application/imf", 1));
    assert_eq!(m1.payload, b"ciphertext of m1");

    // Receipts keep their kind; an empty batch is a no-op.
    let mut receipt = envelope("r1", &["d1"], 8);
    receipt.kind = EnvelopeKind::Receipt;
    receipt.payload = br#"["m1"]"#.to_vec();
    s.enqueue(&[receipt]).await.unwrap();
    assert_eq!(s.enqueue(&[]).await.unwrap(), []);
    let last = s.fetch_queue("d1", 0, 100).await.unwrap().pop().unwrap();
    assert_eq!(
        (last.id.as_str(), last.kind, last.payload.as_slice()),
        ("r1", EnvelopeKind::Receipt, &br#"["m1"]"#[..])
    );
}

async fn duplicates_across_and_within_batches(f: &mut Fixture) {
    let s = f.store();
    let out = s.enqueue(&[envelope("a", &["d1"], 10), envelope("b", &["d1"], 11)]).await.unwrap();
    assert_eq!(out, [EnqueueOutcome::Stored, EnqueueOutcome::Stored]);

    // Re-sent ids report the original time and queue nothing; within one batch the second copy is the duplicate.
    let out = s
        .enqueue(&[
            envelope("c", &["d1"], 20),
            envelope("a", &["d1", "d2"], 21),
            envelope("c", &["d1"], 22),
            envelope("d", &["d2"], 23),
            envelope("b", &["d2"], 24),
            envelope("c", &["d2"], 25),
        ])
        .await
        .unwrap();
    assert_eq!(
        out,
        [
            EnqueueOutcome::Stored,
            EnqueueOutcome::Duplicate { created_at: 10 },
            EnqueueOutcome::Duplicate { created_at: 20 },
            EnqueueOutcome::Stored,
            EnqueueOutcome::Duplicate { created_at: 11 },
            EnqueueOutcome::Duplicate { created_at: 20 },
        ]
    );
    assert_eq!(queued_ids(s, "d1").await, ["a", "b", "c"]);
    assert_eq!(queued_ids(s, "d2").await, ["d"]);

    // Still a duplicate once every device acknowledged it (the id outlives the payload).
    s.ack(&[ack("d1", "a")]).await.unwrap();
    assert_eq!(s.enqueue(&[envelope("a", &["d1"], 30)]).await.unwrap(), [EnqueueOutcome::Duplicate { created_at: 10 }]);
    assert_eq!(queued_ids(s, "d1").await, ["b", "c"]);

    // A device listed twice for one envelope gets it once, and does not fail the batch.
    assert_eq!(s.enqueue(&[envelope("e", &["d3", "d3"], 40)]).await.unwrap(), [EnqueueOutcome::Stored]);
    assert_eq!(queued_ids(s, "d3").await, ["e"]);
}

async fn fetch_pages_with_after_and_limit(f: &mut Fixture) {
    let s = f.store();
    let batch: Vec<_> = ids("m", 0..10).iter().map(|id| envelope(id, &["d1"], 1)).collect();
    s.enqueue(&batch).await.unwrap();

    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = s.fetch_queue("d1", after, 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = last.seq;
        seen.extend(page.into_iter().map(|e| e.id));
    }
    assert_eq!(seen, ids("m", 0..10));
    assert!(s.fetch_queue("d1", 0, 0).await.unwrap().is_empty());
    assert!(s.fetch_queue("d1", 0, -1).await.unwrap().is_empty(), "a negative limit means none");
    assert!(s.fetch_queue("nobody", 0, 10).await.unwrap().is_empty());

    // Fetching does not consume: the same page comes back until acknowledged.
    let first = s.fetch_queue("d1", 0, 2).await.unwrap();
    assert_eq!(first, s.fetch_queue("d1", 0, 2).await.unwrap());
    let from_middle = s.fetch_queue("d1", first[0].seq, 1).await.unwrap();
    assert_eq!(from_middle[0].id, "m0001");
}

async fn ack_removes_entries_and_clears_finished_payloads(f: &mut Fixture) {
    let s = f.store();
    s.enqueue(&[envelope("m1", &["d1", "d2"], 1), envelope("m2", &["d1", "d2"], 2), envelope("m3", &["d2"], 3)])
        .await
        .unwrap();

    // Only d1's entry goes; the payload stays for d2.
    assert_eq!(s.ack(&[ack("d1", "m1")]).await.unwrap(), 1);
    assert_eq!(queued_ids(s, "d1").await, ["m2"]);
    assert_eq!(queued_ids(s, "d2").await, ["m1", "m2", "m3"]);
    assert_eq!(s.fetch_queue("d2", 0, 1).await.unwrap()[0].payload, b"ciphertext of m1");
    assert!(f.raw_payload_len("m1").await.unwrap() > 0);

    // Idempotent; unknown pairs (wrong device, unknown id) are ignored.
    let s = f.store();
    assert_eq!(s.ack(&[ack("d1", "m1"), ack("d1", "m3"), ack("d9", "m2"), ack("d1", "zz")]).await.unwrap(), 0);
    assert_eq!(s.ack(&[]).await.unwrap(), 0);

    // The last device's ack clears the payload but keeps the row; several acks (even repeated) in one call.
    assert_eq!(s.ack(&[ack("d2", "m1"), ack("d2", "m3"), ack("d2", "m3")]).await.unwrap(), 2);
    assert_eq!(f.raw_payload_len("m1").await, Some(0));
    assert_eq!(f.raw_payload_len("m3").await, Some(0));
    assert!(f.raw_payload_len("m2").await.unwrap() > 0, "m2 still queued");
    let s = f.store();
    assert_eq!(queued_ids(s, "d2").await, ["m2"]);
    assert_eq!(queued_ids(s, "d1").await, ["m2"]);

    // An envelope for no device keeps no payload at all.
    s.enqueue(&[envelope("lonely", &[], 4)]).await.unwrap();
    assert_eq!(f.raw_payload_len("lonely").await, Some(0));

    // An envelope for exactly one device keeps its payload in that device's queue row only, so that the ack deletes
    // it with the row and the envelope row is never rewritten; it is fetched like any other.
    let s = f.store();
    s.enqueue(&[envelope("single", &["d1"], 5)]).await.unwrap();
    assert_eq!(f.raw_payload_len("single").await, Some(0));
    let s = f.store();
    let fetched = s.fetch_queue("d1", 0, 10).await.unwrap();
    let single = fetched.iter().find(|e| e.id == "single").expect("queued for d1");
    assert_eq!(single.payload, b"ciphertext of single");
    assert_eq!(s.ack(&[ack("d1", "single")]).await.unwrap(), 1);
    assert_eq!(queued_ids(s, "d1").await, ["m2"]);
    assert_eq!(f.raw_payload_len("single").await, Some(0), "the id stays for de-duplication");
}

async fn queue_len_and_stats(f: &mut Fixture) {
    let s = f.store();
    let alice = user(s, "alice").await;
    let bob = user(s, "bob").await;
    device(s, "a1", alice, 1).await;
    device(s, "b1", bob, 2).await;
    device(s, "b2", bob, 3).await;
    assert!(s.queue_stats().await.unwrap().is_empty());

    s.enqueue(&[envelope("m1", &["b1", "b2"], 100), envelope("m2", &["b1"], 200), envelope("m3", &["a1"], 300)])
        .await
        .unwrap();
    s.enqueue(&[envelope("m4", &["ghost"], 50)]).await.unwrap();
    assert_eq!(s.queue_len("b1").await.unwrap(), 2);
    assert_eq!(s.queue_len("b2").await.unwrap(), 1);
    assert_eq!(s.queue_len("zz").await.unwrap(), 0);

    s.ack(&[ack("b1", "m1")]).await.unwrap();
    let stats = s.queue_stats().await.unwrap();
    let row = |user: &str, device: &str, pending, oldest| QueueStats {
        user: user.into(),
        device: device.into(),
        pending,
        oldest: Some(oldest),
    };
    assert_eq!(
        stats,
        [row("", "ghost", 1, 50), row("alice", "a1", 1, 300), row("bob", "b1", 1, 200), row("bob", "b2", 1, 100)]
    );
}

async fn prune_forgets_only_old_unqueued_envelopes(f: &mut Fixture) {
    let s = f.store();
    s.enqueue(&[envelope("old-acked", &["d1"], 10), envelope("old-queued", &["d1"], 20)]).await.unwrap();
    s.enqueue(&[envelope("new-acked", &["d1"], 1_000)]).await.unwrap();
    s.ack(&[ack("d1", "old-acked"), ack("d1", "new-acked")]).await.unwrap();

    assert_eq!(s.prune_envelopes(500).await.unwrap(), 1);
    assert_eq!(f.raw_payload_len("old-acked").await, None);
    assert!(f.raw_payload_len("old-queued").await.is_some(), "still queued");
    assert!(f.raw_payload_len("new-acked").await.is_some(), "too recent");
    let s = f.store();
    assert_eq!(s.prune_envelopes(500).await.unwrap(), 0);

    // A forgotten id is new again.
    assert_eq!(s.enqueue(&[envelope("old-acked", &["d1"], 2_000)]).await.unwrap(), [EnqueueOutcome::Stored]);
    assert_eq!(
        s.enqueue(&[envelope("new-acked", &["d1"], 2_000)]).await.unwrap(),
        [EnqueueOutcome::Duplicate { created_at: 1_000 }]
    );
    assert_eq!(queued_ids(s, "d1").await, ["old-queued", "old-acked"]);
}

async fn large_batches_cross_statement_chunks(f: &mut Fixture) {
    let s = f.store();
    // 1000 envelopes × 3 devices: statements are split in chunks, and order must survive the split.
    let all = ids("m", 0..1000);
    let batch: Vec<_> = all.iter().map(|id| envelope(id, &["d1", "d2", "d3"], 1)).collect();
    let out = s.enqueue(&batch).await.unwrap();
    assert_eq!(out.len(), 1000);
    assert!(out.iter().all(|o| *o == EnqueueOutcome::Stored));
    for d in ["d1", "d2", "d3"] {
        assert_eq!(queued_ids(s, d).await, all);
    }

    // Half again (duplicates) mixed with 500 new ones.
    let again: Vec<_> = ids("m", 500..1500).iter().map(|id| envelope(id, &["d1"], 2)).collect();
    let out = s.enqueue(&again).await.unwrap();
    assert!(out[..500].iter().all(|o| *o == EnqueueOutcome::Duplicate { created_at: 1 }));
    assert!(out[500..].iter().all(|o| *o == EnqueueOutcome::Stored));
    assert_eq!(s.queue_len("d1").await.unwrap(), 1500);

    let acks: Vec<_> = ids("m", 0..1500).iter().map(|id| ack("d1", id)).collect();
    assert_eq!(s.ack(&acks).await.unwrap(), 1500);
    assert_eq!(s.queue_len("d1").await.unwrap(), 0);
    assert_eq!(f.raw_payload_len("m1499").await, Some(0));
    assert!(f.raw_payload_len("m0000").await.unwrap() > 0, "d2 and d3 still hold it");
}

async fn concurrent_enqueues_lose_nothing_and_keep_seq_order(f: &mut Fixture) {
    let s = f.store();
    // Eight writers at once, each with batches for the same two devices.
    let writers = (0..8).map(|w| async move {
        for b in 0..5 {
            let batch: Vec<_> =
                ids(&format!("w{w}b{b}-"), 0..20).iter().map(|id| envelope(id, &["d1", "d2"], 1)).collect();
            s.enqueue(&batch).await.unwrap();
        }
    });
    futures_util::future::join_all(writers).await;
    for d in ["d1", "d2"] {
        let q = s.fetch_queue(d, 0, 10_000).await.unwrap();
        assert_eq!(q.len(), 8 * 5 * 20);
        assert!(q.windows(2).all(|w| w[0].seq < w[1].seq));
        // Each writer's own envelopes appear in the order it sent them.
        for w in 0..8 {
            let mine: Vec<&str> =
                q.iter().map(|e| e.id.as_str()).filter(|id| id.starts_with(&format!("w{w}b"))).collect();
            let mut sorted = mine.clone();
            sorted.sort();
            assert_eq!(mine, sorted);
        }
    }
}

async fn queues_survive_reopen(f: &mut Fixture) {
    let u = user(f.store(), "alice").await;
    f.store().enqueue(&[envelope("m1", &["d1"], 1), envelope("m2", &["d1"], 2)]).await.unwrap();
    f.store().ack(&[ack("d1", "m1")]).await.unwrap();
    let before = f.store().fetch_queue("d1", 0, 10).await.unwrap();

    f.reopen().await;
    let s = f.store();
    assert_eq!(s.fetch_queue("d1", 0, 10).await.unwrap(), before);
    assert_eq!(s.user_by_id(u).await.unwrap().unwrap().name, "alice");
    assert_eq!(s.enqueue(&[envelope("m1", &["d1"], 3)]).await.unwrap(), [EnqueueOutcome::Duplicate { created_at: 1 }]);

    // Sequence numbers never go back, even once the queue was emptied: a device's cursor stays valid.
    let last = before.last().unwrap().seq;
    s.ack(&[ack("d1", "m2")]).await.unwrap();
    f.reopen().await;
    let s = f.store();
    s.enqueue(&[envelope("m3", &["d1"], 4)]).await.unwrap();
    let after = s.fetch_queue("d1", last, 10).await.unwrap();
    assert_eq!(after.len(), 1);
    assert!(after[0].seq > last);
}

async fn second_handle_on_same_data_works(f: &mut Fixture) {
    // As `imfree admin` does beside a running relay: both read and write the same data.
    let admin = f.open_second().await;
    let s = f.store();
    let u = user(s, "alice").await;
    s.enqueue(&[envelope("m1", &["d1"], 1)]).await.unwrap();
    assert_eq!(admin.queue_len("d1").await.unwrap(), 1);
    assert!(admin.set_user_disabled("alice", true).await.unwrap());
    assert!(s.user_by_id(u).await.unwrap().unwrap().disabled);
    let (m2, m3) = ([envelope("m2", &["d1"], 2)], [envelope("m3", &["d1"], 3)]);
    let (a, b) = tokio::join!(s.enqueue(&m2), admin.enqueue(&m3));
    a.unwrap();
    b.unwrap();
    assert_eq!(s.queue_len("d1").await.unwrap(), 3);
}

async fn enqueue_and_ack_in_one_call(f: &mut Fixture) {
    let s = f.store();
    s.enqueue(&[envelope("m1", &["d1", "d2"], 1)]).await.unwrap();
    let (out, removed) = s
        .enqueue_and_ack(&[envelope("m2", &["d1"], 2), envelope("m1", &["d1"], 3)], &[ack("d1", "m1"), ack("d2", "m1")])
        .await
        .unwrap();
    assert_eq!(out, [EnqueueOutcome::Stored, EnqueueOutcome::Duplicate { created_at: 1 }]);
    assert_eq!(removed, 2);
    assert_eq!(queued_ids(s, "d1").await, ["m2"]);
    assert!(queued_ids(s, "d2").await.is_empty());
    assert_eq!(f.raw_payload_len("m1").await, Some(0));

    let s = f.store();
    assert_eq!(s.enqueue_and_ack(&[], &[]).await.unwrap(), (vec![], 0));
    assert_eq!(s.enqueue_and_ack(&[], &[ack("d1", "m2")]).await.unwrap(), (vec![], 1));
    assert_eq!(s.enqueue_and_ack(&[envelope("m3", &["d1"], 4)], &[]).await.unwrap(), (vec![EnqueueOutcome::Stored], 0));
    assert_eq!(queued_ids(s, "d1").await, ["m3"]);
}
