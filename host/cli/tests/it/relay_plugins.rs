//! Relay-scope plugins through the real relay: an envelope filter, status changes, an HTTP route, timers, kv in the
//! relay's store, and hot reload under a stream of messages. The plugin is examples/plugins/relay-policy, built
//! from source for wasm32-wasip2.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

fn write_config(path: &Path, blocked: &str) {
    let config = format!(
        r#"
[plugin_host]
reload_interval_ms = 200

[plugins.relay-policy]
path = "relay-policy/relay_policy.wasm"

[plugins.relay-policy.grants]
kv = true
timers = true

# Epoch deadlines count elapsed time: on a loaded CI machine the default 100 ms of CPU per call can pass while the
# thread waits for a core, and the fail-closed filter would then refuse a message this test expects to pass.
[plugins.relay-policy.limits]
cpu-ms-per-call = 10000
wall-ms-per-call = 20000

[plugins.relay-policy.settings]
max_bytes = 3000
blocked_senders = "{blocked}"
tick_seconds = 1
"#
    );
    // Write beside, then rename: the watcher never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, config).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// GET a path on the relay (self-signed TLS); returns (headers, body).
fn get(relay: &RelayProc, path: &str) -> (String, String) {
    let url = format!("{}{path}", relay.url.replacen("wss://", "https://", 1));
    let out = Command::new("curl").args(["-sk", "-D", "-", "--max-time", "10", &url]).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_ascii_lowercase(), body.to_owned())
}

fn stats(relay: &RelayProc) -> serde_json::Value {
    let (head, body) = get(relay, "/plugins/relay-policy/stats");
    assert!(head.starts_with("http/1.1 200") || head.starts_with("http/2 200"), "{head}\n{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("stats: {e}: {body:?}"))
}

fn counter(relay: &RelayProc, name: &str) -> i64 {
    stats(relay)[name].as_i64().unwrap_or(-1)
}

/// Text that gzip cannot shrink much: the client compresses before encrypting, and the filter sees the ciphertext.
fn incompressible(len: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[(x % 36) as usize])
        })
        .collect()
}

#[test]
fn a_relay_plugin_filters_counts_serves_and_reloads_without_losing_a_message() {
    let dir = tempdir();
    install_plugin(dir.path(), "relay-policy");
    let config = dir.path().join("imfree.toml");
    write_config(&config, "mallory");

    let mut relay = RelayProc::start(&dir.path().join("relay"), Some(&config));
    let home = |u: &str| dir.path().join(u);
    for user in ["alice", "bob", "mallory"] {
        register(&relay, &home(user), user, &format!("{user}-password"));
    }
    let (alice, bob, mallory) = (home("alice"), home("bob"), home("mallory"));

    // The filter: small messages pass, big ones and a blocked sender's are refused with the plugin's reason.
    ok(&alice, &["send", "bob", "hello bob"]);
    let big = client(&alice, &["send", "bob", &incompressible(6000)]);
    assert!(!big.status.success());
    let why = String::from_utf8_lossy(&big.stderr);
    assert!(why.contains("policy_rejected") && why.contains("relay-policy: messages larger than 3000 bytes"), "{why}");
    let blocked = client(&mallory, &["send", "bob", "hi"]);
    assert!(String::from_utf8_lossy(&blocked.stderr).contains("mallory may not send messages"), "{}", String::from_utf8_lossy(&blocked.stderr));
    let got = parse_json_lines(&ok(&bob, &["recv", "--json"]));
    assert_eq!(got.iter().map(|m| m["body"].as_str().unwrap()).collect::<Vec<_>>(), ["hello bob"]);

    // Counts kept in the relay's store, served on the plugin's route in a sandboxed origin; status changes and
    // timer ticks arrive too.
    let (head, _) = get(&relay, "/plugins/relay-policy/stats");
    assert!(head.contains("content-security-policy: sandbox"), "{head}");
    assert_eq!(counter(&relay, "refused"), 2);
    wait_until("a timer tick and status changes", || {
        let s = stats(&relay);
        s["ticks"].as_i64() >= Some(1) && s["online"].as_i64() >= Some(3) && s["offline"].as_i64() >= Some(3)
    });
    let (missing, _) = get(&relay, "/plugins/nobody/stats");
    assert!(missing.starts_with("http/1.1 404") || missing.starts_with("http/2 404"), "{missing}");

    // Hot reload under a stream: alice keeps sending batches while the configuration changes (mallory unblocked);
    // the stream goes on until two batches after the reload.
    let passed_before = counter(&relay, "passed");
    let reloads_before = relay.log().matches("relay plugin reloaded").count();
    let stream = {
        let alice = alice.clone();
        let log = relay.data.with_extension("log");
        std::thread::spawn(move || {
            let mut texts = Vec::new();
            let mut after_reload = 0;
            for batch in 0.. {
                let chunk: Vec<String> = (0..25).map(|i| format!("stream {batch:03}-{i:02}")).collect();
                let mut args = vec!["send", "bob"];
                args.extend(chunk.iter().map(String::as_str));
                ok(&alice, &args);
                texts.extend(chunk);
                let reloaded = std::fs::read_to_string(&log).unwrap_or_default().matches("relay plugin reloaded").count() > reloads_before;
                after_reload += usize::from(reloaded);
                if after_reload >= 2 || batch >= 200 {
                    break;
                }
            }
            texts
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    write_config(&config, "");
    let texts = stream.join().expect("the stream");
    assert!(relay.log().matches("relay plugin reloaded").count() > reloads_before, "the plugin was reloaded during the stream");
    let got = parse_json_lines(&ok(&bob, &["recv", "--json"]));
    let bodies: Vec<&str> = got.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, texts.iter().map(String::as_str).collect::<Vec<_>>(), "every message once, in order");
    assert_eq!(counter(&relay, "passed"), passed_before + texts.len() as i64, "each envelope went through the filter exactly once");
    ok(&mallory, &["send", "bob", "unblocked now"]);

    // The counts live in the relay's database: a restart keeps them.
    let refused = counter(&relay, "refused");
    relay.restart();
    assert_eq!(counter(&relay, "refused"), refused);
    assert!(relay.log().contains("plugin loaded"));
}

/// POST `args` to the probe's `/cmd/NAME` route (relay scope has no other way in); returns the command's answer.
fn probe_cmd(relay: &RelayProc, name: &str, args: &str) -> String {
    let url = format!("{}/plugins/probe/cmd/{name}", relay.url.replacen("wss://", "https://", 1));
    let out = Command::new("curl").args(["-sk", "--max-time", "20", "--data-binary", args, &url]).output().expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_probe_config(path: &Path, origin: &str, grants: &str) {
    let config = format!(
        r#"
[plugin_host]
reload_interval_ms = 200

[plugins.probe]
path = "probe/probe.wasm"
grants = {{ {grants} }}
"#
    );
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, config).unwrap();
    std::fs::rename(&tmp, path).unwrap();
    let manifest = format!(
        r#"
name = "probe"
version = "1.2.3"
api = "0.3.0"
scopes = ["relay"]
hooks = ["relay-envelope", "status-change", "http", "timer"]
[capabilities]
kv = true
messaging = true
timers = true
http.outbound = ["{origin}"]
"#
    );
    std::fs::write(path.parent().unwrap().join("probe/plugin.toml"), manifest).unwrap();
}

#[test]
fn a_relay_plugin_uses_each_capability_only_when_asked_for_and_granted() {
    let dir = tempdir();
    let server = LoopbackHttp::start();
    let origin = format!("http://127.0.0.1:{}", server.port);
    std::fs::create_dir_all(dir.path().join("probe")).unwrap();
    std::fs::copy(guest_wasm("guest-probe"), dir.path().join("probe/probe.wasm")).unwrap();
    let config = dir.path().join("imfree.toml");
    write_probe_config(&config, &origin, "kv = true");
    let relay = RelayProc::start(&dir.path().join("data"), Some(&config));

    // kv granted: it works, in the relay's store.
    assert_eq!(probe_cmd(&relay, "kv-set", "colour blue"), "ok ()");
    assert_eq!(probe_cmd(&relay, "kv-get", "colour"), "ok Some(\"blue\")");
    // Asked for but not granted: refused, each named.
    for (cmd, args) in [("timer-once", "t 10"), ("post", "alice hi"), ("http-get", &format!("{origin}/x") as &str)] {
        let answer = probe_cmd(&relay, cmd, args);
        let refused = answer.contains("not granted") || answer.contains("not both requested in plugin.toml and granted");
        assert!(answer.starts_with("err") && refused, "{cmd}: {answer}");
    }
    // Not even asked for: refused whatever the grant.
    let answer = probe_cmd(&relay, "account-exists", "alice");
    assert!(answer.starts_with("err denied") && answer.contains("not requested"), "{answer}");
    assert_eq!(server.hits(), 0, "no request left the relay");

    // Granted on the fly (hot reload): timers fire, HTTP reaches the loopback server (private addresses allowed),
    // and messaging is granted but the relay has no bot to post as: an honest refusal, not a trap.
    write_probe_config(
        &config,
        &origin,
        &format!("kv = true, timers = true, messaging = true, http-outbound = [\"{origin}\"], http-allow-private = true"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut answer = String::new();
    while std::time::Instant::now() < deadline {
        answer = probe_cmd(&relay, "timer-once", "tick 10");
        if answer.starts_with("ok") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(answer.starts_with("ok"), "the reloaded grant allows timers: {answer}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while probe_cmd(&relay, "kv-get", "last-timer") != "ok Some(\"tick\")" {
        assert!(std::time::Instant::now() < deadline, "the timer fired in the relay");
        std::thread::sleep(Duration::from_millis(100));
    }
    let answer = probe_cmd(&relay, "http-get", &format!("{origin}/hello"));
    assert!(answer.starts_with("ok 200"), "{answer}");
    assert_eq!(server.hits(), 1);
    for (cmd, args) in [("post", "alice hi"), ("send-markdown", "alice **hi**")] {
        let answer = probe_cmd(&relay, cmd, args);
        assert!(answer.starts_with("err invalid") && answer.contains("holds no keys"), "{cmd}: {answer}");
    }
    // The kv written before the reload is still there.
    assert_eq!(probe_cmd(&relay, "kv-get", "colour"), "ok Some(\"blue\")");
}
