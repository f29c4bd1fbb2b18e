//! The tools: one folder per family, one file per tool that reads as its
//! steps (input -> plan -> guard -> apply -> report), plus the family's own
//! helpers. `def` is the tool definition type every tool file fills in;
//! `list` is the one place that names every tool.
pub mod backup;
pub mod credentials;
pub mod def;
pub mod deploy;
pub mod hardware;
pub mod health;
pub mod kubernetes;
pub mod list;
pub mod models;
pub mod ops;
pub mod schema;
pub mod stack;
