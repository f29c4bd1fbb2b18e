//! The secrets corpus: a container prints its own secrets in every common
//! shape (URL userinfo, JSON, `Authorization:` headers, `key: value`,
//! `KEY=value`, plain sentences) in its log, its Docker health check and its
//! stackpilot health command, and the .env holds a secret of its own. Every
//! tool is called on it through a real MCP client, and one through the CLI,
//! with the most verbose logs; no tool output, audit line, log line at any
//! level, or backup manifest may contain any of the values.
mod common;

use std::process::Stdio;

use common::docker::{engine, DockerStack};
use common::*;
use rmcp::model::ProtocolVersion;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::ClientServiceExt;
use serde_json::{json, Value};

/// Every secret value of the stack (tests/stacks/leaky).
const SECRETS: [&str; 5] = [
    "Corpus-Pg-Pass-1x9",
    "corpus-api-key-7f3e",
    "corpus-service-token-55aa",
    "Corpus-Url-Pass-2y8",
    "Corpus-Env-File-Secret-3z7",
];

fn leaks(text: &str) -> Vec<&'static str> {
    SECRETS
        .iter()
        .copied()
        .filter(|s| text.contains(s))
        .collect()
}

#[tokio::test]
async fn no_secret_reaches_an_output_a_log_an_audit_line_or_a_manifest() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("leaky", &host);
    let log_path = stack.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let dir = stack.path().to_path_buf();
    let transport =
        TokioChildProcess::builder(tokio::process::Command::new(bin()).configure(|cmd| {
            cmd.arg("serve")
                .arg("--stack")
                .arg(&dir)
                .arg("--allow-destructive");
            quiet_env(cmd);
            cmd.env("DOCKER_HOST", &host).env("STACKPILOT_LOG", "trace");
        }))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn")
        .0;
    let client = TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25)
        .serve_with_lifecycle(transport, lifecycle(&ProtocolVersion::V_2025_11_25))
        .await
        .expect("connect");

    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut run = |name: &'static str, result: rmcp::model::CallToolResult| {
        let text = serde_json::to_string(&result).expect("json");
        outputs.push((name.to_string(), text));
        result
    };
    let up = run(
        "compose_up",
        call(&client, "compose_up", json!({"wait_timeout_s": 120})).await,
    );
    assert!(!is_error(&up), "{up:?}");
    run(
        "stack_status",
        call(&client, "stack_status", json!({})).await,
    );
    let health = run(
        "health",
        call(&client, "health", json!({"deep": true, "logs_tail": 50})).await,
    );
    // Not vacuous: the container's lines are there, masked.
    let h = serde_json::to_string(&structured(&health)).expect("json");
    assert!(
        h.contains("starting with postgres://app:[redacted]@db:5432/app"),
        "{h}"
    );
    assert!(h.contains("Authorization: Bearer [redacted]"), "{h}");
    assert!(h.contains("the password is [redacted]"), "{h}");
    assert!(
        h.contains("probe sees"),
        "the Docker health log is reported: {h}"
    );
    assert!(
        h.contains("the token is [redacted]"),
        "the command probe's output: {h}"
    );
    let backup = run(
        "backup",
        call(&client, "backup", json!({"services": ["leaky"]})).await,
    );
    assert!(!is_error(&backup), "{backup:?}");
    run(
        "list_backups",
        call(&client, "list_backups", json!({})).await,
    );
    run(
        "verify_backup",
        call(&client, "verify_backup", json!({})).await,
    );
    run(
        "recover",
        call(
            &client,
            "recover",
            json!({"service": "leaky", "action": "restart", "wait": true, "timeout_s": 60}),
        )
        .await,
    );
    // An error path: a tool refusing input echoes nothing secret either.
    run(
        "restore",
        call(&client, "restore", json!({"backup_id": "20000101T000000Z"})).await,
    );
    run(
        "detect_hardware",
        call(&client, "detect_hardware", json!({})).await,
    );
    client.cancel().await.expect("close");

    // The CLI mirror, with debug logs on its stderr.
    let cli = std::process::Command::new(bin())
        .env("DOCKER_HOST", &host)
        .env("STACKPILOT_LOG", "debug")
        .arg("--stack")
        .arg(stack.path())
        .args(["health", "--deep", "--logs-tail", "20", "--json"])
        .output()
        .expect("cli");
    outputs.push((
        "cli stdout".into(),
        String::from_utf8_lossy(&cli.stdout).into(),
    ));
    outputs.push((
        "cli stderr".into(),
        String::from_utf8_lossy(&cli.stderr).into(),
    ));

    for (name, text) in &outputs {
        assert!(leaks(text).is_empty(), "{name} leaks {:?}", leaks(text));
    }
    let log = std::fs::read_to_string(&log_path).expect("log");
    assert!(
        log.len() > 1000,
        "trace logs were written ({} bytes)",
        log.len()
    );
    assert!(
        leaks(&log).is_empty(),
        "the server log leaks {:?}",
        leaks(&log)
    );
    let audit =
        std::fs::read_to_string(stack.path().join(".stackpilot/audit.jsonl")).expect("audit");
    assert!(audit.lines().count() >= 3, "{audit}");
    assert!(
        leaks(&audit).is_empty(),
        "the audit log leaks {:?}",
        leaks(&audit)
    );
    let backups = stack.path().join("backups").join(&stack.project);
    let mut manifests = 0;
    for entry in std::fs::read_dir(&backups).expect("backups") {
        let path = entry.expect("entry").path();
        if path.to_string_lossy().ends_with(".manifest.json") {
            manifests += 1;
            let text = std::fs::read_to_string(&path).expect("manifest");
            let _: Value = serde_json::from_str(&text).expect("json");
            assert!(
                leaks(&text).is_empty(),
                "{} leaks {:?}",
                path.display(),
                leaks(&text)
            );
        }
    }
    assert!(manifests >= 1, "the backup wrote a manifest");
}
