//! The labels stackpilot puts on every object it renders: the
//! app.kubernetes.io set (so other tools understand them) and stackpilot's
//! own (so status, health and backups find a service's pods, its role and
//! its claims without reading the compose file on the cluster).
use std::collections::BTreeMap;

pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "stackpilot";
/// The compose project.
pub const PROJECT: &str = "io.stackpilot/project";
/// The compose service (its original name, when it is a valid label value).
pub const SERVICE: &str = "io.stackpilot/service";
pub const ROLE: &str = "io.stackpilot/role";
/// On claims: the compose volume they hold.
pub const VOLUME: &str = "io.stackpilot/volume";
/// On helper pods (volume backups and restores).
pub const HELPER: &str = "io.stackpilot/helper";
/// On pod templates: a keyed digest of the service's ConfigMap and Secret, so
/// an .env change rolls exactly the workloads that read it.
pub const CONFIG_DIGEST: &str = "io.stackpilot/config-digest";
/// On workloads scaled to 0 by `stop`: the replicas to restore.
pub const STOPPED_REPLICAS: &str = "io.stackpilot/stopped-replicas";
/// On pod templates: set by a rollout restart (`recover` recreate).
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "stackpilot";

/// The selector of everything of one project that stackpilot manages.
pub fn project_selector(project: &str) -> String {
    format!("{MANAGED_BY}={MANAGER},{INSTANCE}={project}")
}

/// The labels of one service's objects (workload, pods, Service, claims).
pub fn service_labels(project: &str, service: &str, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_string(), service.to_string()),
        (INSTANCE.to_string(), project.to_string()),
        (COMPONENT.to_string(), role.to_string()),
        (PART_OF.to_string(), project.to_string()),
        (MANAGED_BY.to_string(), MANAGER.to_string()),
        (PROJECT.to_string(), project.to_string()),
        (SERVICE.to_string(), service.to_string()),
        (ROLE.to_string(), role.to_string()),
    ])
}

/// The labels of project-wide objects (NetworkPolicies).
pub fn project_labels(project: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (INSTANCE.to_string(), project.to_string()),
        (PART_OF.to_string(), project.to_string()),
        (MANAGED_BY.to_string(), MANAGER.to_string()),
        (PROJECT.to_string(), project.to_string()),
    ])
}

/// What a workload's selector matches (immutable once created: kept minimal).
pub fn selector(project: &str, service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_string(), service.to_string()),
        (INSTANCE.to_string(), project.to_string()),
    ])
}
