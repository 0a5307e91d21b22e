//! The bundled webhooks plugin (embedded in the binary under test) through real processes: a relay running the
//! `webhooks` bot, real clients, a real HTTP receiver on loopback (written here, it checks every signature), curl
//! posting to incoming hooks, and Microsoft's Adaptive Cards parser (npm `adaptivecards`, pinned in
//! tests/webhooks-js/) for the Teams cards.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::*;

/// HMAC-SHA256 (RFC 2104), written out so the test checks the plugin's signatures with code of its own.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new().chain_update(k.map(|b| b ^ 0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(k.map(|b| b ^ 0x5c)).chain_update(inner).finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a receiver verifies (docs/admin.md, "Webhooks"): the timestamp within five minutes of now, and
/// `v0=hex(HMAC-SHA256(secret, "v0:{timestamp}:{body}"))` equal to the signature header.
fn signature_ok(secret: &str, headers: &HashMap<String, String>, body: &[u8]) -> bool {
    let (Some(ts), Some(sig)) = (headers.get("x-imfree-request-timestamp"), headers.get("x-imfree-signature")) else { return false };
    let Ok(t) = ts.parse::<u64>() else { return false };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    if t.abs_diff(now) > 300 {
        return false;
    }
    let mut signed = format!("v0:{ts}:").into_bytes();
    signed.extend_from_slice(body);
    *sig == format!("v0={}", hex(&hmac_sha256(secret.as_bytes(), &signed)))
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    at: Instant,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    /// The status it answered.
    status: u16,
}

impl Hit {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A `Transfer-Encoding: chunked` body, decoded.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..line_end]).ok().and_then(|l| usize::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size.filter(|&s| s > 0 && line_end + 2 + s <= data.len()) else { break };
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[(line_end + 4 + size).min(data.len())..];
    }
    out
}

/// Answers to give, in order: status and extra headers.
type Script = Arc<Mutex<Vec<(u16, Vec<(String, String)>)>>>;

/// A webhook receiver on 127.0.0.1: records every request; answers from a script (status and extra headers, one
/// per request, in order), then 200.
struct Receiver {
    port: u16,
    hits: Arc<Mutex<Vec<Hit>>>,
    script: Script,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(Mutex::new(Vec::new()));
        let (h, s) = (hits.clone(), script.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        break Some(i);
                    }
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break None,
                        Ok(n) => data.extend_from_slice(&buf[..n]),
                    }
                };
                let Some(head_end) = head_end else { continue };
                let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
                let mut lines = head.split("\r\n");
                let path = lines.next().unwrap_or("").split(' ').nth(1).unwrap_or("").to_owned();
                let headers: HashMap<String, String> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                let mut body = data[head_end + 4..].to_vec();
                let chunked = headers.get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
                if chunked {
                    // Read until the last chunk, then decode.
                    while !body.windows(5).any(|w| w == b"0\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => body.extend_from_slice(&buf[..n]),
                        }
                    }
                    body = dechunk(&body);
                } else {
                    let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
                    while body.len() < len {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => body.extend_from_slice(&buf[..n]),
                        }
                    }
                }
                let (status, extra) = {
                    let mut s = s.lock().unwrap();
                    if s.is_empty() { (200, Vec::new()) } else { s.remove(0) }
                };
                h.lock().unwrap().push(Hit { at: Instant::now(), path, headers, body, status });
                let mut response = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n");
                for (k, v) in extra {
                    response.push_str(&format!("{k}: {v}\r\n"));
                }
                response.push_str("\r\nok");
                let _ = conn.write_all(response.as_bytes());
            }
        });
        Receiver { port, hits, script }
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    fn hits_at(&self, path: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.path == path).collect()
    }

    fn answer_next(&self, status: u16, headers: &[(&str, &str)]) {
        self.script.lock().unwrap().push((status, headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()));
    }
}

/// A relay with the webhooks bot: `settings` is the body of `[plugins.webhooks.settings]`.
struct Setup {
    dir: tempfile::TempDir,
    relay: RelayProc,
    config: PathBuf,
    port: u16,
}

impl Setup {
    fn start(receiver: &Receiver, settings: &str) -> Setup {
        let dir = tempdir();
        let port = free_port();
        let config = bot_config(
            dir.path(),
            &format!(
                r#"# No path: the webhooks plugin bundled in the binary under test, with its own manifest.
[plugins.webhooks]
grants = {{ kv = true, messaging = true, timers = true, http-outbound = ["{origin}"], http-allow-private = true }}

[plugins.webhooks.settings]
public-url = "https://127.0.0.1:{port}"
{settings}
"#,
                origin = receiver.origin(),
            ),
        );
        let relay = RelayProc::start_on(&dir.path().join("relay"), port, Some(&config));
        wait_until("the webhooks bot to start", || relay.log().contains("bot running"));
        Setup { dir, relay, config, port }
    }

    /// Wait up to 30 s for `done`; on a time-out, fail with the server's log.
    fn wait(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}; server log:\n{}", self.relay.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn user(&self, name: &str) -> PathBuf {
        let home = self.dir.path().join(name);
        register(&self.relay, &home, name, &format!("{name}-password-1"));
        home
    }

    /// `imfree admin webhook ARGS… --config … --data …`: (status ok, stdout, stderr).
    fn admin(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(bin())
            .arg("admin")
            .arg("webhook")
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .arg("--data")
            .arg(self.dir.path().join("relay"))
            .env("IMFREE_LOG", "warn")
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Everything `home` receives until `done` says it has enough.
fn recv_until(home: &Path, what: &str, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    wait_until(what, || {
        seen.extend(parse_json_lines(&ok(home, &["recv", "--json"])));
        done(&seen)
    });
    seen
}

fn from_webhooks(messages: &[Value]) -> Vec<&Value> {
    messages.iter().filter(|m| m["from"] == "webhooks").collect()
}

/// POST (or `method`) `body` to `url` with curl (the relay's certificate is self-signed): (status, body).
fn curl(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "-o", "-", "-w", "\n%{http_code}", "-X", method, "--data-binary", "@-"]).arg(url);
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("curl");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

fn post_json(url: &str, body: &Value) -> (u16, String) {
    curl("POST", url, &[("content-type", "application/json")], body.to_string().as_bytes())
}

/// The secret URL in an answer of `/webhook create`.
fn hook_url(answer: &str) -> String {
    answer
        .split_whitespace()
        .find(|w| w.contains("/plugins/webhooks/hooks/"))
        .unwrap_or_else(|| panic!("no hook URL in {answer:?}"))
        .to_owned()
}

fn group_with_bot(owner: &Path, members: &[&str]) -> String {
    let g = ok(owner, &["group", "create", "webhooks test"]).trim().to_owned();
    for m in members {
        ok(owner, &["group", "add", &g, m]);
    }
    ok(owner, &["group", "add", &g, "webhooks"]);
    g
}

/// Parse the Teams payloads with Microsoft's Adaptive Cards parser (npm, pinned; installed once into a cache
/// outside the clone): zero parse and validation events.
fn adaptive_cards_parser_accepts(payloads: &[Value]) {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhooks-js");
    let lock = std::fs::read(js.join("package-lock.json")).unwrap();
    let cache = std::env::var_os("IMFREE_NPM_CACHE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/cache/imfree/npm"));
    let dir = cache.join(format!("webhooks-js-{}", &hex(&Sha256::digest(&lock))[..16]));
    if !dir.join("node_modules/adaptivecards/dist/adaptivecards.js").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["package.json", "package-lock.json"] {
            std::fs::copy(js.join(f), dir.join(f)).unwrap();
        }
        let out = Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir).output().expect("npm (Node.js 20) is needed");
        assert!(out.status.success(), "npm ci failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut child = Command::new("node")
        .arg(js.join("check-cards.js"))
        .env("NODE_PATH", dir.join("node_modules"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node");
    child.stdin.take().unwrap().write_all(Value::from(payloads.to_vec()).to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the Adaptive Cards parser found problems: {report}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(report["cards"], payloads.len());
    assert_eq!(report["problems"], json!([]));
}

#[test]
fn outgoing_deliveries_are_signed_and_shaped_for_slack_teams_messagecard_and_generic() {
    let receiver = Receiver::start();
    let url = |p: &str| format!("{}/{p}", receiver.origin());
    let settings = format!(
        r#"rate-per-second = 100.0
rate-burst = 100
targets = [
  {{ name = "ops-slack", url = "{}", format = "slack", secret = "slack-secret", triggers = ["deploy"] }},
  {{ name = "ops-teams", url = "{}", format = "teams", secret = "teams-secret" }},
  {{ name = "legacy", url = "{}", format = "messagecard", secret = "card-secret", senders = ["alice"] }},
  {{ name = "audit", url = "{}", format = "generic", secret = "generic-secret", mentions-only = false }},
]"#,
        url("slack"),
        url("teams"),
        url("card"),
        url("generic")
    );
    let s = Setup::start(&receiver, &settings);
    let (alice, bob) = (s.user("alice"), s.user("bob"));
    let g = group_with_bot(&alice, &["bob"]);
    let text = "**deploy** finished: see [the log](https://ci.example/run/1?a=1&b=2) <ok>";
    ok(&alice, &["send", "--markdown", &g, text]);
    ok(&bob, &["send", &g, "just chatting"]);
    wait_until("every delivery", || receiver.hits().len() >= 1 + 2 + 1 + 2);
    std::thread::sleep(Duration::from_millis(800));
    let secrets = HashMap::from([("/slack", "slack-secret"), ("/teams", "teams-secret"), ("/card", "card-secret"), ("/generic", "generic-secret")]);
    let hits = receiver.hits();
    assert_eq!(hits.len(), 6, "one per wanted (message, target): {hits:?}");
    for h in &hits {
        assert!(signature_ok(secrets[h.path.as_str()], &h.headers, &h.body), "bad signature on {}: {:?}", h.path, h.headers);
        assert!(!signature_ok("wrong", &h.headers, &h.body));
        assert_eq!(h.headers["content-type"], "application/json");
        assert_eq!(h.headers["x-imfree-delivery-id"].len(), 32);
    }

    // Slack: only the message with the trigger word; Block Kit section (mrkdwn) + context, fallback text.
    let slack = receiver.hits_at("/slack");
    assert_eq!(slack.len(), 1);
    let v = slack[0].json();
    let blocks = v["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0]["type"], "section");
    assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
    assert_eq!(blocks[0]["text"]["text"], "*deploy* finished: see <https://ci.example/run/1?a=1&amp;b=2|the log> &lt;ok&gt;");
    assert!(blocks[0]["text"]["text"].as_str().unwrap().chars().count() <= 3000);
    assert_eq!(blocks[1]["type"], "context");
    assert_eq!(blocks[1]["elements"][0]["type"], "mrkdwn");
    assert_eq!(blocks[1]["elements"][0]["text"], format!("*alice* in {g}"));
    assert!(v["text"].as_str().unwrap().contains("deploy"), "fallback text: {v}");

    // Teams Workflows: the Adaptive Card 1.4 envelope; both messages.
    let teams: Vec<Value> = receiver.hits_at("/teams").iter().map(Hit::json).collect();
    assert_eq!(teams.len(), 2);
    for t in &teams {
        assert_eq!(t["type"], "message");
        let a = &t["attachments"][0];
        assert_eq!(t["attachments"].as_array().unwrap().len(), 1);
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        assert!(a["contentUrl"].is_null() && a.as_object().unwrap().contains_key("contentUrl"));
        assert_eq!(a["content"]["$schema"], "http://adaptivecards.io/schemas/adaptive-card.json");
        assert_eq!(a["content"]["type"], "AdaptiveCard");
        assert_eq!(a["content"]["version"], "1.4");
        assert_eq!(a["content"]["body"][0]["type"], "TextBlock");
        assert_eq!(a["content"]["body"][2]["type"], "FactSet");
    }
    let card_of = |sender: &str| teams.iter().find(|t| t["attachments"][0]["content"]["body"][2]["facts"][0]["value"] == sender).unwrap().clone();
    assert_eq!(card_of("alice")["attachments"][0]["content"]["body"][1]["text"], text);
    assert_eq!(card_of("bob")["attachments"][0]["content"]["body"][1]["text"], "just chatting");
    adaptive_cards_parser_accepts(&teams);

    // MessageCard: only alice's (senders filter).
    let cards = receiver.hits_at("/card");
    assert_eq!(cards.len(), 1);
    let c = cards[0].json();
    assert_eq!(c["@type"], "MessageCard");
    assert_eq!(c["@context"], "https://schema.org/extensions");
    assert_eq!(c["summary"], format!("alice in {g}"));
    assert_eq!(c["themeColor"], "0076D7");
    assert_eq!(c["title"], format!("alice in {g}"));
    assert_eq!(c["text"], text);
    assert_eq!(c["sections"][0]["facts"][0], json!({"name": "Sender", "value": "alice"}));

    // Generic: the whole message.
    let generic: Vec<Value> = receiver.hits_at("/generic").iter().map(Hit::json).collect();
    assert_eq!(generic.len(), 2);
    let a = generic.iter().find(|m| m["sender"] == "alice").unwrap();
    assert_eq!(a["conversation"], g);
    assert_eq!(a["content_type"], "text/markdown");
    assert_eq!(a["body"], text);
    assert!(a["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(a["sent_at"].as_u64().is_some_and(|t| t > 1_700_000_000_000));
    assert!(a["reply_to"].is_null());
    assert_eq!(a["mentions"], json!([]));
    let b = generic.iter().find(|m| m["sender"] == "bob").unwrap();
    assert_eq!(b["content_type"], "text/plain");
    let keys: Vec<&String> = a.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 8, "{keys:?}");

    // Nothing about the message, the URLs or the secrets in the server's log.
    let log = s.relay.log();
    for secret in ["finished", "slack-secret", "teams-secret", &url("slack")] {
        assert!(!log.contains(secret), "{secret:?} in the log");
    }
}

#[test]
fn a_receiver_failing_twice_gets_retries_spaced_by_backoff_and_retry_after_then_succeeds() {
    let receiver = Receiver::start();
    receiver.answer_next(503, &[]);
    receiver.answer_next(429, &[("retry-after", "2")]);
    let settings = format!(
        r#"backoff-base-ms = 400
targets = [ {{ name = "flaky", url = "{}/hook", format = "generic", secret = "k" }} ]"#,
        receiver.origin()
    );
    let s = Setup::start(&receiver, &settings);
    let alice = s.user("alice");
    ok(&alice, &["send", "webhooks", "please retry"]);
    s.wait("the third attempt", || receiver.hits().len() >= 3);
    std::thread::sleep(Duration::from_millis(1500));
    let hits = receiver.hits();
    assert_eq!(hits.iter().map(|h| h.status).collect::<Vec<_>>(), [503, 429, 200], "three attempts, the third accepted");
    let id = &hits[0].headers["x-imfree-delivery-id"];
    for h in &hits {
        assert_eq!(&h.headers["x-imfree-delivery-id"], id, "one delivery id for every attempt");
        assert_eq!(h.body, hits[0].body, "the same body every time");
        assert!(signature_ok("k", &h.headers, &h.body));
    }
    let first_gap = hits[1].at - hits[0].at;
    let second_gap = hits[2].at - hits[1].at;
    assert!(first_gap >= Duration::from_millis(400), "after a 503: at least the backoff base, was {first_gap:?}");
    assert!(second_gap >= Duration::from_secs(2), "after a 429: at least Retry-After, was {second_gap:?}");
    assert!(second_gap < Duration::from_secs(6), "…and not much more: {second_gap:?}");
    assert_eq!(hits[0].json()["body"], "please retry");
    let log = s.relay.log();
    assert!(log.contains("target flaky answered 503") && log.contains("target flaky answered 429"), "{log}");
}

#[test]
fn a_delivery_pending_when_the_server_is_killed_arrives_exactly_once_after_the_restart() {
    let receiver = Receiver::start();
    receiver.answer_next(503, &[]);
    let settings = format!(
        r#"backoff-base-ms = 3000
targets = [ {{ name = "durable", url = "{}/hook", format = "generic", secret = "k" }} ]"#,
        receiver.origin()
    );
    let mut s = Setup::start(&receiver, &settings);
    let alice = s.user("alice");
    ok(&alice, &["send", "webhooks", "survive a crash"]);
    s.wait("the first attempt", || !receiver.hits().is_empty());
    // The delivery waits in the queue for its retry: SIGKILL the server now.
    s.relay.kill();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(receiver.hits().len(), 1);
    s.relay.restart();
    wait_until("the retry after the restart", || receiver.hits().iter().any(|h| h.status == 200));
    std::thread::sleep(Duration::from_secs(4));
    let hits = receiver.hits();
    let accepted: Vec<&Hit> = hits.iter().filter(|h| h.status == 200).collect();
    assert_eq!(accepted.len(), 1, "delivered exactly once: {hits:?}");
    assert_eq!(accepted[0].headers["x-imfree-delivery-id"], hits[0].headers["x-imfree-delivery-id"], "the same delivery");
    assert_eq!(accepted[0].json()["body"], "survive a crash");
    assert!(signature_ok("k", &accepted[0].headers, &accepted[0].body));
}

#[test]
fn incoming_hooks_post_into_the_conversation_and_refuse_bad_requests() {
    let receiver = Receiver::start();
    let s = Setup::start(&receiver, "max-body-bytes = 2048");
    let (alice, bob) = (s.user("alice"), s.user("bob"));
    let g = group_with_bot(&alice, &["bob"]);
    // The bot learns about the group when it is added; give it a moment to take the membership in.
    let (created, answer) = {
        let mut last = (false, String::new(), String::new());
        wait_until("the operator's webhook", || {
            last = s.admin(&["create", "--conv", &g, "--name", "ci"]);
            last.0 && last.1.contains("/plugins/webhooks/hooks/")
        });
        (last.0, last.1)
    };
    assert!(created);
    let url = hook_url(&answer);
    assert!(url.starts_with(&format!("https://127.0.0.1:{}/plugins/webhooks/hooks/", s.port)), "{url}");
    let secret = url.rsplit('/').next().unwrap().to_owned();
    let id = url.rsplit('/').nth(1).unwrap().to_owned();
    let (ok_list, list, _) = s.admin(&["list"]);
    assert!(ok_list && list.contains(&id) && list.contains("ci") && list.contains(&g), "{list}");
    assert!(!list.contains(&secret), "list never shows a secret");

    let slack = json!({
        "text": "fallback",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "Build 42"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "*passed* on <https://ci.example/42|main>"}},
            {"type": "divider"},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "took 3m"}]},
            {"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": [
                {"type": "text", "text": "by "}, {"type": "text", "text": "ci-bot", "style": {"bold": true}}]}]}
        ]
    });
    let (status, body) = post_json(&url, &slack);
    assert_eq!(status, 200, "{body}");
    let expected = "## Build 42\n\n**passed** on [main](https://ci.example/42)\n\n---\n\ntook 3m\n\nby **ci-bot**";
    for home in [&alice, &bob] {
        let got = recv_until(home, "the hook's message", |m| !from_webhooks(m).is_empty());
        let posted = from_webhooks(&got);
        assert_eq!(posted.len(), 1, "{got:?}");
        assert_eq!(posted[0]["mime"], "text/markdown");
        assert_eq!(posted[0]["body"], expected);
        assert_eq!(posted[0]["group"].as_str().map(|id| format!("group:{id}")), Some(g.clone()));
    }
    assert!(ok(&bob, &["history", &g]).contains("Build 42"), "bob decrypts it in the conversation's history");

    // Bad requests: each its 4xx and a short JSON error, nothing posted.
    let base = url.trim_end_matches(&secret).to_owned();
    let json_ct = [("content-type", "application/json")];
    let cases: Vec<(&str, u16, (u16, String))> = vec![
        ("bad JSON", 400, curl("POST", &url, &json_ct, b"{not json")),
        ("no text", 400, post_json(&url, &json!({"blocks": []}))),
        ("unknown secret", 404, post_json(&format!("{base}{}", "0".repeat(secret.len())), &json!({"text": "x"}))),
        ("unknown id", 404, post_json(&url.replace(&id, "ffffffffffff"), &json!({"text": "x"}))),
        ("oversized", 413, post_json(&url, &json!({"text": "x".repeat(4096)}))),
        ("wrong method", 405, curl("PUT", &url, &json_ct, b"{\"text\":\"x\"}")),
        ("wrong content type", 415, curl("POST", &url, &[("content-type", "text/plain")], b"{\"text\":\"x\"}")),
    ];
    for (what, want, (status, body)) in &cases {
        assert_eq!(status, want, "{what}: {body}");
        let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: not a JSON error: {body:?}"));
        assert!(v["error"].is_string(), "{what}: {v}");
    }
    let unknown = &cases[2].2 .1;
    assert_eq!(unknown, &cases[3].2 .1, "an unknown id and a wrong secret get the same answer");

    // A hook created with --verify takes only signed requests.
    let (_, signed_answer, _) = s.admin(&["create", "--conv", &g, "--name", "signed", "--verify"]);
    let signed_url = hook_url(&signed_answer);
    let key = signed_answer.lines().find_map(|l| l.strip_prefix("signing secret: ")).expect("the signing secret, shown once").trim().to_owned();
    let body = json!({"markdown": "signed *hello*", "title": "Deploy"}).to_string();
    let (status, _) = post_json(&signed_url, &serde_json::from_str(&body).unwrap());
    assert_eq!(status, 401, "unsigned");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs().to_string();
    let sign = |k: &str, ts: &str| format!("v0={}", hex(&hmac_sha256(k.as_bytes(), format!("v0:{ts}:{body}").as_bytes())));
    let bad = sign("not-the-key", &now);
    let (status, _) = curl("POST", &signed_url, &[("content-type", "application/json"), ("x-imfree-request-timestamp", &now), ("x-imfree-signature", &bad)], body.as_bytes());
    assert_eq!(status, 401, "bad signature");
    let stale_ts = (now.parse::<u64>().unwrap() - 3600).to_string();
    let stale = sign(&key, &stale_ts);
    let (status, _) = curl("POST", &signed_url, &[("content-type", "application/json"), ("x-imfree-request-timestamp", &stale_ts), ("x-imfree-signature", &stale)], body.as_bytes());
    assert_eq!(status, 401, "a replayed (old) signature");
    let good = sign(&key, &now);
    let (status, answer) = curl("POST", &signed_url, &[("content-type", "application/json"), ("x-imfree-request-timestamp", &now), ("x-imfree-signature", &good)], body.as_bytes());
    assert_eq!(status, 200, "{answer}");
    let got = recv_until(&bob, "the signed hook's message", |m| !from_webhooks(m).is_empty());
    assert_eq!(from_webhooks(&got).iter().map(|m| m["body"].clone()).collect::<Vec<_>>(), [json!("**Deploy**\n\nsigned *hello*")], "only the signed one: {got:?}");

    // Revoked: the same 404 as an unknown hook.
    let (revoked, out, err) = s.admin(&["revoke", &id]);
    assert!(revoked && out.contains("revoked"), "{out}{err}");
    let (status, body) = post_json(&url, &json!({"text": "after revoke"}));
    assert_eq!((status, &body), (404, unknown), "revoked");

    std::thread::sleep(Duration::from_millis(1500));
    let late = parse_json_lines(&ok(&bob, &["recv", "--json"]));
    assert!(from_webhooks(&late).is_empty(), "nothing posted by the refused requests: {late:?}");
    let log = s.relay.log();
    assert!(!log.contains(&secret) && !log.contains(&key), "a hook secret in the server's log");
}

#[test]
fn the_webhook_command_gives_an_owner_or_admin_a_url_and_refuses_a_plain_member() {
    let receiver = Receiver::start();
    let s = Setup::start(&receiver, "");
    let (alice, bob, carol) = (s.user("alice"), s.user("bob"), s.user("carol"));
    let g = group_with_bot(&alice, &["bob", "carol"]);
    ok(&alice, &["group", "role", &g, "carol", "admin"]);

    ok(&bob, &["send", &g, "/webhook create sneaky"]);
    let got = recv_until(&bob, "the refusal", |m| !from_webhooks(m).is_empty());
    let answers: Vec<String> = from_webhooks(&got).iter().map(|m| m["body"].as_str().unwrap_or("").to_owned()).collect();
    assert!(answers.iter().any(|a| a.contains("only an owner or admin")), "{answers:?}");
    assert!(answers.iter().all(|a| !a.contains("/plugins/webhooks/hooks/")), "{answers:?}");

    ok(&carol, &["send", &g, "/webhook create deploys"]);
    let got = recv_until(&carol, "carol's URL", |m| from_webhooks(m).iter().any(|a| a["body"].as_str().unwrap_or("").contains("/hooks/")));
    let answer = from_webhooks(&got).iter().find_map(|a| a["body"].as_str().filter(|b| b.contains("/hooks/"))).unwrap().to_owned();
    let reply = from_webhooks(&got).into_iter().find(|a| a["body"] == answer).unwrap().clone();
    assert!(reply.get("group").is_none(), "the URL is sent to carol alone, not into the group: {reply}");
    let url = hook_url(&answer);
    ok(&alice, &["send", &g, "/webhook list"]);
    let got = recv_until(&alice, "the list", |m| from_webhooks(m).iter().any(|a| a["body"].as_str().unwrap_or("").contains("deploys")));
    assert!(from_webhooks(&got).iter().all(|a| !a["body"].as_str().unwrap_or("").contains(url.rsplit('/').next().unwrap())), "list shows no secret");

    let (status, body) = post_json(&url, &json!({"text": "from carol's hook"}));
    assert_eq!(status, 200, "{body}");
    let got = recv_until(&bob, "the hook's message", |m| from_webhooks(m).iter().any(|a| a["body"] == "from carol's hook"));
    assert!(!got.iter().any(|m| m["body"].as_str().unwrap_or("").contains(url.rsplit('/').next().unwrap())), "bob never saw the URL");
}
