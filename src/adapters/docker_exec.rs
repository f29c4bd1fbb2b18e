//! Streaming processes in the engine: `docker exec` without a TTY and
//! short-lived helper containers, with stdout streamed (into a backup file, or
//! captured up to a cap), stdin streamed in from a bounded channel, the tail of
//! stderr kept for the error, and the exit code read from the engine. Also
//! the compose-label lookups the backup tools need (a service's containers, a
//! project's named volume) and stop/start around a volume backup.
use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, InspectContainerOptions,
    ListContainersOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::adapters::backup_store::FileSink;
use crate::error::{ErrorKind, ToolError};

/// Bytes of stderr kept for an error message (the tail is what explains a failure).
pub const STDERR_TAIL: usize = 4096;

pub const PROJECT_LABEL: &str = "com.docker.compose.project";
pub const SERVICE_LABEL: &str = "com.docker.compose.service";
pub const VOLUME_LABEL: &str = "com.docker.compose.volume";
/// On every helper container stackpilot creates (value: the compose project).
pub const HELPER_LABEL: &str = "io.stackpilot.backup-helper";

fn engine_error(what: &str, e: bollard::errors::Error) -> ToolError {
    ToolError::external(format!("Docker engine: {what}: {e}"))
}

/// A running container of a compose service.
#[derive(Debug, Clone)]
pub struct ServiceContainer {
    pub id: String,
    pub name: String,
    pub running: bool,
    pub image: String,
}

fn summary_to_container(c: bollard::models::ContainerSummary) -> ServiceContainer {
    ServiceContainer {
        id: c.id.unwrap_or_default(),
        name: c
            .names
            .and_then(|n| n.into_iter().next())
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        running: matches!(
            c.state,
            Some(bollard::models::ContainerSummaryStateEnum::RUNNING)
        ),
        image: c.image.unwrap_or_default(),
    }
}

/// The containers of a compose service (running or not), by compose labels, sorted by name.
pub async fn service_containers(
    docker: &Docker,
    project: &str,
    service: &str,
) -> Result<Vec<ServiceContainer>, ToolError> {
    let mut filters = HashMap::new();
    filters.insert(
        "label",
        vec![
            format!("{PROJECT_LABEL}={project}"),
            format!("{SERVICE_LABEL}={service}"),
        ],
    );
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let mut out: Vec<ServiceContainer> = docker
        .list_containers(Some(opts))
        .await
        .map_err(|e| engine_error("list containers", e))?
        .into_iter()
        .map(summary_to_container)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The one running container of a service that an exec goes into.
pub async fn running_container(
    docker: &Docker,
    project: &str,
    service: &str,
) -> Result<ServiceContainer, ToolError> {
    service_containers(docker, project, service)
        .await?
        .into_iter()
        .find(|c| c.running)
        .ok_or_else(|| {
            ToolError::external(format!(
                "service `{service}` of project `{project}` has no running container"
            ))
            .next_step("start the stack (compose_up), then call again")
        })
}

/// Containers (of any project) that mount a named volume, sorted by name.
pub async fn containers_using_volume(
    docker: &Docker,
    volume: &str,
) -> Result<Vec<ServiceContainer>, ToolError> {
    let mut filters = HashMap::new();
    filters.insert("volume", vec![volume.to_string()]);
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let mut out: Vec<ServiceContainer> = docker
        .list_containers(Some(opts))
        .await
        .map_err(|e| engine_error("list containers", e))?
        .into_iter()
        .map(summary_to_container)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The engine's name of a compose volume: found by compose's labels, else
/// compose's default `<project>_<volume>`.
pub async fn volume_name(
    docker: &Docker,
    project: &str,
    volume: &str,
) -> Result<String, ToolError> {
    let mut filters = HashMap::new();
    filters.insert(
        "label",
        vec![
            format!("{PROJECT_LABEL}={project}"),
            format!("{VOLUME_LABEL}={volume}"),
        ],
    );
    let opts = ListVolumesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let found = docker
        .list_volumes(Some(opts))
        .await
        .map_err(|e| engine_error("list volumes", e))?;
    if let Some(v) = found.volumes.unwrap_or_default().into_iter().next() {
        return Ok(v.name);
    }
    let default = format!("{project}_{volume}");
    docker
        .inspect_volume(&default)
        .await
        .map(|v| v.name)
        .map_err(|_| {
            ToolError::external(format!(
                "volume `{volume}` of project `{project}` does not exist in the engine"
            ))
            .next_step("bring the stack up once (compose_up) so compose creates its volumes")
        })
}

/// The environment of a container (`KEY=value`), for connection settings
/// such as POSTGRES_USER. Never echoed to an agent.
pub async fn container_env(docker: &Docker, id: &str) -> Result<Vec<String>, ToolError> {
    let c = docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .map_err(|e| engine_error("inspect container", e))?;
    Ok(c.config.and_then(|c| c.env).unwrap_or_default())
}

pub fn env_value(env: &[String], key: &str) -> Option<String> {
    env.iter()
        .rev()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
        .filter(|v| !v.is_empty())
}

pub async fn image_present(docker: &Docker, image: &str) -> bool {
    docker.inspect_image(image).await.is_ok()
}

/// Stops a container (its own stop timeout applies).
pub async fn stop(docker: &Docker, id: &str) -> Result<(), ToolError> {
    docker
        .stop_container(id, Some(StopContainerOptionsBuilder::default().build()))
        .await
        .map_err(|e| engine_error("stop container", e))
}

pub async fn start(docker: &Docker, id: &str) -> Result<(), ToolError> {
    docker
        .start_container(id, None)
        .await
        .map_err(|e| engine_error("start container", e))
}

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;
type Input = Pin<Box<dyn AsyncWrite + Send>>;

enum Exit {
    Exec(String),
    Container(String),
}

/// A started process whose output has not been read yet.
pub struct Process {
    output: Output,
    input: Input,
    exit: Exit,
    docker: Docker,
    /// Removes a helper container if this process is dropped unfinished.
    cleanup: Option<HelperCleanup>,
}

struct HelperCleanup {
    docker: Docker,
    id: String,
}

impl Drop for HelperCleanup {
    fn drop(&mut self) {
        let docker = self.docker.clone();
        let id = std::mem::take(&mut self.id);
        if id.is_empty() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = docker
                    .remove_container(
                        &id,
                        Some(RemoveContainerOptionsBuilder::default().force(true).build()),
                    )
                    .await;
            });
        }
    }
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
        .map_err(|e| engine_error(&format!("exec {program}"), e))?;
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
        .map_err(|e| engine_error(&format!("start exec {program}"), e))?;
    match started {
        StartExecResults::Attached { output, input } => Ok(Process {
            output,
            input,
            exit: Exit::Exec(created.id),
            docker: docker.clone(),
            cleanup: None,
        }),
        StartExecResults::Detached => Err(ToolError::internal("exec started detached")),
    }
}

/// A short-lived helper container with one volume mounted at `/data`.
#[derive(Debug, Clone)]
pub struct HelperSpec {
    pub image: String,
    /// Replaces the image's entrypoint: the program and its arguments.
    pub cmd: Vec<String>,
    /// (engine volume name, read only)
    pub volume: Option<(String, bool)>,
    pub stdin: bool,
    /// The compose project, recorded in a label on the helper.
    pub project: String,
}

/// Creates, attaches to and starts a helper container: no network, no log
/// driver (its stdout is the backup stream and must not be copied into the
/// engine's logs), root inside so it can read every file of the volume.
/// It is removed when its process is finished or dropped.
pub async fn helper(docker: &Docker, spec: &HelperSpec) -> Result<Process, ToolError> {
    let name = format!(
        "{}-stackpilot-helper-{}",
        spec.project,
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
        network_disabled: Some(true),
        labels: Some(HashMap::from([(
            HELPER_LABEL.to_string(),
            spec.project.clone(),
        )])),
        host_config: Some(HostConfig {
            mounts,
            network_mode: Some("none".into()),
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
        .map_err(|e| engine_error(&format!("create helper container from {}", spec.image), e))?;
    let cleanup = HelperCleanup {
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
        .map_err(|e| engine_error("attach to helper container", e))?;
    docker
        .start_container(&created.id, None)
        .await
        .map_err(|e| engine_error(&format!("start helper container from {}", spec.image), e))?;
    Ok(Process {
        output: attached.output,
        input: attached.input,
        exit: Exit::Container(created.id),
        docker: docker.clone(),
        cleanup: Some(cleanup),
    })
}

/// Where a process's stdout goes.
pub enum Stdout<'a> {
    /// Into a backup file (bounded channel; waits when the disk is behind).
    File(&'a FileSink),
    /// Kept in memory up to this many bytes; the rest is counted and dropped.
    Capture(usize),
    Discard,
}

/// How a process ended.
#[derive(Debug, Clone)]
pub struct Finished {
    pub exit_code: i64,
    pub stdout_bytes: u64,
    /// Captured stdout (with `Stdout::Capture`).
    pub stdout: Vec<u8>,
    /// The last STDERR_TAIL bytes of stderr, lossy UTF-8.
    pub stderr_tail: String,
    /// Bytes the process did not take from stdin (it exited first).
    pub stdin_unsent: bool,
}

impl Finished {
    pub fn ok(&self) -> bool {
        self.exit_code == 0
    }
}

/// Why `run` stopped early.
#[derive(Debug)]
pub enum RunError {
    /// The caller cancelled.
    Cancelled,
    /// The file sink stopped accepting data (its own error says why).
    SinkFailed,
    Engine(ToolError),
}

impl From<RunError> for ToolError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Cancelled => ToolError::new(ErrorKind::Cancelled, "cancelled by the caller"),
            RunError::SinkFailed => ToolError::external("the backup file stopped accepting data"),
            RunError::Engine(e) => e,
        }
    }
}

fn push_tail(tail: &mut Vec<u8>, data: &[u8]) {
    tail.extend_from_slice(data);
    if tail.len() > STDERR_TAIL {
        let cut = tail.len() - STDERR_TAIL;
        tail.drain(..cut);
    }
}

/// Streams a process to its end: stdout to `stdout`, stderr's tail kept,
/// `stdin` (if any) written into the process and then closed. Cancellation
/// drops the connection (the process gets EPIPE/SIGPIPE) and removes a helper.
pub async fn run(
    mut p: Process,
    stdout: Stdout<'_>,
    stdin: Option<mpsc::Receiver<Bytes>>,
    ct: &CancellationToken,
) -> Result<Finished, RunError> {
    let input = std::mem::replace(&mut p.input, Box::pin(tokio::io::sink()));
    let pump = stdin.map(|rx| tokio::spawn(pump_stdin(rx, input)));
    let mut stdout_bytes = 0u64;
    let mut captured = Vec::new();
    let mut tail = Vec::new();
    let result = loop {
        let item = tokio::select! {
            biased;
            _ = ct.cancelled() => break Err(RunError::Cancelled),
            item = p.output.next() => item,
        };
        let out = match item {
            None => break Ok(()),
            Some(Err(e)) => break Err(RunError::Engine(engine_error("read process output", e))),
            Some(Ok(LogOutput::StdErr { message })) => {
                push_tail(&mut tail, &message);
                continue;
            }
            Some(Ok(LogOutput::StdOut { message })) | Some(Ok(LogOutput::Console { message })) => {
                message
            }
            Some(Ok(LogOutput::StdIn { .. })) => continue,
        };
        stdout_bytes += out.len() as u64;
        match &stdout {
            Stdout::File(sink) => {
                if !sink.send(out).await {
                    break Err(RunError::SinkFailed);
                }
            }
            Stdout::Capture(cap) => {
                let room = cap.saturating_sub(captured.len());
                captured.extend_from_slice(&out[..room.min(out.len())]);
            }
            Stdout::Discard => {}
        }
    };
    let stdin_unsent = match pump {
        Some(h) => {
            if result.is_err() {
                h.abort();
                false
            } else {
                // The process has exited, so the engine closes the connection and
                // a blocked write fails; bounded anyway.
                match tokio::time::timeout(Duration::from_secs(10), h).await {
                    Ok(r) => r.map(|r| r.is_err()).unwrap_or(true),
                    Err(_) => true,
                }
            }
        }
        None => false,
    };
    let Process {
        output,
        input,
        exit,
        docker,
        mut cleanup,
    } = p;
    // Closing the connection ends the process's output (it gets EPIPE); a
    // helper is removed by its cleanup.
    drop(output);
    drop(input);
    result?;
    let exit_code = exit_code(&docker, &exit).await.map_err(RunError::Engine)?;
    if let Some(mut c) = cleanup.take() {
        let id = std::mem::take(&mut c.id);
        let _ = docker
            .remove_container(
                &id,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await;
    }
    Ok(Finished {
        exit_code,
        stdout_bytes,
        stdout: captured,
        stderr_tail: String::from_utf8_lossy(&tail).into_owned(),
        stdin_unsent,
    })
}

async fn pump_stdin(mut rx: mpsc::Receiver<Bytes>, mut input: Input) -> std::io::Result<()> {
    while let Some(chunk) = rx.recv().await {
        input.write_all(&chunk).await?;
    }
    input.flush().await?;
    // Half-close: the engine closes the process's stdin, which then sees EOF.
    input.shutdown().await
}

async fn exit_code(docker: &Docker, exit: &Exit) -> Result<i64, ToolError> {
    match exit {
        Exit::Exec(id) => {
            // The stream ends when the process closes its output; the engine
            // records the exit code a moment later.
            for _ in 0..200 {
                let info = docker
                    .inspect_exec(id)
                    .await
                    .map_err(|e| engine_error("inspect exec", e))?;
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
        }
        Exit::Container(id) => {
            let mut wait =
                docker.wait_container(id, None::<bollard::query_parameters::WaitContainerOptions>);
            match wait.next().await {
                Some(Ok(r)) => Ok(r.status_code),
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                    Ok(code)
                }
                Some(Err(e)) => Err(engine_error("wait for helper container", e)),
                None => Err(ToolError::external(
                    "the engine did not report the helper container's exit code",
                )),
            }
        }
    }
}

/// A failed process as an error: the exit code and stderr's tail (container
/// output: untrusted text, bounded).
pub fn failed(what: &str, f: &Finished) -> ToolError {
    let tail = f.stderr_tail.trim();
    let last = tail.lines().last().unwrap_or("").trim();
    let mut err = ToolError::external(format!(
        "{what} exited with code {}{}",
        f.exit_code,
        if last.is_empty() {
            String::new()
        } else {
            format!(": {}", crate::redact::cap(last, 300))
        }
    ));
    if !tail.is_empty() {
        err = err.evidence(format!("stderr tail (container output, untrusted): {tail}"));
    }
    err
}
