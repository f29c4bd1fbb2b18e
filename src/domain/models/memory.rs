//! The deterministic decision engine behind `select_profile`: how much memory
//! a model needs at a context length and KV cache type, how much the machine
//! can give, and which deployment profile and Ollama settings follow.
//!
//! Pure functions over plain data: no I/O, so the same request always yields
//! the same decision, byte for byte, and every rule is unit-tested.
//!
//! The model (all sizes in bytes, GiB = 2^30):
//! - KV cache = Σ over layers of 2 (K and V) × kv_heads(layer) × head_dim ×
//!   cells(layer) × bytes per element (f16 2, q8_0 1.0625, q4_0 0.5625: ggml's
//!   blocks of 32 with an f16 scale), rounded up to a whole byte. cells is the
//!   context × num_parallel rounded up to 256 (llama.cpp pads the cache to 32
//!   cells, or 256 with flash attention; 256 is the safe side); a sliding-window
//!   layer (gemma3, gpt-oss on Ollama's engine) holds num_parallel × window +
//!   512 (the batch) cells instead whenever the window is below the context,
//!   as Ollama's kvcache.Causal allocates it. kv_heads is per layer where the
//!   GGUF gives an array (0: a layer without a KV cache);
//! - the weights term is the model's whole file: a mixture of experts keeps
//!   every expert resident, whatever share of them a token uses;
//! - need = weights + KV per slot × num_parallel + 1 GiB overhead (compute
//!   graph, CUDA/Metal context, scratch buffers);
//! - usable = NVIDIA VRAM − 457 MiB (driver/runtime reservation); Metal working
//!   set − 512 MiB on Apple Silicon (the working set is 2/3 of unified memory up
//!   to 32 GiB, 3/4 above); min(available memory, cgroup limit) − 2 GiB on CPU
//!   (the rest of the stack: API, Postgres, MongoDB, Qdrant, the OS);
//! - it fits when need ≤ usable − margin, margin = max(0.5 GiB, 5 % of usable).
//!
//! The search: cap the context at the model's maximum; at each context try the
//! profile's KV types in order (f16, q8_0, q4_0; apple-metal starts at q8_0;
//! quantized types only where flash attention is available: NVIDIA compute
//! capability 7.0 and up, Metal, and CPU only from Ollama 0.11.5: 0.11.4 turns
//! flash attention off on CPU at load and allocates f16 whatever
//! OLLAMA_KV_CACHE_TYPE says, observed), then step the
//! context down through 128K, 64K, 32K, 16K, 8K (only values below the capped
//! context); then fall back to the CPU profile; if nothing fits, report the
//! closest candidate with fits = false.
use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::hardware::{GpuVendor, HardwareReport};
use crate::domain::models::catalogue::ModelFacts;

const MIB: u64 = 1 << 20;
/// 2^30 bytes; every "GiB" in this module and in its reasons.
pub const GIB: u64 = 1 << 30;
/// Fixed allowance for the runner beyond weights and KV cache.
pub const OVERHEAD_BYTES: u64 = GIB;
/// VRAM the NVIDIA driver and CUDA context keep for themselves.
pub const NVIDIA_RESERVED_BYTES: u64 = 457 * MIB;
/// Unified memory kept back from Metal's working set.
pub const METAL_RESERVED_BYTES: u64 = 512 * MIB;
/// Host memory kept for the OS and the rest of the stack on the CPU profiles.
pub const CPU_RESERVED_BYTES: u64 = 2 * GIB;
/// The smallest safety margin; the margin is the larger of this and 5 % of usable.
pub const MIN_MARGIN_BYTES: u64 = GIB / 2;
/// Context lengths the search steps down through, largest first.
pub const CONTEXT_STEPS: [u32; 5] = [131_072, 65_536, 32_768, 16_384, 8_192];
/// The standard profile's context; above it an NVIDIA card of the analysis
/// class runs the analysis profile.
pub const STANDARD_CONTEXT: u32 = 32_768;
/// Minimum VRAM for the standard profile (8 GiB class).
pub const STANDARD_MIN_VRAM_BYTES: u64 = 8 * GIB;
/// Minimum VRAM for the analysis profile (16 GiB class).
pub const ANALYSIS_MIN_VRAM_BYTES: u64 = 16 * GIB;
/// How far below a VRAM class a card may report and still belong to it: NVML
/// reports 8188 MiB for an 8 GB RTX 4060 and 16376 MiB for an RTX 4080.
pub const VRAM_CLASS_TOLERANCE_BYTES: u64 = 512 * MIB;
/// CPU-only hosts at or below this many logical cores are small servers.
pub const SMALL_SERVER_MAX_CORES: u32 = 4;
/// CPU-only hosts at or below this much memory are small servers.
pub const SMALL_SERVER_MAX_MEMORY_BYTES: u64 = 16 * GIB;
/// Metal's working set is 2/3 of unified memory up to this size, 3/4 above.
pub const METAL_TWO_THIRDS_UP_TO_BYTES: u64 = 32 * GIB;
/// KV cells are allocated in multiples of this (llama.cpp: 32, 256 with flash
/// attention; Ollama's engine likewise): the larger, so the model never
/// under-counts.
pub const KV_CELL_PADDING: u128 = 256;
/// Ollama's default batch (`num_batch`): a sliding-window layer keeps this
/// many cells beyond its windows.
pub const OLLAMA_BATCH: u128 = 512;
/// The first Ollama whose CPU backend has flash attention (and so a quantized
/// KV cache): `discover.GpuInfoList.FlashAttentionSupported` accepts the `cpu`
/// library from v0.11.5 (read in its source); 0.11.4 does not (observed).
pub const CPU_FLASH_ATTENTION_SINCE: (u64, u64, u64) = (0, 11, 5);

/// Ollama's KV cache element type (`OLLAMA_KV_CACHE_TYPE`). Quantized types
/// need flash attention.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum KvCacheType {
    /// 16-bit floats, 2 bytes per element; Ollama's default.
    #[serde(rename = "f16")]
    F16,
    /// 8-bit blocks, 1.0625 bytes per element (34 bytes per 32); near-lossless.
    #[serde(rename = "q8_0")]
    Q8_0,
    /// 4-bit blocks, 0.5625 bytes per element (18 bytes per 32); some quality loss.
    #[serde(rename = "q4_0")]
    Q4_0,
}

impl KvCacheType {
    /// Every type, largest first.
    pub const ALL: [KvCacheType; 3] = [KvCacheType::F16, KvCacheType::Q8_0, KvCacheType::Q4_0];

    /// Bytes one cached element takes, including the block scales.
    pub fn bytes_per_element(self) -> f64 {
        let (num, den) = self.bytes_ratio();
        num as f64 / den as f64
    }

    /// The exact per-element size as a fraction, so byte counts stay integral.
    fn bytes_ratio(self) -> (u128, u128) {
        match self {
            KvCacheType::F16 => (2, 1),
            KvCacheType::Q8_0 => (17, 16),
            KvCacheType::Q4_0 => (9, 16),
        }
    }

    /// The value Ollama takes in `OLLAMA_KV_CACHE_TYPE`.
    pub fn as_str(self) -> &'static str {
        match self {
            KvCacheType::F16 => "f16",
            KvCacheType::Q8_0 => "q8_0",
            KvCacheType::Q4_0 => "q4_0",
        }
    }

    /// Whether the type is quantized (and therefore needs flash attention).
    pub fn is_quantized(self) -> bool {
        self != KvCacheType::F16
    }
}

/// A deployment profile of the bundled stack.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// NVIDIA GPU of at least 8 GiB, up to 32K context, 4-bit weights; Ollama in
    /// a container with the NVIDIA runtime.
    Standard,
    /// NVIDIA GPU of at least 16 GiB, long context (above 32K, up to 128K).
    Analysis,
    /// CPU-only fallback; Ollama in a container without a GPU.
    Cpu,
    /// Apple Silicon: Ollama runs natively on the host with Metal (Docker on
    /// macOS has no GPU passthrough), q8_0 KV cache.
    AppleMetal,
    /// A small CPU-only server (<= 4 logical cores or <= 16 GiB memory), e.g. a
    /// 4-core, 16 GB Intel i5-6500T box; one model, kept loaded 30 minutes.
    CpuSmallServer,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 5] = [
        Profile::Standard,
        Profile::Analysis,
        Profile::Cpu,
        Profile::AppleMetal,
        Profile::CpuSmallServer,
    ];

    /// The wire name (`STACKPILOT_PROFILE`).
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Standard => "standard",
            Profile::Analysis => "analysis",
            Profile::Cpu => "cpu",
            Profile::AppleMetal => "apple-metal",
            Profile::CpuSmallServer => "cpu-small-server",
        }
    }

    /// The compose profile(s) of the bundled stack (`COMPOSE_PROFILES`): both
    /// CPU profiles run the same services.
    pub fn compose_profiles(self) -> &'static str {
        match self {
            Profile::Standard => "standard",
            Profile::Analysis => "analysis",
            Profile::Cpu | Profile::CpuSmallServer => "cpu",
            Profile::AppleMetal => "apple-metal",
        }
    }

    /// The context used when the caller does not ask for one.
    pub fn default_context_length(self) -> u32 {
        match self {
            Profile::Standard | Profile::AppleMetal => 32_768,
            Profile::Analysis => 131_072,
            Profile::Cpu => 16_384,
            Profile::CpuSmallServer => 8_192,
        }
    }

    /// `OLLAMA_MAX_LOADED_MODELS`: two lets the embedding model stay loaded
    /// beside the chat model (Ollama still evicts when the second does not
    /// fit); the small server keeps one so the rest of the stack keeps its RAM.
    pub fn max_loaded_models(self) -> u32 {
        match self {
            Profile::CpuSmallServer => 1,
            _ => 2,
        }
    }

    /// `OLLAMA_KEEP_ALIVE`: how long an idle model stays loaded. Longer where
    /// memory is plentiful and reloads are costly (large models, GPUs).
    pub fn keep_alive(self) -> &'static str {
        match self {
            Profile::Analysis | Profile::AppleMetal => "1h",
            Profile::Standard | Profile::Cpu | Profile::CpuSmallServer => "30m",
        }
    }

    pub fn backend(self) -> Backend {
        match self {
            Profile::Standard | Profile::Analysis => Backend::Nvidia,
            Profile::AppleMetal => Backend::Metal,
            Profile::Cpu | Profile::CpuSmallServer => Backend::Cpu,
        }
    }
}

/// Where the model's memory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Nvidia,
    Metal,
    Cpu,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Nvidia => "nvidia",
            Backend::Metal => "metal",
            Backend::Cpu => "cpu",
        }
    }

    /// The KV types to try, in order, before filtering.
    fn kv_order(self) -> [KvCacheType; 3] {
        match self {
            // The ADR mandates q8_0 on Apple Silicon; f16 is only reachable
            // when the caller excludes both quantized types.
            Backend::Metal => [KvCacheType::Q8_0, KvCacheType::Q4_0, KvCacheType::F16],
            Backend::Nvidia | Backend::Cpu => KvCacheType::ALL,
        }
    }
}

/// The facts the memory model needs, derivable from a `HardwareReport`; also
/// accepted directly as an override. Sizes are bytes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
pub struct HardwareFacts {
    /// Total VRAM of the largest NVIDIA GPU, in bytes; absent without one.
    pub nvidia_vram_bytes: Option<u64>,
    /// CUDA compute capability of that GPU, e.g. `8.9`; flash attention (and so
    /// a quantized KV cache) needs 7.0 or later. Absent: assumed available.
    pub nvidia_compute_capability: Option<String>,
    /// Apple Silicon unified memory, in bytes; present only on Apple Silicon.
    pub apple_unified_memory_bytes: Option<u64>,
    /// Total host memory, in bytes.
    pub memory_total_bytes: u64,
    /// Host memory available now, in bytes.
    pub memory_available_bytes: u64,
    /// cgroup memory limit of the process, in bytes, when confined.
    pub cgroup_memory_limit_bytes: Option<u64>,
    /// Logical cores usable (a cgroup CPU quota, rounded up, lowers it); 0 =
    /// unknown.
    pub logical_cores: u32,
    /// The Ollama that will run the model (`/api/version`), when known. On CPU
    /// a quantized KV cache takes effect only from 0.11.5; unknown counts as
    /// f16 only there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ollama_version: Option<String>,
}

impl From<&HardwareReport> for HardwareFacts {
    fn from(report: &HardwareReport) -> Self {
        // Largest NVIDIA GPU; on ties the first reported. Ollama can split a
        // model across GPUs, but sizing for one is the conservative choice.
        let mut nvidia: Option<&crate::domain::hardware::GpuInfo> = None;
        for gpu in report.gpus.iter().filter(|g| g.vendor == GpuVendor::Nvidia) {
            if nvidia.is_none_or(|best| gpu.vram_total_bytes > best.vram_total_bytes) {
                nvidia = Some(gpu);
            }
        }
        let cgroup_memory_limit_bytes = report.cgroup.as_ref().and_then(|c| c.memory_limit_bytes);
        let quota_cores = report
            .cgroup
            .as_ref()
            .and_then(|c| c.cpu_quota_cores)
            .filter(|q| q.is_finite() && *q > 0.0)
            .map(|q| q.ceil().min(f64::from(u32::MAX)) as u32);
        let logical_cores = match quota_cores {
            Some(q) if report.cpu.logical_cores > 0 => report.cpu.logical_cores.min(q),
            Some(q) => q,
            None => report.cpu.logical_cores,
        };
        HardwareFacts {
            nvidia_vram_bytes: nvidia.map(|g| g.vram_total_bytes),
            nvidia_compute_capability: nvidia.and_then(|g| g.compute_capability.clone()),
            apple_unified_memory_bytes: report.apple.as_ref().map(|a| a.unified_memory_bytes),
            memory_total_bytes: report.memory.total_bytes,
            memory_available_bytes: report.memory.available_bytes,
            cgroup_memory_limit_bytes,
            logical_cores,
            ollama_version: report
                .runtime
                .ollama
                .version
                .clone()
                .filter(|_| report.runtime.ollama.reachable),
        }
    }
}

/// What `select_profile` decides from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ProfileRequest {
    /// The model (from the catalogue or given explicitly).
    pub model: ModelFacts,
    /// Wanted context length in tokens; capped at the model's maximum, stepped
    /// down when it does not fit. 0 = the profile's default (standard and
    /// apple-metal 32768, analysis 131072, cpu 16384, cpu-small-server 8192).
    #[serde(default)]
    pub context_length: u32,
    /// KV cache types the caller allows; empty = all.
    #[serde(default)]
    pub kv_cache_types: Vec<KvCacheType>,
    /// Requests served in parallel (`OLLAMA_NUM_PARALLEL`); each has its own
    /// KV cache. 0 is treated as 1.
    #[serde(default = "one")]
    pub num_parallel: u32,
    /// The machine.
    pub hardware: HardwareFacts,
}

fn one() -> u32 {
    1
}

/// The memory arithmetic behind one candidate setting. Sizes are bytes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct MemoryTable {
    /// Model weights, bytes.
    pub weights_bytes: u64,
    /// KV cache for all parallel slots, bytes: per slot × num_parallel, except
    /// that sliding-window layers hold num_parallel × window + 512 cells.
    pub kv_cache_bytes: u64,
    /// KV cache for one slot, bytes: Σ over layers of 2 × kv_heads × head_dim
    /// × cells × bytes per element, rounded up (cells: the context, padded to
    /// 256; window + 512 on sliding-window layers).
    pub kv_cache_bytes_per_slot: u64,
    /// Parallel slots counted.
    pub num_parallel: u32,
    /// Fixed runner overhead, bytes (1 GiB).
    pub overhead_bytes: u64,
    /// weights + KV (all slots) + overhead, bytes.
    pub need_bytes: u64,
    /// Memory the backend can give the model, bytes (see `basis`).
    pub usable_bytes: u64,
    /// Safety margin kept free, bytes: max(0.5 GiB, 5 % of usable).
    pub margin_bytes: u64,
    /// usable − margin − need, bytes; negative when it does not fit.
    pub headroom_bytes: i64,
    /// How `usable_bytes` was computed, e.g. `nvidia vram 8589934592 - 457 MiB`.
    pub basis: String,
}

impl MemoryTable {
    /// need ≤ usable − margin.
    pub fn fits(&self) -> bool {
        self.headroom_bytes >= 0
    }
}

/// The decision `select_profile` reports and may write to `.env`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ProfileDecision {
    /// The chosen profile (the closest candidate's when nothing fits).
    pub profile: Profile,
    /// Context length in tokens (`OLLAMA_CONTEXT_LENGTH`).
    pub context_length: u32,
    /// KV cache type (`OLLAMA_KV_CACHE_TYPE`).
    pub kv_cache_type: KvCacheType,
    /// Parallel requests (`OLLAMA_NUM_PARALLEL`).
    pub num_parallel: u32,
    /// Whether the model fits with the margin. When false, every field
    /// describes the closest candidate and `env` must not be applied.
    pub fits: bool,
    /// The memory arithmetic of the chosen (or closest) candidate.
    pub memory: MemoryTable,
    /// Every rule that fired, in order, with its numbers.
    pub reasons: Vec<String>,
    /// Environment for `.env`: OLLAMA_FLASH_ATTENTION, OLLAMA_KV_CACHE_TYPE,
    /// OLLAMA_CONTEXT_LENGTH, OLLAMA_NUM_PARALLEL, OLLAMA_MAX_LOADED_MODELS,
    /// OLLAMA_KEEP_ALIVE, STACKPILOT_PROFILE, COMPOSE_PROFILES.
    pub env: BTreeMap<String, String>,
}

/// KV cache bytes for one slot (see `kv_cache_bytes_total`).
pub fn kv_cache_bytes(model: &ModelFacts, context: u32, kv: KvCacheType) -> u64 {
    kv_cache_bytes_total(model, context, kv, 1)
}

fn pad_cells(cells: u128) -> u128 {
    cells.div_ceil(KV_CELL_PADDING) * KV_CELL_PADDING
}

/// Whether layer `layer` (0-based) slides: every `pattern`-th layer (1-based)
/// is global, the others slide; pattern 0 = every layer slides.
pub fn is_sliding_layer(model: &ModelFacts, layer: u32) -> bool {
    model.sliding_window > 0
        && (model.sliding_window_pattern == 0
            || (u64::from(layer) + 1) % u64::from(model.sliding_window_pattern) != 0)
}

/// Cells one layer's cache holds for `num_parallel` slots of `context` tokens:
/// the whole context (padded), or for a sliding-window layer whose window is
/// below the context, num_parallel × window + the batch (padded), as Ollama's
/// kvcache.Causal allocates them.
pub fn layer_cells(model: &ModelFacts, layer: u32, context: u32, num_parallel: u32) -> u128 {
    let parallel = u128::from(num_parallel.max(1));
    if is_sliding_layer(model, layer) && model.sliding_window <= context {
        pad_cells(parallel * u128::from(model.sliding_window) + OLLAMA_BATCH)
    } else {
        pad_cells(u128::from(context) * parallel)
    }
}

/// KV heads of layer `layer`: the per-layer array where there is one, else
/// `kv_heads`.
pub fn layer_kv_heads(model: &ModelFacts, layer: u32) -> u32 {
    model
        .kv_heads_per_layer
        .get(layer as usize)
        .copied()
        .unwrap_or(model.kv_heads)
}

/// KV cache bytes for `num_parallel` slots of `context` tokens: Σ over layers
/// of 2 (K and V) × kv_heads × head_dim × cells × bytes per element, rounded
/// up to a whole byte (saturating at `u64::MAX`). A context above the model's
/// trained maximum counts as that maximum: Ollama caps each slot there
/// (llm/server.go: "requested context size too large for model"), while
/// `/api/ps` still reports the context asked for (observed on 0.11.4).
pub fn kv_cache_bytes_total(
    model: &ModelFacts,
    context: u32,
    kv: KvCacheType,
    num_parallel: u32,
) -> u64 {
    let context = if model.max_context > 0 {
        context.min(model.max_context)
    } else {
        context
    };
    let per_cell_head = 2u128 * u128::from(model.head_dim);
    let elements: u128 = if model.kv_heads_per_layer.is_empty() && model.sliding_window == 0 {
        per_cell_head
            * u128::from(model.kv_heads)
            * u128::from(model.layers)
            * layer_cells(model, 0, context, num_parallel)
    } else {
        (0..model.layers)
            .map(|l| {
                per_cell_head
                    * u128::from(layer_kv_heads(model, l))
                    * layer_cells(model, l, context, num_parallel)
            })
            .sum()
    };
    let (num, den) = kv.bytes_ratio();
    let bytes = (elements * num).div_ceil(den);
    u64::try_from(bytes).unwrap_or(u64::MAX)
}

/// The memory Metal lets one process wire: 2/3 of unified memory up to 32 GiB,
/// 3/4 above (rounded down).
pub fn metal_working_set_bytes(unified_memory_bytes: u64) -> u64 {
    let m = u128::from(unified_memory_bytes);
    let ws = if unified_memory_bytes <= METAL_TWO_THIRDS_UP_TO_BYTES {
        m * 2 / 3
    } else {
        m * 3 / 4
    };
    u64::try_from(ws).unwrap_or(u64::MAX)
}

/// What the backend of `profile` can give the model, and how that was computed.
fn usable_bytes(profile: Profile, hw: &HardwareFacts) -> (u64, String) {
    match profile.backend() {
        Backend::Nvidia => match hw.nvidia_vram_bytes {
            Some(vram) => (
                vram.saturating_sub(NVIDIA_RESERVED_BYTES),
                format!("nvidia vram {vram} - 457 MiB"),
            ),
            None => (0, "no nvidia gpu".to_string()),
        },
        Backend::Metal => {
            match hw.apple_unified_memory_bytes {
                Some(unified) => {
                    let ws = metal_working_set_bytes(unified);
                    let share = if unified <= METAL_TWO_THIRDS_UP_TO_BYTES {
                        "2/3"
                    } else {
                        "3/4"
                    };
                    (
                    ws.saturating_sub(METAL_RESERVED_BYTES),
                    format!("metal working set {ws} ({share} of unified memory {unified}) - 512 MiB"),
                )
                }
                None => (0, "no apple silicon".to_string()),
            }
        }
        Backend::Cpu => {
            let avail = hw.memory_available_bytes;
            match hw.cgroup_memory_limit_bytes {
                Some(limit) => (
                    avail.min(limit).saturating_sub(CPU_RESERVED_BYTES),
                    format!("min(available memory {avail}, cgroup limit {limit}) - 2 GiB"),
                ),
                None => (
                    avail.saturating_sub(CPU_RESERVED_BYTES),
                    format!("available memory {avail} - 2 GiB"),
                ),
            }
        }
    }
}

/// The memory effect of one setting on one profile's backend. `num_parallel`
/// 0 counts as 1.
pub fn memory_table(
    model: &ModelFacts,
    context: u32,
    kv: KvCacheType,
    num_parallel: u32,
    profile: Profile,
    hw: &HardwareFacts,
) -> MemoryTable {
    let num_parallel = num_parallel.max(1);
    let per_slot = kv_cache_bytes(model, context, kv);
    let kv_all = kv_cache_bytes_total(model, context, kv, num_parallel);
    let need = model
        .weights_bytes
        .saturating_add(kv_all)
        .saturating_add(OVERHEAD_BYTES);
    let (usable, basis) = usable_bytes(profile, hw);
    let margin = MIN_MARGIN_BYTES.max(usable.div_ceil(20));
    let headroom = i128::from(usable) - i128::from(margin) - i128::from(need);
    let headroom =
        i64::try_from(headroom).unwrap_or(if headroom < 0 { i64::MIN } else { i64::MAX });
    MemoryTable {
        weights_bytes: model.weights_bytes,
        kv_cache_bytes: kv_all,
        kv_cache_bytes_per_slot: per_slot,
        num_parallel,
        overhead_bytes: OVERHEAD_BYTES,
        need_bytes: need,
        usable_bytes: usable,
        margin_bytes: margin,
        headroom_bytes: headroom,
        basis,
    }
}

/// Bytes as GiB with two decimals, rounded half up, in integers only.
fn gib(bytes: u64) -> String {
    let hundredths = (u128::from(bytes) * 100 + u128::from(GIB / 2)) / u128::from(GIB);
    format!("{}.{:02} GiB", hundredths / 100, hundredths % 100)
}

fn gib_signed(bytes: i64) -> String {
    if bytes < 0 {
        format!("-{}", gib(bytes.unsigned_abs()))
    } else {
        gib(bytes.unsigned_abs())
    }
}

/// The profile the hardware alone points to, before any memory check: Apple
/// Silicon → apple-metal; NVIDIA of the 16 GiB class → analysis, of the 8 GiB
/// class → standard; otherwise cpu-small-server or cpu.
pub fn primary_profile(hw: &HardwareFacts) -> Profile {
    if hw.apple_unified_memory_bytes.is_some() {
        return Profile::AppleMetal;
    }
    match nvidia_class(hw) {
        Some(NvidiaClass::Analysis) => Profile::Analysis,
        Some(NvidiaClass::Standard) => Profile::Standard,
        None => cpu_profile(hw),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NvidiaClass {
    Standard,
    Analysis,
}

fn nvidia_class(hw: &HardwareFacts) -> Option<NvidiaClass> {
    let vram = hw.nvidia_vram_bytes?;
    if vram >= ANALYSIS_MIN_VRAM_BYTES - VRAM_CLASS_TOLERANCE_BYTES {
        Some(NvidiaClass::Analysis)
    } else if vram >= STANDARD_MIN_VRAM_BYTES - VRAM_CLASS_TOLERANCE_BYTES {
        Some(NvidiaClass::Standard)
    } else {
        None
    }
}

/// Total memory as the stack sees it: the cgroup limit caps it.
fn effective_total_memory(hw: &HardwareFacts) -> u64 {
    match hw.cgroup_memory_limit_bytes {
        Some(limit) => hw.memory_total_bytes.min(limit),
        None => hw.memory_total_bytes,
    }
}

fn is_small_server(hw: &HardwareFacts) -> bool {
    let cores = hw.logical_cores;
    let total = effective_total_memory(hw);
    (cores > 0 && cores <= SMALL_SERVER_MAX_CORES)
        || (total > 0 && total <= SMALL_SERVER_MAX_MEMORY_BYTES)
}

fn cpu_profile(hw: &HardwareFacts) -> Profile {
    if is_small_server(hw) {
        Profile::CpuSmallServer
    } else {
        Profile::Cpu
    }
}

fn cpu_profile_reason(hw: &HardwareFacts) -> String {
    let cores = if hw.logical_cores == 0 {
        "unknown".to_string()
    } else {
        hw.logical_cores.to_string()
    };
    let total = effective_total_memory(hw);
    let profile = cpu_profile(hw);
    format!(
        "CPU fallback profile: {} ({} logical cores, {} total memory{}; cpu-small-server when <= {} cores or <= {})",
        profile.as_str(),
        cores,
        gib(total),
        if hw.cgroup_memory_limit_bytes.is_some() {
            " after the cgroup limit"
        } else {
            ""
        },
        SMALL_SERVER_MAX_CORES,
        gib(SMALL_SERVER_MAX_MEMORY_BYTES),
    )
}

/// Parse `major.minor` (or `major`) into the major number.
fn compute_major(cc: &str) -> Option<u32> {
    cc.trim().split('.').next()?.trim().parse().ok()
}

/// Whether a quantized KV cache takes effect on a backend: it needs flash
/// attention, and Ollama silently falls back to f16 without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlashAttention {
    Available,
    /// Not known, assumed available (the reason says why).
    Assumed(String),
    /// Not known, not counted on: only f16 is sized (the reason says why).
    Unknown(String),
    /// Not available (the reason says why).
    Unavailable(String),
}

impl FlashAttention {
    /// Whether the search may count on a quantized KV cache.
    pub fn usable(&self) -> bool {
        matches!(self, FlashAttention::Available | FlashAttention::Assumed(_))
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            FlashAttention::Available => None,
            FlashAttention::Assumed(r)
            | FlashAttention::Unknown(r)
            | FlashAttention::Unavailable(r) => Some(r),
        }
    }
}

/// `major.minor.patch` of an Ollama version (`0.11.4`, `v0.12.0-rc1`); None
/// for what does not read as one (`0.0.0` is an unversioned build: unknown).
pub fn parse_ollama_version(v: &str) -> Option<(u64, u64, u64)> {
    let v = v.trim().trim_start_matches('v');
    let core = v.split(['-', '+', ' ']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    let parsed = (major, minor, patch);
    (parsed != (0, 0, 0)).then_some(parsed)
}

/// Whether flash attention (needed for a quantized KV cache) is available on
/// the backend, with the reason when it is worth saying.
pub fn flash_attention(backend: Backend, hw: &HardwareFacts) -> FlashAttention {
    match backend {
        Backend::Metal => FlashAttention::Available,
        Backend::Cpu => {
            let since = CPU_FLASH_ATTENTION_SINCE;
            let since_text = format!("{}.{}.{}", since.0, since.1, since.2);
            match hw.ollama_version.as_deref() {
                None => FlashAttention::Unknown(format!(
                    "Ollama's version is unknown: on CPU a quantized KV cache takes effect only from Ollama {since_text} (0.11.4 turns flash attention off at load and allocates f16 whatever OLLAMA_KV_CACHE_TYPE says), so only f16 is counted there"
                )),
                Some(v) => match parse_ollama_version(v) {
                    Some(parsed) if parsed >= since => FlashAttention::Available,
                    Some(_) => FlashAttention::Unavailable(format!(
                        "Ollama {v} on CPU has no flash attention: it allocates an f16 KV cache whatever OLLAMA_KV_CACHE_TYPE says (quantized types from Ollama {since_text}), so only f16 there"
                    )),
                    None => FlashAttention::Unknown(format!(
                        "Ollama version {v:?} unreadable: on CPU a quantized KV cache takes effect only from Ollama {since_text}, so only f16 is counted there"
                    )),
                },
            }
        }
        Backend::Nvidia => match hw.nvidia_compute_capability.as_deref() {
            None => FlashAttention::Assumed(
                "NVIDIA compute capability unknown: assuming flash attention (needs >= 7.0)"
                    .to_string(),
            ),
            Some(cc) => match compute_major(cc) {
                Some(major) if major >= 7 => FlashAttention::Available,
                Some(_) => FlashAttention::Unavailable(format!(
                    "NVIDIA compute capability {cc} < 7.0: no flash attention, so only the f16 KV cache"
                )),
                None => FlashAttention::Assumed(format!(
                    "NVIDIA compute capability {cc:?} unreadable: assuming flash attention (needs >= 7.0)"
                )),
            },
        },
    }
}

/// One backend the search tries, with the label rule for its profile.
struct Stage {
    backend: Backend,
    /// NVIDIA only: whether contexts above 32K are labelled analysis.
    analysis_capable: bool,
    /// The profile for Metal and CPU stages.
    fixed: Profile,
}

impl Stage {
    fn profile_for(&self, context: u32) -> Profile {
        match self.backend {
            Backend::Nvidia if self.analysis_capable && context > STANDARD_CONTEXT => {
                Profile::Analysis
            }
            Backend::Nvidia => Profile::Standard,
            _ => self.fixed,
        }
    }
}

struct Candidate {
    profile: Profile,
    context: u32,
    kv: KvCacheType,
    table: MemoryTable,
    flash_attention: bool,
}

fn describe(c: &Candidate) -> String {
    let t = &c.table;
    format!(
        "{} at context {} with {} KV cache: need {} = weights {} + KV {} ({} per slot x {}) + overhead {}; usable {} ({}), margin {}, headroom {}",
        c.profile.as_str(),
        c.context,
        c.kv.as_str(),
        gib(t.need_bytes),
        gib(t.weights_bytes),
        gib(t.kv_cache_bytes),
        gib(t.kv_cache_bytes_per_slot),
        t.num_parallel,
        gib(t.overhead_bytes),
        gib(t.usable_bytes),
        t.basis,
        gib(t.margin_bytes),
        gib_signed(t.headroom_bytes),
    )
}

fn env_for(c: &Candidate, num_parallel: u32) -> BTreeMap<String, String> {
    let fa = c.kv.is_quantized() || (c.flash_attention && c.profile.backend() != Backend::Cpu);
    let mut env = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    put(
        "OLLAMA_FLASH_ATTENTION",
        if fa { "1" } else { "0" }.to_string(),
    );
    put("OLLAMA_KV_CACHE_TYPE", c.kv.as_str().to_string());
    put("OLLAMA_CONTEXT_LENGTH", c.context.to_string());
    put("OLLAMA_NUM_PARALLEL", num_parallel.to_string());
    put(
        "OLLAMA_MAX_LOADED_MODELS",
        c.profile.max_loaded_models().to_string(),
    );
    put("OLLAMA_KEEP_ALIVE", c.profile.keep_alive().to_string());
    put("STACKPILOT_PROFILE", c.profile.as_str().to_string());
    put("COMPOSE_PROFILES", c.profile.compose_profiles().to_string());
    env
}

/// What the model's structure does to the arithmetic, one reason each: a
/// mixture of experts (every expert resident), sliding-window layers (their
/// cache bounded by the window), per-layer KV head counts.
fn structure_reasons(model: &ModelFacts) -> Vec<String> {
    let mut out = Vec::new();
    if model.expert_count > 0 {
        out.push(format!(
            "{} is a mixture of experts ({} experts, {} used per token): every expert stays resident, so the weights term is the whole model, {}",
            model.name,
            model.expert_count,
            model.expert_used_count,
            gib(model.weights_bytes)
        ));
    }
    if model.sliding_window > 0 {
        let sliding = (0..model.layers)
            .filter(|l| is_sliding_layer(model, *l))
            .count();
        out.push(format!(
            "{}: {sliding} of {} layers use a {}-token sliding window: their KV cache holds num_parallel x {} + {OLLAMA_BATCH} tokens when the context is longer",
            model.name, model.layers, model.sliding_window, model.sliding_window
        ));
    }
    if !model.kv_heads_per_layer.is_empty() {
        let total: u64 = (0..model.layers)
            .map(|l| u64::from(layer_kv_heads(model, l)))
            .sum();
        out.push(format!(
            "{}: KV heads per layer from the GGUF array ({total} over {} layers)",
            model.name, model.layers
        ));
    }
    out
}

/// Choose the profile, context, and KV cache type for `req`. Deterministic:
/// the same request gives the same decision, reasons included.
pub fn choose(req: &ProfileRequest) -> ProfileDecision {
    let hw = &req.hardware;
    let model = &req.model;
    let mut reasons: Vec<String> = Vec::new();

    let num_parallel = if req.num_parallel == 0 {
        reasons.push("num_parallel 0 treated as 1".to_string());
        1
    } else {
        req.num_parallel
    };

    let mut allowed: Vec<KvCacheType> = if req.kv_cache_types.is_empty() {
        KvCacheType::ALL.to_vec()
    } else {
        req.kv_cache_types.clone()
    };
    allowed.sort_unstable();
    allowed.dedup();
    if allowed.len() < KvCacheType::ALL.len() {
        let list: Vec<&str> = allowed.iter().map(|k| k.as_str()).collect();
        reasons.push(format!(
            "KV cache types allowed by the caller: {}",
            list.join(", ")
        ));
    }

    // The stages, GPU first, CPU last.
    let cpu = cpu_profile(hw);
    let mut stages: Vec<Stage> = Vec::new();
    if let Some(unified) = hw.apple_unified_memory_bytes {
        reasons.push(format!(
            "Apple Silicon with {} unified memory: apple-metal (Ollama native on the host with Metal; q8_0 KV cache first, as mandated for the M4 Max)",
            gib(unified)
        ));
        stages.push(Stage {
            backend: Backend::Metal,
            analysis_capable: false,
            fixed: Profile::AppleMetal,
        });
    } else if let Some(vram) = hw.nvidia_vram_bytes {
        match nvidia_class(hw) {
            Some(class) => {
                let analysis_capable = class == NvidiaClass::Analysis;
                reasons.push(if analysis_capable {
                    format!(
                        "NVIDIA GPU with {} VRAM: 16 GiB class, standard up to context {STANDARD_CONTEXT}, analysis above",
                        gib(vram)
                    )
                } else {
                    format!(
                        "NVIDIA GPU with {} VRAM: 8 GiB class, standard profile (analysis needs 16 GiB)",
                        gib(vram)
                    )
                });
                stages.push(Stage {
                    backend: Backend::Nvidia,
                    analysis_capable,
                    fixed: Profile::Standard,
                });
            }
            None => reasons.push(format!(
                "NVIDIA GPU with {} VRAM is below the standard profile's 8 GiB: not used",
                gib(vram)
            )),
        }
    } else {
        reasons.push("no NVIDIA GPU or Apple Silicon: CPU only".to_string());
    }
    reasons.push(cpu_profile_reason(hw));
    stages.push(Stage {
        backend: Backend::Cpu,
        analysis_capable: false,
        fixed: cpu,
    });

    // The context: wanted (or the first stage's default), capped at the model's maximum.
    let wanted = if req.context_length == 0 {
        let first = primary_profile(hw);
        let d = first.default_context_length();
        reasons.push(format!(
            "no context length asked: {}'s default {d}",
            first.as_str()
        ));
        d
    } else {
        req.context_length
    };
    let capped = if model.max_context > 0 && wanted > model.max_context {
        reasons.push(format!(
            "context {wanted} capped at {}'s maximum {}",
            model.name, model.max_context
        ));
        model.max_context
    } else {
        if model.max_context == 0 {
            reasons.push(format!(
                "{} has no known maximum context: {wanted} not capped",
                model.name
            ));
        }
        wanted
    };
    reasons.extend(structure_reasons(model));
    let mut contexts = vec![capped];
    contexts.extend(CONTEXT_STEPS.iter().copied().filter(|&c| c < capped));

    let mut closest: Option<Candidate> = None;
    for stage in &stages {
        let fa_state = flash_attention(stage.backend, hw);
        if let Some(r) = fa_state.reason() {
            reasons.push(r.to_string());
        }
        let fa = fa_state.usable();
        let order: Vec<KvCacheType> = stage
            .backend
            .kv_order()
            .into_iter()
            .filter(|k| allowed.contains(k) && (fa || !k.is_quantized()))
            .collect();
        if order.is_empty() {
            reasons.push(format!(
                "{}: no allowed KV cache type is usable there, skipped",
                stage.backend.name()
            ));
            continue;
        }
        for &context in &contexts {
            for &kv in &order {
                let profile = stage.profile_for(context);
                let table = memory_table(model, context, kv, num_parallel, profile, hw);
                let cand = Candidate {
                    profile,
                    context,
                    kv,
                    table,
                    flash_attention: fa,
                };
                if cand.table.fits() {
                    reasons.push(format!("fits: {}", describe(&cand)));
                    let env = env_for(&cand, num_parallel);
                    return ProfileDecision {
                        profile: cand.profile,
                        context_length: cand.context,
                        kv_cache_type: cand.kv,
                        num_parallel,
                        fits: true,
                        memory: cand.table,
                        reasons,
                        env,
                    };
                }
                reasons.push(format!("does not fit: {}", describe(&cand)));
                let better = closest
                    .as_ref()
                    .is_none_or(|c| cand.table.headroom_bytes > c.table.headroom_bytes);
                if better {
                    closest = Some(cand);
                }
            }
        }
    }

    // Nothing fits: report the closest candidate. `closest` is always set
    // because the CPU stage allows f16 whenever the caller allows anything;
    // the fallback covers a caller that allowed nothing usable.
    let cand = closest.unwrap_or_else(|| {
        let kv = allowed.first().copied().unwrap_or(KvCacheType::F16);
        Candidate {
            profile: cpu,
            context: capped,
            kv,
            table: memory_table(model, capped, kv, num_parallel, cpu, hw),
            flash_attention: true,
        }
    });
    let short = cand.table.headroom_bytes.unsigned_abs();
    let mut next = "free memory, pick a smaller model or a shorter context".to_string();
    if num_parallel > 1 {
        next.push_str(", lower num_parallel");
    }
    if !allowed.contains(&KvCacheType::Q4_0) {
        next.push_str(", allow the q4_0 KV cache");
    }
    reasons.push(format!(
        "nothing fits: closest is {}; short by {}: {next}",
        describe(&cand),
        gib(short)
    ));
    let env = env_for(&cand, num_parallel);
    ProfileDecision {
        profile: cand.profile,
        context_length: cand.context,
        kv_cache_type: cand.kv,
        num_parallel,
        fits: false,
        memory: cand.table,
        reasons,
        env,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::hardware::{
        AppleInfo, CgroupInfo, ComposeProbe, CpuInfo, DiskInfo, DockerProbe, GpuInfo, MemoryInfo,
        OllamaProbe, OsInfo, RuntimeInfo,
    };
    use crate::domain::models::catalogue::lookup;

    fn model(name: &str) -> ModelFacts {
        lookup(name).expect("model in catalogue")
    }

    fn nvidia(vram: u64, cc: &str) -> HardwareFacts {
        HardwareFacts {
            nvidia_vram_bytes: Some(vram),
            nvidia_compute_capability: Some(cc.to_string()),
            memory_total_bytes: 32 * GIB,
            memory_available_bytes: 24 * GIB,
            logical_cores: 16,
            ..HardwareFacts::default()
        }
    }

    /// A CPU host whose Ollama (0.11.5, the first with flash attention on
    /// CPU) can quantize the KV cache.
    fn cpu_host(total: u64, available: u64, cores: u32) -> HardwareFacts {
        HardwareFacts {
            memory_total_bytes: total,
            memory_available_bytes: available,
            logical_cores: cores,
            ollama_version: Some("0.11.5".into()),
            ..HardwareFacts::default()
        }
    }

    fn req(m: &str, context: u32, hw: HardwareFacts) -> ProfileRequest {
        req_facts(model(m), context, hw)
    }

    fn req_facts(m: ModelFacts, context: u32, hw: HardwareFacts) -> ProfileRequest {
        ProfileRequest {
            model: m,
            context_length: context,
            kv_cache_types: Vec::new(),
            num_parallel: 1,
            hardware: hw,
        }
    }

    /// weights + KV × 1, in GiB to two decimals (the worked numbers).
    fn weights_plus_kv(m: &ModelFacts, ctx: u32, kv: KvCacheType) -> String {
        gib(m.weights_bytes + kv_cache_bytes(m, ctx, kv))
    }

    #[test]
    fn wire_names() {
        let kv: Vec<String> = KvCacheType::ALL
            .iter()
            .map(|k| serde_json::to_string(k).expect("serializes"))
            .collect();
        assert_eq!(kv, ["\"f16\"", "\"q8_0\"", "\"q4_0\""]);
        for k in KvCacheType::ALL {
            assert_eq!(
                serde_json::to_string(&k).expect("ser"),
                format!("\"{}\"", k.as_str())
            );
            let back: KvCacheType =
                serde_json::from_str(&format!("\"{}\"", k.as_str())).expect("deserializes");
            assert_eq!(back, k);
        }
        let p: Vec<String> = Profile::ALL
            .iter()
            .map(|p| serde_json::to_string(p).expect("serializes"))
            .collect();
        assert_eq!(
            p,
            [
                "\"standard\"",
                "\"analysis\"",
                "\"cpu\"",
                "\"apple-metal\"",
                "\"cpu-small-server\""
            ]
        );
        for p in Profile::ALL {
            assert_eq!(
                serde_json::to_string(&p).expect("ser"),
                format!("\"{}\"", p.as_str())
            );
        }
        assert!(serde_json::from_str::<KvCacheType>("\"q8\"").is_err());
    }

    #[test]
    fn bytes_per_element() {
        assert_eq!(KvCacheType::F16.bytes_per_element(), 2.0);
        assert_eq!(KvCacheType::Q8_0.bytes_per_element(), 1.0625);
        assert_eq!(KvCacheType::Q4_0.bytes_per_element(), 0.5625);
    }

    #[test]
    fn compose_profiles_mapping() {
        assert_eq!(Profile::Standard.compose_profiles(), "standard");
        assert_eq!(Profile::Analysis.compose_profiles(), "analysis");
        assert_eq!(Profile::Cpu.compose_profiles(), "cpu");
        assert_eq!(Profile::CpuSmallServer.compose_profiles(), "cpu");
        assert_eq!(Profile::AppleMetal.compose_profiles(), "apple-metal");
    }

    #[test]
    fn llama31_8b_worked_numbers() {
        let m = model("llama3.1:8b");
        assert_eq!(gib(m.weights_bytes), "4.58 GiB");
        let cases = [
            (32_768, KvCacheType::F16, "8.58 GiB"),
            (32_768, KvCacheType::Q8_0, "6.71 GiB"),
            (32_768, KvCacheType::Q4_0, "5.71 GiB"),
            (131_072, KvCacheType::F16, "20.58 GiB"),
            (131_072, KvCacheType::Q8_0, "13.08 GiB"),
            (131_072, KvCacheType::Q4_0, "9.08 GiB"),
        ];
        for (ctx, kv, want) in cases {
            assert_eq!(weights_plus_kv(&m, ctx, kv), want, "{ctx} {}", kv.as_str());
        }
    }

    #[test]
    fn kv_bytes_are_exact_integers() {
        let m = model("llama3.1:8b");
        assert_eq!(kv_cache_bytes(&m, 32_768, KvCacheType::F16), 4 * GIB);
        assert_eq!(
            kv_cache_bytes(&m, 32_768, KvCacheType::Q8_0),
            2 * GIB + GIB / 8
        );
        assert_eq!(kv_cache_bytes(&m, 32_768, KvCacheType::Q4_0), GIB + GIB / 8);
        assert_eq!(kv_cache_bytes(&m, 131_072, KvCacheType::F16), 16 * GIB);
        // Cells are padded to 256, as llama.cpp pads its cache (32, or 256
        // with flash attention): 1 token costs 256 cells, 2 × 256 elements.
        let tiny = ModelFacts {
            name: "tiny".into(),
            layers: 1,
            kv_heads: 1,
            head_dim: 1,
            // No known maximum: nothing capped.
            max_context: 0,
            ..ModelFacts::default()
        };
        assert_eq!(kv_cache_bytes(&tiny, 1, KvCacheType::F16), 1024);
        assert_eq!(kv_cache_bytes(&tiny, 256, KvCacheType::F16), 1024);
        assert_eq!(kv_cache_bytes(&tiny, 257, KvCacheType::F16), 2048);
        assert_eq!(kv_cache_bytes(&tiny, 1, KvCacheType::Q4_0), 288);
        assert_eq!(kv_cache_bytes(&tiny, 1, KvCacheType::Q8_0), 544);
        assert_eq!(kv_cache_bytes(&tiny, 0, KvCacheType::F16), 0);
    }

    #[test]
    fn smollm2_kv_matches_what_llama_cpp_allocated() {
        // SmolLM2-135M (30 layers, 3 KV heads of 64): the real Ollama 0.11.4
        // logged `KV self size = 45.00 MiB` at 2048 and 180.00 MiB at 8192
        // (docs/ollama-0.11.4-observed.md); 4096 x 2 slots is 8192 cells too.
        let m = ModelFacts {
            name: "smollm2:135m".into(),
            weights_bytes: 98_362_432,
            layers: 30,
            kv_heads: 3,
            head_dim: 64,
            max_context: 8192,
            ..ModelFacts::default()
        };
        assert_eq!(kv_cache_bytes(&m, 2048, KvCacheType::F16), 45 * MIB);
        assert_eq!(kv_cache_bytes(&m, 8192, KvCacheType::F16), 180 * MIB);
        assert_eq!(
            kv_cache_bytes_total(&m, 4096, KvCacheType::F16, 2),
            180 * MIB
        );
        // 32768 asked, 8192 trained: Ollama allocates 8192 (180.00 MiB, observed).
        assert_eq!(kv_cache_bytes(&m, 32_768, KvCacheType::F16), 180 * MIB);
        assert_eq!(
            kv_cache_bytes_total(&m, 32_768, KvCacheType::F16, 2),
            360 * MIB
        );
        // ggml's q8_0 is 34 bytes per 32 elements, q4_0 18 per 32.
        assert_eq!(
            kv_cache_bytes(&m, 8192, KvCacheType::Q8_0),
            180 * MIB * 17 / 32
        );
        assert_eq!(
            kv_cache_bytes(&m, 8192, KvCacheType::Q4_0),
            180 * MIB * 9 / 32
        );
    }

    #[test]
    fn gemma3_sliding_layers_are_bounded_by_the_window() {
        let m = model("gemma3:12b");
        // 48 layers, every 6th global: 8 global, 40 sliding over 1024 tokens.
        // A cell of one layer: 2 (K, V) x 8 heads x 256 x 2 bytes = 8 KiB.
        assert_eq!((0..48).filter(|l| is_sliding_layer(&m, *l)).count(), 40);
        assert!(!is_sliding_layer(&m, 5) && is_sliding_layer(&m, 6));
        // 32K: 8 x 32768 x 8 KiB = 2 GiB global + 40 x (1024 + 512) x 8 KiB = 480 MiB.
        assert_eq!(
            kv_cache_bytes(&m, 32_768, KvCacheType::F16),
            2 * GIB + 480 * MIB
        );
        // Without the window it would be 48 x 32768 x 8 KiB = 12 GiB.
        let full = ModelFacts {
            sliding_window: 0,
            ..m.clone()
        };
        assert_eq!(kv_cache_bytes(&full, 32_768, KvCacheType::F16), 12 * GIB);
        // 128K: 8 GiB global, the sliding part does not grow.
        assert_eq!(
            kv_cache_bytes(&m, 131_072, KvCacheType::F16),
            8 * GIB + 480 * MIB
        );
        // Two slots: the global part doubles, the sliding part is 2 x 1024 + 512.
        assert_eq!(
            kv_cache_bytes_total(&m, 32_768, KvCacheType::F16, 2),
            4 * GIB + 800 * MIB
        );
        // Below the window every layer holds the context.
        assert_eq!(
            kv_cache_bytes(&m, 512, KvCacheType::F16),
            48 * 512 * 8 * 1024
        );
        // q8_0 scales the same cells.
        assert_eq!(
            kv_cache_bytes(&m, 32_768, KvCacheType::Q8_0),
            (2 * GIB + 480 * MIB) * 17 / 32
        );
        let d = choose(&req("gemma3:12b", 131_072, nvidia(16 * GIB, "8.9")));
        assert!(d
            .reasons
            .iter()
            .any(|r| r.contains("40 of 48 layers use a 1024-token sliding window")));
        // 8.1 GB of weights + 8.47 GiB KV f16 + 1 GiB > 16 GiB: q8_0 fits at 128K.
        assert!(d.fits);
        assert_eq!(
            (d.context_length, d.kv_cache_type),
            (131_072, KvCacheType::Q8_0)
        );
    }

    #[test]
    fn gpt_oss_keeps_4096_tokens_in_its_sliding_layers() {
        let m = model("gpt-oss:20b");
        // 24 layers, even ones slide; a cell: 2 x 8 heads x 64 x 2 bytes = 2 KiB.
        // 128K: 12 x 131072 x 2 KiB = 3 GiB + 12 x (4096 + 512) x 2 KiB = 108 MiB.
        assert_eq!(
            kv_cache_bytes(&m, 131_072, KvCacheType::F16),
            3 * GIB + 108 * MIB
        );
    }

    #[test]
    fn mixture_of_experts_weights_are_all_resident() {
        let m = model("qwen3:30b");
        let t = memory_table(
            &m,
            32_768,
            KvCacheType::F16,
            1,
            Profile::Cpu,
            &cpu_host(64 * GIB, 60 * GIB, 16),
        );
        // The whole 19 GB file, not the 3B active parameters' share.
        assert_eq!(t.weights_bytes, 19_000_000_000);
        // 48 layers x 4 KV heads x 128 x 2 x 2 bytes x 32768 = 3 GiB.
        assert_eq!(t.kv_cache_bytes, 3 * GIB);
        let d = choose(&req("qwen3:30b", 32_768, cpu_host(64 * GIB, 60 * GIB, 16)));
        assert!(d.reasons.iter().any(|r| r
            == "qwen3:30b is a mixture of experts (128 experts, 8 used per token): every expert stays resident, so the weights term is the whole model, 17.70 GiB"));
    }

    #[test]
    fn per_layer_kv_heads_are_summed() {
        let m = ModelFacts {
            name: "hybrid".into(),
            weights_bytes: GIB,
            layers: 4,
            kv_heads: 8,
            head_dim: 128,
            max_context: 8192,
            // Two attention layers with 8 and 4 heads, two recurrent ones without a cache.
            kv_heads_per_layer: vec![8, 0, 4, 0],
            ..ModelFacts::default()
        };
        // 12 heads x 128 x 2 x 2 bytes x 8192.
        assert_eq!(
            kv_cache_bytes(&m, 8192, KvCacheType::F16),
            12 * 128 * 4 * 8192
        );
        let d = choose(&req_facts(m, 8192, cpu_host(64 * GIB, 60 * GIB, 16)));
        assert!(d
            .reasons
            .iter()
            .any(|r| r == "hybrid: KV heads per layer from the GGUF array (12 over 4 layers)"));
    }

    #[test]
    fn cpu_quantizes_the_kv_cache_only_from_ollama_0_11_5() {
        let old = HardwareFacts {
            ollama_version: Some("0.11.4".into()),
            ..cpu_host(32 * GIB, 10 * GIB, 8)
        };
        let d = choose(&req("llama3.1:8b", 131_072, old));
        assert!(d
            .reasons
            .iter()
            .any(|r| r.contains("Ollama 0.11.4 on CPU has no flash attention")));
        assert!(!d
            .reasons
            .iter()
            .any(|r| r.contains("with q8_0") || r.contains("with q4_0")));
        assert_eq!(d.kv_cache_type, KvCacheType::F16);
        assert_eq!(d.env["OLLAMA_FLASH_ATTENTION"], "0");
        // Unknown version: f16 only too, saying why.
        let unknown = HardwareFacts {
            ollama_version: None,
            ..cpu_host(32 * GIB, 10 * GIB, 8)
        };
        let d = choose(&req("llama3.1:8b", 131_072, unknown));
        assert!(d
            .reasons
            .iter()
            .any(|r| r.starts_with("Ollama's version is unknown")));
        assert_eq!(d.kv_cache_type, KvCacheType::F16);
        // 0.11.5 and later: the quantized types are tried.
        let new = cpu_host(32 * GIB, 10 * GIB, 8);
        let d = choose(&req("llama3.1:8b", 131_072, new));
        assert!(d.reasons.iter().any(|r| r.contains("with q4_0")));
    }

    #[test]
    fn ollama_versions_parse() {
        assert_eq!(parse_ollama_version("0.11.4"), Some((0, 11, 4)));
        assert_eq!(parse_ollama_version("v0.12.0-rc1"), Some((0, 12, 0)));
        assert_eq!(parse_ollama_version("0.13"), Some((0, 13, 0)));
        assert_eq!(parse_ollama_version("0.0.0"), None);
        assert_eq!(parse_ollama_version("dev"), None);
        assert!(parse_ollama_version("0.11.5") >= Some(CPU_FLASH_ATTENTION_SINCE));
        assert!(parse_ollama_version("0.11.4") < Some(CPU_FLASH_ATTENTION_SINCE));
    }

    #[test]
    fn metal_working_set() {
        assert_eq!(metal_working_set_bytes(16 * GIB), 16 * GIB * 2 / 3);
        assert_eq!(metal_working_set_bytes(32 * GIB), 32 * GIB * 2 / 3);
        assert_eq!(metal_working_set_bytes(48 * GIB), 36 * GIB);
        assert_eq!(metal_working_set_bytes(128 * GIB), 96 * GIB);
    }

    #[test]
    fn memory_table_terms_add_up() {
        let m = model("llama3.1:8b");
        let hw = nvidia(8 * GIB, "8.6");
        let t = memory_table(&m, 32_768, KvCacheType::Q4_0, 2, Profile::Standard, &hw);
        assert_eq!(t.kv_cache_bytes, 2 * t.kv_cache_bytes_per_slot);
        assert_eq!(
            t.need_bytes,
            t.weights_bytes + t.kv_cache_bytes + t.overhead_bytes
        );
        assert_eq!(t.usable_bytes, 8 * GIB - 457 * MIB);
        assert_eq!(t.margin_bytes, GIB / 2);
        assert_eq!(
            t.headroom_bytes,
            t.usable_bytes as i64 - t.margin_bytes as i64 - t.need_bytes as i64
        );
        assert_eq!(t.basis, "nvidia vram 8589934592 - 457 MiB");
        // 5 % wins over 0.5 GiB once usable is above 10 GiB.
        let t = memory_table(
            &m,
            8192,
            KvCacheType::F16,
            1,
            Profile::Analysis,
            &nvidia(24 * GIB, "8.9"),
        );
        assert_eq!(t.margin_bytes, (24 * GIB - 457 * MIB).div_ceil(20));
        // num_parallel 0 counts as 1.
        let t = memory_table(&m, 8192, KvCacheType::F16, 0, Profile::Standard, &hw);
        assert_eq!(t.num_parallel, 1);
        assert_eq!(t.kv_cache_bytes, t.kv_cache_bytes_per_slot);
    }

    #[test]
    fn nvidia_8gib_gets_32k_only_with_q4_0() {
        let d = choose(&req("llama3.1:8b", 32_768, nvidia(8 * GIB, "8.6")));
        assert!(d.fits);
        assert_eq!(d.profile, Profile::Standard);
        assert_eq!(d.context_length, 32_768);
        assert_eq!(d.kv_cache_type, KvCacheType::Q4_0);
        assert!(d
            .reasons
            .iter()
            .any(|r| r.starts_with("does not fit: standard at context 32768 with f16")));
        assert!(d
            .reasons
            .iter()
            .any(|r| r.starts_with("does not fit: standard at context 32768 with q8_0")));
        assert_eq!(d.env["OLLAMA_KV_CACHE_TYPE"], "q4_0");
        assert_eq!(d.env["OLLAMA_FLASH_ATTENTION"], "1");
        assert_eq!(d.env["OLLAMA_CONTEXT_LENGTH"], "32768");
        assert_eq!(d.env["COMPOSE_PROFILES"], "standard");
        assert_eq!(d.env["STACKPILOT_PROFILE"], "standard");
        // Neither larger type fits on this card at 32K.
        let hw = nvidia(8 * GIB, "8.6");
        let m = model("llama3.1:8b");
        for kv in [KvCacheType::F16, KvCacheType::Q8_0] {
            assert!(!memory_table(&m, 32_768, kv, 1, Profile::Standard, &hw).fits());
        }
    }

    #[test]
    fn nvidia_16gib_gets_128k_with_q8_0() {
        let d = choose(&req("llama3.1:8b", 131_072, nvidia(16 * GIB, "8.9")));
        assert!(d.fits);
        assert_eq!(d.profile, Profile::Analysis);
        assert_eq!(d.context_length, 131_072);
        assert_eq!(d.kv_cache_type, KvCacheType::Q8_0);
        assert_eq!(d.env["COMPOSE_PROFILES"], "analysis");
        assert_eq!(d.env["OLLAMA_KEEP_ALIVE"], "1h");
        // A real 16 GB card reports 16376 MiB and is still of the 16 GiB class.
        let d = choose(&req("llama3.1:8b", 131_072, nvidia(16_376 * MIB, "8.9")));
        assert_eq!(
            (d.profile, d.kv_cache_type),
            (Profile::Analysis, KvCacheType::Q8_0)
        );
    }

    #[test]
    fn analysis_card_at_32k_runs_standard() {
        let d = choose(&req("llama3.1:8b", 32_768, nvidia(24 * GIB, "8.9")));
        assert_eq!(d.profile, Profile::Standard);
        assert_eq!(d.kv_cache_type, KvCacheType::F16);
        // f16 on a GPU with flash attention still turns it on.
        assert_eq!(d.env["OLLAMA_FLASH_ATTENTION"], "1");
    }

    #[test]
    fn apple_m4_max_48gb_gets_qwen25_32b_at_32k_q8_0() {
        let hw = HardwareFacts {
            apple_unified_memory_bytes: Some(48 * GIB),
            memory_total_bytes: 48 * GIB,
            memory_available_bytes: 30 * GIB,
            logical_cores: 16,
            ..HardwareFacts::default()
        };
        let d = choose(&req("qwen2.5:32b", 32_768, hw));
        assert!(d.fits);
        assert_eq!(d.profile, Profile::AppleMetal);
        assert_eq!(d.context_length, 32_768);
        assert_eq!(d.kv_cache_type, KvCacheType::Q8_0);
        assert_eq!(d.memory.usable_bytes, 36 * GIB - 512 * MIB);
        assert_eq!(
            d.memory.basis,
            "metal working set 38654705664 (3/4 of unified memory 51539607552) - 512 MiB"
        );
        assert_eq!(d.env["OLLAMA_KV_CACHE_TYPE"], "q8_0");
        assert_eq!(d.env["OLLAMA_FLASH_ATTENTION"], "1");
        assert_eq!(d.env["COMPOSE_PROFILES"], "apple-metal");
    }

    #[test]
    fn apple_only_f16_allowed_is_honoured() {
        let hw = HardwareFacts {
            apple_unified_memory_bytes: Some(48 * GIB),
            memory_total_bytes: 48 * GIB,
            memory_available_bytes: 30 * GIB,
            logical_cores: 16,
            ..HardwareFacts::default()
        };
        let mut r = req("llama3.1:8b", 32_768, hw);
        r.kv_cache_types = vec![KvCacheType::F16];
        let d = choose(&r);
        assert_eq!(
            (d.profile, d.kv_cache_type),
            (Profile::AppleMetal, KvCacheType::F16)
        );
        assert!(d.reasons[0].contains("allowed by the caller: f16"));
    }

    #[test]
    fn cgroup_limit_lowers_cpu_usable() {
        let hw = cpu_host(64 * GIB, 48 * GIB, 16);
        let m = model("llama3.1:8b");
        let free = memory_table(&m, 32_768, KvCacheType::F16, 1, Profile::Cpu, &hw);
        assert_eq!(free.usable_bytes, 46 * GIB);
        assert_eq!(free.basis, format!("available memory {} - 2 GiB", 48 * GIB));
        let capped_hw = HardwareFacts {
            cgroup_memory_limit_bytes: Some(12 * GIB),
            ..hw.clone()
        };
        let capped = memory_table(&m, 32_768, KvCacheType::F16, 1, Profile::Cpu, &capped_hw);
        assert_eq!(capped.usable_bytes, 10 * GIB);
        assert_eq!(
            capped.basis,
            format!(
                "min(available memory {}, cgroup limit {}) - 2 GiB",
                48 * GIB,
                12 * GIB
            )
        );
        // The decision follows: 128K f16 fits the free host, not the capped one.
        let d_free = choose(&req("llama3.1:8b", 131_072, hw));
        assert_eq!(
            (d_free.context_length, d_free.kv_cache_type),
            (131_072, KvCacheType::F16)
        );
        let d_capped = choose(&req("llama3.1:8b", 131_072, capped_hw));
        assert!(d_capped.fits);
        assert!(d_capped.memory.usable_bytes < d_free.memory.usable_bytes);
        assert_ne!(
            (d_capped.context_length, d_capped.kv_cache_type),
            (131_072, KvCacheType::F16)
        );
        // A 12 GiB cgroup makes the 16-core host a small server.
        assert_eq!(d_capped.profile, Profile::CpuSmallServer);
    }

    #[test]
    fn context_capped_at_model_maximum() {
        let d = choose(&req("phi3:mini", 32_768, nvidia(8 * GIB, "8.6")));
        assert!(d.fits);
        assert_eq!(d.context_length, 4096);
        assert!(d
            .reasons
            .iter()
            .any(|r| r == "context 32768 capped at phi3:mini's maximum 4096"));
        let d = choose(&req("qwen2.5:7b", 131_072, nvidia(24 * GIB, "8.9")));
        assert_eq!(d.context_length, 32_768);
    }

    #[test]
    fn context_steps_down_only_below_the_capped_context() {
        let m = model("llama3.1:8b");
        // 8 GiB of usable CPU memory after the reserve.
        let hw = cpu_host(32 * GIB, 10 * GIB, 8);
        let d = choose(&ProfileRequest {
            model: m,
            context_length: 100_000,
            kv_cache_types: Vec::new(),
            num_parallel: 1,
            hardware: hw,
        });
        assert!(d.fits);
        let tried: Vec<&String> = d
            .reasons
            .iter()
            .filter(|r| r.contains(" at context "))
            .collect();
        assert!(tried[0].contains("at context 100000 with f16"));
        assert!(!d.reasons.iter().any(|r| r.contains("at context 131072")));
        assert!(d
            .reasons
            .iter()
            .any(|r| r.contains("at context 65536 with q4_0")));
        assert_eq!(d.profile, Profile::Cpu);
        assert!(d.context_length < 100_000);
    }

    #[test]
    fn nothing_fits_reports_numbers() {
        // A laptop with 4 GiB of RAM, no GPU.
        let hw = cpu_host(4 * GIB, 3 * GIB, 4);
        let d = choose(&req("llama3.1:70b", 32_768, hw));
        assert!(!d.fits);
        assert_eq!(d.profile, Profile::CpuSmallServer);
        // The closest candidate is the smallest: 8K with q4_0.
        assert_eq!(d.context_length, 8192);
        assert_eq!(d.kv_cache_type, KvCacheType::Q4_0);
        assert_eq!(d.memory.usable_bytes, GIB);
        assert!(d.memory.headroom_bytes < 0);
        assert_eq!(
            d.memory.need_bytes,
            42_520_413_916 + kv_cache_bytes(&model("llama3.1:70b"), 8192, KvCacheType::Q4_0) + GIB
        );
        let last = d.reasons.last().expect("a reason");
        assert!(
            last.starts_with("nothing fits: closest is cpu-small-server at context 8192 with q4_0")
        );
        assert!(last.contains("need 41.30 GiB"), "{last}");
        assert!(last.contains("short by"));
    }

    #[test]
    fn small_gpu_is_skipped_and_cpu_profile_used() {
        let hw = HardwareFacts {
            nvidia_vram_bytes: Some(4 * GIB),
            nvidia_compute_capability: Some("7.5".into()),
            memory_total_bytes: 16 * GIB,
            memory_available_bytes: 12 * GIB,
            logical_cores: 8,
            ..HardwareFacts::default()
        };
        let d = choose(&req("llama3.1:70b", 32_768, hw));
        assert!(!d.fits);
        assert!(d
            .reasons
            .iter()
            .any(|r| r.contains("below the standard profile's 8 GiB")));
        assert_eq!(d.profile, Profile::CpuSmallServer);
    }

    #[test]
    fn gpu_too_small_for_model_falls_back_to_cpu() {
        let hw = HardwareFacts {
            memory_total_bytes: 64 * GIB,
            memory_available_bytes: 56 * GIB,
            ..nvidia(8 * GIB, "8.6")
        };
        let d = choose(&req("qwen2.5:32b", 32_768, hw));
        assert!(d.fits);
        assert_eq!(d.profile, Profile::Cpu);
        assert_eq!(
            (d.context_length, d.kv_cache_type),
            (32_768, KvCacheType::F16)
        );
        assert_eq!(d.env["OLLAMA_FLASH_ATTENTION"], "0");
        assert_eq!(d.env["COMPOSE_PROFILES"], "cpu");
        assert!(d
            .reasons
            .iter()
            .any(|r| r.starts_with("does not fit: standard at context 8192 with q4_0")));
    }

    #[test]
    fn old_nvidia_without_flash_attention_only_tries_f16() {
        let d = choose(&req("llama3.1:8b", 32_768, nvidia(8 * GIB, "6.1")));
        assert!(d.reasons.iter().any(|r| r.contains("6.1 < 7.0")));
        assert!(!d
            .reasons
            .iter()
            .any(|r| r.contains("standard at context 32768 with q")));
        // f16 fits at 8K: 4.58 + 1 + 1 GiB overhead.
        assert_eq!(d.profile, Profile::Standard);
        assert_eq!(
            (d.context_length, d.kv_cache_type),
            (8192, KvCacheType::F16)
        );
        assert_eq!(d.env["OLLAMA_FLASH_ATTENTION"], "0");
    }

    #[test]
    fn unknown_compute_capability_assumes_flash_attention() {
        let hw = HardwareFacts {
            nvidia_compute_capability: None,
            ..nvidia(8 * GIB, "")
        };
        let d = choose(&req("llama3.1:8b", 32_768, hw));
        assert_eq!(d.kv_cache_type, KvCacheType::Q4_0);
        assert!(d
            .reasons
            .iter()
            .any(|r| r.contains("compute capability unknown")));
    }

    #[test]
    fn allowed_types_restrict_the_search() {
        let mut r = req("llama3.1:8b", 32_768, nvidia(8 * GIB, "8.6"));
        r.kv_cache_types = vec![KvCacheType::F16, KvCacheType::F16];
        let d = choose(&r);
        assert_eq!(
            (d.context_length, d.kv_cache_type),
            (8192, KvCacheType::F16)
        );
        assert!(d
            .reasons
            .iter()
            .any(|r| r == "KV cache types allowed by the caller: f16"));
    }

    #[test]
    fn num_parallel_multiplies_the_kv_cache() {
        let mut r = req("llama3.1:8b", 32_768, nvidia(16 * GIB, "8.9"));
        r.num_parallel = 4;
        let d = choose(&r);
        assert_eq!(d.num_parallel, 4);
        assert_eq!(
            d.memory.kv_cache_bytes,
            4 * d.memory.kv_cache_bytes_per_slot
        );
        assert_eq!(d.env["OLLAMA_NUM_PARALLEL"], "4");
        // 4 × 4 GiB f16 does not fit 16 GiB; 4 × 2.125 q8_0 does.
        assert_eq!(d.kv_cache_type, KvCacheType::Q8_0);
        r.num_parallel = 0;
        let d = choose(&r);
        assert_eq!(d.num_parallel, 1);
        assert_eq!(d.reasons[0], "num_parallel 0 treated as 1");
    }

    #[test]
    fn four_core_16gb_box_is_a_small_server() {
        // i5-6500T, 16 GB: MemTotal ~15.5 GiB.
        let hw = cpu_host(15_872 * MIB, 13 * GIB, 4);
        let d = choose(&req("llama3.1:8b", 32_768, hw));
        assert!(d.fits);
        assert_eq!(d.profile, Profile::CpuSmallServer);
        assert_eq!(d.env["COMPOSE_PROFILES"], "cpu");
        assert_eq!(d.env["STACKPILOT_PROFILE"], "cpu-small-server");
        assert_eq!(d.env["OLLAMA_MAX_LOADED_MODELS"], "1");
        assert_eq!(d.env["OLLAMA_KEEP_ALIVE"], "30m");
        // Either rule alone is enough.
        assert_eq!(
            primary_profile(&cpu_host(64 * GIB, 60 * GIB, 4)),
            Profile::CpuSmallServer
        );
        assert_eq!(
            primary_profile(&cpu_host(16 * GIB, 10 * GIB, 32)),
            Profile::CpuSmallServer
        );
        assert_eq!(
            primary_profile(&cpu_host(64 * GIB, 60 * GIB, 32)),
            Profile::Cpu
        );
    }

    #[test]
    fn primary_profiles() {
        assert_eq!(primary_profile(&nvidia(24 * GIB, "8.9")), Profile::Analysis);
        assert_eq!(primary_profile(&nvidia(12 * GIB, "8.6")), Profile::Standard);
        assert_eq!(
            primary_profile(&nvidia(8188 * MIB, "8.9")),
            Profile::Standard
        );
        assert_eq!(primary_profile(&nvidia(6 * GIB, "7.5")), Profile::Cpu);
        let apple = HardwareFacts {
            apple_unified_memory_bytes: Some(48 * GIB),
            ..cpu_host(48 * GIB, 30 * GIB, 16)
        };
        assert_eq!(primary_profile(&apple), Profile::AppleMetal);
    }

    #[test]
    fn default_context_when_none_asked() {
        let d = choose(&req("llama3.1:8b", 0, nvidia(24 * GIB, "8.9")));
        assert!(d
            .reasons
            .iter()
            .any(|r| r == "no context length asked: analysis's default 131072"));
        assert_eq!(d.context_length, 131_072);
        let d = choose(&req("llama3.1:8b", 0, nvidia(8 * GIB, "8.9")));
        assert_eq!(d.context_length, 32_768);
    }

    #[test]
    fn env_has_exactly_the_documented_keys() {
        let d = choose(&req("llama3.1:8b", 32_768, nvidia(8 * GIB, "8.6")));
        let keys: Vec<&str> = d.env.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "COMPOSE_PROFILES",
                "OLLAMA_CONTEXT_LENGTH",
                "OLLAMA_FLASH_ATTENTION",
                "OLLAMA_KEEP_ALIVE",
                "OLLAMA_KV_CACHE_TYPE",
                "OLLAMA_MAX_LOADED_MODELS",
                "OLLAMA_NUM_PARALLEL",
                "STACKPILOT_PROFILE",
            ]
        );
    }

    #[test]
    fn deterministic() {
        let cases = [
            req("llama3.1:8b", 32_768, nvidia(8 * GIB, "8.6")),
            req("llama3.1:70b", 32_768, cpu_host(4 * GIB, 3 * GIB, 4)),
            req("qwen2.5:32b", 0, nvidia(8 * GIB, "6.1")),
        ];
        for r in &cases {
            let a = serde_json::to_string(&choose(r)).expect("ser");
            let b = serde_json::to_string(&choose(&r.clone())).expect("ser");
            assert_eq!(a, b);
            // The request round-trips through JSON to the same decision.
            let back: ProfileRequest =
                serde_json::from_str(&serde_json::to_string(r).expect("ser")).expect("de");
            assert_eq!(serde_json::to_string(&choose(&back)).expect("ser"), a);
        }
    }

    #[test]
    fn request_defaults_from_json() {
        let json = serde_json::json!({
            "model": model("mistral:7b"),
            "hardware": nvidia(12 * GIB, "8.6"),
        });
        let r: ProfileRequest = serde_json::from_value(json).expect("de");
        assert_eq!(r.num_parallel, 1);
        assert_eq!(r.context_length, 0);
        assert!(r.kv_cache_types.is_empty());
        let d = choose(&r);
        assert!(d.fits);
        assert_eq!(d.context_length, 32_768);
    }

    #[test]
    fn schemas_generate() {
        let s = serde_json::to_value(schemars::schema_for!(ProfileDecision)).expect("schema");
        let text = s.to_string();
        assert!(text.contains("q8_0") && text.contains("cpu-small-server"));
        let _ = schemars::schema_for!(ProfileRequest);
        let _ = schemars::schema_for!(HardwareFacts);
    }

    #[test]
    fn gib_formatting() {
        assert_eq!(gib(0), "0.00 GiB");
        assert_eq!(gib(GIB), "1.00 GiB");
        assert_eq!(gib(GIB.div_ceil(200)), "0.01 GiB"); // half a hundredth rounds up
        assert_eq!(gib(GIB / 200), "0.00 GiB");
        assert_eq!(gib_signed(-(GIB as i64)), "-1.00 GiB");
    }

    fn report() -> HardwareReport {
        let gpu = |name: &str, vram: u64, cc: &str| GpuInfo {
            vendor: GpuVendor::Nvidia,
            name: name.into(),
            vram_total_bytes: vram,
            vram_free_bytes: None,
            compute_capability: Some(cc.into()),
            driver_version: None,
            cuda_version: None,
        };
        HardwareReport {
            cpu: CpuInfo {
                model: "x".into(),
                arch: "x86_64".into(),
                physical_cores: Some(8),
                logical_cores: 16,
                simd: vec![],
            },
            memory: MemoryInfo {
                total_bytes: 64 * GIB,
                available_bytes: 50 * GIB,
            },
            cgroup: Some(CgroupInfo {
                version: 2,
                memory_limit_bytes: Some(20 * GIB),
                cpu_quota_cores: Some(2.5),
            }),
            os: OsInfo {
                name: "linux".into(),
                version: None,
                kernel: None,
                wsl: false,
            },
            gpus: vec![
                gpu("RTX 3060", 12 * GIB, "8.6"),
                GpuInfo {
                    vendor: GpuVendor::Amd,
                    ..gpu("RX 7900", 24 * GIB, "gfx1100")
                },
                gpu("RTX 4090", 24 * GIB, "8.9"),
                gpu("RTX 4090 #2", 24 * GIB, "8.9"),
            ],
            gpu_absent_reason: None,
            apple: None,
            disk: DiskInfo {
                path: "/".into(),
                free_bytes: None,
                total_bytes: None,
            },
            runtime: RuntimeInfo {
                docker: DockerProbe {
                    reachable: false,
                    endpoint: "unix:///var/run/docker.sock".into(),
                    version: None,
                    api_version: None,
                    error: None,
                },
                compose: ComposeProbe {
                    available: false,
                    version: None,
                    error: None,
                },
                nvidia_runtime: false,
                ollama: OllamaProbe {
                    reachable: false,
                    url: "http://127.0.0.1:11434".into(),
                    version: None,
                    error: None,
                },
            },
        }
    }

    #[test]
    fn facts_from_report() {
        let f = HardwareFacts::from(&report());
        assert_eq!(
            f,
            HardwareFacts {
                nvidia_vram_bytes: Some(24 * GIB),
                nvidia_compute_capability: Some("8.9".into()),
                apple_unified_memory_bytes: None,
                memory_total_bytes: 64 * GIB,
                memory_available_bytes: 50 * GIB,
                cgroup_memory_limit_bytes: Some(20 * GIB),
                logical_cores: 3,
                ollama_version: None,
            }
        );
        let mut r = report();
        r.gpus.clear();
        r.cgroup = None;
        r.apple = Some(AppleInfo {
            chip: "Apple M4 Max".into(),
            unified_memory_bytes: 48 * GIB,
            metal_working_set_bytes: 36 * GIB,
        });
        let f = HardwareFacts::from(&r);
        assert_eq!(f.nvidia_vram_bytes, None);
        assert_eq!(f.apple_unified_memory_bytes, Some(48 * GIB));
        assert_eq!(f.logical_cores, 16);
        assert_eq!(f.cgroup_memory_limit_bytes, None);
    }
}
