//! prune_backups: delete the backup sets a retention policy does not keep.
//! Destructive, so guarded: the plan lists every set it deletes.
//!
//! Retention is applied per service (see `backup_set::retain`): a set
//! survives when the policy keeps it for any of its services, so the newest
//! backup of every service always survives; an all-zero policy is refused.
//! Only files a valid stackpilot manifest lists are deleted; anything else in
//! the backup root (foreign files, invalid manifests, .partial files) is
//! never touched.
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::adapters::backup_store;
use crate::domain::backup_set::{self, Policy, SetFacts};
use crate::domain::error::ToolError;
use crate::domain::plan::{Plan, PlanStep, StepCost};
use crate::guard::token::{ConfirmedBy, Guarded};
use crate::guard::{Call, Gate, Reply};
use crate::tools::def::{self, Hints, ToolDef};

/// Larger counts are typos; 10,000 daily backups are 27 years.
pub const MAX_KEEP: u32 = 10_000;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Keep the newest N sets of each service. Default: the stack's x-stackpilot keep_last (7).
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// Keep the newest set of each of the newest N days (UTC) with backups. Default: keep_daily (0).
    #[serde(default)]
    pub keep_daily: Option<u32>,
    /// Keep the newest set of each of the newest N ISO weeks with backups. Default: keep_weekly (0).
    #[serde(default)]
    pub keep_weekly: Option<u32>,
    /// The token from a previous confirmation_required answer.
    #[serde(default)]
    pub confirm_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Deleted {
    pub backup_id: String,
    pub services: Vec<String>,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Output {
    pub policy: Policy,
    /// Sets kept, newest first.
    pub kept: Vec<String>,
    pub deleted: Vec<Deleted>,
    pub freed_bytes: u64,
    /// Left alone: files no manifest lists, invalid manifests, .partial files.
    pub untouched_files: u64,
    pub plan: Plan,
    pub confirmed_by: ConfirmedBy,
}

pub static TOOL: ToolDef = ToolDef {
    name: "prune_backups",
    title: "Prune old backup sets",
    description:
        "Delete the backup sets a retention policy (keep_last, keep_daily, keep_weekly; defaults \
        from the stack) does not keep, per service. Never deletes a service's newest backup or a \
        file no manifest lists; a policy that keeps nothing is refused. Destructive: the plan \
        lists every set and runs only when confirmed. Use when backups take too much disk.",
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

fn refuse(e: backup_set::PolicyError) -> ToolError {
    ToolError::invalid("keep_last", e.to_string()).next_step(
        "keep at least one backup: set keep_last, keep_daily or keep_weekly to 1 or more",
    )
}

async fn run(call: Arc<Call>, args: Value) -> Result<Reply, ToolError> {
    let input: Input = def::parse_args(args)?;
    for (field, v) in [
        ("keep_last", input.keep_last),
        ("keep_daily", input.keep_daily),
        ("keep_weekly", input.keep_weekly),
    ] {
        if let Some(v) = v {
            if v > MAX_KEEP {
                return Err(ToolError::invalid(
                    field,
                    format!("{v} is out of range 0..={MAX_KEEP}"),
                ));
            }
        }
    }
    if input.confirm_token.as_ref().is_some_and(|t| t.len() > 1024) {
        return Err(ToolError::invalid(
            "confirm_token",
            "is not a token stackpilot issued",
        ));
    }
    let model = call.app.engine().model(&[]).await?;
    let policy = Policy {
        keep_last: input.keep_last.unwrap_or(model.settings.keep_last),
        keep_daily: input.keep_daily.unwrap_or(model.settings.keep_daily),
        keep_weekly: input.keep_weekly.unwrap_or(model.settings.keep_weekly),
    };
    let dir = backup_store::project_dir(&model.settings.backup_root, &model.project)?;
    // A policy that keeps nothing is refused before anything is touched.
    backup_set::retain(&[], &policy).map_err(refuse)?;
    // Plan under the lock: no backup can add a set between the plan and the deletion.
    call.lock_stack().await?;
    // Listed and planned under the lock, again after a person's answer.
    let (listing, confirmed_by, plan) = loop {
        let listing = backup_store::list(&dir)?;
        let keep = backup_set::retain(&listing_facts(&listing), &policy).map_err(refuse)?;
        let doomed: Vec<&backup_store::FoundSet> = listing
            .sets
            .iter()
            .filter(|s| !keep.contains(&s.id))
            .collect();
        let steps: Vec<PlanStep> = doomed
            .iter()
            .map(|s| PlanStep {
                action: "remove".into(),
                target: s.id.to_string(),
                detail: format!(
                    "delete backup set {} ({} file(s), {} bytes; services {}) and its manifest",
                    s.id,
                    s.manifest.entries.len(),
                    s.manifest.total_bytes(),
                    s.manifest
                        .services()
                        .into_iter()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                before: None,
                after: None,
                destructive: true,
                cost: StepCost {
                    data_loss: true,
                    ..Default::default()
                },
            })
            .collect();
        let plan = Plan::new(
            "prune_backups",
            &call.app.stack.id,
            format!(
                "prune_backups: delete {} of {} backup set(s) under {} (keep_last {}, keep_daily {}, keep_weekly {})",
                doomed.len(),
                listing.sets.len(),
                dir.display(),
                policy.keep_last,
                policy.keep_daily,
                policy.keep_weekly
            ),
            steps,
        );
        match call.guard(&plan, input.confirm_token.as_deref()).await? {
            Gate::Proceed(by) => break (listing, by, plan),
            Gate::Halt(reply) => return Ok(reply),
            Gate::Replan => continue,
        }
    };
    let keep = backup_set::retain(&listing_facts(&listing), &policy).map_err(refuse)?;
    let doomed: Vec<&backup_store::FoundSet> = listing
        .sets
        .iter()
        .filter(|s| !keep.contains(&s.id))
        .collect();
    let mut deleted = Vec::new();
    let mut freed = 0;
    for s in &doomed {
        let bytes = backup_store::remove_set(&dir, s)?;
        freed += bytes;
        deleted.push(Deleted {
            backup_id: s.id.to_string(),
            services: s.manifest.services().into_iter().collect(),
            bytes,
        });
    }
    if deleted.is_empty() {
        call.set_outcome("no_changes");
    }
    let mut kept: Vec<String> = keep.iter().map(|k| k.to_string()).collect();
    kept.reverse();
    let out = Output {
        policy,
        kept,
        deleted,
        freed_bytes: freed,
        untouched_files: (listing.unmanaged.len() + listing.invalid.len() + listing.partials.len())
            as u64,
        plan,
        confirmed_by,
    };
    serde_json::to_value(Guarded::Done(out))
        .map(Reply::Done)
        .map_err(|e| ToolError::internal(e.to_string()))
}

fn listing_facts(listing: &backup_store::Listing) -> Vec<SetFacts> {
    listing
        .sets
        .iter()
        .map(|s| SetFacts {
            id: s.id.clone(),
            services: s.manifest.services(),
        })
        .collect()
}
