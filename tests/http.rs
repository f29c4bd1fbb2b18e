//! Streamable HTTP edges: auth, DNS-rebinding defences, body limit, health.
mod common;

use common::*;
use rmcp::model::ProtocolVersion;
use serde_json::json;

fn init_body() -> serde_json::Value {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}})
}

async fn post(url: &str, headers: &[(&str, &str)], body: String) -> reqwest::StatusCode {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(body).send().await.expect("request").status()
}

#[tokio::test]
async fn host_origin_and_body_limits() {
    let stack = TestStack::new("");
    let server = http_server(stack.path(), &["--max-body-bytes", "1048576"]).await;
    let health = reqwest::get(format!("{}/healthz", server.base))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    // A well-formed initialize is accepted.
    assert_eq!(post(&server.url, &[], init_body().to_string()).await, 200);
    // DNS rebinding: a foreign Host, or a foreign Origin, is refused.
    assert_eq!(
        post(
            &server.url,
            &[("Host", "evil.example:7331")],
            init_body().to_string()
        )
        .await,
        403
    );
    assert_eq!(
        post(
            &server.url,
            &[("Origin", "http://evil.example")],
            init_body().to_string()
        )
        .await,
        403
    );
    assert_eq!(
        post(
            &server.url,
            &[("Origin", "http://localhost:3000")],
            init_body().to_string()
        )
        .await,
        200
    );
    // Past the body limit: 413.
    let big =
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"pad": "x".repeat(2 << 20)}})
            .to_string();
    assert_eq!(post(&server.url, &[], big).await, 413);
    // Still serving.
    let client = http_client(
        &server,
        TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25),
        None,
    )
    .await;
    assert!(!is_error(
        &call(&client, "detect_hardware", json!({})).await
    ));
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn bearer_token_is_required_when_configured() {
    let stack = TestStack::new("");
    let server = http_server(stack.path(), &["--auth-token", "s3cret-token-for-tests"]).await;
    assert_eq!(post(&server.url, &[], init_body().to_string()).await, 401);
    assert_eq!(
        post(
            &server.url,
            &[("Authorization", "Bearer wrong")],
            init_body().to_string()
        )
        .await,
        401
    );
    assert_eq!(
        post(
            &server.url,
            &[("Authorization", "Bearer s3cret-token-for-tests")],
            init_body().to_string()
        )
        .await,
        200
    );
    // Container health checks need no token.
    assert_eq!(
        reqwest::get(format!("{}/healthz", server.base))
            .await
            .expect("healthz")
            .status(),
        200
    );
    for era in [ProtocolVersion::V_2025_11_25, ProtocolVersion::V_2026_07_28] {
        let client = http_client(
            &server,
            TestClient::new(Person::Absent, era),
            Some("s3cret-token-for-tests"),
        )
        .await;
        assert!(!is_error(
            &call(&client, "detect_hardware", json!({})).await
        ));
        client.cancel().await.expect("close");
    }
}

#[test]
fn non_loopback_bind_needs_a_token() {
    let stack = TestStack::new("");
    let out = std::process::Command::new(bin())
        .args(["serve", "--http", "0.0.0.0:0", "--stack"])
        .arg(stack.path())
        .env_remove("STACKPILOT_AUTH_TOKEN")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--auth-token"), "{err}");
    // A short token is refused too.
    let out = std::process::Command::new(bin())
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--auth-token",
            "change-me",
            "--stack",
        ])
        .arg(stack.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));
}
