//! Single sign-on, the relay's and the client's side, through a real relay process: the login code a relay-scope
//! plugin would issue (made here through the relay's own account directory on the relay's store, as the sso plugin's
//! `accounts` calls do) is redeemed over the IMF handshake once, only with its verifier, only before it expires; an
//! account made by SSO has no password; `imfree client login --sso` listens on loopback, prints the address to open,
//! and finishes the login from the browser's redirect (or shows its error). The OpenID Connect flow itself is tested
//! with the sso plugin (module `sso`).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use imfree_client::{Client, ClientError, ErrorCode, Trust};
use imfree_proto::auth::sso_challenge;
use imfree_relay::accounts::RelayAccounts;
use imfree_store::{AccountProfile, ExternalIdentityRef, RelayStore, SqliteStore};

use crate::common::{RelayProc, bin, client_with, guest_wasm, ok, register, tempdir};

const ISSUER: &str = "https://idp.example.test";

/// The relay's store, opened beside the running relay (as `imfree admin` does), and its account directory.
async fn directory(relay: &RelayProc) -> (Arc<dyn RelayStore>, RelayAccounts) {
    let store: Arc<dyn RelayStore> = Arc::new(SqliteStore::open(&relay.data.join("relay.db")).await.expect("open the relay's store"));
    let accounts = RelayAccounts::new(Arc::clone(&store), imfree_proto::Limits::default());
    (store, accounts)
}

/// Provision `name` as the sso plugin does on a first sign-in.
async fn provision(accounts: &RelayAccounts, name: &str, groups: &[&str]) {
    let identity = ExternalIdentityRef { issuer: ISSUER.into(), subject: format!("subject-of-{name}") };
    let profile = AccountProfile {
        display_name: Some(format!("{name} (directory)")),
        email: Some(format!("{name}@example.test")),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    };
    accounts.provision(name, &identity, &profile).await.expect("provision");
}

fn verifier(c: char) -> String {
    std::iter::repeat_n(c, 43).collect()
}

fn refused_code(result: Result<Client, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Refused { code, .. }) => code,
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(c) => panic!("expected a refusal, logged in as {}", c.user()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_login_code_is_redeemed_once_with_its_verifier_and_before_it_expires() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let (store, accounts) = directory(&relay).await;
    provision(&accounts, "sam", &["staff"]).await;
    let (v1, v2) = (verifier('a'), verifier('b'));
    let login = |home: &str, code: String, v: String| {
        let home = dir.path().join(home);
        let url = relay.url.clone();
        async move { Client::login_sso(Some(&home), &url, &code, &v, Some("test"), Trust::default(), None).await }
    };

    // A wrong verifier is refused, and spends the code: the right one cannot use it afterwards.
    let code = accounts.issue_login_code("sam", &sso_challenge(&v1)).await.unwrap();
    assert_eq!(refused_code(login("h1", code.clone(), v2.clone()).await), ErrorCode::InvalidCredentials);
    assert_eq!(refused_code(login("h1", code, v1.clone()).await), ErrorCode::InvalidCredentials, "a code is spent by a failed try");

    // The right verifier logs in, once.
    let code = accounts.issue_login_code("sam", &sso_challenge(&v1)).await.unwrap();
    let client = login("h2", code.clone(), v1.clone()).await.expect("SSO login");
    assert_eq!(client.user(), "sam");
    assert!(client.e2e_ready(), "the account's first device made its identity, as register does");
    assert_eq!(refused_code(login("h3", code, v1.clone()).await), ErrorCode::InvalidCredentials, "a code is single use");

    // A code past its two minutes is refused.
    let sam = store.user_by_name("sam").await.unwrap().expect("sam");
    let expired = "an-expired-login-code-an-expired-login-code";
    let now = imfree_relay::state::now_ms();
    store.create_login_code(&imfree_relay::token::hash_token(expired), sam.id, &sso_challenge(&v1), now - 1, now - 120_001).await.unwrap();
    assert_eq!(refused_code(login("h4", expired.into(), v1.clone()).await), ErrorCode::InvalidCredentials);

    // A second device of the account logs in with a fresh code; it does not make a second identity.
    let code = accounts.issue_login_code("sam", &sso_challenge(&v2)).await.unwrap();
    let second = login("h5", code, v2).await.expect("second device");
    assert!(!second.e2e_ready(), "a later device is linked from the first, not given a new identity");
    let log = relay.log();
    assert!(!log.contains(&v1) && !log.contains(expired), "no verifier or code in the relay's log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login_to_an_sso_account_fails_like_a_wrong_password() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let (_store, accounts) = directory(&relay).await;
    provision(&accounts, "sam", &[]).await;
    register(&relay, &dir.path().join("bob"), "bob", "correct horse battery");
    let attempt = |home: &str, user: &str, password: &str| {
        let out = client_with(&dir.path().join(home), &["login", "--server", &relay.url, "--user", user, "--password-stdin"], &format!("{password}\n"), &[]);
        assert!(!out.status.success(), "{user} logged in with {password:?}");
        String::from_utf8_lossy(&out.stderr).trim().to_owned()
    };
    let wrong = attempt("h1", "bob", "not bob's password");
    assert!(wrong.contains("wrong user name or password"), "{wrong}");
    for password in ["!sso", "correct horse battery", "anything at all"] {
        assert_eq!(attempt("h2", "sam", password), wrong, "an SSO account refuses every password exactly as a wrong one");
    }
}

/// Start `imfree client login --sso corp` and return the process and the address it printed.
fn start_sso_login(home: &Path, relay: &RelayProc) -> (Child, String, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(bin())
        .args(["client", "--home"])
        .arg(home)
        .args(["login", "--sso", "corp", "--server", &relay.url, "--device-name", "laptop", "--timeout", "60"])
        .env("IMFREE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn imfree client login --sso");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("the address line");
    let address = line.trim_end().strip_prefix("Open this address in a browser: ").unwrap_or_else(|| panic!("unexpected first line {line:?}")).to_owned();
    (child, address, stdout)
}

fn query_param(url: &str, name: &str) -> String {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    let raw = query.split('&').find_map(|p| p.strip_prefix(&format!("{name}="))).unwrap_or_else(|| panic!("{name} missing from {url}"));
    let mut out = Vec::new();
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&raw[i + 1..i + 3], 16).expect("percent escape"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// What a browser does with a redirect to the loopback address: GET it, return the status line and page.
fn browser_get(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("a loopback http address");
    let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut conn = std::net::TcpStream::connect(authority).expect("connect to the client's loopback listener");
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(conn, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: test-browser\r\nAccept: text/html\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_cli_login_finishes_from_the_browser_redirect() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let (store, accounts) = directory(&relay).await;
    provision(&accounts, "sam", &["engineering", "staff"]).await;
    register(&relay, &dir.path().join("bob"), "bob", "correct horse battery");

    let home = dir.path().join("sam");
    let (child, address, mut stdout) = start_sso_login(&home, &relay);
    let port = relay.url.rsplit(':').next().unwrap();
    assert!(address.starts_with(&format!("https://127.0.0.1:{port}/plugins/sso/login/corp?redirect_uri=")), "{address}");
    let redirect_uri = query_param(&address, "redirect_uri");
    let challenge = query_param(&address, "challenge");
    assert!(redirect_uri.starts_with("http://127.0.0.1:") && redirect_uri.ends_with("/callback"), "{redirect_uri}");
    assert_eq!(challenge.len(), 43, "base64url SHA-256 without padding: {challenge}");

    // A stray request (the browser's favicon) is answered and waited past.
    let stray = browser_get(&redirect_uri.replace("/callback", "/favicon.ico"));
    assert!(stray.starts_with("HTTP/1.1 404"), "{stray}");

    // What the sso plugin does after the provider signed sam in: a code for the client's challenge, in a redirect.
    let code = accounts.issue_login_code("sam", &challenge).await.unwrap();
    let page = browser_get(&format!("{redirect_uri}?code={code}"));
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("You are signed in to imfree"), "{page}");
    assert!(!page.contains(&code), "the page does not echo the code");

    let out = child.wait_with_output().expect("login --sso finishes");
    let mut printed = String::new();
    stdout.read_to_string(&mut printed).unwrap();
    assert!(out.status.success(), "login --sso failed: {}\n{printed}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("logged in as sam (device "), "{printed}");
    assert!(!printed.contains(&code), "the code is not printed");
    let sam = store.user_by_name("sam").await.unwrap().expect("sam");
    assert!(store.user_identity(sam.id).await.unwrap().is_some(), "the first device published the account's identity");

    // The new account takes part in end-to-end conversations at once.
    ok(&home, &["send", "bob", "hello from sso"]);
    let got = ok(&dir.path().join("bob"), &["recv", "--json"]);
    assert!(got.contains("hello from sso"), "{got}");

    // The operator sees the link (issuer only) and the directory groups.
    let users = Command::new(bin()).args(["admin", "--data"]).arg(&relay.data).arg("users").output().expect("admin users");
    let users = String::from_utf8_lossy(&users.stdout);
    let line = users.lines().find(|l| l.starts_with("sam ")).unwrap_or_else(|| panic!("{users}"));
    assert!(line.contains(ISSUER) && line.contains("engineering,staff"), "{line}");
    assert!(!line.contains("subject-of-sam"), "subjects are not shown: {line}");
    let bob = users.lines().find(|l| l.starts_with("bob ")).unwrap_or_else(|| panic!("{users}"));
    assert!(bob.split_whitespace().rev().take(2).all(|f| f == "-"), "a password account has no link or groups: {bob}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_cli_login_shows_the_error_the_browser_brings_back() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let home = dir.path().join("sam");
    let (child, address, mut stdout) = start_sso_login(&home, &relay);
    let redirect_uri = query_param(&address, "redirect_uri");

    // Neither a code nor an error: answered, and still waiting.
    let empty = browser_get(&redirect_uri);
    assert!(empty.starts_with("HTTP/1.1 400"), "{empty}");

    let page = browser_get(&format!("{redirect_uri}?error=access_denied&error_description=you+are+not+in+an+allowed+group%3Cscript%3E"));
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("you are not in an allowed group&lt;script&gt;"), "{page}");
    assert!(!page.contains("<script>"), "the description is escaped: {page}");

    let out = child.wait_with_output().expect("login --sso finishes");
    let mut printed = String::new();
    stdout.read_to_string(&mut printed).unwrap();
    assert!(!out.status.success(), "an error redirect must not log in: {printed}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("single sign-on refused: you are not in an allowed group<script> (access_denied)"), "{stderr}");
    assert!(!printed.contains("logged in"), "{printed}");
}

#[test]
fn sso_cli_login_gives_up_after_its_timeout() {
    let dir = tempdir();
    let home = dir.path().join("sam");
    let started = std::time::Instant::now();
    let out = Command::new(bin())
        .args(["client", "--home"])
        .arg(&home)
        .args(["login", "--sso", "corp", "--server", "wss://127.0.0.1:9", "--timeout", "1"])
        .env("IMFREE_LOG", "warn")
        .output()
        .expect("run login --sso");
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("Open this address in a browser: https://127.0.0.1:9/plugins/sso/login/corp?redirect_uri="), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no sign-in came back within 1 s"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn list_sso_says_when_the_relay_offers_no_single_sign_on() {
    let dir = tempdir();
    let relay = RelayProc::start(&dir.path().join("relay"), None);
    let out = client_with(&dir.path().join("h"), &["login", "--list-sso", "--server", &relay.url], "", &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("this relay offers no single sign-on (its sso plugin is not enabled)"), "{stderr}");
    // Password and SSO options do not mix.
    let out = client_with(&dir.path().join("h"), &["login", "--sso", "corp", "--user", "sam", "--server", &relay.url], "", &[]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("cannot be used with"), "{out:?}");
}

/// The relay gives relay-scope plugins its own account directory (not the refusing default) when the manifest asks
/// for `accounts` and the operator grants it: the host's probe guest asks whether accounts exist.
#[test]
fn a_relay_plugin_granted_accounts_reaches_the_relays_directory() {
    let dir = tempdir();
    std::fs::create_dir_all(dir.path().join("probe")).unwrap();
    std::fs::copy(guest_wasm("guest-probe"), dir.path().join("probe/probe.wasm")).unwrap();
    std::fs::write(
        dir.path().join("probe/plugin.toml"),
        "name = \"probe\"\nversion = \"1.0.0\"\napi = \"0.3.0\"\nscopes = [\"relay\"]\nhooks = [\"http\"]\n[capabilities]\naccounts = true\n",
    )
    .unwrap();
    let config = dir.path().join("imfree.toml");
    std::fs::write(&config, "[plugins.probe]\npath = \"probe/probe.wasm\"\ngrants = { accounts = true }\n").unwrap();
    let relay = RelayProc::start(&dir.path().join("data"), Some(&config));
    register(&relay, &dir.path().join("alice"), "alice", "correct horse battery");
    let probe = |name: &str, args: &str| {
        let url = format!("{}/plugins/probe/cmd/{name}", relay.url.replacen("wss://", "https://", 1));
        let out = Command::new("curl").args(["-sk", "--max-time", "20", "--data-binary", args, &url]).output().expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    crate::common::wait_until("the probe plugin loads", || probe("account-exists", "alice").starts_with("ok"));
    assert_eq!(probe("account-exists", "alice"), "ok true");
    assert_eq!(probe("account-exists", "nobody"), "ok false");
}
