//! Starting the real relay and running real client commands.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The `imfree` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_imfree")
}

/// A free loopback port (bound and released; good enough on a machine where nothing else races for it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("no free port")
}

/// A relay process.
pub struct RelayProc {
    child: Option<Child>,
    /// wss://127.0.0.1:PORT
    pub url: String,
    /// TLS fingerprint it printed.
    pub fingerprint: String,
    /// Noise key it printed.
    pub noise_key: String,
    /// Its data dir.
    pub data: PathBuf,
    port: u16,
    config: Option<PathBuf>,
    log: PathBuf,
}

impl RelayProc {
    /// Start a relay with `data` on a free port.
    pub fn start(data: &Path, config: Option<&Path>) -> RelayProc {
        Self::start_on(data, free_port(), config)
    }

    /// Start a relay on a given port.
    pub fn start_on(data: &Path, port: u16, config: Option<&Path>) -> RelayProc {
        let log = data.with_extension("log");
        let mut relay = RelayProc {
            child: None,
            url: String::new(),
            fingerprint: String::new(),
            noise_key: String::new(),
            data: data.to_path_buf(),
            port,
            config: config.map(Path::to_path_buf),
            log,
        };
        relay.spawn();
        relay
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("relay log");
        let mut cmd = Command::new(bin());
        cmd.arg("serve").arg("--data").arg(&self.data).arg("--listen").arg(format!("127.0.0.1:{}", self.port));
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        cmd.env("IMFREE_LOG", "info").stdout(Stdio::piped()).stderr(Stdio::from(log)).stdin(Stdio::null());
        let mut child = cmd.spawn().expect("spawn imfree serve");
        let stdout = child.stdout.take().expect("relay stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut lines = Vec::new();
        while !lines.iter().any(|l: &String| l.starts_with("relay noise key ")) {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => lines.push(line),
                Err(_) => panic!("relay did not start: {lines:?}\nlog:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default()),
            }
        }
        let field = |prefix: &str| {
            lines.iter().find_map(|l| l.strip_prefix(prefix)).map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned()).unwrap_or_default()
        };
        self.url = field("imfree relay listening on ");
        self.fingerprint = field("tls certificate sha256 ");
        self.noise_key = field("relay noise key ");
        self.child = Some(child);
    }

    /// SIGKILL the relay (no graceful shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port and data dir.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The relay's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run `imfree client --home HOME ARGS…`, feeding `stdin`.
pub fn client_with(home: &Path, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.arg("client").arg("--home").arg(home).args(args).env("IMFREE_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn imfree client");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    child.wait_with_output().expect("imfree client output")
}

/// Run a client command with no input.
pub fn client(home: &Path, args: &[&str]) -> Output {
    client_with(home, args, "", &[])
}

/// Run a client command that must succeed; returns stdout.
pub fn ok(home: &Path, args: &[&str]) -> String {
    let out = client(home, args);
    assert!(out.status.success(), "imfree client {args:?} failed: {}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Register `user` (password from stdin) on `relay`.
pub fn register(relay: &RelayProc, home: &Path, user: &str, password: &str) {
    let out = client_with(home, &["register", "--server", &relay.url, "--user", user, "--password-stdin"], &format!("{password}\n"), &[]);
    assert!(out.status.success(), "register {user}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Messages printed by `recv --json`.
pub fn parse_json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"))).collect()
}

/// A temporary directory kept for the test's lifetime.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("imfree-it-").tempdir().expect("tempdir")
}

/// The example plugins and test guests (examples/plugins workspace), built once per test process for
/// wasm32-wasip2; returns the .wasm of `crate_name`.
pub fn guest_wasm(crate_name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guests");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--locked", "--target", "wasm32-wasip2", "--profile", "wasm", "--manifest-path"])
            .arg(root.join("examples/plugins/Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .expect("run cargo");
        assert!(out.status.success(), "building the plugins failed (is wasm32-wasip2 installed?):\n{}", String::from_utf8_lossy(&out.stderr));
        target.join("wasm32-wasip2/wasm")
    });
    dir.join(format!("{}.wasm", crate_name.replace('-', "_")))
}

/// Put a built plugin and its manifest into `dir/<name>/`; returns the .wasm path relative to `dir`.
pub fn install_plugin(dir: &Path, name: &str) -> String {
    let target = dir.join(name);
    std::fs::create_dir_all(&target).unwrap();
    let file = format!("{}.wasm", name.replace('-', "_"));
    std::fs::copy(guest_wasm(name), target.join(&file)).unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins").join(name).join("plugin.toml");
    std::fs::copy(manifest, target.join("plugin.toml")).unwrap();
    format!("{name}/{file}")
}

/// Wait up to 120 s for `done` (generous: CI runs the process tests two at a time on two cores, which other work may
/// share; a bundled plugin's first start compiles it with Cranelift in a debug build).
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plain HTTP/1.1 server on 127.0.0.1 for the test's lifetime: answers every request with 200, the request line
/// echoed in `x-echo` and the body "hello from loopback", and counts what it served.
pub struct LoopbackHttp {
    /// Its port on 127.0.0.1.
    pub port: u16,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LoopbackHttp {
    /// Start it on a free port.
    pub fn start() -> LoopbackHttp {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the loopback HTTP server");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (served, stopping) = (hits.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(10)));
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&request);
                let line = head.lines().next().unwrap_or("").replace(' ', "_");
                served.fetch_add(1, Ordering::SeqCst);
                let body = "hello from loopback";
                let _ = write!(conn, "HTTP/1.1 200 OK\r\nx-echo: {line}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            }
        });
        LoopbackHttp { port, hits, stop }
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for LoopbackHttp {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Install the host's probe test guest (host/plugin-host/tests/guests/probe: every hook; each `/command` makes one
/// host call and answers with its result) as plugin `name`, with `capabilities` as its manifest's request.
pub fn install_probe(dir: &std::path::Path, name: &str, capabilities: &str) -> String {
    let target = dir.join(name);
    std::fs::create_dir_all(&target).unwrap();
    std::fs::copy(guest_wasm("guest-probe"), target.join("probe.wasm")).unwrap();
    std::fs::write(
        target.join("plugin.toml"),
        format!(
            r#"
name = "{name}"
version = "1.2.3"
api = "0.3.0"
scopes = ["bot", "client"]
hooks = ["incoming-message", "outgoing-message", "status-change", "command", "action", "timer"]
[capabilities]
{capabilities}
"#
        ),
    )
    .unwrap();
    format!("{name}/probe.wasm")
}

/// The bodies of the messages from `sender`.
pub fn bodies_from(messages: &[serde_json::Value], sender: &str) -> Vec<String> {
    messages.iter().filter(|m| m["from"] == sender).map(|m| m["body"].as_str().unwrap_or_default().to_owned()).collect()
}

/// Everything `home` receives (`recv --json`) until `done` says it has enough (see [`wait_until`]).
pub fn recv_until(home: &Path, what: &str, mut done: impl FnMut(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    wait_until(what, || {
        seen.extend(parse_json_lines(&ok(home, &["recv", "--json"])));
        done(&seen)
    });
    seen
}

/// Write `dir/imfree.toml`: bots living under `dir/bots`, then `plugins` (the `[plugins.<name>]` tables). Returns its
/// path, for [`RelayProc::start`].
pub fn bot_config(dir: &Path, plugins: &str) -> PathBuf {
    let config = dir.join("imfree.toml");
    std::fs::write(&config, format!("[plugin_host]\nbots_dir = \"{}\"\n\n{plugins}", dir.join("bots").display())).unwrap();
    config
}
