//! Where the stack's Ollama answers: OLLAMA_HOST when set (a host Ollama, as
//! on apple-metal), else the host port published for port 11434 of the
//! stack's running instance with role ollama (its `io.stackpilot.role`
//! label, else guessed from its image as the stack model does), else
//! Ollama's default address. Every model tool starts here.
use std::time::Duration;

use crate::adapters::ollama::{self, Endpoint};
use crate::app::App;
use crate::domain::stack_model::{PublishedPort, Role};

/// Ollama's port inside its container.
pub const OLLAMA_CONTAINER_PORT: u16 = 11434;

/// How long finding the stack's Ollama may take before the default is used.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The endpoint every model tool talks to.
pub async fn resolve(app: &App) -> Endpoint {
    let url = tokio::time::timeout(LOOKUP_TIMEOUT, stack_ollama_url(app))
        .await
        .ok()
        .flatten();
    ollama::resolve(url)
}

/// The stack's Ollama instance as reachable from this host; None when the
/// engine cannot be reached or the project has no such running instance.
pub async fn stack_ollama_url(app: &App) -> Option<String> {
    let instances = app.engine().instances().await.ok()?;
    instances
        .iter()
        .filter(|i| i.running() && !i.one_off)
        .filter(|i| match i.role.as_deref() {
            Some(role) => Role::parse(role) == Some(Role::Ollama),
            None => Role::from_image(i.image.as_deref().unwrap_or("")) == Role::Ollama,
        })
        .find_map(|i| published_url(&i.ports))
}

/// `http://<host>:<port>` for a port list's binding of 11434/tcp; a wildcard
/// binding is reached on the loopback address.
pub fn published_url(ports: &[PublishedPort]) -> Option<String> {
    let mut bound: Vec<(String, u16)> = ports
        .iter()
        .filter(|p| p.container_port == OLLAMA_CONTAINER_PORT && p.protocol == "tcp")
        .map(|p| {
            let host = match p.host_ip.as_str() {
                "" | "0.0.0.0" | "::" => "127.0.0.1".to_string(),
                ip if ip.contains(':') => format!("[{ip}]"),
                ip => ip.to_string(),
            };
            (host, p.host_port)
        })
        .collect();
    // IPv4 first (an engine lists 0.0.0.0 and :: for one -p), then by port.
    bound.sort_by_key(|(h, p)| (h.starts_with('['), *p));
    bound
        .into_iter()
        .next()
        .map(|(h, p)| format!("http://{h}:{p}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(ip: &str, host: u16, container: u16) -> PublishedPort {
        PublishedPort {
            host_ip: ip.into(),
            host_port: host,
            container_port: container,
            protocol: "tcp".into(),
        }
    }

    #[test]
    fn published_url_prefers_ipv4_and_dials_loopback_for_wildcards() {
        assert_eq!(
            published_url(&[port("::", 18120, 11434), port("0.0.0.0", 18120, 11434)]).as_deref(),
            Some("http://127.0.0.1:18120")
        );
        assert_eq!(
            published_url(&[port("127.0.0.1", 18121, 11434)]).as_deref(),
            Some("http://127.0.0.1:18121")
        );
        assert_eq!(published_url(&[port("0.0.0.0", 18000, 8080)]), None);
    }
}
