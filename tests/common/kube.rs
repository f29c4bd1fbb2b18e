//! Kubernetes test helpers: the test cluster scripts/peers/kube.sh runs (a
//! real kube-apiserver v1.35.8 and a real kubelet on 127.0.0.1), its tools
//! (kubectl, helm, kubernetes-validate), a throwaway namespace per test
//! (deleted on drop), and copies of tests/stacks/kube with unique project names.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::root;

const CACHE: &str = "/var/cache/stackpilot-peers";

/// The running cluster, as `kube.sh env` describes it.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub kubeconfig: String,
    pub context: String,
    pub kubectl: String,
}

fn env_file() -> Option<std::collections::BTreeMap<String, String>> {
    let text = std::fs::read_to_string("/run/stackpilot-kube/env").ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// The cluster, or None with the reason printed (outside CI); under CI=true a
/// missing cluster fails the test.
pub fn cluster() -> Option<Cluster> {
    let env = env_file().filter(|e| e.contains_key("KUBECONFIG"));
    let ok = env.as_ref().is_some_and(|e| {
        Command::new(&e["STACKPILOT_KUBECTL"])
            .env("KUBECONFIG", &e["KUBECONFIG"])
            .args(["get", "--raw", "/readyz"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    if let (true, Some(e)) = (ok, env) {
        return Some(Cluster {
            kubeconfig: e["KUBECONFIG"].clone(),
            context: e["STACKPILOT_KUBE_CONTEXT"].clone(),
            kubectl: e["STACKPILOT_KUBECTL"].clone(),
        });
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: the Kubernetes test cluster is not running (scripts/test.sh starts it with scripts/peers/kube.sh)"
    );
    eprintln!("skipped: no Kubernetes test cluster (scripts/peers/kube.sh build && scripts/peers/kube.sh start)");
    None
}

/// A built tool from the peers cache (kubernetes-validate, helm), or None with the reason.
pub fn tool(var: &str, cached: &str) -> Option<String> {
    let path = std::env::var(var)
        .ok()
        .or_else(|| env_file().and_then(|e| e.get(var).cloned()))
        .unwrap_or_else(|| format!("{CACHE}/{cached}"));
    if Path::new(&path).is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: {var} ({path}) is missing: scripts/peers/kube.sh build makes it"
    );
    eprintln!("skipped: {path} is missing (scripts/peers/kube.sh build)");
    None
}

pub fn validate_bin() -> Option<String> {
    tool(
        "STACKPILOT_KUBERNETES_VALIDATE",
        "kubernetes-validate-1.37.0/venv/bin/kubernetes-validate",
    )
}

pub fn helm_bin() -> Option<String> {
    tool("STACKPILOT_HELM", "helm-v3.22.0/bin/helm")
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    )
}

/// A namespace of its own, deleted (without waiting) when dropped.
pub struct Namespace {
    pub name: String,
    pub cluster: Cluster,
}

impl Namespace {
    pub fn new(cluster: &Cluster) -> Self {
        Self {
            name: unique("sptest"),
            cluster: cluster.clone(),
        }
    }

    /// kubectl in this namespace.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(&self.cluster.kubectl)
            .env("KUBECONFIG", &self.cluster.kubeconfig)
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// kubectl's stdout, asserting success.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        assert!(
            o.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// One object as JSON.
    pub fn get(&self, what: &str) -> serde_json::Value {
        serde_json::from_str(&self.kubectl_ok(&["get", what, "-o", "json"])).expect("kubectl json")
    }

    /// The server flags for a stackpilot targeting this namespace.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--target".into(),
            "kubernetes".into(),
            "--context".into(),
            self.cluster.context.clone(),
            "--namespace".into(),
            self.name.clone(),
        ]
    }

    pub fn env(&self) -> Vec<(&str, &str)> {
        vec![("KUBECONFIG", self.cluster.kubeconfig.as_str())]
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new(&self.cluster.kubectl)
            .env("KUBECONFIG", &self.cluster.kubeconfig)
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
    }
}

/// A copy of tests/stacks/<name> with a unique project name.
pub struct KubeStack {
    pub dir: tempfile::TempDir,
    pub project: String,
}

impl KubeStack {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(&root().join("tests/stacks").join(name), dir.path());
        let project = unique("kt");
        let env_path = dir.path().join(".env");
        let env = std::fs::read_to_string(&env_path).unwrap_or_default();
        let mut out: String = env
            .lines()
            .filter(|l| !l.starts_with("COMPOSE_PROJECT_NAME="))
            .map(|l| format!("{l}\n"))
            .collect();
        out.push_str(&format!("COMPOSE_PROJECT_NAME={project}\n"));
        std::fs::write(&env_path, out).expect(".env");
        Self { dir, project }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn set_env(&self, key: &str, value: &str) {
        let p = self.path().join(".env");
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with(&format!("{key}=")))
            .map(str::to_string)
            .collect();
        lines.push(format!("{key}={value}"));
        std::fs::write(&p, lines.join("\n") + "\n").expect(".env");
    }

    pub fn edit_compose(&self, from: &str, to: &str) {
        let p = self.path().join("docker-compose.yml");
        let text = std::fs::read_to_string(&p).expect("compose");
        assert!(text.contains(from), "compose file has `{from}`");
        std::fs::write(&p, text.replace(from, to)).expect("compose");
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target: PathBuf = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
