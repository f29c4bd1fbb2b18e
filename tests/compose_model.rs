//! The stack model from the real `docker compose config` (no engine needed,
//! only the Compose v2 CLI): roles, GPU reservations and volumes of the
//! bundled stack in every hardware profile.
use stackpilot::adapters::stack_dir;
use stackpilot::domain::stack_model::{model_from_config, Role};
use stackpilot::engine::compose::cli::Compose;

fn compose_available() -> bool {
    let ok = std::process::Command::new("docker")
        .args(["compose", "version"])
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(" 2."))
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Compose v2 is required under CI"
        );
        eprintln!("skipped: no Compose v2 CLI (scripts/test.sh installs it)");
    }
    ok
}

#[tokio::test]
async fn bundled_stack_model_per_profile() {
    if !compose_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("compose");
    std::fs::copy(
        root.join("docker-compose.yml"),
        dir.path().join("docker-compose.yml"),
    )
    .expect("copy");
    std::fs::copy(root.join(".env.example"), dir.path().join(".env")).expect("copy env");
    let stack = stack_dir::open(dir.path(), None).expect("stack");
    let compose = Compose::for_stack(&stack).expect("compose");
    for (profile, ollama, gpu) in [
        ("standard", Some("ollama-gpu"), true),
        ("analysis", Some("ollama-gpu"), true),
        ("cpu", Some("ollama-cpu"), false),
        ("apple-metal", None, false),
    ] {
        let model = compose.model(&[profile.to_string()]).await.expect("model");
        // The model is read from the YAML form alone; the JSON form (plus the
        // YAML's service-level x-stackpilot blocks) gives the same one.
        let p = [profile.to_string()];
        let t = std::time::Duration::from_secs(30);
        let json: serde_json::Value = serde_json::from_str(
            &compose
                .run(&p, &["config", "--format", "json"], t)
                .await
                .expect("json")
                .stdout,
        )
        .expect("json parses");
        let yaml: serde_json::Value =
            serde_norway::from_str(&compose.run(&p, &["config"], t).await.expect("yaml").stdout)
                .expect("yaml parses");
        assert_eq!(
            model_from_config(&json, &yaml, &compose.dir, &p),
            model,
            "{profile}: JSON and YAML forms agree"
        );
        let ollamas: Vec<&str> = model
            .with_role(Role::Ollama)
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(ollamas, ollama.into_iter().collect::<Vec<_>>(), "{profile}");
        if let Some(o) = ollama {
            assert_eq!(model.services[o].gpu, gpu, "{profile}");
            assert!(model.services[o]
                .named_volumes
                .contains(&"ollama_models".to_string()));
        }
        for (svc, role) in [
            ("api", Role::Api),
            ("qdrant", Role::Qdrant),
            ("postgres", Role::Postgres),
            ("mongodb", Role::Mongodb),
        ] {
            assert_eq!(model.service(svc).expect(svc).role, role);
            assert!(
                model.services[svc]
                    .ports
                    .iter()
                    .all(|p| p.host_ip == "127.0.0.1"),
                "{svc} publishes on loopback only"
            );
        }
        assert!(
            !model.services.contains_key("worker"),
            "worker only in its profile"
        );
        assert_eq!(model.settings.keep_last, 7);
        assert!(model.settings.backup_root.ends_with("backups"));
        let hashes = compose
            .config_hashes(&[profile.to_string()])
            .await
            .expect("hashes");
        assert_eq!(
            hashes.keys().collect::<Vec<_>>(),
            model.services.keys().collect::<Vec<_>>()
        );
    }
    let bad = compose
        .model(&["no-such-profile".into()])
        .await
        .expect("unknown profiles are compose's to judge");
    assert!(!bad.services.contains_key("ollama-gpu"));
    let err = compose.model(&[]).await.map(|_| ()).err();
    assert!(
        err.is_none(),
        "the .env's COMPOSE_PROFILES applies: {err:?}"
    );
}
