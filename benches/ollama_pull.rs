//! pull_model against `ollama pull` (issue 11, performance). Run:
//! `cargo bench --bench ollama_pull` (needs scripts/peers/ollama.sh start:
//! the real Ollama 0.11.4 and the registry with SmolLM2-135M; no Docker).
//!
//! One real `ollama serve` on loopback; the same model from the same local
//! registry (`127.0.0.1:PORT/library/smollm2:135m`, 98.4 MB in four blobs)
//! into its store, emptied before every run (DELETE, then the blobs directory
//! checked empty). Alternating, five runs each:
//!   (a) `ollama pull --insecure NAME`, the real CLI, wall time of the process;
//!   (b) stackpilot's pull_model over MCP stdio (the release binary, a fresh
//!       server per run, a progress token), wall time of the call: name check,
//!       /api/version, the fit preflight (hardware detection), the plan, the
//!       NDJSON stream with its progress notifications, /api/tags and
//!       /api/show afterwards.
//! Throughput = the model's bytes / wall time; the ratio of the medians. Then
//! stackpilot's peak RSS (VmHWM of its process when the pull returned).
#[path = "../tests/common/ollama_peers.rs"]
mod peers;

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation,
    ProgressNotificationParam, ProtocolVersion,
};
use rmcp::service::{NotificationContext, RoleClient};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt};
use serde_json::{json, Value};

const STACKPILOT: &str = env!("CARGO_BIN_EXE_stackpilot");
const RUNS: usize = 5;

#[derive(Clone, Default)]
struct Counter(Arc<AtomicU64>);
impl ClientHandler for Counter {
    fn get_info(&self) -> ClientConfig {
        let mut c = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("bench", "1"),
        );
        c.protocol_version = ProtocolVersion::V_2025_11_25;
        c
    }
    async fn on_progress(
        &self,
        _p: ProgressNotificationParam,
        _c: NotificationContext<RoleClient>,
    ) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmHWM:")
                    .map(|v| v.trim().trim_end_matches(" kB").trim().to_string())
            })
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Removes the model and checks the store is empty again.
async fn empty_store(ollama: &peers::HostOllama, model: &str) {
    let _ = reqwest::Client::new()
        .delete(format!("{}/api/delete", ollama.url))
        .json(&json!({"model": model}))
        .send()
        .await;
    let blobs = ollama.models_dir().join("blobs");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
        if left == 0 && ollama.names("/api/tags").await.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} blobs left after the delete"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn cli_pull(peers: &peers::OllamaPeers, ollama: &peers::HostOllama, model: &str) -> f64 {
    let mut cmd = tokio::process::Command::from(ollama.cli(peers));
    cmd.args(["pull", "--insecure", model])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let started = Instant::now();
    let status = cmd.status().await.expect("ollama pull");
    let secs = started.elapsed().as_secs_f64();
    assert!(status.success(), "ollama pull failed");
    secs
}

/// One pull through a fresh stackpilot server: (seconds, VmHWM kB, notifications).
async fn stackpilot_pull(url: &str, model: &str) -> (f64, u64, u64) {
    let stack = tempfile::tempdir().expect("stack");
    std::fs::write(stack.path().join(".env"), "").expect(".env");
    let dir = stack.path().to_path_buf();
    let url = url.to_string();
    let (transport, _) =
        TokioChildProcess::builder(tokio::process::Command::new(STACKPILOT).configure(|c| {
            c.arg("serve").arg("--stack").arg(&dir);
            c.env("OLLAMA_HOST", &url)
                .env("DOCKER_HOST", "unix:///tmp/stackpilot-bench-no-docker.sock")
                .env("STACKPILOT_LOG", "warn");
        }))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn stackpilot");
    let pid = transport.id().expect("pid");
    let counter = Counter::default();
    let seen = counter.0.clone();
    let client = counter
        .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
        .await
        .expect("connect");
    let Value::Object(args) = json!({"model": model, "insecure": true}) else {
        unreachable!()
    };
    let started = Instant::now();
    let r = client
        .call_tool(CallToolRequestParams::new("pull_model").with_arguments(args))
        .await
        .expect("call");
    let secs = started.elapsed().as_secs_f64();
    assert!(!r.is_error.unwrap_or(false), "{r:?}");
    let out = r.structured_content.expect("structured");
    assert_eq!(out["status"], "success", "{out}");
    let hwm = vm_hwm_kb(pid);
    let _ = client.cancel().await;
    (secs, hwm, seen.load(Ordering::Relaxed))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let Some(peers) = peers::ollama_peers() else {
            eprintln!("ollama_pull: the real Ollama is not prepared (scripts/peers/ollama.sh start)");
            return;
        };
        let model = peers.host_model();
        let ollama = peers::HostOllama::start(&peers, &[]).await;
        // One pull first, for the size (and to warm the page cache both sides read from).
        empty_store(&ollama, &model).await;
        cli_pull(&peers, &ollama, &model).await;
        let tags = ollama.get("/api/tags").await;
        let bytes = tags["models"][0]["size"].as_u64().expect("size");
        let (mut cli, mut sp, mut hwm, mut notes) = (Vec::new(), Vec::new(), Vec::new(), 0);
        for _ in 0..RUNS {
            empty_store(&ollama, &model).await;
            cli.push(cli_pull(&peers, &ollama, &model).await);
            empty_store(&ollama, &model).await;
            let (t, h, n) = stackpilot_pull(&ollama.url, &model).await;
            sp.push(t);
            hwm.push(h);
            notes = n;
        }
        let (c, s) = (median(&cli), median(&sp));
        let mb = bytes as f64 / 1e6;
        println!("model {model}: {bytes} bytes; {RUNS} runs each, alternating, empty store every time");
        println!("ollama pull (CLI):      {cli:.3?} s, median {c:.3} s = {:.1} MB/s", mb / c);
        println!("stackpilot pull_model:  {sp:.3?} s, median {s:.3} s = {:.1} MB/s ({notes} progress notifications in the last run)", mb / s);
        println!(
            "throughput ratio stackpilot / CLI (medians): {:.3}",
            c / s
        );
        println!(
            "stackpilot peak RSS (VmHWM) per run: {:?} kB, max {:.1} MB",
            hwm,
            *hwm.iter().max().unwrap_or(&0) as f64 / 1024.0
        );
    });
}
