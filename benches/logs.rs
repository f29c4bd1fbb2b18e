//! logs against the Compose v2 CLI it is compared with: three services
//! that have printed 100,002 lines between them (33,334 each, about 90
//! bytes a line), the last 1,000 asked for.
//!
//! - stackpilot: one `logs` call (`services: [s1, s2, s3], tail: 1000`) over
//!   stdio to the release binary, one session for the whole run (as an agent
//!   holds one): the three instances' tails read through the Engine API,
//!   merged by time, cut to the newest 1,000, redacted, as JSON;
//! - the CLI: `docker compose logs --tail 1000 s1 s2 s3` (1,000 lines per
//!   service, prefixed, not merged), its output read to the end.
//!
//! Runs alternate between the two sides. Then stackpilot's peak RSS (VmHWM
//! of the server process). Targets: within 1.5x the CLI, at most 30 MB.
//! Run: `cargo bench --bench logs` (an engine and Compose v2 are needed;
//! scripts/test-env.sh provides them). Without an engine it prints why and
//! exits 0 (under CI=true it fails).
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient};
use serde_json::{json, Value};

const LINES_PER_SERVICE: u32 = 33_334;
const TAIL: usize = 1000;

/// The binary: cargo's, or STACKPILOT_TEST_BIN (a copy taken right after the
/// build where checkouts share a target directory).
fn bin() -> String {
    std::env::var("STACKPILOT_TEST_BIN")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_stackpilot").to_string())
}

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

/// Each service prints its lines as fast as busybox awk goes, then turns
/// healthy (so `up --wait` returns once they are written) and idles.
fn compose_file(lines: u32) -> String {
    let mut out = String::from("services:\n");
    for s in ["s1", "s2", "s3"] {
        out.push_str(&format!(
            r#"  {s}:
    image: stackpilot-test/busybox:1
    pull_policy: never
    stop_grace_period: 1s
    command:
      - sh
      - -c
      - >-
        awk -v n={lines} -v s={s} 'BEGIN {{ for (i = 0; i < n; i++) printf "%s request %06d GET /api/v1/items?page=%d status=200 bytes=%d dur_ms=%d\n", s, i, i % 500, 1000 + i % 4000, i % 97 }}';
        touch /tmp/done; exec sleep 36000
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/done"]
      interval: 1s
      retries: 300
"#
        ));
    }
    out
}

struct Stack {
    dir: tempfile::TempDir,
    host: String,
}

impl Stack {
    fn new(host: &str, lines: u32) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("docker-compose.yml"), compose_file(lines))
            .expect("compose");
        std::fs::write(
            dir.path().join(".env"),
            format!("COMPOSE_PROJECT_NAME=spbench-logs-{}\n", std::process::id()),
        )
        .expect(".env");
        Self {
            dir,
            host: host.to_string(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn compose(&self, args: &[&str]) -> Output {
        let out = Command::new("docker")
            .env("DOCKER_HOST", &self.host)
            .arg("compose")
            .arg("--project-directory")
            .arg(self.path())
            .args(args)
            .current_dir(self.path())
            .stdin(Stdio::null())
            .output()
            .expect("docker compose");
        assert!(
            out.status.success(),
            "docker compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
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

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmHWM:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

type Client = RunningService<RoleClient, Bench>;

async fn logs(client: &Client) -> Value {
    let Value::Object(args) = json!({"services": ["s1", "s2", "s3"], "tail": TAIL}) else {
        unreachable!()
    };
    let r = client
        .call_tool(CallToolRequestParams::new("logs").with_arguments(args))
        .await
        .expect("call");
    let out = r.structured_content.clone().expect("structured");
    assert!(!r.is_error.unwrap_or(false), "{out:#}");
    out
}

async fn run(host: &str, quick: bool) {
    let lines = if quick { 3_334 } else { LINES_PER_SERVICE };
    let stack = Stack::new(host, lines);
    let t = Instant::now();
    stack.compose(&["up", "-d", "--wait", "--wait-timeout", "300"]);
    // The log driver may trail the process by a moment: wait for each last line.
    let last = format!("request {:06}", lines - 1);
    for s in ["s1", "s2", "s3"] {
        for _ in 0..300 {
            let o = stack.compose(&["logs", "--no-log-prefix", "--tail", "1", s]);
            if String::from_utf8_lossy(&o.stdout).contains(&last) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!(
        "{} lines from 3 services written in {:.1} s",
        3 * lines,
        t.elapsed().as_secs_f64()
    );

    let path = stack.path().to_path_buf();
    let host_env = host.to_string();
    let transport = TokioChildProcess::new(tokio::process::Command::new(bin()).configure(|c| {
        c.args(["serve", "--stack"])
            .arg(&path)
            .env("DOCKER_HOST", &host_env)
            .env("STACKPILOT_LOG", "warn");
    }))
    .expect("spawn");
    let pid = transport.id().expect("pid");
    let client = Bench
        .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
        .await
        .expect("connect");
    let rss_idle = vm_hwm_kb(pid) as f64 / 1024.0;
    // Warm-up: the first call resolves the compose model (cached afterwards,
    // as in a session) and connects to the engine.
    for _ in 0..3 {
        let out = logs(&client).await;
        assert_eq!(out["returned"], TAIL, "{}", out["notes"]);
    }
    let runs = if quick { 3 } else { 21 };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut our_bytes, mut their_bytes) = (0usize, 0usize);
    for i in 0..runs {
        for side in [i % 2, 1 - i % 2] {
            let t = Instant::now();
            if side == 0 {
                let out = logs(&client).await;
                ours.push(t.elapsed().as_secs_f64() * 1000.0);
                let lines = out["lines"].as_array().expect("lines");
                assert_eq!(lines.len(), TAIL);
                assert!(lines
                    .last()
                    .and_then(|l| l["untrusted_output"].as_str())
                    .is_some_and(|l| l.contains(&last)));
                our_bytes = serde_json::to_vec(&out).map(|v| v.len()).unwrap_or(0);
            } else {
                let o = stack.compose(&["logs", "--tail", &TAIL.to_string(), "s1", "s2", "s3"]);
                theirs.push(t.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 3 * TAIL);
                their_bytes = o.stdout.len();
            }
        }
    }
    let rss = vm_hwm_kb(pid) as f64 / 1024.0;
    let (o, c) = (median(&mut ours), median(&mut theirs));
    println!(
        "logs, last {TAIL} of {} lines from 3 services: stackpilot median {o:.1} ms (structured JSON, {our_bytes} bytes, {TAIL} merged lines), \
         docker compose logs --tail {TAIL} median {c:.1} ms ({their_bytes} bytes, {} lines); ratio {:.3} ({runs} runs each); target at most 1.5x: {}",
        3 * lines,
        3 * TAIL,
        o / c,
        if o <= c * 1.5 { "met" } else { "NOT met" }
    );
    println!(
        "stackpilot peak RSS (VmHWM): {rss:.1} MB after the runs ({rss_idle:.1} MB at start); target at most 30 MB: {}",
        if rss <= 30.0 { "met" } else { "NOT met" }
    );
    if quick {
        println!("(quick run: {lines} lines per service, {runs} runs; `cargo bench --bench logs` for the figures)");
    }
    let _ = client.cancel().await;
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
