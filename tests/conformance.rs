//! stackpilot against the official MCP tools: the conformance suite's server
//! scenarios over Streamable HTTP, and the MCP Inspector CLI over stdio and
//! HTTP (both protocol eras). The tools come from scripts/peers/mcp-tools.sh
//! (the test command installs them; see scripts/peers/README.md).
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use common::peers::peers;
use common::*;
use serde_json::{json, Value};

/// Scenarios that fail today because stackpilot lacks the capability they
/// test, and the evidence their failure must show (so a failure for another
/// reason still turns the test red). When one of them passes, this test fails
/// and asks for its line to be removed.
const EXPECTED_FAILURES: &[(&str, &str, &str)] = &[];

/// The server scenarios of conformance 0.1.16 that apply to stackpilot (the
/// others call the suite's own demo tools, prompts and resources; README,
/// "Conformance"). A suite that drops one of these fails the test too.
const APPLICABLE: &[&str] = &[
    "server-initialize",
    "logging-set-level",
    "ping",
    "tools-list",
    "server-sse-multiple-streams",
    "resources-list",
    "prompts-list",
    "dns-rebinding-protection",
];

async fn run(cmd: &mut tokio::process::Command) -> Output {
    cmd.kill_on_drop(true)
        .output()
        .await
        .expect("run a peer tool")
}

#[tokio::test]
async fn the_official_conformance_suite_passes_every_applicable_scenario() {
    let Some(_peers) = peers() else { return };
    let stack = TestStack::new("");
    let server = http_server(stack.path(), &[]).await;
    let out = run(tokio::process::Command::new("bash")
        .arg(root().join("scripts/peers/mcp-tools.sh"))
        .arg("conformance")
        .arg(&server.url))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{stdout}");
    // `PASS name  1.2s  details` / `FAIL name  0.9s  details`, one line each.
    let results: BTreeMap<String, (bool, String)> = stdout
        .lines()
        .filter_map(|l| {
            let (verdict, rest) = l.split_once(' ')?;
            let pass = match verdict {
                "PASS" => true,
                "FAIL" => false,
                _ => return None,
            };
            let mut words = rest.split_whitespace();
            let name = words.next()?.to_string();
            Some((name, (pass, words.collect::<Vec<_>>().join(" "))))
        })
        .collect();
    for name in APPLICABLE {
        assert!(
            results.contains_key(*name),
            "scenario {name} did not run:\n{stdout}\n{stderr}"
        );
    }
    let mut problems = Vec::new();
    for (name, (pass, detail)) in &results {
        match EXPECTED_FAILURES.iter().find(|(n, _, _)| n == name) {
            Some((_, _, why)) if *pass => problems.push(format!(
                "{name} passes now ({why} no longer holds): remove it from EXPECTED_FAILURES in tests/conformance.rs"
            )),
            Some((_, method, why)) => {
                if !(detail.contains("-32601") && detail.contains(method)) {
                    problems.push(format!(
                        "{name} was expected to fail only because {why} (-32601 on {method}), but: {detail}"
                    ));
                } else {
                    eprintln!("expected failure: {name}: {why}");
                }
            }
            None if !pass => problems.push(format!("{name} fails: {detail}")),
            None => {}
        }
    }
    assert!(problems.is_empty(), "{}\n\n{stdout}", problems.join("\n"));
}

/// One Inspector CLI call (`-q --format json`): exit code and its JSON.
async fn inspector(peers_bin: &str, home: &Path, target: &[&str], method: &[&str]) -> (i32, Value) {
    let out = run(tokio::process::Command::new(peers_bin)
        .args(target)
        .args(method)
        .args(["-q", "--format", "json"])
        .env("HOME", home)
        .env("MCP_CATALOG_PATH", home.join("catalog.json"))
        .env("MCP_CLIENT_CONFIG_PATH", home.join("clients.json")))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .next()
        .unwrap_or_else(|| {
            panic!(
                "the Inspector printed no JSON for {target:?} {method:?}: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (out.status.code().unwrap_or(-1), json)
}

fn tool_names(reply: &Value) -> Vec<String> {
    reply["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("a tools/list result: {reply}"))
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn the_inspector_cli_lists_and_calls_tools_over_stdio_and_http() {
    let Some(peers) = peers() else { return };
    let inspect = peers["STACKPILOT_INSPECTOR_CLI"].clone();
    let home = tempfile::tempdir().expect("scratch HOME for the Inspector");
    let stack = TestStack::new("");
    let server = http_server(stack.path(), &[]).await;
    let args =
        json!({"model": "llama3.1:8b", "context_length": 131072, "hardware": gpu16()}).to_string();
    let call = [
        "--method",
        "tools/call",
        "--tool-name",
        "select_profile",
        "--tool-args-json",
        args.as_str(),
    ];
    let bad = [
        "--method",
        "tools/call",
        "--tool-name",
        "select_profile",
        "--tool-args-json",
        r#"{"model":"llama3.1:8b","kv_cache_types":["q5"]}"#,
    ];
    let stack_arg = stack.path().to_string_lossy().into_owned();
    let stdio = [
        "-e",
        "DOCKER_HOST=unix:///tmp/stackpilot-test-no-docker.sock",
        "-e",
        "STACKPILOT_LOG=warn",
        bin(),
        "serve",
        "--stack",
        stack_arg.as_str(),
    ];
    let targets: Vec<(&str, Vec<&str>)> = vec![
        ("stdio", stdio.to_vec()),
        ("HTTP 2025-11-25", vec![server.url.as_str()]),
        (
            "HTTP 2026-07-28",
            vec!["--protocol-era", "modern", server.url.as_str()],
        ),
    ];
    let mut lists: Vec<Value> = Vec::new();
    let mut results: Vec<Value> = Vec::new();
    for (what, target) in &targets {
        let (code, list) =
            inspector(&inspect, home.path(), target, &["--method", "tools/list"]).await;
        assert_eq!(code, 0, "{what}: {list}");
        let names = tool_names(&list);
        assert!(
            names.len() >= 16 && names.iter().any(|n| n == "select_profile"),
            "{what}: {names:?}"
        );

        let (code, reply) = inspector(&inspect, home.path(), target, &call).await;
        assert_eq!(code, 0, "{what}: {reply}");
        let result = reply["result"].clone();
        assert_eq!(result["isError"], false, "{what}: {reply}");
        assert_eq!(
            result["structuredContent"]["kv_cache_type"], "q8_0",
            "{what}: {reply}"
        );
        assert_eq!(result["structuredContent"]["fits"], true, "{what}: {reply}");

        // A refused call: isError with the field and the allowed values (exit 5).
        let (code, reply) = inspector(&inspect, home.path(), target, &bad).await;
        assert_eq!(code, 5, "{what}: {reply}");
        let err = &reply["result"]["structuredContent"]["error"];
        assert_eq!(err["field"], "kv_cache_types[0]", "{what}: {reply}");
        assert_eq!(
            err["allowed"],
            json!(["f16", "q8_0", "q4_0"]),
            "{what}: {reply}"
        );
        // Resources: listed, and one read back as the JSON it says it is.
        let (code, res) = inspector(
            &inspect,
            home.path(),
            target,
            &["--method", "resources/list"],
        )
        .await;
        assert_eq!(code, 0, "{what}: {res}");
        let uris: Vec<&str> = res["result"]["resources"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: a resources/list result: {res}"))
            .iter()
            .filter_map(|r| r["uri"].as_str())
            .collect();
        for uri in ["stackpilot://stack/status", "stackpilot://host/hardware"] {
            assert!(uris.contains(&uri), "{what}: {uri} in {uris:?}");
        }
        let read = [
            "--method",
            "resources/read",
            "--uri",
            "stackpilot://host/hardware",
        ];
        let (code, res) = inspector(&inspect, home.path(), target, &read).await;
        assert_eq!(code, 0, "{what}: {res}");
        let content = &res["result"]["contents"][0];
        assert_eq!(content["mimeType"], "application/json", "{what}: {res}");
        let hardware: Value = serde_json::from_str(content["text"].as_str().unwrap_or(""))
            .unwrap_or_else(|e| panic!("{what}: the hardware resource is JSON ({e}): {res}"));
        assert!(
            hardware["cpu"]["logical_cores"].as_u64().unwrap_or(0) > 0,
            "{what}: {hardware}"
        );

        results.push(json!(["select_profile", result["structuredContent"]]));
        results.push(json!([
            "select_profile",
            reply["result"]["structuredContent"]
        ]));
        lists.push(list);
    }
    assert_eq!(stack.env_text(), "", "nothing was written");

    // Ajv, as Ajv-based clients compile the schemas: no unknown format, no other
    // complaint, and the results validate.
    let node_modules = Path::new(&inspect)
        .parent()
        .and_then(Path::parent)
        .map(|cache| cache.join("inspector-2.12.0/node_modules"))
        .expect("the peers cache");
    let list_file = home.path().join("tools-list.json");
    std::fs::write(&list_file, lists[0].to_string()).expect("write");
    let results_file = home.path().join("results.json");
    std::fs::write(&results_file, Value::Array(results).to_string()).expect("write");
    let out = run(tokio::process::Command::new(&peers["STACKPILOT_NODE22"])
        .arg(root().join("tests/ajv/check.js"))
        .arg(&node_modules)
        .arg(&list_file)
        .arg(&results_file))
    .await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "tests/ajv/check.js: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!("Ajv: {report}");
    assert_eq!(
        report["tools"],
        json!(tool_names(&lists[0]).len()),
        "every listed tool was compiled: {report}"
    );
    assert_eq!(report["warnings"], json!([]), "{report}");
    assert_eq!(report["errors"], json!([]), "{report}");
}
