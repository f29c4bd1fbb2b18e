//! Operations: one module per tool, plain async Rust. Input -> plan -> apply -> report.
pub mod backup;
pub mod backup_engines;
pub mod backup_set;
pub mod detect_hardware;
pub mod hardware_types;
pub mod list_backups;
pub mod memory_model;
pub mod model_catalogue;
pub mod prune_backups;
pub mod restore;
pub mod select_profile;
pub mod verify_backup;
