//! The built binary, spoken to by rmcp's own client over stdio and Streamable
//! HTTP, in both protocol eras (2025-11-25 sessions, 2026-07-28 stateless).
mod common;

use common::*;
use rmcp::model::ProtocolVersion;
use serde_json::{json, Value};

const ERAS: [ProtocolVersion; 2] = [ProtocolVersion::V_2025_11_25, ProtocolVersion::V_2026_07_28];

fn validate(schema: &serde_json::Map<String, Value>, instance: &Value) {
    let schema = Value::Object(schema.clone());
    let validator = jsonschema::validator_for(&schema).expect("outputSchema compiles");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "structuredContent violates outputSchema: {errors:?}\n{instance:#}"
    );
}

/// Lists tools, checks titles and annotations, calls every tool, and validates
/// each structured result against the tool's outputSchema.
async fn exercise(client: &Client) {
    let tools = client.list_all_tools().await.expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(
        names,
        common::exported_tool_names(),
        "every tool of the table"
    );
    for t in &tools {
        assert!(
            t.title.as_deref().is_some_and(|s| !s.is_empty()),
            "{} has a title",
            t.name
        );
        let a = t.annotations.as_ref().expect("annotations");
        assert!(a.read_only_hint.is_some() && a.destructive_hint.is_some());
        assert!(a.idempotent_hint.is_some() && a.open_world_hint.is_some());
        assert!(t.output_schema.is_some(), "{} has an outputSchema", t.name);
    }
    let schema_of = |name: &str| {
        tools
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.output_schema.clone())
            .expect("schema")
    };

    let hw = call(client, "detect_hardware", json!({})).await;
    assert!(!is_error(&hw), "{hw:?}");
    validate(&schema_of("detect_hardware"), &structured(&hw));

    let sp = call(
        client,
        "select_profile",
        json!({"model": "llama3.1:8b", "hardware": gpu16(), "context_length": 131072}),
    )
    .await;
    assert!(!is_error(&sp), "{sp:?}");
    let out = structured(&sp);
    validate(&schema_of("select_profile"), &out);
    assert_eq!(out["kv_cache_type"], "q8_0");
    assert_eq!(out["context_length"], 131072);
    assert_eq!(out["fits"], true);

    // Without an engine (these servers point DOCKER_HOST at nothing) the stack
    // tools answer with an error result that validates too.
    for (tool, args) in [
        ("stack_status", json!({})),
        ("compose_up", json!({"dry_run": true})),
        ("compose_down", json!({"dry_run": true})),
    ] {
        let r = call(client, tool, args).await;
        assert!(is_error(&r), "{tool}: {r:?}");
        validate(&schema_of(tool), &structured(&r));
    }

    // A profile decided on this machine's own hardware also validates.
    let here = call(client, "select_profile", json!({"model": "phi3:mini"})).await;
    assert!(!is_error(&here), "{here:?}");
    validate(&schema_of("select_profile"), &structured(&here));
    assert_eq!(structured(&here)["hardware_source"], "detected");

    // Without an engine (these servers get none) health and recover fail as
    // tool results whose error form validates too, and say what to do.
    for (tool, args) in [
        ("health", json!({})),
        ("recover", json!({"service": "web"})),
    ] {
        let r = call(client, tool, args).await;
        assert!(is_error(&r), "{tool}: {r:?}");
        let out = structured(&r);
        validate(&schema_of(tool), &out);
        assert!(out["error"]["next_step"].is_string(), "{out:#}");
    }
    // The backup tools on a stack without data services or backups (they
    // need the Compose CLI for the stack model, not an engine). Results and
    // errors alike validate against each tool's outputSchema.
    let listed = call(client, "list_backups", json!({})).await;
    assert!(!is_error(&listed), "{listed:?}");
    validate(&schema_of("list_backups"), &structured(&listed));
    assert_eq!(structured(&listed)["total"], 0);
    let pruned = call(client, "prune_backups", json!({})).await;
    assert!(!is_error(&pruned), "{pruned:?}");
    validate(&schema_of("prune_backups"), &structured(&pruned));
    assert_eq!(structured(&pruned)["deleted"], json!([]));
    for (tool, args) in [
        ("backup", json!({})),
        ("verify_backup", json!({})),
        ("restore", json!({"backup_id": "20261124T130501Z"})),
    ] {
        let r = call(client, tool, args).await;
        assert!(is_error(&r), "{tool}: {r:?}");
        validate(&schema_of(tool), &structured(&r));
    }
}

#[tokio::test]
async fn stdio_both_eras() {
    for era in ERAS {
        let stack = TestStack::new("");
        let client = stdio_client(
            stack.path(),
            &[],
            TestClient::new(Person::Absent, era.clone()),
        )
        .await;
        exercise(&client).await;
        client.cancel().await.expect("close");
    }
}

#[tokio::test]
async fn http_both_eras() {
    let stack = TestStack::new("");
    let server = http_server(stack.path(), &[]).await;
    for era in ERAS {
        let client = http_client(&server, TestClient::new(Person::Absent, era.clone()), None).await;
        exercise(&client).await;
        client.cancel().await.expect("close");
    }
}

#[tokio::test]
async fn prompts_are_listed_and_rendered() {
    let stack = TestStack::new("");
    let client = stdio_client(
        stack.path(),
        &[],
        TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25),
    )
    .await;
    let prompts = client.list_all_prompts().await.expect("prompts/list");
    let names: Vec<&str> = prompts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "choose_model",
            "diagnose_unhealthy",
            "provision_stack",
            "safe_change",
            "tune_memory"
        ]
    );
    let mut args = serde_json::Map::new();
    args.insert("model".into(), json!("qwen2.5:7b"));
    let p = client
        .get_prompt(
            rmcp::model::GetPromptRequestParams::new("provision_stack").with_arguments(args),
        )
        .await
        .expect("prompts/get");
    let text = serde_json::to_string(&p.messages).expect("json");
    assert!(text.contains("qwen2.5:7b") && text.contains("select_profile"));
    // The model prompts: arguments filled in, the tools they drive named.
    let mut args = serde_json::Map::new();
    args.insert("candidates".into(), json!("llama3.1:8b, phi3:mini"));
    let p = client
        .get_prompt(rmcp::model::GetPromptRequestParams::new("choose_model").with_arguments(args))
        .await
        .expect("choose_model");
    let text = serde_json::to_string(&p.messages).expect("json");
    assert!(text.contains("llama3.1:8b, phi3:mini") && text.contains("32768 tokens"));
    assert!(text.contains("select_profile") && text.contains("pull_model"));
    let mut args = serde_json::Map::new();
    args.insert("context_length".into(), json!("65536"));
    let p = client
        .get_prompt(rmcp::model::GetPromptRequestParams::new("tune_memory").with_arguments(args))
        .await
        .expect("tune_memory");
    let text = serde_json::to_string(&p.messages).expect("json");
    assert!(text.contains("`context_length: 65536`") && text.contains("set_kv_cache"));
    assert!(
        text.contains("fit the loaded model entirely on the GPU"),
        "the default goal"
    );
    assert!(
        client
            .get_prompt(rmcp::model::GetPromptRequestParams::new("provision_stack"))
            .await
            .is_err(),
        "missing required argument"
    );
    client.cancel().await.expect("close");
}

/// Each bad call is a tool error naming the field (and allowed values where
/// there is a list), and the next good call is still served.
#[tokio::test]
async fn bad_input_is_rejected_and_the_server_keeps_serving() {
    let stack = TestStack::new("KEEP=1\n");
    let client = stdio_client(
        stack.path(),
        &[],
        TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25),
    )
    .await;
    let mega = "x".repeat(1 << 20);
    let cases: Vec<(Value, &str, Option<&str>)> = vec![
        (json!({"model": 42}), "model", None),
        (json!({}), "model", None),
        (
            json!({"model": "llama3.1:8b", "kv_cache_types": ["q5_k"]}),
            "kv_cache_types[0]",
            Some("q8_0"),
        ),
        (
            json!({"model": "llama3.1:8b", "context_length": -1}),
            "context_length",
            None,
        ),
        (
            json!({"model": "llama3.1:8b", "context_length": 1_000_000_000_000u64}),
            "context_length",
            None,
        ),
        (
            json!({"model": "llama3.1:8b", "context_length": 1_000_000_000}),
            "context_length",
            None,
        ),
        (
            json!({"model": "llama3.1:8b", "num_parallel": 0}),
            "num_parallel",
            None,
        ),
        (
            json!({"model": "no-such-model:1b"}),
            "model",
            Some("llama3.1:8b"),
        ),
        (json!({"model": mega}), "model", None),
        (
            json!({"model": "llama3.1:8b", "bogus": true}),
            "bogus",
            None,
        ),
        (
            json!({"model": {"name": "x", "weights_bytes": -5, "layers": 1, "kv_heads": 1, "head_dim": 1, "max_context": 4096}}),
            "model.weights_bytes",
            None,
        ),
        (
            json!({"model": {"name": "x", "weights_bytes": 5, "layers": 0, "kv_heads": 1, "head_dim": 1, "max_context": 4096}}),
            "model.layers",
            None,
        ),
        (
            json!({"model": "llama3.1:8b", "hardware": {"memory_total_bytes": "lots"}}),
            "hardware.memory_total_bytes",
            None,
        ),
        (
            json!({"model": "llama3.1:8b", "write_env": "yes"}),
            "write_env",
            None,
        ),
        (
            json!({"model": "llama3.1:8b", "confirm_token": "abc"}),
            "confirm_token",
            None,
        ),
    ];
    let tools = client.list_all_tools().await.expect("list");
    let schema = tools
        .iter()
        .find(|t| t.name == "select_profile")
        .and_then(|t| t.output_schema.clone())
        .expect("schema");
    for (args, field, allowed) in cases {
        let r = call(&client, "select_profile", args.clone()).await;
        assert!(is_error(&r), "rejected: {args}");
        validate(&schema, &structured(&r));
        let err = &structured(&r)["error"];
        assert_eq!(err["kind"], "invalid_input", "{err}");
        assert_eq!(err["field"], field, "field named for {args}: {err}");
        let msg = err["message"].as_str().expect("message");
        assert!(msg.len() < 4096, "message is bounded");
        if let Some(a) = allowed {
            assert!(
                err["allowed"]
                    .as_array()
                    .expect("allowed listed")
                    .iter()
                    .any(|v| v == a),
                "{err}"
            );
            assert!(msg.contains(a), "message names allowed values: {msg}");
        }
        // The server still serves.
        let ok = call(&client, "detect_hardware", json!({})).await;
        assert!(!is_error(&ok));
    }
    let r = call(&client, "detect_hardware", json!({"refresh": "please"})).await;
    assert_eq!(structured(&r)["error"]["field"], "refresh");
    // Unknown tool: a protocol error naming the tools.
    let unknown = client
        .call_tool(rmcp::model::CallToolRequestParams::new("drop_everything"))
        .await
        .expect_err("unknown tool is a protocol error");
    assert!(unknown.to_string().contains("detect_hardware"), "{unknown}");
    assert_eq!(stack.env_text(), "KEEP=1\n", "nothing changed");
    client.cancel().await.expect("close");
}

/// detect_hardware on this machine, with no engine and no Ollama reachable.
#[tokio::test]
async fn detect_hardware_reports_this_machine() {
    let stack = TestStack::new("");
    let client = stdio_client(
        stack.path(),
        &[],
        TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25),
    )
    .await;
    let started = std::time::Instant::now();
    let r = structured(&call(&client, "detect_hardware", json!({"refresh": true})).await);
    let elapsed = started.elapsed();
    let nproc: u64 = String::from_utf8(
        std::process::Command::new("nproc")
            .output()
            .expect("nproc")
            .stdout,
    )
    .expect("utf8")
    .trim()
    .parse()
    .expect("number");
    assert_eq!(r["cpu"]["logical_cores"], nproc);
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("MemTotal");
    assert_eq!(r["memory"]["total_bytes"], kb * 1024);
    if std::path::Path::new("/dev/nvidiactl").exists() {
        eprintln!("NVIDIA device present: gpus not asserted empty");
    } else {
        assert_eq!(r["gpus"], json!([]));
        assert!(r["gpu_absent_reason"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
    }
    assert_eq!(r["runtime"]["docker"]["reachable"], false);
    assert!(r["runtime"]["docker"]["error"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert_eq!(r["runtime"]["ollama"]["reachable"], false);
    assert_eq!(r["runtime"]["ollama"]["url"], "http://127.0.0.1:9");
    assert!(
        elapsed < std::time::Duration::from_millis(2500),
        "absent daemons cost at most the 1 s timeout: {elapsed:?}"
    );
    client.cancel().await.expect("close");
}
