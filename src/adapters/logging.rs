//! Logs on stderr (stdout carries only JSON-RPC), masked: every line is
//! passed through the same redaction as tool output, with every secret value
//! stackpilot has learned (`domain::redact::SecretBook`), before it is
//! written. Third-party crates stay at `info` unless the filter names them:
//! their `debug` output carries raw engine answers (a container inspect with
//! its environment) before stackpilot has parsed, and so learned, a value.
use std::io::Write;
use std::sync::{Arc, OnceLock};

use crate::domain::redact::{mask, SecretBook};

static BOOK: OnceLock<Arc<SecretBook>> = OnceLock::new();

/// The process's secret book: the one the app learns into and logs mask with.
pub fn book() -> Arc<SecretBook> {
    BOOK.get_or_init(|| Arc::new(SecretBook::default())).clone()
}

/// Crates whose debug output holds raw engine and HTTP traffic.
const NOISY: [&str; 7] = [
    "bollard",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "rustls",
    "tower",
];

/// The filter: STACKPILOT_LOG (or `default_level`), with the noisy crates
/// kept at info unless named.
fn filter(default_level: &str) -> tracing_subscriber::EnvFilter {
    let spec = std::env::var("STACKPILOT_LOG").unwrap_or_else(|_| default_level.to_string());
    let mut spec = spec.trim().to_string();
    for c in NOISY {
        if !spec.contains(c) {
            if !spec.is_empty() {
                spec.push(',');
            }
            spec.push_str(&format!("{c}=info"));
        }
    }
    tracing_subscriber::EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level))
}

/// stderr, with each write masked (the fmt layer writes one event per call).
pub struct MaskedStderr;

impl Write for MaskedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let masked = mask(&text, &book().snapshot());
        let mut err = std::io::stderr().lock();
        err.write_all(masked.as_bytes())?;
        if text.ends_with('\n') && !masked.ends_with('\n') {
            err.write_all(b"\n")?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Installs the subscriber: text or JSON lines on masked stderr.
pub fn init(format: &str, default_level: &str) {
    let builder = tracing_subscriber::fmt()
        .with_writer(|| MaskedStderr)
        .with_env_filter(filter(default_level));
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
