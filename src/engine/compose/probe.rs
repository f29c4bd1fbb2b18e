//! Is the Docker engine there, with its NVIDIA runtime, and is Compose v2?
//! Each probe has a hard time limit and never fails: an unreachable engine
//! is a fact the agent acts on (start dockerd, install the plugin), not a
//! failure of `detect_hardware`. compose_up and health reuse the pieces.
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bollard::Docker;

use crate::domain::error::{error_chain as chain, human_duration as human, io_error_kind};
use crate::domain::hardware::{ComposeProbe, DockerProbe};

async fn bounded<T>(timeout: Duration, fut: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(timeout, fut).await.ok()
}

/// Where the Docker CLI and bollard look when DOCKER_HOST is unset.
#[cfg(windows)]
pub const DEFAULT_DOCKER_ENDPOINT: &str = "npipe:////./pipe/docker_engine";
/// Where the Docker CLI and bollard look when DOCKER_HOST is unset.
#[cfg(not(windows))]
pub const DEFAULT_DOCKER_ENDPOINT: &str = "unix:///var/run/docker.sock";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::serve_http;

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

    #[test]
    fn docker_endpoint_defaults_to_the_socket() {
        assert!(DEFAULT_DOCKER_ENDPOINT.starts_with("unix://") || cfg!(windows));
    }
}
