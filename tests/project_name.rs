//! stackpilot names the compose project exactly as Compose does: a compose
//! file's top-level `name:` (interpolated from .env), COMPOSE_PROJECT_NAME in
//! .env overriding it, and the directory's name when neither is set. Each
//! case is checked against the real `docker compose config --format json`
//! run in the same directory, and one against a stack brought up by
//! `docker compose` itself, which stack_status must then see.
mod common;

use std::path::Path;
use std::process::Command;

use common::docker::engine;
use serde_json::Value;

/// Compose's own answer: `config --format json` in the directory, no `-p`.
fn compose_name(dir: &Path, host: &str) -> String {
    let out = Command::new("docker")
        .env("DOCKER_HOST", host)
        .env_remove("COMPOSE_PROJECT_NAME")
        .current_dir(dir)
        .args(["compose", "config", "--format", "json"])
        .output()
        .expect("docker compose config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    v["name"].as_str().expect("name").to_string()
}

/// stackpilot's answer, through the CLI's stack_status.
fn stackpilot_status(dir: &Path, host: &str) -> Value {
    let out = Command::new(common::bin())
        .env("DOCKER_HOST", host)
        .env_remove("COMPOSE_PROJECT_NAME")
        .args(["--stack"])
        .arg(dir)
        .args(["stack-status", "--json"])
        .output()
        .expect("stackpilot stack-status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn busybox() -> String {
    std::env::var("STACKPILOT_TEST_BUSYBOX_IMAGE")
        .unwrap_or_else(|_| "stackpilot-test/busybox:1".into())
}

/// A stack directory named `dir_name` with a compose file (with `name_line`
/// on top when given) and an .env.
fn stack(parent: &Path, dir_name: &str, name_line: Option<&str>, env: &str) -> std::path::PathBuf {
    let dir = parent.join(dir_name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let compose = format!(
        "{}services:\n  web:\n    image: {}\n    pull_policy: never\n    command: [\"sleep\", \"600\"]\n",
        name_line.map(|n| format!("{n}\n")).unwrap_or_default(),
        busybox()
    );
    std::fs::write(dir.join("compose.yaml"), compose).expect("compose");
    std::fs::write(dir.join(".env"), env).expect(".env");
    dir
}

#[test]
fn the_project_name_is_composes_in_every_case() {
    let Some(host) = engine() else { return };
    let parent = tempfile::tempdir().expect("tempdir");
    let unique = std::process::id();
    let cases = [
        (
            "top-level name",
            format!("spname-a{unique}"),
            Some(format!("name: realname{unique}")),
            String::new(),
            format!("realname{unique}"),
        ),
        (
            "name interpolated from .env",
            format!("spname-b{unique}"),
            Some("name: ${STACK_NAME:-fallback}".to_string()),
            format!("STACK_NAME=fromenv{unique}\n"),
            format!("fromenv{unique}"),
        ),
        (
            "interpolation default",
            format!("spname-c{unique}"),
            Some("name: ${STACK_NAME:-fallback}".to_string()),
            String::new(),
            "fallback".to_string(),
        ),
        (
            "COMPOSE_PROJECT_NAME in .env overrides name:",
            format!("spname-d{unique}"),
            Some(format!("name: realname{unique}")),
            format!("COMPOSE_PROJECT_NAME=override{unique}\n"),
            format!("override{unique}"),
        ),
        (
            "neither: the directory",
            format!("SpName-E.{unique}"),
            None,
            String::new(),
            format!("spname-e{unique}"),
        ),
    ];
    for (what, dir_name, name_line, env, want) in cases {
        let dir = stack(parent.path(), &dir_name, name_line.as_deref(), &env);
        let compose = compose_name(&dir, &host);
        assert_eq!(compose, want, "{what}: compose's own name");
        let status = stackpilot_status(&dir, &host);
        assert_eq!(
            status["project"], compose,
            "{what}: stackpilot agrees with compose"
        );
    }
}

#[test]
fn a_stack_compose_started_under_its_own_name_is_the_one_stackpilot_sees() {
    let Some(host) = engine() else { return };
    let parent = tempfile::tempdir().expect("tempdir");
    let unique = std::process::id();
    let dir = stack(
        parent.path(),
        "mydir",
        Some(&format!("name: realname-up{unique}")),
        "",
    );
    let up = Command::new("docker")
        .env("DOCKER_HOST", &host)
        .current_dir(&dir)
        .args(["compose", "up", "-d"])
        .output()
        .expect("compose up");
    // Down in every case, also when an assertion below fails.
    struct Down<'a>(&'a Path, &'a str);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = Command::new("docker")
                .env("DOCKER_HOST", self.1)
                .current_dir(self.0)
                .args(["compose", "down", "--timeout", "1"])
                .output();
        }
    }
    let _down = Down(&dir, &host);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let status = stackpilot_status(&dir, &host);
    assert_eq!(status["project"], format!("realname-up{unique}"));
    let services = status["services"].as_array().expect("services");
    assert_eq!(services.len(), 1, "{status:#}");
    assert_eq!(services[0]["service"], "web");
    assert_eq!(services[0]["state"], "running");
}
