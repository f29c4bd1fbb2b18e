//! A pod's owner (Deployment or StatefulSet) and what is done to it: scale
//! to 0 and back (the port's stop/start: a pod cannot be stopped in place),
//! and a rollout restart (the port's recreate).
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::domain::kubernetes::labels;

/// The workload a pod belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Deployment(String),
    StatefulSet(String),
}

impl Owner {
    pub fn describe(&self) -> String {
        match self {
            Owner::Deployment(n) => format!("Deployment {n}"),
            Owner::StatefulSet(n) => format!("StatefulSet {n}"),
        }
    }
}

/// Follows ownerReferences: Pod -> ReplicaSet -> Deployment, or Pod -> StatefulSet.
pub async fn owner_of(client: &Client, ns: &str, pod: &Pod) -> Result<Option<Owner>, kube::Error> {
    for r in pod.metadata.owner_references.iter().flatten() {
        match r.kind.as_str() {
            "StatefulSet" => return Ok(Some(Owner::StatefulSet(r.name.clone()))),
            "ReplicaSet" => {
                let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
                if let Some(rs) = rs.get_opt(&r.name).await? {
                    for o in rs.metadata.owner_references.iter().flatten() {
                        if o.kind == "Deployment" {
                            return Ok(Some(Owner::Deployment(o.name.clone())));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(None)
}

/// The replicas a workload asks for now.
pub async fn replicas(client: &Client, ns: &str, owner: &Owner) -> Result<i32, kube::Error> {
    Ok(match owner {
        Owner::Deployment(n) => Api::<Deployment>::namespaced(client.clone(), ns)
            .get(n)
            .await?
            .spec
            .and_then(|s| s.replicas)
            .unwrap_or(1),
        Owner::StatefulSet(n) => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .get(n)
            .await?
            .spec
            .and_then(|s| s.replicas)
            .unwrap_or(1),
    })
}

/// Sets the replicas and records (or clears) the count to restore.
pub async fn scale(
    client: &Client,
    ns: &str,
    owner: &Owner,
    replicas: i32,
    remember: Option<i32>,
) -> Result<(), kube::Error> {
    let patch = json!({
        "metadata": {"annotations": {labels::STOPPED_REPLICAS: remember.map(|r| r.to_string())}},
        "spec": {"replicas": replicas}
    });
    let pp = PatchParams::default();
    match owner {
        Owner::Deployment(n) => {
            Api::<Deployment>::namespaced(client.clone(), ns)
                .patch(n, &pp, &Patch::Merge(&patch))
                .await?;
        }
        Owner::StatefulSet(n) => {
            Api::<StatefulSet>::namespaced(client.clone(), ns)
                .patch(n, &pp, &Patch::Merge(&patch))
                .await?;
        }
    }
    Ok(())
}

/// The count `scale` remembered, if any.
pub async fn remembered(
    client: &Client,
    ns: &str,
    owner: &Owner,
) -> Result<Option<i32>, kube::Error> {
    let annotations = match owner {
        Owner::Deployment(n) => {
            Api::<Deployment>::namespaced(client.clone(), ns)
                .get(n)
                .await?
                .metadata
                .annotations
        }
        Owner::StatefulSet(n) => {
            Api::<StatefulSet>::namespaced(client.clone(), ns)
                .get(n)
                .await?
                .metadata
                .annotations
        }
    };
    Ok(annotations
        .and_then(|a| a.get(labels::STOPPED_REPLICAS).cloned())
        .and_then(|v| v.parse().ok()))
}

/// Waits until the workload's pods number `want` (gone, or back and running).
pub async fn wait_pods(
    client: &Client,
    ns: &str,
    selector: &str,
    want: usize,
    limit: Duration,
) -> Result<bool, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let list = pods.list(&ListParams::default().labels(selector)).await?;
        let count = list
            .items
            .iter()
            .filter(|p| {
                if want == 0 {
                    true
                } else {
                    super::pods::state_of(p) == "running"
                        && super::pods::detail_of(p, &[], Vec::new()).serving
                }
            })
            .count();
        if count == want {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `kubectl rollout restart`: a new pod-template annotation, so the
/// controller replaces the pods with its own update strategy.
pub async fn rollout_restart(
    client: &Client,
    ns: &str,
    owner: &Owner,
    at: &str,
) -> Result<(), kube::Error> {
    let patch =
        json!({"spec": {"template": {"metadata": {"annotations": {labels::RESTARTED_AT: at}}}}});
    let pp = PatchParams::default();
    match owner {
        Owner::Deployment(n) => {
            Api::<Deployment>::namespaced(client.clone(), ns)
                .patch(n, &pp, &Patch::Merge(&patch))
                .await?;
        }
        Owner::StatefulSet(n) => {
            Api::<StatefulSet>::namespaced(client.clone(), ns)
                .patch(n, &pp, &Patch::Merge(&patch))
                .await?;
        }
    }
    Ok(())
}

/// The workload of a compose service, found by stackpilot's labels.
pub async fn workload_of_service(
    client: &Client,
    ns: &str,
    project: &str,
    service: &str,
) -> Result<Option<Owner>, kube::Error> {
    let sel = format!(
        "{},{}={}",
        labels::project_selector(project),
        labels::SERVICE,
        service
    );
    let lp = ListParams::default().labels(&sel);
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    let stateful_sets = Api::<StatefulSet>::namespaced(client.clone(), ns);
    let (d, s) = tokio::join!(deployments.list(&lp), stateful_sets.list(&lp));
    if let Some(n) = d?.items.into_iter().find_map(|d| d.metadata.name) {
        return Ok(Some(Owner::Deployment(n)));
    }
    Ok(s?
        .items
        .into_iter()
        .find_map(|s| s.metadata.name)
        .map(Owner::StatefulSet))
}
