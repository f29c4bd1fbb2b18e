//! Helpers for the backup tests: an MCP client on the built binary that
//! reaches the real engine and records progress notifications, psql through
//! docker exec, a throwaway tmpfs, and looks into the backup directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ElicitRequestParams,
    ElicitResult, ElicitationAction, ElicitationCapability, FormElicitationCapability,
    Implementation, ProgressNotificationParam, ProtocolVersion,
};
use rmcp::service::{NotificationContext, RequestContext, RoleClient, RunningService};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{ClientHandler, ErrorData, ServiceExt};
use serde_json::{json, Value};

use crate::common::docker::DockerStack;
use crate::common::{bin, Person};

/// A client that answers elicitations as `person` and keeps every progress notification.
#[derive(Clone)]
pub struct Agent {
    pub person: Person,
    pub progress: Arc<Mutex<Vec<(f64, String)>>>,
    pub asked: Arc<Mutex<Vec<String>>>,
}

impl ClientHandler for Agent {
    fn get_info(&self) -> ClientConfig {
        let mut caps = ClientCapabilities::default();
        if self.person != Person::Absent {
            let mut e = ElicitationCapability::new();
            e.form = Some(FormElicitationCapability::default());
            caps.elicitation = Some(e);
        }
        let mut info = ClientConfig::new(caps, Implementation::new("stackpilot-backup-tests", "1"));
        info.protocol_version = ProtocolVersion::V_2025_11_25;
        info
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        if let ElicitRequestParams::FormElicitationParams { message, .. } = &request {
            self.asked.lock().expect("lock").push(message.clone());
        }
        Ok(match self.person {
            Person::Accept => {
                ElicitResult::new(ElicitationAction::Accept).with_content(json!({"confirm": true}))
            }
            Person::Decline => ElicitResult::new(ElicitationAction::Decline),
            _ => ElicitResult::new(ElicitationAction::Cancel),
        })
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress
            .lock()
            .expect("lock")
            .push((params.progress, params.message.unwrap_or_default()));
    }
}

pub type Client = RunningService<RoleClient, Agent>;

/// `stackpilot serve` on `stack` over stdio, talking to the real engine.
pub async fn connect(
    stack: &Path,
    docker_host: &str,
    person: Person,
    extra: &[&str],
) -> (Client, Agent) {
    let agent = Agent {
        person,
        progress: Default::default(),
        asked: Default::default(),
    };
    let stack = stack.to_path_buf();
    let host = docker_host.to_string();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let transport =
        TokioChildProcess::builder(tokio::process::Command::new(bin()).configure(|cmd| {
            cmd.arg("serve")
                .arg("--stack")
                .arg(&stack)
                .args(&extra)
                .env("DOCKER_HOST", &host)
                .env("OLLAMA_HOST", "http://127.0.0.1:9")
                .env("STACKPILOT_LOG", "warn");
        }))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn stackpilot")
        .0;
    let running = agent.clone().serve(transport).await.expect("connect");
    (running, agent)
}

pub async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("args must be an object")
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .expect("tools/call answered")
}

pub fn out(r: &CallToolResult) -> Value {
    r.structured_content.clone().expect("structured content")
}

pub fn ok(r: &CallToolResult) -> Value {
    assert!(!r.is_error.unwrap_or(false), "tool error: {:#}", out(r));
    out(r)
}

pub fn err(r: &CallToolResult) -> Value {
    assert!(
        r.is_error.unwrap_or(false),
        "expected a tool error: {:#}",
        out(r)
    );
    out(r)["error"].clone()
}

/// `docker compose up -d --wait` (panics with compose's output on failure).
pub fn up(stack: &DockerStack) {
    let o = stack.compose(&["up", "-d", "--wait", "--quiet-pull"]);
    assert!(
        o.status.success(),
        "compose up: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The container of a service (`docker compose ps -q`).
pub fn container(stack: &DockerStack, service: &str) -> String {
    let o = stack.compose(&["ps", "-a", "-q", service]);
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(!id.is_empty(), "no container for {service}");
    id
}

/// Runs a command in a service's container and returns stdout (panics on failure).
pub fn exec(stack: &DockerStack, service: &str, args: &[&str]) -> String {
    let c = container(stack, service);
    let mut full = vec!["exec", c.as_str()];
    full.extend_from_slice(args);
    let o = stack.docker(&full);
    assert!(
        o.status.success(),
        "docker exec {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// psql -At in the postgres service.
pub fn psql(stack: &DockerStack, sql: &str) -> String {
    exec(
        stack,
        "postgres",
        &[
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            "postgres",
            "-c",
            sql,
        ],
    )
    .trim()
    .to_string()
}

/// Where a stack's backups go (its x-stackpilot backup_root is ./backups).
pub fn backup_dir(stack: &DockerStack) -> PathBuf {
    stack.path().join("backups").join(&stack.project)
}

/// Sorted file names in a directory (missing: empty).
pub fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A tmpfs mounted at `dir` (needs root), unmounted on drop.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// `None` (with the reason printed) where mounting is not permitted, outside CI.
    pub fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).expect("mount point");
        let o = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output();
        match o {
            Ok(o) if o.status.success() => Some(Self(dir.to_path_buf())),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "tmpfs mount needed under CI: {why}"
                );
                eprintln!("skipped: cannot mount a tmpfs ({why})");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).output();
    }
}

/// Free bytes on the filesystem holding `p`.
pub fn free_bytes(p: &Path) -> u64 {
    let o = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(p)
        .output()
        .expect("df");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output")
}
