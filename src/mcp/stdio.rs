//! MCP over stdio: stdout carries only JSON-RPC; logs go to stderr.
use std::sync::Arc;

use rmcp::ServiceExt;

use crate::app::App;
use crate::mcp::StackpilotServer;

pub async fn serve(app: Arc<App>) -> anyhow::Result<()> {
    let service = StackpilotServer::new(app)
        .serve(rmcp::transport::stdio())
        .await?;
    service.waiting().await?;
    Ok(())
}
