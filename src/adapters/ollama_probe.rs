//! Is Ollama there? `GET /api/version` at OLLAMA_HOST (read the way the
//! `ollama` CLI reads it), with a hard time limit; the probe never fails, it
//! says why Ollama is unreachable.
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::domain::error::{error_chain as chain, human_duration as human, io_error_kind};
use crate::domain::hardware::OllamaProbe;

async fn bounded<T>(timeout: Duration, fut: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(timeout, fut).await.ok()
}

/// Where Ollama listens when OLLAMA_HOST is unset.
pub const DEFAULT_OLLAMA_URL: &str = "http://127.0.0.1:11434";

const OLLAMA_DEFAULT_PORT: &str = "11434";

// ---------------------------------------------------------------- Ollama

#[derive(Deserialize)]
struct OllamaVersion {
    version: String,
}

/// OLLAMA_HOST, read the way the `ollama` CLI reads it, else the default.
pub fn ollama_url_from_env() -> String {
    normalize_ollama_host(&std::env::var("OLLAMA_HOST").unwrap_or_default())
}

/// Turns an OLLAMA_HOST value into a base URL the way Ollama's
/// `envconfig.Host()` does, so we talk to the server the `ollama` CLI talks
/// to: scheme defaults to http; the port defaults to 11434 for a bare host
/// (80/443 when a scheme is written, as in Ollama); a path is kept (reverse
/// proxies). A server-side bind address (0.0.0.0, ::) is not a place to
/// connect to, so it becomes loopback.
pub fn normalize_ollama_host(raw: &str) -> String {
    let s = raw.trim().trim_matches(|c| c == '"' || c == '\'');
    let (scheme, rest, default_port) = match s.split_once("://") {
        None => ("http", s, OLLAMA_DEFAULT_PORT),
        Some(("http", rest)) => ("http", rest, "80"),
        Some(("https", rest)) => ("https", rest, "443"),
        Some((scheme, rest)) => (scheme, rest, OLLAMA_DEFAULT_PORT),
    };
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (mut host, port) = match split_host_port(hostport) {
        Some((h, p)) => (h.to_string(), p),
        None => {
            let bare = hostport.trim_start_matches('[').trim_end_matches(']');
            let host = match bare.parse::<IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => hostport.to_string(),
            };
            (host, default_port)
        }
    };
    // Ollama falls back to the default port on a bad one; so do we.
    let port = port
        .parse::<u16>()
        .map(|p| p.to_string())
        .unwrap_or_else(|_| default_port.to_string());
    if host.is_empty() {
        // `:11434` binds every interface on the server; a client dials loopback.
        host = "127.0.0.1".to_string();
    }
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() && ip.is_ipv4() => host = "127.0.0.1".to_string(),
        Ok(ip) if ip.is_unspecified() => host = "::1".to_string(),
        _ => {}
    }
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        format!("{scheme}://{host}:{port}")
    } else {
        format!("{scheme}://{host}:{port}/{path}")
    }
}

/// Go's `net.SplitHostPort`: `host:port` or `[v6]:port`; None when there is
/// no port or the colons are ambiguous (a bare IPv6 address).
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((host, port));
    }
    let (host, port) = s.rsplit_once(':')?;
    (!host.contains(':')).then_some((host, port))
}

/// GET {url}/api/version.
pub async fn probe_ollama(url: &str, timeout: Duration) -> OllamaProbe {
    let unreachable = |error: String| OllamaProbe {
        reachable: false,
        url: url.to_string(),
        version: None,
        error: Some(error),
    };
    if url.starts_with("https://") {
        return unreachable(format!(
            "{url} uses https, which this build cannot speak: reach Ollama over http (e.g. a local port or an SSH tunnel)"
        ));
    }
    let mut builder = reqwest::Client::builder().timeout(timeout);
    if is_loopback_url(url) {
        // A proxy from HTTP_PROXY cannot reach our loopback anyway.
        builder = builder.no_proxy();
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => return unreachable(format!("cannot build an HTTP client: {}", chain(&e))),
    };
    let endpoint = format!("{}/api/version", url.trim_end_matches('/'));
    let request = async {
        let response = client.get(&endpoint).send().await?;
        let status = response.status();
        if !status.is_success() {
            return Ok(Err(status));
        }
        response.json::<OllamaVersion>().await.map(Ok)
    };
    match bounded(timeout, request).await {
        None => unreachable(format!(
            "no answer from Ollama at {url} within {}",
            human(timeout)
        )),
        Some(Ok(Ok(body))) => OllamaProbe {
            reachable: true,
            url: url.to_string(),
            version: Some(body.version),
            error: None,
        },
        Some(Ok(Err(status))) => unreachable(format!(
            "{endpoint} answered HTTP {status}: is this an Ollama server?"
        )),
        Some(Err(e)) => unreachable(describe_http_error(url, &endpoint, &e, timeout)),
    }
}

fn describe_http_error(url: &str, endpoint: &str, e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer from Ollama at {url} within {}", human(timeout));
    }
    if e.is_decode() {
        return format!(
            "{endpoint} did not answer with Ollama's version JSON: is this an Ollama server? ({})",
            chain(e)
        );
    }
    match io_error_kind(e) {
        Some(io::ErrorKind::ConnectionRefused) => format!(
            "no Ollama at {url}: connection refused (is `ollama serve` running? set OLLAMA_HOST if it listens elsewhere)"
        ),
        _ => format!("cannot reach Ollama at {url}: {}", chain(e)),
    }
}

fn is_loopback_url(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    let Some(host) = parsed.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::serve_http;
    use std::time::Instant;

    #[test]
    fn ollama_host_is_normalized_like_ollama() {
        let table = [
            ("", "http://127.0.0.1:11434"),
            ("   ", "http://127.0.0.1:11434"),
            ("0.0.0.0", "http://127.0.0.1:11434"),
            ("0.0.0.0:11434", "http://127.0.0.1:11434"),
            ("0.0.0.0:8080", "http://127.0.0.1:8080"),
            ("127.0.0.1", "http://127.0.0.1:11434"),
            ("localhost:5000", "http://localhost:5000"),
            ("\"localhost:5000\"", "http://localhost:5000"),
            ("example.com", "http://example.com:11434"),
            ("example.com:1234", "http://example.com:1234"),
            ("http://example.com", "http://example.com:80"),
            ("https://example.com", "https://example.com:443"),
            ("http://127.0.0.1:11434", "http://127.0.0.1:11434"),
            ("http://127.0.0.1:11434/", "http://127.0.0.1:11434"),
            (
                "https://example.com:1234/ollama",
                "https://example.com:1234/ollama",
            ),
            ("[::1]:9999", "http://[::1]:9999"),
            ("::1", "http://[::1]:11434"),
            ("[::]", "http://[::1]:11434"),
            (":11435", "http://127.0.0.1:11435"),
            ("example.com:notaport", "http://example.com:11434"),
        ];
        for (raw, want) in table {
            assert_eq!(normalize_ollama_host(raw), want, "OLLAMA_HOST={raw:?}");
        }
    }

    #[tokio::test]
    async fn ollama_stand_in_answers_with_its_version() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        serve_http(listener, vec![("/api/version", r#"{"version":"0.6.2"}"#)]).await;
        let probe = probe_ollama(&url, Duration::from_secs(1)).await;
        assert!(probe.reachable, "{probe:?}");
        assert_eq!(probe.version.as_deref(), Some("0.6.2"));

        // Something else on the port: a 404 is not mistaken for Ollama.
        let other = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let other_url = format!("http://{}", other.local_addr().expect("addr"));
        serve_http(other, vec![]).await;
        let probe = probe_ollama(&other_url, Duration::from_secs(1)).await;
        assert!(!probe.reachable);
        assert!(probe.error.expect("error").contains("HTTP 404"));
    }

    #[tokio::test]
    async fn silent_ollama_times_out_on_time() {
        // Accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let started = Instant::now();
        let probe = probe_ollama(&url, Duration::from_millis(300)).await;
        assert!(started.elapsed() < Duration::from_millis(800));
        assert_eq!(
            probe.error.as_deref(),
            Some(format!("no answer from Ollama at {url} within 300ms").as_str())
        );
        drop(listener);
    }

    #[test]
    fn loopback_urls() {
        assert!(is_loopback_url("http://127.0.0.1:11434"));
        assert!(is_loopback_url("http://localhost:11434"));
        assert!(is_loopback_url("http://[::1]:11434"));
        assert!(!is_loopback_url("http://example.com:11434"));
    }
}
