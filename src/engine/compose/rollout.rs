//! What deploy and rollback need of Compose besides compose_up's `up`:
//! `build`, one service brought up either as a second replica beside the
//! running one or recreated (from the compose files' image, or from a pinned
//! previous image through a one-off override file), image tags that keep a
//! previous image on the engine, and the removal of one replaced container.
//! Compose itself does every rollout step; nothing here reimplements it.
use std::time::Duration;

use bollard::query_parameters::{
    RemoveContainerOptionsBuilder, RemoveImageOptions, StopContainerOptionsBuilder, TagImageOptions,
};
use tokio_util::sync::CancellationToken;

use crate::domain::error::ToolError;
use crate::engine::compose::cli::{StreamEvent, Streamed};
use crate::engine::compose::docker::{engine_error, is_not_found};
use crate::engine::compose::ComposeEngine;

/// Beyond the health wait, how long pulls and builds may take.
const CLI_GRACE: Duration = Duration::from_secs(1800);

/// One service brought up for a rollout.
#[derive(Debug, Clone)]
pub struct UpOne<'a> {
    pub service: &'a str,
    /// Start a second container beside the running one (`--no-recreate
    /// --scale <service>=2`) instead of replacing it (`--force-recreate`).
    pub second_replica: bool,
    /// Create the container from this image reference instead of the
    /// compose files' (a rollback to a pinned image; never pulled).
    pub image: Option<&'a str>,
    /// Seconds compose waits for the new container to be healthy (`--wait-timeout`).
    pub wait_timeout_s: u64,
}

impl ComposeEngine {
    /// `docker compose build <services>`, each output line and a tick each
    /// second handed to `on_event`.
    pub async fn build(
        &self,
        services: &[String],
        ct: &CancellationToken,
        on_event: impl FnMut(StreamEvent<'_>),
    ) -> Result<Streamed, ToolError> {
        let mut args = vec!["build".to_string()];
        args.extend(services.iter().cloned());
        self.cli()?
            .stream(&[], &args, CLI_GRACE, ct, on_event)
            .await
    }

    /// `docker compose up -d --wait --no-deps` for one service, as `up` says.
    pub async fn up_one(
        &self,
        up: &UpOne<'_>,
        ct: &CancellationToken,
        on_event: impl FnMut(StreamEvent<'_>),
    ) -> Result<Streamed, ToolError> {
        let mut compose = self.cli()?;
        // The pin lives in an override file compose reads after the stack's
        // own; it only names the image, so nothing else of the service changes.
        let _override = match up.image {
            Some(image) => {
                std::fs::create_dir_all(&self.stack.state_dir)?;
                let file = tempfile::Builder::new()
                    .prefix(".compose-pin-")
                    .suffix(".json")
                    .tempfile_in(&self.stack.state_dir)?;
                let doc = serde_json::json!({
                    "services": { up.service: { "image": image, "pull_policy": "never" } }
                });
                std::fs::write(file.path(), serde_json::to_vec(&doc).unwrap_or_default())?;
                compose.files.push(file.path().to_path_buf());
                Some(file)
            }
            None => None,
        };
        let mut args: Vec<String> = ["up", "-d", "--no-deps", "--wait", "--wait-timeout"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(up.wait_timeout_s.to_string());
        if up.second_replica {
            args.extend([
                "--no-recreate".to_string(),
                "--scale".to_string(),
                format!("{}=2", up.service),
            ]);
        } else {
            args.push("--force-recreate".into());
        }
        if up.image.is_some() {
            args.extend(["--pull".to_string(), "never".to_string()]);
        }
        args.push(up.service.to_string());
        compose
            .stream(
                &[],
                &args,
                Duration::from_secs(up.wait_timeout_s) + CLI_GRACE,
                ct,
                on_event,
            )
            .await
    }

    /// Tags a local image (`docker tag <id> <repo>:<tag>`); tagging again is a no-op.
    pub async fn tag_image(&self, image_id: &str, reference: &str) -> Result<(), ToolError> {
        let (repo, tag) = reference
            .rsplit_once(':')
            .filter(|(_, t)| !t.contains('/'))
            .unwrap_or((reference, "latest"));
        self.docker()
            .await?
            .tag_image(
                image_id,
                Some(TagImageOptions {
                    repo: Some(repo.to_string()),
                    tag: Some(tag.to_string()),
                }),
            )
            .await
            .map_err(|e| {
                engine_error(
                    &format!("tagging image {image_id} as {reference} failed"),
                    &e,
                )
            })
    }

    /// Removes one tag (the image stays while another tag or a container
    /// uses it). A tag that is already gone is fine.
    pub async fn untag_image(&self, reference: &str) -> Result<(), ToolError> {
        match self
            .docker()
            .await?
            .remove_image(
                reference,
                Some(RemoveImageOptions {
                    force: false,
                    noprune: true,
                    platforms: None,
                }),
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(engine_error(
                &format!("removing tag {reference} failed"),
                &e,
            )),
        }
    }

    /// Stops (with `stop_timeout_s`, else the container's own grace period)
    /// and removes one container: the replaced replica after a zero-downtime
    /// rollout, or a failed new one. Its anonymous volumes go with it; named
    /// volumes stay.
    pub async fn remove_container(
        &self,
        id: &str,
        stop_timeout_s: Option<i32>,
    ) -> Result<(), ToolError> {
        let docker = self.docker().await?;
        let mut stop = StopContainerOptionsBuilder::default();
        if let Some(t) = stop_timeout_s {
            stop = stop.t(t);
        }
        match docker.stop_container(id, Some(stop.build())).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(e) => return Err(engine_error("stopping a container failed", &e)),
        }
        match docker
            .remove_container(
                id,
                Some(
                    RemoveContainerOptionsBuilder::default()
                        .v(true)
                        .force(true)
                        .build(),
                ),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(engine_error("removing a container failed", &e)),
        }
    }
}
