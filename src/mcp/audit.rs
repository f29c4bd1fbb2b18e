//! One audit line per mutating call: time, tool, redacted arguments, plan
//! digest, how it was confirmed, outcome, duration.
use std::time::Duration;

use serde_json::{json, Value};

use crate::adapters::clock;
use crate::domain::error::ToolError;
use crate::guard::{Call, Reply};

pub fn write(
    call: &Call,
    tool: &str,
    args: Value,
    result: &Result<Reply, ToolError>,
    elapsed: Duration,
) {
    let facts = call.audit_facts();
    let outcome = match result {
        Err(e) => format!("error: {}", crate::domain::redact::cap(&e.message, 300)),
        Ok(Reply::InputRequired { .. }) => "input_required".to_string(),
        Ok(Reply::Done(_)) => facts.outcome.clone().unwrap_or_else(|| "applied".into()),
    };
    let line = json!({
        "time": clock::now_rfc3339(),
        "tool": tool,
        "arguments": args,
        "plan_digest": facts.plan_digest,
        "confirmation": facts.confirmed_by,
        "outcome": outcome,
        "duration_ms": elapsed.as_millis() as u64,
        "transport": call.app.mode.transport,
        "pid": std::process::id(),
    });
    if let Err(e) = crate::adapters::store::append_audit(&call.app.stack.state_dir, &line) {
        tracing::error!(error = %e, "could not write the audit log");
    }
}
