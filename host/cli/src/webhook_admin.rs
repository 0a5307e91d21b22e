//! `imfree admin webhook create|list|revoke`: the operator manages the webhooks plugin's incoming hooks. The logic
//! lives once, in the plugin: this loads the webhooks component in-process with the bot's own kv (its client home,
//! `<bots_dir>/webhooks/`) and calls its `command` hook as the bot account itself. Only whoever holds the data
//! directory can do that, so the plugin treats its own account as the operator.

use std::path::Path;

use clap::Subcommand;
use imfree_client::Client;
use imfree_plugin_host::Command;
use imfree_relay::RelayConfig;

/// The plugin's name, which is also its bot's account name.
const PLUGIN: &str = "webhooks";

#[derive(Debug, Subcommand)]
pub(crate) enum WebhookCommand {
    /// Create an incoming webhook that posts into a conversation as the webhooks bot; prints its secret URL once.
    Create {
        /// Conversation: `group:<id>`, or a user name for a 1:1 conversation with the bot. The bot must be in it.
        #[arg(long)]
        conv: String,
        /// A label shown by `list`.
        #[arg(long)]
        name: Option<String>,
        /// Also require signed requests (X-Imfree-Signature); prints the signing secret once.
        #[arg(long)]
        verify: bool,
    },
    /// List incoming webhooks (ids, names, conversations; never secrets).
    List,
    /// Revoke an incoming webhook: its URL answers 404 from now on.
    Revoke {
        /// The webhook's id (from `create` or `list`).
        id: String,
    },
}

impl WebhookCommand {
    /// The `/webhook` arguments the plugin takes from the operator.
    fn args(&self) -> String {
        match self {
            WebhookCommand::Create { conv, name, verify } => {
                let mut args = format!("create {conv}");
                if let Some(n) = name {
                    args.push(' ');
                    args.push_str(n);
                }
                if *verify {
                    args.push_str(" --verify");
                }
                args
            }
            WebhookCommand::List => "list".into(),
            WebhookCommand::Revoke { id } => format!("revoke {id}"),
        }
    }
}

/// Run one `/webhook` command as the operator and print the plugin's answer.
pub(crate) async fn run(config: &RelayConfig, command: WebhookCommand) -> anyhow::Result<()> {
    if let WebhookCommand::Create { conv, .. } = &command
        && (conv.trim().is_empty() || conv.contains(char::is_whitespace))
    {
        anyhow::bail!("--conv takes group:<id> or a user name");
    }
    let Some(plugin) = config.plugins.get(PLUGIN) else {
        anyhow::bail!("there is no [plugins.{PLUGIN}] in the configuration: enable the webhooks plugin first (docs/admin.md, \"Webhooks\")");
    };
    let mut plugin = plugin.clone();
    let base = config.source.as_deref().and_then(Path::parent).unwrap_or(Path::new(".")).to_path_buf();
    if plugin.is_bundled() {
        // The component this binary carries, installed where `serve` puts it (unchanged files are left alone).
        crate::bundled::install(&config.bundled_dir())?;
    }
    plugin.resolve(PLUGIN, &base, &config.bundled_dir());
    if !plugin.enabled {
        anyhow::bail!("[plugins.{PLUGIN}] is disabled: enable it first");
    }
    let bots_dir = config.bots_dir();
    let home = bots_dir.join(PLUGIN);
    let client = Client::open(Some(&home)).await.map_err(|e| {
        anyhow::anyhow!("the webhooks bot has no account in {} yet ({e}): start `imfree serve` once with the plugin enabled", home.display())
    })?;
    let (host, _posts) = crate::bots::client_host(&client, bots_dir.join("plugin-cache"), 1, crate::bots::ScopeServices::none())?;
    host.load(plugin).await.map_err(|e| anyhow::anyhow!("the webhooks plugin did not load: {e}"))?;
    let conversation = match &command {
        WebhookCommand::Create { conv, .. } => conv.clone(),
        _ => String::new(),
    };
    let cmd = Command { name: "webhook".into(), args: command.args(), conversation, sender: client.user().to_owned() };
    match host.command(PLUGIN, cmd).await {
        Ok(Some(answer)) => {
            println!("{answer}");
            Ok(())
        }
        Ok(None) => anyhow::bail!("the webhooks plugin did not answer"),
        Err(e) => anyhow::bail!("the webhooks plugin failed: {e}"),
    }
}
