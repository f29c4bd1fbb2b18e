//! Stacks as users write them: no x-stackpilot block, no io.stackpilot
//! labels, images named as on Docker Hub (local Debian-built images tagged
//! under those names by scripts/test-env-stacks.sh), passwords in
//! `environment:` or on the command line, ports published on every interface.
//! Operated through the built binary and rmcp's client: compose_up,
//! stack_status (what stackpilot guessed, and from what), health, backup,
//! restore with identical data afterwards, compose_down.
mod common;
#[path = "backup_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::docker::{engine, free_port, DockerStack};
use common::Person;
use serde_json::{json, Value};
use support::*;

/// Tests whose compose files publish fixed host ports (5432, 6379, 8000) run one at a time.
static FIXED_PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The compose file publishes `host:container` ports on every interface. When one of those
/// host ports is taken on this machine, an extra compose file moves them to free ports with
/// `!override` (the user's file stays as it is) and COMPOSE_FILE lists both. Returns the host
/// port each (service, container port) ends up on.
fn fixed_or_free_ports(
    stack: &DockerStack,
    file: &str,
    ports: &[(&str, u16, u16)],
) -> BTreeMap<(String, u16), u16> {
    let busy = ports
        .iter()
        .any(|(_, host, _)| std::net::TcpListener::bind(("0.0.0.0", *host)).is_err());
    let mut out = BTreeMap::new();
    if !busy {
        for (svc, host, container) in ports {
            out.insert((svc.to_string(), *container), *host);
        }
        return out;
    }
    let mut yaml = String::from("services:\n");
    for (svc, _, container) in ports {
        let port = free_port();
        yaml.push_str(&format!(
            "  {svc}:\n    ports: !override\n      - \"{port}:{container}\"\n"
        ));
        out.insert((svc.to_string(), *container), port);
    }
    std::fs::write(stack.path().join("ports.override.yml"), yaml).expect("override");
    stack.set_env("COMPOSE_FILE", &format!("{file}:ports.override.yml"));
    eprintln!("host ports {ports:?} are taken here: moved with ports.override.yml");
    out
}

/// Images a test built (compose names build-only services `<project>-<service>`).
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

/// Every service's verdict is healthy (the host's own verdict, which follows this
/// shared machine's free disk, is not the stack's).
fn all_healthy(h: &Value) -> bool {
    let services = h["services"].as_array().expect("services");
    !services.is_empty() && services.iter().all(|s| s["verdict"] == "healthy")
}

/// Polls health (deep) until every service is healthy, at most `limit`.
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

fn service<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["service"] == name)
        .unwrap_or_else(|| panic!("no service {name} in {report:#}"))
}

fn roles(status: &Value) -> BTreeMap<String, (String, String)> {
    status["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| {
            (
                s["service"].as_str().expect("name").to_string(),
                (
                    s["role"].as_str().unwrap_or("").to_string(),
                    s["role_source"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect()
}

fn probe<'a>(health: &'a Value, svc: &str, prefix: &str) -> &'a Value {
    service(health, svc)["probes"]
        .as_array()
        .expect("probes")
        .iter()
        .find(|p| p["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .unwrap_or_else(|| panic!("no probe {prefix}* for {svc}: {health:#}"))
}

/// psql as a user on a database, inside the service's container.
fn psql_as(stack: &DockerStack, svc: &str, user: &str, db: &str, sql: &str) -> String {
    exec(
        stack,
        svc,
        &[
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            user,
            "-d",
            db,
            "-c",
            sql,
        ],
    )
    .trim()
    .to_string()
}

const PG_SEED: &str = "
create table accounts(id bigserial primary key, email text unique not null, approved boolean default false);
insert into accounts(email, approved) select 'u' || i || '@example.test', i % 3 = 0 from generate_series(1, 20000) i;
create table audit(id bigint generated always as identity primary key, actor bigint references accounts(id), action text, at timestamptz default '2026-01-01');
insert into audit(actor, action) select 1 + i % 20000, (array['approve','deny','login_failed'])[1 + i % 3] from generate_series(1, 30000) i;
create index audit_actor on audit(actor);
";

fn pg_fingerprint(stack: &DockerStack, svc: &str, user: &str, db: &str) -> Vec<String> {
    ["accounts", "audit"]
        .iter()
        .map(|t| {
            psql_as(
                stack,
                svc,
                user,
                db,
                &format!("select '{t}', count(*), md5(coalesce(string_agg(x::text, ',' order by x.id), '')) from {t} x"),
            )
        })
        .collect()
}

/// Per database: the number of keys and a digest over every key's name, type, whether it
/// expires, and its value (by type; not DUMP, whose bytes follow the in-memory encoding) (one Lua script per database, so thousands of keys take milliseconds).
const REDIS_FINGERPRINT: &str = r#"script='local keys = {} local cursor = "0"
repeat local r = redis.call("SCAN", cursor, "COUNT", 1000) cursor = r[1]
for _, k in ipairs(r[2]) do keys[#keys + 1] = k end until cursor == "0"
table.sort(keys) local acc = {}
for _, k in ipairs(keys) do local ttl = redis.call("PTTL", k) local t = redis.call("TYPE", k)["ok"] local v
if t == "string" then v = {redis.call("GET", k)}
elseif t == "hash" then v = redis.call("HGETALL", k)
elseif t == "list" then v = redis.call("LRANGE", k, 0, -1)
elseif t == "set" then v = redis.call("SMEMBERS", k)
elseif t == "zset" then v = redis.call("ZRANGE", k, 0, -1, "WITHSCORES") else v = {} end
if t == "hash" or t == "set" then table.sort(v) end
acc[#acc + 1] = k .. " " .. t .. " " .. (ttl > 0 and "expires" or tostring(ttl)) .. " " .. redis.sha1hex(table.concat(v, "\0")) end
return {#keys, redis.sha1hex(table.concat(acc, "\n"))}'
for db in $(redis-cli INFO keyspace | sed -n 's/^db\([0-9]*\):.*/\1/p'); do
  echo "db$db $(redis-cli -n "$db" EVAL "$script" 0 | tr '\n' ' ')"
done"#;

const REDIS_SEED: &[&str] = &[
    "EVAL \"for i=1,5000 do redis.call('SET','session:'..i, string.rep('x', i % 97)) end return 1\" 0",
    "HSET user:1 name Ada role admin",
    "RPUSH queue:jobs a b c d",
    "SADD tags llm rag agents",
    "ZADD scores 1 one 2 two 3 three",
    "SET ephemeral soon EX 86400",
    "SELECT 3",
    "SET other-db yes",
    "EVAL \"for i=1,700 do redis.call('HSET','h:'..i,'f',i) end return 1\" 0",
];

/// Runs redis-cli lines (one connection) in the service's container.
fn redis_lines(stack: &DockerStack, svc: &str, password: Option<&str>, lines: &[&str]) -> String {
    let c = container(stack, svc);
    let mut cmd = std::process::Command::new("docker");
    cmd.env("DOCKER_HOST", &stack.docker_host)
        .arg("exec")
        .arg("-i");
    if let Some(p) = password {
        cmd.arg("-e").arg(format!("REDISCLI_AUTH={p}"));
    }
    cmd.arg(&c).arg("redis-cli");
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("docker exec");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(format!("{}\n", lines.join("\n")).as_bytes())
            .expect("write");
    }
    let out = child.wait_with_output().expect("redis-cli");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn redis_fingerprint(stack: &DockerStack, svc: &str, password: Option<&str>) -> String {
    let c = container(stack, svc);
    let mut args = vec!["exec".to_string()];
    if let Some(p) = password {
        args.push("-e".into());
        args.push(format!("REDISCLI_AUTH={p}"));
    }
    args.extend([c, "sh".into(), "-c".into(), REDIS_FINGERPRINT.into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = stack.docker(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn entry<'a>(backup: &'a Value, svc: &str) -> &'a Value {
    backup["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["service"] == svc)
        .unwrap_or_else(|| panic!("no file for {svc}: {backup:#}"))
}

fn restored<'a>(restore: &'a Value, svc: &str) -> &'a Value {
    restore["restored"]
        .as_array()
        .expect("restored")
        .iter()
        .find(|f| f["service"] == svc)
        .unwrap_or_else(|| panic!("no restore of {svc}: {restore:#}"))
}

/// No output of stackpilot may carry a password.
fn assert_no_secret(v: &Value, secrets: &[&str]) {
    let text = v.to_string();
    for s in secrets {
        assert!(!text.contains(s), "a secret leaked into {text}");
    }
}

#[tokio::test]
async fn seed_002_development_compose_runs_as_written() {
    let Some(host) = engine() else { return };
    let _fixed = FIXED_PORTS.lock().await;
    let stack = DockerStack::new("user-studio-dev", &host);
    let ports = fixed_or_free_ports(
        &stack,
        "docker-compose.dev.yml",
        &[
            ("api", 8000, 8000),
            ("postgres", 5432, 5432),
            ("redis", 6379, 6379),
        ],
    );
    let _images = RemoveImages(host.clone(), vec![format!("{}-api", stack.project)]);
    let (client, agent) = connect(stack.path(), &host, Person::Accept, &[]).await;

    let up = ok(&call(&client, "compose_up", json!({"wait_timeout_s": 300})).await);
    assert_eq!(up["applied"], true, "{up:#}");
    let st = ok(&call(&client, "stack_status", json!({})).await);
    assert_eq!(
        roles(&st),
        BTreeMap::from([
            ("api".to_string(), ("other".to_string(), "none".to_string())),
            (
                "postgres".to_string(),
                ("postgres".to_string(), "image".to_string())
            ),
            (
                "redis".to_string(),
                ("redis".to_string(), "image".to_string())
            ),
        ]),
        "{st:#}"
    );
    assert_eq!(st["ready"], true);
    assert_eq!(
        roles(&up)["redis"],
        ("redis".to_string(), "image".to_string())
    );

    // No healthchecks anywhere: each service is judged by a TCP connect from its network,
    // the data services also by their own protocol.
    let h = healthy(&client, Duration::from_secs(90)).await;
    assert!(all_healthy(&h), "{h:#}");
    for (svc, port) in [("api", 8000), ("postgres", 5432), ("redis", 6379)] {
        let p = probe(&h, svc, &format!("tcp {svc}:{port}"));
        assert_eq!(p["ok"], true, "{p:#}");
    }
    assert_eq!(
        probe(&h, "postgres", "select 1")["ok"],
        true,
        "connected as dev"
    );
    assert_eq!(probe(&h, "redis", "redis-cli PING")["ok"], true);
    let api_port = ports[&("api".to_string(), 8000)];
    let ready = reqwest::get(format!("http://127.0.0.1:{api_port}/ready"))
        .await
        .expect("api answers");
    assert_eq!(ready.status(), 200, "the api reaches postgres and redis");

    psql_as(&stack, "postgres", "dev", "agentic_dev", PG_SEED);
    redis_lines(&stack, "redis", None, REDIS_SEED);
    let pg_before = pg_fingerprint(&stack, "postgres", "dev", "agentic_dev");
    let redis_before = redis_fingerprint(&stack, "redis", None);
    assert!(
        redis_before.contains("db0 5005 ") && redis_before.contains("db3 701 "),
        "{redis_before}"
    );

    let b = ok(&call(&client, "backup", json!({})).await);
    let pg = entry(&b, "postgres");
    assert_eq!(pg["method"], "pg_dump");
    assert_eq!(pg["database"], "agentic_dev");
    assert_eq!(
        pg["counts"],
        json!({"public.accounts": 20000, "public.audit": 30000})
    );
    let rd = entry(&b, "redis");
    assert_eq!(rd["method"], "redis");
    assert_eq!(rd["role"], "redis");
    assert_eq!(rd["counts"], json!({"db0": 5005, "db3": 701}));
    assert!(rd["file"]
        .as_str()
        .is_some_and(|f| f.ends_with("-redis.rdb.zst")));
    assert!(rd["tool_versions"]["redis"]
        .as_str()
        .is_some_and(|v| v.starts_with("redis 7.")));
    assert!(
        rd["note"]
            .as_str()
            .is_some_and(|n| n.contains("RDB snapshots")),
        "{rd:#}"
    );
    assert!(b["files"]
        .as_array()
        .expect("files")
        .iter()
        .all(|f| f["service"] != "api"));
    let id = b["backup_id"].as_str().expect("id").to_string();
    let v = ok(&call(&client, "verify_backup", json!({"backup_id": id})).await);
    assert_eq!(v["ok"], true, "{v:#}");
    let vr = v["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["service"] == "redis")
        .expect("redis");
    assert!(
        vr["content"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("CRC-64")),
        "{vr:#}"
    );

    // Lose data in both, then restore the set.
    psql_as(
        &stack,
        "postgres",
        "dev",
        "agentic_dev",
        "drop table audit; delete from accounts where id > 10;",
    );
    redis_lines(&stack, "redis", None, &["FLUSHALL", "SET intruder 1"]);
    let r = ok(&call(&client, "restore", json!({"backup_id": id})).await);
    assert_eq!(r["counts_match"], true, "{r:#}");
    assert!(restored(&r, "redis")["note"]
        .as_str()
        .is_some_and(|n| n.contains("restarted")));
    assert!(
        agent
            .asked
            .lock()
            .expect("lock")
            .iter()
            .any(|m| m.contains("replace every key of Redis service redis")),
        "the person saw the Redis step"
    );
    assert_eq!(
        pg_fingerprint(&stack, "postgres", "dev", "agentic_dev"),
        pg_before
    );
    assert_eq!(
        redis_fingerprint(&stack, "redis", None),
        redis_before,
        "identical keys and values"
    );
    // The safety backup holds what was there before the restore.
    let safety = r["safety_backup_id"].as_str().expect("safety");
    let m: Value = serde_json::from_slice(
        &std::fs::read(
            stack
                .path()
                .join("backups")
                .join(&stack.project)
                .join(format!("{safety}.manifest.json")),
        )
        .expect("safety manifest"),
    )
    .expect("json");
    let safety_redis = m["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["service"] == "redis")
        .expect("redis");
    assert_eq!(safety_redis["counts"], json!({"db0": 1}));
    let h = healthy(&client, Duration::from_secs(60)).await;
    assert!(all_healthy(&h), "after the restore: {h:#}");

    let down = ok(&call(&client, "compose_down", json!({"remove_volumes": true})).await);
    assert_eq!(down["confirmed_by"], "elicitation", "{down:#}");
    assert!(stack.resources("container").is_empty());
    assert!(
        stack.resources("volume").is_empty(),
        "{:?}",
        stack.resources("volume")
    );
    for v in [&up, &st, &h, &b, &v, &r, &down] {
        assert_no_secret(v, &["POSTGRES_PASSWORD=dev"]);
    }
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn docker_hub_postgres_with_only_a_password() {
    let Some(host) = engine() else { return };
    let _fixed = FIXED_PORTS.lock().await;
    let stack = DockerStack::new("user-postgres", &host);
    let ports = fixed_or_free_ports(&stack, "docker-compose.yml", &[("db", 5432, 5432)]);
    let (client, _) = connect(stack.path(), &host, Person::Accept, &[]).await;
    ok(&call(&client, "compose_up", json!({})).await);
    let st = ok(&call(&client, "stack_status", json!({})).await);
    assert_eq!(
        roles(&st)["db"],
        ("postgres".to_string(), "image".to_string())
    );
    let published = &service(&st, "db")["ports"][0];
    assert!(
        published["host_ip"] == "0.0.0.0" || published["host_ip"] == "",
        "published on every interface: {published:#}"
    );
    let h = healthy(&client, Duration::from_secs(90)).await;
    assert!(all_healthy(&h), "{h:#}");
    assert_eq!(
        probe(&h, "db", "select 1")["ok"],
        true,
        "as postgres, the image's default user"
    );
    assert_eq!(probe(&h, "db", "tcp db:5432")["ok"], true);
    let port = ports[&("db".to_string(), 5432)];
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    psql_as(&stack, "db", "postgres", "postgres", PG_SEED);
    let before = pg_fingerprint(&stack, "db", "postgres", "postgres");
    let b = ok(&call(&client, "backup", json!({"label": "hub"})).await);
    assert_eq!(entry(&b, "db")["database"], "postgres");
    let id = b["backup_id"].as_str().expect("id").to_string();
    psql_as(
        &stack,
        "db",
        "postgres",
        "postgres",
        "truncate audit; update accounts set approved = not approved;",
    );
    let r = ok(&call(&client, "restore", json!({"backup_id": id})).await);
    assert_eq!(r["counts_match"], true, "{r:#}");
    assert_eq!(pg_fingerprint(&stack, "db", "postgres", "postgres"), before);

    // The data lives in the image's anonymous volume: down with volumes backs it up first.
    let down = ok(&call(&client, "compose_down", json!({"remove_volumes": true})).await);
    assert!(down.to_string().contains("pre-down"), "{down:#}");
    assert!(stack.resources("container").is_empty());
    for v in [&st, &h, &b, &r, &down] {
        assert_no_secret(v, &["POSTGRES_PASSWORD=example"]);
    }
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn postgres_credentials_from_secret_files_are_read_in_the_container() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("user-postgres", &host);
    // The same file with its credentials as Docker secrets, and the port left unpublished.
    stack.edit_compose(
        "    environment:\n      POSTGRES_PASSWORD: example\n    ports:\n      - 5432:5432\n",
        "    environment:\n      POSTGRES_USER_FILE: /run/secrets/pg_user\n      POSTGRES_PASSWORD_FILE: /run/secrets/pg_password\n      POSTGRES_DB: shop\n    secrets:\n      - pg_user\n      - pg_password\nsecrets:\n  pg_user:\n    file: ./pg_user.txt\n  pg_password:\n    file: ./pg_password.txt\n",
    );
    let password = "Secret-File-Value-91c2";
    std::fs::write(stack.path().join("pg_user.txt"), "shopkeeper\n").expect("user");
    std::fs::write(
        stack.path().join("pg_password.txt"),
        format!("{password}\n"),
    )
    .expect("pw");
    let (client, _) = connect(stack.path(), &host, Person::Accept, &[]).await;
    ok(&call(&client, "compose_up", json!({})).await);
    let h = healthy(&client, Duration::from_secs(90)).await;
    assert_eq!(
        probe(&h, "db", "select 1")["ok"],
        true,
        "as the user in the secret file: {h:#}"
    );
    psql_as(
        &stack,
        "db",
        "shopkeeper",
        "shop",
        "create table t(id int primary key); insert into t select generate_series(1, 321);",
    );
    let b = ok(&call(&client, "backup", json!({})).await);
    let e = entry(&b, "db");
    assert_eq!(e["database"], "shop");
    assert_eq!(e["counts"], json!({"public.t": 321}));
    psql_as(
        &stack,
        "db",
        "shopkeeper",
        "shop",
        "delete from t where id > 3",
    );
    let r = ok(&call(&client, "restore", json!({"backup_id": b["backup_id"]})).await);
    assert_eq!(r["counts_match"], true, "{r:#}");
    // A _FILE naming a file the container does not have: a clear error naming the
    // variable and the path, and no backup. (The cluster exists, so Postgres starts.)
    stack.edit_compose(
        "POSTGRES_PASSWORD_FILE: /run/secrets/pg_password",
        "POSTGRES_PASSWORD_FILE: /run/secrets/not_there",
    );
    let up = ok(&call(&client, "compose_up", json!({})).await);
    assert_eq!(
        up["applied"], true,
        "recreated with the new environment: {up:#}"
    );
    let dir = backup_dir(&stack);
    let before = files(&dir);
    let e = err(&call(&client, "backup", json!({})).await);
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("POSTGRES_PASSWORD_FILE") && msg.contains("/run/secrets/not_there"),
        "{e:#}"
    );
    assert_eq!(files(&dir), before, "nothing written");
    let audit =
        std::fs::read_to_string(stack.path().join(".stackpilot/audit.jsonl")).expect("audit");
    for v in [&h, &b, &r, &e] {
        assert_no_secret(v, &[password]);
    }
    assert!(!audit.contains(password));
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn redis_with_aof_and_a_password_on_the_command_line() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("user-redis", &host);
    let password = stack.env_value("REDIS_PASSWORD").expect("password");
    let (client, agent) = connect(stack.path(), &host, Person::Accept, &[]).await;
    ok(&call(&client, "compose_up", json!({})).await);
    let st = ok(&call(&client, "stack_status", json!({})).await);
    assert_eq!(
        roles(&st)["redis"],
        ("redis".to_string(), "image".to_string())
    );
    let h = healthy(&client, Duration::from_secs(60)).await;
    assert!(all_healthy(&h), "{h:#}");
    assert_eq!(
        probe(&h, "redis", "redis-cli PING")["ok"],
        true,
        "the password came from the command"
    );

    redis_lines(&stack, "redis", Some(&password), REDIS_SEED);
    let before = redis_fingerprint(&stack, "redis", Some(&password));
    let b = ok(&call(&client, "backup", json!({})).await);
    let e = entry(&b, "redis");
    assert_eq!(e["counts"], json!({"db0": 5005, "db3": 701}));
    assert!(
        e["note"]
            .as_str()
            .is_some_and(|n| n.contains("AOF persistence is on")),
        "{e:#}"
    );
    let id = b["backup_id"].as_str().expect("id").to_string();
    redis_lines(
        &stack,
        "redis",
        Some(&password),
        &["FLUSHDB", "SELECT 3", "DEL other-db", "SET late 1"],
    );
    let r = ok(&call(&client, "restore", json!({"backup_id": id})).await);
    assert_eq!(r["counts_match"], true, "{r:#}");
    assert_eq!(redis_fingerprint(&stack, "redis", Some(&password)), before);
    // The AOF now starts from the restored data: a plain restart keeps it.
    assert!(stack
        .docker(&["restart", &container(&stack, "redis")])
        .status
        .success());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        redis_fingerprint(&stack, "redis", Some(&password)),
        before,
        "after another restart"
    );
    let aof = exec(
        &stack,
        "redis",
        &["sh", "-c", "cat /data/appendonlydir/*.manifest"],
    );
    assert!(aof.contains("type b"), "{aof}");
    for v in [&st, &h, &b, &r] {
        assert_no_secret(v, &[&password]);
    }
    let asked = agent.asked.lock().expect("lock").join("\n");
    assert!(!asked.contains(&password));
    let audit =
        std::fs::read_to_string(stack.path().join(".stackpilot/audit.jsonl")).expect("audit");
    assert!(!audit.contains(&password));
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn redis_without_persistence_is_snapshotted_and_stays_without_a_dump_file() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("user-redis", &host);
    stack.edit_compose(
        "command: redis-server --appendonly yes --requirepass ${REDIS_PASSWORD}",
        "command: redis-server --save \"\" --appendonly no --requirepass ${REDIS_PASSWORD}",
    );
    let password = stack.env_value("REDIS_PASSWORD").expect("password");
    let (client, _) = connect(stack.path(), &host, Person::Accept, &[]).await;
    ok(&call(&client, "compose_up", json!({})).await);
    redis_lines(
        &stack,
        "redis",
        Some(&password),
        &["SET a 1", "HSET h f v", "SELECT 2", "SET b 2"],
    );
    let before = redis_fingerprint(&stack, "redis", Some(&password));
    let b = ok(&call(&client, "backup", json!({})).await);
    let e = entry(&b, "redis");
    assert_eq!(e["counts"], json!({"db0": 2, "db2": 1}));
    let note = e["note"].as_str().expect("note");
    assert!(
        note.contains("persistence is off") && note.contains("removed again"),
        "{note}"
    );
    let ls = exec(&stack, "redis", &["ls", "-A", "/data"]);
    assert!(!ls.contains("dump.rdb"), "no dump file left behind: {ls}");
    redis_lines(&stack, "redis", Some(&password), &["FLUSHALL"]);
    let r = ok(&call(&client, "restore", json!({"backup_id": b["backup_id"]})).await);
    assert_eq!(r["counts_match"], true, "{r:#}");
    assert_eq!(redis_fingerprint(&stack, "redis", Some(&password)), before);
    let ls = exec(&stack, "redis", &["ls", "-A", "/data"]);
    assert!(!ls.contains("dump.rdb"), "later starts stay empty: {ls}");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn ollama_and_a_web_ui_with_container_names() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("user-ollama-webui", &host);
    let suffix = &stack.project;
    stack.edit_compose(
        "container_name: ollama\n",
        &format!("container_name: ollama-{suffix}\n"),
    );
    stack.edit_compose(
        "container_name: open-webui\n",
        &format!("container_name: open-webui-{suffix}\n"),
    );
    stack.set_env("WEBUI_DOCKER_TAG", suffix);
    let _images = RemoveImages(
        host.clone(),
        vec![format!("ghcr.io/open-webui/open-webui:{suffix}")],
    );
    let (client, _) = connect(stack.path(), &host, Person::Accept, &[]).await;
    let up = ok(&call(&client, "compose_up", json!({"wait_timeout_s": 300})).await);
    assert!(
        up["plan"].to_string().contains("build"),
        "the UI image is built: {up:#}"
    );
    let st = ok(&call(&client, "stack_status", json!({})).await);
    assert_eq!(
        roles(&st),
        BTreeMap::from([
            (
                "ollama".to_string(),
                ("ollama".to_string(), "image".to_string())
            ),
            (
                "open-webui".to_string(),
                ("other".to_string(), "none".to_string())
            ),
        ])
    );
    assert_eq!(
        service(&st, "ollama")["container_name"],
        format!("ollama-{suffix}")
    );
    let h = healthy(&client, Duration::from_secs(60)).await;
    assert!(all_healthy(&h), "{h:#}");
    // The Ollama image has no shell: the TCP probe runs from the helper image.
    let tcp = probe(&h, "ollama", "tcp ollama:11434");
    assert_eq!(tcp["ok"], true, "{tcp:#}");
    assert!(
        tcp["detail"]
            .as_str()
            .is_some_and(|d| d.contains("busybox:stable")),
        "{tcp:#}"
    );
    // The UI has a Docker healthcheck, so no TCP probe is needed for it.
    assert!(service(&h, "open-webui")["probes"]
        .as_array()
        .expect("probes")
        .is_empty());
    let port = stack.env_value("OPEN_WEBUI_PORT").expect("port");
    let version: Value = reqwest::get(format!("http://127.0.0.1:{port}/ollama/api/version"))
        .await
        .expect("ui answers")
        .json()
        .await
        .expect("json");
    assert!(
        version["version"].is_string(),
        "the UI reaches Ollama by its service name: {version}"
    );
    let e = err(&call(&client, "backup", json!({})).await);
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("no data service")),
        "{e:#}"
    );
    let down = ok(&call(&client, "compose_down", json!({})).await);
    assert_eq!(down["confirmed_by"], "elicitation");
    assert!(stack.resources("container").is_empty());
    client.cancel().await.expect("close");
}
