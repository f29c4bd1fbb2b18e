//! compose_down: stop and remove the stack's containers and networks through
//! the real `docker compose` v2 CLI; with remove_volumes, its volumes too.
//! Destructive (downtime; with remove_volumes, data loss): always confirmed.
//!
//! 1. Observe (bollard, by the project's compose labels): containers,
//!    networks, volumes; the compose file (all profiles) says which volumes
//!    `down -v` removes (declared ones, plus anonymous volumes of the removed
//!    containers).
//! 2. Plan exactly what `docker compose down` removes: every container of the
//!    project (or of `services`), the networks and volumes no remaining
//!    container uses. Volumes compose would not remove are listed as kept.
//!    With remove_volumes, the data services whose volumes go are backed up
//!    first (one backup set, label `pre-down`) unless skip_backup.
//! 3. Guard; then the backup (a failed backup stops here, nothing removed);
//!    then `docker compose --profile '*' down`, with progress.
//! 4. Report what was removed, the backup taken, and what of the project is left.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::compose::cli::{StreamEnd, StreamEvent, ALL_PROFILES};

use crate::domain::backup_set::{Label, Method};
use crate::domain::error::{ErrorKind, ToolError};
use crate::domain::instance::Instance;
use crate::domain::plan::{Plan, PlanStep, StepCost};
use crate::domain::stack_model::StackModel;
use crate::engine::compose::docker::LABEL_SELF;
use crate::engine::Engine;
use crate::guard::token::{ConfirmedBy, Guarded};
use crate::guard::{Call, Gate, Reply};
use crate::tools::backup::backup;
use crate::tools::backup::engines;
use crate::tools::def::{self, Hints, ToolDef};
use crate::tools::stack::stack_status::check_service_names;

pub const DEFAULT_STOP_TIMEOUT_S: u64 = 10;
pub const MAX_STOP_TIMEOUT_S: u64 = 600;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Take down only these services' containers. Default: the whole project (also containers
    /// of services no longer in the compose file).
    #[serde(default)]
    pub services: Option<Vec<String>>,
    /// Also remove the volumes compose declared for the stack and the anonymous volumes of the
    /// removed containers: their data is lost.
    #[serde(default)]
    pub remove_volumes: bool,
    /// With remove_volumes: do not back up the data services whose volumes go (their data is
    /// then lost for good). Default false: a backup set labelled `pre-down` is taken first.
    #[serde(default)]
    pub skip_backup: bool,
    /// Seconds each container gets to stop before it is killed, 0 to 600. Default 10.
    #[serde(default)]
    pub stop_timeout_s: Option<u64>,
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
    /// Planned removals; 0 means there was nothing to take down.
    pub changes: usize,
    /// The compose CLI ran.
    pub applied: bool,
    pub dry_run: bool,
    pub confirmed_by: Option<ConfirmedBy>,
    /// Project volumes that stay (remove_volumes not asked, still in use, or not declared in
    /// the compose file any more).
    pub kept_volumes: Vec<String>,
    /// The backup set taken before the volumes were removed (restore takes its id).
    pub backup: Option<TakenBackup>,
    /// What of the project exists after the call: containers, networks, volumes.
    pub remaining: Remaining,
    pub duration_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TakenBackup {
    pub backup_id: String,
    pub manifest_path: String,
    pub services: Vec<String>,
    pub total_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Remaining {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
}

pub static TOOL: ToolDef = ToolDef {
    name: "compose_down",
    title: "Take the stack down",
    description:
        "Stop and remove the stack's containers and networks (all, or those of `services`) \
        through Docker Compose; with remove_volumes also the project's volumes, after backing up \
        the data services whose volumes go (skip_backup opts out). Always asks for confirmation, \
        showing exactly what goes. Use to take the stack down; stack_status shows what runs.",
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

struct Planned {
    plan: Plan,
    kept_volumes: Vec<String>,
    model: StackModel,
    /// Data services to back up before `down -v`.
    backup_first: Vec<String>,
    /// The services to take down; None: the whole project.
    effective: Option<BTreeSet<String>>,
}

/// The label of the backup set taken before volumes are removed.
pub const BACKUP_LABEL: &str = "pre-down";

async fn plan(
    call: &Call,
    input: &Input,
    services: Option<&BTreeSet<String>>,
) -> Result<Planned, ToolError> {
    let project = call.app.stack.project.clone();
    let engine = call.app.compose()?;
    let compose = engine.cli()?;
    let all = vec![ALL_PROFILES.to_string()];
    let engine_side = async {
        let (containers, networks, volumes) = tokio::join!(
            engine.instances(),
            engine.project_networks(),
            engine.project_volumes()
        );
        Ok::<_, ToolError>((containers?, networks?, volumes?))
    };
    let (engine_side, model) = tokio::join!(engine_side, compose.model(&all));
    if let Err(e) = &model {
        if crate::engine::compose::cli::is_compose_missing(e) {
            return Err(e.clone());
        }
    }
    let (containers, networks, volumes) = engine_side?;
    let model = model?;
    if let Some(req) = services {
        for s in req {
            model.service(s)?;
        }
    }
    // stackpilot's own container (io.stackpilot.self) is never taken down by
    // itself: a whole-project down becomes a down of every other service.
    let is_self = |c: &Instance| c.is_self;
    let self_services: BTreeSet<String> = containers
        .iter()
        .filter(|c| is_self(c) && !c.service.is_empty())
        .map(|c| c.service.clone())
        .collect();
    if let Some(named) = services.and_then(|set| set.intersection(&self_services).next()) {
        return Err(ToolError::invalid(
            "services",
            format!("`{named}` runs stackpilot itself (label {LABEL_SELF}); it does not take itself down"),
        )
        .next_step("stop it from outside: `docker compose --profile ops down` in the stack directory"));
    }
    let effective: Option<BTreeSet<String>> = match services {
        Some(set) => Some(set.clone()),
        None if self_services.is_empty() => None,
        None => Some(
            containers
                .iter()
                .filter(|c| !is_self(c) && !c.service.is_empty())
                .map(|c| c.service.clone())
                .filter(|s| !self_services.contains(s))
                // Orphans cannot be named to `down`: they stay in this case.
                .filter(|s| model.services.contains_key(s))
                .collect(),
        ),
    };
    let (going, staying): (Vec<&Instance>, Vec<&Instance>) =
        containers.iter().partition(|c| match &effective {
            None => true,
            Some(set) => set.contains(&c.service),
        });
    let mut steps = Vec::new();
    for c in &going {
        let service = if c.service.is_empty() {
            "?"
        } else {
            c.service.as_str()
        };
        let role = c.role.as_deref();
        let known = model.services.contains_key(service);
        steps.push(PlanStep {
            action: "remove".into(),
            target: format!("container {}", c.name.clone()),
            detail: format!(
                "stop and remove the container of `{service}`{}",
                if known {
                    String::new()
                } else {
                    " (an orphan: its service is no longer in the compose file)".into()
                }
            ),
            before: None,
            after: None,
            destructive: true,
            cost: StepCost {
                data_loss: false,
                downtime: true,
                models_unloaded: role == Some("ollama"),
            },
        });
    }
    let still_used_networks: BTreeSet<String> =
        staying.iter().flat_map(|c| c.networks.clone()).collect();
    for name in &networks {
        if still_used_networks.contains(name) {
            continue;
        }
        steps.push(PlanStep {
            action: "remove".into(),
            target: format!("network {name}"),
            detail: "the project's network".into(),
            before: None,
            after: None,
            destructive: false,
            cost: StepCost::default(),
        });
    }
    let still_used_volumes: BTreeSet<String> =
        staying.iter().flat_map(|c| c.volumes.clone()).collect();
    let mut kept_volumes = Vec::new();
    let mut removed_keys: BTreeSet<&str> = BTreeSet::new();
    let declared: BTreeSet<&str> = model.volumes.iter().map(String::as_str).collect();
    let project_volume_names: BTreeSet<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
    for v in &volumes {
        let key = v.compose_name.as_deref().unwrap_or("");
        let removable =
            input.remove_volumes && declared.contains(key) && !still_used_volumes.contains(&v.name);
        if !removable {
            kept_volumes.push(v.name.clone());
            continue;
        }
        removed_keys.insert(key);
        steps.push(PlanStep {
            action: "remove".into(),
            target: format!("volume {}", v.name),
            detail: format!("the stack's volume `{key}`: its data is deleted"),
            before: None,
            after: None,
            destructive: true,
            cost: StepCost {
                data_loss: true,
                downtime: false,
                models_unloaded: false,
            },
        });
    }
    // Anonymous volumes (an image's VOLUME, such as postgres's data directory) by service.
    let mut anonymous_of: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    if input.remove_volumes {
        // Anonymous volumes of the removed containers go with them (`down -v`).
        let mut anonymous: BTreeSet<String> = BTreeSet::new();
        for c in &going {
            for v in c.volumes.clone() {
                if !project_volume_names.contains(v.as_str()) && !still_used_volumes.contains(&v) {
                    anonymous_of
                        .entry(c.service.as_str())
                        .or_default()
                        .push(v.clone());
                    anonymous.insert(v);
                }
            }
        }
        for v in anonymous {
            steps.push(PlanStep {
                action: "remove".into(),
                target: format!("volume {v}"),
                detail: "an anonymous volume of a removed container: its data is deleted".into(),
                before: None,
                after: None,
                destructive: true,
                cost: StepCost {
                    data_loss: true,
                    downtime: false,
                    models_unloaded: false,
                },
            });
        }
    }
    // Back up first what the removed volumes hold.
    let mut backup_first = Vec::new();
    if (!removed_keys.is_empty() || !anonymous_of.is_empty()) && !input.skip_backup {
        for (svc, method) in engines::data_services(&model)? {
            let mut goes: Vec<&str> = svc
                .named_volumes
                .iter()
                .map(String::as_str)
                .filter(|v| removed_keys.contains(v))
                .collect();
            // A dump does not care where the data lives: an anonymous volume is backed up too.
            if method != Method::Volume {
                goes.extend(
                    anonymous_of
                        .get(svc.name.as_str())
                        .into_iter()
                        .flatten()
                        .map(String::as_str),
                );
            }
            if goes.is_empty() {
                continue;
            }
            if matches!(method, Method::PgDump | Method::Mongodump | Method::Redis) {
                let running = going.iter().any(|c| c.service == svc.name && c.running());
                if !running {
                    return Err(ToolError::invalid(
                        "remove_volumes",
                        format!(
                            "service `{}` is not running, so its data cannot be dumped ({}) before its volume(s) {} are removed",
                            svc.name,
                            method.as_str(),
                            goes.join(", ")
                        ),
                    )
                    .next_step("start it (compose_up) and call again, or pass skip_backup: true to lose its data without a backup"));
                }
            }
            steps.push(PlanStep {
                action: "backup".into(),
                target: format!("service {}", svc.name),
                detail: format!(
                    "back up `{}` ({}) into a backup set labelled {BACKUP_LABEL} before its volume(s) {} are removed",
                    svc.name,
                    method.as_str(),
                    goes.join(", ")
                ),
                before: None,
                after: None,
                destructive: false,
                cost: StepCost::default(),
            });
            backup_first.push(svc.name.clone());
        }
    }
    let count = |kind: &str| steps.iter().filter(|s| s.target.starts_with(kind)).count();
    let summary = format!(
        "compose_down on project {project}{}{}: remove {} container(s), {} network(s), {} volume(s){}",
        if self_services.is_empty() {
            String::new()
        } else {
            format!(
                " (keeping stackpilot's own service {})",
                self_services.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        },
        services
            .map(|s| format!(" (services {})", s.iter().cloned().collect::<Vec<_>>().join(", ")))
            .unwrap_or_default(),
        count("container "),
        count("network "),
        count("volume "),
        match (count("volume ") > 0, backup_first.is_empty()) {
            (false, _) => String::new(),
            (true, true) => ": volume data is lost (no backup is taken)".into(),
            (true, false) =>
                format!(": volume data is lost, after a backup of {}", backup_first.join(", ")),
        }
    );
    kept_volumes.sort();
    Ok(Planned {
        plan: Plan::new("compose_down", &call.app.stack.id, summary, steps),
        kept_volumes,
        model,
        backup_first,
        effective,
    })
}

async fn remaining(call: &Call) -> Result<Remaining, ToolError> {
    let engine = call.app.compose()?;
    let (c, n, v) = tokio::join!(
        engine.instances(),
        engine.project_networks(),
        engine.project_volumes()
    );
    let mut containers: Vec<String> = c?.into_iter().map(|c| c.name).collect();
    containers.sort();
    Ok(Remaining {
        containers,
        networks: n?,
        volumes: v?.into_iter().map(|v| v.name).collect(),
    })
}

async fn run(call: Arc<Call>, args: Value) -> Result<Reply, ToolError> {
    let started = Instant::now();
    let input: Input = def::parse_args(args)?;
    let stop = input.stop_timeout_s.unwrap_or(DEFAULT_STOP_TIMEOUT_S);
    if stop > MAX_STOP_TIMEOUT_S {
        return Err(ToolError::invalid(
            "stop_timeout_s",
            format!("{stop} is out of range 0..={MAX_STOP_TIMEOUT_S} seconds"),
        ));
    }
    let services = input
        .services
        .as_deref()
        .map(|s| check_service_names("services", s))
        .transpose()?;
    if services.as_ref().is_some_and(BTreeSet::is_empty) {
        return Err(ToolError::invalid(
            "services",
            "is empty; leave it out to take down the whole project",
        ));
    }
    if input.confirm_token.as_ref().is_some_and(|t| t.len() > 1024) {
        return Err(ToolError::invalid(
            "confirm_token",
            "is not a token stackpilot issued",
        ));
    }
    if !input.dry_run {
        call.lock_stack().await?;
    }
    // Planned (again after a person's answer: Gate::Replan) under the lock.
    let (planned, mut out, confirmed_by) = loop {
        let planned = plan(&call, &input, services.as_ref()).await?;
        let out = Output {
            project: call.app.stack.project.clone(),
            changes: planned.plan.changes(),
            plan: planned.plan.clone(),
            applied: false,
            dry_run: input.dry_run,
            confirmed_by: None,
            kept_volumes: planned.kept_volumes.clone(),
            backup: None,
            remaining: Remaining::default(),
            duration_s: 0.0,
        };
        if input.dry_run || out.changes == 0 {
            call.set_outcome(if input.dry_run {
                "dry_run"
            } else {
                "no_changes"
            });
            let mut out = out;
            out.remaining = remaining(&call).await?;
            return finish(out, started);
        }
        match call
            .guard(&planned.plan, input.confirm_token.as_deref())
            .await?
        {
            Gate::Proceed(by) => break (planned, out, by),
            Gate::Halt(reply) => return Ok(reply),
            Gate::Replan => continue,
        }
    };
    out.confirmed_by = Some(confirmed_by);
    if !planned.backup_first.is_empty() {
        let label = Label::parse(BACKUP_LABEL)?;
        let set =
            backup::backup_services(&call, &planned.model, &planned.backup_first, Some(&label))
                .await
                .map_err(|mut e| {
                    e.message = format!(
                        "the backup before removing volumes failed, nothing was removed: {}",
                        e.message
                    );
                    e
                })?;
        out.backup = Some(TakenBackup {
            backup_id: set.id.to_string(),
            manifest_path: set.manifest_path.display().to_string(),
            services: planned.backup_first.clone(),
            total_bytes: set.manifest.entries.iter().map(|f| f.bytes).sum(),
        });
    }
    out.applied = true;
    let mut args: Vec<String> = vec!["down".into(), "--timeout".into(), stop.to_string()];
    if input.remove_volumes {
        args.push("--volumes".into());
    }
    match &planned.effective {
        None => args.push("--remove-orphans".into()),
        Some(set) => args.extend(set.iter().cloned()),
    }
    let compose = call.app.compose()?.cli()?;
    let mut seq = 0u64;
    let streamed = compose
        .stream(
            &[ALL_PROFILES.to_string()],
            &args,
            Duration::from_secs(stop + 300),
            &call.ct,
            |ev| {
                seq += 1;
                let msg = match ev {
                    StreamEvent::Line(l) => format!("compose down: {}", l.trim()),
                    StreamEvent::Tick(t) => format!("compose down: running for {} s", t.as_secs()),
                };
                call.progress.report(seq as f64, None, Some(msg));
            },
        )
        .await?;
    out.remaining = remaining(&call).await?;
    match streamed.end {
        StreamEnd::Exited { success: true, .. } => finish(out, started),
        StreamEnd::Cancelled => {
            call.set_outcome("cancelled");
            let mut e = ToolError::new(
                ErrorKind::Cancelled,
                "compose_down was cancelled: the compose CLI was stopped",
            )
            .next_step("call stack_status to see what is left, or compose_down again");
            e.evidence = vec![format!(
                "left: containers {:?}, networks {:?}, volumes {:?}",
                out.remaining.containers, out.remaining.networks, out.remaining.volumes
            )];
            Err(e)
        }
        end => {
            let tail: Vec<String> = streamed
                .lines
                .iter()
                .rev()
                .take(20)
                .rev()
                .cloned()
                .collect();
            let last = tail
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .cloned()
                .unwrap_or_default();
            let mut e = ToolError::external(format!(
                "docker compose down failed ({}): {}",
                match end {
                    StreamEnd::TimedOut => "timed out".to_string(),
                    StreamEnd::Exited { code, .. } => format!("exit {}", code.unwrap_or(-1)),
                    StreamEnd::Cancelled => "cancelled".into(),
                },
                crate::domain::redact::cap(&last, 400)
            ))
            .next_step("read compose's output in the evidence; stack_status shows what is left");
            e.evidence
                .push(crate::domain::redact::cap(&tail.join("\n"), 4096));
            e.evidence.push(format!(
                "left: containers {:?}, networks {:?}, volumes {:?}",
                out.remaining.containers, out.remaining.networks, out.remaining.volumes
            ));
            Err(e)
        }
    }
}

fn finish(mut out: Output, started: Instant) -> Result<Reply, ToolError> {
    out.duration_s = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    serde_json::to_value(Guarded::Done(out))
        .map(Reply::Done)
        .map_err(|e| ToolError::internal(e.to_string()))
}
