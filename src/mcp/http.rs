//! MCP over Streamable HTTP at /mcp (SSE for long calls), plus the server's
//! own health: `/healthz` (alive), `/readyz` (the Docker engine answers) and
//! `/metrics` (OpenMetrics text; needs the bearer token when one is set,
//! because it reveals activity; the two probes stay open for orchestrators).
//!
//! Loopback by default. Any other bind address needs a bearer token. Every
//! request's Host (and Origin, when sent) must name an allowed host, which
//! stops DNS rebinding; bodies past the limit get 413.
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::mcp::StackpilotServer;

/// Shorter bearer tokens are refused at startup: a guessable token on a
/// non-loopback address would hand the Docker socket to anyone who guesses it.
pub const MIN_TOKEN_LEN: usize = 16;

/// Default request body limit (bytes).
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub addr: SocketAddr,
    pub auth_token: Option<String>,
    pub max_body_bytes: usize,
    /// Host names accepted in Host/Origin besides loopback ones.
    pub allowed_hosts: Vec<String>,
}

#[derive(Clone)]
struct Gate {
    token: Option<Arc<str>>,
    hosts: Arc<Vec<String>>,
}

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
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            let mut r = deny(
                StatusCode::UNAUTHORIZED,
                "unauthorized: send Authorization: Bearer <token>",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    next.run(request).await
}

/// How long /readyz waits for the engine.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// 200 when the Docker engine answers a ping, 503 with the reason otherwise.
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
            "not ready: the Docker engine did not answer within 2 s",
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

pub fn router(
    app: Arc<App>,
    opts: &HttpOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<Router> {
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
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_max_request_body_bytes(opts.max_body_bytes)
        // Plain JSON for request/response calls; SSE as soon as a call streams progress.
        .with_json_response(true)
        .with_cancellation_token(shutdown);
    let mcp_app = app.clone();
    let service: StreamableHttpService<StackpilotServer, LocalSessionManager> =
        StreamableHttpService::new(
            move || Ok(StackpilotServer::new(mcp_app.clone())),
            Default::default(),
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
    Ok(Router::new()
        .nest_service("/mcp", service)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(app)
        .layer(middleware::from_fn_with_state(gate, gatekeeper)))
}

pub async fn serve(app: Arc<App>, opts: HttpOptions) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let router = router(app, &opts, shutdown.clone())?;
    let listener = tokio::net::TcpListener::bind(opts.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving MCP over Streamable HTTP at /mcp");
    // Tests and scripts read this line from stderr to find an ephemeral port.
    eprintln!(
        "stackpilot listening on http://{}/mcp",
        listener.local_addr()?
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            crate::shutdown_signal().await;
            shutdown.cancel();
        })
        .await?;
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
}
