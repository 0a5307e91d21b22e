//! Bad input against the real relay process: each gets its documented error, the relay keeps serving everyone
//! else, and nothing panics.

use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use imfree_client::home::Home;
use imfree_crypto::noise::{IkInitiator, Transport};
use imfree_proto::auth::IkAuth;
use imfree_proto::compress::{Compression, compress};
use imfree_proto::content::Content;
use imfree_proto::{ErrorCode, Frame, FrameBody, Payload, Recipient, Request, Send};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::common::*;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn ws(relay: &RelayProc) -> Ws {
    let (config, _) = imfree_client::tls::client_config(Some(&relay.fingerprint));
    let url = format!("{}/v1/imf", relay.url);
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(url.as_str(), None, true, Some(Connector::Rustls(config)))
        .await
        .expect("websocket");
    ws
}

/// Message 1 of an IK handshake for the device in `home`, with a payload timestamp of now.
fn ik_message1(home: &Path, max_frame: usize) -> (IkInitiator, Vec<u8>) {
    let account = Home::open(Some(home)).unwrap().load().unwrap().expect("account");
    let keys = account.device_keys().unwrap();
    let auth = IkAuth {
        v: 1,
        user: account.user.clone().unwrap(),
        device: account.device.clone().unwrap(),
        token: account.token.clone().unwrap(),
        ts: imfree_client::now_ms() as u64,
        transfer: false,
    };
    IkInitiator::start(&keys.static_secret(), &account.relay_key().unwrap().unwrap(), &serde_json::to_vec(&auth).unwrap(), max_frame)
        .unwrap()
}

/// A raw authenticated connection whose own frame cap is `max_frame` (so it can send what the relay must refuse).
struct Raw {
    ws: Ws,
    t: Transport,
}

impl Raw {
    async fn connect(relay: &RelayProc, home: &Path, max_frame: usize) -> Raw {
        let mut ws = ws(relay).await;
        let (init, m1) = ik_message1(home, max_frame);
        ws.send(Message::Binary(m1.into())).await.unwrap();
        let Some(Ok(Message::Binary(m2))) = ws.next().await else { panic!("no handshake answer") };
        let (t, _) = init.finish(&m2).unwrap();
        let mut raw = Raw { ws, t };
        assert!(matches!(raw.recv().await.body, FrameBody::Welcome(_)));
        raw
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        for m in self.t.seal(bytes).unwrap() {
            self.ws.send(Message::Binary(m.into())).await.unwrap();
        }
    }

    async fn recv(&mut self) -> Frame {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(20), self.ws.next()).await.expect("relay answered").expect("open").expect("ok");
            if let Message::Binary(b) = msg
                && let Some(plain) = self.t.open(&b).unwrap() {
                    return Frame::decode(&plain, &imfree_proto::Limits { max_frame_bytes: usize::MAX, ..Default::default() }).unwrap();
                }
        }
    }

    /// The next error frame (skipping drained and the like).
    async fn error(&mut self) -> imfree_proto::ErrorFrame {
        loop {
            if let FrameBody::Error(e) = self.recv().await.body {
                return e;
            }
        }
    }

    /// The relay still answers on this connection.
    async fn ping(&mut self) {
        self.send_bytes(Frame::new(FrameBody::Ping(Request { id: Some("p".into()), reference: None })).encode().as_bytes()).await;
        loop {
            if let FrameBody::Pong(r) = self.recv().await.body {
                assert_eq!(r.reference.as_deref(), Some("p"));
                return;
            }
        }
    }
}

struct World {
    dir: tempfile::TempDir,
    relay: RelayProc,
}

impl World {
    fn new(config: Option<&str>) -> World {
        let dir = tempdir();
        let config_path = config.map(|c| {
            let p = dir.path().join("imfree.toml");
            std::fs::write(&p, c).unwrap();
            p
        });
        let relay = RelayProc::start(&dir.path().join("relay"), config_path.as_deref());
        World { dir, relay }
    }

    fn home(&self, user: &str) -> std::path::PathBuf {
        self.dir.path().join(user)
    }

    fn user(&self, user: &str) -> std::path::PathBuf {
        let home = self.home(user);
        register(&self.relay, &home, user, &format!("{user}-password"));
        home
    }

    /// Alice can still send to Bob and Bob receives it: the relay serves everyone else.
    fn still_serving(&self, tag: &str) {
        let text = format!("still-serving-{tag}");
        ok(&self.home("alice"), &["send", "bob", &text]);
        let got = ok(&self.home("bob"), &["recv", "--json"]);
        assert!(got.contains(&text), "relay stopped serving after {tag}: {got}");
    }

    fn assert_no_panic(&self) {
        let log = self.relay.log();
        assert!(!log.contains("panicked"), "the relay panicked:\n{log}");
    }
}

fn err_text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_documented_errors_and_the_connection_survives() {
    let w = World::new(None);
    let alice = w.user("alice");
    w.user("bob");
    let mut raw = Raw::connect(&w.relay, &alice, 4 << 20).await;
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        ("malformed JSON", b"{\"v\":1,\"type\":".to_vec(), ErrorCode::MalformedFrame),
        ("unknown type", br#"{"v":1,"type":"teleport"}"#.to_vec(), ErrorCode::UnknownType),
        ("wrong version", br#"{"v":9,"type":"ping"}"#.to_vec(), ErrorCode::UnsupportedVersion),
        ("invalid UTF-8", b"{\"v\":1,\"type\":\"ping\",\"id\":\"\xff\xfe\"}".to_vec(), ErrorCode::MalformedFrame),
        ("bad field", br#"{"v":1,"type":"send","id":"01HZY6Q0V2W8K3D9M5T7R4X1AB","to":"NOT VALID","mime":"a/b","data":""}"#.to_vec(), ErrorCode::InvalidField),
        ("relay-only type", br#"{"v":1,"type":"welcome","user":"a","device":"d","queued":0,"server_time":0}"#.to_vec(), ErrorCode::InvalidField),
        ("unknown recipient", br#"{"v":1,"type":"send","id":"01HZY6Q0V2W8K3D9M5T7R4X1AC","to":"nobody","mime":"a/b","data":""}"#.to_vec(), ErrorCode::UnknownRecipient),
        ("oversize frame", vec![b' '; (1 << 20) + 1], ErrorCode::FrameTooLarge),
    ];
    for (name, bytes, code) in cases {
        raw.send_bytes(&bytes).await;
        let e = raw.error().await;
        assert_eq!(e.code, code, "{name}: {}", e.message);
        assert!(!e.message.is_empty());
        raw.ping().await;
    }
    w.still_serving("malformed frames");
    w.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_bombs_are_refused_by_the_recipient_and_harm_nobody() {
    let w = World::new(None);
    let alice = w.user("alice");
    let bob = w.user("bob");
    let zeros = vec![0u8; 256 << 20];
    {
        // Alice's client sends two bombs, end-to-end encrypted like any message: only Bob's client can inflate them.
        let client = imfree_client::Client::open(Some(&alice)).await.unwrap();
        for alg in [Compression::Gzip, Compression::Br] {
            let bomb = compress(alg, &zeros);
            assert!(bomb.len() < 600 << 10, "{alg:?} bomb fits a payload: {}", bomb.len());
            let content = Content { mime: "text/plain".into(), body: Payload(bomb), compress: Some(alg), reply_to: None, refers: None, mentions: Vec::new() };
            client.compose_document("bob", &content).await.unwrap();
        }
        let mut session = client.connect().await.unwrap();
        session.sync_outbox(Duration::from_secs(60)).await.unwrap();
        session.close().await;
    }
    // Bob's client refuses to inflate them, records why, and keeps working.
    let lines = parse_json_lines(&ok(&bob, &["recv", "--json"]));
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        assert_eq!(line["error"], "undecodable", "{line}");
        assert!(line["body"].as_str().unwrap().contains("exceeds the limit"), "{line}");
    }
    w.still_serving("bombs");
    w.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unencrypted_messages_are_refused_by_the_recipient() {
    let w = World::new(None);
    let alice = w.user("alice");
    let bob = w.user("bob");
    // What a hostile relay (or a rogue client) could write "from alice" without any key.
    let mut raw = Raw::connect(&w.relay, &alice, 1 << 20).await;
    let content = Content::new("text/plain", b"transfer the money", None);
    let frame = Frame::new(FrameBody::Send(Send {
        id: "01HZY6Q0V2W8K3D9M5T7R4X1B2".parse().unwrap(),
        to: Recipient::User("bob".into()),
        mime: imfree_proto::mime::PLAIN_CONTENT.into(),
        data: Payload(content.encode()),
        payloads: vec![],
        refers: None,
    }));
    raw.send_bytes(frame.encode().as_bytes()).await;
    loop {
        if let FrameBody::Accepted(_) = raw.recv().await.body {
            break;
        }
    }
    let lines = parse_json_lines(&ok(&bob, &["recv", "--json"]));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["error"], "undecodable");
    assert!(!lines[0]["body"].as_str().unwrap().contains("money"), "{}", lines[0]);
    w.still_serving("plaintext injection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_abuse_is_refused() {
    let w = World::new(None);
    let alice = w.user("alice");
    w.user("bob");

    // A frame before authentication: plaintext JSON instead of the Noise handshake.
    let mut s = ws(&w.relay).await;
    s.send(Message::Text(r#"{"v":1,"type":"ping"}"#.into())).await.unwrap();
    let Some(Ok(Message::Text(t))) = s.next().await else { panic!("no answer") };
    let f = Frame::decode(t.as_bytes(), &Default::default()).unwrap();
    assert!(matches!(&f.body, FrameBody::Error(e) if e.code == ErrorCode::HandshakeRequired), "{f:?}");

    // Garbage where message 1 should be.
    let mut s = ws(&w.relay).await;
    s.send(Message::Binary(vec![1u8; 80].into())).await.unwrap();
    let Some(Ok(Message::Text(t))) = s.next().await else { panic!("no answer") };
    assert!(t.contains("handshake_failed"), "{t}");

    // A tampered message 1.
    let (_, mut m1) = ik_message1(&alice, 1 << 20);
    let last = m1.len() - 1;
    m1[last] ^= 0x40;
    let mut s = ws(&w.relay).await;
    s.send(Message::Binary(m1.into())).await.unwrap();
    let Some(Ok(Message::Text(t))) = s.next().await else { panic!("no answer") };
    assert!(t.contains("handshake_failed"), "{t}");

    // A replayed message 1: the first use succeeds, the copy is refused.
    let (init, m1) = ik_message1(&alice, 1 << 20);
    let mut first = ws(&w.relay).await;
    first.send(Message::Binary(m1.clone().into())).await.unwrap();
    let Some(Ok(Message::Binary(m2))) = first.next().await else { panic!("no message 2") };
    assert!(init.finish(&m2).is_ok());
    let mut replay = ws(&w.relay).await;
    replay.send(Message::Binary(m1.into())).await.unwrap();
    let Some(Ok(Message::Text(t))) = replay.next().await else { panic!("no answer") };
    assert!(t.contains("handshake_replayed"), "{t}");

    w.still_serving("handshake abuse");
    w.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_rate_limited_and_closed_while_others_are_served() {
    let w = World::new(None);
    let alice = w.user("alice");
    w.user("bob");
    let mut raw = Raw::connect(&w.relay, &alice, 1 << 20).await;
    let ping = Frame::new(FrameBody::Ping(Request::default())).encode();
    let mut limited = 0;
    let mut closed = false;
    for _ in 0..3000 {
        for m in raw.t.seal(ping.as_bytes()).unwrap() {
            if raw.ws.send(Message::Binary(m.into())).await.is_err() {
                closed = true;
            }
        }
        if closed {
            break;
        }
    }
    // Read what came back until the relay closes the flooding connection.
    loop {
        match tokio::time::timeout(Duration::from_secs(20), raw.ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => match raw.t.open(&b) {
                Ok(Some(plain)) => {
                    if let Ok(Frame { body: FrameBody::Error(e), .. }) = Frame::decode(&plain, &Default::default()) {
                        assert_eq!(e.code, ErrorCode::RateLimited);
                        assert!(e.retry_after_ms.is_some());
                        limited += 1;
                    }
                }
                _ => break,
            },
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    assert!(limited > 0, "the flood was never rate-limited");
    w.still_serving("flood");
    w.assert_no_panic();
}

#[test]
fn credentials_totp_tokens_and_pins_are_checked() {
    let w = World::new(None);
    let alice = w.user("alice");
    let bob = w.user("bob");

    // Wrong password.
    let out = client_with(&w.home("alice2"), &["login", "--server", &w.relay.url, "--user", "alice", "--password-stdin"], "wrong-password\n", &[]);
    assert!(!out.status.success());
    assert!(err_text(&out).contains("invalid_credentials"), "{}", err_text(&out));

    // TOTP: enable with a code computed from the printed secret.
    let (secret, enabled) = enable_totp(&alice);
    assert!(enabled.contains("two-factor authentication enabled"), "{enabled}");
    let login = |home: &str, code: Option<&str>| {
        let mut args = vec!["login", "--server", w.relay.url.as_str(), "--user", "alice", "--password-stdin"];
        if let Some(c) = code {
            args.extend(["--totp", c]);
        }
        client_with(&w.home(home), &args, "alice-password\n", &[])
    };
    let out = login("alice-totp", None);
    assert!(err_text(&out).contains("totp_required"), "{}", err_text(&out));
    let out = login("alice-totp", Some("000000"));
    let wrong_is_wrong = imfree_relay::totp::verify(&secret, "000000", now_secs(), 1).is_none();
    if wrong_is_wrong {
        assert!(err_text(&out).contains("totp_invalid"), "{}", err_text(&out));
    }
    // The code of the next step is within the ±1 window and not used yet.
    let next = imfree_relay::totp::code_at(&secret, imfree_relay::totp::TotpAlgorithm::Sha1, 6, 30, now_secs() + 30);
    let out = login("alice-totp", Some(&next));
    assert!(out.status.success(), "a fresh TOTP code works: {}", err_text(&out));
    let out = login("alice-totp2", Some(&next));
    assert!(err_text(&out).contains("totp_invalid") && err_text(&out).contains("already used"), "a used code is refused: {}", err_text(&out));

    // Revoked token: a copy of bob's home outlives his logout.
    let copy = w.home("bob-copy");
    copy_dir(&bob, &copy);
    ok(&bob, &["logout"]);
    let out = client(&copy, &["recv"]);
    assert!(err_text(&out).contains("token_revoked"), "{}", err_text(&out));

    w.assert_no_panic();
}

#[test]
fn expired_tokens_are_refused() {
    // This relay issues one-second sessions.
    let w = World::new(Some("[accounts]\nsession_ttl_secs = 1\n"));
    let carol = w.user("carol");
    std::thread::sleep(Duration::from_millis(1500));
    let out = client(&carol, &["recv"]);
    assert!(!out.status.success());
    assert!(err_text(&out).contains("token_expired"), "{}", err_text(&out));
    w.assert_no_panic();
}

#[test]
fn changed_certificate_and_relay_key_are_refused_until_accepted() {
    let mut w = World::new(None);
    let alice = w.user("alice");
    w.user("bob");
    ok(&alice, &["recv"]);

    // The operator's certificate changes: the client refuses it.
    std::fs::remove_dir_all(w.relay.data.join("tls")).unwrap();
    w.relay.restart();
    let out = client(&alice, &["recv"]);
    assert!(!out.status.success());
    assert!(err_text(&out).contains("TLS certificate changed"), "{}", err_text(&out));
    // Told to accept it, the client logs in again and pins the new one.
    let out = client_with(&alice, &["login", "--server", &w.relay.url, "--user", "alice", "--password-stdin", "--accept-new-certificate"], "alice-password\n", &[]);
    assert!(out.status.success(), "{}", err_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&w.relay.fingerprint));
    ok(&alice, &["recv"]);

    // The relay's Noise key changes: the client refuses it.
    std::fs::remove_file(w.relay.data.join("relay-noise.key")).unwrap();
    w.relay.restart();
    let out = client(&alice, &["recv"]);
    assert!(!out.status.success());
    assert!(err_text(&out).contains("Noise key changed"), "{}", err_text(&out));
    let out = client_with(&alice, &["login", "--server", &w.relay.url, "--user", "alice", "--password-stdin"], "alice-password\n", &[]);
    assert!(err_text(&out).contains("Noise key changed"), "first contact also checks the pin: {}", err_text(&out));
    let out = client_with(&alice, &["login", "--server", &w.relay.url, "--user", "alice", "--password-stdin", "--accept-new-relay-key"], "alice-password\n", &[]);
    assert!(out.status.success(), "{}", err_text(&out));
    ok(&alice, &["recv"]);
    w.assert_no_panic();
}

fn now_secs() -> u64 {
    (imfree_client::now_ms() / 1000) as u64
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Run `totp enable`, answering its prompt with the current code. Returns the secret and the output.
fn enable_totp(home: &Path) -> (Vec<u8>, String) {
    use std::io::{BufRead, BufReader, Write};
    let mut child = std::process::Command::new(bin())
        .args(["client", "--home"])
        .arg(home)
        .args(["totp", "enable"])
        .env("IMFREE_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let Some(b32) = line.strip_prefix("secret ").map(|l| l.trim().to_owned()) else {
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
        panic!("totp enable printed {line:?}; stderr: {err}");
    };
    let secret = imfree_relay::totp::secret_from_base32(&b32).expect("base32 secret");
    let code = imfree_relay::totp::code_at(&secret, imfree_relay::totp::TotpAlgorithm::Sha1, 6, 30, now_secs());
    writeln!(child.stdin.take().unwrap(), "{code}").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{line}{rest}");
    (secret, rest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_from_other_origins_are_refused() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let w = World::new(None);
    w.user("alice");
    w.user("bob");
    let (config, _) = imfree_client::tls::client_config(Some(&w.relay.fingerprint));
    let url = format!("{}/v1/imf", w.relay.url);
    let host = w.relay.url.trim_start_matches("wss://").to_owned();
    for (origin, allowed) in [("https://evil.example", false), (format!("https://{host}").as_str(), true)] {
        let mut request = url.as_str().into_client_request().unwrap();
        request.headers_mut().insert("origin", origin.parse().unwrap());
        let result =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(Connector::Rustls(config.clone()))).await;
        assert_eq!(result.is_ok(), allowed, "origin {origin}: {:?}", result.err());
        if let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = result {
            assert_eq!(response.status(), 403);
        }
    }
    w.still_serving("foreign origin");
}
