//! Compose to Kubernetes, as a pure function: the normalized compose model
//! of one profile (what `docker compose config` printed), the stack model
//! (roles), the `.env` values and a few options in; Kubernetes objects, the
//! list of what could not be translated (with the reason) and the published
//! host ports out. The same inputs give the same objects, byte for byte once
//! serialized (maps are sorted, lists are built in name order).
//!
//! The rules (learned from kompose's mapping; where kompose warns and drops
//! a field, this lists it in `untranslatable` instead):
//! - a service with a named volume or a data role (postgres, mongodb,
//!   qdrant, ollama, volume) becomes a StatefulSet whose volumeClaimTemplates
//!   hold its named volumes; any other service a Deployment;
//! - a Service named like the compose service (so `postgres:5432` still
//!   resolves) with every published and exposed port, plus one per network
//!   alias; published host ports are reported with how to reach them
//!   (`expose`: none, nodeport, loadbalancer, ingress);
//! - the service's environment through a ConfigMap `<service>-env`, and the
//!   keys that look secret (PASSWORD, SECRET, TOKEN, KEY, CREDENTIAL, or a
//!   value that contains a secret-looking .env value) through a Secret of
//!   the same name; a keyed digest of both on the pod template, so an .env
//!   change rolls exactly the workloads that read it;
//! - healthchecks as readiness and liveness probes (`CMD`/`CMD-SHELL` as
//!   exec, a `curl`/`wget` of localhost as httpGet), `start_period` as a
//!   startupProbe;
//! - limits and reservations as resources, an NVIDIA reservation as an
//!   `nvidia.com/gpu` limit; restart, command, entrypoint, user, read-only
//!   root, capabilities, grace period, working dir;
//! - seed 002's production shape from x-stackpilot `kubernetes` blocks:
//!   replicas, an HPA for stateless services, a PodDisruptionBudget, a
//!   default-deny NetworkPolicy with allowances per compose network.
use std::collections::{BTreeMap, BTreeSet};

use hmac::{Hmac, Mac};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::domain::error::ToolError;
use crate::domain::kubernetes::labels;
use crate::domain::kubernetes::names::{is_config_key, is_dns1123_label, to_dns1123_label};
use crate::domain::redact::{is_secret_key, REDACTED};
use crate::domain::stack_model::{Role, StackModel};

/// How published host ports are made reachable from outside the cluster.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Expose {
    /// Only reported (reach them with `kubectl port-forward`).
    #[default]
    None,
    /// A NodePort Service per service with published ports.
    Nodeport,
    /// A LoadBalancer Service per service with published ports, on the host port.
    Loadbalancer,
    /// An Ingress per service with published ports (HTTP), to its first port.
    Ingress,
}

/// One compose feature that has no Kubernetes translation (or only a lossy one).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
pub struct Untranslatable {
    /// The compose service (empty for stack-wide fields).
    pub service: String,
    /// The compose field, as a path (`volumes[0]`, `network_mode`).
    pub field: String,
    /// Why, and what was rendered instead (if anything).
    pub reason: String,
}

/// A port the compose file publishes on the host, and how it is reached on Kubernetes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
pub struct PublishedPort {
    pub service: String,
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
    /// What the render made of it, or how to reach it.
    pub reached_by: String,
}

/// One rendered object.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeObject {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// The compose service it belongs to (empty for stack-wide objects).
    pub service: String,
    pub body: Value,
}

impl KubeObject {
    pub fn is_secret(&self) -> bool {
        self.kind == "Secret"
    }

    /// The body with every Secret value replaced: what outputs and plans may show.
    pub fn redacted_body(&self) -> Value {
        let mut b = self.body.clone();
        if self.is_secret() {
            for key in ["data", "stringData"] {
                if let Some(Value::Object(m)) = b.get_mut(key) {
                    for v in m.values_mut() {
                        *v = Value::String(REDACTED.into());
                    }
                }
            }
        }
        b
    }

    /// `kind/name`, as kubectl names objects.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// The file name it is written to.
    pub fn file_name(&self) -> String {
        format!("{}-{}.yaml", self.kind.to_ascii_lowercase(), self.name)
    }
}

/// What the render produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// In apply order: configuration, Services, workloads, then policies.
    pub objects: Vec<KubeObject>,
    pub untranslatable: Vec<Untranslatable>,
    pub published: Vec<PublishedPort>,
    /// Per service: its non-secret environment (values.yaml of a chart).
    pub env: BTreeMap<String, BTreeMap<String, String>>,
    /// Per service: its secret environment, never shown (secret-values.yaml).
    pub secret_env: BTreeMap<String, BTreeMap<String, String>>,
}

/// What to render.
pub struct Input<'a> {
    pub project: &'a str,
    pub namespace: &'a str,
    /// `docker compose config` of the chosen profile, as JSON.
    pub config: &'a Value,
    pub model: &'a StackModel,
    /// The `.env` values (to tell which values are secrets).
    pub dotenv: &'a BTreeMap<String, String>,
    pub expose: Expose,
    /// Key of the config digest (never printed; stable per stack).
    pub digest_key: &'a [u8],
}

/// Object kinds in apply order (create what others reference first).
pub const KIND_ORDER: [&str; 10] = [
    "ConfigMap",
    "Secret",
    "Service",
    "Deployment",
    "StatefulSet",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "Ingress",
    "PersistentVolumeClaim",
];

fn kind_rank(kind: &str) -> usize {
    KIND_ORDER
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(KIND_ORDER.len())
}

/// Compose fields a service may have that this render translates (or
/// consumes: profiles, x-stackpilot, depends_on is reported separately).
const HANDLED: [&str; 27] = [
    "image",
    "build",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "working_dir",
    "user",
    "ports",
    "expose",
    "volumes",
    "healthcheck",
    "deploy",
    "mem_limit",
    "mem_reservation",
    "cpus",
    "restart",
    "read_only",
    "cap_add",
    "cap_drop",
    "privileged",
    "stop_grace_period",
    "labels",
    "networks",
    "profiles",
    "pull_policy",
    "hostname",
];

fn s(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `docker compose config` escapes `$` as `$$`; the container sees one.
fn unescape(text: &str) -> String {
    text.replace("$$", "$")
}

/// Kubernetes expands `$(VAR)` in command, args and env values; compose
/// does not, so a literal one is escaped as `$$(`.
fn k8s_escape(text: &str) -> String {
    text.replace("$(", "$$(")
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    match v? {
        Value::Array(items) => Some(items.iter().filter_map(s).map(|x| unescape(&x)).collect()),
        Value::String(one) => Some(vec![unescape(one)]),
        _ => None,
    }
}

/// A Go duration (`1m30s`, `500ms`, `10s`) in whole seconds, rounded up.
pub fn duration_secs(text: &str) -> Option<u64> {
    let mut total_ms: f64 = 0.0;
    let mut num = String::new();
    let mut chars = text.trim().chars().peekable();
    if text.trim().is_empty() {
        return None;
    }
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() || n == 'µ' {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        total_ms += n * match unit.as_str() {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1_000.0,
            "ms" => 1.0,
            "us" | "µs" => 0.001,
            "ns" => 0.000_001,
            _ => return None,
        };
    }
    if !num.is_empty() {
        total_ms += num.parse::<f64>().ok()? * 1000.0;
    }
    Some((total_ms / 1000.0).ceil() as u64)
}

/// Bytes as a Kubernetes quantity (`16Gi`, `512Mi`, else plain bytes).
pub fn bytes_quantity(bytes: u64) -> String {
    for (unit, size) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// A compose memory value (bytes as a number or string, or `2g`, `512m`) in bytes.
pub fn memory_bytes(v: &Value) -> Option<u64> {
    let text = s(v)?.trim().to_ascii_lowercase();
    let (num, mult) = match text.chars().last()? {
        'k' => (&text[..text.len() - 1], 1u64 << 10),
        'm' => (&text[..text.len() - 1], 1 << 20),
        'g' => (&text[..text.len() - 1], 1 << 30),
        'b' => (&text[..text.len() - 1], 1),
        _ => (text.as_str(), 1),
    };
    let num = num.trim_end_matches('b');
    num.parse::<f64>().ok().map(|n| (n * mult as f64) as u64)
}

/// CPUs (`0.5`, `2`) as a quantity (`500m`, `2`).
pub fn cpu_quantity(v: &Value) -> Option<String> {
    let n: f64 = s(v)?.trim().parse().ok()?;
    if n <= 0.0 {
        return None;
    }
    let milli = (n * 1000.0).round() as u64;
    Some(if milli.is_multiple_of(1000) {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    })
}

/// A recognised `curl`/`wget` of the container itself: (port, path).
pub fn http_probe_of(command: &str) -> Option<(u16, String)> {
    let first = command.split_whitespace().next()?;
    let program = first.rsplit('/').next().unwrap_or(first);
    if program != "curl" && program != "wget" {
        return None;
    }
    let start = command.find("http://")?;
    let url: String = command[start + 7..]
        .chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | ';' | '|' | '&' | ')'))
        .collect();
    let (hostport, path) = match url.find('/') {
        Some(i) => (&url[..i], url[i..].to_string()),
        None => (url.as_str(), "/".to_string()),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') => (h, p.parse::<u16>().ok()?),
        _ => (hostport, 80),
    };
    matches!(host, "127.0.0.1" | "localhost" | "0.0.0.0" | "[::1]").then_some((port, path))
}

/// A compose healthcheck's probe handler.
fn probe_handler(test: &[String]) -> Option<Value> {
    let (kind, rest) = test.split_first()?;
    match kind.as_str() {
        "NONE" => None,
        "CMD" => {
            if let Some((port, path)) = http_probe_of(&rest.join(" ")) {
                return Some(json!({"httpGet": {"path": path, "port": port}}));
            }
            Some(json!({"exec": {"command": rest}}))
        }
        "CMD-SHELL" => {
            let cmd = rest.join(" ");
            if let Some((port, path)) = http_probe_of(&cmd) {
                return Some(json!({"httpGet": {"path": path, "port": port}}));
            }
            Some(json!({"exec": {"command": ["sh", "-c", cmd]}}))
        }
        _ => Some(json!({"exec": {"command": ["sh", "-c", test.join(" ")]}})),
    }
}

struct Notes(Vec<Untranslatable>);

impl Notes {
    fn add(&mut self, service: &str, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Untranslatable {
            service: service.to_string(),
            field: field.into(),
            reason: reason.into(),
        });
    }
}

fn role_name(role: Role) -> &'static str {
    Role::NAMES
        .iter()
        .copied()
        .find(|n| Role::parse(n) == Some(role))
        .unwrap_or("other")
}

/// Per-service x-stackpilot `kubernetes` settings.
#[derive(Debug, Clone, Default)]
struct ServiceKube {
    replicas: Option<i64>,
    autoscale: Option<(i64, i64, i64)>,
    min_available: Option<i64>,
    storage: Option<String>,
}

fn service_kube(x: Option<&Value>) -> ServiceKube {
    let k = x.and_then(|x| x.get("kubernetes"));
    let int = |v: Option<&Value>| v.and_then(s).and_then(|t| t.parse::<i64>().ok());
    ServiceKube {
        replicas: int(k.and_then(|k| k.get("replicas"))),
        autoscale: k.and_then(|k| k.get("autoscale")).map(|a| {
            let min = int(a.get("min_replicas")).unwrap_or(1).max(1);
            let max = int(a.get("max_replicas")).unwrap_or(min.max(3)).max(min);
            let cpu = int(a.get("cpu_percent")).unwrap_or(80).clamp(1, 100);
            (min, max, cpu)
        }),
        min_available: int(k.and_then(|k| k.get("min_available"))).or_else(|| {
            int(k
                .and_then(|k| k.get("disruption_budget"))
                .and_then(|d| d.get("min_available")))
        }),
        storage: k.and_then(|k| k.get("storage")).and_then(s),
    }
}

fn digest(key: &[u8], cm: &BTreeMap<String, String>, secret: &BTreeMap<String, String>) -> String {
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    let canonical = json!({"config": cm, "secret": secret}).to_string();
    mac.update(canonical.as_bytes());
    hex::encode(mac.finalize().into_bytes())[..16].to_string()
}

fn meta(name: &str, namespace: &str, labels: &BTreeMap<String, String>) -> Value {
    json!({"name": name, "namespace": namespace, "labels": labels})
}

fn obj(api_version: &str, kind: &str, name: &str, service: &str, body: Value) -> KubeObject {
    KubeObject {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        service: service.into(),
        body,
    }
}

/// Renders the stack. Errors only for what makes the whole render
/// meaningless (no services, names that cannot become Kubernetes names).
pub fn render(input: &Input<'_>) -> Result<Rendered, ToolError> {
    let project = input.project;
    let ns = input.namespace;
    let mut notes = Notes(Vec::new());
    let mut objects: Vec<KubeObject> = Vec::new();
    let mut published: Vec<PublishedPort> = Vec::new();
    let mut env_out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut secret_out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let empty = Map::new();
    let services = input
        .config
        .get("services")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if services.is_empty() {
        return Err(ToolError::invalid(
            "profile",
            "the stack has no services in this profile: nothing to render",
        ));
    }
    let stack_x = input.config.get("x-stackpilot");
    let stack_kube = stack_x.and_then(|x| x.get("kubernetes"));
    let network_policy = stack_kube
        .and_then(|k| k.get("network_policy"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let storage_class = stack_kube.and_then(|k| k.get("storage_class")).and_then(s);
    let default_storage = stack_kube
        .and_then(|k| k.get("storage"))
        .and_then(s)
        .unwrap_or_else(|| "1Gi".to_string());
    // Values of secret-looking .env keys: a service value containing one is a secret too.
    let secret_values: Vec<&String> = input
        .dotenv
        .iter()
        .filter(|(k, v)| is_secret_key(k) && v.len() >= 4)
        .map(|(_, v)| v)
        .collect();

    // Which services use each named volume (a shared one cannot be shared as one claim).
    let mut volume_users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, svc) in services {
        for v in svc
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if v.get("type").and_then(Value::as_str) == Some("volume") {
                if let Some(src) = v.get("source").and_then(s).filter(|x| !x.is_empty()) {
                    volume_users.entry(src).or_default().push(name.clone());
                }
            }
        }
    }
    let top_volumes = input.config.get("volumes").and_then(Value::as_object);
    for (vname, v) in top_volumes.into_iter().flatten() {
        if v.get("external").and_then(Value::as_bool) == Some(true) {
            notes.add("", format!("volumes.{vname}.external"), "an external volume is not looked up on the cluster: each service that mounts it gets a new claim from its StatefulSet's template");
        }
        if v.get("driver").is_some() || v.get("driver_opts").is_some() {
            notes.add("", format!("volumes.{vname}.driver"), "volume drivers have no Kubernetes equivalent: the claim uses the storage class (x-stackpilot kubernetes.storage_class, else the cluster's default)");
        }
    }
    for key in ["secrets", "configs"] {
        if input.config.get(key).is_some() {
            notes.add("", key, format!("top-level compose {key} are not translated: put the values in .env (they then reach the containers through the ConfigMap or the Secret)"));
        }
    }

    // Service names and network aliases in use (alias Services must not collide).
    let mut k8s_names: BTreeMap<String, String> = BTreeMap::new();
    for name in services.keys() {
        let k = to_dns1123_label(name);
        if k.is_empty() || !is_dns1123_label(&k) {
            return Err(ToolError::invalid(
                "services",
                format!(
                    "compose service `{}` has no usable Kubernetes name",
                    crate::domain::redact::cap(name, 80)
                ),
            ));
        }
        if let Some(other) = k8s_names.insert(k.clone(), name.clone()) {
            return Err(ToolError::invalid(
                "services",
                format!("compose services `{other}` and `{name}` both become `{k}` on Kubernetes: rename one"),
            ));
        }
    }
    let mut alias_taken: BTreeSet<String> = k8s_names.keys().cloned().collect();
    let mut networks_used: BTreeSet<String> = BTreeSet::new();

    for (name, svc) in services {
        let k = to_dns1123_label(name);
        let model = input.model.services.get(name);
        let role = model.map(|m| m.role).unwrap_or(Role::Other);
        let role_s = role_name(role);
        let x = svc.get("x-stackpilot");
        let sk = service_kube(x);
        let mut svc_labels = labels::service_labels(project, name, role_s);
        if !crate::domain::kubernetes::names::is_label_value(name) {
            svc_labels.insert(labels::SERVICE.into(), k.clone());
            svc_labels.insert(labels::NAME.into(), k.clone());
        }
        let selector = labels::selector(project, svc_labels[labels::NAME].as_str());

        // Fields nobody translates.
        if let Some(map) = svc.as_object() {
            for key in map.keys() {
                if key.starts_with("x-") || HANDLED.contains(&key.as_str()) || key == "depends_on" {
                    continue;
                }
                let reason = match key.as_str() {
                    "network_mode" => "network_mode has no Kubernetes equivalent (pods have their own network namespace; hostNetwork is not rendered)".to_string(),
                    "devices" => "host devices cannot be mapped into pods portably: use a device plugin (GPUs: nvidia.com/gpu through deploy.resources)".to_string(),
                    "container_name" => "pod names are generated by their workload: the Service keeps the compose service's name".to_string(),
                    "logging" => "logging drivers are the cluster's concern: pod logs go to the node's container runtime".to_string(),
                    "extra_hosts" => "extra host entries are not rendered (host-gateway has no cluster equivalent; hostAliases would pin IPs)".to_string(),
                    "ulimits" => "ulimits are set by the node's container runtime, not per pod".to_string(),
                    "extends" => "extends is resolved by compose before rendering; a leftover reference is ignored".to_string(),
                    "stop_signal" => "Kubernetes always sends SIGTERM (set STOPSIGNAL in the image)".to_string(),
                    other => format!("compose field `{other}` is not translated to Kubernetes"),
                };
                notes.add(name, key.clone(), reason);
            }
        }
        if svc.get("depends_on").is_some() {
            notes.add(name, "depends_on", "Kubernetes starts every workload at once: start order is not kept (readiness probes keep traffic away until a service is ready)");
        }
        let image = svc.get("image").and_then(s);
        let Some(image) = image else {
            notes.add(name, "build", "a build-only service has no image a cluster can pull: build and push it, then set `image`; the service was not rendered");
            continue;
        };
        if svc.get("build").is_some() {
            notes.add(name, "build", format!("the build section is not used on Kubernetes: image `{image}` must be pullable by the cluster"));
        }

        // Environment: ConfigMap and Secret.
        let mut cm: BTreeMap<String, String> = BTreeMap::new();
        let mut secret: BTreeMap<String, String> = BTreeMap::new();
        for (key, v) in svc
            .get("environment")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let Some(value) = s(v) else { continue };
            if !is_config_key(key) {
                notes.add(
                    name,
                    format!("environment.{key}"),
                    "not a valid ConfigMap key: the variable is not rendered",
                );
                continue;
            }
            let value = k8s_escape(&unescape(&value));
            let is_secret =
                is_secret_key(key) || secret_values.iter().any(|sv| value.contains(sv.as_str()));
            if is_secret {
                secret.insert(key.clone(), value);
            } else {
                cm.insert(key.clone(), value);
            }
        }
        let mut env_from: Vec<Value> = Vec::new();
        let env_name = format!("{k}-env");
        if !cm.is_empty() {
            objects.push(obj(
                "v1",
                "ConfigMap",
                &env_name,
                name,
                json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": meta(&env_name, ns, &svc_labels),
                    "data": cm,
                }),
            ));
            env_from.push(json!({"configMapRef": {"name": env_name}}));
        }
        if !secret.is_empty() {
            let data: BTreeMap<&String, String> = secret
                .iter()
                .map(|(k, v)| (k, base64_encode(v.as_bytes())))
                .collect();
            objects.push(obj(
                "v1",
                "Secret",
                &env_name,
                name,
                json!({
                    "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": meta(&env_name, ns, &svc_labels),
                    "data": data,
                }),
            ));
            env_from.push(json!({"secretRef": {"name": env_name}}));
        }
        let config_digest = digest(input.digest_key, &cm, &secret);
        env_out.insert(name.clone(), cm.clone());
        secret_out.insert(name.clone(), secret.clone());

        // Ports: published and exposed container ports.
        let mut container_ports: BTreeSet<(u16, String)> = BTreeSet::new();
        let mut svc_published: Vec<(String, u16, u16, String)> = Vec::new();
        for (i, p) in svc
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let Some(target) = p
                .get("target")
                .and_then(s)
                .and_then(|t| t.parse::<u16>().ok())
            else {
                notes.add(
                    name,
                    format!("ports[{i}]"),
                    "a port without a container port is not translated",
                );
                continue;
            };
            let proto = p
                .get("protocol")
                .and_then(s)
                .unwrap_or_else(|| "tcp".into())
                .to_ascii_uppercase();
            container_ports.insert((target, proto.clone()));
            if let Some(hp) = p.get("published").and_then(s) {
                match hp.parse::<u16>() {
                    Ok(h) => svc_published.push((
                        p.get("host_ip").and_then(s).unwrap_or_default(),
                        h,
                        target,
                        proto,
                    )),
                    Err(_) => notes.add(
                        name,
                        format!("ports[{i}].published"),
                        format!("a host port range `{hp}` is not translated"),
                    ),
                }
            }
        }
        for e in svc
            .get("expose")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let text = s(e).unwrap_or_default();
            let (port, proto) = text.split_once('/').unwrap_or((text.as_str(), "tcp"));
            if let Ok(p) = port.parse::<u16>() {
                container_ports.insert((p, proto.to_ascii_uppercase()));
            }
        }

        // Volumes.
        let mut mounts: Vec<Value> = Vec::new();
        let mut pod_volumes: Vec<Value> = Vec::new();
        let mut claims: Vec<Value> = Vec::new();
        for (i, v) in svc
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let target = v.get("target").and_then(s).unwrap_or_default();
            let ro = v.get("read_only").and_then(Value::as_bool).unwrap_or(false);
            match v.get("type").and_then(Value::as_str) {
                Some("volume") => match v.get("source").and_then(s).filter(|x| !x.is_empty()) {
                    Some(src) => {
                        let claim = to_dns1123_label(&src);
                        if !claims
                            .iter()
                            .any(|c| c["metadata"]["name"] == claim.as_str())
                        {
                            let mut cl = labels::project_labels(project);
                            cl.insert(labels::VOLUME.into(), src.clone());
                            cl.insert(labels::SERVICE.into(), svc_labels[labels::SERVICE].clone());
                            let mut spec = json!({
                                "accessModes": ["ReadWriteOnce"],
                                "resources": {"requests": {"storage": sk.storage.clone().unwrap_or_else(|| default_storage.clone())}},
                            });
                            if let Some(sc) = &storage_class {
                                spec["storageClassName"] = json!(sc);
                            }
                            claims.push(
                                json!({"metadata": {"name": claim, "labels": cl}, "spec": spec}),
                            );
                        }
                        mounts.push(json!({"name": claim, "mountPath": target, "readOnly": ro}));
                        if volume_users.get(&src).is_some_and(|u| u.len() > 1) {
                            notes.add(name, format!("volumes[{i}]"), format!(
                                "named volume `{src}` is shared with {}: each StatefulSet gets its own claim (a ReadWriteOnce claim cannot be shared)",
                                volume_users[&src].iter().filter(|u| *u != name).cloned().collect::<Vec<_>>().join(", ")
                            ));
                        }
                    }
                    None => {
                        let vname = format!("anon-{i}");
                        pod_volumes.push(json!({"name": vname, "emptyDir": {}}));
                        mounts.push(json!({"name": vname, "mountPath": target, "readOnly": ro}));
                        notes.add(name, format!("volumes[{i}]"), "an anonymous volume becomes an emptyDir: its data does not outlive the pod");
                    }
                },
                Some("tmpfs") => {
                    let vname = format!("tmpfs-{i}");
                    pod_volumes.push(json!({"name": vname, "emptyDir": {"medium": "Memory"}}));
                    mounts.push(json!({"name": vname, "mountPath": target}));
                }
                Some("bind") => {
                    let src = v.get("source").and_then(s).unwrap_or_default();
                    notes.add(name, format!("volumes[{i}]"), format!(
                        "bind mount of host path `{src}` at `{target}`: cluster nodes do not have it; put the content in a ConfigMap or Secret, or the data in a volume"
                    ));
                }
                other => notes.add(
                    name,
                    format!("volumes[{i}]"),
                    format!("volume type `{}` is not translated", other.unwrap_or("?")),
                ),
            }
        }
        let data_service = role.holds_data() || !claims.is_empty();

        // The container.
        let mut c = Map::new();
        c.insert("name".into(), json!(k));
        c.insert("image".into(), json!(image));
        match svc.get("pull_policy").and_then(Value::as_str) {
            Some("always") => { c.insert("imagePullPolicy".into(), json!("Always")); }
            Some("never") => { c.insert("imagePullPolicy".into(), json!("Never")); }
            Some("missing") | Some("if_not_present") => { c.insert("imagePullPolicy".into(), json!("IfNotPresent")); }
            Some(other) => notes.add(name, "pull_policy", format!("pull_policy `{other}` has no Kubernetes equivalent: the cluster's default applies")),
            None => {}
        }
        if let Some(ep) = strings(svc.get("entrypoint")) {
            c.insert(
                "command".into(),
                json!(ep.iter().map(|x| k8s_escape(x)).collect::<Vec<_>>()),
            );
        }
        if let Some(cmd) = strings(svc.get("command")) {
            c.insert(
                "args".into(),
                json!(cmd.iter().map(|x| k8s_escape(x)).collect::<Vec<_>>()),
            );
        }
        if let Some(wd) = svc.get("working_dir").and_then(s) {
            c.insert("workingDir".into(), json!(wd));
        }
        if !env_from.is_empty() {
            c.insert("envFrom".into(), json!(env_from));
        }
        if !container_ports.is_empty() {
            c.insert(
                "ports".into(),
                json!(container_ports
                    .iter()
                    .map(|(p, proto)| json!({"containerPort": p, "protocol": proto}))
                    .collect::<Vec<_>>()),
            );
        }
        if !mounts.is_empty() {
            c.insert("volumeMounts".into(), json!(mounts));
        }
        // Probes.
        if let Some(hc) = svc.get("healthcheck") {
            let disabled = hc.get("disable").and_then(Value::as_bool) == Some(true);
            let test = strings(hc.get("test")).unwrap_or_default();
            if !disabled {
                if let Some(handler) = probe_handler(&test) {
                    let period = hc
                        .get("interval")
                        .and_then(s)
                        .and_then(|d| duration_secs(&d))
                        .unwrap_or(30)
                        .max(1);
                    let timeout = hc
                        .get("timeout")
                        .and_then(s)
                        .and_then(|d| duration_secs(&d))
                        .unwrap_or(30)
                        .max(1);
                    let retries = hc
                        .get("retries")
                        .and_then(s)
                        .and_then(|r| r.parse::<u64>().ok())
                        .unwrap_or(3)
                        .max(1);
                    let mut probe = handler.clone();
                    probe["periodSeconds"] = json!(period);
                    probe["timeoutSeconds"] = json!(timeout);
                    probe["failureThreshold"] = json!(retries);
                    c.insert("readinessProbe".into(), probe.clone());
                    c.insert("livenessProbe".into(), probe);
                    if let Some(start) = hc
                        .get("start_period")
                        .and_then(s)
                        .and_then(|d| duration_secs(&d))
                        .filter(|s| *s > 0)
                    {
                        let mut startup = handler;
                        let sp = period.min(5);
                        startup["periodSeconds"] = json!(sp);
                        startup["timeoutSeconds"] = json!(timeout);
                        startup["failureThreshold"] = json!(start.div_ceil(sp) + retries);
                        c.insert("startupProbe".into(), startup);
                    }
                    if hc.get("start_interval").is_some() {
                        notes.add(name, "healthcheck.start_interval", "start_interval is not translated: the startup probe runs every min(interval, 5 s)");
                    }
                }
            }
        }
        // Resources.
        let limits_v = svc.pointer("/deploy/resources/limits");
        let reserv_v = svc.pointer("/deploy/resources/reservations");
        let mut limits = Map::new();
        let mut requests = Map::new();
        let mem_limit = limits_v
            .and_then(|l| l.get("memory"))
            .or_else(|| svc.get("mem_limit"))
            .and_then(memory_bytes);
        let mem_req = reserv_v
            .and_then(|l| l.get("memory"))
            .or_else(|| svc.get("mem_reservation"))
            .and_then(memory_bytes);
        if let Some(m) = mem_limit {
            limits.insert("memory".into(), json!(bytes_quantity(m)));
            // Compose reserves nothing without a reservation; Kubernetes would
            // request the whole limit, so a default request keeps scheduling close.
            let req = mem_req.unwrap_or_else(|| m.min(256 << 20));
            requests.insert("memory".into(), json!(bytes_quantity(req)));
        } else if let Some(r) = mem_req {
            requests.insert("memory".into(), json!(bytes_quantity(r)));
        }
        if let Some(cpu) = limits_v
            .and_then(|l| l.get("cpus"))
            .or_else(|| svc.get("cpus"))
            .and_then(cpu_quantity)
        {
            limits.insert("cpu".into(), json!(cpu));
        }
        if let Some(cpu) = reserv_v.and_then(|l| l.get("cpus")).and_then(cpu_quantity) {
            requests.insert("cpu".into(), json!(cpu));
        } else if sk.autoscale.is_some() && !data_service {
            requests.insert("cpu".into(), json!("100m"));
        }
        for (i, d) in reserv_v
            .and_then(|r| r.get("devices"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let nvidia = d.get("driver").and_then(Value::as_str) == Some("nvidia")
                || d.get("capabilities")
                    .and_then(Value::as_array)
                    .is_some_and(|c| c.iter().any(|c| c == "gpu"));
            if !nvidia {
                notes.add(
                    name,
                    format!("deploy.resources.reservations.devices[{i}]"),
                    "only NVIDIA GPU reservations are translated (nvidia.com/gpu)",
                );
                continue;
            }
            let count = d
                .get("count")
                .and_then(s)
                .and_then(|c| c.parse::<i64>().ok())
                .unwrap_or(1);
            let n = if count < 1 {
                notes.add(name, format!("deploy.resources.reservations.devices[{i}].count"), "count `all` has no Kubernetes equivalent: one nvidia.com/gpu is requested (set a number to ask for more)");
                1
            } else {
                count
            };
            limits.insert("nvidia.com/gpu".into(), json!(n));
            if d.get("device_ids").is_some() {
                notes.add(
                    name,
                    format!("deploy.resources.reservations.devices[{i}].device_ids"),
                    "specific GPU ids cannot be pinned: the device plugin chooses",
                );
            }
        }
        if let Some(deploy) = svc.get("deploy").and_then(Value::as_object) {
            for key in deploy.keys() {
                if !matches!(key.as_str(), "resources" | "replicas") {
                    notes.add(
                        name,
                        format!("deploy.{key}"),
                        "this deploy field is not translated (replicas and resources are)",
                    );
                }
            }
        }
        if !limits.is_empty() || !requests.is_empty() {
            let mut r = Map::new();
            if !limits.is_empty() {
                r.insert("limits".into(), Value::Object(limits));
            }
            if !requests.is_empty() {
                r.insert("requests".into(), Value::Object(requests));
            }
            c.insert("resources".into(), Value::Object(r));
        }
        // Security.
        let mut sec = Map::new();
        if let Some(user) = svc.get("user").and_then(s) {
            let (u, g) = user
                .split_once(':')
                .map(|(u, g)| (u, Some(g)))
                .unwrap_or((user.as_str(), None));
            match (u.parse::<i64>(), g.map(|g| g.parse::<i64>())) {
                (Ok(u), None) => {
                    sec.insert("runAsUser".into(), json!(u));
                }
                (Ok(u), Some(Ok(g))) => {
                    sec.insert("runAsUser".into(), json!(u));
                    sec.insert("runAsGroup".into(), json!(g));
                }
                _ => notes.add(
                    name,
                    "user",
                    format!(
                        "user `{user}` is not numeric: Kubernetes needs a numeric uid (and gid)"
                    ),
                ),
            }
        }
        if svc.get("read_only").and_then(Value::as_bool) == Some(true) {
            sec.insert("readOnlyRootFilesystem".into(), json!(true));
        }
        if svc.get("privileged").and_then(Value::as_bool) == Some(true) {
            sec.insert("privileged".into(), json!(true));
        }
        let cap_add = strings(svc.get("cap_add")).unwrap_or_default();
        let cap_drop = strings(svc.get("cap_drop")).unwrap_or_default();
        if !cap_add.is_empty() || !cap_drop.is_empty() {
            let mut caps = Map::new();
            if !cap_add.is_empty() {
                caps.insert("add".into(), json!(cap_add));
            }
            if !cap_drop.is_empty() {
                caps.insert("drop".into(), json!(cap_drop));
            }
            sec.insert("capabilities".into(), Value::Object(caps));
        }
        if !sec.is_empty() {
            c.insert("securityContext".into(), Value::Object(sec));
        }

        // Pod template.
        let mut pod_labels = svc_labels.clone();
        let mut nets: Vec<String> = Vec::new();
        for (net, cfg) in svc
            .get("networks")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let n = to_dns1123_label(net);
            if !n.is_empty() && n.len() <= 59 {
                pod_labels.insert(format!("io.stackpilot/net-{n}"), "true".into());
                nets.push(n.clone());
                networks_used.insert(n);
            }
            for alias in cfg
                .get("aliases")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(s)
            {
                let a = to_dns1123_label(&alias);
                if alias_taken.contains(&a) || !is_dns1123_label(&a) {
                    if a != k {
                        notes.add(name, format!("networks.{net}.aliases"), format!("alias `{alias}` is already the name of another Service: not rendered"));
                    }
                    continue;
                }
                if container_ports.is_empty() {
                    notes.add(
                        name,
                        format!("networks.{net}.aliases"),
                        format!("alias `{alias}` needs a port to become a Service: not rendered"),
                    );
                    continue;
                }
                alias_taken.insert(a.clone());
                objects.push(service_object(
                    &a,
                    name,
                    ns,
                    &svc_labels,
                    &selector,
                    &container_ports,
                    false,
                ));
            }
        }
        let mut annotations: BTreeMap<String, String> = BTreeMap::new();
        annotations.insert(labels::CONFIG_DIGEST.into(), config_digest);
        for (lk, lv) in svc
            .get("labels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if let Some(v) = s(lv) {
                annotations.insert(lk.clone(), v);
            }
        }
        let mut pod_spec = Map::new();
        pod_spec.insert("containers".into(), json!([Value::Object(c)]));
        if !pod_volumes.is_empty() {
            pod_spec.insert("volumes".into(), json!(pod_volumes));
        }
        if let Some(g) = svc
            .get("stop_grace_period")
            .and_then(s)
            .and_then(|d| duration_secs(&d))
        {
            pod_spec.insert("terminationGracePeriodSeconds".into(), json!(g));
        }
        if let Some(h) = svc.get("hostname").and_then(s) {
            if is_dns1123_label(&h) {
                pod_spec.insert("hostname".into(), json!(h));
            } else {
                notes.add(
                    name,
                    "hostname",
                    format!("hostname `{h}` is not a DNS-1123 label: not rendered"),
                );
            }
        }
        match svc.get("restart").and_then(s).as_deref() {
            None | Some("always") | Some("unless-stopped") => {}
            Some(other) => notes.add(name, "restart", format!(
                "restart `{other}`: pods of a Deployment or StatefulSet always restart (restartPolicy Always)"
            )),
        }
        let template = json!({
            "metadata": {"labels": pod_labels, "annotations": annotations},
            "spec": Value::Object(pod_spec),
        });
        let deploy_replicas = svc
            .pointer("/deploy/replicas")
            .and_then(s)
            .and_then(|r| r.parse::<i64>().ok());
        let replicas = sk.replicas.or(deploy_replicas).unwrap_or(1).max(0);
        if replicas > 1 && data_service {
            notes.add(name, "x-stackpilot.kubernetes.replicas", format!(
                "{replicas} replicas of a service that holds data: each pod gets its own claim and they do not replicate data between them"
            ));
        }

        // The Service (StatefulSets need one: their pods' DNS names come from it).
        if !container_ports.is_empty() || data_service {
            objects.push(service_object(
                &k,
                name,
                ns,
                &svc_labels,
                &selector,
                &container_ports,
                container_ports.is_empty(),
            ));
        }

        if data_service {
            let mut spec = json!({
                "serviceName": k,
                "replicas": replicas,
                "selector": {"matchLabels": selector},
                "template": template,
                "podManagementPolicy": "OrderedReady",
                "updateStrategy": {"type": "RollingUpdate"},
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            });
            if !claims.is_empty() {
                spec["volumeClaimTemplates"] = json!(claims);
            }
            objects.push(obj(
                "apps/v1",
                "StatefulSet",
                &k,
                name,
                json!({
                    "apiVersion": "apps/v1", "kind": "StatefulSet",
                    "metadata": meta(&k, ns, &svc_labels),
                    "spec": spec,
                }),
            ));
            if sk.autoscale.is_some() {
                notes.add(name, "x-stackpilot.kubernetes.autoscale", "a service that holds data is not autoscaled (its pods do not share data): no HorizontalPodAutoscaler rendered");
            }
        } else {
            let mut spec = json!({
                "replicas": replicas,
                "selector": {"matchLabels": selector},
                "template": template,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "revisionHistoryLimit": 10,
            });
            if sk.autoscale.is_some() {
                // The HPA owns the replica count.
                if let Some(m) = spec.as_object_mut() {
                    m.remove("replicas");
                }
            }
            objects.push(obj(
                "apps/v1",
                "Deployment",
                &k,
                name,
                json!({
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": meta(&k, ns, &svc_labels),
                    "spec": spec,
                }),
            ));
            if let Some((min, max, cpu)) = sk.autoscale {
                objects.push(obj("autoscaling/v2", "HorizontalPodAutoscaler", &k, name, json!({
                    "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                    "metadata": meta(&k, ns, &svc_labels),
                    "spec": {
                        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": k},
                        "minReplicas": min, "maxReplicas": max,
                        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}],
                    },
                })));
            }
        }
        if let Some(min) = sk.min_available {
            objects.push(obj(
                "policy/v1",
                "PodDisruptionBudget",
                &k,
                name,
                json!({
                    "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                    "metadata": meta(&k, ns, &svc_labels),
                    "spec": {"minAvailable": min, "selector": {"matchLabels": selector}},
                }),
            ));
        }

        // Published host ports.
        for (host_ip, host_port, cport, proto) in &svc_published {
            let reached_by = match input.expose {
                Expose::None => format!("not exposed: `kubectl -n {ns} port-forward service/{k} {host_port}:{cport}`, or render with expose nodeport, loadbalancer or ingress"),
                Expose::Nodeport => {
                    if (30000..=32767).contains(host_port) {
                        format!("NodePort Service {k}-external on node port {host_port}")
                    } else {
                        format!("NodePort Service {k}-external (host port {host_port} is outside 30000-32767: the cluster assigns the node port)")
                    }
                }
                Expose::Loadbalancer => format!("LoadBalancer Service {k}-external on port {host_port}"),
                Expose::Ingress => {
                    if proto == "TCP" {
                        format!("Ingress {k} (HTTP) to Service {k} port {cport}")
                    } else {
                        "not exposed: an Ingress carries HTTP only".to_string()
                    }
                }
            };
            published.push(PublishedPort {
                service: name.clone(),
                host_ip: host_ip.clone(),
                host_port: *host_port,
                container_port: *cport,
                protocol: proto.to_ascii_lowercase(),
                reached_by,
            });
        }
        if !svc_published.is_empty() {
            match input.expose {
                Expose::None => {}
                Expose::Nodeport | Expose::Loadbalancer => {
                    let ext = format!("{k}-external");
                    let ports: Vec<Value> = svc_published.iter().map(|(_, hp, cp, proto)| {
                        let mut p = json!({"name": format!("{}-{hp}", proto.to_ascii_lowercase()), "port": hp, "targetPort": cp, "protocol": proto});
                        if input.expose == Expose::Nodeport && (30000..=32767).contains(hp) {
                            p["nodePort"] = json!(hp);
                        }
                        p
                    }).collect();
                    objects.push(obj("v1", "Service", &ext, name, json!({
                        "apiVersion": "v1", "kind": "Service",
                        "metadata": meta(&ext, ns, &svc_labels),
                        "spec": {"type": if input.expose == Expose::Nodeport {"NodePort"} else {"LoadBalancer"}, "selector": selector, "ports": ports},
                    })));
                }
                Expose::Ingress => {
                    if let Some((_, _, cp, _)) = svc_published.iter().find(|p| p.3 == "TCP") {
                        objects.push(obj("networking.k8s.io/v1", "Ingress", &k, name, json!({
                            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                            "metadata": meta(&k, ns, &svc_labels),
                            "spec": {"rules": [{"host": format!("{k}.{project}.local"), "http": {"paths": [{
                                "path": "/", "pathType": "Prefix",
                                "backend": {"service": {"name": k, "port": {"number": cp}}},
                            }]}}]},
                        })));
                    }
                }
            }
            if network_policy {
                let np = format!("{k}-published");
                let ports: Vec<Value> = svc_published
                    .iter()
                    .map(|(_, _, cp, proto)| json!({"port": cp, "protocol": proto}))
                    .collect();
                objects.push(obj("networking.k8s.io/v1", "NetworkPolicy", &np, name, json!({
                    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": meta(&np, ns, &svc_labels),
                    "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress"], "ingress": [{"ports": ports}]},
                })));
            }
        }
        let _ = nets;
    }

    if network_policy {
        let pl = labels::project_labels(project);
        let deny = format!("{}-default-deny", to_dns1123_label(project));
        objects.push(obj("networking.k8s.io/v1", "NetworkPolicy", &deny, "", json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": meta(&deny, ns, &pl),
            "spec": {"podSelector": {"matchLabels": {labels::INSTANCE: project}}, "policyTypes": ["Ingress"]},
        })));
        for n in &networks_used {
            let name = format!("{}-net-{n}", to_dns1123_label(project));
            let key = format!("io.stackpilot/net-{n}");
            objects.push(obj(
                "networking.k8s.io/v1",
                "NetworkPolicy",
                &name,
                "",
                json!({
                    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": meta(&name, ns, &pl),
                    "spec": {
                        "podSelector": {"matchLabels": {key.clone(): "true"}},
                        "policyTypes": ["Ingress"],
                        "ingress": [{"from": [{"podSelector": {"matchLabels": {key: "true"}}}]}],
                    },
                }),
            ));
        }
    }

    objects.sort_by(|a, b| (kind_rank(&a.kind), &a.name).cmp(&(kind_rank(&b.kind), &b.name)));
    let mut untranslatable = notes.0;
    untranslatable.sort();
    untranslatable.dedup();
    published.sort();
    Ok(Rendered {
        objects,
        untranslatable,
        published,
        env: env_out,
        secret_env: secret_out,
    })
}

fn service_object(
    name: &str,
    service: &str,
    ns: &str,
    svc_labels: &BTreeMap<String, String>,
    selector: &BTreeMap<String, String>,
    ports: &BTreeSet<(u16, String)>,
    headless: bool,
) -> KubeObject {
    let mut spec = json!({
        "selector": selector,
        "ports": ports.iter().map(|(p, proto)| json!({
            "name": format!("{}-{p}", proto.to_ascii_lowercase()),
            "port": p, "targetPort": p, "protocol": proto,
        })).collect::<Vec<_>>(),
    });
    if headless {
        spec["clusterIP"] = json!("None");
    }
    obj(
        "v1",
        "Service",
        name,
        service,
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": meta(name, ns, svc_labels),
            "spec": spec,
        }),
    )
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One object as YAML (the same bytes for the same object).
pub fn to_yaml(body: &Value) -> Result<String, ToolError> {
    serde_norway::to_string(body).map_err(|e| ToolError::internal(format!("YAML: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_quantities() {
        assert_eq!(duration_secs("1m30s"), Some(90));
        assert_eq!(duration_secs("500ms"), Some(1));
        assert_eq!(duration_secs("15s"), Some(15));
        assert_eq!(bytes_quantity(17_179_869_184), "16Gi");
        assert_eq!(bytes_quantity(1000), "1000");
        assert_eq!(memory_bytes(&json!("2147483648")), Some(2_147_483_648));
        assert_eq!(memory_bytes(&json!("512m")), Some(536_870_912));
        assert_eq!(cpu_quantity(&json!(0.5)).as_deref(), Some("500m"));
        assert_eq!(cpu_quantity(&json!("2")).as_deref(), Some("2"));
    }

    fn sample() -> (Value, StackModel, BTreeMap<String, String>) {
        let config = json!({
            "name": "demo",
            "services": {
                "web": {
                    "image": "busybox", "user": "1000:1000", "read_only": true,
                    "environment": {"GREETING": "hi", "API_TOKEN": "t0k3n-value", "DB_URL": "pg://u:pw-4711@db/x"},
                    "ports": [{"target": 8080, "published": "18080", "host_ip": "127.0.0.1", "protocol": "tcp"}],
                    "healthcheck": {"test": ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/ok"], "interval": "5s", "timeout": "2s", "retries": 3, "start_period": "20s"},
                    "networks": {"front": {"aliases": ["www"]}},
                    "network_mode": "bridge",
                    "volumes": [{"type": "bind", "source": "/etc/x", "target": "/x"}],
                    "x-stackpilot": {"kubernetes": {"replicas": 2, "autoscale": {"min_replicas": 2, "max_replicas": 5}, "min_available": 1}}
                },
                "db": {
                    "image": "postgres:16", "environment": {"POSTGRES_PASSWORD": "pw-4711"},
                    "volumes": [{"type": "volume", "source": "pg_data", "target": "/var/lib/postgresql/data"}],
                    "networks": {"front": null}
                }
            },
            "volumes": {"pg_data": {}},
            "x-stackpilot": {"kubernetes": {"network_policy": true, "storage_class": "fast"}}
        });
        let model = crate::domain::stack_model::model_from_config(
            &config,
            &config,
            std::path::Path::new("/s"),
            &[],
        );
        let dotenv = BTreeMap::from([("DB_PASSWORD".to_string(), "pw-4711".to_string())]);
        (config, model, dotenv)
    }

    #[test]
    fn renders_workloads_secrets_probes_and_production_shape() {
        let (config, model, dotenv) = sample();
        let input = Input {
            project: "demo",
            namespace: "llm",
            config: &config,
            model: &model,
            dotenv: &dotenv,
            expose: Expose::Nodeport,
            digest_key: b"k",
        };
        let r = render(&input).expect("render");
        let keys: Vec<String> = r.objects.iter().map(KubeObject::key).collect();
        assert_eq!(
            keys,
            [
                "ConfigMap/web-env",
                "Secret/db-env",
                "Secret/web-env",
                "Service/db",
                "Service/web",
                "Service/web-external",
                "Service/www",
                "Deployment/web",
                "StatefulSet/db",
                "HorizontalPodAutoscaler/web",
                "PodDisruptionBudget/web",
                "NetworkPolicy/demo-default-deny",
                "NetworkPolicy/demo-net-front",
                "NetworkPolicy/web-published",
            ]
        );
        let find = |k: &str| {
            r.objects
                .iter()
                .find(|o| o.key() == k)
                .expect(k)
                .body
                .clone()
        };
        // DB_URL holds the .env's secret value: it goes to the Secret with API_TOKEN.
        assert_eq!(find("ConfigMap/web-env")["data"], json!({"GREETING": "hi"}));
        let secret = find("Secret/web-env");
        assert!(
            secret["data"].get("DB_URL").is_some() && secret["data"].get("API_TOKEN").is_some()
        );
        let redacted = r
            .objects
            .iter()
            .find(|o| o.key() == "Secret/web-env")
            .expect("s")
            .redacted_body();
        assert!(!redacted
            .to_string()
            .contains(&base64_encode(b"t0k3n-value")));
        let web = find("Deployment/web");
        let c = &web["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["readinessProbe"]["httpGet"],
            json!({"path": "/ok", "port": 8080})
        );
        assert_eq!(c["startupProbe"]["failureThreshold"], json!(7));
        assert_eq!(
            c["securityContext"],
            json!({"runAsUser": 1000, "runAsGroup": 1000, "readOnlyRootFilesystem": true})
        );
        assert!(
            web["spec"].get("replicas").is_none(),
            "the HPA owns the count"
        );
        assert_eq!(
            web["spec"]["template"]["metadata"]["labels"]["io.stackpilot/net-front"],
            "true"
        );
        let db = find("StatefulSet/db");
        assert_eq!(
            db["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
            "pg-data"
        );
        assert_eq!(
            db["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"],
            "fast"
        );
        assert_eq!(find("Service/web-external")["spec"]["type"], "NodePort");
        let fields: Vec<(&str, &str)> = r
            .untranslatable
            .iter()
            .map(|u| (u.service.as_str(), u.field.as_str()))
            .collect();
        assert_eq!(fields, [("web", "network_mode"), ("web", "volumes[0]")]);
        assert_eq!(r.published[0].host_port, 18080);
        // Deterministic, and the digest follows the environment.
        assert_eq!(render(&input).expect("again"), r);
        let mut changed = config.clone();
        changed["services"]["web"]["environment"]["GREETING"] = json!("hello");
        let r2 = render(&Input {
            config: &changed,
            ..input
        })
        .expect("changed");
        let digest = |r: &Rendered, k: &str| {
            r.objects.iter().find(|o| o.key() == k).expect(k).body["spec"]["template"]["metadata"]
                ["annotations"][labels::CONFIG_DIGEST]
                .clone()
        };
        assert_ne!(digest(&r, "Deployment/web"), digest(&r2, "Deployment/web"));
        assert_eq!(digest(&r, "StatefulSet/db"), digest(&r2, "StatefulSet/db"));
    }

    #[test]
    fn curl_and_wget_of_localhost_become_http_probes() {
        assert_eq!(
            http_probe_of("curl -fsS -o /dev/null http://127.0.0.1:8000/health || wget -q http://127.0.0.1:8000/health"),
            Some((8000, "/health".into()))
        );
        assert_eq!(
            http_probe_of("wget -q -O- http://localhost/"),
            Some((80, "/".into()))
        );
        assert_eq!(http_probe_of("curl http://example.com/x"), None);
        assert_eq!(http_probe_of("pg_isready -q"), None);
    }
}
