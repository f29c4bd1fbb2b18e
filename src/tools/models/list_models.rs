//! list_models: the models Ollama has, joined with what is loaded. Read-only.
//!
//! `/api/tags` (local models: size, digest, details) joined with `/api/ps`
//! (loaded models: memory, VRAM share, served context, expiry) by name, plus
//! each model's trained context from `/api/show` (four at a time; a model
//! whose show fails is still listed, without it).
use std::sync::Arc;

use futures::StreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::adapters::ollama::{self, EndpointSource, Ollama, PsModel, TagModel};
use crate::domain::error::ToolError;
use crate::guard::{Call, Reply};
use crate::tools::def::{self, Hints, ToolDef};
use crate::tools::models::endpoint;

/// `/api/show` requests in flight at once.
const SHOW_CONCURRENCY: usize = 4;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ModelEntry {
    /// As Ollama lists it, e.g. `llama3.1:8b`.
    pub name: String,
    /// Manifest digest.
    pub digest: String,
    /// On disk, bytes.
    pub size_bytes: u64,
    /// RFC 3339.
    pub modified_at: String,
    /// Listed by /api/tags (false: loaded, but no longer on disk).
    pub local: bool,
    /// `gguf`, ...
    pub format: String,
    /// Architecture family, e.g. `llama`.
    pub family: String,
    pub families: Vec<String>,
    /// e.g. `8.0B`, `134.52M`.
    pub parameter_size: String,
    /// Weight quantization, e.g. `Q4_K_M`.
    pub quantization: String,
    /// Trained maximum context in tokens (`<arch>.context_length` from /api/show).
    pub max_context_length: Option<u64>,
    /// Loaded in memory now (/api/ps).
    pub loaded: bool,
    /// The context the loaded runner serves, in tokens (/api/ps); null when not loaded.
    pub context_length: Option<u64>,
    /// Memory the loaded model takes, bytes; null when not loaded.
    pub memory_bytes: Option<u64>,
    /// Of that, in GPU memory, bytes.
    pub vram_bytes: Option<u64>,
    /// vram / memory, 0 to 1; null when not loaded.
    pub gpu_share: Option<f64>,
    /// As `ollama ps` prints it: `100% GPU`, `100% CPU`, `25%/75% CPU/GPU`.
    pub processor: Option<String>,
    /// When an idle loaded model is unloaded, RFC 3339.
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Output {
    pub ollama_url: String,
    pub endpoint_source: EndpointSource,
    pub ollama_version: String,
    /// Sorted by name.
    pub models: Vec<ModelEntry>,
    pub count: usize,
    pub loaded_count: usize,
    /// Sum of size_bytes of local models.
    pub total_size_bytes: u64,
}

pub static TOOL: ToolDef = ToolDef {
    name: "list_models",
    title: "List Ollama models",
    description:
        "List the models in Ollama with size, quantization, family, parameter size and trained \
        context, joined with what is loaded now: memory, share on the GPU, served context length \
        and expiry. Read-only. Use to see what is installed and loaded before pull_model, \
        remove_model or set_kv_cache.",
    hints: Hints::READ_ONLY,
    read_only_subset: false,
    input_schema: def::input_schema::<Input>,
    output_schema: def::output_schema::<Output>,
    run: |call, args| Box::pin(run(call, args)),
};

/// `ollama ps`'s PROCESSOR column.
pub fn processor(size: u64, size_vram: u64) -> String {
    if size_vram == 0 {
        "100% CPU".into()
    } else if size_vram == size {
        "100% GPU".into()
    } else if size_vram > size || size == 0 {
        "unknown".into()
    } else {
        let cpu = ((size - size_vram) as f64 / size as f64 * 100.0).round() as u64;
        format!("{cpu}%/{}% CPU/GPU", 100 - cpu)
    }
}

fn entry(tag: Option<&TagModel>, ps: Option<&PsModel>, max_context: Option<u64>) -> ModelEntry {
    let details = tag
        .map(|t| t.details.clone())
        .or_else(|| ps.map(|p| p.details.clone()))
        .unwrap_or_default();
    let name = tag
        .map(|t| t.name.clone())
        .or_else(|| ps.map(|p| p.name.clone()))
        .unwrap_or_default();
    let gpu_share = ps.map(|p| {
        if p.size == 0 {
            0.0
        } else {
            ((p.size_vram as f64 / p.size as f64).min(1.0) * 1000.0).round() / 1000.0
        }
    });
    ModelEntry {
        name,
        digest: tag
            .map(|t| t.digest.clone())
            .or_else(|| ps.map(|p| p.digest.clone()))
            .unwrap_or_default(),
        size_bytes: tag.map(|t| t.size).unwrap_or(0),
        modified_at: tag.map(|t| t.modified_at.clone()).unwrap_or_default(),
        local: tag.is_some(),
        format: details.format,
        family: details.family,
        families: details.families.unwrap_or_default(),
        parameter_size: details.parameter_size,
        quantization: details.quantization_level,
        max_context_length: max_context,
        loaded: ps.is_some(),
        context_length: ps.and_then(|p| p.context_length),
        memory_bytes: ps.map(|p| p.size),
        vram_bytes: ps.map(|p| p.size_vram),
        gpu_share,
        processor: ps.map(|p| processor(p.size, p.size_vram)),
        expires_at: ps.map(|p| p.expires_at.clone()).filter(|s| !s.is_empty()),
    }
}

/// Ollama names a model the same in tags and ps; compare as Ollama does
/// (case-insensitively, `:latest` implied).
fn same(a: &str, b: &str) -> bool {
    use crate::domain::models::name::ModelName;
    match (ModelName::parse("a", a), ModelName::parse("b", b)) {
        (Ok(x), Ok(y)) => x.canonical() == y.canonical(),
        _ => a.eq_ignore_ascii_case(b),
    }
}

async fn max_context_of(ollama: &Ollama, name: String) -> Option<u64> {
    match ollama.show(&name).await {
        Ok(info) => ollama::max_context(&info.model_info),
        Err(e) => {
            tracing::debug!(model = %name, error = %e.message, "show failed; listing without context");
            None
        }
    }
}

pub async fn list(ollama: &Ollama) -> Result<Vec<ModelEntry>, ToolError> {
    let (tags, ps) = tokio::join!(ollama.tags(), ollama.ps());
    let (tags, ps) = (tags?, ps?);
    let names: Vec<String> = tags.iter().map(|t| t.name.clone()).collect();
    let contexts: Vec<Option<u64>> = futures::stream::iter(names)
        .map(|name| max_context_of(ollama, name))
        .buffered(SHOW_CONCURRENCY)
        .collect()
        .await;
    let mut models: Vec<ModelEntry> = tags
        .iter()
        .zip(contexts)
        .map(|(t, ctx)| entry(Some(t), ps.iter().find(|p| same(&p.name, &t.name)), ctx))
        .collect();
    for p in ps
        .iter()
        .filter(|p| !tags.iter().any(|t| same(&t.name, &p.name)))
    {
        models.push(entry(None, Some(p), None));
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(models)
}

async fn run(call: Arc<Call>, args: Value) -> Result<Reply, ToolError> {
    let _input: Input = def::parse_args(args)?;
    let endpoint = endpoint::resolve(&call.app).await;
    let ollama = Ollama::connect(&endpoint).await?;
    let models = list(&ollama).await?;
    let out = Output {
        ollama_url: ollama.url.clone(),
        endpoint_source: ollama.source,
        ollama_version: ollama.version.clone(),
        count: models.len(),
        loaded_count: models.iter().filter(|m| m.loaded).count(),
        total_size_bytes: models.iter().map(|m| m.size_bytes).sum(),
        models,
    };
    serde_json::to_value(out)
        .map(Reply::Done)
        .map_err(|e| ToolError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processor_column_matches_ollama_ps() {
        assert_eq!(processor(100, 0), "100% CPU");
        assert_eq!(processor(100, 100), "100% GPU");
        assert_eq!(processor(100, 75), "25%/75% CPU/GPU");
        assert_eq!(processor(0, 5), "unknown");
    }

    #[test]
    fn names_join_like_ollama() {
        assert!(same("Mistral", "mistral:latest"));
        assert!(same("library/phi3:mini", "phi3:mini"));
        assert!(!same("phi3:mini", "phi3:medium"));
    }
}
