//! pull_model, list_models and remove_model against the REAL Ollama 0.11.4
//! (built from its Go module by scripts/peers/ollama.sh), pulling SmolLM2-135M
//! from a real CNCF Distribution registry on 127.0.0.1: the built stackpilot
//! binary, driven by rmcp's client over stdio. Each test runs its own
//! `ollama serve` with an empty models directory on a free loopback port.
//!
//! Tests skip with a reason when the peers are missing, and fail under
//! CI=true (scripts/test-env.sh prepares them there).
mod common;

use std::time::{Duration, Instant};

use common::ollama_peers::{ollama_peers, HostOllama, OllamaPeers, Registry, Throttle};
use common::{is_error, structured, validate_output, Person, TestClient, TestStack};
use rmcp::model::{CallToolRequestParams, ProtocolVersion};
use serde_json::{json, Value};

const ERA: ProtocolVersion = ProtocolVersion::V_2025_11_25;
/// The model layer of the seeded smollm2:135m (the GGUF's sha256) and its size.
const MODEL_BLOB: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const MODEL_BLOB_BYTES: u64 = 98_362_432;

async fn client_for(stack: &TestStack, ollama: &HostOllama, person: Person) -> common::Client {
    common::stdio_client_env(
        stack.path(),
        &[],
        TestClient::new(person, ERA),
        &[("OLLAMA_HOST", ollama.url.as_str())],
    )
    .await
}

fn error_of(r: &rmcp::model::CallToolResult) -> Value {
    assert!(is_error(r), "expected a tool error: {r:?}");
    structured(r)["error"].clone()
}

fn messages(tc: &TestClient) -> Vec<String> {
    tc.progress
        .lock()
        .expect("lock")
        .iter()
        .map(|p| p.message.clone().unwrap_or_default())
        .collect()
}

/// Waits (bounded) until the audit log's last line is for `tool`.
async fn last_audit(stack: &TestStack, tool: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(l) = stack.audit_lines().pop().filter(|l| l["tool"] == tool) {
            return l;
        }
        assert!(Instant::now() < deadline, "no audit line for {tool}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn peers() -> Option<OllamaPeers> {
    ollama_peers()
}

#[tokio::test]
async fn pull_list_generate_and_remove_against_the_real_ollama() {
    let Some(peers) = peers() else { return };
    let ollama = HostOllama::start(&peers, &[]).await;
    let model = peers.host_model();
    let stack = TestStack::new("");
    let tc = TestClient::new(Person::Absent, ERA);
    let seen = tc.progress.clone();
    let client = common::stdio_client_env(
        stack.path(),
        &[],
        tc.clone(),
        &[("OLLAMA_HOST", ollama.url.as_str())],
    )
    .await;
    let tools = client.list_all_tools().await.expect("tools");

    // pull_model: the real NDJSON stream becomes progress notifications.
    let r = common::call(
        &client,
        "pull_model",
        json!({"model": model, "insecure": true}),
    )
    .await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    validate_output(&tools, "pull_model", &out);
    assert_eq!(out["status"], "success", "{out:#}");
    assert_eq!(out["ollama_version"], peers.version);
    let tags = ollama.get("/api/tags").await;
    let listed = &tags["models"][0];
    assert_eq!(listed["name"], model.as_str());
    assert_eq!(
        out["digest"], listed["digest"],
        "digest as /api/tags lists it"
    );
    assert_eq!(out["size_bytes"], listed["size"]);
    // Four blobs: the GGUF, the template, the params and the config.
    assert_eq!(out["layers"], 4, "{out:#}");
    let total = out["bytes_total"].as_u64().expect("total");
    assert!(
        total > MODEL_BLOB_BYTES && total < MODEL_BLOB_BYTES + 4096,
        "{total}"
    );
    assert_eq!(out["bytes_resumed"], 0, "{out:#}");
    assert_eq!(out["bytes_transferred"], total);
    // Not in the catalogue before, its own GGUF facts after.
    assert_eq!(out["preflight"]["source"], "unknown");
    assert_eq!(out["fit"]["source"], "api_show");
    let facts = &out["fit"]["model"];
    assert_eq!(
        (&facts["layers"], &facts["kv_heads"], &facts["head_dim"], &facts["max_context"]),
        (&json!(30), &json!(3), &json!(64), &json!(8192)),
        "block_count, head_count_kv, embedding_length / head_count, context_length from the real /api/show"
    );
    assert_eq!(out["fits"], true);
    // The notifications: Ollama's statuses in order, progress strictly increasing,
    // at most 10 in any second.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !messages(&tc).iter().any(|m| m == "success") {
        assert!(Instant::now() < deadline, "no `success` notification");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let msgs = messages(&tc);
    assert_eq!(
        seen.lock().expect("lock").len() as u64,
        out["progress_notifications"].as_u64().expect("count")
    );
    let first = |prefix: &str| {
        msgs.iter()
            .position(|m| m.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in {msgs:#?}"))
    };
    let order = [
        first("pulling manifest"),
        first(&format!("pulling {}", &MODEL_BLOB[..12])),
        first("verifying sha256 digest"),
        first("writing manifest"),
        first("success"),
    ];
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "{order:?} in {msgs:#?}"
    );
    assert!(
        msgs.iter().any(|m| m.contains('%')),
        "byte progress: {msgs:#?}"
    );
    {
        let seen = seen.lock().expect("lock");
        let values: Vec<(f64, Option<String>)> = seen
            .iter()
            .map(|p| (p.progress, p.message.clone()))
            .collect();
        assert!(
            seen.windows(2).all(|w| w[1].progress > w[0].progress),
            "strictly increasing: {values:#?}"
        );
        for w in seen.windows(11) {
            assert!(
                w[10].at - w[0].at >= Duration::from_millis(950),
                "11 in under a second"
            );
        }
    }

    // list_models: the real /api/tags and /api/show fields, nothing loaded yet.
    let r = common::call(&client, "list_models", json!({})).await;
    assert!(!is_error(&r), "{r:?}");
    let list = structured(&r);
    validate_output(&tools, "list_models", &list);
    assert_eq!(list["ollama_version"], peers.version);
    assert_eq!(list["count"], 1);
    let m = &list["models"][0];
    assert_eq!(m["name"], model.as_str());
    assert_eq!(m["family"], "llama");
    assert_eq!(m["format"], "gguf");
    assert_eq!(m["quantization"], "Q4_1");
    assert_eq!(m["parameter_size"], "134.52M");
    assert_eq!(
        m["max_context_length"], 8192,
        "llama.context_length from /api/show"
    );
    assert_eq!(m["loaded"], false);

    // A real generate on the CPU: a few tokens.
    let g = ollama
        .generate(
            json!({"model": model, "prompt": "Say hello.", "stream": false,
            "options": {"num_predict": 4}}),
        )
        .await;
    assert_eq!(g["done"], true, "{g}");
    assert!(g["eval_count"].as_u64().is_some_and(|n| n >= 1), "{g}");
    let r = common::call(&client, "list_models", json!({})).await;
    let m = &structured(&r)["models"][0];
    assert_eq!(m["loaded"], true, "{m:#}");
    assert_eq!(
        m["context_length"], 4096,
        "Ollama's default context (/api/ps)"
    );
    assert!(
        m["memory_bytes"]
            .as_u64()
            .is_some_and(|b| b > MODEL_BLOB_BYTES),
        "{m:#}"
    );
    assert_eq!(m["vram_bytes"], 0);
    assert_eq!(m["processor"], "100% CPU");
    assert_eq!(m["gpu_share"], 0.0);
    assert!(
        m["expires_at"].as_str().is_some_and(|e| e.len() >= 20),
        "{m:#}"
    );

    // remove_model with the model loaded. A person who declines: nothing changes.
    let decliner = client_for(&stack, &ollama, Person::Decline).await;
    let r = common::call(&decliner, "remove_model", json!({"model": model})).await;
    assert!(!is_error(&r), "{r:?}");
    assert_eq!(structured(&r)["declined"], true, "{r:?}");
    assert_eq!(ollama.names("/api/tags").await, [model.as_str()]);
    assert_eq!(ollama.names("/api/ps").await, [model.as_str()]);
    decliner.cancel().await.expect("close");
    // No way to ask: a plan and a token first, then unloaded and gone.
    let plan = structured(&common::call(&client, "remove_model", json!({"model": model})).await);
    assert_eq!(plan["confirmation_required"], true, "{plan:#}");
    let step = &plan["plan"]["steps"][0];
    assert_eq!(step["cost"]["models_unloaded"], true);
    assert_eq!(step["before"]["loaded"], true);
    assert_eq!(
        ollama.names("/api/ps").await,
        [model.as_str()],
        "nothing unloaded yet"
    );
    let r = common::call(
        &client,
        "remove_model",
        json!({"model": model, "confirm_token": plan["confirm_token"]}),
    )
    .await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    validate_output(&tools, "remove_model", &out);
    assert_eq!(out["removed"], true);
    assert_eq!(out["was_loaded"], true);
    assert_eq!(out["unloaded"], true);
    assert_eq!(out["freed_bytes"], listed["size"]);
    assert!(ollama.names("/api/ps").await.is_empty(), "unloaded");
    assert!(ollama.names("/api/tags").await.is_empty(), "deleted");
    let audit = stack.audit_lines();
    let line = audit.last().expect("audit");
    assert_eq!(line["tool"], "remove_model");
    assert_eq!(line["confirmation"], "token");
    assert_eq!(line["plan_digest"], plan["plan"]["digest"]);
    // Again: nothing there, nothing to confirm.
    let again = structured(&common::call(&client, "remove_model", json!({"model": model})).await);
    assert_eq!(again["removed"], false);
    assert_eq!(again["confirmed_by"], "not_needed");
    client.cancel().await.expect("close");
}

/// The real DELETE alone leaves a loaded model in memory: why remove_model
/// unloads first (observed on 0.11.4; `ollama rm` does the same).
#[tokio::test]
async fn ollamas_own_delete_does_not_unload() {
    let Some(peers) = peers() else { return };
    let ollama = HostOllama::start(&peers, &[]).await;
    let model = peers.host_model();
    let http = reqwest::Client::new();
    let pulled = http
        .post(format!("{}/api/pull", ollama.url))
        .json(&json!({"model": model, "insecure": true, "stream": false}))
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .expect("pull");
    assert!(pulled.status().is_success());
    ollama
        .generate(json!({"model": model, "prompt": "", "stream": false}))
        .await;
    let del = http
        .delete(format!("{}/api/delete", ollama.url))
        .json(&json!({"model": model}))
        .send()
        .await
        .expect("delete");
    assert_eq!(del.status(), 200);
    assert!(ollama.names("/api/tags").await.is_empty());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ollama.names("/api/ps").await,
        [model],
        "still loaded after DELETE"
    );
}

#[tokio::test]
async fn a_cancelled_pull_resumes_from_the_bytes_ollama_kept() {
    let Some(peers) = peers() else { return };
    let Some(blobs) = peers.blobs.clone() else {
        common::ollama_peers::unavailable::<()>(
            "STACKPILOT_TEST_REGISTRY_BLOBS is not in peers-ollama.env",
        );
        return;
    };
    // The registry redirects blob downloads to this throttle in front of its
    // blob server: 98 MB at 6 MB/s leaves time to cancel midway.
    let throttle = Throttle::start(blobs, 6_000_000).await;
    let Some(registry) =
        Registry::start(&peers, &format!("http://localhost:{}/", throttle.port)).await
    else {
        return;
    };
    let ollama = HostOllama::start(&peers, &[]).await;
    let model = format!("{}/{}", registry.addr, peers.model);
    let stack = TestStack::new("");
    let tc = TestClient::new(Person::Absent, ERA);
    let seen = tc.progress.clone();
    let client = common::stdio_client_env(
        stack.path(),
        &[],
        tc.clone(),
        &[("OLLAMA_HOST", ollama.url.as_str())],
    )
    .await;

    let peer = client.peer().clone();
    let args = json!({"model": model, "insecure": true});
    let running = tokio::spawn(async move {
        let Value::Object(args) = args else {
            unreachable!()
        };
        peer.call_tool_once(CallToolRequestParams::new("pull_model").with_arguments(args))
            .await
    });
    // Midway: 20 MB of the model layer have come through.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen
        .lock()
        .expect("lock")
        .iter()
        .any(|p| p.progress >= 20_000_000.0)
    {
        assert!(
            Instant::now() < deadline,
            "no 20 MB of progress within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Dropping the request sends notifications/cancelled.
    running.abort();
    let _ = running.await;
    let line = last_audit(&stack, "pull_model").await;
    assert_eq!(line["outcome"], "cancelled", "{line}");

    // Ollama keeps the part file of the blob it was downloading.
    let blobs_dir = ollama.models_dir().join("blobs");
    let part = blobs_dir.join(format!("sha256-{MODEL_BLOB}-partial-0"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let kept = loop {
        let text = std::fs::read_to_string(&part).unwrap_or_default();
        let completed = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["Completed"].as_u64());
        if let Some(c) = completed.filter(|c| *c > 0) {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "no part file at {}",
            part.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(kept < MODEL_BLOB_BYTES, "kept {kept}");
    assert!(
        ollama.names("/api/tags").await.is_empty(),
        "not complete, not listed"
    );

    // Pulled again (faster now): it resumes, and the throttle sees only the rest.
    throttle.set_rate(200_000_000);
    let before = throttle.delivered();
    let r = common::call(
        &client,
        "pull_model",
        json!({"model": model, "insecure": true}),
    )
    .await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    assert_eq!(out["status"], "success", "{out:#}");
    // What stackpilot saw completed when it stopped the first pull, next to
    // what Ollama's part file kept: within a second of the throttle's 6 MB/s.
    let resumed = out["bytes_resumed"].as_u64().expect("resumed");
    assert!(
        resumed > 0 && resumed.abs_diff(kept) < 6_000_000,
        "resumed {resumed}, kept {kept}: {out:#}"
    );
    let total = out["bytes_total"].as_u64().expect("total");
    assert_eq!(out["bytes_transferred"].as_u64(), Some(total - resumed));
    assert!(out["message"]
        .as_str()
        .expect("message")
        .contains("resumed"));
    let second = throttle.delivered() - before;
    assert!(
        second < MODEL_BLOB_BYTES - kept / 2,
        "the second pull fetched {second} bytes of a {MODEL_BLOB_BYTES}-byte blob of which {kept} were kept"
    );
    assert_eq!(ollama.names("/api/tags").await, [model]);
    client.cancel().await.expect("close");
    drop(registry);
}

#[tokio::test]
async fn pull_errors_carry_ollamas_own_words() {
    let Some(peers) = peers() else { return };
    let ollama = HostOllama::start(&peers, &[]).await;
    let stack = TestStack::new("");
    let client = client_for(&stack, &ollama, Person::Absent).await;

    // A model the registry does not have.
    let missing = format!("{}/library/nope:1", peers.registry);
    let r = common::call(
        &client,
        "pull_model",
        json!({"model": missing, "insecure": true}),
    )
    .await;
    let err = error_of(&r);
    assert_eq!(err["kind"], "external");
    let msg = err["message"].as_str().expect("message");
    assert!(
        msg.contains("pull model manifest: file does not exist"),
        "{msg}"
    );
    assert!(msg.contains(&ollama.url), "{msg}");

    // A registry that is down: nothing listens on that port.
    let down = format!(
        "127.0.0.1:{}/library/smollm2:135m",
        common::ollama_peers::free_port()
    );
    let r = common::call(
        &client,
        "pull_model",
        json!({"model": down, "insecure": true}),
    )
    .await;
    let msg = error_of(&r)["message"]
        .as_str()
        .expect("message")
        .to_string();
    assert!(msg.contains("pull model manifest"), "{msg}");
    assert!(msg.contains("connect: connection refused"), "{msg}");

    // Plain HTTP without `insecure`.
    let r = common::call(&client, "pull_model", json!({"model": peers.host_model()})).await;
    let msg = error_of(&r)["message"]
        .as_str()
        .expect("message")
        .to_string();
    assert!(
        msg.contains("server gave HTTP response to HTTPS client"),
        "{msg}"
    );
    let audit = stack.audit_lines();
    assert!(audit
        .iter()
        .filter(|l| l["tool"] == "pull_model")
        .all(|l| l["outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("error: "))));

    // Removing a model Ollama does not have (its DELETE answers 404): nothing to do.
    let r = common::call(&client, "remove_model", json!({"model": missing})).await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    assert_eq!(out["removed"], false);
    assert_eq!(out["present_before"], false);
    assert_eq!(out["confirmed_by"], "not_needed");
    assert_eq!(out["plan"]["steps"], json!([]));

    // Nothing was pulled, and the server keeps serving.
    assert!(ollama.names("/api/tags").await.is_empty());
    let r = common::call(&client, "list_models", json!({})).await;
    assert!(!is_error(&r), "{r:?}");
    assert_eq!(structured(&r)["count"], 0);
    client.cancel().await.expect("close");
}

/// What 0.11.4 does on CPU with a quantized type: the product's log reader
/// against the real server's lines (why set_kv_cache refuses q8_0/q4_0 there);
/// and a context above the trained one, against the memory model.
#[tokio::test]
async fn a_quantized_cache_on_cpu_is_logged_as_f16_by_the_real_server() {
    use stackpilot::domain::models::{facts, kv_log, memory};
    let Some(peers) = peers() else { return };
    let ollama = HostOllama::start(
        &peers,
        &[
            ("OLLAMA_FLASH_ATTENTION", "1"),
            ("OLLAMA_KV_CACHE_TYPE", "q8_0"),
        ],
    )
    .await;
    let model = peers.host_model();
    let pulled = reqwest::Client::new()
        .post(format!("{}/api/pull", ollama.url))
        .json(&json!({"model": model, "insecure": true, "stream": false}))
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .expect("pull");
    assert!(pulled.status().is_success());
    ollama
        .generate(json!({"model": model, "prompt": "", "stream": false,
            "options": {"num_ctx": 2048}}))
        .await;
    let log = ollama.log_text();
    assert!(
        log.contains("OLLAMA_KV_CACHE_TYPE:q8_0"),
        "the server config line has it"
    );
    let a = kv_log::last_allocation(kv_log::since_last_start(&log)).expect("a KV line");
    assert_eq!(
        (a.type_k.as_str(), a.type_v.as_str()),
        ("f16", "f16"),
        "{a:?}"
    );
    assert_eq!(a.cells, Some(2048));
    assert_eq!(a.total_mib, 45.0);
    let warnings = kv_log::ignored_type_warnings(&log);
    assert!(
        warnings
            .iter()
            .any(|w| w == "quantized kv cache requested but flash attention disabled type=q8_0"),
        "{warnings:?}"
    );

    // 32768 asked of a model trained for 8192: /api/ps says 32768, llama.cpp
    // allocates 8192 cells, and the memory model (with the facts the product
    // takes from this /api/show) caps each slot the same way.
    ollama
        .generate(json!({"model": model, "keep_alive": 0}))
        .await;
    ollama
        .generate(json!({"model": model, "prompt": "", "stream": false,
            "options": {"num_ctx": 32768}}))
        .await;
    let ps = ollama.get("/api/ps").await;
    assert_eq!(ps["models"][0]["context_length"], 32768, "{ps:#}");
    let log = ollama.log_text();
    assert!(log.contains("requested context size too large for model"));
    let a = kv_log::last_allocation(&log).expect("a KV line");
    assert_eq!((a.cells, a.total_mib), (Some(8192), 180.0), "{a:?}");
    let size = ollama.get("/api/tags").await["models"][0]["size"]
        .as_u64()
        .expect("size");
    let show: Value = reqwest::Client::new()
        .post(format!("{}/api/show", ollama.url))
        .json(&json!({"model": model}))
        .send()
        .await
        .expect("show")
        .json()
        .await
        .expect("json");
    let info = show["model_info"].as_object().cloned().unwrap_or_default();
    let f = facts::from_metadata(&model, size, &info).expect("facts");
    assert_eq!(
        memory::kv_cache_bytes(&f, 32768, memory::KvCacheType::F16),
        a.total_bytes()
    );
}

#[tokio::test]
async fn select_profile_takes_the_facts_of_ollamas_copy_a_gguf_file_or_the_catalogue() {
    let Some(peers) = peers() else { return };
    let Some(gguf) = common::gguf() else { return };
    let ollama = HostOllama::start(&peers, &[]).await;
    let model = peers.host_model();
    let pulled = reqwest::Client::new()
        .post(format!("{}/api/pull", ollama.url))
        .json(&json!({"model": model, "insecure": true, "stream": false}))
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .expect("pull");
    assert!(pulled.status().is_success());
    let size = ollama.get("/api/tags").await["models"][0]["size"].clone();
    let stack = TestStack::new("");
    let client = client_for(&stack, &ollama, Person::Absent).await;
    let tools = client.list_all_tools().await.expect("tools");
    // A CPU machine whose Ollama is this 0.11.4: f16 only.
    let hw = json!({"memory_total_bytes": 17_179_869_184u64, "memory_available_bytes": 12_884_901_888u64,
        "logical_cores": 8, "ollama_version": peers.version});
    let select = |m: Value| json!({"model": m, "context_length": 8192, "hardware": hw.clone()});

    // A name Ollama has: the facts of its own copy (/api/show, /api/tags' size).
    let r = common::call(&client, "select_profile", select(json!(model))).await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    validate_output(&tools, "select_profile", &out);
    assert_eq!(out["model_source"], "api_show");
    let f = &out["model"];
    assert_eq!(
        (
            &f["layers"],
            &f["kv_heads"],
            &f["head_dim"],
            &f["max_context"]
        ),
        (&json!(30), &json!(3), &json!(64), &json!(8192))
    );
    assert_eq!(f["weights_bytes"], size);
    assert_eq!(out["kv_cache_type"], "f16");
    assert_eq!(
        out["memory"]["kv_cache_bytes"],
        180u64 << 20,
        "as llama.cpp allocates it"
    );
    assert!(out["reasons"].as_array().expect("reasons").iter().any(|r| r
        .as_str()
        .is_some_and(|r| r.contains("Ollama 0.11.4 on CPU has no flash attention"))));

    // A GGUF file: its header, read with the product's parser.
    let r = common::call(
        &client,
        "select_profile",
        select(json!({"gguf": gguf.display().to_string()})),
    )
    .await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    assert_eq!(out["model_source"], "gguf_file");
    let f = &out["model"];
    assert_eq!(
        (
            &f["layers"],
            &f["kv_heads"],
            &f["head_dim"],
            &f["max_context"]
        ),
        (&json!(30), &json!(3), &json!(64), &json!(8192))
    );
    assert_eq!(
        f["weights_bytes"],
        std::fs::metadata(&gguf).expect("gguf").len()
    );

    // A name only the catalogue knows (refused as unknown before issue 11):
    // Qwen3-8B's published config, 36 layers, 8 KV heads of 128, 40960 tokens.
    let r = common::call(&client, "select_profile", select(json!("qwen3:8b"))).await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    assert_eq!(out["model_source"], "catalogue");
    let f = &out["model"];
    assert_eq!(
        (
            &f["name"],
            &f["layers"],
            &f["kv_heads"],
            &f["head_dim"],
            &f["max_context"]
        ),
        (
            &json!("qwen3:8b"),
            &json!(36),
            &json!(8),
            &json!(128),
            &json!(40960)
        )
    );

    // Bad input names the field (and, for a name, the allowed ones); the
    // server keeps serving after each refusal.
    let dir = tempfile::tempdir().expect("tmp");
    let fake = dir.path().join("fake.gguf");
    std::fs::write(&fake, b"not a model").expect("write");
    let missing = dir.path().join("missing.gguf");
    for (m, field, words) in [
        (
            json!({"gguf": "relative/model.gguf"}),
            "model.gguf",
            "absolute",
        ),
        (json!({"gguf": "/etc/hostname"}), "model.gguf", ".gguf"),
        (
            json!({"gguf": fake.display().to_string()}),
            "model.gguf",
            "not a GGUF file",
        ),
        (
            json!({"gguf": missing.display().to_string()}),
            "model.gguf",
            "missing.gguf",
        ),
        (
            json!({"gguf": "/x.gguf", "mmap": true}),
            "model.mmap",
            "mmap",
        ),
        (
            json!("nosuch-model:1b"),
            "model",
            "neither in Ollama nor in the catalogue",
        ),
    ] {
        let r = common::call(&client, "select_profile", select(m.clone())).await;
        let e = error_of(&r);
        assert_eq!(e["field"], field, "{m}: {e:#}");
        assert!(
            e["message"].as_str().is_some_and(|s| s.contains(words)),
            "{m}: {e:#}"
        );
    }
    let r = common::call(&client, "select_profile", select(json!("nosuch-model:1b"))).await;
    let allowed = error_of(&r)["allowed"].clone();
    assert!(
        allowed
            .as_array()
            .is_some_and(|a| a.contains(&json!("qwen3:8b")) && a.contains(&json!("gpt-oss:20b"))),
        "{allowed}"
    );
    let r = common::call(&client, "select_profile", select(json!(model))).await;
    assert!(!is_error(&r), "still serving: {r:?}");
    client.cancel().await.expect("close");
}
