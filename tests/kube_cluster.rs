//! The stack on the real test cluster (scripts/peers/kube.sh: kube-apiserver
//! v1.35.8 and a real kubelet on containerd, on 127.0.0.1), through the
//! built binary and rmcp's client: kube_apply (rollout, a no-op second
//! apply that touches nothing, an env change that rolls only its
//! Deployment, a volumeClaimTemplate change and a prune that need
//! confirmation by token and by elicitation, a rollout that cannot become
//! ready reported with its pods' conditions and events and rolled back),
//! stack_status and health on pods, Postgres backup, verify_backup (in the
//! pod, and in a helper pod with the service scaled to 0) and
//! restore through pod exec to identical checksums, recover (pod restart,
//! rollout restart; the database's only by token), logs from the pod log
//! API, and fast, clear errors
//! for an unreachable API server or a bad kubeconfig.
mod common;

use std::time::{Duration, Instant};

use common::kube::{cluster, KubeStack, Namespace};
use common::{call, is_error, stdio_client_env, structured, Client, Person, TestClient};
use rmcp::model::ProtocolVersion;
use serde_json::{json, Value};

async fn client(stack: &KubeStack, ns: &Namespace, person: Person) -> Client {
    let args = ns.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    stdio_client_env(
        stack.path(),
        &args,
        TestClient::new(person, ProtocolVersion::V_2025_11_25),
        &ns.env(),
    )
    .await
}

fn steps(out: &Value) -> Vec<(String, String)> {
    out["plan"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["action"] != "unchanged")
        .map(|s| {
            (
                s["target"].as_str().unwrap_or("").to_string(),
                s["action"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// resourceVersion of every object stackpilot manages in the namespace.
fn versions(ns: &Namespace) -> Vec<String> {
    let out = ns.kubectl_ok(&[
        "get",
        "configmaps,secrets,services,deployments,statefulsets",
        "-l",
        "app.kubernetes.io/managed-by=stackpilot",
        "-o",
        "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.resourceVersion}{\"\\n\"}{end}",
    ]);
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
}

fn uid(ns: &Namespace, what: &str) -> String {
    ns.get(what)["metadata"]["uid"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn web_pods(ns: &Namespace) -> Vec<String> {
    let out = ns.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=web",
        "-o",
        "jsonpath={.items[*].metadata.uid}",
    ]);
    let mut v: Vec<String> = out.split_whitespace().map(str::to_string).collect();
    v.sort();
    v
}

async fn apply(client: &Client, args: Value) -> Value {
    let out = call(client, "kube_apply", args).await;
    structured(&out)
}

#[tokio::test]
async fn apply_lifecycle_on_the_real_cluster() {
    let Some(cl) = cluster() else { return };
    let ns = Namespace::new(&cl);
    let stack = KubeStack::new("kube");
    let c = client(&stack, &ns, Person::Absent).await;
    let tools = c.list_all_tools().await.expect("tools");

    // 1. First apply: the namespace and every object created, rollouts complete, with progress.
    let first = apply(&c, json!({"timeout_s": 240})).await;
    assert!(first.get("error").is_none(), "{first:#}");
    common::validate_output(&tools, "kube_apply", &first);
    assert!(first["changes"].as_u64().unwrap_or(0) >= 7, "{first:#}");
    for o in first["objects"].as_array().expect("objects") {
        if let Some(r) = o.get("rollout") {
            assert_eq!(r["done"], true, "{o}");
        }
    }
    let ready = ns.get("statefulset/db");
    assert_eq!(ready["status"]["readyReplicas"], 1);
    assert_eq!(ns.get("deployment/web")["status"]["availableReplicas"], 1);
    // Server-side apply with field manager stackpilot; the secret values are in a Secret only.
    let managers = ns.kubectl_ok(&[
        "get",
        "deployment/web",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(
        managers.split_whitespace().any(|m| m == "stackpilot"),
        "{managers}"
    );
    let cm = ns.get("configmap/web-env");
    assert_eq!(cm["data"]["GREETING"], "hello");
    assert!(cm["data"].get("APP_TOKEN").is_none());
    assert!(ns.get("secret/web-env")["data"].get("APP_TOKEN").is_some());
    assert!(!first.to_string().contains("s3cr3t-app-token-value"));

    // 2. A second apply changes nothing and sends nothing.
    let before = versions(&ns);
    let second = apply(&c, json!({})).await;
    assert_eq!(second["changes"], 0, "{second:#}");
    assert!(steps(&second).is_empty());
    assert_eq!(versions(&ns), before, "no object was touched");

    // 3. status and health read the pods.
    let status = structured(&call(&c, "stack_status", json!({})).await);
    assert_eq!(status["ready"], true, "{status:#}");
    let services: Vec<&str> = status["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["service"].as_str())
        .collect();
    assert_eq!(services, ["db", "web"]);
    let health = structured(&call(&c, "health", json!({"deep": true, "logs_tail": 5})).await);
    common::validate_output(&tools, "health", &health);
    let verdicts: Vec<(&str, &str)> = health["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| {
            (
                s["service"].as_str().unwrap_or(""),
                s["verdict"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [("db", "healthy"), ("web", "healthy")],
        "{health:#}"
    );
    let db = &health["services"][0];
    assert!(
        db["probes"]
            .as_array()
            .expect("probes")
            .iter()
            .any(|p| p["name"] == "select 1" && p["ok"] == true),
        "deep probe through pod exec: {db:#}"
    );

    // 4. An env change rolls only the web Deployment.
    let db_pod = uid(&ns, "pod/db-0");
    let web_before = web_pods(&ns);
    stack.set_env("GREETING", "bonjour");
    let changed = apply(&c, json!({"timeout_s": 180})).await;
    assert!(changed.get("error").is_none(), "{changed:#}");
    assert_eq!(
        steps(&changed),
        pairs(&[
            ("ConfigMap/web-env", "update"),
            ("Deployment/web", "update")
        ]),
        "{changed:#}"
    );
    assert_eq!(uid(&ns, "pod/db-0"), db_pod, "the db pod was not touched");
    assert_ne!(web_pods(&ns), web_before, "web rolled");
    assert_eq!(ns.get("configmap/web-env")["data"]["GREETING"], "bonjour");

    // 5. A rollout that cannot become ready: reported with conditions and events, rolled back.
    stack.set_env("WEB_IMAGE", "stackpilot-test/not-there:1");
    let failed = call(&c, "kube_apply", json!({"timeout_s": 20})).await;
    assert!(is_error(&failed), "{failed:?}");
    let e = structured(&failed)["error"].clone();
    let evidence = e["evidence"].to_string();
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("Deployment/web"),
        "{e:#}"
    );
    assert!(
        evidence.contains("conditions") && evidence.contains("ErrImageNeverPull"),
        "{e:#}"
    );
    assert!(evidence.contains("rolled back Deployment/web"), "{e:#}");
    let image =
        ns.get("deployment/web")["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert_eq!(
        image, "stackpilot-test/busybox:1",
        "the previous revision runs again"
    );
    assert_eq!(ns.get("deployment/web")["status"]["availableReplicas"], 1);
    stack.set_env("WEB_IMAGE", "stackpilot-test/busybox:1");

    // 6. A volumeClaimTemplate change needs confirmation: a token first (nothing changes) ...
    stack.edit_compose("storage: 1Gi", "storage: 2Gi");
    let sts_uid = uid(&ns, "statefulset/db");
    let asked = apply(&c, json!({"timeout_s": 240})).await;
    assert_eq!(asked["confirmation_required"], true, "{asked:#}");
    let recreate: Vec<&Value> = asked["plan"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["action"] == "recreate")
        .collect();
    assert_eq!(recreate.len(), 1, "{asked:#}");
    assert_eq!(recreate[0]["target"], "StatefulSet/db");
    assert_eq!(recreate[0]["destructive"], true);
    assert_eq!(
        uid(&ns, "statefulset/db"),
        sts_uid,
        "nothing changed before confirmation"
    );
    // ... a person who declines changes nothing ...
    let declining = client(&stack, &ns, Person::Decline).await;
    let declined = apply(&declining, json!({"timeout_s": 240})).await;
    assert_eq!(declined["declined"], true, "{declined:#}");
    assert_eq!(uid(&ns, "statefulset/db"), sts_uid);
    declining.cancel().await.expect("close");
    // ... and the token runs exactly that plan.
    let token = asked["confirm_token"].as_str().expect("token");
    let done = apply(&c, json!({"timeout_s": 240, "confirm_token": token})).await;
    assert!(done.get("error").is_none(), "{done:#}");
    assert_eq!(done["confirmed_by"], "token");
    assert_ne!(
        uid(&ns, "statefulset/db"),
        sts_uid,
        "the StatefulSet was recreated"
    );
    assert_eq!(
        ns.get("statefulset/db")["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]
            ["requests"]["storage"],
        "2Gi"
    );
    assert_eq!(ns.get("statefulset/db")["status"]["readyReplicas"], 1);

    // 7. A prune is destructive: the elicitation path, accepted.
    let compose =
        std::fs::read_to_string(stack.path().join("docker-compose.yml")).expect("compose");
    let start = compose.find("  web:\n").expect("web");
    let end = compose.find("  db:\n").expect("db");
    std::fs::write(
        stack.path().join("docker-compose.yml"),
        format!("{}{}", &compose[..start], &compose[end..]),
    )
    .expect("write");
    let accepting = client(&stack, &ns, Person::Accept).await;
    let pruned = apply(&accepting, json!({"timeout_s": 120})).await;
    assert!(pruned.get("error").is_none(), "{pruned:#}");
    assert_eq!(pruned["confirmed_by"], "elicitation", "{pruned:#}");
    assert_eq!(
        steps(&pruned),
        pairs(&[
            ("ConfigMap/web-env", "prune"),
            ("Deployment/web", "prune"),
            ("Secret/web-env", "prune"),
            ("Service/web", "prune")
        ])
    );
    assert!(
        !ns.kubectl(&["get", "deployment/web"]).status.success(),
        "web is gone"
    );
    assert_eq!(
        ns.get("statefulset/db")["status"]["readyReplicas"],
        1,
        "db is left alone"
    );
    accepting.cancel().await.expect("close");
    c.cancel().await.expect("close");
}

const SEED: &str = "
create table customers(id bigserial primary key, name text not null, email text unique);
insert into customers(name, email) select 'customer ' || i, 'c' || i || '@example.test' from generate_series(1, 20000) i;
create table orders(id serial primary key, customer_id bigint not null references customers(id), total numeric(10,2), note text);
insert into orders(customer_id, total, note) select 1 + (i % 20000), (i % 10000) / 100.0, md5(i::text) from generate_series(1, 40000) i;
create sequence invoice_no start 1000;
select setval('invoice_no', 4242);
";

fn psql(ns: &Namespace, sql: &str) -> String {
    ns.kubectl_ok(&[
        "exec",
        "db-0",
        "--",
        "psql",
        "-X",
        "-A",
        "-t",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        "postgres",
        "-c",
        sql,
    ])
}

fn fingerprint(ns: &Namespace) -> Vec<String> {
    let mut out: Vec<String> = ["customers", "orders"]
        .iter()
        .map(|t| psql(ns, &format!("select '{t}', count(*), md5(coalesce(string_agg(t::text, ',' order by id), '')) from {t} t")))
        .collect();
    out.push(psql(ns, "select last_value from invoice_no"));
    out
}

#[tokio::test]
async fn postgres_backup_and_restore_through_pod_exec() {
    let Some(cl) = cluster() else { return };
    let ns = Namespace::new(&cl);
    let stack = KubeStack::new("kube");
    let c = client(&stack, &ns, Person::Absent).await;
    let tools = c.list_all_tools().await.expect("tools");
    let up = apply(&c, json!({"timeout_s": 240})).await;
    assert!(up.get("error").is_none(), "{up:#}");
    psql(&ns, SEED);
    let original = fingerprint(&ns);

    let backup = call(&c, "backup", json!({"services": ["db"]})).await;
    assert!(!is_error(&backup), "{backup:?}");
    let backup = structured(&backup);
    common::validate_output(&tools, "backup", &backup);
    let file = &backup["files"][0];
    assert_eq!(file["counts"]["public.customers"], 20000, "{backup:#}");
    assert_eq!(file["counts"]["public.orders"], 40000);
    let id = backup["backup_id"].as_str().expect("id").to_string();

    // verify_backup: `pg_restore --list` in the db pod reads only the archive's TOC and exits
    // while the archive is still being streamed into its stdin; the exit status must still
    // come back (it once stalled here for good: bounded so a regression fails, not hangs).
    let started = Instant::now();
    let verified = tokio::time::timeout(
        Duration::from_secs(120),
        call(&c, "verify_backup", json!({"backup_id": id})),
    )
    .await
    .expect("verify_backup finished within 120 s");
    assert!(!is_error(&verified), "{verified:?}");
    let verified = structured(&verified);
    common::validate_output(&tools, "verify_backup", &verified);
    assert_eq!(verified["ok"], true, "{verified:#}");
    let checked = &verified["files"][0];
    assert_eq!(checked["ok"], true, "{verified:#}");
    assert_eq!(checked["content"]["ok"], true, "{verified:#}");
    assert_eq!(checked["bytes_actual"], checked["bytes_expected"]);
    assert!(
        checked["content"]["checked_with"]
            .as_str()
            .is_some_and(|s| s.starts_with("pg_restore --list in container db-0")),
        "{verified:#}"
    );
    assert!(checked["content"]["entries"]
        .as_u64()
        .is_some_and(|n| n > 0));
    assert_eq!(
        checked["content"]["detail"]
            .as_str()
            .map(|d| d.ends_with("table data for 2 table(s)")),
        Some(true),
        "both tables' data listed: {verified:#}"
    );
    assert!(checked["content"].get("missing").is_none(), "{verified:#}");
    eprintln!("verify_backup on the cluster: {:?}", started.elapsed());

    // With db scaled to 0 the check runs in a helper pod from the image that wrote the dump
    // (fed on stdin the same way), and the helper is gone afterwards.
    ns.kubectl_ok(&["scale", "statefulset/db", "--replicas=0"]);
    ns.kubectl_ok(&["wait", "--for=delete", "pod/db-0", "--timeout=90s"]);
    let started = Instant::now();
    let verified = tokio::time::timeout(
        Duration::from_secs(180),
        call(&c, "verify_backup", json!({"backup_id": id})),
    )
    .await
    .expect("verify_backup in a helper finished within 180 s");
    assert!(!is_error(&verified), "{verified:?}");
    let verified = structured(&verified);
    assert_eq!(verified["ok"], true, "{verified:#}");
    assert_eq!(
        verified["files"][0]["content"]["checked_with"],
        "pg_restore --list in a helper container from stackpilot-test/postgres:15",
        "{verified:#}"
    );
    eprintln!("verify_backup in a helper pod: {:?}", started.elapsed());
    let helpers = || {
        ns.kubectl_ok(&[
            "get",
            "pods",
            "-l",
            "io.stackpilot/helper=true",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = helpers();
        if left.trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "helper pods left: {left}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ns.kubectl_ok(&["scale", "statefulset/db", "--replicas=1"]);
    rolled_out(&ns, "statefulset/db");
    ns.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/db-0",
        "--timeout=120s",
    ]);

    // Damage the data, then restore: the token path (restore is destructive).
    psql(&ns, "delete from orders where id % 3 = 0; update customers set name = 'x' where id < 100; select setval('invoice_no', 1);");
    assert_ne!(fingerprint(&ns), original);
    let asked = structured(&call(&c, "restore", json!({"backup_id": id})).await);
    assert_eq!(asked["confirmation_required"], true, "{asked:#}");
    let token = asked["confirm_token"].as_str().expect("token");
    let restored = call(
        &c,
        "restore",
        json!({"backup_id": id, "confirm_token": token}),
    )
    .await;
    assert!(!is_error(&restored), "{restored:?}");
    let restored = structured(&restored);
    assert_eq!(
        restored["restored"][0]["counts_match"], true,
        "{restored:#}"
    );
    assert_eq!(
        fingerprint(&ns),
        original,
        "identical checksums after the round trip"
    );
    assert!(!restored.to_string().contains("kube-db-password-1"));
    c.cancel().await.expect("close");
}

/// Waits (bounded) until `kubectl rollout status` says the workload is done.
fn rolled_out(ns: &Namespace, what: &str) {
    let out = ns.kubectl(&["rollout", "status", what, "--timeout=120s"]);
    assert!(
        out.status.success(),
        "{what} rolled out: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits (bounded) until web's pods are all new (the old ones, terminating,
/// are listed until they are gone) and as many as before.
async fn web_pods_replaced(ns: &Namespace, before: &[String]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = web_pods(ns);
        if now.len() == before.len() && now.iter().all(|p| !before.contains(p)) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "web pods not replaced within 90 s: {before:?} -> {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn restarted_at(ns: &Namespace, what: &str) -> Value {
    ns.get(what)["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
        .clone()
}

fn db_pod_uid(ns: &Namespace) -> String {
    uid(ns, "pod/db-0")
}

#[tokio::test]
async fn recover_restarts_and_rolls_out_on_the_cluster() {
    let Some(cl) = cluster() else { return };
    let ns = Namespace::new(&cl);
    let stack = KubeStack::new("kube");
    let c = client(&stack, &ns, Person::Absent).await;
    let tools = c.list_all_tools().await.expect("tools");
    let up = apply(&c, json!({"timeout_s": 240})).await;
    assert!(up.get("error").is_none(), "{up:#}");

    // recreate of a stateless service: a rollout restart, not destructive.
    let before = web_pods(&ns);
    let out = call(
        &c,
        "recover",
        json!({"service": "web", "action": "recreate", "wait": true, "timeout_s": 120}),
    )
    .await;
    assert!(!is_error(&out), "{out:?}");
    let out = structured(&out);
    common::validate_output(&tools, "recover", &out);
    assert_eq!(out["action"], "recreate", "{out:#}");
    assert_eq!(out["confirmed_by"], "not_needed", "{out:#}");
    assert_eq!(out["wait_outcome"], "healthy", "{out:#}");
    assert!(
        restarted_at(&ns, "deployment/web").is_string(),
        "the pod template carries the restart annotation"
    );
    rolled_out(&ns, "deployment/web");
    let after = web_pods_replaced(&ns, &before).await;

    // restart: the pod is deleted and its Deployment brings a new one.
    let before = after;
    let out = call(
        &c,
        "recover",
        json!({"service": "web", "wait": true, "timeout_s": 120}),
    )
    .await;
    assert!(!is_error(&out), "{out:?}");
    let out = structured(&out);
    assert_eq!(out["action"], "restart", "{out:#}");
    assert_eq!(out["confirmed_by"], "not_needed", "{out:#}");
    web_pods_replaced(&ns, &before).await;
    rolled_out(&ns, "deployment/web");

    // recreate of the database: destructive, so a token first; without it nothing moves.
    let db_before = db_pod_uid(&ns);
    let asked = call(
        &c,
        "recover",
        json!({"service": "db", "action": "recreate", "wait": true, "timeout_s": 180}),
    )
    .await;
    assert!(!is_error(&asked), "{asked:?}");
    let asked = structured(&asked);
    assert_eq!(asked["confirmation_required"], true, "{asked:#}");
    let token = asked["confirm_token"].as_str().expect("token").to_string();
    assert_eq!(restarted_at(&ns, "statefulset/db"), Value::Null);
    assert_eq!(
        db_pod_uid(&ns),
        db_before,
        "an unconfirmed recover changes nothing"
    );
    let out = call(
        &c,
        "recover",
        json!({"service": "db", "action": "recreate", "wait": true, "timeout_s": 180,
               "confirm_token": token}),
    )
    .await;
    assert!(!is_error(&out), "{out:?}");
    let out = structured(&out);
    assert_eq!(out["confirmed_by"], "token", "{out:#}");
    assert_eq!(out["wait_outcome"], "healthy", "{out:#}");
    eprintln!(
        "recover db (rollout restart of the StatefulSet): waited {} s",
        out["waited_s"]
    );
    assert!(restarted_at(&ns, "statefulset/db").is_string());
    let t = Instant::now();
    rolled_out(&ns, "statefulset/db");
    eprintln!(
        "then kubectl rollout status statefulset/db: {:?}",
        t.elapsed()
    );
    assert_ne!(db_pod_uid(&ns), db_before, "db-0 was replaced");
    assert_eq!(psql(&ns, "select 1").trim(), "1", "the new db-0 serves");
    c.cancel().await.expect("close");
}

/// The day-2 `logs` tool on the cluster (the pod log API with timestamps)
/// and live resources (a pod watch), through the same port as on Compose.
#[tokio::test]
async fn logs_and_live_updates_from_the_cluster() {
    let Some(cl) = cluster() else { return };
    let ns = Namespace::new(&cl);
    let stack = KubeStack::new("kube");
    let tc = TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25);
    let updates = tc.updates.clone();
    let args = ns.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let c = stdio_client_env(stack.path(), &args, tc, &ns.env()).await;
    let tools = c.list_all_tools().await.expect("tools");
    let up = apply(&c, json!({"timeout_s": 240})).await;
    assert!(up.get("error").is_none(), "{up:#}");

    // Postgres says it is ready once it is; its pod's log holds the line.
    let args = json!({"services": ["db"], "grep": "ready to accept connections", "tail": 20});
    let out = call(&c, "logs", args).await;
    assert!(!is_error(&out), "{out:?}");
    let out = structured(&out);
    common::validate_output(&tools, "logs", &out);
    assert_eq!(out["services"], json!(["db"]), "{out:#}");
    let lines = out["lines"].as_array().expect("lines");
    assert!(!lines.is_empty(), "{out:#}");
    let mut last = String::new();
    for l in lines {
        assert_eq!(l["service"], "db", "{l}");
        assert!(
            l["instance"].as_str().is_some_and(|i| i.starts_with("db-")),
            "the pod's name: {l}"
        );
        assert_eq!(l["stream"], "stdout", "one log per pod: {l}");
        assert!(
            l["untrusted_output"]
                .as_str()
                .is_some_and(|t| t.contains("ready to accept connections")),
            "{l}"
        );
        let time = l["time"].as_str().expect("time").to_string();
        assert!(
            time.ends_with('Z') && time >= last,
            "oldest first, UTC: {l}"
        );
        last = time;
    }
    // A bound in the future leaves nothing; the pod's log was read all the same.
    let out = structured(
        &call(
            &c,
            "logs",
            json!({"services": ["db"], "since": "2099-01-01T00:00:00Z"}),
        )
        .await,
    );
    assert_eq!(out["lines"], json!([]), "{out:#}");

    // Kubernetes keeps stdout and stderr in one log: one stream alone is refused, naming why.
    for streams in ["stderr", "stdout"] {
        let out = call(&c, "logs", json!({"services": ["db"], "streams": streams})).await;
        assert!(is_error(&out), "{streams}: {out:?}");
        let err = &structured(&out)["error"];
        assert_eq!(err["field"], "streams", "{err}");
        assert_eq!(err["allowed"], json!(["both"]), "{err}");
    }
    // The server keeps serving.
    let out = call(&c, "logs", json!({"services": ["web"], "tail": 5})).await;
    assert!(!is_error(&out), "{out:?}");

    // Live updates: a subscriber to web hears of its pod's deletion, pushed by
    // the API server's watch.
    #[allow(deprecated)]
    c.subscribe(rmcp::model::SubscribeRequestParams::new(
        "stackpilot://stack/services/web",
    ))
    .await
    .expect("subscribe");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    updates.lock().expect("updates").clear();
    let names = ns.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=web",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let pod = names
        .split_whitespace()
        .next()
        .expect("a web pod")
        .to_string();
    ns.kubectl_ok(&["delete", "pod", &pod, "--wait=false"]);
    let deleted = Instant::now();
    loop {
        let seen = updates.lock().expect("updates").clone();
        if seen
            .iter()
            .any(|(_, u)| u == "stackpilot://stack/services/web")
        {
            eprintln!("update {:?} after the delete", deleted.elapsed());
            break;
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(10),
            "an update for web within 10 s of its pod's deletion: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn unreachable_api_server_and_bad_kubeconfig_fail_fast_naming_the_context() {
    let stack = KubeStack::new("kube");
    let dir = tempfile::tempdir().expect("tempdir");
    // A server that accepts connections and never answers (TLS never completes).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let closed_port = common::docker::free_port();
    let kubeconfig = |port: u16, ctx: &str| {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: {ctx}\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: {ctx}\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    token: not-a-real-token\n"
        )
    };
    let silent_cfg = dir.path().join("silent.kubeconfig");
    std::fs::write(&silent_cfg, kubeconfig(silent_port, "silent-ctx")).expect("write");
    let closed_cfg = dir.path().join("closed.kubeconfig");
    std::fs::write(&closed_cfg, kubeconfig(closed_port, "closed-ctx")).expect("write");
    let garbage_cfg = dir.path().join("garbage.kubeconfig");
    std::fs::write(&garbage_cfg, "apiVersion: [unclosed\n").expect("write");
    let cases = [
        (
            silent_cfg.display().to_string(),
            "silent-ctx",
            "did not answer within 2 s",
        ),
        (
            closed_cfg.display().to_string(),
            "closed-ctx",
            "did not answer",
        ),
        (
            garbage_cfg.display().to_string(),
            "any-ctx",
            "kubeconfig cannot be read",
        ),
        (
            closed_cfg.display().to_string(),
            "missing-ctx",
            "no such context",
        ),
    ];
    for (cfg, ctx, says) in cases {
        let args = [
            "--target",
            "kubernetes",
            "--context",
            ctx,
            "--namespace",
            "default",
        ];
        let c = stdio_client_env(
            stack.path(),
            &args,
            TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25),
            &[("KUBECONFIG", cfg.as_str())],
        )
        .await;
        for tool in ["stack_status", "kube_apply"] {
            let t = Instant::now();
            let out = call(&c, tool, json!({})).await;
            let took = t.elapsed();
            assert!(is_error(&out), "{tool} with {ctx}");
            let e = structured(&out)["error"].clone();
            let message = e["message"].as_str().unwrap_or("");
            assert!(
                message.contains(&format!("`{ctx}`")),
                "{tool}: names the context: {message}"
            );
            assert!(message.contains(says), "{tool}: {message}");
            assert!(
                took < Duration::from_millis(2000),
                "{tool} answered within 2 s: {took:?}"
            );
        }
        c.cancel().await.expect("close");
    }
    drop(silent);
}

#[tokio::test]
async fn bad_kube_input_is_rejected_naming_the_field() {
    let stack = KubeStack::new("kube");
    let c = stdio_client_env(
        stack.path(),
        &[],
        TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25),
        &[],
    )
    .await;
    let cases = [
        (json!({"namespace": "Has_Upper"}), "namespace"),
        (json!({"context": "a\nb"}), "context"),
        (json!({"context": ""}), "context"),
        (json!({"timeout_s": 0}), "timeout_s"),
        (json!({"profile": "nope"}), "profile"),
        (json!({"rollback": "yes"}), "rollback"),
    ];
    for (args, field) in cases {
        let out = call(&c, "kube_apply", args.clone()).await;
        assert!(is_error(&out), "{args}");
        assert_eq!(structured(&out)["error"]["field"], field, "{args}: {out:?}");
    }
    c.cancel().await.expect("close");
    // A stack on Kubernetes has no compose lifecycle: compose_up says so, naming the target.
    let k = stdio_client_env(
        stack.path(),
        &["--target", "kubernetes", "--namespace", "default"],
        TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25),
        &[("KUBECONFIG", "/nonexistent")],
    )
    .await;
    let out = call(&k, "compose_up", json!({})).await;
    assert!(is_error(&out));
    let e = structured(&out)["error"].clone();
    assert_eq!(e["field"], "target", "{e}");
    assert!(
        e["message"].as_str().unwrap_or("").contains("Kubernetes"),
        "{e}"
    );
    k.cancel().await.expect("close");
    // Bad flags stop the server before it serves, naming the flag.
    for (args, flag) in [
        (
            vec!["--target", "kubernetes", "--namespace", "Bad_NS"],
            "--namespace",
        ),
        (vec!["--target", "swarm"], "--target"),
    ] {
        let out = std::process::Command::new(common::bin())
            .args(["--stack"])
            .arg(stack.path())
            .args(&args)
            .arg("stack-status")
            .output()
            .expect("run");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{flag}: {err}");
    }
}
