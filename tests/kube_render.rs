//! kube_render through the built binary and rmcp's client: the bundled stack
//! (each profile) and the test stacks render to manifests that pass
//! `kubernetes-validate --strict -k 1.35.0` (the PyPI validator the peers
//! script builds), byte-identical across runs, with the exact list of what
//! was not translated; a Helm chart passes `helm lint` and `helm template`;
//! secrets never appear in the answer; bad input is rejected naming the field.
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::kube::{copy_dir, helm_bin, validate_bin};
use common::{call, is_error, stdio_client, structured, Person, TestClient};
use rmcp::model::ProtocolVersion;
use serde_json::{json, Value};

/// The bundled stack in a temp dir, with .env.example as its .env.
fn bundled() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&common::root().join("compose"), dir.path());
    let env = std::fs::read_to_string(dir.path().join(".env.example")).expect(".env.example");
    // Distinct secret values, so a leak is unambiguous.
    let env = env
        .replace(
            "POSTGRES_PASSWORD=change-me",
            "POSTGRES_PASSWORD=pg-Secret-4711",
        )
        .replace(
            "MONGO_PASSWORD=change-me",
            "MONGO_PASSWORD=mongo-Secret-4712",
        );
    std::fs::write(dir.path().join(".env"), env).expect(".env");
    dir
}

fn validate(bin: &str, dir: &Path) {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("read")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "manifests were written to {}",
        dir.display()
    );
    let out = Command::new(bin)
        .args(["--strict", "-k", "1.35.0"])
        .args(&files)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubernetes-validate --strict failed:\n{text}"
    );
    assert_eq!(
        text.matches(" passed for resource ").count(),
        files.len(),
        "every manifest passed:\n{text}"
    );
}

fn files_of(out: &Value) -> BTreeMap<String, String> {
    out["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap_or("").to_string(),
                f["sha256"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn untranslatable(out: &Value) -> Vec<(String, String)> {
    out["untranslatable"]
        .as_array()
        .expect("untranslatable")
        .iter()
        .map(|u| {
            (
                u["service"].as_str().unwrap_or("").to_string(),
                u["field"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn bundled_stack_renders_strictly_valid_and_stable_for_every_profile() {
    let Some(validator) = validate_bin() else {
        return;
    };
    let stack = bundled();
    let client = stdio_client(
        stack.path(),
        &[],
        TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25),
    )
    .await;
    let tools = client.list_all_tools().await.expect("tools");
    let common_notes = [
        ("api", "depends_on"),
        ("api", "extra_hosts"),
        ("api", "logging"),
        ("mongodb", "logging"),
        ("postgres", "logging"),
        ("qdrant", "logging"),
    ];
    let mut expected: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    let gpu = [
        (
            "ollama-gpu",
            "deploy.resources.reservations.devices[0].count",
        ),
        ("ollama-gpu", "logging"),
    ];
    expected.insert(
        "standard",
        common_notes.iter().chain(gpu.iter()).copied().collect(),
    );
    expected.insert(
        "analysis",
        common_notes.iter().chain(gpu.iter()).copied().collect(),
    );
    expected.insert(
        "cpu",
        common_notes
            .iter()
            .chain([("ollama-cpu", "logging")].iter())
            .copied()
            .collect(),
    );
    expected.insert(
        "worker",
        common_notes
            .iter()
            .chain(
                [
                    ("worker", "depends_on"),
                    ("worker", "extra_hosts"),
                    ("worker", "logging"),
                ]
                .iter(),
            )
            .copied()
            .collect(),
    );
    expected.insert(
        "ops",
        common_notes
            .iter()
            .chain(
                [
                    ("stackpilot", "build"),
                    ("stackpilot", "logging"),
                    ("stackpilot", "volumes[0]"),
                    ("stackpilot", "volumes[1]"),
                ]
                .iter(),
            )
            .copied()
            .collect(),
    );
    for (profile, notes) in &expected {
        let dir_a = format!("render-{profile}-a");
        let a = call(
            &client,
            "kube_render",
            json!({"profile": profile, "output_dir": dir_a}),
        )
        .await;
        assert!(!is_error(&a), "{profile}: {a:?}");
        let a = structured(&a);
        common::validate_output(&tools, "kube_render", &a);
        validate(&validator, &stack.path().join(&dir_a));
        let b = structured(
            &call(
                &client,
                "kube_render",
                json!({"profile": profile, "output_dir": format!("render-{profile}-b")}),
            )
            .await,
        );
        assert_eq!(
            files_of(&a),
            files_of(&b),
            "{profile}: the same bytes twice"
        );
        assert_eq!(a["digest"], b["digest"]);
        let mut want = pairs(notes);
        want.sort();
        assert_eq!(
            untranslatable(&a),
            want,
            "{profile}: the untranslatable list is exact"
        );
        // Data services are StatefulSets with claims, stateless ones Deployments.
        let kinds: BTreeMap<String, String> = a["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .filter(|o| matches!(o["kind"].as_str(), Some("Deployment" | "StatefulSet")))
            .map(|o| {
                (
                    o["name"].as_str().unwrap_or("").to_string(),
                    o["kind"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert_eq!(
            kinds.get("postgres").map(String::as_str),
            Some("StatefulSet")
        );
        assert_eq!(kinds.get("api").map(String::as_str), Some("Deployment"));
        // Published ports are reported, with how to reach them.
        assert!(a["published"]
            .as_array()
            .expect("published")
            .iter()
            .any(|p| p["service"] == "postgres" && p["host_port"] == 5432));
    }
    // The GPU profile asks for an nvidia.com/gpu; the api's curl healthcheck became an httpGet probe.
    let gpu = std::fs::read_to_string(
        stack
            .path()
            .join("render-standard-a/statefulset-ollama-gpu.yaml"),
    )
    .expect("ollama");
    assert!(gpu.contains("nvidia.com/gpu: 1"), "{gpu}");
    let api = std::fs::read_to_string(stack.path().join("render-standard-a/deployment-api.yaml"))
        .expect("api");
    assert!(
        api.contains("httpGet:") && api.contains("path: /health") && api.contains("startupProbe:"),
        "{api}"
    );
    assert!(api.contains("runAsUser: 10001"), "{api}");
    // The database password is in a Secret (file 0600), never in a ConfigMap.
    let secret = stack
        .path()
        .join("render-standard-a/secret-postgres-env.yaml");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&secret)
                .expect("secret")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    for entry in std::fs::read_dir(stack.path().join("render-standard-a")).expect("dir") {
        let p = entry.expect("entry").path();
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("configmap-"))
        {
            let text = std::fs::read_to_string(&p).expect("cm");
            assert!(
                !text.contains("pg-Secret-4711"),
                "no password in {}: {text}",
                p.display()
            );
        }
    }
    // Returned manifests carry no secret value.
    let shown = structured(&call(&client, "kube_render", json!({"profile": "standard"})).await);
    let text = shown["manifests"].as_str().expect("manifests");
    assert!(text.contains("kind: Secret") && text.contains("[redacted]"));
    for secret in [
        "pg-Secret-4711",
        "mongo-Secret-4712",
        "cGctU2VjcmV0LTQ3MTE=",
    ] {
        assert!(
            !text.contains(secret),
            "no secret value, plain or base64: {secret}"
        );
    }
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn helm_chart_lints_and_templates() {
    let (Some(helm), Some(validator)) = (helm_bin(), validate_bin()) else {
        return;
    };
    let stack = bundled();
    let client = stdio_client(
        stack.path(),
        &[],
        TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25),
    )
    .await;
    let out = call(
        &client,
        "kube_render",
        json!({"profile": "standard", "output_dir": "chart", "helm": true}),
    )
    .await;
    assert!(!is_error(&out), "{out:?}");
    let out = structured(&out);
    assert!(out["helm"].as_bool().unwrap_or(false));
    let chart = stack.path().join("chart");
    let values = std::fs::read_to_string(chart.join("values.yaml")).expect("values");
    assert!(
        values.contains("OLLAMA_CONTEXT_LENGTH") && !values.contains("pg-Secret-4711"),
        "{values}"
    );
    let secret_values =
        std::fs::read_to_string(chart.join("secret-values.yaml")).expect("secret values");
    assert!(secret_values.contains("pg-Secret-4711"));
    assert!(std::fs::read_to_string(chart.join(".helmignore"))
        .expect("helmignore")
        .contains("secret-values.yaml"));
    let lint = Command::new(&helm)
        .arg("lint")
        .arg(&chart)
        .output()
        .expect("helm lint");
    assert!(
        lint.status.success(),
        "helm lint: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let template = Command::new(&helm)
        .args(["template", "stack"])
        .arg(&chart)
        .arg("-f")
        .arg(chart.join("secret-values.yaml"))
        .args(["--namespace", "llm"])
        .output()
        .expect("helm template");
    assert!(
        template.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&template.stderr)
    );
    let rendered = String::from_utf8_lossy(&template.stdout).into_owned();
    assert!(rendered.contains("namespace: llm") && rendered.contains("kind: StatefulSet"));
    // What helm renders is itself strictly valid.
    let out_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(out_dir.path().join("all.yaml"), &rendered).expect("write");
    let v = Command::new(&validator)
        .args(["--strict", "-k", "1.35.0"])
        .arg(out_dir.path().join("all.yaml"))
        .output()
        .expect("validate");
    assert!(
        v.status.success(),
        "helm output validates: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn test_stacks_render_valid() {
    let Some(validator) = validate_bin() else {
        return;
    };
    for name in ["kube", "data", "web", "backup"] {
        let src = common::root().join("tests/stacks").join(name);
        if !src.join("docker-compose.yml").exists() {
            continue;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(&src, dir.path());
        let client = stdio_client(
            dir.path(),
            &[],
            TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25),
        )
        .await;
        let out = call(
            &client,
            "kube_render",
            json!({"output_dir": "k8s", "expose": "nodeport"}),
        )
        .await;
        assert!(!is_error(&out), "{name}: {out:?}");
        validate(&validator, &dir.path().join("k8s"));
        client.cancel().await.expect("close");
    }
}

/// The seed systems' worked examples (compose/examples/, issue 12), each with
/// its .env.example as its .env: strictly valid, the same bytes twice, every
/// untranslatable feature listed with a reason, and no .env secret value in
/// the answer.
#[tokio::test]
async fn seed_examples_render_valid_and_stable() {
    let Some(validator) = validate_bin() else {
        return;
    };
    let examples = common::root().join("compose/examples");
    let mut names: Vec<String> = std::fs::read_dir(&examples)
        .expect("compose/examples")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("docker-compose.yml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["docmind", "liv-hana", "melvin", "qdrant-mcp", "studio"],
        "one example per seed"
    );
    for name in &names {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(&examples.join(name), dir.path());
        let env = std::fs::read_to_string(dir.path().join(".env.example")).expect(".env.example");
        std::fs::write(dir.path().join(".env"), &env).expect(".env");
        let secrets: Vec<String> = env
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, v)| {
                let k = k.to_ascii_uppercase();
                v.len() >= 6
                    && !k.ends_with("_FILE")
                    && ["PASSWORD", "SECRET", "TOKEN", "KEY"]
                        .iter()
                        .any(|m| k.contains(m))
            })
            .map(|(_, v)| v.to_string())
            .collect();
        let client = stdio_client(
            dir.path(),
            &[],
            TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25),
        )
        .await;
        let first = call(&client, "kube_render", json!({"output_dir": "k8s"})).await;
        assert!(!is_error(&first), "{name}: {first:?}");
        let first = structured(&first);
        let files = files_of(&first);
        let again = structured(&call(&client, "kube_render", json!({"output_dir": "k8s"})).await);
        assert_eq!(files, files_of(&again), "{name}: the same bytes twice");
        let missing = untranslatable(&first);
        assert_eq!(missing, untranslatable(&again), "{name}");
        // Exactly what each seed's compose file has that Kubernetes has not:
        // images built from source, start order, host names and bind mounts
        // of a developer's machine, logging drivers.
        let expected = match name.as_str() {
            "docmind" => pairs(&[("docmind-standard", "build")]),
            "liv-hana" => pairs(&[
                ("mcp-core", "build"),
                ("mcp-core", "extra_hosts"),
                ("mcp-deputy", "build"),
                ("mcp-deputy", "depends_on"),
            ]),
            "melvin" => pairs(&[
                ("api", "build"),
                ("api", "depends_on"),
                ("api", "logging"),
                ("mongodb", "logging"),
                ("ollama", "logging"),
                ("postgres", "logging"),
                ("qdrant", "logging"),
                ("worker", "build"),
                ("worker", "depends_on"),
                ("worker", "logging"),
            ]),
            "qdrant-mcp" => pairs(&[("mcp-server", "build"), ("mcp-server", "depends_on")]),
            "studio" => pairs(&[
                ("api", "build"),
                ("api", "depends_on"),
                ("api", "volumes[0]"),
                ("api", "volumes[1]"),
            ]),
            other => panic!("an example without its expected list: {other}"),
        };
        assert_eq!(missing, expected, "{name}");
        for u in first["untranslatable"].as_array().expect("untranslatable") {
            assert!(
                u["field"].as_str().is_some_and(|f| !f.is_empty())
                    && u["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "{name}: every untranslatable entry names its field and why: {u}"
            );
        }
        eprintln!("{name}: {} files, untranslatable {missing:?}", files.len());
        let text = first.to_string();
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{name}: a .env secret in the answer"
            );
        }
        validate(&validator, &dir.path().join("k8s"));
        client.cancel().await.expect("close");
    }
}

#[tokio::test]
async fn bad_render_input_is_rejected_naming_the_field() {
    let stack = bundled();
    let client = stdio_client(
        stack.path(),
        &[],
        TestClient::new(Person::Absent, ProtocolVersion::V_2025_11_25),
    )
    .await;
    let cases = [
        (json!({"namespace": "Bad_NS"}), "namespace"),
        (json!({"namespace": "-x"}), "namespace"),
        (json!({"output_dir": "../escape"}), "output_dir"),
        (json!({"output_dir": "."}), "output_dir"),
        (json!({"output_dir": "a\u{7}b"}), "output_dir"),
        (json!({"profile": "nope"}), "profile"),
        (json!({"helm": true}), "helm"),
        (json!({"expose": "hostport"}), "expose"),
        (json!({"colour": "red"}), "colour"),
    ];
    for (args, field) in cases {
        let out = call(&client, "kube_render", args.clone()).await;
        assert!(is_error(&out), "{args} is rejected");
        let e = structured(&out);
        assert_eq!(e["error"]["field"], field, "{args}: {e}");
    }
    let e = structured(&call(&client, "kube_render", json!({"profile": "nope"})).await);
    assert!(
        e["error"]["allowed"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p == "standard")),
        "{e}"
    );
    // A directory with someone else's files is refused, and left as it was.
    std::fs::create_dir(stack.path().join("mine")).expect("mkdir");
    std::fs::write(stack.path().join("mine/notes.txt"), "keep").expect("write");
    let e = structured(&call(&client, "kube_render", json!({"output_dir": "mine"})).await);
    assert_eq!(e["error"]["field"], "output_dir");
    assert_eq!(
        std::fs::read_dir(stack.path().join("mine"))
            .expect("dir")
            .count(),
        1
    );
    // Still serving.
    let ok = call(&client, "kube_render", json!({"profile": "cpu"})).await;
    assert!(!is_error(&ok));
    client.cancel().await.expect("close");
}
