//! Backup tools without an engine: bad input is rejected before anything is
//! written (path traversal, absolute paths, NUL, unknown services), and
//! prune_backups on a synthetic set of 32 dated backup sets keeps exactly the
//! survivors each policy names and never touches a file without a manifest.
//! Needs only the Compose v2 CLI (for the stack model).
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use rmcp::model::ProtocolVersion;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use stackpilot::domain::backup_set::{
    Manifest, ManifestEntry, Method, SetId, Stamp, MANIFEST_FORMAT,
};

fn compose_available() -> bool {
    let ok = std::process::Command::new("docker")
        .args(["compose", "version"])
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(" 2."))
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Compose v2 is required under CI"
        );
        eprintln!("skipped: no Compose v2 CLI (scripts/test.sh installs it)");
    }
    ok
}

const COMPOSE: &str = "x-stackpilot:
  backup_root: ./backups
  retention:
    keep_last: 5
services:
  db:
    image: stackpilot-test/postgres:15
    pull_policy: never
    labels:
      io.stackpilot.role: postgres
      io.stackpilot.backup: pg_dump
  cache:
    image: stackpilot-test/busybox:1
    pull_policy: never
    labels:
      io.stackpilot.role: volume
    volumes:
      - cache_data:/data
  web:
    image: stackpilot-test/busybox:1
    pull_policy: never
    labels:
      io.stackpilot.role: api
volumes:
  cache_data:
";

fn stack() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("docker-compose.yml"), COMPOSE).expect("compose");
    std::fs::write(dir.path().join(".env"), "COMPOSE_PROJECT_NAME=bk\n").expect(".env");
    dir
}

/// Every path under `dir` with its content hash (directories as `/`), except
/// the state dir, where every mutating call (rejected ones too) leaves its
/// audit line by design.
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|n| n == ".stackpilot") {
                continue;
            }
            if p.is_dir() {
                out.insert(p.clone(), "/".into());
                todo.push(p);
            } else {
                let bytes = std::fs::read(&p).expect("read");
                out.insert(p, hex::encode(Sha256::digest(&bytes)));
            }
        }
    }
    out
}

async fn client_for(dir: &Path, extra: &[&str], person: Person) -> Client {
    stdio_client(
        dir,
        extra,
        TestClient::new(person, ProtocolVersion::V_2025_11_25),
    )
    .await
}

fn error_of(r: &rmcp::model::CallToolResult) -> Value {
    assert!(is_error(r), "expected an error: {:?}", r.structured_content);
    structured(r)["error"].clone()
}

#[tokio::test]
async fn bad_input_is_rejected_and_nothing_is_written() {
    if !compose_available() {
        return;
    }
    let dir = stack();
    let before = tree(dir.path());
    let client = client_for(dir.path(), &["--allow-destructive"], Person::Absent).await;
    let long = "a".repeat(300);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("backup", json!({"label": "../escape"}), "label"),
        ("backup", json!({"label": "/etc/cron.d/x"}), "label"),
        ("backup", json!({"label": "nul\u{0}byte"}), "label"),
        ("backup", json!({"label": "a".repeat(65)}), "label"),
        ("backup", json!({"label": "dots.are.not.labels"}), "label"),
        ("backup", json!({"services": ["../../etc"]}), "services[0]"),
        ("backup", json!({"services": ["/abs"]}), "services[0]"),
        ("backup", json!({"services": ["db\u{0}"]}), "services[0]"),
        ("backup", json!({"services": ["nope"]}), "services"),
        ("backup", json!({"services": ["web"]}), "services[0]"),
        ("backup", json!({"services": []}), "services"),
        ("backup", json!({"path": "/tmp"}), "path"),
        (
            "verify_backup",
            json!({"backup_id": "../../etc/passwd"}),
            "backup_id",
        ),
        (
            "verify_backup",
            json!({"backup_id": "/etc/passwd"}),
            "backup_id",
        ),
        (
            "verify_backup",
            json!({"backup_id": "20261124T130501Z/../../x"}),
            "backup_id",
        ),
        (
            "verify_backup",
            json!({"backup_id": "20261124T130501Z\u{0}"}),
            "backup_id",
        ),
        ("verify_backup", json!({"backup_id": long}), "backup_id"),
        ("verify_backup", json!({"backup_id": "latest"}), "backup_id"),
        (
            "restore",
            json!({"backup_id": "../20261124T130501Z"}),
            "backup_id",
        ),
        (
            "restore",
            json!({"backup_id": "20261124T130501Z-../../x"}),
            "backup_id",
        ),
        (
            "restore",
            json!({"backup_id": "C:\\backups\\x"}),
            "backup_id",
        ),
        ("restore", json!({}), "backup_id"),
        (
            "restore",
            json!({"backup_id": "20261124T130501Z"}),
            "backup_id",
        ),
        (
            "restore",
            json!({"backup_id": "20261124T130501Z", "services": ["../db"]}),
            "services[0]",
        ),
        ("list_backups", json!({"limit": 0}), "limit"),
        ("list_backups", json!({"limit": 100000}), "limit"),
        ("list_backups", json!({"service": "../x"}), "service"),
        ("prune_backups", json!({"keep_last": 20000}), "keep_last"),
        ("prune_backups", json!({"keep_last": -1}), "keep_last"),
    ];
    for (tool, args, field) in cases {
        let r = call(&client, tool, args.clone()).await;
        let e = error_of(&r);
        assert_eq!(e["kind"], "invalid_input", "{tool} {args}: {e:#}");
        assert_eq!(e["field"], field, "{tool} {args}: {e:#}");
    }
    // Unknown services name the ones that can be backed up.
    let e = error_of(&call(&client, "backup", json!({"services": ["nope"]})).await);
    let allowed: Vec<String> = serde_json::from_value(e["allowed"].clone()).expect("allowed");
    assert!(allowed.contains(&"db".to_string()), "{e:#}");
    // A restore of a set that does not exist says so.
    let e = error_of(&call(&client, "restore", json!({"backup_id": "20261124T130501Z"})).await);
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("no backup set")),
        "{e:#}"
    );
    client.cancel().await.expect("close");
    assert_eq!(
        tree(dir.path()),
        before,
        "nothing was written anywhere in the stack"
    );
    assert!(!dir.path().join("backups").exists());
}

/// 30 daily sets of `db` from 2026-10-01 02:00, a second set on 30 Oct at
/// 14:00 (labelled), and one old set of `cache`.
fn synthetic(stack: &Path) -> PathBuf {
    let dir = stack.join("backups").join("bk");
    std::fs::create_dir_all(&dir).expect("dir");
    let start = Stamp::parse("20261001T020000Z").expect("stamp").unix();
    let mut sets: Vec<(SetId, &str)> = (0..30)
        .map(|d| {
            (
                SetId::new(Stamp::from_unix(start + d * 86_400).expect("stamp"), None),
                "db",
            )
        })
        .collect();
    sets.push((
        SetId::parse("x", "20261030T140000Z-manual").expect("id"),
        "db",
    ));
    sets.push((SetId::parse("x", "20260901T000000Z").expect("id"), "cache"));
    for (id, service) in sets {
        let method = if service == "db" {
            Method::PgDump
        } else {
            Method::Volume
        };
        let file = format!("{}-{service}.{}", id.stamp_text(), method.extension());
        let content = format!("synthetic backup {id}");
        std::fs::write(dir.join(&file), &content).expect("file");
        let m = Manifest {
            format: MANIFEST_FORMAT.into(),
            id: id.to_string(),
            project: "bk".into(),
            stack_id: "synthetic".into(),
            label: id.label().map(str::to_string),
            created_at: id.stamp().rfc3339(),
            finished_at: id.stamp().rfc3339(),
            duration_s: 1.0,
            stackpilot_version: "0.1.0".into(),
            entries: vec![ManifestEntry {
                service: service.into(),
                role: "postgres".into(),
                method,
                image: "img".into(),
                volume: None,
                database: None,
                file,
                compression: "zstd".into(),
                bytes: content.len() as u64,
                stream_bytes: content.len() as u64,
                sha256: hex::encode(Sha256::digest(content.as_bytes())),
                tool_versions: BTreeMap::new(),
                duration_s: 1.0,
                counts: BTreeMap::new(),
                note: None,
            }],
        };
        std::fs::write(
            dir.join(id.manifest_name()),
            serde_json::to_vec_pretty(&m).expect("json"),
        )
        .expect("manifest");
    }
    // Foreign files: none has a (valid) stackpilot manifest, so none may be touched.
    std::fs::write(dir.join("notes.txt"), "mine").expect("foreign");
    std::fs::write(
        dir.join("20261002T020000Z-db.pgdump.zst.partial"),
        "partial",
    )
    .expect("partial");
    std::fs::write(dir.join("20261003T030000Z-db.pgdump.zst"), "unlisted").expect("unlisted");
    std::fs::write(
        dir.join("20261004T030000Z-bogus.manifest.json"),
        "{not json",
    )
    .expect("bogus");
    std::fs::write(
        dir.join("20261005T030000Z-other.manifest.json"),
        r#"{"format":"someone-else/1","id":"20261005T030000Z-other","entries":[{"file":"notes.txt"}]}"#,
    )
    .expect("other");
    std::fs::create_dir_all(dir.join("sub")).expect("sub");
    std::fs::write(dir.join("sub/20261006T020000Z.manifest.json"), "x").expect("sub file");
    std::fs::write(stack.join("backups").join("outside-project.txt"), "x").expect("root file");
    dir
}

const FOREIGN: [&str; 5] = [
    "notes.txt",
    "20261002T020000Z-db.pgdump.zst.partial",
    "20261003T030000Z-db.pgdump.zst",
    "20261004T030000Z-bogus.manifest.json",
    "20261005T030000Z-other.manifest.json",
];

/// The set ids whose manifests remain.
fn surviving(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            SetId::from_manifest_name(&n).map(|id| id.to_string())
        })
        .filter(|id| !id.ends_with("-bogus") && !id.ends_with("-other"))
        .collect();
    v.sort();
    v
}

fn days(list: &[u32]) -> Vec<String> {
    list.iter()
        .map(|d| format!("202610{d:02}T020000Z"))
        .collect()
}

fn expected(mut v: Vec<String>) -> Vec<String> {
    v.push("20260901T000000Z".into()); // the newest (only) backup of `cache`
    v.push("20261030T140000Z-manual".into());
    v.sort();
    v
}

#[tokio::test]
async fn prune_keeps_exactly_what_each_policy_names() {
    if !compose_available() {
        return;
    }
    let cases: Vec<(Value, Vec<String>)> = vec![
        (
            json!({"keep_last": 7}),
            expected(days(&[25, 26, 27, 28, 29, 30])),
        ),
        // The stack's default: x-stackpilot retention keep_last 5.
        (json!({}), expected(days(&[27, 28, 29, 30]))),
        (
            json!({"keep_last": 0, "keep_daily": 3}),
            expected(days(&[28, 29])),
        ),
        (
            json!({"keep_last": 0, "keep_weekly": 3}),
            expected(days(&[18, 25])),
        ),
        (
            json!({"keep_last": 2, "keep_daily": 3, "keep_weekly": 2}),
            expected(days(&[25, 28, 29, 30])),
        ),
        (json!({"keep_last": 100}), {
            let mut all: Vec<String> = (1..=30).map(|d| format!("202610{d:02}T020000Z")).collect();
            all.push("20260901T000000Z".into());
            all.push("20261030T140000Z-manual".into());
            all.sort();
            all
        }),
    ];
    for (policy, survivors) in cases {
        let stack = stack();
        let dir = synthetic(stack.path());
        let foreign_before: Vec<(String, Vec<u8>)> = FOREIGN
            .iter()
            .map(|f| (f.to_string(), std::fs::read(dir.join(f)).expect("read")))
            .collect();
        let client = client_for(stack.path(), &["--allow-destructive"], Person::Absent).await;
        let r = call(&client, "prune_backups", policy.clone()).await;
        assert!(!is_error(&r), "{policy}: {:?}", r.structured_content);
        let out = structured(&r);
        assert_eq!(surviving(&dir), survivors, "{policy}");
        let deleted = out["deleted"].as_array().expect("deleted").len();
        assert_eq!(deleted, 32 - survivors.len(), "{policy}");
        assert_eq!(out["untouched_files"], 5, "{policy}: {out:#}");
        // Each survivor's data file is still there; each deleted one is gone.
        for id in &survivors {
            let set = SetId::parse("x", id).expect("id");
            let svc = if id.starts_with("20260901") {
                "cache.tar.zst"
            } else {
                "db.pgdump.zst"
            };
            assert!(
                dir.join(format!("{}-{svc}", set.stamp_text())).is_file(),
                "{id}"
            );
        }
        for (f, bytes) in &foreign_before {
            assert_eq!(
                &std::fs::read(dir.join(f)).expect("foreign kept"),
                bytes,
                "{f}"
            );
        }
        assert!(dir.join("sub/20261006T020000Z.manifest.json").is_file());
        assert!(stack.path().join("backups/outside-project.txt").is_file());
        client.cancel().await.expect("close");
    }
}

#[tokio::test]
async fn prune_refuses_to_delete_everything_and_asks_first() {
    if !compose_available() {
        return;
    }
    let stack = stack();
    let dir = synthetic(stack.path());
    let before = tree(stack.path());
    let client = client_for(stack.path(), &[], Person::Absent).await;
    let e = error_of(
        &call(
            &client,
            "prune_backups",
            json!({"keep_last": 0, "keep_daily": 0, "keep_weekly": 0}),
        )
        .await,
    );
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("would delete every backup")),
        "{e:#}"
    );
    assert_eq!(tree(stack.path()), before);

    // No way to ask the person: the plan lists each set; nothing is deleted yet.
    let r = structured(&call(&client, "prune_backups", json!({"keep_last": 3})).await);
    assert_eq!(r["confirmation_required"], true, "{r:#}");
    let steps = r["plan"]["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 32 - 4);
    assert!(steps
        .iter()
        .all(|s| s["action"] == "remove" && s["destructive"] == true));
    assert!(steps.iter().any(|s| s["target"] == "20261001T020000Z"));
    assert!(surviving(&dir).len() == 32);
    let token = r["confirm_token"].as_str().expect("token");
    let done = structured(
        &call(
            &client,
            "prune_backups",
            json!({"keep_last": 3, "confirm_token": token}),
        )
        .await,
    );
    assert_eq!(done["confirmed_by"], "token");
    assert_eq!(
        surviving(&dir),
        expected(days(&[29, 30])),
        "newest three of db, and cache's only one"
    );

    // list_backups pages newest first and counts what it leaves alone.
    let l = structured(&call(&client, "list_backups", json!({"limit": 2})).await);
    assert_eq!(l["total"], 4);
    assert_eq!(l["next_offset"], 2);
    assert_eq!(l["sets"][0]["backup_id"], "20261030T140000Z-manual");
    assert_eq!(l["sets"][0]["complete"], true);
    assert_eq!(l["unmanaged_files"], 2);
    assert_eq!(
        l["partial_files"],
        json!(["20261002T020000Z-db.pgdump.zst.partial"])
    );
    assert_eq!(l["invalid_manifests"].as_array().map(Vec::len), Some(2));
    let l2 = structured(
        &call(
            &client,
            "list_backups",
            json!({"limit": 2, "offset": 2, "service": "cache"}),
        )
        .await,
    );
    assert_eq!(l2["total"], 1);
    assert_eq!(l2["sets"], json!([]));
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn a_set_added_between_the_plan_and_its_token_is_a_new_plan() {
    if !compose_available() {
        return;
    }
    let stack = stack();
    let dir = synthetic(stack.path());
    let client = client_for(stack.path(), &[], Person::Absent).await;
    let r = structured(&call(&client, "prune_backups", json!({"keep_last": 3})).await);
    let token = r["confirm_token"].as_str().expect("token").to_string();
    // A new db backup lands meanwhile: keep_last 3 now drops one more set.
    let newest = dir.join("20261030T020000Z.manifest.json");
    let text = std::fs::read_to_string(&newest).expect("newest manifest");
    let id = "20261031T020000Z";
    std::fs::write(
        dir.join(format!("{id}.manifest.json")),
        text.replace("20261030T020000Z", id),
    )
    .expect("new manifest");
    std::fs::copy(
        dir.join("20261030T020000Z-db.pgdump.zst"),
        dir.join(format!("{id}-db.pgdump.zst")),
    )
    .expect("new data file");
    let before = surviving(&dir);
    let again = structured(
        &call(
            &client,
            "prune_backups",
            json!({"keep_last": 3, "confirm_token": token}),
        )
        .await,
    );
    assert_eq!(again["confirmation_required"], true, "{again:#}");
    assert_ne!(again["plan"]["digest"], r["plan"]["digest"]);
    assert_eq!(
        surviving(&dir),
        before,
        "nothing was deleted on the stale token"
    );
    client.cancel().await.expect("close");
}

/// verify_backup needs no engine for a volume set: sha256, size, zstd and a
/// tar walk with the recorded counts. A flipped byte or a truncated file is
/// reported per file, and nothing is changed.
#[tokio::test]
async fn verify_reports_damaged_volume_backups() {
    if !compose_available() {
        return;
    }
    let stack = stack();
    let dir = stack.path().join("backups").join("bk");
    std::fs::create_dir_all(&dir).expect("dir");
    let src = tempfile::tempdir().expect("src");
    std::fs::create_dir_all(src.path().join("a/b")).expect("dirs");
    for i in 0..25 {
        std::fs::write(
            src.path().join(format!("a/f{i}")),
            format!("file {i}").repeat(100),
        )
        .expect("f");
    }
    let tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(src.path())
        .args(["-cf", "-", "."])
        .output()
        .expect("tar");
    let packed = zstd::encode_all(&tar.stdout[..], 3).expect("zstd");
    let id = SetId::parse("x", "20261101T000000Z").expect("id");
    let file = "20261101T000000Z-cache.cache_data.tar.zst".to_string();
    std::fs::write(dir.join(&file), &packed).expect("write");
    let m = Manifest {
        format: MANIFEST_FORMAT.into(),
        id: id.to_string(),
        project: "bk".into(),
        stack_id: "synthetic".into(),
        label: None,
        created_at: id.stamp().rfc3339(),
        finished_at: id.stamp().rfc3339(),
        duration_s: 1.0,
        stackpilot_version: "0.1.0".into(),
        entries: vec![ManifestEntry {
            service: "cache".into(),
            role: "volume".into(),
            method: Method::Volume,
            image: "stackpilot-test/busybox:1".into(),
            volume: Some("bk_cache_data".into()),
            database: None,
            file: file.clone(),
            compression: "zstd".into(),
            bytes: packed.len() as u64,
            stream_bytes: tar.stdout.len() as u64,
            sha256: hex::encode(Sha256::digest(&packed)),
            tool_versions: BTreeMap::new(),
            duration_s: 1.0,
            counts: [("files".to_string(), 25), ("directories".to_string(), 2)].into(),
            note: None,
        }],
    };
    std::fs::write(
        dir.join(id.manifest_name()),
        serde_json::to_vec(&m).expect("json"),
    )
    .expect("m");
    let client = client_for(stack.path(), &[], Person::Absent).await;
    let v = structured(&call(&client, "verify_backup", json!({})).await);
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(
        v["backup_id"], "20261101T000000Z",
        "the newest set by default"
    );
    assert_eq!(v["files"][0]["content"]["entries"], 27);

    // One flipped byte: the checksum says so (and the content check, most likely, too).
    let mut bad = packed.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    std::fs::write(dir.join(&file), &bad).expect("write");
    let v = structured(
        &call(
            &client,
            "verify_backup",
            json!({"backup_id": "20261101T000000Z"}),
        )
        .await,
    );
    assert_eq!(v["ok"], false);
    assert_eq!(v["files"][0]["sha256_ok"], false);

    // Truncated: wrong size and an incomplete tar.
    std::fs::write(dir.join(&file), &packed[..packed.len() / 3]).expect("write");
    let v = structured(&call(&client, "verify_backup", json!({"services": ["cache"]})).await);
    assert_eq!(v["ok"], false);
    assert_eq!(v["files"][0]["content"]["ok"], false, "{v:#}");
    assert_eq!(v["files"][0]["bytes_actual"], (packed.len() / 3) as u64);

    // Missing.
    std::fs::remove_file(dir.join(&file)).expect("rm");
    let v = structured(&call(&client, "verify_backup", json!({})).await);
    assert_eq!(v["files"][0]["present"], false);
    assert_eq!(v["ok"], false);
    let e = error_of(&call(&client, "verify_backup", json!({"services": ["db"]})).await);
    assert_eq!(e["field"], "services[0]", "db is not in this set: {e:#}");
    client.cancel().await.expect("close");
}
