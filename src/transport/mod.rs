//! Transports: stdio and Streamable HTTP, both serving the same handler.
pub mod http;
pub mod stdio;
