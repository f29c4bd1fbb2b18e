//! The Docker Engine API through bollard: the connection every engine-facing
//! tool shares. Compose's lifecycle goes through the `docker compose` CLI
//! (adapters/compose.rs); everything around it (discovery by compose labels,
//! inspect, health, logs, exec) goes through here.
use std::time::Duration;

use bollard::Docker;

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
