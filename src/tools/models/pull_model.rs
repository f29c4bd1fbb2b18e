//! pull_model: download a model into Ollama, with progress. Mutating, not
//! destructive (nothing is lost; a model already there is brought up to date).
//!
//! 1. Validate the name (`ModelName`) before any request; find Ollama and
//!    check `/api/version`.
//! 2. Preflight: would select_profile fit it here? Facts from `/api/show`
//!    when the model is already local, else from the built-in catalogue;
//!    refuse a model that does not fit unless `force`.
//! 3. Plan (one `pull` step), guard (takes the stack lock, so no
//!    set_kv_cache recreates Ollama under a running pull), then stream
//!    `/api/pull`: each status line and each layer's completed/total becomes
//!    a progress notification, at most 10 a second and at least one a second.
//! 4. Cancellation closes the stream. Ollama keeps the layers it has, and the
//!    next pull resumes from them; the result says how many bytes were resumed:
//!    whole layers Ollama already had (it reports those with one line, complete),
//!    and the partial layers of a pull stackpilot saw stop (recorded in the
//!    state dir: Ollama's stream does not say how much of a layer it had).
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::adapters::ollama::{self, Ollama, PullEvent, PullStream};
use crate::adapters::pull_parts;
use crate::domain::error::{ErrorKind, ToolError};
use crate::domain::models::catalogue::{self as model_catalogue, ModelFacts};
use crate::domain::models::memory::{
    self as memory_model, HardwareFacts, KvCacheType, MemoryTable, Profile, ProfileRequest,
};
use crate::domain::models::name::ModelName;
use crate::domain::plan::{Plan, PlanStep, StepCost};
use crate::guard::token::ConfirmedBy;
use crate::guard::{Call, Gate, Progress, Reply};
use crate::tools::def::{self, Hints, ToolDef};
use crate::tools::models::endpoint;

/// The context the fit check plans for: select_profile's default.
pub const FIT_CONTEXT: u32 = 32_768;
/// Progress notifications in any one-second window, at most.
pub const MAX_PER_SECOND: usize = 10;
/// Byte counts alone are sent at most this often; status changes go at once.
pub const BYTES_EVERY: Duration = Duration::from_millis(500);
/// How far a notification without new bytes moves `progress` up: 1/1024 of a
/// byte, exact in binary and visible in the JSON. (The smallest f64 step, the
/// first choice, does not survive JSON: serde_json's default float parser,
/// which rmcp's clients use, reads 98362534.00000001 back as 98362534.0, so
/// a client saw two equal values when the real Ollama paused between blobs.)
pub const PROGRESS_STEP: f64 = 1.0 / 1024.0;
/// Silence longer than this gets a heartbeat notification.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The Ollama model to pull, e.g. `llama3.1:8b` or `namespace/model:tag`
    /// (letters, digits, `.`, `_`, `-`; at most 256 characters).
    pub model: String,
    /// Allow an insecure registry (plain HTTP or unverified TLS): only for a registry you run yourself.
    #[serde(default)]
    pub insecure: bool,
    /// Pull even when the model does not fit this machine's memory.
    #[serde(default)]
    pub force: bool,
}

/// Where the fit check's model facts came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FactsSource {
    /// `/api/show` of the local model (its GGUF metadata) and its `/api/tags` size.
    ApiShow,
    /// The built-in catalogue (the model is not local yet).
    Catalogue,
    /// Neither: the fit is known only once the model is local.
    Unknown,
}

/// Would select_profile fit this model here, and with what numbers.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FitCheck {
    pub source: FactsSource,
    /// None when the facts are unknown.
    pub fits: Option<bool>,
    /// The check said no and `force` pulled it anyway.
    pub forced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_cache_type: Option<KvCacheType>,
    /// The memory arithmetic of the chosen (or closest) candidate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryTable>,
    pub reasons: Vec<String>,
}

/// `success`, or `cancelled` (stopped by the caller; partial layers kept).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PullStatus {
    Success,
    Cancelled,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Output {
    pub model: String,
    pub ollama_url: String,
    pub ollama_version: String,
    pub status: PullStatus,
    /// One line for a person.
    pub message: String,
    /// The manifest digest Ollama lists for the model afterwards.
    pub digest: Option<String>,
    /// The model's size on disk, bytes (`/api/tags`).
    pub size_bytes: Option<u64>,
    /// Wall time of the pull stream, seconds.
    pub duration_s: f64,
    /// Layers Ollama reported.
    pub layers: u32,
    /// Sum of the layers' sizes, bytes.
    pub bytes_total: u64,
    /// Bytes Ollama already had when the pull started: whole layers, and partial
    /// layers left by a pull stackpilot saw stop (at least what it saw completed);
    /// a partial layer left by another client counts as transferred.
    pub bytes_resumed: u64,
    /// Bytes completed in this pull.
    pub bytes_transferred: u64,
    /// Progress notifications sent.
    pub progress_notifications: u32,
    /// Whether it fits (after the pull: from the local model's own metadata).
    pub fits: Option<bool>,
    /// The fit check before the pull.
    pub preflight: FitCheck,
    /// The fit from `/api/show` once the model is local (absent when cancelled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fit: Option<FitCheck>,
    pub plan: Plan,
    pub confirmed_by: ConfirmedBy,
}

pub static TOOL: ToolDef = ToolDef {
    name: "pull_model",
    title: "Pull an Ollama model",
    description:
        "Download a model into Ollama, with progress per status and layer. Refuses a model that \
        select_profile says will not fit this machine unless `force`, with the numbers. \
        Cancelling stops the download; the next pull resumes from the layers Ollama kept. \
        Returns digest, size, duration and whether it fits. Use after select_profile has picked \
        a model.",
    hints: Hints {
        read_only: false,
        destructive: false,
        idempotent: true,
        open_world: true,
    },
    read_only_subset: false,
    input_schema: def::input_schema::<Input>,
    output_schema: def::output_schema::<Output>,
    run: |call, args| Box::pin(run(call, args)),
};

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / memory_model::GIB as f64)
}

/// Fit of `facts` here, as select_profile would decide it with its defaults.
/// `ollama_version`: the Ollama the model goes into (whether its CPU backend
/// can quantize the KV cache depends on it).
async fn fit_of(
    call: &Call,
    facts: ModelFacts,
    source: FactsSource,
    ollama_version: &str,
) -> Result<FitCheck, ToolError> {
    let report = crate::tools::hardware::detect_hardware::detect(call, false).await?;
    let mut hardware = HardwareFacts::from(&report);
    hardware.ollama_version = Some(ollama_version.to_string());
    let decision = memory_model::choose(&ProfileRequest {
        model: facts.clone(),
        context_length: FIT_CONTEXT,
        kv_cache_types: KvCacheType::ALL.to_vec(),
        num_parallel: 1,
        hardware,
    });
    Ok(FitCheck {
        source,
        fits: Some(decision.fits),
        forced: false,
        model: Some(facts),
        profile: Some(decision.profile),
        context_length: Some(decision.context_length),
        kv_cache_type: Some(decision.kv_cache_type),
        memory: Some(decision.memory),
        reasons: decision.reasons,
    })
}

fn unknown_fit(name: &ModelName, why: String) -> FitCheck {
    FitCheck {
        source: FactsSource::Unknown,
        fits: None,
        forced: false,
        model: None,
        profile: None,
        context_length: None,
        kv_cache_type: None,
        memory: None,
        reasons: vec![format!("{name}: {why}")],
    }
}

/// The fit from a local model's `/api/show` (None when it carries no KV facts).
async fn local_fit(
    call: &Call,
    ollama: &Ollama,
    listed: &ollama::TagModel,
) -> Result<Option<FitCheck>, ToolError> {
    match ollama.model_facts(&listed.name, listed.size).await? {
        Some(facts) => Ok(Some(
            fit_of(call, facts, FactsSource::ApiShow, &ollama.version).await?,
        )),
        None => Ok(None),
    }
}

async fn preflight(
    call: &Call,
    ollama: &Ollama,
    name: &ModelName,
) -> Result<(FitCheck, Option<ollama::TagModel>), ToolError> {
    let tags = ollama.tags().await?;
    let local = tags.into_iter().find(|t| name.matches(&t.name));
    if let Some(listed) = &local {
        if let Some(fit) = local_fit(call, ollama, listed).await? {
            return Ok((fit, local));
        }
    }
    match model_catalogue::lookup(name.as_str()) {
        Some(facts) => Ok((
            fit_of(call, facts, FactsSource::Catalogue, &ollama.version).await?,
            local,
        )),
        None => Ok((
            unknown_fit(
                name,
                "not in the built-in catalogue and not local yet: the fit is checked once it is pulled".into(),
            ),
            local,
        )),
    }
}

fn refusal(name: &ModelName, fit: &FitCheck) -> ToolError {
    let mut msg = format!("{name} does not fit this machine");
    if let (Some(m), Some(p), Some(ctx), Some(kv)) = (
        &fit.memory,
        fit.profile,
        fit.context_length,
        fit.kv_cache_type,
    ) {
        msg.push_str(&format!(
            ": even the closest setting ({} profile, context {ctx}, KV cache {}) needs {} (weights {} + KV cache {} + overhead {}) where {} is usable with a {} margin ({})",
            p.as_str(),
            kv.as_str(),
            gib(m.need_bytes),
            gib(m.weights_bytes),
            gib(m.kv_cache_bytes),
            gib(m.overhead_bytes),
            gib(m.usable_bytes),
            gib(m.margin_bytes),
            m.basis
        ));
    }
    let source = match fit.source {
        FactsSource::ApiShow => "facts from /api/show of the local model",
        FactsSource::Catalogue => "facts from the built-in catalogue",
        FactsSource::Unknown => "facts unknown",
    };
    let mut e =
        ToolError::new(ErrorKind::External, format!("{msg}; nothing was pulled")).evidence(source);
    for r in &fit.reasons {
        e = e.evidence(r.clone());
    }
    e.next_step("run select_profile with this model to see every candidate; pull a smaller model, or call pull_model again with force: true to pull it anyway")
}

fn plan_for(
    call: &Call,
    name: &ModelName,
    url: &str,
    fit: &FitCheck,
    local: Option<&ollama::TagModel>,
) -> Plan {
    let size = fit
        .model
        .as_ref()
        .map(|m| format!(" (about {})", gib(m.weights_bytes)))
        .unwrap_or_default();
    let detail = match local {
        Some(_) => {
            format!("update {name}{size} in Ollama at {url}; only changed layers are downloaded")
        }
        None => format!("download {name}{size} into Ollama at {url}"),
    };
    let step = PlanStep {
        action: "pull".into(),
        target: format!("model:{}", name.canonical()),
        detail: detail.clone(),
        before: local.map(|t| serde_json::json!({"digest": t.digest, "size": t.size})),
        after: None,
        destructive: false,
        cost: StepCost::default(),
    };
    Plan::new(
        "pull_model",
        &call.app.stack.id,
        format!("pull_model: {detail}"),
        vec![step],
    )
}

async fn run(call: Arc<Call>, args: Value) -> Result<Reply, ToolError> {
    let input: Input = def::parse_args(args)?;
    let name = ModelName::parse("model", &input.model)?;
    let endpoint = endpoint::resolve(&call.app).await;
    let ollama = Ollama::connect(&endpoint).await?;

    let (mut preflight, local) = preflight(&call, &ollama, &name).await?;
    if preflight.fits == Some(false) {
        if !input.force {
            return Err(refusal(&name, &preflight));
        }
        preflight.forced = true;
    }
    let (plan, confirmed_by) = loop {
        let plan = plan_for(&call, &name, &ollama.url, &preflight, local.as_ref());
        match call.guard(&plan, None).await? {
            Gate::Proceed(by) => break (plan, by),
            Gate::Halt(reply) => return Ok(reply),
            Gate::Replan => continue,
        }
    };

    let started = Instant::now();
    let state_dir = call.app.stack.state_dir.clone();
    let mut pulled = Pulled::resuming(pull_parts::load(&state_dir, &ollama.url));
    let stream = ollama.pull(name.as_str(), input.insecure).await?;
    let followed = follow(&call, stream, call.progress.as_ref(), &mut pulled).await;
    // What is left unfinished is remembered, so the next pull can say what it resumed.
    let (partial, finished) = pulled.partial_and_finished();
    if !partial.is_empty() || !pulled.known.is_empty() {
        pull_parts::update(&state_dir, &ollama.url, &partial, &finished);
    }
    followed?;
    let resumed = pulled.resumed();
    let duration_s = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;

    let mut out = Output {
        model: name.to_string(),
        ollama_url: ollama.url.clone(),
        ollama_version: ollama.version.clone(),
        status: if pulled.cancelled {
            PullStatus::Cancelled
        } else {
            PullStatus::Success
        },
        message: String::new(),
        digest: None,
        size_bytes: None,
        duration_s,
        layers: pulled.layers.len() as u32,
        bytes_total: pulled.total(),
        bytes_resumed: resumed,
        bytes_transferred: pulled.completed().saturating_sub(resumed),
        progress_notifications: pulled.notifications,
        fits: preflight.fits,
        preflight,
        fit: None,
        plan,
        confirmed_by,
    };
    if pulled.cancelled {
        call.set_outcome("cancelled");
        out.message = format!(
            "cancelled after {:.1} s with {} of {} bytes: Ollama keeps the layers downloaded so far, and pulling {name} again resumes from them",
            duration_s,
            pulled.completed(),
            pulled.total()
        );
        return to_reply(out);
    }
    // The model is local now: its digest, size and real metadata.
    match ollama.tags().await {
        Ok(tags) => {
            if let Some(listed) = tags.into_iter().find(|t| name.matches(&t.name)) {
                out.digest = Some(listed.digest.clone());
                out.size_bytes = Some(listed.size);
                match local_fit(&call, &ollama, &listed).await {
                    Ok(Some(fit)) => {
                        out.fits = fit.fits;
                        out.fit = Some(fit);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e.message, "could not check the pulled model's fit")
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e.message, "could not list models after the pull"),
    }
    let fit_text = match out.fits {
        Some(true) => "fits this machine".to_string(),
        Some(false) => "does NOT fit this machine (see fit.memory)".to_string(),
        None => "fit unknown".to_string(),
    };
    out.message = format!(
        "pulled {name} in {duration_s:.1} s ({} layers, {} bytes, {} resumed); {fit_text}",
        out.layers, out.bytes_total, out.bytes_resumed
    );
    to_reply(out)
}

fn to_reply(out: Output) -> Result<Reply, ToolError> {
    serde_json::to_value(out)
        .map(Reply::Done)
        .map_err(|e| ToolError::internal(e.to_string()))
}

// ------------------------------------------------------------ the stream

/// One layer as the stream reported it.
#[derive(Debug, Default, Clone)]
struct Layer {
    total: u64,
    completed: u64,
    /// `completed` of its first line.
    first: Option<u64>,
    /// Lines that named it.
    lines: u32,
}

/// What a followed pull saw.
#[derive(Debug, Default)]
pub struct Pulled {
    layers: BTreeMap<String, Layer>,
    /// Partial layers a pull stackpilot saw stop had reached (digest -> bytes).
    known: BTreeMap<String, u64>,
    status: String,
    cancelled: bool,
    notifications: u32,
}

impl Pulled {
    fn resuming(known: BTreeMap<String, u64>) -> Self {
        Self {
            known,
            ..Self::default()
        }
    }

    fn total(&self) -> u64 {
        self.layers.values().map(|l| l.total).sum()
    }

    fn completed(&self) -> u64 {
        self.layers.values().map(|l| l.completed).sum()
    }

    /// Bytes Ollama had before this pull. A layer it already has is reported
    /// once, complete (Ollama's cache hit); one it downloads is reported every
    /// 60 ms, the first time already with what came in those 60 ms, so for a
    /// partial layer only what a stopped pull of ours saw counts.
    fn resumed(&self) -> u64 {
        self.layers
            .iter()
            .map(|(digest, l)| {
                if l.lines == 1 && l.total > 0 && l.first == Some(l.total) {
                    l.total
                } else {
                    self.known
                        .get(digest)
                        .copied()
                        .unwrap_or(0)
                        .min(l.first.unwrap_or(0))
                }
            })
            .sum()
    }

    /// (layers left unfinished with their bytes, layers finished).
    fn partial_and_finished(&self) -> (BTreeMap<String, u64>, Vec<String>) {
        let mut partial = BTreeMap::new();
        let mut finished = Vec::new();
        for (d, l) in &self.layers {
            if l.total > 0 && l.completed >= l.total {
                finished.push(d.clone());
            } else if l.completed > 0 {
                partial.insert(d.clone(), l.completed);
            }
        }
        (partial, finished)
    }

    fn apply(&mut self, e: &PullEvent) {
        self.status = e.status.clone();
        if let Some(digest) = &e.digest {
            let layer = self.layers.entry(digest.clone()).or_default();
            if let Some(t) = e.total {
                layer.total = layer.total.max(t);
            }
            let c = e.completed.unwrap_or(0);
            layer.lines += 1;
            layer.first.get_or_insert(c);
            layer.completed = layer.completed.max(c).min(layer.total.max(c));
        }
    }

    /// One line for the person watching.
    fn message(&self) -> String {
        let (done, total) = (self.completed(), self.total());
        if self.status.starts_with("pulling ") && total > 0 {
            format!(
                "{}: {} of {} ({:.0}%)",
                self.status,
                gib(done),
                gib(total),
                100.0 * done as f64 / total as f64
            )
        } else {
            self.status.clone()
        }
    }
}

/// Rate-limits progress: at most `MAX_PER_SECOND` in any second, status
/// changes at once, byte counts every `BYTES_EVERY`, a heartbeat after
/// `HEARTBEAT` of silence. MCP wants `progress` to increase with every
/// notification: it is the bytes completed, and a notification that brings
/// no new bytes (a status change, a heartbeat) moves it up by `PROGRESS_STEP`.
struct Throttle {
    sent: VecDeque<Instant>,
    last_sent: Instant,
    last_status: Option<String>,
    last_bytes: u64,
    last_progress: f64,
}

impl Throttle {
    fn new(now: Instant) -> Self {
        Self {
            sent: VecDeque::with_capacity(MAX_PER_SECOND),
            last_sent: now,
            last_status: None,
            last_bytes: 0,
            last_progress: 0.0,
        }
    }

    /// When the one-second window has room again (now or later).
    fn window_free_at(&self, now: Instant) -> Instant {
        if self.sent.len() < MAX_PER_SECOND {
            return now;
        }
        self.sent
            .front()
            .map(|t| *t + Duration::from_secs(1))
            .unwrap_or(now)
            .max(now)
    }

    /// When the next notification is due, given the state now.
    fn due(&self, state: &Pulled, now: Instant) -> Instant {
        let wanted = if state.status.is_empty() {
            // Nothing from Ollama yet: only a heartbeat is due.
            self.last_sent + HEARTBEAT
        } else if self.last_status.as_deref() != Some(state.status.as_str()) {
            now
        } else if state.completed() != self.last_bytes {
            self.last_sent + BYTES_EVERY
        } else {
            self.last_sent + HEARTBEAT
        };
        wanted.max(self.window_free_at(now))
    }

    fn send(&mut self, state: &Pulled, progress: &dyn Progress, now: Instant) {
        let bytes = state.completed();
        let mut value = bytes as f64;
        if value <= self.last_progress {
            value = (self.last_progress + PROGRESS_STEP).max(self.last_progress.next_up());
        }
        // The total grows as Ollama announces layers; unknown until the first.
        let total = (state.total() > 0).then(|| (state.total() as f64).max(value));
        let message = if state.status.is_empty() {
            "waiting for Ollama".to_string()
        } else {
            state.message()
        };
        progress.report(value, total, Some(message));
        while self.sent.len() >= MAX_PER_SECOND {
            self.sent.pop_front();
        }
        self.sent.push_back(now);
        self.last_sent = now;
        self.last_status = Some(state.status.clone());
        self.last_bytes = bytes;
        self.last_progress = value;
    }

    fn pending(&self, state: &Pulled) -> bool {
        self.last_status.as_deref() != Some(state.status.as_str())
            || state.completed() != self.last_bytes
    }
}

/// Reads the stream to its end (or until cancelled) into `state`, reporting
/// progress. On an error line, `state` holds what came before it.
pub async fn follow(
    call: &Call,
    mut stream: PullStream,
    progress: &dyn Progress,
    state: &mut Pulled,
) -> Result<(), ToolError> {
    let mut throttle = Throttle::new(Instant::now());
    loop {
        let due = throttle.due(state, Instant::now());
        tokio::select! {
            biased;
            _ = call.ct.cancelled() => {
                state.cancelled = true;
                break;
            }
            line = stream.next() => match line? {
                Some(event) => {
                    state.apply(&event);
                    let now = Instant::now();
                    if throttle.due(state, now) <= now {
                        throttle.send(state, progress, now);
                        state.notifications += 1;
                    }
                }
                None => break,
            },
            _ = tokio::time::sleep_until(due.into()) => {
                let now = Instant::now();
                throttle.send(state, progress, now);
                state.notifications += 1;
            }
        }
    }
    // Dropping the stream closes the connection: on cancel, Ollama stops and keeps its parts.
    drop(stream);
    if !state.cancelled && throttle.pending(state) {
        // The last status (`success`) goes out too, within the rate limit.
        let at = throttle.window_free_at(Instant::now());
        tokio::time::sleep_until(at.into()).await;
        throttle.send(state, progress, Instant::now());
        state.notifications += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(d: &str, t: u64, c: Option<u64>) -> PullEvent {
        PullEvent {
            status: format!("pulling {d}"),
            digest: Some(format!("sha256:{d}")),
            total: Some(t),
            completed: c,
        }
    }

    #[test]
    fn resumed_bytes_as_the_real_stream_shows_them() {
        // As Ollama 0.11.4 streams it: a layer it already has comes once,
        // complete; one it downloads comes every 60 ms, the first time already
        // with what those 60 ms brought (29 MB on loopback).
        let mut p = Pulled::resuming(BTreeMap::from([("sha256:cc".to_string(), 19_000_000u64)]));
        p.apply(&PullEvent {
            status: "pulling manifest".into(),
            digest: None,
            total: None,
            completed: None,
        });
        p.apply(&ev("aa", 100, Some(100)));
        for c in [29_000_000, 46_000_000, 98_000_000] {
            p.apply(&ev("bb", 98_000_000, Some(c)));
        }
        // A partial layer a stopped pull of ours had taken to 19 MB.
        for c in [42_000_000, 98_000_000] {
            p.apply(&ev("cc", 98_000_000, Some(c)));
        }
        // A tiny layer downloaded now: many lines, complete from the first.
        for _ in 0..5 {
            p.apply(&ev("dd", 59, Some(59)));
        }
        assert_eq!(p.resumed(), 100 + 19_000_000);
        assert_eq!(p.total(), 100 + 2 * 98_000_000 + 59);
        assert_eq!(p.completed(), p.total());
        let (partial, finished) = p.partial_and_finished();
        assert!(partial.is_empty());
        assert_eq!(finished.len(), 4);
        assert!(p.message().starts_with("pulling dd: "));
    }

    #[test]
    fn an_unfinished_layer_is_remembered_with_its_bytes() {
        let mut p = Pulled::default();
        p.apply(&ev("aa", 100, Some(100)));
        p.apply(&ev("bb", 1000, Some(400)));
        p.apply(&ev("cc", 50, None));
        let (partial, finished) = p.partial_and_finished();
        assert_eq!(partial, BTreeMap::from([("sha256:bb".to_string(), 400u64)]));
        assert_eq!(finished, ["sha256:aa"]);
        assert_eq!(p.resumed(), 100);
    }

    type Report = (f64, Option<f64>, Option<String>);

    #[derive(Default)]
    struct Record(std::sync::Mutex<Vec<Report>>);
    impl Progress for Record {
        fn report(&self, p: f64, t: Option<f64>, m: Option<String>) {
            if let Ok(mut v) = self.0.lock() {
                v.push((p, t, m));
            }
        }
    }

    #[test]
    fn throttle_keeps_ten_a_second_and_strictly_increasing_progress() {
        let start = Instant::now();
        let mut th = Throttle::new(start);
        let rec = Record::default();
        let mut st = Pulled::default();
        let mut sent = 0;
        // 200 status changes in 100 ms: only 10 may go out in that second.
        for i in 0..200u64 {
            st.apply(&PullEvent {
                status: format!("s{i}"),
                digest: None,
                total: None,
                completed: None,
            });
            let now = start + Duration::from_micros(i * 500);
            if th.due(&st, now) <= now {
                th.send(&st, &rec, now);
                sent += 1;
            }
        }
        assert_eq!(sent, MAX_PER_SECOND);
        // A quiet stream gets a heartbeat a second after the last send.
        let later = start + Duration::from_secs(5);
        assert!(th.due(&st, later) <= later);
        th.send(&st, &rec, later);
        assert_eq!(th.due(&st, later), later + HEARTBEAT);
        let v = rec.0.lock().expect("lock");
        assert!(v.windows(2).all(|w| w[1].0 > w[0].0), "strictly increasing");
        // Still increasing once written as JSON and read back by serde_json.
        let back: Vec<f64> = v
            .iter()
            .map(|(p, _, _)| {
                serde_json::from_str(&serde_json::to_string(p).expect("json")).expect("f64")
            })
            .collect();
        assert!(back.windows(2).all(|w| w[1] > w[0]), "{back:?}");
        drop(v);
        let mut big = Throttle::new(start);
        let mut st = Pulled::default();
        st.apply(&PullEvent {
            status: "pulling x".into(),
            digest: Some("sha256:x".into()),
            total: Some(98_362_534),
            completed: Some(98_362_534),
        });
        big.send(&st, &rec, start);
        big.send(&st, &rec, start + HEARTBEAT);
        let all = rec.0.lock().expect("lock");
        let (a, b) = (all[all.len() - 2].0, all[all.len() - 1].0);
        let b_back: f64 =
            serde_json::from_str(&serde_json::to_string(&b).expect("json")).expect("f64");
        assert!(b_back > a, "{a} then {b} ({b_back} after JSON)");
    }
}
