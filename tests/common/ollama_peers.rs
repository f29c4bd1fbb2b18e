//! The REAL Ollama 0.11.4 and the real registry that scripts/peers/ollama.sh prepares
//! (scripts/test-env.sh runs it), as the tests and benches use them: where they are (its env
//! file), a private `ollama serve` on a loopback port, and a throttling proxy that slows the
//! registry's blob downloads so a pull can be cancelled midway.
//!
//! Self-contained (no `super::`), so the benches include it with `#[path]`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What scripts/peers/ollama.sh wrote into its env file.
#[derive(Debug, Clone)]
pub struct OllamaPeers {
    /// The real `ollama` binary (0.11.4, built from its Go module).
    pub bin: PathBuf,
    /// What `/api/version` answers.
    pub version: String,
    /// `stackpilot-test/ollama:<version>` (only when a Docker engine answered).
    pub image: Option<String>,
    /// `stackpilot-test/registry:<version>`: the registry as a compose service (port 5000).
    pub registry_image: Option<String>,
    /// host:port of the registry on 127.0.0.1 (plain HTTP: pull with `insecure`).
    pub registry: String,
    /// host:port of the blob server the registry redirects blob GETs to.
    pub blobs: Option<String>,
    /// The registry binary (a test starts its own instance with another redirect target).
    pub registry_bin: Option<PathBuf>,
    /// `library/smollm2:135m`.
    pub model: String,
    /// The registry's storage (mount read-only at /var/lib/registry).
    pub data: PathBuf,
}

impl OllamaPeers {
    /// The seeded model as a host Ollama pulls it: `127.0.0.1:PORT/library/smollm2:135m`.
    pub fn host_model(&self) -> String {
        format!("{}/{}", self.registry, self.model)
    }
}

fn env_file_paths() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/run/stackpilot-test/peers-ollama.env")];
    // scripts/peers/ollama.sh as a non-root user writes to a per-user directory.
    if let Ok(uid) = std::fs::read_to_string("/proc/self/status").map(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next().map(str::to_string))
            .unwrap_or_default()
    }) {
        let base = std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into());
        v.push(PathBuf::from(format!(
            "{base}/stackpilot-test-{uid}/peers-ollama.env"
        )));
    }
    v
}

fn read_env_file() -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for p in env_file_paths() {
        if let Ok(text) = std::fs::read_to_string(&p) {
            for line in text.lines() {
                if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                    out.insert(k.to_string(), v.to_string());
                }
            }
            break;
        }
    }
    out
}

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Not available: a panic under CI=true (nothing may be skipped there), else a printed skip.
pub fn unavailable<T>(why: &str) -> Option<T> {
    assert!(
        !ci(),
        "CI=true: the real Ollama is required: {why} (scripts/test-env.sh runs scripts/peers/ollama.sh start)"
    );
    eprintln!("SKIP (real Ollama): {why}; run scripts/peers/ollama.sh start");
    None
}

/// The real Ollama and its registry, or None (with the reason printed) when
/// scripts/peers/ollama.sh has not prepared them; under CI=true that panics.
/// Values in the process environment win over the env file's.
pub fn ollama_peers() -> Option<OllamaPeers> {
    let file = read_env_file();
    let get = |k: &str| {
        std::env::var(k)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| file.get(k).cloned())
    };
    let Some(bin) = get("STACKPILOT_TEST_OLLAMA_BIN").map(PathBuf::from) else {
        return unavailable("no peers-ollama.env (STACKPILOT_TEST_OLLAMA_BIN unset)");
    };
    if !bin.is_file() {
        return unavailable(&format!("{} is missing", bin.display()));
    }
    let Some(registry) = get("STACKPILOT_TEST_REGISTRY") else {
        return unavailable("STACKPILOT_TEST_REGISTRY unset");
    };
    if std::net::TcpStream::connect_timeout(
        &registry
            .parse()
            .unwrap_or_else(|_| ([127, 0, 0, 1], 9).into()),
        Duration::from_secs(2),
    )
    .is_err()
    {
        return unavailable(&format!("the registry at {registry} does not answer"));
    }
    Some(OllamaPeers {
        bin,
        version: get("STACKPILOT_TEST_OLLAMA_VERSION").unwrap_or_default(),
        image: get("STACKPILOT_TEST_OLLAMA_IMAGE"),
        registry_image: get("STACKPILOT_TEST_REGISTRY_IMAGE"),
        registry,
        blobs: get("STACKPILOT_TEST_REGISTRY_BLOBS"),
        registry_bin: get("STACKPILOT_TEST_REGISTRY_BIN").map(PathBuf::from),
        model: get("STACKPILOT_TEST_REGISTRY_MODEL")
            .unwrap_or_else(|| "library/smollm2:135m".into()),
        data: get("STACKPILOT_TEST_REGISTRY_DATA").map(PathBuf::from)?,
    })
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A private `ollama serve` on a loopback port: its own models directory and
/// HOME (so its own key pair), its log in a file. Stopped with its runners on
/// drop (it leads its own process group; `ollama runner` has no parent-death
/// signal, so killing only the server would orphan a loaded model).
pub struct HostOllama {
    pub child: std::process::Child,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl HostOllama {
    /// Starts it with extra environment (`OLLAMA_KV_CACHE_TYPE`, ...) and waits
    /// until `/api/version` answers.
    pub async fn start(peers: &OllamaPeers, env: &[(&str, &str)]) -> Self {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new()
            .prefix("sp-ollama-")
            .tempdir_in(std::env::var("STACKPILOT_TEST_TMP").unwrap_or_else(|_| "/var/tmp".into()))
            .or_else(|_| tempfile::tempdir())
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("models")).expect("models dir");
        std::fs::create_dir_all(dir.path().join("home")).expect("home dir");
        let log = dir.path().join("serve.log");
        let port = free_port();
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut cmd = std::process::Command::new(&peers.bin);
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir.path().join("home"))
            .env("OLLAMA_HOST", format!("127.0.0.1:{port}"))
            .env("OLLAMA_MODELS", dir.path().join("models"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd.spawn().expect("spawn ollama serve");
        let url = format!("http://127.0.0.1:{port}");
        let me = Self {
            child,
            url,
            dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if reqwest::get(format!("{}/api/version", me.url))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return me;
            }
            assert!(
                Instant::now() < deadline,
                "ollama serve did not answer within 30 s: {}",
                me.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn models_dir(&self) -> PathBuf {
        self.dir.path().join("models")
    }

    /// Runs the `ollama` CLI against this server (same HOME and OLLAMA_HOST).
    pub fn cli(&self, peers: &OllamaPeers) -> std::process::Command {
        let mut cmd = std::process::Command::new(&peers.bin);
        cmd.env("HOME", self.dir.path().join("home"))
            .env("OLLAMA_HOST", self.url.trim_start_matches("http://"));
        cmd
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        reqwest::get(format!("{}{path}", self.url))
            .await
            .expect("ollama answers")
            .json()
            .await
            .expect("json")
    }

    /// `POST /api/generate` (non-streaming) with a JSON body; the whole answer.
    pub async fn generate(&self, body: serde_json::Value) -> serde_json::Value {
        let r = reqwest::Client::new()
            .post(format!("{}/api/generate", self.url))
            .json(&body)
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .expect("generate answered");
        let status = r.status();
        let v: serde_json::Value = r.json().await.expect("json");
        assert!(status.is_success(), "generate: HTTP {status}: {v}");
        v
    }

    pub async fn names(&self, path: &str) -> Vec<String> {
        self.get(path).await["models"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for HostOllama {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        let group = nix::unistd::Pid::from_raw(-pgid);
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever is left of the group (a runner that ignored TERM, the server).
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A TCP proxy on 127.0.0.1 that forwards to `upstream` and paces the bytes it
/// sends back at `bytes_per_sec` (the request direction is not slowed). It is
/// not an HTTP server: whatever the upstream answers passes through unchanged.
/// Counts the bytes it delivered, so a test can tell a resumed download from a
/// full one.
pub struct Throttle {
    pub port: u16,
    pub delivered: Arc<AtomicU64>,
    /// Bytes a second sent back; changed with `set_rate`, read per chunk.
    rate: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Throttle {
    pub async fn start(upstream: String, bytes_per_sec: u64) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let delivered = Arc::new(AtomicU64::new(0));
        let counter = delivered.clone();
        let rate = Arc::new(AtomicU64::new(bytes_per_sec.max(1)));
        let rate_in = rate.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let counter = counter.clone();
                let rate = rate_in.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                        let _ = sw.shutdown().await;
                    });
                    // Downstream in 16 KiB steps, each followed by the time it is worth.
                    let chunk = 16 * 1024usize;
                    let mut buf = vec![0u8; chunk];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        counter.fetch_add(n as u64, Ordering::Relaxed);
                        let bps = rate.load(Ordering::Relaxed).max(1) as f64;
                        tokio::time::sleep(Duration::from_secs_f64(n as f64 / bps)).await;
                    }
                    let _ = cw.shutdown().await;
                    up.abort();
                });
            }
        });
        Self {
            port,
            delivered,
            rate,
            task,
        }
    }

    pub fn set_rate(&self, bytes_per_sec: u64) {
        self.rate.store(bytes_per_sec.max(1), Ordering::Relaxed);
    }

    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A second instance of the real registry over the same (seeded) storage,
/// whose blob redirects go to `blobs_base` (e.g. a `Throttle` in front of the
/// blob server). Pulls only read the storage. Stopped on drop.
pub struct Registry {
    pub child: std::process::Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub async fn start(peers: &OllamaPeers, blobs_base: &str) -> Option<Self> {
        let Some(bin) = peers.registry_bin.clone().filter(|b| b.is_file()) else {
            return unavailable("STACKPILOT_TEST_REGISTRY_BIN is not in peers-ollama.env");
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  maintenance:\n    uploadpurging:\n      enabled: false\nmiddleware:\n  storage:\n    - name: redirect\n      options:\n        baseurl: {blobs_base}\nhttp:\n  addr: {addr}\n",
                peers.data.display()
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = std::process::Command::new(bin)
            .arg("serve")
            .arg(&config)
            .env("OTEL_TRACES_EXPORTER", "none")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn registry");
        let me = Self {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if reqwest::get(format!("http://{}/v2/", me.addr))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Some(me);
            }
            assert!(Instant::now() < deadline, "registry did not answer");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines of `log` (llama.cpp's, through Ollama's) that contain `needle`.
pub fn log_lines(log: &str, needle: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Directory of this repository (for the benches, which have no CARGO_MANIFEST_DIR helper).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
