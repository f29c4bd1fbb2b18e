//! The engine port: the one way a tool reaches the running stack.
//!
//! A tool asks an [`Engine`] for the stack model, the instances of its
//! services (containers on Compose, pods on Kubernetes), their details and
//! logs, a process inside one of them (streamed stdin and stdout: what
//! pg_dump, mongodump, pg_restore and tar need), a restart or recreate, and
//! the named volumes. Backup, restore, health, recover, status and logs are
//! written once against this trait and so work on every engine.
//!
//! What only one engine can do (compose's plan/apply of `up` and `down`)
//! lives on that engine's own type (`compose::ComposeEngine`), which a tool
//! reaches through `App::compose`.
//!
//! Engines import only `domain`; text that comes out of a container is
//! returned as it is, and the tools redact it (they know the stack's secrets).
pub mod compose;
pub mod kubernetes;
pub mod process;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use crate::domain::error::ToolError;
use crate::domain::instance::{EngineFacts, Instance, InstanceDetail};
use crate::domain::stack_model::StackModel;

pub use crate::domain::logs::OutputStream;
pub use process::{Chunk, ChunkSink, Exit, Finished, Process, RunError, Stdout, Tails};

/// Which engine runs the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Compose,
    Kubernetes,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Compose => "compose",
            EngineKind::Kubernetes => "kubernetes",
        }
    }
}

/// A short-lived helper with one of the stack's volumes mounted at `/data`
/// (volume backups and restores, when the service's own image has no `tar`),
/// or attached to one of the stack's networks (a TCP probe of a service from
/// where its neighbours reach it).
#[derive(Debug, Clone)]
pub struct HelperSpec {
    pub image: String,
    /// Replaces the image's entrypoint: the program and its arguments.
    pub cmd: Vec<String>,
    /// (engine volume name, read only)
    pub volume: Option<(String, bool)>,
    pub stdin: bool,
    /// The engine network to attach it to; None: no network at all.
    pub network: Option<String>,
}

/// What to read of an instance's log (the `logs` method).
///
/// Engines differ in what they can filter: Docker filters by whole seconds
/// and applies `tail` before the time bounds; Kubernetes has `tailLines` and
/// `sinceSeconds` but no `until` and no separate streams. So an engine may
/// return more than asked (lines a second outside the bounds, the other
/// stream where it cannot separate them) and callers filter again by each
/// line's time and stream; it must never return less.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Only the last N lines. None: the whole log. Docker counts the tail
    /// over both streams and before `until`, so callers leave it out when
    /// they bound by `until` or want one stream (it would cut first and then
    /// drop what it kept).
    pub tail: Option<usize>,
    /// Unix nanoseconds: lines at or after this time.
    pub since_ns: Option<i128>,
    /// Unix nanoseconds: lines at or before this time.
    pub until_ns: Option<i128>,
    pub stdout: bool,
    pub stderr: bool,
}

/// One line of an instance's output, as the engine stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the engine received it, Unix nanoseconds (what merging sorts by).
    pub time_ns: i128,
    pub stream: OutputStream,
    /// The line without its newline: raw container bytes (the caller bounds
    /// and redacts them).
    pub text: Bytes,
}

/// An instance's log lines, oldest first.
pub type LogLines = Pin<Box<dyn Stream<Item = Result<LogLine, ToolError>> + Send>>;

/// The port. Every method is bounded by the engine's own request timeout;
/// callers that need a tighter bound wrap the call in `tokio::time::timeout`.
#[async_trait]
pub trait Engine: Send + Sync {
    fn kind(&self) -> EngineKind;

    /// Whether the engine answers now (readiness).
    async fn ping(&self) -> Result<(), ToolError>;

    /// The stack model for these profiles (none: the .env's COMPOSE_PROFILES).
    async fn model(&self, profiles: &[String]) -> Result<StackModel, ToolError>;

    /// The stack model for the default profiles, reused while the stack's
    /// files are unchanged (health and recover call it on every poll).
    async fn model_cached(&self) -> Result<StackModel, ToolError>;

    /// The normalized compose file of these profiles (`docker compose config`,
    /// which needs no daemon): what a Kubernetes render translates.
    async fn compose_config(&self, profiles: &[String]) -> Result<serde_json::Value, ToolError>;

    /// Every profile any service of the compose files names.
    async fn compose_profiles(&self) -> Result<Vec<String>, ToolError>;

    /// Every instance of the project (running or not), one-offs flagged,
    /// sorted by service then name.
    async fn instances(&self) -> Result<Vec<Instance>, ToolError>;

    /// One instance in detail; None when it is gone.
    async fn inspect(&self, id: &str) -> Result<Option<InstanceDetail>, ToolError>;

    /// What the engine is and has (GPU runtime, data root, local or remote).
    async fn facts(&self) -> Result<EngineFacts, ToolError>;

    /// The last `lines` lines of an instance's output (stdout and stderr as
    /// the engine interleaves them), at most about `max_bytes`. Raw: the
    /// caller redacts.
    async fn logs_tail(
        &self,
        id: &str,
        lines: usize,
        max_bytes: usize,
    ) -> Result<Vec<u8>, ToolError>;

    /// An instance's log as timestamped lines, oldest first, streamed (a log
    /// of millions of lines is never held in memory here). Raw: the caller
    /// bounds, filters and redacts. Compose: the Engine API's logs with
    /// timestamps; Kubernetes: the pod log with `timestamps=true`.
    async fn logs(&self, id: &str, query: &LogQuery) -> Result<LogLines, ToolError>;

    /// The instance's environment (`KEY=value`): connection settings such as
    /// POSTGRES_USER, and the secret values tools must mask. Never echoed.
    async fn environment(&self, id: &str) -> Result<Vec<String>, ToolError>;

    /// Starts `cmd` (an argument list, no shell) inside a running instance,
    /// stdout and stderr attached, stdin when asked.
    async fn exec(
        &self,
        id: &str,
        cmd: Vec<String>,
        env: Vec<String>,
        stdin: bool,
    ) -> Result<Process, ToolError>;

    /// Restarts an instance (starts a stopped one). Without `stop_timeout_s`
    /// the instance's own grace period applies.
    async fn restart(&self, id: &str, stop_timeout_s: Option<i32>) -> Result<(), ToolError>;

    async fn stop(&self, id: &str) -> Result<(), ToolError>;

    async fn start(&self, id: &str) -> Result<(), ToolError>;

    /// Replaces a service's instances with new ones from the current model
    /// (compose `up --force-recreate --no-deps`; a rollout restart).
    async fn recreate(&self, service: &str) -> Result<(), ToolError>;

    /// The engine's name of one of the stack's named volumes.
    async fn volume(&self, volume: &str) -> Result<String, ToolError>;

    /// Whether an engine volume exists.
    async fn volume_exists(&self, engine_volume: &str) -> Result<bool, ToolError>;

    /// Instances (of any project) that mount an engine volume, sorted by name.
    async fn volume_users(&self, engine_volume: &str) -> Result<Vec<Instance>, ToolError>;

    async fn image_present(&self, image: &str) -> bool;

    /// Starts a helper with a volume mounted; it is removed when its process
    /// finishes or is dropped.
    async fn helper(&self, spec: &HelperSpec) -> Result<Process, ToolError>;

    /// A stream of the services whose instances changed state (created,
    /// started, stopped, died, health changed, destroyed), as the engine
    /// pushes them: no polling. Ends when the connection does.
    async fn watch(&self) -> Result<futures::stream::BoxStream<'static, String>, ToolError>;

    /// Kills what a stackpilot process (`dead_pid`) that died holding the
    /// stack lock left running, before the new holder changes anything;
    /// says what it killed.
    fn reap_leftovers(&self, dead_pid: u32) -> Vec<String> {
        let _ = dead_pid;
        Vec::new()
    }
}

/// The one running instance of a service that an exec goes into.
pub async fn running_instance(engine: &dyn Engine, service: &str) -> Result<Instance, ToolError> {
    service_instances(engine, service)
        .await?
        .into_iter()
        .find(Instance::running)
        .ok_or_else(|| {
            ToolError::external(format!("service `{service}` has no running instance"))
                .next_step("start the stack (compose_up), then call again")
        })
}

/// A service's instances (running or not, one-offs left out), sorted by name.
pub async fn service_instances(
    engine: &dyn Engine,
    service: &str,
) -> Result<Vec<Instance>, ToolError> {
    let mut out: Vec<Instance> = engine
        .instances()
        .await?
        .into_iter()
        .filter(|i| i.service == service && !i.one_off)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The last `lines` lines of an instance's output as text (lossy UTF-8),
/// within `max_bytes` (the end is kept), read within 3 s: a slow or failing
/// engine gives a bracketed note instead. Raw: the caller redacts.
pub async fn log_text(engine: &dyn Engine, id: &str, lines: usize, max_bytes: usize) -> String {
    let read = engine.logs_tail(id, lines, max_bytes);
    match tokio::time::timeout(std::time::Duration::from_secs(3), read).await {
        Ok(Ok(raw)) => {
            let text = String::from_utf8_lossy(&raw);
            let kept: Vec<&str> = text.lines().collect();
            let kept = kept[kept.len().saturating_sub(lines)..].join("\n");
            crate::domain::redact::tail_bytes(&kept, max_bytes)
        }
        Ok(Err(e)) => format!("[reading logs failed: {}]", e.message),
        Err(_) => "[log read timed out after 3 s]".to_string(),
    }
}

/// The value of `key` in an environment list (the last one wins, as in a process).
pub fn env_value(env: &[String], key: &str) -> Option<String> {
    env.iter()
        .rev()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
        .filter(|v| !v.is_empty())
}
