//! MCP over Streamable HTTP at /mcp (SSE for long calls), plus the server's
//! own health: `/healthz` (alive), `/readyz` (the engine answers) and
//! `/metrics` (OpenMetrics text; needs the bearer token when one is set,
//! because it reveals activity; the two probes stay open for orchestrators).
//!
//! Loopback by default. Any other bind address needs a bearer token. Every
//! request's Host (and Origin, when sent) must name an allowed host, which
//! stops DNS rebinding.
//!
//! The edge is bounded against careless and hostile clients alike:
//! - connections: TCP_NODELAY (a response written in pieces, as SSE is, must
//!   not wait for the client's delayed ACK), request headers within
//!   [`HEADER_TIMEOUT`] (else the connection is closed; the same limit ends
//!   idle keep-alive connections) and [`MAX_HEADER_BYTES`] (431), at most
//!   [`MAX_CONNECTIONS`] at once (others wait in the listen backlog);
//! - bodies: within the byte limit (413) and [`BODY_TIMEOUT`] (408), then
//!   checked as JSON-RPC (mcp::jsonrpc: 400 with a -32700/-32600 error, or
//!   the -32602 answer for a bad tools/call);
//! - sessions (2025-11-25 era): capped in all (503) and per client address
//!   (429), both with Retry-After, idle ones expired sooner as the table
//!   fills (mcp::sessions). A DELETE of an unknown session is 404. Requests
//!   of the stateless 2026-07-28 era carry no session: an `Mcp-Session-Id`
//!   on one (that era removed the header) is ignored, and no session is
//!   created for it.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::mcp::jsonrpc::{self, Frame};
use crate::mcp::sessions::{Refusal, SessionLimits, SessionTable, TrackedSessions};
use crate::mcp::StackpilotServer;

/// Shorter bearer tokens are refused at startup: a guessable token on a
/// non-loopback address would hand the Docker socket to anyone who guesses it.
pub const MIN_TOKEN_LEN: usize = 16;

/// Default request body limit (bytes).
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;

/// Request headers (start line included) larger than this get 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// A request's headers must arrive within this long; a keep-alive
/// connection idle this long is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A request's body must arrive within this long (408 past it).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 1024;

const SESSION_HEADER: &str = "mcp-session-id";

#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub addr: SocketAddr,
    pub auth_token: Option<String>,
    pub max_body_bytes: usize,
    /// Host names accepted in Host/Origin besides loopback ones.
    pub allowed_hosts: Vec<String>,
    pub sessions: SessionLimits,
}

#[derive(Clone)]
struct Gate {
    token: Option<Arc<str>>,
    hosts: Arc<Vec<String>>,
}

#[derive(Clone)]
struct Edge {
    table: Arc<SessionTable>,
    max_body: usize,
}

/// The client's address, put on every request by the accept loop.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

fn host_of_authority(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The credentials of an `Authorization: Bearer <token>` header; the scheme
/// is matched case-insensitively (RFC 7235).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

fn deny(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain")],
        format!("{message}\n"),
    )
        .into_response()
}

async fn gatekeeper(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| host_of_authority(h).to_ascii_lowercase());
    match host {
        Some(h) if gate.hosts.iter().any(|a| a == &h) => {}
        _ => {
            return deny(
                StatusCode::FORBIDDEN,
                "forbidden: Host header is not an allowed host",
            )
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let ok = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .filter(|(scheme, _)| *scheme == "http" || *scheme == "https")
            .map(|(_, authority)| host_of_authority(authority).to_ascii_lowercase())
            .is_some_and(|h| gate.hosts.iter().any(|a| a == &h));
        if !ok {
            return deny(
                StatusCode::FORBIDDEN,
                "forbidden: Origin is not an allowed origin",
            );
        }
    }
    let path = request.uri().path();
    let open = path == "/healthz" || path == "/readyz";
    if let (Some(token), false) = (&gate.token, open) {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(bearer)
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            let mut r = deny(
                StatusCode::UNAUTHORIZED,
                "unauthorized: send Authorization: Bearer <token>",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(request).await
}

fn jsonrpc_response(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn refused(r: Refusal) -> Response {
    let (status, retry_after, message) = match r {
        Refusal::Full { retry_after } => (
            StatusCode::SERVICE_UNAVAILABLE,
            retry_after,
            "service unavailable: every MCP session slot is taken; retry later, or use the stateless 2026-07-28 protocol",
        ),
        Refusal::ClientFull { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            retry_after,
            "too many requests: this client address holds its share of MCP sessions; close some (DELETE) or retry later",
        ),
        Refusal::SessionBusy { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            retry_after,
            "too many requests: this MCP session has its share of requests open; wait for some to finish, or open another session",
        ),
        Refusal::DuplicateId => (
            StatusCode::BAD_REQUEST,
            Duration::ZERO,
            "invalid request: the id is in use by an open request of this session",
        ),
    };
    let mut resp = deny(status, message);
    if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Reads a request body within the byte limit and [`BODY_TIMEOUT`].
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Response> {
    let read = async {
        let mut body = body;
        let mut out = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                deny(
                    StatusCode::BAD_REQUEST,
                    &format!("bad request: reading the body failed: {e}"),
                )
            })?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > limit {
                    return Err(deny(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("payload too large: the body exceeds {limit} bytes"),
                    ));
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(out.freeze())
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(r) => r,
        Err(_) => Err(deny(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "request timeout: the body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// The JSON-RPC and session edge in front of rmcp's /mcp service.
async fn mcp_edge(State(edge): State<Edge>, request: Request, next: Next) -> Response {
    let client = request
        .extensions()
        .get::<Peer>()
        .map(|p| p.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let session = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match *request.method() {
        Method::DELETE => {
            if let Some(id) = &session {
                if !edge.table.knows(id) {
                    return deny(StatusCode::NOT_FOUND, "not found: no such MCP session");
                }
            }
            return next.run(request).await;
        }
        Method::POST => {}
        _ => {
            // A GET stream keeps its session busy while it is open.
            let busy = match session.as_deref().map(|id| edge.table.busy(id, None)) {
                Some(Err(r)) => return refused(r),
                Some(Ok(b)) => b,
                None => None,
            };
            let response = next.run(request).await;
            return hold_until_done(response, busy);
        }
    }
    let (parts, body) = request.into_parts();
    let bytes = match read_body(body, edge.max_body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut request_id: Option<serde_json::Value> = None;
    let is_initialize = match jsonrpc::check(&bytes) {
        Frame::Forward => {
            let v = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
            let method = v
                .as_ref()
                .and_then(|v| v.get("method"))
                .and_then(|m| m.as_str());
            // A request (method and id): its id must not be one still open.
            if method.is_some() {
                request_id = v.as_ref().and_then(|v| v.get("id")).cloned();
            }
            method == Some("initialize")
        }
        Frame::Reply(reply) => {
            let status = if reply["error"]["code"] == jsonrpc::INVALID_PARAMS {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            };
            return jsonrpc_response(status, reply);
        }
        Frame::Drop(why) => {
            tracing::warn!(%why, "malformed JSON-RPC notification dropped at the edge");
            return deny(StatusCode::BAD_REQUEST, &format!("invalid message: {why}"));
        }
    };
    let new_session = is_initialize && session.is_none();
    if new_session {
        if let Err(r) = edge.table.admit(client) {
            return refused(r);
        }
    }
    let busy = match session.as_deref().map(|id| {
        edge.table
            .busy(id, request_id.as_ref().map(|r| r.to_string()))
    }) {
        Some(Err(Refusal::DuplicateId)) => {
            let rid = request_id.unwrap_or(serde_json::Value::Null);
            return jsonrpc_response(
                StatusCode::BAD_REQUEST,
                serde_json::json!({
                    "jsonrpc": "2.0",
                    "id": rid,
                    "error": {
                        "code": jsonrpc::INVALID_REQUEST,
                        "message": format!("request id {rid} is in use by a request of this session that has not been answered: use a new id"),
                    },
                }),
            );
        }
        Some(Err(r)) => return refused(r),
        Some(Ok(b)) => b,
        None => None,
    };
    let request = Request::from_parts(parts, Body::from(bytes));
    let response = next.run(request).await;
    if new_session {
        if let Some(id) = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            edge.table.register(id, client);
        }
    }
    hold_until_done(response, busy)
}

/// Keeps `guard` alive until the response body has been sent (an SSE stream
/// may run for minutes).
fn hold_until_done<G: Send + Sync + 'static>(response: Response, guard: Option<G>) -> Response {
    let Some(guard) = guard else {
        return response;
    };
    let (parts, body) = response.into_parts();
    let body = body.map_frame(move |f| {
        let _keep = &guard;
        f
    });
    Response::from_parts(parts, Body::new(body))
}

/// How long /readyz waits for the engine.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// 200 when the engine answers a ping, 503 with the reason otherwise.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let ping = async { app.engine().ping().await.map_err(|e| e.message) };
    match tokio::time::timeout(READY_TIMEOUT, ping).await {
        Ok(Ok(_)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain")],
            "ready\n",
        )
            .into_response(),
        Ok(Err(why)) => deny(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("not ready: {}", crate::domain::redact::cap(&why, 400)),
        ),
        Err(_) => deny(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the engine did not answer within 2 s",
        ),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, crate::adapters::metrics::CONTENT_TYPE)],
        app.metrics.encode(),
    )
        .into_response()
}

/// The router and the session manager it serves (the reaper closes sessions through it).
pub fn router(
    app: Arc<App>,
    opts: &HttpOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<(Router, Arc<TrackedSessions>)> {
    if !opts.addr.ip().is_loopback() && opts.auth_token.as_deref().unwrap_or("").is_empty() {
        anyhow::bail!(
            "refusing to serve on {} without --auth-token (or STACKPILOT_AUTH_TOKEN): only loopback addresses may be served unauthenticated",
            opts.addr
        );
    }
    if let Some(t) = opts.auth_token.as_deref().filter(|t| !t.is_empty()) {
        if t.len() < MIN_TOKEN_LEN {
            anyhow::bail!(
                "--auth-token is {} characters; use at least {MIN_TOKEN_LEN} (e.g. `openssl rand -hex 24`)",
                t.len()
            );
        }
    }
    let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if !opts.addr.ip().is_unspecified() {
        hosts.push(opts.addr.ip().to_string());
    }
    hosts.extend(opts.allowed_hosts.iter().map(|h| h.to_ascii_lowercase()));
    // The edge has checked size and shape; rmcp's own limit stays as a backstop.
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_max_request_body_bytes(opts.max_body_bytes)
        // Plain JSON for request/response calls; SSE as soon as a call streams progress.
        .with_json_response(true)
        .with_cancellation_token(shutdown);
    let table = SessionTable::new(opts.sessions);
    let sessions = Arc::new(TrackedSessions {
        inner: {
            // Larger than rmcp's 16, with requests per session capped below
            // it (sessions::MAX_IN_FLIGHT): see there for the hang it avoids.
            let mut m = LocalSessionManager::default();
            m.session_config.channel_capacity = crate::mcp::sessions::SESSION_CHANNEL;
            m
        },
        table: table.clone(),
    });
    let mcp_app = app.clone();
    // One task table and one subscription hub per process: a task started
    // over one connection is found by id over any other.
    let shared = crate::mcp::Shared::new(app.clone());
    let service: StreamableHttpService<StackpilotServer, TrackedSessions> =
        StreamableHttpService::new(
            move || {
                Ok(StackpilotServer::with_shared(
                    mcp_app.clone(),
                    shared.clone(),
                ))
            },
            sessions.clone(),
            config,
        );
    let gate = Gate {
        token: opts
            .auth_token
            .clone()
            .filter(|t| !t.is_empty())
            .map(Into::into),
        hosts: Arc::new(hosts),
    };
    let edge = Edge {
        table,
        max_body: opts.max_body_bytes,
    };
    let mcp = Router::new()
        .fallback_service(service)
        .layer(middleware::from_fn_with_state(edge, mcp_edge));
    let router = Router::new()
        .nest("/mcp", mcp)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(app)
        .layer(middleware::from_fn_with_state(gate, gatekeeper));
    Ok((router, sessions))
}

/// Closes sessions idle past the current limit, once a second.
fn spawn_reaper(sessions: Arc<TrackedSessions>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            for id in sessions.table.expired(Instant::now()) {
                tracing::debug!(session = %id, "closing an idle MCP session");
                let _ = sessions.close_session(&id.into()).await;
            }
        }
    });
}

pub async fn serve(app: Arc<App>, opts: HttpOptions) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let (router, sessions) = router(app, &opts, shutdown.clone())?;
    let listener = tokio::net::TcpListener::bind(opts.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving MCP over Streamable HTTP at /mcp");
    // Tests and scripts read this line from stderr to find an ephemeral port.
    eprintln!(
        "stackpilot listening on http://{}/mcp",
        listener.local_addr()?
    );
    spawn_reaper(sessions, shutdown.clone());
    let stop = shutdown.clone();
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        stop.cancel();
    });
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p?,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stop = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(Peer(peer));
                    let mut router = router.clone();
                    async move {
                        use tower::Service;
                        router.call(req.map(Body::new)).await
                    }
                },
            );
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_header_size(MAX_HEADER_BYTES)
                .max_headers(100)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), connections.wait()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_split() {
        assert_eq!(host_of_authority("127.0.0.1:7331"), "127.0.0.1");
        assert_eq!(host_of_authority("[::1]:7331"), "::1");
        assert_eq!(host_of_authority("localhost"), "localhost");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearerabc"), None);
    }
}
