//! Shared test support: building the guests, a recording message sink, a harness around `PluginHost`.

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use imfree_plugin_host::host::HostServices;
use imfree_plugin_host::*;

/// Where the built guests are, building them first (once per test process). Cargo's own lock on the separate
/// target directory serialises concurrent test processes.
fn guest_dir() -> &'static Path {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guests");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let output = Process::new(cargo)
            .args(["build", "--locked", "--target", "wasm32-wasip2", "--profile", "wasm", "--manifest-path"])
            .arg(root.join("examples/plugins/Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .map_err(|e| format!("could not run cargo: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "building the guest components failed. Is the target installed? Run `rustup target add wasm32-wasip2`.\n{}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(target.join("wasm32-wasip2/wasm"))
    });
    match built {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    }
}

/// The bytes of a built guest (crate name).
pub fn guest(crate_name: &str) -> Vec<u8> {
    let path = guest_dir().join(format!("{}.wasm", crate_name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Path of a built guest.
pub fn guest_path(crate_name: &str) -> PathBuf {
    guest_dir().join(format!("{}.wasm", crate_name.replace('-', "_")))
}

/// One thing a plugin sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub bot: String,
    pub kind: &'static str,
    pub conversation: String,
    pub text: String,
}

/// Records what plugins send.
#[derive(Default)]
pub struct RecordingSink(Mutex<Vec<Sent>>);

impl RecordingSink {
    pub fn sent(&self) -> Vec<Sent> {
        self.0.lock().unwrap().clone()
    }
    pub fn texts(&self) -> Vec<String> {
        self.sent().into_iter().map(|s| s.text).collect()
    }
    fn push(&self, bot: &PluginIdentity, kind: &'static str, conversation: &str, text: String) -> String {
        let mut all = self.0.lock().unwrap();
        all.push(Sent {
            bot: bot.name.clone(),
            kind,
            conversation: conversation.into(),
            text,
        });
        format!("m{}", all.len())
    }
}

#[async_trait]
impl MessageSink for RecordingSink {
    async fn post(&self, bot: &PluginIdentity, conversation: &str, text: &str) -> Result<String, SinkError> {
        Ok(self.push(bot, "post", conversation, text.into()))
    }
    async fn reply(&self, bot: &PluginIdentity, conversation: &str, id: &str, text: &str) -> Result<String, SinkError> {
        Ok(self.push(bot, "reply", conversation, format!("{id}: {text}")))
    }
    async fn react(&self, bot: &PluginIdentity, conversation: &str, id: &str, emoji: &str) -> Result<(), SinkError> {
        self.push(bot, "react", conversation, format!("{id}: {emoji}"));
        Ok(())
    }
    async fn post_card(&self, bot: &PluginIdentity, conversation: &str, card: &Card) -> Result<String, SinkError> {
        let buttons: Vec<_> = card.buttons.iter().map(|b| b.id.as_str()).collect();
        Ok(self.push(
            bot,
            "card",
            conversation,
            format!("{} [{}]", card.title, buttons.join(",")),
        ))
    }
}

/// A kv backend whose reads take `delay` (for the slow-host-calls case).
pub struct SlowKv {
    pub inner: MemoryKv,
    pub delay: Duration,
}

#[async_trait]
impl KvBackend for SlowKv {
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        tokio::time::sleep(self.delay).await;
        self.inner.get(ns, key).await
    }
    async fn set(&self, ns: &str, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        self.inner.set(ns, key, value).await
    }
    async fn delete(&self, ns: &str, key: &str) -> Result<(), KvError> {
        self.inner.delete(ns, key).await
    }
    async fn list_keys(&self, ns: &str, prefix: &str) -> Result<Vec<String>, KvError> {
        self.inner.list_keys(ns, prefix).await
    }
    async fn usage(&self, ns: &str) -> Result<u64, KvError> {
        self.inner.usage(ns).await
    }
}

pub struct Harness {
    pub host: PluginHost,
    pub sink: Arc<RecordingSink>,
    pub incidents: Arc<RecordingIncidents>,
    pub clock: Arc<ManualClock>,
}

/// A harness whose compiled components are cached across tests (debug builds compile slowly).
pub fn harness() -> Harness {
    harness_with(
        Arc::new(MemoryKv::new()),
        Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")),
    )
}

pub fn harness_with(kv: Arc<dyn KvBackend>, cache_dir: Option<PathBuf>) -> Harness {
    harness_full(kv, cache_dir, Vec::new())
}

/// A cached harness whose plugins' outbound HTTPS also trusts these certificates (DER).
pub fn harness_trusting(roots: Vec<Vec<u8>>) -> Harness {
    harness_full(
        Arc::new(MemoryKv::new()),
        Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")),
        roots,
    )
}

fn harness_full(kv: Arc<dyn KvBackend>, cache_dir: Option<PathBuf>, http_extra_roots: Vec<Vec<u8>>) -> Harness {
    let sink = Arc::new(RecordingSink::default());
    let incidents = Arc::new(RecordingIncidents::new());
    let clock = Arc::new(ManualClock::new(1_000_000));
    let services = HostServices {
        messages: sink.clone(),
        kv,
        clock: clock.clone(),
        incidents: incidents.clone(),
        accounts: Arc::new(imfree_plugin_host::NoAccounts),
        conversations: Arc::new(imfree_plugin_host::NoConversations),
        files: Arc::new(imfree_plugin_host::NoFiles),
        mail: Arc::new(imfree_plugin_host::NoMail),
    };
    let options = HostOptions {
        cache_dir,
        max_instances: 32,
        min_timer_interval_ms: 10,
        http_extra_roots,
        ..HostOptions::default()
    };
    Harness {
        host: PluginHost::new(options, services).expect("engine"),
        sink,
        incidents,
        clock,
    }
}

/// The probe's manifest: every hook, the given capabilities and settings.
pub fn probe_manifest(name: &str, capabilities: &str) -> PluginManifest {
    PluginManifest::parse(&format!(
        r#"
        name = "{name}"
        version = "1.2.3"
        api = "0.3.0"
        scopes = ["relay", "bot"]
        hooks = ["incoming-message", "outgoing-message", "relay-envelope", "status-change", "command", "action", "http", "timer"]
        [capabilities]
        {capabilities}
        [settings.greeting]
        type = "string"
        default = "hello"
        [settings.fail-init]
        type = "boolean"
        default = false
        "#
    ))
    .expect("probe manifest")
}

/// An admin config from TOML (path is irrelevant for `load_bytes`).
/// Unless the test sets limits itself, the CPU and wall budgets are generous: epoch deadlines count elapsed time,
/// and a loaded CI machine running unoptimised tests in parallel must not make a healthy plugin look slow.
pub fn admin(extra: &str) -> PluginConfig {
    let limits = if extra.contains("limits") {
        ""
    } else {
        "limits = { cpu-ms-per-call = 10000, wall-ms-per-call = 20000 }"
    };
    toml::from_str(&format!("path = \"unused.wasm\"\n{extra}\n{limits}")).expect("admin config")
}

impl Harness {
    pub async fn load_probe(&self, name: &str, capabilities: &str, config: &str) {
        self.host
            .load_bytes(probe_manifest(name, capabilities), admin(config), guest("guest-probe"))
            .await
            .expect("probe loads");
    }

    pub async fn cmd(&self, plugin: &str, name: &str, args: &str) -> String {
        self.host
            .command(plugin, command(name, args))
            .await
            .unwrap_or_else(|e| panic!("command failed: {e}"))
            .unwrap_or_default()
    }
}

pub fn command(name: &str, args: &str) -> Command {
    Command {
        name: name.into(),
        args: args.into(),
        conversation: "c1".into(),
        sender: "alice".into(),
    }
}

pub fn message(body: &str) -> Message {
    Message {
        id: "msg-1".into(),
        conversation: "c1".into(),
        sender: "alice".into(),
        sent_at: 1,
        content_type: "text/plain".into(),
        body: body.into(),
        reply_to: None,
        mentions: vec![],
    }
}

pub fn envelope(size: u64) -> Envelope {
    Envelope {
        sender: "alice".into(),
        recipients: vec!["bob".into()],
        conversation: "c1".into(),
        content_type: "text/plain".into(),
        size,
        time: 1,
    }
}
