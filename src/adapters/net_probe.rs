//! Network probes for health: a TCP connect to a published port, an HTTP GET,
//! and Ollama's `/api/version` and `/api/ps`. Each is bounded by its timeout
//! and reports what it saw instead of failing.
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How a TCP connect went.
#[derive(Debug, Clone, PartialEq)]
pub struct Connect {
    pub ok: bool,
    pub ms: f64,
    pub error: Option<String>,
}

pub async fn tcp_connect(addr: SocketAddr, timeout: Duration) -> Connect {
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(Ok(_)) => Connect {
            ok: true,
            ms,
            error: None,
        },
        Ok(Err(e)) => Connect {
            ok: false,
            ms,
            error: Some(e.to_string()),
        },
        Err(_) => Connect {
            ok: false,
            ms,
            error: Some(format!("no answer within {} ms", timeout.as_millis())),
        },
    }
}

/// Clients are built once: building one costs more than a loopback request.
fn client(loopback: bool) -> Option<&'static reqwest::Client> {
    static LOOPBACK: OnceLock<Option<reqwest::Client>> = OnceLock::new();
    static ANY: OnceLock<Option<reqwest::Client>> = OnceLock::new();
    let cell = if loopback { &LOOPBACK } else { &ANY };
    cell.get_or_init(|| {
        let mut b = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        if loopback {
            // A proxy from HTTP_PROXY cannot reach our loopback.
            b = b.no_proxy();
        }
        b.build().ok()
    })
    .as_ref()
}

fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What an HTTP GET returned.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpAnswer {
    pub status: Option<u16>,
    /// The body, up to the cap (text from the service: untrusted).
    pub body: Vec<u8>,
    pub ms: f64,
    pub error: Option<String>,
}

impl HttpAnswer {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// GET `url`, reading at most `max_body` bytes of the answer.
pub async fn http_get(url: &str, timeout: Duration, max_body: usize) -> HttpAnswer {
    let started = Instant::now();
    let elapsed = |s: Instant| s.elapsed().as_secs_f64() * 1000.0;
    let Some(client) = client(is_loopback(url)) else {
        return HttpAnswer {
            status: None,
            body: Vec::new(),
            ms: 0.0,
            error: Some("cannot build an HTTP client".into()),
        };
    };
    let request = async {
        let mut response = client.get(url).send().await?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            body.extend_from_slice(&chunk);
            if body.len() >= max_body {
                body.truncate(max_body);
                break;
            }
        }
        Ok::<_, reqwest::Error>((status, body))
    };
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok((status, body))) => HttpAnswer {
            status: Some(status),
            body,
            ms: elapsed(started),
            error: None,
        },
        Ok(Err(e)) => {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            HttpAnswer {
                status: None,
                body: Vec::new(),
                ms: elapsed(started),
                error: Some(crate::domain::redact::cap(&msg, 300)),
            }
        }
        Err(_) => HttpAnswer {
            status: None,
            body: Vec::new(),
            ms: elapsed(started),
            error: Some(format!("no answer within {} ms", timeout.as_millis())),
        },
    }
}

/// `GET /api/version`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct OllamaVersion {
    pub version: String,
}

/// One model of `GET /api/ps` (Ollama's documented shape; unknown fields ignored).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct OllamaRunning {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub model: String,
    /// Bytes the loaded model takes in total.
    #[serde(default)]
    pub size: u64,
    /// Bytes of it in GPU memory (0: running on the CPU).
    #[serde(default)]
    pub size_vram: u64,
    #[serde(default)]
    pub context_length: Option<u64>,
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct OllamaPs {
    #[serde(default)]
    pub models: Vec<OllamaRunning>,
}

/// A JSON GET with the same bounds as `http_get`; Err is one line.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    url: &str,
    timeout: Duration,
) -> (Result<T, String>, f64) {
    let answer = http_get(url, timeout, 256 * 1024).await;
    let result = match (&answer.error, answer.status) {
        (Some(e), _) => Err(e.clone()),
        (None, Some(s)) if !(200..300).contains(&s) => Err(format!("HTTP {s}")),
        _ => serde_json::from_slice::<T>(&answer.body)
            .map_err(|e| format!("unexpected answer (not the expected JSON): {e}")),
    };
    (result, answer.ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls() {
        assert!(is_loopback("http://127.0.0.1:11434/api/ps"));
        assert!(is_loopback("http://localhost:8080"));
        assert!(is_loopback("http://[::1]:80/x"));
        assert!(!is_loopback("http://10.0.0.2:11434"));
        assert!(!is_loopback("http://ollama.internal"));
    }

    #[test]
    fn ollama_ps_shape_parses() {
        // The shape Ollama documents for GET /api/ps (docs/api.md).
        let body = r#"{"models":[{"name":"llama3.1:8b","model":"llama3.1:8b","size":5137025024,
            "digest":"abc","details":{"format":"gguf","family":"llama"},
            "expires_at":"2025-08-06T14:23:28.7482+02:00","size_vram":5137025024,"context_length":4096}]}"#;
        let ps: OllamaPs = serde_json::from_str(body).expect("parses");
        assert_eq!(ps.models[0].size_vram, 5_137_025_024);
        assert_eq!(ps.models[0].context_length, Some(4096));
        let empty: OllamaPs = serde_json::from_str(r#"{"models":[]}"#).expect("parses");
        assert!(empty.models.is_empty());
    }

    #[tokio::test]
    async fn closed_port_is_reported() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        assert!(tcp_connect(addr, Duration::from_millis(500)).await.ok);
        drop(l);
        let c = tcp_connect(addr, Duration::from_millis(500)).await;
        assert!(!c.ok);
        assert!(c.error.is_some());
    }
}
