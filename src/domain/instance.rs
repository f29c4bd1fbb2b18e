//! What an engine observes of the running stack, in engine-neutral terms: an
//! instance is one running unit of a service (a container on Compose, a pod
//! on Kubernetes). Tools reason over these; the engines fill them in.
use std::collections::BTreeMap;

use crate::domain::stack_model::PublishedPort;

/// One instance of a service, as a list shows it (cheap: no inspect).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Instance {
    /// The engine's id: a container id, or a pod's name in its namespace.
    pub id: String,
    /// The name a person sees (container name, pod name).
    pub name: String,
    /// The project it belongs to (compose's project label); None when it has none.
    pub project: Option<String>,
    /// The compose service it runs; empty for containers outside any compose project.
    pub service: String,
    /// Compose's container number, or a StatefulSet pod's ordinal.
    pub number: Option<u32>,
    /// `running`, `exited`, `created`, `restarting`, `paused`, `dead`,
    /// `removing`; Kubernetes phases are mapped onto these.
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or None without a health check.
    pub health: Option<String>,
    /// The image reference it runs.
    pub image: Option<String>,
    /// The local image id it was created from (compose's image label, else the
    /// engine's image id).
    pub image_id: Option<String>,
    /// Host ports it publishes (every binding as the engine lists it).
    pub ports: Vec<PublishedPort>,
    /// stackpilot's role label (`io.stackpilot.role`), when set.
    pub role: Option<String>,
    /// Marked as stackpilot's own container (`io.stackpilot.self`).
    pub is_self: bool,
    /// Compose's config hash label: differs from `config --hash` when `up`
    /// would recreate it.
    pub config_hash: Option<String>,
    /// A one-off (`compose run`) container, not a service instance.
    pub one_off: bool,
    /// Named volumes it mounts (engine names).
    pub volumes: Vec<String>,
    /// Networks it is attached to (engine names).
    pub networks: Vec<String>,
}

impl Instance {
    pub fn running(&self) -> bool {
        self.state == "running"
    }
}

/// One result of a health probe as the engine recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthRecord {
    pub exit_code: Option<i64>,
    /// RFC 3339.
    pub end: Option<String>,
    /// What the probe printed: container output, untrusted and unredacted.
    pub output: String,
}

/// An instance inspected: everything health, status and recover read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InstanceDetail {
    pub instance: Instance,
    /// Running and not restarting.
    pub serving: bool,
    /// The engine's recent health probe results, oldest first.
    pub health_log: Vec<HealthRecord>,
    pub failing_streak: Option<i64>,
    pub restart_count: i64,
    pub oom_killed: bool,
    /// The last exit code (0 while it never exited).
    pub exit_code: Option<i64>,
    /// RFC 3339; None when never started.
    pub started_at: Option<String>,
    /// RFC 3339; None when never finished.
    pub finished_at: Option<String>,
    /// `always`, `unless-stopped`, `on-failure:3`, `no`.
    pub restart_policy: Option<String>,
    /// The engine's own error about it (a failed start).
    pub error: Option<String>,
    /// Memory limit in bytes (0 or None: unlimited).
    pub memory_limit: Option<i64>,
    /// Labels, for engine-specific readers (kept small: compose and stackpilot labels).
    pub labels: BTreeMap<String, String>,
    /// Its environment (`KEY=value`): read for connection settings and to
    /// mask the secret values in what it prints; never echoed.
    pub env: Vec<String>,
    /// Its command (entrypoint arguments as configured): read for options such
    /// as Redis's `--requirepass`; never echoed.
    pub cmd: Vec<String>,
}

/// What the engine itself is and has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineFacts {
    /// An `nvidia` runtime (Docker) or `nvidia.com/gpu` capacity (Kubernetes).
    pub nvidia_runtime: bool,
    /// Where the engine keeps images and volumes (`/var/lib/docker`), when known.
    pub data_root: Option<String>,
    /// The engine runs on this machine, so its paths and host ports are this machine's.
    pub local: bool,
}

/// A named volume of the stack as the engine knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// The engine's name (`<project>_<volume>` on Compose, a PVC on Kubernetes).
    pub name: String,
    /// The compose file's name for it, when labelled.
    pub compose_name: Option<String>,
}
