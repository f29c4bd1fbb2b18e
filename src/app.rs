//! What every tool call shares: the stack, the server mode, the engine the
//! stack runs on, and lazily filled caches (nothing slow happens at startup).
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::adapters::env_file;
use crate::adapters::hardware::HostFacts;
use crate::adapters::metrics::Metrics;
use crate::domain::error::ToolError;
use crate::domain::hardware::RuntimeInfo;
use crate::domain::kubernetes::target::KubeTarget;
use crate::domain::redact::SecretBook;
use crate::domain::stack::Stack;
use crate::engine::compose::ComposeEngine;
use crate::engine::kubernetes::KubeEngine;
use crate::engine::Engine;

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
    compose: Arc<ComposeEngine>,
    /// Set when the stack runs on Kubernetes (`--target kubernetes` or x-stackpilot).
    kube: Option<Arc<KubeEngine>>,
    engine: Arc<dyn Engine>,
    /// Tool calls, confirmations and health verdicts, served at /metrics.
    pub metrics: Metrics,
    /// Every secret value seen so far (the .env, the compose model, the
    /// instances' environments): outputs, audit lines and logs are masked with it.
    pub secrets: Arc<SecretBook>,
    /// The last health report (the `stackpilot://stack/health` resource).
    last_health: Mutex<Option<serde_json::Value>>,
}

/// How long host facts are reused.
pub const HOST_CACHE_TTL: Duration = Duration::from_secs(1);

/// How long probe results of the outside world are reused.
pub const RUNTIME_CACHE_TTL: Duration = Duration::from_secs(5);

impl App {
    pub fn new(stack: Stack, mode: Mode) -> Self {
        Self::with_target(stack, mode, None)
    }

    /// An app whose stack runs on a Kubernetes namespace (`Some`) or on Compose.
    pub fn with_target(stack: Stack, mode: Mode, kube: Option<KubeTarget>) -> Self {
        let secrets = crate::adapters::logging::book();
        let compose = Arc::new(ComposeEngine::new(stack.clone(), secrets.clone()));
        let kube = kube.map(|t| Arc::new(KubeEngine::new(stack.clone(), t, secrets.clone())));
        let engine: Arc<dyn Engine> = match &kube {
            Some(k) => k.clone(),
            None => compose.clone(),
        };
        Self {
            secrets,
            stack,
            mode,
            runtime_cache: Mutex::new(None),
            host_cache: Mutex::new(None),
            engine,
            compose,
            kube,
            metrics: Metrics::new(),
            last_health: Mutex::new(None),
        }
    }

    /// The secret values to mask now: the .env's (read again, it may have
    /// changed) and everything learned so far, longest first.
    pub fn known_secrets(&self) -> Vec<String> {
        if let Ok(env) = env_file::load(&self.stack.env_path()) {
            let lines: Vec<String> = env
                .values()
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            self.secrets.learn_env(&lines);
        }
        self.secrets.snapshot()
    }

    pub fn set_last_health(&self, report: serde_json::Value) {
        if let Ok(mut h) = self.last_health.lock() {
            *h = Some(report);
        }
    }

    pub fn last_health(&self) -> Option<serde_json::Value> {
        self.last_health.lock().ok().and_then(|h| h.clone())
    }

    /// The engine the stack runs on: the port every engine-neutral tool uses.
    pub fn engine(&self) -> &dyn Engine {
        self.engine.as_ref()
    }

    /// The engine as a shared handle, for work that outlives a borrow (a
    /// cleanup spawned from a destructor).
    pub fn engine_arc(&self) -> Arc<dyn Engine> {
        self.engine.clone()
    }

    /// The Compose engine, for what only Compose has (compose_up, compose_down).
    /// A stack on Kubernetes has none: the error names the target.
    pub fn compose(&self) -> Result<&ComposeEngine, ToolError> {
        match &self.kube {
            Some(k) => Err(ToolError::invalid(
                "target",
                format!(
                    "this stack runs on Kubernetes (context `{}`, namespace `{}`): this tool works only on the Compose target",
                    k.target().context_name(),
                    k.target().namespace
                ),
            )
            .next_step("use kube_apply to change the stack on the cluster, or start stackpilot with --target compose")),
            None => Ok(self.compose.as_ref()),
        }
    }

    /// The Kubernetes engine of the stack's target, when it runs on Kubernetes.
    pub fn kube(&self) -> Option<Arc<KubeEngine>> {
        self.kube.clone()
    }

    /// A Kubernetes engine for `target`: the stack's own when it is the same
    /// namespace and context, else a new one (connected on first use).
    pub fn kube_for(&self, target: &KubeTarget) -> Arc<KubeEngine> {
        match &self.kube {
            Some(k) if k.target() == target => k.clone(),
            _ => Arc::new(KubeEngine::new(
                self.stack.clone(),
                target.clone(),
                self.secrets.clone(),
            )),
        }
    }
}
