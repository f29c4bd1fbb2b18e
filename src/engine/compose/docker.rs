//! The Docker Engine API through bollard: the connection, the project's
//! containers, networks and volumes (found by compose's labels, so nothing
//! else on the engine is touched), inspect with the health-check log, log
//! tails, restart/stop/start, and `docker info`. Containers come back as the
//! domain's engine-neutral instances.
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::{ContainerInspectResponse, ContainerSummary, Network, Volume};
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptions, ListNetworksOptions, ListVolumesOptions,
    LogsOptions, RestartContainerOptions, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;

use crate::domain::error::ToolError;
use crate::domain::instance::{EngineFacts, HealthRecord, Instance, InstanceDetail};
use crate::domain::stack_model::PublishedPort;
use crate::engine::compose::probe::{describe_docker_error, docker_endpoint_from_env};
use crate::engine::{LogLine, LogLines, LogQuery, OutputStream};

/// A missing or refused engine is reported within this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one engine request may take; streams (logs, exec) run longer and
/// use their own clone with a longer timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

fn unreachable(message: String) -> ToolError {
    ToolError::external(message).next_step(
        "start the Docker engine (Debian: apt-get install docker.io, then dockerd) or set DOCKER_HOST; detect_hardware shows what is reachable",
    )
}

/// Connects to DOCKER_HOST (unix, tcp, http, ssh; bollard's defaults) and
/// negotiates the API version, so engines from API 1.41 up work.
pub async fn connect() -> Result<Docker, ToolError> {
    let endpoint = docker_endpoint_from_env();
    let docker = Docker::connect_with_host(&endpoint)
        .map_err(|e| unreachable(describe_docker_error(&endpoint, &e, CONNECT_TIMEOUT)))?
        .with_timeout(CONNECT_TIMEOUT);
    let negotiated = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let d = docker.negotiate_version().await?;
        d.ping().await?;
        Ok::<_, bollard::errors::Error>(d)
    })
    .await
    .map_err(|_| {
        unreachable(format!(
            "no answer from the Docker engine at {endpoint} within 2 s"
        ))
    })?
    .map_err(|e| unreachable(describe_docker_error(&endpoint, &e, CONNECT_TIMEOUT)))?;
    Ok(negotiated.with_timeout(REQUEST_TIMEOUT))
}

// ------------------------------------------------------------ compose labels
//
// Compose marks everything it creates with these labels; they are how a
// project's containers, networks and volumes are found without the CLI.

pub const LABEL_PROJECT: &str = "com.docker.compose.project";
pub const LABEL_SERVICE: &str = "com.docker.compose.service";
pub const LABEL_CONFIG_HASH: &str = "com.docker.compose.config-hash";
/// The local image id the container was created from.
pub const LABEL_IMAGE: &str = "com.docker.compose.image";
pub const LABEL_ONEOFF: &str = "com.docker.compose.oneoff";
pub const LABEL_CONTAINER_NUMBER: &str = "com.docker.compose.container-number";
/// On volumes: the volume's key in the compose file.
pub const LABEL_VOLUME: &str = "com.docker.compose.volume";
pub const LABEL_ROLE: &str = "io.stackpilot.role";
/// Marks stackpilot's own container: compose_down never takes it down.
pub const LABEL_SELF: &str = "io.stackpilot.self";
/// On every helper container stackpilot creates (value: the compose project).
pub const LABEL_HELPER: &str = "io.stackpilot.backup-helper";

/// An engine call failed: say which engine and what to do.
pub fn engine_error(what: &str, e: &bollard::errors::Error) -> ToolError {
    let endpoint = docker_endpoint_from_env();
    unreachable(format!(
        "{what}: {}",
        describe_docker_error(&endpoint, e, REQUEST_TIMEOUT)
    ))
}

/// Whether an engine error is a 404 (the container, image or volume is gone).
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn label_filter(labels: &[String]) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), labels.to_vec())])
}

/// Every container (running or not) of a compose project, or of the whole
/// engine when `project` is None. One request.
pub async fn list_containers(
    docker: &Docker,
    project: Option<&str>,
) -> Result<Vec<Instance>, ToolError> {
    let options = ListContainersOptions {
        all: true,
        filters: project.map(|p| label_filter(&[format!("{LABEL_PROJECT}={p}")])),
        ..Default::default()
    };
    let mut list: Vec<Instance> = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| engine_error("listing containers failed", &e))?
        .into_iter()
        .map(instance_of_summary)
        .collect();
    list.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
    Ok(list)
}

/// Containers (of any project) that mount a volume, sorted by name.
pub async fn containers_using_volume(
    docker: &Docker,
    volume: &str,
) -> Result<Vec<Instance>, ToolError> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "volume".to_string(),
            vec![volume.to_string()],
        )])),
        ..Default::default()
    };
    let mut out: Vec<Instance> = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| engine_error("listing containers failed", &e))?
        .into_iter()
        .map(instance_of_summary)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn labels_of(labels: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    labels
        .map(|l| {
            l.iter()
                .filter(|(k, _)| {
                    k.starts_with("com.docker.compose.") || k.starts_with("io.stackpilot.")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn instance_from_labels(labels: &BTreeMap<String, String>) -> Instance {
    let get = |k: &str| labels.get(k).cloned();
    Instance {
        project: get(LABEL_PROJECT),
        service: get(LABEL_SERVICE).unwrap_or_default(),
        number: get(LABEL_CONTAINER_NUMBER).and_then(|n| n.parse().ok()),
        role: get(LABEL_ROLE),
        is_self: get(LABEL_SELF).is_some_and(|v| v.eq_ignore_ascii_case("true")),
        config_hash: get(LABEL_CONFIG_HASH),
        image_id: get(LABEL_IMAGE),
        one_off: get(LABEL_ONEOFF).is_some_and(|v| v.eq_ignore_ascii_case("true")),
        ..Default::default()
    }
}

fn instance_of_summary(c: ContainerSummary) -> Instance {
    let labels = labels_of(c.labels.as_ref());
    let mut ports: Vec<PublishedPort> = c
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            Some(PublishedPort {
                host_ip: p.ip.unwrap_or_default(),
                host_port: p.public_port?,
                container_port: p.private_port,
                protocol: p
                    .typ
                    .map(|t| t.to_string())
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| "tcp".into()),
            })
        })
        .collect();
    ports.sort();
    ports.dedup();
    let state = c.state.map(|s| s.to_string()).unwrap_or_default();
    // The list says "(healthy)" inside its status text; inspect has it exactly.
    let status = c.status.unwrap_or_default();
    let health = ["healthy", "unhealthy", "health: starting"]
        .into_iter()
        .find(|h| status.contains(&format!("({h})")))
        .map(|h| h.trim_start_matches("health: ").to_string());
    let mut volumes: Vec<String> = c
        .mounts
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.typ.as_deref() == Some("volume"))
        .filter_map(|m| m.name)
        .collect();
    volumes.sort();
    let mut networks: Vec<String> = c
        .network_settings
        .and_then(|n| n.networks)
        .map(|n| n.into_keys().collect())
        .unwrap_or_default();
    networks.sort();
    let base = instance_from_labels(&labels);
    Instance {
        volumes,
        networks,
        id: c.id.unwrap_or_default(),
        name: c
            .names
            .and_then(|n| n.into_iter().next())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        state,
        health,
        image: c.image,
        image_id: base.image_id.clone().or(c.image_id),
        ports,
        ..base
    }
}

/// Docker writes `0001-01-01T00:00:00Z` for "never".
fn real_time(t: Option<String>) -> Option<String> {
    t.filter(|t| !t.is_empty() && !t.starts_with("0001-"))
}

/// An inspected container as an engine-neutral instance detail.
pub fn detail_of_inspect(c: ContainerInspectResponse) -> InstanceDetail {
    let config = c.config.unwrap_or_default();
    let labels = labels_of(config.labels.as_ref());
    let state = c.state.unwrap_or_default();
    let status = state
        .status
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let health = state.health.unwrap_or_default();
    let health_status = health
        .status
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty() && s != "none");
    let health_log: Vec<HealthRecord> = health
        .log
        .unwrap_or_default()
        .into_iter()
        .map(|r| HealthRecord {
            exit_code: r.exit_code,
            end: r.end,
            output: r.output.unwrap_or_default(),
        })
        .collect();
    let mut ports: Vec<PublishedPort> = c
        .network_settings
        .and_then(|n| n.ports)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|(key, bindings)| {
            let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
            let container_port: u16 = port.parse().unwrap_or(0);
            let proto = proto.to_string();
            bindings
                .unwrap_or_default()
                .into_iter()
                .filter_map(move |b| {
                    Some(PublishedPort {
                        host_ip: b.host_ip.unwrap_or_default(),
                        host_port: b.host_port.as_deref()?.parse().ok()?,
                        container_port,
                        protocol: proto.clone(),
                    })
                })
                .collect::<Vec<_>>()
        })
        .filter(|p| p.container_port != 0)
        .collect();
    ports.sort();
    ports.dedup();
    let host_config = c.host_config.unwrap_or_default();
    let restart_policy = host_config.restart_policy.and_then(|p| {
        let name = p.name.map(|n| n.to_string()).filter(|n| !n.is_empty())?;
        Some(match p.maximum_retry_count {
            Some(n) if n > 0 && name == "on-failure" => format!("{name}:{n}"),
            _ => name,
        })
    });
    let base = instance_from_labels(&labels);
    InstanceDetail {
        instance: Instance {
            id: c.id.unwrap_or_default(),
            name: c
                .name
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default(),
            state: status,
            health: health_status,
            image: config.image,
            image_id: c.image,
            ports,
            ..base
        },
        serving: state.running.unwrap_or(false) && !state.restarting.unwrap_or(false),
        health_log,
        failing_streak: health.failing_streak,
        restart_count: c.restart_count.unwrap_or(0),
        oom_killed: state.oom_killed.unwrap_or(false),
        exit_code: state.exit_code,
        started_at: real_time(state.started_at),
        finished_at: real_time(state.finished_at),
        restart_policy,
        error: state.error.filter(|e| !e.is_empty()),
        memory_limit: host_config.memory,
        labels,
        env: config.env.unwrap_or_default(),
        cmd: config.cmd.unwrap_or_default(),
    }
}

/// Inspect, with `State.Health.Log` (the engine keeps the last five probes).
/// `Ok(None)` when the container was removed meanwhile.
pub async fn inspect(docker: &Docker, id: &str) -> Result<Option<InstanceDetail>, ToolError> {
    match docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
    {
        Ok(c) => Ok(Some(detail_of_inspect(c))),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(engine_error("inspecting a container failed", &e)),
    }
}

/// The local image id of each reference (None when the image is not present).
pub async fn image_ids(
    docker: &Docker,
    refs: &[String],
) -> Result<BTreeMap<String, Option<String>>, ToolError> {
    let results = futures::future::join_all(refs.iter().map(|r| docker.inspect_image(r))).await;
    let mut out = BTreeMap::new();
    for (r, res) in refs.iter().zip(results) {
        match res {
            Ok(img) => {
                out.insert(r.clone(), img.id);
            }
            Err(e) if is_not_found(&e) => {
                out.insert(r.clone(), None);
            }
            Err(e) => return Err(engine_error(&format!("inspecting image {r} failed"), &e)),
        }
    }
    Ok(out)
}

/// Volumes carrying the project's compose label.
pub async fn project_volumes(docker: &Docker, project: &str) -> Result<Vec<Volume>, ToolError> {
    let options = ListVolumesOptions {
        filters: Some(label_filter(&[format!("{LABEL_PROJECT}={project}")])),
    };
    let mut volumes = docker
        .list_volumes(Some(options))
        .await
        .map_err(|e| engine_error("listing volumes failed", &e))?
        .volumes
        .unwrap_or_default();
    volumes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(volumes)
}

/// Names of every volume on the engine (to tell what a removal touched).
pub async fn volume_names(docker: &Docker) -> Result<Vec<String>, ToolError> {
    let mut names: Vec<String> = docker
        .list_volumes(None::<ListVolumesOptions>)
        .await
        .map_err(|e| engine_error("listing volumes failed", &e))?
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    names.sort();
    Ok(names)
}

/// The engine's name of a compose volume: found by compose's labels, else
/// compose's default `<project>_<volume>`.
pub async fn volume_name(
    docker: &Docker,
    project: &str,
    volume: &str,
) -> Result<String, ToolError> {
    let options = ListVolumesOptions {
        filters: Some(label_filter(&[
            format!("{LABEL_PROJECT}={project}"),
            format!("{LABEL_VOLUME}={volume}"),
        ])),
    };
    let found = docker
        .list_volumes(Some(options))
        .await
        .map_err(|e| engine_error("listing volumes failed", &e))?;
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

/// Networks carrying the project's compose label.
pub async fn project_networks(docker: &Docker, project: &str) -> Result<Vec<Network>, ToolError> {
    let options = ListNetworksOptions {
        filters: Some(label_filter(&[format!("{LABEL_PROJECT}={project}")])),
    };
    let mut networks = docker
        .list_networks(Some(options))
        .await
        .map_err(|e| engine_error("listing networks failed", &e))?;
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(networks)
}

/// What compose_up's preflight and health need from `docker info`.
pub async fn engine_facts(docker: &Docker) -> Result<EngineFacts, ToolError> {
    let info = docker
        .info()
        .await
        .map_err(|e| engine_error("docker info failed", &e))?;
    Ok(EngineFacts {
        nvidia_runtime: info
            .runtimes
            .as_ref()
            .is_some_and(|r| r.contains_key("nvidia")),
        data_root: info.docker_root_dir,
        local: docker_endpoint_from_env().starts_with("unix://"),
    })
}

/// The last `lines` lines of a container's stdout and stderr as the engine
/// stores them, bounded: a flood of long lines keeps only the newest bytes.
pub async fn logs_tail(
    docker: &Docker,
    id: &str,
    lines: usize,
    max_bytes: usize,
) -> Result<Vec<u8>, ToolError> {
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        tail: lines.to_string(),
        ..Default::default()
    };
    let mut stream = docker.logs(id, Some(options));
    let mut raw: Vec<u8> = Vec::new();
    let hard_cap = max_bytes.saturating_mul(8).max(64 * 1024);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| engine_error("reading logs failed", &e))?;
        raw.extend_from_slice(chunk.as_ref());
        if raw.len() > hard_cap {
            let cut = raw.len() - hard_cap;
            raw.drain(..cut);
        }
    }
    Ok(raw)
}

/// The project's container events (the engine pushes them): the service of
/// each container that was created, started, stopped, died, changed health
/// or was destroyed.
pub fn watch(
    docker: &Docker,
    project: &str,
) -> Result<futures::stream::BoxStream<'static, String>, ToolError> {
    let options = bollard::query_parameters::EventsOptions {
        filters: Some(HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![format!("{LABEL_PROJECT}={project}")],
            ),
        ])),
        ..Default::default()
    };
    // A clone without the request timeout: the stream lives as long as someone listens.
    let docker = docker
        .clone()
        .with_timeout(Duration::from_secs(u64::from(u32::MAX)));
    let stream = docker.events(Some(options)).filter_map(|e| async move {
        let e = e.ok()?;
        let action = e.action.unwrap_or_default();
        let interesting = [
            "create", "start", "stop", "die", "destroy", "restart", "pause", "unpause", "kill",
            "oom",
        ]
        .iter()
        .any(|a| action == *a)
            || action.starts_with("health_status");
        if !interesting {
            return None;
        }
        e.actor?.attributes?.get(LABEL_SERVICE).cloned()
    });
    Ok(Box::pin(stream))
}

/// A container's log as timestamped lines (see `Engine::logs`). The Engine
/// API filters by whole seconds, so `since` is rounded down and `until` up;
/// the caller filters exactly. Each frame of the multiplexed stream is one
/// log entry; a TTY container's output arrives as raw lines.
pub fn log_lines(docker: &Docker, id: &str, query: &LogQuery) -> LogLines {
    let secs = |ns: i128, up: bool| -> i32 {
        let s = ns.div_euclid(1_000_000_000) + i128::from(up && ns.rem_euclid(1_000_000_000) != 0);
        i32::try_from(s.max(0)).unwrap_or(i32::MAX)
    };
    let options = LogsOptions {
        follow: false,
        stdout: query.stdout,
        stderr: query.stderr,
        since: query.since_ns.map(|ns| secs(ns, false)).unwrap_or(0),
        // 0 means "no bound" to the engine; a bound before 1970 is "nothing".
        until: query.until_ns.map(|ns| secs(ns, true).max(1)).unwrap_or(0),
        timestamps: true,
        tail: query
            .tail
            .map(|n| n.to_string())
            .unwrap_or_else(|| "all".into()),
    };
    let frames = docker.logs(id, Some(options));
    Box::pin(
        frames
            .map(|item| match item {
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                    Ok(split_entry(message, OutputStream::Stdout))
                }
                Ok(LogOutput::StdErr { message }) => Ok(split_entry(message, OutputStream::Stderr)),
                Ok(LogOutput::StdIn { .. }) => Ok(Vec::new()),
                Err(e) => Err(engine_error("reading logs failed", &e)),
            })
            .flat_map(|r| match r {
                Ok(lines) => futures::stream::iter(lines.into_iter().map(Ok).collect::<Vec<_>>()),
                Err(e) => futures::stream::iter(vec![Err(e)]),
            }),
    )
}

/// One log entry (`<RFC 3339 nanos> <text>\n`) as lines. An entry without a
/// readable time (never seen from Docker) gets time 0, so it sorts first
/// instead of being lost.
fn split_entry(message: bytes::Bytes, stream: OutputStream) -> Vec<LogLine> {
    let space = message.iter().position(|b| *b == b' ');
    let (time_ns, body) = match space {
        Some(i) => match std::str::from_utf8(&message[..i])
            .ok()
            .and_then(crate::domain::time::rfc3339_to_unix_ns)
        {
            Some(t) => (t, message.slice(i + 1..)),
            None => (0, message),
        },
        None => (0, message),
    };
    let mut body = body;
    while body.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        body.truncate(body.len() - 1);
    }
    if !body.contains(&b'\n') {
        return vec![LogLine {
            time_ns,
            stream,
            text: body,
        }];
    }
    body.split(|b| *b == b'\n')
        .map(|l| LogLine {
            time_ns,
            stream,
            text: bytes::Bytes::copy_from_slice(l.strip_suffix(b"\r").unwrap_or(l)),
        })
        .collect()
}

/// `docker restart` (starts a stopped container too).
pub async fn restart(
    docker: &Docker,
    id: &str,
    stop_timeout_s: Option<i32>,
) -> Result<(), ToolError> {
    let options = RestartContainerOptions {
        t: stop_timeout_s,
        ..Default::default()
    };
    docker
        .restart_container(id, Some(options))
        .await
        .map_err(|e| engine_error("restarting a container failed", &e))
}

/// Stops a container (its own stop timeout applies).
pub async fn stop(docker: &Docker, id: &str) -> Result<(), ToolError> {
    docker
        .stop_container(id, Some(StopContainerOptionsBuilder::default().build()))
        .await
        .map_err(|e| engine_error("stopping a container failed", &e))
}

pub async fn start(docker: &Docker, id: &str) -> Result<(), ToolError> {
    docker
        .start_container(id, None)
        .await
        .map_err(|e| engine_error("starting a container failed", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_entries_become_lines() {
        let e = split_entry(
            bytes::Bytes::from_static(b"2026-11-28T08:11:32.5Z hello world\n"),
            OutputStream::Stderr,
        );
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].time_ns, 1_795_853_492_500_000_000);
        assert_eq!(&e[0].text[..], b"hello world");
        assert_eq!(e[0].stream, OutputStream::Stderr);
        let tty = split_entry(
            bytes::Bytes::from_static(b"2026-11-28T08:11:32Z a\r\nb\r\n"),
            OutputStream::Stdout,
        );
        assert_eq!(
            tty.iter().map(|l| &l.text[..]).collect::<Vec<_>>(),
            [&b"a"[..], b"b"]
        );
        let bare = split_entry(bytes::Bytes::from_static(b"no time"), OutputStream::Stdout);
        assert_eq!((bare[0].time_ns, &bare[0].text[..]), (0, &b"no time"[..]));
    }

    #[test]
    fn never_is_no_time() {
        assert_eq!(real_time(Some("0001-01-01T00:00:00Z".into())), None);
        assert_eq!(
            real_time(Some("2026-01-01T00:00:00Z".into())).as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
    }
}
