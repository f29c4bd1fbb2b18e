//! health: whether every part of the stack works, why not, and what to do
//! next. Read-only.
//!
//! For each service, concurrently, each probe with its own timeout:
//! 1. container (inspect, 2 s): running or not, Docker health status and its
//!    last probe outputs, restart count, OOMKilled, exit code, uptime, restart
//!    policy, memory limit;
//! 2. reachability (500 ms each): a TCP connect to every TCP port the
//!    container publishes on the host (0.0.0.0 and :: are dialled on loopback);
//! 3. with `deep`, the role probe, against the first running container:
//!    ollama `GET /api/version` and `/api/ps` (loaded models, the share of
//!    each on the GPU from size_vram / size, context length); postgres
//!    `pg_isready` and `select 1` through `docker exec`; mongodb a ping through
//!    `mongosh` (or `mongo` where the image has only that); qdrant
//!    `GET /readyz`; any other service its x-stackpilot health: a path
//!    (`/health`) is an HTTP GET on its first published TCP port (api
//!    defaults to `/health`), anything else a command run with `sh -c` inside
//!    the container. HTTP 2 s, exec 5 s;
//! 4. with `logs_tail`, the last lines of each container's log.
//!
//! The host is checked alongside: free disk for the stack, the backup root and
//! the engine's data root (where named volumes live; measured when the engine
//! is local), memory (MemAvailable, PSI), NVIDIA GPU memory (NVML). With
//! `deep` on the apple-metal profile, Ollama on the host (OLLAMA_HOST).
//!
//! Verdicts follow the rules in `health_rules` (missing, stopped, unhealthy,
//! degraded, healthy), each with its evidence and a hint naming the tool to
//! call. The stack is unhealthy when any service is unhealthy, stopped or
//! missing, degraded when anything is degraded. Output is bounded: evidence
//! lines capped, health-check and probe output capped and redacted, logs only
//! when asked (at most 200 lines and 8 KiB per service), and text written by
//! containers only in fields named `untrusted_output`.
//!
//! The compose model is reused while the compose files and .env are unchanged
//! (adapters::compose_cache) and `docker info` for a minute, so a call costs
//! the engine round trips and the probes, which run concurrently: the wall
//! time follows the slowest probe, not the sum (`timings`).
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::adapters::net_probe::{self, OllamaPs, OllamaVersion};
use crate::adapters::{env_file, hardware, ollama_probe};
use crate::app::App;
use crate::domain::error::ToolError;
use crate::domain::health::rules::{self as health_rules, ServiceFacts};
use crate::domain::health::types::*;
use crate::domain::instance::{EngineFacts, Instance, InstanceDetail};
use crate::domain::redact::{self, secret_values};
use crate::domain::stack_model::{PublishedPort, Role, ServiceModel, StackModel};
use crate::engine::{process, Engine, HelperSpec};
use crate::guard::{Call, Reply};
use crate::tools::def::{self, Hints, ToolDef};

pub const MAX_LOGS_TAIL: u32 = 200;
pub const LOG_BYTES_PER_SERVICE: usize = 8 * 1024;
pub const MAX_SERVICES: usize = 100;

const LIST_TIMEOUT: Duration = Duration::from_secs(2);
const INSPECT_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
const EXEC_TIMEOUT: Duration = Duration::from_secs(5);
/// A helper container is created, started, run and removed within this.
const NETWORK_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
const LOGS_TIMEOUT: Duration = Duration::from_secs(3);
const INFO_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes of probe output kept (exec output, HTTP bodies of failed probes).
const PROBE_OUTPUT_BYTES: usize = 512;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Services to check, by compose service name. Default: every service of the
    /// stack (the profiles in the stack's .env COMPOSE_PROFILES apply).
    #[serde(default)]
    pub services: Option<Vec<String>>,
    /// Also run the role probes: Ollama /api/version and /api/ps, Postgres pg_isready
    /// and `select 1`, MongoDB ping, Qdrant /readyz, and each service's x-stackpilot
    /// health (an HTTP path, or a command run inside the container). Default false.
    #[serde(default)]
    pub deep: bool,
    /// Include the last N log lines of each container, 0 to 200 (default 0): redacted,
    /// at most 8 KiB per service, and marked untrusted (written by the container).
    #[serde(default)]
    pub logs_tail: u32,
}

/// What to check; `recover` uses the same entry point.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub services: Option<Vec<String>>,
    pub deep: bool,
    pub logs_tail: u32,
}

pub static TOOL: ToolDef = ToolDef {
    name: "health",
    title: "Stack health",
    description:
        "Tell whether each service of the stack works, why not, and which tool to call next: \
        container state and Docker health, restarts, OOM kills, port connects, and with `deep` a \
        role probe (Ollama, Postgres, MongoDB, Qdrant, an HTTP path); host disk, memory and GPU \
        memory. A verdict per service and for the stack; `logs_tail` adds redacted log lines. \
        Read-only. Use when something looks wrong, or after a change.",
    hints: Hints::READ_ONLY,
    read_only_subset: false,
    input_schema: def::input_schema::<Input>,
    output_schema: def::output_schema::<HealthReport>,
    run: |call, args| Box::pin(run(call, args)),
};

async fn run(call: Arc<Call>, args: Value) -> Result<Reply, ToolError> {
    let input: Input = def::parse_args(args)?;
    if input.logs_tail > MAX_LOGS_TAIL {
        return Err(ToolError::invalid(
            "logs_tail",
            format!("{} is out of range 0..={MAX_LOGS_TAIL}", input.logs_tail),
        ));
    }
    if let Some(list) = &input.services {
        if list.is_empty() {
            return Err(ToolError::invalid(
                "services",
                "name at least one service, or leave `services` out to check them all",
            ));
        }
        if list.len() > MAX_SERVICES {
            return Err(ToolError::invalid(
                "services",
                format!("at most {MAX_SERVICES} names"),
            ));
        }
    }
    let report = check(
        &call.app,
        &Options {
            services: input.services,
            deep: input.deep,
            logs_tail: input.logs_tail,
        },
    )
    .await?;
    record_verdicts(&call.app, &report);
    let value = serde_json::to_value(report).map_err(|e| ToolError::internal(e.to_string()))?;
    call.app.set_last_health(value.clone());
    Ok(Reply::Done(value))
}

/// Validates `services` against the model: every name must be a service.
pub fn select<'m>(
    model: &'m StackModel,
    names: Option<&[String]>,
    field: &str,
) -> Result<Vec<&'m ServiceModel>, ToolError> {
    let Some(names) = names else {
        return Ok(model.services.values().collect());
    };
    let mut out: Vec<&ServiceModel> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let svc = model.services.get(name).ok_or_else(|| {
            let known: Vec<String> = model.services.keys().cloned().collect();
            ToolError::invalid(
                if names.len() == 1 && field == "service" {
                    field.to_string()
                } else {
                    format!("{field}[{i}]")
                },
                format!(
                    "unknown service `{}`{}",
                    redact::cap(name, 100),
                    if known.is_empty() {
                        " (the stack has no services in its active profiles)"
                    } else {
                        ""
                    }
                ),
            )
            .allowed(known)
        })?;
        if !out.iter().any(|s| s.name == svc.name) {
            out.push(svc);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Resolves the stack model (cached while its files are unchanged).
pub async fn stack_model(app: &App) -> Result<StackModel, ToolError> {
    app.engine().model_cached().await
}

/// What the engine is (GPU runtime, data root); None when it did not answer in time.
async fn engine_facts(engine: &dyn Engine) -> Option<EngineFacts> {
    tokio::time::timeout(INFO_TIMEOUT, engine.facts())
        .await
        .ok()?
        .ok()
}

fn ms_since(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

/// What the stack's .env says about the hardware profile.
struct ProfileFacts {
    gpu_profile: bool,
    apple_metal: bool,
}

fn profile_facts(env_path: &Path) -> ProfileFacts {
    let env = env_file::load(env_path).unwrap_or_default();
    let mut names: Vec<String> = env
        .get("COMPOSE_PROFILES")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    names.extend(env.get("STACKPILOT_PROFILE"));
    ProfileFacts {
        gpu_profile: names.iter().any(|n| n == "standard" || n == "analysis"),
        apple_metal: names.iter().any(|n| n == "apple-metal"),
    }
}

/// Runs every check and judges the stack.
pub async fn check(app: &App, opts: &Options) -> Result<HealthReport, ToolError> {
    let started = Instant::now();
    let engine = app.engine();
    let t_model = Instant::now();
    let model_fut = async {
        let r = stack_model(app).await;
        (r, ms_since(t_model))
    };
    let t_list = Instant::now();
    let list_fut = async {
        let r = match tokio::time::timeout(LIST_TIMEOUT, engine.instances()).await {
            Ok(r) => r.map(|l| l.into_iter().filter(|i| !i.one_off).collect::<Vec<_>>()),
            Err(_) => Err(ToolError::external(format!(
                "the engine did not list the stack's instances within {} ms",
                LIST_TIMEOUT.as_millis()
            ))),
        };
        (r, ms_since(t_list))
    };
    let ((model, model_ms), (listed, list_ms), facts) =
        tokio::join!(model_fut, list_fut, engine_facts(engine));
    let model = model?;
    let selected = select(&model, opts.services.as_deref(), "services")?;
    let listed = listed?;
    let profile = profile_facts(&app.stack.env_path());
    let stack_down = listed.is_empty();

    let mut by_service: BTreeMap<&str, Vec<Instance>> = BTreeMap::new();
    for c in &listed {
        by_service
            .entry(c.service.as_str())
            .or_default()
            .push(c.clone());
    }
    let orphans: Vec<String> = listed
        .iter()
        .filter(|c| !model.services.contains_key(&c.service))
        .map(|c| c.name.clone())
        .collect();

    let host_ollama =
        (opts.deep && profile.apple_metal && model.with_role(Role::Ollama).is_empty())
            .then(ollama_probe::ollama_url_from_env);
    // Every secret value the stack's .env holds is masked in what containers print.
    let env_secrets = secret_values(
        &env_file::load(&app.stack.env_path())
            .unwrap_or_default()
            .values()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>(),
    );
    let ctx = Ctx {
        engine,
        env_secrets: &env_secrets,
        deep: opts.deep,
        logs_tail: opts.logs_tail,
        gpu_profile: profile.gpu_profile,
        nvidia_runtime: facts.as_ref().map(|f| f.nvidia_runtime),
        stack_down,
        helper_image: model
            .settings
            .backup_helper_image
            .clone()
            .unwrap_or_else(|| crate::tools::backup::engines::DEFAULT_HELPER_IMAGE.to_string()),
    };
    let host_fut = check_host(HostInputs {
        stack_dir: app.stack.dir.clone(),
        backup_root: model.settings.backup_root.clone(),
        engine_root: facts
            .as_ref()
            .filter(|f| f.local)
            .and_then(|f| f.data_root.clone()),
        ollama_url: host_ollama,
    });
    let services_fut = join_all(selected.iter().map(|svc| {
        let containers = by_service
            .get(svc.name.as_str())
            .cloned()
            .unwrap_or_default();
        check_service(&ctx, svc, containers)
    }));
    let (host, services) = tokio::join!(host_fut, services_fut);

    let mut counts = Counts::default();
    for s in &services {
        match s.verdict {
            Verdict::Healthy => counts.healthy += 1,
            Verdict::Degraded => counts.degraded += 1,
            Verdict::Unhealthy => counts.unhealthy += 1,
            Verdict::Stopped => counts.stopped += 1,
            Verdict::Missing => counts.missing += 1,
        }
    }
    let verdicts: Vec<Verdict> = services.iter().map(|s| s.verdict).collect();
    let overall = health_rules::overall(&verdicts, host.verdict);
    let next_steps = next_steps(&services, &host);
    let summary = summary(overall, &services, &host);
    let timings = timings(started, model_ms, list_ms, &services, &host);
    Ok(HealthReport {
        project: model.project.clone(),
        overall,
        summary,
        checked_at: crate::adapters::clock::now_rfc3339(),
        deep: opts.deep,
        counts,
        services,
        host,
        orphans,
        next_steps,
        timings,
        note: UNTRUSTED_NOTE.to_string(),
    })
}

/// Sets the per-service verdict gauges of /metrics.
pub fn record_verdicts(app: &App, report: &HealthReport) {
    for s in &report.services {
        app.metrics.service_verdict(&s.service, s.verdict.as_str());
    }
}

fn next_steps(services: &[ServiceReport], host: &HostReport) -> Vec<Hint> {
    let mut ordered: Vec<(&Verdict, &Option<Hint>)> =
        services.iter().map(|s| (&s.verdict, &s.hint)).collect();
    ordered.push((&host.verdict, &host.hint));
    // Worst first; the sort is stable, so services keep their name order within a verdict.
    ordered.sort_by(|a, b| b.0.cmp(a.0));
    let mut out: Vec<Hint> = Vec::new();
    for (_, hint) in ordered {
        if let Some(h) = hint {
            if !out.contains(h) {
                out.push(h.clone());
            }
        }
    }
    out
}

fn summary(overall: Overall, services: &[ServiceReport], host: &HostReport) -> String {
    let mut parts = Vec::new();
    for v in [
        Verdict::Healthy,
        Verdict::Degraded,
        Verdict::Unhealthy,
        Verdict::Stopped,
        Verdict::Missing,
    ] {
        let names: Vec<&str> = services
            .iter()
            .filter(|s| s.verdict == v)
            .map(|s| s.service.as_str())
            .collect();
        if names.is_empty() {
            continue;
        }
        if v == Verdict::Healthy {
            parts.push(format!("{} healthy", names.len()));
        } else {
            parts.push(format!(
                "{} {} ({})",
                names.len(),
                v.as_str(),
                names.join(", ")
            ));
        }
    }
    let overall = match overall {
        Overall::Healthy => "healthy",
        Overall::Degraded => "degraded",
        Overall::Unhealthy => "unhealthy",
    };
    format!(
        "{overall}: {} service(s): {}; host {}",
        services.len(),
        if parts.is_empty() {
            "none checked".to_string()
        } else {
            parts.join(", ")
        },
        host.verdict.as_str()
    )
}

fn timings(
    started: Instant,
    model_ms: f64,
    list_ms: f64,
    services: &[ServiceReport],
    host: &HostReport,
) -> Timings {
    let mut probes: Vec<(String, f64)> = vec![
        ("compose model".into(), model_ms),
        ("container list".into(), list_ms),
        ("host".into(), host.ms),
    ];
    for s in services {
        for c in &s.containers {
            probes.push((format!("{} inspect", c.name), c.inspect_ms));
        }
        for p in s.ports.iter().filter(|p| p.open.is_some()) {
            probes.push((
                format!(
                    "{} connect {}",
                    s.service,
                    p.probed.as_deref().unwrap_or("")
                ),
                p.ms,
            ));
        }
        for p in s.probes.iter().filter(|p| !p.skipped) {
            probes.push((format!("{} {}", s.service, p.name), p.ms));
        }
        if let Some(o) = &s.ollama {
            probes.push((format!("{} ollama api", s.service), o.ms));
        }
        for l in &s.logs {
            probes.push((format!("{} logs", l.container), l.ms));
        }
    }
    let slowest = probes.iter().max_by(|a, b| a.1.total_cmp(&b.1)).cloned();
    let sum: f64 = probes.iter().map(|p| p.1).sum();
    Timings {
        wall_ms: ms_since(started),
        probes_sum_ms: (sum * 100.0).round() / 100.0,
        probes: probes.len(),
        slowest_probe: slowest.as_ref().map(|s| s.0.clone()),
        slowest_probe_ms: slowest.map(|s| s.1).unwrap_or(0.0),
    }
}

/// What every service check shares.
struct Ctx<'a> {
    engine: &'a dyn Engine,
    /// Secret values of the stack's .env; each service adds its instances' own.
    env_secrets: &'a [String],
    deep: bool,
    logs_tail: u32,
    gpu_profile: bool,
    nvidia_runtime: Option<bool>,
    stack_down: bool,
    /// The image TCP probes fall back to (x-stackpilot backup_helper_image).
    helper_image: String,
}

/// Seconds since an RFC 3339 time.
fn seconds_since(rfc3339: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()?;
    let secs = (time::OffsetDateTime::now_utc() - t).whole_seconds();
    u64::try_from(secs.max(0)).ok()
}

fn container_report(
    pc: &Instance,
    inspected: Result<InstanceDetail, ToolError>,
    inspect_ms: f64,
    secrets: &[String],
) -> ContainerReport {
    let short: String = pc.id.chars().take(12).collect();
    let c = match inspected {
        Ok(c) => c,
        Err(e) => {
            return ContainerReport {
                name: pc.name.clone(),
                id: short,
                state: "unknown".into(),
                health_status: None,
                failing_streak: None,
                health_log: vec![],
                restart_count: 0,
                oom_killed: false,
                exit_code: None,
                started_at: None,
                finished_at: None,
                uptime_s: None,
                restart_policy: None,
                engine_error: Some(redact::cap(&e.message, 300)),
                memory_limit_bytes: None,
                inspect_ms,
            }
        }
    };
    let health_log: Vec<HealthProbeRecord> = c
        .health_log
        .iter()
        .rev()
        .take(5)
        .rev()
        .map(|r| HealthProbeRecord {
            exit_code: r.exit_code,
            end: r.end.clone(),
            untrusted_output: redact::cap(
                redact::redact_text(&r.output, secrets).trim(),
                PROBE_OUTPUT_BYTES,
            ),
        })
        .collect();
    let running = c.instance.running();
    ContainerReport {
        name: pc.name.clone(),
        id: short,
        state: c.instance.state.clone(),
        health_status: c.instance.health.clone(),
        failing_streak: c.failing_streak,
        health_log,
        restart_count: c.restart_count,
        oom_killed: c.oom_killed,
        exit_code: c.exit_code,
        uptime_s: if running {
            c.started_at.as_deref().and_then(seconds_since)
        } else {
            None
        },
        started_at: c.started_at.clone(),
        finished_at: c.finished_at.clone(),
        restart_policy: c.restart_policy.clone(),
        engine_error: c.error.as_deref().map(|e| redact::cap(e, 300)),
        memory_limit_bytes: c.memory_limit,
        inspect_ms,
    }
}

/// The address to dial for a host binding: every-interface binds are dialled on loopback.
fn dial_ip(host_ip: &str) -> Option<std::net::IpAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match host_ip {
        "" | "0.0.0.0" => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        "::" => Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        other => other.parse().ok(),
    }
}

/// The TCP/UDP bindings a running instance has on the host, one per
/// (host port, container port, protocol), IPv4 preferred.
fn bindings(ports: &[PublishedPort]) -> Vec<(String, u16, u16, String)> {
    let mut out: Vec<(String, u16, u16, String)> = Vec::new();
    for p in ports {
        let ip = p.host_ip.clone();
        if let Some(existing) = out
            .iter_mut()
            .find(|e| e.1 == p.host_port && e.2 == p.container_port && e.3 == p.protocol)
        {
            if existing.0 == "::" && ip != "::" {
                existing.0 = ip;
            }
            continue;
        }
        out.push((ip, p.host_port, p.container_port, p.protocol.clone()));
    }
    out.sort_by(|a, b| (a.2, a.1, &a.3, &a.0).cmp(&(b.2, b.1, &b.3, &b.0)));
    out
}

async fn probe_port(ip: String, host_port: u16, container_port: u16, proto: String) -> PortReport {
    let target = dial_ip(&ip).map(|a| SocketAddr::new(a, host_port));
    match (proto.as_str(), target) {
        ("tcp", Some(addr)) => {
            let c = net_probe::tcp_connect(addr, CONNECT_TIMEOUT).await;
            PortReport {
                host_ip: ip,
                host_port,
                container_port,
                protocol: proto,
                probed: Some(addr.to_string()),
                open: Some(c.ok),
                error: c.error,
                ms: (c.ms * 100.0).round() / 100.0,
            }
        }
        _ => PortReport {
            host_ip: ip,
            host_port,
            container_port,
            protocol: proto,
            probed: None,
            open: None,
            error: None,
            ms: 0.0,
        },
    }
}

/// The base URL of a service's HTTP API on the host: the published port of
/// `preferred` (container port), else the first published TCP port.
pub fn base_url(ports: &[PortReport], preferred: Option<u16>) -> Option<String> {
    let tcp = ports.iter().filter(|p| p.protocol == "tcp");
    let pick = preferred
        .and_then(|want| tcp.clone().find(|p| p.container_port == want))
        .or_else(|| tcp.clone().next())?;
    let ip = dial_ip(&pick.host_ip)?;
    Some(format!("http://{}", SocketAddr::new(ip, pick.host_port)))
}

/// Where the Ollama probe goes: the ollama service's published port, or (no
/// Ollama container, apple-metal) OLLAMA_HOST.
pub fn ollama_url(ports: &[PortReport]) -> Option<String> {
    base_url(ports, Some(11434))
}

async fn check_service(ctx: &Ctx<'_>, svc: &ServiceModel, pcs: Vec<Instance>) -> ServiceReport {
    let started = Instant::now();
    let inspected = join_all(pcs.iter().map(|pc| async move {
        let t = Instant::now();
        let r = match tokio::time::timeout(INSPECT_TIMEOUT, ctx.engine.inspect(&pc.id)).await {
            Ok(r) => r,
            Err(_) => Err(ToolError::external(format!(
                "the engine did not answer inspect within {} ms",
                INSPECT_TIMEOUT.as_millis()
            ))),
        };
        (pc, r, ms_since(t))
    }))
    .await;
    // What this service's instances know as secrets, beside the .env's.
    let mut secrets: Vec<String> = ctx.env_secrets.to_vec();
    for (_, r, _) in &inspected {
        if let Ok(Some(c)) = r {
            secrets.extend(secret_values(&c.env));
        }
    }
    secrets.sort();
    secrets.dedup();
    let mut containers = Vec::new();
    let mut running: Vec<InstanceDetail> = Vec::new();
    for (pc, r, ms) in inspected {
        match r {
            Ok(None) => continue, // removed while we looked
            Ok(Some(c)) => {
                containers.push(container_report(pc, Ok(c.clone()), ms, &secrets));
                if c.serving {
                    running.push(c);
                }
            }
            Err(e) => containers.push(container_report(pc, Err(e), ms, &secrets)),
        }
    }
    // Bindings exist only while a container runs; otherwise show the model's, not probed.
    let mut binds: Vec<(String, u16, u16, String)> = Vec::new();
    for c in &running {
        for b in bindings(&c.instance.ports) {
            if !binds.contains(&b) {
                binds.push(b);
            }
        }
    }
    // The role probes need only the bindings, so they run alongside the connects.
    let unprobed: Vec<PortReport> = binds
        .iter()
        .map(|(ip, hp, cp, proto)| PortReport {
            host_ip: ip.clone(),
            host_port: *hp,
            container_port: *cp,
            protocol: proto.clone(),
            probed: None,
            open: None,
            error: None,
            ms: 0.0,
        })
        .collect();
    let ports_fut = join_all(
        binds
            .into_iter()
            .map(|(ip, hp, cp, proto)| probe_port(ip, hp, cp, proto)),
    );
    let first_running = running.first().cloned();
    let deep_fut = async {
        match (&first_running, ctx.deep) {
            (Some(c), true) => deep_probes(ctx, svc, c, &unprobed, &secrets).await,
            _ => (Vec::new(), None),
        }
    };
    // Without a healthcheck (compose file or image) or an x-stackpilot health,
    // whether the service serves is a TCP connect to its port from inside its
    // network.
    let network_fut = async {
        let port = StackModel::probe_port(svc).filter(|_| !svc.healthcheck && svc.health.is_none());
        // A HEALTHCHECK from the image counts as much as one in the compose file.
        let pc = first_running
            .as_ref()
            .filter(|c| c.instance.health.is_none())
            .and_then(|c| pcs.iter().find(|p| p.id == c.instance.id));
        match (port, pc) {
            (Some(port), Some(pc)) => Some(network_probe(ctx, svc, pc, port).await),
            _ => None,
        }
    };
    let (mut ports, logs, (mut probes, ollama), network) =
        tokio::join!(ports_fut, logs(ctx, &pcs, &secrets), deep_fut, network_fut);
    probes.extend(network);
    if running.is_empty() {
        ports = svc
            .ports
            .iter()
            .map(|p| PortReport {
                host_ip: p.host_ip.clone(),
                host_port: p.host_port,
                container_port: p.container_port,
                protocol: p.protocol.clone(),
                probed: None,
                open: None,
                error: Some("not probed: no running container".into()),
                ms: 0.0,
            })
            .collect();
    }
    let judgement = health_rules::judge(&ServiceFacts {
        service: svc,
        containers: &containers,
        ports: &ports,
        probes: &probes,
        ollama: ollama.as_ref(),
        nvidia_runtime: ctx.nvidia_runtime,
        stack_down: ctx.stack_down,
    });
    ServiceReport {
        service: svc.name.clone(),
        role: svc.role,
        verdict: judgement.verdict,
        reason: judgement.reason,
        evidence: judgement.evidence,
        hint: judgement.hint,
        containers,
        ports,
        probes,
        ollama,
        logs,
        ms: ms_since(started),
    }
}

async fn logs(ctx: &Ctx<'_>, pcs: &[Instance], secrets: &[String]) -> Vec<LogTail> {
    if ctx.logs_tail == 0 || pcs.is_empty() {
        return Vec::new();
    }
    let per = LOG_BYTES_PER_SERVICE / pcs.len();
    join_all(pcs.iter().map(|pc| async move {
        let t = Instant::now();
        let lines = ctx.logs_tail as usize;
        let read = ctx.engine.logs_tail(&pc.id, lines, per);
        let (lines, truncated) = match tokio::time::timeout(LOGS_TIMEOUT, read).await {
            Ok(Ok(raw)) => {
                let t = redact::tail_lines(&raw, lines, per, secrets);
                (t.lines, t.truncated)
            }
            Ok(Err(e)) => (vec![format!("[stackpilot: no logs: {}]", e.message)], false),
            Err(_) => (
                vec![format!(
                    "[stackpilot: no logs: the engine did not answer within {} ms]",
                    LOGS_TIMEOUT.as_millis()
                )],
                false,
            ),
        };
        LogTail {
            container: pc.name.clone(),
            untrusted: true,
            untrusted_output: lines,
            truncated,
            ms: ms_since(t),
        }
    }))
    .await
}

fn probe(
    name: impl Into<String>,
    ok: bool,
    detail: impl Into<String>,
    output: Option<String>,
    ms: f64,
) -> ProbeReport {
    ProbeReport {
        name: name.into(),
        ok,
        skipped: false,
        detail: detail.into(),
        untrusted_output: output.filter(|o| !o.is_empty()),
        ms,
    }
}

fn skipped(name: impl Into<String>, why: &str) -> ProbeReport {
    ProbeReport {
        name: name.into(),
        ok: false,
        skipped: true,
        detail: format!("skipped: {why}"),
        untrusted_output: None,
        ms: 0.0,
    }
}

async fn http_probe(
    ports: &[PortReport],
    preferred: Option<u16>,
    path: &str,
    label: &str,
    secrets: &[String],
) -> ProbeReport {
    let Some(base) = base_url(ports, preferred) else {
        return skipped(
            format!("{label} {path}"),
            "no TCP port published on the host",
        );
    };
    let url = format!("{base}{path}");
    let a = net_probe::http_get(&url, HTTP_TIMEOUT, PROBE_OUTPUT_BYTES).await;
    let name = format!("{label} {url}");
    let ms = (a.ms * 100.0).round() / 100.0;
    match (a.status, &a.error) {
        (Some(s), _) if a.success() => probe(name, true, format!("HTTP {s}"), None, ms),
        (Some(s), _) => {
            let body = String::from_utf8_lossy(&a.body);
            let body: Vec<String> = body
                .lines()
                .map(|l| redact::redact_text(l, secrets))
                .collect();
            probe(
                name,
                false,
                format!("HTTP {s}"),
                Some(redact::cap(body.join("\n").trim(), PROBE_OUTPUT_BYTES)),
                ms,
            )
        }
        (None, e) => probe(
            name,
            false,
            e.clone().unwrap_or_else(|| "no answer".into()),
            None,
            ms,
        ),
    }
}

async fn exec_probe(
    ctx: &Ctx<'_>,
    id: &str,
    name: &str,
    cmd: Vec<String>,
    env: Vec<String>,
    expect: Option<&str>,
    secrets: &[String],
) -> ProbeReport {
    let t = Instant::now();
    let ct = tokio_util::sync::CancellationToken::new();
    let work = async {
        let p = ctx.engine.exec(id, cmd, env, false).await?;
        process::run(p, process::Stdout::Capture(PROBE_OUTPUT_BYTES), None, &ct)
            .await
            .map_err(ToolError::from)
    };
    let r = match tokio::time::timeout(EXEC_TIMEOUT, work).await {
        Ok(r) => r.map(Some),
        Err(_) => Ok(None),
    };
    let ms = ms_since(t);
    match r {
        Err(e) => probe(name, false, redact::cap(&e.message, 300), None, ms),
        Ok(None) => probe(
            name,
            false,
            format!("timed out after {} ms", EXEC_TIMEOUT.as_millis()),
            None,
            ms,
        ),
        Ok(Some(f)) => {
            let code = f.exit_code;
            let text = format!("{}{}", String::from_utf8_lossy(&f.stdout), f.stderr_tail);
            let output: Vec<String> = text
                .lines()
                .map(|l| redact::redact_text(l, secrets))
                .collect();
            let output = redact::cap(output.join("\n").trim(), PROBE_OUTPUT_BYTES);
            let answered = expect.is_none_or(|want| output.lines().any(|l| l.trim() == want));
            let ok = code == 0 && answered;
            let detail = match (code, answered) {
                (0, true) => "exit 0".to_string(),
                (0, false) => format!("exit 0 but the answer was not `{}`", expect.unwrap_or("")),
                (127, _) => "exit 127: command not found in the image".to_string(),
                (c, _) => format!("exit {c}"),
            };
            probe(name, ok, detail, Some(output), ms)
        }
    }
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// Connects to `$1:$2` from inside a helper container: bash's /dev/tcp where
/// the image has bash (Debian-based images: postgres, redis, mongo, qdrant),
/// else busybox nc (`-e true` after the address: connect, run nothing, exit
/// 0). Exit 127: the image has neither, and the next image is tried.
pub const TCP_PROBE: &str = r#"h=$1; p=$2
if command -v bash >/dev/null 2>&1; then
  if command -v timeout >/dev/null 2>&1; then exec timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$h" "$p"; fi
  exec bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$h" "$p"
fi
if command -v nc >/dev/null 2>&1; then exec nc -w 3 "$h" "$p" -e true; fi
echo "stackpilot: neither bash nor nc in this image" >&2; exit 127"#;

/// A TCP connect to the service's port from where its neighbours reach it: a
/// short-lived helper container attached to the service's network dials the
/// service's name (compose's alias on the project network). The helper runs
/// the service's own image when it has bash or nc, else the stack's
/// backup_helper_image (default busybox:stable); never pulled.
async fn network_probe(ctx: &Ctx<'_>, svc: &ServiceModel, pc: &Instance, port: u16) -> ProbeReport {
    let t = Instant::now();
    let Some(net) = pc.networks.iter().find(|n| n.as_str() != "none") else {
        return skipped(
            format!("tcp {}:{port} inside the network", svc.name),
            "the container is attached to no network",
        );
    };
    let host = if net == "host" {
        "127.0.0.1"
    } else {
        svc.name.as_str()
    };
    let name = format!("tcp {host}:{port} from a helper on network {net}");
    let mut candidates: Vec<String> = pc.image.iter().cloned().collect();
    if !candidates.contains(&ctx.helper_image) {
        candidates.push(ctx.helper_image.clone());
    }
    let mut tried = Vec::new();
    for image in candidates {
        if !ctx.engine.image_present(&image).await {
            tried.push(format!("{image}: not present locally"));
            continue;
        }
        let spec = HelperSpec {
            image: image.clone(),
            cmd: argv(&["sh", "-c", TCP_PROBE, "probe", host, &port.to_string()]),
            volume: None,
            stdin: false,
            network: Some(net.clone()),
        };
        let ct = tokio_util::sync::CancellationToken::new();
        let work = async {
            let p = ctx.engine.helper(&spec).await?;
            process::run(p, process::Stdout::Capture(PROBE_OUTPUT_BYTES), None, &ct)
                .await
                .map_err(ToolError::from)
        };
        match tokio::time::timeout(NETWORK_PROBE_TIMEOUT, work).await {
            Err(_) => {
                return probe(
                    name,
                    false,
                    format!("timed out after {} ms", NETWORK_PROBE_TIMEOUT.as_millis()),
                    None,
                    ms_since(t),
                )
            }
            Ok(Err(e)) if e.message.contains("not found") || e.message.contains("no such file") => {
                tried.push(format!("{image}: {}", redact::cap(&e.message, 200)));
            }
            Ok(Err(e)) => {
                return probe(name, false, redact::cap(&e.message, 300), None, ms_since(t))
            }
            Ok(Ok(f)) => {
                let err = f.stderr_tail.trim().to_string();
                let unusable = f.exit_code == 127
                    || err.contains("invalid option")
                    || err.contains("unrecognized option")
                    || err.contains("Usage:");
                if unusable {
                    tried.push(format!("{image}: has neither bash nor a busybox nc"));
                    continue;
                }
                let ms = ms_since(t);
                return if f.ok() {
                    probe(
                        name,
                        true,
                        format!("connected (helper from {image})"),
                        None,
                        ms,
                    )
                } else {
                    probe(
                        name,
                        false,
                        format!("no connection (exit {}, helper from {image})", f.exit_code),
                        Some(redact::cap(&err, PROBE_OUTPUT_BYTES)),
                        ms,
                    )
                };
            }
        }
    }
    skipped(
        name,
        &format!(
            "no image to probe from ({}); load one with sh and bash or busybox nc and name it as x-stackpilot backup_helper_image",
            tried.join("; ")
        ),
    )
}

/// The command mongodb's probe runs: mongosh where the image has it (5.0+), else the legacy shell.
pub const MONGO_PING: &str = "if command -v mongosh >/dev/null 2>&1; then mongosh --quiet --eval 'db.runCommand({ping: 1}).ok'; \
     else mongo --quiet --eval 'db.runCommand({ping: 1}).ok'; fi";

async fn deep_probes(
    ctx: &Ctx<'_>,
    svc: &ServiceModel,
    c: &InstanceDetail,
    ports: &[PortReport],
    secrets: &[String],
) -> (Vec<ProbeReport>, Option<OllamaReport>) {
    let id = c.instance.id.as_str();
    match svc.role {
        Role::Ollama => {
            let gpu_expected = svc.gpu || ctx.gpu_profile;
            match ollama_url(ports) {
                Some(url) => (Vec::new(), Some(ollama_probe(&url, gpu_expected).await)),
                // Reached only by its neighbours (the usual Ollama + web UI file): the TCP
                // probe from its network says whether it serves.
                None => (
                    vec![skipped(
                        "ollama API (/api/version, /api/ps)",
                        "the service publishes no port on the host, so its API cannot be read from here",
                    )],
                    None,
                ),
            }
        }
        Role::Postgres => {
            // The same connection settings backup uses (POSTGRES_USER / _DB, their _FILEs).
            let env = match credentials(ctx, c).await {
                Ok(env) => env,
                Err(e) => {
                    return (
                        vec![probe(
                            "postgres credentials",
                            false,
                            redact::cap(&e.message, 300),
                            None,
                            0.0,
                        )],
                        None,
                    )
                }
            };
            let conn = crate::tools::backup::engines::PgConn::from_env(&env);
            let (a, b) = tokio::join!(
                exec_probe(
                    ctx,
                    id,
                    "pg_isready",
                    argv(&["pg_isready", "-q", "-d", &conn.database, "-U", &conn.user]),
                    Vec::new(),
                    None,
                    secrets
                ),
                exec_probe(
                    ctx,
                    id,
                    "select 1",
                    argv(&[
                        "psql",
                        "-X",
                        "-A",
                        "-t",
                        "-w",
                        "-U",
                        &conn.user,
                        "-d",
                        &conn.database,
                        "-c",
                        "select 1"
                    ]),
                    conn.exec_env(),
                    Some("1"),
                    secrets
                ),
            );
            (vec![a, b], None)
        }
        Role::Redis => {
            let env = match credentials(ctx, c).await {
                Ok(env) => env,
                Err(e) => {
                    return (
                        vec![probe(
                            "redis credentials",
                            false,
                            redact::cap(&e.message, 300),
                            None,
                            0.0,
                        )],
                        None,
                    )
                }
            };
            let conn = crate::tools::backup::engines::RedisConn::new(&env, &c.cmd);
            let mut secrets = secrets.to_vec();
            secrets.extend(conn.secrets());
            (
                vec![
                    exec_probe(
                        ctx,
                        id,
                        "redis-cli PING",
                        conn.cli(&["PING"]),
                        conn.exec_env(),
                        Some("PONG"),
                        &secrets,
                    )
                    .await,
                ],
                None,
            )
        }
        Role::Mongodb => (
            vec![
                exec_probe(
                    ctx,
                    id,
                    "mongosh ping",
                    argv(&["sh", "-c", MONGO_PING]),
                    Vec::new(),
                    Some("1"),
                    secrets,
                )
                .await,
            ],
            None,
        ),
        Role::Qdrant => (
            vec![http_probe(ports, Some(6333), "/readyz", "qdrant GET", secrets).await],
            None,
        ),
        _ => match svc.health.as_deref().map(str::trim) {
            Some(path) if path.starts_with('/') => (
                vec![http_probe(ports, None, path, "http GET", secrets).await],
                None,
            ),
            Some(cmd) if !cmd.is_empty() => (
                vec![
                    exec_probe(
                        ctx,
                        id,
                        &format!("command: {}", redact::cap(cmd, 120)),
                        argv(&["sh", "-c", cmd]),
                        Vec::new(),
                        None,
                        secrets,
                    )
                    .await,
                ],
                None,
            ),
            _ if svc.role == Role::Api => (
                vec![http_probe(ports, None, "/health", "http GET", secrets).await],
                None,
            ),
            _ => (Vec::new(), None),
        },
    }
}

/// A data service's environment with its credential `_FILE`s read inside the
/// container (only when it has any), within the exec timeout.
async fn credentials(ctx: &Ctx<'_>, c: &InstanceDetail) -> Result<Vec<String>, ToolError> {
    if crate::tools::credentials::pending_files(&c.env).is_empty() {
        return Ok(c.env.clone());
    }
    let ct = tokio_util::sync::CancellationToken::new();
    let read =
        crate::tools::credentials::effective_env(ctx.engine, &c.instance.id, c.env.clone(), &ct);
    match tokio::time::timeout(EXEC_TIMEOUT, read).await {
        Ok(r) => r,
        Err(_) => Err(ToolError::external(format!(
            "reading the credential files took longer than {} ms",
            EXEC_TIMEOUT.as_millis()
        ))),
    }
}

/// `GET /api/version` and `/api/ps` at `url`, concurrently.
pub async fn ollama_probe(url: &str, gpu_expected: bool) -> OllamaReport {
    let t = Instant::now();
    let base = url.trim_end_matches('/');
    let (version_url, ps_url) = (format!("{base}/api/version"), format!("{base}/api/ps"));
    let ((version, _), (ps, _)) = tokio::join!(
        net_probe::get_json::<OllamaVersion>(&version_url, HTTP_TIMEOUT),
        net_probe::get_json::<OllamaPs>(&ps_url, HTTP_TIMEOUT),
    );
    let (version, mut error) = match version {
        Ok(v) => (Some(v.version), None),
        Err(e) => (None, Some(format!("/api/version: {e}"))),
    };
    let models = match ps {
        Ok(ps) => ps
            .models
            .into_iter()
            .map(|m| LoadedModel {
                name: if m.name.is_empty() { m.model } else { m.name },
                size_bytes: m.size,
                size_vram_bytes: m.size_vram,
                gpu_share: if m.size > 0 {
                    ((m.size_vram as f64 / m.size as f64).min(1.0) * 1000.0).round() / 1000.0
                } else {
                    0.0
                },
                context_length: m.context_length,
                expires_at: m.expires_at,
            })
            .collect(),
        Err(e) => {
            error.get_or_insert(format!("/api/ps: {e}"));
            Vec::new()
        }
    };
    OllamaReport {
        url: base.to_string(),
        version,
        gpu_expected,
        models,
        error,
        ms: ms_since(t),
    }
}

struct HostInputs {
    stack_dir: PathBuf,
    backup_root: PathBuf,
    engine_root: Option<String>,
    ollama_url: Option<String>,
}

fn disk(what: &str, path: &Path) -> DiskReport {
    // `components` drops inner `.` segments (`<stack>/./backups`).
    let path: PathBuf = path.components().collect();
    let path = path.as_path();
    let measured = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(path)
        .to_path_buf();
    let free = fs4::available_space(&measured).ok();
    let total = fs4::total_space(&measured).ok();
    let pct = match (free, total) {
        (Some(f), Some(t)) if t > 0 => Some(((f as f64 / t as f64) * 1000.0).round() / 10.0),
        _ => None,
    };
    DiskReport {
        what: what.into(),
        path: path.display().to_string(),
        free_bytes: free,
        total_bytes: total,
        free_pct: pct,
        low: pct.is_some_and(|p| p < health_rules::LOW_PCT),
    }
}

fn psi_some_avg10(text: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with("some "))?
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("avg10="))?
        .parse()
        .ok()
}

fn memory() -> MemoryReport {
    let m = hardware::probe_memory();
    let total = (m.total_bytes > 0).then_some(m.total_bytes);
    let available = total.map(|_| m.available_bytes);
    let pct = total.map(|t| ((m.available_bytes as f64 / t as f64) * 1000.0).round() / 10.0);
    let psi = std::fs::read_to_string("/proc/pressure/memory")
        .ok()
        .and_then(|t| psi_some_avg10(&t));
    MemoryReport {
        total_bytes: total,
        available_bytes: available,
        available_pct: pct,
        psi_some_avg10: psi,
        pressure: pct.is_some_and(|p| p < health_rules::LOW_PCT)
            || psi.is_some_and(|p| p >= health_rules::PSI_PRESSURE),
    }
}

async fn check_host(inputs: HostInputs) -> HostReport {
    let t = Instant::now();
    let HostInputs {
        stack_dir,
        backup_root,
        engine_root,
        ollama_url,
    } = inputs;
    let blocking = tokio::task::spawn_blocking(move || {
        let mut disks = vec![disk("stack", &stack_dir), disk("backups", &backup_root)];
        if let Some(root) = engine_root.map(PathBuf::from).filter(|p| p.exists()) {
            disks.push(disk("docker", &root));
        }
        let (gpus, absent) = if cfg!(target_os = "macos") {
            (Vec::new(), Some("no NVIDIA GPUs on macOS".to_string()))
        } else {
            match hardware::nvidia_gpus() {
                Ok(g) if g.is_empty() => (Vec::new(), Some("NVML found no NVIDIA GPU".into())),
                Ok(g) => (g, None),
                Err(e) => (Vec::new(), Some(e)),
            }
        };
        (disks, memory(), gpus, absent)
    });
    let ollama_fut = async {
        match &ollama_url {
            Some(url) => Some(ollama_probe(url, true).await),
            None => None,
        }
    };
    let (joined, ollama) = tokio::join!(blocking, ollama_fut);
    let (disks, memory, gpus, gpu_absent_reason) = match joined {
        Ok(v) => v,
        Err(e) => (
            Vec::new(),
            MemoryReport {
                total_bytes: None,
                available_bytes: None,
                available_pct: None,
                psi_some_avg10: None,
                pressure: false,
            },
            Vec::new(),
            Some(format!("host probe failed: {e}")),
        ),
    };
    let mut j = health_rules::judge_host(&disks, &memory);
    if let Some(o) = ollama.as_ref().filter(|o| o.version.is_none()) {
        j.verdict = j.verdict.max(Verdict::Degraded);
        let text = format!(
            "Ollama on the host does not answer at {}: {}",
            o.url,
            o.error.as_deref().unwrap_or("no answer")
        );
        j.evidence.insert(0, text);
        j.hint.get_or_insert(Hint {
            tool: "detect_hardware".into(),
            arguments: None,
            text: "start Ollama on the host (`ollama serve`) or set OLLAMA_HOST, then check with detect_hardware".into(),
        });
    }
    HostReport {
        verdict: j.verdict,
        evidence: j.evidence,
        hint: j.hint,
        disks,
        memory,
        gpus: gpus
            .into_iter()
            .map(|g| GpuMemory {
                name: g.name,
                total_bytes: g.vram_total_bytes,
                free_bytes: g.vram_free_bytes,
            })
            .collect(),
        gpu_absent_reason,
        ollama,
        ms: ms_since(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(ip: &str, hp: u16, cp: u16) -> PortReport {
        PortReport {
            host_ip: ip.into(),
            host_port: hp,
            container_port: cp,
            protocol: "tcp".into(),
            probed: None,
            open: None,
            error: None,
            ms: 0.0,
        }
    }

    #[test]
    fn ollama_url_prefers_its_port_and_dials_loopback() {
        let ports = [port("0.0.0.0", 18000, 8080), port("", 18120, 11434)];
        assert_eq!(
            ollama_url(&ports).as_deref(),
            Some("http://127.0.0.1:18120")
        );
        assert_eq!(
            ollama_url(&[port("::", 18121, 5000)]).as_deref(),
            Some("http://[::1]:18121")
        );
        assert_eq!(ollama_url(&[]), None);
    }

    #[test]
    fn psi_is_parsed() {
        let text = "some avg10=12.50 avg60=1.00 avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(psi_some_avg10(text), Some(12.5));
        assert_eq!(psi_some_avg10(""), None);
    }

    #[test]
    fn profiles_from_env() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = dir.path().join(".env");
        std::fs::write(&env, "COMPOSE_PROFILES=standard,worker\n").expect("write");
        let p = profile_facts(&env);
        assert!(p.gpu_profile && !p.apple_metal);
        std::fs::write(&env, "STACKPILOT_PROFILE=apple-metal\n").expect("write");
        let p = profile_facts(&env);
        assert!(!p.gpu_profile && p.apple_metal);
    }

    #[test]
    fn rfc3339_ages() {
        assert!(seconds_since("2000-01-01T00:00:00.123456789Z").is_some_and(|s| s > 1_000_000));
    }
}
