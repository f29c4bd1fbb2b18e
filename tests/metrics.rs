//! The server's own health and metrics in HTTP mode: /healthz and /readyz stay
//! open, /metrics needs the bearer token when one is set; /metrics parses as
//! Prometheus text and its counters match known calls; `--log-format json`
//! logs one event per tool call with its duration and outcome.
mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use common::docker::{engine, DockerStack};
use common::{bin, call, http_client, is_error, structured, HttpServer, Person, TestClient};
use rmcp::model::ProtocolVersion;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

/// `stackpilot serve --http 127.0.0.1:0` with the given DOCKER_HOST.
async fn server(stack: &std::path::Path, docker_host: &str, extra: &[&str]) -> HttpServer {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.arg("serve")
        .arg("--stack")
        .arg(stack)
        .arg("--http")
        .arg("127.0.0.1:0")
        .args(extra)
        .env("DOCKER_HOST", docker_host)
        .env("OLLAMA_HOST", "http://127.0.0.1:9")
        .env("STACKPILOT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn stackpilot --http");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let url = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.strip_prefix("stackpilot listening on ") {
                return rest.trim().to_string();
            }
        }
        panic!("server exited before listening");
    })
    .await
    .expect("listens within 20 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let base = url.trim_end_matches("/mcp").to_string();
    HttpServer { child, url, base }
}

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn valid_name(s: &str, first_colon: bool) -> bool {
    let mut chars = s.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (first_colon && c == ':');
    chars.next().is_some_and(ok_first)
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (first_colon && c == ':'))
}

fn parse_value(v: &str) -> f64 {
    match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad sample value `{v}`")),
    }
}

/// A strict reader of the Prometheus / OpenMetrics text exposition: every line
/// is a comment (HELP, TYPE, UNIT, EOF last) or a sample of a family declared
/// by a TYPE line; names, label syntax and values are checked.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    const SUFFIXES: [&str; 6] = ["", "_total", "_bucket", "_count", "_sum", "_created"];
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match parts.next() {
                Some("EOF") => assert_eq!(i, lines.len() - 1, "# EOF is the last line"),
                Some("TYPE") => {
                    let name = parts.next().expect("TYPE name");
                    let kind = parts.next().expect("TYPE kind");
                    assert!(valid_name(name, true), "metric name `{name}`");
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "unknown",
                            "untyped",
                            "stateset",
                            "info",
                            "gaugehistogram"
                        ]
                        .contains(&kind),
                        "metric type `{kind}`"
                    );
                    families.insert(name.to_string(), kind.to_string());
                }
                Some("HELP") | Some("UNIT") => {
                    assert!(valid_name(parts.next().expect("name"), true));
                }
                other => panic!("unknown comment {other:?} in `{line}`"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').expect("labels end with }")),
            None => (series, ""),
        };
        assert!(valid_name(name, true), "metric name `{name}`");
        let family = SUFFIXES
            .iter()
            .filter_map(|s| name.strip_suffix(s))
            .find(|f| families.contains_key(*f))
            .unwrap_or_else(|| panic!("sample `{name}` has no TYPE line"));
        let kind = &families[family];
        if name.ends_with("_bucket") && kind == "histogram" {
            assert!(labels.contains("le=\""), "buckets carry le: {line}");
        }
        let mut map = BTreeMap::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (k, after) = rest.split_once("=\"").expect("label=\"value\"");
            assert!(valid_name(k, false), "label name `{k}`");
            let mut value = String::new();
            let mut chars = after.char_indices();
            let mut end = None;
            while let Some((j, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, e @ ('\\' | '"'))) => value.push(e),
                        other => panic!("bad escape {other:?} in `{line}`"),
                    },
                    '"' => {
                        end = Some(j);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.expect("closing quote");
            map.insert(k.to_string(), value);
            rest = after[end + 1..].trim_start_matches(',');
        }
        samples.push(Sample {
            name: name.to_string(),
            labels: map,
            value: parse_value(value),
        });
    }
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    samples
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels.len() == s.labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[tokio::test]
async fn metrics_need_the_token_and_probes_stay_open() {
    let stack = common::TestStack::new("");
    let srv = server(
        stack.path(),
        "unix:///tmp/stackpilot-test-no-docker.sock",
        &["--auth-token", "s3cret-metrics-token"],
    )
    .await;
    let http = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut r = http.get(format!("{}{path}", srv.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(get("/healthz", None).await.expect("healthz").status(), 200);
    let ready = get("/readyz", None).await.expect("readyz");
    assert_eq!(ready.status(), 503, "open, and not ready without an engine");
    let body = ready.text().await.expect("body");
    assert!(body.starts_with("not ready: "), "{body}");
    assert_eq!(get("/metrics", None).await.expect("metrics").status(), 401);
    assert_eq!(
        get("/metrics", Some("wrong"))
            .await
            .expect("metrics")
            .status(),
        401
    );
    let ok = get("/metrics", Some("s3cret-metrics-token"))
        .await
        .expect("metrics");
    assert_eq!(ok.status(), 200);
    assert!(ok
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/openmetrics-text")));
    let samples = parse_prometheus(&ok.text().await.expect("text"));
    assert!(
        !samples
            .iter()
            .any(|s| s.name == "stackpilot_tool_calls_total"),
        "no calls yet"
    );
}

#[tokio::test]
async fn metrics_count_known_calls() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("web", &host);
    let up = stack.compose(&["up", "-d", "--wait"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let srv = server(stack.path(), &host, &[]).await;
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("{}/readyz", srv.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let client = http_client(
        &srv,
        TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25),
        None,
    )
    .await;

    for _ in 0..2 {
        let r = call(&client, "health", json!({})).await;
        assert!(!is_error(&r), "{r:?}");
    }
    let r = call(&client, "health", json!({"logs_tail": 999})).await;
    assert!(is_error(&r));
    let r = call(
        &client,
        "recover",
        json!({"service": "cache", "action": "recreate"}),
    )
    .await;
    let first = structured(&r);
    assert_eq!(first["confirmation_required"], true);
    let token = first["confirm_token"].as_str().expect("token");
    let r = call(
        &client,
        "recover",
        json!({"service": "cache", "action": "recreate", "confirm_token": token}),
    )
    .await;
    assert_eq!(structured(&r)["confirmed_by"], "token", "{r:?}");
    client.cancel().await.expect("close");

    let text = http
        .get(format!("{}/metrics", srv.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let s = parse_prometheus(&text);
    let calls = "stackpilot_tool_calls_total";
    assert_eq!(
        value(&s, calls, &[("tool", "health"), ("outcome", "ok")]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&s, calls, &[("tool", "health"), ("outcome", "error")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            calls,
            &[("tool", "recover"), ("outcome", "confirmation_required")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&s, calls, &[("tool", "recover"), ("outcome", "ok")]),
        Some(1.0)
    );
    let latency = "stackpilot_tool_call_duration_seconds";
    assert_eq!(
        value(&s, &format!("{latency}_count"), &[("tool", "health")]),
        Some(3.0)
    );
    assert_eq!(
        value(
            &s,
            &format!("{latency}_bucket"),
            &[("tool", "health"), ("le", "+Inf")]
        ),
        Some(3.0)
    );
    assert!(value(&s, &format!("{latency}_sum"), &[("tool", "recover")]).is_some_and(|v| v > 0.0));
    let conf = "stackpilot_confirmations_total";
    assert_eq!(
        value(&s, conf, &[("outcome", "asked"), ("via", "token")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, conf, &[("outcome", "accepted"), ("via", "token")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, conf, &[("outcome", "declined"), ("via", "token")]),
        None
    );
    let gauge = "stackpilot_service_health";
    assert_eq!(
        value(&s, gauge, &[("service", "web"), ("verdict", "healthy")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, gauge, &[("service", "web"), ("verdict", "stopped")]),
        Some(0.0)
    );
    assert_eq!(
        s.iter()
            .filter(|x| x.name == gauge && x.labels["service"] == "web")
            .map(|x| x.value)
            .sum::<f64>(),
        1.0,
        "one verdict per service"
    );
}

#[tokio::test]
async fn json_logs_have_one_event_per_tool_call() {
    let stack = common::TestStack::new("");
    let mut child = tokio::process::Command::new(bin())
        .args(["--log-format", "json", "serve", "--stack"])
        .arg(stack.path())
        .env("DOCKER_HOST", "unix:///tmp/stackpilot-test-no-docker.sock")
        .env("OLLAMA_HOST", "http://127.0.0.1:9")
        .env("STACKPILOT_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut err = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    use tokio::io::AsyncWriteExt;
    let messages = [
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"detect_hardware","arguments":{}}}),
        json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"health","arguments":{"logs_tail":500}}}),
    ];
    for m in &messages {
        stdin
            .write_all(format!("{m}\n").as_bytes())
            .await
            .expect("write");
    }
    // Every stdout line is JSON-RPC; wait for the two tool answers.
    let mut answered = 0;
    while answered < 2 {
        let line = tokio::time::timeout(Duration::from_secs(20), out.next_line())
            .await
            .expect("answer in time")
            .expect("read")
            .expect("line");
        let v: Value = serde_json::from_str(&line).expect("stdout carries only JSON-RPC");
        if v["id"] == 2 || v["id"] == 3 {
            answered += 1;
        }
    }
    drop(stdin);
    let mut events = Vec::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(10), err.next_line()).await
    {
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"));
        if v["fields"]["message"] == "tool call" {
            events.push(v);
        }
    }
    let _ = child.wait().await;
    assert_eq!(events.len(), 2, "{events:#?}");
    let by_tool: BTreeMap<String, &Value> = events
        .iter()
        .map(|e| (e["fields"]["tool"].as_str().unwrap_or("").to_string(), e))
        .collect();
    let hw = &by_tool["detect_hardware"]["fields"];
    assert_eq!(hw["outcome"], "ok");
    assert!(hw["duration_ms"].as_u64().is_some());
    assert_eq!(hw["transport"], "stdio");
    assert_eq!(by_tool["health"]["fields"]["outcome"], "error");
    assert_eq!(by_tool["health"]["level"], "INFO");
}
