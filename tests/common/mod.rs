//! Test helpers: spawn the built binary, make throwaway stacks, connect real
//! rmcp clients over stdio and Streamable HTTP.
#![allow(dead_code)]

pub mod docker;
pub mod kube;
pub mod ollama_peers;
pub mod peers;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ElicitRequestParams,
    ElicitResult, ElicitationAction, ElicitationCapability, FormElicitationCapability,
    Implementation, ProtocolVersion,
};
use rmcp::service::{RequestContext, RoleClient, RunningService};
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, ErrorData};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

/// The binary under test: cargo's, or STACKPILOT_TEST_BIN when set (a copy
/// taken right after the build, where several checkouts share one target
/// directory and overwrite each other's target/debug/stackpilot).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("STACKPILOT_TEST_BIN")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_stackpilot").to_string())
    })
}

/// A throwaway stack directory with a compose file and a `.env`.
pub struct TestStack {
    pub dir: tempfile::TempDir,
}

impl TestStack {
    pub fn new(env: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("docker-compose.yml"),
            "services:\n  web:\n    image: stackpilot-test/busybox:1\n    pull_policy: never\n",
        )
        .expect("compose file");
        std::fs::write(dir.path().join(".env"), env).expect(".env");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn env_text(&self) -> String {
        std::fs::read_to_string(self.path().join(".env")).expect("read .env")
    }

    pub fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path().join(".stackpilot/audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }
}

/// Environment every spawned server gets: no engine and no Ollama, at
/// addresses that answer nothing, so probes are fast and deterministic.
pub fn quiet_env(cmd: &mut tokio::process::Command) {
    cmd.env("DOCKER_HOST", "unix:///tmp/stackpilot-test-no-docker.sock")
        .env("OLLAMA_HOST", "http://127.0.0.1:9")
        .env("STACKPILOT_LOG", "warn");
}

/// How the test client answers elicitations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Person {
    /// The client does not declare elicitation.
    Absent,
    Accept,
    Decline,
    Cancel,
}

/// One progress notification as the client received it.
#[derive(Clone, Debug)]
pub struct ProgressSeen {
    pub at: std::time::Instant,
    pub progress: f64,
    pub message: Option<String>,
}

#[derive(Clone)]
pub struct TestClient {
    pub person: Person,
    pub version: ProtocolVersion,
    pub asked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Every progress notification received, in order.
    pub progress: std::sync::Arc<std::sync::Mutex<Vec<ProgressSeen>>>,
    /// How long the person takes to answer.
    pub think: Duration,
    /// Run while the person decides (with how many times they were asked):
    /// what happens meanwhile elsewhere.
    pub meanwhile: Option<std::sync::Arc<dyn Fn(usize) + Send + Sync>>,
    /// Declares the tasks extension (io.modelcontextprotocol/tasks).
    pub tasks: bool,
    /// Every `notifications/resources/updated` received (2025-11-25), in order.
    pub updates: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>,
    /// Every `notifications/message` received.
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl TestClient {
    pub fn new(person: Person, version: ProtocolVersion) -> Self {
        Self {
            person,
            version,
            asked: Default::default(),
            progress: Default::default(),
            think: Duration::ZERO,
            meanwhile: None,
            tasks: false,
            updates: Default::default(),
            logs: Default::default(),
        }
    }

    /// The same client, declaring the tasks extension.
    pub fn with_tasks(mut self) -> Self {
        self.tasks = true;
        self
    }
}

impl ClientHandler for TestClient {
    fn get_info(&self) -> ClientConfig {
        let mut caps = ClientCapabilities::default();
        if self.person != Person::Absent {
            let mut e = ElicitationCapability::new();
            e.form = Some(FormElicitationCapability::default());
            caps.elicitation = Some(e);
        }
        if self.tasks {
            caps.extensions.get_or_insert_with(Default::default).insert(
                rmcp::model::TASKS_EXTENSION_ID.to_string(),
                Default::default(),
            );
        }
        let mut info = ClientConfig::new(caps, Implementation::new("stackpilot-tests", "1.0.0"));
        info.protocol_version = self.version.clone();
        info
    }

    async fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        if let Ok(mut seen) = self.progress.lock() {
            seen.push(ProgressSeen {
                at: std::time::Instant::now(),
                progress: params.progress,
                message: params.message,
            });
        }
    }

    async fn on_resource_updated(
        &self,
        params: rmcp::model::ResourceUpdatedNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        if let Ok(mut seen) = self.updates.lock() {
            seen.push((std::time::Instant::now(), params.uri));
        }
    }

    #[allow(deprecated)]
    async fn on_logging_message(
        &self,
        params: rmcp::model::LoggingMessageNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        if let Ok(mut seen) = self.logs.lock() {
            seen.push(serde_json::to_value(&params).unwrap_or_default());
        }
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let n = self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if let Some(f) = &self.meanwhile {
            f(n);
        }
        if !self.think.is_zero() {
            tokio::time::sleep(self.think).await;
        }
        let ElicitRequestParams::FormElicitationParams { message, .. } = request else {
            return Ok(ElicitResult::new(ElicitationAction::Decline));
        };
        assert!(
            message.contains("plan digest"),
            "the person sees the plan: {message}"
        );
        Ok(match self.person {
            Person::Accept => {
                ElicitResult::new(ElicitationAction::Accept).with_content(json!({"confirm": true}))
            }
            Person::Decline => ElicitResult::new(ElicitationAction::Decline),
            _ => ElicitResult::new(ElicitationAction::Cancel),
        })
    }
}

pub type Client = RunningService<RoleClient, TestClient>;

pub fn lifecycle(version: &ProtocolVersion) -> ClientLifecycleMode {
    if *version >= ProtocolVersion::V_2026_07_28 {
        ClientLifecycleMode::Discover {
            preferred_versions: vec![version.clone()],
        }
    } else {
        ClientLifecycleMode::Initialize
    }
}

/// Spawns `stackpilot serve` over stdio and connects.
pub async fn stdio_client(stack: &Path, extra: &[&str], client: TestClient) -> Client {
    stdio_client_env(stack, extra, client, &[]).await
}

/// Like `stdio_client`, with environment variables set after the quiet ones
/// (a real DOCKER_HOST, a PATH without Compose).
pub async fn stdio_client_env(
    stack: &Path,
    extra: &[&str],
    client: TestClient,
    env: &[(&str, &str)],
) -> Client {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let stack = stack.to_path_buf();
    let transport =
        TokioChildProcess::builder(tokio::process::Command::new(bin()).configure(|cmd| {
            cmd.arg("serve").arg("--stack").arg(&stack).args(&extra);
            quiet_env(cmd);
            for (k, v) in &env {
                cmd.env(k, v);
            }
        }))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn stackpilot")
        .0;
    let version = client.version.clone();
    client
        .serve_with_lifecycle(transport, lifecycle(&version))
        .await
        .expect("connect over stdio")
}

/// A `stackpilot serve --http` child on an ephemeral loopback port.
pub struct HttpServer {
    pub child: tokio::process::Child,
    pub url: String,
    pub base: String,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

pub async fn http_server(stack: &Path, extra: &[&str]) -> HttpServer {
    http_server_env(stack, extra, &[]).await
}

/// Like `http_server`, with environment variables set after the quiet ones.
pub async fn http_server_env(stack: &Path, extra: &[&str], env: &[(&str, &str)]) -> HttpServer {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.arg("serve")
        .arg("--stack")
        .arg(stack)
        .arg("--http")
        .arg("127.0.0.1:0")
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    quiet_env(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn stackpilot --http");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let url = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.strip_prefix("stackpilot listening on ") {
                return rest.trim().to_string();
            }
        }
        panic!("server exited before listening");
    })
    .await
    .expect("server listens within 20 s");
    // Keep draining stderr so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let base = url.trim_end_matches("/mcp").to_string();
    HttpServer { child, url, base }
}

pub async fn http_client(server: &HttpServer, client: TestClient, token: Option<&str>) -> Client {
    let mut config =
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
            server.url.clone(),
        );
    if let Some(t) = token {
        config = config.auth_header(t.to_string());
    }
    let transport = StreamableHttpClientTransport::from_config(config);
    let version = client.version.clone();
    client
        .serve_with_lifecycle(transport, lifecycle(&version))
        .await
        .expect("connect over HTTP")
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

pub fn structured(result: &CallToolResult) -> Value {
    result
        .structured_content
        .clone()
        .expect("structured content")
}

pub fn is_error(result: &CallToolResult) -> bool {
    result.is_error.unwrap_or(false)
}

/// The fixed hardware every confirmation test plans for: a 16 GiB NVIDIA card.
pub fn gpu16() -> Value {
    json!({
        "nvidia_vram_bytes": 17_179_869_184u64,
        "nvidia_compute_capability": "8.9",
        "memory_total_bytes": 68_719_476_736u64,
        "memory_available_bytes": 60_000_000_000u64,
        "logical_cores": 16
    })
}

pub fn select_args(extra: Value) -> Value {
    let mut args = json!({
        "model": "llama3.1:8b",
        "context_length": 131072,
        "hardware": gpu16(),
        "write_env": true
    });
    if let (Value::Object(a), Value::Object(e)) = (&mut args, extra) {
        a.extend(e);
    }
    args
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real GGUF, fetched once by scripts/fetch-test-model.sh.
#[allow(dead_code)] // not every test binary reads the GGUF
pub fn gguf() -> Option<std::path::PathBuf> {
    let script = root().join("scripts/fetch-test-model.sh");
    let out = std::process::Command::new("bash").arg(&script).output();
    match out {
        Ok(o) if o.status.success() => {
            let p = std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            Some(p).filter(|p| p.is_file())
        }
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true: the test GGUF could not be fetched: {why}");
            }
            eprintln!(
                "SKIP: the test GGUF could not be fetched ({why}); tests reading it are skipped"
            );
            None
        }
    }
}

/// Checks a tool's structured output against the outputSchema the client listed.
#[allow(dead_code)] // not every test binary validates outputs
pub fn validate_output(client_tools: &[rmcp::model::Tool], tool: &str, instance: &Value) {
    let schema = client_tools
        .iter()
        .find(|t| t.name == tool)
        .and_then(|t| t.output_schema.clone())
        .expect("output schema");
    let schema = Value::Object((*schema).clone());
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{tool} output violates its schema: {errors:?}\n{instance:#}"
    );
}

/// Every tool's name, from the definitions exported into tools/ (a unit test
/// and tests/cli.rs hold them equal to the code), sorted.
pub fn exported_tool_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("tools"))
        .expect("tools/")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

/// The tools `--read-only` lists: those annotated read-only, and the two with a
/// read-only form (select_profile without write_env, kube_render without
/// output_dir), sorted.
pub fn read_only_tool_names() -> Vec<String> {
    exported_tool_names()
        .into_iter()
        .filter(|n| {
            let text = std::fs::read_to_string(root().join("tools").join(format!("{n}.json")))
                .expect("tools/<name>.json");
            let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            v["annotations"]["readOnlyHint"] == true || n == "select_profile" || n == "kube_render"
        })
        .collect()
}
