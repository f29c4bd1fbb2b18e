//! select_profile: a deterministic deployment profile and Ollama settings for
//! a model on this (or a described) machine. Read-only unless `write_env`.
//!
//! 1. Resolve the model: a name (the local model's own metadata from Ollama's
//!    `/api/show` when Ollama has it, else the built-in catalogue), explicit
//!    GGUF facts, or a GGUF file whose header is read.
//! 2. Resolve the hardware: the `hardware` override, or detect_hardware.
//! 3. Choose: the memory model searches profile, KV cache type and context.
//! 4. With `write_env`: plan the .env keys it owns (set / unchanged /
//!    overwrite), pass the plan through the guard (overwriting a different
//!    value is destructive), then write the file atomically.
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::adapters::env_file;
use crate::domain::env::EnvFile;
use crate::domain::error::ToolError;
use crate::domain::models::catalogue::{self as model_catalogue, ModelFacts};
use crate::domain::models::memory::{
    self as memory_model, HardwareFacts, KvCacheType, ProfileDecision, ProfileRequest,
};
use crate::domain::plan::{Plan, PlanStep, StepCost};
use crate::guard::token::{ConfirmedBy, Guarded};
use crate::guard::{Call, Gate, Reply};
use crate::tools::def::{self, Hints, ToolDef};

pub const MAX_CONTEXT: u32 = 1 << 20;
pub const MAX_PARALLEL: u32 = 64;

/// A model name (`llama3.1:8b`), the model's GGUF facts, or a GGUF file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ModelSpec {
    /// A model Ollama has (its /api/show metadata) or one of the built-in catalogue.
    Name(String),
    /// A GGUF file on this machine: the facts come from its header.
    Gguf(GgufSpec),
    /// Explicit facts for a model the catalogue does not know.
    Facts(ModelFacts),
}

/// `{"gguf": "/abs/path/model.gguf"}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GgufSpec {
    /// Absolute path of a `.gguf` file on the machine stackpilot runs on; only
    /// its header (metadata, tensor shapes) is read.
    pub gguf: String,
}

/// Where the model's facts came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ModelSource {
    /// Ollama has the model: `/api/show`'s GGUF metadata and `/api/tags`' size.
    ApiShow,
    /// The built-in catalogue.
    Catalogue,
    /// A GGUF file's header (weights: the file's size).
    GgufFile,
    /// The facts given in `model`.
    Given,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The model to serve: a name such as `llama3.1:8b` (Ollama's own metadata when it has
    /// the model, else the built-in catalogue), `{"gguf": "/abs/path/model.gguf"}`, or an
    /// object with name, weights_bytes, layers, kv_heads, head_dim, max_context.
    #[schemars(with = "ModelSpec")]
    pub model: Value,
    /// Context length wanted, in tokens (512 to 1048576). Default 32768. Capped at the model's maximum.
    #[serde(default)]
    pub context_length: Option<u32>,
    /// KV cache types allowed, tried in the profile's order. Default: all of f16, q8_0, q4_0.
    #[serde(default)]
    pub kv_cache_types: Option<Vec<KvCacheType>>,
    /// Requests served in parallel (each gets its own KV cache), 1 to 64. Default 1.
    #[serde(default)]
    pub num_parallel: Option<u32>,
    /// Plan for this hardware instead of detecting this machine's.
    #[serde(default)]
    pub hardware: Option<HardwareFacts>,
    /// Write the chosen keys into the stack's .env. Overwriting a different value needs confirmation.
    #[serde(default)]
    pub write_env: bool,
    /// The token from a previous confirmation_required answer.
    #[serde(default)]
    pub confirm_token: Option<String>,
}

/// What happened to the stack's .env.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EnvWrite {
    pub path: String,
    /// The file was rewritten.
    pub written: bool,
    pub plan: Plan,
    pub confirmed_by: ConfirmedBy,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Output {
    #[serde(flatten)]
    pub decision: ProfileDecision,
    /// The model facts used.
    pub model: ModelFacts,
    /// Where they came from: api_show, catalogue, gguf_file or given.
    pub model_source: ModelSource,
    /// `override` when `hardware` was given, else `detected`.
    pub hardware_source: String,
    pub hardware: HardwareFacts,
    /// Present when `write_env` was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_file: Option<EnvWrite>,
}

pub static TOOL: ToolDef = ToolDef {
    name: "select_profile",
    title: "Select deployment profile",
    description:
        "Choose the deployment profile (standard, analysis, cpu, apple-metal, cpu-small-server), \
        context length and Ollama KV cache type that fit a model on this machine (or on \
        `hardware`), with the memory table and the rules that fired. The model: a name (Ollama's \
        own metadata when it has it, else the built-in catalogue), a GGUF file, or explicit \
        facts. Deterministic. `write_env` writes the keys into the stack's .env; overwriting a \
        different value asks for confirmation. Use before compose_up or pull_model.",
    hints: Hints {
        read_only: false,
        destructive: true,
        idempotent: true,
        open_world: false,
    },
    read_only_subset: true,
    input_schema: def::input_schema::<Input>,
    output_schema: def::output_schema::<Guarded<Output>>,
    run: |call, args| Box::pin(run(call, args)),
};

/// The facts of a model Ollama has locally (None: no Ollama, or not there).
async fn local_facts(call: &Call, name: &str) -> Option<(ModelFacts, String)> {
    let parsed = crate::domain::models::name::ModelName::parse("model", name).ok()?;
    let endpoint = crate::tools::models::endpoint::resolve(&call.app).await;
    let ollama = crate::adapters::ollama::Ollama::connect(&endpoint)
        .await
        .ok()?;
    let tags = ollama.tags().await.ok()?;
    let listed = tags.into_iter().find(|t| parsed.matches(&t.name))?;
    let facts = ollama.model_facts(&listed.name, listed.size).await.ok()??;
    Some((facts, ollama.version.clone()))
}

/// Reads a GGUF file's header into facts (`model.gguf` names the field).
fn gguf_facts(path: &str) -> Result<ModelFacts, ToolError> {
    let p = std::path::Path::new(path);
    if path.len() > 4096 || path.chars().any(|c| c.is_control()) || !p.is_absolute() {
        return Err(ToolError::invalid(
            "model.gguf",
            "must be an absolute path without control characters",
        ));
    }
    if p.extension().and_then(|e| e.to_str()) != Some("gguf") {
        return Err(ToolError::invalid("model.gguf", "must name a .gguf file"));
    }
    let file = crate::adapters::gguf_file::read(p, 1024)
        .map_err(|e| ToolError::invalid("model.gguf", format!("{path}: {e}")))?;
    let name = p
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string();
    crate::domain::models::facts::from_metadata(&name, file.file_bytes, &file.gguf.model_info())
        .map_err(|e| {
            ToolError::invalid(
                "model.gguf",
                format!("{path} is GGUF but not a model the memory model can size: {e}"),
            )
        })
}

async fn resolve_model(
    call: &Call,
    spec: Value,
) -> Result<(ModelFacts, ModelSource, Option<String>), ToolError> {
    match spec {
        Value::String(name) => {
            if name.len() > 200 || name.chars().any(|c| c.is_control()) {
                return Err(ToolError::invalid(
                    "model",
                    "name too long or contains control characters",
                ));
            }
            if let Some((facts, version)) = local_facts(call, &name).await {
                return Ok((facts, ModelSource::ApiShow, Some(version)));
            }
            model_catalogue::lookup(&name)
                .map(|f| (f, ModelSource::Catalogue, None))
                .ok_or_else(|| {
                    ToolError::invalid(
                        "model",
                        format!(
                            "`{name}` is neither in Ollama nor in the catalogue; pull it first, or give its facts as an object or {{\"gguf\": \"/path/model.gguf\"}}"
                        ),
                    )
                    .allowed(model_catalogue::names())
                })
        }
        Value::Object(o) if o.contains_key("gguf") => {
            let spec: GgufSpec = def::parse_args(Value::Object(o)).map_err(|mut e| {
                e.field = Some(format!("model.{}", e.field.unwrap_or_default()));
                e
            })?;
            Ok((gguf_facts(&spec.gguf)?, ModelSource::GgufFile, None))
        }
        Value::Object(_) => {
            let facts: ModelFacts = def::parse_args(spec).map_err(|mut e| {
                e.field = Some(format!("model.{}", e.field.unwrap_or_default()));
                e.message = format!(
                    "invalid `{}`: {}",
                    e.field.as_deref().unwrap_or("model"),
                    e.message
                );
                e
            })?;
            let checks: [(&str, u64, u64, u64); 5] = [
                ("model.weights_bytes", facts.weights_bytes, 1, 1 << 42),
                ("model.layers", facts.layers.into(), 1, 1024),
                ("model.kv_heads", facts.kv_heads.into(), 1, 1024),
                ("model.head_dim", facts.head_dim.into(), 1, 4096),
                (
                    "model.max_context",
                    facts.max_context.into(),
                    512,
                    MAX_CONTEXT.into(),
                ),
            ];
            for (field, v, lo, hi) in checks {
                if v < lo || v > hi {
                    return Err(ToolError::invalid(
                        field,
                        format!("{v} is out of range {lo}..={hi}"),
                    ));
                }
            }
            if !facts.kv_heads_per_layer.is_empty()
                && facts.kv_heads_per_layer.len() != facts.layers as usize
            {
                return Err(ToolError::invalid(
                    "model.kv_heads_per_layer",
                    format!(
                        "has {} entries for {} layers",
                        facts.kv_heads_per_layer.len(),
                        facts.layers
                    ),
                ));
            }
            if facts.expert_used_count > facts.expert_count {
                return Err(ToolError::invalid(
                    "model.expert_used_count",
                    "is larger than model.expert_count",
                ));
            }
            Ok((facts, ModelSource::Given, None))
        }
        _ => Err(ToolError::invalid(
            "model",
            "expected a catalogue name (string) or a facts object",
        )
        .allowed(model_catalogue::names())),
    }
}

fn check_hardware(hw: &HardwareFacts) -> Result<(), ToolError> {
    const MAX: u64 = 1 << 50; // 1 PiB: anything above is a typo, not a machine.
    let fields = [
        (
            "hardware.nvidia_vram_bytes",
            hw.nvidia_vram_bytes.unwrap_or(0),
        ),
        (
            "hardware.apple_unified_memory_bytes",
            hw.apple_unified_memory_bytes.unwrap_or(0),
        ),
        ("hardware.memory_total_bytes", hw.memory_total_bytes),
        ("hardware.memory_available_bytes", hw.memory_available_bytes),
        (
            "hardware.cgroup_memory_limit_bytes",
            hw.cgroup_memory_limit_bytes.unwrap_or(0),
        ),
    ];
    for (field, v) in fields {
        if v > MAX {
            return Err(ToolError::invalid(
                field,
                format!("{v} bytes is out of range 0..={MAX}"),
            ));
        }
    }
    if hw.memory_available_bytes > hw.memory_total_bytes {
        return Err(ToolError::invalid(
            "hardware.memory_available_bytes",
            "is larger than hardware.memory_total_bytes",
        ));
    }
    Ok(())
}

async fn run(call: Arc<Call>, args: Value) -> Result<Reply, ToolError> {
    let input: Input = def::parse_args(args)?;
    let (model, model_source, local_version) = resolve_model(&call, input.model).await?;
    let context_length = input.context_length.unwrap_or(32_768);
    if !(512..=MAX_CONTEXT).contains(&context_length) {
        return Err(ToolError::invalid(
            "context_length",
            format!("{context_length} is out of range 512..={MAX_CONTEXT}"),
        ));
    }
    let num_parallel = input.num_parallel.unwrap_or(1);
    if !(1..=MAX_PARALLEL).contains(&num_parallel) {
        return Err(ToolError::invalid(
            "num_parallel",
            format!("{num_parallel} is out of range 1..={MAX_PARALLEL}"),
        ));
    }
    let kv_cache_types = input
        .kv_cache_types
        .unwrap_or_else(|| KvCacheType::ALL.to_vec());
    if kv_cache_types.is_empty() {
        return Err(
            ToolError::invalid("kv_cache_types", "must name at least one type")
                .allowed(KvCacheType::ALL.iter().map(|k| k.as_str())),
        );
    }
    if let Some(token) = &input.confirm_token {
        if !input.write_env {
            return Err(ToolError::invalid(
                "confirm_token",
                "only meaningful with write_env: true",
            ));
        }
        if token.len() > 1024 {
            return Err(ToolError::invalid(
                "confirm_token",
                "is not a token stackpilot issued",
            ));
        }
    }

    let (hardware, source) = match input.hardware {
        Some(hw) => {
            check_hardware(&hw)?;
            (hw, "override")
        }
        None => {
            let report = crate::tools::hardware::detect_hardware::detect(&call, false).await?;
            let mut hw = HardwareFacts::from(&report);
            // The Ollama that has the model is the one that will run it.
            if local_version.is_some() {
                hw.ollama_version = local_version;
            }
            (hw, "detected")
        }
    };

    let decision = memory_model::choose(&ProfileRequest {
        model: model.clone(),
        context_length,
        kv_cache_types,
        num_parallel,
        hardware: hardware.clone(),
    });

    let mut output = Output {
        decision,
        model,
        model_source,
        hardware_source: source.into(),
        hardware,
        env_file: None,
    };
    if !input.write_env {
        call.set_outcome("computed_only");
        return to_reply(Guarded::Done(output));
    }

    if call.app.mode.read_only {
        return Err(ToolError::new(
            crate::domain::error::ErrorKind::NotAllowed,
            "write_env changes the stack's .env and this server runs with --read-only",
        )
        .next_step(
            "call without write_env to get the decision, or restart stackpilot without --read-only",
        ));
    }
    if !output.decision.fits {
        return Err(ToolError::external(format!(
            "{} does not fit this hardware in any profile; .env was not written",
            output.model.name
        ))
        .evidence(output.decision.reasons.join("; "))
        .next_step(
            "choose a smaller model or context_length, or plan for other hardware with `hardware`",
        ));
    }
    // Plan the .env change under the stack lock, so the file cannot change
    // between the plan a person confirms and the write.
    call.lock_stack().await?;
    let path = call.app.stack.env_path();
    let (env, plan, confirmed_by) = loop {
        let env = env_file::load(&path)?;
        let plan = env_plan(&call, &env, &output.decision);
        match call.guard(&plan, input.confirm_token.as_deref()).await? {
            Gate::Proceed(by) => break (env, plan, by),
            Gate::Halt(reply) => return Ok(reply),
            Gate::Replan => continue,
        }
    };
    let written = plan.changes() > 0;
    if written {
        let mut env = env;
        for (k, v) in &output.decision.env {
            env.set(k, v);
        }
        env_file::write_atomic(&env, &path)?;
    } else {
        call.set_outcome("no_changes");
    }
    output.env_file = Some(EnvWrite {
        path: path.display().to_string(),
        written,
        plan,
        confirmed_by,
    });
    to_reply(Guarded::Done(output))
}

fn env_plan(call: &Call, env: &EnvFile, decision: &ProfileDecision) -> Plan {
    let steps: Vec<PlanStep> = decision
        .env
        .iter()
        .map(|(key, new)| {
            let current = env.get(key);
            let (action, destructive, detail) = match &current {
                None => ("set", false, format!("add {key}={new}")),
                Some(old) if old == new => ("unchanged", false, format!("{key} is already {new}")),
                Some(old) => ("overwrite", true, format!("replace {key}={old} with {new}")),
            };
            PlanStep {
                action: action.into(),
                target: key.clone(),
                detail,
                before: current.map(Value::String),
                after: Some(Value::String(new.clone())),
                destructive,
                cost: StepCost::default(),
            }
        })
        .collect();
    let overwrites = steps.iter().filter(|s| s.destructive).count();
    let changes = steps.iter().filter(|s| s.action != "unchanged").count();
    let summary = format!(
        "select_profile: write {changes} key(s) of profile {} to {} ({overwrites} overwrite an existing value)",
        decision.profile.as_str(),
        call.app.stack.env_path().display()
    );
    Plan::new("select_profile", &call.app.stack.id, summary, steps)
}

fn to_reply(out: Guarded<Output>) -> Result<Reply, ToolError> {
    serde_json::to_value(out)
        .map(Reply::Done)
        .map_err(|e| ToolError::internal(e.to_string()))
}
