//! Docker test helpers: find the engine scripts/test-env.sh started, and
//! bring test stacks up in throwaway copies with their own ports and project
//! names, removed afterwards (also when the test fails).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::root;

/// DOCKER_HOST for the tests: the environment's, else the one
/// scripts/test-env.sh recorded. `None` (with the reason printed) when no
/// engine answers outside CI; under CI=true a missing engine fails the test.
pub fn engine() -> Option<String> {
    let from_file = std::fs::read_to_string("/run/stackpilot-test/env")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("export DOCKER_HOST="))
                .map(str::to_string)
        });
    let host = std::env::var("DOCKER_HOST").ok().or(from_file);
    let mut cmd = Command::new("docker");
    if let Some(h) = &host {
        cmd.env("DOCKER_HOST", h);
    }
    let ok = cmd
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Some(host.unwrap_or_else(|| "unix:///var/run/docker.sock".into()));
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "no Docker engine answers (DOCKER_HOST={host:?}); scripts/test-env.sh must start one under CI"
    );
    eprintln!("skipped: no Docker engine (run scripts/test-env.sh to start one)");
    None
}

/// A free TCP port on 127.0.0.1 (the OS picks it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A copy of tests/stacks/<name> in a temp dir, with a unique project name
/// and fresh host ports (every `*_PORT` key of its .env), torn down on drop.
pub struct DockerStack {
    pub dir: tempfile::TempDir,
    pub project: String,
    pub docker_host: String,
}

/// Copies a directory tree (files and subdirectories; `backups/` and
/// `.stackpilot/` left behind).
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("create dir");
    for entry in std::fs::read_dir(src).expect("source dir exists") {
        let entry = entry.expect("entry");
        let kind = entry.file_type().expect("type");
        let name = entry.file_name();
        if kind.is_dir() && name != "backups" && name != ".stackpilot" {
            copy_tree(&entry.path(), &dst.join(&name));
        } else if kind.is_file() {
            std::fs::copy(entry.path(), dst.join(&name)).expect("copy");
        }
    }
}

impl DockerStack {
    pub fn new(name: &str, docker_host: &str) -> Self {
        Self::from_dir(&root().join("tests/stacks").join(name), name, docker_host)
    }

    /// A copy of any stack directory (subdirectories included), named like `new`'s.
    pub fn from_dir(src: &Path, name: &str, docker_host: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_tree(src, dir.path());
        let unique = format!(
            "sptest-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let env_path = dir.path().join(".env");
        let env = std::fs::read_to_string(&env_path).unwrap_or_default();
        let mut out = String::new();
        for line in env.lines() {
            match line.split_once('=') {
                Some((k, _)) if k.ends_with("_PORT") && !k.starts_with('#') => {
                    out.push_str(&format!("{k}={}\n", free_port()))
                }
                _ => out.push_str(&format!("{line}\n")),
            }
        }
        out.push_str(&format!("COMPOSE_PROJECT_NAME={unique}\n"));
        std::fs::write(&env_path, out).expect("write .env");
        Self {
            dir,
            project: unique,
            docker_host: docker_host.to_string(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn env_value(&self, key: &str) -> Option<String> {
        std::fs::read_to_string(self.path().join(".env"))
            .ok()?
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
    }

    /// `docker compose` on this stack, the way a person would run it.
    pub fn compose(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .env("DOCKER_HOST", &self.docker_host)
            .arg("compose")
            .arg("--project-directory")
            .arg(self.path())
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("docker compose")
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .env("DOCKER_HOST", &self.docker_host)
            .args(args)
            .output()
            .expect("docker")
    }
}

impl Drop for DockerStack {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans", "--timeout", "1"]);
    }
}

pub fn stack_dir(name: &str) -> PathBuf {
    root().join("tests/stacks").join(name)
}

impl DockerStack {
    /// A stdio server on this stack that talks to the real engine.
    pub async fn client(&self, extra: &[&str], client: super::TestClient) -> super::Client {
        super::stdio_client_env(
            self.path(),
            extra,
            client,
            &[("DOCKER_HOST", self.docker_host.as_str())],
        )
        .await
    }

    /// An HTTP server on this stack that talks to the real engine.
    pub async fn http(&self, extra: &[&str]) -> super::HttpServer {
        super::http_server_env(
            self.path(),
            extra,
            &[("DOCKER_HOST", self.docker_host.as_str())],
        )
        .await
    }

    /// The PIDs of `docker compose ... up` processes of this project still running.
    pub fn compose_up_processes(&self) -> Vec<String> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.contains(&self.project) && args.iter().any(|a| a == "up") {
                found.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        found
    }

    /// Rewrites the copy's compose file (panics when `from` is not in it).
    pub fn edit_compose(&self, from: &str, to: &str) {
        let path = self.path().join("docker-compose.yml");
        let text = std::fs::read_to_string(&path).expect("compose file");
        assert!(text.contains(from), "compose file contains {from:?}");
        std::fs::write(&path, text.replace(from, to)).expect("write compose file");
    }

    /// Sets one key of the copy's .env (appended when absent).
    pub fn set_env(&self, key: &str, value: &str) {
        let path = self.path().join(".env");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut found = false;
        let mut out = String::new();
        for line in text.lines() {
            if line.starts_with(&format!("{key}=")) {
                out.push_str(&format!("{key}={value}\n"));
                found = true;
            } else {
                out.push_str(&format!("{line}\n"));
            }
        }
        if !found {
            out.push_str(&format!("{key}={value}\n"));
        }
        std::fs::write(&path, out).expect("write .env");
    }

    /// (container id, StartedAt) of each container of the project, by service.
    pub fn containers(&self) -> std::collections::BTreeMap<String, (String, String)> {
        let ids = self.docker(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
        ]);
        let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        let mut out = std::collections::BTreeMap::new();
        for id in ids {
            let o = self.docker(&[
                "inspect",
                "-f",
                "{{index .Config.Labels \"com.docker.compose.service\"}} {{.Id}} {{.State.StartedAt}}",
                &id,
            ]);
            let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
            let parts: Vec<&str> = text.split(' ').collect();
            if parts.len() == 3 {
                out.insert(
                    parts[0].to_string(),
                    (parts[1].to_string(), parts[2].to_string()),
                );
            }
        }
        out
    }

    /// Names of the project's resources of one kind (`container`, `network`, `volume`).
    pub fn resources(&self, kind: &str) -> Vec<String> {
        let filter = format!("label=com.docker.compose.project={}", self.project);
        let args: Vec<&str> = match kind {
            "container" => vec!["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"],
            "network" => vec![
                "network",
                "ls",
                "--filter",
                &filter,
                "--format",
                "{{.Name}}",
            ],
            _ => vec!["volume", "ls", "--filter", &filter, "--format", "{{.Name}}"],
        };
        let o = self.docker(&args);
        let mut names: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }
}
