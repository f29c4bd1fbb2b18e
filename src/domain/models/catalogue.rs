//! The built-in model catalogue: the GGUF facts `select_profile` needs to size
//! a model's memory without asking Ollama (which may not be running yet).
//!
//! Each entry is the model's Ollama default tag. The architecture figures are
//! the GGUF metadata keys llama.cpp reads to allocate the KV cache:
//! `layers` = `<arch>.block_count`, `kv_heads` = `<arch>.attention.head_count_kv`
//! (equal to `head_count` where the key is absent), `head_dim` =
//! `<arch>.attention.key_length` where set, else `embedding_length / head_count`,
//! `max_context` = `<arch>.context_length`. `weights_bytes` is the `size` that
//! Ollama's `GET /api/tags` reports for the pulled default tag (the GGUF blob
//! plus the small template/licence/params layers), as observed in published
//! `/api/tags` outputs with the digest noted per entry.
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the memory model needs to know about one model. Sizes are bytes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ModelFacts {
    /// Canonical Ollama name with tag, e.g. `llama3.1:8b`. For explicit facts,
    /// any label the caller chooses.
    pub name: String,
    /// Size of the model's weights in bytes (Ollama's `size` for the tag;
    /// Q4_K_M or Q4_0 4-bit weights for the default tags).
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
}

/// The catalogue, sorted by canonical name.
///
/// Sources for `weights_bytes` (Ollama `/api/tags` `size`, published outputs)
/// and for the architecture (GGUF metadata as shown by `ollama show` and the
/// models' Hugging Face configs):
const CATALOGUE: &[Entry] = &[
    // gemma2:9b = gemma2:latest, Q4_0, digest ff02c3702f32, size 5443152417
    // (published /api/tags outputs). gemma2 GGUF: block_count 42, head_count 16,
    // head_count_kv 8, embedding_length 3584, attention.key_length 256 (so the
    // head is 256 wide, not 3584/16 = 224), context_length 8192.
    Entry {
        name: "gemma2:9b",
        aliases: &["gemma2", "gemma2:latest"],
        weights_bytes: 5_443_152_417,
        layers: 42,
        kv_heads: 8,
        head_dim: 256,
        max_context: 8192,
    },
    // llama3.1:70b, Q4_K_M. Published /api/tags outputs for the 3.1 70B tag
    // were not found; 42520413916 is Ollama's size for llama3.3:70b Q4_K_M
    // (digest a6eb4748fd29), the same Llama-3 70B architecture and quantization;
    // Hugging Face lists Meta-Llama-3.1-70B-Instruct-Q4_K_M.gguf at 42.5 GB,
    // ollama.com/library/llama3.1 lists 70b at 43GB. GGUF: block_count 80,
    // head_count 64, head_count_kv 8, embedding_length 8192, context 131072.
    Entry {
        name: "llama3.1:70b",
        aliases: &[],
        weights_bytes: 42_520_413_916,
        layers: 80,
        kv_heads: 8,
        head_dim: 128,
        max_context: 131_072,
    },
    // llama3.1:8b = llama3.1:latest, Q4_K_M, digest 46e0c10c039e, size
    // 4920753328 (= 4.58 GiB; published /api/tags outputs). GGUF: block_count
    // 32, head_count 32, head_count_kv 8, embedding_length 4096, context 131072.
    Entry {
        name: "llama3.1:8b",
        aliases: &["llama3.1", "llama3.1:latest"],
        weights_bytes: 4_920_753_328,
        layers: 32,
        kv_heads: 8,
        head_dim: 128,
        max_context: 131_072,
    },
    // mistral:7b = mistral:latest (v0.3), digest 6577803aa9a0, size 4372824384
    // (published /api/tags outputs). GGUF: block_count 32, head_count 32,
    // head_count_kv 8, embedding_length 4096, context_length 32768.
    Entry {
        name: "mistral:7b",
        aliases: &["mistral", "mistral:latest"],
        weights_bytes: 4_372_824_384,
        layers: 32,
        kv_heads: 8,
        head_dim: 128,
        max_context: 32_768,
    },
    // nomic-embed-text:latest (the only tag; v1.5), F16, digest 0a109f422b47,
    // size 274302450. nomic-bert GGUF: block_count 12, head_count 12 (no
    // head_count_kv), embedding_length 768, context_length 2048 (as Ollama's
    // `ollama show` reports it, not the 8192 of the upstream card).
    Entry {
        name: "nomic-embed-text:latest",
        aliases: &["nomic-embed-text"],
        weights_bytes: 274_302_450,
        layers: 12,
        kv_heads: 12,
        head_dim: 64,
        max_context: 2048,
    },
    // phi3:mini = phi3:latest = phi3:3.8b (Phi-3 Mini 4K), Q4_0, digest
    // 4f2222927938, size 2176178913. ollama.com/library/phi3: "4k: ollama run
    // phi3:mini". phi3 GGUF: block_count 32, head_count 32, head_count_kv 32,
    // embedding_length 3072 (head 96), context_length 4096.
    Entry {
        name: "phi3:mini",
        aliases: &["phi3", "phi3:latest", "phi3:3.8b"],
        weights_bytes: 2_176_178_913,
        layers: 32,
        kv_heads: 32,
        head_dim: 96,
        max_context: 4096,
    },
    // qwen2.5:14b, Q4_K_M, digest 7cdf5a0187d5, size 8988124069. qwen2 GGUF:
    // block_count 48, head_count 40, head_count_kv 8, embedding_length 5120,
    // context_length 32768.
    Entry {
        name: "qwen2.5:14b",
        aliases: &[],
        weights_bytes: 8_988_124_069,
        layers: 48,
        kv_heads: 8,
        head_dim: 128,
        max_context: 32_768,
    },
    // qwen2.5:32b, Q4_K_M, digest 9f13ba1299af, size 19851349669. qwen2 GGUF:
    // block_count 64, head_count 40, head_count_kv 8, embedding_length 5120,
    // context_length 32768.
    Entry {
        name: "qwen2.5:32b",
        aliases: &[],
        weights_bytes: 19_851_349_669,
        layers: 64,
        kv_heads: 8,
        head_dim: 128,
        max_context: 32_768,
    },
    // qwen2.5:7b = qwen2.5:latest, Q4_K_M, digest 845dbda0ea48, size
    // 4683087332. qwen2 GGUF: block_count 28, head_count 28, head_count_kv 4,
    // embedding_length 3584, context_length 32768.
    Entry {
        name: "qwen2.5:7b",
        aliases: &["qwen2.5", "qwen2.5:latest"],
        weights_bytes: 4_683_087_332,
        layers: 28,
        kv_heads: 4,
        head_dim: 128,
        max_context: 32_768,
    },
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
        ] {
            assert!(n.contains(&want), "{want} missing");
        }
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
            assert!(e.max_context >= 2048, "{}", e.name);
            assert!(e.weights_bytes > 100_000_000, "{}", e.name);
        }
    }
}
