//! rollback: return services to the image recorded before their last
//! deploy. Mutating; recreating a service that holds data asks for
//! confirmation.
//!
//! 1. Read `<state>/deploys.json`; plan per service: `rollback` (running
//!    image -> the recorded previous one, kept on the engine by its
//!    stackpilot-rollback tag), `unchanged` (it already runs it) or `skip`
//!    (no running container). The mode follows deploy's rule (zero downtime
//!    where two replicas can run, else recreate). Guard.
//! 2. Per service, in dependency order: pin the running image too, bring a
//!    container of the previous image up through compose (`--pull never`,
//!    the pin given in a one-off override file), wait for health; when that
//!    fails, put the running image back the same way deploy does.
//! 3. Record the swap: what ran becomes `previous`, so a second rollback
//!    returns to the deployed image. The compose files still name the newer
//!    image: compose_up (or deploy) brings it back.
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
use crate::engine::service_instances;
use crate::guard::token::{ConfirmedBy, Guarded};
use crate::guard::{Call, Gate, Reply};
use crate::tools::def::{self, Hints, ToolDef};
use crate::tools::deploy::rollout::{
    health_timeout, roll_out, secs, short_id, within, ImageOut, ServiceOutcome, Target, Ticker,
};
use crate::tools::health::health;
use crate::tools::stack::stack_status::check_service_names;

const ENGINE_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Services to roll back. Default: every service with a recorded deploy.
    #[serde(default)]
    pub services: Option<Vec<String>>,
    /// Start the previous image beside the running container where the service allows two
    /// replicas (no host port, no container_name, no data). Default true.
    #[serde(default)]
    pub zero_downtime: Option<bool>,
    /// Seconds the previous image's container gets to become healthy, 1 to 3600. Default 120.
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
    pub confirmed_by: Option<ConfirmedBy>,
    pub order: Vec<String>,
    pub services: Vec<ServiceOutcome>,
    pub warnings: Vec<String>,
    pub duration_s: f64,
}

pub static TOOL: ToolDef = ToolDef {
    name: "rollback",
    title: "Roll back a deploy",
    description: "Return services to the image recorded before their last deploy (kept on the \
        engine by a stackpilot-rollback tag), one at a time in dependency order, with the same \
        health gate as deploy: zero downtime where the service allows two replicas, recreate \
        otherwise; if the previous image does not become healthy, the running one is put back. \
        A second rollback returns to the deployed image. Recreating a data service asks for \
        confirmation.",
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

enum Planned {
    Rollback,
    Unchanged,
    Skip(String),
}

struct ServicePlan {
    svc: ServiceModel,
    record: ServiceRecord,
    planned: Planned,
    mode: RolloutMode,
    mode_reason: String,
    containers: Vec<Instance>,
}

fn mode_name(m: RolloutMode) -> &'static str {
    match m {
        RolloutMode::ZeroDowntime => "zero downtime",
        RolloutMode::Recreate => "recreate",
    }
}

fn image_name(r: &ImageRecord) -> String {
    format!(
        "{} ({})",
        r.image.as_deref().unwrap_or("image"),
        short_id(&r.image_id)
    )
}

async fn run(call: Arc<Call>, args: Value) -> Result<Reply, ToolError> {
    // Gate::Replan runs the whole call again with these arguments.
    let replan_args = args.clone();
    let started = Instant::now();
    let input: Input = def::parse_args(args)?;
    let wait = health_timeout(input.health_timeout_s)?;
    let zero = input.zero_downtime.unwrap_or(true);
    if let Some(list) = &input.services {
        if list.is_empty() {
            return Err(ToolError::invalid(
                "services",
                "is empty; leave it out to roll back every recorded service",
            ));
        }
        check_service_names("services", list)?;
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
    if !input.dry_run {
        call.lock_stack().await?;
    }
    let app = call.app.clone();
    let model = app.engine().model(&[]).await?;
    let records = deploy_record::load(&app.stack.state_dir)?;
    let recorded: Vec<String> = records.services.keys().cloned().collect();
    let names: Vec<String> = match &input.services {
        Some(list) => {
            health::select(&model, Some(list), "services")?;
            for (i, s) in list.iter().enumerate() {
                if !records.services.contains_key(s) {
                    return Err(ToolError::invalid(
                        format!("services[{i}]"),
                        format!("no deploy of `{s}` is recorded, so there is nothing to roll back to"),
                    )
                    .allowed(recorded.clone())
                    .next_step("rollback returns a service to the image recorded before its last deploy; deploy records one"));
                }
            }
            list.clone()
        }
        None => recorded
            .iter()
            .filter(|s| model.services.contains_key(*s))
            .cloned()
            .collect(),
    };
    if names.is_empty() {
        return Err(ToolError::invalid(
            "services",
            "no deploy is recorded for any service of the stack: nothing to roll back to",
        )
        .next_step(
            "deploy records the running image before it replaces it; rollback returns to it",
        ));
    }
    let engine = app.engine();
    let compose = app.compose()?;
    let mut planned: Vec<ServicePlan> = Vec::new();
    for name in &names {
        let (Some(svc), Some(record)) = (model.services.get(name), records.services.get(name))
        else {
            continue;
        };
        let containers = within(
            "listing containers",
            ENGINE_LIMIT,
            service_instances(engine, name),
        )
        .await?;
        let running: Vec<&Instance> = containers.iter().filter(|c| c.running()).collect();
        let (mode, mode_reason) = rollout_mode(
            svc,
            if running.len() == containers.len() {
                containers.len()
            } else {
                0
            },
            zero,
        );
        let p = if running.is_empty() {
            Planned::Skip("no running container: compose_up (or recover) starts it".into())
        } else if running
            .iter()
            .all(|c| c.image_id.as_deref() == Some(record.previous.image_id.as_str()))
        {
            Planned::Unchanged
        } else {
            let present = compose
                .image_ids(std::slice::from_ref(&record.previous.image_id))
                .await?
                .values()
                .any(Option::is_some);
            if !present {
                return Err(ToolError::external(format!(
                    "the image `{name}` ran before its last deploy ({}) is no longer on the engine: nothing to roll back to",
                    image_name(&record.previous)
                ))
                .next_step("deploy the image you want instead (set its tag in .env, then deploy)"));
            }
            Planned::Rollback
        };
        planned.push(ServicePlan {
            svc: svc.clone(),
            record: record.clone(),
            planned: p,
            mode,
            mode_reason,
            containers,
        });
    }
    let to_roll: BTreeSet<String> = planned
        .iter()
        .filter(|p| matches!(p.planned, Planned::Rollback))
        .map(|p| p.svc.name.clone())
        .collect();
    let order = dependency_order(&model, &to_roll);
    let steps: Vec<PlanStep> = planned
        .iter()
        .map(|p| {
            let current = p.containers.iter().find(|c| c.running());
            let (action, detail, destructive, cost) = match &p.planned {
                Planned::Rollback => (
                    "rollback",
                    format!(
                        "image {} -> {}, recorded by the {} of {}; {}: {}{}",
                        current
                            .and_then(|c| c.image_id.as_deref())
                            .map(short_id)
                            .unwrap_or_default(),
                        image_name(&p.record.previous),
                        p.record.by,
                        p.record.at,
                        mode_name(p.mode),
                        p.mode_reason,
                        if holds_data(&p.svc) {
                            "; it holds data, so this needs confirmation"
                        } else {
                            ""
                        }
                    ),
                    holds_data(&p.svc),
                    StepCost {
                        data_loss: false,
                        downtime: p.mode == RolloutMode::Recreate,
                        models_unloaded: p.svc.role == Role::Ollama,
                    },
                ),
                Planned::Unchanged => (
                    "unchanged",
                    format!(
                        "already runs the image recorded before the last deploy: {}",
                        image_name(&p.record.previous)
                    ),
                    false,
                    StepCost::default(),
                ),
                Planned::Skip(why) => ("skip", why.clone(), false, StepCost::default()),
            };
            PlanStep {
                action: action.into(),
                target: p.svc.name.clone(),
                detail,
                before: current
                    .and_then(|c| c.image_id.as_deref())
                    .map(|i| json!({ "image_id": i })),
                after: Some(json!({ "image_id": p.record.previous.image_id, "mode": p.mode })),
                destructive,
                cost,
            }
        })
        .collect();
    let plan = Plan::new(
        TOOL.name,
        &app.stack.id,
        format!(
            "rollback on project {}: {} to roll back{}; {} step(s) need confirmation",
            model.project,
            to_roll.len(),
            if order.is_empty() {
                String::new()
            } else {
                format!(" (order: {})", order.join(", "))
            },
            steps.iter().filter(|s| s.destructive).count()
        ),
        steps,
    );
    let mut out = Output {
        project: model.project.clone(),
        plan: plan.clone(),
        dry_run: input.dry_run,
        confirmed_by: None,
        order: order.clone(),
        services: planned
            .iter()
            .filter(|p| !to_roll.contains(&p.svc.name))
            .map(|p| ServiceOutcome {
                service: p.svc.name.clone(),
                outcome: match p.planned {
                    Planned::Skip(_) => "skipped".into(),
                    _ => "unchanged".into(),
                },
                detail: match &p.planned {
                    Planned::Skip(why) => why.clone(),
                    _ => "already runs the recorded previous image".into(),
                },
                mode: None,
                mode_reason: None,
                from: None,
                to: None,
                containers_before: p.containers.iter().map(|c| c.name.clone()).collect(),
                containers_after: p.containers.iter().map(|c| c.name.clone()).collect(),
                health: None,
                duration_s: 0.0,
            })
            .collect(),
        warnings: Vec::new(),
        duration_s: 0.0,
    };
    if input.dry_run {
        call.set_outcome("dry_run");
        return done(out, started);
    }
    if to_roll.is_empty() {
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
    let ticker = Ticker::new(&call);
    let mut records = records;
    let mut done_names: Vec<String> = Vec::new();
    for name in &order {
        let Some(p) = planned.iter().find(|p| &p.svc.name == name) else {
            continue;
        };
        let Some(current) = p.containers.iter().find(|c| c.running()) else {
            continue;
        };
        let cur_id = current.image_id.clone().unwrap_or_default();
        let cur_pin = pin_reference(&model.project, name, &cur_id);
        let prev = p.record.previous.clone();
        let prev_pin = pin_reference(&model.project, name, &prev.image_id);
        // Both images stay on the engine under stackpilot's tags: the one to
        // return to, and the running one in case that fails.
        within(
            "tagging",
            ENGINE_LIMIT,
            compose.tag_image(&cur_id, &cur_pin),
        )
        .await?;
        within(
            "tagging",
            ENGINE_LIMIT,
            compose.tag_image(&prev.image_id, &prev_pin),
        )
        .await?;
        let target = Target {
            service: name,
            mode: p.mode,
            image: Some(&prev_pin),
            back_to: &cur_pin,
            wait_timeout_s: wait,
        };
        match roll_out(&call, compose, &target, &ticker).await {
            Ok(rolled) => {
                let now = ImageRecord {
                    image: current.image.clone(),
                    image_id: cur_id.clone(),
                    pin: Some(cur_pin.clone()),
                };
                records.services.insert(
                    name.clone(),
                    ServiceRecord {
                        previous: now.clone(),
                        current: ImageRecord {
                            pin: Some(prev_pin.clone()),
                            ..prev.clone()
                        },
                        at: clock::now_rfc3339(),
                        by: "rollback".into(),
                        outcome: "rolled_back".into(),
                    },
                );
                deploy_record::save(&app.stack.state_dir, &records)?;
                done_names.push(name.clone());
                out.services.push(ServiceOutcome {
                    service: name.clone(),
                    outcome: "rolled_back".into(),
                    detail: format!(
                        "returned to {} recorded by the {} of {}",
                        image_name(&prev),
                        p.record.by,
                        p.record.at
                    ),
                    mode: Some(p.mode),
                    mode_reason: Some(p.mode_reason.clone()),
                    from: Some(ImageOut {
                        image: current.image.clone(),
                        image_id: Some(cur_id.clone()),
                    }),
                    to: Some(ImageOut {
                        image: prev.image.clone().or(rolled.to.image),
                        image_id: rolled.to.image_id,
                    }),
                    containers_before: rolled.before.iter().map(|c| c.name.clone()).collect(),
                    containers_after: rolled.after.iter().map(|c| c.name.clone()).collect(),
                    health: rolled.health,
                    duration_s: rolled.duration_s,
                });
            }
            Err(failed) => {
                call.set_outcome("failed");
                let mut e = ToolError::new(
                    if failed.cancelled {
                        ErrorKind::Cancelled
                    } else {
                        ErrorKind::External
                    },
                    format!(
                        "rollback of `{name}` to {} failed ({}): {}; {}",
                        image_name(&prev),
                        mode_name(p.mode),
                        failed.cause,
                        if failed.restored {
                            "it runs the image it ran before this call again"
                        } else {
                            "putting the running image back failed too: see the evidence"
                        }
                    ),
                );
                e.evidence = failed.evidence;
                e.evidence.push(format!(
                    "rolled back before the failure: {}",
                    if done_names.is_empty() {
                        "none".to_string()
                    } else {
                        done_names.join(", ")
                    }
                ));
                return Err(e.next_step(format!(
                    "the previous image of `{name}` does not start healthy any more (its health-check outputs and logs are above): deploy a fixed image instead"
                )));
            }
        }
    }
    out.services.sort_by(|a, b| a.service.cmp(&b.service));
    done(out, started)
}

fn done(mut out: Output, started: Instant) -> Result<Reply, ToolError> {
    out.duration_s = secs(started);
    serde_json::to_value(Guarded::Done(out))
        .map(Reply::Done)
        .map_err(|e| ToolError::internal(e.to_string()))
}
