//! The MongoDB path against the stand-in image (tests/images/mongo-standin: NOT
//! MongoDB; shell mongodump/mongorestore/mongosh speaking the same command
//! lines, with injectable failures), named-volume backups through a helper
//! container with stop_during_backup, and cancellation. Same production code
//! path as a real MongoDB: only the image differs.
mod common;
#[path = "backup_support/mod.rs"]
mod support;

use std::time::Duration;

use common::docker::{engine, DockerStack};
use common::Person;
use serde_json::json;
use support::*;

fn backup_stack(host: &str) -> DockerStack {
    let stack = DockerStack::new("backup", host);
    up(&stack);
    stack
}

fn mongo_counts(stack: &DockerStack) -> String {
    exec(stack, "mongo", &["mongosh", "--quiet", "--eval", "counts"])
}

fn standin_env(stack: &DockerStack, text: &str) {
    exec(
        stack,
        "mongo",
        &[
            "sh",
            "-c",
            &format!("printf '%s\\n' '{text}' > /tmp/standin.env"),
        ],
    );
}

fn running(stack: &DockerStack, service: &str) -> bool {
    let c = container(stack, service);
    let o = stack.docker(&["inspect", "-f", "{{.State.Running}}", &c]);
    String::from_utf8_lossy(&o.stdout).trim() == "true"
}

#[tokio::test]
async fn mongo_backup_verify_drop_restore_round_trip() {
    let Some(host) = engine() else { return };
    let stack = backup_stack(&host);
    let before = mongo_counts(&stack);
    assert!(before.contains("app.orders\t3400"), "{before}");
    let (client, _) = connect(
        stack.path(),
        &host,
        Person::Absent,
        &["--allow-destructive"],
    )
    .await;
    let b = ok(&call(&client, "backup", json!({"services": ["mongo"]})).await);
    let id = b["backup_id"].as_str().expect("id").to_string();
    let f = &b["files"][0];
    assert_eq!(f["method"], "mongodump");
    assert_eq!(f["compression"], "gzip");
    assert_eq!(
        f["counts"],
        json!({"analytics.events": 5000, "app.orders": 3400, "app.users": 1200})
    );
    assert!(f["file"]
        .as_str()
        .is_some_and(|n| n.ends_with("-mongo.archive.gz")));
    let v = ok(&call(&client, "verify_backup", json!({"backup_id": id})).await);
    assert_eq!(v["ok"], true, "{v:#}");
    assert!(v["files"][0]["content"]["checked_with"]
        .as_str()
        .is_some_and(|s| s.contains("mongorestore --dryRun")));

    // "Drop" a collection, then restore.
    exec(
        &stack,
        "mongo",
        &["sed", "-i", "/DOC app.orders/d", "/data/db/current.archive"],
    );
    assert!(!mongo_counts(&stack).contains("app.orders"));
    let r = ok(&call(
        &client,
        "restore",
        json!({"backup_id": id, "services": ["mongo"]}),
    )
    .await);
    assert_eq!(r["confirmed_by"], "allow_destructive");
    assert_eq!(r["counts_match"], true, "{r:#}");
    assert_eq!(mongo_counts(&stack), before);
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn a_failing_mongodump_leaves_nothing_and_reports_its_stderr() {
    let Some(host) = engine() else { return };
    let stack = backup_stack(&host);
    let (client, _) = connect(stack.path(), &host, Person::Absent, &[]).await;
    let good = ok(&call(&client, "backup", json!({"services": ["mongo"]})).await);
    let dir = backup_dir(&stack);
    let before = files(&dir);

    // Streams 20 kB of the archive, then fails like a real mongodump would.
    standin_env(&stack, "STANDIN_DUMP_FAIL_AFTER_BYTES=20000");
    let e = err(&call(&client, "backup", json!({"services": ["mongo"]})).await);
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(msg.contains("mongodump exited with code 1"), "{e:#}");
    assert!(
        msg.contains("stand-in failure injected"),
        "the stderr tail: {e:#}"
    );
    assert!(e["evidence"][0]
        .as_str()
        .is_some_and(|s| s.contains("stderr tail") && s.contains("error writing data")));
    assert_eq!(
        files(&dir),
        before,
        "no backup file, no .partial, no manifest"
    );

    // A complete stream with a non-zero exit is not a backup either.
    standin_env(&stack, "STANDIN_DUMP_EXIT=3");
    let e = err(&call(&client, "backup", json!({})).await);
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("mongodump exited with code 3")),
        "{e:#}"
    );
    assert_eq!(
        files(&dir),
        before,
        "the volume file of the same set was removed too"
    );

    standin_env(&stack, "");
    let v = ok(&call(
        &client,
        "verify_backup",
        json!({"backup_id": good["backup_id"]}),
    )
    .await);
    assert_eq!(v["ok"], true, "earlier backups untouched");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn cancelling_a_backup_removes_its_partial_file() {
    let Some(host) = engine() else { return };
    let stack = backup_stack(&host);
    let (client, _) = connect(stack.path(), &host, Person::Absent, &[]).await;
    let good = ok(&call(&client, "backup", json!({"services": ["mongo"]})).await);
    let dir = backup_dir(&stack);
    let before = files(&dir);
    standin_env(&stack, "STANDIN_DUMP_SLOW=1");
    let peer = client.peer().clone();
    let slow = tokio::spawn(async move {
        let args = json!({"services": ["mongo"]})
            .as_object()
            .cloned()
            .expect("obj");
        peer.call_tool(rmcp::model::CallToolRequestParams::new("backup").with_arguments(args))
            .await
    });
    let mut partial = None;
    for _ in 0..200 {
        partial = files(&dir).into_iter().find(|f| f.ends_with(".partial"));
        if partial.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let partial = partial.expect("the slow dump is writing its .partial");
    // The client gives up: dropping the call sends notifications/cancelled.
    slow.abort();
    assert!(slow.await.is_err(), "aborted before an answer");
    let mut left = Vec::new();
    for _ in 0..100 {
        left = files(&dir);
        if left == before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        left, before,
        "the .partial is gone and nothing else changed"
    );
    assert!(!dir.join(&partial).exists());
    standin_env(&stack, "");
    let v = ok(&call(
        &client,
        "verify_backup",
        json!({"backup_id": good["backup_id"]}),
    )
    .await);
    assert_eq!(v["ok"], true);
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn volume_backup_stops_and_restarts_and_restore_replaces_contents() {
    let Some(host) = engine() else { return };
    let stack = backup_stack(&host);
    exec(
        &stack,
        "files",
        &["sh", "-c", "mkdir -p /data/docs/deep && for i in $(seq 1 40); do echo \"file $i\" > /data/docs/f$i.txt; done && echo secret > /data/docs/deep/.dot && ln -s f1.txt /data/docs/link"],
    );
    let (client, _) = connect(
        stack.path(),
        &host,
        Person::Absent,
        &["--allow-destructive"],
    )
    .await;
    let b = ok(&call(&client, "backup", json!({"services": ["files"]})).await);
    let name = container_name(&stack, "files");
    assert_eq!(b["stopped"], json!([name]), "stopped for a consistent copy");
    assert_eq!(b["restarted"], json!([name]));
    assert!(running(&stack, "files"), "started again");
    let f = &b["files"][0];
    assert_eq!(f["method"], "volume");
    assert_eq!(f["counts"], json!({"directories": 2, "files": 41}));
    assert!(f["file"]
        .as_str()
        .is_some_and(|n| n.ends_with("-files.files_data.tar.zst")));
    let id = b["backup_id"].as_str().expect("id").to_string();
    let v = ok(&call(&client, "verify_backup", json!({"backup_id": id})).await);
    assert_eq!(v["ok"], true, "{v:#}");

    // A container that was stopped before stays stopped.
    assert!(stack.compose(&["stop", "files"]).status.success());
    let b2 = ok(&call(&client, "backup", json!({"services": ["files"]})).await);
    assert_eq!(b2["stopped"], json!([]));
    assert!(!running(&stack, "files"), "left stopped");
    assert!(stack.compose(&["start", "files"]).status.success());

    // Change the contents, then restore: the volume holds exactly the backup again.
    exec(&stack, "files", &["sh", "-c", "rm -rf /data/docs/deep && echo new > /data/new.txt && echo changed > /data/docs/f1.txt"]);
    let r = ok(&call(&client, "restore", json!({"backup_id": id})).await);
    assert_eq!(r["counts_match"], true, "{r:#}");
    assert_eq!(r["restored"][0]["stopped"], json!([name]));
    assert!(running(&stack, "files"));
    let listing = exec(
        &stack,
        "files",
        &[
            "sh",
            "-c",
            "cd /data && find . | sort && cat docs/f1.txt docs/deep/.dot",
        ],
    );
    assert!(!listing.contains("new.txt"), "{listing}");
    assert!(listing.contains("./docs/deep/.dot") && listing.contains("./docs/link"));
    assert!(listing.contains("file 1\nsecret"), "{listing}");

    // A damaged backup is reported by verify_backup and never restored.
    let path = backup_dir(&stack).join(f["file"].as_str().expect("file"));
    let mut bytes = std::fs::read(&path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).expect("corrupt");
    let v = ok(&call(&client, "verify_backup", json!({"backup_id": id})).await);
    assert_eq!(v["ok"], false);
    assert_eq!(v["files"][0]["sha256_ok"], false);
    exec(
        &stack,
        "files",
        &["sh", "-c", "echo after > /data/after.txt"],
    );
    let sets_before = files(&backup_dir(&stack));
    let e = err(&call(&client, "restore", json!({"backup_id": id})).await);
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not match its manifest")),
        "{e:#}"
    );
    assert_eq!(
        exec(&stack, "files", &["cat", "/data/after.txt"]),
        "after\n",
        "nothing restored"
    );
    assert_eq!(
        files(&backup_dir(&stack)),
        sets_before,
        "no safety backup either"
    );
    client.cancel().await.expect("close");
}

fn container_name(stack: &DockerStack, service: &str) -> String {
    let c = container(stack, service);
    let o = stack.docker(&["inspect", "-f", "{{.Name}}", &c]);
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .trim_start_matches('/')
        .to_string()
}

/// compose_down with remove_volumes backs up first: refused while a dump
/// service is stopped, stopped by a failing dump (nothing removed), and with
/// a good dump the volumes go only after the backup set is committed.
#[tokio::test]
async fn compose_down_with_volumes_backs_up_first() {
    let Some(host) = engine() else { return };
    let stack = backup_stack(&host);
    let (client, _) = connect(
        stack.path(),
        &host,
        Person::Absent,
        &["--allow-destructive"],
    )
    .await;
    let volumes = stack.resources("volume");
    assert_eq!(volumes.len(), 2, "{volumes:?}");
    let args = json!({"remove_volumes": true, "stop_timeout_s": 1});

    // A stopped mongo cannot be dumped: refused before anything happens.
    let c = container(&stack, "mongo");
    assert!(stack.docker(&["stop", "-t", "1", &c]).status.success());
    let e = err(&call(&client, "compose_down", args.clone()).await);
    assert_eq!(e["field"], "remove_volumes", "{e:#}");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("`mongo` is not running")),
        "{e:#}"
    );
    assert_eq!(stack.resources("volume"), volumes, "nothing removed");
    assert_eq!(stack.resources("container").len(), 2);
    assert!(stack.docker(&["start", &c]).status.success());

    // A dump that fails: no backup, nothing removed.
    standin_env(&stack, "STANDIN_DUMP_EXIT=3");
    let dir = backup_dir(&stack);
    let before = files(&dir);
    let e = err(&call(&client, "compose_down", args.clone()).await);
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("the backup before removing volumes failed, nothing was removed")
            && msg.contains("mongodump exited with code 3"),
        "{e:#}"
    );
    assert_eq!(files(&dir), before, "no partial backup left");
    assert_eq!(stack.resources("volume"), volumes, "nothing removed");
    assert_eq!(stack.resources("container").len(), 2);
    assert!(running(&stack, "mongo") && running(&stack, "files"));

    // A good dump: backup set first, then the volumes go.
    standin_env(&stack, "");
    let out = ok(&call(&client, "compose_down", args).await);
    assert_eq!(out["confirmed_by"], "allow_destructive");
    assert_eq!(
        out["backup"]["services"],
        json!(["files", "mongo"]),
        "{out:#}"
    );
    assert!(stack.resources("volume").is_empty(), "volumes removed");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out["backup"]["manifest_path"].as_str().expect("path")).expect("manifest"),
    )
    .expect("json");
    let counts: Vec<&serde_json::Value> = manifest["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| &e["counts"])
        .collect();
    assert!(
        counts
            .iter()
            .any(|c| c["app.orders"] == 3400 && c["app.users"] == 1200),
        "the mongo data as it was: {manifest:#}"
    );
    let v = ok(&call(
        &client,
        "verify_backup",
        json!({"backup_id": out["backup"]["backup_id"]}),
    )
    .await);
    assert_eq!(v["ok"], true, "{v:#}");
    client.cancel().await.expect("close");
}
