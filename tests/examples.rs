//! compose/examples/: each seed system as a worked example, operated end to
//! end through the built binary and rmcp's client: compose_up (building the
//! example's own images), health, backup, restore, compose_down. Every image
//! is local: the examples' .env names the Debian-built images and the
//! stand-ins (MongoDB, Qdrant, Ollama) the way a user overrides images.
mod common;
#[path = "backup_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::docker::{engine, free_port, DockerStack};
use common::Person;
use serde_json::{json, Value};
use support::*;
use tokio::io::AsyncBufReadExt;

/// A copy of compose/examples/<name> whose .env is its .env.example with a unique project
/// name, free host ports (every `*_PORT`, except those in `keep_ports` when free here) and the
/// overrides.
fn example(
    name: &str,
    host: &str,
    keep_ports: &[(&str, u16)],
    overrides: &[(&str, String)],
) -> DockerStack {
    let stack = DockerStack::from_dir(
        &common::root().join("compose/examples").join(name),
        name,
        host,
    );
    let template =
        std::fs::read_to_string(stack.path().join(".env.example")).expect(".env.example");
    let mut env = String::new();
    for line in template.lines() {
        match line.split_once('=') {
            Some((k, _)) if k == "COMPOSE_PROJECT_NAME" => {
                env.push_str(&format!("{k}={}\n", stack.project))
            }
            Some((k, _)) if !k.starts_with('#') && k.ends_with("_PORT") => {
                let kept = keep_ports
                    .iter()
                    .find(|(key, _)| *key == k)
                    .and_then(|(_, p)| {
                        std::net::TcpListener::bind(("127.0.0.1", *p))
                            .ok()
                            .map(|_| *p)
                    });
                env.push_str(&format!("{k}={}\n", kept.unwrap_or_else(free_port)))
            }
            _ => env.push_str(&format!("{line}\n")),
        }
    }
    std::fs::write(stack.path().join(".env"), env).expect(".env");
    for (k, v) in overrides {
        stack.set_env(k, v);
    }
    stack
}

/// Images the example built under test-unique names, removed afterwards.
struct RemoveImages(String, Vec<String>);
impl Drop for RemoveImages {
    fn drop(&mut self) {
        for image in &self.1 {
            let _ = std::process::Command::new("docker")
                .env("DOCKER_HOST", &self.0)
                .args(["image", "rm", "-f", image])
                .output();
        }
    }
}

fn all_healthy(h: &Value) -> bool {
    let services = h["services"].as_array().expect("services");
    !services.is_empty() && services.iter().all(|s| s["verdict"] == "healthy")
}

/// health (deep) until every service is healthy (the host's verdict follows this shared
/// machine's disk, not the stack), at most `limit`.
async fn healthy(client: &Client, limit: Duration) -> Value {
    let started = Instant::now();
    loop {
        let h = ok(&call(client, "health", json!({"deep": true})).await);
        if all_healthy(&h) || started.elapsed() > limit {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn by_service<'a>(v: &'a Value, key: &str, svc: &str) -> &'a Value {
    v[key]
        .as_array()
        .expect(key)
        .iter()
        .find(|s| s["service"] == svc)
        .unwrap_or_else(|| panic!("no {svc} in {key}: {v:#}"))
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn url(stack: &DockerStack, port_key: &str, path: &str) -> String {
    format!(
        "http://127.0.0.1:{}{path}",
        stack.env_value(port_key).expect("port")
    )
}

async fn mcp(stack: &DockerStack, port_key: &str, id: u64, method: &str, params: Value) -> Value {
    let r: Value = http()
        .post(url(stack, port_key, "/mcp"))
        .json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
        .send()
        .await
        .expect("mcp answers")
        .json()
        .await
        .expect("json");
    assert!(r.get("error").is_none(), "{r:#}");
    r["result"].clone()
}

fn unique(stack: &DockerStack, repo: &str) -> String {
    format!("{repo}:{}", stack.project)
}

#[tokio::test]
async fn studio_seed_002() {
    let Some(host) = engine() else { return };
    let stack = example("studio", &host, &[], &[]);
    let api_image = unique(&stack, "sptest-studio-api");
    stack.set_env("STUDIO_API_IMAGE", &api_image);
    let _images = RemoveImages(host.clone(), vec![api_image]);
    let (client, _) = connect(stack.path(), &host, Person::Accept, &[]).await;

    let up = ok(&call(&client, "compose_up", json!({"wait_timeout_s": 300})).await);
    assert_eq!(up["applied"], true, "{up:#}");
    let st = ok(&call(&client, "stack_status", json!({})).await);
    for (svc, role, source) in [
        ("api", "other", "none"),
        ("postgres", "postgres", "image"),
        ("redis", "redis", "image"),
    ] {
        let s = by_service(&st, "services", svc);
        assert_eq!(
            (s["role"].as_str(), s["role_source"].as_str()),
            (Some(role), Some(source)),
            "{s:#}"
        );
    }
    let h = healthy(&client, Duration::from_secs(60)).await;
    assert!(all_healthy(&h), "{h:#}");
    for _ in 0..3 {
        let r = http()
            .post(url(&stack, "API_PORT", "/api/hits"))
            .send()
            .await
            .expect("hits");
        assert_eq!(r.status(), 200);
    }
    let ready = http()
        .get(url(&stack, "API_PORT", "/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
    exec(&stack, "postgres", &["psql", "-U", "dev", "-d", "agentic_dev", "-c", "create table ideas(id serial primary key, title text); insert into ideas(title) select 'idea ' || i from generate_series(1, 500) i;"]);

    let b = ok(&call(&client, "backup", json!({})).await);
    let methods: BTreeMap<String, String> = b["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            (
                f["service"].as_str().unwrap_or("").to_string(),
                f["method"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        methods,
        BTreeMap::from([
            ("postgres".into(), "pg_dump".into()),
            ("redis".into(), "redis".into())
        ])
    );
    assert_eq!(
        by_service(&b, "files", "redis")["counts"],
        json!({"db0": 1})
    );
    let id = b["backup_id"].as_str().expect("id").to_string();
    exec(
        &stack,
        "postgres",
        &[
            "psql",
            "-U",
            "dev",
            "-d",
            "agentic_dev",
            "-c",
            "delete from ideas where id > 7",
        ],
    );
    exec(&stack, "redis", &["redis-cli", "SET", "hits", "99"]);
    let r = ok(&call(&client, "restore", json!({"backup_id": id})).await);
    assert_eq!(r["counts_match"], true, "{r:#}");
    assert_eq!(
        exec(&stack, "redis", &["redis-cli", "GET", "hits"]).trim(),
        "3"
    );
    assert_eq!(
        exec(
            &stack,
            "postgres",
            &[
                "psql",
                "-At",
                "-U",
                "dev",
                "-d",
                "agentic_dev",
                "-c",
                "select count(*) from ideas"
            ]
        )
        .trim(),
        "500"
    );
    let h = healthy(&client, Duration::from_secs(60)).await;
    assert!(all_healthy(&h), "after the restore: {h:#}");
    let down = ok(&call(&client, "compose_down", json!({"remove_volumes": true})).await);
    assert!(
        down["backup"]["backup_id"]
            .as_str()
            .is_some_and(|s| s.ends_with("-pre-down")),
        "{down:#}"
    );
    assert!(stack.resources("container").is_empty());
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn melvin_seed_003() {
    let Some(host) = engine() else { return };
    let stack = example(
        "melvin",
        &host,
        &[("POSTGRES_HOST_PORT", 8004)],
        &[
            ("MONGO_IMAGE", "stackpilot-test/mongo-standin:1".into()),
            ("QDRANT_IMAGE", "stackpilot-test/qdrant-standin:1".into()),
            ("OLLAMA_IMAGE", "ollama/ollama:standin".into()),
            ("WORKER_INTERVAL_S", "2".into()),
        ],
    );
    let backup_root = stack.path().join("var-backups-melvin");
    stack.set_env("MELVIN_BACKUP_ROOT", &backup_root.display().to_string());
    let api_image = unique(&stack, "sptest-melvin-api");
    stack.set_env("MELVIN_API_IMAGE", &api_image);
    let _images = RemoveImages(host.clone(), vec![api_image]);
    let admin = ("admin@melvin.local", "CHANGE-ME-Admin-1!");
    let (client, _) = connect(stack.path(), &host, Person::Accept, &[]).await;

    let up = ok(&call(&client, "compose_up", json!({"wait_timeout_s": 600})).await);
    assert_eq!(up["applied"], true, "{up:#}");
    assert_eq!(up["services"].as_array().expect("services").len(), 6);
    let h = healthy(&client, Duration::from_secs(90)).await;
    assert!(all_healthy(&h), "{h:#}");
    let pg = by_service(&h, "services", "postgres");
    assert!(pg["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .any(|p| p["container_port"] == 5432 && p["open"] == true));
    let ready = http()
        .get(url(&stack, "API_PORT", "/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(
        ready.status(),
        200,
        "{}",
        ready.text().await.unwrap_or_default()
    );

    // The built frontend is served by the api.
    let page = http()
        .get(url(&stack, "API_PORT", "/"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    let asset = page
        .split("src=\"/")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("script tag")
        .to_string();
    assert!(asset.starts_with("assets/app-"), "{page}");
    let js = http()
        .get(url(&stack, "API_PORT", &format!("/{asset}")))
        .send()
        .await
        .expect("asset");
    assert_eq!(js.status(), 200);
    // The worker's ingestion filled Qdrant.
    let cards: Value = http()
        .get(url(&stack, "QDRANT_PORT", "/collections/cards"))
        .send()
        .await
        .expect("qdrant")
        .json()
        .await
        .expect("json");
    assert_eq!(cards["result"]["points_count"], 5, "{cards:#}");

    // Account approval and its audit trail.
    let c = http();
    let weak = c
        .post(url(&stack, "API_PORT", "/api/register"))
        .json(&json!({"email": "u@x.test", "password": "password"}))
        .send()
        .await
        .expect("register");
    assert_eq!(weak.status(), 400, "the password policy");
    let reg = c
        .post(url(&stack, "API_PORT", "/api/register"))
        .json(&json!({"email": "u@x.test", "password": "Sleeve-Up-7!"}))
        .send()
        .await
        .expect("register");
    assert_eq!(reg.status(), 201);
    let pending = c
        .post(url(&stack, "API_PORT", "/api/login"))
        .json(&json!({"email": "u@x.test", "password": "Sleeve-Up-7!"}))
        .send()
        .await
        .expect("login");
    assert_eq!(pending.status(), 403);
    let bad = c
        .post(url(&stack, "API_PORT", "/api/login"))
        .json(&json!({"email": "u@x.test", "password": "nope"}))
        .send()
        .await
        .expect("login");
    assert_eq!(bad.status(), 401);
    let approve = c
        .post(url(&stack, "API_PORT", "/api/admin/approve"))
        .basic_auth(admin.0, Some(admin.1))
        .json(&json!({"email": "u@x.test"}))
        .send()
        .await
        .expect("approve");
    assert_eq!(approve.status(), 200);
    let audit = |c: reqwest::Client| {
        let u = url(&stack, "API_PORT", "/api/admin/audit");
        async move {
            let r: Vec<Value> = c
                .get(u)
                .basic_auth(admin.0, Some(admin.1))
                .send()
                .await
                .expect("audit")
                .json()
                .await
                .expect("json");
            r.iter()
                .map(|e| {
                    format!(
                        "{} {} {}",
                        e["actor"].as_str().unwrap_or(""),
                        e["action"].as_str().unwrap_or(""),
                        e["subject"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<String>>()
        }
    };
    let trail = audit(c.clone()).await;
    for want in [
        "admin@melvin.local approved u@x.test",
        "u@x.test login_failed ",
        "u@x.test login_while_pending ",
        "system admin_bootstrap admin@melvin.local",
    ] {
        assert!(trail.iter().any(|t| t == want), "{want} in {trail:?}");
    }

    // Backups under the backup root, 8 of them: prune keeps the latest 7.
    let b = ok(&call(&client, "backup", json!({"label": "first"})).await);
    let dir = b["directory"].as_str().expect("dir").to_string();
    assert!(dir.starts_with(&backup_root.display().to_string()), "{dir}");
    let services: Vec<&str> = b["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["service"].as_str())
        .collect();
    assert_eq!(
        services,
        ["mongodb", "postgres"],
        "Postgres and MongoDB (seed 003)"
    );
    let pg_counts = by_service(&b, "files", "postgres")["counts"].clone();
    assert_eq!(pg_counts["public.audit_log"], trail.len(), "{pg_counts:#}");
    let first = b["backup_id"].as_str().expect("id").to_string();
    for _ in 0..7 {
        ok(&call(&client, "backup", json!({})).await);
    }
    let listed = ok(&call(&client, "list_backups", json!({})).await);
    assert_eq!(listed["total"], 8);
    let pruned = ok(&call(&client, "prune_backups", json!({})).await);
    assert_eq!(pruned["confirmed_by"], "elicitation", "{pruned:#}");
    let listed = ok(&call(&client, "list_backups", json!({})).await);
    assert_eq!(listed["total"], 7, "{listed:#}");
    assert!(
        listed["sets"]
            .as_array()
            .expect("sets")
            .iter()
            .all(|s| s["backup_id"] != first.as_str()),
        "the oldest went"
    );
    let newest = listed["sets"][0]["backup_id"]
        .as_str()
        .expect("newest")
        .to_string();

    // The audit trail survives losing the database.
    exec(
        &stack,
        "postgres",
        &[
            "psql",
            "-U",
            "melvin",
            "-d",
            "melvin",
            "-c",
            "truncate audit_log; delete from accounts where not is_admin",
        ],
    );
    assert!(audit(c.clone()).await.is_empty());
    let r = ok(&call(
        &client,
        "restore",
        json!({"backup_id": newest, "services": ["postgres"]}),
    )
    .await);
    assert_eq!(r["counts_match"], true, "{r:#}");
    assert_eq!(
        audit(c.clone()).await,
        trail,
        "the same audit trail after the restore"
    );
    let login = c
        .post(url(&stack, "API_PORT", "/api/login"))
        .json(&json!({"email": "u@x.test", "password": "Sleeve-Up-7!"}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 200, "the approval came back with the data");
    let r = ok(&call(
        &client,
        "restore",
        json!({"backup_id": newest, "services": ["mongodb"]}),
    )
    .await);
    assert_eq!(r["counts_match"], true, "{r:#}");
    // stackpilot's own audit log holds every operation made through it.
    let ops: Vec<String> = std::fs::read_to_string(stack.path().join(".stackpilot/audit.jsonl"))
        .expect("audit log")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|l| l["tool"].as_str().map(str::to_string))
        .collect();
    for tool in ["compose_up", "backup", "prune_backups", "restore"] {
        assert!(ops.iter().any(|t| t == tool), "{tool} in {ops:?}");
    }

    let down = ok(&call(&client, "compose_down", json!({})).await);
    assert_eq!(down["confirmed_by"], "elicitation");
    assert!(stack.resources("container").is_empty());
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn docmind_seed_001_cpu_profile() {
    let Some(host) = engine() else { return };
    let stack = example(
        "docmind",
        &host,
        &[],
        &[
            ("COMPOSE_PROFILES", "cpu".into()),
            ("STACKPILOT_PROFILE", "cpu".into()),
            ("DOCMIND_HEALTH_INTERVAL", "2s".into()),
        ],
    );
    let image = unique(&stack, "sptest-docmind");
    stack.set_env("DOCMIND_IMAGE", &image);
    let _images = RemoveImages(host.clone(), vec![image]);
    let (client, _) = connect(stack.path(), &host, Person::Accept, &[]).await;

    // A GPU profile on an engine without the NVIDIA runtime: refused, nothing created.
    let e = err(&call(&client, "compose_up", json!({"profile": "standard"})).await);
    assert!(
        e.to_string().contains("cpu"),
        "points at the cpu profile: {e:#}"
    );
    assert!(stack.resources("container").is_empty());

    let up = ok(&call(
        &client,
        "compose_up",
        json!({"profile": "cpu", "wait_timeout_s": 300}),
    )
    .await);
    assert_eq!(up["applied"], true, "{up:#}");
    let services: Vec<&str> = up["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["service"].as_str())
        .collect();
    assert_eq!(services, ["docmind-cpu"]);
    let h = healthy(&client, Duration::from_secs(60)).await;
    assert!(all_healthy(&h), "{h:#}");
    let probe = &by_service(&h, "services", "docmind-cpu")["probes"][0];
    assert!(
        probe["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("/_stcore/health"))
            && probe["ok"] == true,
        "{probe:#}"
    );
    let limit =
        by_service(&h, "services", "docmind-cpu")["containers"][0]["memory_limit_bytes"].clone();
    assert_eq!(
        limit,
        12u64 * 1024 * 1024 * 1024,
        "the cpu profile's memory limit"
    );
    let profile: Value = http()
        .get(url(&stack, "DOCMIND_PORT", "/api/profile"))
        .send()
        .await
        .expect("profile")
        .json()
        .await
        .expect("json");
    assert_eq!(profile["profile"], "cpu");
    assert_eq!(profile["model_cache"], json!(["embedding-model.txt"]));
    for (name, text) in [
        ("adr-015.md", "Docker-first deployment"),
        ("notes.txt", "hardware profiles"),
    ] {
        let r = http()
            .put(url(
                &stack,
                "DOCMIND_PORT",
                &format!("/api/documents/{name}"),
            ))
            .body(text)
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), 201);
    }

    let b = ok(&call(&client, "backup", json!({})).await);
    let volumes: Vec<String> = b["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| {
            f["volume"]
                .as_str()
                .map(|v| v.rsplit('_').next().unwrap_or("").to_string())
        })
        .collect();
    assert_eq!(volumes, ["data", "models"], "{b:#}");
    assert_eq!(
        b["stopped"].as_array().expect("stopped").len(),
        2,
        "stopped for each copy: {b:#}"
    );
    exec(
        &stack,
        "docmind-cpu",
        &[
            "sh",
            "-c",
            "rm -f /app/data/documents/* && rm -f /app/data/models/*",
        ],
    );
    let r = ok(&call(&client, "restore", json!({"backup_id": b["backup_id"]})).await);
    assert_eq!(r["counts_match"], true, "{r:#}");
    let h = healthy(&client, Duration::from_secs(60)).await;
    assert!(all_healthy(&h), "{h:#}");
    let docs: Value = http()
        .get(url(&stack, "DOCMIND_PORT", "/api/documents"))
        .send()
        .await
        .expect("docs")
        .json()
        .await
        .expect("json");
    assert_eq!(docs, json!(["adr-015.md", "notes.txt"]));
    let profile: Value = http()
        .get(url(&stack, "DOCMIND_PORT", "/api/profile"))
        .send()
        .await
        .expect("profile")
        .json()
        .await
        .expect("json");
    assert_eq!(
        profile["model_cache"],
        json!(["embedding-model.txt"]),
        "the model cache came back"
    );
    let down = ok(&call(&client, "compose_down", json!({})).await);
    assert_eq!(down["confirmed_by"], "elicitation");
    assert!(stack.resources("container").is_empty());
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn qdrant_mcp_seed_004() {
    let Some(host) = engine() else { return };
    let stack = example(
        "qdrant-mcp",
        &host,
        &[],
        &[
            // Debian bookworm's Python is 3.11: the ADR's 3.12 cannot be built here.
            ("PYTHON_BASE", "python:3.11-slim-bookworm".into()),
            ("QDRANT_IMAGE", "stackpilot-test/qdrant-standin:1".into()),
        ],
    );
    let image = unique(&stack, "sptest-mcp-server-qdrant");
    stack.set_env("MCP_SERVER_IMAGE", &image);
    let _images = RemoveImages(host.clone(), vec![image]);
    let (client, _) = connect(stack.path(), &host, Person::Accept, &[]).await;

    let up = ok(&call(&client, "compose_up", json!({"wait_timeout_s": 300})).await);
    assert_eq!(up["applied"], true, "{up:#}");
    let h = healthy(&client, Duration::from_secs(60)).await;
    assert!(all_healthy(&h), "{h:#}");
    let server = by_service(&h, "services", "mcp-server");
    assert_eq!(
        server["containers"][0]["health_status"], "healthy",
        "the image's HEALTHCHECK"
    );
    assert_eq!(
        exec(&stack, "mcp-server", &["id", "-u"]).trim(),
        "10001",
        "non-root"
    );
    assert!(exec(&stack, "mcp-server", &["env"]).contains("COLLECTION_NAME=memories"));

    let init = mcp(&stack, "MCP_PORT", 1, "initialize", json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}})).await;
    assert_eq!(init["serverInfo"]["name"], "mcp-server-qdrant");
    let tools = mcp(&stack, "MCP_PORT", 2, "tools/list", json!({})).await;
    assert_eq!(tools["tools"].as_array().expect("tools").len(), 2);
    for (i, text) in [
        "stackpilot backs up qdrant volumes",
        "the server runs as a non-root user",
        "health checks keep containers honest",
    ]
    .iter()
    .enumerate()
    {
        let r = mcp(
            &stack,
            "MCP_PORT",
            10 + i as u64,
            "tools/call",
            json!({"name": "qdrant-store", "arguments": {"information": text}}),
        )
        .await;
        assert_eq!(r["isError"], false, "{r:#}");
    }
    let find = |id| {
        mcp(
            &stack,
            "MCP_PORT",
            id,
            "tools/call",
            json!({"name": "qdrant-find", "arguments": {"query": "qdrant volumes backups"}}),
        )
    };
    let found = find(20).await;
    assert_eq!(
        found["structuredContent"]["results"]
            .as_array()
            .expect("results")
            .len(),
        3
    );
    assert_eq!(
        found["structuredContent"]["results"][0],
        "stackpilot backs up qdrant volumes"
    );

    let b = ok(&call(&client, "backup", json!({})).await);
    let f = by_service(&b, "files", "qdrant");
    assert_eq!(f["method"], "volume");
    assert_eq!(
        b["restarted"], b["stopped"],
        "Qdrant was stopped for the copy and started again"
    );
    let v = ok(&call(&client, "verify_backup", json!({})).await);
    assert_eq!(v["ok"], true, "{v:#}");
    // Qdrant was stopped for the copy: wait until it serves again.
    let h = healthy(&client, Duration::from_secs(60)).await;
    assert!(all_healthy(&h), "{h:#}");
    let del = http()
        .delete(url(&stack, "QDRANT_PORT", "/collections/memories"))
        .send()
        .await
        .expect("delete");
    assert_eq!(del.status(), 200);
    assert_eq!(find(21).await["structuredContent"]["results"], json!([]));
    let r = ok(&call(&client, "restore", json!({"backup_id": b["backup_id"]})).await);
    assert_eq!(r["counts_match"], true, "{r:#}");
    let h = healthy(&client, Duration::from_secs(60)).await;
    assert!(all_healthy(&h), "{h:#}");
    assert_eq!(find(22).await, found, "the memories came back");
    let down = ok(&call(&client, "compose_down", json!({"remove_volumes": true})).await);
    assert!(
        down["backup"]["backup_id"]
            .as_str()
            .is_some_and(|s| s.ends_with("-pre-down")),
        "{down:#}"
    );
    assert!(stack.resources("volume").is_empty());
    client.cancel().await.expect("close");
}

/// The Ollama stand-in as the host's native Ollama, started the way the seed's one-shot script
/// would: with the .env's OLLAMA_* values in its environment.
struct HostOllama {
    _child: tokio::process::Child,
    url: String,
    config_line: String,
}

async fn host_ollama(stack: &DockerStack) -> HostOllama {
    let port = free_port();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ollama-standin"));
    cmd.env_clear()
        .env("OLLAMA_HOST", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let env = std::fs::read_to_string(stack.path().join(".env")).expect(".env");
    for (k, v) in env.lines().filter_map(|l| l.split_once('=')) {
        if k.starts_with("OLLAMA_") && k != "OLLAMA_HOST" && k != "OLLAMA_BASE_URL" {
            cmd.env(k, v);
        }
    }
    let mut child = cmd.spawn().expect("spawn ollama-standin");
    let mut out = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut err = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let url = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(line)) = out.next_line().await {
            if let Some(u) = line.strip_prefix("ollama-standin listening on ") {
                return u.trim().to_string();
            }
        }
        panic!("ollama-standin exited before listening");
    })
    .await
    .expect("listens");
    let config_line = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(line)) = err.next_line().await {
            if line.contains("server config") {
                return line;
            }
        }
        String::new()
    })
    .await
    .unwrap_or_default();
    tokio::spawn(async move { while let Ok(Some(_)) = err.next_line().await {} });
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
    HostOllama {
        _child: child,
        url,
        config_line,
    }
}

#[tokio::test]
async fn liv_hana_seed_000_with_ollama_on_the_host() {
    let Some(host) = engine() else { return };
    let stack = example("liv-hana", &host, &[], &[("DEPUTY_INTERVAL_S", "2".into())]);
    let core = unique(&stack, "sptest-liv-hana-core");
    let deputy = unique(&stack, "sptest-liv-hana-deputy");
    stack.set_env("MCP_CORE_IMAGE", &core);
    stack.set_env("MCP_DEPUTY_IMAGE", &deputy);
    let _images = RemoveImages(host.clone(), vec![core, deputy]);
    let ollama = host_ollama(&stack).await;
    assert!(
        ollama.config_line.contains("OLLAMA_KV_CACHE_TYPE:q8_0")
            && ollama.config_line.contains("OLLAMA_FLASH_ATTENTION:true"),
        "the host Ollama took its settings from the .env: {}",
        ollama.config_line
    );
    let client = common::stdio_client_env(
        stack.path(),
        &[],
        common::TestClient::new(Person::Accept, rmcp::model::ProtocolVersion::V_2025_11_25),
        &[
            ("DOCKER_HOST", host.as_str()),
            ("OLLAMA_HOST", ollama.url.as_str()),
        ],
    )
    .await;
    let ok = |r: &rmcp::model::CallToolResult| {
        assert!(!common::is_error(r), "{:#}", common::structured(r));
        common::structured(r)
    };

    let up = ok(&common::call(&client, "compose_up", json!({"wait_timeout_s": 300})).await);
    assert_eq!(up["applied"], true, "{up:#}");
    let started = Instant::now();
    let h = loop {
        let h = ok(&common::call(&client, "health", json!({"deep": true})).await);
        if all_healthy(&h) || started.elapsed() > Duration::from_secs(60) {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(all_healthy(&h), "{h:#}");
    // apple-metal: no Ollama container; the host's Ollama is probed at OLLAMA_HOST.
    assert!(
        h["host"]["ollama"]["version"].is_string(),
        "{:#}",
        h["host"]
    );
    let models = ok(&common::call(&client, "list_models", json!({})).await);
    assert!(
        models.to_string().contains(&ollama.url),
        "list_models reads the host Ollama: {models:#}"
    );
    // The core's environment points at the host, as the .env says.
    assert!(exec(&stack, "mcp-core", &["env"])
        .contains("OLLAMA_BASE_URL=http://host.docker.internal:11434"));
    let hosts = exec(&stack, "mcp-core", &["cat", "/etc/hosts"]);
    assert!(hosts.contains("host.docker.internal"), "{hosts}");

    let put = |id: u64, key: &str, value: &str| {
        mcp(
            &stack,
            "MCP_CORE_PORT",
            id,
            "tools/call",
            json!({"name": "memory_put", "arguments": {"key": key, "value": value}}),
        )
    };
    let get = |id: u64, key: &str| {
        mcp(
            &stack,
            "MCP_CORE_PORT",
            id,
            "tools/call",
            json!({"name": "memory_get", "arguments": {"key": key}}),
        )
    };
    put(1, "mission", "E2E mission success").await;
    put(2, "kv_cache", "q8_0").await;
    let b = ok(&common::call(&client, "backup", json!({})).await);
    assert_eq!(b["files"][0]["service"], "mcp-core");
    assert_eq!(b["files"][0]["method"], "volume");
    // mcp-core was stopped for a consistent copy and started again: wait until it serves.
    let started = Instant::now();
    while !all_healthy(&ok(&common::call(&client, "health", json!({})).await))
        && started.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    put(3, "mission", "overwritten").await;
    let r = ok(&common::call(&client, "restore", json!({"backup_id": b["backup_id"]})).await);
    assert_eq!(r["counts_match"], true, "{r:#}");
    let started = Instant::now();
    while !all_healthy(&ok(&common::call(&client, "health", json!({})).await))
        && started.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        get(4, "mission").await["content"][0]["text"],
        "E2E mission success"
    );
    let down = ok(&common::call(&client, "compose_down", json!({})).await);
    assert_eq!(down["confirmed_by"], "elicitation");
    assert!(stack.resources("container").is_empty());
    client.cancel().await.expect("close");
}
