//! MCP over stdio: stdout carries only JSON-RPC; logs go to stderr.
//!
//! Between the process's stdin/stdout and rmcp sits the JSON-RPC edge
//! (`jsonrpc::check`): each line is checked, well-formed ones go on to rmcp
//! through an in-memory pipe, malformed ones are answered here (-32700,
//! -32600, -32602) and never reach it. Replies from both sides are written
//! to stdout whole lines at a time, so they never interleave.
use std::sync::Arc;

use rmcp::ServiceExt;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::app::App;
use crate::mcp::jsonrpc::{self, Frame};
use crate::mcp::StackpilotServer;

/// The longest line accepted (the HTTP transport's default body limit).
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// Buffer of each in-memory pipe between the edge and rmcp.
const PIPE_BYTES: usize = 256 * 1024;

pub async fn serve(app: Arc<App>) -> anyhow::Result<()> {
    serve_on(app, tokio::io::stdin(), tokio::io::stdout()).await
}

/// Serves MCP on any byte streams (stdin/stdout in production; tests use pipes).
pub async fn serve_on<R, W>(app: Arc<App>, input: R, output: W) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (to_rmcp, rmcp_in) = tokio::io::duplex(PIPE_BYTES);
    let (rmcp_out, from_rmcp) = tokio::io::duplex(PIPE_BYTES);
    let (replies_tx, replies_rx) = mpsc::channel::<String>(64);
    let reader = tokio::spawn(read_frames(input, to_rmcp, replies_tx));
    let writer = tokio::spawn(write_lines(from_rmcp, replies_rx, output));
    let service = StackpilotServer::new(app)
        .serve((rmcp_in, rmcp_out))
        .await?;
    let result = service.waiting().await;
    reader.abort();
    // Let the last replies out before returning.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
    result?;
    Ok(())
}

/// Reads lines from the client, checks each, forwards or answers it.
async fn read_frames<R, W>(input: R, mut to_rmcp: W, replies: mpsc::Sender<String>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut input = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Bounded: a line past the limit is read to its end and refused.
        let mut too_long = false;
        loop {
            let buf = match input.fill_buf().await {
                Ok(b) => b,
                Err(_) => return,
            };
            if buf.is_empty() {
                if line.is_empty() {
                    return; // EOF: rmcp sees its input close and ends the session
                }
                break;
            }
            let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (&buf[..=i], true),
                None => (buf, false),
            };
            let n = chunk.len();
            if line.len() + n <= MAX_LINE_BYTES {
                line.extend_from_slice(chunk);
            } else {
                too_long = true;
            }
            input.consume(n);
            if done {
                break;
            }
        }
        let frame = trim_line(&line);
        if frame.iter().all(u8::is_ascii_whitespace) && !too_long {
            continue;
        }
        let verdict = if too_long {
            Frame::Reply(serde_json::json!({
                "jsonrpc": "2.0",
                "id": null,
                "error": {"code": jsonrpc::INVALID_REQUEST, "message": format!("invalid request: the frame is longer than {MAX_LINE_BYTES} bytes")},
            }))
        } else {
            jsonrpc::check(frame)
        };
        match verdict {
            Frame::Forward => {
                if to_rmcp.write_all(frame).await.is_err()
                    || to_rmcp.write_all(b"\n").await.is_err()
                {
                    return;
                }
                let _ = to_rmcp.flush().await;
            }
            Frame::Reply(reply) => {
                tracing::warn!(error = %reply["error"]["message"], "malformed JSON-RPC frame answered at the edge");
                if replies.send(reply.to_string()).await.is_err() {
                    return;
                }
            }
            Frame::Drop(why) => {
                tracing::warn!(%why, "malformed JSON-RPC notification dropped at the edge");
            }
        }
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && (line[end - 1] == b'\n' || line[end - 1] == b'\r') {
        end -= 1;
    }
    &line[..end]
}

/// Writes rmcp's lines and the edge's replies to the client, a whole line at a time.
async fn write_lines<R, W>(from_rmcp: R, mut replies: mpsc::Receiver<String>, mut output: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut from_rmcp = BufReader::new(from_rmcp);
    let mut line = Vec::new();
    let mut rmcp_open = true;
    loop {
        tokio::select! {
            read = from_rmcp.read_until(b'\n', &mut line), if rmcp_open => {
                match read {
                    Ok(0) | Err(_) => rmcp_open = false,
                    Ok(_) => {
                        if output.write_all(&line).await.is_err() {
                            return;
                        }
                        line.clear();
                    }
                }
            }
            reply = replies.recv() => {
                match reply {
                    Some(r) => {
                        if output.write_all(r.as_bytes()).await.is_err()
                            || output.write_all(b"\n").await.is_err()
                        {
                            return;
                        }
                    }
                    None if !rmcp_open => break,
                    None => {
                        // The reader is gone; keep draining rmcp.
                        let mut rest = Vec::new();
                        let _ = tokio::io::AsyncReadExt::read_to_end(&mut from_rmcp, &mut rest).await;
                        let _ = output.write_all(&rest).await;
                        break;
                    }
                }
            }
        }
        if output.flush().await.is_err() {
            return;
        }
        if !rmcp_open && replies.is_closed() && replies.is_empty() {
            break;
        }
    }
    let _ = output.flush().await;
}
