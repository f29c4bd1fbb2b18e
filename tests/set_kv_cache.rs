//! set_kv_cache against the bundled compose file on a real engine, with the
//! REAL Ollama 0.11.4 as its ollama-cpu service (stackpilot-test/ollama:0.11.4,
//! built by scripts/peers/ollama.sh) and a real registry beside it, from which
//! pull_model brings SmolLM2-135M into the container: the .env write, the
//! recreate through compose_up, the container environment, Ollama's
//! `server config` line, a real warm-up load, /api/ps and the KV cache
//! llama.cpp allocated (its log line) are all the real server's. health
//! `deep` sees the model loaded with its context. Plus the input checks,
//! which need no engine, and the systemd target against stand-ins for
//! systemctl and journalctl (no systemd here).
mod common;

use std::time::Duration;

use common::docker::{engine, DockerStack};
use common::ollama_peers::{ollama_peers, OllamaPeers};
use common::*;
use rmcp::model::ProtocolVersion;
use serde_json::{json, Value};

const ERA: ProtocolVersion = ProtocolVersion::V_2025_11_25;
const SERVICE: &str = "ollama-cpu";
/// The seeded model as the stack's Ollama pulls it from the registry service.
const MODEL: &str = "registry:5000/library/smollm2:135m";

/// The bundled compose file plus tests/stacks/ollama-real's overlay and .env,
/// with ollama-cpu (the real Ollama) and the registry up; when `load`, the
/// model pulled and loaded (a few tokens generated).
async fn bundled_with_real_ollama(
    host: &str,
    load: bool,
) -> Option<(DockerStack, String, OllamaPeers)> {
    let peers = ollama_peers()?;
    let (Some(image), Some(registry_image)) = (peers.image.clone(), peers.registry_image.clone())
    else {
        return common::ollama_peers::unavailable(
            "no Ollama or registry image (no Docker engine when scripts/peers/ollama.sh ran)",
        );
    };
    let stack = DockerStack::new("ollama-real", host);
    std::fs::copy(
        root().join("compose/docker-compose.yml"),
        stack.path().join("docker-compose.yml"),
    )
    .expect("copy the bundled compose file");
    stack.set_env("OLLAMA_IMAGE", &image);
    stack.set_env("STACKPILOT_TEST_REGISTRY_IMAGE", &registry_image);
    stack.set_env(
        "STACKPILOT_TEST_REGISTRY_DATA",
        &peers.data.display().to_string(),
    );
    let up = stack.compose(&[
        "up",
        "-d",
        "--wait",
        "--wait-timeout",
        "120",
        SERVICE,
        "registry",
    ]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let url = format!(
        "http://127.0.0.1:{}",
        stack.env_value("OLLAMA_PORT").expect("port")
    );
    if load {
        let http = reqwest::Client::new();
        let pulled = http
            .post(format!("{url}/api/pull"))
            .json(&json!({"model": MODEL, "insecure": true, "stream": false}))
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .expect("pull");
        assert!(pulled.status().is_success(), "{:?}", pulled.text().await);
        generate(&url).await;
    }
    Some((stack, url, peers))
}

/// A real generate through the stack's Ollama: a few tokens on the CPU.
async fn generate(url: &str) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{url}/api/generate"))
        .json(
            &json!({"model": MODEL, "prompt": "Say hello.", "stream": false,
            "options": {"num_predict": 4}}),
        )
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .expect("generate");
    assert!(r.status().is_success(), "{r:?}");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["done"], true, "{v}");
    assert!(v["eval_count"].as_u64().is_some_and(|n| n >= 1), "{v}");
    v
}

/// A server on the stack with the real engine and no OLLAMA_HOST (the quiet
/// test default points it at nothing): the tools find the stack's ollama.
async fn client(stack: &DockerStack, extra: &[&str], tc: TestClient) -> Client {
    stdio_client_env(
        stack.path(),
        extra,
        tc,
        &[
            ("DOCKER_HOST", stack.docker_host.as_str()),
            ("OLLAMA_HOST", ""),
        ],
    )
    .await
}

fn container_id(stack: &DockerStack) -> String {
    let out = stack.compose(&["ps", "-q", SERVICE]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn container_env(stack: &DockerStack, id: &str) -> Vec<String> {
    let out = stack.docker(&["inspect", "-f", "{{json .Config.Env}}", id]);
    serde_json::from_slice(&out.stdout).expect("env json")
}

async fn ps(url: &str) -> Value {
    reqwest::get(format!("{url}/api/ps"))
        .await
        .expect("ps")
        .json()
        .await
        .expect("ps json")
}

fn step<'a>(out: &'a Value, target: &str) -> &'a Value {
    out["plan"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["target"] == target)
        .unwrap_or_else(|| panic!("no step {target}: {out:#}"))
}

fn checks(out: &Value) -> std::collections::BTreeMap<String, (String, String)> {
    out["verification"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["check"].as_str().unwrap_or_default().to_string(),
                (
                    c["status"].as_str().unwrap_or_default().to_string(),
                    c["detail"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

#[tokio::test]
async fn pull_health_and_kv_cache_on_the_bundled_stack_with_the_real_ollama() {
    let Some(host) = engine() else { return };
    let Some((stack, url, peers)) = bundled_with_real_ollama(&host, false).await else {
        return;
    };
    let client = client(&stack, &[], TestClient::new(Person::Absent, ERA)).await;
    let tools = client.list_all_tools().await.expect("tools");

    // pull_model into the stack's Ollama (found through the engine), from the
    // registry service of the same stack.
    let r = call(
        &client,
        "pull_model",
        json!({"model": MODEL, "insecure": true}),
    )
    .await;
    assert!(!is_error(&r), "{r:?}");
    let pulled = structured(&r);
    validate_output(&tools, "pull_model", &pulled);
    assert_eq!(pulled["status"], "success", "{pulled:#}");
    assert_eq!(pulled["ollama_url"], url.as_str());
    assert_eq!(pulled["ollama_version"], peers.version);
    assert_eq!(pulled["fit"]["model"]["layers"], 30);

    // A real generate through it, then health `deep` sees the model loaded.
    generate(&url).await;
    let r = call(&client, "health", json!({"deep": true})).await;
    assert!(!is_error(&r), "{r:?}");
    let report = structured(&r);
    let svc = report["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["service"] == SERVICE)
        .cloned()
        .unwrap_or_else(|| panic!("no {SERVICE}: {report:#}"));
    let o = &svc["ollama"];
    assert_eq!(o["version"], peers.version, "{svc:#}");
    assert_eq!(o["models"][0]["name"], MODEL, "{svc:#}");
    assert_eq!(o["models"][0]["context_length"], 4096, "{svc:#}");
    assert_eq!(o["models"][0]["gpu_share"], 0.0);
    assert!(o["models"][0]["size_bytes"]
        .as_u64()
        .is_some_and(|b| b > 98_000_000));
    assert_eq!(
        svc["verdict"], "healthy",
        "a CPU service on the CPU: {svc:#}"
    );

    // set_kv_cache: a longer context. Plan first: current and new settings,
    // the memory effect from the real /api/show, a guarded recreate.
    let before_id = container_id(&stack);
    let before_env = std::fs::read_to_string(stack.path().join(".env")).expect(".env");
    let args = json!({"type": "f16", "context_length": 8192});
    let first = structured(&call(&client, "set_kv_cache", args.clone()).await);
    validate_output(&tools, "set_kv_cache", &first);
    assert_eq!(first["confirmation_required"], true, "{first:#}");
    let c = step(&first, "OLLAMA_CONTEXT_LENGTH");
    assert_eq!(
        (
            c["action"].as_str(),
            c["before"].as_str(),
            c["after"].as_str()
        ),
        (Some("overwrite"), Some("4096"), Some("8192"))
    );
    assert_eq!(step(&first, "OLLAMA_KV_CACHE_TYPE")["action"], "unchanged");
    let recreate = step(&first, &format!("service {SERVICE}"));
    assert_eq!(recreate["action"], "recreate");
    assert_eq!(recreate["cost"]["models_unloaded"], true);
    assert_eq!(
        container_id(&stack),
        before_id,
        "nothing recreated before the confirmation"
    );
    assert_eq!(
        std::fs::read_to_string(stack.path().join(".env")).expect(".env"),
        before_env
    );

    let dry = structured(
        &call(&client, "set_kv_cache", {
            let mut a = args.clone();
            a["dry_run"] = json!(true);
            a
        })
        .await,
    );
    assert_eq!(dry["plan"]["digest"], first["plan"]["digest"]);
    assert_eq!(dry["current"]["context_length"], 4096);
    let effect = &dry["memory_effect"];
    assert_eq!(effect["profile"], "cpu");
    // 30 layers x 3 KV heads x 64 x 2 x 2 bytes: 90 MiB at 4096, 180 MiB at 8192.
    assert_eq!(effect["before"]["kv_cache_bytes"], 90u64 << 20);
    assert_eq!(effect["after"]["kv_cache_bytes"], 180u64 << 20);
    assert!(
        dry["model"]
            .as_str()
            .is_some_and(|m| m.contains("/api/show")),
        "{dry:#}"
    );

    // Confirm with the token: .env written, only ollama-cpu recreated, verified
    // by the real server's lines.
    let mut with_token = args.clone();
    with_token["confirm_token"] = first["confirm_token"].clone();
    let r = call(&client, "set_kv_cache", with_token).await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    validate_output(&tools, "set_kv_cache", &out);
    assert_eq!(out["applied"], true);
    assert_eq!(out["verified"], true, "{out:#}");
    let checks = checks(&out);
    for c in [
        "environment",
        "startup_log",
        "reachable",
        "warm_up",
        "api_ps",
        "kv_cache",
    ] {
        assert_eq!(
            checks.get(c).map(|v| v.0.as_str()),
            Some("ok"),
            "{c}: {out:#}"
        );
    }
    let kv = &checks["kv_cache"].1;
    assert!(
        kv.contains("180.00 MiB") && kv.contains("K f16 90.00 MiB"),
        "{kv}"
    );
    assert!(
        kv.contains("8192 cells") && kv.contains("predicted 180.00 MiB"),
        "{kv}"
    );
    let after_id = container_id(&stack);
    assert_ne!(after_id, before_id, "the ollama container was recreated");
    let env = container_env(&stack, &after_id);
    assert!(
        env.iter().any(|e| e == "OLLAMA_CONTEXT_LENGTH=8192"),
        "{env:?}"
    );
    assert_eq!(
        stack.env_value("OLLAMA_CONTEXT_LENGTH").as_deref(),
        Some("8192")
    );
    let ps = ps(&url).await;
    assert_eq!(ps["models"][0]["name"], MODEL, "warmed up again: {ps:#}");
    assert_eq!(ps["models"][0]["context_length"], 8192);
    let logs = stack.docker(&["logs", &after_id]);
    let text = String::from_utf8_lossy(&logs.stderr);
    assert!(
        text.contains("OLLAMA_CONTEXT_LENGTH:8192"),
        "the real server config line"
    );
    assert!(
        text.contains("KV self size  =  180.00 MiB"),
        "the real KV line"
    );

    // q8_0 here: the real 0.11.4 would start with it and allocate f16 (no
    // flash attention on CPU), so it is refused, naming `type` and `f16`.
    let r = call(&client, "set_kv_cache", json!({"type": "q8_0"})).await;
    assert!(is_error(&r), "{r:?}");
    let e = &structured(&r)["error"];
    assert_eq!(e["field"], "type", "{e:#}");
    assert_eq!(e["allowed"], json!(["f16"]), "{e:#}");
    let msg = e["message"].as_str().expect("message");
    assert!(
        msg.contains("would have no effect") && msg.contains("Ollama 0.11.4"),
        "{msg}"
    );
    assert_eq!(
        container_id(&stack),
        after_id,
        "a refused call changes nothing"
    );
    assert_eq!(
        stack.env_value("OLLAMA_KV_CACHE_TYPE").as_deref(),
        Some("f16")
    );

    // The same call again: nothing to change, nothing touched.
    let again = structured(&call(&client, "set_kv_cache", args).await);
    assert_eq!(again["changes"], 0, "{again:#}");
    assert_eq!(again["applied"], false);
    assert_eq!(container_id(&stack), after_id);
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn a_declined_change_leaves_ollama_untouched() {
    let Some(host) = engine() else { return };
    let Some((stack, url, _)) = bundled_with_real_ollama(&host, true).await else {
        return;
    };
    let tc = TestClient::new(Person::Decline, ERA);
    let asked = tc.asked.clone();
    let client = client(&stack, &[], tc).await;
    let before_id = container_id(&stack);
    let before_env = std::fs::read_to_string(stack.path().join(".env")).expect(".env");
    let r = call(
        &client,
        "set_kv_cache",
        json!({"type": "f16", "context_length": 2048}),
    )
    .await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    assert_eq!(out["declined"], true, "{out:#}");
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(container_id(&stack), before_id, "not recreated");
    assert_eq!(
        std::fs::read_to_string(stack.path().join(".env")).expect(".env"),
        before_env
    );
    assert_eq!(
        ps(&url).await["models"][0]["name"],
        MODEL,
        "the model stays loaded"
    );
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn a_compose_file_that_ignores_dotenv_is_refused_before_anything_changes() {
    let Some(host) = engine() else { return };
    let Some((stack, _url, _)) = bundled_with_real_ollama(&host, false).await else {
        return;
    };
    // Pin the context in the compose file itself: writing .env would change nothing.
    stack.edit_compose(
        "OLLAMA_CONTEXT_LENGTH: ${OLLAMA_CONTEXT_LENGTH:-32768}",
        "OLLAMA_CONTEXT_LENGTH: 4096",
    );
    let client = client(
        &stack,
        &["--allow-destructive"],
        TestClient::new(Person::Absent, ERA),
    )
    .await;
    let before_id = container_id(&stack);
    let before_env = std::fs::read_to_string(stack.path().join(".env")).expect(".env");
    let r = call(
        &client,
        "set_kv_cache",
        json!({"type": "f16", "context_length": 8192}),
    )
    .await;
    assert!(is_error(&r), "{r:?}");
    let e = structured(&r);
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not take these keys from .env")
                && m.contains("OLLAMA_CONTEXT_LENGTH=8192")),
        "{e:#}"
    );
    assert_eq!(container_id(&stack), before_id);
    assert_eq!(
        std::fs::read_to_string(stack.path().join(".env")).expect(".env"),
        before_env
    );
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn bad_input_names_the_field_and_the_allowed_values() {
    let stack = TestStack::new("");
    let client = stdio_client(stack.path(), &[], TestClient::new(Person::Absent, ERA)).await;
    let cases = [
        (
            json!({"type": "q5_1"}),
            "type",
            Some(vec!["f16", "q8_0", "q4_0"]),
        ),
        (json!({}), "type", None),
        (
            json!({"type": "q8_0", "target": "kubernetes"}),
            "target",
            Some(vec!["auto", "compose", "systemd", "launchd"]),
        ),
        (
            json!({"type": "q8_0", "context_length": 100}),
            "context_length",
            None,
        ),
        (
            json!({"type": "q8_0", "num_parallel": 0}),
            "num_parallel",
            None,
        ),
        (
            json!({"type": "q8_0", "model": "llama3; rm -rf /"}),
            "model",
            None,
        ),
        (
            json!({"type": "q8_0", "model": "../../etc/passwd"}),
            "model",
            None,
        ),
        (
            json!({"type": "q8_0", "model": "x".repeat(10_240)}),
            "model",
            None,
        ),
        (
            json!({"type": "q8_0", "wait_timeout_s": 0}),
            "wait_timeout_s",
            None,
        ),
    ];
    for (args, field, allowed) in cases {
        let r = call(&client, "set_kv_cache", args.clone()).await;
        assert!(is_error(&r), "{args}: {r:?}");
        let e = &structured(&r)["error"];
        assert_eq!(e["field"], field, "{args}: {e:#}");
        if let Some(allowed) = allowed {
            for a in allowed {
                assert!(
                    e["message"].as_str().is_some_and(|m| m.contains(a)),
                    "{args}: {a} in {e:#}"
                );
            }
        }
    }
    // Still serving.
    let r = call(&client, "detect_hardware", json!({})).await;
    assert!(!is_error(&r));
    client.cancel().await.expect("close");
}

/// A host Ollama under "systemd": tests/fixtures/systemd's stand-in systemctl
/// and journalctl run the Ollama stand-in binary as ollama.service with the
/// drop-ins' Environment= lines. Stopped on drop.
struct FakeSystemd {
    state: tempfile::TempDir,
    url: String,
    env: Vec<(String, String)>,
}

impl FakeSystemd {
    fn start() -> Self {
        let state = tempfile::tempdir().expect("state");
        let units = state.path().join("units");
        let dropins = units.join("ollama.service.d");
        std::fs::create_dir_all(&dropins).expect("units");
        // What a person may already have: an override with Ollama's defaults spelled out.
        std::fs::write(
            dropins.join("override.conf"),
            "[Service]\nEnvironment=\"OLLAMA_KV_CACHE_TYPE=f16\"\nEnvironment=\"OLLAMA_CONTEXT_LENGTH=4096\"\n",
        )
        .expect("override");
        let catalogue = state.path().join("catalogue.json");
        std::fs::write(
            &catalogue,
            json!({"models": [{"name": "qwen2.5:7b", "layer_count": 1, "layer_size": 1000, "local": true}]})
                .to_string(),
        )
        .expect("catalogue");
        let port = common::docker::free_port();
        let fixtures = root().join("tests/fixtures/systemd");
        let env: Vec<(String, String)> = [
            (
                "STACKPILOT_SYSTEMCTL",
                fixtures.join("systemctl").display().to_string(),
            ),
            (
                "STACKPILOT_JOURNALCTL",
                fixtures.join("journalctl").display().to_string(),
            ),
            ("STACKPILOT_SYSTEMD_UNIT_DIR", units.display().to_string()),
            ("FAKE_SYSTEMD_STATE", state.path().display().to_string()),
            (
                "FAKE_OLLAMA_BIN",
                env!("CARGO_BIN_EXE_ollama-standin").to_string(),
            ),
            ("FAKE_OLLAMA_LISTEN", format!("127.0.0.1:{port}")),
            (
                "FAKE_OLLAMA_ARGS",
                format!("--catalogue {}", catalogue.display()),
            ),
            ("OLLAMA_HOST", format!("http://127.0.0.1:{port}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let me = Self {
            state,
            url: format!("http://127.0.0.1:{port}"),
            env,
        };
        let started = me.systemctl(&["start"]);
        assert!(started.status.success(), "{started:?}");
        me
    }

    fn systemctl(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(&self.env[0].1)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("fake systemctl")
    }

    fn dropin(&self) -> Option<String> {
        std::fs::read_to_string(
            self.state
                .path()
                .join("units/ollama.service.d/stackpilot.conf"),
        )
        .ok()
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.state.path().join("calls.log")).unwrap_or_default()
    }

    fn journal(&self) -> String {
        std::fs::read_to_string(self.state.path().join("journal.log")).unwrap_or_default()
    }
}

impl Drop for FakeSystemd {
    fn drop(&mut self) {
        let _ = self.systemctl(&["stop"]);
    }
}

#[tokio::test]
async fn systemd_target_writes_the_dropin_restarts_verifies_and_rolls_back() {
    let sd = FakeSystemd::start();
    let loaded = reqwest::Client::new()
        .post(format!("{}/api/generate", sd.url))
        .json(&json!({"model": "qwen2.5:7b"}))
        .send()
        .await
        .expect("load");
    assert!(loaded.status().is_success());
    let stack = TestStack::new("");
    let env: Vec<(&str, &str)> = sd
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let tc = TestClient::new(Person::Accept, ERA);
    let asked = tc.asked.clone();
    let client = stdio_client_env(stack.path(), &[], tc, &env).await;
    let tools = client.list_all_tools().await.expect("tools");

    // auto with OLLAMA_HOST set: the host's systemd unit.
    let r = call(
        &client,
        "set_kv_cache",
        json!({"type": "q8_0", "context_length": 8192}),
    )
    .await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    validate_output(&tools, "set_kv_cache", &out);
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "asked once"
    );
    assert_eq!(out["target"], "systemd");
    assert_eq!(out["applies_to"], "ollama.service");
    assert_eq!(
        out["current"]["kv_cache_type"], "f16",
        "read from the unit's environment"
    );
    assert_eq!(out["current"]["context_length"], 4096);
    assert_eq!(out["verified"], true, "{out:#}");
    for c in [
        "environment",
        "startup_log",
        "reachable",
        "warm_up",
        "api_ps",
    ] {
        let status = out["verification"]
            .as_array()
            .expect("checks")
            .iter()
            .find(|v| v["check"] == c)
            .map(|v| v["status"].clone());
        assert_eq!(status, Some(json!("ok")), "{c}: {out:#}");
    }
    let dropin = sd.dropin().expect("drop-in written");
    for line in [
        "Environment=\"OLLAMA_KV_CACHE_TYPE=q8_0\"",
        "Environment=\"OLLAMA_CONTEXT_LENGTH=8192\"",
        "Environment=\"OLLAMA_FLASH_ATTENTION=1\"",
    ] {
        assert!(dropin.contains(line), "{line} in {dropin}");
    }
    let calls = sd.calls();
    assert!(
        calls.contains("daemon-reload\nrestart ollama.service"),
        "{calls}"
    );
    let ps: Value = reqwest::get(format!("{}/api/ps", sd.url))
        .await
        .expect("ps")
        .json()
        .await
        .expect("json");
    assert_eq!(ps["models"][0]["name"], "qwen2.5:7b", "warmed up: {ps:#}");
    assert_eq!(ps["models"][0]["context_length"], 8192);

    // A restart that fails: the previous drop-in is put back and the unit restarted with it.
    std::fs::write(sd.state.path().join("fail-next-restart"), "").expect("flag");
    let r = call(
        &client,
        "set_kv_cache",
        json!({"type": "q4_0", "target": "systemd"}),
    )
    .await;
    assert!(is_error(&r), "{r:?}");
    let e = structured(&r);
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("failed")
                && m.contains("previous drop-in was put back and the unit restarted")),
        "{e:#}"
    );
    assert_eq!(
        sd.dropin().as_deref(),
        Some(dropin.as_str()),
        "the q8_0 drop-in is back"
    );
    let journal = sd.journal();
    let last = journal
        .lines()
        .rev()
        .find(|l| l.contains("server config"))
        .expect("started again");
    assert!(last.contains("OLLAMA_KV_CACHE_TYPE:q8_0"), "{last}");
    client.cancel().await.expect("close");
}
