//! The verdict rules of `health`, as pure functions over what the probes saw.
//!
//! Every observation becomes a signal (a verdict, one line, a hint); a
//! service's verdict is its worst signal, its reason that signal's line, its
//! evidence every line. Per container:
//!
//! | observed | verdict |
//! | --- | --- |
//! | no container for the service | missing |
//! | exited / created / paused / dead (exit code, OOMKilled in evidence) | stopped |
//! | restarting (the restart policy is bringing it back after an exit) | unhealthy (crash loop) |
//! | running, >= 3 policy restarts and up < 60 s | unhealthy (crash loop) |
//! | running, Docker health `unhealthy` | unhealthy |
//! | running, a deep probe failed (HTTP not 2xx, pg_isready, select 1, ping, PING, /readyz, command exit != 0, Ollama API down) | unhealthy |
//! | running, no compose healthcheck and no x-stackpilot health, and a TCP connect to its port from a helper on its network fails | unhealthy |
//! | running, a published TCP port refuses and there is no health check | unhealthy |
//! | running, a published TCP port refuses while the health check passes or starts | degraded |
//! | running, Docker health `starting` | degraded |
//! | running, 1-2 policy restarts and up < 60 s | degraded |
//! | Ollama holds a model with size_vram 0 (or only part of it on the GPU) while a GPU is expected | degraded |
//! | none of the above | healthy |
//!
//! With several containers (replicas) the worst one decides. The host is
//! judged apart: under 10 % free disk (stack, backups, engine data root) or
//! memory pressure (under 10 % available, or PSI some avg10 >= 10) is degraded.
use serde_json::json;

use crate::domain::health::types::*;
use crate::domain::stack_model::{Role, ServiceModel};

/// A restart this recent counts toward a crash loop.
pub const CRASH_WINDOW_S: u64 = 60;
/// Policy restarts within the window that make a crash loop.
pub const CRASH_LOOP_RESTARTS: i64 = 3;
/// Evidence lines are capped at this many bytes, and at most this many kept.
pub const EVIDENCE_BYTES: usize = 300;
pub const EVIDENCE_LINES: usize = 12;
/// Under this share of free disk or available memory, the host is degraded.
pub const LOW_PCT: f64 = 10.0;
/// PSI `some avg10` at or above this is memory pressure.
pub const PSI_PRESSURE: f64 = 10.0;

#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub verdict: Verdict,
    pub text: String,
    pub hint: Option<Hint>,
}

fn signal(verdict: Verdict, text: impl Into<String>, hint: Option<Hint>) -> Signal {
    Signal {
        verdict,
        text: text.into(),
        hint,
    }
}

pub fn recover_hint(service: &str, action: &str, text: impl Into<String>) -> Hint {
    Hint {
        tool: "recover".into(),
        arguments: Some(json!({"service": service, "action": action, "wait": true})),
        text: text.into(),
    }
}

pub fn logs_hint(service: &str, text: impl Into<String>) -> Hint {
    Hint {
        tool: "health".into(),
        arguments: Some(json!({"services": [service], "logs_tail": 50})),
        text: text.into(),
    }
}

fn tool_hint(tool: &str, text: impl Into<String>) -> Hint {
    Hint {
        tool: tool.into(),
        arguments: None,
        text: text.into(),
    }
}

/// Everything observed about one service.
pub struct ServiceFacts<'a> {
    pub service: &'a ServiceModel,
    pub containers: &'a [ContainerReport],
    pub ports: &'a [PortReport],
    pub probes: &'a [ProbeReport],
    pub ollama: Option<&'a OllamaReport>,
    /// `docker info` lists an `nvidia` runtime (None: unknown).
    pub nvidia_runtime: Option<bool>,
    /// No service of the stack has a container: the stack was never brought up.
    pub stack_down: bool,
}

/// The judgement of one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub reason: String,
    pub evidence: Vec<String>,
    pub hint: Option<Hint>,
}

pub fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn mib(bytes: i64) -> String {
    format!("{} MiB", bytes / (1024 * 1024))
}

fn container_signals(svc: &str, c: &ContainerReport, prefix: &str) -> Vec<Signal> {
    let mut out = Vec::new();
    let limit = c
        .memory_limit_bytes
        .filter(|l| *l > 0)
        .map(|l| format!(" (limit {})", mib(l)))
        .unwrap_or_default();
    let oom_hint = || {
        recover_hint(
            svc,
            "recreate",
            format!(
                "the kernel killed it for memory{limit}: raise deploy.resources.limits.memory for `{svc}` \
                 in the compose file, then recover with action recreate (a restart hits the same limit)"
            ),
        )
    };
    let code = c
        .exit_code
        .map(|c| c.to_string())
        .unwrap_or_else(|| "?".into());
    match c.state.as_str() {
        "running" => {
            let up = c.uptime_s.unwrap_or(u64::MAX);
            if c.restart_count >= CRASH_LOOP_RESTARTS && up < CRASH_WINDOW_S {
                out.push(signal(
                    Verdict::Unhealthy,
                    format!(
                        "{prefix}crash loop: {} restarts by the restart policy, up only {}",
                        c.restart_count,
                        human_duration(up)
                    ),
                    Some(logs_hint(
                        svc,
                        "it keeps exiting right after start: read why (health with logs_tail), fix the configuration, then recover with action recreate",
                    )),
                ));
            } else if c.restart_count >= 1 && up < CRASH_WINDOW_S {
                out.push(signal(
                    Verdict::Degraded,
                    format!(
                        "{prefix}restarted {} time(s) by the restart policy, up {}",
                        c.restart_count,
                        human_duration(up)
                    ),
                    Some(logs_hint(
                        svc,
                        "it exited recently: read why (health with logs_tail) before it happens again",
                    )),
                ));
            }
            match c.health_status.as_deref() {
                Some("unhealthy") => {
                    let last = c
                        .health_log
                        .last()
                        .and_then(|r| r.exit_code)
                        .map(|e| format!("; last probe exit {e}"))
                        .unwrap_or_default();
                    out.push(signal(
                        Verdict::Unhealthy,
                        format!(
                            "{prefix}Docker health check failing ({} in a row{last})",
                            c.failing_streak.unwrap_or(0)
                        ),
                        Some(recover_hint(
                            svc,
                            "restart",
                            "the health check fails (its output is in containers[].health_log): recover with action restart; if it keeps failing, read the logs (health with logs_tail)",
                        )),
                    ));
                }
                Some("starting") => out.push(signal(
                    Verdict::Degraded,
                    format!(
                        "{prefix}Docker health check still starting (up {})",
                        human_duration(up.min(u64::from(u32::MAX)))
                    ),
                    Some(Hint {
                        tool: "health".into(),
                        arguments: Some(json!({"services": [svc]})),
                        text: "it is still starting: call health again in a few seconds".into(),
                    }),
                )),
                _ => {}
            }
        }
        "unknown" => out.push(signal(
            Verdict::Unhealthy,
            format!(
                "{prefix}the engine could not inspect it: {}",
                c.engine_error.as_deref().unwrap_or("no answer")
            ),
            Some(Hint {
                tool: "health".into(),
                arguments: Some(json!({"services": [svc]})),
                text: "the engine did not answer in time: call health again; if it persists, check the engine (detect_hardware)".into(),
            }),
        )),
        "restarting" => {
            let oom = if c.oom_killed { ", OOM-killed" } else { "" };
            out.push(signal(
                Verdict::Unhealthy,
                format!(
                    "{prefix}crash loop: restarting after exit code {code}{oom} ({} restarts)",
                    c.restart_count
                ),
                Some(if c.oom_killed {
                    oom_hint()
                } else {
                    logs_hint(
                        svc,
                        "it exits right after it starts: read why (health with logs_tail), fix the configuration, then recover with action recreate",
                    )
                }),
            ));
        }
        state => {
            let (text, hint) = if c.oom_killed {
                (
                    format!("{prefix}OOM-killed: exited with code {code}{limit}"),
                    oom_hint(),
                )
            } else if state == "created" {
                (
                    format!("{prefix}created but never started"),
                    recover_hint(svc, "restart", "start it: recover with action restart"),
                )
            } else if state == "paused" {
                (
                    format!("{prefix}paused"),
                    recover_hint(svc, "restart", "recover with action restart"),
                )
            } else {
                let engine = c
                    .engine_error
                    .as_deref()
                    .filter(|e| !e.is_empty())
                    .map(|e| format!(" (engine: {e})"))
                    .unwrap_or_default();
                let by_stop = matches!(c.exit_code, Some(0 | 137 | 143));
                (
                    format!("{prefix}{state} with code {code}{engine}"),
                    recover_hint(
                        svc,
                        "restart",
                        if by_stop {
                            "start it again: recover with action restart".to_string()
                        } else {
                            "recover with action restart; if it exits again, read why (health with logs_tail)".to_string()
                        },
                    ),
                )
            };
            out.push(signal(Verdict::Stopped, text, Some(hint)));
        }
    }
    out
}

fn fact_line(c: &ContainerReport) -> String {
    let mut parts = vec![format!("container {}: {}", c.name, c.state)];
    if let Some(up) = c.uptime_s {
        parts.push(format!("up {}", human_duration(up)));
    }
    parts.push(format!(
        "health {}",
        c.health_status
            .as_deref()
            .unwrap_or("none (no health check)")
    ));
    parts.push(format!("restarts {}", c.restart_count));
    if c.state != "running" {
        if let Some(code) = c.exit_code {
            parts.push(format!("exit code {code}"));
        }
        parts.push(format!("OOMKilled {}", c.oom_killed));
    }
    if let Some(p) = &c.restart_policy {
        parts.push(format!("restart policy {p}"));
    }
    parts.join(", ")
}

fn ollama_signals(
    svc: &ServiceModel,
    o: &OllamaReport,
    nvidia_runtime: Option<bool>,
) -> Vec<Signal> {
    let name = &svc.name;
    let mut out = Vec::new();
    if o.version.is_none() {
        out.push(signal(
            Verdict::Unhealthy,
            format!(
                "Ollama API does not answer at {}: {}",
                o.url,
                o.error.as_deref().unwrap_or("no answer")
            ),
            Some(recover_hint(
                name,
                "restart",
                "the Ollama server does not answer: recover with action restart; if it persists, read the logs (health with logs_tail)",
            )),
        ));
        return out;
    }
    if let Some(e) = &o.error {
        out.push(signal(
            Verdict::Degraded,
            format!("Ollama answers /api/version but /api/ps failed: {e}"),
            None,
        ));
    }
    if !o.gpu_expected {
        return out;
    }
    for m in &o.models {
        if m.size_vram_bytes == 0 {
            let hint = match (nvidia_runtime, svc.gpu) {
                (Some(false), _) => tool_hint(
                    "select_profile",
                    "the engine has no NVIDIA runtime: install the NVIDIA Container Toolkit and restart Docker, \
                     or run select_profile (write_env) to switch to the cpu profile",
                ),
                (_, false) => tool_hint(
                    "select_profile",
                    format!("`{name}` reserves no GPU in the compose file: run select_profile (write_env) for a GPU profile, then compose_up"),
                ),
                _ => tool_hint(
                    "detect_hardware",
                    "the container does not see the GPU: check the driver with detect_hardware, then recover with action recreate",
                ),
            };
            let runtime = match nvidia_runtime {
                Some(false) => ", the engine has no NVIDIA runtime",
                _ => "",
            };
            out.push(signal(
                Verdict::Degraded,
                format!(
                    "Ollama runs {} on the CPU (size_vram 0 of {} bytes) while a GPU is expected{runtime}",
                    m.name, m.size_bytes
                ),
                Some(hint),
            ));
        } else if m.size_vram_bytes < m.size_bytes {
            out.push(signal(
                Verdict::Degraded,
                format!(
                    "only {:.0} % of {} is on the GPU ({} of {} bytes): the rest runs on the CPU",
                    m.gpu_share * 100.0,
                    m.name,
                    m.size_vram_bytes,
                    m.size_bytes
                ),
                Some(tool_hint(
                    "select_profile",
                    "the model and its KV cache do not fit in GPU memory: run select_profile for a smaller context or KV cache type (set_kv_cache applies it)",
                )),
            ));
        }
    }
    out
}

fn probe_hint(svc: &ServiceModel, probe: &ProbeReport) -> Hint {
    let what = match svc.role {
        _ if probe.name.starts_with("tcp ") => {
            "nothing accepts connections on its port inside the network"
        }
        Role::Postgres => "Postgres does not accept queries",
        Role::Mongodb => "MongoDB does not answer a ping",
        Role::Qdrant => "Qdrant is not ready",
        Role::Redis => "Redis does not answer PING",
        _ => "the service's own health probe fails",
    };
    recover_hint(
        &svc.name,
        "restart",
        format!(
            "{what} ({}): recover with action restart; if it persists, read the logs (health with logs_tail)",
            probe.name
        ),
    )
}

/// Judges one service (see the module docs for the rules).
pub fn judge(f: &ServiceFacts) -> Judgement {
    let svc = &f.service.name;
    if f.containers.is_empty() {
        let hint = if f.stack_down {
            tool_hint(
                "compose_up",
                "no service of the stack has a container: bring the stack up with compose_up",
            )
        } else {
            recover_hint(
                svc,
                "recreate",
                "create its container: recover with action recreate (or compose_up)",
            )
        };
        let reason = "no container: the service was never created or its container was removed";
        return Judgement {
            verdict: Verdict::Missing,
            reason: reason.into(),
            evidence: vec![reason.into()],
            hint: Some(hint),
        };
    }
    let many = f.containers.len() > 1;
    let mut signals: Vec<Signal> = Vec::new();
    for c in f.containers {
        let prefix = if many {
            format!("{}: ", c.name)
        } else {
            String::new()
        };
        signals.extend(container_signals(svc, c, &prefix));
    }
    let running = f.containers.iter().any(|c| c.state == "running");
    if running {
        let checked = f
            .containers
            .iter()
            .any(|c| matches!(c.health_status.as_deref(), Some("healthy" | "starting")));
        for p in f.ports.iter().filter(|p| p.open == Some(false)) {
            let at = p.probed.clone().unwrap_or_else(|| p.host_port.to_string());
            if checked {
                signals.push(signal(
                    Verdict::Degraded,
                    format!(
                        "{at} (container port {}) refuses connections while the health check passes",
                        p.container_port
                    ),
                    Some(recover_hint(
                        svc,
                        "recreate",
                        "the published port may map to the wrong container port: fix `ports:` in the compose file, then recover with action recreate",
                    )),
                ));
            } else {
                signals.push(signal(
                    Verdict::Unhealthy,
                    format!(
                        "nothing accepts connections on {at} (container port {}): {}",
                        p.container_port,
                        p.error.as_deref().unwrap_or("refused")
                    ),
                    Some(recover_hint(
                        svc,
                        "restart",
                        "the service does not listen: recover with action restart; if it persists, read the logs (health with logs_tail)",
                    )),
                ));
            }
        }
        for p in f.probes.iter().filter(|p| !p.ok && !p.skipped) {
            signals.push(signal(
                Verdict::Unhealthy,
                format!("{} failed: {}", p.name, p.detail),
                Some(probe_hint(f.service, p)),
            ));
        }
        if let Some(o) = f.ollama {
            signals.extend(ollama_signals(f.service, o, f.nvidia_runtime));
        }
    }
    let verdict = signals
        .iter()
        .map(|s| s.verdict)
        .max()
        .unwrap_or(Verdict::Healthy);
    let worst = signals.iter().find(|s| s.verdict == verdict);
    let reason = match worst {
        Some(s) => s.text.clone(),
        None => healthy_reason(f),
    };
    let hint = worst.and_then(|s| s.hint.clone());
    let mut evidence: Vec<String> = signals.iter().map(|s| s.text.clone()).collect();
    evidence.extend(f.containers.iter().map(fact_line));
    for p in f.ports.iter().filter(|p| p.open == Some(true)) {
        evidence.push(format!(
            "{} accepts connections ({:.1} ms)",
            p.probed.as_deref().unwrap_or("port"),
            p.ms
        ));
    }
    for p in f.probes.iter().filter(|p| p.ok || p.skipped) {
        evidence.push(format!("{}: {}", p.name, p.detail));
    }
    if let Some(o) = f.ollama {
        if o.version.is_some() {
            let models: Vec<String> = o
                .models
                .iter()
                .map(|m| format!("{} ({:.0} % on GPU)", m.name, m.gpu_share * 100.0))
                .collect();
            evidence.push(format!(
                "Ollama {} at {}; loaded: {}",
                o.version.as_deref().unwrap_or("?"),
                o.url,
                if models.is_empty() {
                    "none".to_string()
                } else {
                    models.join(", ")
                }
            ));
        }
    }
    Judgement {
        verdict,
        reason,
        evidence: bound_evidence(evidence),
        hint,
    }
}

fn healthy_reason(f: &ServiceFacts) -> String {
    let up = f
        .containers
        .iter()
        .filter_map(|c| c.uptime_s)
        .min()
        .map(|u| format!(" (up {})", human_duration(u)))
        .unwrap_or_default();
    let mut parts = vec![format!("running{up}")];
    let health: Vec<&str> = f
        .containers
        .iter()
        .filter_map(|c| c.health_status.as_deref())
        .collect();
    if !health.is_empty() {
        parts.push("health check passing".into());
    }
    let probed: Vec<&PortReport> = f.ports.iter().filter(|p| p.open.is_some()).collect();
    if !probed.is_empty() {
        parts.push(format!("{} port(s) open", probed.len()));
    }
    let ran = f.probes.iter().filter(|p| !p.skipped).count();
    if ran > 0 {
        parts.push(format!("{ran} probe(s) ok"));
    }
    parts.join(", ")
}

pub fn bound_evidence(lines: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in lines {
        let l = crate::domain::redact::cap(&l, EVIDENCE_BYTES);
        if !out.contains(&l) {
            out.push(l);
        }
    }
    if out.len() > EVIDENCE_LINES {
        let cut = out.len() - (EVIDENCE_LINES - 1);
        out.truncate(EVIDENCE_LINES - 1);
        out.push(format!("… {cut} more lines cut"));
    }
    out
}

/// The host's signals (disk, memory).
pub fn judge_host(disks: &[DiskReport], memory: &MemoryReport) -> Judgement {
    let mut signals = Vec::new();
    for d in disks.iter().filter(|d| d.low) {
        let hint = if d.what == "backups" {
            tool_hint(
                "prune_backups",
                format!(
                    "free space where backups live ({}): prune_backups drops old backups",
                    d.path
                ),
            )
        } else {
            tool_hint(
                "prune_backups",
                format!(
                    "free space on {} ({}): prune_backups drops old backups; unused images and volumes take space too",
                    d.path, d.what
                ),
            )
        };
        signals.push(signal(
            Verdict::Degraded,
            format!(
                "only {:.1} % disk free at {} ({}): {} of {} bytes",
                d.free_pct.unwrap_or(0.0),
                d.path,
                d.what,
                d.free_bytes.unwrap_or(0),
                d.total_bytes.unwrap_or(0)
            ),
            Some(hint),
        ));
    }
    if memory.pressure {
        signals.push(signal(
            Verdict::Degraded,
            format!(
                "memory pressure: {} available, PSI some avg10 {}",
                memory
                    .available_pct
                    .map(|p| format!("{p:.1} %"))
                    .unwrap_or_else(|| "?".into()),
                memory
                    .psi_some_avg10
                    .map(|p| format!("{p:.1}"))
                    .unwrap_or_else(|| "n/a".into())
            ),
            Some(tool_hint(
                "select_profile",
                "the host is short of memory: a smaller model or context (select_profile) frees the most",
            )),
        ));
    }
    let verdict = signals
        .iter()
        .map(|s| s.verdict)
        .max()
        .unwrap_or(Verdict::Healthy);
    let mut evidence: Vec<String> = signals.iter().map(|s| s.text.clone()).collect();
    for d in disks.iter().filter(|d| !d.low) {
        if let Some(p) = d.free_pct {
            evidence.push(format!("{:.1} % disk free at {} ({})", p, d.path, d.what));
        }
    }
    if let Some(p) = memory.available_pct {
        evidence.push(format!("{p:.1} % memory available"));
    }
    Judgement {
        verdict,
        reason: signals
            .first()
            .map(|s| s.text.clone())
            .unwrap_or_else(|| "disk and memory fine".into()),
        evidence: bound_evidence(evidence),
        hint: signals.into_iter().find_map(|s| s.hint),
    }
}

/// The stack's verdict: unhealthy when any service is unhealthy, stopped or
/// missing; degraded when anything (services or host) is degraded.
pub fn overall(services: &[Verdict], host: Verdict) -> Overall {
    let worst = services.iter().copied().max().unwrap_or(Verdict::Healthy);
    if worst >= Verdict::Unhealthy {
        Overall::Unhealthy
    } else if worst == Verdict::Degraded || host != Verdict::Healthy {
        Overall::Degraded
    } else {
        Overall::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::stack_model::PublishedPort;

    fn svc(name: &str, role: Role) -> ServiceModel {
        ServiceModel {
            name: name.into(),
            image: Some("busybox".into()),
            build: false,
            pull_policy: None,
            role,
            role_source: Default::default(),
            health: None,
            backup: None,
            healthcheck: true,
            named_volumes: vec![],
            ports: vec![PublishedPort {
                host_ip: "127.0.0.1".into(),
                host_port: 18080,
                container_port: 8080,
                protocol: "tcp".into(),
            }],
            container_ports: vec![],
            gpu: false,
            profiles: vec![],
            depends_on: vec![],
            stop_during_backup: false,
            container_name: None,
        }
    }

    fn container(state: &str) -> ContainerReport {
        ContainerReport {
            name: "p-web-1".into(),
            id: "0123456789ab".into(),
            state: state.into(),
            health_status: Some("healthy".into()),
            failing_streak: Some(0),
            health_log: vec![],
            restart_count: 0,
            oom_killed: false,
            exit_code: Some(0),
            started_at: None,
            finished_at: None,
            uptime_s: (state == "running").then_some(600),
            restart_policy: Some("unless-stopped".into()),
            engine_error: None,
            memory_limit_bytes: Some(64 << 20),
            inspect_ms: 1.0,
        }
    }

    fn port(open: bool) -> PortReport {
        PortReport {
            host_ip: "127.0.0.1".into(),
            host_port: 18080,
            container_port: 8080,
            protocol: "tcp".into(),
            probed: Some("127.0.0.1:18080".into()),
            open: Some(open),
            error: (!open).then(|| "Connection refused (os error 111)".into()),
            ms: 0.2,
        }
    }

    fn judge_one(
        s: &ServiceModel,
        cs: &[ContainerReport],
        ports: &[PortReport],
        probes: &[ProbeReport],
        ollama: Option<&OllamaReport>,
    ) -> Judgement {
        judge(&ServiceFacts {
            service: s,
            containers: cs,
            ports,
            probes,
            ollama,
            nvidia_runtime: Some(false),
            stack_down: false,
        })
    }

    #[test]
    fn healthy_when_everything_answers() {
        let s = svc("web", Role::Api);
        let j = judge_one(&s, &[container("running")], &[port(true)], &[], None);
        assert_eq!(j.verdict, Verdict::Healthy);
        assert!(j.hint.is_none());
        assert!(j.reason.starts_with("running (up 10m)"), "{}", j.reason);
    }

    #[test]
    fn missing_and_stopped() {
        let s = svc("web", Role::Api);
        let j = judge_one(&s, &[], &[], &[], None);
        assert_eq!(j.verdict, Verdict::Missing);
        let h = j.hint.expect("hint");
        assert_eq!(h.tool, "recover");
        assert_eq!(h.arguments.expect("args")["action"], "recreate");
        let down = judge(&ServiceFacts {
            service: &s,
            containers: &[],
            ports: &[],
            probes: &[],
            ollama: None,
            nvidia_runtime: None,
            stack_down: true,
        });
        assert_eq!(down.hint.expect("hint").tool, "compose_up");

        let mut c = container("exited");
        c.exit_code = Some(137);
        let j = judge_one(&s, &[c.clone()], &[], &[], None);
        assert_eq!(j.verdict, Verdict::Stopped);
        assert_eq!(j.reason, "exited with code 137");
        assert_eq!(
            j.hint.expect("hint").arguments.expect("a")["action"],
            "restart"
        );

        c.oom_killed = true;
        let j = judge_one(&s, &[c], &[], &[], None);
        assert_eq!(j.verdict, Verdict::Stopped);
        assert!(j.reason.contains("OOM-killed"), "{}", j.reason);
        assert!(j.reason.contains("limit 64 MiB"), "{}", j.reason);
        let h = j.hint.expect("hint");
        assert!(h.text.contains("deploy.resources.limits.memory"));
        assert_eq!(h.arguments.expect("a")["action"], "recreate");
    }

    #[test]
    fn crash_loops_and_failing_checks_are_unhealthy() {
        let s = svc("web", Role::Api);
        let mut c = container("restarting");
        c.exit_code = Some(3);
        c.restart_count = 5;
        let j = judge_one(&s, &[c], &[], &[], None);
        assert_eq!(j.verdict, Verdict::Unhealthy);
        assert!(j.reason.starts_with("crash loop"), "{}", j.reason);
        assert_eq!(j.hint.expect("hint").tool, "health");

        let mut c = container("running");
        c.restart_count = 4;
        c.uptime_s = Some(2);
        assert_eq!(
            judge_one(&s, &[c.clone()], &[], &[], None).verdict,
            Verdict::Unhealthy
        );
        c.restart_count = 1;
        assert_eq!(
            judge_one(&s, &[c], &[], &[], None).verdict,
            Verdict::Degraded
        );

        let mut c = container("running");
        c.health_status = Some("unhealthy".into());
        c.failing_streak = Some(4);
        c.health_log = vec![HealthProbeRecord {
            exit_code: Some(1),
            end: None,
            untrusted_output: "wget: server returned error: HTTP/1.0 404 Not Found".into(),
        }];
        let j = judge_one(&s, &[c], &[port(true)], &[], None);
        assert_eq!(j.verdict, Verdict::Unhealthy);
        assert_eq!(
            j.reason,
            "Docker health check failing (4 in a row; last probe exit 1)"
        );
        assert!(
            !j.evidence.iter().any(|e| e.contains("404")),
            "container output stays out of evidence"
        );
    }

    #[test]
    fn ports_and_probes() {
        let s = svc("web", Role::Api);
        let j = judge_one(&s, &[container("running")], &[port(false)], &[], None);
        assert_eq!(j.verdict, Verdict::Degraded, "health passes, port refuses");
        let mut c = container("running");
        c.health_status = None;
        let j = judge_one(&s, &[c], &[port(false)], &[], None);
        assert_eq!(
            j.verdict,
            Verdict::Unhealthy,
            "no health check, port refuses"
        );
        let probe = ProbeReport {
            name: "http GET http://127.0.0.1:18080/health".into(),
            ok: false,
            skipped: false,
            detail: "HTTP 404".into(),
            untrusted_output: None,
            ms: 1.0,
        };
        let j = judge_one(&s, &[container("running")], &[port(true)], &[probe], None);
        assert_eq!(j.verdict, Verdict::Unhealthy);
        assert_eq!(
            j.reason,
            "http GET http://127.0.0.1:18080/health failed: HTTP 404"
        );
        let mut c = container("running");
        c.health_status = Some("starting".into());
        assert_eq!(
            judge_one(&s, &[c], &[], &[], None).verdict,
            Verdict::Degraded
        );
    }

    fn ollama(gpu_expected: bool, vram: u64) -> OllamaReport {
        OllamaReport {
            url: "http://127.0.0.1:11434".into(),
            version: Some("0.9.6".into()),
            gpu_expected,
            models: vec![LoadedModel {
                name: "llama3.1:8b".into(),
                size_bytes: 6_000_000_000,
                size_vram_bytes: vram,
                gpu_share: vram as f64 / 6e9,
                context_length: Some(32768),
                expires_at: None,
            }],
            error: None,
            ms: 1.0,
        }
    }

    #[test]
    fn ollama_on_the_cpu_names_select_profile() {
        let s = svc("ollama", Role::Ollama);
        let o = ollama(true, 0);
        let j = judge_one(&s, &[container("running")], &[port(true)], &[], Some(&o));
        assert_eq!(j.verdict, Verdict::Degraded);
        assert!(j.reason.contains("on the CPU (size_vram 0"), "{}", j.reason);
        assert!(j.reason.contains("no NVIDIA runtime"), "{}", j.reason);
        assert_eq!(j.hint.expect("hint").tool, "select_profile");

        let j = judge_one(
            &s,
            &[container("running")],
            &[port(true)],
            &[],
            Some(&ollama(true, 3_000_000_000)),
        );
        assert_eq!(j.verdict, Verdict::Degraded);
        assert!(
            j.reason.starts_with("only 50 % of llama3.1:8b"),
            "{}",
            j.reason
        );

        let j = judge_one(
            &s,
            &[container("running")],
            &[port(true)],
            &[],
            Some(&ollama(false, 0)),
        );
        assert_eq!(j.verdict, Verdict::Healthy, "cpu profile: CPU is expected");

        let mut down = ollama(true, 0);
        down.version = None;
        down.error = Some("connection refused".into());
        let j = judge_one(&s, &[container("running")], &[port(true)], &[], Some(&down));
        assert_eq!(j.verdict, Verdict::Unhealthy);
    }

    #[test]
    fn host_and_overall() {
        let low = DiskReport {
            what: "backups".into(),
            path: "/b".into(),
            free_bytes: Some(5),
            total_bytes: Some(100),
            free_pct: Some(5.0),
            low: true,
        };
        let mem = MemoryReport {
            total_bytes: Some(100),
            available_bytes: Some(50),
            available_pct: Some(50.0),
            psi_some_avg10: Some(0.0),
            pressure: false,
        };
        let j = judge_host(&[low], &mem);
        assert_eq!(j.verdict, Verdict::Degraded);
        assert_eq!(j.hint.expect("hint").tool, "prune_backups");
        assert_eq!(judge_host(&[], &mem).verdict, Verdict::Healthy);
        assert_eq!(
            overall(&[Verdict::Healthy, Verdict::Stopped], Verdict::Healthy),
            Overall::Unhealthy
        );
        assert_eq!(
            overall(&[Verdict::Healthy], Verdict::Degraded),
            Overall::Degraded
        );
        assert_eq!(
            overall(&[Verdict::Healthy], Verdict::Healthy),
            Overall::Healthy
        );
    }

    #[test]
    fn evidence_is_bounded() {
        let lines: Vec<String> = (0..40)
            .map(|i| format!("{i} {}", "x".repeat(500)))
            .collect();
        let b = bound_evidence(lines);
        assert_eq!(b.len(), EVIDENCE_LINES);
        assert!(b.iter().all(|l| l.len() <= EVIDENCE_BYTES + 40));
    }
}
