//! A model's memory facts from its own metadata: the GGUF keys, as a GGUF
//! file's header carries them (domain::models::gguf) or as Ollama's
//! `/api/show` returns them in `model_info` (the same keys, with arrays left
//! out unless asked for with `verbose`).
//!
//! The keys (`<arch>` is `general.architecture`): `block_count` (layers),
//! `attention.head_count_kv` (a number, or an array with one entry per layer),
//! `attention.head_count`, `attention.key_length` (else `embedding_length /
//! head_count`), `context_length`, `attention.sliding_window`, `expert_count`,
//! `expert_used_count`.
//!
//! Where the facts follow what Ollama does rather than what the file says:
//! - sliding windows count only where Ollama's cache bounds those layers
//!   (its own engine: gemma3 with every 6th layer global; gpt-oss, whose
//!   even layers slide over 128 tokens but keep 4096 in the cache). gemma2
//!   slides too, but Ollama runs it on llama.cpp, which caches the whole
//!   context for every layer;
//! - BERT-family encoders (embedding models) get no KV cache at all in
//!   llama.cpp: every layer's KV heads are 0.
use serde_json::{Map, Value};

use crate::domain::models::catalogue::ModelFacts;

/// Why metadata gives no facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FactsGap {
    /// Not a text model this memory model knows how to size (a key is missing).
    Missing(String),
    /// A key the facts need is an array that was left out (`/api/show`
    /// without `verbose` sends arrays as null): ask again with them.
    ArraysWithheld(String),
}

impl std::fmt::Display for FactsGap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FactsGap::Missing(why) => write!(f, "{why}"),
            FactsGap::ArraysWithheld(key) => write!(f, "{key} is an array that was not sent"),
        }
    }
}

/// Architectures llama.cpp runs as encoders without a KV cache.
pub const ENCODER_ARCHITECTURES: [&str; 4] =
    ["bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2"];

/// The sliding window Ollama's cache applies for `arch`, as (tokens kept,
/// pattern), or (0, 0) where every layer caches the whole context.
pub fn ollama_sliding_window(arch: &str, declared_window: u64) -> (u32, u32) {
    match arch {
        // model/models/gemma3: (layer+1) % 6 == 0 is global; kvcache.NewSWACache(window).
        "gemma3" => (u32::try_from(declared_window).unwrap_or(0), 6),
        // model/models/gptoss: even layers slide; kvcache.NewSWAMemCache(window, 4096).
        "gptoss" | "gpt-oss" if declared_window > 0 => (4096, 2),
        _ => (0, 0),
    }
}

enum Num {
    One(u64),
    PerLayer(Vec<u64>),
}

/// Facts for `name` from metadata keyed like a GGUF's (`general.architecture`,
/// `<arch>.block_count`, ...). `weights_bytes` is the model's size (the file,
/// or `/api/tags`' size).
pub fn from_metadata(
    name: &str,
    weights_bytes: u64,
    info: &Map<String, Value>,
) -> Result<ModelFacts, FactsGap> {
    let arch = info
        .get("general.architecture")
        .and_then(Value::as_str)
        .ok_or_else(|| FactsGap::Missing("no general.architecture".into()))?;
    let key = |k: &str| format!("{arch}.{k}");
    // A number, a per-layer array, absent (None), or withheld (Err).
    let num = |k: &str| -> Result<Option<Num>, FactsGap> {
        match info.get(&key(k)) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_u64().map(Num::One)),
            Some(Value::Array(items)) if !items.is_empty() => Ok(Some(Num::PerLayer(
                items.iter().map(|v| v.as_u64().unwrap_or(0)).collect(),
            ))),
            // Ollama's /api/show sends arrays as null (or empty) without `verbose`.
            Some(Value::Null) | Some(Value::Array(_)) => Err(FactsGap::ArraysWithheld(key(k))),
            Some(_) => Ok(None),
        }
    };
    let one = |k: &str| -> Result<Option<u64>, FactsGap> {
        Ok(match num(k)? {
            Some(Num::One(v)) => Some(v),
            // Where an array stands for a number, its largest entry is the safe one.
            Some(Num::PerLayer(v)) => v.into_iter().max(),
            None => None,
        })
    };
    let to32 = |v: u64, what: &str| {
        u32::try_from(v).map_err(|_| FactsGap::Missing(format!("{what} {v} is out of range")))
    };
    let layers = one("block_count")?
        .filter(|l| *l > 0)
        .ok_or_else(|| FactsGap::Missing(format!("no {}", key("block_count"))))?;
    let heads = one("attention.head_count")?.filter(|h| *h > 0);
    let (kv_heads, per_layer) = match num("attention.head_count_kv")? {
        Some(Num::One(h)) if h > 0 => (h, Vec::new()),
        Some(Num::PerLayer(v)) => {
            if v.len() as u64 != layers {
                return Err(FactsGap::Missing(format!(
                    "{} has {} entries for {layers} layers",
                    key("attention.head_count_kv"),
                    v.len()
                )));
            }
            let max = v.iter().copied().max().unwrap_or(0);
            let per: Result<Vec<u32>, FactsGap> =
                v.into_iter().map(|h| to32(h, "head_count_kv")).collect();
            (max, per?)
        }
        _ => (
            heads
                .ok_or_else(|| FactsGap::Missing(format!("no {}", key("attention.head_count"))))?,
            Vec::new(),
        ),
    };
    let head_dim = match one("attention.key_length")?.filter(|d| *d > 0) {
        Some(d) => d,
        None => {
            let embedding = one("embedding_length")?
                .ok_or_else(|| FactsGap::Missing(format!("no {}", key("embedding_length"))))?;
            let heads = heads
                .ok_or_else(|| FactsGap::Missing(format!("no {}", key("attention.head_count"))))?;
            embedding / heads
        }
    };
    let max_context = one("context_length")?.unwrap_or(0);
    let declared_window = info
        .get(&key("attention.sliding_window"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let (sliding_window, sliding_window_pattern) = ollama_sliding_window(arch, declared_window);
    let expert_count = one("expert_count")?.unwrap_or(0);
    let expert_used_count = one("expert_used_count")?.unwrap_or(0);
    let layers32 = to32(layers, "block_count")?;
    let kv_heads_per_layer = if ENCODER_ARCHITECTURES.contains(&arch) {
        vec![0; layers32 as usize]
    } else {
        per_layer
    };
    Ok(ModelFacts {
        name: name.to_string(),
        weights_bytes,
        layers: layers32,
        kv_heads: to32(kv_heads, "head_count_kv")?,
        head_dim: to32(head_dim, "head_dim")?,
        max_context: to32(max_context, "context_length")?,
        kv_heads_per_layer,
        sliding_window,
        sliding_window_pattern,
        expert_count: to32(expert_count, "expert_count")?,
        expert_used_count: to32(expert_used_count, "expert_used_count")?,
    })
}

/// `<arch>.context_length`, the trained maximum.
pub fn max_context(info: &Map<String, Value>) -> Option<u64> {
    let arch = info.get("general.architecture")?.as_str()?;
    info.get(&format!("{arch}.context_length"))?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::models::memory::{self, KvCacheType};
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn smollm2_from_its_metadata() {
        // The keys SmolLM2-135M-Instruct.Q4_1.gguf carries (and /api/show returns).
        let info = obj(json!({
            "general.architecture": "llama",
            "llama.block_count": 30,
            "llama.context_length": 8192,
            "llama.embedding_length": 576,
            "llama.attention.head_count": 9,
            "llama.attention.head_count_kv": 3,
            "tokenizer.ggml.tokens": null,
        }));
        let f = from_metadata("smollm2:135m", 98_362_432, &info).expect("facts");
        assert_eq!(
            (f.layers, f.kv_heads, f.head_dim, f.max_context),
            (30, 3, 64, 8192)
        );
        assert!(f.kv_heads_per_layer.is_empty());
        // 30 layers × 3 heads × 64 × 2 (K, V) × 2 bytes = 23040 bytes a token:
        // 45 MiB at 2048, as llama.cpp logs it (`KV self size = 45.00 MiB`).
        assert_eq!(memory::kv_cache_bytes(&f, 2048, KvCacheType::F16), 45 << 20);
    }

    #[test]
    fn key_length_wins_over_embedding_over_heads() {
        let gemma2 = obj(json!({
            "general.architecture": "gemma2",
            "gemma2.block_count": 42,
            "gemma2.attention.head_count": 16,
            "gemma2.attention.head_count_kv": 8,
            "gemma2.attention.key_length": 256,
            "gemma2.embedding_length": 3584,
            "gemma2.context_length": 8192,
            "gemma2.attention.sliding_window": 4096,
        }));
        let g = from_metadata("gemma2:9b", 1, &gemma2).expect("facts");
        assert_eq!(g.head_dim, 256);
        assert_eq!(g.sliding_window, 0, "llama.cpp runner: whole context");
    }

    #[test]
    fn gemma3_and_gpt_oss_slide_as_ollamas_cache_does() {
        let gemma3 = obj(json!({
            "general.architecture": "gemma3",
            "gemma3.block_count": 48,
            "gemma3.attention.head_count": 16,
            "gemma3.attention.head_count_kv": 8,
            "gemma3.attention.key_length": 256,
            "gemma3.attention.sliding_window": 1024,
            "gemma3.context_length": 131072,
        }));
        let g = from_metadata("gemma3:12b", 1, &gemma3).expect("facts");
        assert_eq!((g.sliding_window, g.sliding_window_pattern), (1024, 6));
        let oss = obj(json!({
            "general.architecture": "gptoss",
            "gptoss.block_count": 24,
            "gptoss.attention.head_count": 64,
            "gptoss.attention.head_count_kv": 8,
            "gptoss.attention.key_length": 64,
            "gptoss.attention.sliding_window": 128,
            "gptoss.context_length": 131072,
            "gptoss.expert_count": 32,
            "gptoss.expert_used_count": 4,
        }));
        let o = from_metadata("gpt-oss:20b", 1, &oss).expect("facts");
        assert_eq!((o.sliding_window, o.sliding_window_pattern), (4096, 2));
        assert_eq!((o.expert_count, o.expert_used_count), (32, 4));
    }

    #[test]
    fn per_layer_heads_and_withheld_arrays() {
        let per_layer = obj(json!({
            "general.architecture": "openelm",
            "openelm.block_count": 4,
            "openelm.attention.head_count": [12, 12, 16, 16],
            "openelm.attention.head_count_kv": [3, 3, 4, 0],
            "openelm.attention.key_length": 64,
            "openelm.context_length": 2048,
        }));
        let f = from_metadata("elm", 1, &per_layer).expect("facts");
        assert_eq!(f.kv_heads_per_layer, vec![3, 3, 4, 0]);
        assert_eq!(f.kv_heads, 4);
        // Σ heads = 10: 10 × 64 × 2 × 2 bytes × 2048 tokens.
        assert_eq!(
            memory::kv_cache_bytes(&f, 2048, KvCacheType::F16),
            10 * 64 * 2 * 2 * 2048
        );
        let withheld = obj(json!({
            "general.architecture": "openelm",
            "openelm.block_count": 4,
            "openelm.attention.head_count": null,
            "openelm.attention.head_count_kv": null,
        }));
        assert!(matches!(
            from_metadata("elm", 1, &withheld),
            Err(FactsGap::ArraysWithheld(k)) if k.starts_with("openelm.attention.head_count")
        ));
        let wrong_len = obj(json!({
            "general.architecture": "openelm",
            "openelm.block_count": 4,
            "openelm.attention.head_count_kv": [1, 2],
            "openelm.attention.key_length": 64,
        }));
        assert!(matches!(
            from_metadata("elm", 1, &wrong_len),
            Err(FactsGap::Missing(_))
        ));
    }

    #[test]
    fn encoders_have_no_kv_cache_and_non_models_no_facts() {
        let bert = obj(
            json!({"general.architecture": "bert", "bert.block_count": 12,
            "bert.attention.head_count": 12, "bert.embedding_length": 768}),
        );
        let b = from_metadata("x", 1, &bert).expect("facts");
        assert_eq!((b.kv_heads, b.head_dim, b.max_context), (12, 64, 0));
        assert_eq!(memory::kv_cache_bytes(&b, 2048, KvCacheType::F16), 0);
        assert!(matches!(
            from_metadata("x", 1, &Map::new()),
            Err(FactsGap::Missing(_))
        ));
        assert_eq!(
            max_context(&obj(
                json!({"general.architecture": "llama", "llama.context_length": 8192})
            )),
            Some(8192)
        );
    }
}
