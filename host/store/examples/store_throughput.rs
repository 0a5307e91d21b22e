//! Store throughput: enqueue 100,000 envelopes in group-commit batches of 500, fetch them, then acknowledge them in
//! batches of 500; then the same through `enqueue_and_ack` (one transaction per round). Prints envelopes per second
//! for each phase. A measurement, not a test: run it in release.
//!
//! ```text
//! cargo run --release -p imfree-store --example store_throughput
//! ```
//!
//! SQLite runs in a temporary directory (set `IMFREE_BENCH_DIR` to choose the disk). PostgreSQL runs in a temporary
//! schema of `IMFREE_TEST_PG_URL` (default: the local test server) and is skipped with a note if unreachable.
//! Environment: `IMFREE_BENCH_N` (envelopes, default 100000), `IMFREE_BENCH_BATCH` (default 500),
//! `IMFREE_BENCH_DEVICES` (recipient devices per envelope, default 1), `IMFREE_BENCH_PAYLOAD` (bytes, default 256).

use std::time::Instant;

use imfree_store::{EnqueueOutcome, EnvelopeKind, NewEnvelope, PgStore, RelayStore, SqliteStore};

struct Params {
    n: usize,
    batch: usize,
    devices: usize,
    payload: usize,
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn envelopes(p: &Params, run: &str) -> Vec<NewEnvelope> {
    (0..p.n)
        .map(|i| NewEnvelope {
            // ULID-sized ids, unique per run.
            id: format!("{run}{i:020}"),
            kind: EnvelopeKind::Message,
            sender: "alice".into(),
            sender_device: "alice-laptop".into(),
            recipient: "bob".into(),
            mime: "application/imf".into(),
            payload: vec![0xa5; p.payload],
            created_at: 1_700_000_000_000 + i as i64,
            recipient_devices: (0..p.devices).map(|d| format!("bob-device-{d}")).collect(),
            device_payloads: Vec::new(),
            refers: None,
        })
        .collect()
}

fn rate(count: usize, secs: f64) -> String {
    format!("{:>9.0} envelopes/s ({count} in {secs:.2} s)", count as f64 / secs)
}

async fn measure(name: &str, store: &dyn RelayStore, p: &Params) -> Result<(), Box<dyn std::error::Error>> {
    let all = envelopes(p, "01BENCH");

    let start = Instant::now();
    for chunk in all.chunks(p.batch) {
        let out = store.enqueue(chunk).await?;
        assert!(out.iter().all(|o| *o == EnqueueOutcome::Stored), "fresh ids must be stored");
    }
    let enqueue = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut fetched = 0;
    for d in 0..p.devices {
        let device = format!("bob-device-{d}");
        let mut after = 0;
        loop {
            let page = store.fetch_queue(&device, after, p.batch as i64).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            fetched += page.len();
        }
    }
    let fetch = start.elapsed().as_secs_f64();
    assert_eq!(fetched, p.n * p.devices);

    let start = Instant::now();
    for chunk in all.chunks(p.batch) {
        let acks: Vec<(String, String)> =
            chunk.iter().flat_map(|e| e.recipient_devices.iter().map(move |d| (d.clone(), e.id.clone()))).collect();
        store.ack(&acks).await?;
    }
    let ack = start.elapsed().as_secs_f64();

    // Duplicate detection on a full batch (every id known).
    let start = Instant::now();
    let dup = store.enqueue(&all[..p.batch.min(all.len())]).await?;
    let dup_time = start.elapsed().as_secs_f64();
    assert!(dup.iter().all(|o| matches!(o, EnqueueOutcome::Duplicate { .. })));

    // Steady state of a relay that group-commits both kinds of work: each round enqueues one batch and acknowledges
    // the previous one, in one transaction.
    let next = envelopes(p, "02BENCH");
    let start = Instant::now();
    let mut previous: Vec<(String, String)> = Vec::new();
    for chunk in next.chunks(p.batch) {
        store.enqueue_and_ack(chunk, &previous).await?;
        previous =
            chunk.iter().flat_map(|e| e.recipient_devices.iter().map(move |d| (d.clone(), e.id.clone()))).collect();
    }
    store.ack(&previous).await?;
    let combined = start.elapsed().as_secs_f64();

    println!("{name:>8} enqueue : {}", rate(p.n, enqueue));
    println!("{name:>8} fetch   : {}", rate(fetched, fetch));
    println!("{name:>8} ack     : {}", rate(p.n, ack));
    println!("{name:>8} dup     : {}", rate(dup.len(), dup_time));
    println!("{name:>8} enq+ack : {}  (separate transactions)", rate(p.n, enqueue + ack));
    println!("{name:>8} enq+ack : {}  (enqueue_and_ack, one transaction per round)", rate(p.n, combined));
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let p = Params {
        n: env_or("IMFREE_BENCH_N", 100_000),
        batch: env_or("IMFREE_BENCH_BATCH", 500).max(1),
        devices: env_or("IMFREE_BENCH_DEVICES", 1),
        payload: env_or("IMFREE_BENCH_PAYLOAD", 256),
    };
    println!("{} envelopes, batches of {}, {} device(s) each, {} B payloads", p.n, p.batch, p.devices, p.payload);

    let dir = match std::env::var_os("IMFREE_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let sqlite = SqliteStore::open(&dir.path().join("bench.db")).await?;
    measure("sqlite", &sqlite, &p).await?;
    sqlite.close().await;

    let url =
        std::env::var("IMFREE_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("bench_{}", std::process::id());
    match PgStore::connect_with_schema(&url, &schema).await {
        Ok(pg) => {
            let result = measure("postgres", &pg, &p).await;
            pg.drop_schema().await?;
            result?;
        }
        Err(e) => println!("postgres: skipped ({e})"),
    }
    Ok(())
}
