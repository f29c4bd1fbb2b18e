//! Installing stackpilot the way the ecosystem does: the MCP Bundle built by
//! scripts/build-mcpb.sh (checked by the official `mcpb` CLI, then unpacked
//! and started the way an MCPB host starts it), and the registry's
//! server.json. The container image is tests/image.rs.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::peers::peers;
use common::*;
use rmcp::model::ProtocolVersion;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{ClientLifecycleMode, ClientServiceExt};
use serde_json::{json, Value};
use sha2::Digest;

/// The test binary without its debug info (packing 90 MB of it would only
/// slow the test; the code is the same).
fn stripped_binary(dir: &Path) -> PathBuf {
    let out = dir.join("stackpilot");
    std::fs::copy(bin(), &out).expect("copy the binary");
    let _ = Command::new("strip").arg(&out).status();
    out
}

/// `${__dirname}` and `${user_config.KEY}` replaced as an MCPB host does.
fn substitute(text: &str, dirname: &Path, config: &Value) -> String {
    let mut s = text.replace("${__dirname}", &dirname.to_string_lossy());
    if let Some(map) = config.as_object() {
        for (k, v) in map {
            let value = match v {
                Value::String(x) => x.clone(),
                other => other.to_string(),
            };
            s = s.replace(&format!("${{user_config.{k}}}"), &value);
        }
    }
    s
}

#[tokio::test]
async fn the_mcpb_bundle_validates_and_runs_as_a_host_starts_it() {
    let Some(peers) = peers() else { return };
    let mcpb = peers["STACKPILOT_MCPB"].clone();
    let work = tempfile::tempdir().expect("tempdir");
    let binary = stripped_binary(work.path());
    let out_dir = work.path().join("dist");
    let built = Command::new("bash")
        .arg(root().join("scripts/build-mcpb.sh"))
        .arg("--binary")
        .arg(&binary)
        .arg("--out")
        .arg(&out_dir)
        .env("STACKPILOT_MCPB", &mcpb)
        .output()
        .expect("run scripts/build-mcpb.sh");
    let log = String::from_utf8_lossy(&built.stderr).into_owned();
    assert!(built.status.success(), "build-mcpb.sh failed:\n{log}");
    assert!(
        log.contains("Manifest schema validation passes"),
        "mcpb validate ran: {log}"
    );
    let bundle = PathBuf::from(String::from_utf8_lossy(&built.stdout).trim());
    assert!(
        bundle
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with("-linux-x86_64.mcpb")),
        "{}",
        bundle.display()
    );

    // server.json beside it names the bundle with its sha256.
    let server: Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("server.json")).expect("dist/server.json"),
    )
    .expect("json");
    let pkg = server["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["registryType"] == "mcpb"))
        .cloned()
        .expect("an mcpb package");
    let sha = hex::encode(sha2::Sha256::digest(
        std::fs::read(&bundle).expect("bundle"),
    ));
    assert_eq!(pkg["fileSha256"], sha);
    assert_eq!(pkg["version"], env!("CARGO_PKG_VERSION"));

    // Unpacked as a host unpacks it: the manifest validates again and names every tool.
    let unpacked = work.path().join("unpacked");
    let status = Command::new(&mcpb)
        .arg("unpack")
        .arg(&bundle)
        .arg(&unpacked)
        .output()
        .expect("mcpb unpack");
    assert!(status.status.success(), "{status:?}");
    let validated = Command::new(&mcpb)
        .arg("validate")
        .arg(unpacked.join("manifest.json"))
        .output()
        .expect("mcpb validate");
    assert!(validated.status.success(), "{validated:?}");
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(unpacked.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["manifest_version"], "0.4");
    assert_eq!(manifest["version"], env!("CARGO_PKG_VERSION"));
    let declared: Vec<String> = manifest["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect();
    let mut sorted = declared.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        common::exported_tool_names(),
        "every tool, as tools/ exports them"
    );
    for key in ["stack_dir", "docker_host", "ollama_host", "read_only"] {
        assert!(
            manifest["user_config"].get(key).is_some(),
            "user_config.{key}"
        );
    }

    // Started as a host starts it, with a person's settings, in both modes.
    let stack = TestStack::new("");
    let every = common::exported_tool_names().len();
    let read_only_tools = common::read_only_tool_names().len();
    for (read_only, expect) in [(false, every), (true, read_only_tools)] {
        let config = json!({
            "stack_dir": stack.path().to_string_lossy(),
            "docker_host": "unix:///tmp/stackpilot-test-no-docker.sock",
            "ollama_host": "",
            "read_only": read_only,
        });
        let cfg = &manifest["server"]["mcp_config"];
        let command = substitute(
            cfg["command"].as_str().expect("command"),
            &unpacked,
            &config,
        );
        let args: Vec<String> = cfg["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| substitute(a.as_str().expect("arg"), &unpacked, &config))
            .collect();
        let env: Vec<(String, String)> = cfg["env"]
            .as_object()
            .expect("env")
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    substitute(v.as_str().expect("env value"), &unpacked, &config),
                )
            })
            .collect();
        let transport =
            TokioChildProcess::new(tokio::process::Command::new(&command).configure(|c| {
                c.args(&args).envs(env.iter().cloned());
            }))
            .expect("start the bundled server");
        let client = TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25)
            .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
            .await
            .expect("initialize");
        let tools = client.list_all_tools().await.expect("tools/list");
        assert_eq!(tools.len(), expect, "read_only={read_only}");
        let r = call(
            &client,
            "select_profile",
            json!({"model": "llama3.1:8b", "hardware": gpu16()}),
        )
        .await;
        assert!(!is_error(&r), "{r:?}");
        assert_eq!(structured(&r)["profile"], "standard");
        client.cancel().await.expect("close");
    }
}

#[test]
fn server_json_describes_the_published_packages() {
    let server: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("server.json")).expect("server.json"),
    )
    .expect("server.json is JSON");
    assert!(server["$schema"]
        .as_str()
        .is_some_and(|s| s.starts_with("https://static.modelcontextprotocol.io/schemas/")));
    let name = server["name"].as_str().expect("name");
    // The registry's rules: reverse-DNS namespace, one slash; description at most 100.
    let (ns, short) = name.split_once('/').expect("namespace/name");
    assert!(
        ns.contains('.') && !short.contains('/') && short == "stackpilot",
        "{name}"
    );
    assert!(server["description"]
        .as_str()
        .is_some_and(|d| !d.is_empty() && d.len() <= 100));
    assert_eq!(server["version"], env!("CARGO_PKG_VERSION"));
    let oci = server["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["registryType"] == "oci"))
        .expect("an oci package");
    assert!(oci["identifier"]
        .as_str()
        .is_some_and(|i| i.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION")))));
    assert_eq!(oci["transport"]["type"], "stdio");
    assert_eq!(oci["runtimeHint"], "docker");
    let args = oci["runtimeArguments"].to_string();
    assert!(
        args.contains(":/var/run/docker.sock") && args.contains(":/stack"),
        "{args}"
    );
    // The registry checks the image's label against the name.
    let dockerfile =
        std::fs::read_to_string(root().join("compose/Dockerfile")).expect("compose/Dockerfile");
    assert!(
        dockerfile.contains(&format!("io.modelcontextprotocol.server.name=\"{name}\"")),
        "compose/Dockerfile labels the image with {name}"
    );
}
