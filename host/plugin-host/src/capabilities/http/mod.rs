//! `http`: outbound HTTP through `wasi:http/outgoing-handler`, with the host's allowlist. Needs an
//! `http.outbound` origin in plugin.toml AND a matching `grants.http-outbound` entry.
//!
//! wasi:http is linked for every plugin (like every imfree interface, see [`super::add_to_linker`]): a component that
//! imports it without the capability still loads, and each of its requests is refused with
//! `error-code.HTTP-request-denied` and an [`IncidentKind::HttpRefused`] incident naming plugin, version and
//! capability. A refusal it can handle is testable and honest; a load failure would hide what the plugin tried.
//! (Components built by jco/componentize-js import wasi:http by default, so linking it also lets them load.)
//!
//! [`OutboundHttp::send_request`] is the single place where a request leaves the host. In order:
//! 1. the URL's scheme, host, port and path must be covered by an origin that is both requested and granted;
//! 2. the host name is resolved once, and every resulting address is vetted ([`address::vet`]: no loopback,
//!    private, CGNAT, unique-local unless `grants.http-allow-private`; never link-local/metadata, multicast,
//!    unspecified, documentation or reserved) — one bad address refuses the request;
//! 3. the TCP connection is made to a vetted address (never to the name again, so DNS rebinding has nothing to
//!    race), TLS verifies the certificate against the URL's host name (SNI too);
//! 4. the Host header is the URL's authority: the guest cannot set it (it is a forbidden header, and an attempt is
//!    reported), and it is overwritten here in any case;
//! 5. redirects are not followed (the guest gets the 3xx; following one is a new request through steps 1-4);
//! 6. the request body is capped at `max-output-bytes`, the response body at `http-max-response-bytes`, the whole
//!    exchange at `http-timeout-ms` (and at 90 % of what is left of the call's wall-clock budget), the number of
//!    requests per hook call at `http-max-requests-per-call` and in flight at once at `http-max-concurrent`.
//!
//! Logs and incidents name at most `scheme://host:port`: paths, queries and header values can carry secrets
//! (webhook tokens, API keys), so they are never logged.

pub mod address;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep, timeout_at};
use wasmtime::component::Linker;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{DEFAULT_FORBIDDEN_HEADERS, Error, RequestOptions, WasiHttpHooks};

use crate::capability::{Capability, HttpOrigin};
use crate::incident::IncidentKind;
use crate::manifest::Hook;
use crate::state::{PluginContext, PluginState};

pub(crate) fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    // wasi:io, clocks etc. come from the WASI p2 linking in `super::add_to_linker`.
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
}

/// The TLS client settings for outbound HTTPS: Mozilla's roots plus `extra_roots` (DER), ring, HTTP/1.1 only.
pub(crate) fn tls_config(extra_roots: &[Vec<u8>]) -> wasmtime::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for der in extra_roots {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| wasmtime::Error::msg(format!("http_extra_roots: unusable certificate: {e}")))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| wasmtime::Error::msg(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

type WasiBody = wasmtime_wasi_http::WasiBody;
type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
type SendFuture = Box<dyn Future<Output = Result<(Response<WasiBody>, IoFuture), Error>> + Send>;

/// The outbound HTTP policy of one store: wasi-http's hooks. The host tells it which hook is running and when the
/// call started, for incidents and the time budget.
pub(crate) struct OutboundHttp {
    ctx: Arc<PluginContext>,
    hook: Option<Hook>,
    call_deadline: Instant,
    requests_this_call: u32,
}

impl OutboundHttp {
    pub(crate) fn new(ctx: Arc<PluginContext>) -> Self {
        OutboundHttp {
            ctx,
            hook: None,
            call_deadline: Instant::now(),
            requests_this_call: 0,
        }
    }

    /// A hook call (or `init`, `None`) starts now.
    pub(crate) fn begin_call(&mut self, hook: Option<Hook>) {
        self.hook = hook;
        // Leave the guest a tenth of its wall-clock budget to handle a timeout error before the call is killed.
        self.call_deadline = after(self.ctx.limits.wall().mul_f64(0.9));
        self.requests_this_call = 0;
    }

    fn deadline(&self) -> Instant {
        after(Duration::from_millis(self.ctx.limits.http_timeout_ms)).min(self.call_deadline)
    }
}

impl WasiHttpHooks for OutboundHttp {
    fn is_forbidden_header(&mut self, name: &HeaderName) -> bool {
        // Only a guest building request fields asks about Host: responses are stripped of it in `send`.
        if name == header::HOST {
            self.ctx.http_refused.fetch_add(1, Ordering::Relaxed);
            self.ctx.report(
                self.hook,
                IncidentKind::HttpRefused,
                "capability http.outbound: the plugin tried to set the Host header; the host sets it from the URL"
                    .into(),
            );
        }
        DEFAULT_FORBIDDEN_HEADERS.contains(name)
    }

    fn p2_error_from_hyper(&mut self, err: &hyper::Error) -> ErrorCode {
        // hyper wraps our own body errors (a request body over its cap, the deadline while sending it): give the
        // guest their code rather than a bare protocol error.
        match std::error::Error::source(err).and_then(|cause| cause.downcast_ref::<Error>()) {
            Some(Error::HttpRequestBodySize(limit)) => ErrorCode::HttpRequestBodySize(*limit),
            Some(Error::HttpResponseTimeout) => ErrorCode::HttpResponseTimeout,
            _ => {
                tracing::debug!(plugin = %self.ctx.identity.name, "outbound HTTP protocol error: {err}");
                ErrorCode::HttpProtocolError
            }
        }
    }

    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        self.requests_this_call = self.requests_this_call.saturating_add(1);
        let over_budget = self.requests_this_call > self.ctx.limits.http_max_requests_per_call;
        let outbound = Outbound {
            ctx: self.ctx.clone(),
            hook: self.hook,
            deadline: self.deadline(),
        };
        Box::new(async move {
            outbound.ctx.http_requests.fetch_add(1, Ordering::Relaxed);
            if over_budget {
                return Err(outbound.limit(
                    Error::ConnectionLimitReached,
                    format!(
                        "more than {} requests in one call (http-max-requests-per-call)",
                        outbound.ctx.limits.http_max_requests_per_call
                    ),
                ));
            }
            let Ok(permit) = outbound.ctx.http_in_flight.clone().try_acquire_owned() else {
                return Err(outbound.limit(
                    Error::ConnectionLimitReached,
                    format!(
                        "more than {} requests in flight (http-max-concurrent)",
                        outbound.ctx.limits.http_max_concurrent
                    ),
                ));
            };
            outbound.send(request, permit).await
        })
    }
}

/// One request on its way out.
#[derive(Clone)]
struct Outbound {
    ctx: Arc<PluginContext>,
    hook: Option<Hook>,
    deadline: Instant,
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

impl Outbound {
    /// Refused by policy: count, report, and hand back the guest's error.
    fn refuse(&self, error: Error, reason: String) -> Error {
        self.ctx.http_refused.fetch_add(1, Ordering::Relaxed);
        self.ctx.report(self.hook, IncidentKind::HttpRefused, reason);
        error
    }

    /// Stopped by a limit.
    fn limit(&self, error: Error, reason: String) -> Error {
        self.ctx.http_refused.fetch_add(1, Ordering::Relaxed);
        self.ctx.report(self.hook, IncidentKind::HttpLimit, format!("http.outbound limit: {reason}"));
        error
    }

    async fn send(
        self,
        request: Request<WasiBody>,
        permit: OwnedSemaphorePermit,
    ) -> Result<(Response<WasiBody>, IoFuture), Error> {
        let (mut parts, body) = request.into_parts();
        let url = parts.uri.to_string();
        let shown = HttpOrigin::redacted(&url);
        let target = HttpOrigin::parse(&url).map_err(|reason| {
            self.refuse(
                Error::HttpRequestUriInvalid,
                format!("capability http.outbound: refused an invalid URL ({reason})"),
            )
        })?;
        self.ctx
            .check
            .check(&Capability::HttpOutbound(url))
            .map_err(|refusal| self.refuse(Error::HttpRequestDenied, format!("request to {shown} refused: {refusal}")))?;

        let host = target.host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let addrs = self.resolve(&host, target.port, &shown).await?;
        let allow_private = self.ctx.check.http_allow_private();
        for addr in &addrs {
            address::vet(addr.ip(), allow_private).map_err(|refusal| {
                self.refuse(
                    Error::DestinationIpProhibited,
                    format!("request to {shown} refused (capability http.outbound({shown})): {refusal}"),
                )
            })?;
        }

        let tcp = self.connect(&addrs, &shown).await?;
        let stream: Box<dyn Stream> = if target.scheme == "https" {
            Box::new(self.tls(tcp, &host, &shown).await?)
        } else {
            Box::new(tcp)
        };
        let (mut sender, conn) = timeout_at(self.deadline, hyper::client::conn::http1::handshake(TokioIo::new(stream)))
            .await
            .map_err(|_| self.timed_out(&shown, "the HTTP handshake"))??;

        // The request line carries only path and query; Host is the URL's authority, whatever the guest tried.
        parts.uri = origin_form(&parts.uri);
        parts.version = http::Version::HTTP_11;
        for name in DEFAULT_FORBIDDEN_HEADERS.iter() {
            parts.headers.remove(name);
        }
        let authority = authority_of(&target);
        parts.headers.insert(
            header::HOST,
            HeaderValue::from_str(&authority).map_err(|_| Error::HttpRequestUriInvalid)?,
        );
        let body = Capped::new(
            body,
            self.ctx.limits.max_output_bytes as u64,
            Direction::Request,
            self.clone(),
            shown.clone(),
        );
        let request = Request::from_parts(parts, body);

        let mut conn = Some(Box::pin(conn));
        let mut send = std::pin::pin!(sender.send_request(request));
        // Drive the connection while waiting for the response head (hyper's client needs both polled).
        let response = timeout_at(
            self.deadline,
            std::future::poll_fn(|cx| {
                if let Poll::Ready(response) = send.as_mut().poll(cx) {
                    return Poll::Ready(response.map_err(Error::from));
                }
                if let Some(driving) = conn.as_mut()
                    && let Poll::Ready(finished) = driving.as_mut().poll(cx)
                {
                    conn = None;
                    if let Err(e) = finished {
                        return Poll::Ready(Err(Error::from(e)));
                    }
                    return send.as_mut().poll(cx).map_err(Error::from);
                }
                Poll::Pending
            }),
        )
        .await
        .map_err(|_| self.timed_out(&shown, "the response"))??;

        let (mut parts, body) = response.into_parts();
        // Never hand the guest framing or hop-by-hop headers; and a server's `Host` must not look like the guest's.
        for name in DEFAULT_FORBIDDEN_HEADERS.iter() {
            parts.headers.remove(name);
        }
        let cap = self.ctx.limits.http_max_response_bytes;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(len) = declared.filter(|&len| len > cap) {
            return Err(self.limit(
                Error::HttpResponseBodySize(Some(cap)),
                format!(
                    "response from {shown} declares {len} bytes, more than http-max-response-bytes ({cap})"
                ),
            ));
        }
        tracing::debug!(plugin = %self.ctx.identity.name, version = %self.ctx.identity.version,
            origin = %shown, status = parts.status.as_u16(), "outbound HTTP response");
        let mut body = Capped::new(body, cap, Direction::Response, self.clone(), shown);
        body.permit = Some(permit);
        let body = body.boxed_unsync();
        let io: IoFuture = Box::new(async move {
            match conn {
                Some(conn) => conn.await.map_err(Error::from),
                None => Ok(()),
            }
        });
        Ok((Response::from_parts(parts, body), io))
    }

    /// Resolve `host` once (an address literal is not looked up).
    async fn resolve(&self, host: &str, port: u16, shown: &str) -> Result<Vec<SocketAddr>, Error> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let found = timeout_at(self.deadline, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| self.timed_out(shown, "the DNS lookup"))?;
        let addrs: Vec<SocketAddr> = match found {
            Ok(addrs) => addrs.collect(),
            Err(_) => Vec::new(),
        };
        if addrs.is_empty() {
            return Err(Error::DnsError {
                rcode: Some("name not resolved".into()),
                info_code: None,
            });
        }
        Ok(addrs)
    }

    /// Connect to the first vetted address that answers.
    async fn connect(&self, addrs: &[SocketAddr], shown: &str) -> Result<TcpStream, Error> {
        let mut refused = Error::ConnectionRefused;
        for addr in addrs {
            match timeout_at(self.deadline, TcpStream::connect(addr)).await {
                Err(_) => return Err(self.timed_out(shown, "connecting")),
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => refused = Error::Connect(e),
            }
        }
        Err(refused)
    }

    /// TLS over the vetted connection, verified against the URL's host name.
    async fn tls(
        &self,
        tcp: TcpStream,
        host: &str,
        shown: &str,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
        use rustls::pki_types::ServerName;
        let name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_owned()).map_err(|_| Error::HttpRequestUriInvalid)?,
        };
        let connector = tokio_rustls::TlsConnector::from(self.ctx.tls.clone());
        match timeout_at(self.deadline, connector.connect(name, tcp)).await {
            Err(_) => Err(self.timed_out(shown, "the TLS handshake")),
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => {
                tracing::debug!(plugin = %self.ctx.identity.name, origin = %shown, "outbound TLS failed: {e}");
                let certificate = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
                Err(if certificate {
                    Error::TlsCertificateError
                } else {
                    Error::TlsProtocolError
                })
            }
        }
    }

    fn timed_out(&self, shown: &str, during: &str) -> Error {
        self.limit(
            Error::HttpResponseTimeout,
            format!(
                "request to {shown} timed out during {during} (http-timeout-ms {} or 90 % of wall-ms-per-call {})",
                self.ctx.limits.http_timeout_ms, self.ctx.limits.wall_ms_per_call
            ),
        )
    }
}

/// Now plus `d`, saturating (an administrator may configure an absurd limit; `Instant + Duration` would panic).
fn after(d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 86_400);
    let now = Instant::now();
    now.checked_add(d.min(FAR)).unwrap_or(now)
}

/// `host[:port]` as it goes in the Host header: the port only when it is not the scheme's default.
fn authority_of(target: &HttpOrigin) -> String {
    let default = if target.scheme == "https" { 443 } else { 80 };
    if target.port == default {
        target.host.clone()
    } else {
        format!("{}:{}", target.host, target.port)
    }
}

fn origin_form(uri: &Uri) -> Uri {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    path.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Response,
}

/// A body with a byte cap and the request's deadline; the first breach is reported once.
struct Capped<B> {
    inner: B,
    seen: u64,
    cap: u64,
    direction: Direction,
    deadline: Pin<Box<Sleep>>,
    outbound: Outbound,
    shown: String,
    failed: bool,
    /// The request's `http-max-concurrent` permit, released when the guest drops the response body.
    permit: Option<OwnedSemaphorePermit>,
}

impl<B> Capped<B> {
    fn new(inner: B, cap: u64, direction: Direction, outbound: Outbound, shown: String) -> Self {
        Capped {
            inner,
            seen: 0,
            cap,
            direction,
            deadline: Box::pin(tokio::time::sleep_until(outbound.deadline)),
            outbound,
            shown,
            failed: false,
            permit: None,
        }
    }

    fn fail(&mut self, error: Error, reason: String) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.failed = true;
        Poll::Ready(Some(Err(self.outbound.limit(error, reason))))
    }
}

impl<B> Body for Capped<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Error>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            let what = match self.direction {
                Direction::Request => "sending the request body",
                Direction::Response => "the response body",
            };
            let shown = self.shown.clone();
            let error = self.outbound.timed_out(&shown, what);
            self.failed = true;
            return Poll::Ready(Some(Err(error)));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => {
                // Trailers reach the guest as fields too: the same headers are kept out (a server's `Host`
                // trailer must not look like the plugin's own attempt to set one).
                let mut trailers = frame.into_trailers().unwrap_or_default();
                for name in DEFAULT_FORBIDDEN_HEADERS.iter() {
                    trailers.remove(name);
                }
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.seen = self.seen.saturating_add(data.len() as u64);
                    if self.seen > self.cap {
                        let (cap, shown) = (self.cap, self.shown.clone());
                        return match self.direction {
                            Direction::Response => self.fail(
                                Error::HttpResponseBodySize(Some(cap)),
                                format!("response from {shown} is larger than http-max-response-bytes ({cap})"),
                            ),
                            Direction::Request => self.fail(
                                Error::HttpRequestBodySize(Some(cap)),
                                format!("request body to {shown} is larger than max-output-bytes ({cap})"),
                            ),
                        };
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_and_request_line() {
        let t = HttpOrigin::parse("https://hooks.example.com/a?b=c").unwrap();
        assert_eq!(authority_of(&t), "hooks.example.com");
        let t = HttpOrigin::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(authority_of(&t), "127.0.0.1:8080");
        let t = HttpOrigin::parse("http://[::1]:81/").unwrap();
        assert_eq!(authority_of(&t), "[::1]:81");
        let uri: Uri = "https://h.example/x/y?token=1".parse().unwrap();
        assert_eq!(origin_form(&uri), "/x/y?token=1");
        let uri: Uri = "https://h.example".parse().unwrap();
        assert_eq!(origin_form(&uri), "/");
    }

    #[test]
    fn absurd_limits_saturate_instead_of_panicking() {
        let far = after(Duration::from_millis(u64::MAX));
        assert!(far > Instant::now() + Duration::from_secs(365 * 86_400));
        assert!(after(Duration::ZERO) <= Instant::now());
    }

    #[test]
    fn tls_config_refuses_garbage_roots() {
        assert!(tls_config(&[]).is_ok());
        assert!(tls_config(&[b"not a certificate".to_vec()]).is_err());
    }
}
