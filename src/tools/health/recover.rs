//! recover: bring one service back. Mutating.
//!
//! 1. Resolve the service in the compose model (unknown names list the valid
//!    ones) and find its containers by compose labels.
//! 2. Plan one step:
//!    - `restart`: `docker restart` of each of its containers (a stopped one
//!      is started), with the container's own stop grace period. Not
//!      destructive: same container, same filesystem. Needs a container.
//!    - `recreate`: `docker compose rm --stop --force <service>`, then
//!      `docker compose up -d --no-recreate <service>` (a container whose
//!      config hash is the model's, so compose_up sees it converged)
//!      (also creates a missing container). Named volumes are kept, but the
//!      container and whatever it wrote outside its volumes are replaced and
//!      open connections dropped, so for a service that holds data (role
//!      ollama, postgres, mongodb, qdrant, volume, or any named volume) the
//!      step is destructive and runs only once confirmed (the guard).
//! 3. Apply it under the stack lock.
//! 4. With `wait`, poll the service's health (deep probes) once a second,
//!    sending a progress notification at least once a second, until it is
//!    healthy, `timeout_s` passes, or the call is cancelled; report its final
//!    health either way. The action is not undone on timeout.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::domain::error::{ErrorKind, ToolError};
use crate::domain::health::types::{ServiceReport, Verdict};
use crate::domain::instance::Instance;
use crate::domain::plan::{Plan, PlanStep, StepCost};
use crate::domain::stack_model::{Role, ServiceModel};
use crate::engine::Engine;
use crate::guard::token::{ConfirmedBy, Guarded};
use crate::guard::{Call, Gate, Reply};
use crate::tools::def::{self, Hints, ToolDef};
use crate::tools::health::health::{self, Options};

pub const MAX_TIMEOUT_S: u64 = 3600;
pub const DEFAULT_TIMEOUT_S: u64 = 120;
/// How long one `docker restart` (stop with the grace period, then start) may take.
const RESTART_LIMIT: Duration = Duration::from_secs(180);
/// How long listing the stack's instances may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the recreate (`compose rm --stop`, then `up`) may take (it may build or wait on dependencies).
const RECREATE_LIMIT: Duration = Duration::from_secs(600);
/// Between two health polls while waiting.
const POLL_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Restart the service's container(s). Not destructive.
    #[default]
    Restart,
    /// Replace the container (`docker compose rm --stop --force`, then `up -d --no-recreate`).
    /// Destructive for a service that holds data.
    Recreate,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Restart => "restart",
            Action::Recreate => "recreate",
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The compose service to recover.
    pub service: String,
    /// `restart` (default): restart its container(s), not destructive. `recreate`: replace the
    /// container with `docker compose rm --stop --force` then `up -d --no-recreate`; for a service that holds
    /// data this asks for confirmation.
    #[serde(default)]
    pub action: Action,
    /// Wait until the service is healthy (or timeout_s passes), with progress at least once a
    /// second, and report its final health. Default false.
    #[serde(default)]
    pub wait: bool,
    /// Seconds to wait when `wait` is true, 1 to 3600. Default 120.
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// The token from a previous confirmation_required answer.
    #[serde(default)]
    pub confirm_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Output {
    pub service: String,
    pub action: Action,
    /// The containers acted on (for recreate: those replaced; empty when one was missing).
    pub containers: Vec<String>,
    pub plan: Plan,
    pub confirmed_by: ConfirmedBy,
    /// `healthy`, `timeout`, `cancelled`, or `not_waited` (wait was false).
    pub wait_outcome: String,
    /// Seconds spent waiting.
    pub waited_s: f64,
    /// The service's health after the action (deep probes); present when `wait` was true.
    pub health: Option<ServiceReport>,
}

pub static TOOL: ToolDef = ToolDef {
    name: "recover",
    title: "Recover a service",
    description:
        "Bring one service back: `restart` (restarts or starts its containers; not destructive) \
        or `recreate` (removes and recreates it; confirmation first for a service that holds \
        data). With `wait`, polls health with progress until it is healthy or timeout_s passes, \
        and reports the final health. Use on health's hint for a stopped, unhealthy or missing \
        service.",
    hints: Hints {
        read_only: false,
        destructive: true,
        idempotent: false,
        open_world: false,
    },
    read_only_subset: false,
    input_schema: def::input_schema::<Input>,
    output_schema: def::output_schema::<Guarded<Output>>,
    run: |call, args| Box::pin(run(call, args)),
};

/// A recreate replaces a container whose data matters.
pub fn holds_data(svc: &ServiceModel) -> bool {
    svc.role.holds_data() || !svc.named_volumes.is_empty()
}

pub fn plan(stack_id: &str, svc: &ServiceModel, action: Action, containers: &[Instance]) -> Plan {
    let names: Vec<String> = containers.iter().map(|c| c.name.clone()).collect();
    let ollama = svc.role == Role::Ollama;
    let unloaded = if ollama {
        "; loaded models are unloaded"
    } else {
        ""
    };
    let step = match action {
        Action::Restart => PlanStep {
            action: "restart".into(),
            target: svc.name.clone(),
            detail: format!(
                "docker restart {} (stop with its grace period, then start; same container and filesystem){unloaded}",
                names.join(", ")
            ),
            before: Some(json!({ "containers": names })),
            after: None,
            destructive: false,
            cost: StepCost {
                data_loss: false,
                downtime: true,
                models_unloaded: ollama,
            },
        },
        Action::Recreate => {
            let data = holds_data(svc);
            let volumes = if svc.named_volumes.is_empty() {
                "no named volumes".to_string()
            } else {
                format!("named volumes kept: {}", svc.named_volumes.join(", "))
            };
            PlanStep {
                action: "recreate".into(),
                target: svc.name.clone(),
                detail: format!(
                    "docker compose rm --stop --force, then up -d --no-recreate {}: {} replaced ({volumes}); what it wrote \
                     outside its volumes is gone and open connections drop{unloaded}",
                    svc.name,
                    if names.is_empty() {
                        "a new container is created".to_string()
                    } else {
                        format!("{} is", names.join(", "))
                    }
                ),
                before: Some(json!({ "containers": names })),
                after: None,
                destructive: data,
                cost: StepCost {
                    data_loss: false,
                    downtime: true,
                    models_unloaded: ollama,
                },
            }
        }
    };
    let summary = match (action, step.destructive) {
        (Action::Restart, _) => format!("restart service `{}`", svc.name),
        (Action::Recreate, true) => format!(
            "recreate service `{}`, which holds data (role {}{})",
            svc.name,
            serde_json::to_value(svc.role)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            if svc.named_volumes.is_empty() {
                String::new()
            } else {
                format!(", volumes {}", svc.named_volumes.join(", "))
            }
        ),
        (Action::Recreate, false) => format!("recreate service `{}`", svc.name),
    };
    Plan::new(TOOL.name, stack_id, summary, vec![step])
}

async fn run(call: Arc<Call>, args: Value) -> Result<Reply, ToolError> {
    let input: Input = def::parse_args(args)?;
    if input.service.trim().is_empty() {
        return Err(ToolError::invalid("service", "must name a service"));
    }
    let timeout_s = input.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S);
    if !(1..=MAX_TIMEOUT_S).contains(&timeout_s) {
        return Err(ToolError::invalid(
            "timeout_s",
            format!("{timeout_s} is out of range 1..={MAX_TIMEOUT_S}"),
        ));
    }
    if input.timeout_s.is_some() && !input.wait {
        return Err(ToolError::invalid(
            "timeout_s",
            "only meaningful with wait: true",
        ));
    }
    if input
        .confirm_token
        .as_deref()
        .is_some_and(|t| t.len() > 1024)
    {
        return Err(ToolError::invalid(
            "confirm_token",
            "is not a token stackpilot issued",
        ));
    }
    let app = call.app.clone();
    let model = health::stack_model(&app).await?;
    let svc = health::select(
        &model,
        Some(std::slice::from_ref(&input.service)),
        "service",
    )?
    .into_iter()
    .next()
    .cloned()
    .ok_or_else(|| ToolError::internal("service resolved to nothing"))?;
    let engine = app.engine();
    // Planned again, under the lock, after a person's answer (Gate::Replan).
    let (containers, plan, confirmed_by) = loop {
        let containers: Vec<Instance> =
            match tokio::time::timeout(LIST_TIMEOUT, engine.instances()).await {
                Ok(list) => list?
                    .into_iter()
                    .filter(|c| c.service == svc.name && !c.one_off)
                    .collect(),
                Err(_) => {
                    return Err(ToolError::external(format!(
                        "the engine did not list the stack's instances within {} s",
                        LIST_TIMEOUT.as_secs()
                    )))
                }
            };
        if input.action == Action::Restart && containers.is_empty() {
            return Err(ToolError::invalid(
                "action",
                format!("`{}` has no container to restart", svc.name),
            )
            .next_step(format!(
                "call recover with service `{}` and action recreate (it creates the container), or compose_up",
                svc.name
            )));
        }
        let plan = plan(&app.stack.id, &svc, input.action, &containers);
        match call.guard(&plan, input.confirm_token.as_deref()).await? {
            Gate::Halt(reply) => return Ok(reply),
            Gate::Proceed(by) => break (containers, plan, by),
            Gate::Replan => continue,
        }
    };

    // Progress at least once a second for the whole call, from its own task,
    // so a slow engine answer cannot starve it.
    let status = Arc::new(Mutex::new(format!(
        "{} {}",
        input.action.as_str(),
        svc.name
    )));
    let started = Instant::now();
    let total = input.wait.then_some(timeout_s as f64);
    let ticker = {
        let status = status.clone();
        let progress = call.progress.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                let message = status.lock().map(|s| s.clone()).unwrap_or_default();
                progress.report(
                    started.elapsed().as_secs_f64().floor(),
                    total,
                    Some(message),
                );
            }
        })
    };
    let result = apply_and_wait(&call, engine, &svc, &input, &containers, timeout_s, &status).await;
    ticker.abort();
    let (wait_outcome, waited_s, health) = result?;
    if let Some(h) = &health {
        app.metrics.service_verdict(&h.service, h.verdict.as_str());
    }
    if wait_outcome != "healthy" && wait_outcome != "not_waited" {
        call.set_outcome(&format!("applied; wait ended: {wait_outcome}"));
    }
    let out = Output {
        service: svc.name.clone(),
        action: input.action,
        containers: containers.iter().map(|c| c.name.clone()).collect(),
        plan,
        confirmed_by,
        wait_outcome,
        waited_s,
        health,
    };
    serde_json::to_value(Guarded::Done(out))
        .map(Reply::Done)
        .map_err(|e| ToolError::internal(e.to_string()))
}

type Waited = (String, f64, Option<ServiceReport>);

/// Runs an engine action for at most `limit`.
async fn bounded(
    what: &str,
    limit: Duration,
    fut: impl std::future::Future<Output = Result<(), ToolError>>,
) -> Result<(), ToolError> {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
        Err(ToolError::external(format!(
            "the engine did not finish the {what} within {} s",
            limit.as_secs()
        )))
    })
}

async fn apply_and_wait(
    call: &Call,
    engine: &dyn Engine,
    svc: &ServiceModel,
    input: &Input,
    containers: &[Instance],
    timeout_s: u64,
    status: &Mutex<String>,
) -> Result<Waited, ToolError> {
    let set = |s: String| {
        if let Ok(mut g) = status.lock() {
            *g = s;
        }
    };
    let cancelled = || {
        ToolError::new(
            ErrorKind::Cancelled,
            format!(
                "cancelled while the {} of `{}` was running: it may have completed or stopped midway",
                input.action.as_str(),
                svc.name
            ),
        )
        .next_step(format!("call health with services [`{}`] to see where it stands", svc.name))
    };
    match input.action {
        Action::Restart => {
            set(format!("restarting {}", svc.name));
            let restarts = futures::future::join_all(containers.iter().map(|c| async move {
                bounded("restart", RESTART_LIMIT, engine.restart(&c.id, None))
                    .await
                    .map_err(|e| e.evidence(format!("container {}", c.name)))
            }));
            let results = tokio::select! {
                r = restarts => r,
                _ = call.ct.cancelled() => return Err(cancelled()),
            };
            for r in results {
                r?;
            }
        }
        Action::Recreate => {
            set(format!("recreating {}", svc.name));
            tokio::select! {
                r = bounded("recreate", RECREATE_LIMIT, engine.recreate(&svc.name)) => { r?; }
                _ = call.ct.cancelled() => return Err(cancelled()),
            }
        }
    }
    if !input.wait {
        return Ok(("not_waited".into(), 0.0, None));
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(timeout_s);
    let options = Options {
        services: Some(vec![svc.name.clone()]),
        deep: true,
        logs_tail: 0,
    };
    let mut last: Option<ServiceReport> = None;
    let outcome = loop {
        let poll = async {
            health::check(&call.app, &options)
                .await
                .map(|r| r.services.into_iter().next())
        };
        let report = tokio::select! {
            r = poll => r,
            _ = call.ct.cancelled() => break "cancelled",
        };
        match report {
            Ok(Some(s)) => {
                set(format!(
                    "{}: {} ({})",
                    s.service,
                    s.verdict.as_str(),
                    s.reason
                ));
                let healthy = s.verdict == Verdict::Healthy;
                last = Some(s);
                if healthy {
                    break "healthy";
                }
            }
            Ok(None) => {}
            Err(e) => set(format!("{}: health check failed: {}", svc.name, e.message)),
        }
        let now = Instant::now();
        if now >= deadline {
            break "timeout";
        }
        let pause = POLL_EVERY.min(deadline - now);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = call.ct.cancelled() => break "cancelled",
        }
    };
    let waited = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    Ok((outcome.to_string(), waited, last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::stack_model::PublishedPort;

    fn svc(role: Role, volumes: &[&str]) -> ServiceModel {
        ServiceModel {
            name: "db".into(),
            image: None,
            build: false,
            pull_policy: None,
            role,
            role_source: Default::default(),
            health: None,
            backup: None,
            healthcheck: true,
            named_volumes: volumes.iter().map(|v| v.to_string()).collect(),
            ports: vec![PublishedPort {
                host_ip: "127.0.0.1".into(),
                host_port: 1,
                container_port: 1,
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

    fn container() -> Instance {
        Instance {
            id: "abc".into(),
            name: "p-db-1".into(),
            service: "db".into(),
            ..Default::default()
        }
    }

    #[test]
    fn restart_is_never_destructive() {
        let p = plan(
            "s",
            &svc(Role::Postgres, &["pg"]),
            Action::Restart,
            &[container()],
        );
        assert!(!p.destructive);
        assert_eq!(p.steps[0].action, "restart");
        assert!(p.steps[0].cost.downtime);
    }

    #[test]
    fn recreate_is_destructive_only_for_data() {
        let p = plan(
            "s",
            &svc(Role::Postgres, &[]),
            Action::Recreate,
            &[container()],
        );
        assert!(p.destructive, "role postgres holds data");
        let p = plan(
            "s",
            &svc(Role::Api, &["cache"]),
            Action::Recreate,
            &[container()],
        );
        assert!(p.destructive, "a named volume holds data");
        let p = plan("s", &svc(Role::Api, &[]), Action::Recreate, &[]);
        assert!(!p.destructive);
        let o = plan(
            "s",
            &svc(Role::Ollama, &[]),
            Action::Recreate,
            &[container()],
        );
        assert!(o.steps[0].cost.models_unloaded);
    }

    #[test]
    fn plans_are_stable() {
        let a = plan(
            "s",
            &svc(Role::Postgres, &["pg"]),
            Action::Recreate,
            &[container()],
        );
        let b = plan(
            "s",
            &svc(Role::Postgres, &["pg"]),
            Action::Recreate,
            &[container()],
        );
        assert_eq!(a.digest, b.digest);
    }
}
