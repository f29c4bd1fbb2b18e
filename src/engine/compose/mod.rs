//! The Compose engine: the stack's lifecycle through the real `docker compose`
//! v2 CLI (`cli`), everything around it (discovery by compose labels,
//! inspect, health, logs, exec) through the Docker Engine API (`docker`,
//! `exec`). [`ComposeEngine`] fills the engine port; what only Compose has
//! (config hashes, networks, the whole engine's containers for port checks)
//! are its own methods, used by compose_up and compose_down.
pub mod cache;
pub mod children;
pub mod cli;
pub mod docker;
pub mod exec;
pub mod probe;
pub mod rollout;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;

use crate::domain::error::ToolError;
use crate::domain::instance::{EngineFacts, Instance, InstanceDetail, VolumeInfo};
use crate::domain::redact::SecretBook;
use crate::domain::stack::Stack;
use crate::domain::stack_model::StackModel;
use crate::engine::{Engine, EngineKind, HelperSpec, LogLines, LogQuery, Process};

use cli::Compose;

/// `docker info` (data root, runtimes) changes only when the engine is reconfigured.
const FACTS_TTL: Duration = Duration::from_secs(60);

/// How long `recover`'s recreate may run (compose waits for nothing: no --wait).
const RECREATE_LIMIT: Duration = Duration::from_secs(600);

pub struct ComposeEngine {
    stack: Stack,
    /// Secret values seen in containers' environments and the compose
    /// model are learned here, so every output can be masked with them.
    secrets: Arc<SecretBook>,
    /// Made on first use and kept (failures are not cached).
    docker: tokio::sync::OnceCell<Docker>,
    facts: Mutex<Option<(Instant, EngineFacts)>>,
}

impl ComposeEngine {
    /// Cheap: nothing is reached until a method needs it.
    pub fn new(stack: Stack, secrets: Arc<SecretBook>) -> Self {
        Self {
            stack,
            secrets,
            docker: tokio::sync::OnceCell::new(),
            facts: Mutex::new(None),
        }
    }

    /// The Docker engine, connected lazily; a missing engine is a clear error within 2 s.
    pub async fn docker(&self) -> Result<&Docker, ToolError> {
        self.docker.get_or_try_init(docker::connect).await
    }

    /// The compose CLI for this stack (its files, .env and project name).
    pub fn cli(&self) -> Result<Compose, ToolError> {
        Compose::for_stack(&self.stack)
    }

    pub fn project(&self) -> &str {
        &self.stack.project
    }

    /// Every container on the engine, of any project (port conflicts).
    pub async fn all_containers(&self) -> Result<Vec<Instance>, ToolError> {
        docker::list_containers(self.docker().await?, None).await
    }

    /// The local image id of each reference (None when not present).
    pub async fn image_ids(
        &self,
        refs: &[String],
    ) -> Result<std::collections::BTreeMap<String, Option<String>>, ToolError> {
        docker::image_ids(self.docker().await?, refs).await
    }

    /// The project's volumes (by compose label), sorted by name.
    pub async fn project_volumes(&self) -> Result<Vec<VolumeInfo>, ToolError> {
        Ok(
            docker::project_volumes(self.docker().await?, self.project())
                .await?
                .into_iter()
                .map(|v| VolumeInfo {
                    compose_name: v.labels.get(docker::LABEL_VOLUME).cloned(),
                    name: v.name,
                })
                .collect(),
        )
    }

    /// The project's networks (by compose label), sorted by name.
    pub async fn project_networks(&self) -> Result<Vec<String>, ToolError> {
        Ok(
            docker::project_networks(self.docker().await?, self.project())
                .await?
                .into_iter()
                .filter_map(|n| n.name)
                .collect(),
        )
    }

    /// A one-off container of `service` running `command` (`docker compose
    /// run --rm --no-deps -T`): the service's image, environment, volumes and
    /// networks, the command in place of its own, no published ports, its
    /// dependencies left as they are. Removed when it exits.
    pub async fn run_one_off(
        &self,
        service: &str,
        command: &[String],
    ) -> Result<Process, ToolError> {
        let mut args: Vec<String> = ["run", "--rm", "--no-deps", "-T", "--quiet-pull", service]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(command.iter().cloned());
        self.cli()?.spawn(&[], &args).await
    }

    /// A service's environment as compose resolves it (interpolated from the
    /// .env): what a one-off container of it gets, so its secrets can be masked.
    pub async fn service_environment(&self, service: &str) -> Result<Vec<String>, ToolError> {
        Ok(self
            .cli()?
            .service_environment(service)
            .await?
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect())
    }

    /// Every volume name on the engine.
    pub async fn volume_names(&self) -> Result<Vec<String>, ToolError> {
        docker::volume_names(self.docker().await?).await
    }
}

#[async_trait]
impl Engine for ComposeEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Compose
    }

    async fn ping(&self) -> Result<(), ToolError> {
        self.docker()
            .await?
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| docker::engine_error("the engine did not answer a ping", &e))
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
        docker::list_containers(self.docker().await?, Some(self.project())).await
    }

    async fn inspect(&self, id: &str) -> Result<Option<InstanceDetail>, ToolError> {
        let detail = docker::inspect(self.docker().await?, id).await?;
        if let Some(d) = &detail {
            self.secrets.learn_env(&d.env);
        }
        Ok(detail)
    }

    async fn facts(&self) -> Result<EngineFacts, ToolError> {
        if let Ok(cache) = self.facts.lock() {
            if let Some((at, facts)) = cache.as_ref() {
                if at.elapsed() < FACTS_TTL {
                    return Ok(facts.clone());
                }
            }
        }
        let facts = docker::engine_facts(self.docker().await?).await?;
        if let Ok(mut cache) = self.facts.lock() {
            *cache = Some((Instant::now(), facts.clone()));
        }
        Ok(facts)
    }

    async fn logs_tail(
        &self,
        id: &str,
        lines: usize,
        max_bytes: usize,
    ) -> Result<Vec<u8>, ToolError> {
        docker::logs_tail(self.docker().await?, id, lines, max_bytes).await
    }

    async fn logs(&self, id: &str, query: &LogQuery) -> Result<LogLines, ToolError> {
        Ok(docker::log_lines(self.docker().await?, id, query))
    }

    async fn environment(&self, id: &str) -> Result<Vec<String>, ToolError> {
        Ok(self.inspect(id).await?.map(|d| d.env).unwrap_or_default())
    }

    async fn exec(
        &self,
        id: &str,
        cmd: Vec<String>,
        env: Vec<String>,
        stdin: bool,
    ) -> Result<Process, ToolError> {
        exec::exec(self.docker().await?, id, cmd, env, stdin).await
    }

    async fn restart(&self, id: &str, stop_timeout_s: Option<i32>) -> Result<(), ToolError> {
        docker::restart(self.docker().await?, id, stop_timeout_s).await
    }

    async fn stop(&self, id: &str) -> Result<(), ToolError> {
        docker::stop(self.docker().await?, id).await
    }

    async fn start(&self, id: &str) -> Result<(), ToolError> {
        docker::start(self.docker().await?, id).await
    }

    /// `rm --stop --force` then `up -d --no-recreate`: a new container with
    /// the current model, whose config-hash label is the one `config --hash`
    /// gives (`up --force-recreate --no-deps` would label it with a hash
    /// computed without its depends_on, and compose_up would never see it
    /// converge). Dependencies that are not running are started, as compose
    /// does for any `up` of a service; running ones are left alone.
    async fn recreate(&self, service: &str) -> Result<(), ToolError> {
        let cli = self.cli()?;
        cli.run(&[], &["rm", "--stop", "--force", service], RECREATE_LIMIT)
            .await?;
        cli.run(&[], &["up", "-d", "--no-recreate", service], RECREATE_LIMIT)
            .await
            .map(|_| ())
    }

    async fn volume(&self, volume: &str) -> Result<String, ToolError> {
        docker::volume_name(self.docker().await?, self.project(), volume).await
    }

    async fn volume_exists(&self, engine_volume: &str) -> Result<bool, ToolError> {
        match self.docker().await?.inspect_volume(engine_volume).await {
            Ok(_) => Ok(true),
            Err(e) if docker::is_not_found(&e) => Ok(false),
            Err(e) => Err(docker::engine_error("inspecting a volume failed", &e)),
        }
    }

    async fn volume_users(&self, engine_volume: &str) -> Result<Vec<Instance>, ToolError> {
        docker::containers_using_volume(self.docker().await?, engine_volume).await
    }

    async fn image_present(&self, image: &str) -> bool {
        match self.docker().await {
            Ok(d) => d.inspect_image(image).await.is_ok(),
            Err(_) => false,
        }
    }

    async fn helper(&self, spec: &HelperSpec) -> Result<Process, ToolError> {
        exec::helper(self.docker().await?, self.project(), spec).await
    }

    async fn watch(&self) -> Result<futures::stream::BoxStream<'static, String>, ToolError> {
        docker::watch(self.docker().await?, self.project())
    }

    fn reap_leftovers(&self, dead_pid: u32) -> Vec<String> {
        children::reap(&self.stack.coord_dir, dead_pid)
    }
}
