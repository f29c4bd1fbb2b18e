//! Ollama models: names, the catalogue of known models, and the memory model
//! that tells whether a model fits (weights, KV cache, overhead).
pub mod catalogue;
pub mod kv_effect;
pub mod memory;
pub mod name;
