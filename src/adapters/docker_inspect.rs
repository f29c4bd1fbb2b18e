//! Engine-side reads and small actions for health and recover: the project's
//! containers (found by compose labels, so nothing else on the engine is
//! touched), inspect with the health-check log, bounded log tails, `exec` with
//! captured output and a timeout, restart, and the engine facts health needs.
//!
//! Every call is bounded by the timeout it is given. Text that comes out of a
//! container (logs, exec output, health-check output) is returned redacted
//! (`redact::redact_text`) and capped; callers mark it as untrusted.
use std::collections::HashMap;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{ContainerInspectResponse, ExecConfig};
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptions, LogsOptionsBuilder, RestartContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;

use crate::error::ToolError;

/// Compose's labels on every container it creates.
pub const LABEL_PROJECT: &str = "com.docker.compose.project";
pub const LABEL_SERVICE: &str = "com.docker.compose.service";
pub const LABEL_ONEOFF: &str = "com.docker.compose.oneoff";

/// A container of the compose project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectContainer {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub service: String,
}

fn engine_error(what: &str, e: &bollard::errors::Error) -> ToolError {
    ToolError::external(format!("the Docker engine refused {what}: {e}"))
}

async fn bounded<T>(
    what: &str,
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, ToolError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(engine_error(what, &e)),
        Err(_) => Err(ToolError::external(format!(
            "the Docker engine did not answer {what} within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// Whether an engine error is a 404 (the container is gone).
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Every container (running or not) of `project`, except one-off `compose run`
/// containers, sorted by service then name.
pub async fn project_containers(
    docker: &Docker,
    project: &str,
    timeout: Duration,
) -> Result<Vec<ProjectContainer>, ToolError> {
    let mut filters = HashMap::new();
    filters.insert(
        "label".to_string(),
        vec![format!("{LABEL_PROJECT}={project}")],
    );
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    let list = bounded(
        "the container list",
        timeout,
        docker.list_containers(Some(options)),
    )
    .await?;
    let mut out: Vec<ProjectContainer> = list
        .into_iter()
        .filter_map(|c| {
            let labels = c.labels.unwrap_or_default();
            if labels
                .get(LABEL_ONEOFF)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            {
                return None;
            }
            Some(ProjectContainer {
                id: c.id?,
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default(),
                service: labels.get(LABEL_SERVICE)?.clone(),
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
    Ok(out)
}

/// Inspect, with `State.Health.Log` (the engine keeps the last five probes).
/// `Ok(None)` when the container was removed meanwhile.
pub async fn inspect(
    docker: &Docker,
    id: &str,
    timeout: Duration,
) -> Result<Option<ContainerInspectResponse>, ToolError> {
    match tokio::time::timeout(
        timeout,
        docker.inspect_container(id, None::<InspectContainerOptions>),
    )
    .await
    {
        Ok(Ok(v)) => Ok(Some(v)),
        Ok(Err(e)) if is_not_found(&e) => Ok(None),
        Ok(Err(e)) => Err(engine_error("inspect", &e)),
        Err(_) => Err(ToolError::external(format!(
            "the Docker engine did not answer inspect within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// `docker restart` (starts a stopped container too). Without `stop_timeout_s`
/// the engine uses the container's own grace period (compose's
/// `stop_grace_period`) before SIGKILL.
pub async fn restart(
    docker: &Docker,
    id: &str,
    stop_timeout_s: Option<i32>,
    limit: Duration,
) -> Result<(), ToolError> {
    let options = RestartContainerOptions {
        t: stop_timeout_s,
        ..Default::default()
    };
    bounded(
        "restart",
        limit,
        docker.restart_container(id, Some(options)),
    )
    .await
}

/// Lines and bytes of text from a container, already redacted and capped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CapturedText {
    pub lines: Vec<String>,
    /// Older lines or bytes were dropped to stay within the caps.
    pub truncated: bool,
}

/// Keeps the last `max_lines` lines within `max_bytes`, each redacted.
pub fn tail_lines(raw: &[u8], max_lines: usize, max_bytes: usize) -> CapturedText {
    let text = String::from_utf8_lossy(raw);
    let all: Vec<&str> = text.lines().collect();
    let mut truncated = all.len() > max_lines;
    let start = all.len().saturating_sub(max_lines);
    let mut kept: Vec<String> = Vec::new();
    let mut bytes = 0usize;
    for line in all[start..].iter().rev() {
        let line = crate::redact::redact_text(line, &[]);
        let line = crate::redact::cap(&line, max_bytes.min(1024));
        if bytes + line.len() + 1 > max_bytes {
            truncated = true;
            break;
        }
        bytes += line.len() + 1;
        kept.push(line);
    }
    kept.reverse();
    CapturedText {
        lines: kept,
        truncated,
    }
}

/// The last `lines` lines of stdout and stderr (interleaved as the engine
/// stores them), within `max_bytes`.
pub async fn logs_tail(
    docker: &Docker,
    id: &str,
    lines: usize,
    max_bytes: usize,
    timeout: Duration,
) -> Result<CapturedText, ToolError> {
    let options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .tail(&lines.to_string())
        .build();
    let read = async {
        let mut stream = docker.logs(id, Some(options));
        let mut raw: Vec<u8> = Vec::new();
        // The engine already limits the line count; this bounds a flood of long lines.
        let hard_cap = max_bytes.saturating_mul(8).max(64 * 1024);
        while let Some(chunk) = stream.next().await {
            let chunk: LogOutput = chunk?;
            raw.extend_from_slice(chunk.as_ref());
            if raw.len() > hard_cap {
                let cut = raw.len() - hard_cap;
                raw.drain(..cut);
            }
        }
        Ok::<_, bollard::errors::Error>(raw)
    };
    let raw = bounded("the log tail", timeout, read).await?;
    Ok(tail_lines(&raw, lines, max_bytes))
}

/// What an `exec` printed and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecOutput {
    /// None when it did not finish in time (the engine has no way to stop an
    /// exec: the process may still run inside the container).
    pub exit_code: Option<i64>,
    /// stdout and stderr together, redacted, capped at the byte limit.
    pub output: String,
    pub timed_out: bool,
}

/// Runs `cmd` (an argument list, no shell unless the caller asks for one)
/// inside a running container and captures up to `max_bytes` of its output.
pub async fn exec_capture(
    docker: &Docker,
    id: &str,
    cmd: &[&str],
    timeout: Duration,
    max_bytes: usize,
) -> Result<ExecOutput, ToolError> {
    let config = ExecConfig {
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    let run = async {
        let created = docker.create_exec(id, config).await?;
        let mut raw: Vec<u8> = Vec::new();
        if let StartExecResults::Attached { mut output, .. } = docker
            .start_exec(&created.id, None::<StartExecOptions>)
            .await?
        {
            while let Some(chunk) = output.next().await {
                let chunk = chunk?;
                if raw.len() < max_bytes {
                    raw.extend_from_slice(chunk.as_ref());
                }
            }
        }
        let inspected = docker.inspect_exec(&created.id).await?;
        Ok::<_, bollard::errors::Error>((inspected.exit_code, raw))
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok((exit_code, raw))) => {
            let text = String::from_utf8_lossy(&raw);
            let text: Vec<String> = text
                .lines()
                .map(|l| crate::redact::redact_text(l, &[]))
                .collect();
            Ok(ExecOutput {
                exit_code,
                output: crate::redact::cap(text.join("\n").trim(), max_bytes),
                timed_out: false,
            })
        }
        Ok(Err(e)) => Err(engine_error("exec", &e)),
        Err(_) => Ok(ExecOutput {
            exit_code: None,
            output: String::new(),
            timed_out: true,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_keep_the_newest_lines_within_caps() {
        let raw = b"one\ntwo\nPASSWORD=x\nfour\n";
        let t = tail_lines(raw, 2, 1000);
        assert_eq!(t.lines, ["PASSWORD=[redacted]", "four"]);
        assert!(t.truncated);
        let t = tail_lines(raw, 10, 10);
        assert_eq!(t.lines, ["four"], "bytes cap drops the oldest lines");
        assert!(t.truncated);
        let t = tail_lines(b"a\nb\n", 10, 100);
        assert_eq!(t.lines, ["a", "b"]);
        assert!(!t.truncated);
    }
}
