//! The Kubernetes engine: the same port as Compose, on a namespace of a
//! kubeconfig context, through the API server with kube-rs (never kubectl).
//! The stack model still comes from the compose files (`docker compose
//! config` needs no daemon); instances are the pods of the stack's
//! workloads, found by stackpilot's labels (`app.kubernetes.io/managed-by=
//! stackpilot`, `app.kubernetes.io/instance=<project>`, `io.stackpilot/*`).
//!
//! How the port's verbs map: restart deletes the pod (its controller makes
//! a new one); recreate is a rollout restart; stop and start scale the
//! pod's Deployment or StatefulSet to 0 and back (a pod cannot be stopped in
//! place); volumes are PersistentVolumeClaims; a helper is a short-lived pod
//! with the claim mounted; exec runs over the API server's websocket.
pub mod apply;
pub mod client;
pub mod env;
pub mod exec;
pub mod logs;
pub mod pods;
pub mod session;
pub mod workloads;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, PersistentVolumeClaim, Pod, Secret};
use kube::api::{DeleteParams, ListParams, LogParams};
use kube::{Api, Client};

use crate::domain::error::ToolError;
use crate::domain::instance::{EngineFacts, Instance, InstanceDetail};
use crate::domain::kubernetes::labels;
use crate::domain::kubernetes::target::KubeTarget;
use crate::domain::redact::SecretBook;
use crate::domain::stack::Stack;
use crate::domain::stack_model::StackModel;
use crate::engine::compose::cli::Compose;
use crate::engine::{Engine, EngineKind, HelperSpec, Process};

use workloads::Owner;

/// How long a stop (scale to 0) waits for the pods to go, and a start for them to serve.
const SCALE_WAIT: Duration = Duration::from_secs(180);

pub struct KubeEngine {
    stack: Stack,
    target: KubeTarget,
    /// Connected on first use and kept (failures are not cached).
    client: tokio::sync::OnceCell<(Client, String)>,
    /// Pods stopped through `stop`: their workload and pod selector, so
    /// `start` finds it after the pod is gone.
    stopped: Mutex<HashMap<String, (Owner, String)>>,
    /// Every secret value seen (the compose model's, the pods' resolved
    /// environments, Secrets included): what outputs are masked with.
    secrets: Arc<SecretBook>,
}

impl KubeEngine {
    /// Cheap: nothing is reached until a method needs it.
    pub fn new(stack: Stack, target: KubeTarget, secrets: Arc<SecretBook>) -> Self {
        Self {
            stack,
            target,
            client: tokio::sync::OnceCell::new(),
            stopped: Mutex::new(HashMap::new()),
            secrets,
        }
    }

    pub fn target(&self) -> &KubeTarget {
        &self.target
    }

    pub fn project(&self) -> &str {
        &self.stack.project
    }

    pub fn namespace(&self) -> &str {
        &self.target.namespace
    }

    /// The API client; an unreachable server or a bad kubeconfig is a clear
    /// error within 2 s naming the context.
    pub async fn client(&self) -> Result<&Client, ToolError> {
        self.client
            .get_or_try_init(|| client::connect(&self.target))
            .await
            .map(|(c, _)| c)
    }

    /// The API server's URL (after a successful connect).
    pub async fn server_url(&self) -> Result<String, ToolError> {
        self.client().await?;
        Ok(self
            .client
            .get()
            .map(|(_, u)| u.clone())
            .unwrap_or_default())
    }

    async fn pods(&self) -> Result<Api<Pod>, ToolError> {
        Ok(Api::namespaced(
            self.client().await?.clone(),
            self.namespace(),
        ))
    }

    fn err(&self, what: &str, e: &kube::Error) -> ToolError {
        client::api_error(&self.target, what, e)
    }

    /// The compose CLI for the model (`docker compose config` needs no daemon).
    pub fn cli(&self) -> Result<Compose, ToolError> {
        Compose::for_stack(&self.stack)
    }

    async fn pod(&self, id: &str) -> Result<Option<Pod>, ToolError> {
        self.pods()
            .await?
            .get_opt(id)
            .await
            .map_err(|e| self.err(&format!("reading pod {id}"), &e))
    }

    /// The pod's events, oldest first.
    pub async fn pod_events(&self, pod: &str) -> Result<Vec<Event>, ToolError> {
        let events: Api<Event> = Api::namespaced(self.client().await?.clone(), self.namespace());
        let lp = ListParams::default().fields(&format!(
            "involvedObject.kind=Pod,involvedObject.name={pod}"
        ));
        let mut list = events
            .list(&lp)
            .await
            .map_err(|e| self.err("listing events", &e))?
            .items;
        list.sort_by_key(pods::event_time);
        Ok(list)
    }

    async fn resolved_env(&self, pod: &Pod) -> Result<Vec<String>, ToolError> {
        let Some(container) = pod.spec.as_ref().and_then(|s| s.containers.first()) else {
            return Ok(Vec::new());
        };
        let client = self.client().await?.clone();
        env::resolve(
            Api::<ConfigMap>::namespaced(client.clone(), self.namespace()),
            Api::<Secret>::namespaced(client, self.namespace()),
            container,
        )
        .await
    }

    async fn owner(&self, pod: &Pod) -> Result<Owner, ToolError> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        workloads::owner_of(self.client().await?, self.namespace(), pod)
            .await
            .map_err(|e| self.err(&format!("finding the workload of pod {name}"), &e))?
            .ok_or_else(|| {
                ToolError::external(format!(
                    "pod {name} belongs to no Deployment or StatefulSet, so it cannot be stopped and started"
                ))
            })
    }

    fn selector_of(pod: &Pod) -> String {
        let l = pod.metadata.labels.clone().unwrap_or_default();
        let service = l.get(labels::NAME).cloned().unwrap_or_default();
        let project = l.get(labels::INSTANCE).cloned().unwrap_or_default();
        labels::selector(&project, &service)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[async_trait]
impl Engine for KubeEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Kubernetes
    }

    async fn ping(&self) -> Result<(), ToolError> {
        let c = self.client().await?;
        match tokio::time::timeout(client::CONNECT_TIMEOUT, c.apiserver_version()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.err("the API server did not answer", &e)),
            Err(_) => Err(ToolError::external(format!(
                "Kubernetes context `{}`: the API server did not answer within 2 s",
                self.target.context_name()
            ))),
        }
    }

    async fn model(&self, profiles: &[String]) -> Result<StackModel, ToolError> {
        let model = self.cli()?.model(profiles).await?;
        self.secrets.learn(model.secret_values.iter().cloned());
        Ok(model)
    }

    async fn model_cached(&self) -> Result<StackModel, ToolError> {
        let model = self.cli()?.model_cached(&[]).await?;
        self.secrets.learn(model.secret_values.iter().cloned());
        Ok(model)
    }

    async fn compose_config(&self, profiles: &[String]) -> Result<serde_json::Value, ToolError> {
        self.cli()?.config_value(profiles).await
    }

    async fn compose_profiles(&self) -> Result<Vec<String>, ToolError> {
        self.cli()?.profiles().await
    }

    async fn instances(&self) -> Result<Vec<Instance>, ToolError> {
        let lp = ListParams::default().labels(&labels::project_selector(self.project()));
        let list = self
            .pods()
            .await?
            .list(&lp)
            .await
            .map_err(|e| self.err("listing pods", &e))?;
        // A pod being deleted (the old one of a rollout) is no instance any more.
        let mut out: Vec<Instance> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(pods::instance_of)
            .collect();
        out.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
        Ok(out)
    }

    async fn inspect(&self, id: &str) -> Result<Option<InstanceDetail>, ToolError> {
        let (pod, events) = tokio::join!(self.pod(id), self.pod_events(id));
        let Some(pod) = pod? else {
            return Ok(None);
        };
        let env = self.resolved_env(&pod).await?;
        self.secrets.learn_env(&env);
        Ok(Some(pods::detail_of(&pod, &events?, env)))
    }

    async fn facts(&self) -> Result<EngineFacts, ToolError> {
        let nodes: Api<Node> = Api::all(self.client().await?.clone());
        let list = nodes
            .list(&ListParams::default())
            .await
            .map_err(|e| self.err("listing nodes", &e))?;
        let gpu = list.items.iter().any(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.allocatable.as_ref())
                .and_then(|a| a.get("nvidia.com/gpu"))
                .is_some_and(|q| q.0.trim() != "0")
        });
        Ok(EngineFacts {
            nvidia_runtime: gpu,
            data_root: None,
            // Volumes live on the nodes: host disk checks do not apply.
            local: false,
        })
    }

    async fn logs_tail(
        &self,
        id: &str,
        lines: usize,
        max_bytes: usize,
    ) -> Result<Vec<u8>, ToolError> {
        let lp = LogParams {
            tail_lines: Some(lines as i64),
            limit_bytes: Some((max_bytes.saturating_mul(8).max(64 * 1024)) as i64),
            ..Default::default()
        };
        self.pods()
            .await?
            .logs(id, &lp)
            .await
            .map(String::into_bytes)
            .map_err(|e| self.err(&format!("reading the logs of pod {id}"), &e))
    }

    async fn logs(
        &self,
        id: &str,
        query: &crate::engine::LogQuery,
    ) -> Result<crate::engine::LogLines, ToolError> {
        logs::lines(
            self.pods().await?,
            id,
            query,
            crate::adapters::clock::now_unix_ns(),
        )
        .await
    }

    async fn watch(&self) -> Result<futures::stream::BoxStream<'static, String>, ToolError> {
        Ok(logs::watch(self.pods().await?, self.project()))
    }

    async fn environment(&self, id: &str) -> Result<Vec<String>, ToolError> {
        let env = match self.pod(id).await? {
            Some(p) => self.resolved_env(&p).await?,
            None => Vec::new(),
        };
        self.secrets.learn_env(&env);
        Ok(env)
    }

    async fn exec(
        &self,
        id: &str,
        cmd: Vec<String>,
        env: Vec<String>,
        stdin: bool,
    ) -> Result<Process, ToolError> {
        let pod = self
            .pod(id)
            .await?
            .ok_or_else(|| ToolError::external(format!("pod {id} is gone")))?;
        let container = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|c| c.name.clone());
        exec::exec(
            &self.pods().await?,
            id,
            container.as_deref(),
            cmd,
            env,
            stdin,
        )
        .await
    }

    async fn restart(&self, id: &str, stop_timeout_s: Option<i32>) -> Result<(), ToolError> {
        let dp = DeleteParams {
            grace_period_seconds: stop_timeout_s.and_then(|s| u32::try_from(s).ok()),
            ..Default::default()
        };
        self.pods()
            .await?
            .delete(id, &dp)
            .await
            .map(|_| ())
            .map_err(|e| self.err(&format!("deleting pod {id} for a restart"), &e))
    }

    async fn stop(&self, id: &str) -> Result<(), ToolError> {
        let pod = self
            .pod(id)
            .await?
            .ok_or_else(|| ToolError::external(format!("pod {id} is gone")))?;
        let owner = self.owner(&pod).await?;
        let client = self.client().await?;
        let ns = self.namespace();
        let current = workloads::replicas(client, ns, &owner)
            .await
            .map_err(|e| self.err(&format!("reading {}", owner.describe()), &e))?;
        let keep = match workloads::remembered(client, ns, &owner).await {
            Ok(Some(r)) if current == 0 => r,
            _ => current,
        };
        workloads::scale(client, ns, &owner, 0, Some(keep))
            .await
            .map_err(|e| self.err(&format!("scaling {} to 0", owner.describe()), &e))?;
        let selector = Self::selector_of(&pod);
        if let Ok(mut s) = self.stopped.lock() {
            s.insert(id.to_string(), (owner.clone(), selector.clone()));
        }
        let gone = workloads::wait_pods(client, ns, &selector, 0, SCALE_WAIT)
            .await
            .map_err(|e| self.err("waiting for pods to stop", &e))?;
        if !gone {
            return Err(ToolError::external(format!(
                "{} was scaled to 0 but its pods were still there after {} s",
                owner.describe(),
                SCALE_WAIT.as_secs()
            )));
        }
        Ok(())
    }

    async fn start(&self, id: &str) -> Result<(), ToolError> {
        let known = self.stopped.lock().ok().and_then(|s| s.get(id).cloned());
        let (owner, selector) = match known {
            Some(k) => k,
            None => {
                let pod = self.pod(id).await?.ok_or_else(|| {
                    ToolError::external(format!(
                        "pod {id} is gone and was not stopped by this server"
                    ))
                })?;
                (self.owner(&pod).await?, Self::selector_of(&pod))
            }
        };
        let client = self.client().await?;
        let ns = self.namespace();
        let want = workloads::remembered(client, ns, &owner)
            .await
            .map_err(|e| self.err(&format!("reading {}", owner.describe()), &e))?
            .unwrap_or(1)
            .max(1);
        workloads::scale(client, ns, &owner, want, None)
            .await
            .map_err(|e| self.err(&format!("scaling {} to {want}", owner.describe()), &e))?;
        if let Ok(mut s) = self.stopped.lock() {
            s.remove(id);
        }
        let back = workloads::wait_pods(client, ns, &selector, want as usize, SCALE_WAIT)
            .await
            .map_err(|e| self.err("waiting for pods to start", &e))?;
        if !back {
            return Err(ToolError::external(format!(
                "{} was scaled back to {want} but its pods did not serve within {} s",
                owner.describe(),
                SCALE_WAIT.as_secs()
            )));
        }
        Ok(())
    }

    async fn recreate(&self, service: &str) -> Result<(), ToolError> {
        let client = self.client().await?;
        let owner =
            workloads::workload_of_service(client, self.namespace(), self.project(), service)
                .await
                .map_err(|e| self.err("finding the service's workload", &e))?
                .ok_or_else(|| {
                    ToolError::external(format!(
                        "service `{service}` has no Deployment or StatefulSet in namespace `{}`",
                        self.namespace()
                    ))
                    .next_step("apply the stack with kube_apply")
                })?;
        let at = crate::adapters::clock::now_rfc3339();
        workloads::rollout_restart(client, self.namespace(), &owner, &at)
            .await
            .map_err(|e| self.err(&format!("rollout restart of {}", owner.describe()), &e))
    }

    async fn volume(&self, volume: &str) -> Result<String, ToolError> {
        let pvcs: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client().await?.clone(), self.namespace());
        let sel = format!(
            "{}={},{}={}",
            labels::PROJECT,
            self.project(),
            labels::VOLUME,
            volume
        );
        let mut names: Vec<String> = pvcs
            .list(&ListParams::default().labels(&sel))
            .await
            .map_err(|e| self.err("listing claims", &e))?
            .items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        names.sort();
        names.into_iter().next().ok_or_else(|| {
            ToolError::external(format!(
                "volume `{volume}` of project `{}` has no PersistentVolumeClaim in namespace `{}`",
                self.project(),
                self.namespace()
            ))
            .next_step("apply the stack (kube_apply) so its StatefulSet creates the claim")
        })
    }

    async fn volume_exists(&self, engine_volume: &str) -> Result<bool, ToolError> {
        let pvcs: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client().await?.clone(), self.namespace());
        pvcs.get_opt(engine_volume)
            .await
            .map(|c| c.is_some())
            .map_err(|e| self.err("reading a claim", &e))
    }

    async fn volume_users(&self, engine_volume: &str) -> Result<Vec<Instance>, ToolError> {
        let list = self
            .pods()
            .await?
            .list(&ListParams::default())
            .await
            .map_err(|e| self.err("listing pods", &e))?;
        let mut out: Vec<Instance> = list
            .items
            .iter()
            .map(pods::instance_of)
            .filter(|i| !i.one_off && i.volumes.iter().any(|v| v == engine_volume))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn image_present(&self, image: &str) -> bool {
        let Ok(client) = self.client().await else {
            return false;
        };
        let want = normalize_image(image);
        let nodes: Api<Node> = Api::all(client.clone());
        match nodes.list(&ListParams::default()).await {
            Ok(list) => list.items.iter().any(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.images.as_ref())
                    .is_some_and(|imgs| {
                        imgs.iter()
                            .flat_map(|i| i.names.iter().flatten())
                            .any(|name| normalize_image(name) == want)
                    })
            }),
            Err(_) => false,
        }
    }

    async fn helper(&self, spec: &HelperSpec) -> Result<Process, ToolError> {
        let node = match &spec.volume {
            Some((claim, _)) => {
                let list = self
                    .pods()
                    .await?
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| self.err("listing pods", &e))?;
                list.items.iter().find_map(|p| {
                    let s = p.spec.as_ref()?;
                    let uses = s.volumes.iter().flatten().any(|v| {
                        v.persistent_volume_claim
                            .as_ref()
                            .is_some_and(|c| &c.claim_name == claim)
                    });
                    uses.then(|| s.node_name.clone()).flatten()
                })
            }
            None => None,
        };
        exec::helper(&self.pods().await?, self.project(), spec, node).await
    }
}

/// An image reference as a node lists it: `docker.io/library/x:latest`.
pub fn normalize_image(image: &str) -> String {
    let image = image.split('@').next().unwrap_or(image);
    let (repo, tag) = match image.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
        _ => (image.to_string(), "latest".to_string()),
    };
    let first = repo.split('/').next().unwrap_or("");
    let has_registry =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let repo = if has_registry {
        repo
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    };
    format!("{repo}:{tag}")
}

#[cfg(test)]
mod tests {
    use super::normalize_image;

    #[test]
    fn images_normalize_like_containerd_names_them() {
        assert_eq!(
            normalize_image("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize_image("stackpilot-test/busybox:1"),
            "docker.io/stackpilot-test/busybox:1"
        );
        assert_eq!(
            normalize_image("registry.k8s.io/pause:3.10.1"),
            "registry.k8s.io/pause:3.10.1"
        );
        assert_eq!(
            normalize_image("localhost:5000/x"),
            "localhost:5000/x:latest"
        );
    }
}
