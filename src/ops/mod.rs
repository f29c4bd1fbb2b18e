//! Operations: one module per tool, plain async Rust. Input -> plan -> apply -> report.
pub mod compose_down;
pub mod compose_up;
pub mod detect_hardware;
pub mod hardware_types;
pub mod health;
pub mod health_rules;
pub mod health_types;
pub mod memory_model;
pub mod model_catalogue;
pub mod recover;
pub mod select_profile;
pub mod stack_report;
pub mod stack_status;
