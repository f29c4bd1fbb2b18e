//! The stack model: the compose project as stackpilot reasons over it
//! (services with their role, health, backup policy, named volumes, published
//! ports and GPU reservations; stack-wide x-stackpilot settings), built from
//! compose's own normalized output. Pure: the engine runs compose, this reads
//! what it printed.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::error::ToolError;
/// What a service is to stackpilot. The JSON names are stable (`ollama`, `postgres`,
/// `mongodb`, `redis`, `mysql`, `qdrant`, `api`, `worker`, `volume`, `other`).
#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Ollama,
    Postgres,
    Mongodb,
    Qdrant,
    Api,
    Worker,
    Volume,
    Other,
    /// Redis and the servers that speak its protocol and ship `redis-cli` (Valkey).
    Redis,
    /// MySQL and MariaDB.
    Mysql,
}

/// Where a service's role came from, so an agent sees what stackpilot guessed.
#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord, Default,
)]
pub enum RoleSource {
    /// The `io.stackpilot.role` label.
    #[serde(rename = "label")]
    Label,
    /// The service's `x-stackpilot` block.
    #[serde(rename = "x-stackpilot")]
    XStackpilot,
    /// Guessed from the image name (no label, no block).
    #[serde(rename = "image")]
    Image,
    /// Nothing said or suggested one: the role is `other`.
    #[default]
    #[serde(rename = "none")]
    None,
}

impl RoleSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleSource::Label => "label",
            RoleSource::XStackpilot => "x-stackpilot",
            RoleSource::Image => "image",
            RoleSource::None => "none",
        }
    }
}

/// Parts of an image's repository name that mark a tool around a data store (a web UI, an
/// exporter, a proxy) rather than the store itself: `mongo-express`, `redis-commander`,
/// `postgres-exporter`, `redisinsight` are not databases.
const TOOL_TOKENS: [&str; 18] = [
    "exporter",
    "express",
    "commander",
    "insight",
    "admin",
    "adminer",
    "ui",
    "webui",
    "web",
    "gui",
    "browser",
    "backup",
    "operator",
    "proxy",
    "sentinel",
    "cli",
    "client",
    "bouncer",
];

impl Role {
    pub const NAMES: [&'static str; 10] = [
        "ollama", "postgres", "mongodb", "redis", "mysql", "qdrant", "api", "worker", "volume",
        "other",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ollama => "ollama",
            Role::Postgres => "postgres",
            Role::Mongodb => "mongodb",
            Role::Redis => "redis",
            Role::Mysql => "mysql",
            Role::Qdrant => "qdrant",
            Role::Api => "api",
            Role::Worker => "worker",
            Role::Volume => "volume",
            Role::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "ollama" => Role::Ollama,
            "postgres" | "postgresql" => Role::Postgres,
            "mongodb" | "mongo" => Role::Mongodb,
            "redis" | "valkey" => Role::Redis,
            "mysql" | "mariadb" => Role::Mysql,
            "qdrant" => Role::Qdrant,
            "api" => Role::Api,
            "worker" => Role::Worker,
            "volume" => Role::Volume,
            "other" => Role::Other,
            _ => return None,
        })
    }

    /// The role an image name suggests, when neither a label nor an x-stackpilot block names
    /// one: a token of the repository's last path component (split at `-`, `_`, `.`) that
    /// names a store (postgres, postgresql, postgis, timescaledb, pgvector; mongo, mongodb;
    /// redis, valkey; mysql, mariadb, percona; qdrant; ollama), unless another token marks a
    /// tool around it (`mongo-express`, `postgres-exporter`).
    pub fn from_image(image: &str) -> Role {
        let repo = image
            .rsplit('/')
            .next()
            .unwrap_or(image)
            .split([':', '@'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let tokens: Vec<&str> = repo.split(['-', '_', '.']).collect();
        if tokens.iter().any(|t| TOOL_TOKENS.contains(t)) {
            return Role::Other;
        }
        tokens
            .iter()
            .find_map(|t| {
                Some(match *t {
                    "ollama" => Role::Ollama,
                    "postgres" | "postgresql" | "postgis" | "timescaledb" | "pgvector" => {
                        Role::Postgres
                    }
                    "mongo" | "mongodb" => Role::Mongodb,
                    "redis" | "valkey" => Role::Redis,
                    "mysql" | "mariadb" | "percona" => Role::Mysql,
                    "qdrant" => Role::Qdrant,
                    _ => return None,
                })
            })
            .unwrap_or(Role::Other)
    }

    /// The port the role's server listens on by default inside the network.
    pub fn default_port(self) -> Option<u16> {
        match self {
            Role::Ollama => Some(11434),
            Role::Postgres => Some(5432),
            Role::Mongodb => Some(27017),
            Role::Redis => Some(6379),
            Role::Mysql => Some(3306),
            Role::Qdrant => Some(6333),
            _ => None,
        }
    }

    /// Services whose recreation can lose or interrupt data.
    pub fn holds_data(self) -> bool {
        matches!(
            self,
            Role::Ollama
                | Role::Postgres
                | Role::Mongodb
                | Role::Redis
                | Role::Mysql
                | Role::Qdrant
                | Role::Volume
        )
    }
}

/// A port published on the host.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
pub struct PublishedPort {
    /// Host address ("" or 0.0.0.0 means every interface).
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
}

/// One service of the resolved compose model.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ServiceModel {
    pub name: String,
    pub image: Option<String>,
    /// Has a `build` section (compose builds the image when it is missing).
    pub build: bool,
    pub pull_policy: Option<String>,
    pub role: Role,
    /// Where `role` came from: a label, the x-stackpilot block, the image name, or nothing.
    #[serde(default)]
    pub role_source: RoleSource,
    /// x-stackpilot health: an HTTP path (`/health`) or a command.
    pub health: Option<String>,
    /// x-stackpilot backup: `pg_dump`, `mongodump`, `volume` or `none`.
    pub backup: Option<String>,
    /// x-stackpilot `stop_during_backup` (label `io.stackpilot.stop_during_backup`):
    /// stop the service while its volumes are copied, for a consistent copy.
    #[serde(default)]
    pub stop_during_backup: bool,
    /// The service has a compose healthcheck.
    pub healthcheck: bool,
    /// Named volumes it mounts (compose names, before the project prefix).
    pub named_volumes: Vec<String>,
    pub ports: Vec<PublishedPort>,
    /// Container ports the service listens on inside the network (`expose` and the targets
    /// of `ports`), sorted.
    #[serde(default)]
    pub container_ports: Vec<u16>,
    /// Reserves an NVIDIA GPU (deploy.resources.reservations.devices).
    pub gpu: bool,
    pub profiles: Vec<String>,
    /// Services this one depends on (compose starts them with it).
    pub depends_on: Vec<String>,
    /// A fixed `container_name`: compose can run only one container of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
}

/// How a declared task runs.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TaskMode {
    /// A one-off container of the service (`docker compose run --rm --no-deps`).
    #[default]
    Run,
    /// Inside the service's running container (`docker exec`).
    Exec,
}

/// A command the stack declares (top-level `x-stackpilot: tasks:`), the only
/// commands run_task runs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct TaskSpec {
    pub name: String,
    /// The service whose image (run) or container (exec) runs it.
    pub service: String,
    /// The program and its arguments (exec form; no shell unless the command names one).
    pub command: Vec<String>,
    /// Changes or removes data: run_task asks for confirmation first.
    pub destructive: bool,
    pub mode: TaskMode,
    /// Seconds it may run (default 600, at most 3600).
    pub timeout_s: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Why the declaration cannot run (listed, never run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}

/// A declared task's default and longest run time.
pub const TASK_DEFAULT_TIMEOUT_S: u64 = 600;
pub const TASK_MAX_TIMEOUT_S: u64 = 3600;

/// Task names: what a person types, safe in a plan and a log line.
pub fn valid_task_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The `tasks` map of the top-level x-stackpilot block. Each entry is
/// `{service, command: [..], destructive: bool, mode: run|exec, timeout_s,
/// description}`; a malformed one is kept with the reason in `invalid`, so
/// run_task can say what is wrong with it instead of pretending it is absent.
pub fn tasks_from(block: Option<&Value>) -> BTreeMap<String, TaskSpec> {
    let mut out = BTreeMap::new();
    let Some(Value::Object(tasks)) = block else {
        return out;
    };
    for (name, decl) in tasks {
        let mut problems: Vec<String> = Vec::new();
        if !valid_task_name(name) {
            problems.push("the name must be 1-64 letters, digits, `_`, `-` or `.`".into());
        }
        let field = |k: &str| decl.get(k);
        let service = field("service").and_then(str_of).unwrap_or_default();
        if service.is_empty() {
            problems.push("`service` is missing".into());
        }
        let command: Vec<String> = match field("command") {
            Some(Value::Array(items)) if !items.is_empty() => {
                // `docker compose config` prints a literal `$` as `$$` (so its
                // output reads back the same); the command gets the literal.
                let parts: Vec<Option<String>> = items
                    .iter()
                    .map(|v| str_of(v).map(|s| s.replace("$$", "$")))
                    .collect();
                if parts.iter().any(Option::is_none) {
                    problems.push("`command` must be a list of strings".into());
                }
                parts.into_iter().flatten().collect()
            }
            Some(Value::String(_)) => {
                problems.push(
                    "`command` must be a list of strings (exec form: [\"program\", \"arg\"]), not one string".into(),
                );
                Vec::new()
            }
            _ => {
                problems.push("`command` is missing or empty".into());
                Vec::new()
            }
        };
        let destructive = match field("destructive") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => match str_of(v).as_deref() {
                Some("true") => true,
                Some("false") => false,
                _ => {
                    problems.push("`destructive` must be true or false".into());
                    true
                }
            },
        };
        let mode = match field("mode").and_then(str_of).as_deref() {
            None | Some("run") => TaskMode::Run,
            Some("exec") => TaskMode::Exec,
            Some(other) => {
                problems.push(format!(
                    "`mode` must be run or exec, not `{}`",
                    crate::domain::redact::cap(other, 40)
                ));
                TaskMode::Run
            }
        };
        let timeout_s = match field("timeout_s") {
            None | Some(Value::Null) => TASK_DEFAULT_TIMEOUT_S,
            Some(v) => match str_of(v).and_then(|t| t.parse::<u64>().ok()) {
                Some(t) if (1..=TASK_MAX_TIMEOUT_S).contains(&t) => t,
                _ => {
                    problems.push(format!("`timeout_s` must be 1 to {TASK_MAX_TIMEOUT_S}"));
                    TASK_DEFAULT_TIMEOUT_S
                }
            },
        };
        out.insert(
            name.clone(),
            TaskSpec {
                name: name.clone(),
                service,
                command,
                destructive,
                mode,
                timeout_s,
                description: field("description")
                    .and_then(str_of)
                    .map(|d| crate::domain::redact::cap(&d, 300)),
                invalid: (!problems.is_empty()).then(|| problems.join("; ")),
            },
        );
    }
    out
}

/// Stack-wide settings from the top-level `x-stackpilot` block.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct StackSettings {
    /// Absolute backup root (default `<stack>/backups`).
    pub backup_root: PathBuf,
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    /// Image for volume backups when the service's own image has no `tar`
    /// (x-stackpilot `backup_helper_image`; default `busybox:stable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_helper_image: Option<String>,
}

/// The resolved stack for one set of profiles.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct StackModel {
    pub project: String,
    pub profiles: Vec<String>,
    /// By service name.
    pub services: BTreeMap<String, ServiceModel>,
    /// Top-level named volumes (compose names).
    pub volumes: Vec<String>,
    pub settings: StackSettings,
    /// The secret values of the services' `environment:` (keys that name a
    /// secret, URL passwords): learned so outputs can be masked. Never output.
    #[serde(skip)]
    #[schemars(skip)]
    pub secret_values: Vec<String>,
    /// Declared tasks (top-level x-stackpilot `tasks`), by name.
    #[serde(default)]
    pub tasks: BTreeMap<String, TaskSpec>,
}

impl StackModel {
    pub fn service(&self, name: &str) -> Result<&ServiceModel, ToolError> {
        self.services.get(name).ok_or_else(|| {
            ToolError::invalid(
                "services",
                format!(
                    "unknown service `{}`",
                    crate::domain::redact::cap(name, 100)
                ),
            )
            .allowed(self.services.keys().cloned())
        })
    }

    /// The port a TCP probe inside the network dials: the role's default port when the
    /// service exposes it (or exposes nothing), else the first port it exposes.
    pub fn probe_port(svc: &ServiceModel) -> Option<u16> {
        match svc.role.default_port() {
            Some(p) if svc.container_ports.is_empty() || svc.container_ports.contains(&p) => {
                Some(p)
            }
            _ => svc.container_ports.first().copied(),
        }
    }

    /// Services with a role, sorted by name.
    pub fn with_role(&self, role: Role) -> Vec<&ServiceModel> {
        self.services.values().filter(|s| s.role == role).collect()
    }
}

fn str_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn port_of(v: &Value) -> Option<u16> {
    str_of(v).and_then(|s| s.parse().ok())
}

/// Builds the stack model from compose's normalized JSON and YAML forms.
pub fn model_from_config(
    json: &Value,
    yaml: &Value,
    dir: &Path,
    profiles: &[String],
) -> StackModel {
    let project = json.get("name").and_then(str_of).unwrap_or_default();
    let mut services = BTreeMap::new();
    if let Some(Value::Object(svcs)) = json.get("services") {
        for (name, svc) in svcs {
            let labels = svc.get("labels").cloned().unwrap_or(Value::Null);
            let label = |k: &str| labels.get(k).and_then(str_of);
            let x = yaml
                .get("services")
                .and_then(|s| s.get(name))
                .and_then(|s| s.get("x-stackpilot"));
            let xfield = |k: &str| x.and_then(|x| x.get(k)).and_then(str_of);
            let image = svc.get("image").and_then(str_of);
            let (role, role_source) = match (
                label("io.stackpilot.role").and_then(|r| Role::parse(&r)),
                xfield("role").and_then(|r| Role::parse(&r)),
            ) {
                (Some(r), _) => (r, RoleSource::Label),
                (None, Some(r)) => (r, RoleSource::XStackpilot),
                (None, None) => match image.as_deref().map(Role::from_image) {
                    Some(r) if r != Role::Other => (r, RoleSource::Image),
                    _ => (Role::Other, RoleSource::None),
                },
            };
            let mut named_volumes: Vec<String> = svc
                .get("volumes")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter(|v| v.get("type").and_then(Value::as_str) == Some("volume"))
                        .filter_map(|v| v.get("source").and_then(str_of))
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            named_volumes.sort();
            named_volumes.dedup();
            let mut ports: Vec<PublishedPort> = svc
                .get("ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .filter_map(|p| {
                            Some(PublishedPort {
                                host_ip: p.get("host_ip").and_then(str_of).unwrap_or_default(),
                                host_port: p.get("published").and_then(port_of)?,
                                container_port: p.get("target").and_then(port_of)?,
                                protocol: p
                                    .get("protocol")
                                    .and_then(str_of)
                                    .unwrap_or_else(|| "tcp".into()),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            ports.sort();
            let mut container_ports: Vec<u16> = svc
                .get("expose")
                .and_then(Value::as_array)
                .map(|e| {
                    e.iter()
                        .filter_map(str_of)
                        .filter_map(|p| p.split(['/', '-']).next()?.trim().parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            container_ports.extend(
                svc.get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|p| p.get("protocol").and_then(Value::as_str).unwrap_or("tcp") == "tcp")
                    .filter_map(|p| p.get("target").and_then(port_of)),
            );
            container_ports.sort();
            container_ports.dedup();
            let gpu = svc
                .pointer("/deploy/resources/reservations/devices")
                .and_then(Value::as_array)
                .is_some_and(|ds| {
                    ds.iter().any(|d| {
                        d.get("driver").and_then(Value::as_str) == Some("nvidia")
                            || d.get("capabilities")
                                .and_then(Value::as_array)
                                .is_some_and(|c| c.iter().any(|c| c == "gpu"))
                    })
                });
            let healthcheck = svc.get("healthcheck").is_some_and(|h| {
                h.get("disable").and_then(Value::as_bool) != Some(true) && h.get("test").is_some()
            });
            services.insert(
                name.clone(),
                ServiceModel {
                    name: name.clone(),
                    image,
                    build: svc.get("build").is_some(),
                    pull_policy: svc.get("pull_policy").and_then(str_of),
                    role,
                    role_source,
                    // `docker compose config` escapes a literal `$` as `$$`.
                    health: label("io.stackpilot.health")
                        .or_else(|| xfield("health"))
                        .map(|h| h.replace("$$", "$")),
                    backup: label("io.stackpilot.backup").or_else(|| xfield("backup")),
                    stop_during_backup: label("io.stackpilot.stop_during_backup")
                        .or_else(|| xfield("stop_during_backup"))
                        .is_some_and(|v| matches!(v.trim(), "true" | "yes" | "1")),
                    healthcheck,
                    named_volumes,
                    ports,
                    container_ports,
                    gpu,
                    profiles: svc
                        .get("profiles")
                        .and_then(Value::as_array)
                        .map(|p| p.iter().filter_map(str_of).collect())
                        .unwrap_or_default(),
                    depends_on: svc
                        .get("depends_on")
                        .and_then(Value::as_object)
                        .map(|d| d.keys().cloned().collect())
                        .unwrap_or_default(),
                    container_name: svc.get("container_name").and_then(str_of),
                },
            );
        }
    }
    let mut volumes: Vec<String> = json
        .get("volumes")
        .and_then(Value::as_object)
        .map(|v| v.keys().cloned().collect())
        .unwrap_or_default();
    volumes.sort();
    let xs = json
        .get("x-stackpilot")
        .or_else(|| yaml.get("x-stackpilot"));
    let get_u32 = |k: &str, d: u32| {
        xs.and_then(|x| {
            x.get(k)
                .or_else(|| x.get("retention").and_then(|r| r.get(k)))
        })
        .and_then(str_of)
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
    };
    let backup_root = xs
        .and_then(|x| x.get("backup_root"))
        .and_then(str_of)
        .map(|p| dir.join(p))
        .unwrap_or_else(|| dir.join("backups"));
    let mut environment: Vec<String> = Vec::new();
    if let Some(Value::Object(svcs)) = json.get("services") {
        for svc in svcs.values() {
            match svc.get("environment") {
                Some(Value::Object(env)) => environment.extend(
                    env.iter()
                        .filter_map(|(k, v)| Some(format!("{k}={}", str_of(v)?))),
                ),
                Some(Value::Array(env)) => environment.extend(env.iter().filter_map(str_of)),
                _ => {}
            }
        }
    }
    StackModel {
        secret_values: crate::domain::redact::secret_values(&environment),
        project,
        profiles: profiles.to_vec(),
        services,
        volumes,
        settings: StackSettings {
            backup_root,
            keep_last: get_u32("keep_last", 7),
            keep_daily: get_u32("keep_daily", 0),
            keep_weekly: get_u32("keep_weekly", 0),
            backup_helper_image: xs
                .and_then(|x| x.get("backup_helper_image"))
                .and_then(str_of)
                .filter(|s| !s.trim().is_empty()),
        },
        tasks: tasks_from(xs.and_then(|x| x.get("tasks"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles_default_from_images() {
        assert_eq!(Role::from_image("ollama/ollama:0.9.6"), Role::Ollama);
        assert_eq!(Role::from_image("postgres:16-alpine"), Role::Postgres);
        assert_eq!(
            Role::from_image("docker.io/library/mongo:7.0"),
            Role::Mongodb
        );
        assert_eq!(
            Role::from_image("qdrant/qdrant:v1.13.6-unprivileged"),
            Role::Qdrant
        );
        assert_eq!(
            Role::from_image("registry.example/app@sha256:abc"),
            Role::Other
        );
    }

    #[test]
    fn unannotated_images_name_their_stores_and_tools_do_not() {
        for (image, role) in [
            ("postgres:15-alpine", Role::Postgres),
            ("postgis/postgis:16-3.4", Role::Postgres),
            ("timescale/timescaledb:latest-pg16", Role::Postgres),
            ("timescale/timescaledb-ha:pg16", Role::Postgres),
            ("pgvector/pgvector:pg16", Role::Postgres),
            ("bitnami/postgresql:16", Role::Postgres),
            ("mongo:7", Role::Mongodb),
            ("mongodb/mongodb-community-server:7.0-ubi8", Role::Mongodb),
            ("redis:7-alpine", Role::Redis),
            ("redis/redis-stack-server:latest", Role::Redis),
            ("bitnami/redis:7.2", Role::Redis),
            ("valkey/valkey:8", Role::Redis),
            ("mysql:8.4", Role::Mysql),
            ("mariadb:11", Role::Mysql),
            ("qdrant/qdrant:v1.13.6", Role::Qdrant),
            ("ollama/ollama", Role::Ollama),
            ("mongo-express", Role::Other),
            ("rediscommander/redis-commander:latest", Role::Other),
            ("redis/redisinsight:latest", Role::Other),
            ("prometheuscommunity/postgres-exporter", Role::Other),
            ("oliver006/redis_exporter", Role::Other),
            ("bitnami/redis-sentinel:7.2", Role::Other),
            ("dpage/pgadmin4", Role::Other),
            ("ghcr.io/open-webui/open-webui:main", Role::Other),
            ("adminer", Role::Other),
            ("python:3.12-slim", Role::Other),
        ] {
            assert_eq!(Role::from_image(image), role, "{image}");
        }
        for name in Role::NAMES {
            let role = Role::parse(name).expect(name);
            assert_eq!(role.as_str(), name);
            assert_eq!(serde_json::to_value(role).expect("json"), name);
        }
    }

    #[test]
    fn role_sources_are_reported() {
        let json = json!({
            "name": "demo",
            "services": {
                "a": {"image": "redis:7", "labels": {"io.stackpilot.role": "volume"}},
                "b": {"image": "redis:7"},
                "c": {"image": "redis:7"},
                "d": {"build": {"context": "."}, "expose": ["8000"], "ports": [{"target": 8001, "published": "18001", "protocol": "tcp"}]},
                "e": {"image": "busybox", "labels": {"io.stackpilot.role": "nonsense"}}
            }
        });
        let yaml = json!({"services": {"c": {"x-stackpilot": {"role": "api"}}}});
        let m = model_from_config(&json, &yaml, Path::new("/s"), &[]);
        let got: Vec<(Role, RoleSource)> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|s| (m.services[*s].role, m.services[*s].role_source))
            .collect();
        assert_eq!(
            got,
            [
                (Role::Volume, RoleSource::Label),
                (Role::Redis, RoleSource::Image),
                (Role::Api, RoleSource::XStackpilot),
                (Role::Other, RoleSource::None),
                (Role::Other, RoleSource::None),
            ]
        );
        assert_eq!(m.services["d"].container_ports, [8000, 8001]);
        assert_eq!(StackModel::probe_port(&m.services["b"]), Some(6379));
        assert_eq!(StackModel::probe_port(&m.services["d"]), Some(8000));
        assert_eq!(
            serde_json::to_value(RoleSource::XStackpilot).expect("json"),
            "x-stackpilot"
        );
    }

    #[test]
    fn model_reads_labels_x_blocks_ports_volumes_and_gpus() {
        let json = json!({
            "name": "demo",
            "services": {
                "db": {"image": "local/pg", "labels": {"io.stackpilot.backup": "pg_dump"},
                       "volumes": [{"type": "volume", "source": "pgdata", "target": "/data"}, {"type": "bind", "source": "/x", "target": "/y"}],
                       "ports": [{"host_ip": "127.0.0.1", "published": "15432", "target": 5432, "protocol": "tcp"}],
                       "healthcheck": {"test": ["CMD", "true"]}},
                "llm": {"image": "ollama/ollama", "deploy": {"resources": {"reservations": {"devices": [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]}}}},
                "web": {"image": "busybox", "labels": {"io.stackpilot.role": "api"}}
            },
            "volumes": {"pgdata": {}},
            "x-stackpilot": {"backup_root": "./bk", "retention": {"keep_last": 3}, "backup_helper_image": "local/bb"}
        });
        let yaml = json!({"services": {"db": {"x-stackpilot": {"role": "postgres", "health": "pg_isready", "stop_during_backup": true}}}});
        let m = model_from_config(&json, &yaml, Path::new("/stack"), &[]);
        let db = &m.services["db"];
        assert_eq!(db.role, Role::Postgres, "x-stackpilot block names the role");
        assert_eq!(db.backup.as_deref(), Some("pg_dump"));
        assert_eq!(db.health.as_deref(), Some("pg_isready"));
        assert_eq!(db.named_volumes, ["pgdata"]);
        assert_eq!(db.ports[0].host_port, 15432);
        assert!(db.healthcheck);
        assert!(m.services["llm"].gpu);
        assert_eq!(m.services["llm"].role, Role::Ollama);
        assert_eq!(m.services["web"].role, Role::Api);
        assert_eq!(m.settings.backup_root, Path::new("/stack/bk"));
        assert_eq!(m.settings.keep_last, 3);
        assert_eq!(m.settings.backup_helper_image.as_deref(), Some("local/bb"));
        assert!(db.stop_during_backup);
        assert!(!m.services["web"].stop_during_backup);
        assert_eq!(m.volumes, ["pgdata"]);
        assert!(m.tasks.is_empty());
        assert_eq!(db.container_name, None);
    }

    #[test]
    fn tasks_are_read_and_bad_ones_say_why() {
        let block = json!({
            "migrate": {"service": "api", "command": ["./manage", "migrate", "$$HOME"], "description": "schema"},
            "reset": {"service": "db", "command": ["psql", "-c", "drop schema app cascade"], "destructive": true, "mode": "exec", "timeout_s": 60},
            "shell": {"service": "api", "command": "rm -rf /"},
            "odd": {"command": ["true"], "mode": "ssh", "timeout_s": 0}
        });
        let t = tasks_from(Some(&block));
        assert_eq!(t.len(), 4);
        let m = &t["migrate"];
        assert_eq!(
            (m.mode, m.destructive, m.timeout_s),
            (TaskMode::Run, false, 600)
        );
        assert_eq!(
            m.command,
            ["./manage", "migrate", "$HOME"],
            "compose's $$ is a literal $"
        );
        assert!(m.invalid.is_none());
        let r = &t["reset"];
        assert_eq!(
            (r.mode, r.destructive, r.timeout_s),
            (TaskMode::Exec, true, 60)
        );
        assert!(t["shell"]
            .invalid
            .as_deref()
            .is_some_and(|w| w.contains("list of strings")));
        let odd = t["odd"].invalid.as_deref().expect("invalid");
        assert!(
            odd.contains("`service` is missing")
                && odd.contains("`mode`")
                && odd.contains("`timeout_s`"),
            "{odd}"
        );
    }
}
