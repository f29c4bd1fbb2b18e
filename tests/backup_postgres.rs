//! backup / verify_backup / restore against a real Postgres 15 (the local
//! Debian-built image) with real data: 110,000 rows over three tables with
//! indexes, a foreign key, an identity column and sequences. Through the built
//! binary and rmcp's client, like an agent.
mod common;
#[path = "backup_support/mod.rs"]
mod support;

use std::time::Duration;

use common::docker::{engine, DockerStack};
use common::Person;
use serde_json::json;
use support::*;

const SEED: &str = "
create table customers(id bigserial primary key, name text not null, email text unique, created date);
insert into customers(name, email, created)
  select 'customer ' || i, 'c' || i || '@example.test', date '2020-01-01' + (i % 1000) from generate_series(1, 30000) i;
create table orders(id serial primary key, customer_id bigint not null references customers(id), total numeric(10,2), note text);
insert into orders(customer_id, total, note)
  select 1 + (i % 30000), (i % 10000) / 100.0, md5(i::text) from generate_series(1, 60000) i;
create index orders_customer on orders(customer_id);
create table events(id bigint generated always as identity primary key, kind text, payload jsonb);
insert into events(kind, payload)
  select (array['view','click','buy'])[1 + i % 3], jsonb_build_object('i', i, 'h', md5(i::text)) from generate_series(1, 20000) i;
create sequence invoice_no start 1000;
select setval('invoice_no', 4242);
";

const TABLES: [&str; 3] = ["customers", "orders", "events"];

/// Row count and a checksum over every row, per table, plus sequence states.
fn fingerprint(stack: &DockerStack) -> Vec<String> {
    let mut out: Vec<String> = TABLES
        .iter()
        .map(|t| {
            psql(
                stack,
                &format!(
                    "select '{t}', count(*), md5(coalesce(string_agg(x::text, ',' order by x.id), '')) from {t} x"
                ),
            )
        })
        .collect();
    out.push(psql(
        stack,
        "select 'invoice_no', last_value from invoice_no",
    ));
    out.push(psql(
        stack,
        "select 'orders_id_seq', last_value from orders_id_seq",
    ));
    out.push(psql(
        stack,
        "select 'indexes', string_agg(indexname, ',' order by indexname) from pg_indexes where schemaname = 'public'",
    ));
    out
}

fn data_stack(host: &str) -> DockerStack {
    let stack = DockerStack::new("data", host);
    up(&stack);
    stack
}

#[tokio::test]
async fn backup_drop_restore_gives_identical_data() {
    let Some(host) = engine() else { return };
    let stack = data_stack(&host);
    psql(&stack, SEED);
    let before = fingerprint(&stack);
    assert!(before[0].contains("|30000|") && before[1].contains("|60000|"));

    let (client, agent) = connect(stack.path(), &host, Person::Accept, &[]).await;
    let b = ok(&call(&client, "backup", json!({"label": "before-drop"})).await);
    let id = b["backup_id"].as_str().expect("id").to_string();
    assert!(id.ends_with("-before-drop"), "{id}");
    let file = &b["files"][0];
    assert_eq!(file["method"], "pg_dump");
    assert_eq!(
        file["counts"],
        json!({"public.customers": 30000, "public.events": 20000, "public.orders": 60000})
    );
    assert!(file["tool_versions"]["pg_dump"]
        .as_str()
        .is_some_and(|v| v.contains("15.")));
    let dir = backup_dir(&stack);
    let on_disk = files(&dir);
    let data_file = format!("{}-postgres.pgdump.zst", &id[..16]);
    let mut expected = vec![data_file.clone(), format!("{id}.manifest.json")];
    expected.sort();
    assert_eq!(on_disk, expected);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join(format!("{id}.manifest.json"))).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["entries"][0]["sha256"], file["sha256"]);
    let len = std::fs::metadata(dir.join(&data_file)).expect("file").len();
    assert_eq!(file["bytes"], len);
    // Progress carried bytes written and only ever increased.
    let progress = agent.progress.lock().expect("lock").clone();
    assert!(
        progress
            .iter()
            .any(|(p, m)| *p > 0.0 && m.contains("bytes written (pg_dump postgres)")),
        "{progress:?}"
    );
    assert!(progress.windows(2).all(|w| w[1].0 > w[0].0), "{progress:?}");

    let v = ok(&call(&client, "verify_backup", json!({"backup_id": id})).await);
    assert_eq!(v["ok"], true, "{v:#}");
    assert!(v["files"][0]["content"]["checked_with"]
        .as_str()
        .is_some_and(|s| s.starts_with("pg_restore --list")));

    psql(
        &stack,
        "drop table events, orders, customers; drop sequence invoice_no;",
    );
    assert_eq!(
        psql(
            &stack,
            "select count(*) from pg_tables where schemaname = 'public'"
        ),
        "0"
    );

    let r = ok(&call(&client, "restore", json!({"backup_id": id})).await);
    assert_eq!(r["confirmed_by"], "elicitation");
    let asked = agent.asked.lock().expect("lock").clone();
    assert!(
        asked
            .iter()
            .any(|m| m.contains("replace database `postgres` of service postgres")),
        "the person saw what is replaced: {asked:?}"
    );
    assert_eq!(r["counts_match"], true, "{r:#}");
    assert_eq!(r["restored"][0]["mismatches"], json!([]));
    assert_eq!(fingerprint(&stack), before, "identical data after restore");

    // The safety backup holds the state before the restore: no tables.
    let safety = r["safety_backup_id"].as_str().expect("safety id");
    assert!(safety.ends_with("-pre-restore"));
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join(format!("{safety}.manifest.json"))).expect("safety manifest"),
    )
    .expect("json");
    assert_eq!(m["entries"][0]["counts"], json!({}));
    let listed = ok(&call(&client, "list_backups", json!({})).await);
    assert_eq!(listed["total"], 2);
    assert_eq!(listed["sets"][0]["backup_id"], safety, "newest first");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn restore_declined_changes_nothing_and_a_token_restores_with_a_safety_backup() {
    let Some(host) = engine() else { return };
    let stack = data_stack(&host);
    psql(&stack, "create table t(id int primary key, v text); insert into t select i, md5(i::text) from generate_series(1, 5000) i;");
    let (client, _) = connect(stack.path(), &host, Person::Decline, &[]).await;
    let b = ok(&call(&client, "backup", json!({})).await);
    let id = b["backup_id"].as_str().expect("id").to_string();
    psql(&stack, "delete from t where id > 100");
    let dir = backup_dir(&stack);
    let files_before = files(&dir);

    let r = ok(&call(&client, "restore", json!({"backup_id": id})).await);
    assert_eq!(r["declined"], true, "{r:#}");
    assert_eq!(
        psql(&stack, "select count(*) from t"),
        "100",
        "data unchanged"
    );
    assert_eq!(
        files(&dir),
        files_before,
        "no safety backup, nothing written"
    );
    client.cancel().await.expect("close");

    // No way to ask: a plan and a token; nothing runs until the token comes back.
    let (client, _) = connect(stack.path(), &host, Person::Absent, &[]).await;
    let r = ok(&call(&client, "restore", json!({"backup_id": id})).await);
    assert_eq!(r["confirmation_required"], true);
    let steps = r["plan"]["steps"].as_array().expect("steps");
    let replace = steps
        .iter()
        .find(|s| s["action"] == "replace")
        .expect("replace step");
    assert_eq!(replace["target"], "postgres");
    assert_eq!(replace["destructive"], true);
    assert_eq!(replace["cost"]["data_loss"], true);
    assert_eq!(psql(&stack, "select count(*) from t"), "100");
    assert_eq!(files(&dir), files_before);
    let token = r["confirm_token"].as_str().expect("token");
    let done = ok(&call(
        &client,
        "restore",
        json!({"backup_id": id, "confirm_token": token}),
    )
    .await);
    assert_eq!(done["confirmed_by"], "token");
    assert_eq!(done["counts_match"], true);
    assert_eq!(psql(&stack, "select count(*) from t"), "5000");
    let safety = done["safety_backup_id"].as_str().expect("safety");
    assert!(
        dir.join(format!("{safety}.manifest.json")).is_file(),
        "the safety backup exists"
    );
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join(format!("{safety}.manifest.json"))).expect("manifest"),
    )
    .expect("json");
    assert_eq!(
        m["entries"][0]["counts"]["public.t"], 100,
        "it holds the data from before"
    );
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn a_dump_killed_midway_leaves_no_backup() {
    let Some(host) = engine() else { return };
    let stack = data_stack(&host);
    psql(&stack, "create table big(id int primary key, a text, b text); insert into big select i, md5(i::text), repeat(md5((i*7)::text), 4) from generate_series(1, 300000) i;");
    let (client, _) = connect(stack.path(), &host, Person::Absent, &[]).await;
    let first = ok(&call(&client, "backup", json!({})).await);
    let first_id = first["backup_id"].as_str().expect("id").to_string();
    let dir = backup_dir(&stack);
    let before = files(&dir);
    // Slow the container down so the dump is still running when it is killed.
    let pg = container(&stack, "postgres");
    assert!(stack
        .docker(&["update", "--cpus", "0.25", &pg])
        .status
        .success());

    let c2 = client.peer().clone();
    let running = tokio::spawn(async move {
        let args = json!({}).as_object().cloned().expect("obj");
        c2.call_tool(rmcp::model::CallToolRequestParams::new("backup").with_arguments(args))
            .await
            .expect("answered")
    });
    let mut partial = None;
    for _ in 0..300 {
        if let Some(p) = files(&dir).into_iter().find(|f| f.ends_with(".partial")) {
            if std::fs::metadata(dir.join(&p))
                .map(|m| m.len())
                .unwrap_or(0)
                > 0
            {
                partial = Some(p);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let partial = partial.expect("the dump started writing");
    // Kill pg_dump inside the container, midway.
    exec(
        &stack,
        "postgres",
        &[
            "sh",
            "-c",
            "for p in /proc/[0-9]*; do case \"$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\" in pg_dump\\ -Fc*) kill -9 ${p#/proc/};; esac; done",
        ],
    );
    let result = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("backup answers")
        .expect("join");
    let e = err(&result);
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("pg_dump exited with code 137")),
        "{e:#}"
    );
    assert!(!dir.join(&partial).exists(), "the .partial is removed");
    assert_eq!(files(&dir), before, "no new file, no manifest");
    assert!(stack
        .docker(&["update", "--cpus", "0", &pg])
        .status
        .success());
    let v = ok(&call(&client, "verify_backup", json!({"backup_id": first_id})).await);
    assert_eq!(v["ok"], true, "the earlier backup is intact");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn a_full_disk_is_a_clean_error_and_older_backups_survive() {
    let Some(host) = engine() else { return };
    let stack = data_stack(&host);
    let Some(_tmpfs) = Tmpfs::mount(&stack.path().join("backups"), "1m") else {
        return;
    };
    let (client, _) = connect(stack.path(), &host, Person::Absent, &[]).await;
    psql(
        &stack,
        "create table small(id int); insert into small select generate_series(1, 10);",
    );
    let first = ok(&call(&client, "backup", json!({})).await);
    let first_id = first["backup_id"].as_str().expect("id").to_string();
    let dir = backup_dir(&stack);
    let before = files(&dir);

    // About 2.5 MB of dump for a 1 MiB disk: the write fails midway.
    psql(&stack, "create table bulk(id int, v text); insert into bulk select i, md5(i::text) || md5((i+1)::text) from generate_series(1, 100000) i;");
    let e = err(&call(&client, "backup", json!({})).await);
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(msg.contains("No space left on device"), "{e:#}");
    assert!(
        e["next_step"]
            .as_str()
            .is_some_and(|s| s.contains("prune_backups")),
        "{e:#}"
    );
    assert_eq!(files(&dir), before, "no .partial, no manifest left");
    let v = ok(&call(&client, "verify_backup", json!({"backup_id": first_id})).await);
    assert_eq!(v["ok"], true, "the older backup is intact");

    // Preflight: less free space than the previous backup took: refused before writing.
    let filler = stack.path().join("backups").join("filler.bin");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=4096"])
        .arg(format!("of={}", filler.display()))
        .output();
    assert!(free_bytes(&dir) < first["total_bytes"].as_u64().expect("bytes"));
    let e = err(&call(&client, "backup", json!({})).await);
    assert!(
        e["message"].as_str().is_some_and(
            |m| m.contains("not enough free space") && m.contains("nothing was written")
        ),
        "{e:#}"
    );
    assert_eq!(files(&dir), before);
    assert!(filler.is_file(), "a foreign file is left alone");
    client.cancel().await.expect("close");
}
