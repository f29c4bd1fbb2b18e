//! Server-side apply of rendered objects (field manager `stackpilot`), the
//! plan from a server-side dry run against the live objects, pruning by
//! stackpilot's labels, rollout status with the pods' conditions and events
//! when a rollout does not finish, and rollback to the previous revision
//! (a Deployment's previous ReplicaSet, a StatefulSet's previous
//! ControllerRevision), as `kubectl rollout undo` does.
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams, PropagationPolicy,
};
use kube::Api;
use serde_json::{json, Value};

use crate::domain::error::ToolError;
use crate::domain::kubernetes::labels;
use crate::domain::kubernetes::render::{KubeObject, KIND_ORDER};

use super::KubeEngine;

/// What a dry run says an apply would do to one object.
#[derive(Debug, Clone, PartialEq)]
pub enum DryRun {
    Create,
    /// The changed fields (paths; never values).
    Update(Vec<String>),
    Unchanged,
    /// The server refuses the change in place (an immutable field): the
    /// object must be deleted and created again.
    Immutable(String),
}

/// A workload's rollout as it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub kind: String,
    pub name: String,
    pub done: bool,
    pub replicas: i64,
    pub ready: i64,
    pub updated: i64,
    pub message: String,
}

fn plural(kind: &str) -> Option<(&'static str, &'static str, &'static str)> {
    Some(match kind {
        "ConfigMap" => ("", "v1", "configmaps"),
        "Secret" => ("", "v1", "secrets"),
        "Service" => ("", "v1", "services"),
        "PersistentVolumeClaim" => ("", "v1", "persistentvolumeclaims"),
        "Deployment" => ("apps", "v1", "deployments"),
        "StatefulSet" => ("apps", "v1", "statefulsets"),
        "HorizontalPodAutoscaler" => ("autoscaling", "v2", "horizontalpodautoscalers"),
        "PodDisruptionBudget" => ("policy", "v1", "poddisruptionbudgets"),
        "NetworkPolicy" => ("networking.k8s.io", "v1", "networkpolicies"),
        "Ingress" => ("networking.k8s.io", "v1", "ingresses"),
        _ => return None,
    })
}

/// Fields the server owns or stamps: left out of a comparison.
fn strip(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "managedFields",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "uid",
            "selfLink",
        ] {
            m.remove(k);
        }
    }
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
    }
    v
}

/// The paths where two JSON values differ (at most `max`).
pub fn changed_paths(a: &Value, b: &Value, max: usize) -> Vec<String> {
    fn walk(a: Option<&Value>, b: Option<&Value>, path: &str, out: &mut Vec<String>, max: usize) {
        if out.len() >= max {
            return;
        }
        match (a, b) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(x.get(k), y.get(k), &p, out, max);
                }
            }
            (Some(Value::Array(x)), Some(Value::Array(y))) if x.len() == y.len() => {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    walk(Some(p), Some(q), &format!("{path}[{i}]"), out, max);
                }
            }
            (x, y) if x != y => out.push(path.to_string()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(Some(a), Some(b), "", &mut out, max);
    out
}

impl KubeEngine {
    fn dynamic(&self, client: &kube::Client, kind: &str) -> Result<Api<DynamicObject>, ToolError> {
        let (group, version, plural) =
            plural(kind).ok_or_else(|| ToolError::internal(format!("no API for kind {kind}")))?;
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        Ok(Api::namespaced_with(client.clone(), self.namespace(), &ar))
    }

    /// Whether the target namespace exists.
    pub async fn namespace_exists(&self) -> Result<bool, ToolError> {
        let api: Api<Namespace> = Api::all(self.client().await?.clone());
        api.get_opt(self.namespace())
            .await
            .map(|n| n.is_some())
            .map_err(|e| self.err("reading the namespace", &e))
    }

    pub async fn create_namespace(&self) -> Result<(), ToolError> {
        let api: Api<Namespace> = Api::all(self.client().await?.clone());
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": self.namespace(), "labels": {labels::MANAGED_BY: labels::MANAGER}}
        }))
        .map_err(|e| ToolError::internal(e.to_string()))?;
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
            Err(e) => Err(self.err("creating the namespace", &e)),
        }
    }

    /// The live object, when it exists.
    pub async fn live(&self, kind: &str, name: &str) -> Result<Option<Value>, ToolError> {
        let api = self.dynamic(self.client().await?, kind)?;
        let found = api
            .get_opt(name)
            .await
            .map_err(|e| self.err(&format!("reading {kind}/{name}"), &e))?;
        found
            .map(|o| serde_json::to_value(o).map_err(|e| ToolError::internal(e.to_string())))
            .transpose()
    }

    /// A server-side dry run of the apply against the live object.
    pub async fn dry_run(&self, obj: &KubeObject) -> Result<DryRun, ToolError> {
        let Some(live) = self.live(&obj.kind, &obj.name).await? else {
            return Ok(DryRun::Create);
        };
        let api = self.dynamic(self.client().await?, &obj.kind)?;
        let pp = PatchParams::apply(labels::FIELD_MANAGER).force().dry_run();
        match api.patch(&obj.name, &pp, &Patch::Apply(&obj.body)).await {
            Ok(result) => {
                let after =
                    serde_json::to_value(result).map_err(|e| ToolError::internal(e.to_string()))?;
                let paths = changed_paths(&strip(&live), &strip(&after), 20);
                Ok(if paths.is_empty() {
                    DryRun::Unchanged
                } else {
                    DryRun::Update(paths)
                })
            }
            Err(kube::Error::Api(s))
                if s.code == 422
                    && (s.message.contains("immutable") || s.message.contains("Forbidden")) =>
            {
                Ok(DryRun::Immutable(crate::domain::redact::cap(
                    &s.message, 400,
                )))
            }
            Err(e) => Err(self.err(&format!("dry run of {}", obj.key()), &e)),
        }
    }

    /// The replicas a live workload runs (None: not a workload, or gone).
    pub fn live_replicas(live: &Value) -> Option<i64> {
        live.pointer("/spec/replicas").and_then(Value::as_i64)
    }

    /// Objects of the project that stackpilot manages, per kind (what a prune compares with).
    pub async fn managed_objects(&self) -> Result<Vec<(String, String)>, ToolError> {
        let client = self.client().await?;
        let lp = ListParams::default().labels(&format!(
            "{}={},{}={}",
            labels::MANAGED_BY,
            labels::MANAGER,
            labels::PROJECT,
            self.project()
        ));
        let mut out = Vec::new();
        for kind in KIND_ORDER.iter().filter(|k| **k != "PersistentVolumeClaim") {
            let api = self.dynamic(client, kind)?;
            let list = api
                .list(&lp)
                .await
                .map_err(|e| self.err(&format!("listing {kind}s"), &e))?;
            for o in list.items {
                if let Some(n) = o.metadata.name {
                    out.push((kind.to_string(), n));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Server-side apply, field manager `stackpilot`, taking over conflicting fields.
    pub async fn apply(&self, obj: &KubeObject) -> Result<(), ToolError> {
        let api = self.dynamic(self.client().await?, &obj.kind)?;
        let pp = PatchParams::apply(labels::FIELD_MANAGER).force();
        api.patch(&obj.name, &pp, &Patch::Apply(&obj.body))
            .await
            .map(|_| ())
            .map_err(|e| self.err(&format!("applying {}", obj.key()), &e))
    }

    /// Deletes an object (its pods first) and waits until it is gone.
    pub async fn delete(&self, kind: &str, name: &str, limit: Duration) -> Result<(), ToolError> {
        let api = self.dynamic(self.client().await?, kind)?;
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => {}
            Err(e) if super::client::is_not_found(&e) => return Ok(()),
            Err(e) => return Err(self.err(&format!("deleting {kind}/{name}"), &e)),
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match api.get_opt(name).await {
                Ok(None) => return Ok(()),
                Ok(Some(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await
                }
                Ok(Some(_)) => {
                    return Err(ToolError::external(format!(
                        "{kind}/{name} was still there {} s after its deletion",
                        limit.as_secs()
                    )))
                }
                Err(e) => return Err(self.err(&format!("waiting for {kind}/{name} to go"), &e)),
            }
        }
    }

    /// Where a workload's rollout stands: a Deployment is done when its
    /// newest ReplicaSet has every replica updated and available; a
    /// StatefulSet when every replica is ready at the update revision.
    pub async fn rollout(&self, kind: &str, name: &str) -> Result<Rollout, ToolError> {
        let client = self.client().await?.clone();
        let ns = self.namespace();
        let mut r = Rollout {
            kind: kind.to_string(),
            name: name.to_string(),
            done: false,
            replicas: 0,
            ready: 0,
            updated: 0,
            message: String::new(),
        };
        match kind {
            "Deployment" => {
                let Some(d) = Api::<Deployment>::namespaced(client, ns)
                    .get_opt(name)
                    .await
                    .map_err(|e| self.err(&format!("reading Deployment/{name}"), &e))?
                else {
                    r.message = "gone".into();
                    return Ok(r);
                };
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) as i64;
                let st = d.status.unwrap_or_default();
                let gen_ok =
                    st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
                r.replicas = want;
                r.ready = st.available_replicas.unwrap_or(0) as i64;
                r.updated = st.updated_replicas.unwrap_or(0) as i64;
                let total = st.replicas.unwrap_or(0) as i64;
                let progressing_failed = st
                    .conditions
                    .iter()
                    .flatten()
                    .find(|c| c.type_ == "Progressing" && c.status == "False");
                r.done = gen_ok && r.updated == want && total == want && r.ready == want;
                r.message = match (r.done, progressing_failed) {
                    (true, _) => format!("{want}/{want} available with the new ReplicaSet"),
                    (false, Some(c)) => format!(
                        "progress stopped: {}",
                        c.message.clone().unwrap_or_default()
                    ),
                    (false, None) => format!(
                        "{} of {want} updated, {} available, {total} pods",
                        r.updated, r.ready
                    ),
                };
            }
            "StatefulSet" => {
                let Some(s) = Api::<StatefulSet>::namespaced(client, ns)
                    .get_opt(name)
                    .await
                    .map_err(|e| self.err(&format!("reading StatefulSet/{name}"), &e))?
                else {
                    r.message = "gone".into();
                    return Ok(r);
                };
                let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) as i64;
                let st = s.status.unwrap_or_default();
                let gen_ok =
                    st.observed_generation.unwrap_or(0) >= s.metadata.generation.unwrap_or(0);
                r.replicas = want;
                r.ready = st.ready_replicas.unwrap_or(0) as i64;
                r.updated = st.updated_replicas.unwrap_or(0) as i64;
                let same_rev =
                    st.update_revision.is_some() && st.current_revision == st.update_revision;
                r.done = gen_ok
                    && r.ready == want
                    && (r.updated == want || want == 0)
                    && (same_rev || want == 0);
                r.message = if r.done {
                    format!(
                        "{want}/{want} ready at revision {}",
                        st.update_revision.unwrap_or_default()
                    )
                } else {
                    format!("{} of {want} ready, {} updated", r.ready, r.updated)
                };
            }
            _ => {
                r.done = true;
                r.message = "not a workload".into();
            }
        }
        Ok(r)
    }

    /// Evidence for a workload that did not roll out: each pod's phase,
    /// conditions, container states, and its recent warning events.
    pub async fn rollout_evidence(&self, service_selector: &str) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(pods) = self.pods().await else {
            return out;
        };
        let list = match pods
            .list(&ListParams::default().labels(service_selector))
            .await
        {
            Ok(l) => l.items,
            Err(e) => return vec![format!("listing pods failed: {e}")],
        };
        let mut list: Vec<Pod> = list;
        list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        for p in list.iter().take(6) {
            let name = p.metadata.name.clone().unwrap_or_default();
            let st = p.status.clone().unwrap_or_default();
            let conditions: Vec<String> = st
                .conditions
                .iter()
                .flatten()
                .map(|c| {
                    format!(
                        "{}={}{}",
                        c.type_,
                        c.status,
                        c.reason
                            .as_deref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            let containers: Vec<String> = st
                .container_statuses
                .iter()
                .flatten()
                .map(|c| {
                    let state = c.state.as_ref();
                    let what = if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
                        format!(
                            "waiting {}: {}",
                            w.reason.as_deref().unwrap_or("?"),
                            crate::domain::redact::cap(w.message.as_deref().unwrap_or(""), 300)
                        )
                    } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
                        format!(
                            "terminated {} (exit {})",
                            t.reason.as_deref().unwrap_or("?"),
                            t.exit_code
                        )
                    } else {
                        format!("running, ready {}", c.ready)
                    };
                    format!("{}: {what}, restarts {}", c.name, c.restart_count)
                })
                .collect();
            out.push(format!(
                "pod {name}: phase {}; conditions {}; containers {}",
                st.phase.unwrap_or_default(),
                if conditions.is_empty() {
                    "none".into()
                } else {
                    conditions.join(", ")
                },
                if containers.is_empty() {
                    "none".into()
                } else {
                    containers.join("; ")
                }
            ));
            if let Ok(events) = self.pod_events(&name).await {
                let warnings: Vec<String> = events
                    .iter()
                    .filter(|e| e.type_.as_deref() == Some("Warning"))
                    .rev()
                    .take(5)
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e.reason.as_deref().unwrap_or("?"),
                            crate::domain::redact::cap(
                                e.message.as_deref().unwrap_or("").trim(),
                                300
                            )
                        )
                    })
                    .collect();
                if !warnings.is_empty() {
                    out.push(format!(
                        "pod {name} events (newest first): {}",
                        warnings.join(" | ")
                    ));
                }
            }
        }
        out
    }

    /// Restores a workload's previous revision (`kubectl rollout undo`):
    /// its pod template from the previous ReplicaSet (Deployment) or
    /// ControllerRevision (StatefulSet). Returns which revision.
    pub async fn rollback(&self, kind: &str, name: &str) -> Result<String, ToolError> {
        let client = self.client().await?.clone();
        let ns = self.namespace();
        match kind {
            "Deployment" => {
                let api = Api::<Deployment>::namespaced(client.clone(), ns);
                let mut d = api
                    .get(name)
                    .await
                    .map_err(|e| self.err(&format!("reading Deployment/{name}"), &e))?;
                let uid = d.metadata.uid.clone().unwrap_or_default();
                let sets = Api::<ReplicaSet>::namespaced(client, ns)
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| self.err("listing ReplicaSets", &e))?;
                let rev = |rs: &ReplicaSet| -> i64 {
                    rs.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("deployment.kubernetes.io/revision"))
                        .and_then(|r| r.parse().ok())
                        .unwrap_or(0)
                };
                let mut owned: Vec<ReplicaSet> = sets
                    .items
                    .into_iter()
                    .filter(|rs| {
                        rs.metadata
                            .owner_references
                            .iter()
                            .flatten()
                            .any(|o| o.uid == uid)
                    })
                    .collect();
                owned.sort_by_key(|rs| std::cmp::Reverse(rev(rs)));
                let Some(prev) = owned.get(1) else {
                    return Err(ToolError::external(format!(
                        "Deployment/{name} has no previous revision to roll back to"
                    )));
                };
                let revision = rev(prev);
                let mut template = prev
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.clone())
                    .ok_or_else(|| {
                        ToolError::external("the previous ReplicaSet has no pod template")
                    })?;
                if let Some(l) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
                    l.remove("pod-template-hash");
                }
                if let Some(spec) = d.spec.as_mut() {
                    spec.template = template;
                }
                d.metadata.managed_fields = None;
                api.replace(name, &PostParams::default(), &d)
                    .await
                    .map_err(|e| self.err(&format!("rolling back Deployment/{name}"), &e))?;
                Ok(format!("revision {revision}"))
            }
            "StatefulSet" => {
                let api = Api::<StatefulSet>::namespaced(client.clone(), ns);
                let mut s = api
                    .get(name)
                    .await
                    .map_err(|e| self.err(&format!("reading StatefulSet/{name}"), &e))?;
                let uid = s.metadata.uid.clone().unwrap_or_default();
                let current = s
                    .status
                    .as_ref()
                    .and_then(|st| st.update_revision.clone())
                    .unwrap_or_default();
                let revs = Api::<ControllerRevision>::namespaced(client, ns)
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| self.err("listing ControllerRevisions", &e))?;
                let mut owned: Vec<ControllerRevision> = revs
                    .items
                    .into_iter()
                    .filter(|r| {
                        r.metadata
                            .owner_references
                            .iter()
                            .flatten()
                            .any(|o| o.uid == uid)
                    })
                    .filter(|r| r.metadata.name.as_deref() != Some(current.as_str()))
                    .collect();
                owned.sort_by_key(|r| std::cmp::Reverse(r.revision));
                let Some(prev) = owned.first() else {
                    return Err(ToolError::external(format!(
                        "StatefulSet/{name} has no previous revision to roll back to"
                    )));
                };
                let template: Value = prev
                    .data
                    .as_ref()
                    .and_then(|d| serde_json::to_value(d).ok())
                    .and_then(|d| d.pointer("/spec/template").cloned())
                    .ok_or_else(|| {
                        ToolError::external("the previous ControllerRevision has no pod template")
                    })?;
                let mut template = template;
                if let Some(m) = template.as_object_mut() {
                    m.remove("$patch");
                }
                let template = serde_json::from_value(template)
                    .map_err(|e| ToolError::internal(e.to_string()))?;
                if let Some(spec) = s.spec.as_mut() {
                    spec.template = template;
                }
                s.metadata.managed_fields = None;
                api.replace(name, &PostParams::default(), &s)
                    .await
                    .map_err(|e| self.err(&format!("rolling back StatefulSet/{name}"), &e))?;
                Ok(format!("revision {}", prev.revision))
            }
            other => Err(ToolError::internal(format!(
                "{other} has no rollout to undo"
            ))),
        }
    }
}

/// The label selector of a service's pods, as text.
pub fn service_selector(project: &str, service_label: &str) -> String {
    let sel: BTreeMap<String, String> = labels::selector(project, service_label);
    sel.into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_what_differs_never_values() {
        let a = json!({"data": {"A": "1", "B": "2"}, "spec": {"x": [1, 2]}});
        let b = json!({"data": {"A": "1", "B": "3", "C": "4"}, "spec": {"x": [1, 5]}});
        assert_eq!(changed_paths(&a, &b, 10), ["data.B", "data.C", "spec.x[1]"]);
        assert!(changed_paths(&a, &a, 10).is_empty());
    }
}
