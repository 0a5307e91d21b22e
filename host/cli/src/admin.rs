//! `imfree admin`: operator tools that open the relay's store directly (safe while the relay runs: SQLite WAL or
//! PostgreSQL).

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    /// Config file of the relay (for its database settings).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory of the relay. Default ./imfree-data (or the config's).
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// List accounts.
    Users,
    /// Disable an account and revoke its sessions.
    Disable {
        /// User name.
        user: String,
    },
    /// Enable a disabled account.
    Enable {
        /// User name.
        user: String,
    },
    /// Show per-device offline queues.
    Queues,
}

pub(crate) async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let config = crate::serve::load_config(args.config.as_deref(), args.data.as_deref())?;
    if config.database.url.is_none() && !config.data_dir.join("relay.db").exists() {
        anyhow::bail!("no relay database in {}: pass --data DIR (the relay's data directory)", config.data_dir.display());
    }
    let store = imfree_relay::open_store(&config).await?;
    match args.command {
        AdminCommand::Users => {
            println!("{:<24} {:<9} {:<5} {:>7}  created", "user", "status", "2fa", "devices");
            for u in store.list_users().await? {
                println!(
                    "{:<24} {:<9} {:<5} {:>7}  {}",
                    u.name,
                    if u.disabled { "disabled" } else { "active" },
                    if u.totp { "on" } else { "off" },
                    u.devices,
                    u.created_at
                );
            }
        }
        AdminCommand::Disable { user } => {
            if !store.set_user_disabled(&user, true).await? {
                anyhow::bail!("no user named {user:?}");
            }
            if let Some(record) = store.user_by_name(&user).await? {
                let n = store.revoke_user_sessions(record.id, imfree_relay::state::now_ms()).await?;
                println!("disabled {user}; revoked {n} session(s)");
            }
        }
        AdminCommand::Enable { user } => {
            if !store.set_user_disabled(&user, false).await? {
                anyhow::bail!("no user named {user:?}");
            }
            println!("enabled {user}");
        }
        AdminCommand::Queues => {
            println!("{:<24} {:<28} {:>8}  oldest", "user", "device", "pending");
            for q in store.queue_stats().await? {
                println!("{:<24} {:<28} {:>8}  {}", q.user, q.device, q.pending, q.oldest.map(|t| t.to_string()).unwrap_or_default());
            }
        }
    }
    Ok(())
}
