//! init_env through rmcp's client against the built binary: a compose file
//! shaped as users write them (a Postgres reading the .env, an app with a
//! `${DB_PASSWORD:?}` URL and a pass-through JWT_SECRET), a fresh .env and
//! one with a value set. No engine is needed: the compose files are read as
//! written (compose itself would refuse the `:?` until the key exists).
mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use rmcp::model::ProtocolVersion;
use serde_json::{json, Value};

const ERA: ProtocolVersion = ProtocolVersion::V_2025_11_25;

const COMPOSE: &str = r#"
services:
  db:
    image: postgres:16-alpine
    env_file: .env
    volumes: [pg:/var/lib/postgresql/data]
  app:
    image: example/app:${APP_TAG:-1}
    environment:
      DATABASE_URL: postgres://app:${DB_PASSWORD:?set DB_PASSWORD}@db/app
      JWT_SECRET:
      MODE: ${MODE:-prod}
    # ${COMMENTED_PASSWORD} in a comment is not a reference
volumes:
  pg:
"#;

fn stack(env: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("compose.yaml"), COMPOSE).expect("compose");
    if let Some(env) = env {
        std::fs::write(dir.path().join(".env"), env).expect(".env");
    }
    dir
}

fn env_of(dir: &tempfile::TempDir) -> String {
    std::fs::read_to_string(dir.path().join(".env")).unwrap_or_default()
}

fn value(env: &str, key: &str) -> Option<String> {
    env.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}

fn keys(out: &Value, field: &str) -> Vec<String> {
    out[field]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["key"].as_str().expect("key").to_string())
        .collect()
}

fn policy(v: &str) -> bool {
    v.len() >= 8
        && v.chars().any(|c| c.is_ascii_uppercase())
        && v.chars().any(|c| c.is_ascii_lowercase())
        && v.chars().any(|c| c.is_ascii_digit())
        && v.chars().any(|c| !c.is_ascii_alphanumeric())
}

#[tokio::test]
async fn fills_a_fresh_env_and_keeps_what_is_set() {
    // A fresh stack: no .env at all.
    let dir = stack(None);
    let client = stdio_client(dir.path(), &[], TestClient::new(Person::Absent, ERA)).await;
    let tools = client.list_all_tools().await.expect("tools");

    let dry = structured(&call(&client, "init_env", json!({"dry_run": true})).await);
    validate_output(&tools, "init_env", &dry);
    assert_eq!(
        keys(&dry, "keys_set"),
        ["DB_PASSWORD", "JWT_SECRET", "POSTGRES_PASSWORD"]
    );
    assert!(
        !dir.path().join(".env").exists(),
        "a dry run writes nothing"
    );

    let r = call(&client, "init_env", json!({})).await;
    assert!(!is_error(&r), "{r:?}");
    let out = structured(&r);
    validate_output(&tools, "init_env", &out);
    assert_eq!(out["confirmed_by"], "not_needed");
    assert_eq!(
        keys(&out, "keys_set"),
        ["DB_PASSWORD", "JWT_SECRET", "POSTGRES_PASSWORD"]
    );
    assert_eq!(out["length"], 32);
    assert_eq!(out["file_mode"], "0600");
    let mode = std::fs::metadata(dir.path().join(".env"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let env = env_of(&dir);
    let text = serde_json::to_string(&out).expect("json");
    for k in ["DB_PASSWORD", "JWT_SECRET", "POSTGRES_PASSWORD"] {
        let v = value(&env, k).expect("set");
        assert_eq!(v.len(), 32);
        assert!(policy(&v), "{k}={v}");
        assert!(!text.contains(&v), "the value of {k} is in the output");
        assert!(!r.content.iter().any(|c| format!("{c:?}").contains(&v)));
    }
    let pg = out["keys_set"]
        .as_array()
        .expect("set")
        .iter()
        .find(|k| k["key"] == "POSTGRES_PASSWORD")
        .expect("pg")
        .clone();
    assert!(
        pg["why"].as_str().expect("why").contains("env_file"),
        "{pg:#}"
    );
    // The audit line has no value either.
    let audit = std::fs::read_to_string(dir.path().join(".stackpilot/audit.jsonl")).expect("audit");
    for k in ["DB_PASSWORD", "JWT_SECRET", "POSTGRES_PASSWORD"] {
        assert!(!audit.contains(&value(&env, k).expect("v")));
    }

    // Again: everything is there, nothing changes.
    let again = structured(&call(&client, "init_env", json!({})).await);
    assert_eq!(keys(&again, "keys_set"), Vec::<String>::new());
    assert_eq!(
        keys(&again, "kept"),
        ["DB_PASSWORD", "JWT_SECRET", "POSTGRES_PASSWORD"]
    );
    assert_eq!(env_of(&dir), env, "nothing rewritten");
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn an_existing_value_is_kept_and_bad_input_changes_nothing() {
    let before = "# my settings\nDB_PASSWORD=keep-me-123\nJWT_SECRET=\nMODE=dev\n";
    let dir = stack(Some(before));
    std::fs::set_permissions(
        dir.path().join(".env"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let client = stdio_client(dir.path(), &[], TestClient::new(Person::Absent, ERA)).await;

    for (args, field) in [
        (json!({"length": 4}), "length"),
        (json!({"length": 1000}), "length"),
        (json!({"keys": []}), "keys"),
        (json!({"keys": ["JWT_SECRET", "PATH"]}), "keys[1]"),
        (json!({"value": "x"}), "value"),
    ] {
        let r = call(&client, "init_env", args.clone()).await;
        assert!(is_error(&r), "{args}");
        assert_eq!(structured(&r)["error"]["field"], field, "{args}: {r:?}");
        assert_eq!(env_of(&dir), before, "{args}: nothing changed");
    }

    let out = structured(
        &call(
            &client,
            "init_env",
            json!({"length": 16, "keys": ["JWT_SECRET", "DB_PASSWORD"]}),
        )
        .await,
    );
    assert_eq!(keys(&out, "keys_set"), ["JWT_SECRET"]);
    assert_eq!(out["keys_set"][0]["was_empty"], true);
    assert_eq!(keys(&out, "kept"), ["DB_PASSWORD"]);
    let env = env_of(&dir);
    assert_eq!(
        value(&env, "DB_PASSWORD").as_deref(),
        Some("keep-me-123"),
        "kept"
    );
    let jwt = value(&env, "JWT_SECRET").expect("jwt");
    assert_eq!(jwt.len(), 16);
    assert!(policy(&jwt));
    assert!(
        env.starts_with("# my settings\nDB_PASSWORD=keep-me-123\nJWT_SECRET="),
        "{env}"
    );
    assert!(env.contains("MODE=dev"));
    assert_eq!(value(&env, "POSTGRES_PASSWORD"), None, "not asked for");
    let mode = std::fs::metadata(dir.path().join(".env"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "written with mode 0600");
    client.cancel().await.expect("close");

    // Under --read-only the mutating day-2 tools are not listed and cannot be called.
    let ro = stdio_client(
        dir.path(),
        &["--read-only"],
        TestClient::new(Person::Absent, ERA),
    )
    .await;
    let names: Vec<String> = ro
        .list_all_tools()
        .await
        .expect("tools")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(names.contains(&"logs".to_string()), "{names:?}");
    for hidden in ["init_env", "deploy", "rollback", "run_task"] {
        assert!(
            !names.contains(&hidden.to_string()),
            "{hidden} listed: {names:?}"
        );
    }
    let r = call(&ro, "init_env", json!({})).await;
    assert!(is_error(&r));
    assert_eq!(structured(&r)["error"]["kind"], "not_allowed");
    assert_eq!(env_of(&dir), env);
    ro.cancel().await.expect("close");
}
