//! Whether the stack works, and putting it right.
pub mod health;
pub mod recover;
