//! `imfree client`: the client engine from the command line.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use clap::{Args, Subcommand, ValueEnum};
use imfree_client::store::StoredMessage;
use imfree_client::{Client, ClientError, Event, Trust};
use imfree_proto::Status;

use crate::cards;
use crate::client_plugins::{ClientPlugins, Outgoing};
use zeroize::Zeroizing;

/// Exit status of `send` when the message is safely in the outbox but the relay has not accepted it yet
/// (EX_TEMPFAIL): it goes out on the next connection.
const EXIT_QUEUED: u8 = 75;

#[derive(Debug, Args)]
pub(crate) struct ClientArgs {
    /// Client home directory (account, keys, local messages). Default: the platform data dir (XDG on Linux).
    #[arg(long, global = true)]
    home: Option<PathBuf>,
    /// Run a plugin in this client (client scope; its plugin.toml beside it): outgoing messages pass its filter,
    /// received ones reach its incoming-message hook. Repeatable.
    #[arg(long = "plugin", global = true, value_name = "FILE")]
    plugins: Vec<PathBuf>,
    /// Allow the plugins a capability their manifest asks for: kv, messaging (post as you), timers,
    /// http-outbound=ORIGIN (scheme://host[:port][/path]), http-allow-private (loopback and intranet addresses).
    /// Repeatable.
    #[arg(long = "grant", global = true, value_name = "CAPABILITY")]
    grants: Vec<String>,
    /// A file whose first line is the passphrase of this home's key store (otherwise IMFREE_PASSPHRASE). Given at
    /// register (or the first login in a new home), it makes one: every key this device holds is then encrypted at
    /// rest (Argon2id, XChaCha20-Poly1305) and every later command needs it.
    #[arg(long, global = true, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Debug, Args)]
struct Credentials {
    /// Relay URL, wss://HOST:PORT.
    #[arg(long)]
    server: String,
    /// User name (a-z, 0-9, '.', '_', '-').
    #[arg(long)]
    user: String,
    /// Read the password from the first line of standard input (otherwise from IMFREE_PASSWORD).
    #[arg(long)]
    password_stdin: bool,
    /// Accept and pin a changed TLS certificate (only after checking the new fingerprint with the operator).
    #[arg(long)]
    accept_new_certificate: bool,
    /// Accept and pin a changed relay Noise key (only after checking it with the operator).
    #[arg(long)]
    accept_new_relay_key: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TotpAction {
    /// Turn on: prints a secret, then reads a current code from standard input (or --code).
    Enable,
    /// Turn off, proven by a current code.
    Disable,
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Create an account and register this device.
    Register(Credentials),
    /// Log in (registers this device if it is new to the account): with a password, or with single sign-on
    /// (--sso PROVIDER: prints an address to open in a browser and waits for the sign-in to come back to a loopback
    /// port), or list the relay's SSO providers (--list-sso).
    Login {
        /// Relay URL, wss://HOST:PORT.
        #[arg(long)]
        server: String,
        /// User name (a-z, 0-9, '.', '_', '-'); not with --sso, where the identity provider says who you are.
        #[arg(long, required_unless_present_any = ["sso", "list_sso"])]
        user: Option<String>,
        /// Read the password from the first line of standard input (otherwise from IMFREE_PASSWORD).
        #[arg(long)]
        password_stdin: bool,
        /// Accept and pin a changed TLS certificate (only after checking the new fingerprint with the operator).
        #[arg(long)]
        accept_new_certificate: bool,
        /// Accept and pin a changed relay Noise key (only after checking it with the operator).
        #[arg(long)]
        accept_new_relay_key: bool,
        /// A current TOTP code, when the account uses 2FA (not with --sso: the identity provider asks for yours).
        #[arg(long)]
        totp: Option<String>,
        /// Sign in with this identity provider of the relay's sso plugin (see --list-sso).
        #[arg(long, value_name = "PROVIDER", conflicts_with_all = ["user", "password_stdin", "totp", "list_sso"])]
        sso: Option<String>,
        /// Print the relay's single sign-on providers (id and name) and exit.
        #[arg(long, conflicts_with_all = ["user", "password_stdin", "totp"])]
        list_sso: bool,
        /// With --sso: how long to wait for the browser to come back, seconds.
        #[arg(long, default_value_t = 300, value_name = "SECS")]
        timeout: u64,
        /// With --sso: a name for this device (default: the host name).
        #[arg(long, value_name = "NAME")]
        device_name: Option<String>,
    },
    /// Send text messages to a user, one per TEXT, in order; prints each message's id. Exits 75 when the relay
    /// was unreachable: the messages stay queued and go out with the next command that connects.
    Send {
        /// Recipient: a user name, or `group:<id>` for a group.
        to: String,
        /// The text of each message ("-" reads one message from standard input).
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
        /// Send as Markdown (text/markdown) instead of plain text.
        #[arg(long)]
        markdown: bool,
    },
    /// Print received messages (and acknowledge them). Returns once the queue is drained, or after --wait seconds.
    Recv {
        /// Keep receiving for this many seconds (reconnecting if needed).
        #[arg(long)]
        wait: Option<u64>,
        /// One JSON object per line: id, from, from_device, to, ts, mime, body (and encoding for non-text). Bodies are
        /// raw, as sent: sanitise before display (docs/formatting.md).
        #[arg(long)]
        json: bool,
    },
    /// Set your presence, or show your contacts' presence without an argument.
    Presence {
        /// online, away or offline.
        status: Option<String>,
    },
    /// Tell a contact you are typing (or stopped, with --stop).
    Typing {
        /// The contact.
        to: String,
        /// Stopped typing.
        #[arg(long)]
        stop: bool,
    },
    /// Show or change what you share: `settings typing off`, `settings read-receipts on`. Whoever does not send
    /// typing indicators or read receipts does not see others' either.
    Settings {
        /// typing or read-receipts (omit to show both).
        setting: Option<String>,
        /// on or off.
        value: Option<String>,
    },
    /// Send a read receipt for everything received from a contact.
    Read {
        /// The contact.
        from: String,
    },
    /// Show a conversation from the local store as it stands: edits applied (marked "edited"), deletions as
    /// tombstones, reaction counts, replies.
    History {
        /// The other user, or `group:<id>`.
        peer: String,
        /// How many messages.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Also show the earlier versions of edited messages.
        #[arg(long)]
        versions: bool,
        /// One JSON object per message.
        #[arg(long)]
        json: bool,
    },
    /// Reply to a message, in its conversation; prints the reply's id.
    Reply {
        /// The message's id.
        id: String,
        #[command(flatten)]
        text: crate::conversation::TextArgs,
    },
    /// Edit one of your messages: recipients see the new text marked "edited"; every device keeps the versions.
    Edit {
        /// The message's id.
        id: String,
        #[command(flatten)]
        text: crate::conversation::TextArgs,
    },
    /// Delete a message: your own, or as a group admin anyone's in the group. Recipients see a tombstone; the text
    /// is removed from every device that honours it.
    Delete {
        /// The message's id.
        id: String,
    },
    /// React to a message with an emoji; --remove takes the reaction back.
    React {
        /// The message's id.
        id: String,
        /// The emoji, or its shortcode (`:tada:`, `:+1:`).
        emoji: String,
        /// Take the reaction back.
        #[arg(long)]
        remove: bool,
    },
    /// Enable or disable two-factor authentication (TOTP).
    Totp {
        /// enable or disable.
        action: TotpAction,
        /// The current code (otherwise read from standard input).
        #[arg(long)]
        code: Option<String>,
    },
    /// Show the safety number to compare with a contact (in person or over another channel).
    Verify {
        /// The contact.
        user: String,
    },
    /// Accept a contact's changed identity key (after comparing safety numbers); held messages then go out.
    Trust {
        /// The contact.
        user: String,
    },
    /// Search this device's messages (offline): words, "exact phrases", prefix*, by sender, conversation and date.
    Search(crate::search::SearchArgs),
    /// Groups: create, add, remove, leave, info, list.
    #[command(subcommand)]
    Group(crate::group::GroupCommand),
    /// End-to-end encrypted files: send, get (both resumable).
    #[command(subcommand)]
    File(crate::files::FileCommand),
    /// The file history of a conversation (a user or `group:<id>`), from the local store.
    Files(crate::files::FilesArgs),
    /// Voice messages: send an Ogg Opus or WAV recording with its duration.
    #[command(subcommand)]
    Voice(crate::files::VoiceCommand),
    /// This account's devices: without a subcommand, list them (id, relay device, name, fingerprint, status).
    ///
    /// Linking: on the NEW device, after `login`, run `devices link`: it shows a code (and a QR payload). On a device
    /// that is already linked, run `devices approve CODE`, compare the fingerprints both show, and approve.
    Devices {
        #[command(subcommand)]
        action: Option<DevicesCommand>,
    },
    /// Press a button on a card a bot or plugin posted (the press goes to the card's author).
    Press {
        /// The card's message id.
        message: String,
        /// The button's id (shown in brackets under the card).
        button: String,
    },
    /// Revoke this device's session on the relay.
    Logout,
    /// Show this home's account: server, user, device, pinned fingerprints.
    Whoami,
}

#[derive(Debug, Subcommand)]
enum DevicesCommand {
    /// On the NEW device (logged in, not linked yet): show a link code and QR payload, and wait for an existing
    /// device of the account to approve it with `devices approve CODE`.
    Link {
        /// Seconds to wait for the approval.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// On an EXISTING device: link the new device that shows CODE (the code as shown, or the QR payload text).
    Approve {
        /// The code the new device shows (`ABCDE-FGHIJ-…`), or its QR payload (`imfree-link:…`).
        code: String,
        /// Approve without asking (otherwise the new device's fingerprint is shown and `y` is read from standard input).
        #[arg(long)]
        yes: bool,
        /// Seconds to wait for the new device.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Revoke another device of this account by its id (the first column of `imfree client devices`): it can no
    /// longer log in, and contacts stop encrypting for it.
    Revoke {
        /// The device's id.
        id: u32,
    },
}

fn read_password(from_stdin: bool) -> anyhow::Result<Zeroizing<String>> {
    if from_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line).context("cannot read the password from standard input")?;
        let trimmed = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
        return Ok(trimmed);
    }
    match std::env::var("IMFREE_PASSWORD") {
        Ok(p) => Ok(Zeroizing::new(p)),
        Err(_) => anyhow::bail!("no password: use --password-stdin or set IMFREE_PASSWORD"),
    }
}

fn trust(c: &Credentials) -> Trust {
    Trust { accept_new_certificate: c.accept_new_certificate, accept_new_relay_key: c.accept_new_relay_key }
}

/// The passphrase of the home's key store, for this process (read once from --passphrase-file or IMFREE_PASSPHRASE).
static PASSPHRASE: std::sync::OnceLock<Option<Zeroizing<String>>> = std::sync::OnceLock::new();

fn passphrase() -> Option<&'static str> {
    PASSPHRASE.get().and_then(|p| p.as_deref().map(String::as_str))
}

/// Open this home's client (its key store unlocked with the passphrase, when it has one).
pub(crate) async fn open_client(home: Option<&Path>) -> Result<Client, ClientError> {
    Client::open_sealed(home, passphrase()).await
}

fn read_passphrase(file: Option<&Path>) -> anyhow::Result<Option<Zeroizing<String>>> {
    if let Some(file) = file {
        let text = Zeroizing::new(std::fs::read_to_string(file).with_context(|| format!("cannot read the passphrase file {}", file.display()))?);
        return Ok(Some(Zeroizing::new(text.lines().next().unwrap_or_default().to_owned())));
    }
    Ok(std::env::var("IMFREE_PASSPHRASE").ok().filter(|p| !p.is_empty()).map(Zeroizing::new))
}

pub(crate) async fn run(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let home = args.home.as_deref();
    let _ = PASSPHRASE.set(read_passphrase(args.passphrase_file.as_deref())?);
    match args.command {
        ClientCommand::Register(c) => {
            let password = read_password(c.password_stdin)?;
            let client = Client::register_sealed(home, &c.server, &c.user, &password, trust(&c), passphrase()).await?;
            print_pins(&client);
            println!("registered {} (device {})", client.user(), client.device());
        }
        ClientCommand::Login { server, user, password_stdin, accept_new_certificate, accept_new_relay_key, totp, sso, list_sso, timeout, device_name } => {
            let trust = Trust { accept_new_certificate, accept_new_relay_key };
            if list_sso {
                return list_sso_providers(home, &server, trust).await;
            }
            let client = match (sso, user) {
                (Some(provider), _) => login_sso(home, &server, &provider, Duration::from_secs(timeout), device_name.as_deref(), trust).await?,
                (None, Some(user)) => {
                    let password = read_password(password_stdin)?;
                    Client::login_sealed(home, &server, &user, &password, totp.as_deref(), trust, passphrase()).await?
                }
                (None, None) => anyhow::bail!("give --user (password login), --sso PROVIDER or --list-sso"),
            };
            print_pins(&client);
            println!("logged in as {} (device {})", client.user(), client.device());
            if !client.e2e_ready() {
                eprintln!(
                    "imfree: this device has no end-to-end keys yet: run `imfree client devices link` here and approve it on a device of {} that has them",
                    client.user()
                );
            }
        }
        ClientCommand::Send { to, text, markdown } => return send(home, &args.plugins, &args.grants, &to, &text, markdown).await,
        ClientCommand::Recv { wait, json } => recv(home, &args.plugins, &args.grants, wait, json).await?,
        ClientCommand::Press { message, button } => press(home, &message, &button).await?,
        ClientCommand::Presence { status } => presence(home, status).await?,
        ClientCommand::Typing { to, stop } => {
            let client = crate::client::open_client(home).await?;
            let mut session = client.connect().await?;
            session.typing(&to, !stop).await?;
            session.ping(Duration::from_secs(10)).await?;
            session.close().await;
        }
        ClientCommand::Settings { setting, value } => {
            let client = crate::client::open_client(home).await?;
            if let Some(setting) = setting {
                let name = match setting.as_str() {
                    "typing" => "typing",
                    "read-receipts" | "read_receipts" | "receipts" => "read_receipts",
                    other => anyhow::bail!("no setting {other:?}: typing or read-receipts"),
                };
                let on = match value.as_deref() {
                    Some("on") => true,
                    Some("off") => false,
                    _ => anyhow::bail!("say on or off"),
                };
                client.store().set_preference(name, on).await?;
            }
            let p = client.store().preferences().await?;
            let word = |on: bool| if on { "on" } else { "off" };
            println!("typing {}\nread-receipts {}", word(p.typing), word(p.read_receipts));
        }
        ClientCommand::Read { from } => {
            let client = crate::client::open_client(home).await?;
            let ids: Vec<String> = client.store().conversation(&from, 1000).await?.into_iter().filter(|m| !m.outgoing).map(|m| m.id).collect();
            if ids.is_empty() {
                println!("nothing received from {from}");
                return Ok(ExitCode::SUCCESS);
            }
            let mut session = client.connect().await?;
            for chunk in ids.chunks(512) {
                session.send_receipt(&from, chunk, imfree_proto::ReceiptKind::Read).await?;
            }
            session.sync_outbox(Duration::from_secs(30)).await?;
            session.close().await;
            println!("read receipt sent to {from} for {} message(s)", ids.len());
        }
        ClientCommand::History { peer, limit, versions, json } => crate::conversation::history(home, &peer, limit, versions, json).await?,
        ClientCommand::Reply { id, text } => return crate::conversation::reply(home, &id, &text).await,
        ClientCommand::Edit { id, text } => return crate::conversation::edit(home, &id, &text).await,
        ClientCommand::Delete { id } => return crate::conversation::delete(home, &id).await,
        ClientCommand::React { id, emoji, remove } => return crate::conversation::react(home, &id, &emoji, remove).await,
        ClientCommand::Totp { action, code } => totp(home, action, code).await?,
        ClientCommand::Search(search) => crate::search::run(home, search).await?,
        ClientCommand::Verify { user } => {
            let client = crate::client::open_client(home).await?;
            let mine = client.certificate().ok_or_else(|| anyhow::anyhow!("this device has no end-to-end keys"))?;
            let mut session = client.connect().await?;
            let theirs = match session.devices_of(&user).await {
                Ok(devices) => devices.first().map(|(_, c)| c.user_identity),
                Err(ClientError::IdentityChanged { .. }) => {
                    eprintln!("imfree: WARNING: {user}'s identity key changed since you last talked; this is the NEW key's number");
                    client.store().pinned_identity(&user).await?.and_then(|(_, changed)| changed).and_then(|k| k.try_into().ok())
                }
                Err(e) => return Err(e.into()),
            };
            session.close().await;
            let theirs = theirs.ok_or_else(|| anyhow::anyhow!("{user} has no end-to-end keys yet"))?;
            let number = imfree_crypto::safety::SafetyNumber::new(client.user(), &mine.user_identity, &user, &theirs);
            println!("safety number with {user}:\n{}", number.display());
        }
        ClientCommand::Trust { user } => {
            let client = crate::client::open_client(home).await?;
            if client.store().accept_identity_change(&user).await? {
                println!("accepted {user}'s new identity key; held messages go out with the next connection");
            } else {
                println!("{user}'s identity key has not changed; nothing to accept");
            }
        }
        ClientCommand::Group(command) => crate::group::run(home, command).await?,
        ClientCommand::File(command) => return crate::files::run_file(home, command).await,
        ClientCommand::Files(args) => crate::files::run_files(home, args).await?,
        ClientCommand::Voice(command) => return crate::files::run_voice(home, command).await,
        ClientCommand::Devices { action } => devices(home, action).await?,
        ClientCommand::Logout => {
            let mut client = crate::client::open_client(home).await?;
            let session = client.connect().await?;
            session.logout().await?;
            client.forget_token()?;
            println!("logged out; this device's session is revoked");
        }
        ClientCommand::Whoami => {
            let client = crate::client::open_client(home).await?;
            let a = client.account();
            println!("server {}", a.server);
            println!("user {}", client.user());
            println!("device {}", client.device());
            print_pins(&client);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn devices(home: Option<&Path>, action: Option<DevicesCommand>) -> anyhow::Result<()> {
    let client = crate::client::open_client(home).await?;
    match action {
        None => {
            let mut session = client.connect().await?;
            let devices = session.account_devices().await?;
            session.close().await;
            println!("ID\tDEVICE\tNAME\tFINGERPRINT\tSTATUS");
            for d in &devices.active {
                let status = if d.this_device { "active, this device" } else { "active" };
                let fingerprint = imfree_client::devices::device_fingerprint(&d.certificate.agreement_key);
                let name = d.name.as_deref().unwrap_or("-");
                println!("{}\t{}\t{name}\t{fingerprint}\t{status}", d.certificate.device_id, d.relay_device);
            }
            for r in &devices.revoked {
                println!("{}\t-\t-\t-\trevoked at {}", r.device_id, r.revoked_at);
            }
        }
        Some(DevicesCommand::Link { timeout }) => {
            let user = client.user().to_owned();
            let certificate = client
                .link_this_device(
                    |invite| {
                        println!("link code {}", invite.code);
                        println!("qr payload {}", invite.qr_payload);
                        println!("this device's fingerprint {}", invite.fingerprint);
                        println!("on a device already linked to {user}, run: imfree client devices approve {}", invite.code);
                        println!("waiting for approval (up to {timeout} s)…");
                        let _ = std::io::stdout().flush();
                    },
                    Duration::from_secs(timeout),
                )
                .await?;
            println!("linked: this device is {} with id {}; it receives messages sent from now on", client.device(), certificate.device_id);
        }
        Some(DevicesCommand::Approve { code, yes, timeout }) => {
            let request = client
                .approve_link(
                    &code,
                    |r| {
                        println!(
                            "new device: {} (relay device {})",
                            r.name.as_deref().unwrap_or("unnamed"),
                            r.relay_device.as_deref().unwrap_or("unknown")
                        );
                        if r.key_checked {
                            println!("fingerprint {} (matches the scanned QR payload)", r.fingerprint);
                        } else {
                            println!("fingerprint {} (compare with the fingerprint the new device shows)", r.fingerprint);
                        }
                        if yes {
                            return true;
                        }
                        print!("approve this device? it will be able to read your new messages [y/N] ");
                        let _ = std::io::stdout().flush();
                        let mut line = String::new();
                        std::io::stdin().lock().read_line(&mut line).is_ok() && matches!(line.trim(), "y" | "Y" | "yes")
                    },
                    Duration::from_secs(timeout),
                )
                .await?;
            println!("linked device {} (relay device {})", request.device_id, request.relay_device.as_deref().unwrap_or("unknown"));
        }
        Some(DevicesCommand::Revoke { id }) => {
            let mut session = client.connect().await?;
            let version = session.revoke_device(id).await?;
            session.close().await;
            println!("revoked device {id} (revocation list version {version}); it can no longer log in");
        }
    }
    Ok(())
}

/// `login --list-sso`: the providers of the relay's sso plugin, over HTTPS with the certificate this home pinned for
/// that relay (if it has one; otherwise its fingerprint is printed, as at first contact).
async fn list_sso_providers(home: Option<&Path>, server: &str, trust: Trust) -> anyhow::Result<ExitCode> {
    let pin = if trust.accept_new_certificate { None } else { pinned_certificate(home, server) };
    let providers = imfree_client::sso::list_providers(server, pin.as_deref()).await?;
    if providers.is_empty() {
        println!("this relay offers no single sign-on providers");
    }
    for p in providers {
        // Names come from the relay's configuration: shown without control characters.
        let name: String = p.name.chars().filter(|c| !c.is_control()).collect();
        let id: String = p.id.chars().filter(|c| !c.is_control()).collect();
        println!("{id}\t{name}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The TLS pin this home holds for `server`, if any.
fn pinned_certificate(home: Option<&Path>, server: &str) -> Option<String> {
    let home = imfree_client::home::Home::open(home).ok()?;
    home.load().ok().flatten().filter(|a| a.server == server).and_then(|a| a.tls_pin)
}

/// `login --sso PROVIDER`: RFC 8252 native-app sign-in. Listen on a loopback port, print the relay's login address
/// (with the loopback redirect and the PKCE challenge), wait for the browser to come back with a login code, then log
/// in over the IMF handshake with the code and the verifier.
async fn login_sso(home: Option<&Path>, server: &str, provider: &str, timeout: Duration, device_name: Option<&str>, trust: Trust) -> anyhow::Result<Client> {
    use imfree_client::sso::{LoopbackListener, Pkce, SsoRedirect, login_address};
    let pkce = Pkce::new();
    let listener = LoopbackListener::bind().await?;
    let address = login_address(server, provider, &listener.redirect_uri(), &pkce.challenge)?;
    println!("Open this address in a browser: {address}");
    let _ = std::io::stdout().flush();
    match listener.wait(timeout).await? {
        SsoRedirect::Code(code) => Ok(Client::login_sso(home, server, &code, &pkce.verifier, device_name, trust, passphrase()).await?),
        SsoRedirect::Error { code, description } => {
            anyhow::bail!("single sign-on refused: {} ({code})", if description.is_empty() { "no reason given" } else { &description })
        }
    }
}

fn print_pins(client: &Client) {
    let a = client.account();
    if let Some(fp) = &a.tls_pin {
        println!("pinned tls certificate sha256 {fp}");
    }
    if let Some(k) = &a.relay_key {
        println!("pinned relay noise key {k}");
    }
}

async fn send(home: Option<&Path>, plugin_files: &[PathBuf], grants: &[String], to: &str, texts: &[String], markdown: bool) -> anyhow::Result<ExitCode> {
    let client = crate::client::open_client(home).await?;
    let plugins = ClientPlugins::load(&client, plugin_files, grants).await?;
    let mime = if markdown { imfree_proto::mime::MARKDOWN } else { imfree_proto::mime::TEXT };
    let mut ids = Vec::with_capacity(texts.len());
    for text in texts {
        let mut text = if text == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            s
        } else {
            text.clone()
        };
        if let Some(plugins) = &plugins {
            if let Some((plugin, answer)) = plugins.command(&client, to, &text).await? {
                // A command for a plugin: its answer is for this user alone; nothing is sent.
                println!("{plugin}: {answer}");
                continue;
            }
            match plugins.outgoing(&client, to, mime, &text).await {
                Outgoing::Send(t) => text = t,
                // Refused before it was stored: nothing of it is queued or sent.
                Outgoing::Refused(why) => anyhow::bail!("not sent: {why}"),
            }
        }
        ids.push(client.compose_text(to, mime, &text, None).await?);
    }
    push_out(&client, to, &ids).await
}

/// Send what was just composed (`ids`, to `to`) and report: prints each id; exits 75 when the relay was unreachable
/// (queued), fails when the relay refused any of them.
pub(crate) async fn push_out(client: &Client, to: &str, ids: &[String]) -> anyhow::Result<ExitCode> {
    let group = to.starts_with(imfree_client::groups::GROUP_PREFIX).then(|| imfree_client::groups::parse_group(to)).transpose()?;
    let mut refused_group = None;
    let mut refusals = Vec::new();
    let outcome = async {
        let mut session = client.connect().await?;
        if let Some(group) = &group {
            // Verify the membership log first, so that a refusal says why.
            match session.group_info(group).await {
                Ok(info) if info.status != "active" => refused_group = Some(info.status),
                Ok(_) => {}
                Err(e @ (ClientError::Io(_) | ClientError::Store(_))) => return Err(e),
                Err(e) => refused_group = Some(e.to_string()),
            }
        }
        session.sync_outbox(Duration::from_secs(30)).await?;
        refusals = session.take_refusals();
        session.close().await;
        Ok::<_, ClientError>(())
    }
    .await;
    match outcome {
        Ok(()) => {
            let mut failed = 0;
            for id in ids {
                failed += client.store().message(id).await?.is_some_and(|m| m.status == "failed") as usize;
            }
            for id in ids {
                println!("{id}");
            }
            for r in refusals.iter().filter(|r| r.reference.as_ref().is_some_and(|id| ids.contains(id))) {
                eprintln!("imfree: {} refused: {} ({})", r.reference.as_deref().unwrap_or_default(), r.message, r.code);
            }
            if let Some(status) = refused_group.filter(|_| failed > 0) {
                anyhow::bail!("{failed} message(s) not sent: the group is {status}");
            }
            if failed > 0 {
                anyhow::bail!("{failed} message(s) failed: refused by the relay (is {to:?} a user?) or not encryptable (see the warning above)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (ClientError::Io(_) | ClientError::Refused { code: imfree_proto::ErrorCode::ShuttingDown, .. })) => {
            eprintln!("imfree: {e}; the messages are queued and go out on the next connection");
            for id in ids {
                println!("{id}");
            }
            Ok(ExitCode::from(EXIT_QUEUED))
        }
        Err(e) => Err(e.into()),
    }
}

/// A button press: sent, end to end, to whoever posted the card.
async fn press(home: Option<&Path>, message: &str, button: &str) -> anyhow::Result<()> {
    let client = crate::client::open_client(home).await?;
    let card = client.store().message(message).await?.ok_or_else(|| anyhow::anyhow!("no message {message} here"))?;
    if card.mime != cards::CARD_MIME || card.outgoing {
        anyhow::bail!("message {message} is not a card someone posted");
    }
    let buttons = cards::button_ids(&card.body);
    if !buttons.iter().any(|b| b == button) {
        anyhow::bail!("the card has no button {button:?} (it has: {})", buttons.join(", "));
    }
    let content = imfree_proto::content::Content::new(cards::ACTION_MIME, cards::action_json(message, button).as_bytes(), None);
    client.compose_document(&card.from, &content).await?;
    let mut session = client.connect().await?;
    session.sync_outbox(Duration::from_secs(30)).await?;
    session.close().await;
    println!("pressed {button} on {message}");
    Ok(())
}

/// A message body as shown to a person: everything that came in the message passes crate::render.
pub(crate) fn body_text(m: &StoredMessage) -> String {
    if let Some(change) = crate::conversation::describe_change(m) {
        change
    } else if m.mime == cards::CARD_MIME {
        crate::render::plain(&cards::render(&m.id, &m.body))
    } else if m.mime == imfree_client::files::FILE_MIME {
        crate::render::plain(&crate::files::describe(m))
    } else if m.mime.starts_with("text/") {
        crate::render::text_body(&m.mime, &m.body)
    } else {
        crate::render::plain(&format!("[{} bytes of {}]", m.body.len(), m.mime))
    }
}

fn print_message(m: &StoredMessage, json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let mut v = serde_json::json!({
            "id": m.id, "from": m.from, "from_device": m.from_device, "to": m.to, "ts": m.ts, "mime": m.mime,
        });
        if m.mime.starts_with("text/") || m.mime.ends_with("+json") {
            v["body"] = String::from_utf8_lossy(&m.body).into_owned().into();
        } else {
            v["body"] = base64::engine::general_purpose::STANDARD.encode(&m.body).into();
            v["encoding"] = "base64".into();
        }
        if let Some(file) = crate::files::json_file_object(m) {
            // The descriptor holds the file key: show what it says, not the key.
            v["file"] = file;
            v["body"] = crate::files::describe(m).into();
        }
        if m.status == "undecodable" {
            v["error"] = "undecodable".into();
        }
        if m.status == "identity-changed" {
            v["warning"] = "identity_changed".into();
        }
        if let Some(group) = m.to.strip_prefix(imfree_client::groups::GROUP_PREFIX) {
            v["group"] = group.into();
        }
        if m.status == "event" || m.status == "warning" {
            v[m.status.as_str()] = true.into();
        }
        crate::conversation::json_fields(m, &mut v);
        writeln!(out, "{v}")
    } else if m.status == "identity-changed" {
        writeln!(
            out,
            "[{}] {} -> {}: {}   [WARNING: sent under a NEW identity key of {}; compare safety numbers: imfree client verify {}]",
            m.ts, m.from, m.to, body_text(m), m.from, m.from
        )
    } else if m.status == "event" {
        writeln!(out, "[{}] {}: * {}", m.ts, m.to, body_text(m))
    } else if m.status == "warning" {
        writeln!(out, "[{}] {}: {}", m.ts, m.to, body_text(m))
    } else {
        writeln!(out, "[{}] {} -> {}: {}", m.ts, m.from, m.to, body_text(m))
    }
}

/// A contact's typing indicator (only delivered while this user shares typing too).
fn print_typing(from: &str, active: bool, json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::json!({ "typing": active, "from": from }))
    } else if active {
        writeln!(out, "{from} is typing…")
    } else {
        writeln!(out, "{from} stopped typing")
    }
}

/// Print what is stored but not shown yet, then mark it shown; returns it.
async fn show_new(client: &Client, json: bool) -> anyhow::Result<Vec<StoredMessage>> {
    let fresh = client.store().unshown().await?;
    for m in &fresh {
        print_message(m, json)?;
    }
    let ids: Vec<String> = fresh.iter().map(|m| m.id.clone()).collect();
    client.store().mark_shown(&ids).await?;
    Ok(fresh)
}

/// Show what is new and hand it to the client's plugins; what they post goes out on this session.
async fn show_and_hand_over(client: &Client, plugins: Option<&ClientPlugins>, session: &mut imfree_client::Session<'_>, json: bool) -> anyhow::Result<()> {
    let fresh = show_new(client, json).await?;
    if let Some(plugins) = plugins
        && plugins.incoming(client, &fresh).await? > 0
    {
        session.flush_outbox().await?;
    }
    Ok(())
}

async fn recv(home: Option<&Path>, plugin_files: &[PathBuf], grants: &[String], wait: Option<u64>, json: bool) -> anyhow::Result<()> {
    let client = crate::client::open_client(home).await?;
    let plugins = ClientPlugins::load(&client, plugin_files, grants).await?;
    let plugins = plugins.as_ref();
    // Anything stored by an earlier run that was stopped before showing it.
    show_new(&client, json).await?;
    match wait {
        None => {
            let mut session = client.connect().await?;
            session.sync_outbox(Duration::from_secs(30)).await?;
            loop {
                match session.next_event().await? {
                    Event::Drained => break,
                    Event::Message(_) => show_and_hand_over(&client, plugins, &mut session, json).await?,
                    _ => {}
                }
            }
            session.ping(Duration::from_secs(30)).await?;
            show_and_hand_over(&client, plugins, &mut session, json).await?;
            session.sync_outbox(Duration::from_secs(30)).await?;
            session.close().await;
        }
        Some(secs) => {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
            while tokio::time::Instant::now() < deadline {
                let mut session = match client.connect_with_retry(deadline).await {
                    Ok(s) => s,
                    Err(ClientError::Io(_)) => break,
                    Err(e) => return Err(e.into()),
                };
                if let Err(e) = session.sync_outbox(Duration::from_secs(30)).await {
                    tracing::warn!(error = %e, "outbox not fully accepted yet");
                }
                // Plugins' timers fire while we wait, not only when a message arrives. `next_event_or` gives up
                // waiting only between frames, so no delivery is lost to the tick.
                let mut timer_tick = tokio::time::interval(Duration::from_millis(200));
                loop {
                    let tick = async {
                        timer_tick.tick().await;
                    };
                    let event = match tokio::time::timeout_at(deadline, session.next_event_or(tick)).await {
                        Ok(Ok(None)) => {
                            if let Some(plugins) = plugins
                                && plugins.fire_due_timers(&client).await? > 0
                            {
                                session.flush_outbox().await?;
                            }
                            continue;
                        }
                        Ok(Ok(Some(event))) => Ok(Ok(event)),
                        Ok(Err(e)) => Ok(Err(e)),
                        Err(elapsed) => Err(elapsed),
                    };
                    match event {
                        Err(_) => break,
                        Ok(Ok(Event::Message(_))) => show_and_hand_over(&client, plugins, &mut session, json).await?,
                        Ok(Ok(Event::Typing { from, active })) => print_typing(&from, active, json)?,
                        Ok(Ok(Event::Presence(p))) => {
                            if let Some(plugins) = plugins
                                && plugins.presence(&client, &p).await? > 0
                            {
                                session.flush_outbox().await?;
                            }
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(ClientError::Io(_))) => break,
                        Ok(Err(e)) => return Err(e.into()),
                    }
                }
                show_new(&client, json).await?;
            }
        }
    }
    client.store().close().await;
    Ok(())
}

async fn presence(home: Option<&Path>, status: Option<String>) -> anyhow::Result<()> {
    let client = crate::client::open_client(home).await?;
    let mut session = client.connect().await?;
    match status {
        Some(s) => {
            let status: Status = s.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            session.set_presence(status).await?;
            session.ping(Duration::from_secs(10)).await?;
            println!("presence set to {}", status.as_str());
        }
        None => {
            let peers = client.store().peers().await?;
            if peers.is_empty() {
                println!("no contacts yet");
            } else {
                let n = peers.len();
                session.query_presence(peers).await?;
                for _ in 0..n {
                    if let Event::Presence(p) = session.wait_for(Duration::from_secs(10), |e| matches!(e, Event::Presence(_))).await? {
                        match (p.status, p.last_seen) {
                            (Status::Offline, Some(t)) => println!("{} offline (last seen {t})", p.user.unwrap_or_default()),
                            (s, _) => println!("{} {}", p.user.unwrap_or_default(), s.as_str()),
                        }
                    }
                }
            }
        }
    }
    session.close().await;
    Ok(())
}

async fn totp(home: Option<&Path>, action: TotpAction, code: Option<String>) -> anyhow::Result<()> {
    let client = crate::client::open_client(home).await?;
    let mut session = client.connect().await?;
    let read_code = |code: Option<String>| -> anyhow::Result<String> {
        match code {
            Some(c) => Ok(c),
            None => {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                Ok(line.trim().to_owned())
            }
        }
    };
    match action {
        TotpAction::Enable => {
            let secret = session.totp_setup().await?;
            println!("secret {}", secret.secret);
            println!("uri {}", secret.uri);
            println!("enter the current code from your authenticator:");
            std::io::stdout().flush()?;
            let code = read_code(code)?;
            session.totp_code(&code, true).await?;
            println!("two-factor authentication enabled");
        }
        TotpAction::Disable => {
            let code = read_code(code)?;
            session.totp_code(&code, false).await?;
            println!("two-factor authentication disabled");
        }
    }
    session.close().await;
    Ok(())
}
