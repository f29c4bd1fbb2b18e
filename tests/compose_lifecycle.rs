//! compose_up, compose_down and stack_status against the real engine and the
//! real Compose v2 CLI, through rmcp's client over stdio. Every stack is a
//! throwaway copy of tests/stacks/<name> (unique project, fresh ports),
//! removed when the test ends, also on failure.
mod common;

use std::time::{Duration, Instant};

use common::docker::{engine, DockerStack};
use common::*;
use rmcp::model::ProtocolVersion;
use serde_json::{json, Value};

const ERA: ProtocolVersion = ProtocolVersion::V_2025_11_25;

fn services(out: &Value) -> Vec<Value> {
    out["services"].as_array().expect("services").clone()
}

fn step<'a>(out: &'a Value, target: &str) -> &'a Value {
    out["plan"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["target"] == target)
        .unwrap_or_else(|| panic!("a step for {target}: {out:#}"))
}

/// Stops are immediate: busybox httpd as PID 1 ignores SIGTERM, which would
/// make every recreate wait compose's 10 s default.
fn quick_stops(stack: &DockerStack) {
    let path = stack.path().join("docker-compose.yml");
    let text = std::fs::read_to_string(&path).expect("compose");
    std::fs::write(
        &path,
        text.replace(
            "    restart: unless-stopped\n",
            "    restart: unless-stopped\n    stop_grace_period: 1s\n",
        ),
    )
    .expect("write");
}

fn last_audit(stack: &DockerStack) -> Value {
    std::fs::read_to_string(stack.path().join(".stackpilot/audit.jsonl"))
        .expect("audit log")
        .lines()
        .last()
        .map(|l| serde_json::from_str(l).expect("json"))
        .expect("a line")
}

#[tokio::test]
async fn up_is_healthy_and_a_second_up_touches_nothing() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("web", &host);
    let tc = TestClient::new(Person::Absent, ERA);
    let progress = tc.progress.clone();
    let client = stack.client(&[], tc).await;
    let tools = client.list_all_tools().await.expect("tools");

    let r = call(&client, "compose_up", json!({"wait_timeout_s": 60})).await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    validate_output(&tools, "compose_up", &out);
    assert_eq!(out["changes"], 2, "{out:#}");
    assert_eq!(out["applied"], true);
    assert_eq!(out["confirmed_by"], "not_needed");
    assert_eq!(step(&out, "web")["action"], "create");
    let svcs = services(&out);
    assert_eq!(svcs.len(), 2);
    for s in &svcs {
        assert_eq!(s["state"], "running", "{s:#}");
        assert_eq!(s["health"], "healthy", "{s:#}");
        assert!(s["container_id"].as_str().is_some_and(|i| i.len() == 64));
        assert!(s["started_at"].as_str().is_some());
        assert_eq!(s["image"], "stackpilot-test/busybox:1");
        assert_eq!(s["restart_count"], 0);
    }
    let web = svcs.iter().find(|s| s["service"] == "web").expect("web");
    assert_eq!(
        web["ports"][0]["host_port"].to_string(),
        stack.env_value("WEB_PORT").expect("port")
    );
    assert_eq!(web["ports"][0]["host_ip"], "127.0.0.1");
    assert_eq!(
        (&web["role"], &web["role_source"]),
        (&json!("api"), &json!("x-stackpilot")),
        "web's role is only in its x-stackpilot block, and the report says so"
    );
    let cache = svcs
        .iter()
        .find(|s| s["service"] == "cache")
        .expect("cache");
    assert_eq!(cache["role"], "volume");
    assert_eq!(
        cache["role_source"], "label",
        "cache has both: the label wins"
    );

    // Progress arrived at least once a second while it ran, strictly increasing.
    let seen = progress.lock().expect("progress").clone();
    assert!(seen.len() >= 2, "progress notifications: {seen:?}");
    for w in seen.windows(2) {
        assert!(w[1].progress > w[0].progress, "{seen:?}");
        assert!(
            w[1].at.duration_since(w[0].at) <= Duration::from_millis(1500),
            "a gap over a second: {seen:?}"
        );
    }
    assert!(seen
        .iter()
        .any(|p| p.message.as_deref().is_some_and(|m| m.contains("Healthy"))));

    // Interop: compose itself sees what compose_up made.
    let ps = stack.compose(&["ps", "--format", "json"]);
    assert!(ps.status.success());
    let ps: Vec<Value> = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("ps json"))
        .collect();
    let mut names: Vec<&str> = ps.iter().filter_map(|c| c["Service"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["cache", "web"]);
    assert!(ps.iter().all(|c| c["Health"] == "healthy"), "{ps:?}");

    // A second up with nothing changed: no container touched.
    let before = stack.containers();
    let again = structured(&call(&client, "compose_up", json!({})).await);
    validate_output(&tools, "compose_up", &again);
    assert_eq!(again["changes"], 0, "{again:#}");
    assert_eq!(again["applied"], false);
    assert!(again["plan"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .all(|s| s["action"] == "unchanged"));
    assert_eq!(stack.containers(), before, "ids and StartedAt unchanged");
    assert_eq!(last_audit(&stack)["outcome"], "no_changes");

    // stack_status reports the same containers.
    let st = structured(&call(&client, "stack_status", json!({})).await);
    validate_output(&tools, "stack_status", &st);
    assert_eq!(st["ready"], true);
    assert_eq!(st["counts"]["healthy"], 2);
    for s in services(&st) {
        let name = s["service"].as_str().expect("service");
        assert_eq!(s["container_id"], before[name].0.as_str());
    }
    let one = structured(
        &call(
            &client,
            "stack_status",
            json!({"services": ["web", "nope"]}),
        )
        .await,
    );
    let states: Vec<(String, String)> = services(&one)
        .iter()
        .map(|s| (s["service"].to_string(), s["state"].to_string()))
        .collect();
    assert_eq!(
        states,
        [
            ("\"nope\"".into(), "\"missing\"".into()),
            ("\"web\"".into(), "\"running\"".into())
        ]
    );
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn a_stateless_change_recreates_only_that_service_without_asking() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("web", &host);
    quick_stops(&stack);
    let client = stack
        .client(&[], TestClient::new(Person::Absent, ERA))
        .await;
    let r = call(&client, "compose_up", json!({"wait_timeout_s": 60})).await;
    assert!(!is_error(&r), "{r:?}");
    let before = stack.containers();

    stack.edit_compose(
        "  web:\n    image:",
        "  web:\n    environment:\n      GREETING: hello\n    image:",
    );
    let r = call(&client, "compose_up", json!({"wait_timeout_s": 60})).await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    assert_eq!(out["confirmed_by"], "not_needed", "{out:#}");
    assert_eq!(out["changes"], 1);
    let web = step(&out, "web");
    assert_eq!(web["action"], "recreate");
    assert_eq!(web["destructive"], false);
    assert!(web["detail"]
        .as_str()
        .expect("detail")
        .contains("configuration changed"));
    assert_eq!(step(&out, "cache")["action"], "unchanged");
    let after = stack.containers();
    assert_ne!(after["web"].0, before["web"].0, "web was recreated");
    assert_eq!(after["cache"], before["cache"], "cache untouched");
    assert!(services(&out).iter().all(|s| s["health"] == "healthy"));
    let env = stack.docker(&["inspect", "-f", "{{json .Config.Env}}", &after["web"].0]);
    assert!(String::from_utf8_lossy(&env.stdout).contains("GREETING=hello"));
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn a_data_service_change_needs_confirmation() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("data", &host);
    let tools_client = stack
        .client(&[], TestClient::new(Person::Absent, ERA))
        .await;
    let r = call(&tools_client, "compose_up", json!({"wait_timeout_s": 120})).await;
    assert!(!is_error(&r), "{r:?}");
    assert_eq!(structured(&r)["changes"], 2, "creating is not destructive");
    let before = stack.containers();

    // Postgres's configuration changes: recreating it is destructive.
    stack.set_env("PG_MEM_LIMIT", "200m");

    // Elicitation, declined: the old container keeps running, untouched.
    let tc = TestClient::new(Person::Decline, ERA);
    let asked = tc.asked.clone();
    let decliner = stack.client(&[], tc).await;
    let declined = structured(&call(&decliner, "compose_up", json!({})).await);
    assert_eq!(declined["declined"], true, "{declined:#}");
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(stack.containers(), before, "declined: nothing touched");
    decliner.cancel().await.expect("close");

    // Token path: the plan and a token, nothing touched; the token applies it.
    let first = structured(&call(&tools_client, "compose_up", json!({})).await);
    assert_eq!(first["confirmation_required"], true, "{first:#}");
    let pg = step(&first, "postgres");
    assert_eq!(pg["action"], "recreate");
    assert_eq!(pg["destructive"], true);
    assert_eq!(pg["cost"]["downtime"], true);
    assert_eq!(step(&first, "api")["action"], "unchanged");
    assert_eq!(stack.containers(), before);
    let token = first["confirm_token"].clone();
    let applied = call(
        &tools_client,
        "compose_up",
        json!({"confirm_token": token, "wait_timeout_s": 120}),
    )
    .await;
    assert!(!is_error(&applied), "{applied:?}");
    let out = structured(&applied);
    assert_eq!(out["confirmed_by"], "token", "{out:#}");
    assert_eq!(out["plan"]["digest"], first["plan"]["digest"]);
    let after = stack.containers();
    assert_ne!(
        after["postgres"].0, before["postgres"].0,
        "postgres recreated"
    );
    assert_eq!(
        after["api"], before["api"],
        "api untouched (only the planned service)"
    );
    assert!(
        services(&out).iter().all(|s| s["health"] == "healthy"),
        "{out:#}"
    );
    let audit = last_audit(&stack);
    assert_eq!(audit["confirmation"], "token");
    assert_eq!(audit["plan_digest"], first["plan"]["digest"]);

    // Elicitation, accepted.
    stack.set_env("PG_MEM_LIMIT", "256m");
    let accepter = stack
        .client(&[], TestClient::new(Person::Accept, ERA))
        .await;
    let accepted = structured(&call(&accepter, "compose_up", json!({"wait_timeout_s": 120})).await);
    assert_eq!(accepted["confirmed_by"], "elicitation", "{accepted:#}");
    assert_ne!(stack.containers()["postgres"].0, after["postgres"].0);
    accepter.cancel().await.expect("close");
    tools_client.cancel().await.expect("close");
}

#[tokio::test]
async fn a_failing_health_check_names_the_service_with_evidence() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("failing", &host);
    let client = stack
        .client(&[], TestClient::new(Person::Absent, ERA))
        .await;
    let started = Instant::now();
    let r = call(&client, "compose_up", json!({"wait_timeout_s": 30})).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "failed within its timeout"
    );
    assert!(is_error(&r), "{r:?}");
    let err = &structured(&r)["error"];
    assert_eq!(err["kind"], "external");
    let message = err["message"].as_str().expect("message");
    assert!(message.contains("`broken`"), "{message}");
    let evidence: Vec<&str> = err["evidence"]
        .as_array()
        .expect("evidence")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let health = evidence
        .iter()
        .find(|e| e.contains("health-check results of `broken`"))
        .unwrap_or_else(|| panic!("health outputs: {evidence:#?}"));
    assert!(health.starts_with("untrusted container output"));
    assert!(health.contains("exit 1"), "{health}");
    let logs = evidence
        .iter()
        .find(|e| e.contains("log lines of `broken`"))
        .unwrap_or_else(|| panic!("logs: {evidence:#?}"));
    assert!(logs.starts_with("untrusted container output"));
    assert!(logs.len() <= 8 * 1024 + 300);
    assert!(evidence.iter().any(|e| e.contains("unhealthy")));
    assert!(err["next_step"]
        .as_str()
        .expect("next")
        .contains("compose_up again"));
    assert!(last_audit(&stack)["outcome"]
        .as_str()
        .expect("outcome")
        .starts_with("error"));
    client.cancel().await.expect("close");
}

/// Resources outside the project, removed when the test ends.
struct Bystanders {
    host: String,
    name: String,
}

impl Bystanders {
    fn new(stack: &DockerStack) -> Self {
        let name = format!("{}-bystander", stack.project);
        for args in [
            vec!["volume", "create", name.as_str()],
            vec!["network", "create", name.as_str()],
            vec![
                "create",
                "--name",
                name.as_str(),
                "stackpilot-test/busybox:1",
                "true",
            ],
        ] {
            assert!(stack.docker(&args).status.success(), "{args:?}");
        }
        Self {
            host: stack.docker_host.clone(),
            name,
        }
    }

    fn all_exist(&self) -> bool {
        ["volume", "network", "container"].iter().all(|kind| {
            std::process::Command::new("docker")
                .env("DOCKER_HOST", &self.host)
                .args([kind, "inspect", &self.name])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
    }
}

impl Drop for Bystanders {
    fn drop(&mut self) {
        for args in [
            ["rm", "-f", &self.name],
            ["network", "rm", &self.name],
            ["volume", "rm", &self.name],
        ] {
            let _ = std::process::Command::new("docker")
                .env("DOCKER_HOST", &self.host)
                .args(args)
                .output();
        }
    }
}

#[tokio::test]
async fn compose_down_with_volumes_is_confirmed_and_removes_exactly_the_project() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("web", &host);
    let client = stack
        .client(&[], TestClient::new(Person::Absent, ERA))
        .await;
    let tools = client.list_all_tools().await.expect("tools");
    let r = call(&client, "compose_up", json!({"wait_timeout_s": 60})).await;
    assert!(!is_error(&r), "{r:?}");
    let bystanders = Bystanders::new(&stack);
    let containers = stack.resources("container");
    assert_eq!(containers.len(), 2);
    let volumes = stack.resources("volume");
    assert_eq!(volumes, [format!("{}_cache_data", stack.project)]);
    // Data in the volume that is about to go: the backup taken first must hold it.
    let wrote = stack.compose(&[
        "exec",
        "-T",
        "cache",
        "sh",
        "-c",
        "echo precious > /data/a.txt && mkdir -p /data/d && echo more > /data/d/b.txt",
    ]);
    assert!(wrote.status.success(), "{wrote:?}");

    let args = json!({"remove_volumes": true, "stop_timeout_s": 1});
    let dry = structured(
        &call(
            &client,
            "compose_down",
            json!({"remove_volumes": true, "stop_timeout_s": 1, "dry_run": true}),
        )
        .await,
    );
    validate_output(&tools, "compose_down", &dry);
    assert_eq!(dry["applied"], false);
    let first = structured(&call(&client, "compose_down", args.clone()).await);
    validate_output(&tools, "compose_down", &first);
    assert_eq!(first["confirmation_required"], true, "{first:#}");
    assert_eq!(
        first["plan"]["digest"], dry["plan"]["digest"],
        "dry run shows the same plan"
    );
    let volume_step = step(&first, &format!("volume {}", volumes[0]));
    assert_eq!(volume_step["destructive"], true);
    assert_eq!(volume_step["cost"]["data_loss"], true);
    for c in &containers {
        assert_eq!(
            step(&first, &format!("container {c}"))["cost"]["downtime"],
            true
        );
    }
    let backup_step = step(&first, "service cache");
    assert_eq!(backup_step["action"], "backup");
    assert_eq!(backup_step["destructive"], false);
    assert_eq!(
        first["plan"]["steps"].as_array().expect("steps").len(),
        5,
        "2 containers, 1 network, 1 volume, the backup of cache first: {first:#}"
    );
    let skipped = structured(
        &call(
            &client,
            "compose_down",
            json!({"remove_volumes": true, "skip_backup": true, "dry_run": true}),
        )
        .await,
    );
    assert_eq!(
        skipped["plan"]["steps"].as_array().expect("steps").len(),
        4,
        "skip_backup plans no backup: {skipped:#}"
    );
    assert!(
        skipped["plan"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("no backup is taken")),
        "{skipped:#}"
    );
    assert!(
        !stack.path().join("backups").exists(),
        "nothing backed up before the confirmation"
    );
    assert_eq!(
        stack.resources("container"),
        containers,
        "nothing removed yet"
    );

    let mut with_token = args.clone();
    with_token["confirm_token"] = first["confirm_token"].clone();
    let r = call(&client, "compose_down", with_token).await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    validate_output(&tools, "compose_down", &out);
    assert_eq!(out["confirmed_by"], "token");
    assert_eq!(
        out["remaining"],
        json!({"containers": [], "networks": [], "volumes": []})
    );
    // The backup set was committed before the volume went, and it verifies.
    assert_eq!(out["backup"]["services"], json!(["cache"]), "{out:#}");
    let backup_id = out["backup"]["backup_id"].as_str().expect("backup id");
    assert!(backup_id.ends_with("-pre-down"), "{backup_id}");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(out["backup"]["manifest_path"].as_str().expect("path")).expect("manifest"),
    )
    .expect("manifest json");
    let entry = &manifest["entries"][0];
    assert_eq!(entry["service"], "cache");
    assert_eq!(entry["method"], "volume");
    assert_eq!(entry["counts"]["files"], 2, "{manifest:#}");
    let verified = call(&client, "verify_backup", json!({"backup_id": backup_id})).await;
    assert!(!is_error(&verified), "{verified:?}");
    assert_eq!(structured(&verified)["ok"], true, "{verified:?}");
    for kind in ["container", "network", "volume"] {
        assert!(
            stack.resources(kind).is_empty(),
            "no {kind} of the project left"
        );
    }
    assert!(
        bystanders.all_exist(),
        "nothing else on the engine was touched"
    );

    // Down again: nothing to do, nothing asked.
    let again = structured(&call(&client, "compose_down", args).await);
    assert_eq!(again["changes"], 0, "{again:#}");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn stack_status_sees_what_docker_compose_up_made() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("six", &host);
    let up = stack.compose(&["up", "-d", "--wait"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let client = stack
        .client(&[], TestClient::new(Person::Absent, ERA))
        .await;
    let st = structured(&call(&client, "stack_status", json!({})).await);
    assert_eq!(st["ready"], true, "{st:#}");
    assert_eq!(st["counts"]["healthy"], 6);
    let ids = stack.containers();
    let names: Vec<String> = services(&st)
        .iter()
        .map(|s| {
            let name = s["service"].as_str().expect("name").to_string();
            assert_eq!(s["container_id"], ids[&name].0.as_str());
            assert_eq!(s["role"], "api");
            name
        })
        .collect();
    assert_eq!(names, ["s1", "s2", "s3", "s4", "s5", "s6"]);
    // compose_up accepts what the CLI made as it is.
    let again = structured(&call(&client, "compose_up", json!({})).await);
    assert_eq!(again["changes"], 0, "{again:#}");
    assert_eq!(stack.containers(), ids);
    client.cancel().await.expect("close");
}

fn compose_v2() -> bool {
    std::process::Command::new("docker")
        .args(["compose", "version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[tokio::test]
async fn an_unreachable_engine_is_a_clear_error_within_two_seconds() {
    let stack = TestStack::new("");
    let refused_dir = tempfile::tempdir().expect("tempdir");
    let refused = refused_dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&refused).expect("bind"));
    let refused_host = format!("unix://{}", refused.display());
    for (host, says) in [
        (
            "unix:///tmp/stackpilot-test-no-docker.sock".to_string(),
            "does not exist",
        ),
        (refused_host.clone(), "refused"),
    ] {
        let client = stdio_client_env(
            stack.path(),
            &[],
            TestClient::new(Person::Absent, ERA),
            &[("DOCKER_HOST", host.as_str())],
        )
        .await;
        let mut tools = vec!["stack_status", "compose_down"];
        if compose_v2() {
            tools.push("compose_up");
        }
        for tool in tools {
            let started = Instant::now();
            let r = call(&client, tool, json!({})).await;
            let took = started.elapsed();
            assert!(took < Duration::from_secs(2), "{tool}: {took:?}");
            assert!(is_error(&r), "{tool}: {r:?}");
            let err = &structured(&r)["error"];
            let message = err["message"].as_str().expect("message");
            assert!(
                message.contains(&host),
                "{tool} names the endpoint: {message}"
            );
            assert!(message.contains(says), "{tool}: {message}");
            assert!(
                err["next_step"].as_str().expect("next").contains("dockerd"),
                "{tool}: {err:#}"
            );
        }
        client.cancel().await.expect("close");
    }
}

#[tokio::test]
async fn missing_compose_v2_is_a_clear_error() {
    let stack = TestStack::new("");
    let bin = tempfile::tempdir().expect("tempdir");
    let fake = bin.path().join("docker");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"docker: '$1' is not a docker command.\" >&2\nexit 1\n",
    )
    .expect("fake docker");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = bin.path().display().to_string();
    let host = engine().unwrap_or_else(|| "unix:///tmp/stackpilot-test-no-docker.sock".into());
    let client = stdio_client_env(
        stack.path(),
        &[],
        TestClient::new(Person::Absent, ERA),
        &[("PATH", path.as_str()), ("DOCKER_HOST", host.as_str())],
    )
    .await;
    for tool in ["compose_up", "compose_down"] {
        let started = Instant::now();
        let r = call(&client, tool, json!({})).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(is_error(&r), "{r:?}");
        let err = &structured(&r)["error"];
        let message = err["message"].as_str().expect("message");
        assert!(message.contains("Compose v2 is not installed"), "{message}");
        assert!(err["next_step"]
            .as_str()
            .expect("next")
            .contains("docker-compose-plugin"));
    }
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn a_gpu_service_without_an_nvidia_runtime_is_refused_before_anything_runs() {
    let Some(host) = engine() else { return };
    let runtimes = std::process::Command::new("docker")
        .env("DOCKER_HOST", &host)
        .args(["info", "--format", "{{json .Runtimes}}"])
        .output()
        .expect("docker info");
    if String::from_utf8_lossy(&runtimes.stdout).contains("nvidia") {
        eprintln!("skipped: this engine has an nvidia runtime");
        return;
    }
    let stack = DockerStack::new("gpu", &host);
    let client = stack
        .client(&[], TestClient::new(Person::Absent, ERA))
        .await;
    let r = call(&client, "compose_up", json!({})).await;
    assert!(is_error(&r), "{r:?}");
    let err = &structured(&r)["error"];
    assert!(err["message"]
        .as_str()
        .expect("message")
        .contains("no nvidia runtime"));
    let next = err["next_step"].as_str().expect("next");
    assert!(
        next.contains("select_profile") && next.contains("profile: cpu"),
        "{next}"
    );
    assert!(
        stack.resources("container").is_empty(),
        "nothing was created"
    );
    assert!(stack.resources("network").is_empty());
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn two_concurrent_ups_on_one_stack_are_serialized() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("six", &host);
    let a = stack
        .client(&[], TestClient::new(Person::Absent, ERA))
        .await;
    let b = stack
        .client(&[], TestClient::new(Person::Absent, ERA))
        .await;
    let (ra, rb) = tokio::join!(
        call(&a, "compose_up", json!({"wait_timeout_s": 60})),
        call(&b, "compose_up", json!({"wait_timeout_s": 60}))
    );
    assert!(!is_error(&ra) && !is_error(&rb), "{ra:?} {rb:?}");
    let mut changes = vec![
        structured(&ra)["changes"].as_u64().expect("changes"),
        structured(&rb)["changes"].as_u64().expect("changes"),
    ];
    changes.sort();
    assert_eq!(
        changes,
        [0, 6],
        "the second planned after the first had finished"
    );
    let audit: Vec<Value> = std::fs::read_to_string(stack.path().join(".stackpilot/audit.jsonl"))
        .expect("audit")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let mut outcomes: Vec<&str> = audit.iter().filter_map(|l| l["outcome"].as_str()).collect();
    outcomes.sort();
    assert_eq!(outcomes, ["applied", "no_changes"]);
    a.cancel().await.expect("close");
    b.cancel().await.expect("close");

    // With a short lock timeout the second caller says busy, naming the holder.
    let other = DockerStack::new("web", &host);
    let slow = other
        .client(&[], TestClient::new(Person::Absent, ERA))
        .await;
    let hasty = other
        .client(
            &["--lock-timeout-s", "1"],
            TestClient::new(Person::Absent, ERA),
        )
        .await;
    let (first, second) = tokio::join!(
        call(&slow, "compose_up", json!({"wait_timeout_s": 60})),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            call(&hasty, "compose_up", json!({})).await
        }
    );
    assert!(!is_error(&first), "{first:?}");
    assert!(is_error(&second), "{second:?}");
    let err = &structured(&second)["error"];
    assert_eq!(err["kind"], "busy");
    assert!(err["message"].as_str().expect("msg").contains("compose_up"));
    slow.cancel().await.expect("close");
    hasty.cancel().await.expect("close");
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("web", &host);
    stack.edit_compose(
        "\nvolumes:\n",
        "\n  tools:\n    image: stackpilot-test/busybox:1\n    pull_policy: never\n    profiles: [tools, debug]\n\nvolumes:\n",
    );
    let client = stack
        .client(&[], TestClient::new(Person::Absent, ERA))
        .await;
    let cases: Vec<(Value, &str, Option<Vec<&str>>)> = vec![
        (
            json!({"profile": "nope"}),
            "profile",
            Some(vec!["debug", "tools"]),
        ),
        (
            json!({"services": ["web", "nope"]}),
            "services",
            Some(vec!["cache", "web"]),
        ),
        (json!({"wait_timeout_s": 0}), "wait_timeout_s", None),
        (
            json!({"wait_timeout_s": 1_000_000_000u64}),
            "wait_timeout_s",
            None,
        ),
        (json!({"pull": "yes"}), "pull", None),
        (json!({"surprise": 1}), "surprise", None),
    ];
    for (args, field, allowed) in cases {
        let r = call(&client, "compose_up", args.clone()).await;
        assert!(is_error(&r), "{args}: {r:?}");
        let err = &structured(&r)["error"];
        assert_eq!(err["kind"], "invalid_input", "{args}: {err:#}");
        assert_eq!(err["field"], field, "{args}: {err:#}");
        if let Some(allowed) = allowed {
            assert_eq!(err["allowed"], json!(allowed), "{args}: {err:#}");
        }
    }
    // A compose file that does not parse: compose's own message comes back.
    std::fs::write(
        stack.path().join("docker-compose.yml"),
        "services:\n  web:\n    image: [unclosed\n",
    )
    .expect("break the file");
    let r = call(&client, "compose_up", json!({})).await;
    assert!(is_error(&r));
    let err = &structured(&r)["error"];
    let message = err["message"].as_str().expect("message");
    assert!(
        message.contains("docker compose config failed"),
        "{message}"
    );
    assert!(
        message.contains("yaml") || message.contains("line"),
        "compose's message: {message}"
    );
    assert!(
        stack.resources("container").is_empty(),
        "nothing was created"
    );
    assert!(stack.resources("network").is_empty());
    client.cancel().await.expect("close");
}

/// Process ids of `docker compose ... up` runs for a project.
fn compose_up_processes(project: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == project) && args.iter().any(|a| a == "up") {
            found.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

#[tokio::test]
async fn cancelling_compose_up_stops_the_cli_and_reports() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("web", &host);
    // A health check that never passes but never gives up: compose would wait 120 s.
    stack.edit_compose(
        "      retries: 5\n      start_period: 2s\n    deploy:\n      resources:\n        limits:\n          memory: ${WEB_MEM_LIMIT",
        "      retries: 1000\n      start_period: 2s\n    deploy:\n      resources:\n        limits:\n          memory: ${WEB_MEM_LIMIT",
    );
    stack.edit_compose("http://127.0.0.1:8080/healthz\"]\n      interval: 1s\n      timeout: 2s\n      retries: 1000", "http://127.0.0.1:8080/nope\"]\n      interval: 1s\n      timeout: 2s\n      retries: 1000");
    let client = stack
        .client(&[], TestClient::new(Person::Absent, ERA))
        .await;
    let started = Instant::now();
    let pending = tokio::time::timeout(
        Duration::from_secs(4),
        call(&client, "compose_up", json!({"wait_timeout_s": 120})),
    )
    .await;
    assert!(pending.is_err(), "still waiting after 4 s");
    // Dropping the request sent notifications/cancelled: the CLI stops and the
    // call is audited as cancelled.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let audit = std::fs::read_to_string(stack.path().join(".stackpilot/audit.jsonl"))
            .unwrap_or_default();
        if audit.contains("cancelled") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no cancelled audit line: {audit}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        compose_up_processes(&stack.project).is_empty(),
        "the compose CLI was stopped"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    let audit = last_audit(&stack);
    assert!(audit["outcome"]
        .as_str()
        .expect("outcome")
        .contains("cancelled"));
    // What was done is there to see: the containers compose created.
    let st = structured(&call(&client, "stack_status", json!({})).await);
    assert_eq!(st["counts"]["containers"], 2, "{st:#}");
    client.cancel().await.expect("close");
}

/// The container labelled io.stackpilot.self (stackpilot's own, in the bundled
/// stack's ops profile) is never taken down by stackpilot.
#[tokio::test]
async fn compose_down_keeps_stackpilots_own_container() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("web", &host);
    stack.edit_compose(
        "      io.stackpilot.role: volume\n",
        "      io.stackpilot.role: volume\n      io.stackpilot.self: \"true\"\n",
    );
    let client = stack
        .client(
            &["--allow-destructive"],
            TestClient::new(Person::Absent, ERA),
        )
        .await;
    let r = call(&client, "compose_up", json!({"wait_timeout_s": 60})).await;
    assert!(!is_error(&r), "{r:?}");
    let named = call(
        &client,
        "compose_down",
        json!({"services": ["cache"], "stop_timeout_s": 1}),
    )
    .await;
    assert!(is_error(&named), "{named:?}");
    let e = structured(&named);
    assert_eq!(e["error"]["field"], "services", "{e:#}");
    assert_eq!(stack.resources("container").len(), 2, "nothing removed");

    let out = structured(&call(&client, "compose_down", json!({"stop_timeout_s": 1})).await);
    assert_eq!(out["applied"], true, "{out:#}");
    assert!(
        out["plan"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("keeping stackpilot's own service cache")),
        "{out:#}"
    );
    let left = stack.resources("container");
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].contains("cache"), "{left:?}");
    assert_eq!(out["remaining"]["containers"], json!(left));
    client.cancel().await.expect("close");
}
