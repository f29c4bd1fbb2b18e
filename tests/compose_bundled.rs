//! The bundled stack in compose/ is valid for every profile and follows the stack conventions.
//!
//! Runs the real `docker compose` v2 CLI (`config` needs no running engine). Without a docker
//! CLI with Compose v2 the test prints why it skips, except under `CI=true`, where it fails.
//! Uses only std and serde_json so it builds independently of the crate's own modules.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const PROFILES: &[&str] = &[
    "standard",
    "analysis",
    "cpu",
    "apple-metal",
    "worker",
    "ops",
];
const ROLES: &[&str] = &[
    "ollama", "postgres", "mongodb", "qdrant", "api", "worker", "volume",
];
const BACKUPS: &[&str] = &["pg_dump", "mongodump", "volume", "none"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn under_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

/// Keys set in .env.example: removed from the child's environment so that a developer's shell
/// (API_PORT=..., COMPOSE_PROFILES=...) cannot change what is being checked.
fn env_example_keys(env_file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(env_file).expect("read compose/.env.example");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
        .collect()
}

fn compose(args: &[&str]) -> Output {
    let root = repo();
    let env_file = root.join("compose/.env.example");
    let mut cmd = Command::new("docker");
    cmd.current_dir(&root)
        .arg("compose")
        .args(["--project-directory", "compose"])
        .args(["-f", "compose/docker-compose.yml"])
        .args(["--env-file", "compose/.env.example"])
        .args(args);
    for key in env_example_keys(&env_file) {
        cmd.env_remove(key);
    }
    for key in [
        "COMPOSE_FILE",
        "COMPOSE_PROFILES",
        "COMPOSE_PROJECT_NAME",
        "COMPOSE_ENV_FILES",
    ] {
        cmd.env_remove(key);
    }
    cmd.output().expect("spawn docker compose")
}

/// `Some(reason)` when there is no docker CLI with Compose v2.
fn compose_missing() -> Option<String> {
    match Command::new("docker")
        .args(["compose", "version", "--short"])
        .output()
    {
        Err(e) => Some(format!("cannot run `docker`: {e}")),
        Ok(out) if !out.status.success() => Some(format!(
            "`docker compose version` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(out) => {
            let v = String::from_utf8_lossy(&out.stdout)
                .trim()
                .trim_start_matches('v')
                .to_string();
            if v.starts_with("2.") {
                None
            } else {
                Some(format!("Compose v2 needed, found `{v}`"))
            }
        }
    }
}

/// Returns false (after printing why) when the test should be skipped.
fn compose_available() -> bool {
    match compose_missing() {
        None => true,
        Some(reason) if under_ci() => panic!(
            "CI=true but Docker Compose v2 is not available: {reason} (run scripts/test-env.sh)"
        ),
        Some(reason) => {
            eprintln!("SKIP compose_bundled: {reason}; run scripts/test-env.sh to install it");
            false
        }
    }
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn config_json(profile: &str) -> Value {
    let out = compose(&["--profile", profile, "config", "--format", "json"]);
    assert!(
        out.status.success(),
        "config --format json for profile {profile} failed:\n{}",
        stderr_of(&out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("profile {profile}: config JSON does not parse: {e}"))
}

fn has_memory_limit(svc: &Value) -> bool {
    let deploy = svc.pointer("/deploy/resources/limits/memory");
    let mem_limit = svc.get("mem_limit");
    [deploy, mem_limit].into_iter().flatten().any(|v| match v {
        Value::String(s) => !s.is_empty() && s != "0",
        Value::Number(n) => n.as_u64().unwrap_or(0) > 0,
        _ => false,
    })
}

fn check_service(profile: &str, name: &str, svc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut fail =
        |what: String| problems.push(format!("profile {profile}, service {name}: {what}"));

    match svc.get("healthcheck") {
        None => fail("no healthcheck".into()),
        Some(hc) => {
            if hc.get("disable").and_then(Value::as_bool) == Some(true) {
                fail("healthcheck disabled".into());
            }
            let test = hc
                .get("test")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if test.is_empty() || test[0] == "NONE" {
                fail(format!("healthcheck has no test: {hc}"));
            }
        }
    }

    match svc.get("restart").and_then(Value::as_str) {
        Some("always" | "unless-stopped" | "on-failure") => {}
        Some(s) if s.starts_with("on-failure:") => {}
        other => fail(format!("restart policy is {other:?}")),
    }

    for port in svc
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let host_ip = port.get("host_ip").and_then(Value::as_str);
        if host_ip != Some("127.0.0.1") {
            fail(format!("port not bound to 127.0.0.1 only: {port}"));
        }
    }

    if !has_memory_limit(svc) {
        fail("no memory limit (deploy.resources.limits.memory or mem_limit)".into());
    }

    let label = |key: &str| {
        svc.pointer(&format!("/labels/{}", key.replace('/', "~1")))
            .and_then(Value::as_str)
    };
    match label("io.stackpilot.role") {
        Some(role) if ROLES.contains(&role) => {}
        other => fail(format!("io.stackpilot.role label is {other:?}")),
    }
    if label("io.stackpilot.health").is_none_or(str::is_empty) {
        fail("no io.stackpilot.health label".into());
    }
    match label("io.stackpilot.backup") {
        Some(b) if BACKUPS.contains(&b) => {}
        other => fail(format!("io.stackpilot.backup label is {other:?}")),
    }
    problems
}

fn services(cfg: &Value) -> BTreeSet<String> {
    cfg.get("services")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn role_of<'a>(cfg: &'a Value, svc: &str) -> Option<&'a str> {
    cfg.pointer(&format!("/services/{svc}/labels/io.stackpilot.role"))
        .and_then(Value::as_str)
}

#[test]
fn bundled_stack_config_is_valid_for_every_profile() {
    if !compose_available() {
        return;
    }
    for profile in PROFILES {
        let out = compose(&["--profile", profile, "config", "--quiet"]);
        assert!(
            out.status.success(),
            "`config --quiet` for profile {profile} failed:\n{}",
            stderr_of(&out)
        );
    }
}

#[test]
fn bundled_stack_services_follow_the_conventions() {
    if !compose_available() {
        return;
    }
    let mut problems = Vec::new();
    for profile in PROFILES {
        let cfg = config_json(profile);
        let svcs = services(&cfg);
        assert!(!svcs.is_empty(), "profile {profile}: no services");
        for name in &svcs {
            problems.extend(check_service(
                profile,
                name,
                &cfg["services"][name.as_str()],
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "convention violations:\n{}",
        problems.join("\n")
    );
}

#[test]
fn bundled_stack_profiles_select_the_right_ollama() {
    if !compose_available() {
        return;
    }
    let always = ["api", "mongodb", "postgres", "qdrant"];
    for (profile, ollama) in [
        ("standard", Some("ollama-gpu")),
        ("analysis", Some("ollama-gpu")),
        ("cpu", Some("ollama-cpu")),
        ("apple-metal", None),
    ] {
        let cfg = config_json(profile);
        let svcs = services(&cfg);
        for s in always {
            assert!(svcs.contains(s), "profile {profile}: missing {s}");
        }
        assert!(
            !svcs.contains("worker") && !svcs.contains("stackpilot"),
            "profile {profile}: add-on services enabled: {svcs:?}"
        );
        let ollamas: Vec<&String> = svcs
            .iter()
            .filter(|s| role_of(&cfg, s) == Some("ollama"))
            .collect();
        match ollama {
            Some(expected) => {
                assert_eq!(
                    ollamas,
                    vec![expected],
                    "profile {profile}: services with role ollama"
                );
                let aliases =
                    cfg.pointer(&format!("/services/{expected}/networks/default/aliases"));
                assert!(
                    aliases
                        .and_then(Value::as_array)
                        .is_some_and(|a| a.iter().any(|v| v == "ollama")),
                    "profile {profile}: {expected} lacks the network alias `ollama`"
                );
                let gpu = cfg.pointer(&format!(
                    "/services/{expected}/deploy/resources/reservations/devices/0/driver"
                ));
                let wants_gpu = profile != "cpu";
                assert_eq!(
                    gpu.and_then(Value::as_str) == Some("nvidia"),
                    wants_gpu,
                    "profile {profile}: NVIDIA reservation on {expected}"
                );
                let env = &cfg["services"][expected]["environment"];
                for key in [
                    "OLLAMA_CONTEXT_LENGTH",
                    "OLLAMA_KV_CACHE_TYPE",
                    "OLLAMA_NUM_PARALLEL",
                    "OLLAMA_FLASH_ATTENTION",
                    "OLLAMA_MAX_LOADED_MODELS",
                    "OLLAMA_KEEP_ALIVE",
                ] {
                    assert!(
                        env.get(key).is_some(),
                        "profile {profile}: {expected} lacks {key}"
                    );
                }
            }
            None => {
                assert!(
                    ollamas.is_empty(),
                    "profile {profile}: no Ollama container expected, found {ollamas:?}"
                );
                let hosts = cfg.pointer("/services/api/extra_hosts");
                let text = hosts.map(Value::to_string).unwrap_or_default();
                assert!(
                    text.contains("host.docker.internal") && text.contains("host-gateway"),
                    "profile {profile}: api cannot reach the host's Ollama: {text}"
                );
            }
        }
    }
    assert!(
        services(&config_json("worker")).contains("worker"),
        "profile worker does not enable the worker"
    );
    let ops = config_json("ops");
    assert!(
        services(&ops).contains("stackpilot"),
        "profile ops does not enable stackpilot"
    );
    let cmd = ops
        .pointer("/services/stackpilot/command")
        .map(Value::to_string)
        .unwrap_or_default();
    assert!(
        cmd.contains("0.0.0.0:7331") && cmd.contains("/stack"),
        "stackpilot command: {cmd}"
    );
    assert!(
        ops.pointer("/services/stackpilot/environment/STACKPILOT_AUTH_TOKEN")
            .is_some(),
        "stackpilot in HTTP mode must get STACKPILOT_AUTH_TOKEN"
    );
}

#[test]
fn bundled_stack_keeps_stackpilot_blocks() {
    if !compose_available() {
        return;
    }
    // Top-level block survives the JSON form.
    let cfg = config_json("standard");
    let top = cfg
        .get("x-stackpilot")
        .expect("top-level x-stackpilot block");
    assert!(
        top.get("backup_root").and_then(Value::as_str).is_some(),
        "x-stackpilot.backup_root"
    );
    for key in ["keep_last", "keep_daily", "keep_weekly"] {
        assert!(
            top.pointer(&format!("/retention/{key}"))
                .and_then(Value::as_u64)
                .is_some(),
            "x-stackpilot.retention.{key}"
        );
    }
    // Service-level blocks survive only the YAML form: one per service (4-space indent).
    for profile in PROFILES {
        let out = compose(&["--profile", profile, "config"]);
        assert!(
            out.status.success(),
            "config (YAML) for profile {profile} failed:\n{}",
            stderr_of(&out)
        );
        let yaml = String::from_utf8_lossy(&out.stdout);
        let blocks = yaml.lines().filter(|l| *l == "    x-stackpilot:").count();
        let n = services(&config_json(profile)).len();
        assert_eq!(
            blocks, n,
            "profile {profile}: {n} services but {blocks} service-level x-stackpilot blocks"
        );
    }
}
