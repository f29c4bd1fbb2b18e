//! The MCP surface beyond tools (issue 15, parts 1 and 2), through rmcp's
//! client against the built binary: resources (listed, read, masked, paged),
//! argument completion, log messages, live updates of the stack's state from
//! the real engine's events, and long tools as tasks (created, polled,
//! completed, cancelled, found again after a disconnect, confirmed inside).
//! The engine tests run against the real Docker engine and Compose v2 on
//! throwaway copies of tests/stacks/web.
mod common;

use std::time::{Duration, Instant};

use common::docker::{engine, DockerStack};
use common::*;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, GetTaskParams, ProtocolVersion,
    ReadResourceRequestParams, ServerNotification, SubscriptionFilter, UpdateTaskParams,
};
use serde_json::{json, Value};

const OLD: ProtocolVersion = ProtocolVersion::V_2025_11_25;
const NEW: ProtocolVersion = ProtocolVersion::V_2026_07_28;

const PASSWORD: &str = "pw-Zq81-never-shown";

/// A stack the engine need not run: compose config works without a daemon.
fn offline_stack() -> TestStack {
    let stack = TestStack::new(&format!(
        "POSTGRES_PASSWORD={PASSWORD}\nOLLAMA_KEEP_ALIVE=5m\nWEB_PORT=18080\n"
    ));
    std::fs::write(
        stack.path().join("docker-compose.yml"),
        "services:\n  ollama:\n    image: stackpilot-test/busybox:1\n    pull_policy: never\n    environment:\n      OLLAMA_KEEP_ALIVE: ${OLLAMA_KEEP_ALIVE}\n  postgres:\n    image: stackpilot-test/busybox:1\n    pull_policy: never\n    environment:\n      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}\n      DATABASE_URL: postgres://app:${POSTGRES_PASSWORD}@postgres:5432/app\n  api:\n    image: stackpilot-test/busybox:1\n    pull_policy: never\n",
    )
    .expect("compose file");
    stack
}

async fn read(client: &Client, uri: &str) -> Result<Value, String> {
    let result = client
        .read_resource(ReadResourceRequestParams::new(uri))
        .await
        .map_err(|e| e.to_string())?;
    let contents = serde_json::to_value(&result.contents).expect("json");
    let first = &contents[0];
    assert_eq!(first["uri"], uri, "{first}");
    assert_eq!(first["mimeType"], "application/json", "{first}");
    let text = first["text"].as_str().expect("text contents");
    assert!(!text.contains(PASSWORD), "{uri} leaks the password: {text}");
    Ok(serde_json::from_str(text).expect("JSON resource"))
}

#[tokio::test]
async fn resources_are_listed_read_paged_and_masked() {
    let stack = offline_stack();
    let client = stdio_client(stack.path(), &[], TestClient::new(Person::Accept, OLD)).await;
    let resources = client.list_all_resources().await.expect("resources/list");
    let uris: Vec<String> = resources.iter().map(|r| r.uri.clone()).collect();
    for uri in [
        "stackpilot://stack/status",
        "stackpilot://stack/health",
        "stackpilot://stack/compose",
        "stackpilot://stack/env",
        "stackpilot://stack/audit",
        "stackpilot://stack/backups",
        "stackpilot://ollama/models",
        "stackpilot://host/hardware",
    ] {
        assert!(uris.contains(&uri.to_string()), "{uri} listed: {uris:?}");
    }
    for r in &resources {
        assert_eq!(r.mime_type.as_deref(), Some("application/json"));
        assert!(r.description.as_deref().is_some_and(|d| !d.is_empty()));
    }
    let templates = client
        .list_all_resource_templates()
        .await
        .expect("templates");
    let templates: Vec<String> = templates.iter().map(|t| t.uri_template.clone()).collect();
    assert!(templates.contains(&"stackpilot://stack/services/{service}".to_string()));
    assert!(templates.contains(&"stackpilot://stack/backups/{backup_id}".to_string()));

    // .env: every key, secret values redacted, stackpilot's own keys marked.
    let env = read(&client, "stackpilot://stack/env").await.expect("env");
    let keys = env["keys"].as_array().expect("keys");
    let pw = keys
        .iter()
        .find(|k| k["key"] == "POSTGRES_PASSWORD")
        .expect("the key is listed");
    assert_eq!(pw["value"], "[redacted]");
    assert_eq!(pw["secret"], true);
    let keep = keys
        .iter()
        .find(|k| k["key"] == "OLLAMA_KEEP_ALIVE")
        .expect("owned key");
    assert_eq!(keep["value"], "5m");
    assert_eq!(keep["owned"], true);

    // The compose model: resolved, the password nowhere (checked by `read`),
    // also not inside the URL that carries it.
    let compose = read(&client, "stackpilot://stack/compose")
        .await
        .expect("compose");
    let api_env = &compose["services"]["postgres"]["environment"];
    assert_eq!(api_env["POSTGRES_PASSWORD"], "[redacted]");
    let url = api_env["DATABASE_URL"].as_str().expect("url");
    assert!(url.starts_with("postgres://app:") && url.ends_with("@postgres:5432/app"));

    let hardware = read(&client, "stackpilot://host/hardware")
        .await
        .expect("hardware");
    assert!(hardware["cpu"]["logical_cores"].as_u64().unwrap_or(0) > 0);

    // Two audited mutations, then the audit log a page at a time, newest first.
    for ctx in [8192, 16384] {
        let r = call(
            &client,
            "select_profile",
            select_args(json!({"context_length": ctx, "write_env": true})),
        )
        .await;
        assert!(!is_error(&r), "{r:?}");
    }
    let page = read(&client, "stackpilot://stack/audit?limit=1")
        .await
        .expect("audit");
    assert_eq!(page["total"], 2, "{page:#}");
    assert_eq!(page["lines"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["next_offset"], 1);
    let newest = &page["lines"][0];
    assert_eq!(newest["tool"], "select_profile");
    let rest = read(&client, "stackpilot://stack/audit?limit=5&offset=1")
        .await
        .expect("audit page 2");
    assert_eq!(rest["lines"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest["next_offset"], Value::Null);

    // Bad URIs are refused with what is allowed; the server keeps serving.
    let err = read(&client, "stackpilot://stack/audit?limit=100000")
        .await
        .expect_err("limit too big");
    assert!(err.contains("limit"), "{err}");
    let err = read(&client, "stackpilot://stack/nope")
        .await
        .expect_err("unknown");
    assert!(
        err.contains("stackpilot://stack/status") && err.contains("{service}"),
        "{err}"
    );
    read(&client, "stackpilot://stack/env")
        .await
        .expect("still serving");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn completion_offers_services_models_and_nothing_for_unknown_arguments() {
    let stack = offline_stack();
    let client = stdio_client(stack.path(), &[], TestClient::new(Person::Absent, OLD)).await;
    let services = client
        .complete_prompt_simple("diagnose_unhealthy", "service", "")
        .await
        .expect("complete");
    assert_eq!(services, ["api", "ollama", "postgres"]);
    let services = client
        .complete_resource_simple("stackpilot://stack/services/{service}", "service", "po")
        .await
        .expect("complete");
    assert_eq!(services, ["postgres"]);
    let models = client
        .complete_resource_simple("stackpilot://ollama/models/{model}", "model", "llama3")
        .await
        .expect("complete");
    assert!(!models.is_empty(), "catalogue models");
    assert!(models.iter().all(|m| m.starts_with("llama3")), "{models:?}");
    // A list argument completes its last item.
    let candidates = client
        .complete_prompt_simple("choose_model", "candidates", "qwen2.5:7b, llama3")
        .await
        .expect("complete");
    assert!(!candidates.is_empty());
    assert!(
        candidates
            .iter()
            .all(|c| c.starts_with("qwen2.5:7b, llama3")),
        "{candidates:?}"
    );
    // Unknown prompts and arguments: an empty list, not an error.
    let none = client
        .complete_prompt_simple("no_such_prompt", "arg1", "x")
        .await
        .expect("complete");
    assert!(none.is_empty());
    client.cancel().await.expect("close");
}

#[tokio::test]
#[allow(deprecated)]
async fn log_messages_follow_the_level_the_client_set() {
    let stack = offline_stack();
    let tc = TestClient::new(Person::Absent, OLD);
    let logs = tc.logs.clone();
    let client = stdio_client(stack.path(), &[], tc).await;
    // Nothing is sent before the client asks.
    call(&client, "detect_hardware", json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(logs.lock().expect("logs").is_empty());
    client
        .set_level(rmcp::model::SetLevelRequestParams::new(
            rmcp::model::LoggingLevel::Info,
        ))
        .await
        .expect("setLevel");
    call(&client, "detect_hardware", json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while logs.lock().expect("logs").is_empty() {
        assert!(Instant::now() < deadline, "a log message within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = logs.lock().expect("logs")[0].clone();
    assert_eq!(first["level"], "info");
    assert_eq!(first["data"]["tool"], "detect_hardware");
    assert_eq!(first["data"]["outcome"], "ok");
    // At `warning`, a successful call says nothing; a failed one does.
    client
        .set_level(rmcp::model::SetLevelRequestParams::new(
            rmcp::model::LoggingLevel::Warning,
        ))
        .await
        .expect("setLevel");
    call(&client, "detect_hardware", json!({})).await;
    call(&client, "select_profile", json!({"model": "no-such-model"})).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while logs.lock().expect("logs").len() < 2 {
        assert!(Instant::now() < deadline, "the error is logged within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = logs.lock().expect("logs").clone();
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(all[1]["level"], "error");
    assert_eq!(all[1]["data"]["tool"], "select_profile");
    client.cancel().await.expect("close");
}

/// Stops are immediate (busybox httpd ignores SIGTERM).
fn quick_stops(stack: &DockerStack) {
    stack.edit_compose(
        "    restart: unless-stopped\n    ports:\n      - \"127.0.0.1:${WEB_PORT",
        "    restart: unless-stopped\n    stop_grace_period: 1s\n    ports:\n      - \"127.0.0.1:${WEB_PORT",
    );
}

fn container_of(stack: &DockerStack, service: &str) -> String {
    let out = stack.compose(&["ps", "-q", service]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
#[allow(deprecated)]
async fn subscribers_see_a_container_stop_within_two_seconds() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("web", &host);
    quick_stops(&stack);
    let old = TestClient::new(Person::Absent, OLD);
    let updates = old.updates.clone();
    let old = stack.client(&[], old).await;
    let r = call(&old, "compose_up", json!({"wait_timeout_s": 60})).await;
    assert!(!is_error(&r), "{r:?}");
    // 2025-11-25: resources/subscribe, one URI at a time.
    for uri in [
        "stackpilot://stack/status",
        "stackpilot://stack/services/web",
    ] {
        old.subscribe(rmcp::model::SubscribeRequestParams::new(uri))
            .await
            .expect("subscribe");
    }
    let err = old
        .subscribe(rmcp::model::SubscribeRequestParams::new(
            "stackpilot://host/hardware",
        ))
        .await
        .expect_err("hardware does not follow the stack");
    assert!(
        err.to_string().contains("stackpilot://stack/status"),
        "{err}"
    );
    // 2026-07-28: subscriptions/listen; only what follows the stack is accepted.
    let new = stack
        .client(&[], TestClient::new(Person::Absent, NEW))
        .await;
    let mut filter = SubscriptionFilter::new();
    filter.resource_subscriptions = Some(vec![
        "stackpilot://stack/status".into(),
        "stackpilot://stack/services/cache".into(),
        "stackpilot://host/hardware".into(),
    ]);
    let mut sub = new.peer().listen(filter).await.expect("listen");
    assert_eq!(
        sub.acknowledged().resource_subscriptions,
        Some(vec![
            "stackpilot://stack/status".to_string(),
            "stackpilot://stack/services/cache".to_string()
        ])
    );
    // Let both watchers attach to the engine's event stream.
    tokio::time::sleep(Duration::from_millis(700)).await;
    updates.lock().expect("updates").clear();

    let web = container_of(&stack, "web");
    let out = stack.docker(&["stop", "-t", "1", &web]);
    assert!(out.status.success(), "{out:?}");
    let stopped = Instant::now();
    let deadline = stopped + Duration::from_secs(2);
    loop {
        let seen = updates.lock().expect("updates").clone();
        let uris: Vec<&str> = seen.iter().map(|(_, u)| u.as_str()).collect();
        if uris.contains(&"stackpilot://stack/status")
            && uris.contains(&"stackpilot://stack/services/web")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both URIs updated within 2 s of the stop: {uris:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let note = tokio::time::timeout(Duration::from_secs(2), sub.next())
        .await
        .expect("a listen notification within 2 s")
        .expect("stream")
        .expect("open");
    let ServerNotification::ResourceUpdatedNotification(n) = note else {
        panic!("not a resource update: {note:?}");
    };
    assert_eq!(n.params.uri, "stackpilot://stack/status");
    // What a subscriber reads then is the new state.
    let status = read(&old, "stackpilot://stack/services/web")
        .await
        .expect("service resource");
    assert_eq!(status["services"][0]["service"], "web", "{status:#}");
    assert_ne!(status["services"][0]["state"], "running", "{status:#}");
    // A burst (stop and start) is debounced into few notifications; a
    // service nobody subscribed to is not announced.
    updates.lock().expect("updates").clear();
    let out = stack.docker(&["start", &web]);
    assert!(out.status.success(), "{out:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen: Vec<String> = updates
        .lock()
        .expect("updates")
        .iter()
        .map(|(_, u)| u.clone())
        .collect();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|u| u != "stackpilot://stack/services/cache"),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .filter(|u| *u == "stackpilot://stack/status")
            .count()
            <= 4,
        "debounced: {seen:?}"
    );
    new.cancel().await.expect("close");
    old.cancel().await.expect("close");
}

async fn task_state(client: &Client, id: &str) -> Value {
    let t = client
        .peer()
        .get_task(GetTaskParams::new(id))
        .await
        .expect("tasks/get");
    serde_json::to_value(&t).expect("json")
}

/// Polls a task until `until(status)` or a terminal status; every status
/// message seen on the way comes back too.
async fn poll(client: &Client, id: &str, secs: u64, until: &[&str]) -> (Value, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut messages = Vec::new();
    loop {
        let t = task_state(client, id).await;
        if let Some(m) = t["statusMessage"].as_str() {
            if messages.last() != Some(&m.to_string()) {
                messages.push(m.to_string());
            }
        }
        let status = t["status"].as_str().unwrap_or_default().to_string();
        if until.contains(&status.as_str())
            || ["completed", "failed", "cancelled"].contains(&status.as_str())
        {
            return (t, messages);
        }
        assert!(Instant::now() < deadline, "task {id} still {status}: {t:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_task(client: &Client, tool: &str, args: Value) -> String {
    let Value::Object(args) = args else {
        panic!("args must be an object")
    };
    let response = client
        .call_tool_once(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .expect("tools/call");
    let CallToolResponse::Task(created) = response else {
        panic!("{tool} did not become a task: {response:?}");
    };
    created.task.task_id
}

#[tokio::test]
async fn long_tools_run_as_tasks_for_clients_that_declare_them() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("web", &host);
    quick_stops(&stack);
    let client = stack
        .client(&[], TestClient::new(Person::Absent, NEW).with_tasks())
        .await;
    // Which tools may run as tasks is in the tool list.
    let tools = client.list_all_tools().await.expect("tools");
    let meta_of = |name: &str| {
        let t = tools.iter().find(|t| t.name == name).expect("tool");
        serde_json::to_value(&t.meta).expect("json")
    };
    assert_eq!(
        meta_of("compose_up")["io.modelcontextprotocol/tasks"]["taskSupport"],
        "optional"
    );
    assert_eq!(
        meta_of("stack_status")["io.modelcontextprotocol/tasks"],
        Value::Null
    );

    let id = start_task(&client, "compose_up", json!({"wait_timeout_s": 60})).await;
    let (done, messages) = poll(&client, &id, 120, &[]).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert!(
        messages.iter().any(|m| m.starts_with("compose_up:")),
        "{messages:?}"
    );
    let result = &done["result"];
    assert_eq!(result["isError"], Value::Bool(false), "{result:#}");
    validate_output(&tools, "compose_up", &result["structuredContent"]);
    // The result stays there to fetch again.
    assert_eq!(task_state(&client, &id).await["status"], "completed");
    // A short tool is answered in place even for a task client.
    let st = call(&client, "stack_status", json!({})).await;
    assert_eq!(structured(&st)["counts"]["running"], 2, "{st:?}");

    // A backup as a task; its set id then completes and reads as a resource.
    let id = start_task(&client, "backup", json!({"label": "live"})).await;
    let (done, _) = poll(&client, &id, 120, &[]).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    let set = done["result"]["structuredContent"]["backup_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a set id: {done:#}"))
        .to_string();
    let ids = client
        .complete_resource_simple(
            "stackpilot://stack/backups/{backup_id}",
            "backup_id",
            &set[..6],
        )
        .await
        .expect("complete");
    assert!(ids.contains(&set), "{ids:?}");
    let manifest = read(&client, &format!("stackpilot://stack/backups/{set}"))
        .await
        .expect("manifest");
    assert!(manifest.to_string().contains("cache"), "{manifest:#}");
    client.cancel().await.expect("close");

    // A client without the extension sees no change: the call answers in place.
    let plain = stack
        .client(&[], TestClient::new(Person::Absent, NEW))
        .await;
    let r = call(&plain, "compose_up", json!({"wait_timeout_s": 60})).await;
    assert!(!is_error(&r), "{r:?}");
    plain.cancel().await.expect("close");
}

#[tokio::test]
async fn a_cancelled_task_stops_its_work_and_settles_cancelled() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("web", &host);
    // A health check that never passes: compose would wait 120 s.
    stack.edit_compose(
        "http://127.0.0.1:8080/healthz\"]\n      interval: 1s\n      timeout: 2s\n      retries: 5",
        "http://127.0.0.1:8080/nope\"]\n      interval: 1s\n      timeout: 2s\n      retries: 1000",
    );
    let client = stack
        .client(&[], TestClient::new(Person::Absent, NEW).with_tasks())
        .await;
    let id = start_task(&client, "compose_up", json!({"wait_timeout_s": 120})).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(task_state(&client, &id).await["status"], "working");
    assert!(
        !stack.compose_up_processes().is_empty(),
        "compose is running"
    );
    client
        .peer()
        .cancel_task(CancelTaskParams::new(&id))
        .await
        .expect("tasks/cancel");
    let (t, _) = poll(&client, &id, 30, &[]).await;
    assert_eq!(t["status"], "cancelled", "{t:#}");
    assert!(
        stack.compose_up_processes().is_empty(),
        "the compose CLI was stopped"
    );
    let audit =
        std::fs::read_to_string(stack.path().join(".stackpilot/audit.jsonl")).unwrap_or_default();
    assert!(audit.contains("cancelled"), "audited as cancelled: {audit}");
    // The lock is free: the next task runs.
    let id = start_task(&client, "compose_down", json!({"stop_timeout_s": 1})).await;
    let (t, _) = poll(&client, &id, 60, &[]).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(t["result"]["isError"], Value::Bool(false), "{t:#}");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn a_task_outlives_its_http_client_and_is_found_by_id() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("web", &host);
    quick_stops(&stack);
    let server = stack.http(&[]).await;
    let first = http_client(
        &server,
        TestClient::new(Person::Absent, NEW).with_tasks(),
        None,
    )
    .await;
    let id = start_task(&first, "compose_up", json!({"wait_timeout_s": 60})).await;
    // The client goes away at once (a dropped connection).
    drop(first);
    let second = http_client(
        &server,
        TestClient::new(Person::Absent, NEW).with_tasks(),
        None,
    )
    .await;
    let (done, _) = poll(&second, &id, 120, &[]).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(done["result"]["isError"], Value::Bool(false), "{done:#}");
    let st = call(&second, "stack_status", json!({})).await;
    assert_eq!(structured(&st)["counts"]["running"], 2, "{st:?}");
    // An unknown id is a clear error.
    let err = second
        .peer()
        .get_task(GetTaskParams::new("no-such-task"))
        .await
        .expect_err("unknown task");
    assert!(err.to_string().contains("no-such-task"), "{err}");
    second.cancel().await.expect("close");
}

#[tokio::test]
async fn a_confirmation_inside_a_task_is_declined_then_accepted() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("web", &host);
    quick_stops(&stack);
    // 2026-07-28: the task's input_required state, answered by tasks/update.
    let client = stack
        .client(&[], TestClient::new(Person::Accept, NEW).with_tasks())
        .await;
    let id = start_task(&client, "compose_up", json!({"wait_timeout_s": 60})).await;
    let (up, _) = poll(&client, &id, 120, &[]).await;
    assert_eq!(up["status"], "completed", "{up:#}");
    let volume = format!("{}_cache_data", stack.project);
    assert_eq!(stack.resources("volume"), std::slice::from_ref(&volume));

    let down = json!({"remove_volumes": true, "stop_timeout_s": 1});
    for (answer, expect_removed) in [
        (json!({"action": "decline"}), false),
        (
            json!({"action": "accept", "content": {"confirm": true}}),
            true,
        ),
    ] {
        let id = start_task(&client, "compose_down", down.clone()).await;
        let (asking, _) = poll(&client, &id, 60, &["input_required"]).await;
        assert_eq!(asking["status"], "input_required", "{asking:#}");
        let requests = asking["inputRequests"].as_object().expect("input requests");
        let (key, request) = requests.iter().next().expect("one request");
        let message = request["params"]["message"]
            .as_str()
            .or(request["message"].as_str())
            .unwrap_or_default();
        assert!(message.contains("plan digest"), "{request:#}");
        // Nothing happened while the person decides.
        assert_eq!(stack.resources("volume"), std::slice::from_ref(&volume));
        let mut responses = std::collections::BTreeMap::new();
        responses.insert(key.clone(), answer.clone());
        client
            .peer()
            .update_task(UpdateTaskParams::new(&id, responses))
            .await
            .expect("tasks/update");
        let (done, _) = poll(&client, &id, 120, &[]).await;
        assert_eq!(done["status"], "completed", "{done:#}");
        let out = &done["result"]["structuredContent"];
        if expect_removed {
            assert_eq!(out["applied"], true, "{out:#}");
            assert!(stack.resources("volume").is_empty());
        } else {
            assert!(out.get("declined").is_some(), "{out:#}");
            assert_eq!(stack.resources("volume"), std::slice::from_ref(&volume));
            assert_eq!(stack.resources("container").len(), 2);
        }
    }
    client.cancel().await.expect("close");

    // 2025-11-25 with elicitation: the task asks on the session; a decline
    // changes nothing.
    let stack = DockerStack::new("web", &host);
    quick_stops(&stack);
    let tc = TestClient::new(Person::Decline, OLD).with_tasks();
    let asked = tc.asked.clone();
    let client = stack.client(&[], tc).await;
    let id = start_task(&client, "compose_up", json!({"wait_timeout_s": 60})).await;
    let (up, _) = poll(&client, &id, 120, &[]).await;
    assert_eq!(up["status"], "completed", "{up:#}");
    let id = start_task(&client, "compose_down", down.clone()).await;
    let (done, _) = poll(&client, &id, 120, &[]).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert!(
        done["result"]["structuredContent"]
            .get("declined")
            .is_some(),
        "{done:#}"
    );
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        stack.resources("volume"),
        [format!("{}_cache_data", stack.project)]
    );
    client.cancel().await.expect("close");
}
