//! `imfree client file send|get`, `imfree client files CONV`, `imfree client voice send`, the `file` object of
//! `recv --json`, and `imfree bench files`: a thin layer over [`imfree_client::files`].
//!
//! A progress bar (rate and ETA) is drawn on standard error only when it is a terminal, so scripts and tests see
//! clean output. Passwords of protected files come from `IMFREE_FILE_PASSWORD` or the first line of standard input,
//! never from the command line (where `ps` would show them).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use imfree_client::files::{DEFAULT_CHUNK_SIZE, FILE_MIME, TransferOptions, TransferProgress, audio_info, file_summary};
use imfree_client::store::StoredMessage;
use imfree_crypto::file::FileDescriptor;

#[derive(Debug, Subcommand)]
pub(crate) enum FileCommand {
    /// Send a file, end-to-end encrypted, to a user or `group:<id>`; prints the message id (what recipients pass to
    /// `file get`). Run it again after an interruption to continue where it stopped.
    Send {
        /// Recipient: a user name, or `group:<id>`.
        to: String,
        /// The file.
        path: PathBuf,
        /// Protect the file with a password as well (read from IMFREE_FILE_PASSWORD or the first line of standard
        /// input): recipients need it to open the file.
        #[arg(long)]
        password: bool,
        /// Plaintext bytes per chunk.
        #[arg(long, default_value_t = DEFAULT_CHUNK_SIZE)]
        chunk_size: u32,
        /// Content type (default: guessed from the file name).
        #[arg(long)]
        mime: Option<String>,
        /// Keep retrying network failures for this many seconds before giving up (rerun to continue later).
        #[arg(long, default_value_t = 60)]
        retry_secs: u64,
    },
    /// Fetch the file of a received file message (by its message id) into PATH (a file or a directory; default: the
    /// current directory, under the sender's file name). Run it again after an interruption to continue.
    Get {
        /// The file message's id (from `recv` or `files`).
        id: String,
        /// Where to save it.
        path: Option<PathBuf>,
        /// The file is password-protected: read the password from IMFREE_FILE_PASSWORD or standard input.
        #[arg(long)]
        password: bool,
        /// Keep retrying network failures for this many seconds before giving up.
        #[arg(long, default_value_t = 60)]
        retry_secs: u64,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum VoiceCommand {
    /// Send an audio file (Ogg Opus or WAV) as a voice message, with its duration.
    Send {
        /// Recipient: a user name, or `group:<id>`.
        to: String,
        /// The recording.
        file: PathBuf,
    },
}

/// `imfree client files CONV` options.
#[derive(Debug, Args)]
pub(crate) struct FilesArgs {
    /// The conversation: a user name, or `group:<id>`.
    conv: String,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// How many of the conversation's latest messages to look through.
    #[arg(long, default_value_t = 10_000)]
    limit: i64,
}

/// A progress bar on standard error when it is a terminal; nothing otherwise.
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    fn new(label: &str) -> Self {
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return Bar(None);
        }
        let bar = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(label.to_owned());
        Bar(Some(bar))
    }
}

impl TransferProgress for Bar {
    fn begin(&self, total: u64, done: u64) {
        if let Some(b) = &self.0 {
            b.set_length(total);
            b.set_position(done);
            b.reset_eta();
        }
    }
    fn advance(&self, bytes: u64) {
        if let Some(b) = &self.0 {
            b.inc(bytes);
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

fn read_file_password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("IMFREE_FILE_PASSWORD")
        && !p.is_empty()
    {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("cannot read the file password from standard input")?;
    let line = line.trim_end_matches(['\r', '\n']).to_owned();
    if line.is_empty() {
        anyhow::bail!("no file password: set IMFREE_FILE_PASSWORD or give it on standard input");
    }
    Ok(line)
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

async fn send(home: Option<&Path>, to: &str, path: &Path, options: TransferOptions) -> anyhow::Result<ExitCode> {
    let client = crate::client::open_client(home).await?;
    let bar = Bar::new("sending");
    let sent = client.send_file(to, path, &options, &bar).await?;
    if sent.resumed_chunks > 0 {
        eprintln!("imfree: resumed: {} chunk(s) were already on the relay", sent.resumed_chunks);
    }
    println!("{}", sent.message_id);
    if !sent.delivered {
        eprintln!("imfree: the file is on the relay; its message is queued and goes out on the next connection");
        return Ok(ExitCode::from(75));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn run_file(home: Option<&Path>, command: FileCommand) -> anyhow::Result<ExitCode> {
    match command {
        FileCommand::Send { to, path, password, chunk_size, mime, retry_secs } => {
            let password = if password { Some(read_file_password()?) } else { None };
            let options = TransferOptions { password, chunk_size, mime, voice_duration_ms: None, retry_for: Duration::from_secs(retry_secs) };
            send(home, &to, &path, options).await
        }
        FileCommand::Get { id, path, password, retry_secs } => {
            let client = crate::client::open_client(home).await?;
            let password = if password { Some(read_file_password()?) } else { None };
            let options = TransferOptions { password, retry_for: Duration::from_secs(retry_secs), ..TransferOptions::default() };
            let bar = Bar::new("receiving");
            let got = client.get_file(&id, path.as_deref(), &options, &bar).await?;
            if got.already {
                eprintln!("imfree: already downloaded");
            } else if got.resumed_chunks > 0 {
                eprintln!("imfree: resumed after {} chunk(s) written by an earlier run", got.resumed_chunks);
            }
            println!("saved {} ({} bytes)", got.path.display(), got.size);
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) async fn run_voice(home: Option<&Path>, command: VoiceCommand) -> anyhow::Result<ExitCode> {
    match command {
        VoiceCommand::Send { to, file } => {
            let (mime, duration) = audio_info(&file)?;
            let options = TransferOptions { mime: Some(mime), voice_duration_ms: Some(duration), ..TransferOptions::default() };
            send(home, &to, &file, options).await
        }
    }
}

pub(crate) async fn run_files(home: Option<&Path>, args: FilesArgs) -> anyhow::Result<()> {
    let client = crate::client::open_client(home).await?;
    for f in client.files(&args.conv, args.limit).await? {
        if args.json {
            println!("{}", serde_json::to_string(&f)?);
            continue;
        }
        let mut line = format!("{}  [{}] {}  {}  {}  {}", f.message_id, f.ts, f.from, f.name, human(f.size), f.mime);
        if let Some(d) = f.duration_ms.filter(|_| f.voice) {
            line.push_str(&format!("  voice {:.1} s", d as f64 / 1000.0));
        }
        if f.password {
            line.push_str("  password-protected");
        }
        if let Some(p) = &f.saved_as {
            line.push_str(&format!("  saved as {p}"));
        }
        println!("{line}");
    }
    Ok(())
}

/// The `file` object of a file message for `recv --json` (no key material), or `None` for other messages.
pub(crate) fn json_file_object(m: &StoredMessage) -> Option<serde_json::Value> {
    if m.mime != FILE_MIME {
        return None;
    }
    Some(match FileDescriptor::decode(&m.body) {
        Ok(d) => file_summary(&d),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    })
}

/// How a file message reads in the terminal.
pub(crate) fn describe(m: &StoredMessage) -> String {
    match FileDescriptor::decode(&m.body) {
        Ok(d) if d.voice => format!(
            "[voice message, {:.1} s, {}: imfree client file get {}]",
            d.duration_ms.unwrap_or(0) as f64 / 1000.0,
            human(d.size),
            m.id
        ),
        Ok(d) => format!(
            "[file {} ({}, {}){}: imfree client file get {}]",
            d.name,
            human(d.size),
            d.mime,
            if d.needs_password() { ", password-protected" } else { "" },
            m.id
        ),
        Err(e) => format!("[a file message that cannot be read: {e}]"),
    }
}

// ----- imfree bench files -----

/// `imfree bench files`: encrypted file transfer throughput through a real relay on loopback.
#[derive(Debug, Clone, Args)]
pub(crate) struct FilesBenchArgs {
    /// File size in MiB.
    #[arg(long, default_value_t = 512)]
    size_mib: u64,
    /// Plaintext bytes per chunk.
    #[arg(long, default_value_t = DEFAULT_CHUNK_SIZE)]
    chunk_size: u32,
    /// Working directory (relay data, client homes, the file). Default: a fresh temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Measures, on one machine: chunk sealing and opening in memory (one core), then a real upload and download of a
/// random file through a relay started in this process (TLS on loopback, chunks fsynced by the relay, the download
/// fsynced and hash-checked by the client), both clients registered on it.
pub(crate) async fn bench(args: FilesBenchArgs) -> anyhow::Result<()> {
    use rand_core::RngCore;
    let tmp = tempfile::Builder::new().prefix("imfree-bench-files-").tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let size = args.size_mib * 1024 * 1024;

    // 1. Sealing and opening alone.
    let key = imfree_crypto::file::FileKey::generate(&mut rand_core::OsRng);
    let id = imfree_crypto::file::FileId::generate(&mut rand_core::OsRng);
    let cipher = imfree_crypto::file::ChunkCipher::new(&key, id, size, args.chunk_size);
    let mut chunk = vec![0u8; cipher.plain_len(0)?];
    rand_core::OsRng.fill_bytes(&mut chunk);
    let rounds = (256 * 1024 * 1024 / chunk.len().max(1)).max(1);
    let started = Instant::now();
    for _ in 0..rounds {
        let mut buf = chunk.clone();
        cipher.seal_in_place(0, &mut buf)?;
        cipher.open_in_place(0, &mut buf)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let mib = (rounds * chunk.len()) as f64 / (1024.0 * 1024.0);
    println!("chunk seal+open in memory: {:.0} MiB/s ({} chunks of {})", mib / secs, rounds, human(chunk.len() as u64));

    // 2. A relay and two clients.
    let mut config = imfree_relay::RelayConfig { listen: "127.0.0.1:0".parse()?, data_dir: dir.join("relay"), ..Default::default() };
    config.files.max_file_bytes = config.files.max_file_bytes.max(size);
    config.files.quota_bytes = config.files.quota_bytes.max(size * 2);
    config.files.max_chunk_bytes = config.files.max_chunk_bytes.max(args.chunk_size);
    config.files.min_chunk_bytes = config.files.min_chunk_bytes.min(args.chunk_size);
    config.limits.logins_per_ip.burst = 1000;
    let relay = imfree_relay::Relay::start(config).await?;
    let url = relay.url();
    let trust = imfree_client::Trust::default();
    let alice = imfree_client::Client::register(Some(&dir.join("alice")), &url, "alice", "bench password 1", trust).await?;
    let bob = imfree_client::Client::register(Some(&dir.join("bob")), &url, "bob", "bench password 2", trust).await?;

    let path = dir.join("payload.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..args.size_mib {
            rand_core::OsRng.fill_bytes(&mut block);
            f.write_all(&block)?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    let options = TransferOptions { chunk_size: args.chunk_size, ..TransferOptions::default() };
    let started = Instant::now();
    let sent = alice.send_file("bob", &path, &options, &imfree_client::files::NoProgress).await?;
    let up = started.elapsed().as_secs_f64();
    println!("upload   (hash, seal, TLS, relay fsync): {:.0} MiB/s ({} in {:.2} s)", args.size_mib as f64 / up, human(size), up);

    let mut session = bob.connect().await?;
    session
        .wait_for(Duration::from_secs(60), |e| matches!(e, imfree_client::Event::Message(m) if m.id == sent.message_id))
        .await
        .context("bob did not receive the file message")?;
    session.close().await;
    let out = dir.join("received.bin");
    let started = Instant::now();
    bob.get_file(&sent.message_id, Some(&out), &options, &imfree_client::files::NoProgress).await?;
    let down = started.elapsed().as_secs_f64();
    println!("download (TLS, open, hash, fsync):        {:.0} MiB/s ({} in {:.2} s)", args.size_mib as f64 / down, human(size), down);
    relay.shutdown().await?;
    Ok(())
}
