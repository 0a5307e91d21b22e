//! Search latency over 100,000 messages (issue 5 target: p95 ≤ 20 ms), the cost of indexing them, and the index's
//! size on disk.
//!
//! The store is filled through the same path as received messages (`insert_incoming`, so the index triggers run),
//! with messages of 3 to 40 words drawn from a Zipf-distributed vocabulary of 20,000 words (a few hundred real
//! English words at the head, made-up words in the tail), between this user and 12 contacts and in 6 groups, over
//! one year. Each query is timed twice: by criterion (mean, median), and by a plain loop of 200 runs that prints
//! p50 / p95 / p99 / max, since criterion reports no percentiles.
//!
//! `cargo bench -p imfree-client --bench search`
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use imfree_client::search::{DateEdge, SearchQuery, parse_date};
use imfree_client::store::{LocalStore, StoredMessage};

const MESSAGES: usize = 100_000;
const BATCH: usize = 1_000;
const ME: &str = "me";
const CONTACTS: usize = 12;
const GROUPS: usize = 6;
const DAY_MS: i64 = 86_400_000;
/// 2026-01-01T00:00:00Z: the year the messages span.
const START_MS: i64 = 1_767_225_600_000;

/// Common words at the head of the distribution, so that typical queries use real words with realistic frequency.
const HEAD: &[&str] = &[
    "the", "to", "and", "a", "i", "you", "it", "of", "is", "that", "in", "we", "for", "on", "this", "be", "have", "can",
    "will", "with", "not", "are", "do", "just", "so", "if", "at", "but", "me", "my", "what", "get", "was", "ok", "there",
    "about", "all", "out", "up", "know", "think", "like", "go", "one", "now", "time", "see", "good", "tomorrow", "today",
    "meeting", "thanks", "yes", "no", "please", "send", "call", "work", "need", "let", "new", "back", "team", "week",
    "make", "sure", "look", "day", "people", "update", "sounds", "great", "later", "morning", "lunch", "report", "review",
    "project", "deploy", "release", "build", "test", "issue", "fix", "bug", "merge", "branch", "server", "client",
    "design", "draft", "quarterly", "budget", "numbers", "customer", "feedback", "launch", "plan", "schedule", "friday",
    "monday", "weekend", "office", "remote", "coffee", "doc", "slides", "deadline", "invoice", "contract", "legal",
    "hiring", "interview", "candidate", "offer", "travel", "flight", "hotel", "dinner", "birthday", "party", "holiday",
    "café", "résumé", "naïve", "straße", "über", "déjà", "vu", "piñata", "jalapeño", "smörgåsbord",
];
const VOCABULARY: usize = 20_000;
/// A word that appears in only a handful of messages (planted, see `fill`).
const RARE: &str = "xylophonist";
const RARE_EVERY: usize = 9_973;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn vocabulary() -> Vec<String> {
    const SYLLABLES: &[&str] = &["ka", "lo", "mi", "ren", "tu", "sa", "vel", "dor", "qui", "zen", "pa", "th", "or", "an", "ex", "ly"];
    let mut words: Vec<String> = HEAD.iter().map(|w| (*w).to_owned()).collect();
    let mut n = 0usize;
    while words.len() < VOCABULARY {
        let mut w = String::new();
        let mut k = n + SYLLABLES.len();
        while k > 0 {
            w.push_str(SYLLABLES[k % SYLLABLES.len()]);
            k /= SYLLABLES.len();
        }
        n += 1;
        words.push(w);
    }
    words
}

/// Cumulative Zipf (s = 1.07) weights over the vocabulary, for sampling by binary search.
fn zipf_cdf(n: usize) -> Vec<f64> {
    let mut cdf = Vec::with_capacity(n);
    let mut sum = 0.0;
    for rank in 1..=n {
        sum += 1.0 / (rank as f64).powf(1.07);
        cdf.push(sum);
    }
    cdf.iter().map(|c| c / sum).collect()
}

fn group(i: usize) -> String {
    // Valid group ids (ULIDs), one per group.
    format!("group:01JDZQ3N7V5X9R2M4K6P8T0W{}{}", (b'A' + i as u8) as char, (b'A' + i as u8) as char)
}

fn message(rng: &mut Rng, words: &[String], cdf: &[f64], i: usize) -> StoredMessage {
    let n = 3 + rng.below(38);
    let mut text = String::new();
    for k in 0..n {
        let u = rng.unit();
        let w = &words[cdf.partition_point(|c| *c < u).min(words.len() - 1)];
        if k > 0 {
            text.push(' ');
        }
        text.push_str(w);
    }
    if i % RARE_EVERY == 17 {
        text.push(' ');
        text.push_str(RARE);
    }
    let contact = format!("user{:02}", rng.below(CONTACTS));
    let outgoing = rng.below(3) == 0;
    let (from, to) = if rng.below(3) == 0 {
        // A group message: from a contact or from me.
        (if outgoing { ME.to_owned() } else { contact }, group(rng.below(GROUPS)))
    } else if outgoing {
        (ME.to_owned(), contact)
    } else {
        (contact, ME.to_owned())
    };
    StoredMessage {
        seq: 0,
        id: format!("{i:026}"),
        outgoing: from == ME,
        from,
        from_device: "device".into(),
        to,
        ts: START_MS + (i as i64) * (365 * DAY_MS / MESSAGES as i64),
        mime: if i.is_multiple_of(10) { "text/markdown".into() } else { "text/plain".into() },
        body: text.into_bytes(),
        status: "received".into(),
        reply_to: None,
        change: None,
        edited_at: None,
        deleted: false,
        mentions: Vec::new(),
    }
}

async fn fill(store: &LocalStore) -> Duration {
    let words = vocabulary();
    let cdf = zipf_cdf(words.len());
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let started = Instant::now();
    for start in (0..MESSAGES).step_by(BATCH) {
        let batch: Vec<StoredMessage> = (start..start + BATCH).map(|i| message(&mut rng, &words, &cdf, i)).collect();
        store.insert_incoming(&batch, ME).await.expect("insert");
    }
    started.elapsed()
}

fn queries() -> Vec<(&'static str, SearchQuery)> {
    let q = |text: &str| SearchQuery::new(text).expect("query");
    let mut in_group = q("meeting");
    in_group.conversation = Some(group(2));
    in_group.since = Some(parse_date("2026-10-01", DateEdge::Start).expect("date"));
    in_group.until = Some(parse_date("2026-12-31", DateEdge::End).expect("date"));
    let mut from = q("release");
    from.from = Some("user03".into());
    vec![
        ("keyword (common: meeting)", q("meeting")),
        ("two keywords (deploy friday)", q("deploy friday")),
        ("phrase (\"quarterly report\")", q("\"quarterly report\"")),
        ("rare term", q(RARE)),
        ("prefix (inter*)", q("inter*")),
        ("very common word (the)", q("the")),
        ("keyword in a group, last quarter", in_group),
        ("keyword from one sender", from),
    ]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn search(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("client.db");
    let store = runtime.block_on(LocalStore::open(&path)).expect("store");
    let took = runtime.block_on(fill(&store));
    // Closing the last connection folds the WAL into the database file: its size is then the size at rest.
    runtime.block_on(store.close());
    let file = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let store = runtime.block_on(LocalStore::open(&path)).expect("store");
    let index = runtime.block_on(store.search_index_bytes()).expect("index size");
    println!(
        "filled {MESSAGES} messages in {:.1} s ({:.0} messages/s, index triggers included); database {:.1} MiB, search index {:.1} MiB",
        took.as_secs_f64(),
        MESSAGES as f64 / took.as_secs_f64(),
        file as f64 / 1048576.0,
        index as f64 / 1048576.0
    );

    let queries = queries();
    println!("{:<36} {:>7} {:>9} {:>9} {:>9} {:>9}", "query", "hits", "p50", "p95", "p99", "max");
    for (name, query) in &queries {
        let mut all = query.clone();
        all.limit = imfree_client::search::MAX_LIMIT;
        let hits = runtime.block_on(store.search(&all)).expect("search").len();
        let mut times: Vec<Duration> = (0..200)
            .map(|_| {
                let t = Instant::now();
                black_box(runtime.block_on(store.search(query)).expect("search"));
                t.elapsed()
            })
            .collect();
        times.sort();
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        let shown = if hits == all.limit as usize { format!("{hits}+") } else { hits.to_string() };
        println!(
            "{name:<36} {shown:>7} {:>9} {:>9} {:>9} {:>9}",
            ms(percentile(&times, 0.50)),
            ms(percentile(&times, 0.95)),
            ms(percentile(&times, 0.99)),
            ms(times[times.len() - 1])
        );
    }

    let mut group = c.benchmark_group("search 100k (top 20)");
    group.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for (name, query) in &queries {
        group.bench_function(*name, |b| b.iter(|| black_box(runtime.block_on(store.search(query)).expect("search"))));
    }
    group.finish();
    runtime.block_on(store.close());
}

criterion_group!(benches, search);
criterion_main!(benches);
