//! The HTTP edge under normal and hostile load. Run: `cargo bench --bench http_edge`.
//!
//! 1. latency, one keep-alive connection, 2,000 sequential requests each:
//!    `ping` (`server/discover` statelessly: 2026-07-28 has no stateless ping)
//!    and `tools/call select_profile` inside a 2025-11-25 session and
//!    statelessly (2026-07-28), side by side, and the Go kubernetes-mcp-server
//!    0.0.67's session `ping` in the same run (when its binary is found:
//!    STACKPILOT_K8S_MCP_SERVER_BIN, from scripts/peers/mcp-tools.sh);
//! 2. throughput: 50 clients for 5 s, `ping` on one shared session and
//!    stateless;
//! 3. tasks/get: 50 clients polling one task for 5 s (stateless 2026-07-28);
//! 4. flood: 200 idle connections held open plus 10,000 `initialize` calls
//!    at 1,000/s, while 50 clients with sessions opened before the flood call
//!    `tools/list`; the server's peak RSS (VmHWM) and their calls per second
//!    against an unloaded run of the same clients.
//!
//! Every request goes to 127.0.0.1; every loop is bounded in count and time.
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_stackpilot");

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
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

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stackpilot(stack: &std::path::Path, extra: &[&str]) -> Server {
    let mut child = Command::new(BIN)
        .env("STACKPILOT_LOG", "error")
        .env("DOCKER_HOST", "unix:///tmp/stackpilot-bench-no-docker.sock")
        .env("OLLAMA_HOST", "http://127.0.0.1:9")
        .args(["serve", "--http", "127.0.0.1:0", "--stack"])
        .arg(stack)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stackpilot");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let url = loop {
        let line = lines.next().expect("a line").expect("read");
        if let Some(u) = line.strip_prefix("stackpilot listening on ") {
            break u.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Server { child, url }
}

fn k8s_mcp_server(dir: &std::path::Path) -> Option<Server> {
    let bin = std::env::var("STACKPILOT_K8S_MCP_SERVER_BIN").ok().or_else(|| {
        let p = "/var/cache/stackpilot-peers/k8s-mcp-server-0.0.67/node_modules/kubernetes-mcp-server-linux-amd64/bin/kubernetes-mcp-server-linux-amd64";
        std::path::Path::new(p).exists().then(|| p.to_string())
    })?;
    let kubeconfig = dir.join("kubeconfig.yaml");
    std::fs::write(
        &kubeconfig,
        "clusters: [{name: none, cluster: {server: \"http://127.0.0.1:1\"}}]\ncontexts: [{name: none, context: {cluster: none}}]\ncurrent-context: none\n",
    )
    .ok()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new(bin)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--port", &port.to_string(), "--bind-address", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let url = format!("http://127.0.0.1:{port}/mcp");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(Server { child, url });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .build()
        .expect("client")
}

const META: &str = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}"#;

async fn post(
    c: &reqwest::Client,
    url: &str,
    session: Option<&str>,
    method: &str,
    body: String,
) -> Result<(reqwest::header::HeaderMap, String), String> {
    let mut req = c
        .post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("Mcp-Method", method);
    req = match session {
        Some(s) => req
            .header("Mcp-Session-Id", s)
            .header("MCP-Protocol-Version", "2025-11-25"),
        None => req.header("MCP-Protocol-Version", "2026-07-28"),
    };
    // 2026-07-28 routes a request by its Mcp-Name header: a tools/call's
    // tool name, a tasks/* call's task id.
    let name_from = match method {
        "tools/call" => Some("name"),
        m if m.starts_with("tasks/") => Some("taskId"),
        _ => None,
    };
    if let (None, Some(field)) = (session, name_from) {
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        if let Some(name) = v["params"][field].as_str() {
            req = req.header("Mcp-Name", name);
        }
    }
    let r = req.body(body).send().await.map_err(|e| e.to_string())?;
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {text}"));
    }
    Ok((headers, text))
}

/// Opens a 2025-11-25 session; its id.
async fn session(c: &reqwest::Client, url: &str) -> Result<String, String> {
    let body = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}});
    let r = c
        .post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(r.status().to_string());
    }
    let id = r
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or("no session id")?;
    let _ = r.text().await;
    let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let _ = c
        .post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("Mcp-Session-Id", &id)
        .header("MCP-Protocol-Version", "2025-11-25")
        .body(note)
        .send()
        .await;
    Ok(id)
}

const TASKS_META: &str = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"},"io.modelcontextprotocol/clientCapabilities":{"extensions":{"io.modelcontextprotocol/tasks":{}}}}"#;

/// A long tool called by a client that declares tasks: answered with a task
/// handle (the task itself ends at once: there is no such backup).
fn task_call() -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"verify_backup","arguments":{{"backup_id":"20260101T000000Z"}},{TASKS_META}}}}}"#
    )
}

/// The cheapest request of each era: `ping` in a 2025-11-25 session;
/// `server/discover` statelessly (2026-07-28 has no stateless `ping`).
fn ping(stateless: bool) -> (&'static str, String) {
    if stateless {
        (
            "server/discover",
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{{{META}}}}}"#),
        )
    } else {
        (
            "ping",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.to_string(),
        )
    }
}

fn select(stateless: bool) -> String {
    let args = r#""name":"select_profile","arguments":{"model":"llama3.1:8b","hardware":{"nvidia_vram_bytes":17179869184,"memory_total_bytes":68719476736,"memory_available_bytes":60000000000,"logical_cores":16}}"#;
    if stateless {
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{{args},{META}}}}}"#)
    } else {
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{{args}}}}}"#)
    }
}

/// Sequential requests on one keep-alive connection: (p50, p90) in ms.
async fn latency(
    url: &str,
    session: Option<&str>,
    method: &str,
    body: &str,
    n: usize,
) -> (f64, f64) {
    let c = client();
    let mut v = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let t = Instant::now();
        post(&c, url, session, method, body.to_string())
            .await
            .expect("request");
        if i >= 20 {
            v.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    (pct(&mut v, 0.5), pct(&mut v, 0.9))
}

/// `clients` tasks for `secs`: calls per second, errors.
async fn throughput(
    url: &str,
    session: Option<String>,
    method: &str,
    body: String,
    clients: usize,
    secs: u64,
) -> (f64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let ids = Arc::new(AtomicU64::new(1_000));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (ok, bad, url, session, body, method) = (
            ok.clone(),
            bad.clone(),
            url.to_string(),
            session.clone(),
            body.clone(),
            method.to_string(),
        );
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            while Instant::now() < deadline {
                // Every request of a session needs its own id (JSON-RPC).
                let n = ids.fetch_add(1, Ordering::Relaxed);
                let body = body.replacen(r#""id":1,"#, &format!(r#""id":{n},"#), 1);
                match post(&c, &url, session.as_deref(), &method, body).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => bad.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (
        ok.load(Ordering::Relaxed) as f64 / secs as f64,
        bad.load(Ordering::Relaxed),
    )
}

/// 50 clients, each on its own session, calling tools/list for `secs`.
async fn listers(url: &str, sessions: &[String], secs: u64) -> (f64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for s in sessions {
        let (ok, bad, url, s) = (ok.clone(), bad.clone(), url.to_string(), s.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
            while Instant::now() < deadline {
                match post(&c, &url, Some(&s), "tools/list", body.to_string()).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => bad.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (
        ok.load(Ordering::Relaxed) as f64 / secs as f64,
        bad.load(Ordering::Relaxed),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let stack = tempfile::tempdir().expect("tempdir");
    std::fs::write(stack.path().join("docker-compose.yml"), "services: {}\n").expect("compose");
    std::fs::write(stack.path().join(".env"), "").expect(".env");
    let server = stackpilot(
        stack.path(),
        &[
            "--max-sessions",
            "1024",
            "--max-sessions-per-client",
            "1024",
        ],
    );
    let url = server.url.clone();
    let c = client();
    let sid = session(&c, &url).await.expect("session");

    // `cargo test` runs this once, small, to check that it works; `cargo
    // bench` measures.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (n, secs, flood_n) = if quick {
        (50, 1, 500u64)
    } else {
        (2000, 5, 10_000u64)
    };
    println!("1. latency, one keep-alive connection, {n} sequential requests (p50 / p90 ms):");
    let (m, body) = ping(false);
    let (a, b) = latency(&url, Some(&sid), m, &body, n).await;
    println!("   stackpilot ping, 2025-11-25 session:        {a:.3} / {b:.3}");
    let (m, body) = ping(true);
    let (a2, b2) = latency(&url, None, m, &body, n).await;
    println!("   stackpilot server/discover, stateless:      {a2:.3} / {b2:.3}");
    let (a3, b3) = latency(&url, Some(&sid), "tools/call", &select(false), n).await;
    println!("   stackpilot select_profile, session:         {a3:.3} / {b3:.3}");
    let (a4, b4) = latency(&url, None, "tools/call", &select(true), n).await;
    println!("   stackpilot select_profile, stateless:       {a4:.3} / {b4:.3}");
    let kdir = tempfile::tempdir().expect("tempdir");
    match (!quick).then(|| k8s_mcp_server(kdir.path())).flatten() {
        Some(k) => {
            let kc = client();
            match session(&kc, &k.url).await {
                Ok(ks) => {
                    let (m, body) = ping(false);
                    let (ka, kb) = latency(&k.url, Some(&ks), m, &body, n).await;
                    println!("   kubernetes-mcp-server 0.0.67 ping, session: {ka:.3} / {kb:.3}");
                }
                Err(e) => println!("   kubernetes-mcp-server: no session ({e})"),
            }
        }
        None if quick => println!("   kubernetes-mcp-server: left out of a quick run"),
        None => println!(
            "   kubernetes-mcp-server: binary not found (scripts/peers/mcp-tools.sh install)"
        ),
    }

    println!("2. throughput, 50 clients, {secs} s:");
    let (m, body) = ping(false);
    let (r, e) = throughput(&url, Some(sid.clone()), m, body, 50, secs).await;
    println!("   ping on one 2025-11-25 session:     {r:.0} calls/s, {e} errors");
    let (m, body) = ping(true);
    let (r, e) = throughput(&url, None, m, body, 50, secs).await;
    println!("   server/discover stateless:          {r:.0} calls/s, {e} errors");

    println!(
        "3. tasks/get, 50 clients, {secs} s, stateless 2026-07-28 (target: at least 5,000/s):"
    );
    let created = post(&c, &url, None, "tools/call", task_call())
        .await
        .expect("a task");
    let reply: serde_json::Value = serde_json::from_str(&created.1).expect("JSON");
    let task_id = reply["result"]["taskId"]
        .as_str()
        .unwrap_or_else(|| panic!("no task handle: {reply}"))
        .to_string();
    let get = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{{"taskId":"{task_id}",{TASKS_META}}}}}"#
    );
    let (r, e) = throughput(&url, None, "tasks/get", get, 50, secs).await;
    println!("   tasks/get:                          {r:.0} calls/s, {e} errors");
    drop(server);

    println!("4. flood: 200 idle connections + {flood_n} initialize calls at 1,000/s, 50 clients on tools/list:");
    let server = stackpilot(stack.path(), &[]);
    let url = server.url.clone();
    let pid = server.child.id();
    let mut sessions = Vec::new();
    for _ in 0..50 {
        sessions.push(session(&c, &url).await.expect("session"));
    }
    let (unloaded, e0) = listers(&url, &sessions, secs).await;
    println!("   unloaded tools/list: {unloaded:.0} calls/s ({e0} errors)");
    let rss_before = vm_hwm_kb(pid);
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_string();
    // 200 connections that send nothing (their header timeout closes them: reopened).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let idle = {
        let (addr, stop) = (addr.clone(), stop.clone());
        tokio::spawn(async move {
            let mut conns = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                conns.retain(|c: &tokio::net::TcpStream| c.peer_addr().is_ok());
                while conns.len() < 200 {
                    match tokio::net::TcpStream::connect(&addr).await {
                        Ok(c) => conns.push(c),
                        Err(_) => break,
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let flood = {
        let url = url.clone();
        tokio::spawn(async move {
            let c = client();
            let started = Instant::now();
            let (mut ok, mut refused) = (0u64, 0u64);
            for i in 0..flood_n {
                // 1,000 a second, paced.
                let due = started + Duration::from_millis(i);
                tokio::time::sleep_until(due.into()).await;
                match session(&c, &url).await {
                    Ok(_) => ok += 1,
                    Err(_) => refused += 1,
                }
                if started.elapsed() > Duration::from_secs(20) {
                    break;
                }
            }
            (ok, refused, started.elapsed())
        })
    };
    let (loaded, e1) = listers(&url, &sessions, 2 * secs).await;
    let (ok, refused, took) = flood.await.expect("flood");
    stop.store(true, Ordering::Relaxed);
    let _ = idle.await;
    let rss = vm_hwm_kb(pid);
    println!(
        "   flood: {ok} sessions opened, {refused} refused (503/429) in {:.1} s",
        took.as_secs_f64()
    );
    println!(
        "   loaded tools/list: {loaded:.0} calls/s ({e1} errors) = {:.2} of unloaded",
        loaded / unloaded.max(1.0)
    );
    println!(
        "   server peak RSS: {:.1} MB before the flood, {:.1} MB after",
        rss_before as f64 / 1024.0,
        rss as f64 / 1024.0
    );
}
