//! The confirmation guard end to end, through real MCP clients: select_profile
//! overwriting a different .env value is destructive.
mod common;

use common::*;
use rmcp::model::ProtocolVersion;
use serde_json::{json, Value};

/// An .env whose KV cache type differs from what select_profile will choose
/// (q8_0 for llama3.1:8b at 128K on a 16 GiB card), plus lines it must keep.
const ENV: &str = "# my settings\nOLLAMA_KV_CACHE_TYPE=f16\nPOSTGRES_PASSWORD=hunter2\n";

fn assert_untouched(stack: &TestStack) {
    assert_eq!(stack.env_text(), ENV, ".env unchanged");
}

fn assert_applied(stack: &TestStack) {
    let text = stack.env_text();
    assert!(
        text.starts_with("# my settings\nOLLAMA_KV_CACHE_TYPE=q8_0\nPOSTGRES_PASSWORD=hunter2\n"),
        "{text}"
    );
    assert!(text.contains("OLLAMA_CONTEXT_LENGTH=131072"));
    assert!(text.contains("OLLAMA_FLASH_ATTENTION=1"));
}

fn last_audit(stack: &TestStack) -> Value {
    stack.audit_lines().pop().expect("an audit line")
}

#[tokio::test]
async fn token_path_confirm_reuse_and_drift() {
    let stack = TestStack::new(ENV);
    let client = stdio_client(
        stack.path(),
        &[],
        TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25),
    )
    .await;

    // 1. No way to ask: a plan and a token, nothing changed.
    let first = structured(&call(&client, "select_profile", select_args(json!({}))).await);
    assert_eq!(first["confirmation_required"], true, "{first:#}");
    let plan = &first["plan"];
    assert_eq!(plan["destructive"], true);
    let overwrite = plan["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["action"] == "overwrite")
        .expect("overwrite step");
    assert_eq!(overwrite["target"], "OLLAMA_KV_CACHE_TYPE");
    assert_eq!(overwrite["before"], "f16");
    assert_eq!(overwrite["after"], "q8_0");
    assert_untouched(&stack);
    let audit = last_audit(&stack);
    assert_eq!(audit["outcome"], "confirmation_required");
    assert_eq!(audit["arguments"]["hardware"]["logical_cores"], 16);

    // 2. Same inputs, same state: the same digest, byte for byte.
    let again = structured(&call(&client, "select_profile", select_args(json!({}))).await);
    assert_eq!(again["plan"], first["plan"]);
    assert_ne!(
        again["confirm_token"], first["confirm_token"],
        "each answer has its own token"
    );

    // 3. Back with the token: applied.
    let token = first["confirm_token"].as_str().expect("token").to_string();
    let applied = call(
        &client,
        "select_profile",
        select_args(json!({"confirm_token": token})),
    )
    .await;
    assert!(!is_error(&applied), "{applied:?}");
    let out = structured(&applied);
    assert_eq!(out["env_file"]["written"], true);
    assert_eq!(out["env_file"]["confirmed_by"], "token");
    assert_applied(&stack);
    let audit = last_audit(&stack);
    assert_eq!(audit["confirmation"], "token");
    assert_eq!(audit["outcome"], "applied");
    assert_eq!(audit["arguments"]["confirm_token"], "[redacted]");
    assert_eq!(audit["plan_digest"], first["plan"]["digest"]);

    // 4. The same token again: refused (single use).
    std::fs::write(stack.path().join(".env"), ENV).expect("reset .env");
    let reused = call(
        &client,
        "select_profile",
        select_args(json!({"confirm_token": token})),
    )
    .await;
    assert!(is_error(&reused));
    assert_eq!(structured(&reused)["error"]["kind"], "confirmation");
    assert!(structured(&reused)["error"]["message"]
        .as_str()
        .expect("msg")
        .contains("already used"));
    assert_untouched(&stack);

    // 5. Drift: the state changes after the token was issued. A new plan and a
    //    new token come back; nothing runs.
    let fresh = structured(&call(&client, "select_profile", select_args(json!({}))).await);
    std::fs::write(stack.path().join(".env"), ENV.replace("f16", "q4_0")).expect("drift");
    let drifted = structured(
        &call(
            &client,
            "select_profile",
            select_args(json!({"confirm_token": fresh["confirm_token"]})),
        )
        .await,
    );
    assert_eq!(drifted["confirmation_required"], true);
    assert!(drifted["reason"]
        .as_str()
        .expect("reason")
        .contains("changed"));
    assert_ne!(drifted["plan"]["digest"], fresh["plan"]["digest"]);
    assert_eq!(
        stack.env_text(),
        ENV.replace("f16", "q4_0"),
        "drifted plan did not run"
    );

    // 6. Forged and foreign tokens are refused.
    let forged = call(
        &client,
        "select_profile",
        select_args(json!({"confirm_token": "eyJkIjoieCJ9.00"})),
    )
    .await;
    assert_eq!(structured(&forged)["error"]["kind"], "confirmation");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn expired_token_is_refused() {
    use base64::Engine;
    use hmac::Mac;
    let stack = TestStack::new(ENV);
    let client = stdio_client(
        stack.path(),
        &[],
        TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25),
    )
    .await;
    let first = structured(&call(&client, "select_profile", select_args(json!({}))).await);
    // Sign an expired token with the stack's own key for the current digest.
    let key = hex::decode(
        std::fs::read_to_string(stack.path().join(".stackpilot/confirm.key"))
            .expect("key")
            .trim(),
    )
    .expect("hex");
    let token = first["confirm_token"].as_str().expect("token");
    let payload = token.split('.').next().expect("payload");
    let mut claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("b64"),
    )
    .expect("claims");
    claims["e"] = json!(1_000);
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims).expect("json"));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("mac");
    mac.update(payload.as_bytes());
    let expired = format!("{payload}.{}", hex::encode(mac.finalize().into_bytes()));
    let r = call(
        &client,
        "select_profile",
        select_args(json!({"confirm_token": expired})),
    )
    .await;
    assert!(is_error(&r));
    assert!(structured(&r)["error"]["message"]
        .as_str()
        .expect("msg")
        .contains("expired"));
    assert_untouched(&stack);
    client.cancel().await.expect("close");
}

/// Elicitation in both eras: 2025-11-25 asks with elicitation/create, 2026-07-28
/// answers input-required and the client retries.
#[tokio::test]
async fn elicitation_accept_decline_cancel_both_eras() {
    for (era, by) in [
        (ProtocolVersion::V_2025_11_25, "elicitation"),
        (ProtocolVersion::V_2026_07_28, "input_required"),
    ] {
        for person in [Person::Decline, Person::Cancel, Person::Accept] {
            let stack = TestStack::new(ENV);
            let tc = TestClient::new(person, era.clone());
            let asked = tc.asked.clone();
            let client = stdio_client(stack.path(), &[], tc).await;
            let r = call(&client, "select_profile", select_args(json!({}))).await;
            assert!(!is_error(&r), "{r:?}");
            let out = structured(&r);
            assert_eq!(
                asked.load(std::sync::atomic::Ordering::SeqCst),
                1,
                "the person was asked once ({era}, {person:?})"
            );
            match person {
                Person::Accept => {
                    assert_eq!(out["env_file"]["confirmed_by"], by, "{out:#}");
                    assert_applied(&stack);
                    assert_eq!(last_audit(&stack)["confirmation"], by);
                }
                _ => {
                    assert_eq!(out["declined"], true, "{out:#}");
                    assert_eq!(
                        out["answer"],
                        if person == Person::Decline {
                            "decline"
                        } else {
                            "cancel"
                        }
                    );
                    assert!(out["message"]
                        .as_str()
                        .expect("msg")
                        .contains("nothing was changed"));
                    assert_untouched(&stack);
                }
            }
            client.cancel().await.expect("close");
        }
    }
}

#[tokio::test]
async fn non_destructive_writes_need_no_confirmation() {
    let stack = TestStack::new("");
    let client = stdio_client(
        stack.path(),
        &[],
        TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25),
    )
    .await;
    let out = structured(&call(&client, "select_profile", select_args(json!({}))).await);
    assert_eq!(out["env_file"]["confirmed_by"], "not_needed");
    assert_eq!(out["env_file"]["written"], true);
    // Second time: nothing to change, nothing written.
    let again = structured(&call(&client, "select_profile", select_args(json!({}))).await);
    assert_eq!(again["env_file"]["written"], false);
    assert_eq!(last_audit(&stack)["outcome"], "no_changes");
    client.cancel().await.expect("close");
}

/// Under --read-only, select_profile keeps its read-only form (annotated as
/// such) and refuses write_env; nothing is written.
#[tokio::test]
async fn read_only_mode_refuses_writes() {
    let stack = TestStack::new(ENV);
    let client = stdio_client(
        stack.path(),
        &["--read-only"],
        TestClient::new(Person::Accept, ProtocolVersion::V_2025_11_25),
    )
    .await;
    let tools = client.list_all_tools().await.expect("list");
    for t in &tools {
        let a = t.annotations.as_ref().expect("annotations");
        assert_eq!(
            a.read_only_hint,
            Some(true),
            "{} is listed read-only",
            t.name
        );
        assert_eq!(a.destructive_hint, Some(false), "{}", t.name);
    }
    let r = call(&client, "select_profile", select_args(json!({}))).await;
    assert!(is_error(&r));
    assert_eq!(structured(&r)["error"]["kind"], "not_allowed");
    let computed = call(
        &client,
        "select_profile",
        select_args(json!({"write_env": false})),
    )
    .await;
    assert!(!is_error(&computed));
    assert_eq!(structured(&computed)["kv_cache_type"], "q8_0");
    for tool in ["pull_model", "remove_model"] {
        let r = call(&client, tool, json!({"model": "llama3.1:8b"})).await;
        assert_eq!(structured(&r)["error"]["kind"], "not_allowed", "{tool}");
    }
    let r = call(&client, "set_kv_cache", json!({"type": "q8_0"})).await;
    assert_eq!(
        structured(&r)["error"]["kind"],
        "not_allowed",
        "set_kv_cache"
    );
    assert_untouched(&stack);
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn allow_destructive_runs_and_is_audited() {
    let stack = TestStack::new(ENV);
    let client = stdio_client(
        stack.path(),
        &["--allow-destructive"],
        TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25),
    )
    .await;
    let out = structured(&call(&client, "select_profile", select_args(json!({}))).await);
    assert_eq!(out["env_file"]["confirmed_by"], "allow_destructive");
    assert_applied(&stack);
    let audit = last_audit(&stack);
    assert_eq!(audit["confirmation"], "allow_destructive");
    assert_eq!(
        audit["arguments"]["POSTGRES_PASSWORD"],
        Value::Null,
        "arguments are the call's, redacted"
    );
    client.cancel().await.expect("close");
}
