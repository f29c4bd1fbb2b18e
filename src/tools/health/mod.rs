//! Whether the stack works, and putting it right.
// The file is named for the tool, as every tool file is.
#[allow(clippy::module_inception)]
pub mod health;
pub mod recover;
