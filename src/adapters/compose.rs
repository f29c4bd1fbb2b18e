//! The `docker compose` v2 CLI: the stack's lifecycle is never reimplemented.
//! Arguments are always passed as a list (never through a shell); compose's
//! own error message is returned when it fails.
//!
//! This module also turns `docker compose config` into the stack model the
//! tools reason over: services with their stackpilot role, health, backup
//! policy, named volumes, published ports and GPU reservations.
use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::adapters::runtime_probe::docker_cli;
use crate::error::ToolError;
use crate::stack::Stack;

/// Compose file names, in compose's own lookup order.
const FILE_NAMES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];
const OVERRIDE_NAMES: [&str; 4] = [
    "compose.override.yaml",
    "compose.override.yml",
    "docker-compose.override.yaml",
    "docker-compose.override.yml",
];

/// What a service is to stackpilot.
#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Ollama,
    Postgres,
    Mongodb,
    Qdrant,
    Api,
    Worker,
    Volume,
    Other,
}

impl Role {
    pub const NAMES: [&'static str; 8] = [
        "ollama", "postgres", "mongodb", "qdrant", "api", "worker", "volume", "other",
    ];

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "ollama" => Role::Ollama,
            "postgres" | "postgresql" => Role::Postgres,
            "mongodb" | "mongo" => Role::Mongodb,
            "qdrant" => Role::Qdrant,
            "api" => Role::Api,
            "worker" => Role::Worker,
            "volume" => Role::Volume,
            "other" => Role::Other,
            _ => return None,
        })
    }

    /// The default when neither a label nor an x-stackpilot block names one.
    pub fn from_image(image: &str) -> Role {
        let repo = image
            .rsplit('/')
            .next()
            .unwrap_or(image)
            .split([':', '@'])
            .next()
            .unwrap_or("");
        match repo {
            r if r.contains("ollama") => Role::Ollama,
            r if r.contains("postgres") || r == "pgvector" => Role::Postgres,
            r if r.contains("mongo") => Role::Mongodb,
            r if r.contains("qdrant") => Role::Qdrant,
            _ => Role::Other,
        }
    }

    /// Services whose recreation can lose or interrupt data.
    pub fn holds_data(self) -> bool {
        matches!(
            self,
            Role::Ollama | Role::Postgres | Role::Mongodb | Role::Qdrant | Role::Volume
        )
    }
}

/// A port published on the host.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
pub struct PublishedPort {
    /// Host address ("" or 0.0.0.0 means every interface).
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
}

/// One service of the resolved compose model.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ServiceModel {
    pub name: String,
    pub image: Option<String>,
    /// Has a `build` section (compose builds the image when it is missing).
    pub build: bool,
    pub pull_policy: Option<String>,
    pub role: Role,
    /// x-stackpilot health: an HTTP path (`/health`) or a command.
    pub health: Option<String>,
    /// x-stackpilot backup: `pg_dump`, `mongodump`, `volume` or `none`.
    pub backup: Option<String>,
    /// x-stackpilot `stop_during_backup` (label `io.stackpilot.stop_during_backup`):
    /// stop the service while its volumes are copied, for a consistent copy.
    #[serde(default)]
    pub stop_during_backup: bool,
    /// The service has a compose healthcheck.
    pub healthcheck: bool,
    /// Named volumes it mounts (compose names, before the project prefix).
    pub named_volumes: Vec<String>,
    pub ports: Vec<PublishedPort>,
    /// Reserves an NVIDIA GPU (deploy.resources.reservations.devices).
    pub gpu: bool,
    pub profiles: Vec<String>,
    /// Services this one depends on (compose starts them with it).
    pub depends_on: Vec<String>,
}

/// Stack-wide settings from the top-level `x-stackpilot` block.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct StackSettings {
    /// Absolute backup root (default `<stack>/backups`).
    pub backup_root: PathBuf,
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    /// Image for volume backups when the service's own image has no `tar`
    /// (x-stackpilot `backup_helper_image`; default `busybox:stable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_helper_image: Option<String>,
}

/// The resolved stack for one set of profiles.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct StackModel {
    pub project: String,
    pub profiles: Vec<String>,
    /// By service name.
    pub services: BTreeMap<String, ServiceModel>,
    /// Top-level named volumes (compose names).
    pub volumes: Vec<String>,
    pub settings: StackSettings,
}

impl StackModel {
    pub fn service(&self, name: &str) -> Result<&ServiceModel, ToolError> {
        self.services.get(name).ok_or_else(|| {
            ToolError::invalid(
                "services",
                format!("unknown service `{}`", crate::redact::cap(name, 100)),
            )
            .allowed(self.services.keys().cloned())
        })
    }

    /// Services with a role, sorted by name.
    pub fn with_role(&self, role: Role) -> Vec<&ServiceModel> {
        self.services.values().filter(|s| s.role == role).collect()
    }
}

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
        crate::redact::cap(first.trim(), 200)
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
        let dir = stack.dir.clone();
        let files: Vec<PathBuf> = match crate::adapters::env_file::EnvFile::load(&stack.env_path())?
            .get("COMPOSE_FILE")
        {
            Some(list) => list
                .split(if cfg!(windows) { ';' } else { ':' })
                .filter(|s| !s.is_empty())
                .map(|f| dir.join(f))
                .collect(),
            None => {
                let main = FILE_NAMES
                    .iter()
                    .map(|n| dir.join(n))
                    .find(|p| p.is_file())
                    .ok_or_else(|| {
                        ToolError::external(format!(
                            "no compose file in {} (looked for {})",
                            dir.display(),
                            FILE_NAMES.join(", ")
                        ))
                        .next_step("point --stack at a directory with a compose file")
                    })?;
                let mut files = vec![main];
                files.extend(
                    OVERRIDE_NAMES
                        .iter()
                        .map(|n| dir.join(n))
                        .find(|p| p.is_file()),
                );
                files
            }
        };
        let env = stack.env_path();
        Ok(Self {
            dir,
            files,
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
            .stdin(Stdio::null())
            .kill_on_drop(true);
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
        let out = tokio::time::timeout(timeout, cmd.output())
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
                crate::redact::cap(&first, 600)
            ))
            .evidence(crate::redact::cap(&stderr, 4000))
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
        let yaml = self
            .run(profiles, &["config"], Duration::from_secs(30))
            .await?;
        let yaml: Value = serde_norway::from_str(&yaml.stdout).map_err(|e| {
            ToolError::external(format!("docker compose config printed invalid YAML: {e}"))
        })?;
        Ok(model_from_config(&yaml, &yaml, &self.dir, profiles))
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
        let mut child = cmd.spawn().map_err(|e| compose_missing(&e))?;
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
                    interrupt(&mut child).await;
                    continue;
                }
                _ = &mut deadline, if stopped.is_none() => {
                    stopped = Some(StreamEnd::TimedOut);
                    interrupt(&mut child).await;
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
                    crate::redact::cap(&why, 300)
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
        let _ = nix::sys::signal::kill(
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

fn str_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn port_of(v: &Value) -> Option<u16> {
    str_of(v).and_then(|s| s.parse().ok())
}

/// Builds the stack model from compose's normalized JSON and YAML forms.
pub fn model_from_config(
    json: &Value,
    yaml: &Value,
    dir: &Path,
    profiles: &[String],
) -> StackModel {
    let project = json.get("name").and_then(str_of).unwrap_or_default();
    let mut services = BTreeMap::new();
    if let Some(Value::Object(svcs)) = json.get("services") {
        for (name, svc) in svcs {
            let labels = svc.get("labels").cloned().unwrap_or(Value::Null);
            let label = |k: &str| labels.get(k).and_then(str_of);
            let x = yaml
                .get("services")
                .and_then(|s| s.get(name))
                .and_then(|s| s.get("x-stackpilot"));
            let xfield = |k: &str| x.and_then(|x| x.get(k)).and_then(str_of);
            let image = svc.get("image").and_then(str_of);
            let role = label("io.stackpilot.role")
                .or_else(|| xfield("role"))
                .and_then(|r| Role::parse(&r))
                .unwrap_or_else(|| {
                    image
                        .as_deref()
                        .map(Role::from_image)
                        .unwrap_or(Role::Other)
                });
            let mut named_volumes: Vec<String> = svc
                .get("volumes")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter(|v| v.get("type").and_then(Value::as_str) == Some("volume"))
                        .filter_map(|v| v.get("source").and_then(str_of))
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            named_volumes.sort();
            named_volumes.dedup();
            let mut ports: Vec<PublishedPort> = svc
                .get("ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .filter_map(|p| {
                            Some(PublishedPort {
                                host_ip: p.get("host_ip").and_then(str_of).unwrap_or_default(),
                                host_port: p.get("published").and_then(port_of)?,
                                container_port: p.get("target").and_then(port_of)?,
                                protocol: p
                                    .get("protocol")
                                    .and_then(str_of)
                                    .unwrap_or_else(|| "tcp".into()),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            ports.sort();
            let gpu = svc
                .pointer("/deploy/resources/reservations/devices")
                .and_then(Value::as_array)
                .is_some_and(|ds| {
                    ds.iter().any(|d| {
                        d.get("driver").and_then(Value::as_str) == Some("nvidia")
                            || d.get("capabilities")
                                .and_then(Value::as_array)
                                .is_some_and(|c| c.iter().any(|c| c == "gpu"))
                    })
                });
            let healthcheck = svc.get("healthcheck").is_some_and(|h| {
                h.get("disable").and_then(Value::as_bool) != Some(true) && h.get("test").is_some()
            });
            services.insert(
                name.clone(),
                ServiceModel {
                    name: name.clone(),
                    image,
                    build: svc.get("build").is_some(),
                    pull_policy: svc.get("pull_policy").and_then(str_of),
                    role,
                    health: label("io.stackpilot.health").or_else(|| xfield("health")),
                    backup: label("io.stackpilot.backup").or_else(|| xfield("backup")),
                    stop_during_backup: label("io.stackpilot.stop_during_backup")
                        .or_else(|| xfield("stop_during_backup"))
                        .is_some_and(|v| matches!(v.trim(), "true" | "yes" | "1")),
                    healthcheck,
                    named_volumes,
                    ports,
                    gpu,
                    profiles: svc
                        .get("profiles")
                        .and_then(Value::as_array)
                        .map(|p| p.iter().filter_map(str_of).collect())
                        .unwrap_or_default(),
                    depends_on: svc
                        .get("depends_on")
                        .and_then(Value::as_object)
                        .map(|d| d.keys().cloned().collect())
                        .unwrap_or_default(),
                },
            );
        }
    }
    let mut volumes: Vec<String> = json
        .get("volumes")
        .and_then(Value::as_object)
        .map(|v| v.keys().cloned().collect())
        .unwrap_or_default();
    volumes.sort();
    let xs = json
        .get("x-stackpilot")
        .or_else(|| yaml.get("x-stackpilot"));
    let get_u32 = |k: &str, d: u32| {
        xs.and_then(|x| {
            x.get(k)
                .or_else(|| x.get("retention").and_then(|r| r.get(k)))
        })
        .and_then(str_of)
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
    };
    let backup_root = xs
        .and_then(|x| x.get("backup_root"))
        .and_then(str_of)
        .map(|p| dir.join(p))
        .unwrap_or_else(|| dir.join("backups"));
    StackModel {
        project,
        profiles: profiles.to_vec(),
        services,
        volumes,
        settings: StackSettings {
            backup_root,
            keep_last: get_u32("keep_last", 7),
            keep_daily: get_u32("keep_daily", 0),
            keep_weekly: get_u32("keep_weekly", 0),
            backup_helper_image: xs
                .and_then(|x| x.get("backup_helper_image"))
                .and_then(str_of)
                .filter(|s| !s.trim().is_empty()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles_default_from_images() {
        assert_eq!(Role::from_image("ollama/ollama:0.9.6"), Role::Ollama);
        assert_eq!(Role::from_image("postgres:16-alpine"), Role::Postgres);
        assert_eq!(
            Role::from_image("docker.io/library/mongo:7.0"),
            Role::Mongodb
        );
        assert_eq!(
            Role::from_image("qdrant/qdrant:v1.13.6-unprivileged"),
            Role::Qdrant
        );
        assert_eq!(
            Role::from_image("registry.example/app@sha256:abc"),
            Role::Other
        );
    }

    #[test]
    fn model_reads_labels_x_blocks_ports_volumes_and_gpus() {
        let json = json!({
            "name": "demo",
            "services": {
                "db": {"image": "local/pg", "labels": {"io.stackpilot.backup": "pg_dump"},
                       "volumes": [{"type": "volume", "source": "pgdata", "target": "/data"}, {"type": "bind", "source": "/x", "target": "/y"}],
                       "ports": [{"host_ip": "127.0.0.1", "published": "15432", "target": 5432, "protocol": "tcp"}],
                       "healthcheck": {"test": ["CMD", "true"]}},
                "llm": {"image": "ollama/ollama", "deploy": {"resources": {"reservations": {"devices": [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]}}}},
                "web": {"image": "busybox", "labels": {"io.stackpilot.role": "api"}}
            },
            "volumes": {"pgdata": {}},
            "x-stackpilot": {"backup_root": "./bk", "retention": {"keep_last": 3}, "backup_helper_image": "local/bb"}
        });
        let yaml = json!({"services": {"db": {"x-stackpilot": {"role": "postgres", "health": "pg_isready", "stop_during_backup": true}}}});
        let m = model_from_config(&json, &yaml, Path::new("/stack"), &[]);
        let db = &m.services["db"];
        assert_eq!(db.role, Role::Postgres, "x-stackpilot block names the role");
        assert_eq!(db.backup.as_deref(), Some("pg_dump"));
        assert_eq!(db.health.as_deref(), Some("pg_isready"));
        assert_eq!(db.named_volumes, ["pgdata"]);
        assert_eq!(db.ports[0].host_port, 15432);
        assert!(db.healthcheck);
        assert!(m.services["llm"].gpu);
        assert_eq!(m.services["llm"].role, Role::Ollama);
        assert_eq!(m.services["web"].role, Role::Api);
        assert_eq!(m.settings.backup_root, Path::new("/stack/bk"));
        assert_eq!(m.settings.keep_last, 3);
        assert_eq!(m.settings.backup_helper_image.as_deref(), Some("local/bb"));
        assert!(db.stop_during_backup);
        assert!(!m.services["web"].stop_during_backup);
        assert_eq!(m.volumes, ["pgdata"]);
    }
}
