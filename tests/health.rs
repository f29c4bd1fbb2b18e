//! health and recover against the real engine: one test stack per verdict
//! (healthy, failing health check, crash loop, OOM kill, stopped, missing), a
//! real Postgres for the postgres probe, busybox httpd for the HTTP probe, and
//! an Ollama stand-in (busybox httpd serving Ollama's documented JSON for
//! /api/version and /api/ps) for the ollama probe. Each verdict and hint is
//! asserted; recover restart brings a stopped service back to healthy.
//!
//! Without an engine every test prints why it skips (under CI=true it fails).
mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::docker::{engine, DockerStack};
use common::{bin, is_error, structured, validate_output};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
    NumberOrString, ProgressNotificationParam, ProgressToken, ProtocolVersion, RequestParamsMeta,
};
use rmcp::service::{NotificationContext, RoleClient, RunningService};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{ClientHandler, ServiceExt};
use serde_json::{json, Value};

/// A client without elicitation that counts progress notifications.
#[derive(Clone, Default)]
struct Agent {
    progress: Arc<AtomicUsize>,
}

impl ClientHandler for Agent {
    fn get_info(&self) -> ClientConfig {
        let mut info = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("stackpilot-health-tests", "1.0.0"),
        );
        info.protocol_version = ProtocolVersion::V_2025_11_25;
        info
    }

    async fn on_progress(
        &self,
        _params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.fetch_add(1, Ordering::SeqCst);
    }
}

type Client = RunningService<RoleClient, Agent>;

/// `stackpilot serve` over stdio on `stack`, talking to the test engine.
async fn connect(stack: &Path, docker_host: &str, agent: Agent) -> Client {
    let stack = stack.to_path_buf();
    let host = docker_host.to_string();
    let transport =
        TokioChildProcess::builder(tokio::process::Command::new(bin()).configure(|cmd| {
            cmd.arg("serve").arg("--stack").arg(&stack);
            cmd.env("DOCKER_HOST", &host)
                .env("OLLAMA_HOST", "http://127.0.0.1:9")
                .env("STACKPILOT_LOG", "warn");
        }))
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn stackpilot")
        .0;
    agent.serve(transport).await.expect("connect over stdio")
}

async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("args must be an object")
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .expect("tools/call answered")
}

async fn health(client: &Client, args: Value) -> Value {
    let r = call(client, "health", args).await;
    assert!(!is_error(&r), "health failed: {r:?}");
    structured(&r)
}

/// Checks `instance` against the tool's advertised outputSchema.
async fn validate(client: &Client, tool: &str, instance: &Value) {
    let tools = client.list_all_tools().await.expect("tools/list");
    validate_output(&tools, tool, instance);
}

fn service<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["service"] == name))
        .unwrap_or_else(|| panic!("service {name} in {report:#}"))
}

/// Calls health until `done` holds for `svc` (or panics with the last report).
async fn health_until(
    client: &Client,
    args: Value,
    svc: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let report = health(client, args.clone()).await;
        if done(service(&report, svc)) {
            return report;
        }
        if started.elapsed() > within {
            panic!(
                "{svc} did not reach the expected state within {within:?}: {:#}",
                service(&report, svc)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The stack's verdict, allowing the shared test machine's own disk or memory
/// to turn a healthy stack degraded (the host is judged apart from services).
fn assert_overall(report: &Value, expected: &str) {
    let overall = report["overall"].as_str().unwrap_or("");
    let host_only = expected == "healthy"
        && overall == "degraded"
        && report["host"]["verdict"] == "degraded"
        && report["counts"]["degraded"] == 0;
    assert!(
        overall == expected || host_only,
        "overall {overall}, expected {expected}: {report:#}"
    );
}

fn up(stack: &DockerStack, wait: bool) {
    let mut args = vec!["up", "-d"];
    if wait {
        args.push("--wait");
    }
    let out = stack.compose(&args);
    assert!(
        out.status.success() || !wait,
        "compose up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn container_of(stack: &DockerStack, service: &str) -> String {
    format!("{}-{service}-1", stack.project)
}

fn hint_action(svc: &Value) -> (String, Option<String>) {
    (
        svc["hint"]["tool"].as_str().unwrap_or("").to_string(),
        svc["hint"]["arguments"]["action"]
            .as_str()
            .map(str::to_string),
    )
}

#[tokio::test]
async fn healthy_stack_with_postgres_and_http_probes() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("data", &host);
    up(&stack, true);
    let client = connect(stack.path(), &host, Agent::default()).await;

    let report = health(&client, json!({"deep": true})).await;
    validate(&client, "health", &report).await;
    assert_overall(&report, "healthy");
    assert_eq!(report["counts"]["healthy"], 2);
    let pg = service(&report, "postgres");
    assert_eq!(pg["verdict"], "healthy");
    assert!(pg["hint"].is_null());
    let probes: Vec<(&str, bool)> = pg["probes"]
        .as_array()
        .expect("probes")
        .iter()
        .map(|p| (p["name"].as_str().unwrap_or(""), p["ok"] == true))
        .collect();
    assert_eq!(probes, [("pg_isready", true), ("select 1", true)]);
    assert_eq!(pg["probes"][1]["untrusted_output"], "1");
    let api = service(&report, "api");
    assert_eq!(api["verdict"], "healthy");
    let port = stack.env_value("API_PORT").expect("API_PORT");
    assert_eq!(
        api["probes"][0]["name"],
        format!("http GET http://127.0.0.1:{port}/healthz")
    );
    assert_eq!(api["probes"][0]["detail"], "HTTP 200");
    assert_eq!(api["ports"][0]["open"], true);
    assert_eq!(api["containers"][0]["health_status"], "healthy");
    assert_eq!(api["containers"][0]["restart_policy"], "unless-stopped");
    let t = &report["timings"];
    assert!(t["wall_ms"].as_f64() > Some(0.0));
    assert!(t["probes_sum_ms"].as_f64() >= t["slowest_probe_ms"].as_f64());
    let disks: Vec<&str> = report["host"]["disks"]
        .as_array()
        .expect("disks")
        .iter()
        .filter_map(|d| d["what"].as_str())
        .collect();
    assert!(disks.starts_with(&["stack", "backups"]), "{disks:?}");

    // Logs only when asked, marked untrusted, capped.
    assert!(service(&report, "postgres")["logs"]
        .as_array()
        .is_some_and(|l| l.is_empty()));
    let with_logs = health(&client, json!({"services": ["postgres"], "logs_tail": 5})).await;
    assert_eq!(with_logs["services"].as_array().map(Vec::len), Some(1));
    let logs = &service(&with_logs, "postgres")["logs"][0];
    assert_eq!(logs["untrusted"], true);
    let lines = logs["untrusted_output"].as_array().expect("lines");
    assert!(!lines.is_empty() && lines.len() <= 5, "{logs:#}");

    // Bad input: clear errors naming the field and the allowed values; nothing runs.
    let bad = call(&client, "health", json!({"services": ["api", "nope"]})).await;
    assert!(is_error(&bad));
    let e = &structured(&bad)["error"];
    assert_eq!(e["field"], "services[1]");
    assert_eq!(e["allowed"], json!(["api", "postgres"]));
    let bad = call(&client, "health", json!({"logs_tail": 201})).await;
    let e = &structured(&bad)["error"];
    assert_eq!(e["field"], "logs_tail");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("0..=200")));
    let bad = call(&client, "recover", json!({"service": "db"})).await;
    let e = &structured(&bad)["error"];
    assert_eq!(e["field"], "service");
    assert_eq!(e["allowed"], json!(["api", "postgres"]));
    let bad = call(
        &client,
        "recover",
        json!({"service": "api", "wait": true, "timeout_s": 0}),
    )
    .await;
    assert_eq!(structured(&bad)["error"]["field"], "timeout_s");
    let bad = call(
        &client,
        "recover",
        json!({"service": "api", "action": "reboot"}),
    )
    .await;
    let e = &structured(&bad)["error"];
    assert_eq!(e["field"], "action");
    assert_eq!(e["allowed"], json!(["restart", "recreate"]));
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn failing_health_check_is_unhealthy_with_its_output() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("failing", &host);
    up(&stack, false);
    let client = connect(stack.path(), &host, Agent::default()).await;
    let report = health_until(
        &client,
        json!({"deep": true}),
        "broken",
        Duration::from_secs(30),
        |s| s["verdict"] == "unhealthy" && s["containers"][0]["health_status"] == "unhealthy",
    )
    .await;
    assert_eq!(report["overall"], "unhealthy");
    let s = service(&report, "broken");
    assert!(
        s["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("Docker health check failing")),
        "{s:#}"
    );
    let log = s["containers"][0]["health_log"]
        .as_array()
        .expect("health log");
    assert!(!log.is_empty());
    assert!(log.iter().all(|r| r["exit_code"] == 1));
    assert!(
        log.iter().any(|r| r["untrusted_output"]
            .as_str()
            .is_some_and(|o| o.contains("404"))),
        "the probe's own output is kept, as untrusted: {log:?}"
    );
    // The deep HTTP probe of its x-stackpilot health path fails too.
    let probe = &s["probes"][0];
    assert!(probe["name"]
        .as_str()
        .is_some_and(|n| n.ends_with("/does-not-exist")));
    assert_eq!(probe["ok"], false);
    assert_eq!(probe["detail"], "HTTP 404");
    assert_eq!(
        hint_action(s),
        ("recover".to_string(), Some("restart".to_string()))
    );
    assert!(report["note"]
        .as_str()
        .is_some_and(|n| n.contains("untrusted_output")));
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn crash_loop_is_unhealthy_and_points_at_the_logs() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("crashloop", &host);
    up(&stack, false);
    let client = connect(stack.path(), &host, Agent::default()).await;
    let report = health_until(
        &client,
        json!({"logs_tail": 20}),
        "crasher",
        Duration::from_secs(30),
        |s| {
            s["verdict"] == "unhealthy"
                && s["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("crash loop"))
        },
    )
    .await;
    let s = service(&report, "crasher");
    assert!(
        s["containers"][0]["restart_count"].as_i64() >= Some(1),
        "{s:#}"
    );
    assert_eq!(s["containers"][0]["restart_policy"], "always");
    assert_eq!(s["hint"]["tool"], "health");
    assert_eq!(s["hint"]["arguments"]["logs_tail"], 50);
    let lines = s["logs"][0]["untrusted_output"].as_array().expect("logs");
    assert!(
        lines
            .iter()
            .any(|l| l.as_str() == Some("crasher: missing config, exiting")),
        "{lines:?}"
    );
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn oom_kill_is_stopped_with_the_memory_hint() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("oom", &host);
    up(&stack, false);
    let client = connect(stack.path(), &host, Agent::default()).await;
    let report = health_until(&client, json!({}), "hog", Duration::from_secs(30), |s| {
        s["verdict"] == "stopped"
    })
    .await;
    let s = service(&report, "hog");
    let c = &s["containers"][0];
    assert_eq!(c["oom_killed"], true, "{s:#}");
    assert_eq!(c["exit_code"], 137);
    assert_eq!(c["memory_limit_bytes"], 6 * 1024 * 1024);
    assert_eq!(
        s["reason"],
        "OOM-killed: exited with code 137 (limit 6 MiB)"
    );
    assert_eq!(
        hint_action(s),
        ("recover".to_string(), Some("recreate".to_string()))
    );
    assert!(s["hint"]["text"]
        .as_str()
        .is_some_and(|t| t.contains("deploy.resources.limits.memory")));
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn stopped_and_missing_services_and_recover_brings_them_back() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("web", &host);
    up(&stack, true);
    let agent = Agent::default();
    let client = connect(stack.path(), &host, agent.clone()).await;
    let report = health(&client, json!({})).await;
    assert_overall(&report, "healthy");

    let out = stack.docker(&["stop", "-t", "1", &container_of(&stack, "web")]);
    assert!(out.status.success());
    let out = stack.docker(&["rm", "-f", &container_of(&stack, "cache")]);
    assert!(out.status.success());

    let report = health(&client, json!({})).await;
    validate(&client, "health", &report).await;
    assert_eq!(report["overall"], "unhealthy");
    assert_eq!(report["counts"]["stopped"], 1);
    assert_eq!(report["counts"]["missing"], 1);
    let web = service(&report, "web");
    assert_eq!(web["verdict"], "stopped");
    assert_eq!(web["containers"][0]["state"], "exited");
    assert_eq!(web["containers"][0]["oom_killed"], false);
    assert!(web["reason"]
        .as_str()
        .is_some_and(|r| r.starts_with("exited with code")));
    assert_eq!(
        hint_action(web),
        ("recover".to_string(), Some("restart".to_string()))
    );
    assert_eq!(
        web["ports"][0]["open"],
        Value::Null,
        "not probed while stopped"
    );
    let cache = service(&report, "cache");
    assert_eq!(cache["verdict"], "missing");
    assert_eq!(
        hint_action(cache),
        ("recover".to_string(), Some("recreate".to_string()))
    );
    let steps = report["next_steps"].as_array().expect("next_steps");
    assert_eq!(
        steps[0], cache["hint"],
        "worst first: missing, then stopped"
    );
    assert_eq!(steps[1], web["hint"]);
    assert!(report["summary"]
        .as_str()
        .is_some_and(|s| s.contains("1 stopped (web)") && s.contains("1 missing (cache)")));

    // restart a missing service: refused, pointing at recreate.
    let r = call(&client, "recover", json!({"service": "cache"})).await;
    assert!(is_error(&r));
    assert!(structured(&r)["error"]["next_step"]
        .as_str()
        .is_some_and(|s| s.contains("recreate")));

    // recover restart with wait: progress at least once a second, final health healthy.
    let mut params = CallToolRequestParams::new("recover").with_arguments(
        json!({"service": "web", "action": "restart", "wait": true, "timeout_s": 60})
            .as_object()
            .cloned()
            .expect("object"),
    );
    params.set_progress_token(ProgressToken(NumberOrString::Number(7)));
    let started = Instant::now();
    let r = client.call_tool(params).await.expect("recover answered");
    let took = started.elapsed();
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    validate(&client, "recover", &out).await;
    assert_eq!(out["wait_outcome"], "healthy", "{out:#}");
    assert_eq!(out["confirmed_by"], "not_needed");
    assert_eq!(out["health"]["verdict"], "healthy");
    assert_eq!(out["health"]["containers"][0]["state"], "running");
    // Notifications may trail the result by a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = agent.progress.load(Ordering::SeqCst);
    assert!(
        seen as u64 >= took.as_secs().max(1),
        "{seen} progress notifications in {took:?}"
    );

    // recreate the missing cache: it holds a named volume, so a person confirms first.
    let r = call(
        &client,
        "recover",
        json!({"service": "cache", "action": "recreate"}),
    )
    .await;
    let first = structured(&r);
    validate(&client, "recover", &first).await;
    assert_eq!(first["confirmation_required"], true, "{first:#}");
    assert_eq!(first["plan"]["steps"][0]["destructive"], true);
    let report = health(&client, json!({"services": ["cache"]})).await;
    assert_eq!(
        service(&report, "cache")["verdict"],
        "missing",
        "nothing changed before confirmation"
    );
    let token = first["confirm_token"].as_str().expect("token");
    let r = call(
        &client,
        "recover",
        json!({"service": "cache", "action": "recreate", "wait": true, "timeout_s": 60, "confirm_token": token}),
    )
    .await;
    let out = structured(&r);
    assert_eq!(out["confirmed_by"], "token", "{out:#}");
    assert_eq!(out["wait_outcome"], "healthy");
    let report = health(&client, json!({})).await;
    assert_overall(&report, "healthy");
    client.cancel().await.expect("close");
}

fn write_ollama(dir: &Path, ps: &Value) {
    let api = dir.join("ollama-www/api");
    std::fs::create_dir_all(&api).expect("mkdir");
    std::fs::write(api.join("version"), r#"{"version":"0.9.6"}"#).expect("version");
    std::fs::write(api.join("ps"), ps.to_string()).expect("ps");
}

fn ps_with_vram(vram: u64) -> Value {
    // Ollama's documented /api/ps shape (docs/api.md), one model loaded.
    json!({"models": [{
        "name": "llama3.1:8b", "model": "llama3.1:8b", "size": 6_000_000_000u64,
        "digest": "46e0c10c039e019119339687c3c1757cc81b9da49709a3b3924863ba87ca666e",
        "details": {"parent_model": "", "format": "gguf", "family": "llama",
                    "families": ["llama"], "parameter_size": "8.0B", "quantization_level": "Q4_K_M"},
        "expires_at": "2099-01-01T00:00:00Z", "size_vram": vram, "context_length": 32768
    }]})
}

fn engine_has_nvidia_runtime(stack: &DockerStack) -> bool {
    let out = stack.docker(&["info", "--format", "{{json .Runtimes}}"]);
    String::from_utf8_lossy(&out.stdout).contains("\"nvidia\"")
}

#[tokio::test]
async fn ollama_probe_reports_the_gpu_share() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("ollama", &host);
    write_ollama(stack.path(), &ps_with_vram(0));
    up(&stack, true);
    let client = connect(stack.path(), &host, Agent::default()).await;

    let report = health(&client, json!({"deep": true})).await;
    let llm = service(&report, "llm");
    assert_eq!(llm["verdict"], "degraded", "{llm:#}");
    let o = &llm["ollama"];
    assert_eq!(o["version"], "0.9.6");
    assert_eq!(o["gpu_expected"], true, "profile standard expects a GPU");
    assert_eq!(o["models"][0]["gpu_share"], 0.0);
    assert_eq!(o["models"][0]["context_length"], 32768);
    let port = stack.env_value("OLLAMA_PORT").expect("port");
    assert_eq!(o["url"], format!("http://127.0.0.1:{port}"));
    let reason = llm["reason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("Ollama runs llama3.1:8b on the CPU (size_vram 0"),
        "{reason}"
    );
    if !engine_has_nvidia_runtime(&stack) {
        assert!(
            reason.contains("the engine has no NVIDIA runtime"),
            "{reason}"
        );
        assert_eq!(llm["hint"]["tool"], "select_profile");
    }
    assert_eq!(report["overall"], "degraded");

    // Part of it on the GPU: still degraded, names select_profile.
    write_ollama(stack.path(), &ps_with_vram(3_000_000_000));
    let report = health(&client, json!({"deep": true})).await;
    let llm = service(&report, "llm");
    assert_eq!(llm["verdict"], "degraded");
    assert!(llm["reason"]
        .as_str()
        .is_some_and(|r| r.starts_with("only 50 % of llama3.1:8b is on the GPU")));
    assert_eq!(llm["hint"]["tool"], "select_profile");

    // All of it on the GPU: healthy.
    write_ollama(stack.path(), &ps_with_vram(6_000_000_000));
    let report = health(&client, json!({"deep": true})).await;
    assert_eq!(service(&report, "llm")["verdict"], "healthy", "{report:#}");
    assert_overall(&report, "healthy");

    // Without deep, Ollama is not asked.
    let report = health(&client, json!({})).await;
    assert!(service(&report, "llm")["ollama"].is_null());
    client.cancel().await.expect("close");
}
