//! pull_model benchmark (issue 6). Run: `cargo bench --bench ollama`.
//!
//! A 40-layer model is pulled from the Ollama stand-in on loopback, where the
//! stream's pace is Ollama's own (a line per layer every 60 ms), so the
//! difference between
//!   (a) a direct reqwest read of the same /api/pull stream, and
//!   (b) stackpilot's pull_model over stdio, called with a progress token
//!       (name check, /api/version, preflight, plan, the stream with rate-
//!       limited progress notifications, /api/tags and /api/show afterwards),
//! is what stackpilot adds. Each is run 3 times, interleaved; medians are
//! compared. Then stackpilot's peak RSS (VmHWM) after pulling a small model
//! (40 × 10 MB) and a huge one (40 × 16 GiB = 640 GiB) shows memory does not
//! follow the model's size.
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
use tokio::io::AsyncBufReadExt;

const STACKPILOT: &str = env!("CARGO_BIN_EXE_stackpilot");
const STANDIN: &str = env!("CARGO_BIN_EXE_ollama-standin");
const LAYERS: u64 = 40;
/// Ticks (60 ms each) a layer takes: 40 layers ≈ 10 s of stream.
const TICKS_PER_LAYER: u64 = 4;
const RUNS: usize = 3;

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

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn model(name: &str, layer_size: u64) -> Value {
    // Rate such that each layer takes exactly TICKS_PER_LAYER ticks of 60 ms.
    let rate = layer_size * 1000 / (60 * TICKS_PER_LAYER);
    json!({
        "name": name,
        "layer_count": LAYERS,
        "layer_size": layer_size,
        "rate_bytes_per_sec": rate,
        "model_info": {
            "general.architecture": "llama", "llama.block_count": 16, "llama.context_length": 8192,
            "llama.embedding_length": 2048, "llama.attention.head_count": 32,
            "llama.attention.head_count_kv": 8
        }
    })
}

async fn start_standin(dir: &std::path::Path) -> (tokio::process::Child, String) {
    let cat = dir.join("catalogue.json");
    let models = json!({"models": [model("small:40l", 10_000_000), model("huge:40l", 16 << 30)]});
    std::fs::write(&cat, models.to_string()).expect("catalogue");
    let mut child = tokio::process::Command::new(STANDIN)
        .args(["--listen", "127.0.0.1:0", "--catalogue"])
        .arg(&cat)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn stand-in");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut url = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(u) = line.strip_prefix("ollama-standin listening on ") {
            url = u.trim().to_string();
            break;
        }
    }
    assert!(!url.is_empty(), "stand-in did not start");
    (child, url)
}

async fn reset(http: &reqwest::Client, url: &str, name: &str) {
    let _ = http
        .delete(format!("{url}/api/delete"))
        .json(&json!({"model": name}))
        .send()
        .await;
}

/// (a): POST /api/pull and read every line; seconds and line count.
async fn direct(http: &reqwest::Client, url: &str, name: &str) -> (f64, usize) {
    reset(http, url, name).await;
    let started = Instant::now();
    let mut resp = http
        .post(format!("{url}/api/pull"))
        .json(&json!({"model": name}))
        .send()
        .await
        .expect("pull");
    let mut lines = 0;
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        lines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    (started.elapsed().as_secs_f64(), lines)
}

struct Stackpilot {
    client: rmcp::service::RunningService<RoleClient, Counter>,
    pid: u32,
    seen: Arc<AtomicU64>,
    _stack: tempfile::TempDir,
}

async fn stackpilot(url: &str) -> Stackpilot {
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
    Stackpilot {
        client,
        pid,
        seen,
        _stack: stack,
    }
}

/// (b): pull_model through stackpilot; seconds and notifications received.
async fn through_stackpilot(
    sp: &Stackpilot,
    http: &reqwest::Client,
    url: &str,
    name: &str,
) -> (f64, u64) {
    reset(http, url, name).await;
    let before = sp.seen.load(Ordering::Relaxed);
    let Value::Object(args) = json!({"model": name}) else {
        unreachable!()
    };
    let started = Instant::now();
    let r = sp
        .client
        .call_tool(CallToolRequestParams::new("pull_model").with_arguments(args))
        .await
        .expect("call");
    let secs = started.elapsed().as_secs_f64();
    assert!(!r.is_error.unwrap_or(false), "{r:?}");
    let out = r.structured_content.expect("structured");
    assert_eq!(out["status"], "success");
    assert_eq!(out["layers"], LAYERS);
    tokio::time::sleep(Duration::from_millis(300)).await;
    (secs, sp.seen.load(Ordering::Relaxed) - before)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tmp");
        let (_standin, url) = start_standin(dir.path()).await;
        let http = reqwest::Client::builder().no_proxy().build().expect("http");

        for (name, label) in [("small:40l", "40 x 10 MB"), ("huge:40l", "40 x 16 GiB")] {
            let sp = stackpilot(&url).await;
            let (mut d, mut s) = (Vec::new(), Vec::new());
            let (mut lines, mut notes) = (0, 0);
            for _ in 0..RUNS {
                let (t, l) = direct(&http, &url, name).await;
                d.push(t);
                lines = l;
                let (t, n) = through_stackpilot(&sp, &http, &url, name).await;
                s.push(t);
                notes = n;
            }
            let (dm, sm) = (median(&mut d), median(&mut s));
            println!(
                "pull {name} ({label}): direct read median {dm:.3} s ({lines} NDJSON lines); \
                 stackpilot pull_model median {sm:.3} s ({notes} progress notifications); \
                 overhead {:+.2} % ({:+.0} ms)",
                (sm / dm - 1.0) * 100.0,
                (sm - dm) * 1000.0
            );
            println!(
                "stackpilot peak RSS (VmHWM) after {RUNS} pulls of {name}: {:.1} MB",
                vm_hwm_kb(sp.pid) as f64 / 1024.0
            );
            let _ = sp.client.cancel().await;
        }
    });
}
