//! Outbound HTTP through wasi:http against real servers on loopback: a granted request end to end (HTTP and
//! HTTPS), and the malicious-plugin corpus for `http.outbound` — each refusal is an error the guest sees, an
//! incident naming plugin, version, capability and reason, and the host keeps serving everyone else.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imfree_plugin_host::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

/// What the test server does with a request.
#[derive(Clone, Copy)]
enum Behaviour {
    /// 200 with `x-echo: <Host header>` and a body describing the request.
    Echo,
    /// 200 with `bytes` bytes of body, with or without a Content-Length.
    Big { bytes: usize, declare_length: bool },
    /// Read the request, never answer.
    Silent,
    /// 302 to this URL.
    Redirect(&'static str),
}

/// A raw HTTP/1.1 server on 127.0.0.1 that records each request head exactly as it arrived.
struct TestServer {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    async fn start(behaviour: Behaviour) -> Self {
        Self::start_tls(behaviour, None).await
    }

    async fn start_tls(behaviour: Behaviour, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let seen = seen.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                answer(stream, behaviour, seen).await;
                            }
                        }
                        None => answer(tcp, behaviour, seen).await,
                    }
                });
            }
        });
        TestServer { addr, heads }
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, behaviour: Behaviour, seen: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let lower = head.to_ascii_lowercase();
    // Read the body so closing the socket does not reset the connection under the response.
    if lower.contains("transfer-encoding: chunked") {
        while !buf.ends_with(b"0\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    } else if let Some(len) = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        while buf.len() < head_end + len {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
    seen.lock().unwrap().push(head.clone());
    let body_text = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    match behaviour {
        Behaviour::Echo => {
            let host = header(&head, "host").unwrap_or_default();
            let request_line = head.lines().next().unwrap_or_default().to_owned();
            let body = format!("{request_line} | body {body_text:?}");
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-echo: {host}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
        Behaviour::Big { bytes, declare_length } => {
            let head = if declare_length {
                format!("HTTP/1.1 200 OK\r\ncontent-length: {bytes}\r\nconnection: close\r\n\r\n")
            } else {
                "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_owned()
            };
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let block = vec![b'x'; 16 * 1024];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(block.len());
                if stream.write_all(&block[..n]).await.is_err() {
                    return;
                }
                left -= n;
            }
        }
        Behaviour::Silent => {
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        Behaviour::Redirect(to) => {
            let response = format!(
                "HTTP/1.1 302 Found\r\nlocation: {to}\r\nx-echo: redirect\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    }
    let _ = stream.shutdown().await;
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// Manifest line asking for `origins`.
fn asks(origins: &[&str]) -> String {
    let list: Vec<String> = origins.iter().map(|o| format!("{o:?}")).collect();
    format!("http.outbound = [{}]", list.join(", "))
}

/// Admin grants for `origins`, optionally allowing private addresses, plus extra config lines.
fn grants(origins: &[&str], allow_private: bool, extra: &str) -> String {
    let list: Vec<String> = origins.iter().map(|o| format!("{o:?}")).collect();
    format!(
        "grants = {{ http-outbound = [{}], http-allow-private = {allow_private} }}\n{extra}",
        list.join(", ")
    )
}

/// Generous CPU and wall budgets (see `support::admin`) with extra limit keys.
fn limits(extra: &str) -> String {
    format!("limits = {{ cpu-ms-per-call = 10000, wall-ms-per-call = 20000, {extra} }}")
}

/// The host is still up: another plugin answers, this plugin answers another call, messages flow.
async fn still_serving(h: &Harness, plugin: &str) {
    assert_eq!(h.cmd("neighbour", "config", "greeting").await, "Some(\"hello\")");
    assert_eq!(h.cmd(plugin, "config", "greeting").await, "Some(\"hello\")");
    assert_eq!(
        h.host.outgoing_message(message("hello")).await,
        OutgoingOutcome::Send(message("hello"))
    );
}

/// Exactly one incident for `plugin`, of `kind`, raised in the `command` hook, with version and capability.
fn one_incident(h: &Harness, plugin: &str, kind: IncidentKind) -> Incident {
    let incidents = h.incidents.of(plugin);
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let incident = incidents[0].clone();
    assert_eq!(
        (incident.kind, incident.hook, incident.version.as_str()),
        (kind, Some(Hook::Command), "1.2.3"),
        "{incident}"
    );
    assert!(incident.reason.contains("http.outbound"), "names the capability: {incident}");
    assert!(!incident.reason.contains("SECRET"), "no paths or queries in incidents: {incident}");
    incident
}

async fn harness_with_neighbour() -> Harness {
    let h = harness();
    h.load_probe("neighbour", "", "").await;
    h
}

#[tokio::test]
async fn a_granted_request_reaches_the_server_and_the_guest_sees_the_response() {
    let server = TestServer::start(Behaviour::Echo).await;
    let origin = server.origin();
    let h = harness_with_neighbour().await;
    h.load_probe("fetcher", &asks(&[&origin]), &grants(&[&origin], true, ""))
        .await;

    let got = h
        .cmd("fetcher", "http-get", &format!("{origin}/status?token=SECRET accept:text/plain"))
        .await;
    let host = server.addr.to_string();
    assert_eq!(
        got,
        format!(
            "ok 200 x-echo={host} {} bytes: GET /status?token=SECRET HTTP/1.1 | body \"\"",
            "GET /status?token=SECRET HTTP/1.1 | body \"\"".len()
        )
    );
    let posted = h.cmd("fetcher", "http-post", &format!("{origin}/hook")).await;
    assert!(posted.starts_with(&format!("ok 200 x-echo={host}")), "{posted}");
    assert!(posted.contains("POST /hook HTTP/1.1"), "{posted}");
    assert!(posted.contains("ping"), "the body arrived: {posted}");

    let heads = server.heads();
    assert_eq!(heads.len(), 2);
    assert!(heads[0].to_ascii_lowercase().contains("accept: text/plain"), "{}", heads[0]);
    assert!(h.incidents.all().is_empty(), "{:?}", h.incidents.all());
    let status = h.host.plugins().into_iter().find(|p| p.name == "fetcher").unwrap();
    assert_eq!((status.http_requests, status.http_refused), (2, 0));
    assert!(
        status.capabilities.contains(&format!("http.outbound({origin}/)")),
        "{:?}",
        status.capabilities
    );
    still_serving(&h, "fetcher").await;
}

#[tokio::test]
async fn an_origin_the_manifest_does_not_request_is_refused() {
    let server = TestServer::start(Behaviour::Echo).await;
    let origin = server.origin();
    let h = harness_with_neighbour().await;
    // The component imports wasi:http but plugin.toml asks for nothing: it loads, and every request is refused.
    h.load_probe("sneaky", "", &grants(&[&origin], true, "")).await;
    let got = h.cmd("sneaky", "http-get", &format!("{origin}/x?token=SECRET")).await;
    assert!(got.starts_with("err denied:"), "{got}");
    let incident = one_incident(&h, "sneaky", IncidentKind::HttpRefused);
    assert!(
        incident
            .reason
            .contains(&format!("capability http.outbound({origin}) is not requested")),
        "{incident}"
    );
    assert!(server.heads().is_empty(), "nothing reached the server");
    let status = h.host.plugins().into_iter().find(|p| p.name == "sneaky").unwrap();
    assert_eq!((status.http_requests, status.http_refused), (1, 1));
    still_serving(&h, "sneaky").await;
}

#[tokio::test]
async fn an_origin_requested_but_not_granted_is_refused() {
    let server = TestServer::start(Behaviour::Echo).await;
    let origin = server.origin();
    let h = harness_with_neighbour().await;
    h.load_probe(
        "eager",
        &asks(&[&origin]),
        &grants(&["https://hooks.slack.com"], true, ""),
    )
    .await;
    let got = h.cmd("eager", "http-get", &format!("{origin}/")).await;
    assert!(got.starts_with("err denied:"), "{got}");
    let incident = one_incident(&h, "eager", IncidentKind::HttpRefused);
    assert!(incident.reason.contains("is not granted by the administrator"), "{incident}");
    // Another host entirely, neither requested nor granted.
    let got = h.cmd("eager", "http-get", "https://evil.example/").await;
    assert!(got.starts_with("err denied:"), "{got}");
    assert!(server.heads().is_empty());
    still_serving(&h, "eager").await;
}

#[tokio::test]
async fn loopback_needs_allow_private() {
    let server = TestServer::start(Behaviour::Echo).await;
    let origin = server.origin();
    let h = harness_with_neighbour().await;
    h.load_probe("local", &asks(&[&origin]), &grants(&[&origin], false, ""))
        .await;
    let got = h.cmd("local", "http-get", &format!("{origin}/?token=SECRET")).await;
    assert_eq!(
        got,
        "err denied: the host refused the request: the name resolves to an address plugins may not reach"
    );
    let incident = one_incident(&h, "local", IncidentKind::HttpRefused);
    assert!(
        incident.reason.contains("address 127.0.0.1 is loopback and grants.http-allow-private is not set"),
        "{incident}"
    );
    // Other spellings of 127.0.0.1 are resolved by the system and refused all the same.
    let port = server.addr.port();
    for spelling in [format!("http://127.1:{port}"), format!("http://2130706433:{port}"), format!("http://[::ffff:127.0.0.1]:{port}")] {
        h.load_probe("odd", &asks(&[&spelling]), &grants(&[&spelling], false, "")).await;
        let got = h.cmd("odd", "http-get", &format!("{spelling}/")).await;
        assert!(got.starts_with("err denied:"), "{spelling}: {got}");
    }
    let odd = h.incidents.of("odd");
    assert_eq!(odd.len(), 3, "{odd:?}");
    assert!(odd.iter().all(|i| i.reason.contains("is loopback")), "{odd:?}");
    assert!(server.heads().is_empty());
    still_serving(&h, "local").await;
}

#[tokio::test]
async fn the_metadata_service_is_refused_even_with_allow_private() {
    let h = harness_with_neighbour().await;
    let metadata = "http://169.254.169.254";
    h.load_probe("cloudy", &asks(&[metadata]), &grants(&[metadata], true, ""))
        .await;
    let started = Instant::now();
    let got = h
        .cmd("cloudy", "http-get", "http://169.254.169.254/latest/meta-data/iam/security-credentials/")
        .await;
    assert!(got.starts_with("err denied:"), "{got}");
    assert!(started.elapsed() < Duration::from_secs(2), "refused before any connection attempt");
    let incident = one_incident(&h, "cloudy", IncidentKind::HttpRefused);
    assert!(incident.reason.contains("link-local"), "{incident}");
    assert!(incident.reason.contains("may never reach"), "{incident}");
    assert!(!incident.reason.contains("security-credentials"), "{incident}");
    still_serving(&h, "cloudy").await;
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused_then_reached_when_granted() {
    let server = TestServer::start(Behaviour::Echo).await;
    let origin = format!("http://localhost:{}", server.addr.port());
    let h = harness_with_neighbour().await;
    h.load_probe("rebinder", &asks(&[&origin]), &grants(&[&origin], false, ""))
        .await;
    let got = h.cmd("rebinder", "http-get", &format!("{origin}/")).await;
    assert!(got.starts_with("err denied:"), "{got}");
    let incident = one_incident(&h, "rebinder", IncidentKind::HttpRefused);
    assert!(incident.reason.contains("is loopback"), "{incident}");
    assert!(incident.reason.contains(&format!("localhost:{}", server.addr.port())), "{incident}");
    assert!(server.heads().is_empty());
    still_serving(&h, "rebinder").await;

    // With private addresses allowed, the name is resolved once and the connection made to the vetted address;
    // the server still sees the name the plugin asked for.
    h.load_probe("intranet", &asks(&[&origin]), &grants(&[&origin], true, ""))
        .await;
    let got = h.cmd("intranet", "http-get", &format!("{origin}/")).await;
    assert!(
        got.starts_with(&format!("ok 200 x-echo=localhost:{}", server.addr.port())),
        "{got}"
    );
}

#[tokio::test]
async fn a_spoofed_host_header_is_refused_and_the_server_sees_the_real_host() {
    let server = TestServer::start(Behaviour::Echo).await;
    let origin = server.origin();
    let h = harness_with_neighbour().await;
    h.load_probe("spoofer", &asks(&[&origin]), &grants(&[&origin], true, ""))
        .await;
    let got = h
        .cmd("spoofer", "http-get", &format!("{origin}/ host:internal.example"))
        .await;
    assert_eq!(got, "err forbidden header: host");
    let incident = one_incident(&h, "spoofer", IncidentKind::HttpRefused);
    assert!(incident.reason.contains("Host header"), "{incident}");
    assert!(server.heads().is_empty(), "the request was never sent");
    // Without the header, the request goes out with the Host of its URL and nothing else.
    let got = h.cmd("spoofer", "http-get", &format!("{origin}/")).await;
    assert!(got.starts_with(&format!("ok 200 x-echo={}", server.addr)), "{got}");
    let heads = server.heads();
    assert_eq!(heads.len(), 1);
    assert!(!heads[0].contains("internal.example"), "{}", heads[0]);
    let hosts = heads[0]
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("host:"))
        .count();
    assert_eq!(hosts, 1, "{}", heads[0]);
    still_serving(&h, "spoofer").await;
}

#[tokio::test]
async fn a_response_bigger_than_the_cap_is_cut_off() {
    for declare_length in [true, false] {
        let server = TestServer::start(Behaviour::Big {
            bytes: 64 * 1024,
            declare_length,
        })
        .await;
        let origin = server.origin();
        let h = harness_with_neighbour().await;
        h.load_probe(
            "glutton",
            &asks(&[&origin]),
            &grants(&[&origin], true, &limits("http-max-response-bytes = 1000")),
        )
        .await;
        let got = h.cmd("glutton", "http-get", &format!("{origin}/big")).await;
        assert!(got.starts_with("err too large:"), "declared {declare_length}: {got}");
        if declare_length {
            assert!(got.contains("1000 bytes"), "{got}");
        }
        let incident = one_incident(&h, "glutton", IncidentKind::HttpLimit);
        assert!(incident.reason.contains("http-max-response-bytes (1000)"), "{incident}");
        still_serving(&h, "glutton").await;
    }
}

#[tokio::test]
async fn a_server_that_never_answers_hits_the_time_limit() {
    let server = TestServer::start(Behaviour::Silent).await;
    let origin = server.origin();
    let h = harness_with_neighbour().await;
    h.load_probe(
        "waiter",
        &asks(&[&origin]),
        &grants(&[&origin], true, &limits("http-timeout-ms = 300")),
    )
    .await;
    let started = Instant::now();
    let got = h.cmd("waiter", "http-get", &format!("{origin}/slow")).await;
    assert!(got.starts_with("err timeout:"), "{got}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let incident = one_incident(&h, "waiter", IncidentKind::HttpLimit);
    assert!(incident.reason.contains("timed out"), "{incident}");
    still_serving(&h, "waiter").await;
}

#[tokio::test]
async fn the_request_time_stays_inside_the_call_wall_clock_budget() {
    // No http-timeout-ms: the default (10 s) is longer than the call's 1.5 s wall clock, so the request is cut at
    // 90 % of it and the plugin still answers, instead of the whole call being killed.
    let server = TestServer::start(Behaviour::Silent).await;
    let origin = server.origin();
    let h = harness_with_neighbour().await;
    h.load_probe(
        "patient",
        &asks(&[&origin]),
        &grants(
            &[&origin],
            true,
            "limits = { cpu-ms-per-call = 10000, wall-ms-per-call = 1500 }",
        ),
    )
    .await;
    let got = h.cmd("patient", "http-get", &format!("{origin}/slow")).await;
    assert!(got.starts_with("err timeout:"), "{got}");
    let incident = one_incident(&h, "patient", IncidentKind::HttpLimit);
    assert!(incident.reason.contains("wall-ms-per-call 1500"), "{incident}");
    assert_eq!(h.host.plugins().iter().find(|p| p.name == "patient").unwrap().health.consecutive_failures, 0);
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let server = TestServer::start(Behaviour::Redirect("http://169.254.169.254/latest/meta-data/")).await;
    let origin = server.origin();
    let h = harness_with_neighbour().await;
    h.load_probe("follower", &asks(&[&origin]), &grants(&[&origin], true, ""))
        .await;
    let got = h.cmd("follower", "http-get", &format!("{origin}/moved")).await;
    assert_eq!(got, "ok 302 x-echo=redirect 0 bytes: ");
    assert_eq!(server.heads().len(), 1);
    assert!(h.incidents.all().is_empty(), "{:?}", h.incidents.all());
    // Following it is a new request, checked like any other.
    let got = h.cmd("follower", "http-get", "http://169.254.169.254/latest/meta-data/").await;
    assert!(got.starts_with("err denied:"), "{got}");
    one_incident(&h, "follower", IncidentKind::HttpRefused);
}

#[tokio::test]
async fn requests_per_call_are_limited() {
    let server = TestServer::start(Behaviour::Echo).await;
    let origin = server.origin();
    let h = harness_with_neighbour().await;
    h.load_probe(
        "chatty",
        &asks(&[&origin]),
        &grants(&[&origin], true, &limits("http-max-requests-per-call = 2")),
    )
    .await;
    let got = h.cmd("chatty", "http-repeat", &format!("3 {origin}/")).await;
    assert!(got.starts_with("ok 200,200 then err denied: too many requests"), "{got}");
    let incident = one_incident(&h, "chatty", IncidentKind::HttpLimit);
    assert!(incident.reason.contains("more than 2 requests in one call"), "{incident}");
    assert_eq!(server.heads().len(), 2);
    // The budget is per call.
    assert_eq!(h.cmd("chatty", "http-repeat", &format!("2 {origin}/")).await, "ok 200,200");
    still_serving(&h, "chatty").await;
}

#[tokio::test]
async fn requests_in_flight_are_limited_across_calls() {
    // A guest that starts requests and forgets them cannot pile up connections: each holds a slot until it ends.
    let silent = TestServer::start(Behaviour::Silent).await;
    let origin = silent.origin();
    let h = harness_with_neighbour().await;
    h.load_probe(
        "leaky",
        &asks(&[&origin]),
        &grants(&[&origin], true, &limits("http-max-concurrent = 2, http-timeout-ms = 5000")),
    )
    .await;
    assert_eq!(h.cmd("leaky", "http-leak", &format!("2 {}", silent.addr)).await, "leaked");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = h.cmd("leaky", "http-get", &format!("{origin}/")).await;
    assert!(got.starts_with("err denied: too many requests"), "{got}");
    let incident = one_incident(&h, "leaky", IncidentKind::HttpLimit);
    assert!(incident.reason.contains("more than 2 requests in flight"), "{incident}");
    assert_eq!(silent.heads().len(), 2, "only the two leaked requests reached the server");
    // The limit is per plugin.
    let echo = TestServer::start(Behaviour::Echo).await;
    let other = echo.origin();
    h.load_probe("polite", &asks(&[&other]), &grants(&[&other], true, "")).await;
    assert!(h.cmd("polite", "http-get", &format!("{other}/")).await.starts_with("ok 200"));
    still_serving(&h, "leaky").await;
}

#[tokio::test]
async fn a_request_body_over_max_output_bytes_is_not_sent() {
    let server = TestServer::start(Behaviour::Echo).await;
    let origin = server.origin();
    let h = harness_with_neighbour().await;
    h.load_probe(
        "uploader",
        &asks(&[&origin]),
        &grants(&[&origin], true, &limits("max-output-bytes = 1000")),
    )
    .await;
    assert_eq!(h.cmd("uploader", "http-upload", &format!("1000 {origin}/upload")).await, "ok 200");
    let got = h.cmd("uploader", "http-upload", &format!("5000 {origin}/upload")).await;
    assert_eq!(got, "err too large: the request body is larger than the host's limit of 1000 bytes");
    let incident = one_incident(&h, "uploader", IncidentKind::HttpLimit);
    assert!(incident.reason.contains("larger than max-output-bytes (1000)"), "{incident}");
    still_serving(&h, "uploader").await;
}

#[tokio::test]
async fn https_is_verified_against_the_url_name_while_connecting_to_the_vetted_address() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_der = certified.cert.der().to_vec();
    let key_der = certified.signing_key.serialize_der();
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(cert_der.clone())],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let server = TestServer::start_tls(Behaviour::Echo, Some(acceptor)).await;
    let port = server.addr.port();
    let by_name = format!("https://localhost:{port}");
    let by_address = format!("https://127.0.0.1:{port}");

    let h = harness_trusting(vec![cert_der]);
    h.load_probe("neighbour", "", "").await;
    h.load_probe(
        "secure",
        &asks(&[&by_name, &by_address]),
        &grants(&[&by_name, &by_address], true, ""),
    )
    .await;
    let got = h.cmd("secure", "http-get", &format!("{by_name}/tls")).await;
    assert!(got.starts_with(&format!("ok 200 x-echo=localhost:{port}")), "{got}");
    // Same server, same certificate, but the URL names an address the certificate does not cover.
    let got = h.cmd("secure", "http-get", &format!("{by_address}/tls")).await;
    assert!(got.starts_with("err transport:") && got.contains("TlsCertificateError"), "{got}");
    // Without the extra root, the public roots do not trust the test certificate.
    let h2 = harness();
    h2.load_probe("secure", &asks(&[&by_name]), &grants(&[&by_name], true, ""))
        .await;
    let got = h2.cmd("secure", "http-get", &format!("{by_name}/tls")).await;
    assert!(got.contains("TlsCertificateError"), "{got}");
    assert_eq!(server.heads().len(), 1, "only the verified connection carried a request");
    still_serving(&h, "secure").await;
}

#[test]
fn a_plugin_that_makes_no_requests_does_not_import_wasi_http() {
    // The SDK's http module costs nothing to plugins that do not call it: the example filter has no wasi:http
    // import, so it would load on a host without wasi:http too. A component names each import in its import
    // section, so a binary without the bytes "wasi:http/" cannot import it (compiling both components to list
    // their imports costs ~9 s in a debug build; this check is instant).
    let mentions_http = |wasm: &[u8]| wasm.windows(10).any(|w| w == b"wasi:http/");
    assert!(!mentions_http(&guest("filter")));
    assert!(mentions_http(&guest("guest-probe")));
}
