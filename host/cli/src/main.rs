//! The `imfree` command: `serve` runs the relay, `client` drives the client engine, `admin` is the operator's
//! tool, `plugin` the plugin author's. A thin layer over the library crates; its flags are a contract scripts rely on
//! (see README.md).
#![forbid(unsafe_code)]

mod admin;
mod bench;
mod bots;
mod bundled;
mod cards;
mod client;
mod client_plugins;
mod conversation;
mod files;
mod group;
mod mail;
mod plugin;
mod render;
mod search;
mod serve;
mod web;
mod webhook_admin;
mod when;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// imfree — a self-hosted, end-to-end encrypted messenger. One binary runs the relay and the client.
#[derive(Debug, Parser)]
#[command(name = "imfree", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay (TLS WebSocket on 127.0.0.1:7878 by default, data in ./imfree-data).
    Serve(serve::ServeArgs),
    /// Use imfree as a client: register, log in, send, receive, presence, 2FA.
    Client(client::ClientArgs),
    /// Operator tools that work on the relay's data directory directly.
    Admin(admin::AdminArgs),
    /// Measure the relay: throughput, latency, CPU per message, memory per idle connection.
    Bench(bench::BenchArgs),
    /// Write, build and check plugins (new, build, check) and list the plugins a server config sets up (list).
    Plugin(plugin::PluginArgs),
    /// Print shell completions for SHELL (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (imfree.1 and one per subcommand) into DIR.
    Man {
        /// Output directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IMFREE_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).with_target(false).init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("imfree: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await.map(|_| ExitCode::SUCCESS),
            Command::Client(args) => client::run(args).await,
            Command::Admin(args) => admin::run(args).await.map(|_| ExitCode::SUCCESS),
            Command::Bench(args) => bench::run(args).await.map(|_| ExitCode::SUCCESS),
            Command::Plugin(args) => plugin::run(args).await,
            Command::Completions { shell } => {
                clap_complete::generate(shell, &mut Cli::command(), "imfree", &mut std::io::stdout());
                Ok(ExitCode::SUCCESS)
            }
            Command::Man { dir } => {
                clap_mangen::generate_to(Cli::command(), &dir)?;
                println!("man pages written to {}", dir.display());
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("imfree: {e:#}");
            ExitCode::FAILURE
        }
    }
}
