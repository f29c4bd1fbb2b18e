//! compose_up / stack_status against the Compose v2 CLI they wrap, on the
//! six-service test stack, measured in the same run (interleaved, so drift on
//! a shared machine hits both sides alike). Run: `cargo bench --bench compose`.
//!
//! stackpilot's side is the built binary spoken to over stdio by rmcp's
//! client, one session for the whole run (as an agent holds one).
//!
//! 1. stack_status vs `docker compose ps --format json`;
//! 2. compose_up on an up stack vs `docker compose up -d --wait`;
//! 3. cold compose_up vs cold `docker compose up -d --wait` (down in between).
//!
//! Compose's `--wait` polls health every half second and the health checks run
//! every second, so single cold runs scatter by about a second: the cold figure
//! needs its fifteen runs per side, and its mean is worth reading beside the median.
//!
//! Without an engine it prints why and exits 0 (under CI=true it fails).
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_stackpilot");

#[derive(Clone)]
struct Bench;
impl ClientHandler for Bench {
    fn get_info(&self) -> ClientConfig {
        let mut c = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("bench", "1"),
        );
        c.protocol_version = ProtocolVersion::V_2025_11_25;
        c
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn engine() -> Option<String> {
    let from_file = std::fs::read_to_string("/run/stackpilot-test/env")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("export DOCKER_HOST="))
                .map(str::to_string)
        });
    let host = std::env::var("DOCKER_HOST")
        .ok()
        .or(from_file)
        .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
    let ok = Command::new("docker")
        .env("DOCKER_HOST", &host)
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ok.then_some(host)
}

/// tests/stacks/six in a temp dir: unique project, fresh ports; removed on drop.
struct Stack {
    dir: tempfile::TempDir,
    host: String,
}

impl Stack {
    fn new(host: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/stacks/six");
        std::fs::copy(
            src.join("docker-compose.yml"),
            dir.path().join("docker-compose.yml"),
        )
        .expect("copy");
        let env = std::fs::read_to_string(src.join(".env")).expect(".env");
        let mut out = String::new();
        for line in env.lines() {
            match line.split_once('=') {
                Some((k, _)) if k.ends_with("_PORT") => {
                    let port = std::net::TcpListener::bind("127.0.0.1:0")
                        .and_then(|l| l.local_addr())
                        .map(|a| a.port())
                        .expect("port");
                    out.push_str(&format!("{k}={port}\n"));
                }
                _ => out.push_str(&format!("{line}\n")),
            }
        }
        out.push_str(&format!(
            "COMPOSE_PROJECT_NAME=spbench-six-{}\n",
            std::process::id()
        ));
        std::fs::write(dir.path().join(".env"), out).expect("write .env");
        Self {
            dir,
            host: host.to_string(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `docker compose` the way a person runs it in the stack directory.
    fn compose(&self, args: &[&str]) -> Output {
        let out = Command::new("docker")
            .env("DOCKER_HOST", &self.host)
            .arg("compose")
            .arg("--project-directory")
            .arg(self.path())
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("docker compose");
        assert!(
            out.status.success(),
            "docker compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn down(&self) {
        self.compose(&["down", "--timeout", "1"]);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .env("DOCKER_HOST", &self.host)
            .arg("compose")
            .arg("--project-directory")
            .arg(self.path())
            .args(["down", "-v", "--timeout", "1"])
            .current_dir(self.path())
            .output();
    }
}

type Client = RunningService<RoleClient, Bench>;

async fn tool(client: &Client, name: &str, args: Value) -> Value {
    let Value::Object(args) = args else {
        panic!("object")
    };
    let r = client
        .call_tool(CallToolRequestParams::new(name.to_string()).with_arguments(args))
        .await
        .expect("call");
    let out = r.structured_content.clone().expect("structured");
    assert!(!r.is_error.unwrap_or(false), "{name}: {out:#}");
    out
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn report(
    what: &str,
    ours: &mut [f64],
    theirs: &mut [f64],
    target: &str,
    met: impl Fn(f64, f64) -> bool,
) {
    let (mo, mc) = (mean(ours), mean(theirs));
    let (o, c) = (median(ours), median(theirs));
    println!(
        "{what}: stackpilot median {o:.1} ms (mean {mo:.1}), CLI median {c:.1} ms (mean {mc:.1}), ratio of medians {:.3} ({} runs each); target {target}: {}",
        o / c,
        ours.len(),
        if met(o, c) { "met" } else { "NOT met" }
    );
}

async fn run(host: &str, quick: bool) {
    let stack = Stack::new(host);
    let path = stack.path().to_path_buf();
    let host_env = host.to_string();
    let transport = TokioChildProcess::new(tokio::process::Command::new(BIN).configure(|c| {
        c.args(["serve", "--stack"])
            .arg(&path)
            .env("DOCKER_HOST", &host_env)
            .env("STACKPILOT_LOG", "warn");
    }))
    .expect("spawn");
    let client = Bench
        .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
        .await
        .expect("connect");

    // 3. Cold: nothing exists, then everything healthy.
    let cold_runs = if quick { 1 } else { 15 };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..cold_runs {
        for side in [i % 2, 1 - i % 2] {
            stack.down();
            let t = Instant::now();
            if side == 0 {
                let out = tool(&client, "compose_up", json!({"wait_timeout_s": 120})).await;
                assert_eq!(out["changes"], 6, "{out:#}");
                ours.push(ms(t));
            } else {
                stack.compose(&["up", "-d", "--wait"]);
                theirs.push(ms(t));
            }
        }
    }
    report(
        "cold up (6 services)",
        &mut ours,
        &mut theirs,
        "adds at most 5 %",
        |o, c| o <= c * 1.05,
    );

    // 2. Already up: nothing to do.
    let warm_runs = if quick { 2 } else { 9 };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..warm_runs {
        for side in [i % 2, 1 - i % 2] {
            let t = Instant::now();
            if side == 0 {
                let out = tool(&client, "compose_up", json!({})).await;
                assert_eq!(out["changes"], 0, "{out:#}");
                ours.push(ms(t));
            } else {
                stack.compose(&["up", "-d", "--wait"]);
                theirs.push(ms(t));
            }
        }
    }
    report(
        "up on an up stack",
        &mut ours,
        &mut theirs,
        "at most 1.2x",
        |o, c| o <= c * 1.2,
    );

    // 1. Status.
    let status_runs = if quick { 5 } else { 41 };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..status_runs {
        for side in [i % 2, 1 - i % 2] {
            let t = Instant::now();
            if side == 0 {
                let out = tool(&client, "stack_status", json!({})).await;
                assert_eq!(out["counts"]["healthy"], 6, "{out:#}");
                ours.push(ms(t));
            } else {
                stack.compose(&["ps", "--format", "json"]);
                theirs.push(ms(t));
            }
        }
    }
    report(
        "stack_status vs docker compose ps --format json",
        &mut ours,
        &mut theirs,
        "at most 50 ms and at most half the CLI",
        |o, c| o <= 50.0 && o <= c / 2.0,
    );
    let _ = client.cancel().await;
    drop(stack);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let Some(host) = engine() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no Docker engine answers; scripts/test-env.sh must start one under CI"
        );
        println!("skipped: no Docker engine (run scripts/test-env.sh to start one)");
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(run(&host, quick));
}
