//! Adapters: the only code that touches the outside world.
pub mod backup_store;
pub mod compose;
pub mod compose_cache;
pub mod docker;
pub mod docker_exec;
pub mod docker_inspect;
pub mod env_file;
pub mod hardware;
pub mod host_service;
pub mod net_probe;
pub mod ollama;
pub mod runtime_probe;
pub mod store;
