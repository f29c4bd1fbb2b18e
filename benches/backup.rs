//! Backup benchmark (issue: backup). Run: `cargo bench --bench backup`.
//!
//! On a throwaway copy of tests/stacks/data (the local Postgres 15 image):
//! 1. fills the database with a generated table to a target size
//!    (STACKPILOT_BENCH_DB_MB, default 1024; the quick mode of `cargo test
//!    --benches` uses 48);
//! 2. times `docker exec <db> pg_dump -Fc -U postgres -d postgres | zstd -q -o file`
//!    against stackpilot's `backup` tool (release binary, over MCP stdio; the whole
//!    call: stack model, exact row counts, dump, fsync, manifest), alternating, 5 runs
//!    each, and reports the ratio of their median throughputs (target: stackpilot >= 90 %);
//! 3. records stackpilot's peak RSS (VmHWM of the server process, fresh per run)
//!    at a quarter of the size and at the full size (target: <= 64 MB, flat).
//!
//! Needs the engine scripts/test-env.sh starts, and `zstd` on PATH (Debian: apt-get
//! install zstd; this bench installs it when missing and it runs as root).
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt};

const BIN: &str = env!("CARGO_BIN_EXE_stackpilot");

#[derive(Clone)]
struct Bench;
impl ClientHandler for Bench {
    fn get_info(&self) -> ClientConfig {
        let mut c = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("bench", "1"),
        );
        c.protocol_version = ProtocolVersion::V_2025_11_25;
        c
    }
}

fn docker_host() -> Option<String> {
    let from_file = std::fs::read_to_string("/run/stackpilot-test/env")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("export DOCKER_HOST="))
                .map(str::to_string)
        });
    let host = std::env::var("DOCKER_HOST").ok().or(from_file)?;
    let ok = Command::new("docker")
        .env("DOCKER_HOST", &host)
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(host)
}

struct Stack {
    dir: tempfile::TempDir,
    host: String,
}

impl Stack {
    fn new(host: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stacks/data");
        std::fs::copy(
            src.join("docker-compose.yml"),
            dir.path().join("docker-compose.yml"),
        )
        .expect("copy");
        let project = format!("spbench-backup-{}", std::process::id());
        let port = |()| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("port")
        };
        std::fs::write(
            dir.path().join(".env"),
            format!(
                "PG_PORT={}\nAPI_PORT={}\nPG_MEM_LIMIT=1g\nCOMPOSE_PROJECT_NAME={project}\n",
                port(()),
                port(())
            ),
        )
        .expect(".env");
        Self {
            dir,
            host: host.to_string(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .env("DOCKER_HOST", &self.host)
            .args(args)
            .output()
            .expect("docker")
    }

    fn compose(&self, args: &[&str]) -> std::process::Output {
        let mut full = vec!["compose", "--project-directory"];
        let p = self.path().display().to_string();
        full.push(&p);
        full.extend_from_slice(args);
        self.docker(&full)
    }

    fn container(&self) -> String {
        String::from_utf8_lossy(&self.compose(&["ps", "-q", "postgres"]).stdout)
            .trim()
            .to_string()
    }

    fn psql(&self, sql: &str) -> String {
        let c = self.container();
        let o = self.docker(&[
            "exec",
            &c,
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ]);
        assert!(
            o.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn db_bytes(&self) -> u64 {
        self.psql("select pg_database_size('postgres')")
            .parse()
            .expect("size")
    }

    /// Appends generated rows until the database holds `mb` MiB.
    fn grow_to(&self, mb: u64) {
        self.psql("create table if not exists wide(id bigint, a text, b text, c text, n numeric, t timestamptz)");
        let target = mb << 20;
        let mut next: u64 = self
            .psql("select coalesce(max(id), 0) from wide")
            .parse()
            .expect("max");
        loop {
            let have = self.db_bytes();
            if have >= target {
                break;
            }
            // About 200 bytes per row on disk; at most 500,000 rows per statement.
            let batch = ((target - have) / 200).clamp(10_000, 500_000);
            self.psql(&format!(
                "insert into wide select i, md5(i::text), md5((i * 31)::text) || md5((i * 17)::text), \
                 repeat(chr(65 + (i % 26)::int), 20 + (i % 40)::int), i * 1.5, \
                 timestamptz '2026-01-01' + i * interval '1 second' \
                 from generate_series({}, {}) i",
                next + 1,
                next + batch
            ));
            next += batch;
        }
        self.psql("vacuum analyze wide");
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--timeout", "5"]);
    }
}

fn ensure_zstd() -> bool {
    if Command::new("zstd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    eprintln!("zstd not found: installing it with apt-get");
    let _ = Command::new("apt-get")
        .args(["install", "-y", "-qq", "zstd"])
        .status();
    Command::new("zstd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The baseline: the same dump through the docker CLI into the zstd CLI.
fn baseline(stack: &Stack, out: &Path) -> (f64, u64) {
    let c = stack.container();
    let t = Instant::now();
    let status = Command::new("bash")
        .env("DOCKER_HOST", &stack.host)
        .arg("-c")
        .arg(format!(
            "set -o pipefail; docker exec {c} pg_dump -Fc -U postgres -d postgres | zstd -q -f -o {}",
            out.display()
        ))
        .status()
        .expect("sh");
    assert!(status.success(), "baseline pipeline failed");
    let secs = t.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(out);
    (secs, bytes)
}

fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmHWM:")
                    .map(|v| v.trim().trim_end_matches(" kB").trim().to_string())
            })
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One backup through a fresh `stackpilot serve` (stdio): seconds, bytes on
/// disk, and the server's peak RSS in MiB. The backup set is removed after.
async fn stackpilot(stack: &Stack) -> (f64, u64, f64) {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(["serve", "--stack"])
        .arg(stack.path())
        .env("DOCKER_HOST", &stack.host)
        .env("STACKPILOT_LOG", "warn");
    let (transport, _) = TokioChildProcess::builder(cmd.configure(|_| {}))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let pid = transport.id().expect("pid");
    let client = Bench
        .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
        .await
        .expect("connect");
    let t = Instant::now();
    let r = client
        .call_tool(CallToolRequestParams::new("backup"))
        .await
        .expect("backup answered");
    let secs = t.elapsed().as_secs_f64();
    let out = r.structured_content.clone().unwrap_or_default();
    assert!(!r.is_error.unwrap_or(false), "backup failed: {out:#}");
    let rss = vm_hwm_kb(pid) as f64 / 1024.0;
    let _ = client.cancel().await;
    let bytes = out["total_bytes"].as_u64().unwrap_or(0);
    let dir = PathBuf::from(out["directory"].as_str().unwrap_or_default());
    let _ = std::fs::remove_dir_all(&dir);
    (secs, bytes, rss)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let Some(host) = docker_host() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the backup bench needs the engine under CI"
        );
        eprintln!("backup bench skipped: no Docker engine (run scripts/test-env.sh)");
        return;
    };
    if !ensure_zstd() {
        eprintln!("backup bench skipped: no zstd CLI for the baseline");
        return;
    }
    let full_mb: u64 = std::env::var("STACKPILOT_BENCH_DB_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 48 } else { 1024 });
    let reps = if quick { 1 } else { 5 };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let stack = Stack::new(&host);
    let up = stack.compose(&["up", "-d", "--wait", "postgres"]);
    assert!(
        up.status.success(),
        "compose up: {}",
        String::from_utf8_lossy(&up.stderr)
    );

    let mut rss_rows = Vec::new();
    let quarter = (full_mb / 4).max(8);
    let t = Instant::now();
    stack.grow_to(quarter);
    let small = stack.db_bytes();
    eprintln!(
        "generated {} MiB in {:.0} s",
        small >> 20,
        t.elapsed().as_secs_f64()
    );
    let (s, b, rss) = rt.block_on(stackpilot(&stack));
    rss_rows.push((small, s, b, rss));

    let t = Instant::now();
    stack.grow_to(full_mb);
    let size = stack.db_bytes();
    eprintln!(
        "generated {} MiB in {:.0} s",
        size >> 20,
        t.elapsed().as_secs_f64()
    );
    let out = stack.path().join("baseline.pgdump.zst");
    let mut base = Vec::new();
    let mut ours = Vec::new();
    // Alternating, and swapping which goes first, so drift in the machine's
    // load (it is shared) does not favour either.
    for rep in 0..reps {
        if rep % 2 == 1 {
            base.push(baseline(&stack, &out));
        }
        let (s, b, rss) = rt.block_on(stackpilot(&stack));
        ours.push((s, b));
        rss_rows.push((size, s, b, rss));
        if rep % 2 == 0 {
            base.push(baseline(&stack, &out));
        }
    }
    let best = |v: &[(f64, u64)]| v.iter().map(|x| x.0).fold(f64::INFINITY, f64::min);
    let median = |v: &[(f64, u64)]| {
        let mut t: Vec<f64> = v.iter().map(|x| x.0).collect();
        t.sort_by(|a, b| a.total_cmp(b));
        t[t.len() / 2]
    };
    let (b_med, o_med) = (median(&base), median(&ours));
    let mib = size as f64 / f64::from(1 << 20);
    println!(
        "database {:.0} MiB ({} rows in table wide); {reps} run(s) each, alternating",
        mib,
        stack.psql("select count(*) from wide")
    );
    println!(
        "baseline docker exec pg_dump -Fc | zstd: median {b_med:.2} s (best {:.2} s), {:.1} MiB/s of database, output {} bytes",
        best(&base),
        mib / b_med,
        base[0].1
    );
    println!(
        "stackpilot backup (MCP, {}):     median {o_med:.2} s (best {:.2} s), {:.1} MiB/s of database, output {} bytes",
        if cfg!(debug_assertions) {
            "debug build: quick mode, not a measurement"
        } else {
            "release"
        },
        best(&ours),
        mib / o_med,
        ours[0].1
    );
    let ratio = b_med / o_med;
    println!(
        "stackpilot throughput vs baseline: {:.1} % (target >= 90 %: {})",
        ratio * 100.0,
        if ratio >= 0.9 { "met" } else { "NOT met" }
    );
    for (db, s, b, rss) in &rss_rows {
        println!(
            "peak RSS of stackpilot serve: {rss:.1} MB while backing up {} MiB ({b} bytes written, {s:.2} s)",
            db >> 20
        );
    }
    let max_rss = rss_rows.iter().map(|r| r.3).fold(0.0, f64::max);
    println!(
        "peak RSS max {max_rss:.1} MB (target <= 64 MB: {}); small vs full size: {:.1} MB vs {:.1} MB",
        if max_rss <= 64.0 { "met" } else { "NOT met" },
        rss_rows[0].3,
        rss_rows.last().map(|r| r.3).unwrap_or(0.0)
    );
}
