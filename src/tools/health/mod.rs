//! Whether the stack works, and putting it right.
// A family is named after its main tool; one file per tool.
#[allow(clippy::module_inception)]
pub mod health;
pub mod recover;
