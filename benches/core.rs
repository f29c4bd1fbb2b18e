//! Server-core benchmarks (issue: server core). Run: `cargo bench --bench core`.
//! Prints medians; the README records the figures with the machine they came from.
//!
//! 1. cold start: spawn `stackpilot serve` (stdio) -> tools/list reply, and the
//!    process's peak RSS (VmHWM) at that point;
//! 2. detect_hardware warm, over one stdio session;
//! 3. 50 concurrent Streamable HTTP clients calling detect_hardware for a fixed time.
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt};

const BIN: &str = env!("CARGO_BIN_EXE_stackpilot");

#[derive(Clone)]
struct Bench(ProtocolVersion);
impl ClientHandler for Bench {
    fn get_info(&self) -> ClientConfig {
        let mut c = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("bench", "1"),
        );
        c.protocol_version = self.0.clone();
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

fn stack() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("docker-compose.yml"), "services: {}\n").expect("compose");
    std::fs::write(dir.path().join(".env"), "").expect(".env");
    dir
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

fn cold_start(runs: usize) {
    let dir = stack();
    let mut times = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let mut child = Command::new(BIN)
            .args(["serve", "--stack"])
            .arg(dir.path())
            .env("STACKPILOT_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        writeln!(stdin, r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-11-25","capabilities":{{}},"clientInfo":{{"name":"bench","version":"1"}}}}}}"#).expect("write");
        let mut line = String::new();
        out.read_line(&mut line).expect("init reply");
        writeln!(
            stdin,
            r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
        )
        .expect("write");
        writeln!(stdin, r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list"}}"#).expect("write");
        line.clear();
        out.read_line(&mut line).expect("tools/list reply");
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        assert!(
            line.contains("detect_hardware"),
            "tools/list answered: {line}"
        );
        rss.push(vm_hwm_kb(child.id()) as f64 / 1024.0);
        drop(stdin);
        let _ = child.kill();
        let _ = child.wait();
        times.push(elapsed);
    }
    println!(
        "cold start (spawn -> tools/list reply, stdio, {runs} runs): median {:.2} ms, p90 {:.2} ms; peak RSS median {:.1} MB, max {:.1} MB",
        median(&mut times),
        pct(&mut times, 0.9),
        median(&mut rss),
        rss.iter().cloned().fold(0.0, f64::max)
    );
}

async fn warm_detect(calls: usize) {
    let dir = stack();
    let path = dir.path().to_path_buf();
    let transport = TokioChildProcess::new(tokio::process::Command::new(BIN).configure(|c| {
        c.args(["serve", "--stack"])
            .arg(&path)
            .env("STACKPILOT_LOG", "warn");
    }))
    .expect("spawn");
    let client = Bench(ProtocolVersion::V_2025_11_25)
        .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
        .await
        .expect("connect");
    client
        .call_tool(CallToolRequestParams::new("detect_hardware"))
        .await
        .expect("warm-up");
    let mut times = Vec::new();
    for _ in 0..calls {
        let t = Instant::now();
        let r = client
            .call_tool(CallToolRequestParams::new("detect_hardware"))
            .await
            .expect("call");
        assert!(!r.is_error.unwrap_or(false));
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "detect_hardware warm (stdio round trip, {calls} calls): median {:.3} ms, p90 {:.3} ms",
        median(&mut times),
        pct(&mut times, 0.9)
    );
    let _ = client.cancel().await;
}

async fn http_load(clients: usize, secs: u64, version: ProtocolVersion) {
    let dir = stack();
    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--http", "127.0.0.1:0", "--stack"])
        .arg(dir.path())
        .env("STACKPILOT_LOG", "warn")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let url = loop {
        let line = lines
            .next_line()
            .await
            .expect("read")
            .expect("server exited");
        if let Some(rest) = line.strip_prefix("stackpilot listening on ") {
            break rest.trim().to_string();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut conns = Vec::new();
    for _ in 0..clients {
        let lifecycle = if version >= ProtocolVersion::V_2026_07_28 {
            ClientLifecycleMode::Discover {
                preferred_versions: vec![version.clone()],
            }
        } else {
            ClientLifecycleMode::Initialize
        };
        let c = Bench(version.clone())
            .serve_with_lifecycle(
                StreamableHttpClientTransport::from_uri(url.clone()),
                lifecycle,
            )
            .await
            .expect("connect");
        c.call_tool(CallToolRequestParams::new("detect_hardware"))
            .await
            .expect("warm-up");
        conns.push(c);
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in conns {
        let (ok, errors) = (ok.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match c
                    .call_tool(CallToolRequestParams::new("detect_hardware"))
                    .await
                {
                    Ok(r) if !r.is_error.unwrap_or(false) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
            let _ = c.cancel().await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = ok.load(Ordering::Relaxed);
    println!(
        "HTTP load ({clients} clients, {version}, {secs} s): {n} calls, {:.0} calls/s, {} errors",
        n as f64 / elapsed,
        errors.load(Ordering::Relaxed)
    );
    let _ = child.kill().await;
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    cold_start(if quick { 3 } else { 50 });
    rt.block_on(warm_detect(if quick { 20 } else { 1000 }));
    rt.block_on(http_load(
        if quick { 4 } else { 50 },
        if quick { 1 } else { 5 },
        ProtocolVersion::V_2026_07_28,
    ));
    rt.block_on(http_load(
        if quick { 4 } else { 50 },
        if quick { 1 } else { 5 },
        ProtocolVersion::V_2025_11_25,
    ));
}
