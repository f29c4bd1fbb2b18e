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
use crate::adapters::{hardware, runtime_probe};
use crate::app::{HOST_CACHE_TTL, RUNTIME_CACHE_TTL};
use crate::call::{Call, Reply};
use crate::error::ToolError;
use crate::ops::hardware_types::{HardwareReport, RuntimeInfo};
use crate::registry::{self, Hints, ToolDef};

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
    description: "Report this machine's CPU (cores, SIMD), memory, cgroup limits, OS/WSL, GPUs \
        (NVIDIA via NVML, AMD via sysfs, Apple Silicon), free disk for the stack, and the runtime: \
        Docker engine, Compose v2, NVIDIA container runtime, Ollama. Absent pieces are reported \
        with a reason, never raised. Read-only; feed the result to select_profile.",
    hints: Hints {
        read_only: true,
        destructive: false,
        idempotent: true,
        open_world: false,
    },
    read_only_subset: false,
    input_schema: registry::input_schema::<Input>,
    output_schema: registry::output_schema::<HardwareReport>,
    run: |call, args| Box::pin(run(call, args)),
};

async fn run(call: Arc<Call>, args: Value) -> Result<Reply, ToolError> {
    let input: Input = registry::parse_args(args)?;
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
    let info = runtime_probe::probe_runtime(PROBE_TIMEOUT).await;
    if let Ok(mut cache) = call.app.runtime_cache.lock() {
        *cache = Some((Instant::now(), info.clone()));
    }
    info
}
