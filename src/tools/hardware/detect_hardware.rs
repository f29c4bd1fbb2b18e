//! detect_hardware: what this machine can run. Read-only.
//!
//! 1. Host facts (CPU, memory, cgroup, OS, GPUs, disk) from the hardware adapter.
//! 2. Runtime facts (Docker engine, Compose v2, NVIDIA runtime, Ollama), each
//!    probe bounded by 1 s, run concurrently; an absent daemon is reported, not raised.
//! 3. Host facts are reused for 1 s and runtime facts for 5 s (`refresh: true`
//!    probes again), so a busy agent does not pay for the probes on every call.
use std::sync::Arc;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::adapters::hardware::HostFacts;
use crate::adapters::{hardware, ollama_probe};
use crate::app::{HOST_CACHE_TTL, RUNTIME_CACHE_TTL};
use crate::domain::error::ToolError;
use crate::domain::hardware::{HardwareReport, RuntimeInfo};
use crate::engine::compose::probe as engine_probe;
use crate::guard::{Call, Reply};
use crate::tools::def::{self, Hints, ToolDef};

/// Every probe of the outside world gives up after this long.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Probe again instead of reusing results (host facts: 1 s, engine/Ollama: 5 s).
    #[serde(default)]
    pub refresh: bool,
}

pub static TOOL: ToolDef = ToolDef {
    name: "detect_hardware",
    title: "Detect hardware",
    description:
        "Report this machine's CPU, memory, cgroup limits, OS, GPUs (NVIDIA, AMD, Apple Silicon; \
        the reason when there are none), free disk for the stack, and the runtime: Docker \
        engine, Compose v2, NVIDIA container runtime, Ollama. Read-only. Use first, then pass \
        the result to select_profile.",
    hints: Hints::READ_ONLY,
    read_only_subset: false,
    input_schema: def::input_schema::<Input>,
    output_schema: def::output_schema::<HardwareReport>,
    run: |call, args| Box::pin(run(call, args)),
};

async fn run(call: Arc<Call>, args: Value) -> Result<Reply, ToolError> {
    let input: Input = def::parse_args(args)?;
    let report = detect(&call, input.refresh).await?;
    serde_json::to_value(report)
        .map(Reply::Done)
        .map_err(|e| ToolError::internal(e.to_string()))
}

/// The full report; also used by select_profile when no hardware is given.
pub async fn detect(call: &Call, refresh: bool) -> Result<HardwareReport, ToolError> {
    let (host, runtime) = tokio::join!(host(call, refresh), runtime(call, refresh));
    Ok(host?.into_report(runtime))
}

async fn host(call: &Call, refresh: bool) -> Result<HostFacts, ToolError> {
    if !refresh {
        if let Ok(cache) = call.app.host_cache.lock() {
            if let Some((at, facts)) = cache.as_ref() {
                if at.elapsed() < HOST_CACHE_TTL {
                    return Ok(facts.clone());
                }
            }
        }
    }
    let dir = call.app.stack.dir.clone();
    let facts = tokio::task::spawn_blocking(move || hardware::probe_host(&dir))
        .await
        .map_err(|e| ToolError::internal(format!("hardware probe failed: {e}")))?;
    if let Ok(mut cache) = call.app.host_cache.lock() {
        *cache = Some((Instant::now(), facts.clone()));
    }
    Ok(facts)
}

async fn runtime(call: &Call, refresh: bool) -> RuntimeInfo {
    if !refresh {
        if let Ok(cache) = call.app.runtime_cache.lock() {
            if let Some((at, info)) = cache.as_ref() {
                if at.elapsed() < RUNTIME_CACHE_TTL {
                    return info.clone();
                }
            }
        }
    }
    let info = probe_runtime(PROBE_TIMEOUT).await;
    if let Ok(mut cache) = call.app.runtime_cache.lock() {
        *cache = Some((Instant::now(), info.clone()));
    }
    info
}

/// The runtime the stack needs: the Docker engine (and its NVIDIA runtime),
/// Compose v2 and Ollama. Runs the three probes concurrently; the whole call takes about `timeout`
/// at worst (the tool uses one second).
pub async fn probe_runtime(timeout: Duration) -> RuntimeInfo {
    let url = ollama_probe::ollama_url_from_env();
    let ((docker, nvidia_runtime), compose, ollama) = tokio::join!(
        engine_probe::probe_docker(timeout),
        engine_probe::probe_compose(timeout),
        ollama_probe::probe_ollama(&url, timeout)
    );
    RuntimeInfo {
        docker,
        compose,
        nvidia_runtime,
        ollama,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{closed_port, ENV_LOCK};
    use std::time::Instant;

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
}
