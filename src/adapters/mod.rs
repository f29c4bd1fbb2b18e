//! Adapters: the only code that touches the outside world.
pub mod docker;
pub mod env_file;
pub mod hardware;
pub mod ollama;
pub mod runtime_probe;
pub mod store;
