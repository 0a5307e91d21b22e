//! The HTTP side: the IMF WebSocket endpoint, `/healthz`, `/metrics`; TLS via rustls (or plaintext on loopback
//! when explicitly enabled).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::RelayState;

/// Path of the IMF WebSocket endpoint.
pub const IMF_PATH: &str = "/v1/imf";

/// The axum router of the relay.
pub(crate) fn router(state: Arc<RelayState>) -> Router {
    Router::new()
        .route(IMF_PATH, get(upgrade))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
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
        .read_buffer_size(2048)
        .write_buffer_size(0)
        .on_upgrade(move |socket| crate::conn::serve(state, socket, ip, guard))
}
