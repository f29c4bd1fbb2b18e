//! Per tool, the few fields a person looks at first and the tables they scan;
//! everything else is in `--json`. A tool without a view here is shown by
//! `render::generic`. Views only read the output: a field a tool does not
//! write shows as absent, never as an error.
use serde_json::Value;

use super::render::{ago, bytes, items, millis, pct, plan_blocks, ports, secs, share, text, Doc};

type View = fn(&Value) -> Doc;

pub fn view(tool: &str) -> Option<View> {
    Some(match tool {
        "detect_hardware" => detect_hardware,
        "select_profile" => select_profile,
        "stack_status" => stack_status,
        "compose_up" => compose_up,
        "compose_down" => compose_down,
        "health" => health,
        "recover" => recover,
        "backup" => backup,
        "list_backups" => list_backups,
        "verify_backup" => verify_backup,
        "restore" => restore,
        "prune_backups" => prune_backups,
        "pull_model" => pull_model,
        "list_models" => list_models,
        "remove_model" => remove_model,
        "set_kv_cache" => set_kv_cache,
        "logs" => logs,
        _ => return None,
    })
}

/// Labelled lines; a value that is absent (`-`) is left out.
#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl Fields {
    fn add(&mut self, label: &str, value: String) -> &mut Self {
        if value != "-" && !value.is_empty() {
            self.0.push((label.to_string(), value));
        }
        self
    }
    fn done(self, doc: &mut Doc) {
        doc.fields(self.0);
    }
}

fn strings(v: &Value) -> Vec<String> {
    items(v).iter().map(text).collect()
}

fn detect_hardware(v: &Value) -> Doc {
    let mut doc = Doc::default();
    let mut f = Fields::default();
    let os = &v["os"];
    let version = match os["version"].as_str() {
        Some(v) => v.to_string(),
        None => text(&os["name"]),
    };
    let wsl = if os["wsl"].as_bool() == Some(true) {
        " (WSL)"
    } else {
        ""
    };
    f.add("os", format!("{version}{wsl}"));
    f.add("kernel", text(&os["kernel"]));
    let cpu = &v["cpu"];
    f.add(
        "cpu",
        format!(
            "{} ({}, {} logical cores)",
            text(&cpu["model"]),
            text(&cpu["arch"]),
            text(&cpu["logical_cores"])
        ),
    );
    f.add("simd", text(&cpu["simd"]));
    f.add(
        "memory",
        format!(
            "{} available of {}",
            bytes(&v["memory"]["available_bytes"]),
            bytes(&v["memory"]["total_bytes"])
        ),
    );
    if !v["cgroup"].is_null() {
        f.add(
            "cgroup memory limit",
            bytes(&v["cgroup"]["memory_limit_bytes"]),
        );
        f.add("cgroup cpu quota", text(&v["cgroup"]["cpu_quota_cores"]));
    }
    if !v["apple"].is_null() {
        f.add("apple chip", text(&v["apple"]["chip"]));
        f.add(
            "metal working set",
            bytes(&v["apple"]["metal_working_set_bytes"]),
        );
    }
    f.add(
        "disk",
        format!(
            "{} free of {} ({})",
            bytes(&v["disk"]["free_bytes"]),
            bytes(&v["disk"]["total_bytes"]),
            text(&v["disk"]["path"])
        ),
    );
    let gpus = items(&v["gpus"]);
    if gpus.is_empty() {
        f.add("gpus", format!("none: {}", text(&v["gpu_absent_reason"])));
    }
    let rt = &v["runtime"];
    let reach = |x: &Value, what: String| {
        if x["reachable"].as_bool() == Some(true) || x["available"].as_bool() == Some(true) {
            what
        } else {
            format!("not available: {}", text(&x["error"]))
        }
    };
    f.add(
        "docker",
        reach(
            &rt["docker"],
            format!(
                "{} (API {}) at {}",
                text(&rt["docker"]["version"]),
                text(&rt["docker"]["api_version"]),
                text(&rt["docker"]["endpoint"])
            ),
        ),
    );
    f.add(
        "compose",
        reach(&rt["compose"], text(&rt["compose"]["version"])),
    );
    f.add("nvidia runtime", text(&rt["nvidia_runtime"]));
    f.add(
        "ollama",
        reach(
            &rt["ollama"],
            format!(
                "{} at {}",
                text(&rt["ollama"]["version"]),
                text(&rt["ollama"]["url"])
            ),
        ),
    );
    f.done(&mut doc);
    if !gpus.is_empty() {
        let rows = gpus
            .iter()
            .map(|g| {
                vec![
                    text(&g["name"]),
                    text(&g["vendor"]),
                    bytes(&g["vram_total_bytes"]),
                    bytes(&g["vram_free_bytes"]),
                    text(&g["driver_version"]),
                    text(&g["compute_capability"]),
                ]
            })
            .collect();
        doc.table(
            "gpus",
            &["name", "vendor", "vram", "free", "driver", "compute"],
            rows,
        );
    }
    doc
}

fn memory_table(doc: &mut Doc, title: &str, m: &Value) {
    let rows = [
        ("weights", "weights_bytes"),
        ("KV cache", "kv_cache_bytes"),
        ("overhead", "overhead_bytes"),
        ("need", "need_bytes"),
        ("usable", "usable_bytes"),
        ("margin", "margin_bytes"),
        ("headroom", "headroom_bytes"),
    ]
    .iter()
    .filter(|(_, k)| !m[*k].is_null())
    .map(|(label, k)| (label.to_string(), bytes(&m[*k])))
    .collect();
    doc.section(title, rows);
}

fn select_profile(v: &Value) -> Doc {
    let mut doc = Doc::default();
    let mut f = Fields::default();
    f.add("profile", text(&v["profile"]))
        .add("model", text(&v["model"]["name"]))
        .add("context", format!("{} tokens", text(&v["context_length"])))
        .add("KV cache", text(&v["kv_cache_type"]))
        .add("parallel", text(&v["num_parallel"]))
        .add(
            "fits",
            format!(
                "{} (need {} of {} usable, headroom {})",
                text(&v["fits"]),
                bytes(&v["memory"]["need_bytes"]),
                bytes(&v["memory"]["usable_bytes"]),
                bytes(&v["memory"]["headroom_bytes"])
            ),
        )
        .add("hardware", text(&v["hardware_source"]));
    if let Some(ef) = v.get("env_file").filter(|e| !e.is_null()) {
        f.add(
            ".env",
            if ef["written"].as_bool() == Some(true) {
                format!("written: {}", text(&ef["path"]))
            } else {
                format!("unchanged: {}", text(&ef["path"]))
            },
        );
    }
    f.done(&mut doc);
    memory_table(&mut doc, "memory", &v["memory"]);
    let env = v["env"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    doc.list(".env keys", env);
    doc.list("reasons", strings(&v["reasons"]));
    doc
}

fn service_rows(v: &Value) -> Vec<Vec<String>> {
    items(v)
        .iter()
        .map(|s| {
            vec![
                text(&s["service"]),
                text(&s["state"]),
                text(&s["health"]),
                text(&s["image"]),
                ports(&s["ports"]),
                text(&s["restart_count"]),
                ago(&s["started_at"]),
            ]
        })
        .collect()
}

const SERVICE_COLUMNS: &[&str] = &[
    "service", "state", "health", "image", "ports", "restarts", "started",
];

fn stack_status(v: &Value) -> Doc {
    let mut doc = Doc::default();
    let c = &v["counts"];
    let mut f = Fields::default();
    f.add("project", text(&v["project"]))
        .add("ready", text(&v["ready"]))
        .add(
            "containers",
            format!(
                "{} ({} running, {} healthy, {} unhealthy, {} starting, {} not running)",
                text(&c["containers"]),
                text(&c["running"]),
                text(&c["healthy"]),
                text(&c["unhealthy"]),
                text(&c["starting"]),
                text(&c["not_running"])
            ),
        );
    f.done(&mut doc);
    doc.table("services", SERVICE_COLUMNS, service_rows(&v["services"]));
    doc
}

fn compose_up(v: &Value) -> Doc {
    let mut doc = Doc::default();
    let mut f = Fields::default();
    f.add("project", text(&v["project"]))
        .add("profile", text(&v["profile"]))
        .add("changes", text(&v["changes"]))
        .add("applied", text(&v["applied"]))
        .add("took", secs(&v["duration_s"]));
    f.done(&mut doc);
    doc.table("services", SERVICE_COLUMNS, service_rows(&v["services"]));
    let failed: Vec<String> = items(&v["preflight"])
        .iter()
        .filter(|p| p["status"] != "ok" && p["status"] != "skipped")
        .map(|p| {
            format!(
                "{}: {} ({})",
                text(&p["check"]),
                text(&p["status"]),
                text(&p["detail"])
            )
        })
        .collect();
    doc.list("preflight", failed);
    doc.list("orphans", strings(&v["orphans"]));
    doc.list("warnings", strings(&v["warnings"]));
    doc
}

fn compose_down(v: &Value) -> Doc {
    let mut doc = Doc::default();
    let r = &v["remaining"];
    let mut f = Fields::default();
    f.add("project", text(&v["project"]))
        .add("changes", text(&v["changes"]))
        .add("applied", text(&v["applied"]))
        .add("took", secs(&v["duration_s"]))
        .add(
            "backup first",
            if v["backup"].is_null() {
                "-".into()
            } else {
                format!(
                    "{} ({})",
                    text(&v["backup"]["backup_id"]),
                    bytes(&v["backup"]["total_bytes"])
                )
            },
        )
        .add(
            "remaining",
            format!(
                "{} containers, {} networks, {} volumes",
                items(&r["containers"]).len(),
                items(&r["networks"]).len(),
                items(&r["volumes"]).len()
            ),
        );
    f.done(&mut doc);
    doc.list("kept volumes", strings(&v["kept_volumes"]));
    doc
}

fn hint_text(h: &Value) -> String {
    if h.is_null() {
        return "-".into();
    }
    match h["tool"].as_str() {
        Some(tool) => format!("{tool}: {}", text(&h["text"])),
        None => text(&h["text"]),
    }
}

fn health(v: &Value) -> Doc {
    let mut doc = Doc::default();
    let host = &v["host"];
    let mut f = Fields::default();
    f.add("project", text(&v["project"]))
        .add("overall", text(&v["overall"]))
        .add("summary", text(&v["summary"]))
        .add(
            "host",
            format!(
                "{}; memory {} available ({})",
                text(&host["verdict"]),
                bytes(&host["memory"]["available_bytes"]),
                pct(&host["memory"]["available_pct"])
            ),
        )
        .add("took", millis(&v["timings"]["wall_ms"]));
    f.done(&mut doc);
    let rows = items(&v["services"])
        .iter()
        .map(|s| {
            vec![
                text(&s["service"]),
                text(&s["verdict"]),
                text(&s["reason"]),
                hint_text(&s["hint"]),
            ]
        })
        .collect();
    doc.table("services", &["service", "verdict", "reason", "next"], rows);
    let disks = items(&host["disks"])
        .iter()
        .map(|d| {
            vec![
                text(&d["what"]),
                bytes(&d["free_bytes"]),
                pct(&d["free_pct"]),
                text(&d["path"]),
            ]
        })
        .collect();
    doc.table("disks", &["what", "free", "free %", "path"], disks);
    doc.list(
        "next steps",
        items(&v["next_steps"]).iter().map(hint_text).collect(),
    );
    doc.list("orphans", strings(&v["orphans"]));
    // Logs only when asked for (logs_tail): redacted, written by the containers.
    for s in items(&v["services"]) {
        for log in items(&s["logs"]) {
            doc.list(
                &format!(
                    "{} logs (untrusted container output)",
                    text(&log["container"])
                ),
                strings(&log["untrusted_output"]),
            );
        }
    }
    doc
}

fn recover(v: &Value) -> Doc {
    let mut doc = Doc::default();
    let h = &v["health"];
    let mut f = Fields::default();
    f.add("service", text(&v["service"]))
        .add("action", text(&v["action"]))
        .add("containers", text(&v["containers"]))
        .add(
            "wait",
            format!(
                "{} after {}",
                text(&v["wait_outcome"]),
                secs(&v["waited_s"])
            ),
        )
        .add(
            "health",
            if h.is_null() {
                "-".into()
            } else {
                format!("{}: {}", text(&h["verdict"]), text(&h["reason"]))
            },
        )
        .add("next", hint_text(&h["hint"]));
    f.done(&mut doc);
    doc
}

fn backup(v: &Value) -> Doc {
    let mut doc = Doc::default();
    let mut f = Fields::default();
    f.add("backup id", text(&v["backup_id"]))
        .add("directory", text(&v["directory"]))
        .add("size", bytes(&v["total_bytes"]))
        .add("took", secs(&v["duration_s"]))
        .add("stopped meanwhile", text(&v["stopped"]));
    f.done(&mut doc);
    let rows = items(&v["files"])
        .iter()
        .map(|e| {
            vec![
                text(&e["service"]),
                text(&e["method"]),
                text(&e["file"]),
                bytes(&e["bytes"]),
                secs(&e["duration_s"]),
            ]
        })
        .collect();
    doc.table(
        "files",
        &["service", "method", "file", "size", "took"],
        rows,
    );
    doc
}

fn list_backups(v: &Value) -> Doc {
    let mut doc = Doc::default();
    let r = &v["retention"];
    let mut f = Fields::default();
    f.add("directory", text(&v["directory"]))
        .add("sets", {
            let shown = items(&v["sets"]).len() as u64;
            let total = v["total"].as_u64().unwrap_or(shown);
            if shown < total {
                format!(
                    "{total} (this page: {shown} from offset {})",
                    text(&v["offset"])
                )
            } else {
                total.to_string()
            }
        })
        .add("next page offset", text(&v["next_offset"]))
        .add(
            "retention",
            format!(
                "keep last {}, daily {}, weekly {}",
                text(&r["keep_last"]),
                text(&r["keep_daily"]),
                text(&r["keep_weekly"])
            ),
        );
    let odd = items(&v["invalid_manifests"]).len() + items(&v["partial_files"]).len();
    if odd > 0 || v["unmanaged_files"].as_u64().unwrap_or(0) > 0 {
        f.add(
            "not backups",
            format!(
                "{} invalid manifests, {} .partial files, {} unlisted files (never touched)",
                items(&v["invalid_manifests"]).len(),
                items(&v["partial_files"]).len(),
                text(&v["unmanaged_files"])
            ),
        );
    }
    f.done(&mut doc);
    let rows = items(&v["sets"])
        .iter()
        .map(|s| {
            vec![
                text(&s["backup_id"]),
                text(&s["label"]),
                ago(&s["created_at"]),
                text(&s["services"]),
                bytes(&s["total_bytes"]),
                text(&s["complete"]),
            ]
        })
        .collect();
    doc.table(
        "sets",
        &[
            "backup id",
            "label",
            "created",
            "services",
            "size",
            "complete",
        ],
        rows,
    );
    doc
}

fn verify_backup(v: &Value) -> Doc {
    let mut doc = Doc::default();
    let mut f = Fields::default();
    f.add("backup id", text(&v["backup_id"]))
        .add("ok", text(&v["ok"]))
        .add("directory", text(&v["directory"]));
    f.done(&mut doc);
    let rows = items(&v["files"])
        .iter()
        .map(|e| {
            vec![
                text(&e["service"]),
                text(&e["file"]),
                text(&e["ok"]),
                bytes(&e["bytes_actual"]),
                text(&e["sha256_ok"]),
                text(&e["content"]["checked_with"]),
                text(&e["content"]["detail"]),
            ]
        })
        .collect();
    doc.table(
        "files",
        &[
            "service",
            "file",
            "ok",
            "size",
            "sha256",
            "checked with",
            "detail",
        ],
        rows,
    );
    doc
}

fn restore(v: &Value) -> Doc {
    let mut doc = Doc::default();
    let mut f = Fields::default();
    f.add("backup id", text(&v["backup_id"]))
        .add("safety backup", text(&v["safety_backup_id"]))
        .add("counts match", text(&v["counts_match"]))
        .add("took", secs(&v["duration_s"]));
    f.done(&mut doc);
    let rows = items(&v["restored"])
        .iter()
        .map(|r| {
            vec![
                text(&r["service"]),
                text(&r["method"]),
                text(&r["file"]),
                text(&r["counts_match"]),
                secs(&r["duration_s"]),
            ]
        })
        .collect();
    doc.table(
        "restored",
        &["service", "method", "file", "counts match", "took"],
        rows,
    );
    let mismatches = items(&v["restored"])
        .iter()
        .flat_map(|r| {
            let svc = text(&r["service"]);
            items(&r["mismatches"])
                .iter()
                .map(|m| {
                    format!(
                        "{svc} {}: expected {}, found {}",
                        text(&m["name"]),
                        text(&m["expected"]),
                        text(&m["actual"])
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    doc.list("count mismatches", mismatches);
    doc
}

fn prune_backups(v: &Value) -> Doc {
    let mut doc = Doc::default();
    let p = &v["policy"];
    let mut f = Fields::default();
    f.add(
        "policy",
        format!(
            "keep last {}, daily {}, weekly {}",
            text(&p["keep_last"]),
            text(&p["keep_daily"]),
            text(&p["keep_weekly"])
        ),
    )
    .add("freed", bytes(&v["freed_bytes"]))
    .add("kept", format!("{} sets", items(&v["kept"]).len()))
    .add("untouched files", text(&v["untouched_files"]));
    f.done(&mut doc);
    let rows = items(&v["deleted"])
        .iter()
        .map(|d| {
            vec![
                text(&d["backup_id"]),
                text(&d["services"]),
                bytes(&d["bytes"]),
            ]
        })
        .collect();
    doc.table("deleted", &["backup id", "services", "size"], rows);
    doc
}

fn pull_model(v: &Value) -> Doc {
    let mut doc = Doc::default();
    let rate = match (v["bytes_transferred"].as_f64(), v["duration_s"].as_f64()) {
        (Some(b), Some(s)) if s > 0.0 => format!("{}/s", bytes(&Value::from(b / s))),
        _ => "-".into(),
    };
    let mut f = Fields::default();
    f.add("model", text(&v["model"]))
        .add("digest", text(&v["digest"]))
        .add("size", bytes(&v["bytes_total"]))
        .add(
            "transferred",
            format!(
                "{} in {} ({rate})",
                bytes(&v["bytes_transferred"]),
                secs(&v["duration_s"])
            ),
        )
        .add("resumed", bytes(&v["bytes_resumed"]))
        .add("fits", text(&v["fits"]));
    f.done(&mut doc);
    doc
}

fn list_models(v: &Value) -> Doc {
    let mut doc = Doc::default();
    let mut f = Fields::default();
    f.add(
        "ollama",
        format!(
            "{} at {}",
            text(&v["ollama_version"]),
            text(&v["ollama_url"])
        ),
    )
    .add(
        "models",
        format!(
            "{} ({} loaded), {} on disk",
            text(&v["count"]),
            text(&v["loaded_count"]),
            bytes(&v["total_size_bytes"])
        ),
    );
    f.done(&mut doc);
    let rows = items(&v["models"])
        .iter()
        .map(|m| {
            vec![
                text(&m["name"]),
                bytes(&m["size_bytes"]),
                text(&m["quantization"]),
                text(&m["parameter_size"]),
                text(&m["max_context_length"]),
                if m["loaded"].as_bool() == Some(true) {
                    format!("{} ({} GPU)", text(&m["processor"]), share(&m["gpu_share"]))
                } else {
                    "-".into()
                },
                bytes(&m["memory_bytes"]),
                text(&m["expires_at"]),
            ]
        })
        .collect();
    doc.table(
        "models",
        &[
            "name",
            "size",
            "quant",
            "params",
            "max context",
            "loaded",
            "memory",
            "expires",
        ],
        rows,
    );
    doc
}

fn remove_model(v: &Value) -> Doc {
    let mut doc = Doc::default();
    let mut f = Fields::default();
    f.add("model", text(&v["model"]))
        .add("removed", text(&v["removed"]))
        .add("freed", bytes(&v["freed_bytes"]))
        .add("unloaded first", text(&v["unloaded"]))
        .add("message", text(&v["message"]));
    f.done(&mut doc);
    doc
}

fn set_kv_cache(v: &Value) -> Doc {
    let mut doc = Doc::default();
    let mut f = Fields::default();
    f.add(
        "target",
        format!("{} ({})", text(&v["target"]), text(&v["applies_to"])),
    )
    .add("changes", text(&v["changes"]))
    .add("applied", text(&v["applied"]))
    .add("verified", text(&v["verified"]))
    .add("memory", text(&v["memory_effect"]["summary"]))
    .add("still to do", text(&v["restart_required"]))
    .add("took", secs(&v["duration_s"]));
    f.done(&mut doc);
    let rows = [
        "kv_cache_type",
        "context_length",
        "num_parallel",
        "flash_attention",
    ]
    .iter()
    .map(|k| {
        vec![
            k.replace('_', " "),
            text(&v["current"][*k]),
            text(&v["new"][*k]),
        ]
    })
    .collect();
    doc.table("settings", &["setting", "current", "new"], rows);
    let rows = items(&v["verification"])
        .iter()
        .map(|c| vec![text(&c["check"]), text(&c["status"]), text(&c["detail"])])
        .collect();
    if !items(&v["verification"]).is_empty() {
        doc.table("verification", &["check", "status", "detail"], rows);
    }
    doc.list("warnings", strings(&v["warnings"]));
    if v["applied"].as_bool() == Some(false) && v["dry_run"].as_bool() != Some(true) {
        if let Some(plan) = v.get("plan") {
            plan_blocks(&mut doc, plan);
        }
    }
    doc
}

/// What was read, then the lines as a terminal shows logs:
/// `time instance stream | text`.
fn logs(v: &Value) -> Doc {
    let mut doc = Doc::default();
    let mut f = Fields::default();
    f.add("services", strings(&v["services"]).join(", "))
        .add(
            "returned",
            format!("{} lines, {}", text(&v["returned"]), bytes(&v["bytes"])),
        )
        .add("since", text(&v["since"]))
        .add("until", text(&v["until"]));
    if v["truncated"].as_bool() == Some(true) {
        f.add("truncated", "older lines left out (see notes)".into());
    }
    f.done(&mut doc);
    doc.list("notes", strings(&v["notes"]));
    doc.verbatim(
        items(&v["lines"])
            .iter()
            .map(|l| {
                format!(
                    "{} {} {} | {}",
                    text(&l["time"]),
                    text(&l["instance"]),
                    text(&l["stream"]),
                    text(&l["untrusted_output"])
                )
            })
            .collect(),
    );
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stack_status_is_a_table_of_services() {
        let v = json!({
            "project": "demo", "ready": false,
            "counts": {"containers": 2, "running": 1, "healthy": 1, "unhealthy": 0, "starting": 0, "not_running": 1},
            "services": [
                {"service": "db", "state": "running", "health": "healthy", "image": "postgres:16",
                 "ports": [{"host_ip": "127.0.0.1", "host_port": 5432, "container_port": 5432, "protocol": "tcp"}],
                 "restart_count": 0, "started_at": null},
                {"service": "web", "state": "exited", "health": null, "image": "busybox",
                 "ports": [], "restart_count": 3, "started_at": null}
            ]
        });
        let text = super::super::render::render("stack_status", &v).to_text(None);
        assert!(text.contains("ready       no"), "{text}");
        assert!(
            text.contains("SERVICE  STATE    HEALTH   IMAGE        PORTS"),
            "{text}"
        );
        assert!(
            text.contains("db       running  healthy  postgres:16  127.0.0.1:5432->5432/tcp"),
            "{text}"
        );
        assert!(
            text.contains("web      exited   -        busybox      -"),
            "{text}"
        );
    }

    #[test]
    fn detect_hardware_reads_in_units() {
        let v = json!({
            "os": {"name": "linux", "version": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.1", "wsl": false},
            "cpu": {"model": "Xeon", "arch": "x86_64", "logical_cores": 2, "simd": ["avx2"]},
            "memory": {"total_bytes": 25_276_063_744u64, "available_bytes": 23_710_871_552u64},
            "disk": {"free_bytes": 74_567_720_960u64, "total_bytes": 270_553_174_016u64, "path": "/stack"},
            "gpus": [], "gpu_absent_reason": "no NVIDIA driver",
            "cgroup": null, "apple": null,
            "runtime": {"docker": {"reachable": false, "error": "no socket"}, "compose": {"available": true, "version": "2.26.1"},
                        "nvidia_runtime": false, "ollama": {"reachable": false, "error": "refused"}}
        });
        let text = detect_hardware(&v).to_text(None);
        assert!(
            text.contains("disk    69.45 GiB free of 251.97 GiB (/stack)")
                || text.contains("69.45 GiB free of"),
            "{text}"
        );
        assert!(text.contains("22.08 GiB available of 23.54 GiB"), "{text}");
        assert!(text.contains("not available: no socket"), "{text}");
        assert!(!text.contains("74567720960"), "{text}");
    }
}
