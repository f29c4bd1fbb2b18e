//! A pod's log as timestamped lines (the port's `logs`), and the project's
//! pod changes as a pushed stream (the port's `watch`).
//!
//! Kubernetes keeps one log per container with stdout and stderr interleaved
//! and no mark of which was which: every line is reported as stdout, and a
//! query for one stream alone is refused rather than answered with lines of
//! the other stream under its name.
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use kube::runtime::watcher;
use kube::Api;

use crate::domain::error::ToolError;
use crate::domain::kubernetes::labels;
use crate::domain::logs::OutputStream;
use crate::domain::time::rfc3339_to_unix_ns;
use crate::engine::{LogLine, LogLines, LogQuery};

/// Longest line kept whole; the rest of a longer line is dropped (the logs
/// tool cuts lines at 4 KiB anyway), so one endless line cannot fill memory.
const MAX_LINE: usize = 64 * 1024;

/// The pod log parameters for a query: timestamps on, the tail and a
/// `since` bound the API server applies (in whole seconds, rounded down so
/// nothing asked for is cut; the exact bound is applied to each line).
pub fn params(query: &LogQuery, now_ns: i128) -> Result<LogParams, ToolError> {
    if !(query.stdout && query.stderr) {
        return Err(ToolError::invalid(
            "streams",
            "Kubernetes keeps a pod's stdout and stderr in one log without marking which is which, so one stream cannot be read alone",
        )
        .allowed(["both"]));
    }
    let since_seconds = query.since_ns.map(|since| {
        let ago = (now_ns - since).max(0);
        // Round up: a bound 1.5 s ago asks the server for the last 2 s.
        i64::try_from(ago.div_euclid(1_000_000_000) + 1).unwrap_or(i64::MAX)
    });
    Ok(LogParams {
        timestamps: true,
        tail_lines: query.tail.map(|n| n as i64),
        since_seconds,
        ..Default::default()
    })
}

/// One log line as the API server sends it with timestamps:
/// `<RFC 3339 nanos> <text>`. A line without a readable time gets time 0, so
/// it sorts first instead of being lost.
pub fn parse_line(raw: &[u8]) -> LogLine {
    let mut raw = raw;
    while let Some((last, rest)) = raw.split_last() {
        if *last == b'\n' || *last == b'\r' {
            raw = rest;
        } else {
            break;
        }
    }
    let (time_ns, text) = match raw.iter().position(|b| *b == b' ') {
        Some(i) => match std::str::from_utf8(&raw[..i])
            .ok()
            .and_then(rfc3339_to_unix_ns)
        {
            Some(t) => (t, &raw[i + 1..]),
            None => (0, raw),
        },
        None => (0, raw),
    };
    LogLine {
        time_ns,
        stream: OutputStream::Stdout,
        text: bytes::Bytes::copy_from_slice(text),
    }
}

/// Whether a line falls inside the query's exact time bounds.
fn within(line: &LogLine, query: &LogQuery) -> bool {
    query.since_ns.is_none_or(|s| line.time_ns >= s)
        && query.until_ns.is_none_or(|u| line.time_ns <= u)
}

/// The pod's log, streamed line by line (never held whole), oldest first.
pub async fn lines(
    pods: Api<Pod>,
    pod: &str,
    query: &LogQuery,
    now_ns: i128,
) -> Result<LogLines, ToolError> {
    let lp = params(query, now_ns)?;
    let reader = pods
        .log_stream(pod, &lp)
        .await
        .map_err(|e| ToolError::external(format!("reading the log of pod {pod} failed: {e}")))?;
    let query = query.clone();
    let pod = pod.to_string();
    let stream = futures::stream::unfold((Box::pin(reader), false), move |(mut reader, done)| {
        let pod = pod.clone();
        async move {
            if done {
                return None;
            }
            let mut buf = Vec::new();
            match read_line(&mut reader, &mut buf).await {
                Ok(0) => None,
                Ok(_) => Some((Ok(parse_line(&buf)), (reader, false))),
                Err(e) => Some((
                    Err(ToolError::external(format!(
                        "reading the log of pod {pod} failed: {e}"
                    ))),
                    (reader, true),
                )),
            }
        }
    })
    .filter(move |l| {
        let keep = match l {
            Ok(line) => within(line, &query),
            Err(_) => true,
        };
        futures::future::ready(keep)
    });
    Ok(Box::pin(stream))
}

/// One line into `buf` (at most [`MAX_LINE`] bytes of it kept); the bytes
/// read, 0 at the end.
async fn read_line<R: futures::AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(total);
        }
        let (chunk, found) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let n = chunk.len();
        let room = MAX_LINE.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..n.min(room)]);
        reader.consume_unpin(n);
        total += n;
        if found {
            return Ok(total);
        }
    }
}

/// The services of the project's pods as they change (added, modified,
/// deleted), pushed by the API server's watch: no polling. Ends when the
/// watch ends; the caller reconnects.
pub fn watch(pods: Api<Pod>, project: &str) -> futures::stream::BoxStream<'static, String> {
    let config = watcher::Config::default().labels(&labels::project_selector(project));
    watcher(pods, config)
        .take_while(|e| futures::future::ready(e.is_ok()))
        .filter_map(|e| async move {
            let pod = match e.ok()? {
                watcher::Event::Apply(p) | watcher::Event::Delete(p) => p,
                // The initial listing is the state as it is, not a change.
                watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone => {
                    return None
                }
            };
            pod.metadata.labels?.get(labels::SERVICE).cloned()
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> LogQuery {
        LogQuery {
            tail: None,
            since_ns: None,
            until_ns: None,
            stdout: true,
            stderr: true,
        }
    }

    #[test]
    fn a_timestamped_line_is_split_into_its_time_and_text() {
        let l = parse_line(b"2026-11-28T08:11:32.123456789Z listening on 5432\n");
        assert_eq!(
            l.time_ns,
            rfc3339_to_unix_ns("2026-11-28T08:11:32.123456789Z").expect("t")
        );
        assert_eq!(&l.text[..], b"listening on 5432");
        assert_eq!(l.stream, OutputStream::Stdout);
        // No time: kept, sorted first.
        let l = parse_line(b"no time here\r\n");
        assert_eq!((l.time_ns, &l.text[..]), (0, &b"no time here"[..]));
    }

    #[test]
    fn since_is_rounded_so_nothing_asked_for_is_cut_and_one_stream_alone_is_refused() {
        let now = 1_000 * 1_000_000_000i128;
        let q = LogQuery {
            since_ns: Some(now - 1_500_000_000),
            tail: Some(20),
            ..query()
        };
        let p = params(&q, now).expect("params");
        assert!(p.timestamps);
        assert_eq!(p.since_seconds, Some(2));
        assert_eq!(p.tail_lines, Some(20));
        for (stdout, stderr) in [(false, true), (true, false)] {
            let e = params(
                &LogQuery {
                    stdout,
                    stderr,
                    ..query()
                },
                now,
            )
            .expect_err("one stream alone");
            assert_eq!(e.field.as_deref(), Some("streams"));
            assert_eq!(e.allowed, Some(vec!["both".to_string()]));
        }
    }

    #[test]
    fn the_exact_bounds_apply_to_each_line() {
        let line = |t: i128| LogLine {
            time_ns: t,
            stream: OutputStream::Stdout,
            text: bytes::Bytes::new(),
        };
        let q = LogQuery {
            since_ns: Some(10),
            until_ns: Some(20),
            ..query()
        };
        assert!(!within(&line(9), &q));
        assert!(within(&line(10), &q) && within(&line(20), &q));
        assert!(!within(&line(21), &q));
    }

    #[tokio::test]
    async fn an_endless_line_is_cut_not_held() {
        let mut big = vec![b'x'; MAX_LINE * 3];
        big.push(b'\n');
        big.extend_from_slice(b"next\n");
        let mut reader = futures::io::Cursor::new(big);
        let mut buf = Vec::new();
        let n = read_line(&mut reader, &mut buf).await.expect("read");
        assert_eq!((n, buf.len()), (MAX_LINE * 3 + 1, MAX_LINE));
        buf.clear();
        read_line(&mut reader, &mut buf).await.expect("read");
        assert_eq!(buf, b"next\n");
    }
}
