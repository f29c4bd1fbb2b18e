//! Adapters: everything outside the process that is not the engine: Ollama's
//! HTTP API, hardware probes, the .env file, the state dir (locks, audit,
//! keys, spent tokens), backup files, host services (systemd, launchd), the
//! clock and the metrics registry. Adapters import only `domain`.
pub mod backup_store;
pub mod clock;
pub mod env_file;
pub mod files;
pub mod hardware;
pub mod host_service;
pub mod metrics;
pub mod net_probe;
pub mod ollama;
pub mod ollama_probe;
pub mod render_dir;
pub mod stack_dir;
pub mod store;
