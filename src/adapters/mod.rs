//! Adapters: everything outside the process that is not the engine: Ollama's
//! HTTP API, GGUF files' headers, hardware probes, the .env file, the state dir (locks, audit,
//! keys, spent tokens), backup files, host services (systemd, launchd), the
//! clock and the metrics registry. Adapters import only `domain`.
pub mod backup_store;
pub mod clock;
pub mod deploy_record;
pub mod env_file;
pub mod files;
pub mod gguf_file;
pub mod hardware;
pub mod host_service;
pub mod logging;
pub mod metrics;
pub mod net_probe;
pub mod ollama;
pub mod ollama_probe;
pub mod pull_parts;
pub mod render_dir;
pub mod stack_dir;
pub mod store;
