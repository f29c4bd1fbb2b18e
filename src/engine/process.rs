//! A process started by an engine (an exec in an instance, or a helper), in
//! engine-neutral terms: an output stream of stdout and stderr chunks, a
//! stdin writer, and its exit code. [`run`] streams one to its end: stdout
//! into a sink (a backup file) or a bounded buffer, the tail of stderr kept
//! for the error, stdin fed from a bounded channel.
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::error::{ErrorKind, ToolError};

/// Bytes of stderr kept for an error message (the tail is what explains a failure).
pub const STDERR_TAIL: usize = 4096;

/// One piece of a process's output.
#[derive(Debug, Clone)]
pub enum Chunk {
    Stdout(Bytes),
    Stderr(Bytes),
}

pub type Output = Pin<Box<dyn Stream<Item = Result<Chunk, ToolError>> + Send>>;
pub type Input = Pin<Box<dyn AsyncWrite + Send>>;

/// How a started process reports its exit code. Dropped before `code` was
/// awaited, an implementation cleans up what it started (a helper container).
pub trait Exit: Send {
    /// Called once the output has ended.
    fn code(self: Box<Self>) -> BoxFuture<'static, Result<i64, ToolError>>;
}

/// A started process whose output has not been read yet.
pub struct Process {
    pub output: Output,
    pub input: Input,
    pub exit: Box<dyn Exit>,
}

/// Where stdout goes when it is streamed somewhere (a backup file).
pub trait ChunkSink: Sync {
    /// Queues a chunk, waiting when the sink is behind; false: it stopped.
    fn send(&self, chunk: Bytes) -> BoxFuture<'_, bool>;
}

/// Where a process's stdout goes.
pub enum Stdout<'a> {
    /// Into a sink (bounded: waits when the sink is behind).
    Sink(&'a dyn ChunkSink),
    /// Kept in memory up to this many bytes; the rest is counted and dropped.
    Capture(usize),
    Discard,
}

/// How a process ended.
#[derive(Debug, Clone)]
pub struct Finished {
    pub exit_code: i64,
    pub stdout_bytes: u64,
    /// Captured stdout (with `Stdout::Capture`).
    pub stdout: Vec<u8>,
    /// The last STDERR_TAIL bytes of stderr, lossy UTF-8.
    pub stderr_tail: String,
    /// Bytes the process did not take from stdin (it exited first).
    pub stdin_unsent: bool,
}

impl Finished {
    pub fn ok(&self) -> bool {
        self.exit_code == 0
    }
}

/// Why `run` stopped early.
#[derive(Debug)]
pub enum RunError {
    /// The caller cancelled.
    Cancelled,
    /// The sink stopped accepting data (its own error says why).
    SinkFailed,
    Engine(ToolError),
}

impl From<RunError> for ToolError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Cancelled => ToolError::new(ErrorKind::Cancelled, "cancelled by the caller"),
            RunError::SinkFailed => ToolError::external("the backup file stopped accepting data"),
            RunError::Engine(e) => e,
        }
    }
}

fn push_tail(tail: &mut Vec<u8>, data: &[u8]) {
    tail.extend_from_slice(data);
    if tail.len() > STDERR_TAIL {
        let cut = tail.len() - STDERR_TAIL;
        tail.drain(..cut);
    }
}

/// Streams a process to its end: stdout to `stdout`, stderr's tail kept,
/// `stdin` (if any) written into the process and then closed. Cancellation
/// drops the connection (the process gets EPIPE/SIGPIPE) and removes a helper.
pub async fn run(
    mut p: Process,
    stdout: Stdout<'_>,
    stdin: Option<mpsc::Receiver<Bytes>>,
    ct: &CancellationToken,
) -> Result<Finished, RunError> {
    let input = std::mem::replace(&mut p.input, Box::pin(tokio::io::sink()));
    let pump = stdin.map(|rx| tokio::spawn(pump_stdin(rx, input)));
    let mut stdout_bytes = 0u64;
    let mut captured = Vec::new();
    let mut tail = Vec::new();
    let result = loop {
        let item = tokio::select! {
            biased;
            _ = ct.cancelled() => break Err(RunError::Cancelled),
            item = p.output.next() => item,
        };
        let out = match item {
            None => break Ok(()),
            Some(Err(e)) => break Err(RunError::Engine(e)),
            Some(Ok(Chunk::Stderr(message))) => {
                push_tail(&mut tail, &message);
                continue;
            }
            Some(Ok(Chunk::Stdout(message))) => message,
        };
        stdout_bytes += out.len() as u64;
        match &stdout {
            Stdout::Sink(sink) => {
                if !sink.send(out).await {
                    break Err(RunError::SinkFailed);
                }
            }
            Stdout::Capture(cap) => {
                let room = cap.saturating_sub(captured.len());
                captured.extend_from_slice(&out[..room.min(out.len())]);
            }
            Stdout::Discard => {}
        }
    };
    let stdin_unsent = match pump {
        Some(h) => {
            if result.is_err() {
                h.abort();
                false
            } else {
                // The process has exited, so the engine closes the connection and
                // a blocked write fails; bounded anyway.
                match tokio::time::timeout(Duration::from_secs(10), h).await {
                    Ok(r) => r.map(|r| r.is_err()).unwrap_or(true),
                    Err(_) => true,
                }
            }
        }
        None => false,
    };
    let Process {
        output,
        input,
        exit,
    } = p;
    // Closing the connection ends the process's output (it gets EPIPE); a
    // helper is removed by its exit's cleanup.
    drop(output);
    drop(input);
    result?;
    let exit_code = exit.code().await.map_err(RunError::Engine)?;
    Ok(Finished {
        exit_code,
        stdout_bytes,
        stdout: captured,
        stderr_tail: String::from_utf8_lossy(&tail).into_owned(),
        stdin_unsent,
    })
}

async fn pump_stdin(mut rx: mpsc::Receiver<Bytes>, mut input: Input) -> std::io::Result<()> {
    while let Some(chunk) = rx.recv().await {
        input.write_all(&chunk).await?;
    }
    input.flush().await?;
    // Half-close: the engine closes the process's stdin, which then sees EOF.
    input.shutdown().await
}

/// Runs a short command in an instance and keeps up to `max_bytes` of its
/// stdout (stderr's tail comes with it), within `timeout`. None: it did not
/// finish in time (an engine cannot always stop an exec: it may still run).
pub async fn exec_capture(
    engine: &dyn super::Engine,
    id: &str,
    cmd: &[&str],
    timeout: Duration,
    max_bytes: usize,
) -> Result<Option<Finished>, ToolError> {
    let ct = CancellationToken::new();
    let work = async {
        let p = engine
            .exec(
                id,
                cmd.iter().map(|s| s.to_string()).collect(),
                Vec::new(),
                false,
            )
            .await?;
        run(p, Stdout::Capture(max_bytes), None, &ct)
            .await
            .map_err(ToolError::from)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r.map(Some),
        Err(_) => Ok(None),
    }
}

/// The ends of a process's two output streams, bounded.
#[derive(Debug, Clone, Default)]
pub struct Tails {
    pub exit_code: i64,
    /// The last `max_bytes` of stdout (lossy UTF-8 at the cut).
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
}

fn keep_tail(tail: &mut Vec<u8>, data: &[u8], max: usize) {
    tail.extend_from_slice(data);
    if tail.len() > max {
        let cut = tail.len() - max;
        tail.drain(..cut);
    }
}

/// Runs a process to its end keeping the last `max_bytes` of each output
/// stream (a task's result and its errors are at the end), with no stdin.
/// Cancellation drops the process (the engine's own cleanup stops it).
pub async fn run_tails(
    mut p: Process,
    max_bytes: usize,
    ct: &CancellationToken,
) -> Result<Tails, RunError> {
    let mut t = Tails::default();
    loop {
        let item = tokio::select! {
            biased;
            _ = ct.cancelled() => return Err(RunError::Cancelled),
            item = p.output.next() => item,
        };
        match item {
            None => break,
            Some(Err(e)) => return Err(RunError::Engine(e)),
            Some(Ok(Chunk::Stdout(b))) => {
                t.stdout_bytes += b.len() as u64;
                keep_tail(&mut t.stdout, &b, max_bytes);
            }
            Some(Ok(Chunk::Stderr(b))) => {
                t.stderr_bytes += b.len() as u64;
                keep_tail(&mut t.stderr, &b, max_bytes);
            }
        }
    }
    let Process {
        output,
        input,
        exit,
    } = p;
    drop(output);
    drop(input);
    t.exit_code = exit.code().await.map_err(RunError::Engine)?;
    Ok(t)
}

/// A failed process as an error: the exit code and stderr's tail (container
/// output: untrusted text, bounded). The caller redacts it.
pub fn failed(what: &str, f: &Finished) -> ToolError {
    let tail = f.stderr_tail.trim();
    let last = tail.lines().last().unwrap_or("").trim();
    let mut err = ToolError::external(format!(
        "{what} exited with code {}{}",
        f.exit_code,
        if last.is_empty() {
            String::new()
        } else {
            format!(": {}", crate::domain::redact::cap(last, 300))
        }
    ));
    if !tail.is_empty() {
        err = err.evidence(format!("stderr tail (container output, untrusted): {tail}"));
    }
    err
}
