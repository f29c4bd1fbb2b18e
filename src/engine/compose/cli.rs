//! The `docker compose` v2 CLI: the stack's lifecycle is never reimplemented.
//! Arguments are always passed as a list (never through a shell); compose's
//! own error message is returned when it fails. `model` runs `docker compose
//! config` and hands its output to domain::stack_model.
use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::domain::error::ToolError;
use crate::domain::stack::Stack;
use crate::domain::stack_model::{model_from_config, StackModel};
use crate::engine::compose::children::{self, GroupChild};
use crate::engine::compose::probe::docker_cli;
use crate::engine::process::{Chunk, Exit, Process};

/// The output of one compose invocation.
#[derive(Debug, Clone)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// A compose project: the files, the env file and the project name, as the
/// CLI is given them on every call.
#[derive(Debug, Clone)]
pub struct Compose {
    pub dir: PathBuf,
    /// Where the processes it starts are recorded (see `children`).
    pub coord_dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub env_file: Option<PathBuf>,
    pub project: String,
}

/// The next step whenever Compose v2 cannot be run.
pub const INSTALL_COMPOSE: &str = "install the Docker Compose v2 plugin: Debian/Ubuntu `apt-get install docker-compose-plugin` (Docker's apt repository) or `docker-compose` from Debian trixie, or copy the docker-compose v2 binary to ~/.docker/cli-plugins/docker-compose; Docker Desktop includes it. detect_hardware shows what is reachable";

/// `docker` ran, but has no `compose` subcommand.
fn plugin_missing(stderr: &str) -> bool {
    stderr.contains("is not a docker command")
        || stderr.contains("unknown command")
        || stderr.contains("unknown shorthand flag")
}

fn compose_plugin_missing(stderr: &str) -> ToolError {
    let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    ToolError::external(format!(
        "Docker Compose v2 is not installed: `{} compose` is not available ({})",
        docker_cli().display(),
        crate::domain::redact::cap(first.trim(), 200)
    ))
    .next_step(INSTALL_COMPOSE)
}

fn compose_missing(e: &std::io::Error) -> ToolError {
    ToolError::external(format!(
        "cannot run the docker CLI ({}) for Docker Compose v2: {e}",
        docker_cli().display()
    ))
    .next_step(INSTALL_COMPOSE)
}

/// The error says the Compose v2 CLI itself is missing (not that a compose
/// command failed).
pub fn is_compose_missing(e: &ToolError) -> bool {
    e.next_step.as_deref() == Some(INSTALL_COMPOSE)
}

impl Compose {
    pub fn for_stack(stack: &Stack) -> Result<Self, ToolError> {
        if stack.files.is_empty() {
            return Err(ToolError::external(format!(
                "no compose file in {} (looked for {})",
                stack.dir.display(),
                crate::domain::stack::COMPOSE_FILE_NAMES.join(", ")
            ))
            .next_step("point --stack at a directory with a compose file"));
        }
        let env = stack.env_path();
        Ok(Self {
            dir: stack.dir.clone(),
            coord_dir: stack.coord_dir.clone(),
            files: stack.files.clone(),
            env_file: env.is_file().then_some(env),
            project: stack.project.clone(),
        })
    }

    /// `docker compose --project-directory D -p P -f F... [--env-file E] [--profile X]...`
    pub fn base_args(&self, profiles: &[String]) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "compose".into(),
            "--project-directory".into(),
            self.dir.clone().into(),
        ];
        args.push("-p".into());
        args.push(self.project.clone().into());
        for f in &self.files {
            args.push("-f".into());
            args.push(f.clone().into());
        }
        if let Some(e) = &self.env_file {
            args.push("--env-file".into());
            args.push(e.clone().into());
        }
        for p in profiles {
            args.push("--profile".into());
            args.push(p.into());
        }
        args
    }

    /// A prepared command; the caller adds the subcommand's arguments. Runs
    /// the Compose v2 plugin binary directly once `resolve_cli` has found and
    /// checked it, else `docker compose`.
    pub fn command(&self, profiles: &[String], args: &[&str]) -> tokio::process::Command {
        let (program, base) = match CLI.get() {
            Some(Cli::Plugin(path)) => {
                let mut base = self.base_args(profiles);
                base.remove(0);
                (path.clone(), base)
            }
            _ => (docker_cli(), self.base_args(profiles)),
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(base)
            .args(args)
            .current_dir(&self.dir)
            // COMPOSE_PROFILES in the caller's environment must not add to ours;
            // the .env's own COMPOSE_PROFILES still applies when no --profile is given.
            .env_remove("COMPOSE_PROFILES")
            .env_remove("COMPOSE_PROJECT_NAME")
            .env_remove("COMPOSE_FILE")
            // Set only when the docker CLI runs a plugin; the plugin binary
            // called directly must see itself as standalone.
            .env_remove("DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND")
            .stdin(Stdio::null());
        // Its own process group, dying with us (see `children`).
        children::isolate(&mut cmd);
        cmd
    }

    /// Runs a short compose command to completion, bounded by `timeout`.
    pub async fn run(
        &self,
        profiles: &[String],
        args: &[&str],
        timeout: Duration,
    ) -> Result<Output, ToolError> {
        resolve_cli().await?;
        let mut cmd = self.command(profiles, args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let run = async {
            let mut child = GroupChild::spawn(&mut cmd, &self.coord_dir)?;
            let mut stdout = child.child.stdout.take();
            let mut stderr = child.child.stderr.take();
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let read_out = async {
                if let Some(o) = stdout.as_mut() {
                    let _ = tokio::io::AsyncReadExt::read_to_end(o, &mut out).await;
                }
            };
            let read_err = async {
                if let Some(e) = stderr.as_mut() {
                    let _ = tokio::io::AsyncReadExt::read_to_end(e, &mut err).await;
                }
            };
            tokio::join!(read_out, read_err);
            let status = child.child.wait().await?;
            child.reaped();
            Ok::<_, std::io::Error>(std::process::Output {
                status,
                stdout: out,
                stderr: err,
            })
        };
        let out = tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| {
                ToolError::external(format!(
                    "docker compose {} did not finish within {}s",
                    args.join(" "),
                    timeout.as_secs()
                ))
            })?
            .map_err(|e| compose_missing(&e))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            if plugin_missing(&stderr) {
                return Err(compose_plugin_missing(&stderr));
            }
            let first = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string();
            return Err(ToolError::external(format!(
                "docker compose {} failed: {}",
                args.first().copied().unwrap_or(""),
                crate::domain::redact::cap(&first, 600)
            ))
            .evidence(crate::domain::redact::cap(&stderr, 4000))
            .next_step("fix the compose file or .env as compose's message says, then call again"));
        }
        Ok(Output { stdout, stderr })
    }

    /// The normalized model from one `docker compose config` run. Its YAML
    /// form carries everything `config --format json` does (labels, ports,
    /// volumes, deploy, top-level x-* blocks) and also the service-level
    /// x-stackpilot blocks the JSON form drops, so one process is enough;
    /// tests/compose_model.rs checks the two forms give the same model.
    pub async fn model(&self, profiles: &[String]) -> Result<StackModel, ToolError> {
        let yaml = self.config_value(profiles).await?;
        Ok(model_from_config(&yaml, &yaml, &self.dir, profiles))
    }

    /// The normalized compose file of these profiles (`docker compose config`),
    /// x-stackpilot blocks included.
    pub async fn config_value(&self, profiles: &[String]) -> Result<Value, ToolError> {
        let yaml = self
            .run(profiles, &["config"], Duration::from_secs(30))
            .await?;
        serde_norway::from_str(&yaml.stdout).map_err(|e| {
            ToolError::external(format!("docker compose config printed invalid YAML: {e}"))
        })
    }

    /// A service's environment as compose resolves it (interpolated from the
    /// env file), from `config --format json`; unset values are left out.
    pub async fn service_environment(
        &self,
        service: &str,
    ) -> Result<BTreeMap<String, String>, ToolError> {
        let out = self
            .run(
                &[ALL_PROFILES.to_string()],
                &["config", "--format", "json"],
                Duration::from_secs(30),
            )
            .await?;
        let v: serde_json::Value = serde_json::from_str(&out.stdout).map_err(|e| {
            ToolError::external(format!("docker compose config printed invalid JSON: {e}"))
        })?;
        let env = &v["services"][service]["environment"];
        Ok(env
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `config --hash '*'`: the hash compose puts on each container as
    /// `com.docker.compose.config-hash`; a difference means `up` recreates it.
    pub async fn config_hashes(
        &self,
        profiles: &[String],
    ) -> Result<BTreeMap<String, String>, ToolError> {
        let out = self
            .run(
                profiles,
                &["config", "--hash", "*"],
                Duration::from_secs(30),
            )
            .await?;
        Ok(out
            .stdout
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(s, h)| (s.trim().to_string(), h.trim().to_string()))
            .collect())
    }
    /// Every profile any service names (`config --profiles`). Compose itself
    /// accepts unknown profiles silently, so callers check names against this.
    pub async fn profiles(&self) -> Result<Vec<String>, ToolError> {
        let out = self
            .run(&[], &["config", "--profiles"], Duration::from_secs(30))
            .await?;
        let mut profiles: Vec<String> = out
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        profiles.sort();
        profiles.dedup();
        Ok(profiles)
    }

    /// Every service in every profile: a container whose service is not here
    /// is an orphan (one in an inactive profile is not).
    pub async fn all_services(&self) -> Result<Vec<String>, ToolError> {
        let out = self
            .run(
                &[ALL_PROFILES.to_string()],
                &["config", "--services"],
                Duration::from_secs(30),
            )
            .await?;
        let mut services: Vec<String> = out
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        services.sort();
        Ok(services)
    }

    /// Runs a long compose command (`up`, `down`), handing every output line
    /// and a tick each second to `on_event`. On cancellation the CLI gets
    /// SIGINT (compose stops what it is doing), then SIGKILL after 10 s; past
    /// `limit` the same happens and the outcome says so.
    pub async fn stream(
        &self,
        profiles: &[String],
        args: &[String],
        limit: Duration,
        ct: &CancellationToken,
        mut on_event: impl FnMut(StreamEvent<'_>),
    ) -> Result<Streamed, ToolError> {
        resolve_cli().await?;
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = self.command(profiles, &arg_refs);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut group =
            GroupChild::spawn(&mut cmd, &self.coord_dir).map_err(|e| compose_missing(&e))?;
        let child = &mut group.child;
        let started = tokio::time::Instant::now();
        let mut out_lines = child.stdout.take().map(|o| BufReader::new(o).lines());
        let mut err_lines = child.stderr.take().map(|e| BufReader::new(e).lines());
        let mut tail: VecDeque<String> = VecDeque::new();
        let mut tick =
            tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
        let deadline = tokio::time::sleep_until(started + limit);
        tokio::pin!(deadline);
        let mut stopped: Option<StreamEnd> = None;
        while out_lines.is_some() || err_lines.is_some() {
            let line = tokio::select! {
                l = next_line(&mut out_lines), if out_lines.is_some() => match l {
                    Some(l) => l,
                    None => { out_lines = None; continue; }
                },
                l = next_line(&mut err_lines), if err_lines.is_some() => match l {
                    Some(l) => l,
                    None => { err_lines = None; continue; }
                },
                _ = tick.tick() => {
                    on_event(StreamEvent::Tick(started.elapsed()));
                    continue;
                }
                _ = ct.cancelled(), if stopped.is_none() => {
                    stopped = Some(StreamEnd::Cancelled);
                    interrupt(child).await;
                    continue;
                }
                _ = &mut deadline, if stopped.is_none() => {
                    stopped = Some(StreamEnd::TimedOut);
                    interrupt(child).await;
                    continue;
                }
            };
            let line = line.trim_end().to_string();
            if line.trim().is_empty() {
                continue;
            }
            on_event(StreamEvent::Line(&line));
            if tail.len() == STREAM_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        let status = child.wait().await.map_err(|e| compose_missing(&e))?;
        group.reaped();
        let lines: Vec<String> = tail.into_iter().collect();
        if plugin_missing(&lines.join("\n")) {
            return Err(compose_plugin_missing(&lines.join("\n")));
        }
        Ok(Streamed {
            end: stopped.unwrap_or(StreamEnd::Exited {
                success: status.success(),
                code: status.code(),
            }),
            lines,
            elapsed: started.elapsed(),
        })
    }
}

impl Compose {
    /// Starts `docker compose <args>` as an engine-neutral [`Process`]: its
    /// stdout and stderr as chunks, no stdin, its exit code. Dropped before
    /// it finished, the CLI gets SIGINT (compose stops what it started, a
    /// `run --rm` container included), then SIGKILL 10 s later.
    pub async fn spawn(&self, profiles: &[String], args: &[String]) -> Result<Process, ToolError> {
        resolve_cli().await?;
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = self.command(profiles, &arg_refs);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| compose_missing(&e))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(ToolError::internal(
                "compose's output pipes were not opened",
            ));
        };
        let read_error = |e: std::io::Error| {
            ToolError::external(format!("reading docker compose's output failed: {e}"))
        };
        let out = tokio_util::io::ReaderStream::new(stdout)
            .map(move |r| r.map(Chunk::Stdout).map_err(read_error));
        let err = tokio_util::io::ReaderStream::new(stderr)
            .map(move |r| r.map(Chunk::Stderr).map_err(read_error));
        Ok(Process {
            output: Box::pin(futures::stream::select(out, err)),
            input: Box::pin(tokio::io::sink()),
            exit: Box::new(ChildExit { child: Some(child) }),
        })
    }
}

/// A compose CLI process's exit code; dropped early, it stops the CLI.
struct ChildExit {
    child: Option<tokio::process::Child>,
}

impl Exit for ChildExit {
    fn code(mut self: Box<Self>) -> BoxFuture<'static, Result<i64, ToolError>> {
        let child = self.child.take();
        Box::pin(async move {
            let Some(mut child) = child else {
                return Err(ToolError::internal("compose process already reaped"));
            };
            let status = child.wait().await.map_err(|e| compose_missing(&e))?;
            // Killed by a signal: the shell's convention, 128 + signal.
            #[cfg(unix)]
            if let Some(sig) = std::os::unix::process::ExitStatusExt::signal(&status) {
                return Ok(128 + i64::from(sig));
            }
            Ok(status.code().map(i64::from).unwrap_or(-1))
        })
    }
}

impl Drop for ChildExit {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { interrupt(&mut child).await });
            }
        }
    }
}

/// How Compose v2 is run on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cli {
    /// `docker compose ...`.
    Docker,
    /// The same plugin binary `docker compose` runs, called directly in its
    /// standalone mode (`docker-compose ...`): the docker CLI in front of a
    /// plugin starts it twice (metadata, then the command), which costs
    /// about 40 ms per call.
    Plugin(PathBuf),
}

/// Resolved once per process; failures are not kept, so installing Compose
/// later works without a restart.
static CLI: tokio::sync::OnceCell<Cli> = tokio::sync::OnceCell::const_new();

/// Where the docker CLI looks for plugins, in its order.
fn plugin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(config) = std::env::var_os("DOCKER_CONFIG") {
        dirs.push(PathBuf::from(config).join("cli-plugins"));
    } else if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".docker/cli-plugins"));
    }
    for d in [
        "/usr/local/lib/docker/cli-plugins",
        "/usr/local/libexec/docker/cli-plugins",
        "/usr/lib/docker/cli-plugins",
        "/usr/libexec/docker/cli-plugins",
        "/Applications/Docker.app/Contents/Resources/cli-plugins",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs
}

async fn version_of(program: &Path, args: &[&str]) -> Result<String, (String, String)> {
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .env_remove("DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| {
        (
            String::new(),
            format!("{} did not answer within 10 s", program.display()),
        )
    })?
    .map_err(|e| (String::new(), e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !stdout.is_empty() {
        Ok(stdout.trim_start_matches('v').to_string())
    } else {
        Err((String::from_utf8_lossy(&out.stderr).into_owned(), stdout))
    }
}

/// Checks that `docker compose` is Compose v2, then finds the plugin binary it
/// runs so later calls can skip the docker CLI. Missing or older Compose is
/// an error that says how to install it.
pub async fn resolve_cli() -> Result<&'static Cli, ToolError> {
    CLI.get_or_try_init(|| async {
        let docker = docker_cli();
        let plugin = plugin_dirs()
            .into_iter()
            .map(|d| {
                d.join(if cfg!(windows) {
                    "docker-compose.exe"
                } else {
                    "docker-compose"
                })
            })
            .find(|p| p.is_file());
        let direct = async {
            match &plugin {
                Some(p) => version_of(p, &["version", "--short"]).await.ok(),
                None => None,
            }
        };
        let (via_docker, direct) = tokio::join!(
            version_of(&docker, &["compose", "version", "--short"]),
            direct
        );
        let version = match via_docker {
            Ok(v) => v,
            Err((stderr, _)) if plugin_missing(&stderr) => {
                return Err(compose_plugin_missing(&stderr))
            }
            Err((stderr, detail)) => {
                let why = stderr
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or(detail.as_str())
                    .trim()
                    .to_string();
                return Err(ToolError::external(format!(
                    "cannot run `{} compose version` for Docker Compose v2: {}",
                    docker.display(),
                    crate::domain::redact::cap(&why, 300)
                ))
                .next_step(INSTALL_COMPOSE));
            }
        };
        let major = version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok());
        if major.is_none_or(|m| m < 2) {
            return Err(ToolError::external(format!(
                "`docker compose` is Compose {version}, not v2"
            ))
            .next_step(INSTALL_COMPOSE));
        }
        Ok(match (plugin, direct) {
            (Some(p), Some(v)) if v == version => Cli::Plugin(p),
            _ => Cli::Docker,
        })
    })
    .await
}

/// `--profile '*'`: every profile at once.
pub const ALL_PROFILES: &str = "*";

/// Lines of a streamed command's output kept for its report.
const STREAM_TAIL_LINES: usize = 200;

/// What a streamed compose command reports while it runs.
#[derive(Debug)]
pub enum StreamEvent<'a> {
    /// One line of its output (compose writes progress to stderr).
    Line(&'a str),
    /// A second passed; how long it has run.
    Tick(Duration),
}

/// How a streamed compose command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    Exited {
        success: bool,
        code: Option<i32>,
    },
    /// The caller cancelled: the CLI was stopped.
    Cancelled,
    /// It ran past its limit and was stopped.
    TimedOut,
}

#[derive(Debug, Clone)]
pub struct Streamed {
    pub end: StreamEnd,
    /// The last lines of its output (stdout and stderr interleaved).
    pub lines: Vec<String>,
    pub elapsed: Duration,
}

async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut Option<tokio::io::Lines<R>>,
) -> Option<String> {
    match lines {
        Some(l) => l.next_line().await.ok().flatten(),
        None => None,
    }
}

/// Asks the CLI to stop (SIGINT, as Ctrl-C would), then kills it if it has
/// not exited within 10 s.
async fn interrupt(child: &mut tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // The whole group, as Ctrl-C in a terminal would: the docker CLI and
        // the compose plugin it runs.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGINT,
        );
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.start_kill();
}
