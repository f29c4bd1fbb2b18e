//! The built binary, driven by an independent client: the official MCP Python
//! SDK (`mcp` on PyPI), over stdio and Streamable HTTP, in both protocol eras.
//! The suite itself is tests/python (pytest); this test makes its virtual
//! environment at target/pyenv and runs it.
//!
//! Without python3, `python3 -m venv` or PyPI the suite is skipped with a
//! message, except under CI=true, where that is a failure.
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The suite takes about 10 s; this only stops a hung run.
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);
/// The venv's copy of the requirements it was built from.
const MARKER: &str = "stackpilot-requirements.txt";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn run(cmd: &mut Command) -> Result<Output, String> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))
}

fn venv_python(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

/// The venv is current when it was built from these exact requirements and
/// its interpreter still imports what the suite needs.
fn venv_is_current(venv: &Path, requirements: &str) -> bool {
    let marker_matches =
        std::fs::read_to_string(venv.join(MARKER)).is_ok_and(|m| m == requirements);
    marker_matches
        && run(Command::new(venv_python(venv)).args(["-c", "import mcp, pytest, jsonschema, httpx"]))
            .is_ok_and(|o| o.status.success())
}

/// Makes (or reuses) target/pyenv with tests/python/requirements.txt installed.
fn ensure_venv() -> Result<PathBuf, String> {
    let root = root();
    let venv = root.join("target").join("pyenv");
    let req_path = root.join("tests/python/requirements.txt");
    let requirements = std::fs::read_to_string(&req_path)
        .map_err(|e| format!("cannot read {}: {e}", req_path.display()))?;
    if venv_is_current(&venv, &requirements) {
        return Ok(venv);
    }

    let version = run(Command::new("python3").args([
        "-c",
        "import sys; print('%d.%d' % sys.version_info[:2]); sys.exit(sys.version_info < (3, 10))",
    ]))
    .map_err(|e| format!("python3 is not available ({e})"))?;
    if !version.status.success() {
        return Err(format!(
            "python3 is {} but the mcp SDK needs 3.10 or later",
            String::from_utf8_lossy(&version.stdout).trim()
        ));
    }

    eprintln!(
        "python_sdk: building {} (pip install -r {})",
        venv.display(),
        req_path.display()
    );
    if venv.exists() {
        std::fs::remove_dir_all(&venv)
            .map_err(|e| format!("cannot remove the stale {}: {e}", venv.display()))?;
    }
    let made = run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    if !made.status.success() {
        return Err(format!(
            "`python3 -m venv` failed (on Debian: apt-get install python3-venv):\n{}",
            tail(&made.stderr, 20)
        ));
    }
    let installed = run(Command::new(venv_python(&venv))
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            "-r",
        ])
        .arg(&req_path))?;
    if !installed.status.success() {
        return Err(format!(
            "pip install -r {} failed (is PyPI reachable?):\n{}\n{}",
            req_path.display(),
            tail(&installed.stdout, 20),
            tail(&installed.stderr, 40)
        ));
    }
    std::fs::write(venv.join(MARKER), &requirements)
        .map_err(|e| format!("cannot write the venv marker: {e}"))?;
    Ok(venv)
}

#[test]
fn python_sdk_client_suite() {
    let venv = match ensure_venv() {
        Ok(v) => v,
        Err(why) => {
            if in_ci() {
                panic!("the Python SDK suite must run under CI=true, but: {why}");
            }
            eprintln!("python_sdk: SKIPPED, {why}");
            return;
        }
    };

    // Output goes straight to the terminal (not captured), so a slow or
    // failing suite is visible as it runs.
    let started = Instant::now();
    let mut child = Command::new(venv_python(&venv))
        .args(["-m", "pytest", "tests/python", "-q"])
        .current_dir(root())
        // STACKPILOT_TEST_BIN: as in tests/common::bin(), a copy of this checkout's binary.
        .env(
            "STACKPILOT_BIN",
            std::env::var("STACKPILOT_TEST_BIN")
                .ok()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_stackpilot").to_string()),
        )
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("STACKPILOT_CONFIRM_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start pytest");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for pytest") {
            break status;
        }
        if started.elapsed() > SUITE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the Python SDK suite ran past {SUITE_TIMEOUT:?} and was stopped");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "the Python SDK suite (pytest tests/python) failed: {status}; its output is above"
    );
    eprintln!("python_sdk: passed in {:.1?}", started.elapsed());
}
