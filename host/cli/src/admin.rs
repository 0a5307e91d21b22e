//! `imfree admin`: operator tools that open the relay's store directly (safe while the relay runs: SQLite WAL or
//! PostgreSQL).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use imfree_client::search::DateEdge;

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
    /// List accounts, with the single sign-on providers each is linked to (issuers) and its directory groups.
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
    /// The audit log, newest first: edits, deletions and membership changes — who, when, which message or member;
    /// never content (the relay has none). This is all an operator can search: message contents are end to end
    /// encrypted.
    Audit {
        /// Only this conversation: `group:<id>` (or the bare group id), or two users as `alice,bob`.
        #[arg(long)]
        conv: Option<String>,
        /// Only what this user did, or membership changes about this user.
        #[arg(long)]
        user: Option<String>,
        /// Only events since this time: RFC 3339, a date (2026-11-27), or an age (24h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Only events up to this time (same forms as --since; a date includes its whole day).
        #[arg(long)]
        until: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

/// How the audit log names the conversation an operator typed.
fn audit_conversation(conv: &str) -> anyhow::Result<String> {
    let conv = conv.trim();
    if let Some((a, b)) = conv.split_once(',') {
        return Ok(imfree_store::audit_conversation(a.trim(), b.trim()));
    }
    let group = conv.strip_prefix("group:").unwrap_or(conv);
    match group.parse::<imfree_proto::GroupId>() {
        Ok(g) => Ok(format!("group:{g}")),
        Err(_) => anyhow::bail!("--conv takes group:<id> or two user names as alice,bob"),
    }
}

pub(crate) async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let config = crate::serve::load_config(args.config.as_deref(), args.data.as_deref())?;
    if config.database.url.is_none() && !config.data_dir.join("relay.db").exists() {
        anyhow::bail!("no relay database in {}: pass --data DIR (the relay's data directory)", config.data_dir.display());
    }
    let store = imfree_relay::open_store(&config).await?;
    match args.command {
        AdminCommand::Users => {
            println!("{:<24} {:<9} {:<5} {:>7}  {:<13}  {:<32}  groups", "user", "status", "2fa", "devices", "created", "sso");
            for u in store.list_users().await? {
                // Single sign-on: the providers (issuers only; subjects are the provider's ids for the person) and
                // the directory groups the sso plugin mapped onto the account.
                let (issuers, groups) = match store.user_by_name(&u.name).await? {
                    Some(record) => {
                        let mut issuers: Vec<String> = store.identities_of(record.id).await?.into_iter().map(|i| i.issuer).collect();
                        issuers.sort();
                        issuers.dedup();
                        let groups = store.profile(record.id).await?.map(|p| p.groups).unwrap_or_default();
                        (issuers, groups)
                    }
                    None => (Vec::new(), Vec::new()),
                };
                let shown = |v: Vec<String>| if v.is_empty() { "-".to_owned() } else { v.join(",") };
                println!(
                    "{:<24} {:<9} {:<5} {:>7}  {:<13}  {:<32}  {}",
                    u.name,
                    if u.disabled { "disabled" } else { "active" },
                    if u.totp { "on" } else { "off" },
                    u.devices,
                    u.created_at,
                    shown(issuers),
                    shown(groups)
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
        AdminCommand::Audit { conv, user, since, until, limit, json } => {
            let now = imfree_relay::state::now_ms();
            let filter = imfree_store::AuditFilter {
                conversation: conv.as_deref().map(audit_conversation).transpose()?,
                user,
                since: since.as_deref().map(|t| crate::when::parse_time(t, now, DateEdge::Start)).transpose()?,
                // The filter's end is exclusive; a parsed end is the last millisecond included.
                until: until.as_deref().map(|t| crate::when::parse_time(t, now, DateEdge::End).map(|t| t.saturating_add(1))).transpose()?,
                limit: limit.clamp(1, 100_000),
            };
            let records = store.audit_log(&filter).await?;
            if !json {
                println!("{:<20} {:<16} {:<16} {:<34} {:<26} subject", "time", "action", "actor", "conversation", "message");
            }
            for r in records {
                let e = r.event;
                if json {
                    let line = serde_json::json!({
                        "seq": r.seq, "at": e.at, "time": crate::when::format_time(e.at), "action": e.action,
                        "actor": e.actor, "actor_device": e.actor_device, "conversation": e.conversation,
                        "message": e.message_id, "subject": e.subject,
                    });
                    println!("{line}");
                } else {
                    println!(
                        "{:<20} {:<16} {:<16} {:<34} {:<26} {}",
                        crate::when::format_time(e.at),
                        e.action,
                        e.actor,
                        e.conversation,
                        e.message_id.as_deref().unwrap_or("-"),
                        e.subject.as_deref().unwrap_or("-")
                    );
                }
            }
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
