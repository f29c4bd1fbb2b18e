//! The stackpilot container image as a person runs it, on the real engine:
//! built by scripts/build-image.sh from the binary cargo built and this
//! machine's docker CLI and Compose plugin (compose/Dockerfile, target
//! `prebuilt`, FROM scratch; no registry), then
//!   1. `docker run -i` over stdio with the Docker socket mounted: an MCP
//!      client lists the tools and reads stack_status of a running stack;
//!   2. the bundled compose file's `ops` profile: the `stackpilot` service
//!      answers /healthz, refuses /mcp without its token, and serves a
//!      tools/call with it.
mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::docker::{engine, free_port, DockerStack};
use common::*;
use rmcp::model::ProtocolVersion;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{ClientLifecycleMode, ClientServiceExt};
use serde_json::{json, Value};

fn docker(host: &str, args: &[&str]) -> Output {
    Command::new("docker")
        .env("DOCKER_HOST", host)
        .args(args)
        .output()
        .expect("docker")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Removes the test image (and whatever a failed run left) when dropped.
struct Cleanup {
    host: String,
    image: String,
    containers: Vec<String>,
    compose: Option<(std::path::PathBuf, Vec<(String, String)>)>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some((file, env)) = &self.compose {
            let _ = Command::new("docker")
                .env("DOCKER_HOST", &self.host)
                .envs(env.iter().cloned())
                .arg("compose")
                .arg("-f")
                .arg(file)
                .args(["--profile", "ops", "down", "-v", "--timeout", "1"])
                .output();
        }
        for c in &self.containers {
            let _ = docker(&self.host, &["rm", "-f", c]);
        }
        let _ = docker(&self.host, &["rmi", "-f", &self.image]);
    }
}

fn id(flag: &str) -> String {
    let o = Command::new("id").arg(flag).output().expect("id");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn unique(what: &str) -> String {
    format!(
        "{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    )
}

/// The binary cargo built, without debug info (the image would only grow).
fn stripped_binary(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("stackpilot");
    std::fs::copy(bin(), &out).expect("copy the binary");
    let _ = Command::new("strip").arg(&out).status();
    out
}

#[tokio::test]
async fn the_image_serves_stdio_with_the_socket_and_http_in_the_ops_profile() {
    let Some(host) = engine() else { return };
    let Some(socket) = host.strip_prefix("unix://").map(str::to_string) else {
        eprintln!("skipped: DOCKER_HOST={host} is not a unix socket to mount into the container");
        return;
    };
    let gid = std::fs::metadata(&socket)
        .map(|m| std::os::unix::fs::MetadataExt::gid(&m).to_string())
        .expect("the socket's group");
    let work = tempfile::tempdir().expect("tempdir");
    let tag = format!("stackpilot-test/stackpilot:{}", unique("t"));
    let mut cleanup = Cleanup {
        host: host.clone(),
        image: tag.clone(),
        containers: Vec::new(),
        compose: None,
    };
    let built = Command::new("bash")
        .arg(root().join("scripts/build-image.sh"))
        .arg("--binary")
        .arg(stripped_binary(work.path()))
        .args(["--tag", &tag])
        .env("DOCKER_HOST", &host)
        .output()
        .expect("run scripts/build-image.sh");
    assert!(built.status.success(), "build-image.sh: {}", text(&built));
    let inspect = docker(
        &host,
        &[
            "image",
            "inspect",
            "-f",
            "{{.Config.User}} {{json .Config.Labels}}",
            &tag,
        ],
    );
    let info = text(&inspect);
    assert!(
        info.starts_with("10001:10001"),
        "non-root by default: {info}"
    );
    assert!(
        info.contains("io.modelcontextprotocol.server.name"),
        "{info}"
    );

    // 1. stdio: `docker run -i` with the socket mounted, on a running stack.
    let stack = DockerStack::new("web", &host);
    let up = stack.compose(&["up", "-d", "--wait"]);
    assert!(up.status.success(), "{}", text(&up));
    let name = unique("stackpilot-stdio");
    cleanup.containers.push(name.clone());
    let stack_dir = stack.path().to_string_lossy().into_owned();
    let user = format!("{}:{}", id("-u"), id("-g"));
    let args: Vec<String> = [
        "run",
        "-i",
        "--rm",
        "--name",
        &name,
        "--user",
        &user,
        "--group-add",
        &gid,
        "-v",
        &format!("{socket}:/var/run/docker.sock"),
        "-v",
        &format!("{stack_dir}:{stack_dir}"),
        &tag,
        "serve",
        "--stack",
        &stack_dir,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let transport = TokioChildProcess::new(tokio::process::Command::new("docker").configure(|c| {
        c.args(&args).env("DOCKER_HOST", &host);
    }))
    .expect("docker run -i");
    let client = TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25)
        .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
        .await
        .expect("initialize over docker run -i");
    let tools = client.list_all_tools().await.expect("tools/list");
    assert_eq!(tools.len(), common::exported_tool_names().len());
    let status = call(&client, "stack_status", json!({})).await;
    assert!(!is_error(&status), "{status:?}");
    let status = structured(&status);
    assert_eq!(status["project"], stack.project.as_str(), "{status:#}");
    let running: Vec<&str> = status["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter(|s| s["state"] == "running")
        .filter_map(|s| s["service"].as_str())
        .collect();
    assert_eq!(running, ["cache", "web"], "{status:#}");
    validate_output(&tools, "stack_status", &status);
    client.cancel().await.expect("close");

    // 2. HTTP: the bundled compose file's `ops` profile, the way its comments say to run it.
    let ops_dir = work.path().join("ops");
    std::fs::create_dir_all(&ops_dir).expect("ops dir");
    std::fs::copy(
        root().join("compose/docker-compose.yml"),
        ops_dir.join("docker-compose.yml"),
    )
    .expect("copy the bundled compose file");
    let port = free_port();
    let token = hex::encode(rand::random::<[u8; 24]>());
    let project = unique("sptest-ops");
    let env: Vec<(String, String)> = [
        ("COMPOSE_PROJECT_NAME", project.clone()),
        ("STACKPILOT_IMAGE", tag.clone()),
        ("STACKPILOT_AUTH_TOKEN", token.clone()),
        ("STACKPILOT_PORT", port.to_string()),
        ("DOCKER_SOCKET", socket.clone()),
        ("DOCKER_GID", gid.clone()),
        ("STACKPILOT_UID", id("-u")),
        (
            "STACKPILOT_STACK_DIR",
            ops_dir.to_string_lossy().into_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let compose_file = ops_dir.join("docker-compose.yml");
    cleanup.compose = Some((compose_file.clone(), env.clone()));
    let up = Command::new("docker")
        .env("DOCKER_HOST", &host)
        .envs(env.iter().cloned())
        .arg("compose")
        .arg("-f")
        .arg(&compose_file)
        .args(["--profile", "ops", "up", "-d", "--no-build", "stackpilot"])
        .output()
        .expect("docker compose up");
    assert!(up.status.success(), "{}", text(&up));
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match reqwest::get(format!("{base}/healthz")).await {
            Ok(r) if r.status() == 200 => break,
            other => {
                if Instant::now() > deadline {
                    let logs = docker(&host, &["logs", &format!("{project}-stackpilot-1")]);
                    panic!("/healthz: {other:?}\n{}", text(&logs));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let unauthenticated = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .expect("POST /mcp");
    assert_eq!(unauthenticated.status(), 401);
    let server = HttpServerRef {
        url: format!("{base}/mcp"),
    };
    let client = server.client(&token).await;
    let status = call(&client, "stack_status", json!({})).await;
    assert!(!is_error(&status), "{status:?}");
    let status: Value = structured(&status);
    assert_eq!(status["project"], project.as_str(), "{status:#}");
    let me = status["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["service"] == "stackpilot"))
        .cloned()
        .unwrap_or_else(|| panic!("the ops service sees itself: {status:#}"));
    assert_eq!(me["state"], "running");
    client.cancel().await.expect("close");
}

/// An HTTP MCP endpoint that the tests did not start themselves.
struct HttpServerRef {
    url: String,
}

impl HttpServerRef {
    async fn client(&self, token: &str) -> Client {
        let config =
            rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
                self.url.clone(),
            )
            .auth_header(token.to_string());
        let transport = rmcp::transport::StreamableHttpClientTransport::from_config(config);
        TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25)
            .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
            .await
            .expect("connect over HTTP with the token")
    }
}
