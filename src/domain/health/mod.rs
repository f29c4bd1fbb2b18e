//! Health: the report types and the rules that turn observations into
//! verdicts (missing, stopped, unhealthy, degraded, healthy).
pub mod rules;
pub mod types;
