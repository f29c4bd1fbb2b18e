//! The guard, kept honest where an audit found it was not: a person's
//! pending answer never holds the stack for everyone; a plan that changes
//! while they decide is asked about again; a hand edit between a plan and
//! its token changes the digest; the lock and the spent tokens are the
//! stack's whatever the state dir; an ignored confirm_token is said so.
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rmcp::model::ProtocolVersion;
use serde_json::{json, Value};

const ERA: ProtocolVersion = ProtocolVersion::V_2025_11_25;
/// select_profile (with `select_args`) chooses q8_0 here: f16 is an overwrite.
const ENV: &str = "# my settings\nOLLAMA_KV_CACHE_TYPE=f16\n";

fn cli(stack: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin())
        .env("DOCKER_HOST", "unix:///tmp/stackpilot-test-no-docker.sock")
        .env("OLLAMA_HOST", "http://127.0.0.1:9")
        .env("STACKPILOT_LOG", "warn")
        .arg("--stack")
        .arg(stack)
        .args(args)
        .output()
        .expect("stackpilot cli")
}

#[tokio::test]
async fn a_pending_question_never_blocks_other_callers() {
    let stack = TestStack::new(ENV);
    let path = stack.path().to_path_buf();
    let elsewhere: Arc<std::sync::Mutex<Option<(Duration, std::process::Output)>>> =
        Default::default();
    let seen = elsewhere.clone();
    let mut person = TestClient::new(Person::Accept, ERA);
    person.think = Duration::from_secs(6);
    // While the person decides, another process changes the stack under the
    // lock (prune_backups takes it; nothing to prune): it must not wait.
    person.meanwhile = Some(Arc::new(move |n| {
        if n == 1 {
            let path = path.clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let out = cli(&path, &["prune-backups", "--lock-timeout-s", "2", "--json"]);
                *seen.lock().expect("lock") = Some((t.elapsed(), out));
            });
        }
    }));
    let asked = person.asked.clone();
    let client = stdio_client(stack.path(), &[], person).await;
    let r = call(&client, "select_profile", select_args(json!({}))).await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    assert_eq!(out["env_file"]["written"], true, "{out:#}");
    assert_eq!(out["env_file"]["confirmed_by"], "elicitation");
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(stack.env_text().contains("OLLAMA_KV_CACHE_TYPE=q8_0"));
    let (took, other) = elsewhere
        .lock()
        .expect("lock")
        .take()
        .expect("the other call ran");
    assert!(
        other.status.success(),
        "the other caller was not kept out: {}",
        String::from_utf8_lossy(&other.stdout)
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn a_plan_that_changes_while_the_person_decides_is_asked_about_again() {
    let stack = TestStack::new(ENV);
    let env = stack.path().join(".env");
    let mut person = TestClient::new(Person::Accept, ERA);
    person.think = Duration::from_millis(300);
    person.meanwhile = Some(Arc::new(move |n| {
        if n == 1 {
            // A hand edit while the first question is open.
            std::fs::write(&env, "# my settings\nOLLAMA_KV_CACHE_TYPE=q4_0\n").expect("edit");
        }
    }));
    let asked = person.asked.clone();
    let client = stdio_client(stack.path(), &[], person).await;
    let r = call(&client, "select_profile", select_args(json!({}))).await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the changed plan is asked about, not run on the first answer"
    );
    let step = out["env_file"]["plan"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["target"] == "OLLAMA_KV_CACHE_TYPE")
        .cloned()
        .expect("step");
    assert_eq!(
        step["before"], "q4_0",
        "the plan run is the one asked about last"
    );
    assert!(stack.env_text().contains("OLLAMA_KV_CACHE_TYPE=q8_0"));
}

#[tokio::test]
async fn a_hand_edit_between_plan_and_token_is_a_new_plan() {
    let stack = TestStack::new(ENV);
    let client = stdio_client(stack.path(), &[], TestClient::new(Person::Absent, ERA)).await;
    let first = structured(&call(&client, "select_profile", select_args(json!({}))).await);
    let token = first["confirm_token"].as_str().expect("token").to_string();
    std::fs::write(
        stack.path().join(".env"),
        "# my settings\nOLLAMA_KV_CACHE_TYPE=q4_0\n",
    )
    .expect("edit");
    let again = structured(
        &call(
            &client,
            "select_profile",
            select_args(json!({"confirm_token": token})),
        )
        .await,
    );
    assert_eq!(again["confirmation_required"], true, "{again:#}");
    assert_ne!(again["plan"]["digest"], first["plan"]["digest"]);
    assert!(again["reason"].as_str().unwrap_or("").contains("changed"));
    assert_eq!(
        stack.env_text(),
        "# my settings\nOLLAMA_KV_CACHE_TYPE=q4_0\n",
        "the hand edit survives: nothing ran"
    );
}

#[tokio::test]
async fn the_lock_and_spent_tokens_are_the_stacks_whatever_the_state_dir() {
    let stack = TestStack::new(ENV);
    let d1 = tempfile::tempdir().expect("d1");
    let d2 = tempfile::tempdir().expect("d2");
    let key = (
        "STACKPILOT_CONFIRM_KEY",
        "0123456789abcdef0123456789abcdef0123456789abcdef",
    );
    let one = stdio_client_env(
        stack.path(),
        &["--state-dir", d1.path().to_str().expect("utf8")],
        TestClient::new(Person::Absent, ERA),
        &[key],
    )
    .await;
    let two = stdio_client_env(
        stack.path(),
        &["--state-dir", d2.path().to_str().expect("utf8")],
        TestClient::new(Person::Absent, ERA),
        &[key],
    )
    .await;
    let first = structured(&call(&one, "select_profile", select_args(json!({}))).await);
    let token = first["confirm_token"].as_str().expect("token").to_string();
    let spent = call(
        &two,
        "select_profile",
        select_args(json!({"confirm_token": token.clone()})),
    )
    .await;
    assert!(
        !is_error(&spent),
        "the other state dir's process may run it: {spent:?}"
    );
    std::fs::write(stack.path().join(".env"), ENV).expect("reset");
    let again = call(
        &one,
        "select_profile",
        select_args(json!({"confirm_token": token})),
    )
    .await;
    assert!(
        is_error(&again),
        "a token spent by another process: {again:?}"
    );
    assert!(
        structured(&again)["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("already used"),
        "{again:?}"
    );
    assert_eq!(stack.env_text(), ENV, "nothing ran the second time");

    // The lock is the stack's: held on the stack's own lock file, a process
    // with any state dir waits for it.
    let lock = stack.path().join(".stackpilot/lock");
    let mut holder = std::process::Command::new("flock")
        .arg("-x")
        .arg(&lock)
        .args(["sleep", "10"])
        .spawn()
        .expect("flock");
    std::thread::sleep(Duration::from_millis(300));
    let out = cli(
        stack.path(),
        &[
            "--state-dir",
            d2.path().to_str().expect("utf8"),
            "prune-backups",
            "--lock-timeout-s",
            "1",
            "--json",
        ],
    );
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["error"]["kind"], "busy", "{v:#}");
}

#[tokio::test]
async fn an_ignored_confirm_token_is_said_so() {
    let stack = TestStack::new("");
    let client = stdio_client(stack.path(), &[], TestClient::new(Person::Absent, ERA)).await;
    // Nothing destructive: the plan runs, and the token it did not need is named.
    let r = call(
        &client,
        "select_profile",
        select_args(json!({"confirm_token": "garbage.0000"})),
    )
    .await;
    assert!(!is_error(&r), "{r:?}");
    let notes: Vec<String> = r
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .filter(|t| t.starts_with("note:"))
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("confirm_token was ignored")),
        "{notes:?}"
    );
}
