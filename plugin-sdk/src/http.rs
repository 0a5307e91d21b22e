//! Outbound HTTP (capability `http.outbound`), a small blocking client over `wasi:http/outgoing-handler`.
//!
//! ```ignore
//! use imfree_plugin_sdk::http;
//!
//! let response = http::post(
//!     "https://hooks.slack.com/services/T000/B000/XXXX",
//!     &[("content-type", "application/json")],
//!     br#"{"text":"deployed"}"#,
//! )?;
//! if !response.is_success() {
//!     imfree_plugin_sdk::log::warn(&format!("webhook answered {}", response.status));
//! }
//! ```
//!
//! The host decides: the URL's scheme, host and port (and path prefix) must be listed under `http.outbound` in
//! plugin.toml AND granted by the administrator; the name must not resolve to a loopback, private or metadata
//! address; the response body and the time are capped. A refusal is an [`HttpError`], never a trap. The `Host`
//! header is set by the host from the URL: passing one is an error. Redirects are not followed: a 3xx comes back as
//! a [`Response`] (follow `location` yourself if you must; each hop is checked by the host again).

use std::fmt;

use crate::wasi_bindings::wasi::http::outgoing_handler;
use crate::wasi_bindings::wasi::http::types::{
    ErrorCode, Fields, HeaderError, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use crate::wasi_bindings::wasi::io::streams::StreamError;

/// A response: status, headers (names lower-case, values as text) and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Headers in the order received.
    pub headers: Vec<(String, String)>,
    /// The body (at most the host's `http-max-response-bytes`).
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// Status 200-299.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why a request produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The URL is not `http(s)://host[:port][/path][?query]`.
    InvalidUrl(String),
    /// A header the guest may not set (`host`, `connection`, `transfer-encoding`...); the host sets those.
    ForbiddenHeader(String),
    /// A malformed header name or value.
    InvalidHeader(String),
    /// The host refused the request: the origin is not requested or not granted, or the name resolves to an
    /// address plugins may not reach. The administrator's incident log says which.
    Denied(String),
    /// The response (or the request body) is larger than the host allows.
    TooLarge(String),
    /// The request took longer than the host allows.
    Timeout(String),
    /// Anything else: DNS, connection, TLS, protocol.
    Transport(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, detail) = match self {
            HttpError::InvalidUrl(d) => ("invalid url", d),
            HttpError::ForbiddenHeader(d) => ("forbidden header", d),
            HttpError::InvalidHeader(d) => ("invalid header", d),
            HttpError::Denied(d) => ("denied", d),
            HttpError::TooLarge(d) => ("too large", d),
            HttpError::Timeout(d) => ("timeout", d),
            HttpError::Transport(d) => ("transport", d),
        };
        write!(f, "{kind}: {detail}")
    }
}

impl std::error::Error for HttpError {}

/// `GET url`.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Result<Response, HttpError> {
    request("GET", url, headers, None)
}

/// `POST url` with `body`.
pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Response, HttpError> {
    request("POST", url, headers, Some(body))
}

/// Any method; `body` `None` sends none.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Result<Response, HttpError> {
    let target = Target::parse(url)?;
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(&name.to_ascii_lowercase(), &value.as_bytes().to_vec())
            .map_err(|e| match e {
                HeaderError::Forbidden => HttpError::ForbiddenHeader(name.to_ascii_lowercase()),
                _ => HttpError::InvalidHeader(name.to_string()),
            })?;
    }
    let request = OutgoingRequest::new(fields);
    let method = match method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_owned()),
    };
    let invalid = |what: &str| HttpError::InvalidUrl(format!("the host refused the {what}"));
    request.set_method(&method).map_err(|()| HttpError::Transport("invalid method".into()))?;
    request.set_scheme(Some(&target.scheme)).map_err(|()| invalid("scheme"))?;
    request.set_authority(Some(&target.authority)).map_err(|()| invalid("host"))?;
    request
        .set_path_with_query(Some(&target.path_with_query))
        .map_err(|()| invalid("path"))?;
    let outgoing_body = match body {
        Some(_) => Some(request.body().map_err(|()| HttpError::Transport("request body unavailable".into()))?),
        None => None,
    };

    let pending = outgoing_handler::handle(request, None).map_err(from_code)?;

    if let (Some(outgoing_body), Some(bytes)) = (outgoing_body, body) {
        // Written after `handle`: the host streams it out as the request goes. A failed write shows up as the
        // response's error below, which says more than the write error would.
        if let Ok(stream) = outgoing_body.write() {
            for chunk in bytes.chunks(4096) {
                if stream.blocking_write_and_flush(chunk).is_err() {
                    break;
                }
            }
        }
        let _ = OutgoingBody::finish(outgoing_body, None);
    }

    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(from_code(code)),
        Some(Err(())) => return Err(HttpError::Transport("the response was already taken".into())),
        None => return Err(HttpError::Transport("the response is not ready".into())),
    };
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| HttpError::Transport("response body unavailable".into()))?;
    let mut body = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| HttpError::Transport("response body unavailable".into()))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => return Err(from_body_error(&e.to_debug_string())),
            }
        }
    }
    drop(IncomingBody::finish(incoming));
    Ok(Response { status, headers, body })
}

/// The parts of a URL wasi:http wants.
#[derive(Debug)]
struct Target {
    scheme: Scheme,
    authority: String,
    path_with_query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, HttpError> {
        let bad = |why: &str| HttpError::InvalidUrl(why.to_owned());
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("missing http:// or https://"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(bad("only http and https are supported")),
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.is_empty() {
            return Err(bad("missing host"));
        }
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not allowed; send them in a header"));
        }
        let path_with_query = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        Ok(Target {
            scheme,
            authority: authority.to_owned(),
            path_with_query,
        })
    }
}

fn from_code(code: ErrorCode) -> HttpError {
    match code {
        ErrorCode::HttpRequestDenied => HttpError::Denied(
            "the host refused the request: its origin is not both requested in plugin.toml and granted".into(),
        ),
        ErrorCode::DestinationIpProhibited => HttpError::Denied(
            "the host refused the request: the name resolves to an address plugins may not reach".into(),
        ),
        ErrorCode::HttpRequestUriInvalid => HttpError::InvalidUrl("the host refused the URL".into()),
        ErrorCode::HttpResponseBodySize(limit) => HttpError::TooLarge(match limit {
            Some(n) => format!("the response is larger than the host's limit of {n} bytes"),
            None => "the response is larger than the host's limit".into(),
        }),
        ErrorCode::HttpRequestBodySize(limit) => HttpError::TooLarge(match limit {
            Some(n) => format!("the request body is larger than the host's limit of {n} bytes"),
            None => "the request body is larger than the host's limit".into(),
        }),
        ErrorCode::HttpResponseTimeout
        | ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::DnsTimeout => HttpError::Timeout(format!("{code:?}")),
        ErrorCode::ConnectionLimitReached => HttpError::Denied(
            "too many requests: in this call (the host's http-max-requests-per-call) or in flight \
             (http-max-concurrent)"
                .into(),
        ),
        other => HttpError::Transport(format!("{other:?}")),
    }
}

/// A failed body read carries only text (wasi:http 0.2 has no error code for it in wasmtime 48).
fn from_body_error(text: &str) -> HttpError {
    let lower = text.to_ascii_lowercase();
    if lower.contains("body size") {
        HttpError::TooLarge(format!("the response body: {text}"))
    } else if lower.contains("timeout") || lower.contains("timed out") {
        HttpError::Timeout(format!("the response body: {text}"))
    } else {
        HttpError::Transport(format!("the response body: {text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_for_wasi_http() {
        let t = Target::parse("https://hooks.slack.com/services/T/B?x=1#frag").unwrap();
        assert!(matches!(t.scheme, Scheme::Https));
        assert_eq!(t.authority, "hooks.slack.com");
        assert_eq!(t.path_with_query, "/services/T/B?x=1");
        let t = Target::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((t.authority.as_str(), t.path_with_query.as_str()), ("127.0.0.1:8080", "/"));
        let t = Target::parse("http://h?q").unwrap();
        assert_eq!(t.path_with_query, "/?q");
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("https://user:pw@x/").is_err());
        assert!(Target::parse("https:///x").is_err());
    }
}
