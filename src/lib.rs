//! stackpilot: an MCP server that provisions and operates an LLM application
//! stack (Ollama, an API, Qdrant, Postgres, MongoDB, Redis) on Docker Compose
//! and Kubernetes.
//!
//! The folders are the architecture (README, "Layout"); data flows one way:
//! - `domain`: types and pure logic, no I/O; imports nothing else of the crate;
//! - `engine`: the port through which a tool reaches the running stack, and
//!   its implementations (`engine::compose`); imports only `domain`;
//! - `adapters`: everything else outside the process (Ollama's API, hardware
//!   probes, the .env file, the state dir, host services); imports only `domain`;
//! - `guard`: one call as a tool sees it, plan/confirm/apply, tokens, the lock;
//! - `app`: what every call shares (the stack, the mode, the engine, caches);
//! - `tools`: one folder per family, one file per tool;
//! - `mcp` and `cli`: the two faces; they reach tools only through the tool table.
// ToolError carries the evidence an agent needs (field, allowed values, output
// tails); it is returned once per call, so its size does not matter.
#![allow(clippy::result_large_err)]

pub mod adapters;
pub mod app;
pub mod cli;
pub mod domain;
pub mod engine;
pub mod guard;
pub mod mcp;
pub mod tools;

#[cfg(test)]
mod testing;
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
