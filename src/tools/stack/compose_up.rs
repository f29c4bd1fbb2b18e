//! compose_up: bring the stack (or some services) up through the real
//! `docker compose` v2 CLI and wait until it is healthy. Mutating; recreating
//! a service that holds data, and removing orphans, need confirmation.
//!
//! 1. Resolve: `config` (the normalized model), `config --hash '*'` (the hash
//!    compose puts on each container), `config --profiles` when a profile is
//!    named; concurrently, the engine's containers and facts.
//! 2. Plan per service: `create`, `recreate` (config hash or image changed),
//!    `start`, or `unchanged`; images to pull or build; orphans. Preflight:
//!    images, host ports, GPU runtime, disk.
//! 3. Guard: recreating a data service (role ollama/postgres/mongodb/qdrant/
//!    volume, or any service with a named volume) and removing orphans are
//!    destructive.
//! 4. Apply: `up -d --wait --no-recreate` for what is created or started, then
//!    `up -d --wait --no-deps` for exactly the services the plan recreates, so
//!    compose can never recreate a service the person did not see in the plan.
//!    Progress each second; cancellation stops the CLI.
//! 5. Report per service; on failure, which service and why, with evidence.
//!
//! Nothing to change (every service unchanged and ready) runs no CLI at all.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::engine::compose::cli::{self, Compose, StreamEnd, StreamEvent};

use crate::domain::error::{ErrorKind, ToolError};
use crate::domain::instance::{EngineFacts, Instance};
use crate::domain::plan::{Plan, PlanStep, StepCost};
use crate::domain::stack_model::{PublishedPort, Role, ServiceModel, StackModel};
use crate::engine::compose::ComposeEngine;
use crate::engine::Engine;
use crate::guard::token::{ConfirmedBy, Guarded};
use crate::guard::{Call, Gate, Reply};
use crate::tools::def::{self, Hints, ToolDef};
use crate::tools::stack::report::{self as stack_report, ServiceReport};
use crate::tools::stack::stack_status::check_service_names;

pub const DEFAULT_WAIT_TIMEOUT_S: u64 = 300;
pub const MAX_WAIT_TIMEOUT_S: u64 = 3600;
/// Less free space than this under the engine's data root stops a plan that
/// creates containers or fetches images.
pub const MIN_FREE_BYTES: u64 = 1 << 30;
/// Beyond the health wait, how long pulls and builds may take before the CLI is stopped.
const CLI_GRACE: Duration = Duration::from_secs(1800);

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// One compose profile to enable (`standard`, `analysis`, `cpu`, ...); it must be one that
    /// the stack's services name. Default: COMPOSE_PROFILES from the stack's .env.
    #[serde(default)]
    pub profile: Option<String>,
    /// Bring up only these services (and the services they depend on). Default: every service
    /// of the profile.
    #[serde(default)]
    pub services: Option<Vec<String>>,
    /// Seconds to wait for the services to be running and healthy, 1 to 3600. Default 300.
    #[serde(default)]
    pub wait_timeout_s: Option<u64>,
    /// Pull (or build) images that are missing locally. With false, missing images stop the
    /// call before anything runs and the plan names them. Default true.
    #[serde(default)]
    pub pull: Option<bool>,
    /// Also remove containers of services that are no longer in the compose file (destructive:
    /// asks for confirmation). Default false: orphans are listed and left alone.
    #[serde(default)]
    pub remove_orphans: bool,
    /// Plan and run the preflight checks only; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The token from a previous confirmation_required answer.
    #[serde(default)]
    pub confirm_token: Option<String>,
}

/// One preflight check.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Check {
    /// `engine`, `images`, `ports`, `gpu`, `disk`.
    pub check: String,
    /// `ok`, `skipped` (nothing to check, or not checkable from here).
    pub status: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Output {
    /// The compose project name.
    pub project: String,
    /// The profile enabled for this call (none: the .env's COMPOSE_PROFILES applied).
    pub profile: Option<String>,
    pub plan: Plan,
    /// Planned changes (steps other than `unchanged`); 0 means nothing was touched.
    pub changes: usize,
    /// The compose CLI ran.
    pub applied: bool,
    pub dry_run: bool,
    /// How the plan was allowed to run (absent when nothing ran).
    pub confirmed_by: Option<ConfirmedBy>,
    pub preflight: Vec<Check>,
    /// Containers of services no longer in the compose file, left alone
    /// (call with remove_orphans: true to remove them).
    pub orphans: Vec<String>,
    /// The services in scope, one entry per container, after the call.
    pub services: Vec<ServiceReport>,
    /// Things worth knowing that did not stop the call.
    pub warnings: Vec<String>,
    pub duration_s: f64,
}

pub static TOOL: ToolDef = ToolDef {
    name: "compose_up",
    title: "Bring the stack up",
    description:
        "Create, recreate or start the stack's services through the Docker Compose v2 CLI \
        and wait until they are running and healthy. Plans first: per service create / recreate \
        (with the reason) / start / unchanged, images to pull or build, orphans, and preflight \
        checks (engine, images, host ports, NVIDIA runtime for GPU services, disk). Recreating a \
        service that holds data (ollama, postgres, mongodb, qdrant, or any named volume) and \
        removing orphans ask for confirmation. Nothing to change: no container is touched. \
        On failure it names the service with its health-check outputs and log tail.",
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

/// A compose profile name, as compose accepts them.
pub fn check_profile_name(name: &str) -> Result<(), ToolError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(ToolError::invalid(
            "profile",
            format!(
                "`{}` is not a compose profile name (letters, digits, `_`, `-`, `.`)",
                crate::domain::redact::cap(name, 100)
            ),
        ))
    }
}

fn check_input(input: &Input) -> Result<(u64, Option<BTreeSet<String>>), ToolError> {
    let wait = input.wait_timeout_s.unwrap_or(DEFAULT_WAIT_TIMEOUT_S);
    if !(1..=MAX_WAIT_TIMEOUT_S).contains(&wait) {
        return Err(ToolError::invalid(
            "wait_timeout_s",
            format!("{wait} is out of range 1..={MAX_WAIT_TIMEOUT_S} seconds"),
        ));
    }
    if let Some(p) = &input.profile {
        check_profile_name(p)?;
    }
    let services = input
        .services
        .as_deref()
        .map(|s| check_service_names("services", s))
        .transpose()?;
    if services.as_ref().is_some_and(BTreeSet::is_empty) {
        return Err(ToolError::invalid(
            "services",
            "is empty; leave it out to bring up every service",
        ));
    }
    if let Some(token) = &input.confirm_token {
        if token.len() > 1024 {
            return Err(ToolError::invalid(
                "confirm_token",
                "is not a token stackpilot issued",
            ));
        }
    }
    Ok((wait, services))
}

/// What was resolved and observed before planning.
struct Observed {
    compose: Compose,
    profiles: Vec<String>,
    model: StackModel,
    hashes: BTreeMap<String, String>,
    /// The services this call acts on (requested ones and their dependencies).
    scope: BTreeSet<String>,
    /// The project's service containers.
    project: Vec<Instance>,
    /// Every other container on the engine (for port conflicts).
    others: Vec<Instance>,
    images: BTreeMap<String, Option<String>>,
    facts: EngineFacts,
}

/// The image compose runs for a service (a build-only service gets `<project>-<service>`).
fn image_ref(project: &str, svc: &ServiceModel) -> String {
    svc.image
        .clone()
        .unwrap_or_else(|| format!("{project}-{}", svc.name))
}

async fn observe(
    call: &Call,
    profile: Option<&str>,
    requested: Option<&BTreeSet<String>>,
) -> Result<Observed, ToolError> {
    let stack = &call.app.stack;
    let engine: &ComposeEngine = call.app.compose()?;
    let compose = engine.cli()?;
    let profiles: Vec<String> = profile.map(|p| vec![p.to_string()]).unwrap_or_default();
    let project_name = stack.project.clone();
    // The engine's containers first (milliseconds); compose's config hashes
    // only matter when the project has containers to compare them with, so a
    // cold stack costs one compose process less.
    let engine_side = async {
        let list = engine.all_containers().await?;
        let hashes = if list
            .iter()
            .any(|c| c.project.as_deref() == Some(project_name.as_str()))
        {
            Some(compose.config_hashes(&profiles).await)
        } else {
            None
        };
        Ok::<_, ToolError>((list, hashes))
    };
    let facts = engine.facts();
    let known_profiles = async {
        match profile {
            Some(_) => compose.profiles().await.map(Some),
            None => Ok(None),
        }
    };
    let (engine_side, facts, model, known_profiles) =
        tokio::join!(engine_side, facts, compose.model(&profiles), known_profiles);
    // What is missing matters more than what failed: no Compose v2, then no
    // engine, then the stack's own errors (compose's message).
    let hash_error = match &engine_side {
        Ok((_, Some(Err(e)))) => Some(e),
        _ => None,
    };
    for r in [
        model.as_ref().err(),
        hash_error,
        known_profiles.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    {
        if cli::is_compose_missing(r) {
            return Err(r.clone());
        }
    }
    let (list, hashes) = engine_side?;
    let facts = facts?;
    if let (Some(p), Some(known)) = (profile, known_profiles?) {
        if !known.iter().any(|k| k == p) {
            let mut e = ToolError::invalid(
                "profile",
                format!(
                    "`{p}` is not a profile of this stack{}",
                    if known.is_empty() {
                        " (its services name no profiles; leave profile out)"
                    } else {
                        ""
                    }
                ),
            );
            e = e.allowed(known);
            return Err(e.next_step(
                "pick one of the allowed profiles (select_profile chooses one for this machine)",
            ));
        }
    }
    let model = model?;
    let hashes = hashes.transpose()?.unwrap_or_default();
    let scope = match requested {
        None => model.services.keys().cloned().collect(),
        Some(req) => {
            for s in req {
                model.service(s).map_err(|e| {
                    e.next_step(format!(
                        "name services of {} (compose_up with another profile enables others)",
                        profile
                            .map(|p| format!("profile `{p}`"))
                            .unwrap_or_else(|| "the .env's profiles".into())
                    ))
                })?;
            }
            with_dependencies(&model, req)
        }
    };
    let (project, others): (Vec<Instance>, Vec<Instance>) = list
        .into_iter()
        .partition(|c| c.project.as_deref() == Some(project_name.as_str()));
    let project = stack_report::service_containers(project);
    let mut refs: Vec<String> = scope
        .iter()
        .filter_map(|s| model.services.get(s))
        .map(|s| image_ref(&project_name, s))
        .collect();
    refs.sort();
    refs.dedup();
    let images = engine.image_ids(&refs).await?;
    Ok(Observed {
        compose,
        profiles,
        model,
        hashes,
        scope,
        project,
        others,
        images,
        facts,
    })
}

/// The requested services plus everything they depend on (compose starts those too).
fn with_dependencies(model: &StackModel, requested: &BTreeSet<String>) -> BTreeSet<String> {
    let mut scope = BTreeSet::new();
    let mut todo: Vec<String> = requested.iter().cloned().collect();
    while let Some(s) = todo.pop() {
        if !scope.insert(s.clone()) {
            continue;
        }
        if let Some(svc) = model.services.get(&s) {
            todo.extend(
                svc.depends_on
                    .iter()
                    .filter(|d| model.services.contains_key(*d))
                    .cloned(),
            );
        }
    }
    scope
}

/// What the plan does to one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Create,
    Recreate,
    Start,
    Unchanged,
}

/// The plan and what the apply step needs beside it.
struct Planned {
    plan: Plan,
    actions: BTreeMap<String, Action>,
    /// Orphan containers that stay (remove_orphans was not asked).
    kept_orphans: Vec<String>,
    remove_orphans: bool,
    preflight: Vec<Check>,
}

fn short(h: &str) -> &str {
    let h = h.strip_prefix("sha256:").unwrap_or(h);
    &h[..h.len().min(12)]
}

/// A data service: its recreation interrupts (or, without a volume, loses) data.
fn holds_data(svc: &ServiceModel) -> bool {
    svc.role.holds_data() || !svc.named_volumes.is_empty()
}

fn service_step(
    svc: &ServiceModel,
    desired_hash: Option<&String>,
    desired_image: Option<&String>,
    image: &str,
    containers: &[&Instance],
) -> (Action, PlanStep) {
    let step = |action: &str,
                detail: String,
                before: Option<Value>,
                after: Option<Value>,
                destructive: bool,
                cost: StepCost| PlanStep {
        action: action.into(),
        target: svc.name.clone(),
        detail,
        before,
        after,
        destructive,
        cost,
    };
    let recreate_cost = StepCost {
        data_loss: false,
        downtime: true,
        models_unloaded: svc.role == Role::Ollama,
    };
    let data = holds_data(svc);
    let data_note = if data {
        format!(
            "; it holds data (role {}{}), so this needs confirmation",
            role_name(svc.role),
            if svc.named_volumes.is_empty() {
                String::new()
            } else {
                format!(", named volume {}", svc.named_volumes.join(", "))
            }
        )
    } else {
        String::new()
    };
    if containers.is_empty() {
        return (
            Action::Create,
            step(
                "create",
                format!("no container yet: create and start it from {image}"),
                None,
                None,
                false,
                StepCost::default(),
            ),
        );
    }
    let stale_hash = containers
        .iter()
        .find(|c| Some(c.config_hash.as_deref().unwrap_or("")) != desired_hash.map(String::as_str));
    if let Some(c) = stale_hash {
        let old = c.config_hash.as_deref().unwrap_or("");
        return (
            Action::Recreate,
            step(
                "recreate",
                format!(
                    "configuration changed (config hash {} -> {}){data_note}",
                    short(old),
                    desired_hash.map(|h| short(h)).unwrap_or("?")
                ),
                Some(json!({ "config_hash": old })),
                desired_hash.map(|h| json!({ "config_hash": h })),
                data,
                recreate_cost,
            ),
        );
    }
    match desired_image {
        None => {
            return (
                Action::Recreate,
                step(
                    "recreate",
                    format!("image {image} is not present locally: it is fetched and the container recreated from it{data_note}"),
                    containers.first().and_then(|c| c.image_id.as_deref()).map(|i| json!({ "image_id": i })),
                    Some(json!({ "image": image })),
                    data,
                    recreate_cost,
                ),
            )
        }
        Some(want) => {
            if let Some(c) = containers
                .iter()
                .find(|c| c.image_id.as_deref().is_some_and(|have| have != want.as_str()))
            {
                let have = c.image_id.as_deref().unwrap_or("");
                return (
                    Action::Recreate,
                    step(
                        "recreate",
                        format!(
                            "image {image} changed ({} -> {}){data_note}",
                            short(have),
                            short(want)
                        ),
                        Some(json!({ "image_id": have })),
                        Some(json!({ "image_id": want })),
                        data,
                        recreate_cost,
                    ),
                );
            }
        }
    }
    if let Some(c) = containers.iter().find(|c| !c.running()) {
        let state = c.state.clone();
        return (
            Action::Start,
            step(
                "start",
                format!("container {} is {state}: start it", c.name.clone()),
                Some(json!({ "state": state })),
                Some(json!({ "state": "running" })),
                false,
                StepCost::default(),
            ),
        );
    }
    (
        Action::Unchanged,
        step(
            "unchanged",
            "running with the current configuration and image".into(),
            None,
            None,
            false,
            StepCost::default(),
        ),
    )
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Ollama => "ollama",
        Role::Postgres => "postgres",
        Role::Mongodb => "mongodb",
        Role::Qdrant => "qdrant",
        Role::Api => "api",
        Role::Worker => "worker",
        Role::Volume => "volume",
        Role::Other => "other",
    }
}

async fn plan(call: &Call, obs: &Observed, input: &Input) -> Result<Planned, ToolError> {
    let project = call.app.stack.project.as_str();
    let pull = input.pull.unwrap_or(true);
    let mut steps = Vec::new();
    let mut actions = BTreeMap::new();
    let mut by_service: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
    for c in &obs.project {
        if let Some(s) = Some(c.service.as_str()).filter(|s| !s.is_empty()) {
            by_service.entry(s).or_default().push(c);
        }
    }
    let mut missing_images: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut fetch_steps: BTreeMap<String, PlanStep> = BTreeMap::new();
    for name in &obs.scope {
        let Some(svc) = obs.model.services.get(name) else {
            continue;
        };
        let image = image_ref(project, svc);
        let desired_image = obs.images.get(&image).cloned().flatten();
        let containers = by_service.get(name.as_str()).cloned().unwrap_or_default();
        let (action, step) = service_step(
            svc,
            obs.hashes.get(name),
            desired_image.as_ref(),
            &image,
            &containers,
        );
        if desired_image.is_none() {
            let never = svc.pull_policy.as_deref() == Some("never");
            if svc.build {
                fetch_steps
                    .entry(image.clone())
                    .or_insert_with(|| PlanStep {
                        action: "build".into(),
                        target: format!("image {image}"),
                        detail: format!("not present locally: compose builds it for {name}"),
                        before: None,
                        after: None,
                        destructive: false,
                        cost: StepCost::default(),
                    });
            } else if never || !pull {
                missing_images
                    .entry(image.clone())
                    .or_default()
                    .push(name.clone());
            } else {
                fetch_steps
                    .entry(image.clone())
                    .or_insert_with(|| PlanStep {
                        action: "pull".into(),
                        target: format!("image {image}"),
                        detail: format!("not present locally: compose pulls it for {name}"),
                        before: None,
                        after: None,
                        destructive: false,
                        cost: StepCost::default(),
                    });
            }
        }
        actions.insert(name.clone(), action);
        steps.push(step);
    }
    steps.extend(fetch_steps.into_values());

    // Orphans: the project's containers whose service is in no profile of the file.
    let orphan_candidates: Vec<&Instance> = obs
        .project
        .iter()
        .filter(|c| !c.service.is_empty() && !obs.model.services.contains_key(&c.service))
        .collect();
    let mut orphans: Vec<String> = Vec::new();
    if !orphan_candidates.is_empty() {
        let all = obs.compose.all_services().await?;
        orphans = orphan_candidates
            .iter()
            .filter(|c| !c.service.is_empty() && !all.contains(&c.service))
            .map(|c| c.name.clone())
            .collect();
        orphans.sort();
    }
    let remove_orphans = input.remove_orphans && !orphans.is_empty();
    if remove_orphans {
        for o in &orphans {
            steps.push(PlanStep {
                action: "remove_orphan".into(),
                target: o.clone(),
                detail: "container of a service no longer in the compose file: stop and remove it"
                    .into(),
                before: None,
                after: None,
                destructive: true,
                cost: StepCost {
                    data_loss: false,
                    downtime: true,
                    models_unloaded: false,
                },
            });
        }
    }

    let mut preflight = vec![Check {
        check: "engine".into(),
        status: "ok".into(),
        detail: format!(
            "engine reachable at {}; Compose v2 resolved the stack",
            crate::engine::compose::probe::docker_endpoint_from_env()
        ),
    }];
    if !missing_images.is_empty() {
        let list: Vec<String> = missing_images
            .iter()
            .map(|(img, svcs)| format!("{img} (for {})", svcs.join(", ")))
            .collect();
        let never: Vec<&String> = missing_images
            .iter()
            .filter(|(_, svcs)| {
                svcs.iter().any(|s| {
                    obs.model
                        .services
                        .get(s)
                        .and_then(|m| m.pull_policy.as_deref())
                        == Some("never")
                })
            })
            .map(|(i, _)| i)
            .collect();
        let mut e = ToolError::external(format!(
            "images missing locally and not fetched ({}): {}",
            if never.is_empty() { "pull: false" } else { "pull_policy: never" },
            list.join("; ")
        ))
        .next_step(if never.is_empty() {
            "call compose_up with pull: true to pull them, or pull/load them yourself (`docker pull`, `docker load`)"
        } else {
            "build or load these images locally (`docker build`, `docker load`), or change the service's pull_policy"
        });
        e.evidence = list;
        return Err(e);
    }
    let touched: Vec<&String> = actions
        .iter()
        .filter(|(_, a)| **a != Action::Unchanged)
        .map(|(s, _)| s)
        .collect();
    let fetches = steps
        .iter()
        .any(|s| s.action == "pull" || s.action == "build");
    preflight.push(Check {
        check: "images".into(),
        status: "ok".into(),
        detail: if fetches {
            "missing images are pulled or built by compose (see the plan)".into()
        } else {
            "every image is present locally".into()
        },
    });
    preflight.push(check_gpus(obs, &touched)?);
    preflight.push(check_ports(obs, &touched, &by_service)?);
    preflight.push(check_disk(obs, !touched.is_empty() || fetches)?);

    let count = |a: &str| steps.iter().filter(|s| s.action == a).count();
    let confirm = steps.iter().filter(|s| s.destructive).count();
    let summary = format!(
        "compose_up on project {project}{}: {} create, {} recreate, {} start, {} unchanged, {} pull, {} build, {} orphan removal; {confirm} step(s) need confirmation",
        input
            .profile
            .as_deref()
            .map(|p| format!(" (profile {p})"))
            .unwrap_or_default(),
        count("create"),
        count("recreate"),
        count("start"),
        count("unchanged"),
        count("pull"),
        count("build"),
        count("remove_orphan"),
    );
    let plan = Plan::new("compose_up", &call.app.stack.id, summary, steps);
    Ok(Planned {
        plan,
        actions,
        kept_orphans: if remove_orphans { Vec::new() } else { orphans },
        remove_orphans,
        preflight,
    })
}

fn check_gpus(obs: &Observed, touched: &[&String]) -> Result<Check, ToolError> {
    let gpu: Vec<&String> = touched
        .iter()
        .copied()
        .filter(|s| obs.model.services.get(*s).is_some_and(|m| m.gpu))
        .collect();
    if gpu.is_empty() {
        return Ok(Check {
            check: "gpu".into(),
            status: "skipped".into(),
            detail: "no service to start reserves a GPU".into(),
        });
    }
    if !obs.facts.nvidia_runtime {
        let names: Vec<&str> = gpu.iter().map(|s| s.as_str()).collect();
        return Err(ToolError::external(format!(
            "service(s) {} reserve an NVIDIA GPU, but the Docker engine at {} has no nvidia runtime",
            names.join(", "),
            crate::engine::compose::probe::docker_endpoint_from_env()
        ))
        .evidence("docker info lists no `nvidia` runtime (install the NVIDIA Container Toolkit and run `nvidia-ctk runtime configure` on GPU machines)")
        .next_step("run select_profile (on a machine without an NVIDIA GPU it chooses the cpu profile), then compose_up with profile: cpu"));
    }
    Ok(Check {
        check: "gpu".into(),
        status: "ok".into(),
        detail: format!(
            "the engine has an nvidia runtime for {}",
            gpu.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

fn overlaps(a: &str, b: &str) -> bool {
    let any = |ip: &str| ip.is_empty() || ip == "0.0.0.0" || ip == "::";
    any(a) || any(b) || a == b
}

fn check_ports(
    obs: &Observed,
    touched: &[&String],
    by_service: &BTreeMap<&str, Vec<&Instance>>,
) -> Result<Check, ToolError> {
    let mut wanted: Vec<(&str, &PublishedPort)> = Vec::new();
    for s in touched {
        if let Some(m) = obs.model.services.get(*s) {
            wanted.extend(m.ports.iter().map(|p| (s.as_str(), p)));
        }
    }
    if wanted.is_empty() {
        return Ok(Check {
            check: "ports".into(),
            status: "skipped".into(),
            detail: "no service to start publishes a port".into(),
        });
    }
    // Ports held by a service's own containers are freed when compose replaces them.
    let own = |service: &str, port: &PublishedPort| {
        by_service.get(service).is_some_and(|cs| {
            cs.iter().any(|c| {
                c.ports
                    .iter()
                    .any(|p| p.host_port == port.host_port && overlaps(&p.host_ip, &port.host_ip))
            })
        })
    };
    let holders: Vec<&Instance> = obs
        .others
        .iter()
        .chain(
            obs.project
                .iter()
                .filter(|c| !c.service.is_empty() && !touched.contains(&&c.service)),
        )
        .filter(|c| c.running())
        .collect();
    let mut bound = 0;
    for (service, port) in &wanted {
        if port.protocol != "tcp" && port.protocol != "udp" {
            continue;
        }
        if let Some(c) = holders.iter().find(|c| {
            c.ports
                .iter()
                .any(|p| p.host_port == port.host_port && overlaps(&p.host_ip, &port.host_ip))
        }) {
            return Err(port_error(
                service,
                port,
                &format!("container {}", c.name.clone()),
            ));
        }
        if obs.facts.local && port.protocol == "tcp" && !own(service, port) {
            let ip: IpAddr = port
                .host_ip
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            match TcpListener::bind(SocketAddr::new(ip, port.host_port)) {
                Ok(_) => bound += 1,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    return Err(port_error(service, port, "another process on this host"));
                }
                Err(_) => {}
            }
        }
    }
    Ok(Check {
        check: "ports".into(),
        status: "ok".into(),
        detail: format!(
            "{} published port(s) free ({} checked by binding them on this host)",
            wanted.len(),
            bound
        ),
    })
}

fn port_error(service: &str, port: &PublishedPort, holder: &str) -> ToolError {
    let ip = if port.host_ip.is_empty() {
        "0.0.0.0"
    } else {
        &port.host_ip
    };
    ToolError::external(format!(
        "host port {ip}:{} that service `{service}` publishes is in use by {holder}",
        port.host_port
    ))
    .next_step("free the port, or change the service's published port in the compose file or .env (the *_PORT keys), then call compose_up again")
}

fn check_disk(obs: &Observed, needed: bool) -> Result<Check, ToolError> {
    let skipped = |detail: String| {
        Ok(Check {
            check: "disk".into(),
            status: "skipped".into(),
            detail,
        })
    };
    if !needed {
        return skipped("nothing is created or fetched".into());
    }
    let Some(root) = obs.facts.data_root.as_deref() else {
        return skipped("the engine did not report its data root".into());
    };
    if !obs.facts.local {
        return skipped(format!(
            "the engine is remote; its data root {root} is not visible here"
        ));
    }
    match fs4::available_space(root) {
        Ok(free) if free < MIN_FREE_BYTES => Err(ToolError::external(format!(
            "only {:.2} GB free under the engine's data root {root} (at least {:.1} GB needed)",
            free as f64 / 1e9,
            MIN_FREE_BYTES as f64 / 1e9
        ))
        .next_step(format!(
            "free at least {:.1} GB under {root} (`docker system df`, remove unused images), then call compose_up again",
            (MIN_FREE_BYTES - free) as f64 / 1e9
        ))),
        Ok(free) => Ok(Check {
            check: "disk".into(),
            status: "ok".into(),
            detail: format!("{:.1} GB free under {root}", free as f64 / 1e9),
        }),
        Err(e) => skipped(format!("{root} is not readable from here ({e})")),
    }
}

/// Observed, planned and reported, before the guard.
struct Prepared {
    obs: Observed,
    planned: Planned,
    out: Output,
    /// Container name -> (service, id) before the call.
    before: BTreeMap<String, (String, String)>,
    /// Services in scope that are not running and ready.
    not_ready: BTreeSet<String>,
}

async fn run(call: Arc<Call>, args: Value) -> Result<Reply, ToolError> {
    let started = Instant::now();
    let input: Input = def::parse_args(args)?;
    let (wait, requested) = check_input(&input)?;
    if !input.dry_run {
        // Plan under the lock: the state a person confirms is the state applied.
        call.lock_stack().await?;
    }
    let Prepared {
        obs,
        planned,
        mut out,
        before,
        not_ready,
    } = prepare(&call, &input, requested.as_ref(), started).await?;
    if input.dry_run {
        call.set_outcome("dry_run");
        return finish(out, started);
    }
    if out.changes == 0 && not_ready.is_empty() {
        call.set_outcome("no_changes");
        return finish(out, started);
    }
    let confirmed_by = match call
        .guard(&planned.plan, input.confirm_token.as_deref())
        .await?
    {
        Gate::Proceed(by) => by,
        Gate::Halt(reply) => return Ok(reply),
    };
    out.confirmed_by = Some(confirmed_by);
    let out = apply(
        &call, &input, wait, obs, planned, out, before, not_ready, started,
    )
    .await?;
    finish(out, started)
}

/// compose_up for a caller that has passed its own plan through the guard
/// (set_kv_cache, after writing the stack's .env): the same observe, plan
/// and apply, scoped to `services`, refused when the plan would change any
/// service other than `only`. Holds the stack lock the caller took.
pub(crate) async fn up_after_guard(
    call: &Call,
    profile: Option<String>,
    services: Vec<String>,
    only: &str,
    wait_timeout_s: u64,
    confirmed_by: ConfirmedBy,
) -> Result<Output, ToolError> {
    let started = Instant::now();
    let input = Input {
        profile,
        services: Some(services),
        wait_timeout_s: Some(wait_timeout_s),
        pull: Some(false),
        remove_orphans: false,
        dry_run: false,
        confirm_token: None,
    };
    let (wait, requested) = check_input(&input)?;
    call.lock_stack().await?;
    let Prepared {
        obs,
        planned,
        mut out,
        before,
        not_ready,
    } = prepare(call, &input, requested.as_ref(), started).await?;
    let others: Vec<String> = planned
        .actions
        .iter()
        .filter(|(s, a)| s.as_str() != only && **a != Action::Unchanged)
        .map(|(s, a)| format!("{s} ({a:?})"))
        .collect();
    if !others.is_empty() {
        return Err(ToolError::external(format!(
            "compose_up would also change {} besides `{only}`; nothing was recreated",
            others.join(", ")
        ))
        .next_step("call compose_up (dry_run) to see the whole plan, bring the stack in line, then call again"));
    }
    out.confirmed_by = Some(confirmed_by);
    apply(
        call, &input, wait, obs, planned, out, before, not_ready, started,
    )
    .await
}

async fn prepare(
    call: &Call,
    input: &Input,
    requested: Option<&BTreeSet<String>>,
    started: Instant,
) -> Result<Prepared, ToolError> {
    let obs = observe(call, input.profile.as_deref(), requested).await?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "compose_up: observed"
    );
    let planned = plan(call, &obs, input).await?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "compose_up: planned"
    );
    let engine = call.app.engine();
    let before: BTreeMap<String, (String, String)> = obs
        .project
        .iter()
        .filter(|c| !c.service.is_empty())
        .map(|c| (c.name.clone(), (c.service.clone(), c.id.clone())))
        .collect();
    let mut out = Output {
        project: call.app.stack.project.clone(),
        profile: input.profile.clone(),
        changes: planned.plan.changes(),
        plan: planned.plan.clone(),
        applied: false,
        dry_run: input.dry_run,
        confirmed_by: None,
        preflight: planned.preflight.clone(),
        orphans: planned.kept_orphans.clone(),
        services: Vec::new(),
        warnings: Vec::new(),
        duration_s: 0.0,
    };
    if !out.orphans.is_empty() {
        out.warnings.push(format!(
            "orphan container(s) {} belong to services no longer in the compose file; left running (remove_orphans: true removes them)",
            out.orphans.join(", ")
        ));
    }
    let (reports, _) = stack_report::collect(engine, &obs.project, Some(&obs.scope)).await?;
    let not_ready: BTreeSet<String> = reports
        .iter()
        .filter(|r| !r.ready())
        .map(|r| r.service.clone())
        .collect();
    out.services = reports;
    Ok(Prepared {
        obs,
        planned,
        out,
        before,
        not_ready,
    })
}

/// Runs the planned compose phases and reports; an error names the failed
/// services with their evidence.
#[allow(clippy::too_many_arguments)]
async fn apply(
    call: &Call,
    input: &Input,
    wait: u64,
    obs: Observed,
    planned: Planned,
    mut out: Output,
    before: BTreeMap<String, (String, String)>,
    not_ready: BTreeSet<String>,
    started: Instant,
) -> Result<Output, ToolError> {
    let engine = call.app.engine();
    out.applied = true;

    let recreate: Vec<String> = planned
        .actions
        .iter()
        .filter(|(_, a)| **a == Action::Recreate)
        .map(|(s, _)| s.clone())
        .collect();
    let waiting: BTreeSet<&str> = not_ready.iter().map(String::as_str).collect();
    let mut first: Vec<String> = planned
        .actions
        .iter()
        .filter(|(s, a)| {
            matches!(a, Action::Create | Action::Start)
                || (**a == Action::Unchanged && waiting.contains(s.as_str()))
        })
        .map(|(s, _)| s.clone())
        .collect();
    if first.is_empty() && planned.remove_orphans && recreate.is_empty() {
        first = obs.scope.iter().cloned().collect();
    }
    let pull = input.pull.unwrap_or(true);
    let common = |extra: &[&str], services: &[String]| -> Vec<String> {
        let mut a: Vec<String> = ["up", "-d", "--wait", "--wait-timeout"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.push(wait.to_string());
        a.extend(extra.iter().map(|s| s.to_string()));
        if !pull {
            a.extend(["--pull".to_string(), "never".to_string()]);
        }
        a.extend(services.iter().cloned());
        a
    };
    let mut phases: Vec<Vec<String>> = Vec::new();
    let mut orphans_flag = planned.remove_orphans;
    if !first.is_empty() {
        let mut extra = vec!["--no-recreate"];
        if orphans_flag {
            extra.push("--remove-orphans");
            orphans_flag = false;
        }
        phases.push(common(&extra, &first));
    }
    if !recreate.is_empty() {
        let mut extra = vec!["--no-deps"];
        if orphans_flag {
            extra.push("--remove-orphans");
        }
        phases.push(common(&extra, &recreate));
    }
    let total = phases.len();
    let mut seq = 0u64;
    let mut lines_seen: Vec<String> = Vec::new();
    let mut result: Option<(StreamEnd, usize)> = None;
    for (i, args) in phases.iter().enumerate() {
        let phase = format!("compose up {}/{total}", i + 1);
        let streamed = obs
            .compose
            .stream(
                &obs.profiles,
                args,
                Duration::from_secs(wait) + CLI_GRACE,
                &call.ct,
                |ev| {
                    seq += 1;
                    let msg = match ev {
                        StreamEvent::Line(l) => format!("{phase}: {}", l.trim()),
                        StreamEvent::Tick(t) => {
                            format!("{phase}: running for {} s", t.as_secs())
                        }
                    };
                    call.progress.report(seq as f64, None, Some(msg));
                },
            )
            .await?;
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            cli_ms = streamed.elapsed.as_millis() as u64,
            "compose_up: {phase} done"
        );
        lines_seen.extend(streamed.lines.iter().cloned());
        if streamed.end
            != (StreamEnd::Exited {
                success: true,
                code: Some(0),
            })
        {
            result = Some((streamed.end, i));
            break;
        }
    }

    let after = stack_report::service_containers(engine.instances().await?);
    let (reports, inspected) = stack_report::collect(engine, &after, Some(&obs.scope)).await?;
    for r in &reports {
        let Some(name) = &r.container_name else {
            continue;
        };
        if let (Some((_, old_id)), Some(Action::Unchanged | Action::Start)) =
            (before.get(name), planned.actions.get(&r.service))
        {
            if r.container_id.as_ref() != Some(old_id) {
                out.warnings.push(format!(
                    "container {name} of `{}` was replaced although the plan did not recreate it",
                    r.service
                ));
            }
        }
    }
    out.services = reports;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "compose_up: reported"
    );
    let failed: Vec<&ServiceReport> = out.services.iter().filter(|r| !r.ready()).collect();
    match result {
        None if failed.is_empty() => Ok(out),
        Some((StreamEnd::Cancelled, _)) => {
            call.set_outcome("cancelled");
            let mut e = ToolError::new(
                ErrorKind::Cancelled,
                "compose_up was cancelled: the compose CLI was stopped; the services are as listed",
            )
            .next_step("call stack_status to see the stack, or compose_up again to finish");
            e.evidence = state_lines(&out.services);
            Err(e)
        }
        other => {
            let tail: Vec<String> = lines_seen.iter().rev().take(20).rev().cloned().collect();
            let cause = match &other {
                Some((StreamEnd::TimedOut, _)) => format!(
                    "the compose CLI did not finish within {} s",
                    (Duration::from_secs(wait) + CLI_GRACE).as_secs()
                ),
                Some((StreamEnd::Exited { code, .. }, _)) => format!(
                    "docker compose up exited with {}",
                    code.map(|c| c.to_string())
                        .unwrap_or_else(|| "a signal".into())
                ),
                _ => "docker compose up succeeded but services are not ready".into(),
            };
            let names: Vec<String> = failed
                .iter()
                .map(|r| {
                    format!(
                        "`{}` ({}{})",
                        r.service,
                        r.state,
                        r.health
                            .as_deref()
                            .map(|h| format!(", {h}"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            let message = if names.is_empty() {
                format!(
                    "compose_up failed: {cause}: {}",
                    crate::domain::redact::cap(
                        tail.iter()
                            .rev()
                            .find(|l| !l.trim().is_empty())
                            .map(String::as_str)
                            .unwrap_or(""),
                        400
                    )
                )
            } else {
                format!(
                    "compose_up failed: service {} not ready within {wait} s ({cause})",
                    names.join(", ")
                )
            };
            let mut e = ToolError::external(message).next_step(
                "read the health-check outputs and logs in the evidence, fix the service (compose file or .env), then call compose_up again; stack_status shows the current state",
            );
            e.evidence.push(crate::domain::redact::cap(
                &format!("docker compose output (last lines):\n{}", tail.join("\n")),
                4096,
            ));
            for r in &failed {
                if let Some(c) = inspected
                    .iter()
                    .find(|c| Some(&c.instance.id) == r.container_id.as_ref())
                {
                    e.evidence
                        .extend(stack_report::failure_evidence(engine, c).await);
                }
            }
            e.evidence
                .push(format!("states: {}", state_lines(&out.services).join("; ")));
            Err(e)
        }
    }
}

fn state_lines(reports: &[ServiceReport]) -> Vec<String> {
    reports
        .iter()
        .map(|r| {
            format!(
                "{}: {}{}",
                r.service,
                r.state,
                r.health
                    .as_deref()
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default()
            )
        })
        .collect()
}

fn finish(mut out: Output, started: Instant) -> Result<Reply, ToolError> {
    out.duration_s = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    serde_json::to_value(Guarded::Done(out))
        .map(Reply::Done)
        .map_err(|e| ToolError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, role: Role, volumes: &[&str], deps: &[&str]) -> ServiceModel {
        ServiceModel {
            name: name.into(),
            image: Some("img:1".into()),
            build: false,
            pull_policy: None,
            role,
            health: None,
            backup: None,
            healthcheck: true,
            named_volumes: volumes.iter().map(|s| s.to_string()).collect(),
            ports: vec![],
            gpu: false,
            profiles: vec![],
            depends_on: deps.iter().map(|s| s.to_string()).collect(),
            stop_during_backup: false,
        }
    }

    fn container(service: &str, hash: &str, image: &str, running: bool) -> Instance {
        Instance {
            id: format!("id-{service}"),
            name: format!("p-{service}-1"),
            service: service.to_string(),
            config_hash: Some(hash.to_string()),
            image_id: Some(image.to_string()),
            state: if running { "running" } else { "exited" }.to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn service_actions_and_destructiveness() {
        let api = svc("api", Role::Api, &[], &[]);
        let pg = svc("pg", Role::Postgres, &["pgdata"], &[]);
        let cache = svc("cache", Role::Other, &["cache"], &[]);
        let h = "h1".to_string();
        let img = "sha256:aaa".to_string();
        let c = container("api", "h1", "sha256:aaa", true);
        assert_eq!(
            service_step(&api, Some(&h), Some(&img), "img:1", &[]).0,
            Action::Create
        );
        assert_eq!(
            service_step(&api, Some(&h), Some(&img), "img:1", &[&c]).0,
            Action::Unchanged
        );
        let stopped = container("api", "h1", "sha256:aaa", false);
        assert_eq!(
            service_step(&api, Some(&h), Some(&img), "img:1", &[&stopped]).0,
            Action::Start
        );
        let h2 = "h2".to_string();
        let (a, step) = service_step(&api, Some(&h2), Some(&img), "img:1", &[&c]);
        assert_eq!(a, Action::Recreate);
        assert!(
            !step.destructive,
            "a stateless recreate needs no confirmation"
        );
        assert!(step.detail.contains("configuration changed"));
        let pgc = container("pg", "h1", "sha256:aaa", true);
        let (_, step) = service_step(&pg, Some(&h2), Some(&img), "img:1", &[&pgc]);
        assert!(step.destructive, "recreating postgres needs confirmation");
        let cc = container("cache", "h1", "sha256:aaa", true);
        let (_, step) = service_step(&cache, Some(&h2), Some(&img), "img:1", &[&cc]);
        assert!(step.destructive, "any named volume makes it a data service");
        let newer = "sha256:bbb".to_string();
        let (a, step) = service_step(&api, Some(&h), Some(&newer), "img:1", &[&c]);
        assert_eq!(a, Action::Recreate);
        assert!(
            step.detail.contains("image img:1 changed"),
            "{}",
            step.detail
        );
    }

    #[test]
    fn dependencies_are_in_scope() {
        let mut model = StackModel {
            project: "p".into(),
            profiles: vec![],
            services: BTreeMap::new(),
            volumes: vec![],
            settings: crate::domain::stack_model::StackSettings {
                backup_root: "/b".into(),
                keep_last: 1,
                keep_daily: 0,
                keep_weekly: 0,
                backup_helper_image: None,
            },
        };
        for s in [
            svc("api", Role::Api, &[], &["pg", "ghost"]),
            svc("pg", Role::Postgres, &[], &[]),
            svc("web", Role::Api, &[], &["api"]),
            svc("other", Role::Api, &[], &[]),
        ] {
            model.services.insert(s.name.clone(), s);
        }
        let scope = with_dependencies(&model, &BTreeSet::from(["web".to_string()]));
        assert_eq!(
            scope.into_iter().collect::<Vec<_>>(),
            ["api", "pg", "web"],
            "dependencies, transitively; unknown ones ignored"
        );
    }

    #[test]
    fn input_bounds() {
        let input = |v: Value| def::parse_args::<Input>(v).expect("parse");
        for bad in [0u64, 1_000_000_000] {
            let e = check_input(&input(json!({"wait_timeout_s": bad}))).expect_err("bounds");
            assert_eq!(e.field.as_deref(), Some("wait_timeout_s"));
        }
        let e = check_input(&input(json!({"profile": "-x"}))).expect_err("profile");
        assert_eq!(e.field.as_deref(), Some("profile"));
        let e = check_input(&input(json!({"services": ["ok", "no way"]}))).expect_err("svc");
        assert_eq!(e.field.as_deref(), Some("services[1]"));
        assert!(check_input(&input(json!({"services": []}))).is_err());
        assert!(check_input(&input(json!({"profile": "cpu", "wait_timeout_s": 60}))).is_ok());
    }
}
