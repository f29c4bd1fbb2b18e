//! The connection to a cluster: a kubeconfig context, checked against the
//! API server within 2 s, so a bad kubeconfig, an unknown context or an
//! unreachable server is one clear error naming the context, never a hang.
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::domain::error::{error_chain, ToolError};
use crate::domain::kubernetes::target::KubeTarget;

/// A missing or refused API server is reported within 2 s: the probe of
/// `/version` gets this long, the rest is reading the kubeconfig.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1800);
/// One API request (not a stream) may take this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

const NEXT_STEP: &str = "check KUBECONFIG and the context (`kubectl config get-contexts`), that the API server runs and answers, or choose the target with --target/--context/--namespace (STACKPILOT_TARGET, STACKPILOT_KUBE_CONTEXT, STACKPILOT_KUBE_NAMESPACE)";

fn unreachable(target: &KubeTarget, message: String) -> ToolError {
    named(target.context_name(), message)
}

fn named(context: &str, message: String) -> ToolError {
    ToolError::external(format!("Kubernetes context `{context}`: {message}")).next_step(NEXT_STEP)
}

/// The context a target means: its own, else the kubeconfig's current one.
fn effective(target: &KubeTarget, kubeconfig: &Kubeconfig) -> String {
    target
        .context
        .clone()
        .or_else(|| kubeconfig.current_context.clone())
        .unwrap_or_else(|| target.context_name().to_string())
}

/// Loads the kubeconfig context (KUBECONFIG, else ~/.kube/config).
pub async fn config(target: &KubeTarget) -> Result<(Config, String), ToolError> {
    let kubeconfig = Kubeconfig::read().map_err(|e| {
        unreachable(
            target,
            format!("the kubeconfig cannot be read: {}", error_chain(&e)),
        )
    })?;
    if let Some(ctx) = &target.context {
        if !kubeconfig.contexts.iter().any(|c| &c.name == ctx) {
            let mut known: Vec<String> =
                kubeconfig.contexts.iter().map(|c| c.name.clone()).collect();
            known.sort();
            return Err(unreachable(
                target,
                format!(
                    "no such context in the kubeconfig (it has: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
    }
    let name = effective(target, &kubeconfig);
    let options = KubeConfigOptions {
        context: target.context.clone(),
        ..Default::default()
    };
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| {
            named(
                &name,
                format!("the kubeconfig is not usable: {}", error_chain(&e)),
            )
        })?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    // Streams (exec, logs, watches) run long; single requests are bounded by callers.
    config.read_timeout = None;
    config.write_timeout = Some(REQUEST_TIMEOUT);
    Ok((config, name))
}

/// A client whose API server answered `/version` within 2 s.
pub async fn connect(target: &KubeTarget) -> Result<(Client, String), ToolError> {
    let (config, name) = config(target).await?;
    let url = config.cluster_url.to_string();
    let unreachable = |_: &KubeTarget, m: String| named(&name, m);
    let client = Client::try_from(config).map_err(|e| {
        unreachable(
            target,
            format!("cannot make a client for {url}: {}", error_chain(&e)),
        )
    })?;
    match tokio::time::timeout(CONNECT_TIMEOUT, client.apiserver_version()).await {
        Err(_) => Err(unreachable(
            target,
            format!("the API server at {url} did not answer within 2 s"),
        )),
        Ok(Err(e)) if error_chain(&e).contains("deadline has elapsed") => Err(unreachable(
            target,
            format!("the API server at {url} did not answer within 2 s (connecting timed out)"),
        )),
        Ok(Err(e)) => Err(unreachable(
            target,
            format!(
                "the API server at {url} did not answer: {}",
                error_chain(&e)
            ),
        )),
        Ok(Ok(_)) => Ok((client, url)),
    }
}

/// Whether an API error is a 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

/// An API call failed: say which context and what the server said.
pub fn api_error(target: &KubeTarget, what: &str, e: &kube::Error) -> ToolError {
    let detail = match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => error_chain(other),
    };
    ToolError::external(format!(
        "Kubernetes context `{}`, namespace `{}`: {what}: {}",
        target.context_name(),
        target.namespace,
        crate::domain::redact::cap(&detail, 600)
    ))
    .next_step(NEXT_STEP)
}
