//! stack_status: the per-service report compose_up returns, without changing
//! anything. Read-only.
//!
//! One list of the project's instances through the engine port, then one
//! concurrent inspect per instance; beside the list, the compose model (run
//! once and reused while the compose files are unchanged) gives each service's
//! role and where it came from. A status costs milliseconds (the benchmark
//! compares it with `docker compose ps`).
use std::collections::BTreeSet;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::error::ToolError;
use crate::guard::{Call, Reply};
use crate::tools::def::{self, Hints, ToolDef};
use crate::tools::stack::report::{self as stack_report, Counts, ServiceReport};

/// Service names are compose names: short, no control characters.
pub const MAX_SERVICES: usize = 64;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Report only these services; a named service without a container is reported as `missing`.
    /// Default: every container of the project.
    #[serde(default)]
    pub services: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Output {
    /// The compose project name.
    pub project: String,
    /// One entry per container, sorted by service.
    pub services: Vec<ServiceReport>,
    pub counts: Counts,
    /// Every reported service is running, and healthy where it has a health check.
    pub ready: bool,
}

pub static TOOL: ToolDef = ToolDef {
    name: "stack_status",
    title: "Stack status",
    description:
        "Report every container of the stack's compose project: state, health, container id, \
        image, published ports, restart count and start time, and each service's role with \
        where it came from (role_source). Read-only and fast. Use before and after compose_up, \
        or for a quick look; health explains why a service is not healthy.",
    hints: Hints::READ_ONLY,
    read_only_subset: false,
    input_schema: def::input_schema::<Input>,
    output_schema: def::output_schema::<Output>,
    run: |call, args| Box::pin(run(call, args)),
};

/// Checks a list of service names: bounded, no duplicates, compose's characters.
pub fn check_service_names(field: &str, names: &[String]) -> Result<BTreeSet<String>, ToolError> {
    if names.len() > MAX_SERVICES {
        return Err(ToolError::invalid(
            field,
            format!("at most {MAX_SERVICES} services"),
        ));
    }
    let mut set = BTreeSet::new();
    for (i, n) in names.iter().enumerate() {
        let valid = !n.is_empty()
            && n.len() <= 128
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            return Err(ToolError::invalid(
                format!("{field}[{i}]"),
                format!(
                    "`{}` is not a compose service name (letters, digits, `_`, `-`, `.`)",
                    crate::domain::redact::cap(n, 100)
                ),
            ));
        }
        set.insert(n.clone());
    }
    Ok(set)
}

async fn run(call: Arc<Call>, args: Value) -> Result<Reply, ToolError> {
    let input: Input = def::parse_args(args)?;
    let services = input
        .services
        .as_deref()
        .map(|s| check_service_names("services", s))
        .transpose()?;
    let out = status(&call, services.as_ref()).await?;
    serde_json::to_value(out)
        .map(Reply::Done)
        .map_err(|e| ToolError::internal(e.to_string()))
}

pub async fn status(call: &Call, services: Option<&BTreeSet<String>>) -> Result<Output, ToolError> {
    let project = call.app.stack.project.clone();
    let engine = call.app.engine();
    // The model (cached while the compose files are unchanged) says where each role came
    // from; without it (a compose file that does not parse) the containers' labels and
    // images still give one.
    let (listed, model) = tokio::join!(engine.instances(), engine.model_cached());
    let containers = stack_report::service_containers(listed?);
    let (mut reports, _) = stack_report::collect(engine, &containers, services).await?;
    if let Ok(model) = &model {
        stack_report::annotate_roles(&mut reports, model);
    }
    Ok(Output {
        project,
        counts: Counts::of(&reports),
        ready: !reports.is_empty() && reports.iter().all(ServiceReport::ready),
        services: reports,
    })
}
