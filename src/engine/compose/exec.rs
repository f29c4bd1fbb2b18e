//! Processes in the Docker engine: `docker exec` without a TTY, and
//! short-lived helper containers with a volume mounted, both as the port's
//! engine-neutral [`Process`] (stdout and stderr demultiplexed into chunks,
//! stdin attached when asked, the exit code read from the engine).
use std::collections::HashMap;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};

use crate::domain::error::ToolError;
use crate::engine::compose::docker::{engine_error, LABEL_HELPER};
use crate::engine::process::{Chunk, Exit, Process};
use crate::engine::HelperSpec;

fn chunks(
    output: impl Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send + 'static,
) -> crate::engine::process::Output {
    Box::pin(output.filter_map(|item| async move {
        match item {
            Ok(LogOutput::StdErr { message }) => Some(Ok(Chunk::Stderr(message))),
            Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                Some(Ok(Chunk::Stdout(message)))
            }
            Ok(LogOutput::StdIn { .. }) => None,
            Err(e) => Some(Err(engine_error("reading process output failed", &e))),
        }
    }))
}

/// `docker exec` without a TTY: stdout and stderr attached (demultiplexed),
/// stdin attached when `stdin` (the caller streams into it).
pub async fn exec(
    docker: &Docker,
    container: &str,
    cmd: Vec<String>,
    env: Vec<String>,
    stdin: bool,
) -> Result<Process, ToolError> {
    let program = cmd.first().cloned().unwrap_or_default();
    let created = docker
        .create_exec(
            container,
            CreateExecOptions {
                attach_stdin: Some(stdin),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(false),
                cmd: Some(cmd),
                env: (!env.is_empty()).then_some(env),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| engine_error(&format!("exec {program}"), &e))?;
    let started = docker
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: false,
                tty: false,
                output_capacity: Some(64 * 1024),
            }),
        )
        .await
        .map_err(|e| engine_error(&format!("start exec {program}"), &e))?;
    match started {
        StartExecResults::Attached { output, input } => Ok(Process {
            output: chunks(output),
            input,
            exit: Box::new(ExecExit {
                docker: docker.clone(),
                id: created.id,
            }),
        }),
        StartExecResults::Detached => Err(ToolError::internal("exec started detached")),
    }
}

struct ExecExit {
    docker: Docker,
    id: String,
}

impl Exit for ExecExit {
    fn code(self: Box<Self>) -> BoxFuture<'static, Result<i64, ToolError>> {
        Box::pin(async move {
            // The stream ends when the process closes its output; the engine
            // records the exit code a moment later.
            for _ in 0..200 {
                let info = self
                    .docker
                    .inspect_exec(&self.id)
                    .await
                    .map_err(|e| engine_error("inspect exec", &e))?;
                if info.running != Some(true) {
                    if let Some(code) = info.exit_code {
                        return Ok(code);
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(ToolError::external(
                "the engine did not report the exec's exit code within 5 s",
            ))
        })
    }
}

/// Creates, attaches to and starts a helper container: no network unless the
/// spec names one, no log driver (its stdout is the backup stream and must not
/// be copied into the engine's logs), root inside so it can read every file
/// of the volume.
/// It is removed when its process is finished or dropped.
pub async fn helper(
    docker: &Docker,
    project: &str,
    spec: &HelperSpec,
) -> Result<Process, ToolError> {
    let name = format!(
        "{project}-stackpilot-helper-{}",
        hex::encode(rand::random::<[u8; 4]>())
    );
    let mounts = spec.volume.as_ref().map(|(v, ro)| {
        vec![Mount {
            target: Some("/data".into()),
            source: Some(v.clone()),
            typ: Some(MountType::VOLUME),
            read_only: Some(*ro),
            ..Default::default()
        }]
    });
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: Some(spec.cmd.clone()),
        cmd: Some(Vec::new()),
        user: Some("0:0".into()),
        attach_stdin: Some(spec.stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(spec.stdin),
        stdin_once: Some(spec.stdin),
        tty: Some(false),
        network_disabled: Some(spec.network.is_none()),
        labels: Some(HashMap::from([(
            LABEL_HELPER.to_string(),
            project.to_string(),
        )])),
        host_config: Some(HostConfig {
            mounts,
            network_mode: Some(spec.network.clone().unwrap_or_else(|| "none".into())),
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".into()),
                config: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await
        .map_err(|e| engine_error(&format!("create helper container from {}", spec.image), &e))?;
    // From here on, dropping `exit` removes the container.
    let exit = HelperExit {
        docker: docker.clone(),
        id: created.id.clone(),
    };
    let attached = docker
        .attach_container(
            &created.id,
            Some(
                AttachContainerOptionsBuilder::default()
                    .stdin(spec.stdin)
                    .stdout(true)
                    .stderr(true)
                    .stream(true)
                    .logs(false)
                    .build(),
            ),
        )
        .await
        .map_err(|e| engine_error("attach to helper container", &e))?;
    docker
        .start_container(&created.id, None)
        .await
        .map_err(|e| engine_error(&format!("start helper container from {}", spec.image), &e))?;
    Ok(Process {
        output: chunks(attached.output),
        input: attached.input,
        exit: Box::new(exit),
    })
}

/// A helper's exit: waits for the container, then removes it; dropped
/// unfinished, it removes the container in the background.
struct HelperExit {
    docker: Docker,
    id: String,
}

async fn remove(docker: &Docker, id: &str) {
    let _ = docker
        .remove_container(
            id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
}

impl Exit for HelperExit {
    fn code(mut self: Box<Self>) -> BoxFuture<'static, Result<i64, ToolError>> {
        let docker = self.docker.clone();
        let id = std::mem::take(&mut self.id);
        Box::pin(async move {
            let mut wait =
                docker.wait_container(&id, None::<bollard::query_parameters::WaitContainerOptions>);
            let code = match wait.next().await {
                Some(Ok(r)) => Ok(r.status_code),
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                    Ok(code)
                }
                Some(Err(e)) => Err(engine_error("wait for helper container", &e)),
                None => Err(ToolError::external(
                    "the engine did not report the helper container's exit code",
                )),
            };
            drop(wait);
            remove(&docker, &id).await;
            code
        })
    }
}

impl Drop for HelperExit {
    fn drop(&mut self) {
        let id = std::mem::take(&mut self.id);
        if id.is_empty() {
            return;
        }
        let docker = self.docker.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { remove(&docker, &id).await });
        }
    }
}
