//! Argument completion (`completion/complete`): service names, backup ids
//! and model names, for the resource templates and the prompts that take
//! them. Values start with what was typed; at most 100 come back.
use std::sync::Arc;

use rmcp::model::{CompleteRequestParams, CompletionInfo, Reference};

use crate::adapters::backup_store;
use crate::app::App;
use crate::domain::models::catalogue;

const MAX: usize = CompletionInfo::MAX_VALUES;

/// What kind of value an argument takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Service,
    BackupId,
    Model,
    /// A comma-separated list of models (choose_model's `candidates`).
    Models,
}

fn kind(reference: &Reference, argument: &str) -> Option<Kind> {
    match reference {
        Reference::Resource(r) => match argument {
            "service" if r.uri.contains("{service}") => Some(Kind::Service),
            "backup_id" if r.uri.contains("{backup_id}") => Some(Kind::BackupId),
            "model" if r.uri.contains("{model}") => Some(Kind::Model),
            _ => None,
        },
        Reference::Prompt(p) => match (p.name.as_str(), argument) {
            ("diagnose_unhealthy", "service") => Some(Kind::Service),
            ("provision_stack", "model") => Some(Kind::Model),
            ("choose_model", "candidates") => Some(Kind::Models),
            _ => None,
        },
        _ => None,
    }
}

async fn services(app: &Arc<App>) -> Vec<String> {
    app.engine()
        .model_cached()
        .await
        .map(|m| m.services.keys().cloned().collect())
        .unwrap_or_default()
}

async fn backup_ids(app: &Arc<App>) -> Vec<String> {
    let Ok(model) = app.engine().model_cached().await else {
        return Vec::new();
    };
    let Ok(dir) = backup_store::project_dir(&model.settings.backup_root, &model.project) else {
        return Vec::new();
    };
    backup_store::list(&dir)
        .map(|l| {
            let mut ids: Vec<String> = l.sets.iter().map(|s| s.id.to_string()).collect();
            ids.reverse(); // newest first
            ids
        })
        .unwrap_or_default()
}

/// The catalogue's names, and the models the stack's Ollama has.
async fn models(app: &Arc<App>) -> Vec<String> {
    let mut names: Vec<String> = catalogue::names().into_iter().map(str::to_string).collect();
    let endpoint = crate::tools::models::endpoint::resolve(app).await;
    if let Ok(ollama) = crate::adapters::ollama::Ollama::connect(&endpoint).await {
        if let Ok(tags) = ollama.tags().await {
            names.extend(tags.into_iter().map(|t| t.name));
        }
    }
    names.sort();
    names.dedup();
    names
}

/// The completion values for a request.
pub async fn complete(app: &Arc<App>, request: &CompleteRequestParams) -> Vec<String> {
    let Some(kind) = kind(&request.r#ref, &request.argument.name) else {
        return Vec::new();
    };
    let typed = request.argument.value.as_str();
    // For a list, complete its last item and keep what precedes it.
    let (head, prefix) = match kind {
        Kind::Models => match typed.rsplit_once(',') {
            Some((h, last)) => (format!("{h}, "), last.trim_start().to_string()),
            None => (String::new(), typed.to_string()),
        },
        _ => (String::new(), typed.to_string()),
    };
    let pool = match kind {
        Kind::Service => services(app).await,
        Kind::BackupId => backup_ids(app).await,
        Kind::Model | Kind::Models => models(app).await,
    };
    pool.into_iter()
        .filter(|v| v.starts_with(&prefix))
        .take(MAX)
        .map(|v| format!("{head}{v}"))
        .collect()
}
