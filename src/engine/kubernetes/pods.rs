//! Pods as the port's engine-neutral instances: phase and container states
//! mapped onto compose's words (`running`, `exited`, `created`,
//! `restarting`, `removing`), readiness as health, restarts, OOMKilled and
//! exit codes from the last termination, and the pod's warning events as
//! the health log (Kubernetes keeps probe failures as events, not per
//! container like Docker).
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};

use crate::domain::instance::{HealthRecord, Instance, InstanceDetail};
use crate::domain::kubernetes::labels;

fn ts(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> String {
    t.0.to_string()
}

/// The service's first container: the one rendered from the compose service
/// (helpers and sidecars come after it).
fn main_status(pod: &Pod) -> Option<&ContainerStatus> {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .map(|c| c.name.as_str());
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses
        .iter()
        .find(|s| Some(s.name.as_str()) == name)
        .or_else(|| statuses.first())
}

fn has_probe(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .is_some_and(|c| c.readiness_probe.is_some() || c.liveness_probe.is_some())
}

/// The compose word for a pod's state.
pub fn state_of(pod: &Pod) -> String {
    if pod.metadata.deletion_timestamp.is_some() {
        return "removing".into();
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    let main = main_status(pod);
    let waiting = main
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.as_deref());
    match phase {
        "Running" => {
            let running = main
                .and_then(|c| c.state.as_ref())
                .is_some_and(|s| s.running.is_some());
            if running {
                "running".into()
            } else if waiting == Some("CrashLoopBackOff")
                || main.is_some_and(|c| c.restart_count > 0)
            {
                "restarting".into()
            } else {
                "exited".into()
            }
        }
        "Succeeded" | "Failed" => "exited".into(),
        _ => {
            if waiting == Some("CrashLoopBackOff") {
                "restarting".into()
            } else {
                "created".into()
            }
        }
    }
}

/// Readiness as Docker's health words: `healthy` when Ready, `starting`
/// before the container has started (or passed its startup probe),
/// `unhealthy` after; None without a probe.
pub fn health_of(pod: &Pod) -> Option<String> {
    if !has_probe(pod) {
        return None;
    }
    let main = main_status(pod)?;
    Some(
        if main.ready {
            "healthy"
        } else if main.started != Some(true) {
            "starting"
        } else {
            "unhealthy"
        }
        .into(),
    )
}

fn label(pod: &Pod, key: &str) -> Option<String> {
    pod.metadata.labels.as_ref()?.get(key).cloned()
}

/// One pod as the list shows it.
pub fn instance_of(pod: &Pod) -> Instance {
    let spec = pod.spec.as_ref();
    let main = main_status(pod);
    let mut volumes: Vec<String> = spec
        .and_then(|s| s.volumes.as_ref())
        .map(|vs| {
            vs.iter()
                .filter_map(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .map(|c| c.claim_name.clone())
                })
                .collect()
        })
        .unwrap_or_default();
    volumes.sort();
    let number = label(pod, "apps.kubernetes.io/pod-index").and_then(|n| n.parse().ok());
    let service = label(pod, labels::SERVICE)
        .or_else(|| label(pod, labels::NAME))
        .unwrap_or_default();
    Instance {
        id: pod.metadata.name.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        project: label(pod, labels::PROJECT).or_else(|| label(pod, labels::INSTANCE)),
        service,
        number,
        state: state_of(pod),
        health: health_of(pod),
        image: spec
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone()),
        image_id: main.map(|c| c.image_id.clone()).filter(|s| !s.is_empty()),
        // Pods publish nothing on the host (no hostPort is rendered).
        ports: Vec::new(),
        role: label(pod, labels::ROLE),
        is_self: false,
        config_hash: pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(labels::CONFIG_DIGEST).cloned()),
        one_off: label(pod, labels::HELPER).is_some(),
        volumes,
        networks: Vec::new(),
    }
}

fn quantity_bytes(q: &str) -> Option<i64> {
    let q = q.trim();
    let units: [(&str, i64); 12] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("Ei", 1 << 60),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("E", 1_000_000_000_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| (n * mult as f64) as i64);
        }
    }
    q.parse::<f64>().ok().map(|n| n as i64)
}

/// A pod in detail, with its warning events (oldest first) as the health log
/// and its resolved environment.
pub fn detail_of(pod: &Pod, events: &[Event], env: Vec<String>) -> InstanceDetail {
    let instance = instance_of(pod);
    let main = main_status(pod);
    let spec = pod.spec.as_ref();
    let running = main
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.running.as_ref());
    let terminated_now = main
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    let last = main
        .and_then(|c| c.last_state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    let term = terminated_now.or(last);
    let waiting = main
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref());
    let oom = [terminated_now, last]
        .iter()
        .flatten()
        .any(|t| t.reason.as_deref() == Some("OOMKilled"));
    let error = waiting
        .filter(|w| w.reason.as_deref() != Some("ContainerCreating"))
        .map(|w| {
            format!(
                "{}{}",
                w.reason.as_deref().unwrap_or("waiting"),
                w.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            )
        })
        .or_else(|| {
            pod.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
                })
                .map(|c| {
                    format!(
                        "not scheduled: {}",
                        c.message.as_deref().unwrap_or("no reason given")
                    )
                })
        });
    let mut events: Vec<&Event> = events.iter().collect();
    events.sort_by_key(|e| event_time(e));
    let health_log: Vec<HealthRecord> = events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| HealthRecord {
            exit_code: None,
            end: event_time(e),
            output: format!(
                "event {}{}: {}",
                e.reason.as_deref().unwrap_or("?"),
                e.count
                    .filter(|c| *c > 1)
                    .map(|c| format!(" (x{c})"))
                    .unwrap_or_default(),
                e.message.as_deref().unwrap_or("").trim()
            ),
        })
        .collect();
    let failing_streak = (!health_log.is_empty()
        && instance.health.as_deref() == Some("unhealthy"))
    .then_some(health_log.len() as i64);
    let restart_policy = spec
        .and_then(|s| s.restart_policy.as_deref())
        .map(|p| match p {
            "Always" => "always".to_string(),
            "OnFailure" => "on-failure".to_string(),
            "Never" => "no".to_string(),
            other => other.to_ascii_lowercase(),
        });
    let memory_limit = spec
        .and_then(|s| s.containers.first())
        .and_then(|c| c.resources.as_ref())
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"))
        .and_then(|q| quantity_bytes(&q.0));
    let mut labels_out: BTreeMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with("io.stackpilot/") || k.starts_with("app.kubernetes.io/"))
        .collect();
    if let Some(node) = spec.and_then(|s| s.node_name.clone()) {
        labels_out.insert("io.stackpilot/node".into(), node);
    }
    InstanceDetail {
        serving: instance.running() && main.is_some_and(|c| c.ready || !has_probe(pod)),
        health_log,
        failing_streak,
        restart_count: main.map(|c| i64::from(c.restart_count)).unwrap_or(0),
        oom_killed: oom,
        exit_code: term.map(|t| i64::from(t.exit_code)),
        started_at: running
            .and_then(|r| r.started_at.as_ref())
            .or_else(|| term.and_then(|t| t.started_at.as_ref()))
            .map(ts),
        finished_at: term.and_then(|t| t.finished_at.as_ref()).map(ts),
        restart_policy,
        error,
        memory_limit,
        labels: labels_out,
        env,
        // The container's command and arguments as the pod spec gives them
        // (read for options such as Redis's `--requirepass`; never echoed).
        cmd: spec
            .and_then(|s| s.containers.first())
            .map(|c| {
                let mut cmd = c.command.clone().unwrap_or_default();
                cmd.extend(c.args.clone().unwrap_or_default());
                cmd
            })
            .unwrap_or_default(),
        instance,
    }
}

/// When an event last happened (RFC 3339), whichever field the emitter set.
pub fn event_time(e: &Event) -> Option<String> {
    e.last_timestamp
        .as_ref()
        .map(ts)
        .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
        .or_else(|| e.first_timestamp.as_ref().map(ts))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity_bytes("16Gi"), Some(17_179_869_184));
        assert_eq!(quantity_bytes("512Mi"), Some(536_870_912));
        assert_eq!(quantity_bytes("1G"), Some(1_000_000_000));
        assert_eq!(quantity_bytes("1048576"), Some(1_048_576));
    }

    #[test]
    fn crash_loop_is_restarting_and_oom_is_read_from_last_state() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db-0", "labels": {"io.stackpilot/service": "db", "apps.kubernetes.io/pod-index": "0"}},
            "spec": {"containers": [{"name": "db", "image": "pg", "readinessProbe": {"exec": {"command": ["true"]}},
                     "resources": {"limits": {"memory": "6Mi"}}}], "restartPolicy": "Always"},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "db", "image": "pg", "imageID": "sha", "ready": false, "restartCount": 4, "started": false,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-01-01T00:00:00Z"}}
            }]}
        }))
        .expect("pod");
        let d = detail_of(&pod, &[], vec![]);
        assert_eq!(d.instance.state, "restarting");
        assert_eq!(d.instance.service, "db");
        assert_eq!(d.instance.number, Some(0));
        assert_eq!(d.instance.health.as_deref(), Some("starting"));
        assert!(d.oom_killed);
        assert_eq!(d.exit_code, Some(137));
        assert_eq!(d.restart_count, 4);
        assert_eq!(d.memory_limit, Some(6 * 1024 * 1024));
        assert_eq!(d.restart_policy.as_deref(), Some("always"));
        assert!(d
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("CrashLoopBackOff")));
        assert!(!d.serving);
    }
}
