//! Runs each behaviour test against both backends: a fresh SQLite file in a temporary directory, and a fresh schema
//! in the PostgreSQL database named by `IMFREE_TEST_PG_URL` (default: the local test server).
//!
//! PostgreSQL being unreachable fails the PostgreSQL variant, so that a broken setup cannot pass silently; set
//! `IMFREE_SKIP_PG=1` to skip it on purpose.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::FutureExt;
use imfree_store::{PgStore, RelayStore, SqliteStore};
use sqlx::Connection;

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// One backend under test, with the means to look beneath the trait (raw payload sizes) and to reopen it.
pub(crate) enum Fixture {
    /// A SQLite file in its own temporary directory.
    Sqlite { _dir: tempfile::TempDir, path: PathBuf, store: Option<SqliteStore> },
    /// A PostgreSQL schema of its own.
    Pg { url: String, schema: String, store: Option<PgStore> },
}

impl Fixture {
    pub(crate) async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().expect("temporary directory");
        // A nested path also checks that open creates missing directories.
        let path = dir.path().join("data").join("relay.db");
        let store = SqliteStore::open(&path).await.expect("open sqlite store");
        Fixture::Sqlite { _dir: dir, path, store: Some(store) }
    }

    /// `None` when PostgreSQL is skipped on purpose.
    pub(crate) async fn pg() -> Option<Fixture> {
        if std::env::var("IMFREE_SKIP_PG").is_ok_and(|v| v == "1") {
            // Straight to the stream, not eprintln!: the test harness captures the macros, and a skip must be seen.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                b"!!!!! IMFREE_SKIP_PG=1: SKIPPING the PostgreSQL variant of this test !!!!!\n",
            );
            return None;
        }
        let url = std::env::var("IMFREE_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned());
        let schema = unique_schema();
        let store = PgStore::connect_with_schema(&url, &schema).await.unwrap_or_else(|e| {
            panic!("PostgreSQL at {url} is unusable ({e}); start it, set IMFREE_TEST_PG_URL, or IMFREE_SKIP_PG=1")
        });
        Some(Fixture::Pg { url, schema, store: Some(store) })
    }

    pub(crate) fn store(&self) -> &dyn RelayStore {
        match self {
            Fixture::Sqlite { store, .. } => store.as_ref().expect("store open"),
            Fixture::Pg { store, .. } => store.as_ref().expect("store open"),
        }
    }

    /// Close the store and open it again on the same data: what survives is what was durable.
    pub(crate) async fn reopen(&mut self) {
        match self {
            Fixture::Sqlite { path, store, .. } => {
                if let Some(old) = store.take() {
                    old.close().await;
                }
                *store = Some(SqliteStore::open(path).await.expect("reopen sqlite store"));
            }
            Fixture::Pg { url, schema, store } => {
                if let Some(old) = store.take() {
                    old.close().await;
                }
                *store = Some(PgStore::connect_with_schema(url, schema).await.expect("reconnect pg store"));
            }
        }
    }

    /// A second, independent store on the same data (as `imfree admin` opens it beside a running relay).
    pub(crate) async fn open_second(&self) -> Box<dyn RelayStore> {
        match self {
            Fixture::Sqlite { path, .. } => Box::new(SqliteStore::open(path).await.expect("second sqlite store")),
            Fixture::Pg { url, schema, .. } => {
                Box::new(PgStore::connect_with_schema(url, schema).await.expect("second pg store"))
            }
        }
    }

    /// The stored payload length of an envelope, read straight from the database (the trait never returns the
    /// payload of an envelope no queue holds). `None` if the envelope row is gone.
    pub(crate) async fn raw_payload_len(&self, id: &str) -> Option<i64> {
        match self {
            Fixture::Sqlite { path, .. } => {
                let mut conn = sqlx::SqliteConnection::connect_with(
                    &sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true),
                )
                .await
                .expect("inspect sqlite");
                let len = sqlx::query_scalar("SELECT length(payload) FROM envelopes WHERE id = ?1")
                    .bind(id)
                    .fetch_optional(&mut conn)
                    .await
                    .expect("inspect payload");
                conn.close().await.expect("close inspector");
                len
            }
            Fixture::Pg { url, schema, .. } => {
                let options: sqlx::postgres::PgConnectOptions = url.parse().expect("pg url");
                let mut conn = sqlx::PgConnection::connect_with(&options.options([("search_path", schema.as_str())]))
                    .await
                    .expect("inspect pg");
                let len: Option<i32> = sqlx::query_scalar("SELECT octet_length(payload) FROM envelopes WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut conn)
                    .await
                    .expect("inspect payload");
                conn.close().await.expect("close inspector");
                len.map(i64::from)
            }
        }
    }

    async fn dispose(self) {
        if let Fixture::Pg { store: Some(store), .. } = self
            && let Err(e) = store.drop_schema().await
        {
            eprintln!("could not drop test schema: {e}");
        }
    }
}

/// `it_<pid>_<random>_<counter>`: unique across parallel runs and across the tests of one run.
fn unique_schema() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let random = std::hash::RandomState::new().build_hasher().finish() & 0xffff_ffff;
    format!("it_{}_{random:08x}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Run `body` against `fixture`, then clean up (drop the PostgreSQL schema) even if `body` panicked.
pub(crate) async fn run<F>(mut fixture: Fixture, body: F)
where
    F: for<'a> FnOnce(&'a mut Fixture) -> std::pin::Pin<Box<dyn Future<Output = ()> + 'a>>,
{
    let outcome = AssertUnwindSafe(body(&mut fixture)).catch_unwind().await;
    fixture.dispose().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Declare a behaviour test, `async fn name(f: &mut Fixture)`, as one test per backend: `name::sqlite` and
/// `name::postgres`.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let fixture = $crate::harness::Fixture::sqlite().await;
                $crate::harness::run(fixture, |f| Box::pin(super::$name(f))).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(fixture) = $crate::harness::Fixture::pg().await {
                    $crate::harness::run(fixture, |f| Box::pin(super::$name(f))).await;
                }
            }
        }
    )*};
}
pub(crate) use both_backends;
