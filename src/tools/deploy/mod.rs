//! Rolling out new images and back: deploy, rollback, and the one-service
//! rollout both use (rollout.rs).
pub mod deploy;
pub mod rollback;
pub mod rollout;
