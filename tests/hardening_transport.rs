//! What an adversarial audit found at the transports, kept fixed: every
//! malformed JSON-RPC frame is answered per JSON-RPC 2.0 on stdio and HTTP and
//! the server keeps serving; HTTP sessions are capped (503/429 with
//! Retry-After); slow headers and bodies are timed out; huge headers get
//! 431; a DELETE of an unknown session is 404; the bearer scheme is
//! case-insensitive; a 2026-07-28 request with an unknown Mcp-Session-Id is
//! served statelessly.
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The frames the audit sent, with the answer JSON-RPC wants: (frame, id, code).
fn malformed() -> Vec<(Vec<u8>, Value, i64)> {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    vec![
        (br#"{"jsonrpc":"2.0","id":1,"method":"ping""#.to_vec(), Value::Null, -32700),
        (b"not json at all".to_vec(), Value::Null, -32700),
        (b"\xff\xfe\xfd".to_vec(), Value::Null, -32700),
        (b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\0".to_vec(), Value::Null, -32700),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"ping"}{"jsonrpc":"2.0","id":2,"method":"ping"}"#.to_vec(),
            Value::Null,
            -32700,
        ),
        (br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":NaN}}"#.to_vec(), Value::Null, -32700),
        (deep.into_bytes(), Value::Null, -32700),
        (br#"{"jsonrpc":"1.0","id":11,"method":"ping"}"#.to_vec(), json!(11), -32600),
        (br#"{"jsonrpc":"2.0","id":12,"method":"ping","params":[1,2]}"#.to_vec(), json!(12), -32600),
        (br#"{"jsonrpc":"2.0","id":13,"method":"ping","params":"x"}"#.to_vec(), json!(13), -32600),
        (br#"{"jsonrpc":"2.0","id":14,"method":42}"#.to_vec(), json!(14), -32600),
        (br#"{"jsonrpc":"2.0","id":21,"method":"tools/call","params":{"name":"detect_hardware","arguments":[]}}"#.to_vec(), json!(21), -32602),
        (br#"{"jsonrpc":"2.0","id":22,"method":"tools/call","params":{"name":"detect_hardware","arguments":"x"}}"#.to_vec(), json!(22), -32602),
        (br#"{"jsonrpc":"2.0","id":23,"method":"tools/call","params":{"name":"detect_hardware","arguments":5}}"#.to_vec(), json!(23), -32602),
        (br#"{"jsonrpc":"2.0","id":24,"method":"tools/call","params":{"arguments":{}}}"#.to_vec(), json!(24), -32602),
        (br#"{"jsonrpc":"2.0","id":25,"method":"tools/call","params":{"name":7}}"#.to_vec(), json!(25), -32602),
    ]
}

fn init_line(id: u64) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}})
    .to_string()
}

#[tokio::test]
async fn stdio_answers_every_malformed_frame_and_keeps_serving() {
    let stack = TestStack::new("");
    let mut cmd = tokio::process::Command::new(bin());
    cmd.arg("serve")
        .arg("--stack")
        .arg(stack.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    quiet_env(&mut cmd);
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    async fn next_json(
        out: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    ) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(10), out.next_line())
            .await
            .expect("an answer within 10 s")
            .expect("read")
            .expect("a line");
        serde_json::from_str::<Value>(&line).expect("every line is JSON")
    }
    stdin
        .write_all(format!("{}\n", init_line(1)).as_bytes())
        .await
        .unwrap();
    assert_eq!(next_json(&mut out).await["id"], 1);
    stdin
        .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
        .await
        .unwrap();
    for (frame, id, code) in malformed() {
        stdin.write_all(&frame).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
        let answer = next_json(&mut out).await;
        assert_eq!(
            answer["id"],
            id,
            "{}: {answer}",
            String::from_utf8_lossy(&frame)
        );
        assert_eq!(
            answer["error"]["code"],
            code,
            "{}: {answer}",
            String::from_utf8_lossy(&frame)
        );
        // Still serving: a ping right after each bad frame is answered.
        stdin
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":\"p\",\"method\":\"ping\"}\n")
            .await
            .unwrap();
        let pong = next_json(&mut out).await;
        assert_eq!(pong["id"], "p", "{pong}");
        assert!(pong.get("result").is_some(), "{pong}");
    }
    // A bad tools/call names the field.
    stdin
        .write_all(br#"{"jsonrpc":"2.0","id":30,"method":"tools/call","params":{"name":"detect_hardware","arguments":[]}}"#)
        .await
        .unwrap();
    stdin.write_all(b"\n").await.unwrap();
    let answer = next_json(&mut out).await;
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("params.arguments"),
        "{answer}"
    );
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits when stdin closes")
        .expect("wait");
    assert!(status.success(), "{status:?}");
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().build().expect("client")
}

async fn post_raw(
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, String) {
    let mut req = http()
        .post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.body(body).send().await.expect("request");
    let status = r.status();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn http_answers_every_malformed_frame_and_keeps_serving() {
    let stack = TestStack::new("");
    let server = http_server(stack.path(), &[]).await;
    for (frame, id, code) in malformed() {
        let (status, _, body) = post_raw(&server.url, &[], frame.clone()).await;
        let want = if code == -32602 { 200 } else { 400 };
        assert_eq!(status, want, "{}: {body}", String::from_utf8_lossy(&frame));
        let answer: Value = serde_json::from_str(&body).expect("a JSON-RPC error body");
        assert_eq!(answer["id"], id, "{body}");
        assert_eq!(answer["error"]["code"], code, "{body}");
    }
    // Still serving.
    let (status, _, _) = post_raw(&server.url, &[], init_line(1).into_bytes()).await;
    assert_eq!(status, 200);
}

async fn initialize(url: &str) -> (reqwest::StatusCode, reqwest::header::HeaderMap) {
    let (status, headers, _) = post_raw(url, &[], init_line(1).into_bytes()).await;
    (status, headers)
}

#[tokio::test]
async fn sessions_are_capped_with_retry_after_and_unknown_deletes_are_404() {
    let stack = TestStack::new("");
    let server = http_server(
        stack.path(),
        &["--max-sessions", "6", "--max-sessions-per-client", "4"],
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let (status, headers) = initialize(&server.url).await;
        assert_eq!(status, 200);
        ids.push(
            headers
                .get("mcp-session-id")
                .expect("a session id")
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    // This client address holds its share: 429 with Retry-After.
    let (status, headers) = initialize(&server.url).await;
    assert_eq!(status, 429);
    let retry: u64 = headers
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .expect("seconds");
    assert!(retry >= 1);
    // Ending a session frees a slot.
    let deleted = http()
        .delete(&server.url)
        .header("Mcp-Session-Id", &ids[0])
        .header("MCP-Protocol-Version", "2025-11-25")
        .send()
        .await
        .expect("delete");
    assert!(deleted.status().is_success(), "{}", deleted.status());
    assert_eq!(initialize(&server.url).await.0, 200);
    // A session nobody has: 404, also for DELETE.
    let unknown = http()
        .delete(&server.url)
        .header("Mcp-Session-Id", "no-such-session")
        .header("MCP-Protocol-Version", "2025-11-25")
        .send()
        .await
        .expect("delete");
    assert_eq!(unknown.status(), 404);
    let (status, _, _) = post_raw(
        &server.url,
        &[
            ("Mcp-Session-Id", "no-such-session"),
            ("MCP-Protocol-Version", "2025-11-25"),
        ],
        br#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 404);
}

/// Many requests at once on one 2025-11-25 session are all answered (or,
/// past the per-session cap, refused with 429 and Retry-After): none waits for
/// good. Before the cap and the larger session channels, 50 clients pinging
/// one session could leave every one of them waiting (rmcp's session worker
/// and the handler each waiting on the other's full channel).
#[tokio::test]
async fn concurrent_requests_on_one_session_are_all_answered() {
    let stack = TestStack::new("");
    let server = http_server(stack.path(), &[]).await;
    let (status, headers) = initialize(&server.url).await;
    assert_eq!(status, 200);
    let id = headers
        .get("mcp-session-id")
        .expect("a session id")
        .to_str()
        .expect("ascii")
        .to_string();
    let session = [
        ("Mcp-Session-Id", id.as_str()),
        ("MCP-Protocol-Version", "2025-11-25"),
    ];
    let (status, _, _) = post_raw(
        &server.url,
        &session,
        br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_vec(),
    )
    .await;
    assert!(status.is_success(), "{status}");
    let mut calls = Vec::new();
    for n in 0..300u32 {
        let url = server.url.clone();
        let id = id.clone();
        calls.push(tokio::spawn(async move {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{},"method":"ping"}}"#, n + 10);
            let headers = [
                ("Mcp-Session-Id", id.as_str()),
                ("MCP-Protocol-Version", "2025-11-25"),
            ];
            tokio::time::timeout(
                Duration::from_secs(30),
                post_raw(&url, &headers, body.into_bytes()),
            )
            .await
        }));
    }
    let (mut answered, mut refused) = (0, 0);
    for c in calls {
        let (status, headers, body) = c
            .await
            .expect("join")
            .expect("every request answered within 30 s");
        match status.as_u16() {
            200 => {
                assert!(body.contains("\"result\""), "{body}");
                answered += 1;
            }
            429 => {
                assert!(headers.get("retry-after").is_some(), "{body}");
                refused += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    eprintln!("{answered} answered, {refused} refused (429)");
    assert!(answered >= 50, "{answered} answered, {refused} refused");

    // 50 requests at once with one id (a client bug): each is answered, or
    // refused with -32600 naming the id while another with it is open; none
    // waits for good (rmcp routes a response by its id).
    let mut calls = Vec::new();
    for _ in 0..50 {
        let url = server.url.clone();
        let id = id.clone();
        calls.push(tokio::spawn(async move {
            let headers = [
                ("Mcp-Session-Id", id.as_str()),
                ("MCP-Protocol-Version", "2025-11-25"),
            ];
            let body = br#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#.to_vec();
            tokio::time::timeout(Duration::from_secs(30), post_raw(&url, &headers, body)).await
        }));
    }
    for c in calls {
        let (status, _, body) = c
            .await
            .expect("join")
            .expect("answered within 30 s, the same id or not");
        match status.as_u16() {
            200 => assert!(body.contains("\"result\""), "{body}"),
            400 => {
                let v: Value = serde_json::from_str(&body).expect("a JSON-RPC error");
                assert_eq!(
                    (&v["id"], &v["error"]["code"]),
                    (&json!(7), &json!(-32600)),
                    "{body}"
                );
            }
            other => panic!("{other}: {body}"),
        }
    }
    // The session still serves.
    let (status, _, body) = post_raw(
        &server.url,
        &session,
        br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_global_session_cap_answers_503() {
    let stack = TestStack::new("");
    let server = http_server(
        stack.path(),
        &["--max-sessions", "3", "--max-sessions-per-client", "3"],
    )
    .await;
    for _ in 0..3 {
        assert_eq!(initialize(&server.url).await.0, 200);
    }
    let (status, headers) = initialize(&server.url).await;
    assert_eq!(status, 503);
    assert!(headers.get("retry-after").is_some());
    // Stateless 2026-07-28 requests need no session and are still served,
    // also with an Mcp-Session-Id that era removed (it is ignored).
    let discover = json!({"jsonrpc":"2.0","id":5,"method":"server/discover","params":{
        "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",
                 "io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"},
                 "io.modelcontextprotocol/clientCapabilities":{}}}});
    let (status, headers, body) = post_raw(
        &server.url,
        &[
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "server/discover"),
            ("Mcp-Session-Id", "deleted-or-unknown"),
        ],
        discover.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        headers.get("mcp-session-id").is_none(),
        "no session for 2026-07-28"
    );
    assert!(body.contains("\"id\":5"), "{body}");
}

async fn raw_connect(base: &str) -> tokio::net::TcpStream {
    let addr = base.trim_start_matches("http://");
    tokio::net::TcpStream::connect(addr).await.expect("connect")
}

/// Reads until the server closes or answers; returns what arrived.
async fn read_some(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Ok(Ok(n)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Ok(Err(_)) => Some(String::new()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn slow_headers_and_bodies_are_cut_off_and_huge_headers_refused() {
    let stack = TestStack::new("");
    let server = http_server(stack.path(), &[]).await;
    let host = server.base.trim_start_matches("http://").to_string();

    // Headers one byte per 100 ms: the connection is closed once the header
    // timeout (10 s) passes, without an answer to a request never completed.
    let mut slow = raw_connect(&server.base).await;
    let started = Instant::now();
    let request = format!("POST /mcp HTTP/1.1\r\nHost: {host}\r\nX-Slow: ");
    let mut closed_after = None;
    for byte in request.bytes().chain(std::iter::repeat(b'a')) {
        if slow.write_all(&[byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        if started.elapsed() > Duration::from_secs(25) {
            break;
        }
        if let Some(text) = read_some(&mut slow, Duration::from_millis(100)).await {
            // Closed (empty read) or an error status.
            assert!(text.is_empty() || text.starts_with("HTTP/1.1 4"), "{text}");
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("a slow header stream is cut off");
    assert!(closed_after < Duration::from_secs(20), "{closed_after:?}");

    // A body one byte per 100 ms past the body timeout (30 s): 408.
    let mut slow = raw_connect(&server.base).await;
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 100000\r\n\r\n"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = None;
    while started.elapsed() < Duration::from_secs(45) {
        if slow.write_all(b" ").await.is_err() {
            answer = Some(String::new());
            break;
        }
        if let Some(text) = read_some(&mut slow, Duration::from_millis(100)).await {
            answer = Some(text);
            break;
        }
    }
    let answer = answer.expect("a slow body is cut off");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");

    // Headers of 100 KB: 431.
    let (status, _, _) = post_raw(
        &server.url,
        &[("X-Big", &"b".repeat(100 * 1024))],
        init_line(1).into_bytes(),
    )
    .await;
    assert_eq!(status, 431);

    // Lower-case bearer scheme with a token-protected server.
    let token = "0123456789abcdef0123";
    let guarded = http_server(stack.path(), &["--auth-token", token]).await;
    let (status, _, _) = post_raw(
        &guarded.url,
        &[("Authorization", &format!("bearer {token}"))],
        init_line(1).into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    // And the server still serves.
    assert_eq!(initialize(&server.url).await.0, 200);
}
