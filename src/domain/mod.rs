//! The domain: types and pure logic with no I/O. Nothing here reads a file,
//! a socket, a clock or the environment, and nothing here imports another
//! part of the crate, so every rule can be tested with plain values.
pub mod backup_set;
pub mod deploy;
pub mod env;
pub mod error;
pub mod hardware;
pub mod health;
pub mod instance;
pub mod interpolate;
pub mod kubernetes;
pub mod logs;
pub mod models;
pub mod plan;
pub mod redact;
pub mod redis;
pub mod secrets;
pub mod stack;
pub mod stack_model;
pub mod time;
