//! health benchmark (issue: health and recover). Run: `cargo bench --bench health`
//! (needs the test engine: scripts/test-env.sh). Without `--bench` it runs a
//! quick pass (`cargo test --benches`).
//!
//! On tests/stacks/six (six healthy busybox httpd services, each with a
//! Docker health check and one published port), over one stdio MCP session:
//! 1. health without deep: median round trip (target <= 50 ms);
//! 2. health with deep (an HTTP GET per service as well): median round trip
//!    (target <= 300 ms).
//!
//! For each, from the report's own `timings`, the server-side wall time
//! against the sum of every probe's time and the slowest probe: the probes
//! run concurrently, so the wall time follows the slowest, not the sum.
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::docker::{engine, DockerStack};
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{ClientHandler, ServiceExt};
use serde_json::{json, Value};

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
    v[v.len() / 2]
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn measure(
    client: &rmcp::service::RunningService<rmcp::service::RoleClient, Bench>,
    deep: bool,
    runs: usize,
) {
    let args = json!({"deep": deep})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut round_trip = Vec::new();
    let mut wall = Vec::new();
    let mut sum = Vec::new();
    let mut slowest = Vec::new();
    let mut probes = 0;
    for i in 0..runs + 3 {
        let started = Instant::now();
        let r = client
            .call_tool(CallToolRequestParams::new("health").with_arguments(args.clone()))
            .await
            .expect("health answered");
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let out: Value = r.structured_content.expect("structured");
        assert_eq!(out["counts"]["healthy"], 6, "six healthy services: {out:#}");
        if i < 3 {
            continue; // warm-up: the compose model and `docker info` are cached after the first call
        }
        round_trip.push(ms);
        let t = &out["timings"];
        wall.push(t["wall_ms"].as_f64().unwrap_or(0.0));
        sum.push(t["probes_sum_ms"].as_f64().unwrap_or(0.0));
        slowest.push(t["slowest_probe_ms"].as_f64().unwrap_or(0.0));
        probes = t["probes"].as_u64().unwrap_or(0);
    }
    let label = if deep { "health deep" } else { "health" };
    let target = if deep { 300.0 } else { 50.0 };
    let m = median(&mut round_trip);
    println!(
        "{label:<12} round trip over stdio: median {m:.1} ms, p90 {:.1} ms (n={runs}, target <= {target} ms: {})",
        pct(&mut round_trip, 0.9),
        if m <= target { "met" } else { "MISSED" }
    );
    println!(
        "{label:<12} server wall {:.1} ms vs sum of {probes} probe times {:.1} ms (slowest probe {:.1} ms): sum/wall = {:.1}x",
        median(&mut wall),
        median(&mut sum),
        median(&mut slowest),
        median(&mut sum) / median(&mut wall).max(0.001)
    );
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("six", &host);
    let up = stack.compose(&["up", "-d", "--wait"]);
    assert!(
        up.status.success(),
        "compose up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let dir = stack.path().to_path_buf();
        let transport = TokioChildProcess::new(
            tokio::process::Command::new(common::bin()).configure(|cmd| {
                cmd.arg("serve").arg("--stack").arg(&dir);
                cmd.env("DOCKER_HOST", &host)
                    .env("OLLAMA_HOST", "http://127.0.0.1:9")
                    .env("STACKPILOT_LOG", "warn");
            }),
        )
        .expect("spawn");
        let client = Bench.serve(transport).await.expect("connect");
        let runs = if quick { 5 } else { 100 };
        measure(&client, false, runs).await;
        measure(&client, true, runs).await;
        let _ = client.cancel().await;
    });
}
