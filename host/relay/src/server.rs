//! The HTTP side: the IMF WebSocket endpoint, `/healthz`, `/metrics`; TLS via rustls (or plaintext on loopback
//! when explicitly enabled).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use crate::state::RelayState;

/// Path of the IMF WebSocket endpoint.
pub const IMF_PATH: &str = "/v1/imf";

/// The axum router of the relay.
pub(crate) fn router(state: Arc<RelayState>) -> Router {
    Router::new()
        .route(IMF_PATH, get(upgrade))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/plugins/{name}", any(plugin_http))
        .route("/plugins/{name}/{*rest}", any(plugin_http))
        .merge(crate::files::routes())
        .route("/", get(web_asset))
        .route("/{file}", get(web_asset))
        .with_state(state)
}

/// The web client's files (host/web), when the binary embeds them and `[web] enabled`. The page may load scripts,
/// styles and its WebAssembly module from the relay only, talk to the relay only, and be framed by nobody.
async fn web_asset(State(state): State<Arc<RelayState>>, uri: axum::http::Uri, headers: HeaderMap) -> Response {
    let web = &state.config.web;
    let asset = web.enabled.then(|| web.assets.iter().find(|a| a.path == uri.path())).flatten();
    let Some(asset) = asset else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let gzip = !asset.gzip.is_empty() && accepts_gzip(&headers);
    let tag = asset.etag.trim_matches('"');
    let etag = (!tag.is_empty()).then(|| if gzip { format!("\"gz-{tag}\"") } else { format!("\"{tag}\"") });
    let fresh = etag.as_deref().is_some_and(|etag| {
        headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim() == etag || t.trim() == "*")
    });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, asset.content_type)],
            if gzip { asset.gzip } else { asset.bytes },
        )
            .into_response()
    };
    let out = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data: blob:; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // The page and its engine change with the binary: always revalidate (cheap, by entity tag).
        (header::CACHE_CONTROL, "no-cache"),
        (header::VARY, "accept-encoding"),
    ] {
        out.insert(name, axum::http::HeaderValue::from_static(value));
    }
    if let Some(Ok(tag)) = etag.as_deref().map(axum::http::HeaderValue::from_str) {
        out.insert(header::ETAG, tag);
    }
    if gzip && !fresh {
        out.insert(header::CONTENT_ENCODING, axum::http::HeaderValue::from_static("gzip"));
    }
    response
}

/// Whether `Accept-Encoding` allows gzip (`gzip`, or `*`, with a quality above zero).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|coding| {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let quality = parts.find_map(|p| p.strip_prefix("q=")).map_or(1.0, |q| q.parse::<f32>().unwrap_or(0.0));
        (name.eq_ignore_ascii_case("gzip") || name == "*") && quality > 0.0
    })
}

async fn healthz(State(state): State<Arc<RelayState>>) -> Response {
    match state.store.queue_len("").await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: store unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
        }
    }
}

async fn metrics(State(state): State<Arc<RelayState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
        .into_response()
}

/// Browsers send Origin; native clients do not. A browser may connect from the relay's own origin or from one the
/// operator listed.
fn origin_allowed(state: &RelayState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else { return true };
    if state.config.allowed_origins.iter().any(|a| a == origin) {
        return true;
    }
    let scheme = if state.config.tls.insecure_plaintext { "http" } else { "https" };
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| origin == format!("{scheme}://{host}"))
}

async fn upgrade(
    State(state): State<Arc<RelayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&state, &headers) {
        state.metrics.errors.get_or_create(&crate::metrics::CodeLabel { code: "origin_not_allowed" }).inc();
        return (StatusCode::FORBIDDEN, "origin_not_allowed: this origin may not connect to the relay\n").into_response();
    }
    let ip: IpAddr = peer.ip().to_canonical();
    let Some(guard) = state.ip_conns.try_acquire(ip, state.config.limits.connections_per_ip) else {
        state.metrics.errors.get_or_create(&crate::metrics::CodeLabel { code: "too_many_connections" }).inc();
        return (StatusCode::TOO_MANY_REQUESTS, "too_many_connections: too many connections from this address\n").into_response();
    };
    let max = imfree_crypto::noise::MAX_NOISE_MESSAGE;
    ws.max_message_size(max + 1)
        .max_frame_size(max + 1)
        .read_buffer_size(state.config.limits.ws_read_buffer_bytes)
        .write_buffer_size(0)
        .on_upgrade(move |socket| crate::conn::serve(state, socket, ip, guard))
}

/// Response headers a plugin may not set: the relay decides framing, cookies and the page's security policy.
const FORBIDDEN_RESPONSE_HEADERS: &[&str] = &[
    "set-cookie",
    "content-security-policy",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "strict-transport-security",
    "access-control-allow-origin",
    "access-control-allow-credentials",
];

/// `/plugins/<name>/…`: handed to the relay-scope plugin of that name (or, failing that, to the bot-scope plugin of
/// that name, through its bot's engine). Nothing about the request is logged: paths may carry secrets (incoming
/// webhook URLs). Its answer is served with
/// `Content-Security-Policy: sandbox`, so a plugin's page runs in an opaque origin and can never reach the web
/// client's storage, cookies or scripts on the relay's origin; cookies it tries to set are dropped.
async fn plugin_http(
    State(state): State<Arc<RelayState>>,
    axum::extract::Path(params): axum::extract::Path<Vec<(String, String)>>,
    request: axum::extract::Request,
) -> Response {
    let name = params.iter().find(|(k, _)| k == "name").map(|(_, v)| v.clone()).unwrap_or_default();
    let Some(host) = state.plugins.http_host(&name) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let rest = params.iter().find(|(k, _)| k == "rest").map(|(_, v)| v.as_str()).unwrap_or("");
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, state.config.plugin_host.max_http_body_bytes).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response(),
    };
    let headers = parts
        .headers
        .iter()
        .filter(|(k, _)| *k != header::COOKIE && *k != header::AUTHORIZATION)
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), v.to_owned())))
        .collect();
    let req = imfree_plugin_host::HttpRequest {
        method: parts.method.as_str().to_owned(),
        path: format!("/{rest}"),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers,
        body: body.to_vec(),
    };
    let answer = host.http(&name, req).await;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, answer.body).into_response();
    let out = response.headers_mut();
    for (k, v) in answer.headers {
        let (Ok(k), Ok(v)) = (axum::http::HeaderName::try_from(k.to_ascii_lowercase()), axum::http::HeaderValue::try_from(v)) else { continue };
        if !FORBIDDEN_RESPONSE_HEADERS.contains(&k.as_str()) {
            out.append(k, v);
        }
    }
    out.insert(header::CONTENT_SECURITY_POLICY, axum::http::HeaderValue::from_static("sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"));
    out.insert(header::X_CONTENT_TYPE_OPTIONS, axum::http::HeaderValue::from_static("nosniff"));
    out.insert(header::REFERRER_POLICY, axum::http::HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, value.parse().expect("header"));
        h
    }

    #[test]
    fn gzip_is_chosen_only_when_accepted() {
        assert!(accepts_gzip(&with("gzip, deflate, br")));
        assert!(accepts_gzip(&with("br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(&with("*")));
        assert!(!accepts_gzip(&with("gzip;q=0")));
        assert!(!accepts_gzip(&with("br, deflate")));
        assert!(!accepts_gzip(&with("gzip;q=nonsense")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
