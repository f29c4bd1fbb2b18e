//! The CLI mirror: same operations, same structured output, exit codes, and
//! the cross-process stack lock.
mod common;

use std::process::Command;

use common::*;
use rmcp::model::ProtocolVersion;
use serde_json::{json, Value};

fn cli(stack: &TestStack, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(bin())
        .args(args)
        .arg("--stack")
        .arg(stack.path())
        .env("DOCKER_HOST", "unix:///tmp/stackpilot-test-no-docker.sock")
        .env("OLLAMA_HOST", "http://127.0.0.1:9")
        .output()
        .expect("run stackpilot");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&out.stderr).to_string() + &stdout,
    )
}

const HW: &str = r#"{"nvidia_vram_bytes":17179869184,"nvidia_compute_capability":"8.9","memory_total_bytes":68719476736,"memory_available_bytes":60000000000,"logical_cores":16}"#;

#[test]
fn tools_folder_matches_the_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = Command::new(bin())
        .args(["tools", "export"])
        .arg(dir.path())
        .status()
        .expect("export");
    assert!(status.success());
    let mut exported: Vec<String> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    exported.sort();
    let mut committed: Vec<String> = std::fs::read_dir(root().join("tools"))
        .expect("tools/ exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    committed.sort();
    assert_eq!(
        exported, committed,
        "tools/ lists exactly the tools in the code; run `stackpilot tools export tools`"
    );
    for name in exported {
        let a = std::fs::read_to_string(dir.path().join(&name)).expect("exported");
        let b = std::fs::read_to_string(root().join("tools").join(&name)).expect("committed");
        assert_eq!(
            a, b,
            "tools/{name} differs from the code; run `stackpilot tools export tools`"
        );
    }
}

#[tokio::test]
async fn json_output_is_the_tools_structured_output() {
    let stack = TestStack::new("");
    let (code, cli_out, all) = cli(
        &stack,
        &[
            "select-profile",
            "--json",
            "--model",
            "llama3.1:8b",
            "--context-length",
            "131072",
            "--hardware",
            HW,
        ],
    );
    assert_eq!(code, 0, "{all}");
    let client = stdio_client(
        stack.path(),
        &[],
        TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25),
    )
    .await;
    let hw: Value = serde_json::from_str(HW).expect("hw");
    let mcp_out = structured(
        &call(
            &client,
            "select_profile",
            json!({"model": "llama3.1:8b", "context_length": 131072, "hardware": hw}),
        )
        .await,
    );
    assert_eq!(cli_out, mcp_out);
    client.cancel().await.expect("close");

    // The human form is a table naming the same facts.
    let (code, _, text) = cli(
        &stack,
        &[
            "select-profile",
            "--model",
            "llama3.1:8b",
            "--context-length",
            "131072",
            "--hardware",
            HW,
        ],
    );
    assert_eq!(code, 0);
    assert!(
        text.contains("KV cache") && text.contains("q8_0") && text.contains("GiB"),
        "{text}"
    );
    let (code, hw, _) = cli(&stack, &["detect-hardware", "--json"]);
    assert_eq!(code, 0);
    assert!(hw["cpu"]["logical_cores"].as_u64().is_some_and(|n| n >= 1));
}

#[test]
fn exit_codes_and_confirmation() {
    let stack = TestStack::new("OLLAMA_KV_CACHE_TYPE=f16\n");
    // Bad input: exit 1, the error names the field.
    let (code, out, _) = cli(
        &stack,
        &[
            "select-profile",
            "--json",
            "--model",
            "llama3.1:8b",
            "--kv-cache-types",
            "q5",
        ],
    );
    assert_eq!(code, 1);
    assert_eq!(out["error"]["field"], "kv_cache_types[0]");
    // Unknown command: usage error.
    let (code, _, text) = cli(&stack, &["launch-missiles"]);
    assert_eq!(code, 2);
    assert!(text.contains("select-profile"), "{text}");
    // Destructive without --yes: exit 3, nothing changed, a token offered.
    let args = [
        "select-profile",
        "--json",
        "--model",
        "llama3.1:8b",
        "--context-length",
        "131072",
        "--hardware",
        HW,
        "--write-env",
    ];
    let (code, out, _) = cli(&stack, &args);
    assert_eq!(code, 3);
    assert_eq!(out["confirmation_required"], true);
    assert_eq!(stack.env_text(), "OLLAMA_KV_CACHE_TYPE=f16\n");
    // With the token: applied.
    let token = out["confirm_token"].as_str().expect("token").to_string();
    let mut with_token = args.to_vec();
    with_token.extend(["--confirm-token", &token]);
    let (code, out, all) = cli(&stack, &with_token);
    assert_eq!(code, 0, "{all}");
    assert_eq!(out["env_file"]["confirmed_by"], "token");
    // --yes confirms on the command line.
    std::fs::write(stack.path().join(".env"), "OLLAMA_KV_CACHE_TYPE=f16\n").expect("reset");
    let mut yes = args.to_vec();
    yes.push("--yes");
    let (code, out, _) = cli(&stack, &yes);
    assert_eq!(code, 0);
    assert_eq!(out["env_file"]["confirmed_by"], "cli_yes");
    assert!(stack.env_text().contains("OLLAMA_KV_CACHE_TYPE=q8_0"));
    let audit = stack.audit_lines();
    assert_eq!(audit.last().expect("audit")["confirmation"], "cli_yes");
    assert_eq!(audit.last().expect("audit")["transport"], "cli");
}

#[test]
fn the_stack_lock_serializes_processes_and_survives_a_crashed_holder() {
    let stack = TestStack::new("");
    let state = stack.path().join(".stackpilot");
    std::fs::create_dir_all(&state).expect("state dir");
    let args = [
        "select-profile",
        "--json",
        "--model",
        "llama3.1:8b",
        "--hardware",
        HW,
        "--write-env",
        "--lock-timeout-s",
        "1",
    ];

    // Another process holds the lock: busy after the timeout, naming it.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state.join("lock"))
        .expect("open");
    lock.lock().expect("hold the lock");
    std::fs::write(
        state.join("lock.holder"),
        r#"{"pid":1,"operation":"compose_up","since":"2026-01-01T00:00:00Z"}"#,
    )
    .expect("holder");
    let started = std::time::Instant::now();
    let (code, out, _) = cli(&stack, &args);
    assert_eq!(code, 1);
    assert_eq!(out["error"]["kind"], "busy");
    assert!(out["error"]["message"]
        .as_str()
        .expect("msg")
        .contains("compose_up"));
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert_eq!(stack.env_text(), "", "nothing written while locked");
    drop(lock);

    // A holder that dies (SIGKILL) leaves no stale lock.
    let mut holder = Command::new("flock")
        .arg("-o")
        .arg(state.join("lock"))
        .args(["sleep", "60"])
        .spawn()
        .expect("flock");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (code, _, _) = cli(&stack, &args);
    assert_eq!(code, 1, "held by the flock process");
    holder.kill().expect("kill -9 the holder");
    holder.wait().expect("reap");
    let (code, out, all) = cli(&stack, &args);
    assert_eq!(code, 0, "{all}");
    assert_eq!(out["env_file"]["written"], true);
}

/// Runs the CLI with stdout and stderr apart (no terminal).
fn cli_split(stack: &TestStack, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .arg("--stack")
        .arg(stack.path())
        .env("DOCKER_HOST", "unix:///tmp/stackpilot-test-no-docker.sock")
        .env("OLLAMA_HOST", "http://127.0.0.1:9");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run stackpilot");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A run of digits as long as a raw byte count (`74567720960`).
fn has_raw_byte_count(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_digit())
        .any(|run| run.len() >= 9)
}

#[test]
fn a_person_reads_units_aligned_fields_and_one_sentence_errors() {
    let stack = TestStack::new("OLLAMA_KV_CACHE_TYPE=f16\n");
    // Sizes in binary units, never raw byte counts; the exact output stays in --json.
    let (code, out, _) = cli_split(&stack, &["detect-hardware"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("GiB available of"), "{out}");
    assert!(!has_raw_byte_count(&out), "{out}");
    let labels: Vec<usize> = out
        .lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            l.find("  ")
                .map(|i| i + l[i..].len() - l[i..].trim_start().len())
        })
        .collect();
    assert!(
        labels.windows(2).all(|w| w[0] == w[1]),
        "values start in one column: {out}"
    );
    let (_, json, _) = cli_split(&stack, &["detect-hardware", "--json"], &[]);
    let v: Value = serde_json::from_str(&json).expect("--json is JSON");
    assert!(v["memory"]["total_bytes"]
        .as_u64()
        .is_some_and(|n| n > 1 << 20));

    // A refused call: one sentence on stderr with the allowed values, nothing on stdout.
    let (code, out, err) = cli_split(
        &stack,
        &[
            "select-profile",
            "--model",
            "llama3.1:8b",
            "--kv-cache-types",
            "q5",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(out, "", "nothing on stdout");
    assert_eq!(
        err.trim_end(),
        "error: invalid `kv_cache_types[0]`: unknown variant `q5` (allowed: f16, q8_0, q4_0)."
    );

    // A plan that needs confirmation: its steps as a table, exit 3, the way on named.
    let (code, out, err) = cli_split(
        &stack,
        &[
            "select-profile",
            "--model",
            "llama3.1:8b",
            "--context-length",
            "131072",
            "--hardware",
            HW,
            "--write-env",
        ],
        &[],
    );
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("nothing was changed"), "{out}");
    assert!(out.contains("ACTION") && out.contains("TARGET"), "{out}");
    assert!(err.contains("--confirm-token"), "{err}");
    assert_eq!(stack.env_text(), "OLLAMA_KV_CACHE_TYPE=f16\n");
}

/// The Ollama stand-in (tests/ollama_standin) serving one model whose pull
/// takes about two seconds.
struct Standin {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn standin() -> Standin {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let cat = dir.path().join("catalogue.json");
    std::fs::write(
        &cat,
        json!({"models": [{"name": "tiny:3b", "layer_count": 2, "layer_size": 200_000_000u64,
                           "rate_bytes_per_sec": 200_000_000u64}]})
        .to_string(),
    )
    .expect("catalogue");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ollama-standin"))
        .args(["--listen", "127.0.0.1:0", "--catalogue"])
        .arg(&cat)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ollama-standin");
    let stdout = child.stdout.take().expect("stdout");
    let url = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("ollama-standin listening on ")
                .map(|u| u.trim().to_string())
        })
        .expect("the stand-in listens");
    Standin {
        child,
        url,
        _dir: dir,
    }
}

#[test]
fn progress_is_a_bar_in_a_terminal_and_calm_lines_in_a_log() {
    let stack = TestStack::new("");
    let pull = ["pull-model", "--model", "tiny:3b", "--force"];
    // One stand-in per run: a second pull from the same one would resume at once.
    let ollama = standin();

    // Not a terminal: plain lines on stderr, with sizes, rate and ETA.
    let (code, out, err) = cli_split(&stack, &pull, &[("OLLAMA_HOST", ollama.url.as_str())]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("pull_model: "))
        .collect();
    assert!(!lines.is_empty(), "{err}");
    assert!(lines.len() <= 20, "at most about one line a second: {err}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" of ") && l.contains("/s") && l.contains("ETA")),
        "{err}"
    );
    assert!(out.contains("transferred") && out.contains("MiB"), "{out}");
    assert!(
        !err.contains('\r') && !err.contains('\u{1b}'),
        "no terminal codes in a log"
    );

    // A terminal (a pty from `script`): an indicatif bar with rate and ETA, cleared at the end.
    let ollama = standin();
    let mut shell = format!("{} {}", bin(), pull.join(" "));
    shell.push_str(&format!(" --stack {}", stack.path().display()));
    let out = Command::new("script")
        .args(["-qfec", &shell, "/dev/null"])
        .env("DOCKER_HOST", "unix:///tmp/stackpilot-test-no-docker.sock")
        .env("OLLAMA_HOST", &ollama.url)
        .env("COLUMNS", "120")
        .env("TERM", "xterm")
        .output()
        .expect("run under script(1)");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.contains("[=") && screen.contains("ETA"),
        "a bar: {screen}"
    );
    assert!(screen.contains("MiB/s"), "a rate: {screen}");
    assert!(
        !screen.contains("pull_model: "),
        "no plain lines on a terminal: {screen}"
    );
    assert!(
        screen.contains("transferred"),
        "the result after the bar: {screen}"
    );
}
