//! set_kv_cache: Ollama's KV cache type, context length and parallelism,
//! applied where that Ollama is configured and verified afterwards.
//! Destructive: it restarts Ollama, which unloads every model.
//!
//! 1. Check the input (type f16 | q8_0 | q4_0, ranges) and find the Ollama to
//!    change (`target`, auto: the stack's ollama container, else a host
//!    Ollama under systemd on Linux or launchd on macOS).
//! 2. Read the current settings (the container's environment, the unit's
//!    environment, or launchctl getenv) and work out the new ones: a
//!    quantized type also sets OLLAMA_FLASH_ATTENTION=1, and is refused where
//!    that Ollama on this hardware has no flash attention (NVIDIA below
//!    compute capability 7.0; CPU with Ollama before 0.11.5, which turns flash
//!    attention off at load and allocates f16 whatever it is told, so the
//!    change would report success and change nothing).
//! 3. The memory effect for the loaded model (or `model`, or the .env's
//!    OLLAMA_MODEL), through select_profile's memory model.
//! 4. Compose: render the new .env into a scratch file and ask compose what
//!    the service's environment would be, so a compose file that does not
//!    take the keys from .env is refused before anything changes.
//! 5. Plan, guard.
//! 6. Apply: compose writes .env and recreates only that service through
//!    compose_up's machinery (on failure .env is put back and the service
//!    recreated as it was); systemd writes the drop-in, daemon-reload and
//!    restart (rolled back the same way); launchd `launchctl setenv`.
//! 7. Verify: the environment (container or unit), Ollama's `server config`
//!    startup line, a warm-up load, /api/ps, and the KV cache llama.cpp
//!    allocated for that load (its `KV self size ... K (type)` log line, which
//!    must show the type asked for); each check is reported.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::adapters::env_file;
use crate::adapters::host_service;
use crate::adapters::ollama::{self, Endpoint, EndpointSource, Ollama};
use crate::domain::env::EnvFile;
use crate::domain::error::{ErrorKind, ToolError};
use crate::domain::models::catalogue::{self as model_catalogue, ModelFacts};
use crate::domain::models::kv_effect::{self, KvMemoryEffect, KvSetting};
use crate::domain::models::kv_log;
use crate::domain::models::memory::{self as memory_model, HardwareFacts, KvCacheType, Profile};
use crate::domain::plan::{Plan, PlanStep, StepCost};
use crate::domain::stack_model::{Role, ServiceModel};
use crate::engine::compose::cli::{Compose, ALL_PROFILES};
use crate::guard::token::{ConfirmedBy, Guarded};
use crate::guard::{Call, Gate, Reply};
use crate::tools::def::{self, Hints, ToolDef};
use crate::tools::hardware::select_profile;
use crate::tools::models::endpoint;
use crate::tools::stack::compose_up;

pub const KEY_TYPE: &str = "OLLAMA_KV_CACHE_TYPE";
pub const KEY_CONTEXT: &str = "OLLAMA_CONTEXT_LENGTH";
pub const KEY_PARALLEL: &str = "OLLAMA_NUM_PARALLEL";
pub const KEY_FLASH: &str = "OLLAMA_FLASH_ATTENTION";
/// Ollama's defaults when a key is unset (docs/faq.md): f16, one slot, 4096 tokens.
pub const OLLAMA_DEFAULT_CONTEXT: u32 = 4096;
pub const MIN_CONTEXT: u32 = 512;
/// How long a warm-up load may take.
const WARMUP_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The stack's ollama container when it runs; else a host Ollama (systemd on Linux,
    /// launchd on macOS).
    #[default]
    Auto,
    /// The stack's ollama service: keys in .env, the service recreated.
    Compose,
    /// A Linux host Ollama: a drop-in for ollama.service, daemon-reload, restart.
    Systemd,
    /// The macOS Ollama app: launchctl setenv, then a restart by hand.
    Launchd,
}

impl Target {
    pub const NAMES: [&'static str; 4] = ["auto", "compose", "systemd", "launchd"];
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// KV cache type: f16 (Ollama's default), q8_0 (half the memory, near-lossless) or q4_0
    /// (a quarter, some quality loss). Quantized types need flash attention and turn it on.
    #[serde(rename = "type")]
    pub kv_type: KvCacheType,
    /// Context length in tokens, 512 to 1048576 (OLLAMA_CONTEXT_LENGTH). Default: unchanged.
    #[serde(default)]
    pub context_length: Option<u32>,
    /// Requests served in parallel, each with its own KV cache, 1 to 64 (OLLAMA_NUM_PARALLEL).
    /// Default: unchanged.
    #[serde(default)]
    pub num_parallel: Option<u32>,
    /// Where Ollama is configured: auto (default), compose, systemd or launchd.
    #[serde(default)]
    pub target: Target,
    /// The model whose memory the plan shows. Default: the model Ollama has loaded, else the
    /// .env's OLLAMA_MODEL.
    #[serde(default)]
    pub model: Option<String>,
    /// Seconds to wait for Ollama to be back (and healthy), 1 to 3600. Default 300.
    #[serde(default)]
    pub wait_timeout_s: Option<u64>,
    /// Plan only; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The token from a previous confirmation_required answer.
    #[serde(default)]
    pub confirm_token: Option<String>,
}

/// Ollama's KV settings as configured (None: unset, Ollama's default applies).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Settings {
    pub kv_cache_type: Option<String>,
    pub context_length: Option<u32>,
    pub num_parallel: Option<u32>,
    pub flash_attention: Option<String>,
}

impl Settings {
    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let num = |k: &str| get(k).and_then(|v| v.trim().parse().ok());
        Settings {
            kv_cache_type: get(KEY_TYPE).filter(|v| !v.trim().is_empty()),
            context_length: num(KEY_CONTEXT),
            num_parallel: num(KEY_PARALLEL),
            flash_attention: get(KEY_FLASH).filter(|v| !v.trim().is_empty()),
        }
    }

    /// The keys and values to write (only the ones that are set).
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(v) = &self.kv_cache_type {
            out.push((KEY_TYPE, v.clone()));
        }
        if let Some(v) = self.context_length {
            out.push((KEY_CONTEXT, v.to_string()));
        }
        if let Some(v) = self.num_parallel {
            out.push((KEY_PARALLEL, v.to_string()));
        }
        if let Some(v) = &self.flash_attention {
            out.push((KEY_FLASH, v.clone()));
        }
        out
    }

    fn get(&self, key: &str) -> Option<String> {
        match key {
            KEY_TYPE => self.kv_cache_type.clone(),
            KEY_CONTEXT => self.context_length.map(|v| v.to_string()),
            KEY_PARALLEL => self.num_parallel.map(|v| v.to_string()),
            KEY_FLASH => self.flash_attention.clone(),
            _ => None,
        }
    }

    /// For the memory model: unset keys take Ollama's defaults.
    fn effective(&self) -> KvSetting {
        KvSetting {
            kv_cache_type: match self.kv_cache_type.as_deref().map(str::trim) {
                Some("q8_0") => KvCacheType::Q8_0,
                Some("q4_0") => KvCacheType::Q4_0,
                _ => KvCacheType::F16,
            },
            context_length: self.context_length.unwrap_or(OLLAMA_DEFAULT_CONTEXT),
            num_parallel: self.num_parallel.unwrap_or(1),
        }
    }
}

/// One check made after the change.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Verification {
    /// `environment`, `startup_log`, `reachable`, `warm_up`, `api_ps`, `kv_cache`.
    pub check: String,
    /// `ok`, `failed`, or `skipped` (with the reason).
    pub status: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Output {
    /// Where the change goes: compose, systemd or launchd.
    pub target: Target,
    /// The compose service, the systemd unit, or `launchd`.
    pub applies_to: String,
    /// The Ollama endpoint used for reading and verifying.
    pub ollama_url: Option<String>,
    pub current: Settings,
    pub new: Settings,
    /// The memory before and after for `model`, from select_profile's memory model.
    pub memory_effect: Option<KvMemoryEffect>,
    /// The model the memory effect is for, and where that choice came from.
    pub model: Option<String>,
    pub plan: Plan,
    pub changes: usize,
    pub applied: bool,
    pub dry_run: bool,
    pub confirmed_by: Option<ConfirmedBy>,
    /// What was checked afterwards.
    pub verification: Vec<Verification>,
    /// Every check that ran passed (none failed).
    pub verified: bool,
    /// launchd: what a person still has to do for the change to take effect.
    pub restart_required: Option<String>,
    pub warnings: Vec<String>,
    pub duration_s: f64,
}

pub static TOOL: ToolDef = ToolDef {
    name: "set_kv_cache",
    title: "Set Ollama's KV cache",
    description:
        "Set Ollama's KV cache type (f16, q8_0, q4_0), context length and parallel slots where \
        that Ollama is configured (the stack's .env and ollama service, a systemd drop-in, or \
        launchd), then verify that Ollama runs with them and that llama.cpp allocated the type \
        asked for. A quantized type is refused where that Ollama has no flash attention. The \
        plan shows the current and new settings and the memory effect; restarting Ollama \
        unloads its models, so it is always confirmed. Use to fit a longer context or more \
        parallel requests in memory.",
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

/// The Ollama being changed.
#[allow(clippy::large_enum_variant)] // one value per call
enum Where {
    Compose {
        service: ServiceModel,
        container_id: String,
        /// The profile compose_up enables for it (None: the .env's COMPOSE_PROFILES).
        profile: Option<String>,
        compose: Compose,
    },
    Systemd(host_service::Systemd),
    Launchd,
}

impl Where {
    fn target(&self) -> Target {
        match self {
            Where::Compose { .. } => Target::Compose,
            Where::Systemd(_) => Target::Systemd,
            Where::Launchd => Target::Launchd,
        }
    }

    fn name(&self) -> String {
        match self {
            Where::Compose { service, .. } => format!("service {}", service.name),
            Where::Systemd(s) => s.unit.clone(),
            Where::Launchd => "launchd".into(),
        }
    }
}

fn check_input(input: &Input) -> Result<u64, ToolError> {
    if let Some(c) = input.context_length {
        if !(MIN_CONTEXT..=select_profile::MAX_CONTEXT).contains(&c) {
            return Err(ToolError::invalid(
                "context_length",
                format!(
                    "{c} is out of range {MIN_CONTEXT}..={} tokens",
                    select_profile::MAX_CONTEXT
                ),
            ));
        }
    }
    if let Some(p) = input.num_parallel {
        if !(1..=select_profile::MAX_PARALLEL).contains(&p) {
            return Err(ToolError::invalid(
                "num_parallel",
                format!("{p} is out of range 1..={}", select_profile::MAX_PARALLEL),
            ));
        }
    }
    let wait = input
        .wait_timeout_s
        .unwrap_or(compose_up::DEFAULT_WAIT_TIMEOUT_S);
    if !(1..=compose_up::MAX_WAIT_TIMEOUT_S).contains(&wait) {
        return Err(ToolError::invalid(
            "wait_timeout_s",
            format!(
                "{wait} is out of range 1..={} seconds",
                compose_up::MAX_WAIT_TIMEOUT_S
            ),
        ));
    }
    if let Some(m) = &input.model {
        crate::domain::models::name::ModelName::parse("model", m)?;
    }
    if input.confirm_token.as_ref().is_some_and(|t| t.len() > 1024) {
        return Err(ToolError::invalid(
            "confirm_token",
            "is not a token stackpilot issued",
        ));
    }
    Ok(wait)
}

/// The stack's running ollama container: its service (role ollama) and id.
async fn compose_ollama(call: &Call) -> Result<Option<Where>, ToolError> {
    let compose = call.app.compose()?.cli()?;
    let engine = call.app.engine();
    let model = compose.model(&[ALL_PROFILES.to_string()]).await?;
    for svc in model.with_role(Role::Ollama) {
        // An engine that does not answer has no running Ollama of the stack.
        let Ok(containers) = crate::engine::service_instances(engine, &svc.name).await else {
            return Ok(None);
        };
        if let Some(c) = containers.into_iter().find(|c| c.running()) {
            let env = env_file::load(&call.app.stack.env_path())?;
            let enabled: Vec<String> = env
                .get("COMPOSE_PROFILES")
                .map(|p| p.split(',').map(|s| s.trim().to_string()).collect())
                .unwrap_or_default();
            let profile =
                if svc.profiles.is_empty() || svc.profiles.iter().any(|p| enabled.contains(p)) {
                    None
                } else {
                    svc.profiles.first().cloned()
                };
            return Ok(Some(Where::Compose {
                service: svc.clone(),
                container_id: c.id,
                profile,
                compose,
            }));
        }
    }
    Ok(None)
}

async fn locate(call: &Call, target: Target) -> Result<Where, ToolError> {
    let host = || -> Result<Where, ToolError> {
        if cfg!(target_os = "macos") {
            Ok(Where::Launchd)
        } else {
            host_service::Systemd::ollama().map(Where::Systemd)
        }
    };
    match target {
        Target::Compose => compose_ollama(call).await?.ok_or_else(|| {
            ToolError::external(format!(
                "target compose: project `{}` has no running container of a service with role ollama",
                call.app.stack.project
            ))
            .next_step("start it with compose_up (stack_status shows the services), or use target systemd/launchd for a host Ollama")
        }),
        Target::Systemd => {
            if cfg!(target_os = "macos") {
                return Err(ToolError::invalid("target", "systemd is Linux only; on macOS use launchd")
                    .allowed(["auto", "compose", "launchd"]));
            }
            host_service::Systemd::ollama().map(Where::Systemd)
        }
        Target::Launchd => {
            if !cfg!(target_os = "macos") {
                return Err(ToolError::invalid("target", "launchd is macOS only; on Linux use systemd")
                    .allowed(["auto", "compose", "systemd"]));
            }
            Ok(Where::Launchd)
        }
        Target::Auto => {
            if std::env::var("OLLAMA_HOST").is_ok_and(|v| !v.trim().is_empty()) {
                return host();
            }
            match compose_ollama(call).await? {
                Some(w) => Ok(w),
                None => host().map_err(|e| {
                    ToolError::external(format!(
                        "no Ollama to configure: the stack has no running ollama container, and {}",
                        e.message
                    ))
                    .next_step("start the stack's ollama with compose_up, or install Ollama on the host; then call again")
                }),
            }
        }
    }
}

async fn current_settings(call: &Call, place: &Where) -> Result<Settings, ToolError> {
    match place {
        Where::Compose { container_id, .. } => {
            let env = call.app.engine().environment(container_id).await?;
            Ok(Settings::from_lookup(|k| crate::engine::env_value(&env, k)))
        }
        Where::Systemd(s) => {
            let env = s.environment().await?;
            Ok(Settings::from_lookup(|k| env.get(k).cloned()))
        }
        Where::Launchd => {
            let mut env = BTreeMap::new();
            for k in [KEY_TYPE, KEY_CONTEXT, KEY_PARALLEL, KEY_FLASH] {
                if let Some(v) = host_service::launchctl_getenv(k).await? {
                    env.insert(k.to_string(), v);
                }
            }
            Ok(Settings::from_lookup(|k| env.get(k).cloned()))
        }
    }
}

async fn endpoint_for(call: &Call, place: &Where) -> Endpoint {
    match place {
        Where::Compose { .. } => match endpoint::stack_ollama_url(&call.app).await {
            Some(url) => Endpoint {
                url,
                source: EndpointSource::Compose,
            },
            None => endpoint::resolve(&call.app).await,
        },
        _ => endpoint::resolve(&call.app).await,
    }
}

/// The model whose memory the plan shows, and its facts: `model`, else the
/// first loaded one, else the .env's OLLAMA_MODEL. /api/show's GGUF facts
/// when Ollama has it, else the catalogue.
async fn model_facts(
    call: &Call,
    input: &Input,
    ollama: Option<&Ollama>,
    loaded: &[ollama::PsModel],
) -> (Option<ModelFacts>, Option<String>) {
    let env_model = env_file::load(&call.app.stack.env_path())
        .ok()
        .and_then(|e| e.get("OLLAMA_MODEL"));
    let (name, why) =
        match (&input.model, loaded.first(), env_model) {
            (Some(m), _, _) => (m.clone(), "given"),
            (None, Some(p), _) => (p.name.clone(), "loaded in Ollama"),
            (None, None, Some(m)) => (m, "the .env's OLLAMA_MODEL"),
            (None, None, None) => return (
                None,
                Some(
                    "no model given, none loaded, no OLLAMA_MODEL in .env: no memory effect shown"
                        .into(),
                ),
            ),
        };
    if let Some(o) = ollama {
        if let Ok(tags) = o.tags().await {
            if let Some(t) = tags.iter().find(|t| t.name == name || t.model == name) {
                if let Ok(Some(f)) = o.model_facts(&t.name, t.size).await {
                    return (
                        Some(f),
                        Some(format!("{name} ({why}; facts from /api/show)")),
                    );
                }
            }
        }
    }
    match model_catalogue::lookup(&name) {
        Some(f) => (Some(f), Some(format!("{name} ({why}; facts from the built-in catalogue)"))),
        None => (
            None,
            Some(format!("{name} ({why}) is neither local with GGUF facts nor in the catalogue: no memory effect shown")),
        ),
    }
}

/// One step per key. `in_file`: for the compose target, what the .env holds
/// now: apply rewrites that file, so its current values are in the plan (a
/// hand edit between the plan and the confirmation changes the digest, and
/// a key the file holds differently from the running service is an overwrite).
fn env_steps(
    current: &Settings,
    new: &Settings,
    file: &str,
    in_file: Option<&Settings>,
) -> Vec<PlanStep> {
    new.pairs()
        .into_iter()
        .map(|(key, value)| {
            let before = current.get(key);
            let file_value = in_file.map(|f| f.get(key));
            let file_differs = matches!(&file_value, Some(Some(f)) if *f != value);
            let (action, destructive, mut detail) = match &before {
                None if !file_differs => ("set", false, format!("{file}: add {key}={value}")),
                Some(old) if *old == value && !file_differs => (
                    "unchanged",
                    false,
                    format!("{file}: {key} is already {value}"),
                ),
                Some(old) => (
                    "overwrite",
                    true,
                    format!("{file}: replace {key}={old} with {value}"),
                ),
                None => (
                    "overwrite",
                    true,
                    format!("{file}: replace {key} with {value}"),
                ),
            };
            if let Some(f) = file_value {
                detail.push_str(&format!(
                    " (the file has {})",
                    f.map(|v| format!("{key}={v}"))
                        .unwrap_or_else(|| "no value".into())
                ));
            }
            PlanStep {
                action: action.into(),
                target: key.to_string(),
                detail,
                before: before.map(Value::String),
                after: Some(Value::String(value)),
                destructive,
                cost: StepCost::default(),
            }
        })
        .collect()
}

fn restart_step(place: &Where, effect: Option<&KvMemoryEffect>) -> PlanStep {
    let what = match place {
        Where::Compose { service, .. } => format!(
            "recreate `{}` (compose_up with the new .env, that service only, --no-deps)",
            service.name
        ),
        Where::Systemd(s) => format!("systemctl daemon-reload, then systemctl restart {}", s.unit),
        Where::Launchd => "quit and reopen the Ollama app (by hand: launchctl setenv only reaches apps started afterwards)".into(),
    };
    PlanStep {
        action: match place {
            Where::Compose { .. } => "recreate",
            _ => "restart",
        }
        .into(),
        target: place.name(),
        detail: format!(
            "{what}; loaded models are unloaded{}",
            effect
                .map(|e| format!(". Memory: {}", e.plan_line))
                .unwrap_or_default()
        ),
        before: None,
        after: None,
        destructive: true,
        cost: StepCost {
            data_loss: false,
            downtime: true,
            models_unloaded: true,
        },
    }
}

async fn run(call: Arc<Call>, args: Value) -> Result<Reply, ToolError> {
    let started = Instant::now();
    let input: Input = def::parse_args(args)?;
    let wait = check_input(&input)?;
    if !input.dry_run {
        call.lock_stack().await?;
    }

    // Planned again, under the lock, after a person's answer (Gate::Replan).
    let (place, new, loaded, env_path, mut out, confirmed_by) = loop {
        // 1-2. Where, and what is set now.
        let place = locate(&call, input.target).await?;
        let current = current_settings(&call, &place).await?;
        let mut warnings = Vec::new();
        let report = crate::tools::hardware::detect_hardware::detect(&call, false).await?;
        let mut hw = HardwareFacts::from(&report);
        // The Ollama being changed says which version it is (its CPU backend
        // quantizes the KV cache only from 0.11.5).
        let endpoint = endpoint_for(&call, &place).await;
        let client = Ollama::connect(&endpoint).await;
        hw.ollama_version = client.as_ref().ok().map(|o| o.version.clone());
        let profile = match &place {
            Where::Compose { service, .. } if !service.gpu => Profile::Cpu,
            _ => memory_model::primary_profile(&hw),
        };
        if let Some(w) = check_flash_attention(input.kv_type, profile, &hw)? {
            warnings.push(w);
        }
        let new = Settings {
            kv_cache_type: Some(input.kv_type.as_str().to_string()),
            context_length: input.context_length.or(current.context_length),
            num_parallel: input.num_parallel.or(current.num_parallel),
            flash_attention: if input.kv_type.is_quantized() {
                Some("1".into())
            } else {
                current.flash_attention.clone()
            },
        };

        // 3. Memory effect.
        let loaded = match &client {
            Ok(o) => o.ps().await.unwrap_or_default(),
            Err(e) => {
                warnings.push(format!("Ollama not reachable for the plan: {}", e.message));
                Vec::new()
            }
        };
        let (facts, model_note) = model_facts(&call, &input, client.as_ref().ok(), &loaded).await;
        let memory_effect = facts.as_ref().map(|f| {
            kv_effect::kv_memory_effect(f, profile, &hw, &current.effective(), &new.effective())
        });
        if let Some(e) = &memory_effect {
            if e.fits_before && !e.fits_after {
                warnings.push(format!("the new setting no longer fits: {}", e.summary));
            }
        }

        // 4-5. Preflight per target, plan.
        let env_path = call.app.stack.env_path();
        let file = match &place {
            Where::Compose { .. } => env_path.display().to_string(),
            Where::Systemd(s) => s.dropin_path().display().to_string(),
            Where::Launchd => "launchctl".into(),
        };
        let in_file = match &place {
            Where::Compose { .. } => {
                let env = env_file::load(&env_path)?;
                Some(Settings::from_lookup(|k| env.get(k)))
            }
            _ => None,
        };
        let mut steps = env_steps(&current, &new, &file, in_file.as_ref());
        let changes = steps.iter().filter(|s| s.action != "unchanged").count();
        match &place {
            Where::Compose {
                service, compose, ..
            } => {
                if changes > 0 {
                    check_compose_takes_keys(&call, compose, &service.name, &new).await?;
                }
            }
            Where::Systemd(s) => s.preflight().await?,
            Where::Launchd => {}
        }
        if changes > 0 {
            steps.push(restart_step(&place, memory_effect.as_ref()));
            steps.push(PlanStep {
                action: "verify".into(),
                target: place.name(),
                detail: "check the environment, Ollama's startup line, a warm-up load, /api/ps and the KV cache llama.cpp allocates for it"
                    .into(),
                before: None,
                after: None,
                destructive: false,
                cost: StepCost::default(),
            });
        }
        let summary = format!(
            "set_kv_cache on {} ({}): KV cache {} -> {}, context {} -> {}, parallel {} -> {}{}",
            place.name(),
            serde_json::to_value(place.target())
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            current.kv_cache_type.as_deref().unwrap_or("unset (f16)"),
            new.kv_cache_type.as_deref().unwrap_or("unset (f16)"),
            show(current.context_length),
            show(new.context_length),
            show(current.num_parallel),
            show(new.num_parallel),
            // The plan holds what the change does, not what usable memory is
            // this second (that is in memory_effect and the warnings).
            memory_effect
                .as_ref()
                .map(|e| format!("; {}", e.plan_line))
                .unwrap_or_default()
        );
        let plan = Plan::new("set_kv_cache", &call.app.stack.id, summary, steps);
        let out = Output {
            target: place.target(),
            applies_to: place.name(),
            ollama_url: Some(endpoint.url.clone()),
            current: current.clone(),
            new: new.clone(),
            memory_effect,
            model: model_note,
            changes: plan.changes(),
            plan: plan.clone(),
            applied: false,
            dry_run: input.dry_run,
            confirmed_by: None,
            verification: Vec::new(),
            verified: false,
            restart_required: None,
            warnings,
            duration_s: 0.0,
        };
        if input.dry_run || changes == 0 {
            call.set_outcome(if input.dry_run {
                "dry_run"
            } else {
                "no_changes"
            });
            return finish(out, started);
        }
        match call.guard(&plan, input.confirm_token.as_deref()).await? {
            Gate::Proceed(by) => break (place, new, loaded, env_path, out, by),
            Gate::Halt(reply) => return Ok(reply),
            Gate::Replan => continue,
        }
    };
    out.confirmed_by = Some(confirmed_by);

    // 6. Apply.
    let warm = input
        .model
        .clone()
        .or_else(|| loaded.first().map(|p| p.name.clone()));
    match &place {
        Where::Compose {
            service, profile, ..
        } => {
            apply_compose(
                &call,
                &env_path,
                service,
                profile.clone(),
                &new,
                wait,
                confirmed_by,
            )
            .await?;
        }
        Where::Systemd(s) => {
            s.apply(&new.pairs(), &call.ct).await?;
        }
        Where::Launchd => {
            for (k, v) in new.pairs() {
                host_service::launchctl_setenv(k, &v).await?;
            }
            out.restart_required = Some(
                "quit the Ollama app (menu bar icon > Quit Ollama) and open it again: launchctl setenv reaches only apps started afterwards; then call set_kv_cache again (dry_run) or list_models to check"
                    .into(),
            );
        }
    }
    out.applied = true;

    // 7. Verify.
    let expected_kv = out.memory_effect.as_ref().map(|e| e.after.kv_cache_bytes);
    out.verification = verify(&call, &place, &new, wait, warm.as_deref(), expected_kv).await;
    out.verified = !out.verification.iter().any(|v| v.status == "failed");
    if !out.verified {
        let failed: Vec<String> = out
            .verification
            .iter()
            .filter(|v| v.status == "failed")
            .map(|v| format!("{}: {}", v.check, v.detail))
            .collect();
        let mut e = ToolError::external(format!(
            "set_kv_cache applied the change on {}, but verification failed: {}",
            place.name(),
            failed.join("; ")
        ))
        .next_step("call health (deep) on the ollama service and read the evidence; set_kv_cache again with the previous settings to go back");
        for v in &out.verification {
            e = e.evidence(format!("{} {}: {}", v.check, v.status, v.detail));
        }
        return Err(e);
    }
    finish(out, started)
}

/// A quantized KV cache needs flash attention: refused (naming `type` and the
/// one allowed value) where that Ollama on this backend has none, since
/// Ollama would start with the setting and allocate f16 anyway; otherwise any
/// caveat (unknown: the kv_cache check after the restart decides).
fn check_flash_attention(
    kv: KvCacheType,
    profile: Profile,
    hw: &HardwareFacts,
) -> Result<Option<String>, ToolError> {
    use memory_model::FlashAttention;
    let state = memory_model::flash_attention(profile.backend(), hw);
    match (&state, kv.is_quantized()) {
        (FlashAttention::Unavailable(why), true) => Err(ToolError::invalid(
            "type",
            format!(
                "{} would have no effect: it needs flash attention, which this Ollama does not have here: {why}",
                kv.as_str()
            ),
        )
        .allowed(["f16"])),
        (FlashAttention::Unknown(why), true) => Ok(Some(format!(
            "{why}; after the restart the kv_cache check reads the type llama.cpp really allocated"
        ))),
        (FlashAttention::Assumed(why), true) => Ok(Some(why.clone())),
        _ => Ok(None),
    }
}

fn show(v: Option<u32>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "unset".into())
}

/// Renders the new .env into a scratch file next to it and asks compose what
/// the service's environment would be: the keys must come through.
async fn check_compose_takes_keys(
    call: &Call,
    compose: &Compose,
    service: &str,
    new: &Settings,
) -> Result<(), ToolError> {
    let path = call.app.stack.env_path();
    let mut env = env_file::load(&path)?;
    for (k, v) in new.pairs() {
        env.set(k, &v);
    }
    crate::adapters::store::ensure_dir(&call.app.stack.state_dir)?;
    let scratch = tempfile::Builder::new()
        .prefix(".env.set_kv_cache-")
        .tempfile_in(&call.app.stack.state_dir)
        .map_err(|e| ToolError::internal(format!("scratch .env: {e}")))?;
    std::fs::write(scratch.path(), env.render())
        .map_err(|e| ToolError::internal(format!("scratch .env: {e}")))?;
    let mut probe = compose.clone();
    probe.env_file = Some(scratch.path().to_path_buf());
    let resolved = probe.service_environment(service).await?;
    let missing: Vec<String> = new
        .pairs()
        .into_iter()
        .filter(|(k, v)| resolved.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}={v} (compose gives {:?})", resolved.get(k)))
        .collect();
    if !missing.is_empty() {
        return Err(ToolError::external(format!(
            "the compose file does not take these keys from .env for `{service}`: {}; nothing was changed",
            missing.join(", ")
        ))
        .next_step(format!(
            "give `{service}` `environment:` entries such as {KEY_TYPE}: ${{{KEY_TYPE}:-f16}} (as the bundled compose file does), then call again"
        )));
    }
    Ok(())
}

async fn apply_compose(
    call: &Call,
    env_path: &Path,
    service: &ServiceModel,
    profile: Option<String>,
    new: &Settings,
    wait: u64,
    confirmed_by: ConfirmedBy,
) -> Result<(), ToolError> {
    let before: Option<String> = match std::fs::read_to_string(env_path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(ToolError::internal(format!(
                "reading {}: {e}",
                env_path.display()
            )))
        }
    };
    let mut env = EnvFile::parse(before.as_deref().unwrap_or(""));
    for (k, v) in new.pairs() {
        env.set(k, &v);
    }
    env_file::write_atomic(&env, env_path)?;
    let up = compose_up::up_after_guard(
        call,
        profile.clone(),
        vec![service.name.clone()],
        &service.name,
        wait,
        confirmed_by,
    )
    .await;
    let Err(e) = up else { return Ok(()) };
    // Put the previous .env back and the service as it was.
    let restored = match &before {
        Some(t) => env_file::write_atomic(&EnvFile::parse(t), env_path),
        None => std::fs::remove_file(env_path),
    };
    let back = match restored {
        Ok(()) => compose_up::up_after_guard(
            call,
            profile,
            vec![service.name.clone()],
            &service.name,
            wait,
            confirmed_by,
        )
        .await
        .map(|_| {
            format!(
                ".env restored and `{}` recreated with the previous settings",
                service.name
            )
        })
        .unwrap_or_else(|e2| {
            format!(
                ".env restored, but recreating `{}` with it failed too: {}",
                service.name, e2.message
            )
        }),
        Err(io) => format!("restoring .env failed ({io}): it holds the new settings"),
    };
    let mut err = ToolError::new(
        if e.kind == ErrorKind::Cancelled { ErrorKind::Cancelled } else { ErrorKind::External },
        format!("recreating `{}` with the new settings failed: {}; {back}", service.name, e.message),
    )
    .next_step("read the evidence (compose output, health-check outputs, logs); stack_status shows the service now");
    err.evidence = e.evidence;
    Err(err)
}

fn check(name: &str, status: &str, detail: impl Into<String>) -> Verification {
    Verification {
        check: name.into(),
        status: status.into(),
        detail: detail.into(),
    }
}

/// Ollama's `server config env="map[K:V ...]"` startup line, as a map.
pub fn parse_server_config(logs: &str) -> Option<BTreeMap<String, String>> {
    let line = logs
        .lines()
        .rev()
        .find(|l| l.contains("msg=\"server config\""))?;
    let start = line.find("env=\"map[")? + "env=\"map[".len();
    let body = &line[start..];
    let body = &body[..body.rfind("]\"")?];
    let mut out = BTreeMap::new();
    for tok in body.split(' ') {
        if let Some((k, v)) = tok.split_once(':') {
            if k.starts_with("OLLAMA_") || k.starts_with("CUDA_") || k.starts_with("HTTP") {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    Some(out)
}

/// Ollama prints booleans in `server config` as true/false.
fn same_config_value(key: &str, wanted: &str, got: &str) -> bool {
    if key == KEY_FLASH {
        let truthy = |v: &str| matches!(v.trim(), "1" | "true" | "TRUE" | "True");
        return truthy(wanted) == truthy(got);
    }
    wanted.trim() == got.trim()
}

async fn verify(
    call: &Call,
    place: &Where,
    new: &Settings,
    wait: u64,
    warm: Option<&str>,
    expected_kv_bytes: Option<u64>,
) -> Vec<Verification> {
    let mut checks = Vec::new();
    let wanted = new.pairs();
    // Environment, and the startup line.
    match place {
        Where::Compose { service, .. } => {
            let found = async {
                let engine = call.app.engine();
                let c = crate::engine::running_instance(engine, &service.name).await?;
                let env = engine.environment(&c.id).await?;
                let logs = crate::engine::log_text(engine, &c.id, 200, 64 * 1024).await;
                Ok::<_, ToolError>((c, env, logs))
            }
            .await;
            match found {
                Err(e) => checks.push(check("environment", "failed", e.message)),
                Ok((c, env, logs)) => {
                    let bad: Vec<String> = wanted
                        .iter()
                        .filter(|(k, v)| {
                            crate::engine::env_value(&env, k).as_deref() != Some(v.as_str())
                        })
                        .map(|(k, v)| {
                            format!(
                                "{k}: want {v}, container has {:?}",
                                crate::engine::env_value(&env, k)
                            )
                        })
                        .collect();
                    checks.push(if bad.is_empty() {
                        check(
                            "environment",
                            "ok",
                            format!("container {} has {}", c.name, pairs_text(&wanted)),
                        )
                    } else {
                        check(
                            "environment",
                            "failed",
                            format!("container {}: {}", c.name, bad.join("; ")),
                        )
                    });
                    checks.push(startup_check(&logs, &wanted));
                }
            }
        }
        Where::Systemd(s) => match s.environment().await {
            Err(e) => checks.push(check("environment", "failed", e.message)),
            Ok(env) => {
                let bad: Vec<String> = wanted
                    .iter()
                    .filter(|(k, v)| env.get(*k) != Some(v))
                    .map(|(k, v)| format!("{k}: want {v}, unit has {:?}", env.get(*k)))
                    .collect();
                checks.push(if bad.is_empty() {
                    check(
                        "environment",
                        "ok",
                        format!("{} has {}", s.unit, pairs_text(&wanted)),
                    )
                } else {
                    check(
                        "environment",
                        "failed",
                        format!("{}: {}", s.unit, bad.join("; ")),
                    )
                });
                match s.journal_tail().await {
                    Some(logs) => checks.push(startup_check(&logs, &wanted)),
                    None => {
                        checks.push(check("startup_log", "skipped", "journalctl not available"))
                    }
                }
            }
        },
        Where::Launchd => {
            let mut bad = Vec::new();
            for (k, v) in &wanted {
                match host_service::launchctl_getenv(k).await {
                    Ok(Some(got)) if got == *v => {}
                    Ok(got) => bad.push(format!("{k}: want {v}, launchctl has {got:?}")),
                    Err(e) => bad.push(format!("{k}: {}", e.message)),
                }
            }
            checks.push(if bad.is_empty() {
                check(
                    "environment",
                    "ok",
                    format!("launchctl getenv: {}", pairs_text(&wanted)),
                )
            } else {
                check("environment", "failed", bad.join("; "))
            });
            checks.push(check(
                "warm_up",
                "skipped",
                "Ollama picks the new environment up only after a restart by hand (see restart_required)",
            ));
            return checks;
        }
    }
    // Reachable again (compose already waited for health; a host unit may still be starting).
    let endpoint = endpoint_for(call, place).await;
    let deadline = Instant::now() + Duration::from_secs(wait);
    let client = loop {
        match Ollama::connect(&endpoint).await {
            Ok(o) => break Some(o),
            Err(e) if Instant::now() >= deadline => {
                checks.push(check("reachable", "failed", e.message));
                break None;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    let Some(client) = client else { return checks };
    checks.push(check(
        "reachable",
        "ok",
        format!("{} answers /api/version", endpoint.url),
    ));
    let Some(model) = warm else {
        checks.push(check(
            "warm_up",
            "skipped",
            "no model was loaded before and none was given: nothing to load",
        ));
        return checks;
    };
    match client.load(model, "5m", WARMUP_TIMEOUT).await {
        Ok(took) => checks.push(check(
            "warm_up",
            "ok",
            format!("{model} loaded in {} ms", took.as_millis()),
        )),
        Err(e) => {
            checks.push(check(
                "warm_up",
                "failed",
                format!("{model}: {}", e.message),
            ));
            return checks;
        }
    }
    match client.ps().await {
        Err(e) => checks.push(check("api_ps", "failed", e.message)),
        Ok(ps) => match ps.iter().find(|p| p.name == model || p.model == model) {
            None => checks.push(check(
                "api_ps",
                "failed",
                format!("{model} is not in /api/ps after the warm-up"),
            )),
            Some(p) => match (p.context_length, new.context_length) {
                (Some(got), Some(want)) if got != u64::from(want) => checks.push(check(
                    "api_ps",
                    "failed",
                    format!("{model} runs with context {got}, want {want}"),
                )),
                (got, _) => checks.push(check(
                    "api_ps",
                    "ok",
                    format!(
                        "{model} loaded, {} of {} bytes on the GPU{}",
                        p.size_vram,
                        p.size,
                        got.map(|c| format!(", context {c}")).unwrap_or_default()
                    ),
                )),
            },
        },
    }
    // The KV cache llama.cpp allocated for the warm-up load, from the log.
    let logs = match place {
        Where::Compose { service, .. } => {
            let engine = call.app.engine();
            match crate::engine::running_instance(engine, &service.name).await {
                Ok(c) => Some(crate::engine::log_text(engine, &c.id, 400, 128 * 1024).await),
                Err(_) => None,
            }
        }
        Where::Systemd(s) => s.journal_tail().await,
        Where::Launchd => None,
    };
    checks.push(match logs {
        None => check("kv_cache", "skipped", "Ollama's log could not be read"),
        Some(text) => kv_cache_check(kv_log::since_last_start(&text), new, expected_kv_bytes),
    });
    checks
}

/// The KV cache type llama.cpp allocated must be the one asked for: Ollama
/// can start with OLLAMA_KV_CACHE_TYPE=q8_0 in its environment and its
/// `server config` line, and still allocate f16 (no flash attention on that
/// backend), which only this line shows.
fn kv_cache_check(log: &str, new: &Settings, expected_kv_bytes: Option<u64>) -> Verification {
    let wanted_cells = u64::from(new.context_length.unwrap_or(OLLAMA_DEFAULT_CONTEXT))
        * u64::from(new.num_parallel.unwrap_or(1).max(1));
    let wanted = new.kv_cache_type.as_deref().unwrap_or("f16");
    let ignored = kv_log::ignored_type_warnings(log);
    let Some(a) = kv_log::last_allocation(log) else {
        return if ignored.is_empty() {
            check(
                "kv_cache",
                "skipped",
                "no llama.cpp KV cache line in the log after the warm-up (models on Ollama's own engine, such as gemma3 and gpt-oss, print none): the type was not checked",
            )
        } else {
            check(
                "kv_cache",
                "failed",
                format!(
                    "Ollama did not apply {wanted}: it logged `{}`",
                    ignored.join("`; `")
                ),
            )
        };
    };
    let cells = a.cells.map(|c| format!(", {c} cells")).unwrap_or_default();
    let predicted = expected_kv_bytes
        .map(|b| {
            format!(
                "; the memory model predicted {:.2} MiB",
                b as f64 / f64::from(1u32 << 20)
            )
        })
        .unwrap_or_default();
    let capped = match a.cells {
        Some(c) if c < wanted_cells => format!(
            "; {c} cells for context x slots = {wanted_cells}: Ollama caps each slot at the model's trained context (/api/ps still reports the context asked for)"
        ),
        _ => String::new(),
    };
    let allocated = format!(
        "llama.cpp allocated {:.2} MiB (K {} {:.2} MiB, V {} {:.2} MiB{cells}){predicted}{capped}",
        a.total_mib, a.type_k, a.k_mib, a.type_v, a.v_mib
    );
    if a.type_k == wanted && a.type_v == wanted {
        check("kv_cache", "ok", allocated)
    } else {
        let why = if ignored.is_empty() {
            String::new()
        } else {
            format!("; Ollama logged `{}`", ignored.join("`; `"))
        };
        check(
            "kv_cache",
            "failed",
            format!("{wanted} was asked for, but {allocated}{why}"),
        )
    }
}

fn pairs_text(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn startup_check(logs: &str, wanted: &[(&str, String)]) -> Verification {
    match parse_server_config(logs) {
        None => check(
            "startup_log",
            "skipped",
            "no `server config` line in the last 200 log lines",
        ),
        Some(cfg) => {
            let bad: Vec<String> = wanted
                .iter()
                .filter(|(k, v)| !cfg.get(*k).is_some_and(|got| same_config_value(k, v, got)))
                .map(|(k, v)| format!("{k}: want {v}, Ollama started with {:?}", cfg.get(*k)))
                .collect();
            if bad.is_empty() {
                check(
                    "startup_log",
                    "ok",
                    "Ollama's `server config` line shows the new settings",
                )
            } else {
                check("startup_log", "failed", bad.join("; "))
            }
        }
    }
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

    #[test]
    fn server_config_line_is_read_as_ollama_prints_it() {
        let logs = "noise\ntime=2026-11-24T16:25:07Z level=INFO source=routes.go:1 msg=\"server config\" env=\"map[OLLAMA_CONTEXT_LENGTH:8192 OLLAMA_FLASH_ATTENTION:true OLLAMA_HOST:http://0.0.0.0:11434 OLLAMA_KV_CACHE_TYPE:q8_0 OLLAMA_NUM_PARALLEL:2]\"\nmore";
        let cfg = parse_server_config(logs).expect("line");
        assert_eq!(cfg["OLLAMA_KV_CACHE_TYPE"], "q8_0");
        assert_eq!(cfg["OLLAMA_CONTEXT_LENGTH"], "8192");
        assert_eq!(cfg["OLLAMA_HOST"], "http://0.0.0.0:11434");
        assert!(same_config_value(KEY_FLASH, "1", &cfg[KEY_FLASH]));
        assert!(!same_config_value(KEY_FLASH, "0", &cfg[KEY_FLASH]));
        let ok = startup_check(logs, &[(KEY_TYPE, "q8_0".into()), (KEY_FLASH, "1".into())]);
        assert_eq!(ok.status, "ok", "{}", ok.detail);
        let bad = startup_check(logs, &[(KEY_TYPE, "q4_0".into())]);
        assert_eq!(bad.status, "failed");
        assert!(bad.detail.contains("want q4_0"));
        assert_eq!(startup_check("nothing", &[]).status, "skipped");
    }

    #[test]
    fn quantized_types_need_flash_attention() {
        let pascal = HardwareFacts {
            nvidia_vram_bytes: Some(8 << 30),
            nvidia_compute_capability: Some("6.1".into()),
            memory_total_bytes: 32 << 30,
            memory_available_bytes: 30 << 30,
            logical_cores: 8,
            ..Default::default()
        };
        for kv in [KvCacheType::Q8_0, KvCacheType::Q4_0] {
            let e = check_flash_attention(kv, Profile::Standard, &pascal).expect_err("refused");
            assert_eq!(e.field.as_deref(), Some("type"));
            assert_eq!(e.allowed, Some(vec!["f16".to_string()]));
            assert!(e.message.contains("6.1 < 7.0"), "{}", e.message);
        }
        assert!(check_flash_attention(KvCacheType::F16, Profile::Standard, &pascal).is_ok());
        let ada = HardwareFacts {
            nvidia_compute_capability: Some("8.9".into()),
            ..pascal.clone()
        };
        assert_eq!(
            check_flash_attention(KvCacheType::Q8_0, Profile::Standard, &ada).expect("ok"),
            None
        );
        // Metal always has it.
        assert_eq!(
            check_flash_attention(KvCacheType::Q4_0, Profile::AppleMetal, &pascal).expect("ok"),
            None
        );
        // CPU: Ollama 0.11.4 allocates f16 whatever it is told (observed): refused.
        let cpu_0114 = HardwareFacts {
            ollama_version: Some("0.11.4".into()),
            ..pascal.clone()
        };
        let e = check_flash_attention(KvCacheType::Q8_0, Profile::Cpu, &cpu_0114)
            .expect_err("refused on 0.11.4");
        assert_eq!(e.field.as_deref(), Some("type"));
        assert_eq!(e.allowed, Some(vec!["f16".to_string()]));
        assert!(e.message.contains("would have no effect"), "{}", e.message);
        assert!(e.message.contains("Ollama 0.11.4"), "{}", e.message);
        assert_eq!(
            check_flash_attention(KvCacheType::F16, Profile::Cpu, &cpu_0114).expect("f16"),
            None
        );
        // From 0.11.5 its CPU backend has flash attention.
        let cpu_0115 = HardwareFacts {
            ollama_version: Some("0.11.5".into()),
            ..pascal.clone()
        };
        assert_eq!(
            check_flash_attention(KvCacheType::Q4_0, Profile::Cpu, &cpu_0115).expect("ok"),
            None
        );
        // Unknown version: allowed, with the warning that the log decides.
        let w = check_flash_attention(KvCacheType::Q4_0, Profile::Cpu, &pascal)
            .expect("allowed")
            .expect("a warning");
        assert!(w.contains("kv_cache check"), "{w}");
    }

    /// The lines the real Ollama 0.11.4 prints on CPU (docs/ollama-0.11.4-observed.md).
    const LOAD_Q8_0_ON_CPU: &str = r#"time=2026-11-28T07:37:20.522Z level=WARN source=server.go:206 msg="flash attention enabled but not supported by gpu"
time=2026-11-28T07:37:20.522Z level=WARN source=server.go:229 msg="quantized kv cache requested but flash attention disabled" type=q8_0
llama_kv_cache_unified: kv_size = 8192, type_k = 'f16', type_v = 'f16', n_layer = 30, can_shift = 1, padding = 32
llama_kv_cache_unified:        CPU KV buffer size =   180.00 MiB
llama_kv_cache_unified: KV self size  =  180.00 MiB, K (f16):   90.00 MiB, V (f16):   90.00 MiB
"#;

    #[test]
    fn kv_cache_check_reads_what_llama_cpp_allocated() {
        let q8 = Settings {
            kv_cache_type: Some("q8_0".into()),
            ..Default::default()
        };
        let c = kv_cache_check(LOAD_Q8_0_ON_CPU, &q8, None);
        assert_eq!(c.status, "failed", "{}", c.detail);
        assert!(c.detail.contains("q8_0 was asked for"), "{}", c.detail);
        assert!(c.detail.contains("K f16 90.00 MiB"), "{}", c.detail);
        assert!(
            c.detail
                .contains("quantized kv cache requested but flash attention disabled"),
            "{}",
            c.detail
        );
        let f16 = Settings {
            kv_cache_type: Some("f16".into()),
            ..Default::default()
        };
        let c = kv_cache_check(LOAD_Q8_0_ON_CPU, &f16, Some(180 << 20));
        assert_eq!(c.status, "ok", "{}", c.detail);
        assert!(c.detail.contains("8192 cells"), "{}", c.detail);
        assert!(c.detail.contains("predicted 180.00 MiB"), "{}", c.detail);
        assert!(!c.detail.contains("caps"), "{}", c.detail);
        // 32768 asked of a model trained for 8192: still 8192 cells.
        let long = Settings {
            kv_cache_type: Some("f16".into()),
            context_length: Some(32_768),
            ..Default::default()
        };
        let c = kv_cache_check(LOAD_Q8_0_ON_CPU, &long, Some(180 << 20));
        assert_eq!(c.status, "ok", "{}", c.detail);
        assert!(
            c.detail
                .contains("caps each slot at the model's trained context"),
            "{}",
            c.detail
        );
        // Ollama's own engine prints no allocation line: not checked.
        assert_eq!(
            kv_cache_check("runner started", &q8, None).status,
            "skipped"
        );
        // A warning without an allocation line still fails.
        let only_warning = LOAD_Q8_0_ON_CPU
            .lines()
            .take(2)
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(kv_cache_check(&only_warning, &q8, None).status, "failed");
    }

    #[test]
    fn settings_round_trip_and_defaults() {
        let s = Settings::from_lookup(|k| match k {
            KEY_TYPE => Some("q4_0".into()),
            KEY_CONTEXT => Some("16384".into()),
            KEY_PARALLEL => Some("x".into()),
            _ => None,
        });
        assert_eq!(s.num_parallel, None, "an unreadable number is unset");
        assert_eq!(
            s.pairs(),
            vec![
                (KEY_TYPE, "q4_0".to_string()),
                (KEY_CONTEXT, "16384".to_string())
            ]
        );
        let e = Settings::default().effective();
        assert_eq!(e.kv_cache_type, KvCacheType::F16);
        assert_eq!(e.context_length, OLLAMA_DEFAULT_CONTEXT);
        assert_eq!(e.num_parallel, 1);
    }

    #[test]
    fn env_steps_mark_overwrites_destructive() {
        let current = Settings {
            kv_cache_type: Some("f16".into()),
            context_length: Some(8192),
            ..Default::default()
        };
        let new = Settings {
            kv_cache_type: Some("q8_0".into()),
            context_length: Some(8192),
            flash_attention: Some("1".into()),
            ..Default::default()
        };
        let steps = env_steps(&current, &new, ".env", None);
        let by: BTreeMap<&str, (&str, bool)> = steps
            .iter()
            .map(|s| (s.target.as_str(), (s.action.as_str(), s.destructive)))
            .collect();
        assert_eq!(by[KEY_TYPE], ("overwrite", true));
        assert_eq!(by[KEY_CONTEXT], ("unchanged", false));
        assert_eq!(by[KEY_FLASH], ("set", false));
        assert_eq!(steps.len(), 3);
    }
}
