//! Single sign-on end to end: the sso plugin bundled in the binary (plugins/sso) in a real relay, two
//! real OpenID Connect providers on loopback (npm oidc-provider, host/cli/tests/oidc/provider.mjs), the real
//! `imfree client login --sso`, and a browser played by this test: it follows redirects, keeps cookies, and pins the
//! relay's self-signed certificate by fingerprint as the client does.
//!
//! The provider can be told to misbehave on the next token response (wrong issuer, audience, expiry, signature,
//! `alg: none`, HS256 keyed with its public key, an earlier login's nonce, a token request stripped of its PKCE
//! verifier); every such login must be refused with an error the CLI prints, and leave no account, no linked identity
//! and no login code behind.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::Duration;

use sqlx::{Connection, SqliteConnection};

use crate::common::*;

const ADDRESS_PREFIX: &str = "Open this address in a browser: ";

// ---------------------------------------------------------------------------------------------------------------
// The identity providers.

/// `npm ci` in host/cli/tests/oidc once per test process, unless `.ci/run` already did.
fn oidc_dir() -> &'static Path {
    static READY: OnceLock<PathBuf> = OnceLock::new();
    READY.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        if !dir.join("node_modules/oidc-provider/package.json").exists() {
            let out = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .output()
                .expect("run npm (Node.js 20 and npm are needed for the SSO tests)");
            assert!(out.status.success(), "npm ci in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
        }
        dir
    })
}

/// One OpenID Connect provider process on 127.0.0.1.
struct Idp {
    child: Child,
    port: u16,
    issuer: String,
}

impl Idp {
    /// Start a provider whose one confidential client is the relay (redirect URI `callback`), with `users` keyed by
    /// the login hint that signs them in.
    fn start(dir: &Path, name: &str, callback: &str, users: serde_json::Value) -> Idp {
        let port = free_port();
        let issuer = format!("http://127.0.0.1:{port}");
        let config = serde_json::json!({
            "port": port,
            "issuer": issuer,
            "clients": [{ "client_id": "imfree-relay", "client_secret": format!("secret-of-{name}"), "redirect_uris": [callback] }],
            "users": users,
        });
        let config_path = dir.join(format!("{name}-idp.json"));
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = std::fs::File::create(dir.join(format!("{name}-idp.log"))).unwrap();
        let mut child = Command::new("node")
            .arg(oidc_dir().join("provider.mjs"))
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start node (Node.js 20 is needed for the SSO tests)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line == "ready" => break,
                Ok(_) => {}
                Err(_) => panic!("provider {name} did not start: {}", std::fs::read_to_string(dir.join(format!("{name}-idp.log"))).unwrap_or_default()),
            }
        }
        Idp { child, port, issuer }
    }

    /// Make the next token response misbehave (see provider.mjs).
    fn arm(&self, mode: &str) {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(conn, "POST /__mischief?mode={mode} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", self.port).unwrap();
        let mut answer = String::new();
        let _ = conn.read_to_string(&mut answer);
        assert!(answer.contains(&format!("\"mode\":\"{mode}\"")), "arming {mode}: {answer}");
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The browser.

/// A response the browser got.
#[derive(Debug)]
struct Page {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Where following redirects ended.
enum Followed {
    /// A page that is not a redirect.
    Landed(Page),
    /// The next hop was one the caller asked to stop before.
    Stopped(String),
}

/// GETs over HTTP/1.1, HTTPS only to the relay (its certificate pinned), cookies kept per host and port.
struct Browser {
    tls: Arc<rustls::ClientConfig>,
    cookies: BTreeMap<String, BTreeMap<String, String>>,
}

impl Browser {
    fn new(relay: &RelayProc) -> Browser {
        let (tls, _) = imfree_client::tls::client_config(Some(&relay.fingerprint));
        Browser { tls, cookies: BTreeMap::new() }
    }

    fn get(&mut self, url: &str) -> Page {
        let (https, rest) = match url.split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            _ => panic!("the browser only does http(s): {url}"),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h).trim_matches(['[', ']']);
        let cookie = self
            .cookies
            .get(authority)
            .filter(|c| !c.is_empty())
            .map(|c| format!("Cookie: {}\r\n", c.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")))
            .unwrap_or_default();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: imfree-test-browser\r\nAccept: text/html\r\n{cookie}Connection: close\r\n\r\n"
        );
        let tcp = TcpStream::connect(authority).unwrap_or_else(|e| panic!("connect {authority}: {e}"));
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut raw = Vec::new();
        if https {
            let name = rustls::pki_types::ServerName::try_from(host.to_owned()).expect("server name");
            let conn = rustls::ClientConnection::new(Arc::clone(&self.tls), name).expect("tls");
            let mut stream = rustls::StreamOwned::new(conn, tcp);
            stream.write_all(request.as_bytes()).expect("send over tls");
            // Tolerate a close without close_notify: what arrived is the answer.
            let _ = stream.read_to_end(&mut raw);
        } else {
            let mut tcp = tcp;
            tcp.write_all(request.as_bytes()).expect("send");
            let _ = tcp.read_to_end(&mut raw);
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no HTTP answer from {url}: {text:?}"));
        let headers: Vec<(String, String)> =
            lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())).collect();
        for (_, value) in headers.iter().filter(|(k, _)| k == "set-cookie") {
            if let Some((name, value)) = value.split(';').next().and_then(|nv| nv.split_once('=')) {
                self.cookies.entry(authority.to_owned()).or_default().insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
        let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let body = if chunked { dechunk(body) } else { body.to_owned() };
        Page { status, headers, body }
    }

    /// GET `url` and follow redirects, stopping before a hop for which `stop` says true.
    fn follow(&mut self, url: &str, stop: impl Fn(&str) -> bool) -> Followed {
        let mut url = url.to_owned();
        for _ in 0..20 {
            let page = self.get(&url);
            let Some(location) = page.header("location").filter(|_| (300..400).contains(&page.status)) else {
                return Followed::Landed(page);
            };
            let next = if location.starts_with("http://") || location.starts_with("https://") {
                location.to_owned()
            } else {
                let origin_end = url.find("://").map(|i| i + 3).and_then(|s| url[s..].find('/').map(|j| s + j)).unwrap_or(url.len());
                format!("{}{location}", &url[..origin_end])
            };
            if stop(&next) {
                return Followed::Stopped(next);
            }
            url = next;
        }
        panic!("too many redirects from {url}");
    }

    /// Follow to the end.
    fn visit(&mut self, url: &str) -> Page {
        match self.follow(url, |_| false) {
            Followed::Landed(page) => page,
            Followed::Stopped(_) => unreachable!(),
        }
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|p| p.strip_prefix(&format!("{name}="))).map(str::to_owned)
}

// ---------------------------------------------------------------------------------------------------------------
// The relay with the sso plugin, and the two providers.

struct World {
    dir: tempfile::TempDir,
    relay: RelayProc,
    corp: Idp,
    lab: Idp,
}

fn corp_users() -> serde_json::Value {
    let user = |sub: &str, username: &str, email: &str, name: &str, groups: &[&str]| {
        serde_json::json!({ "sub": sub, "preferred_username": username, "email": email, "email_verified": true, "name": name, "groups": groups })
    };
    serde_json::json!({
        "alice": user("corp-0001", "alice", "alice@corp.example", "Alice Liddell", &["staff", "eng"]),
        // Another person at the same provider with the same e-mail address and a username that becomes "alice".
        "alice-twin": user("corp-0002", "Alice", "alice@corp.example", "Not Alice", &["staff"]),
        // Collides with a password account on the relay.
        "bob": user("corp-0003", "bob", "bob@corp.example", "Bob from Corp", &["staff"]),
        "mallory": user("corp-0004", "mallory", "mallory@corp.example", "Mallory", &["contractors"]),
        "eve": user("corp-0005", "eve", "eve@corp.example", "Eve", &["staff"]),
        "frank": user("corp-0006", "frank", "frank@corp.example", "Frank", &["staff"]),
    })
}

fn lab_users() -> serde_json::Value {
    serde_json::json!({
        "dave": { "sub": "lab-dave", "preferred_username": "dave", "name": "Dave at the Lab" },
        // The same subject string as alice at corp: a different issuer makes it a different identity.
        "otheralice": { "sub": "corp-0001", "preferred_username": "alice2", "name": "Alice at the Lab" },
    })
}

fn world() -> World {
    let dir = tempdir();
    let port = free_port();
    let public_url = format!("https://127.0.0.1:{port}");
    let callback = format!("{public_url}/plugins/sso/callback");
    let corp = Idp::start(dir.path(), "corp", &callback, corp_users());
    let lab = Idp::start(dir.path(), "lab", &callback, lab_users());

    let config = format!(
        r#"
# No path: the sso plugin bundled in the imfree binary (built from plugins/sso by build.rs).
[plugins.sso]

[plugins.sso.grants]
kv = true
timers = true
accounts = true
http-outbound = ["{corp}", "{lab}"]
http-allow-private = true

[plugins.sso.limits]
cpu-ms-per-call = 2000
wall-ms-per-call = 8000

[plugins.sso.settings]
public-url = "{public_url}"
providers = [
  {{ id = "corp", name = "Corp SSO", issuer = "{corp}", client-id = "imfree-relay", client-secret = "secret-of-corp", provision = true, allowed-groups = ["staff"], group-map = {{ eng = "engineering", staff = "staff" }} }},
  {{ id = "lab", name = "The Lab", issuer = "{lab}", client-id = "imfree-relay", client-secret = "secret-of-lab", provision = true }},
]
"#,
        corp = corp.issuer,
        lab = lab.issuer,
    );
    let config_path = dir.path().join("imfree.toml");
    std::fs::write(&config_path, config).unwrap();
    let relay = RelayProc::start_on(&dir.path().join("relay"), port, Some(&config_path));
    register(&relay, &dir.path().join("bob"), "bob", "bob-password");
    World { dir, relay, corp, lab }
}

impl World {
    fn home(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Rows in the relay's database: (accounts, linked identities, login codes).
    fn counts(&self) -> (i64, i64, i64) {
        let db = self.relay.data.join("relay.db");
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
            let mut c = SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display())).await.expect("open relay.db");
            let mut counts = [0i64; 3];
            let queries = ["SELECT COUNT(*) FROM users", "SELECT COUNT(*) FROM external_identities", "SELECT COUNT(*) FROM login_codes"];
            for (n, sql) in counts.iter_mut().zip(queries) {
                *n = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
            }
            let [users, identities, codes] = counts;
            (users, identities, codes)
        })
    }

    /// The (issuer, subject) pairs linked to `user`.
    fn identities_of(&self, user: &str) -> Vec<(String, String)> {
        let db = self.relay.data.join("relay.db");
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
            let mut c = SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display())).await.unwrap();
            sqlx::query_as::<_, (String, String)>(
                "SELECT e.issuer, e.subject FROM external_identities e JOIN users u ON u.id = e.user_id WHERE u.name = ? ORDER BY e.issuer",
            )
            .bind(user)
            .fetch_all(&mut c)
            .await
            .unwrap()
        })
    }

    /// The directory groups the relay keeps for `user`.
    fn groups_of(&self, user: &str) -> Vec<String> {
        let db = self.relay.data.join("relay.db");
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
            let mut c = SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display())).await.unwrap();
            sqlx::query_scalar::<_, String>("SELECT g.name FROM account_groups g JOIN users u ON u.id = g.user_id WHERE u.name = ? ORDER BY g.name")
                .bind(user)
                .fetch_all(&mut c)
                .await
                .unwrap()
        })
    }
}

/// `imfree client login --sso PROVIDER` running, with the address it printed.
struct CliLogin {
    child: Child,
    address: String,
    lines: mpsc::Receiver<String>,
}

/// What the CLI did.
struct CliOutcome {
    success: bool,
    stdout: String,
    stderr: String,
}

impl CliLogin {
    fn start(w: &World, home: &Path, provider: &str, timeout_secs: u64) -> CliLogin {
        let mut child = Command::new(bin())
            .args(["client", "--home"])
            .arg(home)
            .args(["login", "--sso", provider, "--server", &w.relay.url, "--device-name", "laptop", "--timeout", &timeout_secs.to_string()])
            .env("IMFREE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn imfree client login --sso");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let address = loop {
            match lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix(ADDRESS_PREFIX) {
                        break a.to_owned();
                    }
                }
                Err(_) => panic!("login --sso printed no address"),
            }
        };
        CliLogin { child, address, lines }
    }

    /// The printed address with a login hint for the test provider (which signs that user in with no person).
    fn address_for(&self, hint: &str) -> String {
        format!("{}&login_hint={hint}", self.address)
    }

    fn finish(self) -> CliOutcome {
        let CliLogin { child, lines, .. } = self;
        let out = child.wait_with_output().expect("login --sso ends");
        let mut stdout = String::new();
        while let Ok(line) = lines.recv_timeout(Duration::from_secs(2)) {
            stdout.push_str(&line);
            stdout.push('\n');
        }
        CliOutcome { success: out.status.success(), stdout, stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
    }
}

/// A whole login through the browser; returns the CLI's page and outcome.
fn sso_login(w: &World, home: &Path, provider: &str, hint: &str) -> (Page, CliOutcome) {
    let login = CliLogin::start(w, home, provider, 60);
    let page = Browser::new(&w.relay).visit(&login.address_for(hint));
    (page, login.finish())
}

fn assert_logged_in(outcome: &CliOutcome, user: &str) {
    assert!(outcome.success, "login --sso failed:\n{}\n{}", outcome.stdout, outcome.stderr);
    assert!(outcome.stdout.contains(&format!("logged in as {user} ")), "{}", outcome.stdout);
}

// ---------------------------------------------------------------------------------------------------------------
// The tests.

#[test]
fn sso_first_login_provisions_the_account_and_the_next_links_to_it() {
    let w = world();
    let before = w.counts();

    let (page, outcome) = sso_login(&w, &w.home("alice"), "corp", "alice");
    assert_logged_in(&outcome, "alice");
    assert_eq!(page.status, 200, "the CLI's page: {page:?}");
    let after = w.counts();
    assert_eq!((after.0, after.1), (before.0 + 1, before.1 + 1), "one account and one linked identity");
    assert_eq!(w.identities_of("alice"), [(w.corp.issuer.clone(), "corp-0001".to_owned())]);
    assert_eq!(w.groups_of("alice"), ["engineering", "staff"], "groups mapped by group-map");

    // The new account is an ordinary end-to-end participant at once.
    ok(&w.home("alice"), &["send", "bob", "hello from single sign-on"]);
    let got = ok(&w.home("bob"), &["recv", "--json"]);
    assert!(got.contains("hello from single sign-on"), "{got}");

    // A second login (another device) finds the same account by issuer and subject.
    let (_, again) = sso_login(&w, &w.home("alice-phone"), "corp", "alice");
    assert_logged_in(&again, "alice");
    let linked = w.counts();
    assert_eq!((linked.0, linked.1), (after.0, after.1), "no second account, no second identity");
    // (A second device of an account gets its end-to-end keys by being linked from the first: docs/admin.md.)

    // Logged out and back in on the first device: the same account, still able to send.
    ok(&w.home("alice"), &["logout"]);
    let (_, back) = sso_login(&w, &w.home("alice"), "corp", "alice");
    assert_logged_in(&back, "alice");
    assert_eq!((w.counts().0, w.counts().1), (after.0, after.1));
    ok(&w.home("alice"), &["send", "bob", "back again"]);
    let got = ok(&w.home("bob"), &["recv", "--json"]);
    assert!(got.contains("back again"), "{got}");
}

#[test]
fn sso_never_links_by_email_or_by_name() {
    let w = world();
    let (_, first) = sso_login(&w, &w.home("alice"), "corp", "alice");
    assert_logged_in(&first, "alice");
    let before = w.counts();

    // Same provider, same e-mail address, a username that becomes "alice": another person, refused.
    let (_, twin) = sso_login(&w, &w.home("twin"), "corp", "alice-twin");
    assert!(!twin.success, "the twin got in: {}", twin.stdout);
    assert!(twin.stderr.contains("name_taken"), "{}", twin.stderr);
    // A provider user named like a password account does not get it either.
    let (_, bob) = sso_login(&w, &w.home("corp-bob"), "corp", "bob");
    assert!(!bob.success && bob.stderr.contains("name_taken"), "{}", bob.stderr);
    assert_eq!(w.counts(), before, "no account, identity or login code was made");
    assert_eq!(w.identities_of("alice"), [(w.corp.issuer.clone(), "corp-0001".to_owned())]);
    assert!(w.identities_of("bob").is_empty());
}

#[test]
fn sso_two_providers_at_once() {
    let w = world();
    let listed = ok(&w.home("bob"), &["login", "--list-sso", "--server", &w.relay.url]);
    assert!(listed.contains("corp") && listed.contains("Corp SSO") && listed.contains("lab") && listed.contains("The Lab"), "{listed}");
    let page = Browser::new(&w.relay).get(&format!("{}/plugins/sso/providers", w.relay.url.replacen("wss://", "https://", 1)));
    let providers: serde_json::Value = serde_json::from_str(&page.body).unwrap_or_else(|e| panic!("{e}: {}", page.body));
    assert_eq!(
        providers,
        serde_json::json!([
            { "id": "corp", "name": "Corp SSO", "login": "/plugins/sso/login/corp" },
            { "id": "lab", "name": "The Lab", "login": "/plugins/sso/login/lab" },
        ])
    );

    let (_, alice) = sso_login(&w, &w.home("alice"), "corp", "alice");
    assert_logged_in(&alice, "alice");
    let (_, dave) = sso_login(&w, &w.home("dave"), "lab", "dave");
    assert_logged_in(&dave, "dave");
    assert_eq!(w.identities_of("dave"), [(w.lab.issuer.clone(), "lab-dave".to_owned())]);
    // The same subject at another issuer is another person.
    let (_, other) = sso_login(&w, &w.home("otheralice"), "lab", "otheralice");
    assert_logged_in(&other, "alice2");
    assert_eq!(w.identities_of("alice"), [(w.corp.issuer.clone(), "corp-0001".to_owned())]);
    ok(&w.home("dave"), &["send", "alice", "hi from the lab"]);
    assert!(ok(&w.home("alice"), &["recv", "--json"]).contains("hi from the lab"));

    // Logging out at a provider: the plugin sends the browser to its end_session_endpoint.
    let base = w.relay.url.replacen("wss://", "https://", 1);
    let page = Browser::new(&w.relay).get(&format!("{base}/plugins/sso/logout/corp"));
    assert_eq!(page.status, 302, "{page:?}");
    let location = page.header("location").unwrap_or_default();
    assert!(location.starts_with(&format!("{}/session/end?", w.corp.issuer)) && location.contains("client_id=imfree-relay"), "{location}");
}

#[test]
fn sso_wrong_tokens_are_refused_and_leave_nothing_behind() {
    let w = world();
    // An earlier login, whose nonce the provider will replay.
    let (_, frank) = sso_login(&w, &w.home("frank"), "corp", "frank");
    assert_logged_in(&frank, "frank");

    for (mischief, code) in [
        ("wrong-issuer", "invalid_issuer"),
        ("wrong-audience", "invalid_audience"),
        ("expired", "token_expired"),
        ("bad-signature", "invalid_signature"),
        ("alg-none", "invalid_signature"),
        ("hs256-public-key", "invalid_signature"),
        ("replay-nonce", "invalid_nonce"),
        ("strip-verifier", "token_exchange_failed"),
    ] {
        let before = w.counts();
        w.corp.arm(mischief);
        let (page, outcome) = sso_login(&w, &w.home(&format!("eve-{mischief}")), "corp", "eve");
        assert!(!outcome.success, "{mischief}: eve got in: {}", outcome.stdout);
        assert!(outcome.stderr.contains(code), "{mischief}: the CLI says {code}: {}", outcome.stderr);
        assert!(!page.body.contains("You are signed in"), "{mischief}: {page:?}");
        assert_eq!(w.counts(), before, "{mischief}: no account, identity or login code");
    }
    assert!(w.identities_of("eve").is_empty());

    // Not in an allowed group: refused, nothing made.
    let before = w.counts();
    let (_, mallory) = sso_login(&w, &w.home("mallory"), "corp", "mallory");
    assert!(!mallory.success && mallory.stderr.contains("not_allowed"), "{}", mallory.stderr);
    assert_eq!(w.counts(), before);

    // The provider behaves again: eve gets in.
    let (_, eve) = sso_login(&w, &w.home("eve"), "corp", "eve");
    assert_logged_in(&eve, "eve");
    // No token, code or secret in the relay's log.
    let log = w.relay.log();
    for secret in ["secret-of-corp", "secret-of-lab", "eyJ"] {
        assert!(!log.contains(secret), "{secret} in the relay log");
    }
}

#[test]
fn sso_wrong_state_replayed_callbacks_and_foreign_redirects_are_refused() {
    let w = world();
    let base = w.relay.url.replacen("wss://", "https://", 1);
    let callback_prefix = format!("{base}/plugins/sso/callback");
    let before = w.counts();

    // The provider sends the browser back; the test changes the state on the way.
    let login = CliLogin::start(&w, &w.home("alice"), "corp", 60);
    let mut browser = Browser::new(&w.relay);
    let callback = match browser.follow(&login.address_for("alice"), |next| next.starts_with(&callback_prefix)) {
        Followed::Stopped(url) => url,
        Followed::Landed(page) => panic!("never reached the relay's callback: {page:?}"),
    };
    let state = query_param(&callback, "state").expect("state");
    let forged = callback.replace(&format!("state={state}"), "state=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let refused = browser.get(&forged);
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.header("location").is_none());
    assert!(refused.body.contains("unknown"), "{}", refused.body);
    assert_eq!(w.counts(), before, "a wrong state makes nothing");

    // The genuine callback still works once...
    let page = browser.visit(&callback);
    assert_eq!(page.status, 200, "{page:?}");
    assert_logged_in(&login.finish(), "alice");
    // ...and only once.
    let after = w.counts();
    let replayed = browser.get(&callback);
    assert_eq!(replayed.status, 400, "{replayed:?}");
    assert!(replayed.header("location").is_none());
    assert_eq!(w.counts(), after, "a replayed callback issues no second code");

    // A redirect_uri that is not loopback: no login starts.
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    for redirect in ["http%3A%2F%2Fevil.example%3A8080%2Fcallback", "https%3A%2F%2F127.0.0.1%3A8080%2Fcallback", "http%3A%2F%2F127.0.0.1.evil.example%3A80%2F"] {
        let page = browser.get(&format!("{base}/plugins/sso/login/corp?redirect_uri={redirect}&challenge={challenge}"));
        assert_eq!(page.status, 400, "{redirect}: {page:?}");
        assert!(page.header("location").is_none(), "{redirect}: no redirect to the provider");
        assert!(page.body.contains("loopback"), "{redirect}: {}", page.body);
    }
    // Nor without a proper challenge, nor for an unknown provider.
    let page = browser.get(&format!("{base}/plugins/sso/login/corp?redirect_uri=http%3A%2F%2F127.0.0.1%3A8080%2Fcb&challenge=short"));
    assert_eq!(page.status, 400, "{page:?}");
    let page = browser.get(&format!("{base}/plugins/sso/login/nope?redirect_uri=http%3A%2F%2F127.0.0.1%3A8080%2Fcb&challenge={challenge}"));
    assert_eq!(page.status, 404, "{page:?}");
    assert_eq!(w.counts(), after);
}
