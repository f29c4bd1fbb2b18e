//! Resources: the stack's state to read without calling a tool, each with a
//! stable URI and JSON content, masked like every tool output (the secret
//! book, shapes; secret-named keys' values redacted).
//!
//! | URI | content |
//! | --- | --- |
//! | `stackpilot://stack/status` | stack_status |
//! | `stackpilot://stack/health` | the last health report (a quick check when none was made) |
//! | `stackpilot://stack/compose` | the resolved compose model (`docker compose config`), secrets redacted |
//! | `stackpilot://stack/env` | the .env's keys and values, secrets redacted, the keys stackpilot writes marked |
//! | `stackpilot://stack/audit{?limit,offset}` | the audit log, newest first, paged |
//! | `stackpilot://stack/backups` | list_backups |
//! | `stackpilot://stack/backups/{backup_id}` | one backup set's manifest |
//! | `stackpilot://stack/services/{service}` | stack_status of one service |
//! | `stackpilot://ollama/models` | list_models |
//! | `stackpilot://ollama/models/{model}` | one model of list_models |
//! | `stackpilot://host/hardware` | detect_hardware |
use std::sync::Arc;

use futures::future::BoxFuture;
use rmcp::model::{Resource, ResourceContents, ResourceTemplate};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::adapters::{backup_store, env_file};
use crate::app::App;
use crate::domain::backup_set::SetId;
use crate::domain::error::{ErrorKind, ToolError};
use crate::domain::redact::{is_secret_key, redact_json_strings, REDACTED};
use crate::guard::token::Answer;
use crate::guard::{Call, ConfirmMode, Confirmer, NoProgress, Reply};
use crate::tools::list;

pub const STATUS: &str = "stackpilot://stack/status";
pub const HEALTH: &str = "stackpilot://stack/health";
pub const COMPOSE: &str = "stackpilot://stack/compose";
pub const ENV: &str = "stackpilot://stack/env";
pub const AUDIT: &str = "stackpilot://stack/audit";
pub const BACKUPS: &str = "stackpilot://stack/backups";
pub const MODELS: &str = "stackpilot://ollama/models";
pub const HARDWARE: &str = "stackpilot://host/hardware";
const SERVICE_PREFIX: &str = "stackpilot://stack/services/";
const BACKUP_PREFIX: &str = "stackpilot://stack/backups/";
const MODEL_PREFIX: &str = "stackpilot://ollama/models/";

const JSON: &str = "application/json";

/// Audit lines per page by default, and at most.
const AUDIT_PAGE: usize = 50;
const AUDIT_MAX: usize = 500;

/// .env keys stackpilot writes (select_profile, set_kv_cache).
fn owned(key: &str) -> bool {
    key.starts_with("OLLAMA_")
        || key.starts_with("STACKPILOT_")
        || key == "COMPOSE_PROFILES"
        || key == "COMPOSE_PROJECT_NAME"
}

fn resource(uri: &str, name: &str, title: &str, description: &str) -> Resource {
    Resource::new(uri, name)
        .with_title(title)
        .with_description(description)
        .with_mime_type(JSON)
}

/// The fixed resources.
pub fn list() -> Vec<Resource> {
    vec![
        resource(STATUS, "status", "Stack status", "Every container of the stack: state, health, image, ports, restarts (stack_status). Updated live for subscribers."),
        resource(HEALTH, "health", "Last health report", "The last health report (verdicts with evidence and hints); a quick check when none was made yet. Updated live for subscribers."),
        resource(COMPOSE, "compose", "Compose model", "The resolved compose model (`docker compose config`), secret values redacted."),
        resource(ENV, "env", ".env", "The stack's .env keys and values, secret values redacted, the keys stackpilot writes marked."),
        resource(AUDIT, "audit", "Audit log", "The audit log of mutating calls, newest first (50 lines; page with ?limit=&offset=)."),
        resource(BACKUPS, "backups", "Backup sets", "The stack's backup sets, newest first (list_backups)."),
        resource(MODELS, "models", "Ollama models", "The models Ollama has, loaded or not (list_models)."),
        resource(HARDWARE, "hardware", "Hardware", "CPU, memory, GPUs, disk and the runtime (detect_hardware)."),
    ]
}

fn template(uri: &str, name: &str, title: &str, description: &str) -> ResourceTemplate {
    ResourceTemplate::new(uri, name)
        .with_title(title)
        .with_description(description)
        .with_mime_type(JSON)
}

pub fn templates() -> Vec<ResourceTemplate> {
    vec![
        template(
            "stackpilot://stack/services/{service}",
            "service",
            "One service",
            "stack_status of one compose service.",
        ),
        template(
            "stackpilot://stack/backups/{backup_id}",
            "backup",
            "One backup set",
            "A backup set's manifest: files, sizes, sha256, counts.",
        ),
        template(
            "stackpilot://ollama/models/{model}",
            "model",
            "One Ollama model",
            "One model as list_models reports it.",
        ),
        template(
            "stackpilot://stack/audit{?limit,offset}",
            "audit page",
            "Audit log page",
            "The audit log, newest first, `limit` lines (at most 500) after skipping `offset`.",
        ),
    ]
}

/// Nobody to ask: resources run read-only tools only.
struct NoPerson;

impl Confirmer for NoPerson {
    fn mode(&self) -> ConfirmMode {
        ConfirmMode::TokenOnly
    }

    fn ask(&self, _text: String) -> BoxFuture<'_, Result<Answer, String>> {
        Box::pin(async { Err("resources never ask".to_string()) })
    }
}

/// Runs a read-only tool as a resource read (masked like any tool reply).
async fn tool(app: &Arc<App>, name: &'static str, args: Value) -> Result<Value, ToolError> {
    let def = list::find(name).ok_or_else(|| ToolError::internal(format!("no tool {name}")))?;
    debug_assert!(!def.mutating());
    let call = Arc::new(Call::new(
        app.clone(),
        def.name,
        Arc::new(NoProgress),
        Arc::new(NoPerson),
        CancellationToken::new(),
        None,
    ));
    match crate::mcp::run_tool(def, call, args).await? {
        Reply::Done(v) => Ok(v),
        Reply::InputRequired { .. } => Err(ToolError::internal("a read-only tool asked for input")),
    }
}

fn not_found(uri: &str) -> ToolError {
    ToolError::invalid("uri", format!("no resource {uri}")).allowed(
        list()
            .iter()
            .map(|r| r.uri.clone())
            .chain(templates().iter().map(|t| t.uri_template.clone())),
    )
}

/// The query parameters of a URI (`?limit=10&offset=20`).
fn query(uri: &str) -> (&str, Vec<(String, String)>) {
    match uri.split_once('?') {
        None => (uri, Vec::new()),
        Some((base, q)) => (
            base,
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
    }
}

fn number(
    params: &[(String, String)],
    key: &str,
    default: usize,
    max: usize,
) -> Result<usize, ToolError> {
    match params.iter().find(|(k, _)| k == key) {
        None => Ok(default),
        Some((_, v)) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| ToolError::invalid(key, format!("`{v}` is not a number in 0..={max}"))),
    }
}

/// Reads a resource: its JSON, masked.
pub async fn read(app: &Arc<App>, uri: &str) -> Result<Value, ToolError> {
    if uri.len() > 2048 {
        return Err(ToolError::invalid("uri", "longer than 2048 characters"));
    }
    let (base, params) = query(uri);
    let value = match base {
        STATUS => tool(app, "stack_status", json!({})).await?,
        HEALTH => match app.last_health() {
            Some(v) => v,
            None => tool(app, "health", json!({})).await?,
        },
        COMPOSE => compose_model(app).await?,
        ENV => env(app)?,
        AUDIT => audit(app, &params)?,
        BACKUPS => tool(app, "list_backups", json!({})).await?,
        MODELS => tool(app, "list_models", json!({})).await?,
        HARDWARE => tool(app, "detect_hardware", json!({})).await?,
        _ => {
            if let Some(service) = base.strip_prefix(SERVICE_PREFIX) {
                tool(app, "stack_status", json!({"services": [service]})).await?
            } else if let Some(id) = base.strip_prefix(BACKUP_PREFIX) {
                backup_manifest(app, id).await?
            } else if let Some(model) = base.strip_prefix(MODEL_PREFIX) {
                let all = tool(app, "list_models", json!({})).await?;
                all["models"]
                    .as_array()
                    .and_then(|m| m.iter().find(|m| m["name"] == model).cloned())
                    .ok_or_else(|| {
                        ToolError::invalid("uri", format!("Ollama has no model `{model}`"))
                    })?
            } else {
                return Err(not_found(uri));
            }
        }
    };
    let mut value = value;
    redact_json_strings(&mut value, &app.known_secrets());
    Ok(value)
}

/// The resource as MCP content.
pub async fn contents(app: &Arc<App>, uri: &str) -> Result<ResourceContents, ToolError> {
    let value = read(app, uri).await?;
    Ok(ResourceContents::text(
        serde_json::to_string_pretty(&value).unwrap_or_default(),
        uri,
    )
    .with_mime_type(JSON))
}

/// `docker compose config --format json`, with the values of secret-named
/// environment keys redacted (and then masked by value with the rest).
async fn compose_model(app: &Arc<App>) -> Result<Value, ToolError> {
    let cli = app.compose()?.cli()?;
    let out = cli
        .run(
            &[],
            &["config", "--format", "json"],
            std::time::Duration::from_secs(30),
        )
        .await?;
    let mut v: Value = serde_json::from_str(&out.stdout).map_err(|e| {
        ToolError::external(format!("docker compose config printed invalid JSON: {e}"))
    })?;
    if let Some(services) = v.get_mut("services").and_then(Value::as_object_mut) {
        for svc in services.values_mut() {
            if let Some(env) = svc.get_mut("environment").and_then(Value::as_object_mut) {
                for (k, val) in env.iter_mut() {
                    if is_secret_key(k) && !val.is_null() {
                        *val = Value::String(REDACTED.into());
                    }
                }
            }
        }
    }
    Ok(v)
}

fn env(app: &Arc<App>) -> Result<Value, ToolError> {
    let path = app.stack.env_path();
    let file = env_file::load(&path)?;
    let keys: Vec<Value> = file
        .values()
        .into_iter()
        .map(|(k, v)| {
            let secret = is_secret_key(&k);
            json!({
                "key": k,
                "value": if secret { REDACTED.to_string() } else { v },
                "secret": secret,
                "owned": owned(&k),
            })
        })
        .collect();
    Ok(json!({"path": path.display().to_string(), "keys": keys}))
}

fn audit(app: &Arc<App>, params: &[(String, String)]) -> Result<Value, ToolError> {
    let limit = number(params, "limit", AUDIT_PAGE, AUDIT_MAX)?;
    let offset = number(params, "offset", 0, usize::MAX)?;
    let path = app.stack.state_dir.join("audit.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.into()),
    };
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let lines: Vec<Value> = all
        .iter()
        .rev()
        .skip(offset)
        .take(limit)
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| Value::String((*l).to_string())))
        .collect();
    let next = (offset + lines.len() < all.len()).then_some(offset + lines.len());
    Ok(json!({"total": all.len(), "offset": offset, "next_offset": next, "lines": lines}))
}

async fn backup_manifest(app: &Arc<App>, id: &str) -> Result<Value, ToolError> {
    let id = SetId::parse("backup_id", id)?;
    let model = app.engine().model_cached().await?;
    let dir = backup_store::project_dir(&model.settings.backup_root, &model.project)?;
    let manifest = backup_store::read_manifest(&dir, &id)?;
    serde_json::to_value(manifest).map_err(|e| ToolError::internal(e.to_string()))
}

/// A resource read that failed, as the protocol error clients expect.
pub fn error(uri: &str, e: &ToolError) -> rmcp::ErrorData {
    match e.kind {
        ErrorKind::InvalidInput => rmcp::ErrorData::resource_not_found(
            format!("{}: {}", crate::domain::redact::cap(uri, 200), e.message),
            None,
        ),
        _ => rmcp::ErrorData::internal_error(e.message.clone(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_bounds() {
        let (base, p) = query("stackpilot://stack/audit?limit=10&offset=20");
        assert_eq!(base, AUDIT);
        assert_eq!(number(&p, "limit", 50, 500).ok(), Some(10));
        assert_eq!(number(&p, "offset", 0, usize::MAX).ok(), Some(20));
        let (_, p) = query("stackpilot://stack/audit?limit=5000");
        let e = number(&p, "limit", 50, 500).expect_err("too many");
        assert_eq!(e.field.as_deref(), Some("limit"));
        assert!(owned("OLLAMA_KV_CACHE_TYPE") && !owned("POSTGRES_PASSWORD"));
    }
}
