//! Ollama models and the KV cache.
pub mod endpoint;
pub mod list_models;
pub mod pull_model;
pub mod remove_model;
pub mod set_kv_cache;
