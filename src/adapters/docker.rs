//! The Docker Engine API through bollard: the connection every engine-facing
//! tool shares. Compose's lifecycle goes through the `docker compose` CLI
//! (adapters/compose.rs); everything around it (discovery by compose labels,
//! inspect, health, logs, exec) goes through here.
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models::{ContainerInspectResponse, ContainerSummary, Network, Volume};
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptions, ListNetworksOptions, ListVolumesOptions,
    LogsOptions,
};
use bollard::Docker;
use futures::StreamExt;

use crate::adapters::runtime_probe::{describe_docker_error, docker_endpoint_from_env};
use crate::error::ToolError;

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

/// Connects to DOCKER_HOST (unix, tcp, http; bollard's defaults) and
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

/// An engine call failed: say which engine and what to do.
pub fn engine_error(what: &str, e: &bollard::errors::Error) -> ToolError {
    let endpoint = docker_endpoint_from_env();
    unreachable(format!(
        "{what}: {}",
        describe_docker_error(&endpoint, e, REQUEST_TIMEOUT)
    ))
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
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
) -> Result<Vec<ContainerSummary>, ToolError> {
    let options = ListContainersOptions {
        all: true,
        filters: project.map(|p| label_filter(&[format!("{LABEL_PROJECT}={p}")])),
        ..Default::default()
    };
    docker
        .list_containers(Some(options))
        .await
        .map_err(|e| engine_error("listing containers failed", &e))
}

/// Inspects containers concurrently, in the order given. A container removed
/// between the list and the inspect is left out, not an error.
pub async fn inspect_containers(
    docker: &Docker,
    ids: &[String],
) -> Result<Vec<ContainerInspectResponse>, ToolError> {
    let results = futures::future::join_all(
        ids.iter()
            .map(|id| docker.inspect_container(id, None::<InspectContainerOptions>)),
    )
    .await;
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(c) => out.push(c),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(engine_error("inspecting a container failed", &e)),
        }
    }
    Ok(out)
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

/// What compose_up's preflight and health need from `docker info` (one call, one type).
#[derive(Debug, Clone)]
pub struct EngineFacts {
    /// An `nvidia` runtime is registered: GPU reservations can be honoured.
    pub nvidia_runtime: bool,
    /// Where the engine keeps images and volumes (`/var/lib/docker`).
    pub docker_root_dir: Option<String>,
    /// The engine runs on this machine (unix socket), so its paths and host
    /// ports are this machine's.
    pub local: bool,
}

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
        docker_root_dir: info.docker_root_dir,
        local: docker_endpoint_from_env().starts_with("unix://"),
    })
}

/// The last `lines` lines of a container's stdout and stderr, at most
/// `max_bytes` (the end is kept). Bounded in time: a slow engine gives what
/// arrived.
pub async fn logs_tail(docker: &Docker, id: &str, lines: usize, max_bytes: usize) -> String {
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        tail: lines.to_string(),
        ..Default::default()
    };
    let mut stream = docker.logs(id, Some(options));
    let mut text = String::new();
    let collect = async {
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => text.push_str(&chunk.to_string()),
                Err(e) => {
                    text.push_str(&format!("[reading logs failed: {e}]\n"));
                    break;
                }
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(3), collect)
        .await
        .is_err()
    {
        text.push_str("\n[log read timed out after 3 s]");
    }
    let kept: Vec<&str> = text.lines().collect();
    let kept = kept[kept.len().saturating_sub(lines)..].join("\n");
    tail_bytes(&kept, max_bytes)
}

/// The last `max` bytes of `s`, on a char boundary, saying how much was cut.
pub fn tail_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[{start} bytes cut] …{}", &s[start..])
}
