//! `imfree bench`: measures a real relay process on loopback — messages relayed per second with durable
//! persistence, send→receive latency at a fixed rate, the relay's CPU time per message and its memory per idle
//! authenticated connection.
//!
//! Three processes take part, so that neither the load nor its file descriptors are charged to the relay:
//! this orchestrator provisions accounts straight through the store (no password logins, no Argon2), starts the
//! relay (`imfree serve`) and the load generator (`imfree bench load`, hidden) as children, reads the relay's CPU
//! time and RSS from `/proc`, and prints the figures. The load generator raises its own open-file limit, connects
//! every client with the device-key (Noise IK) handshake and reports what it measured as JSON lines on stdout;
//! the orchestrator steers it with lines on its stdin.
//!
//! What it must not touch: any relay code path. It measures the shipped `serve` command with a configuration
//! whose only changes are raised abuse limits; durability (`synchronous=FULL`, group commit) is the store's own.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use futures_util::FutureExt as _;
use imfree_client::connection::Connection;
use imfree_crypto::device::DeviceKeys;
use imfree_proto::{Ack, EnvelopeId, Frame, FrameBody, Payload, Recipient};
use imfree_relay::RelayConfig;
use imfree_relay::limits::Rate;
use imfree_store::{NewDevice, NewUser, RelayStore, SessionRecord, SqliteStore};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::watch;

/// `imfree bench [OPTIONS]`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    internal: Option<Internal>,
    #[command(flatten)]
    options: BenchOptions,
}

#[derive(Debug, Subcommand)]
enum Internal {
    /// The load generator process that `imfree bench` starts (internal).
    #[command(hide = true)]
    Load {
        /// The spec file the orchestrator wrote.
        #[arg(long)]
        spec: PathBuf,
    },
    /// Encrypted file transfer throughput through a relay on loopback (see docs/performance.md).
    Files(crate::files::FilesBenchArgs),
}

#[derive(Debug, Clone, Args)]
struct BenchOptions {
    /// Sender/receiver pairs for the throughput and latency phases (2 × PAIRS connected clients).
    #[arg(long, default_value_t = 64)]
    pairs: usize,
    /// Messages sent in the throughput phase (0 skips the throughput and latency phases).
    #[arg(long, default_value_t = 300_000)]
    messages: u64,
    /// Sends each sender keeps in flight before the relay accepts them.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Opaque payload size in bytes (a short end-to-end encrypted text message is about this big).
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// Upper bound on the throughput phase in seconds; it stops sending then and reports what got through.
    #[arg(long, default_value_t = 60)]
    max_seconds: u64,
    /// Messages per second for the latency phase. Default: half the rate the throughput phase measured.
    #[arg(long)]
    rate: Option<f64>,
    /// Length of the latency phase in seconds (the first second is warm-up and not counted).
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// Idle authenticated connections for the memory phase (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    idle_connections: usize,
    /// Devices per account in the memory phase (each connection is its own device).
    #[arg(long, default_value_t = 100)]
    devices_per_account: usize,
    /// Data directory for the bench relay. Kept afterwards, and its provisioned accounts are reused by the next run
    /// (provisioning 10,000 devices durably took about 30 s here). Default: a fresh directory under the system temp
    /// directory, removed afterwards.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.internal {
        Some(Internal::Load { spec }) => load::run(&spec).await,
        Some(Internal::Files(args)) => crate::files::bench(args).await,
        None => orchestrate(args.options).await,
    }
}

// ----- what the orchestrator and the load generator exchange -----

/// One provisioned device with everything needed to resume a session as it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BenchDevice {
    user: String,
    device: String,
    token: String,
    /// Ed25519 seed, hex.
    signing_seed: String,
    /// X25519 secret, hex.
    static_secret: String,
}

/// Accounts provisioned in a data directory (kept there as `bench-accounts.json`, so a later run can reuse them).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Accounts {
    senders: Vec<BenchDevice>,
    receivers: Vec<BenchDevice>,
    idle: Vec<BenchDevice>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
enum Phase {
    /// Open every connection, report, hold them until stdin closes.
    Idle { devices: Vec<BenchDevice> },
    /// Pairs: warm up, then throughput on `go`, then latency on `latency RATE`.
    Traffic {
        senders: Vec<BenchDevice>,
        receivers: Vec<BenchDevice>,
        messages: u64,
        window: usize,
        payload_bytes: usize,
        max_seconds: u64,
        latency_seconds: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct LoadSpec {
    server: String,
    tls_fingerprint: String,
    relay_key: String,
    phase: Phase,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Percentiles {
    samples: usize,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
}

impl Percentiles {
    fn of(mut samples: Vec<u32>) -> Self {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        let at = |q: f64| u64::from(samples[((samples.len() as f64 - 1.0) * q).round() as usize]);
        Percentiles {
            samples: samples.len(),
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: at(1.0),
        }
    }
}

/// What the load generator reports for a traffic phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TrafficReport {
    sent: u64,
    accepted: u64,
    delivered: u64,
    duplicates: u64,
    errors: u64,
    /// First send to last delivery.
    seconds: f64,
    delivered_per_second: f64,
    accepted_per_second: f64,
    /// Asked-for rate (latency phase only).
    target_rate: f64,
    latency: Percentiles,
}

/// Lines the load generator prints on stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum LoadEvent {
    IdleReady { connected: usize, seconds: f64 },
    Ready { connected: usize, seconds: f64 },
    Throughput(TrafficReport),
    Latency(TrafficReport),
}

// ----- the orchestrator -----

/// CPU time and memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy)]
struct ProcSample {
    cpu_ticks: u64,
}

fn proc_cpu(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces; the fields after the last ')' are fixed.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("unexpected /proc/PID/stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, utime field 14, stime field 15 (proc(5)).
    let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).context("no utime in /proc/PID/stat")?;
    let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).context("no stime in /proc/PID/stat")?;
    Ok(ProcSample { cpu_ticks: utime + stime })
}

/// Resident set size in KiB (`VmRSS`).
fn proc_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// Clock ticks per second for `/proc/PID/stat` times. `getconf` asks `sysconf(_SC_CLK_TCK)` for us, which keeps
/// this crate free of unsafe code; 100 is the Linux value everywhere in practice.
async fn clock_ticks() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().await;
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> anyhow::Result<[u8; 32]> {
    if s.len() != 64 {
        bail!("expected 64 hex digits, got {}", s.len());
    }
    let mut out = [0u8; 32];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).context("invalid hex")?;
    }
    Ok(out)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Random-enough 80 bits for ids from the clock and a counter; bench ids only need to be unique.
fn id_entropy() -> u128 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    (nanos ^ (u128::from(std::process::id()) << 64)).rotate_left(17)
}

/// The bench relay's configuration: defaults, with the abuse limits raised so that the load is not refused.
fn bench_config(data: &Path) -> RelayConfig {
    let mut cfg = RelayConfig::default();
    cfg.listen = "127.0.0.1:0".parse().unwrap_or(cfg.listen);
    cfg.data_dir = data.to_path_buf();
    let unlimited = Rate { per_second: 1e9, burst: 1_000_000_000 };
    let l = &mut cfg.limits;
    l.frames_per_connection = unlimited;
    l.messages_per_connection = unlimited;
    l.messages_per_account = unlimited;
    l.handshakes_per_ip = unlimited;
    l.connections_per_account = 100_000;
    l.connections_per_ip = 100_000;
    cfg.accounts.max_devices = 100_000;
    cfg
}

/// Create `count` devices spread over accounts named `{prefix}{n}` with `per_account` devices each.
async fn provision(
    store: &SqliteStore,
    prefix: &str,
    count: usize,
    per_account: usize,
    progress: &str,
) -> anyhow::Result<Vec<BenchDevice>> {
    let per_account = per_account.max(1);
    let mut out = Vec::with_capacity(count);
    let started = Instant::now();
    let now = now_ms();
    let mut user_id = 0;
    let mut counter: u128 = 0;
    for i in 0..count {
        let name = format!("{prefix}{}", i / per_account);
        if i % per_account == 0 {
            let user = NewUser { name: name.clone(), password_hash: "$bench$no-password-login".into(), created_at: now };
            user_id = store.create_user(&user).await.with_context(|| format!("creating bench user {name}"))?;
        }
        let keys = DeviceKeys::generate();
        counter += 1;
        let device_id = EnvelopeId::from_parts(now as u64, id_entropy().wrapping_add(counter)).to_string();
        let device = NewDevice {
            id: device_id.clone(),
            user_id,
            signing_key: keys.signing_public(),
            static_key: keys.static_public(),
            name: "bench".into(),
            created_at: now,
        };
        store.add_device(&device).await.context("adding a bench device")?;
        let (token, hash) = imfree_relay::token::new_session_token();
        let session = SessionRecord { user_id, device_id: device_id.clone(), expires_at: now + 30 * 24 * 3600 * 1000, revoked_at: None };
        store.create_session(&hash, &session, now).await.context("creating a bench session")?;
        out.push(BenchDevice {
            user: name,
            device: device_id,
            token: token.into_string(),
            signing_seed: hex(keys.signing_seed().as_ref()),
            static_secret: hex(keys.static_secret().as_ref()),
        });
        if (i + 1) % 1000 == 0 {
            eprintln!("  {progress}: {} of {count} devices ({:.0} s)", i + 1, started.elapsed().as_secs_f64());
        }
    }
    Ok(out)
}

/// Provision what this run needs, reusing what the data directory already holds.
async fn accounts_for(data: &Path, opts: &BenchOptions) -> anyhow::Result<Accounts> {
    let file = data.join("bench-accounts.json");
    let mut accounts: Accounts = match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("reading {}", file.display()))?,
        Err(_) => Accounts::default(),
    };
    let need_pairs = if opts.messages > 0 { opts.pairs } else { 0 };
    let need_idle = opts.idle_connections;
    if accounts.senders.len() >= need_pairs && accounts.idle.len() >= need_idle {
        return Ok(accounts);
    }
    let store = SqliteStore::open(&data.join("relay.db")).await.context("opening the bench store")?;
    let generation = now_ms();
    if accounts.senders.len() < need_pairs {
        eprintln!("provisioning {need_pairs} sender/receiver pairs …");
        accounts.senders = provision(&store, &format!("bs{generation}x"), need_pairs, 1, "senders").await?;
        accounts.receivers = provision(&store, &format!("br{generation}x"), need_pairs, 1, "receivers").await?;
    }
    if accounts.idle.len() < need_idle {
        eprintln!("provisioning {need_idle} devices for the idle phase (one durable write each) …");
        accounts.idle = provision(&store, &format!("bi{generation}x"), need_idle, opts.devices_per_account, "idle").await?;
    }
    drop(store);
    std::fs::write(&file, serde_json::to_vec(&accounts)?).with_context(|| format!("writing {}", file.display()))?;
    Ok(accounts)
}

/// A relay child process and what it printed on start.
struct RelayProcess {
    child: Child,
    pid: u32,
    url: String,
    fingerprint: String,
    noise_key: String,
}

async fn start_relay(exe: &Path, config: &Path, data: &Path) -> anyhow::Result<RelayProcess> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(data.join("relay.log"))?;
    let mut child = Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--data")
        .arg(data)
        .env("IMFREE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .context("starting the relay (imfree serve)")?;
    let pid = child.id().context("the relay exited at once")?;
    let stdout = child.stdout.take().context("no relay stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let (mut url, mut fingerprint, mut noise_key) = (None, None, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while noise_key.is_none() {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .context("the relay did not start within 60 s (see relay.log in the data directory)")??
            .context("the relay exited during start-up (see relay.log in the data directory)")?;
        if let Some(u) = line.strip_prefix("imfree relay listening on ") {
            url = Some(u.trim().to_owned());
        } else if let Some(f) = line.strip_prefix("tls certificate sha256 ") {
            fingerprint = f.split_whitespace().next().map(str::to_owned);
        } else if let Some(k) = line.strip_prefix("relay noise key ") {
            noise_key = Some(k.trim().to_owned());
        }
    }
    // Keep reading stdout so the relay never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(RelayProcess {
        child,
        pid,
        url: url.context("the relay did not print its URL")?,
        fingerprint: fingerprint.context("the relay did not print its certificate fingerprint (is TLS off?)")?,
        noise_key: noise_key.unwrap_or_default(),
    })
}

/// A load generator child with its stdin (commands) and stdout (events).
struct LoadProcess {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    events: Lines<BufReader<ChildStdout>>,
}

impl LoadProcess {
    async fn start(exe: &Path, spec: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(exe)
            .args(["bench", "load", "--spec"])
            .arg(spec)
            .env("IMFREE_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the load generator")?;
        let pid = child.id().context("the load generator exited at once")?;
        let stdin = child.stdin.take().context("no load generator stdin")?;
        let events = BufReader::new(child.stdout.take().context("no load generator stdout")?).lines();
        Ok(LoadProcess { child, pid, stdin, events })
    }

    async fn next_event(&mut self, timeout: Duration) -> anyhow::Result<LoadEvent> {
        let line = tokio::time::timeout(timeout, self.events.next_line())
            .await
            .context("the load generator did not report in time")??
            .context("the load generator exited early (its errors are above)")?;
        serde_json::from_str(&line).with_context(|| format!("unexpected line from the load generator: {line}"))
    }

    async fn command(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }
}

#[derive(Debug, Default, Serialize)]
struct IdleResult {
    connections: usize,
    connect_seconds: f64,
    rss_before_kib: u64,
    rss_after_kib: u64,
    kib_per_connection: f64,
}

#[derive(Debug, Default, Serialize)]
struct PhaseCpu {
    relay_cpu_seconds: f64,
    relay_cpu_us_per_message: f64,
    relay_cores_busy: f64,
    load_generator_cpu_seconds: f64,
}

#[derive(Debug, Default, Serialize)]
struct BenchResults {
    machine: String,
    cores: usize,
    clock_ticks_per_second: u64,
    pairs: usize,
    payload_bytes: usize,
    window: usize,
    throughput: Option<TrafficReport>,
    throughput_cpu: Option<PhaseCpu>,
    latency: Option<TrafficReport>,
    latency_cpu: Option<PhaseCpu>,
    idle: Option<IdleResult>,
}

fn machine_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())))
        .unwrap_or_else(|| "unknown".into())
}

fn phase_cpu(ticks: u64, relay: (ProcSample, ProcSample), load: (ProcSample, ProcSample), messages: u64, seconds: f64) -> PhaseCpu {
    let secs = |a: ProcSample, b: ProcSample| b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / ticks as f64;
    let relay_s = secs(relay.0, relay.1);
    PhaseCpu {
        relay_cpu_seconds: relay_s,
        relay_cpu_us_per_message: if messages > 0 { relay_s * 1e6 / messages as f64 } else { 0.0 },
        relay_cores_busy: if seconds > 0.0 { relay_s / seconds } else { 0.0 },
        load_generator_cpu_seconds: secs(load.0, load.1),
    }
}

async fn orchestrate(opts: BenchOptions) -> anyhow::Result<()> {
    let raised = rlimit::increase_nofile_limit(u64::MAX).context("raising the open-file limit")?;
    eprintln!("open-file limit {raised} (inherited by the relay)");
    let exe = std::env::current_exe().context("locating the imfree binary")?;
    let (data, temporary) = match &opts.data {
        Some(d) => (d.clone(), false),
        None => (std::env::temp_dir().join(format!("imfree-bench-{}-{}", std::process::id(), now_ms())), true),
    };
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let result = bench_in(&opts, &exe, &data).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&data);
    }
    let results = result?;
    print_summary(&results);
    let json = serde_json::to_string_pretty(&results)?;
    if let Some(path) = &opts.json {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
        println!("results written to {}", path.display());
    }
    Ok(())
}

async fn bench_in(opts: &BenchOptions, exe: &Path, data: &Path) -> anyhow::Result<BenchResults> {
    let config_path = data.join("bench-relay.toml");
    let config_text = toml::to_string(&bench_config(data)).context("writing the bench relay config")?;
    std::fs::write(&config_path, config_text)?;
    let accounts = accounts_for(data, opts).await?;
    let ticks = clock_ticks().await;
    let mut results = BenchResults {
        machine: machine_name(),
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        clock_ticks_per_second: ticks,
        pairs: opts.pairs,
        payload_bytes: opts.payload_bytes,
        window: opts.window,
        ..BenchResults::default()
    };

    if opts.idle_connections > 0 {
        results.idle = Some(idle_phase(opts, exe, data, &config_path, &accounts).await?);
    }
    if opts.messages > 0 {
        traffic_phases(opts, exe, data, &config_path, &accounts, ticks, &mut results).await?;
    }
    Ok(results)
}

async fn idle_phase(opts: &BenchOptions, exe: &Path, data: &Path, config: &Path, accounts: &Accounts) -> anyhow::Result<IdleResult> {
    eprintln!("idle phase: {} authenticated connections …", opts.idle_connections);
    let mut relay = start_relay(exe, config, data).await?;
    // Let start-up allocations settle before the baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = proc_rss_kib(relay.pid)?;
    let spec = LoadSpec {
        server: relay.url.clone(),
        tls_fingerprint: relay.fingerprint.clone(),
        relay_key: relay.noise_key.clone(),
        phase: Phase::Idle { devices: accounts.idle[..opts.idle_connections].to_vec() },
    };
    let spec_path = data.join("bench-load-idle.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec)?)?;
    let mut load = LoadProcess::start(exe, &spec_path).await?;
    let (connected, seconds) = match load.next_event(Duration::from_secs(600)).await? {
        LoadEvent::IdleReady { connected, seconds } => (connected, seconds),
        other => bail!("unexpected event from the load generator: {other:?}"),
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = proc_rss_kib(relay.pid)?;
    // Stop the relay first: closing 10,000 connections makes it record each device's last-seen time.
    let _ = relay.child.kill().await;
    drop(load.stdin);
    let _ = tokio::time::timeout(Duration::from_secs(30), load.child.wait()).await;
    let _ = load.child.kill().await;
    Ok(IdleResult {
        connections: connected,
        connect_seconds: seconds,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        kib_per_connection: rss_after.saturating_sub(rss_before) as f64 / connected.max(1) as f64,
    })
}

async fn traffic_phases(
    opts: &BenchOptions,
    exe: &Path,
    data: &Path,
    config: &Path,
    accounts: &Accounts,
    ticks: u64,
    results: &mut BenchResults,
) -> anyhow::Result<()> {
    eprintln!("throughput phase: {} pairs, {} messages of {} bytes …", opts.pairs, opts.messages, opts.payload_bytes);
    let mut relay = start_relay(exe, config, data).await?;
    let spec = LoadSpec {
        server: relay.url.clone(),
        tls_fingerprint: relay.fingerprint.clone(),
        relay_key: relay.noise_key.clone(),
        phase: Phase::Traffic {
            senders: accounts.senders[..opts.pairs].to_vec(),
            receivers: accounts.receivers[..opts.pairs].to_vec(),
            messages: opts.messages,
            window: opts.window,
            payload_bytes: opts.payload_bytes,
            max_seconds: opts.max_seconds,
            latency_seconds: opts.latency_seconds,
        },
    };
    let spec_path = data.join("bench-load-traffic.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec)?)?;
    let mut load = LoadProcess::start(exe, &spec_path).await?;
    match load.next_event(Duration::from_secs(300)).await? {
        LoadEvent::Ready { .. } => {}
        other => bail!("unexpected event from the load generator: {other:?}"),
    }

    let relay_before = proc_cpu(relay.pid)?;
    let load_before = proc_cpu(load.pid)?;
    load.command("go").await?;
    let report = match load.next_event(Duration::from_secs(opts.max_seconds + 120)).await? {
        LoadEvent::Throughput(r) => r,
        other => bail!("unexpected event from the load generator: {other:?}"),
    };
    // The last acks are committed just after the last delivery: give them a moment to be counted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let relay_after = proc_cpu(relay.pid)?;
    let load_after = proc_cpu(load.pid)?;
    results.throughput_cpu = Some(phase_cpu(ticks, (relay_before, relay_after), (load_before, load_after), report.delivered, report.seconds));
    let measured = report.delivered_per_second;
    results.throughput = Some(report);

    let rate = opts.rate.unwrap_or(measured / 2.0).max(1.0);
    eprintln!("latency phase: {rate:.0} messages/s for {} s …", opts.latency_seconds);
    let relay_before = proc_cpu(relay.pid)?;
    let load_before = proc_cpu(load.pid)?;
    load.command(&format!("latency {rate}")).await?;
    let report = match load.next_event(Duration::from_secs(opts.latency_seconds + 120)).await? {
        LoadEvent::Latency(r) => r,
        other => bail!("unexpected event from the load generator: {other:?}"),
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let relay_after = proc_cpu(relay.pid)?;
    let load_after = proc_cpu(load.pid)?;
    results.latency_cpu = Some(phase_cpu(ticks, (relay_before, relay_after), (load_before, load_after), report.delivered, report.seconds));
    results.latency = Some(report);

    let _ = relay.child.kill().await;
    drop(load.stdin);
    let _ = tokio::time::timeout(Duration::from_secs(30), load.child.wait()).await;
    let _ = load.child.kill().await;
    Ok(())
}

fn print_summary(r: &BenchResults) {
    println!("imfree relay benchmark — {} × {} ({} pairs, {}-byte payloads, window {})", r.cores, r.machine, r.pairs, r.payload_bytes, r.window);
    if let (Some(t), Some(c)) = (&r.throughput, &r.throughput_cpu) {
        println!(
            "throughput: {:.0} messages/s delivered ({:.0} accepted/s); {} sent, {} accepted, {} delivered, {} duplicates, {} errors in {:.2} s",
            t.delivered_per_second, t.accepted_per_second, t.sent, t.accepted, t.delivered, t.duplicates, t.errors, t.seconds
        );
        println!(
            "  relay CPU {:.1} µs per message ({:.2} s CPU, {:.2} cores busy); load generator CPU {:.2} s",
            c.relay_cpu_us_per_message, c.relay_cpu_seconds, c.relay_cores_busy, c.load_generator_cpu_seconds
        );
        println!("  latency at full load: p50 {} µs, p99 {} µs, max {} µs", t.latency.p50_us, t.latency.p99_us, t.latency.max_us);
    }
    if let (Some(t), Some(c)) = (&r.latency, &r.latency_cpu) {
        println!(
            "latency at {:.0} messages/s ({:.0} delivered/s, {} samples): p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
            t.target_rate, t.delivered_per_second, t.latency.samples, t.latency.p50_us, t.latency.p90_us, t.latency.p99_us, t.latency.p999_us, t.latency.max_us
        );
        println!("  relay CPU {:.1} µs per message ({:.2} cores busy)", c.relay_cpu_us_per_message, c.relay_cores_busy);
    }
    if let Some(i) = &r.idle {
        println!(
            "idle: {} authenticated connections in {:.1} s; relay RSS {} KiB → {} KiB: {:.1} KiB per connection",
            i.connections, i.connect_seconds, i.rss_before_kib, i.rss_after_kib, i.kib_per_connection
        );
    }
}

// ----- the load generator process -----

mod load {
    //! The load generator: connects the clients, drives the traffic, measures what arrives. Reports on stdout,
    //! takes commands on stdin.

    use super::*;
    use imfree_proto::Send as SendFrame;

    /// Payload layout: send time (ns since the generator started) and a per-pair sequence number, then filler.
    const HEADER: usize = 16;

    struct Shared {
        server: String,
        fingerprint: String,
        relay_key: [u8; 32],
        /// Time base for the timestamps in payloads (one process, so one clock).
        base: Instant,
    }

    fn emit(event: &LoadEvent) {
        if let Ok(line) = serde_json::to_string(event) {
            println!("{line}");
        }
    }

    async fn connect(shared: &Shared, d: &BenchDevice) -> anyhow::Result<Connection> {
        let keys = DeviceKeys::from_secrets(unhex32(&d.signing_seed)?, unhex32(&d.static_secret)?);
        let mut attempt = 0;
        loop {
            match Connection::resume(&shared.server, Some(&shared.fingerprint), shared.relay_key, &keys, &d.user, &d.device, &d.token, false).await {
                Ok((conn, _welcome)) => return Ok(conn),
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "connect failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => return Err(anyhow::anyhow!("connecting {} as device {}: {e}", d.user, d.device)),
            }
        }
    }

    /// Connect many devices, at most `parallel` handshakes at a time.
    async fn connect_all(shared: &Arc<Shared>, devices: Vec<BenchDevice>, parallel: usize) -> anyhow::Result<Vec<Connection>> {
        let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
        let mut tasks = Vec::with_capacity(devices.len());
        for d in devices {
            let shared = Arc::clone(shared);
            let sem = Arc::clone(&sem);
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                connect(&shared, &d).await
            }));
        }
        let mut conns = Vec::with_capacity(tasks.len());
        for t in tasks {
            conns.push(t.await??);
        }
        Ok(conns)
    }

    pub(super) async fn run(spec_path: &Path) -> anyhow::Result<()> {
        let limit = rlimit::increase_nofile_limit(u64::MAX).context("raising the open-file limit")?;
        let spec: LoadSpec = serde_json::from_slice(&std::fs::read(spec_path).with_context(|| format!("reading {}", spec_path.display()))?)?;
        let shared = Arc::new(Shared {
            server: spec.server,
            fingerprint: spec.tls_fingerprint,
            relay_key: unhex32(&spec.relay_key)?,
            base: Instant::now(),
        });
        let mut commands = BufReader::new(tokio::io::stdin()).lines();
        match spec.phase {
            Phase::Idle { devices } => {
                if devices.len() as u64 + 64 > limit {
                    bail!("{} connections need more open files than the limit of {limit}", devices.len());
                }
                let started = Instant::now();
                let conns = connect_all(&shared, devices, 64).await?;
                emit(&LoadEvent::IdleReady { connected: conns.len(), seconds: started.elapsed().as_secs_f64() });
                // Hold them, unread, until the orchestrator closes stdin.
                while let Ok(Some(_)) = commands.next_line().await {}
                drop(conns);
                Ok(())
            }
            Phase::Traffic { senders, receivers, messages, window, payload_bytes, max_seconds, latency_seconds } => {
                let started = Instant::now();
                let pairs = senders.len().min(receivers.len());
                let mut all = senders;
                all.extend(receivers);
                let names: Vec<String> = all[pairs..].iter().map(|r| r.user.clone()).collect();
                let mut conns = connect_all(&shared, all, 32).await?;
                let receivers: Vec<(Connection, String)> = conns.split_off(pairs).into_iter().zip(names).collect();
                let mut pair_conns: Vec<(Connection, Connection, String)> =
                    conns.into_iter().zip(receivers).map(|(s, (r, name))| (s, r, name)).collect();
                let payload = payload_bytes.max(HEADER);
                // Warm-up: route caches, contacts, the first commits.
                let (next, _) = traffic(&shared, pair_conns, TrafficPlan::Burst { per_pair: 32, window }, payload, 30).await?;
                pair_conns = next;
                emit(&LoadEvent::Ready { connected: pairs * 2, seconds: started.elapsed().as_secs_f64() });
                while let Ok(Some(line)) = commands.next_line().await {
                    let line = line.trim();
                    if line == "go" {
                        let per_pair = messages.div_ceil(pairs as u64);
                        let (next, report) = traffic(&shared, pair_conns, TrafficPlan::Burst { per_pair, window }, payload, max_seconds).await?;
                        pair_conns = next;
                        emit(&LoadEvent::Throughput(report));
                    } else if let Some(rate) = line.strip_prefix("latency ") {
                        let rate: f64 = rate.trim().parse().context("latency RATE")?;
                        let plan = TrafficPlan::Paced { per_second: rate / pairs as f64, seconds: latency_seconds };
                        let (next, mut report) = traffic(&shared, pair_conns, plan, payload, latency_seconds + 30).await?;
                        pair_conns = next;
                        report.target_rate = rate;
                        emit(&LoadEvent::Latency(report));
                    }
                }
                drop(pair_conns);
                Ok(())
            }
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum TrafficPlan {
        /// Send `per_pair` messages per pair as fast as `window` unaccepted sends allow.
        Burst { per_pair: u64, window: usize },
        /// Send at `per_second` per pair for `seconds`.
        Paced { per_second: f64, seconds: u64 },
    }

    #[derive(Default)]
    struct SenderOutcome {
        sent: u64,
        accepted: u64,
        errors: u64,
        last_accept: Option<Instant>,
    }

    #[derive(Default)]
    struct ReceiverOutcome {
        delivered: u64,
        duplicates: u64,
        last_delivery: Option<Instant>,
        latencies_us: Vec<u32>,
    }

    type Pair = (Connection, Connection, String);

    /// Run one plan over all pairs; give the connections back with the report.
    async fn traffic(shared: &Arc<Shared>, pairs: Vec<Pair>, plan: TrafficPlan, payload: usize, max_seconds: u64) -> anyhow::Result<(Vec<Pair>, TrafficReport)> {
        let n = pairs.len();
        let start = Instant::now();
        let deadline = start + Duration::from_secs(max_seconds);
        // Latency samples from the first second of a paced run are warm-up.
        let record_after = match plan {
            TrafficPlan::Paced { .. } => start + Duration::from_secs(1),
            TrafficPlan::Burst { .. } => start,
        };
        let run_id = id_entropy();
        let mut tasks = Vec::with_capacity(n);
        for (i, (sender, receiver, to)) in pairs.into_iter().enumerate() {
            let (done_tx, done_rx) = watch::channel(None::<u64>);
            let shared_s = Arc::clone(shared);
            let shared_r = Arc::clone(shared);
            let offset = Duration::from_secs_f64(match plan {
                TrafficPlan::Paced { per_second, .. } => (i as f64 / n as f64) / per_second.max(1e-9),
                TrafficPlan::Burst { .. } => 0.0,
            });
            let entropy = run_id ^ ((i as u128) << 40);
            let send = tokio::spawn(async move {
                let mut sender = sender;
                let out = send_loop(&shared_s, &mut sender, &to, plan, payload, entropy, start + offset, deadline).await;
                let _ = done_tx.send(Some(out.as_ref().map(|o| o.accepted).unwrap_or(0)));
                (sender, to, out)
            });
            let recv = tokio::spawn(async move {
                let mut receiver = receiver;
                let out = receive_loop(&shared_r, &mut receiver, done_rx, record_after, deadline + Duration::from_secs(10)).await;
                (receiver, out)
            });
            tasks.push((send, recv));
        }
        let mut back = Vec::with_capacity(n);
        let mut report = TrafficReport::default();
        let mut latencies = Vec::new();
        let mut last_accept = start;
        let mut last_delivery = start;
        for (send, recv) in tasks {
            let (sender, to, s) = send.await?;
            let (receiver, r) = recv.await?;
            let s = s?;
            let r = r?;
            report.sent += s.sent;
            report.accepted += s.accepted;
            report.errors += s.errors;
            report.delivered += r.delivered;
            report.duplicates += r.duplicates;
            last_accept = last_accept.max(s.last_accept.unwrap_or(start));
            last_delivery = last_delivery.max(r.last_delivery.unwrap_or(start));
            latencies.extend(r.latencies_us);
            back.push((sender, receiver, to));
        }
        report.seconds = last_delivery.duration_since(start).as_secs_f64();
        let accept_seconds = last_accept.duration_since(start).as_secs_f64();
        report.delivered_per_second = if report.seconds > 0.0 { report.delivered as f64 / report.seconds } else { 0.0 };
        report.accepted_per_second = if accept_seconds > 0.0 { report.accepted as f64 / accept_seconds } else { 0.0 };
        report.latency = Percentiles::of(latencies);
        Ok((back, report))
    }

    /// Handle one frame on a sender's connection.
    fn on_sender_frame(frame: Frame, outstanding: &mut u64, out: &mut SenderOutcome) {
        match frame.body {
            FrameBody::Accepted(_) => {
                *outstanding = outstanding.saturating_sub(1);
                out.accepted += 1;
                out.last_accept = Some(Instant::now());
            }
            FrameBody::Error(e) => {
                if e.reference.is_some() {
                    *outstanding = outstanding.saturating_sub(1);
                }
                out.errors += 1;
                tracing::warn!(code = %e.code.as_str(), "relay refused a send");
            }
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_loop(
        shared: &Shared,
        conn: &mut Connection,
        to: &str,
        plan: TrafficPlan,
        payload: usize,
        entropy: u128,
        first_due: Instant,
        deadline: Instant,
    ) -> anyhow::Result<SenderOutcome> {
        let mut out = SenderOutcome::default();
        let mut outstanding: u64 = 0;
        let mut body = vec![0x5a_u8; payload];
        let now_unix = now_ms() as u64;
        let mut make = |seq: u64, shared: &Shared| {
            let ns = shared.base.elapsed().as_nanos() as u64;
            body[..8].copy_from_slice(&ns.to_le_bytes());
            body[8..16].copy_from_slice(&seq.to_le_bytes());
            Frame::new(FrameBody::Send(SendFrame {
                id: EnvelopeId::from_parts(now_unix, entropy.wrapping_add(u128::from(seq))),
                to: Recipient::User(to.to_owned()),
                mime: imfree_proto::mime::E2E.into(),
                data: Payload(body.clone()),
                payloads: vec![],
                refers: None,
            }))
        };
        let grace = deadline + Duration::from_secs(10);
        match plan {
            TrafficPlan::Burst { per_pair, window } => {
                let window = window.max(1) as u64;
                loop {
                    let stop_sending = Instant::now() >= deadline;
                    // Refill in batches (half a window) so that each write carries many frames.
                    if !stop_sending && out.sent < per_pair && outstanding <= window / 2 {
                        while outstanding < window && out.sent < per_pair {
                            conn.feed(&make(out.sent, shared)).await?;
                            out.sent += 1;
                            outstanding += 1;
                        }
                        conn.flush().await?;
                    }
                    if outstanding == 0 && (out.sent >= per_pair || stop_sending) {
                        break;
                    }
                    let frame = tokio::time::timeout_at(grace.into(), conn.recv())
                        .await
                        .context("the relay stopped accepting sends")??;
                    on_sender_frame(frame, &mut outstanding, &mut out);
                    for _ in 0..1024 {
                        match conn.recv().now_or_never() {
                            Some(frame) => on_sender_frame(frame?, &mut outstanding, &mut out),
                            None => break,
                        }
                    }
                }
            }
            TrafficPlan::Paced { per_second, seconds } => {
                let interval = Duration::from_secs_f64(1.0 / per_second.max(1e-3));
                let end = first_due.min(deadline) + Duration::from_secs(seconds);
                let mut due = first_due;
                while due < end {
                    tokio::select! {
                        frame = conn.recv() => on_sender_frame(frame?, &mut outstanding, &mut out),
                        _ = tokio::time::sleep_until(due.into()) => {
                            let now = Instant::now();
                            while due <= now && due < end {
                                conn.feed(&make(out.sent, shared)).await?;
                                out.sent += 1;
                                outstanding += 1;
                                due += interval;
                            }
                            conn.flush().await?;
                        }
                    }
                }
                while outstanding > 0 {
                    let frame = tokio::time::timeout_at(grace.into(), conn.recv())
                        .await
                        .context("the relay stopped accepting sends")??;
                    on_sender_frame(frame, &mut outstanding, &mut out);
                }
            }
        }
        Ok(out)
    }

    async fn receive_loop(
        shared: &Shared,
        conn: &mut Connection,
        mut done: watch::Receiver<Option<u64>>,
        record_after: Instant,
        deadline: Instant,
    ) -> anyhow::Result<ReceiverOutcome> {
        let mut out = ReceiverOutcome::default();
        let mut seen: Vec<bool> = Vec::new();
        let mut acks = Vec::with_capacity(1024);
        let record_after_ns = record_after.duration_since(shared.base).as_nanos() as u64;
        let mut handle = |frame: Frame, out: &mut ReceiverOutcome, acks: &mut Vec<EnvelopeId>| {
            if let FrameBody::Deliver(d) = frame.body {
                let now_ns = shared.base.elapsed().as_nanos() as u64;
                acks.push(d.id);
                let data = &d.data.0;
                if data.len() < HEADER {
                    return;
                }
                let sent_ns = u64::from_le_bytes(data[..8].try_into().unwrap_or_default());
                let seq = u64::from_le_bytes(data[8..16].try_into().unwrap_or_default()) as usize;
                if seq >= seen.len() {
                    seen.resize((seq + 1).max(seen.len() * 2), false);
                }
                if seen[seq] {
                    out.duplicates += 1;
                    return;
                }
                seen[seq] = true;
                out.delivered += 1;
                out.last_delivery = Some(Instant::now());
                if sent_ns >= record_after_ns {
                    out.latencies_us.push((now_ns.saturating_sub(sent_ns) / 1000).min(u64::from(u32::MAX)) as u32);
                }
            }
        };
        let mut expected: Option<u64> = None;
        loop {
            if expected.is_some_and(|e| out.delivered >= e) {
                break;
            }
            tokio::select! {
                frame = conn.recv() => {
                    handle(frame?, &mut out, &mut acks);
                    for _ in 0..1024 {
                        match conn.recv().now_or_never() {
                            Some(frame) => handle(frame?, &mut out, &mut acks),
                            None => break,
                        }
                    }
                    if !acks.is_empty() {
                        conn.send(&Frame::new(FrameBody::Ack(Ack { ids: std::mem::take(&mut acks) }))).await?;
                    }
                }
                changed = done.changed(), if expected.is_none() => {
                    expected = *done.borrow();
                    if changed.is_err() && expected.is_none() {
                        bail!("the sender task ended without reporting");
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    tracing::warn!(delivered = out.delivered, "receiver gave up waiting at the deadline");
                    break;
                }
            }
        }
        Ok(out)
    }
}
