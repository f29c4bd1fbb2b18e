//! The engine side of the audit, kept fixed, on the real engine and Compose
//! v2: every recreate stackpilot performs converges (compose_up reports 0
//! changes afterwards, also for a service with depends_on); a hand edit
//! between a plan and its token changes the digest (compose_up, restore);
//! no compose process outlives a SIGKILLed stackpilot.
mod common;

use std::time::{Duration, Instant};

use common::docker::{engine, DockerStack};
use common::*;
use rmcp::model::ProtocolVersion;
use serde_json::{json, Value};

const ERA: ProtocolVersion = ProtocolVersion::V_2025_11_25;

fn ok(r: &rmcp::model::CallToolResult) -> Value {
    assert!(!is_error(r), "{r:?}");
    structured(r)
}

/// The api stops at once (busybox httpd as PID 1 ignores SIGTERM).
fn quick_stops(stack: &DockerStack) {
    stack.edit_compose(
        "    command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n    restart: unless-stopped\n",
        "    command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n    restart: unless-stopped\n    stop_grace_period: 1s\n",
    );
}

#[tokio::test]
async fn every_recreate_converges_and_hand_edits_change_the_digest() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("data", &host);
    quick_stops(&stack);
    let client = stack
        .client(
            &["--allow-destructive"],
            TestClient::new(Person::Absent, ERA),
        )
        .await;
    let up = ok(&call(&client, "compose_up", json!({"wait_timeout_s": 120})).await);
    assert_eq!(up["applied"], true, "{up:#}");
    let again = ok(&call(&client, "compose_up", json!({"wait_timeout_s": 120})).await);
    assert_eq!(again["changes"], 0, "{again:#}");

    // recover's recreate of `api`, which depends_on postgres.
    let r = ok(&call(
        &client,
        "recover",
        json!({"service": "api", "action": "recreate", "wait": true, "timeout_s": 60}),
    )
    .await);
    assert_eq!(r["wait_outcome"], "healthy", "{r:#}");
    let after = ok(&call(&client, "compose_up", json!({"wait_timeout_s": 120})).await);
    assert_eq!(
        after["changes"], 0,
        "recover's recreate converged: {after:#}"
    );

    // compose_up's own recreate of `api` (its environment changed).
    stack.edit_compose(
        "    command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n    restart: unless-stopped\n    stop_grace_period: 1s\n    depends_on:",
        "    command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n    restart: unless-stopped\n    stop_grace_period: 1s\n    environment:\n      CHANGED: \"1\"\n    depends_on:",
    );
    let changed = ok(&call(&client, "compose_up", json!({"wait_timeout_s": 120})).await);
    assert_eq!(changed["changes"], 1, "{changed:#}");
    let settled = ok(&call(&client, "compose_up", json!({"wait_timeout_s": 120})).await);
    assert_eq!(
        settled["changes"], 0,
        "compose_up's recreate converged: {settled:#}"
    );
    client.cancel().await.expect("close");

    // Hand edits between a plan and its token: compose_up.
    let asker = stack
        .client(&[], TestClient::new(Person::Absent, ERA))
        .await;
    // A destructive plan (recreating postgres, which holds data), then an edit.
    stack.edit_compose(
        "    user: postgres           # a new volume is populated from the image, owned by postgres",
        "    user: postgres           # a new volume is populated from the image, owned by postgres\n    environment:\n      EDIT: \"1\"",
    );
    let first = ok(&call(&asker, "compose_up", json!({"wait_timeout_s": 120})).await);
    assert_eq!(first["confirmation_required"], true, "{first:#}");
    stack.edit_compose("      EDIT: \"1\"", "      EDIT: \"2\"");
    let drifted = ok(&call(
        &asker,
        "compose_up",
        json!({"wait_timeout_s": 120, "confirm_token": first["confirm_token"]}),
    )
    .await);
    assert_eq!(drifted["confirmation_required"], true, "{drifted:#}");
    assert_ne!(drifted["plan"]["digest"], first["plan"]["digest"]);

    // restore: data written after the plan is in the digest.
    let b = ok(&call(&asker, "backup", json!({"services": ["postgres"]})).await);
    let id = b["backup_id"].as_str().expect("id").to_string();
    let first = ok(&call(&asker, "restore", json!({"backup_id": id})).await);
    assert_eq!(first["confirmation_required"], true, "{first:#}");
    let out = stack.compose(&[
        "exec",
        "-T",
        "postgres",
        "psql",
        "-U",
        "postgres",
        "-c",
        "create table written_after_the_plan (x int); insert into written_after_the_plan values (1);",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drifted = ok(&call(
        &asker,
        "restore",
        json!({"backup_id": id, "confirm_token": first["confirm_token"]}),
    )
    .await);
    assert_eq!(
        drifted["confirmation_required"], true,
        "first plan: {:#}\nthen: {drifted:#}",
        first["plan"]
    );
    assert_ne!(drifted["plan"]["digest"], first["plan"]["digest"]);
    let replace = drifted["plan"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["action"] == "replace")
        .cloned()
        .expect("replace step");
    assert_eq!(
        replace["before"]["public.written_after_the_plan"], 1,
        "the plan shows what it would overwrite: {replace:#}"
    );
}

/// The processes of a process group, by scanning /proc.
fn group_members(pgid: i32) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a.to_string()) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) && fields[0] != "Z" {
            out.push(stat.split(')').next().unwrap_or("").to_string());
        }
    }
    out
}

/// Children of `pid` (direct).
fn children(pid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((head, after)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            if let Some(p) = head.split_whitespace().next().and_then(|p| p.parse().ok()) {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test]
async fn no_compose_process_outlives_a_killed_stackpilot() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("slow", &host);
    let mut sp = std::process::Command::new(bin())
        .env("DOCKER_HOST", &host)
        .env("STACKPILOT_LOG", "warn")
        .arg("--stack")
        .arg(stack.path())
        .args(["compose-up", "--wait-timeout-s", "120", "--yes", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    // Wait for its compose child (the plan runs `config` first; `up` runs long).
    let started = Instant::now();
    let group = loop {
        if let Some(g) = children(sp.id()).into_iter().find(|c| {
            std::fs::read_to_string(format!("/proc/{c}/cmdline"))
                .map(|cmd| cmd.contains("up\0-d\0--wait"))
                .unwrap_or(false)
        }) {
            break g;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "compose up never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!group_members(group).is_empty());
    std::thread::sleep(Duration::from_millis(500));
    // SIGKILL: no destructor runs in stackpilot.
    sp.kill().expect("kill");
    let _ = sp.wait();
    let killed_at = Instant::now();
    while !group_members(group).is_empty() && killed_at.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = group_members(group);
    assert!(
        left.is_empty(),
        "compose outlived stackpilot by {:?}: {left:?}",
        killed_at.elapsed()
    );
    assert!(
        killed_at.elapsed() < Duration::from_secs(2),
        "{:?}",
        killed_at.elapsed()
    );
    // The next holder takes the lock at once and finds nothing left running.
    let next = std::process::Command::new(bin())
        .env("DOCKER_HOST", &host)
        .env("STACKPILOT_LOG", "warn")
        .arg("--stack")
        .arg(stack.path())
        .args(["compose-down", "--yes", "--json", "--lock-timeout-s", "2"])
        .output()
        .expect("down");
    assert!(
        next.status.success(),
        "{}{}",
        String::from_utf8_lossy(&next.stdout),
        String::from_utf8_lossy(&next.stderr)
    );
}
