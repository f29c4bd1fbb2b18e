//! The stack's lifecycle: up, down, status.
pub mod compose_down;
pub mod compose_up;
pub mod report;
pub mod stack_status;
