//! run_task against the real engine and Compose v2, through rmcp's client:
//! the tasks tests/stacks/tasks declares (a one-off `compose run`, execs, a
//! destructive one, a failing one, a malformed one) and names it does not.
mod common;

use common::docker::{engine, DockerStack};
use common::*;
use rmcp::model::ProtocolVersion;
use serde_json::{json, Value};

const ERA: ProtocolVersion = ProtocolVersion::V_2025_11_25;
const SECRET: &str = "tasks-s3cret-value-77";

fn marker_exists(stack: &DockerStack) -> bool {
    let id = stack.docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={}", stack.project),
        "--filter",
        "label=com.docker.compose.service=api",
    ]);
    let id = String::from_utf8_lossy(&id.stdout).trim().to_string();
    stack
        .docker(&["exec", &id, "test", "-f", "/tmp/marker"])
        .status
        .success()
}

fn one_offs(stack: &DockerStack) -> String {
    let o = stack.docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=com.docker.compose.project={}", stack.project),
        "--filter",
        "label=com.docker.compose.oneoff=True",
        "--format",
        "{{.Names}}",
    ]);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[tokio::test]
async fn declared_tasks_run_and_nothing_else_does() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("tasks", &host);
    let up = stack.compose(&["up", "-d", "--wait"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let client = stack
        .client(&[], TestClient::new(Person::Absent, ERA))
        .await;
    let tools = client.list_all_tools().await.expect("tools");

    // A one-off container of the service (mode run), its output redacted and untrusted.
    let r = call(&client, "run_task", json!({"name": "hello"})).await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    validate_output(&tools, "run_task", &out);
    assert_eq!(out["exit_code"], 0);
    assert_eq!(out["mode"], "run");
    assert_eq!(out["confirmed_by"], "not_needed");
    assert_eq!(out["untrusted"], true);
    let stdout: Vec<&str> = out["untrusted_stdout"]
        .as_array()
        .expect("stdout")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        stdout.contains(&"hello from a one-off container"),
        "{out:#}"
    );
    assert!(stdout.contains(&"the secret is [redacted]"), "{out:#}");
    assert!(
        out["untrusted_stderr"].to_string().contains("a warning"),
        "{out:#}"
    );
    assert!(!r.content.iter().any(|c| format!("{c:?}").contains(SECRET)));
    assert!(!out.to_string().contains(SECRET), "the secret leaked");
    assert_eq!(
        one_offs(&stack),
        "",
        "the one-off container was removed (--rm)"
    );

    // Exec into the running container.
    let peek = structured(&call(&client, "run_task", json!({"name": "peek"})).await);
    assert_eq!(peek["mode"], "exec");
    assert_eq!(peek["untrusted_stdout"], json!(["ok"]), "{peek:#}");

    // A dry run plans and runs nothing.
    let dry = structured(
        &call(
            &client,
            "run_task",
            json!({"name": "hello", "dry_run": true}),
        )
        .await,
    );
    validate_output(&tools, "run_task", &dry);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["exit_code"], Value::Null);
    assert!(dry["plan"]["steps"][0]["detail"]
        .as_str()
        .expect("detail")
        .contains("docker compose run --rm --no-deps api"));

    // Only declared tasks: an unknown name is refused, listing the declared ones.
    let r = call(&client, "run_task", json!({"name": "rm-everything"})).await;
    assert!(is_error(&r));
    let e = structured(&r)["error"].clone();
    assert_eq!(e["field"], "name", "{e:#}");
    assert_eq!(e["kind"], "invalid_input");
    assert_eq!(
        e["allowed"],
        json!(["fail", "hello", "peek", "shell", "wipe"]),
        "{e:#}"
    );
    assert!(e["message"]
        .as_str()
        .expect("m")
        .contains("no task `rm-everything` is declared"));
    for (args, field) in [
        (json!({"name": "no way"}), "name"),
        (json!({}), "name"),
        (json!({"name": "hello", "command": ["id"]}), "command"),
    ] {
        let r = call(&client, "run_task", args.clone()).await;
        assert!(is_error(&r), "{args}");
        assert_eq!(structured(&r)["error"]["field"], field, "{args}: {r:?}");
    }
    // A malformed declaration says what is wrong with it.
    let e = structured(&call(&client, "run_task", json!({"name": "shell"})).await);
    assert_eq!(e["error"]["field"], "name");
    assert!(
        e["error"]["message"]
            .as_str()
            .expect("m")
            .contains("`command` must be a list of strings"),
        "{e:#}"
    );

    // A destructive task asks first and changes nothing until confirmed.
    let api = stack.docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={}", stack.project),
    ]);
    let api = String::from_utf8_lossy(&api.stdout).trim().to_string();
    assert!(stack
        .docker(&["exec", &api, "touch", "/tmp/marker"])
        .status
        .success());
    let r = call(&client, "run_task", json!({"name": "wipe"})).await;
    assert!(!is_error(&r), "{r:?}");
    let asked = structured(&r);
    validate_output(&tools, "run_task", &asked);
    assert_eq!(asked["confirmation_required"], true, "{asked:#}");
    assert_eq!(asked["plan"]["destructive"], true);
    assert!(marker_exists(&stack), "nothing ran before confirmation");
    let token = asked["confirm_token"].as_str().expect("token").to_string();
    let done = structured(
        &call(
            &client,
            "run_task",
            json!({"name": "wipe", "confirm_token": token}),
        )
        .await,
    );
    assert_eq!(done["confirmed_by"], "token", "{done:#}");
    assert_eq!(done["exit_code"], 0);
    assert!(!marker_exists(&stack), "the confirmed task ran");

    // A failing task is an error carrying its exit code and output.
    let r = call(&client, "run_task", json!({"name": "fail"})).await;
    assert!(is_error(&r));
    let e = structured(&r)["error"].clone();
    assert!(
        e["message"]
            .as_str()
            .expect("m")
            .contains("exited with code 3"),
        "{e:#}"
    );
    let evidence = e["evidence"].to_string();
    assert!(
        evidence.contains("it broke") && evidence.contains("about to fail"),
        "{e:#}"
    );
    assert!(evidence.contains("untrusted"), "{e:#}");

    // Every run is audited, the declined-by-default one included.
    let audit =
        std::fs::read_to_string(stack.path().join(".stackpilot/audit.jsonl")).expect("audit");
    assert!(
        audit.lines().filter(|l| l.contains("\"run_task\"")).count() >= 5,
        "{audit}"
    );
    assert!(!audit.contains(SECRET));
    client.cancel().await.expect("close");
}
