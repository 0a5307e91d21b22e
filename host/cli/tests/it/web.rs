//! The web client in real Chromium: Debian's `/usr/bin/chromium`, driven by npm `playwright-core` (pinned by
//! host/cli/tests/web/package-lock.json, installed once into a cache outside the clone; .ci/deps/web.sh installs
//! Chromium). The page and its WebAssembly engine come from the relay under test, as a user gets them.
//!
//! host/cli/tests/web/scenario.mjs does the browser's part: two browser users register, write, react, edit, reply,
//! delete and search; one reloads and unlocks with the history intact; a browser user and a CLI user talk both ways;
//! the safety numbers agree. Screenshots of the main views go to `target/web-screenshots/`. Afterwards no file of
//! the relay's data dir (nor its log) holds the canary, as plain text, hex or base64.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::common::*;

/// The cached `node_modules` with playwright-core for the scenario.
fn playwright() -> PathBuf {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    let lock = std::fs::read(js.join("package-lock.json")).expect("package-lock.json");
    let cache = std::env::var_os("IMFREE_NPM_CACHE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/cache/imfree/npm"));
    let digest: String = Sha256::digest(&lock)[..8].iter().map(|b| format!("{b:02x}")).collect();
    let dir = cache.join(format!("web-tests-{digest}"));
    if !dir.join("node_modules/playwright-core/package.json").exists() {
        std::fs::create_dir_all(&dir).expect("npm cache dir");
        for f in ["package.json", "package-lock.json"] {
            std::fs::copy(js.join(f), dir.join(f)).expect("copy the npm manifest");
        }
        let out = Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir).output().expect("npm (Node.js 20) is needed");
        assert!(out.status.success(), "npm ci failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    dir.join("node_modules")
}

/// `curl -k` a URL: (status, headers lower-cased, body length).
fn fetch(url: &str, headers: &[&str]) -> (u16, String, usize) {
    let mut cmd = Command::new("curl");
    cmd.args(["-k", "-sS", "-D", "-", "-o", "/dev/null", "-w", "%{http_code} %{size_download}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let (head, tail) = text.rsplit_once("\r\n\r\n").expect("headers then the write-out");
    let mut numbers = tail.split_whitespace().map(|n| n.parse::<usize>().expect("a number"));
    let status = numbers.next().expect("status") as u16;
    (status, head.to_owned(), numbers.next().expect("size"))
}

#[test]
fn the_relay_serves_the_web_client_with_a_strict_policy_and_compressed() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let base = relay.url.replace("wss://", "https://");
    let (status, head, _) = fetch(&format!("{base}/"), &[]);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(head.contains("content-security-policy: default-src 'none'; script-src 'self' 'wasm-unsafe-eval'"), "{head}");
    assert!(head.contains("frame-ancestors 'none'") && head.contains("x-content-type-options: nosniff"), "{head}");
    let (status, head, plain) = fetch(&format!("{base}/imfree_web_bg.wasm"), &[]);
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/wasm") && !head.contains("content-encoding"), "{head}");
    let (status, head, gzip) = fetch(&format!("{base}/imfree_web_bg.wasm"), &["Accept-Encoding: br, gzip;q=0.8"]);
    assert_eq!(status, 200);
    assert!(head.contains("content-encoding: gzip") && head.contains("vary: accept-encoding"), "{head}");
    assert!(gzip < plain, "gzip {gzip} ≥ plain {plain}");
    eprintln!("web client engine: {plain} bytes, {gzip} gzip-compressed");
    let (js, head, _) = fetch(&format!("{base}/imfree_web.js"), &[]);
    assert_eq!(js, 200);
    // A reload revalidates by entity tag: nothing is sent again while the file is the same.
    let etag = head.lines().find_map(|l| l.strip_prefix("etag: ")).expect("an etag").trim().to_owned();
    let (status, _, size) = fetch(&format!("{base}/imfree_web.js"), &[&format!("If-None-Match: {etag}")]);
    assert_eq!((status, size), (304, 0));
    assert_eq!(fetch(&format!("{base}/imfree_web.js"), &["If-None-Match: \"other\""]).0, 200);
    assert_eq!(fetch(&format!("{base}/no-such-file.js"), &[]).0, 404);
    assert_eq!(fetch(&format!("{base}/../Cargo.toml"), &[]).0, 404);

    // `[web] enabled = false`: no page.
    drop(relay);
    let config = dir.path().join("imfree.toml");
    std::fs::write(&config, "[web]\nenabled = false\n").expect("config");
    let relay = RelayProc::start(&dir.path().join("relay2"), Some(&config));
    assert_eq!(fetch(&format!("{}/", relay.url.replace("wss://", "https://")), &[]).0, 404);
}

#[test]
fn browser_users_and_a_cli_user_chat_end_to_end_in_chromium() {
    assert!(Path::new("/usr/bin/chromium").exists(), "Debian's chromium is needed: bash .ci/deps/web.sh");
    let modules = playwright();
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let carol = dir.path().join("carol");
    register(&relay, &carol, "carol", "carol-password-1");

    let canary = "CANARY-b7e1-the-heron-flies-at-noon";
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../web-screenshots");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/scenario.mjs");
    // The scenario imports playwright-core by name: run it from a copy beside the cached node_modules.
    let script = modules.with_file_name("scenario.mjs");
    std::fs::copy(&scenario, &script).expect("copy the scenario");
    let out = Command::new("node")
        .arg(&script)
        .env("IMFREE_URL", relay.url.replace("wss://", "https://"))
        .env("IMFREE_BIN", bin())
        .env("CLI_HOME", &carol)
        .env("SHOTS", &shots)
        .env("CANARY", canary)
        .output()
        .expect("node");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser scenario failed:\n{stderr}\nrelay log:\n{}", relay.log());
    let report: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("the scenario's report");
    assert_eq!(report["ok"], true);
    eprintln!("web client timings (ms): {}", report["timings"]);
    for name in ["01-register", "02-conversation", "03-conversation-phone", "04-search-phone", "05-unlock-phone", "06-cli-conversation", "07-safety-number"] {
        let png = std::fs::read(shots.join(format!("{name}.png"))).unwrap_or_default();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "screenshot {name} missing or empty");
    }

    // The CLI user got the browser's message, decrypted.
    let got = parse_json_lines(&ok(&carol, &["history", "alice", "--json"]));
    assert!(got.iter().any(|m| m["body"].as_str().is_some_and(|b| b.contains(&format!("{canary}-web")))), "{got:?}");
    crate::e2e::assert_relay_never_saw(&relay, canary);
}
