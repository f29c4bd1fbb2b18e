//! deploy: roll out new images, one service at a time, with a health gate
//! and an automatic rollback. Mutating; recreating a service that holds data
//! asks for confirmation.
//!
//! 1. Observe as compose_up does (the model, `config --hash`, the project's
//!    containers, image ids) and plan per service: `deploy` when its
//!    configuration or image changed (a new tag in .env, a rebuilt image),
//!    `rebuild` for a `build:` service (rolled out only if the rebuilt image
//!    differs), `unchanged`, or `skip` (no running container: compose_up's
//!    job). Each step says how the container will be replaced: zero downtime
//!    (a second replica behind the same alias, then the old one removed) where
//!    the service publishes no host port, has no container_name and holds no
//!    data; recreate otherwise. Guard: recreating a data service is destructive.
//! 2. `docker compose build` the build services; observe again.
//! 3. For each changed service, in dependency order: record the running image
//!    (`<state>/deploys.json`) and pin it with a tag, bring the new container
//!    up through compose and wait for health (`--wait`); if health fails
//!    within `health_timeout_s`, put the previous image back (remove the new
//!    replica, or recreate from the pin), stop, and report the failed attempt
//!    with its health-check outputs and log tail.
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::adapters::{clock, deploy_record};
use crate::domain::deploy::{
    dependency_order, holds_data, pin_reference, rollout_mode, ImageRecord, RolloutMode,
    ServiceRecord,
};
use crate::domain::error::{ErrorKind, ToolError};
use crate::domain::instance::Instance;
use crate::domain::plan::{Plan, PlanStep, StepCost};
use crate::domain::stack_model::{Role, ServiceModel};
use crate::guard::token::{ConfirmedBy, Guarded};
use crate::guard::{Call, Gate, Reply};
use crate::tools::def::{self, Hints, ToolDef};
use crate::tools::deploy::rollout::{
    self, health_timeout, roll_out, secs, short_id, ImageOut, ServiceOutcome, Target, Ticker,
};
use crate::tools::health::health;
use crate::tools::stack::compose_up::{self, image_ref, service_step, Action, Observed};
use crate::tools::stack::stack_status::check_service_names;

const TAG_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Deploy only these services (each is rolled out alone: `--no-deps`). Default: every service
    /// of the stack.
    #[serde(default)]
    pub services: Option<Vec<String>>,
    /// Rebuild services that have a `build:` section (`docker compose build`) and roll out those
    /// whose image changed. Default true.
    #[serde(default)]
    pub build: Option<bool>,
    /// Start the new container beside the old one where the service allows two replicas (no
    /// host port, no container_name, no data). Default true; false recreates every service.
    #[serde(default)]
    pub zero_downtime: Option<bool>,
    /// Seconds each new container gets to become healthy before the previous image is put back,
    /// 1 to 3600. Default 120.
    #[serde(default)]
    pub health_timeout_s: Option<u64>,
    /// Plan only; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The token from a previous confirmation_required answer.
    #[serde(default)]
    pub confirm_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Output {
    pub project: String,
    pub plan: Plan,
    pub dry_run: bool,
    /// How the plan was allowed to run (absent when nothing ran).
    pub confirmed_by: Option<ConfirmedBy>,
    /// The order services were (or would be) rolled out in: dependencies first.
    pub order: Vec<String>,
    /// Services rebuilt with `docker compose build`.
    pub built: Vec<String>,
    /// One entry per service in scope.
    pub services: Vec<ServiceOutcome>,
    pub warnings: Vec<String>,
    pub duration_s: f64,
}

pub static TOOL: ToolDef = ToolDef {
    name: "deploy",
    title: "Deploy new images",
    description: "Roll out what changed (a new image tag in .env, a rebuilt `build:` service, a \
        changed configuration) one service at a time in dependency order, waiting for health; a \
        service that fails health within health_timeout_s gets its previous image back, with \
        the health-check outputs and log tail. Zero downtime (a second replica, then the old one \
        removed) where a service has no host port, container_name or data; recreate otherwise. \
        Recreating a data service asks for confirmation. Use after changing images; rollback \
        undoes the last deploy.",
    hints: Hints {
        read_only: false,
        destructive: true,
        idempotent: true,
        open_world: false,
    },
    read_only_subset: false,
    input_schema: def::input_schema::<Input>,
    output_schema: def::output_schema::<Guarded<Output>>,
    run: |call, args| Box::pin(run(call, args)),
};

/// What the plan does to one service.
#[derive(Debug, Clone, PartialEq)]
enum Planned {
    Deploy { reason: String },
    Rebuild,
    Unchanged,
    Skip(String),
}

struct ServicePlan {
    svc: ServiceModel,
    planned: Planned,
    mode: RolloutMode,
    mode_reason: String,
    containers: Vec<Instance>,
}

fn check_input(input: &Input) -> Result<(u64, Option<BTreeSet<String>>), ToolError> {
    let wait = health_timeout(input.health_timeout_s)?;
    let services = match &input.services {
        Some(list) if list.is_empty() => {
            return Err(ToolError::invalid(
                "services",
                "is empty; leave it out to deploy every service",
            ))
        }
        Some(list) => Some(check_service_names("services", list)?),
        None => None,
    };
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
    Ok((wait, services))
}

fn mode_name(m: RolloutMode) -> &'static str {
    match m {
        RolloutMode::ZeroDowntime => "zero downtime",
        RolloutMode::Recreate => "recreate",
    }
}

/// Plans every service in scope from what was observed.
fn plan_services(
    obs: &Observed,
    scope: &BTreeSet<String>,
    build: bool,
    zero_downtime: bool,
) -> Vec<ServicePlan> {
    let project = obs.model.project.as_str();
    scope
        .iter()
        .filter_map(|name| obs.model.services.get(name))
        .map(|svc| {
            let containers: Vec<Instance> = obs
                .project
                .iter()
                .filter(|c| c.service == svc.name)
                .cloned()
                .collect();
            let refs: Vec<&Instance> = containers.iter().collect();
            let image = image_ref(project, svc);
            let desired = obs.images.get(&image).cloned().flatten();
            let (action, step) = service_step(
                svc,
                obs.hashes.get(&svc.name),
                desired.as_ref(),
                &image,
                &refs,
            );
            let all_running = containers.iter().all(Instance::running);
            let (mode, mode_reason) = rollout_mode(
                svc,
                if all_running { containers.len() } else { 0 },
                zero_downtime,
            );
            let planned = match action {
                Action::Recreate => Planned::Deploy {
                    reason: step.detail,
                },
                Action::Unchanged if svc.build && build => Planned::Rebuild,
                Action::Unchanged => Planned::Unchanged,
                Action::Create => Planned::Skip("no container: compose_up creates it".into()),
                Action::Start => Planned::Skip(
                    "its container is not running: compose_up (or recover) starts it".into(),
                ),
            };
            ServicePlan {
                svc: svc.clone(),
                planned,
                mode,
                mode_reason,
                containers,
            }
        })
        .collect()
}

fn plan_of(stack_id: &str, project: &str, services: &[ServicePlan], order: &[String]) -> Plan {
    let steps: Vec<PlanStep> = services
        .iter()
        .map(|p| {
            let svc = &p.svc;
            let data = holds_data(svc);
            let replaced = StepCost {
                data_loss: false,
                downtime: p.mode == RolloutMode::Recreate,
                models_unloaded: svc.role == Role::Ollama,
            };
            let how = format!("{}: {}", mode_name(p.mode), p.mode_reason);
            let current = p
                .containers
                .first()
                .and_then(|c| c.image_id.as_deref())
                .map(|i| json!({ "image_id": i }));
            let (action, detail, destructive, cost) = match &p.planned {
                Planned::Deploy { reason } => {
                    ("deploy", format!("{reason}; {how}"), data, replaced)
                }
                Planned::Rebuild => (
                    "rebuild",
                    format!(
                        "docker compose build {}; rolled out only if the image changes ({how}){}",
                        svc.name,
                        if data {
                            "; it holds data, so this needs confirmation"
                        } else {
                            ""
                        }
                    ),
                    data,
                    replaced,
                ),
                Planned::Unchanged => (
                    "unchanged",
                    "running with the current configuration and image".to_string(),
                    false,
                    StepCost::default(),
                ),
                Planned::Skip(why) => ("skip", why.clone(), false, StepCost::default()),
            };
            PlanStep {
                action: action.into(),
                target: svc.name.clone(),
                detail,
                before: current,
                after: Some(json!({ "mode": p.mode })),
                destructive,
                cost,
            }
        })
        .collect();
    let count = |a: &str| steps.iter().filter(|s| s.action == a).count();
    let confirm = steps.iter().filter(|s| s.destructive).count();
    let summary = format!(
        "deploy on project {project}: {} to roll out{}, {} to rebuild, {} unchanged, {} skipped; {confirm} step(s) need confirmation",
        count("deploy"),
        if order.is_empty() {
            String::new()
        } else {
            format!(" (order: {})", order.join(", "))
        },
        count("rebuild"),
        count("unchanged"),
        count("skip"),
    );
    Plan::new(TOOL.name, stack_id, summary, steps)
}

async fn run(call: Arc<Call>, args: Value) -> Result<Reply, ToolError> {
    // Gate::Replan runs the whole call again with these arguments.
    let replan_args = args.clone();
    let started = Instant::now();
    let input: Input = def::parse_args(args)?;
    let (wait, requested) = check_input(&input)?;
    let build = input.build.unwrap_or(true);
    let zero = input.zero_downtime.unwrap_or(true);
    if !input.dry_run {
        // Plan under the lock: the state a person confirms is the state applied.
        call.lock_stack().await?;
    }
    let obs = compose_up::observe(&call, None, None).await?;
    let scope: BTreeSet<String> = match &requested {
        Some(req) => {
            let names: Vec<String> = req.iter().cloned().collect();
            health::select(&obs.model, Some(&names), "services")?
                .into_iter()
                .map(|s| s.name.clone())
                .collect()
        }
        None => obs.model.services.keys().cloned().collect(),
    };
    let planned = plan_services(&obs, &scope, build, zero);
    let rollable: BTreeSet<String> = planned
        .iter()
        .filter(|p| matches!(p.planned, Planned::Deploy { .. } | Planned::Rebuild))
        .map(|p| p.svc.name.clone())
        .collect();
    let order = dependency_order(&obs.model, &rollable);
    let plan = plan_of(&call.app.stack.id, &obs.model.project, &planned, &order);
    let mut out = Output {
        project: obs.model.project.clone(),
        plan: plan.clone(),
        dry_run: input.dry_run,
        confirmed_by: None,
        order: order.clone(),
        built: Vec::new(),
        services: planned
            .iter()
            .filter(|p| !rollable.contains(&p.svc.name))
            .map(left_alone)
            .collect(),
        warnings: Vec::new(),
        duration_s: 0.0,
    };
    if input.dry_run {
        call.set_outcome("dry_run");
        return done(out, started);
    }
    if rollable.is_empty() {
        call.set_outcome("no_changes");
        return done(out, started);
    }
    out.confirmed_by = Some(
        match call.guard(&plan, input.confirm_token.as_deref()).await? {
            Gate::Proceed(by) => by,
            Gate::Halt(reply) => return Ok(reply),
            // A person accepted while the stack lock was released: observe
            // and plan again under the lock; it runs only if the plan is the
            // one they accepted.
            Gate::Replan => return Box::pin(run(call.clone(), replan_args)).await,
        },
    );
    let compose = call.app.compose()?;
    let ticker = Ticker::new(&call);

    // Build, then look again: a rebuilt image may differ (deploy) or not.
    let to_build: Vec<String> = planned
        .iter()
        .filter(|p| build && p.svc.build && rollable.contains(&p.svc.name))
        .map(|p| p.svc.name.clone())
        .collect();
    let mut obs = obs;
    if !to_build.is_empty() {
        ticker.say(format!("building {}", to_build.join(", ")));
        let phase = "compose build".to_string();
        let streamed = compose
            .build(&to_build, &call.ct, ticker.on_event(&phase))
            .await?;
        if streamed.end
            != (crate::engine::compose::cli::StreamEnd::Exited {
                success: true,
                code: Some(0),
            })
        {
            let tail: Vec<String> = streamed
                .lines
                .iter()
                .rev()
                .take(20)
                .rev()
                .cloned()
                .collect();
            return Err(ToolError::external(format!(
                "docker compose build {} failed: nothing was rolled out",
                to_build.join(" ")
            ))
            .evidence(format!("docker compose output (last lines):\n{}", tail.join("\n")))
            .next_step("fix the build (Dockerfile, context) as compose's output says, then call deploy again"));
        }
        out.built = to_build.clone();
        obs = compose_up::observe(&call, None, None).await?;
    }
    let replanned = plan_services(&obs, &rollable, false, zero);
    let mut records = deploy_record::load(&call.app.stack.state_dir)?;
    let mut deployed: Vec<String> = Vec::new();
    let mut rest: Vec<String> = order.clone();
    for name in &order {
        rest.retain(|r| r != name);
        let Some(p) = replanned.iter().find(|p| &p.svc.name == name) else {
            continue;
        };
        let reason = match &p.planned {
            Planned::Deploy { reason } => reason.clone(),
            _ => {
                out.services.push(ServiceOutcome {
                    service: name.clone(),
                    outcome: "unchanged".into(),
                    detail: "rebuilt: the image is the same as the running one, so nothing was rolled out".into(),
                    mode: None,
                    mode_reason: None,
                    from: None,
                    to: None,
                    containers_before: names(&p.containers),
                    containers_after: names(&p.containers),
                    health: None,
                    duration_s: 0.0,
                });
                continue;
            }
        };
        let Some(current) = p.containers.iter().find(|c| c.running()) else {
            out.warnings.push(format!(
                "`{name}` stopped running during the deploy: left as it is"
            ));
            continue;
        };
        let old_id = current.image_id.clone().unwrap_or_default();
        let pin = pin_reference(&obs.model.project, name, &old_id);
        rollout::within("the rollback tag", TAG_LIMIT, compose.tag_image(&old_id, &pin))
            .await
            .map_err(|e| {
                e.next_step(format!(
                    "nothing of `{name}` was changed: without a tag for its running image a failed deploy could not be rolled back"
                ))
            })?;
        let previous = ImageRecord {
            image: current.image.clone(),
            image_id: old_id.clone(),
            pin: Some(pin.clone()),
        };
        let image = image_ref(&obs.model.project, &p.svc);
        let superseded = records
            .services
            .get(name)
            .and_then(|r| r.previous.pin.clone());
        records.services.insert(
            name.clone(),
            ServiceRecord {
                previous: previous.clone(),
                current: ImageRecord {
                    image: Some(image.clone()),
                    image_id: obs
                        .images
                        .get(&image)
                        .cloned()
                        .flatten()
                        .unwrap_or_default(),
                    pin: None,
                },
                at: clock::now_rfc3339(),
                by: "deploy".into(),
                outcome: "in_progress".into(),
            },
        );
        deploy_record::save(&call.app.stack.state_dir, &records)?;
        let target = Target {
            service: name,
            mode: p.mode,
            image: None,
            back_to: &pin,
            wait_timeout_s: wait,
        };
        match roll_out(&call, compose, &target, &ticker).await {
            Ok(rolled) => {
                if let Some(r) = records.services.get_mut(name) {
                    r.outcome = "deployed".into();
                    r.current.image_id = rolled.to.image_id.clone().unwrap_or_default();
                }
                deploy_record::save(&call.app.stack.state_dir, &records)?;
                if let Some(old_pin) = superseded.filter(|o| o != &pin) {
                    if !records.pins_in_use().contains(&old_pin) {
                        if let Err(e) = compose.untag_image(&old_pin).await {
                            out.warnings.push(format!(
                                "the superseded rollback tag {old_pin} was kept: {}",
                                e.message
                            ));
                        }
                    }
                }
                deployed.push(name.clone());
                out.services.push(ServiceOutcome {
                    service: name.clone(),
                    outcome: "deployed".into(),
                    detail: reason,
                    mode: Some(p.mode),
                    mode_reason: Some(p.mode_reason.clone()),
                    from: Some(ImageOut {
                        image: previous.image.clone(),
                        image_id: Some(previous.image_id.clone()),
                    }),
                    to: Some(rolled.to),
                    containers_before: names(&rolled.before),
                    containers_after: names(&rolled.after),
                    health: rolled.health,
                    duration_s: rolled.duration_s,
                });
            }
            Err(failed) => {
                if let Some(r) = records.services.get_mut(name) {
                    r.outcome = if failed.restored {
                        "failed_rolled_back".into()
                    } else {
                        "failed".into()
                    };
                    if failed.restored {
                        r.current = previous.clone();
                    }
                }
                let saved = deploy_record::save(&call.app.stack.state_dir, &records);
                call.set_outcome(if failed.restored {
                    "failed; rolled back"
                } else {
                    "failed; rollback failed"
                });
                let mut e = ToolError::new(
                    if failed.cancelled {
                        ErrorKind::Cancelled
                    } else {
                        ErrorKind::External
                    },
                    format!(
                        "deploy of `{name}` failed ({}, {}): {}; {}",
                        mode_name(p.mode),
                        short_id(&old_id),
                        failed.cause,
                        if failed.restored {
                            format!(
                                "rolled back: `{name}` runs its previous image again ({})",
                                previous.image.as_deref().unwrap_or(&pin)
                            )
                        } else {
                            "the rollback failed too: see the evidence".into()
                        }
                    ),
                );
                e.evidence = failed.evidence;
                e.evidence.push(format!(
                    "deployed before the failure: {}; not attempted: {}",
                    list_or_none(&deployed),
                    list_or_none(&rest)
                ));
                if let Err(s) = saved {
                    e.evidence
                        .push(format!("writing the deploy record failed: {s}"));
                }
                return Err(e.next_step(format!(
                    "read the failed container's health-check outputs and log tail above, fix the image or configuration of `{name}`, then call deploy again{}",
                    if failed.restored {
                        String::new()
                    } else {
                        "; call health and recover for the service now".into()
                    }
                )));
            }
        }
    }
    out.services.sort_by(|a, b| a.service.cmp(&b.service));
    done(out, started)
}

fn left_alone(p: &ServicePlan) -> ServiceOutcome {
    let (outcome, detail) = match &p.planned {
        Planned::Skip(why) => ("skipped", why.clone()),
        _ => (
            "unchanged",
            "running with the current configuration and image".to_string(),
        ),
    };
    ServiceOutcome {
        service: p.svc.name.clone(),
        outcome: outcome.into(),
        detail,
        mode: None,
        mode_reason: None,
        from: None,
        to: None,
        containers_before: names(&p.containers),
        containers_after: names(&p.containers),
        health: None,
        duration_s: 0.0,
    }
}

fn names(list: &[Instance]) -> Vec<String> {
    list.iter().map(|i| i.name.clone()).collect()
}

fn list_or_none(list: &[String]) -> String {
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

fn done(mut out: Output, started: Instant) -> Result<Reply, ToolError> {
    out.duration_s = secs(started);
    serde_json::to_value(Guarded::Done(out))
        .map(Reply::Done)
        .map_err(|e| ToolError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_bounds_name_the_field() {
        let field = |v: Value| {
            check_input(&def::parse_args(v).expect("parse"))
                .err()
                .and_then(|e| e.field)
                .unwrap_or_default()
        };
        assert_eq!(field(json!({"health_timeout_s": 0})), "health_timeout_s");
        assert_eq!(field(json!({"health_timeout_s": 3601})), "health_timeout_s");
        assert_eq!(field(json!({"services": []})), "services");
        assert_eq!(field(json!({"services": ["a", "b c"]})), "services[1]");
        assert!(check_input(&def::parse_args(json!({"services": ["api"]})).expect("p")).is_ok());
    }
}
