//! Adapters: the only code that touches the outside world.
pub mod backup_store;
pub mod compose;
pub mod docker;
pub mod docker_exec;
pub mod env_file;
pub mod hardware;
pub mod runtime_probe;
pub mod store;
