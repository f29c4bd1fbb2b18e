//! The hardware report shared by `detect_hardware` (which produces it) and
//! `select_profile` (which reasons over it). Kept apart so neither tool's file
//! has to import the other's internals.
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Everything detect_hardware found. Sizes are bytes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct HardwareReport {
    pub cpu: CpuInfo,
    pub memory: MemoryInfo,
    /// Present when the process is confined by a cgroup (v2) limit.
    pub cgroup: Option<CgroupInfo>,
    pub os: OsInfo,
    /// Every GPU found (NVIDIA through NVML, AMD through sysfs, Apple through sysctl).
    pub gpus: Vec<GpuInfo>,
    /// Why `gpus` is empty (library missing, driver not loaded, no permission, no device).
    pub gpu_absent_reason: Option<String>,
    /// Apple Silicon facts (macOS only).
    pub apple: Option<AppleInfo>,
    pub disk: DiskInfo,
    pub runtime: RuntimeInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct CpuInfo {
    pub model: String,
    /// `x86_64`, `aarch64`, ...
    pub arch: String,
    pub physical_cores: Option<u32>,
    pub logical_cores: u32,
    /// SIMD extensions that matter to llama.cpp: avx, avx2, avx512f, fma, f16c, neon, ...
    pub simd: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct MemoryInfo {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct CgroupInfo {
    /// cgroup version (2; v1 is reported with version 1 and limits where readable).
    pub version: u8,
    /// memory.max, when not `max`.
    pub memory_limit_bytes: Option<u64>,
    /// cpu.max quota / period, in cores, when not `max`.
    pub cpu_quota_cores: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct OsInfo {
    /// `linux`, `macos`, `windows`.
    pub name: String,
    /// Distribution or product version, when known.
    pub version: Option<String>,
    pub kernel: Option<String>,
    /// Running under Windows Subsystem for Linux.
    pub wsl: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GpuVendor {
    Nvidia,
    Amd,
    Apple,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct GpuInfo {
    pub vendor: GpuVendor,
    pub name: String,
    pub vram_total_bytes: u64,
    pub vram_free_bytes: Option<u64>,
    /// CUDA compute capability, `8.9` for an RTX 4090.
    pub compute_capability: Option<String>,
    pub driver_version: Option<String>,
    pub cuda_version: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct AppleInfo {
    /// `Apple M4 Max`.
    pub chip: String,
    pub unified_memory_bytes: u64,
    /// What Metal lets one process wire: 2/3 of RAM up to 32 GB, 3/4 above.
    pub metal_working_set_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct DiskInfo {
    /// The directory measured (the stack directory).
    pub path: String,
    pub free_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct RuntimeInfo {
    pub docker: DockerProbe,
    pub compose: ComposeProbe,
    /// An `nvidia` runtime is registered with the engine (`docker info` runtimes).
    pub nvidia_runtime: bool,
    pub ollama: OllamaProbe,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct DockerProbe {
    pub reachable: bool,
    /// Where the engine was looked for (DOCKER_HOST or the default socket).
    pub endpoint: String,
    pub version: Option<String>,
    pub api_version: Option<String>,
    /// Why it is unreachable, when it is.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ComposeProbe {
    /// `docker compose version` answered with a v2 version.
    pub available: bool,
    pub version: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct OllamaProbe {
    pub reachable: bool,
    /// The URL tried (OLLAMA_HOST, else http://127.0.0.1:11434).
    pub url: String,
    pub version: Option<String>,
    pub error: Option<String>,
}
