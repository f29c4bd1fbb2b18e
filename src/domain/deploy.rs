//! Deploys and rollbacks: the order services are rolled out in, how each
//! one's new container replaces the old (zero downtime or recreate), the tag
//! that keeps a previous image for rollback, and the record of what ran
//! before (`<state>/deploys.json`, adapters::deploy_record).
use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::stack_model::{ServiceModel, StackModel};

/// How a service's new container replaces the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutMode {
    /// A second container starts beside the old one behind the same network
    /// alias (compose `up --no-recreate --scale <service>=2`); the old one is
    /// removed once the new one is healthy. No moment without a container.
    ZeroDowntime,
    /// Compose replaces the container (`up --force-recreate --no-deps`): the
    /// service does not answer while the new one starts.
    Recreate,
}

/// A data service: two containers must never share its volumes, and
/// replacing it interrupts (or, without a volume, loses) its data.
pub fn holds_data(svc: &ServiceModel) -> bool {
    svc.role.holds_data() || !svc.named_volumes.is_empty()
}

/// Whether a service can run two replicas for a moment, and why not. It can
/// when it publishes no host port (two containers cannot bind one), has no
/// `container_name` (compose can run one container of it), holds no data,
/// and runs exactly one container now.
pub fn rollout_mode(svc: &ServiceModel, running: usize, allowed: bool) -> (RolloutMode, String) {
    let recreate = |why: String| (RolloutMode::Recreate, why);
    if !allowed {
        return recreate("zero_downtime: false was asked".into());
    }
    if let Some(p) = svc.ports.first() {
        let ip = if p.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &p.host_ip
        };
        return recreate(format!(
            "publishes host port {ip}:{} (two containers cannot bind it)",
            p.host_port
        ));
    }
    if let Some(name) = &svc.container_name {
        return recreate(format!(
            "has container_name `{name}` (compose can run only one container of it)"
        ));
    }
    if holds_data(svc) {
        return recreate(if svc.named_volumes.is_empty() {
            "holds data (its role): two containers must not share it".into()
        } else {
            format!(
                "holds data (named volume {}): two containers must not share it",
                svc.named_volumes.join(", ")
            )
        });
    }
    if running != 1 {
        return recreate(format!(
            "runs {running} containers (zero downtime needs exactly one)"
        ));
    }
    (
        RolloutMode::ZeroDowntime,
        format!(
            "no host port, no container_name, no data: a second container starts behind the alias `{}`, then the old one goes",
            svc.name
        ),
    )
}

/// `services` in an order where each comes after those it depends on (among
/// `services`), ties by name. Compose rejects dependency cycles, so every
/// service is placed; anything left over would be appended by name.
pub fn dependency_order(model: &StackModel, services: &BTreeSet<String>) -> Vec<String> {
    let deps = |s: &str| -> BTreeSet<String> {
        model
            .services
            .get(s)
            .map(|m| {
                m.depends_on
                    .iter()
                    .filter(|d| services.contains(*d) && d.as_str() != s)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut pending: BTreeMap<String, BTreeSet<String>> =
        services.iter().map(|s| (s.clone(), deps(s))).collect();
    let mut order = Vec::new();
    loop {
        let ready: Option<String> = pending
            .iter()
            .find(|(_, d)| d.is_empty())
            .map(|(s, _)| s.clone());
        let Some(next) = ready else { break };
        pending.remove(&next);
        for d in pending.values_mut() {
            d.remove(&next);
        }
        order.push(next);
    }
    order.extend(pending.into_keys());
    order
}

/// The tag that keeps a service's previous image for rollback:
/// `stackpilot-rollback/<project>-<service>:<first 12 hex digits of the id>`,
/// in Docker's reference grammar (lowercase; separators single).
pub fn pin_reference(project: &str, service: &str, image_id: &str) -> String {
    let hex: String = image_id
        .trim_start_matches("sha256:")
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect::<String>()
        .to_ascii_lowercase();
    let mut name = String::new();
    for c in format!("{project}-{service}").to_ascii_lowercase().chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if c == '-' && (name.is_empty() || name.ends_with('-')) {
            continue;
        }
        name.push(c);
    }
    let name = name.trim_end_matches('-');
    format!(
        "stackpilot-rollback/{}:{}",
        if name.is_empty() { "service" } else { name },
        if hex.is_empty() {
            "unknown"
        } else {
            hex.as_str()
        }
    )
}

/// An image as a deploy saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImageRecord {
    /// The reference the container was created from (`app:1.2`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The local image id (`sha256:...`).
    pub image_id: String,
    /// stackpilot's tag for it, which keeps it on the engine for rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
}

/// What the last deploy or rollback of one service did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceRecord {
    /// What ran before: what `rollback` returns the service to.
    pub previous: ImageRecord,
    /// What the last deploy or rollback left running.
    pub current: ImageRecord,
    /// RFC 3339.
    pub at: String,
    /// `deploy` or `rollback`.
    pub by: String,
    /// `in_progress` (written before the container is replaced), `deployed`,
    /// `failed_rolled_back`, `rolled_back`, or `failed` (the restore failed too).
    pub outcome: String,
}

/// `<state>/deploys.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeployRecords {
    #[serde(default)]
    pub services: BTreeMap<String, ServiceRecord>,
}

impl DeployRecords {
    /// Every pin a record still needs (so it must not be removed).
    pub fn pins_in_use(&self) -> BTreeSet<String> {
        self.services
            .values()
            .flat_map(|r| [r.previous.pin.clone(), r.current.pin.clone()])
            .flatten()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::stack_model::{PublishedPort, Role, StackSettings};

    fn svc(name: &str, deps: &[&str]) -> ServiceModel {
        ServiceModel {
            name: name.into(),
            image: Some("img".into()),
            build: false,
            pull_policy: None,
            role: Role::Api,
            health: None,
            backup: None,
            stop_during_backup: false,
            healthcheck: true,
            named_volumes: vec![],
            ports: vec![],
            gpu: false,
            profiles: vec![],
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            container_name: None,
            container_ports: vec![],
            role_source: Default::default(),
        }
    }

    fn model(services: Vec<ServiceModel>) -> StackModel {
        StackModel {
            project: "p".into(),
            profiles: vec![],
            services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
            volumes: vec![],
            settings: StackSettings {
                backup_root: "/b".into(),
                keep_last: 7,
                keep_daily: 0,
                keep_weekly: 0,
                backup_helper_image: None,
            },
            tasks: BTreeMap::new(),
            secret_values: vec![],
        }
    }

    #[test]
    fn dependencies_come_first() {
        let m = model(vec![
            svc("web", &["api"]),
            svc("api", &["db", "cache"]),
            svc("db", &[]),
            svc("cache", &[]),
            svc("worker", &["db"]),
        ]);
        let all: BTreeSet<String> = m.services.keys().cloned().collect();
        assert_eq!(
            dependency_order(&m, &all),
            ["cache", "db", "api", "web", "worker"]
        );
        let some: BTreeSet<String> = ["web".to_string(), "db".to_string()].into();
        assert_eq!(dependency_order(&m, &some), ["db", "web"]);
    }

    #[test]
    fn zero_downtime_only_where_two_replicas_can_run() {
        let s = svc("api", &[]);
        assert_eq!(rollout_mode(&s, 1, true).0, RolloutMode::ZeroDowntime);
        assert_eq!(rollout_mode(&s, 1, false).0, RolloutMode::Recreate);
        assert_eq!(rollout_mode(&s, 2, true).0, RolloutMode::Recreate);
        let mut p = s.clone();
        p.ports.push(PublishedPort {
            host_ip: "127.0.0.1".into(),
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
        });
        let (m, why) = rollout_mode(&p, 1, true);
        assert_eq!(m, RolloutMode::Recreate);
        assert!(why.contains("127.0.0.1:8080"), "{why}");
        let mut n = s.clone();
        n.container_name = Some("fixed".into());
        assert!(rollout_mode(&n, 1, true).1.contains("container_name"));
        let mut d = s.clone();
        d.role = Role::Postgres;
        assert_eq!(rollout_mode(&d, 1, true).0, RolloutMode::Recreate);
        let mut v = s;
        v.named_volumes.push("data".into());
        assert!(rollout_mode(&v, 1, true).1.contains("named volume data"));
    }

    #[test]
    fn pins_follow_the_reference_grammar() {
        assert_eq!(
            pin_reference("sptest-day2-1", "My_API", "sha256:ABCDEF0123456789ffff"),
            "stackpilot-rollback/sptest-day2-1-my-api:abcdef012345"
        );
        assert_eq!(
            pin_reference("p", "a..b", "sha256:1"),
            "stackpilot-rollback/p-a-b:1"
        );
    }
}
