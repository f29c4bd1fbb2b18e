//! stackpilot: an MCP server that provisions and operates a local LLM stack
//! (Ollama, an API, Qdrant, Postgres, MongoDB) on Docker Compose.
//!
//! Layers (see design.md): `transport` (stdio, HTTP) and `cli` are faces;
//! `server` is the MCP face (routing, confirmation, progress, audit); `ops`
//! holds one module per tool; `adapters` are the only code touching the world.
// ToolError carries the evidence an agent needs (field, allowed values, output
// tails); it is returned once per call, so its size does not matter.
#![allow(clippy::result_large_err)]

pub mod adapters;
pub mod app;
pub mod call;
pub mod cli;
pub mod clock;
pub mod error;
pub mod guard;
pub mod ops;
pub mod plan;
pub mod redact;
pub mod registry;
pub mod server;
pub mod stack;
pub mod transport;

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
