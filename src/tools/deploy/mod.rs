//! Rolling out new images and back: deploy, rollback, and the one-service
//! rollout both use (rollout.rs).
// A family is named after its main tool; one file per tool.
#[allow(clippy::module_inception)]
pub mod deploy;
pub mod rollback;
pub mod rollout;
