//! Ollama models: names, the catalogue of known models, facts from a model's
//! own metadata (GGUF header or /api/show), the memory model that tells
//! whether a model fits (weights, KV cache, overhead), and what llama.cpp
//! logs when it allocates the KV cache.
pub mod catalogue;
pub mod facts;
pub mod gguf;
pub mod kv_effect;
pub mod kv_log;
pub mod memory;
pub mod name;
