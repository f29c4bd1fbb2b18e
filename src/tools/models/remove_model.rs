//! remove_model: delete a model from Ollama. Destructive (it must be pulled
//! again to be used), so it runs only through the confirmation guard.
//!
//! 1. Validate the name; find Ollama; take the stack lock so the plan cannot
//!    change between what a person confirms and what runs.
//! 2. Plan from `/api/tags` and `/api/ps`: one `remove` step with the
//!    model's digest and size (data loss), noting when it is loaded (it is
//!    unloaded first). An absent model is a plan with no steps: nothing to do.
//! 3. Guard; then, if loaded, unload it (`/api/generate` with `keep_alive: 0`)
//!    and wait until `/api/ps` no longer lists it: Ollama's DELETE alone
//!    removes the files but leaves a loaded model in memory, its runner
//!    running (observed on 0.11.4; `ollama rm` unloads first too). Then
//!    `DELETE /api/delete`, and check `/api/tags` no longer lists it.
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::adapters::ollama::Ollama;
use crate::domain::error::ToolError;
use crate::domain::models::name::ModelName;
use crate::domain::plan::{Plan, PlanStep, StepCost};
use crate::guard::token::{ConfirmedBy, Guarded};
use crate::guard::{Call, Gate, Reply};
use crate::tools::def::{self, Hints, ToolDef};
use crate::tools::models::endpoint;

/// How long a loaded model may take to leave `/api/ps` after its unload.
pub const UNLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The model to remove, as list_models names it (e.g. `llama3.1:8b`).
    pub model: String,
    /// The token from a previous confirmation_required answer.
    #[serde(default)]
    pub confirm_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Output {
    pub model: String,
    pub ollama_url: String,
    /// Ollama deleted it in this call.
    pub removed: bool,
    /// /api/tags listed it when the plan was made.
    pub present_before: bool,
    /// Its size on disk, bytes (0 when it was not there).
    pub freed_bytes: u64,
    /// It was loaded in memory.
    pub was_loaded: bool,
    /// It was unloaded before the delete (and /api/ps no longer listed it).
    pub unloaded: bool,
    pub message: String,
    pub plan: Plan,
    pub confirmed_by: ConfirmedBy,
}

pub static TOOL: ToolDef = ToolDef {
    name: "remove_model",
    title: "Remove an Ollama model",
    description:
        "Delete a model from Ollama, unloading it first if it is loaded (and waiting until \
        /api/ps no longer lists it). Destructive: the model must be pulled again to be used, so \
        the plan (model, digest, size) needs confirmation. A model that is not there changes \
        nothing. Use to free disk; list_models shows what is installed.",
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

fn gib(bytes: u64) -> String {
    format!(
        "{:.2} GiB",
        bytes as f64 / crate::domain::models::memory::GIB as f64
    )
}

async fn run(call: Arc<Call>, args: Value) -> Result<Reply, ToolError> {
    let input: Input = def::parse_args(args)?;
    let name = ModelName::parse("model", &input.model)?;
    if let Some(t) = &input.confirm_token {
        if t.len() > 1024 {
            return Err(ToolError::invalid(
                "confirm_token",
                "is not a token stackpilot issued",
            ));
        }
    }
    let endpoint = endpoint::resolve(&call.app).await;
    let ollama = Ollama::connect(&endpoint).await?;
    call.lock_stack().await?;

    // Planned again, under the lock, after a person's answer (Gate::Replan).
    let (listed, loaded, plan, confirmed_by) = loop {
        let (tags, ps) = tokio::join!(ollama.tags(), ollama.ps());
        let (tags, ps) = (tags?, ps?);
        let listed = tags.into_iter().find(|t| name.matches(&t.name));
        let loaded = ps.into_iter().find(|p| name.matches(&p.name));

        let steps =
            match &listed {
                None => Vec::new(),
                Some(t) => vec![PlanStep {
                    action: "remove".into(),
                    target: format!("model:{}", t.name),
                    detail: format!(
                    "delete {} ({}, digest {}) from Ollama at {}{}; it must be pulled again to be used",
                    t.name,
                    gib(t.size),
                    t.digest.get(..12).unwrap_or(&t.digest),
                    ollama.url,
                    if loaded.is_some() { ", unloading it from memory first" } else { "" }
                ),
                    before: Some(
                        json!({"digest": t.digest, "size": t.size, "loaded": loaded.is_some()}),
                    ),
                    after: None,
                    destructive: true,
                    cost: StepCost {
                        data_loss: true,
                        downtime: false,
                        models_unloaded: loaded.is_some(),
                    },
                }],
            };
        let summary = match &listed {
            Some(t) => format!(
                "remove_model: delete {} ({}) from Ollama at {}",
                t.name,
                gib(t.size),
                ollama.url
            ),
            None => format!(
                "remove_model: {name} is not in Ollama at {}: nothing to remove",
                ollama.url
            ),
        };
        let plan = Plan::new("remove_model", &call.app.stack.id, summary, steps);
        match call.guard(&plan, input.confirm_token.as_deref()).await? {
            Gate::Proceed(by) => break (listed, loaded, plan, by),
            Gate::Halt(reply) => return Ok(reply),
            Gate::Replan => continue,
        }
    };

    let Some(listed) = listed else {
        call.set_outcome("no_changes");
        return to_reply(Output {
            model: name.to_string(),
            ollama_url: ollama.url.clone(),
            removed: false,
            present_before: false,
            freed_bytes: 0,
            was_loaded: false,
            unloaded: false,
            message: format!(
                "{name} is not in Ollama at {}: nothing was changed",
                ollama.url
            ),
            plan,
            confirmed_by,
        });
    };
    let mut unloaded = false;
    if let Some(p) = &loaded {
        ollama.unload(&p.name).await?;
        if !ollama.wait_unloaded(&p.name, UNLOAD_TIMEOUT).await? {
            return Err(ToolError::external(format!(
                "Ollama at {} still lists {} as loaded {} s after the unload: nothing was deleted",
                ollama.url,
                p.name,
                UNLOAD_TIMEOUT.as_secs()
            ))
            .evidence("POST /api/generate {keep_alive: 0} answered; GET /api/ps still lists it")
            .next_step("run list_models to see what is loaded (a long request may hold it), then call remove_model again"));
        }
        unloaded = true;
    }
    let existed = ollama.delete(&listed.name).await?;
    let still = ollama
        .tags()
        .await?
        .into_iter()
        .any(|t| name.matches(&t.name));
    if still {
        return Err(ToolError::external(format!(
            "Ollama at {} answered the delete of {} but still lists it",
            ollama.url, listed.name
        ))
        .next_step("run list_models to see the current state, then try again"));
    }
    let message = if existed {
        format!(
            "removed {} ({} freed){}",
            listed.name,
            gib(listed.size),
            if unloaded {
                "; it was unloaded first"
            } else {
                ""
            }
        )
    } else {
        call.set_outcome("already_absent");
        format!(
            "{} was already gone when the delete ran (Ollama answered 404)",
            listed.name
        )
    };
    to_reply(Output {
        model: listed.name.clone(),
        ollama_url: ollama.url.clone(),
        removed: existed,
        present_before: true,
        freed_bytes: if existed { listed.size } else { 0 },
        was_loaded: loaded.is_some(),
        unloaded,
        message,
        plan,
        confirmed_by,
    })
}

fn to_reply(out: Output) -> Result<Reply, ToolError> {
    serde_json::to_value(Guarded::Done(out))
        .map(Reply::Done)
        .map_err(|e| ToolError::internal(e.to_string()))
}
