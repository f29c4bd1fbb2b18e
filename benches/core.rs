//! Server-core benchmarks (issue: server core). Run: `cargo bench --bench core`.
//! Prints medians; the README records the figures with the machine they came from.
//!
//! 1. cold start: spawn `stackpilot serve` (stdio) -> tools/list reply, and the
//!    process's peak RSS (VmHWM) at that point, alternated run by run with the
//!    Go kubernetes-mcp-server 0.0.67 (npm, via scripts/peers/mcp-tools.sh) so
//!    the ratio is taken under the same load;
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

/// Spawns `program args` (an MCP server over stdio), sends initialize,
/// initialized and tools/list, and returns (ms to the tools/list reply, peak
/// RSS in MB, tools listed).
fn one_cold_start(
    program: &std::path::Path,
    args: &[String],
    env: &[(&str, &str)],
) -> (f64, f64, usize) {
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-11-25","capabilities":{{}},"clientInfo":{{"name":"bench","version":"1"}}}}}}"#).expect("write");
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).expect("read") > 0,
            "server exited before initialize"
        );
        if line.contains(r#""id":1"#) {
            break;
        }
    }
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .expect("write");
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list"}}"#).expect("write");
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).expect("read") > 0,
            "server exited before tools/list"
        );
        if line.contains(r#""id":2"#) {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    let tools = serde_json::from_str::<serde_json::Value>(&line)
        .ok()
        .and_then(|v| v["result"]["tools"].as_array().map(Vec::len))
        .unwrap_or(0);
    let rss = vm_hwm_kb(child.id()) as f64 / 1024.0;
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    (elapsed, rss, tools)
}

struct ColdStart {
    label: String,
    times: Vec<f64>,
    rss: Vec<f64>,
    tools: usize,
}

impl ColdStart {
    fn print(&mut self) {
        println!(
            "cold start {} (spawn -> tools/list reply, stdio, {} runs, {} tools): median {:.2} ms, p90 {:.2} ms; peak RSS median {:.1} MB, max {:.1} MB",
            self.label,
            self.times.len(),
            self.tools,
            median(&mut self.times),
            pct(&mut self.times, 0.9),
            median(&mut self.rss),
            self.rss.iter().cloned().fold(0.0, f64::max)
        );
    }
}

/// The Go kubernetes-mcp-server from npm (scripts/peers/mcp-tools.sh), for
/// scale: the binary and a minimal kubeconfig it needs to start (it never
/// reaches the API server for initialize and tools/list).
fn k8s_mcp_server(dir: &std::path::Path) -> Option<(std::path::PathBuf, Vec<String>)> {
    let bin = std::env::var("STACKPILOT_K8S_MCP_SERVER_BIN")
        .ok()
        .or_else(|| {
            let out = Command::new("bash")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/scripts/peers/mcp-tools.sh"
                ))
                .arg("env")
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
                l.strip_prefix("export STACKPILOT_K8S_MCP_SERVER_BIN=")
                    .map(|v| v.trim_matches('\'').to_string())
            })
        });
    let Some(bin) = bin.filter(|b| std::path::Path::new(b).exists()) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: kubernetes-mcp-server is not installed (scripts/peers/mcp-tools.sh install)"
        );
        println!("cold start kubernetes-mcp-server: skipped (not installed; scripts/peers/mcp-tools.sh install)");
        return None;
    };
    let kubeconfig = dir.join("kubeconfig.yaml");
    std::fs::write(
        &kubeconfig,
        "clusters: [{name: none, cluster: {server: \"http://127.0.0.1:1\"}}]\n\
         contexts: [{name: none, context: {cluster: none}}]\n\
         current-context: none\n",
    )
    .expect("kubeconfig");
    Some((
        bin.into(),
        vec![
            "--kubeconfig".into(),
            kubeconfig.to_string_lossy().into_owned(),
        ],
    ))
}

/// stackpilot and kubernetes-mcp-server, alternated run by run so both see
/// the same machine load.
fn cold_start(runs: usize) {
    let dir = stack();
    let sp_args: Vec<String> = vec![
        "serve".into(),
        "--stack".into(),
        dir.path().to_string_lossy().into_owned(),
    ];
    let k8s = k8s_mcp_server(dir.path());
    let mut sp = ColdStart {
        label: "stackpilot".into(),
        times: Vec::new(),
        rss: Vec::new(),
        tools: 0,
    };
    let mut k = ColdStart {
        label: "kubernetes-mcp-server 0.0.67".into(),
        times: Vec::new(),
        rss: Vec::new(),
        tools: 0,
    };
    for i in 0..runs {
        let order = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for ours in order {
            if ours {
                let (t, r, n) = one_cold_start(
                    std::path::Path::new(BIN),
                    &sp_args,
                    &[("STACKPILOT_LOG", "warn")],
                );
                assert!(n >= 16, "stackpilot listed {n} tools");
                sp.times.push(t);
                sp.rss.push(r);
                sp.tools = n;
            } else if let Some((bin, args)) = &k8s {
                let (t, r, n) = one_cold_start(bin, args, &[]);
                assert!(n > 0, "kubernetes-mcp-server listed no tools");
                k.times.push(t);
                k.rss.push(r);
                k.tools = n;
            }
        }
    }
    sp.print();
    if !k.times.is_empty() {
        k.print();
        let (a, b) = (median(&mut sp.times), median(&mut k.times));
        let (ra, rb) = (median(&mut sp.rss), median(&mut k.rss));
        println!(
            "ratio stackpilot / kubernetes-mcp-server: time {:.3} x, peak RSS {:.3} x",
            a / b,
            ra / rb
        );
    }
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
