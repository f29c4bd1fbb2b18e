//! set_kv_cache against the bundled compose file on a real engine: the
//! ollama-cpu service runs the Ollama stand-in image (a static binary in a
//! FROM scratch image, tests/images/ollama-standin), so the .env write, the
//! recreate through compose_up, the container environment, Ollama's startup
//! line, the warm-up load and /api/ps are all real. Plus the input checks,
//! which need no engine.
mod common;

use std::time::Duration;

use common::docker::{engine, DockerStack};
use common::*;
use rmcp::model::ProtocolVersion;
use serde_json::{json, Value};

const ERA: ProtocolVersion = ProtocolVersion::V_2025_11_25;
const SERVICE: &str = "ollama-cpu";

/// The bundled compose file plus tests/stacks/ollama-kv's overlay and .env,
/// with ollama-cpu up and smollm2:135m loaded.
async fn bundled_with_standin(host: &str) -> Option<(DockerStack, String)> {
    let gguf = gguf()?;
    let stack = DockerStack::new("ollama-kv", host);
    std::fs::copy(
        root().join("compose/docker-compose.yml"),
        stack.path().join("docker-compose.yml"),
    )
    .expect("copy the bundled compose file");
    stack.set_env("STANDIN_GGUF", &gguf.display().to_string());
    std::fs::write(
        stack.path().join("standin-catalogue.json"),
        json!({"models": [{"name": "smollm2:135m", "gguf": true, "local": true}]}).to_string(),
    )
    .expect("catalogue");
    let up = stack.compose(&["up", "-d", "--wait", "--wait-timeout", "60", SERVICE]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let url = format!(
        "http://127.0.0.1:{}",
        stack.env_value("OLLAMA_PORT").expect("port")
    );
    let loaded = reqwest::Client::new()
        .post(format!("{url}/api/generate"))
        .json(&json!({"model": "smollm2:135m"}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("load");
    assert!(loaded.status().is_success(), "{loaded:?}");
    Some((stack, url))
}

/// A server on the stack with the real engine and no OLLAMA_HOST (the quiet
/// test default points it at nothing): set_kv_cache finds the stack's ollama.
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

#[tokio::test]
async fn plan_confirm_apply_and_verify_on_the_bundled_compose_stack() {
    let Some(host) = engine() else { return };
    let Some((stack, url)) = bundled_with_standin(&host).await else {
        return;
    };
    let client = client(&stack, &[], TestClient::new(Person::Absent, ERA)).await;
    let tools = client.list_all_tools().await.expect("tools");
    let before_id = container_id(&stack);
    let before_env = std::fs::read_to_string(stack.path().join(".env")).expect(".env");
    let args = json!({"type": "q8_0", "context_length": 16384, "num_parallel": 2});

    // Plan: current and new settings, the memory effect, a guarded recreate.
    let first = structured(&call(&client, "set_kv_cache", args.clone()).await);
    validate_output(&tools, "set_kv_cache", &first);
    assert_eq!(first["confirmation_required"], true, "{first:#}");
    let t = step(&first, "OLLAMA_KV_CACHE_TYPE");
    assert_eq!(
        (
            t["action"].as_str(),
            t["before"].as_str(),
            t["after"].as_str()
        ),
        (Some("overwrite"), Some("f16"), Some("q8_0"))
    );
    assert_eq!(
        step(&first, "OLLAMA_FLASH_ATTENTION")["after"],
        "1",
        "a quantized cache turns flash attention on"
    );
    assert_eq!(step(&first, "OLLAMA_CONTEXT_LENGTH")["after"], "16384");
    assert_eq!(step(&first, "OLLAMA_NUM_PARALLEL")["after"], "2");
    let recreate = step(&first, &format!("service {SERVICE}"));
    assert_eq!(recreate["action"], "recreate");
    assert_eq!(recreate["destructive"], true);
    assert_eq!(recreate["cost"]["models_unloaded"], true);
    let summary = first["plan"]["summary"].as_str().expect("summary");
    assert!(
        summary.contains("KV cache f16 -> q8_0") && summary.contains("smollm2"),
        "{summary}"
    );
    assert_eq!(
        container_id(&stack),
        before_id,
        "nothing recreated before the confirmation"
    );
    assert_eq!(
        std::fs::read_to_string(stack.path().join(".env")).expect(".env"),
        before_env
    );

    // The dry run shows the same plan, with the memory effect in bytes.
    let dry = structured(
        &call(&client, "set_kv_cache", {
            let mut a = args.clone();
            a["dry_run"] = json!(true);
            a
        })
        .await,
    );
    validate_output(&tools, "set_kv_cache", &dry);
    assert_eq!(dry["plan"]["digest"], first["plan"]["digest"]);
    assert_eq!(dry["target"], "compose");
    assert_eq!(dry["applies_to"], format!("service {SERVICE}"));
    assert_eq!(dry["current"]["kv_cache_type"], "f16");
    assert_eq!(dry["current"]["context_length"], 8192);
    let effect = &dry["memory_effect"];
    assert_eq!(effect["profile"], "cpu");
    let kv = |side: &str| effect[side]["kv_cache_bytes"].as_f64().expect("kv bytes");
    // f16 (2 bytes) -> q8_0 (17/16 bytes), twice the context, two slots: 17/8 of the cache.
    let ratio = kv("after") / kv("before");
    assert!(
        (ratio - 17.0 / 8.0).abs() < 0.001,
        "kv ratio {ratio}: {effect:#}"
    );
    assert!(
        dry["model"]
            .as_str()
            .is_some_and(|m| m.contains("/api/show")),
        "{dry:#}"
    );

    // Confirm with the token: .env written, only ollama-cpu recreated, verified.
    let mut with_token = args.clone();
    with_token["confirm_token"] = first["confirm_token"].clone();
    let r = call(&client, "set_kv_cache", with_token).await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    validate_output(&tools, "set_kv_cache", &out);
    assert_eq!(out["applied"], true);
    assert_eq!(out["verified"], true, "{out:#}");
    let checks: std::collections::BTreeMap<String, String> = out["verification"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["check"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for c in [
        "environment",
        "startup_log",
        "reachable",
        "warm_up",
        "api_ps",
    ] {
        assert_eq!(
            checks.get(c).map(String::as_str),
            Some("ok"),
            "{c}: {out:#}"
        );
    }
    let after_id = container_id(&stack);
    assert_ne!(after_id, before_id, "the ollama container was recreated");
    let env = container_env(&stack, &after_id);
    for kv in [
        "OLLAMA_KV_CACHE_TYPE=q8_0",
        "OLLAMA_FLASH_ATTENTION=1",
        "OLLAMA_CONTEXT_LENGTH=16384",
        "OLLAMA_NUM_PARALLEL=2",
    ] {
        assert!(env.iter().any(|e| e == kv), "{kv} in {env:?}");
        assert!(
            stack.env_value(kv.split('=').next().unwrap()).as_deref()
                == kv.split_once('=').map(|x| x.1),
            ".env has {kv}"
        );
    }
    let ps = ps(&url).await;
    assert_eq!(
        ps["models"][0]["name"], "smollm2:135m",
        "warmed up again: {ps:#}"
    );
    assert_eq!(ps["models"][0]["context_length"], 16384);
    let logs = stack.docker(&["logs", &after_id]);
    assert!(String::from_utf8_lossy(&logs.stderr).contains("OLLAMA_KV_CACHE_TYPE:q8_0"));

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
    let Some((stack, url)) = bundled_with_standin(&host).await else {
        return;
    };
    let tc = TestClient::new(Person::Decline, ERA);
    let asked = tc.asked.clone();
    let client = client(&stack, &[], tc).await;
    let before_id = container_id(&stack);
    let before_env = std::fs::read_to_string(stack.path().join(".env")).expect(".env");
    let r = call(&client, "set_kv_cache", json!({"type": "q4_0"})).await;
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
        "smollm2:135m",
        "the model stays loaded"
    );
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn a_compose_file_that_ignores_dotenv_is_refused_before_anything_changes() {
    let Some(host) = engine() else { return };
    let Some((stack, _url)) = bundled_with_standin(&host).await else {
        return;
    };
    // Pin the KV type in the compose file itself: writing .env would change nothing.
    stack.edit_compose(
        "OLLAMA_KV_CACHE_TYPE: ${OLLAMA_KV_CACHE_TYPE:-q8_0}",
        "OLLAMA_KV_CACHE_TYPE: f16",
    );
    let client = client(
        &stack,
        &["--allow-destructive"],
        TestClient::new(Person::Absent, ERA),
    )
    .await;
    let before_id = container_id(&stack);
    let before_env = std::fs::read_to_string(stack.path().join(".env")).expect(".env");
    let r = call(&client, "set_kv_cache", json!({"type": "q8_0"})).await;
    assert!(is_error(&r), "{r:?}");
    let e = structured(&r);
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not take these keys from .env")
                && m.contains("OLLAMA_KV_CACHE_TYPE=q8_0")),
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
