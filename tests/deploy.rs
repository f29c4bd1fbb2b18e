//! deploy and rollback against the real engine and Compose v2, through
//! rmcp's client over stdio, on tests/stacks/deploy. The images are tags
//! this test builds from the local busybox image (nothing is pulled): v1, a
//! healthy v2 and a broken v3 whose health check fails.
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::docker::{engine, DockerStack};
use common::*;
use rmcp::model::ProtocolVersion;
use serde_json::{json, Value};

const ERA: ProtocolVersion = ProtocolVersion::V_2025_11_25;

/// Image tags built for one test, and every tag deploy made for its
/// project; removed when the test ends (after the stack: declare it first).
struct Images {
    host: String,
    repo: String,
    project: Option<String>,
}

impl Images {
    fn new(host: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Self {
            host: host.to_string(),
            repo: format!("sptest-img-{}-{nanos}/web", std::process::id()),
            project: None,
        }
    }

    fn docker(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        use std::io::Write;
        let mut cmd = std::process::Command::new("docker");
        cmd.env("DOCKER_HOST", &self.host)
            .env("DOCKER_BUILDKIT", "0")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("docker");
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("docker")
    }

    /// `<repo>:<version>` serving /www/version; `healthy: false` removes
    /// /www/healthz, so the stack's health check fails.
    fn build(&self, version: &str, healthy: bool) -> String {
        let tag = format!("{}:{version}", self.repo);
        let dockerfile = format!(
            "FROM stackpilot-test/busybox:1\nRUN echo {version} > /www/version{}\n",
            if healthy { "" } else { " && rm /www/healthz" }
        );
        let o = self.docker(&["build", "-q", "-t", &tag, "-"], Some(&dockerfile));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        tag
    }

    fn exists(&self, reference: &str) -> bool {
        self.docker(&["image", "inspect", reference], None)
            .status
            .success()
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        let list = self.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"], None);
        let mut refs: Vec<String> = String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter(|r| {
                r.starts_with(&self.repo)
                    || self.project.as_ref().is_some_and(|p| {
                        r.starts_with(&format!("stackpilot-rollback/{p}-"))
                            || r.starts_with(&format!("{p}-built"))
                    })
            })
            .map(str::to_string)
            .collect();
        refs.sort();
        if !refs.is_empty() {
            let mut args = vec!["rmi", "-f"];
            args.extend(refs.iter().map(String::as_str));
            let _ = self.docker(&args, None);
        }
    }
}

fn container_id(stack: &DockerStack, service: &str) -> Vec<(String, String)> {
    let o = stack.docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=com.docker.compose.project={}", stack.project),
        "--filter",
        &format!("label=com.docker.compose.service={service}"),
        "--filter",
        "label=com.docker.compose.oneoff=False",
        "--format",
        "{{.ID}} {{.Names}}",
    ]);
    let mut out: Vec<(String, String)> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    out.sort();
    out
}

fn inspect(stack: &DockerStack, id: &str, format: &str) -> String {
    let o = stack.docker(&["inspect", "-f", format, id]);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Asks `app` for /version from inside the probe container, the way the
/// stack's own services reach it: its network alias, resolved by the
/// engine's DNS. (`timeout`, not wget's own `-T`: this static busybox's wget
/// crashes with `-T`.)
const ASK_APP: &str = "timeout 3 wget -q -O- http://app:8080/version";

fn app_version(stack: &DockerStack, probe: &str) -> Result<String, String> {
    let o = stack.docker(&["exec", probe, "sh", "-c", ASK_APP]);
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
    }
}

fn records(stack: &DockerStack) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(stack.path().join(".stackpilot/deploys.json")).expect("record"),
    )
    .expect("json")
}

fn service<'a>(out: &'a Value, name: &str) -> &'a Value {
    out["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["service"] == name)
        .unwrap_or_else(|| panic!("{name} in {out:#}"))
}

fn step<'a>(out: &'a Value, target: &str) -> &'a Value {
    out["plan"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["target"] == target)
        .unwrap_or_else(|| panic!("a step for {target}: {out:#}"))
}

fn up(stack: &DockerStack, services: &[&str]) {
    let mut args = vec!["up", "-d", "--wait"];
    args.extend(services);
    let o = stack.compose(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[tokio::test]
async fn zero_downtime_deploy_rollback_and_a_broken_image_rolled_back() {
    let Some(host) = engine() else { return };
    let mut images = Images::new(&host);
    let stack = DockerStack::new("deploy", &host);
    images.project = Some(stack.project.clone());
    let (v1, v2, v3) = (
        images.build("v1", true),
        images.build("v2", true),
        images.build("v3", false),
    );
    stack.set_env("APP_IMAGE", &v1);
    up(&stack, &["app", "probe"]);
    let probe = container_id(&stack, "probe")[0].0.clone();
    assert_eq!(app_version(&stack, &probe).as_deref(), Ok("v1"));
    let client = stack
        .client(&[], TestClient::new(Person::Absent, ERA))
        .await;
    let tools = client.list_all_tools().await.expect("tools");

    // Nothing changed: nothing to roll out.
    let same = structured(&call(&client, "deploy", json!({"services": ["app"]})).await);
    validate_output(&tools, "deploy", &same);
    assert_eq!(step(&same, "app")["action"], "unchanged");
    assert_eq!(same["confirmed_by"], Value::Null);

    // A new tag in .env: the plan says zero downtime and needs no confirmation.
    stack.set_env("APP_IMAGE", &v2);
    let before = container_id(&stack, "app");
    let dry = structured(&call(&client, "deploy", json!({"dry_run": true})).await);
    validate_output(&tools, "deploy", &dry);
    let s = step(&dry, "app");
    assert_eq!(s["action"], "deploy", "{dry:#}");
    assert_eq!(s["after"]["mode"], "zero_downtime", "{dry:#}");
    assert_eq!(s["destructive"], false);
    assert_eq!(
        step(&dry, "edge")["action"],
        "skip",
        "no container: {dry:#}"
    );
    assert_eq!(dry["order"], json!(["app"]));
    assert_eq!(
        container_id(&stack, "app"),
        before,
        "a dry run changes nothing"
    );

    // Deploy while a client keeps asking `app` through its network alias.
    let running = Arc::new(AtomicBool::new(true));
    let answers: Arc<Mutex<Vec<Result<String, String>>>> = Arc::default();
    let prober = {
        let (running, answers) = (running.clone(), answers.clone());
        let host = host.clone();
        let probe = probe.clone();
        std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                let o = std::process::Command::new("docker")
                    .env("DOCKER_HOST", &host)
                    .args(["exec", &probe, "sh", "-c", ASK_APP])
                    .output()
                    .expect("docker exec");
                let r = if o.status.success() {
                    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
                } else {
                    Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
                };
                answers.lock().expect("answers").push(r);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let r = call(
        &client,
        "deploy",
        json!({"services": ["app"], "health_timeout_s": 60}),
    )
    .await;
    // Keep asking a moment after the old container went.
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.store(false, Ordering::Relaxed);
    prober.join().expect("prober");
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    validate_output(&tools, "deploy", &out);
    let app = service(&out, "app");
    assert_eq!(app["outcome"], "deployed", "{out:#}");
    assert_eq!(app["mode"], "zero_downtime");
    assert_eq!(app["health"], "healthy");
    assert_eq!(app["from"]["image"], v1.as_str());
    assert_eq!(app["to"]["image"], v2.as_str());
    let after = container_id(&stack, "app");
    assert_eq!(after.len(), 1, "the old container was removed: {after:?}");
    assert_ne!(after[0].0, before[0].0);
    assert_eq!(app["containers_before"], json!([before[0].1]));
    assert_eq!(app["containers_after"], json!([after[0].1]));
    let seen = answers.lock().expect("answers").clone();
    let failures = seen.iter().filter(|r| r.is_err()).count();
    let consecutive = seen.windows(2).any(|w| w[0].is_err() && w[1].is_err());
    eprintln!(
        "zero-downtime probe: {} answers, {failures} failed: {:?}",
        seen.len(),
        seen.iter().filter(|r| r.is_err()).collect::<Vec<_>>()
    );
    assert!(seen.iter().any(|r| r.as_deref() == Ok("v1")), "{seen:?}");
    assert!(seen.iter().any(|r| r.as_deref() == Ok("v2")), "{seen:?}");
    assert!(
        !consecutive && failures <= 1,
        "the service stopped answering: {seen:?}"
    );
    assert_eq!(app_version(&stack, &probe).as_deref(), Ok("v2"));
    let rec = records(&stack);
    assert_eq!(rec["services"]["app"]["outcome"], "deployed");
    assert_eq!(rec["services"]["app"]["previous"]["image"], v1.as_str());
    let pin = rec["services"]["app"]["previous"]["pin"]
        .as_str()
        .expect("pin")
        .to_string();
    assert!(pin.starts_with("stackpilot-rollback/"), "{pin}");
    assert!(images.exists(&pin), "the previous image is kept by a tag");

    // rollback returns to the image recorded before the deploy.
    let dry = structured(
        &call(
            &client,
            "rollback",
            json!({"services": ["app"], "dry_run": true}),
        )
        .await,
    );
    validate_output(&tools, "rollback", &dry);
    assert_eq!(step(&dry, "app")["action"], "rollback", "{dry:#}");
    let rb = structured(&call(&client, "rollback", json!({"services": ["app"]})).await);
    validate_output(&tools, "rollback", &rb);
    let app = service(&rb, "app");
    assert_eq!(app["outcome"], "rolled_back", "{rb:#}");
    assert_eq!(app["mode"], "zero_downtime");
    assert_eq!(app_version(&stack, &probe).as_deref(), Ok("v1"));
    assert_eq!(container_id(&stack, "app").len(), 1);
    let rec = records(&stack);
    assert_eq!(rec["services"]["app"]["by"], "rollback");
    assert_eq!(
        rec["services"]["app"]["previous"]["image"],
        v2.as_str(),
        "a second rollback returns to v2"
    );
    let again = structured(
        &call(
            &client,
            "rollback",
            json!({"services": ["app"], "dry_run": true}),
        )
        .await,
    );
    assert_eq!(step(&again, "app")["action"], "rollback");

    // A broken image: health fails, the new container goes, the old one kept serving.
    stack.set_env("APP_IMAGE", &v3);
    let serving = container_id(&stack, "app");
    let r = call(
        &client,
        "deploy",
        json!({"services": ["app"], "health_timeout_s": 30}),
    )
    .await;
    assert!(is_error(&r), "{r:?}");
    let e = structured(&r)["error"].clone();
    let message = e["message"].as_str().expect("message");
    assert!(message.contains("deploy of `app` failed"), "{e:#}");
    assert!(message.contains("rolled back"), "{e:#}");
    let evidence = e["evidence"].to_string();
    assert!(evidence.contains("health-check results"), "{e:#}");
    assert!(
        evidence.contains("404"),
        "the failing probe's output: {e:#}"
    );
    assert!(evidence.contains("log lines"), "{e:#}");
    assert!(evidence.contains("the old container kept serving"), "{e:#}");
    assert_eq!(
        container_id(&stack, "app"),
        serving,
        "the old container, and only it"
    );
    assert_eq!(
        inspect(&stack, &serving[0].0, "{{.State.Health.Status}}"),
        "healthy"
    );
    assert_eq!(app_version(&stack, &probe).as_deref(), Ok("v1"));
    assert_eq!(
        records(&stack)["services"]["app"]["outcome"],
        "failed_rolled_back"
    );

    // Bad input names the field and changes nothing.
    for (tool, args, field) in [
        ("deploy", json!({"health_timeout_s": 0}), "health_timeout_s"),
        ("deploy", json!({"services": ["nope"]}), "services[0]"),
        ("deploy", json!({"services": []}), "services"),
        ("deploy", json!({"zero_downtime": "yes"}), "zero_downtime"),
        ("rollback", json!({"services": ["probe"]}), "services[0]"),
        (
            "rollback",
            json!({"health_timeout_s": 4000}),
            "health_timeout_s",
        ),
    ] {
        let r = call(&client, tool, args.clone()).await;
        assert!(is_error(&r), "{tool} {args}");
        assert_eq!(
            structured(&r)["error"]["field"],
            field,
            "{tool} {args}: {r:?}"
        );
    }
    let e = structured(&call(&client, "rollback", json!({"services": ["probe"]})).await);
    assert_eq!(e["error"]["allowed"], json!(["app"]), "{e:#}");
    assert_eq!(container_id(&stack, "app"), serving);
    client.cancel().await.expect("close");
}

async fn edge_version(port: &str) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/version"))
        .await
        .expect("edge answers")
        .text()
        .await
        .expect("body")
        .trim()
        .to_string()
}

#[tokio::test]
async fn recreate_for_a_host_port_and_confirmation_for_data() {
    let Some(host) = engine() else { return };
    let mut images = Images::new(&host);
    let stack = DockerStack::new("deploy", &host);
    images.project = Some(stack.project.clone());
    let (v1, v2, v3) = (
        images.build("v1", true),
        images.build("v2", true),
        images.build("v3", false),
    );
    for k in ["APP_IMAGE", "EDGE_IMAGE", "STORE_IMAGE"] {
        stack.set_env(k, &v1);
    }
    up(&stack, &["app", "edge", "store"]);
    let port = stack.env_value("EDGE_PORT").expect("port");
    assert_eq!(edge_version(&port).await, "v1");
    let client = stack
        .client(&[], TestClient::new(Person::Absent, ERA))
        .await;
    let tools = client.list_all_tools().await.expect("tools");

    // Two changed services; store holds data, so the plan asks first.
    stack.set_env("EDGE_IMAGE", &v2);
    stack.set_env("STORE_IMAGE", &v2);
    let before = (container_id(&stack, "edge"), container_id(&stack, "store"));
    let asked = structured(&call(&client, "deploy", json!({})).await);
    validate_output(&tools, "deploy", &asked);
    assert_eq!(asked["confirmation_required"], true, "{asked:#}");
    assert_eq!(step(&asked, "store")["destructive"], true);
    assert_eq!(step(&asked, "store")["after"]["mode"], "recreate");
    assert!(step(&asked, "store")["detail"]
        .as_str()
        .expect("d")
        .contains("holds data"));
    assert_eq!(step(&asked, "edge")["destructive"], false);
    assert_eq!(step(&asked, "edge")["after"]["mode"], "recreate");
    assert!(step(&asked, "edge")["detail"]
        .as_str()
        .expect("d")
        .contains("host port"));
    assert_eq!(step(&asked, "app")["action"], "unchanged");
    assert_eq!(step(&asked, "built")["action"], "skip");
    assert_eq!(
        (container_id(&stack, "edge"), container_id(&stack, "store")),
        before,
        "nothing changed before confirmation"
    );
    let token = asked["confirm_token"].as_str().expect("token").to_string();
    let r = call(&client, "deploy", json!({"confirm_token": token})).await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    validate_output(&tools, "deploy", &out);
    assert_eq!(out["confirmed_by"], "token");
    assert_eq!(out["order"], json!(["edge", "store"]));
    for s in ["edge", "store"] {
        assert_eq!(service(&out, s)["outcome"], "deployed", "{out:#}");
        assert_eq!(service(&out, s)["mode"], "recreate");
    }
    assert_eq!(service(&out, "app")["outcome"], "unchanged");
    assert_eq!(edge_version(&port).await, "v2");

    // A broken edge: recreated from the pinned previous image, serving v2 again.
    stack.set_env("EDGE_IMAGE", &v3);
    let r = call(
        &client,
        "deploy",
        json!({"services": ["edge"], "health_timeout_s": 30}),
    )
    .await;
    assert!(is_error(&r), "{r:?}");
    let e = structured(&r)["error"].clone();
    let evidence = e["evidence"].to_string();
    assert!(
        evidence.contains("health-check results") && evidence.contains("404"),
        "{e:#}"
    );
    assert!(
        evidence.contains("recreated from the previous image"),
        "{e:#}"
    );
    assert!(
        e["message"].as_str().expect("m").contains("recreate"),
        "{e:#}"
    );
    assert_eq!(
        edge_version(&port).await,
        "v2",
        "the previous image serves again"
    );
    let edge = container_id(&stack, "edge");
    assert_eq!(edge.len(), 1);
    assert_eq!(
        inspect(&stack, &edge[0].0, "{{.State.Health.Status}}"),
        "healthy"
    );
    assert_eq!(
        records(&stack)["services"]["edge"]["outcome"],
        "failed_rolled_back"
    );

    // Rolling the data service back asks too, then returns it to v1.
    let asked = structured(&call(&client, "rollback", json!({"services": ["store"]})).await);
    assert_eq!(asked["confirmation_required"], true, "{asked:#}");
    let token = asked["confirm_token"].as_str().expect("token").to_string();
    let rb = structured(
        &call(
            &client,
            "rollback",
            json!({"services": ["store"], "confirm_token": token}),
        )
        .await,
    );
    validate_output(&tools, "rollback", &rb);
    assert_eq!(service(&rb, "store")["outcome"], "rolled_back", "{rb:#}");
    assert_eq!(service(&rb, "store")["mode"], "recreate");
    let store = container_id(&stack, "store");
    let v = stack.docker(&["exec", &store[0].0, "cat", "/www/version"]);
    assert_eq!(String::from_utf8_lossy(&v.stdout).trim(), "v1");
    // The volume survived both recreates.
    let mounts = inspect(&stack, &store[0].0, "{{range .Mounts}}{{.Name}}{{end}}");
    assert!(mounts.ends_with("store_data"), "{mounts}");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn a_rebuilt_build_service_rolls_out_only_when_its_image_changes() {
    let Some(host) = engine() else { return };
    let mut images = Images::new(&host);
    let stack = DockerStack::new("deploy", &host);
    images.project = Some(stack.project.clone());
    let ctx = stack.path().join("built");
    std::fs::create_dir_all(&ctx).expect("context");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM stackpilot-test/busybox:1\nCOPY version /www/version\n",
    )
    .expect("Dockerfile");
    std::fs::write(ctx.join("version"), "b1\n").expect("version");
    up(&stack, &["built"]);
    let client = stack
        .client(&[], TestClient::new(Person::Absent, ERA))
        .await;
    let tools = client.list_all_tools().await.expect("tools");
    let version = |stack: &DockerStack| {
        let id = container_id(stack, "built");
        assert_eq!(id.len(), 1, "{id:?}");
        let o = stack.docker(&["exec", &id[0].0, "cat", "/www/version"]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(version(&stack), "b1");

    // The same context rebuilds to the same image: nothing rolled out.
    let before = container_id(&stack, "built");
    let same = structured(&call(&client, "deploy", json!({"services": ["built"]})).await);
    validate_output(&tools, "deploy", &same);
    assert_eq!(step(&same, "built")["action"], "rebuild", "{same:#}");
    assert_eq!(same["built"], json!(["built"]));
    assert_eq!(service(&same, "built")["outcome"], "unchanged", "{same:#}");
    assert_eq!(container_id(&stack, "built"), before);

    // A changed context: rebuilt and rolled out with zero downtime.
    std::fs::write(ctx.join("version"), "b2\n").expect("version");
    let out = structured(&call(&client, "deploy", json!({"services": ["built"]})).await);
    validate_output(&tools, "deploy", &out);
    let built = service(&out, "built");
    assert_eq!(built["outcome"], "deployed", "{out:#}");
    assert_eq!(built["mode"], "zero_downtime");
    assert_eq!(version(&stack), "b2");
    // Without build, nothing is rebuilt.
    std::fs::write(ctx.join("version"), "b3\n").expect("version");
    let nb = structured(
        &call(
            &client,
            "deploy",
            json!({"services": ["built"], "build": false}),
        )
        .await,
    );
    assert_eq!(step(&nb, "built")["action"], "unchanged", "{nb:#}");
    assert_eq!(version(&stack), "b2");
    client.cancel().await.expect("close");
}
