//! Operations: one module per tool, plain async Rust. Input -> plan -> apply -> report.
pub mod detect_hardware;
pub mod hardware_types;
pub mod kv_effect;
pub mod list_models;
pub mod memory_model;
pub mod model_catalogue;
pub mod model_name;
pub mod pull_model;
pub mod remove_model;
pub mod select_profile;
