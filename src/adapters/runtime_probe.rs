//! Is the runtime the stack needs there? Docker engine (and its NVIDIA
//! runtime), Compose v2 and Ollama, each probed with a hard time limit.
//!
//! These probes answer "reachable or not, and why"; they never return an
//! error, because an unreachable engine is a fact the agent acts on (start
//! dockerd, install the plugin), not a failure of `detect_hardware`. Later
//! tools reuse the pieces (`probe_docker`, `probe_compose`, `probe_ollama`) as
//! pre-flight checks.
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bollard::Docker;
use serde::Deserialize;

use crate::ops::hardware_types::{ComposeProbe, DockerProbe, OllamaProbe, RuntimeInfo};

/// Where the Docker CLI and bollard look when DOCKER_HOST is unset.
#[cfg(windows)]
pub const DEFAULT_DOCKER_ENDPOINT: &str = "npipe:////./pipe/docker_engine";
/// Where the Docker CLI and bollard look when DOCKER_HOST is unset.
#[cfg(not(windows))]
pub const DEFAULT_DOCKER_ENDPOINT: &str = "unix:///var/run/docker.sock";

/// Where Ollama listens when OLLAMA_HOST is unset.
pub const DEFAULT_OLLAMA_URL: &str = "http://127.0.0.1:11434";

const OLLAMA_DEFAULT_PORT: &str = "11434";

/// Runs the three probes concurrently; the whole call takes about `timeout`
/// at worst (the tool uses one second).
pub async fn probe_runtime(timeout: Duration) -> RuntimeInfo {
    let url = ollama_url_from_env();
    let ((docker, nvidia_runtime), compose, ollama) = tokio::join!(
        probe_docker(timeout),
        probe_compose(timeout),
        probe_ollama(&url, timeout)
    );
    RuntimeInfo {
        docker,
        compose,
        nvidia_runtime,
        ollama,
    }
}

// ---------------------------------------------------------------- Docker

/// DOCKER_HOST when set (as the Docker CLI and bollard read it), else the
/// default socket.
pub fn docker_endpoint_from_env() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DEFAULT_DOCKER_ENDPOINT.to_string())
}

/// Probes the engine at DOCKER_HOST (or the default socket). Returns the
/// probe and whether an `nvidia` runtime is registered with the engine.
pub async fn probe_docker(timeout: Duration) -> (DockerProbe, bool) {
    probe_docker_at(&docker_endpoint_from_env(), timeout).await
}

/// Probes the engine at `endpoint` (`unix://`, `tcp://`, `http://`): negotiate
/// the API version (bollard 0.21 starts at 1.53; a 20.10 engine speaks 1.41),
/// then read version and info.
pub async fn probe_docker_at(endpoint: &str, timeout: Duration) -> (DockerProbe, bool) {
    let unreachable = |error: String| {
        (
            DockerProbe {
                reachable: false,
                endpoint: endpoint.to_string(),
                version: None,
                api_version: None,
                error: Some(error),
            },
            false,
        )
    };
    let docker = match Docker::connect_with_host(endpoint) {
        // bollard's own timeout has whole-second resolution; ours below is exact.
        Ok(d) => d.with_timeout(timeout.max(Duration::from_secs(1))),
        Err(e) => return unreachable(describe_docker_error(endpoint, &e, timeout)),
    };
    let query = async {
        let docker = docker.negotiate_version().await?;
        let (version, info) = tokio::join!(docker.version(), docker.info());
        Ok::<_, bollard::errors::Error>((version?, info))
    };
    match bounded(timeout, query).await {
        None => unreachable(format!(
            "no answer from the Docker engine at {endpoint} within {}",
            human(timeout)
        )),
        Some(Err(e)) => unreachable(describe_docker_error(endpoint, &e, timeout)),
        Some(Ok((version, info))) => {
            let nvidia_runtime = match info {
                Ok(info) => info
                    .runtimes
                    .is_some_and(|runtimes| runtimes.contains_key("nvidia")),
                Err(e) => {
                    tracing::debug!(error = %e, "docker info failed; assuming no nvidia runtime");
                    false
                }
            };
            (
                DockerProbe {
                    reachable: true,
                    endpoint: endpoint.to_string(),
                    version: version.version,
                    api_version: version.api_version,
                    error: None,
                },
                nvidia_runtime,
            )
        }
    }
}

/// One line that says what is wrong and what to do about it.
pub(crate) fn describe_docker_error(
    endpoint: &str,
    e: &bollard::errors::Error,
    timeout: Duration,
) -> String {
    use bollard::errors::Error as B;
    match e {
        B::SocketNotFoundError(path) => format!(
            "no Docker engine at {endpoint}: socket {path} does not exist (is dockerd running? set DOCKER_HOST if it listens elsewhere)"
        ),
        B::UnsupportedURISchemeError { uri } => format!(
            "DOCKER_HOST={uri} uses a scheme this build cannot reach (use unix://, tcp://, http:// or ssh://user@host)"
        ),
        B::RequestTimeoutError => format!(
            "no answer from the Docker engine at {endpoint} within {}",
            human(timeout)
        ),
        B::DockerResponseServerError {
            status_code,
            message,
        } => format!("the Docker engine at {endpoint} answered HTTP {status_code}: {message}"),
        other => match io_error_kind(other) {
            Some(io::ErrorKind::ConnectionRefused) => format!(
                "no Docker engine at {endpoint}: connection refused (is dockerd running?)"
            ),
            Some(io::ErrorKind::PermissionDenied) => format!(
                "no permission to open {endpoint} (add your user to the docker group, or use rootless Docker)"
            ),
            Some(io::ErrorKind::NotFound) => format!(
                "no Docker engine at {endpoint}: socket not found (is dockerd running?)"
            ),
            _ => format!("cannot talk to the Docker engine at {endpoint}: {}", chain(other)),
        },
    }
}

// ---------------------------------------------------------------- Compose

/// Runs `docker compose version`: the stack's lifecycle goes through the real
/// Compose v2 CLI, so the plugin must be there and be v2 or newer.
pub async fn probe_compose(timeout: Duration) -> ComposeProbe {
    match bounded(timeout, compose_version()).await {
        Some(probe) => probe,
        None => ComposeProbe {
            available: false,
            version: None,
            error: Some(format!(
                "`docker compose version` did not answer within {}",
                human(timeout)
            )),
        },
    }
}

async fn compose_version() -> ComposeProbe {
    let missing = |error: String| ComposeProbe {
        available: false,
        version: None,
        error: Some(error),
    };
    let docker = docker_cli();
    let json = match run_docker(&docker, &["compose", "version", "--format", "json"]).await {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return missing(
                "docker CLI not found on PATH: install Docker Engine with the Compose v2 plugin (docker-compose-plugin) or Docker Desktop".to_string(),
            )
        }
        Err(e) => return missing(format!("cannot run {}: {e}", docker.display())),
    };
    let out = if json.status.success() {
        json
    } else {
        // Either the plugin is missing, or it predates `--format json`; the
        // plain form tells the two apart.
        match run_docker(&docker, &["compose", "version"]).await {
            Ok(plain) if plain.status.success() => plain,
            Ok(plain) => {
                let stderr = String::from_utf8_lossy(&plain.stderr);
                let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                return missing(if looks_like_missing_plugin(&stderr) {
                    "the Docker Compose v2 plugin is not installed (`docker compose` is not a docker command): install docker-compose-plugin, or put the docker-compose v2 binary in ~/.docker/cli-plugins/".to_string()
                } else {
                    format!("`docker compose version` failed: {}", first.trim())
                });
            }
            Err(e) => return missing(format!("cannot run {}: {e}", docker.display())),
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(version) = parse_compose_version(&stdout) else {
        return missing(format!(
            "could not read a version from `docker compose version`: {}",
            stdout.trim()
        ));
    };
    match compose_major(&version) {
        Some(major) if major >= 2 => ComposeProbe {
            available: true,
            version: Some(version),
            error: None,
        },
        _ => ComposeProbe {
            available: false,
            error: Some(format!(
                "Compose {version} is not v2: install the Docker Compose v2 plugin (docker-compose-plugin)"
            )),
            version: Some(version),
        },
    }
}

fn looks_like_missing_plugin(stderr: &str) -> bool {
    stderr.contains("unknown command")
        || stderr.contains("is not a docker command")
        || stderr.contains("unknown flag")
}

/// The `docker` CLI to run: from PATH, else from where installers put it.
/// MCP clients started from a desktop (Claude Desktop on macOS) hand servers
/// a PATH without /usr/local/bin or Docker.app, so PATH alone misses it.
pub fn docker_cli() -> PathBuf {
    let exe = if cfg!(windows) {
        "docker.exe"
    } else {
        "docker"
    };
    if let Some(found) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(exe))
            .find(|p| p.is_file())
    }) {
        return found;
    }
    const KNOWN: &[&str] = &[
        "/usr/local/bin/docker",
        "/opt/homebrew/bin/docker",
        "/Applications/Docker.app/Contents/Resources/bin/docker",
        "/usr/bin/docker",
    ];
    KNOWN
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(exe))
}

async fn run_docker(docker: &Path, args: &[&str]) -> io::Result<std::process::Output> {
    tokio::process::Command::new(docker)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
}

/// Reads the version from `docker compose version --format json`
/// (`{"version":"v2.26.1"}`), a bare JSON string, or the plain text form
/// (`Docker Compose version v2.26.1`). Returned without the leading `v`.
fn parse_compose_version(stdout: &str) -> Option<String> {
    let text = stdout.trim();
    let raw = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => map.get("version")?.as_str()?.to_string(),
        Ok(serde_json::Value::String(s)) => s,
        _ => text.lines().next()?.split_whitespace().last()?.to_string(),
    };
    let version = raw.trim().trim_start_matches('v');
    version
        .starts_with(|c: char| c.is_ascii_digit())
        .then(|| version.to_string())
}

fn compose_major(version: &str) -> Option<u64> {
    version.split('.').next()?.parse().ok()
}

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

// ---------------------------------------------------------------- helpers

/// Runs `fut` for at most `timeout`; None when it ran out of time (the future
/// is dropped, which kills a child started with kill_on_drop).
async fn bounded<T>(timeout: Duration, fut: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(timeout, fut).await.ok()
}

/// The first io::Error kind in an error's source chain: hyper and reqwest wrap
/// the socket error that says what actually happened.
fn io_error_kind(e: &(dyn StdError + 'static)) -> Option<io::ErrorKind> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        current = err.source();
    }
    None
}

/// An error and its causes on one line (`a: b: c`), without repeats.
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Tests that set DOCKER_HOST / OLLAMA_HOST take this lock so they do not
    /// see each other's values.
    static ENV_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[cfg(unix)]
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        port
    }

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

    #[test]
    fn compose_versions_are_parsed() {
        assert_eq!(
            parse_compose_version("{\"version\":\"v2.26.1\"}\n"),
            Some("2.26.1".to_string())
        );
        assert_eq!(
            parse_compose_version("\"2.26.1\"\n"),
            Some("2.26.1".to_string())
        );
        assert_eq!(
            parse_compose_version("2.26.1\n"),
            Some("2.26.1".to_string())
        );
        assert_eq!(
            parse_compose_version("Docker Compose version v2.29.7-desktop.1\n"),
            Some("2.29.7-desktop.1".to_string())
        );
        assert_eq!(parse_compose_version("{\"other\":1}"), None);
        assert_eq!(parse_compose_version(""), None);
        assert_eq!(compose_major("2.26.1"), Some(2));
        assert_eq!(compose_major("1.29.2"), Some(1));
        assert_eq!(compose_major("10.0.0"), Some(10));
        assert!(looks_like_missing_plugin(
            "docker: unknown command: docker compose\n"
        ));
        assert!(looks_like_missing_plugin(
            "docker: 'compose' is not a docker command.\n"
        ));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn absent_runtime_is_reported_within_the_deadline() {
        let _env = ENV_LOCK.lock().await;
        let sock = format!("/tmp/stackpilot-no-docker-{}.sock", std::process::id());
        let port = closed_port();
        std::env::set_var("DOCKER_HOST", format!("unix://{sock}"));
        std::env::set_var("OLLAMA_HOST", format!("127.0.0.1:{port}"));
        let started = Instant::now();
        let info = probe_runtime(Duration::from_secs(1)).await;
        let elapsed = started.elapsed();
        std::env::remove_var("DOCKER_HOST");
        std::env::remove_var("OLLAMA_HOST");

        assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
        assert!(!info.docker.reachable);
        assert_eq!(info.docker.endpoint, format!("unix://{sock}"));
        let docker_error = info.docker.error.expect("docker error");
        assert!(docker_error.contains("does not exist"), "{docker_error}");
        assert!(!info.nvidia_runtime);
        assert!(!info.ollama.reachable);
        assert_eq!(info.ollama.url, format!("http://127.0.0.1:{port}"));
        let ollama_error = info.ollama.error.expect("ollama error");
        assert!(
            ollama_error.contains("connection refused"),
            "{ollama_error}"
        );
        // Compose depends on the machine; an unavailable one must say why.
        if !info.compose.available {
            assert!(info.compose.error.is_some());
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn refused_docker_socket_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("docker.sock");
        // Bound then closed: the socket file stays, nobody accepts.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        let endpoint = format!("unix://{}", path.display());
        let (probe, nvidia) = probe_docker_at(&endpoint, Duration::from_secs(1)).await;
        assert!(!probe.reachable && !nvidia);
        assert_eq!(
            probe.error.as_deref(),
            Some(
                format!("no Docker engine at {endpoint}: connection refused (is dockerd running?)")
                    .as_str()
            )
        );
    }

    #[tokio::test]
    async fn unsupported_docker_scheme_says_what_to_do() {
        let (probe, _) = probe_docker_at("fd://3", Duration::from_secs(1)).await;
        assert!(!probe.reachable);
        let error = probe.error.expect("error");
        assert!(error.contains("uses a scheme"), "{error}");
        assert!(error.contains("ssh://user@host"), "{error}");
    }

    /// Serves canned HTTP responses, one per connection, chosen by request path.
    async fn serve_http<L, S>(listener: L, routes: Vec<(&'static str, &'static str)>)
    where
        L: AcceptOne<S> + Send + 'static,
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        tokio::spawn(async move {
            while let Some(mut stream) = listener.accept_one().await {
                let routes = routes.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let (status, body) = routes
                        .iter()
                        .find(|(suffix, _)| path.ends_with(suffix))
                        .map(|(_, body)| ("200 OK", *body))
                        .unwrap_or(("404 Not Found", "{\"message\":\"page not found\"}"));
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
    }

    trait AcceptOne<S> {
        fn accept_one(&self) -> impl Future<Output = Option<S>> + Send;
    }
    impl AcceptOne<tokio::net::TcpStream> for tokio::net::TcpListener {
        async fn accept_one(&self) -> Option<tokio::net::TcpStream> {
            self.accept().await.ok().map(|(s, _)| s)
        }
    }
    #[cfg(unix)]
    impl AcceptOne<tokio::net::UnixStream> for tokio::net::UnixListener {
        async fn accept_one(&self) -> Option<tokio::net::UnixStream> {
            self.accept().await.ok().map(|(s, _)| s)
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn docker_stand_in_with_nvidia_runtime() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        serve_http(
            listener,
            vec![
                (
                    "/version",
                    r#"{"Version":"20.10.24","ApiVersion":"1.41","MinAPIVersion":"1.12"}"#,
                ),
                (
                    "/info",
                    r#"{"Runtimes":{"runc":{"path":"runc"},"nvidia":{"path":"nvidia-container-runtime"}}}"#,
                ),
            ],
        )
        .await;
        let endpoint = format!("unix://{}", path.display());
        let (probe, nvidia) = probe_docker_at(&endpoint, Duration::from_secs(1)).await;
        assert!(probe.reachable, "{probe:?}");
        assert_eq!(probe.version.as_deref(), Some("20.10.24"));
        assert_eq!(probe.api_version.as_deref(), Some("1.41"));
        assert!(nvidia);
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
    fn docker_endpoint_defaults_to_the_socket() {
        assert!(DEFAULT_DOCKER_ENDPOINT.starts_with("unix://") || cfg!(windows));
        assert!(is_loopback_url("http://127.0.0.1:11434"));
        assert!(is_loopback_url("http://localhost:11434"));
        assert!(is_loopback_url("http://[::1]:11434"));
        assert!(!is_loopback_url("http://example.com:11434"));
    }
}
