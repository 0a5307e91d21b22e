//! Single sign-on from the client's side, the RFC 8252 native-app way: a PKCE verifier and challenge, a one-shot
//! HTTP listener on a loopback port that receives the browser's redirect, the relay's list of providers, and the
//! address the user opens. The login itself ([`crate::Client::login_sso`]) is an XX handshake with the login code
//! and the verifier instead of a password.
//!
//! What it must not do: log or print the login code or the verifier, or listen anywhere but on loopback.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zeroize::Zeroizing;

use crate::ClientError;

/// A provider the relay's sso plugin offers (`GET /plugins/sso/providers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsoProvider {
    /// What `--sso` takes.
    pub id: String,
    /// A name to show.
    pub name: String,
    /// The login path on the relay (`/plugins/sso/login/<id>`).
    pub login: String,
}

/// The providers the relay's sso plugin offers, over HTTPS with the TLS certificate pinned to `tls_pin` (when given).
pub async fn list_providers(server: &str, tls_pin: Option<&str>) -> Result<Vec<SsoProvider>, ClientError> {
    let mut http = crate::files::RelayHttp::connect(server, tls_pin).await?;
    let body = http.call(hyper::Method::GET, "/plugins/sso/providers", "", Bytes::new(), 1 << 20).await.map_err(|e| match e {
        ClientError::Protocol(m) if m.contains("HTTP 404") => {
            ClientError::Config("this relay offers no single sign-on (its sso plugin is not enabled)".into())
        }
        other => other,
    })?;
    serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(format!("the relay's provider list is not valid: {e}")))
}

/// A PKCE pair (RFC 7636, S256): the client keeps the verifier and sends the challenge.
pub struct Pkce {
    /// 256 random bits, base64url (43 characters). Secret until the login.
    pub verifier: Zeroizing<String>,
    /// base64url(SHA-256(verifier)), no padding.
    pub challenge: String,
}

impl Pkce {
    /// A fresh random pair.
    pub fn new() -> Pkce {
        let mut bytes = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut bytes[..]);
        let verifier = Zeroizing::new(URL_SAFE_NO_PAD.encode(&bytes[..]));
        let challenge = imfree_proto::auth::sso_challenge(&verifier);
        Pkce { verifier, challenge }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Pkce::new()
    }
}

impl std::fmt::Debug for Pkce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkce").field("challenge", &self.challenge).finish_non_exhaustive()
    }
}

/// The address to open in a browser: `https://HOST:PORT/plugins/sso/login/<provider>?redirect_uri=…&challenge=…`
/// for the relay at `server` (`wss://HOST:PORT`).
pub fn login_address(server: &str, provider: &str, redirect_uri: &str, challenge: &str) -> Result<String, ClientError> {
    let (tls, authority) = crate::files::split_server(server)?;
    if provider.is_empty() || !provider.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err(ClientError::Config(format!("no provider {provider:?}: provider ids use a-z, A-Z, 0-9, '-', '_' and '.'")));
    }
    Ok(format!(
        "{}://{authority}/plugins/sso/login/{provider}?redirect_uri={}&challenge={}",
        if tls { "https" } else { "http" },
        percent_encode(redirect_uri),
        percent_encode(challenge)
    ))
}

/// What the browser brought back to the loopback listener.
#[derive(PartialEq, Eq)]
pub enum SsoRedirect {
    /// The login code to redeem (secret).
    Code(Zeroizing<String>),
    /// The relay (or the provider) refused: a machine code and a text, as the plugin sent them (untrusted: shown
    /// with control characters removed).
    Error {
        /// `error`.
        code: String,
        /// `error_description`.
        description: String,
    },
}

impl std::fmt::Debug for SsoRedirect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SsoRedirect::Code(_) => f.write_str("Code(..)"),
            SsoRedirect::Error { code, description } => f.debug_struct("Error").field("code", code).field("description", description).finish(),
        }
    }
}

/// An HTTP listener on `127.0.0.1:<random port>` that waits for the browser's redirect to `/callback`.
pub struct LoopbackListener {
    listener: TcpListener,
    port: u16,
}

/// The largest request head the listener reads.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// How long one browser connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

impl LoopbackListener {
    /// Listen on a random loopback port.
    pub async fn bind() -> Result<LoopbackListener, ClientError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| ClientError::Io(format!("cannot listen on a loopback port for the sign-in redirect: {e}")))?;
        let port = listener.local_addr().map_err(|e| ClientError::Io(e.to_string()))?.port();
        Ok(LoopbackListener { listener, port })
    }

    /// `http://127.0.0.1:<port>/callback`.
    pub fn redirect_uri(&self) -> String {
        format!("http://127.0.0.1:{}/callback", self.port)
    }

    /// Wait (at most `timeout`) for a request to `/callback` with `code` or `error`, answer the browser with a short
    /// page, and return what it brought. Other requests (a favicon, a stray path, a callback with neither) are
    /// answered and waited past.
    pub async fn wait(self, timeout: Duration) -> Result<SsoRedirect, ClientError> {
        let wait = async {
            loop {
                let Ok((stream, _)) = self.listener.accept().await else { continue };
                if let Some(redirect) = serve_one(stream).await {
                    return redirect;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| {
            ClientError::Io(format!("no sign-in came back within {} s: open the address in a browser and sign in, or give a longer --timeout", timeout.as_secs()))
        })
    }
}

async fn serve_one(mut stream: TcpStream) -> Option<SsoRedirect> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                return Some(());
            }
            if head.len() > MAX_REQUEST_HEAD {
                return None;
            }
        }
    };
    if tokio::time::timeout(READ_TIMEOUT, read).await.ok().flatten().is_none() {
        let _ = respond(&mut stream, "400 Bad Request", "Bad request", "The request could not be read.").await;
        return None;
    }
    let line = head.split(|b| *b == b'\r').next().map(|l| String::from_utf8_lossy(l).into_owned()).unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if method != "GET" || path != "/callback" {
        let _ = respond(&mut stream, "404 Not Found", "Not found", "This address only receives the sign-in redirect.").await;
        return None;
    }
    let params = parse_query(query);
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if let Some(code) = get("code").filter(|c| !c.is_empty()) {
        let _ = respond(&mut stream, "200 OK", "Signed in", "You are signed in to imfree. You can close this tab and go back to the terminal.").await;
        return Some(SsoRedirect::Code(Zeroizing::new(code)));
    }
    if let Some(code) = get("error") {
        let code = printable(&code, 64);
        let description = printable(&get("error_description").unwrap_or_default(), 512);
        let text = if description.is_empty() { code.clone() } else { format!("{description} ({code})") };
        let _ = respond(&mut stream, "200 OK", "Sign-in failed", &format!("imfree could not sign you in: {text}. Close this tab and try again from the terminal.")).await;
        return Some(SsoRedirect::Error { code, description });
    }
    let _ = respond(&mut stream, "400 Bad Request", "Bad request", "The redirect carried neither a code nor an error.").await;
    None
}

async fn respond(stream: &mut TcpStream, status: &str, title: &str, text: &str) -> std::io::Result<()> {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>imfree: {}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\"><h1>{}</h1><p>{}</p></body></html>\n",
        html_escape(title),
        html_escape(title),
        html_escape(text)
    );
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         Referrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Untrusted text for the terminal and the page: no control characters, at most `max` characters.
fn printable(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// `application/x-www-form-urlencoded` pairs of a query string (`+` is a space; a bad escape stays as it is).
fn parse_query(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

/// Percent-encode everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_pairs_are_random_and_rfc7636_shaped() {
        let a = Pkce::new();
        let b = Pkce::new();
        assert_ne!(*a.verifier, *b.verifier);
        assert!(imfree_proto::auth::valid_sso_verifier(&a.verifier));
        assert_eq!(a.challenge, imfree_proto::auth::sso_challenge(&a.verifier));
        assert!(!format!("{a:?}").contains(a.verifier.as_str()));
    }

    #[test]
    fn login_address_is_encoded() {
        let url = login_address("wss://127.0.0.1:7878", "corp", "http://127.0.0.1:5000/callback", "abc-_").unwrap();
        assert_eq!(url, "https://127.0.0.1:7878/plugins/sso/login/corp?redirect_uri=http%3A%2F%2F127.0.0.1%3A5000%2Fcallback&challenge=abc-_");
        assert!(login_address("wss://h:1", "../x", "r", "c").is_err());
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("code=a%2Bb&error_description=no+way%21&x"),
            vec![("code".into(), "a+b".into()), ("error_description".into(), "no way!".into()), ("x".into(), String::new())]
        );
        assert_eq!(parse_query("x=%zz%4"), vec![("x".into(), "%zz%4".into())]);
        assert_eq!(printable("a\u{1b}[31mb\n", 10), "a[31mb");
    }
}
