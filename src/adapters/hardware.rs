//! Host facts for `detect_hardware`: CPU, memory, cgroup limits, OS, GPUs and
//! the disk that holds the stack.
//!
//! Every probe here degrades to "unknown" (or to an explanation) instead of
//! failing: a report with a missing field still lets `select_profile` decide,
//! an error would not. On Linux the numbers come straight from procfs and sysfs
//! so they match what the person sees with `nproc`, `free` and `nvidia-smi`;
//! other platforms fall back to sysinfo.
//!
//! `probe_host` blocks (file reads, loading libnvidia-ml, `sysctl` on macOS):
//! async callers should run it under `tokio::task::spawn_blocking`.
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;
use sysinfo::{CpuRefreshKind, RefreshKind, System};

use crate::domain::hardware::*;

/// Everything about the host itself, i.e. a `HardwareReport` without the
/// runtime probes (which are async and live in `runtime_probe`).
#[derive(Debug, Clone, PartialEq)]
pub struct HostFacts {
    pub cpu: CpuInfo,
    pub memory: MemoryInfo,
    pub cgroup: Option<CgroupInfo>,
    pub os: OsInfo,
    pub gpus: Vec<GpuInfo>,
    pub gpu_absent_reason: Option<String>,
    pub apple: Option<AppleInfo>,
    pub disk: DiskInfo,
}

impl HostFacts {
    /// Joins the host facts with the runtime probes into the tool's report, so
    /// the wrapper does not have to copy fields by hand.
    pub fn into_report(self, runtime: RuntimeInfo) -> HardwareReport {
        HardwareReport {
            cpu: self.cpu,
            memory: self.memory,
            cgroup: self.cgroup,
            os: self.os,
            gpus: self.gpus,
            gpu_absent_reason: self.gpu_absent_reason,
            apple: self.apple,
            disk: self.disk,
            runtime,
        }
    }
}

/// Probes the host. Never fails; see the module docs for what "unknown" looks like.
pub fn probe_host(stack_dir: &Path) -> HostFacts {
    let apple = probe_apple();
    let (gpus, gpu_absent_reason) = probe_gpus(apple.as_ref());
    HostFacts {
        cpu: probe_cpu(),
        memory: probe_memory(),
        cgroup: probe_cgroup(),
        os: probe_os(),
        gpus,
        gpu_absent_reason,
        apple,
        disk: probe_disk(stack_dir),
    }
}

// ---------------------------------------------------------------- CPU

/// x86 flags (as spelled in /proc/cpuinfo) that decide which llama.cpp kernels
/// run fast; everything else in the flags line is noise to a profile choice.
const X86_SIMD: &[&str] = &[
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
];

/// aarch64 `Features` tokens and the names we report them under (`asimd` is
/// what most people know as NEON).
const ARM_SIMD: &[(&str, &str)] = &[
    ("asimd", "neon"),
    ("asimddp", "dotprod"),
    ("asimdhp", "fp16"),
    ("i8mm", "i8mm"),
    ("bf16", "bf16"),
    ("sve", "sve"),
    ("sve2", "sve2"),
];

fn probe_cpu() -> CpuInfo {
    let arch = std::env::consts::ARCH.to_string();
    let sys =
        System::new_with_specifics(RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing()));
    let model = sys
        .cpus()
        .iter()
        .map(|c| c.brand().trim())
        .find(|b| !b.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| "unknown".to_string());
    let logical_cores = logical_cores()
        .unwrap_or_else(|| u32::try_from(sys.cpus().len().max(1)).unwrap_or(u32::MAX));
    let physical_cores = System::physical_core_count().and_then(|n| u32::try_from(n).ok());
    let simd = match fs::read_to_string("/proc/cpuinfo") {
        Ok(text) => {
            let found = simd_from_cpuinfo(&text);
            if found.is_empty() {
                simd_detected()
            } else {
                found
            }
        }
        Err(_) => simd_detected(),
    };
    CpuInfo {
        model,
        arch,
        physical_cores,
        logical_cores,
        simd,
    }
}

/// The CPUs this process may run on, i.e. what `nproc` prints. The affinity
/// mask is what a container's `--cpuset-cpus` changes; a cgroup CPU quota is
/// reported separately in `CgroupInfo` because it throttles rather than hides
/// CPUs (and `available_parallelism` would mix the two).
fn logical_cores() -> Option<u32> {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .and_then(count_cpu_list);
        if let Some(n) = allowed {
            return Some(n);
        }
    }
    std::thread::available_parallelism()
        .ok()
        .and_then(|n| u32::try_from(n.get()).ok())
}

/// Counts a kernel CPU list such as `0-3,8,10-11`.
fn count_cpu_list(list: &str) -> Option<u32> {
    let mut total: u32 = 0;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let n = match part.split_once('-') {
            Some((a, b)) => {
                let a: u32 = a.trim().parse().ok()?;
                let b: u32 = b.trim().parse().ok()?;
                b.checked_sub(a)?.checked_add(1)?
            }
            None => {
                part.trim().parse::<u32>().ok()?;
                1
            }
        };
        total = total.checked_add(n)?;
    }
    (total > 0).then_some(total)
}

/// The interesting SIMD extensions named in a /proc/cpuinfo text (x86 `flags`
/// or aarch64 `Features`), in a fixed order so reports compare byte for byte.
fn simd_from_cpuinfo(cpuinfo: &str) -> Vec<String> {
    let line_tokens = |key: &str| -> Option<BTreeSet<&str>> {
        cpuinfo.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == key).then(|| v.split_whitespace().collect())
        })
    };
    if let Some(flags) = line_tokens("flags") {
        return X86_SIMD
            .iter()
            .filter(|f| flags.contains(**f))
            .map(|f| (*f).to_string())
            .collect();
    }
    if let Some(features) = line_tokens("Features") {
        return ARM_SIMD
            .iter()
            .filter(|(token, _)| features.contains(*token))
            .map(|(_, name)| (*name).to_string())
            .collect();
    }
    Vec::new()
}

/// Runtime detection for hosts without /proc/cpuinfo (macOS, Windows). Names
/// follow the /proc/cpuinfo spelling used on Linux so the field means one thing.
fn simd_detected() -> Vec<String> {
    #[allow(unused_mut)]
    let mut found: Vec<&str> = Vec::new();
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        let checks = [
            ("sse4_2", std::arch::is_x86_feature_detected!("sse4.2")),
            ("avx", std::arch::is_x86_feature_detected!("avx")),
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("f16c", std::arch::is_x86_feature_detected!("f16c")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ("avx512bw", std::arch::is_x86_feature_detected!("avx512bw")),
            ("avx512vl", std::arch::is_x86_feature_detected!("avx512vl")),
        ];
        found.extend(checks.iter().filter(|(_, on)| *on).map(|(n, _)| *n));
    }
    #[cfg(target_arch = "aarch64")]
    {
        let checks = [
            ("neon", std::arch::is_aarch64_feature_detected!("neon")),
            (
                "dotprod",
                std::arch::is_aarch64_feature_detected!("dotprod"),
            ),
            ("fp16", std::arch::is_aarch64_feature_detected!("fp16")),
            ("i8mm", std::arch::is_aarch64_feature_detected!("i8mm")),
            ("bf16", std::arch::is_aarch64_feature_detected!("bf16")),
            ("sve", std::arch::is_aarch64_feature_detected!("sve")),
            ("sve2", std::arch::is_aarch64_feature_detected!("sve2")),
        ];
        found.extend(checks.iter().filter(|(_, on)| *on).map(|(n, _)| *n));
    }
    found.into_iter().map(str::to_string).collect()
}

// ---------------------------------------------------------------- memory

/// Total and available memory (procfs on Linux, sysinfo elsewhere).
pub fn probe_memory() -> MemoryInfo {
    if let Some(mem) = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo(&t))
    {
        return mem;
    }
    let mut sys = System::new();
    sys.refresh_memory();
    MemoryInfo {
        total_bytes: sys.total_memory(),
        available_bytes: sys.available_memory(),
    }
}

/// Reads MemTotal and MemAvailable (MemFree on kernels before 3.14) from
/// /proc/meminfo; the kernel writes kB meaning KiB.
fn parse_meminfo(text: &str) -> Option<MemoryInfo> {
    let field = |name: &str| -> Option<u64> {
        text.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            if k.trim() != name {
                return None;
            }
            let kib: u64 = v.split_whitespace().next()?.parse().ok()?;
            kib.checked_mul(1024)
        })
    };
    let total_bytes = field("MemTotal")?;
    let available_bytes = field("MemAvailable").or_else(|| field("MemFree"))?;
    Some(MemoryInfo {
        total_bytes,
        available_bytes,
    })
}

// ---------------------------------------------------------------- cgroup

/// Values at or above this mean "no limit" in cgroup v1, which writes
/// `PAGE_COUNTER_MAX` (about 2^63 rounded down to a page) instead of `max`.
const V1_UNLIMITED: u64 = 1 << 60;

/// The memory and CPU limits that actually bind this process: the smallest
/// limit on the path from its cgroup up to the root of the hierarchy, because a
/// parent's limit caps every child. cgroup v2 first; v1 (older Docker hosts,
/// hybrid systemd setups) when v2 sets nothing.
fn probe_cgroup() -> Option<CgroupInfo> {
    let memberships = fs::read_to_string("/proc/self/cgroup")
        .map(|t| parse_proc_cgroup(&t))
        .unwrap_or_default();
    let mounts = fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_cgroup_mounts(&t))
        .unwrap_or_default();

    if let Some(path) = &memberships.v2 {
        let v2_mounts: Vec<&CgroupMount> = mounts.iter().filter(|m| m.v2).collect();
        let default_mount = CgroupMount {
            v2: true,
            root: "/".to_string(),
            mount_point: PathBuf::from("/sys/fs/cgroup"),
            controllers: Vec::new(),
        };
        let candidates = if v2_mounts.is_empty() {
            vec![&default_mount]
        } else {
            v2_mounts
        };
        for mount in candidates {
            let dirs = cgroup_dirs(mount, path);
            let memory = min_over(&dirs, "memory.max", parse_memory_max);
            let cpu = min_over_f64(&dirs, "cpu.max", parse_cpu_max);
            if memory.is_some() || cpu.is_some() {
                return Some(CgroupInfo {
                    version: 2,
                    memory_limit_bytes: memory,
                    cpu_quota_cores: cpu,
                });
            }
        }
    }

    let v1_mount = |controller: &str| {
        mounts
            .iter()
            .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))
    };
    let memory = memberships
        .v1_path("memory")
        .zip(v1_mount("memory"))
        .and_then(|(path, mount)| {
            min_over(
                &cgroup_dirs(mount, path),
                "memory.limit_in_bytes",
                parse_v1_memory_limit,
            )
        });
    let cpu = memberships
        .v1_path("cpu")
        .zip(v1_mount("cpu"))
        .and_then(|(path, mount)| {
            let dirs = cgroup_dirs(mount, path);
            dirs.iter()
                .filter_map(|d| {
                    let quota = fs::read_to_string(d.join("cpu.cfs_quota_us")).ok()?;
                    let period = fs::read_to_string(d.join("cpu.cfs_period_us")).ok()?;
                    parse_v1_cpu_quota(&quota, &period)
                })
                .reduce(f64::min)
        });
    (memory.is_some() || cpu.is_some()).then_some(CgroupInfo {
        version: 1,
        memory_limit_bytes: memory,
        cpu_quota_cores: cpu,
    })
}

/// What /proc/self/cgroup says about this process.
#[derive(Debug, Default, PartialEq)]
struct CgroupMemberships {
    /// The `0::/path` line (cgroup v2).
    v2: Option<String>,
    /// `(controllers, path)` for each v1 hierarchy.
    v1: Vec<(Vec<String>, String)>,
}

impl CgroupMemberships {
    fn v1_path(&self, controller: &str) -> Option<&str> {
        self.v1
            .iter()
            .find(|(cs, _)| cs.iter().any(|c| c == controller))
            .map(|(_, p)| p.as_str())
    }
}

fn parse_proc_cgroup(text: &str) -> CgroupMemberships {
    let mut out = CgroupMemberships::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            out.v2 = Some(path.to_string());
        } else if !controllers.is_empty() {
            let cs = controllers.split(',').map(str::to_string).collect();
            out.v1.push((cs, path.to_string()));
        }
    }
    out
}

/// A cgroup filesystem mount from /proc/self/mountinfo.
#[derive(Debug, PartialEq)]
struct CgroupMount {
    v2: bool,
    /// The cgroup this mount shows as its root (`/` unless the mount is a
    /// subtree, as in a container without a cgroup namespace).
    root: String,
    mount_point: PathBuf,
    /// v1 controllers (`memory`, `cpu`, ...), from the super options.
    controllers: Vec<String>,
}

fn parse_cgroup_mounts(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            let fstype = *fields.get(sep + 1)?;
            let v2 = match fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            let controllers = fields
                .get(sep + 3)
                .map(|opts| opts.split(',').map(str::to_string).collect())
                .unwrap_or_default();
            Some(CgroupMount {
                v2,
                root: unescape_mount_field(fields.get(3)?),
                mount_point: PathBuf::from(unescape_mount_field(fields.get(4)?)),
                controllers,
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape_mount_field(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The directories to read limits from: the process's cgroup under the mount,
/// then each parent up to the mount point itself. If the cgroup path is not
/// under the mount's root (a namespaced view), only the mount point is used.
fn cgroup_dirs(mount: &CgroupMount, cgroup_path: &str) -> Vec<PathBuf> {
    let root = mount.root.trim_end_matches('/');
    let relative = cgroup_path
        .strip_prefix(root)
        .filter(|rest| rest.is_empty() || rest.starts_with('/') || root.is_empty())
        .unwrap_or("");
    let mut dirs = Vec::new();
    let mut dir = mount.mount_point.clone();
    let mut chain = vec![dir.clone()];
    for part in relative.split('/').filter(|p| !p.is_empty() && *p != "..") {
        dir.push(part);
        chain.push(dir.clone());
    }
    while let Some(d) = chain.pop() {
        dirs.push(d);
    }
    dirs
}

fn min_over(dirs: &[PathBuf], file: &str, parse: fn(&str) -> Option<u64>) -> Option<u64> {
    dirs.iter()
        .filter_map(|d| fs::read_to_string(d.join(file)).ok())
        .filter_map(|t| parse(&t))
        .min()
}

fn min_over_f64(dirs: &[PathBuf], file: &str, parse: fn(&str) -> Option<f64>) -> Option<f64> {
    dirs.iter()
        .filter_map(|d| fs::read_to_string(d.join(file)).ok())
        .filter_map(|t| parse(&t))
        .reduce(f64::min)
}

/// cgroup v2 `memory.max`: bytes, or `max` for no limit.
fn parse_memory_max(text: &str) -> Option<u64> {
    match text.trim() {
        "max" | "" => None,
        v => v.parse().ok(),
    }
}

/// cgroup v2 `cpu.max`: `$QUOTA $PERIOD` in microseconds, `max` for no quota.
fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut parts = text.split_whitespace();
    let quota = parts.next()?;
    if quota == "max" {
        return None;
    }
    let quota: f64 = quota.parse().ok()?;
    let period: f64 = parts.next().unwrap_or("100000").parse().ok()?;
    (period > 0.0 && quota > 0.0).then(|| quota / period)
}

/// cgroup v1 `memory.limit_in_bytes`: a huge number means no limit.
fn parse_v1_memory_limit(text: &str) -> Option<u64> {
    let v: u64 = text.trim().parse().ok()?;
    (v < V1_UNLIMITED).then_some(v)
}

/// cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`: quota -1 means no limit.
fn parse_v1_cpu_quota(quota: &str, period: &str) -> Option<f64> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period: i64 = period.trim().parse().ok()?;
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

// ---------------------------------------------------------------- OS

fn probe_os() -> OsInfo {
    let version = fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| os_release_pretty_name(&t))
        .or_else(System::long_os_version);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .or_else(System::kernel_version);
    let wsl_env = std::env::var_os("WSL_DISTRO_NAME").is_some_and(|v| !v.is_empty());
    OsInfo {
        name: std::env::consts::OS.to_string(),
        version,
        wsl: is_wsl(kernel.as_deref(), wsl_env),
        kernel,
    }
}

fn os_release_pretty_name(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
        .filter(|v| !v.is_empty())
}

/// WSL kernels say so in their release string (`5.15.153.1-microsoft-standard-WSL2`);
/// WSL_DISTRO_NAME covers custom kernels.
fn is_wsl(kernel: Option<&str>, wsl_distro_env: bool) -> bool {
    wsl_distro_env
        || kernel.is_some_and(|k| {
            let k = k.to_ascii_lowercase();
            k.contains("microsoft") || k.contains("wsl")
        })
}

// ---------------------------------------------------------------- GPUs

fn probe_gpus(apple: Option<&AppleInfo>) -> (Vec<GpuInfo>, Option<String>) {
    let mut gpus = Vec::new();
    let mut reasons = Vec::new();

    if !cfg!(target_os = "macos") {
        match nvidia_gpus() {
            Ok(found) if !found.is_empty() => gpus.extend(found),
            Ok(_) => reasons.push("NVIDIA driver loaded but it reports no GPU".to_string()),
            Err(reason) => reasons.push(reason),
        }
    }

    let amd = amd_gpus(Path::new("/sys/class/drm"));
    if amd.is_empty() {
        if cfg!(target_os = "linux") {
            reasons.push("no AMD GPU under /sys/class/drm".to_string());
        }
    } else {
        gpus.extend(amd);
    }

    match apple {
        Some(a) => gpus.push(GpuInfo {
            vendor: GpuVendor::Apple,
            name: a.chip.clone(),
            vram_total_bytes: a.metal_working_set_bytes,
            vram_free_bytes: None,
            compute_capability: None,
            driver_version: None,
            cuda_version: None,
        }),
        None if cfg!(target_os = "macos") => {
            reasons.push("not Apple Silicon: no Metal GPU offload for Ollama".to_string())
        }
        None => {}
    }

    let reason = gpus.is_empty().then(|| {
        if reasons.is_empty() {
            "no supported GPU found".to_string()
        } else {
            reasons.join("; ")
        }
    });
    (gpus, reason)
}

#[cfg(windows)]
const NVML_LIB: &str = "nvml.dll";
#[cfg(not(windows))]
const NVML_LIB: &str = "libnvidia-ml.so.1";

/// NVML is loaded once per process: dlopen plus driver attach costs tens of
/// milliseconds with a GPU, and the outcome does not change while we run (a
/// driver installed later needs a restart of the server, as it does of Ollama).
static NVML: OnceLock<Result<Nvml, String>> = OnceLock::new();

fn nvml() -> Result<&'static Nvml, String> {
    NVML.get_or_init(|| {
        Nvml::init().map_err(|e| {
            tracing::debug!(error = %e, "NVML unavailable");
            nvml_reason(&e)
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Turns NVML's error codes into the sentence a person needs.
fn nvml_reason(e: &NvmlError) -> String {
    match e {
        NvmlError::LibloadingError(_) => {
            format!("{NVML_LIB} not found: no NVIDIA driver installed")
        }
        NvmlError::DriverNotLoaded => {
            "NVIDIA driver not loaded (libnvidia-ml is installed but the kernel module is not running; check `nvidia-smi`)".to_string()
        }
        NvmlError::NoPermission => {
            "no permission to open /dev/nvidia* (check the device permissions, or that the container was given the GPU)".to_string()
        }
        NvmlError::LibRmVersionMismatch => {
            "NVIDIA driver and libnvidia-ml versions differ (reboot after the driver upgrade)".to_string()
        }
        NvmlError::FailedToLoadSymbol(sym) => {
            format!("{NVML_LIB} is too old for this program (missing {sym}); update the NVIDIA driver")
        }
        NvmlError::GpuLost => "an NVIDIA GPU fell off the bus (check `dmesg`)".to_string(),
        other => format!("NVML failed: {other}"),
    }
}

/// NVIDIA GPUs through NVML (loaded once), with free memory; blocking.
pub fn nvidia_gpus() -> Result<Vec<GpuInfo>, String> {
    let nvml = nvml()?;
    let count = nvml.device_count().map_err(|e| nvml_reason(&e))?;
    let driver_version = nvml.sys_driver_version().ok();
    let cuda_version = nvml.sys_cuda_driver_version().ok().map(|v| {
        format!(
            "{}.{}",
            nvml_wrapper::cuda_driver_version_major(v),
            nvml_wrapper::cuda_driver_version_minor(v)
        )
    });
    let mut gpus = Vec::new();
    let mut first_error = None;
    for index in 0..count {
        let device = match nvml.device_by_index(index) {
            Ok(d) => d,
            Err(e) => {
                first_error.get_or_insert_with(|| nvml_reason(&e));
                continue;
            }
        };
        let memory = match device.memory_info() {
            Ok(m) => m,
            Err(e) => {
                first_error.get_or_insert_with(|| nvml_reason(&e));
                continue;
            }
        };
        gpus.push(GpuInfo {
            vendor: GpuVendor::Nvidia,
            name: device
                .name()
                .unwrap_or_else(|_| format!("NVIDIA GPU {index}")),
            vram_total_bytes: memory.total,
            vram_free_bytes: Some(memory.free),
            compute_capability: device
                .cuda_compute_capability()
                .ok()
                .map(|c| format!("{}.{}", c.major, c.minor)),
            driver_version: driver_version.clone(),
            cuda_version: cuda_version.clone(),
        });
    }
    match first_error {
        Some(reason) if gpus.is_empty() => Err(reason),
        _ => Ok(gpus),
    }
}

/// AMD GPUs driven by amdgpu, which publishes VRAM size and use in sysfs.
/// Cards without those files (the old radeon driver) cannot be sized and are
/// left out. `drm` is a parameter so tests can point it at a fixture tree.
fn amd_gpus(drm: &Path) -> Vec<GpuInfo> {
    let Ok(entries) = fs::read_dir(drm) else {
        return Vec::new();
    };
    let mut cards: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n: u32 = name.strip_prefix("card")?.parse().ok()?;
            Some((n, e.path().join("device")))
        })
        .collect();
    cards.sort();

    let read = |dir: &Path, file: &str| -> Option<String> {
        fs::read_to_string(dir.join(file))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let mut seen = BTreeSet::new();
    let mut gpus = Vec::new();
    for (_, dev) in cards {
        if read(&dev, "vendor").as_deref() != Some("0x1002") {
            continue;
        }
        let key = fs::canonicalize(&dev).unwrap_or_else(|_| dev.clone());
        if !seen.insert(key) {
            continue;
        }
        let Some(total) = read(&dev, "mem_info_vram_total").and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        let used = read(&dev, "mem_info_vram_used").and_then(|v| v.parse::<u64>().ok());
        let name = read(&dev, "product_name").unwrap_or_else(|| {
            format!(
                "AMD GPU {}",
                read(&dev, "device").unwrap_or_else(|| "unknown".to_string())
            )
        });
        gpus.push(GpuInfo {
            vendor: GpuVendor::Amd,
            name,
            vram_total_bytes: total,
            vram_free_bytes: used.map(|u| total.saturating_sub(u)),
            compute_capability: None,
            driver_version: None,
            cuda_version: None,
        });
    }
    gpus
}

// ---------------------------------------------------------------- Apple

/// Apple Silicon only: Intel Macs have no unified memory for Metal to share.
/// sysctl is called by absolute path because MCP clients launched from the
/// Dock (Claude Desktop) start servers with a PATH that lacks /usr/sbin.
fn probe_apple() -> Option<AppleInfo> {
    if !cfg!(target_os = "macos") {
        return None;
    }
    let chip = sysctl("machdep.cpu.brand_string")?;
    if !chip.starts_with("Apple") {
        return None;
    }
    let memory: u64 = sysctl("hw.memsize")?.parse().ok()?;
    Some(AppleInfo {
        chip,
        unified_memory_bytes: memory,
        metal_working_set_bytes: metal_working_set(memory),
    })
}

fn sysctl(name: &str) -> Option<String> {
    let out = std::process::Command::new("/usr/sbin/sysctl")
        .args(["-n", name])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let value = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!value.is_empty()).then_some(value)
}

/// How much of unified memory Metal lets one process wire by default
/// (`recommendedMaxWorkingSetSize`): about 2/3 up to 32 GiB, 3/4 above.
fn metal_working_set(memory: u64) -> u64 {
    const GIB_32: u64 = 32 << 30;
    if memory <= GIB_32 {
        memory / 3 * 2
    } else {
        memory / 4 * 3
    }
}

// ---------------------------------------------------------------- disk

/// Free and total bytes of the filesystem that holds (or will hold) the stack.
/// A stack directory that does not exist yet is measured at its nearest
/// existing parent, which is where it will be created.
fn probe_disk(stack_dir: &Path) -> DiskInfo {
    let shown = std::path::absolute(stack_dir).unwrap_or_else(|_| stack_dir.to_path_buf());
    let measured = shown
        .ancestors()
        .find(|p| p.exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| shown.clone());
    DiskInfo {
        path: shown.display().to_string(),
        free_bytes: fs4::available_space(&measured).ok(),
        total_bytes: fs4::total_space(&measured).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn logical_cores_match_nproc() {
        let out = std::process::Command::new("nproc")
            .env_remove("OMP_NUM_THREADS")
            .env_remove("OMP_THREAD_LIMIT")
            .output()
            .expect("nproc runs");
        let nproc: u32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("nproc prints a number");
        let host = probe_host(Path::new("."));
        assert_eq!(host.cpu.logical_cores, nproc);
        assert_eq!(host.cpu.arch, std::env::consts::ARCH);
        assert!(!host.cpu.model.is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn memory_total_matches_proc_meminfo() {
        let text = fs::read_to_string("/proc/meminfo").expect("linux");
        let kib: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("MemTotal");
        let mem = probe_memory();
        assert_eq!(mem.total_bytes, kib * 1024);
        assert!(mem.available_bytes > 0 && mem.available_bytes <= mem.total_bytes);
    }

    /// True on the build machines: no NVIDIA library and no DRM devices.
    fn gpu_less_host() -> bool {
        matches!(Nvml::init(), Err(NvmlError::LibloadingError(_)))
            && !Path::new("/sys/class/drm").exists()
    }

    #[test]
    fn gpus_or_a_reason() {
        let host = probe_host(Path::new("."));
        assert_eq!(host.gpus.is_empty(), host.gpu_absent_reason.is_some());
        if cfg!(target_os = "linux") && gpu_less_host() {
            assert!(host.gpus.is_empty(), "{:?}", host.gpus);
            assert_eq!(
                host.gpu_absent_reason.as_deref(),
                Some("libnvidia-ml.so.1 not found: no NVIDIA driver installed; no AMD GPU under /sys/class/drm")
            );
            assert!(host.apple.is_none());
        }
    }

    #[test]
    fn nvml_errors_become_sentences() {
        assert_eq!(
            nvml_reason(&NvmlError::DriverNotLoaded),
            "NVIDIA driver not loaded (libnvidia-ml is installed but the kernel module is not running; check `nvidia-smi`)"
        );
        assert!(
            nvml_reason(&NvmlError::NoPermission).starts_with("no permission to open /dev/nvidia*")
        );
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpu_list("0-1\n"), Some(2));
        assert_eq!(count_cpu_list("0-3,8,10-11"), Some(7));
        assert_eq!(count_cpu_list("5"), Some(1));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
    }

    #[test]
    fn simd_flags_from_cpuinfo() {
        let x86 = "processor\t: 0\nflags\t\t: fpu sse4_2 avx f16c fma avx2 avx512f avx512bw avx512_vnni amx_tile sha_ni\n";
        assert_eq!(
            simd_from_cpuinfo(x86),
            [
                "sse4_2",
                "avx",
                "avx2",
                "fma",
                "f16c",
                "avx512f",
                "avx512bw",
                "avx512_vnni",
                "amx_tile"
            ]
        );
        let arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes asimddp sve i8mm\n";
        assert_eq!(simd_from_cpuinfo(arm), ["neon", "dotprod", "i8mm", "sve"]);
        assert!(simd_from_cpuinfo("nothing: here").is_empty());
        // This machine (x86_64) reports at least SSE4.2 either way.
        if cfg!(target_arch = "x86_64") {
            assert!(probe_cpu().simd.iter().any(|f| f == "sse4_2"));
            assert!(simd_detected().iter().any(|f| f == "sse4_2"));
        }
    }

    #[test]
    fn meminfo_is_parsed() {
        let text = "MemTotal:       24684092 kB\nMemFree:        24374608 kB\nMemAvailable:   24348968 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Some(MemoryInfo {
                total_bytes: 24684092 * 1024,
                available_bytes: 24348968 * 1024
            })
        );
        let old = "MemTotal: 1000 kB\nMemFree: 10 kB\n";
        assert_eq!(parse_meminfo(old).map(|m| m.available_bytes), Some(10240));
        assert_eq!(parse_meminfo("garbage"), None);
    }

    #[test]
    fn cgroup_v2_files_are_parsed() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2.0));
        assert_eq!(parse_cpu_max("50000 100000"), Some(0.5));
        assert_eq!(parse_memory_max("max\n"), None);
        assert_eq!(parse_memory_max("1073741824\n"), Some(1 << 30));
        assert_eq!(parse_v1_memory_limit("9223372036854771712\n"), None);
        assert_eq!(parse_v1_memory_limit("536870912"), Some(512 << 20));
        assert_eq!(parse_v1_cpu_quota("-1", "100000"), None);
        assert_eq!(parse_v1_cpu_quota("150000\n", "100000\n"), Some(1.5));
    }

    #[test]
    fn proc_cgroup_and_mountinfo_are_parsed() {
        let cg = parse_proc_cgroup(
            "4:memory:/process_api/abc\n1:cpu,cpuacct:/x\n0::/user.slice/app.scope\n",
        );
        assert_eq!(cg.v2.as_deref(), Some("/user.slice/app.scope"));
        assert_eq!(cg.v1_path("memory"), Some("/process_api/abc"));
        assert_eq!(cg.v1_path("cpuacct"), Some("/x"));
        assert_eq!(cg.v1_path("pids"), None);

        let mounts = parse_cgroup_mounts(
            "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
             35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
             41 31 0:38 /docker/abc /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n",
        );
        assert_eq!(mounts.len(), 2);
        assert!(!mounts[0].v2 && mounts[0].controllers.contains(&"memory".to_string()));
        assert!(mounts[1].v2);
        assert_eq!(mounts[1].root, "/docker/abc");
        assert_eq!(
            mounts[1].mount_point,
            PathBuf::from("/sys/fs/cgroup/unified")
        );
    }

    #[test]
    fn cgroup_limits_walk_from_leaf_to_mount_root() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let leaf = root.join("system.slice/app.scope");
        fs::create_dir_all(&leaf).expect("mkdir");
        fs::write(root.join("system.slice/memory.max"), "1073741824\n").expect("write");
        fs::write(leaf.join("memory.max"), "max\n").expect("write");
        fs::write(leaf.join("cpu.max"), "200000 100000\n").expect("write");
        let mount = CgroupMount {
            v2: true,
            root: "/".to_string(),
            mount_point: root.to_path_buf(),
            controllers: Vec::new(),
        };
        let dirs = cgroup_dirs(&mount, "/system.slice/app.scope");
        assert_eq!(dirs.len(), 3);
        assert_eq!(dirs[0], leaf);
        assert_eq!(
            min_over(&dirs, "memory.max", parse_memory_max),
            Some(1 << 30)
        );
        assert_eq!(min_over_f64(&dirs, "cpu.max", parse_cpu_max), Some(2.0));

        // A container without a cgroup namespace: the mount shows /docker/abc as
        // its root and /proc/self/cgroup names the same path.
        let nested = CgroupMount {
            root: "/docker/abc".to_string(),
            ..mount
        };
        assert_eq!(
            cgroup_dirs(&nested, "/docker/abc"),
            vec![root.to_path_buf()]
        );
        // A path outside the mount's root: only the mount point is read.
        assert_eq!(cgroup_dirs(&nested, "/other"), vec![root.to_path_buf()]);
    }

    #[test]
    fn probe_cgroup_does_not_panic_here() {
        // This machine has a hybrid hierarchy with no limits set; whatever the
        // host, a found limit must be positive.
        if let Some(cg) = probe_cgroup() {
            assert!(cg.memory_limit_bytes.is_none_or(|m| m > 0));
            assert!(cg.cpu_quota_cores.is_none_or(|c| c > 0.0));
        }
    }

    #[test]
    fn amd_cards_are_read_from_sysfs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let drm = tmp.path();
        let card = |name: &str, files: &[(&str, &str)]| {
            let dev = drm.join(name).join("device");
            fs::create_dir_all(&dev).expect("mkdir");
            for (f, v) in files {
                fs::write(dev.join(f), format!("{v}\n")).expect("write");
            }
        };
        card(
            "card1",
            &[
                ("vendor", "0x1002"),
                ("device", "0x744c"),
                ("mem_info_vram_total", "25753026560"),
                ("mem_info_vram_used", "1073741824"),
            ],
        );
        card("card0", &[("vendor", "0x8086"), ("device", "0x46a6")]);
        card(
            "card2",
            &[
                ("vendor", "0x1002"),
                ("product_name", "AMD Radeon PRO W7900"),
                ("mem_info_vram_total", "48301604864"),
            ],
        );
        card("card3", &[("vendor", "0x1002")]); // radeon driver: no VRAM files
        fs::create_dir_all(drm.join("card1-DP-1")).expect("mkdir");

        let gpus = amd_gpus(drm);
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].name, "AMD GPU 0x744c");
        assert_eq!(gpus[0].vram_total_bytes, 25753026560);
        assert_eq!(gpus[0].vram_free_bytes, Some(25753026560 - 1073741824));
        assert_eq!(gpus[1].name, "AMD Radeon PRO W7900");
        assert_eq!(gpus[1].vram_free_bytes, None);
        assert!(amd_gpus(&drm.join("missing")).is_empty());
    }

    #[test]
    fn metal_working_set_follows_apple_defaults() {
        let gib = 1u64 << 30;
        assert_eq!(metal_working_set(24 * gib), 16 * gib);
        assert_eq!(metal_working_set(32 * gib), 32 * gib / 3 * 2);
        assert_eq!(metal_working_set(64 * gib), 48 * gib);
        assert_eq!(metal_working_set(128 * gib), 96 * gib);
    }

    #[test]
    fn os_facts() {
        let os = probe_os();
        assert_eq!(os.name, std::env::consts::OS);
        assert!(os.kernel.is_some());
        assert_eq!(
            os_release_pretty_name(
                "NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"
            ),
            Some("Debian GNU/Linux 12 (bookworm)".to_string())
        );
        assert!(is_wsl(Some("5.15.153.1-microsoft-standard-WSL2"), false));
        assert!(is_wsl(Some("4.4.0-19041-Microsoft"), false));
        assert!(is_wsl(Some("6.1.0"), true));
        assert!(!is_wsl(Some("6.18.44-fc-v657"), false));
    }

    #[test]
    fn disk_of_a_missing_stack_dir_is_its_parent() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let missing = tmp.path().join("not/yet/created");
        let disk = probe_disk(&missing);
        assert_eq!(disk.path, missing.display().to_string());
        let (free, total) = (
            disk.free_bytes.expect("free"),
            disk.total_bytes.expect("total"),
        );
        assert!(total > 0 && free <= total);
    }
}
