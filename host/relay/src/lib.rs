//! The IMF relay: it authenticates devices over a Noise handshake inside a TLS WebSocket, routes envelopes it
//! cannot read to every device of their recipients, keeps them durably in per-device queues until acknowledged,
//! and pushes presence, typing and receipts.
//!
//! Start one with [`Relay::start`]; the `imfree serve` command is a thin layer over it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod accounts;
pub mod auth;
pub mod config;
mod conn;
pub mod e2e;
mod edits;
pub mod files;
pub mod groups;
pub mod hub;
pub mod keys;
pub mod limits;
pub mod link;
pub mod metrics;
pub mod password;
pub mod plugins;
mod server;
pub mod state;
pub mod tls;
pub mod token;
pub mod totp;

use std::net::SocketAddr;
use std::sync::Arc;

use imfree_store::{PgStore, RelayStore, SqliteStore};
use tokio::task::JoinHandle;

pub use config::RelayConfig;
pub use server::IMF_PATH;

/// A running relay.
pub struct Relay {
    /// The address it listens on (with the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// SHA-256 fingerprint of the TLS certificate (lowercase hex), `None` in plaintext mode.
    pub tls_fingerprint: Option<String>,
    /// Whether the TLS certificate was generated on this start.
    pub tls_generated: bool,
    /// The relay's Noise static public key.
    pub noise_key: [u8; 32],
    /// Shared state (for embedding and tests).
    pub state: Arc<state::RelayState>,
    handle: axum_server::Handle<SocketAddr>,
    task: JoinHandle<std::io::Result<()>>,
}

/// Open the store the configuration names.
pub async fn open_store(config: &RelayConfig) -> anyhow::Result<Arc<dyn RelayStore>> {
    Ok(match &config.database.url {
        Some(url) => match &config.database.schema {
            Some(schema) => Arc::new(PgStore::connect_with_schema(url, schema).await?),
            None => Arc::new(PgStore::connect(url).await?),
        },
        None => {
            std::fs::create_dir_all(&config.data_dir)?;
            Arc::new(SqliteStore::open(&config.data_dir.join("relay.db")).await?)
        }
    })
}

impl Relay {
    /// Open the store, load or make the keys and certificate, bind and start serving.
    pub async fn start(config: RelayConfig) -> anyhow::Result<Relay> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir)?;
        let store = open_store(&config).await?;
        let (secret, _) = keys::load_or_generate(&config.data_dir)?;
        let tls = if config.tls.insecure_plaintext {
            None
        } else {
            Some(tls::load_or_generate(config.tls.cert.as_deref(), config.tls.key.as_deref(), &config.data_dir, &config.tls.names)?)
        };
        let metrics = Arc::new(metrics::RelayMetrics::new());
        let state = state::RelayState::new(config.clone(), store, metrics, secret);
        let base = config.source.as_deref().and_then(std::path::Path::parent).unwrap_or(std::path::Path::new(".")).to_path_buf();
        state.plugins.apply(&config.plugins, &base).await;
        state.plugins.spawn_tasks(config.source.clone());
        files::spawn_sweeper(Arc::clone(&state));
        let app = server::router(Arc::clone(&state)).into_make_service_with_connect_info::<SocketAddr>();
        let listener = std::net::TcpListener::bind(config.listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let handle = axum_server::Handle::new();
        let task = match &tls {
            Some(tls) => {
                let rustls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::clone(&tls.server_config));
                let server = axum_server::from_tcp_rustls(listener, rustls)?.handle(handle.clone());
                tokio::spawn(server.serve(app))
            }
            None => {
                let server = axum_server::from_tcp(listener)?.handle(handle.clone());
                tokio::spawn(server.serve(app))
            }
        };
        tracing::info!(%addr, tls = tls.is_some(), "relay listening");
        Ok(Relay {
            addr,
            tls_fingerprint: tls.as_ref().map(|t| t.fingerprint.clone()),
            tls_generated: tls.as_ref().is_some_and(|t| t.generated),
            noise_key: state.static_public,
            state,
            handle,
            task,
        })
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        let scheme = if self.tls_fingerprint.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}", self.addr)
    }

    /// Tell clients, stop accepting, and wait for the server to finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.state.hub.kick_all(&imfree_proto::Frame::error(imfree_proto::ErrorCode::ShuttingDown, "the relay is shutting down; reconnect later"));
        self.handle.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
        self.task.await??;
        Ok(())
    }

    /// Serve until the task ends.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await??;
        Ok(())
    }
}
