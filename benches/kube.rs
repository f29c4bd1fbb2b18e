//! The Kubernetes target, measured on the test cluster (scripts/peers/kube.sh:
//! kube-apiserver v1.35.8 with a real kubelet on 127.0.0.1). Run:
//! `cargo bench --bench kube` (the cluster must run: `scripts/peers/kube.sh start`).
//!
//! 1. render of the bundled stack (profile standard): the translation and the
//!    YAML of every object, in process (target: at most 20 ms); beside it the
//!    whole kube_render call over stdio, which adds `docker compose config`;
//! 2. a no-op kube_apply (stack already applied) vs `kubectl apply
//!    --server-side` of the same manifests (field manager stackpilot, so it is a
//!    no-op too), kubectl from the same Kubernetes build, interleaved in one run
//!    (target: at most 1.2x kubectl);
//! 3. stack_status vs `kubectl get pods -o json` for the namespace, interleaved
//!    (target: at most 0.5x kubectl).
//!
//! stackpilot's side is the built binary spoken to over stdio by rmcp's
//! client, one session for the whole run. Without a cluster it prints why and
//! exits 0 (under CI=true it fails).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient};
use serde_json::{json, Value};

use stackpilot::domain::kubernetes::render::{render, to_yaml, Expose, Input};
use stackpilot::domain::stack_model::model_from_config;

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

type Client = RunningService<RoleClient, Bench>;

fn bin() -> String {
    std::env::var("STACKPILOT_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_stackpilot").to_string())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn p90(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * 0.9).ceil() as usize)
        .saturating_sub(1)
        .min(v.len() - 1)]
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn cluster_env() -> Option<BTreeMap<String, String>> {
    let text = std::fs::read_to_string("/run/stackpilot-kube/env").ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

async fn client(stack: &Path, args: &[String], kubeconfig: &str) -> Client {
    let stack = stack.to_path_buf();
    let args = args.to_vec();
    let kubeconfig = kubeconfig.to_string();
    let transport =
        TokioChildProcess::builder(tokio::process::Command::new(bin()).configure(|cmd| {
            cmd.arg("serve").arg("--stack").arg(&stack).args(&args);
            cmd.env("KUBECONFIG", &kubeconfig)
                .env("STACKPILOT_LOG", "warn");
        }))
        .spawn()
        .expect("spawn")
        .0;
    Bench
        .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
        .await
        .expect("connect")
}

async fn tool(c: &Client, name: &str, args: Value) -> Value {
    let Value::Object(args) = args else {
        panic!("object")
    };
    let r = c
        .call_tool(CallToolRequestParams::new(name.to_string()).with_arguments(args))
        .await
        .expect("call");
    let v = r.structured_content.expect("structured");
    assert!(!r.is_error.unwrap_or(false), "{name} failed: {v}");
    v
}

fn render_in_process(dir: &Path) -> (f64, f64, usize) {
    let out = Command::new("docker")
        .current_dir(dir)
        .args(["compose", "--profile", "standard", "config"])
        .output()
        .expect("docker compose config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: Value =
        serde_norway::from_str(&String::from_utf8_lossy(&out.stdout)).expect("yaml");
    let model = model_from_config(&config, &config, dir, &["standard".to_string()]);
    let dotenv: BTreeMap<String, String> = std::fs::read_to_string(dir.join(".env"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let key = [7u8; 32];
    let mut times = Vec::new();
    let mut objects = 0;
    for _ in 0..200 {
        let t = Instant::now();
        let r = render(&Input {
            project: &model.project,
            namespace: "llm",
            config: &config,
            model: &model,
            dotenv: &dotenv,
            expose: Expose::None,
            digest_key: &key,
        })
        .expect("render");
        let mut bytes = 0;
        for o in &r.objects {
            bytes += to_yaml(&o.body).expect("yaml").len();
        }
        assert!(bytes > 0);
        objects = r.objects.len();
        times.push(ms(t));
    }
    let mut t2 = times.clone();
    (median(&mut times), p90(&mut t2), objects)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // 1. Render.
    let bundled = tempfile::tempdir().expect("tempdir");
    copy_dir(&root.join("compose"), bundled.path());
    std::fs::copy(
        bundled.path().join(".env.example"),
        bundled.path().join(".env"),
    )
    .expect(".env");
    let (med, p, n) = render_in_process(bundled.path());
    println!("render of the bundled stack (standard, {n} objects), in process, 200 runs: median {med:.2} ms, p90 {p:.2} ms (target <= 20 ms)");

    let Some(env) = cluster_env() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: no Kubernetes test cluster"
        );
        println!("skipped the cluster benchmarks: no cluster (scripts/peers/kube.sh start)");
        return;
    };
    let kubeconfig = env["KUBECONFIG"].clone();
    let kubectl = env["STACKPILOT_KUBECTL"].clone();
    {
        let c = client(bundled.path(), &[], &kubeconfig).await;
        let mut times = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            tool(
                &c,
                "kube_render",
                json!({"profile": "standard", "include_manifests": true}),
            )
            .await;
            times.push(ms(t));
        }
        println!(
            "kube_render call over stdio (adds `docker compose config`), 20 runs: median {:.1} ms",
            median(&mut times)
        );
        let _ = c.cancel().await;
    }

    // 2 and 3 on tests/stacks/kube in a namespace of its own.
    let stack = tempfile::tempdir().expect("tempdir");
    copy_dir(&root.join("tests/stacks/kube"), stack.path());
    let unique = format!("spbench-{}", std::process::id());
    let env_text = std::fs::read_to_string(stack.path().join(".env")).unwrap_or_default();
    let env_text: String = env_text
        .lines()
        .filter(|l| !l.starts_with("COMPOSE_PROJECT_NAME="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        stack.path().join(".env"),
        format!("{env_text}COMPOSE_PROJECT_NAME={unique}\n"),
    )
    .expect(".env");
    let ns = unique.clone();
    let args: Vec<String> = [
        "--target",
        "kubernetes",
        "--context",
        &env["STACKPILOT_KUBE_CONTEXT"],
        "--namespace",
        &ns,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let kc = |a: &[&str]| {
        Command::new(&kubectl)
            .env("KUBECONFIG", &kubeconfig)
            .args(a)
            .output()
            .expect("kubectl")
    };
    let c = client(stack.path(), &args, &kubeconfig).await;
    let first = tool(&c, "kube_apply", json!({"timeout_s": 300})).await;
    println!(
        "first apply: {} changes, waited {} s",
        first["changes"], first["waited_s"]
    );
    tool(&c, "kube_render", json!({"output_dir": "manifests"})).await;
    let manifests = stack.path().join("manifests");
    let manifests = manifests.to_string_lossy().to_string();
    // Warm both sides once (kubectl's discovery cache, stackpilot's model cache).
    tool(&c, "kube_apply", json!({})).await;
    let warm = kc(&[
        "apply",
        "--server-side",
        "--field-manager=stackpilot",
        "-n",
        &ns,
        "-f",
        &manifests,
    ]);
    assert!(
        warm.status.success(),
        "{}",
        String::from_utf8_lossy(&warm.stderr)
    );
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        let t = Instant::now();
        let out = tool(&c, "kube_apply", json!({})).await;
        ours.push(ms(t));
        assert_eq!(out["changes"], 0, "a no-op apply: {out}");
        let t = Instant::now();
        let o = kc(&[
            "apply",
            "--server-side",
            "--field-manager=stackpilot",
            "-n",
            &ns,
            "-f",
            &manifests,
        ]);
        theirs.push(ms(t));
        assert!(o.status.success());
    }
    let (a, b) = (median(&mut ours), median(&mut theirs));
    println!("no-op kube_apply vs kubectl apply --server-side (same manifests), 15 runs each: {a:.1} ms vs {b:.1} ms ({:.2}x; target <= 1.2x)", a / b);

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..41 {
        let t = Instant::now();
        let out = tool(&c, "stack_status", json!({})).await;
        ours.push(ms(t));
        assert_eq!(out["ready"], true);
        let t = Instant::now();
        let o = kc(&["get", "pods", "-n", &ns, "-o", "json"]);
        theirs.push(ms(t));
        assert!(o.status.success());
    }
    let (a, b) = (median(&mut ours), median(&mut theirs));
    println!("stack_status vs kubectl get pods -o json, 41 runs each: {a:.1} ms vs {b:.1} ms ({:.2}x; target <= 0.5x)", a / b);
    let _ = c.cancel().await;
    let _ = kc(&["delete", "namespace", &ns, "--wait=false"]);
}
