//! What every tool call shares: the stack, the server mode, and lazily filled
//! caches (nothing slow happens at startup).
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::adapters::hardware::HostFacts;
use crate::ops::hardware_types::RuntimeInfo;
use crate::stack::Stack;

/// Server-wide switches, set by flags.
#[derive(Debug, Clone)]
pub struct Mode {
    /// Mutating tools are not listed and cannot be called.
    pub read_only: bool,
    /// Destructive plans run without asking (scripted CI); audited as such.
    pub allow_destructive: bool,
    /// How long a mutating call waits for the stack lock before `busy`.
    pub lock_timeout: Duration,
    /// `stdio`, `http` or `cli`: recorded in the audit log.
    pub transport: &'static str,
}

impl Default for Mode {
    fn default() -> Self {
        Self {
            read_only: false,
            allow_destructive: false,
            lock_timeout: Duration::from_secs(30),
            transport: "cli",
        }
    }
}

pub struct App {
    pub stack: Stack,
    pub mode: Mode,
    /// detect_hardware's probes of the engine, compose and Ollama, reused for
    /// a few seconds so a warm call costs microseconds, not a socket round-trip.
    pub runtime_cache: Mutex<Option<(Instant, RuntimeInfo)>>,
    /// Host facts (CPU, memory, GPUs, disk), reused for a second: reading them
    /// costs about a millisecond of CPU, which would cap a busy server.
    pub host_cache: Mutex<Option<(Instant, HostFacts)>>,
    /// The engine connection, made on first use and kept (failures are not cached).
    docker: tokio::sync::OnceCell<bollard::Docker>,
    /// Tool calls, confirmations and health verdicts, served at /metrics.
    pub metrics: crate::server::metrics::Metrics,
}

/// How long host facts are reused.
pub const HOST_CACHE_TTL: Duration = Duration::from_secs(1);

/// How long probe results of the outside world are reused.
pub const RUNTIME_CACHE_TTL: Duration = Duration::from_secs(5);

impl App {
    pub fn new(stack: Stack, mode: Mode) -> Self {
        Self {
            stack,
            mode,
            runtime_cache: Mutex::new(None),
            host_cache: Mutex::new(None),
            docker: tokio::sync::OnceCell::new(),
            metrics: crate::server::metrics::Metrics::new(),
        }
    }

    /// The Docker engine, connected lazily; a missing engine is a clear error within 2 s.
    pub async fn docker(&self) -> Result<&bollard::Docker, crate::error::ToolError> {
        self.docker
            .get_or_try_init(crate::adapters::docker::connect)
            .await
    }
}
