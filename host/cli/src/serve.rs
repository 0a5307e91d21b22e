//! `imfree serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use imfree_relay::{Relay, RelayConfig};

/// Where the server looks for a config file when none is given.
const SYSTEM_CONFIG: &str = "/etc/imfree/imfree.toml";

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Config file (TOML; see examples/imfree.toml). Default: /etc/imfree/imfree.toml if it exists.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory (overrides the config). Default ./imfree-data.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Listen address (overrides the config). Default 127.0.0.1:7878. Port 0 picks a free port.
    #[arg(long)]
    listen: Option<SocketAddr>,
}

/// The configuration `serve` and `admin` use: the file (given or system-wide) with command-line overrides.
pub(crate) fn load_config(config: Option<&Path>, data: Option<&Path>) -> anyhow::Result<RelayConfig> {
    let mut cfg = match config {
        Some(path) => RelayConfig::from_file(path)?,
        None if Path::new(SYSTEM_CONFIG).exists() => RelayConfig::from_file(Path::new(SYSTEM_CONFIG))?,
        None => RelayConfig::default(),
    };
    if let Some(d) = data {
        cfg.data_dir = d.to_path_buf();
    }
    Ok(cfg)
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = load_config(args.config.as_deref(), args.data.as_deref())?;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    // The plugins bundled with this binary, where `[plugins.<name>]` without `path` finds them.
    crate::bundled::install(&config.bundled_dir())?;
    config.web.assets = crate::web::ASSETS;
    let relay = Relay::start(config.clone()).await?;
    // Machine-readable start-up lines on stdout; scripts and tests read them. Logs go to stderr.
    println!("imfree relay listening on {}", relay.url());
    if let Some(fp) = &relay.tls_fingerprint {
        let how = if relay.tls_generated { "generated, self-signed" } else { "loaded" };
        println!("tls certificate sha256 {fp} ({how})");
    }
    println!("relay noise key {}", hex_key(&relay.noise_key));
    // Bot-scope plugins run as accounts of this relay, connecting over loopback like any client.
    let host = if relay.addr.ip().is_unspecified() { std::net::IpAddr::from([127, 0, 0, 1]) } else { relay.addr.ip() };
    let scheme = if relay.tls_fingerprint.is_some() { "wss" } else { "ws" };
    let loopback = format!("{scheme}://{}", SocketAddr::new(host, relay.addr.port()));
    let base = config.source.as_deref().and_then(Path::parent).unwrap_or(Path::new(".")).to_path_buf();
    crate::bots::start(loopback, &config, &base, std::sync::Arc::clone(&relay.state.plugins));
    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        ctrl_c.await?;
        Ok::<_, std::io::Error>(())
    };
    shutdown.await?;
    tracing::info!("shutting down");
    relay.shutdown().await
}

fn hex_key(k: &[u8; 32]) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}
