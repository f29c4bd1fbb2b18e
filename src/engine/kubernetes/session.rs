//! The exec websocket (channel protocol v5), driven by stackpilot rather
//! than kube-rs's `AttachedProcess`: kube-rs sends stdin and reads the
//! server's frames in one loop, so a stdin frame the server no longer takes
//! (the remote command exited without reading it all: `pg_restore --list`
//! reads only an archive's TOC) blocks the read of the exit status behind
//! it, and the exec never ends. Here one task only reads (stdout, stderr,
//! the status) and another only writes (stdin, its half-close, pings); the
//! status ends the session and stops the writer, whatever it waits on. The
//! connection itself is still kube-rs's (`Client::connect`: auth, TLS,
//! protocol negotiation).
use std::time::Duration;

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::{Sink, SinkExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::AttachParams;
use kube::Api;
use tokio::io::DuplexStream;
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::io::ReaderStream;

use crate::domain::error::ToolError;
use crate::engine::process::{Chunk, Input, Output};

// Channel numbers of the remote command protocol (k8s.io/apimachinery
// pkg/util/remotecommand): the first byte of every binary frame.
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
/// v5: `[CLOSE, channel]` half-closes a stream (stdin's EOF for the remote).
const CLOSE: u8 = 255;

/// Bytes of stdin buffered between the process's writer and the websocket.
const STDIN_BUF: usize = 1024 * 1024;
/// Largest stdin frame sent.
const STDIN_FRAME: usize = 64 * 1024;
/// Output frames queued for the reader of the process's output.
const OUTPUT_QUEUE: usize = 32;
/// A ping keeps an idle connection (a long, quiet dump) from being cut by
/// the API server or a proxy in between.
const PING_EVERY: Duration = Duration::from_secs(30);
/// A stdin frame the server has not taken for this long means the command
/// stopped reading its input without exiting: the session ends with an
/// error rather than waiting forever.
const STDIN_STALL: Duration = Duration::from_secs(120);
/// How long the exit status may trail the end of the output.
pub const STATUS_WAIT: Duration = Duration::from_secs(10);

/// The end of a session: the server's status, or why there was none.
pub type Ending = Result<Status, ToolError>;

/// An exec running in a pod: its output (ends when the status arrived or
/// the connection closed), its stdin (a sink when not attached), and the
/// status. Dropping it stops both tasks, which closes the connection.
pub struct Session {
    pub output: Output,
    pub input: Input,
    pub exit: ExitStatus,
}

/// The status receiver and the tasks to stop with it.
pub struct ExitStatus {
    status: Option<oneshot::Receiver<Ending>>,
    tasks: [AbortHandle; 2],
}

impl ExitStatus {
    /// The status, waited for at most [`STATUS_WAIT`] (the output has
    /// ended by then: the reader sends the status right after).
    pub async fn status(mut self) -> Ending {
        let Some(rx) = self.status.take() else {
            return Err(ToolError::internal("exit status read twice"));
        };
        match tokio::time::timeout(STATUS_WAIT, rx).await {
            Ok(Ok(ending)) => ending,
            Ok(Err(_)) => Err(ToolError::external(
                "the exec stream ended without an exit status",
            )),
            Err(_) => Err(ToolError::external(format!(
                "no exit status from the API server within {} s after the output ended",
                STATUS_WAIT.as_secs()
            ))),
        }
    }
}

impl Drop for ExitStatus {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Opens `cmd` in `pod` (the container, stdin, stdout and stderr as in
/// `params`; no TTY) and starts the reader and the writer.
pub async fn open(
    pods: &Api<Pod>,
    pod: &str,
    cmd: Vec<String>,
    params: &AttachParams,
) -> Result<Session, kube::Error> {
    let mut req = kube::core::Request::new(pods.resource_url())
        .exec(pod, cmd, params)
        .map_err(kube::Error::BuildRequest)?;
    req.extensions_mut().insert("exec");
    let conn = pods.clone().into_client().connect(req).await?;
    let half_close = conn.supports_stream_close();
    let (sink, stream) = conn.into_stream().split();
    Ok(start(sink, stream, params.stdin, half_close))
}

/// The two tasks on an open websocket.
fn start(
    sink: impl Sink<Message> + Unpin + Send + 'static,
    stream: impl Stream<Item = Result<Message, WsError>> + Unpin + Send + 'static,
    stdin: bool,
    half_close: bool,
) -> Session {
    // A duplex, not a simplex: when the writer task ends, dropping its end
    // fails the process's pending stdin write at once (a simplex's split
    // halves share the pipe, so the write would wait for room forever).
    let (input, stdin): (Input, Option<DuplexStream>) = if stdin {
        let (w, r) = tokio::io::duplex(STDIN_BUF);
        (Box::pin(w), Some(r))
    } else {
        (Box::pin(tokio::io::sink()), None)
    };
    let (stalled_tx, stalled_rx) = oneshot::channel();
    let writer = tokio::spawn(write(sink, stdin, half_close, stalled_tx)).abort_handle();
    let (out_tx, out_rx) = mpsc::channel(OUTPUT_QUEUE);
    let (status_tx, status_rx) = oneshot::channel();
    let reader = tokio::spawn(read(
        stream,
        out_tx,
        status_tx,
        (writer.clone(), stalled_rx),
    ))
    .abort_handle();
    Session {
        output: Box::pin(out_rx),
        input,
        exit: ExitStatus {
            status: Some(status_rx),
            tasks: [reader, writer],
        },
    }
}

/// Reads frames until the status (or the end of the connection, or the
/// writer's report of a stalled stdin), passing stdout and stderr on; then
/// stops the writer (a stdin frame it may still wait on will never be
/// taken) and hands over the status.
async fn read(
    mut stream: impl Stream<Item = Result<Message, WsError>> + Unpin,
    mut out: mpsc::Sender<Result<Chunk, ToolError>>,
    status: oneshot::Sender<Ending>,
    (writer, mut stalled): (AbortHandle, oneshot::Receiver<()>),
) {
    let mut watch_stall = true;
    let ending = loop {
        let next = tokio::select! {
            n = stream.next() => n,
            s = &mut stalled, if watch_stall => {
                if s.is_ok() {
                    break Err(ToolError::external(format!(
                        "the command in the pod stopped reading its input for {} s without \
                         exiting; the exec was ended",
                        STDIN_STALL.as_secs()
                    )));
                }
                // The writer ended without a stall: only frames from now on.
                watch_stall = false;
                continue;
            }
        };
        let frame = match next {
            None => {
                break Err(ToolError::external(
                    "the API server closed the exec stream without an exit status",
                ))
            }
            Some(Err(e)) => {
                break Err(ToolError::external(format!(
                    "the exec stream failed: {}",
                    crate::domain::redact::cap(&e.to_string(), 300)
                )))
            }
            Some(Ok(Message::Binary(b))) if b.len() > 1 => b,
            // Pongs, the one-byte frames the server opens channels with, a close.
            Some(Ok(_)) => continue,
        };
        let chunk = match frame[0] {
            STDOUT => Chunk::Stdout(frame.slice(1..)),
            STDERR => Chunk::Stderr(frame.slice(1..)),
            STATUS => {
                break serde_json::from_slice::<Status>(&frame[1..]).map_err(|e| {
                    ToolError::external(format!("the exec status did not parse: {e}"))
                })
            }
            _ => continue,
        };
        // The output's reader gone (the run was cancelled): keep reading
        // for the status; the session is being dropped anyway.
        let _ = out.send(Ok(chunk)).await;
    };
    writer.abort();
    drop(out);
    let _ = status.send(ending);
}

/// Sends stdin as frames, then its half-close; pings while idle. Any send
/// error ends it quietly: the remote has gone, and the reader reports how.
/// Ending drops the stdin pipe, so the process's writer sees a broken pipe
/// (`Finished::stdin_unsent`), never a hang.
async fn write(
    mut sink: impl Sink<Message> + Unpin,
    stdin: Option<DuplexStream>,
    half_close: bool,
    stalled: oneshot::Sender<()>,
) {
    let mut stdin = stdin.map(|r| ReaderStream::with_capacity(r, STDIN_FRAME));
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    loop {
        let next = async {
            match stdin.as_mut() {
                Some(s) => s.next().await,
                None => std::future::pending().await,
            }
        };
        let sent = tokio::select! {
            _ = ping.tick() => sink.send(Message::Ping(Bytes::new())).await,
            chunk = next => match chunk {
                Some(Ok(data)) => {
                    let mut frame = Vec::with_capacity(data.len() + 1);
                    frame.push(STDIN);
                    frame.extend_from_slice(&data);
                    match tokio::time::timeout(STDIN_STALL, sink.send(Message::binary(frame))).await {
                        Ok(sent) => sent,
                        Err(_) => {
                            let _ = stalled.send(());
                            return;
                        }
                    }
                }
                // The writer shut down (EOF) or failed: the remote's stdin ends.
                Some(Err(_)) | None => {
                    stdin = None;
                    if half_close {
                        sink.send(Message::binary(vec![CLOSE, STDIN])).await
                    } else {
                        // v4 cannot half-close: closing the websocket is the only EOF.
                        let _ = sink.close().await;
                        return;
                    }
                }
            },
        };
        if sent.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::WebSocketStream;

    /// The stall this module exists for: the server sends output and the
    /// exit status but never reads stdin again (a command that exited
    /// after reading its input's head), over a transport that holds 4 KiB.
    /// The session must still end with the status, and the stdin writer
    /// must fail rather than hang.
    #[tokio::test]
    async fn the_status_arrives_while_stdin_is_not_taken() {
        let (client_io, server_io) = tokio::io::duplex(4096);
        let client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let mut server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let (sink, stream) = client.split();
        let mut session = start(sink, stream, true, true);

        // The remote reads one stdin frame, answers, exits; then reads nothing more.
        let server_task = tokio::spawn(async move {
            let first = server.next().await.expect("a frame").expect("ok");
            assert_eq!(first.into_data()[0], STDIN);
            let mut out = vec![STDOUT];
            out.extend_from_slice(b"listing\n");
            server.send(Message::binary(out)).await.expect("stdout");
            let mut status = vec![STATUS];
            status.extend_from_slice(br#"{"status":"Success","metadata":{}}"#);
            server.send(Message::binary(status)).await.expect("status");
            // Held open, never read: the client's stdin frames pile up.
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(server);
        });
        let feed = tokio::spawn(async move {
            let chunk = vec![7u8; 64 * 1024];
            for _ in 0..64 {
                session.input.write_all(&chunk).await?;
            }
            session.input.shutdown().await
        });
        let work = async {
            let mut stdout = Vec::new();
            while let Some(item) = session.output.next().await {
                if let Chunk::Stdout(b) = item.expect("chunk") {
                    stdout.extend_from_slice(&b);
                }
            }
            let status = session.exit.status().await.expect("status");
            (stdout, status)
        };
        let (stdout, status) = tokio::time::timeout(Duration::from_secs(10), work)
            .await
            .expect("the session ended within 10 s");
        assert_eq!(stdout, b"listing\n");
        assert_eq!(
            crate::engine::kubernetes::exec::exit_code(&status).expect("code"),
            0
        );
        let fed = tokio::time::timeout(Duration::from_secs(5), feed)
            .await
            .expect("the stdin writer returned")
            .expect("join");
        assert!(fed.is_err(), "4 MiB cannot have been taken: {fed:?}");
        server_task.abort();
    }
}
