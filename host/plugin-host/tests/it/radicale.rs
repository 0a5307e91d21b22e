//! A real CalDAV server for the calendar plugin's tests: PyPI `radicale` 3 (installed by .ci/deps/calendar.sh),
//! started on a free loopback port with its own storage folder (authentication `none`: any user name with any
//! password, which still makes the plugin send its Basic credentials), stopped when dropped. The test talks to it
//! over plain HTTP/1.1 from std, to read back what the plugin wrote without going through the plugin.
//!
//! Also compiled into the imfree binary's tests (host/cli/tests/it/calendar.rs includes this file).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The user the tests write as, and its password (radicale with `auth none` accepts any).
pub const DAV_USER: &str = "alice";
pub const DAV_PASSWORD: &str = "correct horse";
/// `Basic base64("alice:correct horse")`.
const AUTHORIZATION: &str = "Basic YWxpY2U6Y29ycmVjdCBob3JzZQ==";

/// A running radicale.
pub struct Radicale {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _storage: tempfile::TempDir,
}

/// A response: status, headers (names lower-case), body.
pub struct DavResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl DavResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl Radicale {
    /// Start radicale and wait (up to a generous minute) until it accepts connections. Panics with the way to
    /// install it when it is missing.
    pub fn start() -> Radicale {
        let installed = Command::new("python3")
            .args(["-c", "import radicale"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            installed,
            "the calendar tests need a real CalDAV server: PyPI `radicale` is not installed for python3. \
             Run `bash .ci/deps/calendar.sh`."
        );
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let storage = tempfile::tempdir().expect("storage folder");
        let child = Command::new("python3")
            .args(["-m", "radicale", "--server-hosts"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--storage-filesystem-folder")
            .arg(storage.path().join("collections"))
            .args(["--auth-type", "none", "--logging-level", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting radicale");
        let mut server = Radicale {
            child,
            port,
            _storage: storage,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("radicale exited before it listened: {status}");
            }
            assert!(Instant::now() < deadline, "radicale did not listen on port {port} within a minute");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// `http://127.0.0.1:<port>`.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One request as [`DAV_USER`].
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> DavResponse {
        dav_request(self.port, method, path, headers, body)
    }

    /// MKCALENDAR `path` (e.g. `/alice/calendar/`).
    pub fn make_calendar(&self, path: &str) {
        let r = self.request("MKCALENDAR", path, &[], "");
        assert_eq!(r.status, 201, "MKCALENDAR {path}: {}", r.body);
    }

    /// Every calendar object in the collection `path`: (href, ETag, text with folded lines joined), read with
    /// PROPFIND and GET.
    pub fn objects(&self, path: &str) -> Vec<(String, String, String)> {
        let listing = self.request(
            "PROPFIND",
            path,
            &[("Depth", "1"), ("Content-Type", "application/xml")],
            r#"<?xml version="1.0"?><propfind xmlns="DAV:"><prop><getetag/></prop></propfind>"#,
        );
        assert_eq!(listing.status, 207, "PROPFIND {path}: {}", listing.body);
        let mut out = Vec::new();
        for piece in listing.body.split("href>").skip(1) {
            let href = piece.split('<').next().unwrap_or_default();
            if !href.ends_with(".ics") || out.iter().any(|(h, _, _)| h == href) {
                continue;
            }
            let r = self.request("GET", href, &[], "");
            assert_eq!(r.status, 200, "GET {href}");
            let etag = r.header("etag").unwrap_or_default().to_owned();
            out.push((href.to_owned(), etag, unfold(&r.body)));
        }
        out
    }
}

/// One request as [`DAV_USER`] to the radicale on `port` (for helpers that hold only the port).
pub fn dav_request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> DavResponse {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to radicale");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nAuthorization: {AUTHORIZATION}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write request");
    stream.write_all(body.as_bytes()).expect("write body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    DavResponse { status, headers, body }
}

/// Join folded iCalendar lines.
pub fn unfold(text: &str) -> String {
    text.replace("\r\n ", "").replace("\n ", "").replace("\r\n", "\n")
}

/// The unfolded line of `text` that starts with `prefix` and contains every one of `parts`.
pub fn line_with<'a>(text: &'a str, prefix: &str, parts: &[&str]) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(prefix) && parts.iter().all(|p| l.contains(p)))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for Radicale {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
