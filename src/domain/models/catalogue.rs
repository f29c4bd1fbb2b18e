//! The built-in model catalogue: the GGUF facts `select_profile` needs to size
//! a model's memory without asking Ollama (which may not be running yet, or
//! may not have the model). Once a model is local, its own metadata
//! (`/api/show`, or a GGUF file's header: domain::models::facts) wins.
//!
//! Each entry is an Ollama tag. The architecture figures are the GGUF
//! metadata keys llama.cpp and Ollama read to allocate the KV cache:
//! `layers` = `<arch>.block_count`, `kv_heads` = `<arch>.attention.head_count_kv`
//! (equal to `head_count` where the key is absent), `head_dim` =
//! `<arch>.attention.key_length` where set, else `embedding_length / head_count`,
//! `max_context` = `<arch>.context_length`, `sliding_window` =
//! `<arch>.attention.sliding_window` for the architectures whose sliding
//! layers Ollama's cache bounds (gemma3; gpt-oss keeps 4096 tokens there),
//! `expert_count` / `expert_used_count` = `<arch>.expert_count` /
//! `<arch>.expert_used_count`. They are the published config.json of each
//! model's Hugging Face repository (named per entry) as Ollama's converter
//! writes them into the GGUF.
//!
//! `weights_bytes` is the `size` Ollama's `GET /api/tags` reports for the
//! pulled tag (the GGUF blob plus the small template/licence/params layers):
//! exact where a published `/api/tags` output was found (digest noted), else
//! the size ollama.com/library lists for the tag, which it rounds to two or
//! three significant digits (e.g. 5.2GB = 5,200,000,000 here, within ±1 %).
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// What the memory model needs to know about one model. Sizes are bytes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ModelFacts {
    /// Canonical Ollama name with tag, e.g. `llama3.1:8b`. For explicit facts,
    /// any label the caller chooses.
    pub name: String,
    /// Size of the model's weights in bytes (Ollama's `size` for the tag; the
    /// whole file: a mixture of experts keeps every expert resident).
    pub weights_bytes: u64,
    /// Transformer layers (GGUF `<arch>.block_count`).
    pub layers: u32,
    /// Key/value heads per layer (GGUF `<arch>.attention.head_count_kv`).
    pub kv_heads: u32,
    /// Dimension of one attention head, in elements (GGUF
    /// `<arch>.attention.key_length`, else `embedding_length / head_count`).
    pub head_dim: u32,
    /// Longest context the model was trained for, in tokens (GGUF
    /// `<arch>.context_length`).
    pub max_context: u32,
    /// KV heads of each layer, where the GGUF gives `head_count_kv` as an
    /// array (0: a layer without a KV cache, e.g. a recurrent layer or an
    /// encoder-only model). Empty: `kv_heads` for every layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kv_heads_per_layer: Vec<u32>,
    /// Tokens a sliding-window layer keeps in Ollama's cache (GGUF
    /// `<arch>.attention.sliding_window`); 0: no sliding window, or a runner
    /// that gives every layer the whole context.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sliding_window: u32,
    /// Every n-th layer (1-based) attends globally, the others slide (gemma3:
    /// 6, gpt-oss: 2). 0 with a window: every layer slides.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sliding_window_pattern: u32,
    /// Mixture of experts: experts per layer (GGUF `<arch>.expert_count`); 0 =
    /// a dense model.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expert_count: u32,
    /// Experts a token uses (GGUF `<arch>.expert_used_count`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expert_used_count: u32,
}

/// One catalogue row: the canonical name, the aliases that resolve to it, and
/// the facts. Kept as a static table so lookups are allocation-free until the
/// caller asks for an owned `ModelFacts`.
struct Entry {
    name: &'static str,
    /// Other spellings that mean the same tag (`name:latest`, bare `name`).
    aliases: &'static [&'static str],
    weights_bytes: u64,
    layers: u32,
    kv_heads: u32,
    head_dim: u32,
    max_context: u32,
    /// (window, pattern): see `ModelFacts::sliding_window`.
    sliding: (u32, u32),
    /// (experts, used per token).
    experts: (u32, u32),
    /// A BERT-family encoder: llama.cpp gives it no KV cache at all
    /// (`llama_model::create_memory` returns none for bert / nomic-bert).
    no_kv_cache: bool,
}

/// A dense decoder without sliding windows: the common case.
const fn dense(
    name: &'static str,
    aliases: &'static [&'static str],
    weights_bytes: u64,
    layers: u32,
    kv_heads: u32,
    head_dim: u32,
    max_context: u32,
) -> Entry {
    Entry {
        name,
        aliases,
        weights_bytes,
        layers,
        kv_heads,
        head_dim,
        max_context,
        sliding: (0, 0),
        experts: (0, 0),
        no_kv_cache: false,
    }
}

/// An embedding model (BERT family): no KV cache.
const fn encoder(
    name: &'static str,
    aliases: &'static [&'static str],
    weights_bytes: u64,
    layers: u32,
    heads: u32,
    head_dim: u32,
    max_context: u32,
) -> Entry {
    Entry {
        no_kv_cache: true,
        ..dense(
            name,
            aliases,
            weights_bytes,
            layers,
            heads,
            head_dim,
            max_context,
        )
    }
}

/// The catalogue, sorted by canonical name. GB below are 10^9 bytes.
const CATALOGUE: &[Entry] = &[
    // sentence-transformers/all-MiniLM-L6-v2 (bert): 6 layers, 12 heads, hidden 384
    // (head 32), 512 positions. ollama.com/library/all-minilm: 22m = latest, 46MB.
    encoder(
        "all-minilm:22m",
        &["all-minilm", "all-minilm:latest", "all-minilm:l6-v2"],
        46_000_000,
        6,
        12,
        32,
        512,
    ),
    // BAAI/bge-m3 (XLM-RoBERTa, `bert` in the GGUF): 24 layers, 16 heads, hidden 1024
    // (head 64), 8192 positions. ollama.com/library/bge-m3: 567m = latest, 1.2GB.
    encoder(
        "bge-m3:567m",
        &["bge-m3", "bge-m3:latest"],
        1_200_000_000,
        24,
        16,
        64,
        8192,
    ),
    // deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B (qwen2): 28 layers, 12 heads, 2 KV heads,
    // hidden 1536 (head 128), 131072. ollama.com/library/deepseek-r1: 1.5b 1.1GB.
    dense("deepseek-r1:1.5b", &[], 1_100_000_000, 28, 2, 128, 131_072),
    // deepseek-ai/DeepSeek-R1-Distill-Qwen-14B (qwen2): 48 layers, 40 heads, 8 KV, hidden
    // 5120 (head 128), 131072. 14b 9.0GB.
    dense("deepseek-r1:14b", &[], 9_000_000_000, 48, 8, 128, 131_072),
    // deepseek-ai/DeepSeek-R1-Distill-Qwen-32B (qwen2): 64 layers, 40 heads, 8 KV, hidden
    // 5120 (head 128), 131072. 32b 20GB.
    dense("deepseek-r1:32b", &[], 20_000_000_000, 64, 8, 128, 131_072),
    // deepseek-ai/DeepSeek-R1-Distill-Llama-70B (llama): 80 layers, 64 heads, 8 KV, hidden
    // 8192 (head 128), 131072. 70b 43GB.
    dense("deepseek-r1:70b", &[], 43_000_000_000, 80, 8, 128, 131_072),
    // deepseek-ai/DeepSeek-R1-Distill-Qwen-7B (qwen2): 28 layers, 28 heads, 4 KV, hidden
    // 3584 (head 128), 131072. 7b 4.7GB.
    dense("deepseek-r1:7b", &[], 4_700_000_000, 28, 4, 128, 131_072),
    // deepseek-ai/DeepSeek-R1-0528-Qwen3-8B (qwen3): 36 layers, 32 heads, 8 KV, head_dim
    // 128, 131072. ollama.com/library/deepseek-r1: 8b = latest since the 0528 update, 5.2GB.
    dense(
        "deepseek-r1:8b",
        &["deepseek-r1", "deepseek-r1:latest"],
        5_200_000_000,
        36,
        8,
        128,
        131_072,
    ),
    // gemma2:9b = gemma2:latest, Q4_0, digest ff02c3702f32, size 5443152417
    // (published /api/tags outputs). gemma2 GGUF: block_count 42, head_count 16,
    // head_count_kv 8, embedding_length 3584, attention.key_length 256 (so the
    // head is 256 wide, not 3584/16 = 224), context_length 8192. Its odd layers
    // slide over 4096 tokens, but Ollama (0.11) runs gemma2 on the llama.cpp
    // runner, whose cache gives every layer the whole context (Ollama's own
    // estimate says so: "we only have an optimized implementation in the
    // Ollama engine"): no sliding window here.
    dense(
        "gemma2:9b",
        &["gemma2", "gemma2:latest"],
        5_443_152_417,
        42,
        8,
        256,
        8192,
    ),
    // google/gemma-3-12b-it (gemma3, Ollama's engine): 48 layers, 16 heads, 8 KV,
    // head_dim 256, sliding_window 1024, every 6th layer global, 131072.
    // ollama.com/library/gemma3: 12b 8.1GB.
    Entry {
        sliding: (1024, 6),
        ..dense("gemma3:12b", &[], 8_100_000_000, 48, 8, 256, 131_072)
    },
    // google/gemma-3-1b-it: 26 layers, 4 heads, 1 KV, head_dim 256, sliding_window 512,
    // 32768. 1b 815MB.
    Entry {
        sliding: (512, 6),
        ..dense("gemma3:1b", &[], 815_000_000, 26, 1, 256, 32_768)
    },
    // google/gemma-3-27b-it: 62 layers, 32 heads, 16 KV, head_dim 128, sliding_window
    // 1024, 131072. 27b 17GB.
    Entry {
        sliding: (1024, 6),
        ..dense("gemma3:27b", &[], 17_000_000_000, 62, 16, 128, 131_072)
    },
    // google/gemma-3-4b-it: 34 layers, 8 heads, 4 KV, head_dim 256, sliding_window 1024,
    // 131072. gemma3 = gemma3:latest = 4b: size 3338801804, digest a2af6cc3eb7f (a
    // published /api/tags output).
    Entry {
        sliding: (1024, 6),
        ..dense(
            "gemma3:4b",
            &["gemma3", "gemma3:latest"],
            3_338_801_804,
            34,
            4,
            256,
            131_072,
        )
    },
    // openai/gpt-oss-120b (gptoss): 36 layers, 64 heads, 8 KV, head_dim 64, 128 experts,
    // 4 per token, even layers slide over 128 tokens, 131072. Ollama's engine keeps 4096
    // tokens in the sliding layers' cache (kvcache.NewSWAMemCache(window, 4096)), so the
    // window here is 4096. MXFP4 experts. ollama.com/library/gpt-oss: 120b 65GB.
    Entry {
        sliding: (4096, 2),
        experts: (128, 4),
        ..dense("gpt-oss:120b", &[], 65_000_000_000, 36, 8, 64, 131_072)
    },
    // openai/gpt-oss-20b: 24 layers, 64 heads, 8 KV, head_dim 64, 32 experts, 4 per
    // token, as above. 20b = latest, 14GB.
    Entry {
        sliding: (4096, 2),
        experts: (32, 4),
        ..dense(
            "gpt-oss:20b",
            &["gpt-oss", "gpt-oss:latest"],
            14_000_000_000,
            24,
            8,
            64,
            131_072,
        )
    },
    // llama3.1:70b, Q4_K_M. Published /api/tags outputs for the 3.1 70B tag
    // were not found; 42520413916 is Ollama's size for llama3.3:70b Q4_K_M
    // (digest a6eb4748fd29), the same Llama-3 70B architecture and quantization;
    // Hugging Face lists Meta-Llama-3.1-70B-Instruct-Q4_K_M.gguf at 42.5 GB,
    // ollama.com/library/llama3.1 lists 70b at 43GB. GGUF: block_count 80,
    // head_count 64, head_count_kv 8, embedding_length 8192, context 131072.
    dense("llama3.1:70b", &[], 42_520_413_916, 80, 8, 128, 131_072),
    // llama3.1:8b = llama3.1:latest, Q4_K_M, digest 46e0c10c039e, size
    // 4920753328 (= 4.58 GiB; published /api/tags outputs). GGUF: block_count
    // 32, head_count 32, head_count_kv 8, embedding_length 4096, context 131072.
    dense(
        "llama3.1:8b",
        &["llama3.1", "llama3.1:latest"],
        4_920_753_328,
        32,
        8,
        128,
        131_072,
    ),
    // meta-llama/Llama-3.2-1B-Instruct: 16 layers, 32 heads, 8 KV, hidden 2048 (head 64),
    // 131072. ollama.com/library/llama3.2: 1b 1.3GB.
    dense("llama3.2:1b", &[], 1_300_000_000, 16, 8, 64, 131_072),
    // meta-llama/Llama-3.2-3B-Instruct: 28 layers, 24 heads, 8 KV, hidden 3072 (head 128),
    // 131072. 3b = latest, 2.0GB.
    dense(
        "llama3.2:3b",
        &["llama3.2", "llama3.2:latest"],
        2_000_000_000,
        28,
        8,
        128,
        131_072,
    ),
    // meta-llama/Llama-3.3-70B-Instruct: 80 layers, 64 heads, 8 KV, hidden 8192 (head
    // 128), 131072. llama3.3 = 70b = latest, Q4_K_M, digest a6eb4748fd29, 42520413916.
    dense(
        "llama3.3:70b",
        &["llama3.3", "llama3.3:latest"],
        42_520_413_916,
        80,
        8,
        128,
        131_072,
    ),
    // mistralai/Mistral-Small-24B-Instruct-2501 (llama in the GGUF): 40 layers, 32 heads,
    // 8 KV, head_dim 128, 32768. ollama.com/library/mistral-small: 24b = latest, 14GB.
    dense(
        "mistral-small:24b",
        &["mistral-small", "mistral-small:latest"],
        14_000_000_000,
        40,
        8,
        128,
        32_768,
    ),
    // mistral:7b = mistral:latest (v0.3), digest 6577803aa9a0, size 4372824384
    // (published /api/tags outputs). GGUF: block_count 32, head_count 32,
    // head_count_kv 8, embedding_length 4096, context_length 32768.
    dense(
        "mistral:7b",
        &["mistral", "mistral:latest"],
        4_372_824_384,
        32,
        8,
        128,
        32_768,
    ),
    // mixedbread-ai/mxbai-embed-large-v1 (bert): 24 layers, 16 heads, hidden 1024 (head
    // 64), 512 positions. ollama.com/library/mxbai-embed-large: 335m = latest, 670MB.
    encoder(
        "mxbai-embed-large:335m",
        &[
            "mxbai-embed-large",
            "mxbai-embed-large:latest",
            "mxbai-embed-large:v1",
        ],
        670_000_000,
        24,
        16,
        64,
        512,
    ),
    // nomic-embed-text:latest (the only tag; v1.5), F16, digest 0a109f422b47,
    // size 274302450. nomic-bert GGUF: block_count 12, head_count 12 (no
    // head_count_kv), embedding_length 768, context_length 2048 (as Ollama's
    // `ollama show` reports it, not the 8192 of the upstream card).
    encoder(
        "nomic-embed-text:latest",
        &["nomic-embed-text"],
        274_302_450,
        12,
        12,
        64,
        2048,
    ),
    // phi3:mini = phi3:latest = phi3:3.8b (Phi-3 Mini 4K), Q4_0, digest
    // 4f2222927938, size 2176178913. ollama.com/library/phi3: "4k: ollama run
    // phi3:mini". phi3 GGUF: block_count 32, head_count 32, head_count_kv 32,
    // embedding_length 3072 (head 96), context_length 4096. (llama.cpp gives it
    // a 2047-token window, but its cache holds the whole context.)
    dense(
        "phi3:mini",
        &["phi3", "phi3:latest", "phi3:3.8b"],
        2_176_178_913,
        32,
        32,
        96,
        4096,
    ),
    // microsoft/phi-4 (phi3 in the GGUF): 40 layers, 40 heads, 10 KV, hidden 5120 (head
    // 128), 16384. ollama.com/library/phi4: 14b = latest, 9.1GB.
    dense(
        "phi4:14b",
        &["phi4", "phi4:latest"],
        9_100_000_000,
        40,
        10,
        128,
        16_384,
    ),
    // Qwen/Qwen2.5-Coder-1.5B-Instruct (qwen2): 28 layers, 12 heads, 2 KV, hidden 1536
    // (head 128), 32768. ollama.com/library/qwen2.5-coder: 1.5b 986MB.
    dense("qwen2.5-coder:1.5b", &[], 986_000_000, 28, 2, 128, 32_768),
    // Qwen/Qwen2.5-Coder-14B-Instruct: 48 layers, 40 heads, 8 KV, hidden 5120, 32768. 9.0GB.
    dense("qwen2.5-coder:14b", &[], 9_000_000_000, 48, 8, 128, 32_768),
    // Qwen/Qwen2.5-Coder-32B-Instruct: 64 layers, 40 heads, 8 KV, hidden 5120, 32768. 20GB.
    dense("qwen2.5-coder:32b", &[], 20_000_000_000, 64, 8, 128, 32_768),
    // Qwen/Qwen2.5-Coder-7B-Instruct: 28 layers, 28 heads, 4 KV, hidden 3584, 32768.
    // 7b = latest, 4.7GB.
    dense(
        "qwen2.5-coder:7b",
        &["qwen2.5-coder", "qwen2.5-coder:latest"],
        4_700_000_000,
        28,
        4,
        128,
        32_768,
    ),
    // qwen2.5:14b, Q4_K_M, digest 7cdf5a0187d5, size 8988124069. qwen2 GGUF:
    // block_count 48, head_count 40, head_count_kv 8, embedding_length 5120,
    // context_length 32768.
    dense("qwen2.5:14b", &[], 8_988_124_069, 48, 8, 128, 32_768),
    // qwen2.5:32b, Q4_K_M, digest 9f13ba1299af, size 19851349669. qwen2 GGUF:
    // block_count 64, head_count 40, head_count_kv 8, embedding_length 5120,
    // context_length 32768.
    dense("qwen2.5:32b", &[], 19_851_349_669, 64, 8, 128, 32_768),
    // qwen2.5:7b = qwen2.5:latest, Q4_K_M, digest 845dbda0ea48, size
    // 4683087332. qwen2 GGUF: block_count 28, head_count 28, head_count_kv 4,
    // embedding_length 3584, context_length 32768.
    dense(
        "qwen2.5:7b",
        &["qwen2.5", "qwen2.5:latest"],
        4_683_087_332,
        28,
        4,
        128,
        32_768,
    ),
    // Qwen/Qwen3-0.6B (qwen3): 28 layers, 16 heads, 8 KV, head_dim 128, 40960 (the
    // context Ollama's GGUF carries for the April 2025 Qwen3 release).
    // ollama.com/library/qwen3: 0.6b 523MB.
    dense("qwen3:0.6b", &[], 523_000_000, 28, 8, 128, 40_960),
    // Qwen/Qwen3-1.7B: 28 layers, 16 heads, 8 KV, head_dim 128, 40960. 1.4GB.
    dense("qwen3:1.7b", &[], 1_400_000_000, 28, 8, 128, 40_960),
    // Qwen/Qwen3-14B: 40 layers, 40 heads, 8 KV, head_dim 128, 40960. 9.3GB.
    dense("qwen3:14b", &[], 9_300_000_000, 40, 8, 128, 40_960),
    // Qwen/Qwen3-235B-A22B (qwen3moe): 94 layers, 64 heads, 4 KV, head_dim 128, 128
    // experts, 8 per token, 40960. 235b 142GB.
    Entry {
        experts: (128, 8),
        ..dense("qwen3:235b", &[], 142_000_000_000, 94, 4, 128, 40_960)
    },
    // Qwen/Qwen3-30B-A3B (qwen3moe): 48 layers, 32 heads, 4 KV, head_dim 128, 128
    // experts, 8 per token, 40960. 30b 19GB. (The 2507 updates of the 4b, 30b and 235b
    // carry 262144: /api/show of the pulled model says which one is local.)
    Entry {
        experts: (128, 8),
        ..dense("qwen3:30b", &[], 19_000_000_000, 48, 4, 128, 40_960)
    },
    // Qwen/Qwen3-32B: 64 layers, 64 heads, 8 KV, head_dim 128, 40960. 20GB.
    dense("qwen3:32b", &[], 20_000_000_000, 64, 8, 128, 40_960),
    // Qwen/Qwen3-4B: 36 layers, 32 heads, 8 KV, head_dim 128, 40960. 2.6GB.
    dense("qwen3:4b", &[], 2_600_000_000, 36, 8, 128, 40_960),
    // Qwen/Qwen3-8B: 36 layers, 32 heads, 8 KV, head_dim 128, 40960. 8b = latest, 5.2GB.
    dense(
        "qwen3:8b",
        &["qwen3", "qwen3:latest"],
        5_200_000_000,
        36,
        8,
        128,
        40_960,
    ),
];

impl Entry {
    fn facts(&self) -> ModelFacts {
        ModelFacts {
            name: self.name.to_string(),
            weights_bytes: self.weights_bytes,
            layers: self.layers,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            max_context: self.max_context,
            kv_heads_per_layer: if self.no_kv_cache {
                vec![0; self.layers as usize]
            } else {
                Vec::new()
            },
            sliding_window: self.sliding.0,
            sliding_window_pattern: self.sliding.1,
            expert_count: self.experts.0,
            expert_used_count: self.experts.1,
        }
    }
}

/// Resolve a model name to its catalogue facts. Accepts the canonical
/// `name:tag`, `name:latest` where that is the default tag, the bare `name`,
/// and the `library/` namespace prefix Ollama also accepts; matching ignores
/// ASCII case and surrounding whitespace. The returned `name` is canonical.
pub fn lookup(name: &str) -> Option<ModelFacts> {
    let wanted = name.trim().to_ascii_lowercase();
    let wanted = wanted.strip_prefix("library/").unwrap_or(&wanted);
    CATALOGUE
        .iter()
        .find(|e| e.name == wanted || e.aliases.contains(&wanted))
        .map(Entry::facts)
}

/// Canonical names in the catalogue, sorted; for error messages that list the
/// allowed values.
pub fn names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = CATALOGUE.iter().map(|e| e.name).collect();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sorted_unique_and_cover_the_issue_list() {
        let n = names();
        let mut sorted = n.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(n, sorted);
        for want in [
            "llama3.1:8b",
            "llama3.1:70b",
            "qwen2.5:7b",
            "qwen2.5:14b",
            "qwen2.5:32b",
            "mistral:7b",
            "gemma2:9b",
            "phi3:mini",
            "nomic-embed-text:latest",
            // The families people run now (issue 11).
            "llama3.2:3b",
            "llama3.3:70b",
            "qwen3:8b",
            "qwen3:30b",
            "qwen2.5-coder:7b",
            "gemma3:12b",
            "phi4:14b",
            "mistral-small:24b",
            "deepseek-r1:8b",
            "gpt-oss:20b",
            "mxbai-embed-large:335m",
            "bge-m3:567m",
            "all-minilm:22m",
        ] {
            assert!(n.contains(&want), "{want} missing");
        }
    }

    #[test]
    fn the_names_people_type_resolve() {
        // What select_profile refused as "not in the catalogue" before.
        for (typed, canonical) in [
            ("qwen3:8b", "qwen3:8b"),
            ("qwen3", "qwen3:8b"),
            ("gemma3:12b", "gemma3:12b"),
            ("gemma3", "gemma3:4b"),
            ("llama3.2:3b", "llama3.2:3b"),
            ("llama3.2", "llama3.2:3b"),
            ("gpt-oss:20b", "gpt-oss:20b"),
            ("gpt-oss", "gpt-oss:20b"),
            ("deepseek-r1:8b", "deepseek-r1:8b"),
            ("deepseek-r1", "deepseek-r1:8b"),
            ("qwen2.5-coder", "qwen2.5-coder:7b"),
            ("phi4", "phi4:14b"),
            ("mistral-small", "mistral-small:24b"),
            ("llama3.3", "llama3.3:70b"),
            ("mxbai-embed-large", "mxbai-embed-large:335m"),
        ] {
            assert_eq!(
                lookup(typed).map(|f| f.name).as_deref(),
                Some(canonical),
                "{typed}"
            );
        }
    }

    #[test]
    fn structure_facts_of_the_new_families() {
        let g = lookup("gemma3:12b").expect("gemma3");
        assert_eq!((g.sliding_window, g.sliding_window_pattern), (1024, 6));
        assert_eq!((g.layers, g.kv_heads, g.head_dim), (48, 8, 256));
        let moe = lookup("qwen3:30b").expect("qwen3 moe");
        assert_eq!((moe.expert_count, moe.expert_used_count), (128, 8));
        assert_eq!(moe.sliding_window, 0);
        let oss = lookup("gpt-oss:20b").expect("gpt-oss");
        assert_eq!((oss.expert_count, oss.expert_used_count), (32, 4));
        assert_eq!((oss.sliding_window, oss.sliding_window_pattern), (4096, 2));
        // gemma2 slides too, but Ollama's llama.cpp runner caches the whole context.
        assert_eq!(lookup("gemma2:9b").expect("gemma2").sliding_window, 0);
        // Encoders have no KV cache: every layer's KV heads are 0.
        let e = lookup("mxbai-embed-large").expect("mxbai");
        assert_eq!(e.kv_heads_per_layer, vec![0; 24]);
        assert!(lookup("qwen3:8b").expect("q").kv_heads_per_layer.is_empty());
    }

    #[test]
    fn catalogue_table_is_in_name_order() {
        let raw: Vec<&str> = CATALOGUE.iter().map(|e| e.name).collect();
        assert_eq!(raw, names());
    }

    #[test]
    fn aliases_resolve_to_the_canonical_entry() {
        for (alias, canonical) in [
            ("llama3.1", "llama3.1:8b"),
            ("llama3.1:latest", "llama3.1:8b"),
            ("LLAMA3.1:8B", "llama3.1:8b"),
            (" library/llama3.1:8b ", "llama3.1:8b"),
            ("qwen2.5", "qwen2.5:7b"),
            ("qwen2.5:latest", "qwen2.5:7b"),
            ("mistral", "mistral:7b"),
            ("mistral:latest", "mistral:7b"),
            ("gemma2", "gemma2:9b"),
            ("phi3", "phi3:mini"),
            ("phi3:latest", "phi3:mini"),
            ("nomic-embed-text", "nomic-embed-text:latest"),
        ] {
            let got = lookup(alias).map(|f| f.name);
            assert_eq!(got.as_deref(), Some(canonical), "alias {alias}");
        }
    }

    #[test]
    fn unknown_names_and_non_default_latest_are_rejected() {
        assert_eq!(lookup("llama3.1:405b"), None);
        assert_eq!(lookup("qwen2.5:72b"), None);
        assert_eq!(lookup(""), None);
        assert_eq!(lookup("llama3"), None);
    }

    #[test]
    fn every_alias_is_unique_across_entries() {
        let mut all: Vec<&str> = CATALOGUE
            .iter()
            .flat_map(|e| std::iter::once(e.name).chain(e.aliases.iter().copied()))
            .collect();
        let before = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(before, all.len());
    }

    #[test]
    fn llama31_8b_facts_match_the_gguf() {
        let f = lookup("llama3.1:8b").expect("in catalogue");
        assert_eq!(
            f,
            ModelFacts {
                name: "llama3.1:8b".into(),
                weights_bytes: 4_920_753_328,
                layers: 32,
                kv_heads: 8,
                head_dim: 128,
                max_context: 131_072,
                ..ModelFacts::default()
            }
        );
    }

    #[test]
    fn gemma2_uses_key_length_not_embedding_over_heads() {
        let f = lookup("gemma2:9b").expect("in catalogue");
        assert_eq!(f.head_dim, 256);
        assert_ne!(f.head_dim, 3584 / 16);
    }

    #[test]
    fn facts_are_plausible() {
        for e in CATALOGUE {
            assert!(
                e.layers > 0 && e.kv_heads > 0 && e.head_dim > 0,
                "{}",
                e.name
            );
            assert!(e.max_context >= 512, "{}", e.name);
            assert!(e.weights_bytes > 40_000_000, "{}", e.name);
            assert!(
                e.sliding.0 == 0 || e.sliding.0 < e.max_context,
                "{}",
                e.name
            );
            assert!(e.experts.1 <= e.experts.0, "{}", e.name);
        }
    }
}
