//! Domain errors that reach an agent as tool results (`isError: true`).
//!
//! Every failure carries a one-line cause, the evidence, and a next step, so an
//! agent can act on it without reading logs.
use schemars::JsonSchema;
use serde::Serialize;

/// What kind of failure this is; agents branch on it.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The arguments were rejected before anything ran.
    InvalidInput,
    /// Another caller holds the stack lock.
    Busy,
    /// A confirmation token was forged, expired, reused or for another stack.
    Confirmation,
    /// Something outside (engine, compose, Ollama, filesystem) failed.
    External,
    /// The tool is not available in this server mode (`--read-only`).
    NotAllowed,
    /// The operation was cancelled by the caller.
    Cancelled,
    /// An invariant of stackpilot itself broke.
    Internal,
}

/// A failure reported to the caller as a tool error.
#[derive(Debug, Clone, Serialize, JsonSchema, thiserror::Error)]
#[error("{message}")]
pub struct ToolError {
    pub kind: ErrorKind,
    /// One line: what went wrong.
    pub message: String,
    /// The input field at fault, as a path (`kv_cache_types[1]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The values that field accepts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<String>>,
    /// What was observed (command output, status codes), bounded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    /// What to do next, naming a tool where one helps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_step: Option<String>,
}

impl ToolError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            field: None,
            allowed: None,
            evidence: Vec::new(),
            next_step: None,
        }
    }

    /// Bad input on one field, with the values it accepts.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = format!("invalid `{field}`: {}", message.into());
        Self {
            field: Some(field),
            ..Self::new(ErrorKind::InvalidInput, message)
        }
    }

    pub fn external(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::External, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn allowed<I, S>(mut self, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let values: Vec<String> = values.into_iter().map(Into::into).collect();
        self.message = format!("{} (allowed: {})", self.message, values.join(", "));
        self.allowed = Some(values);
        self
    }

    pub fn evidence(mut self, line: impl Into<String>) -> Self {
        self.evidence
            .push(crate::domain::redact::cap(&line.into(), 2048));
        self
    }

    pub fn next_step(mut self, step: impl Into<String>) -> Self {
        self.next_step = Some(step.into());
        self
    }
}

impl ToolError {
    /// Masks secrets in every text the error carries (`domain::redact`).
    pub fn redact(&mut self, secrets: &[String]) {
        let r = |t: &mut String| {
            let masked = crate::domain::redact::mask(t, secrets);
            if masked != *t {
                *t = masked;
            }
        };
        r(&mut self.message);
        self.evidence.iter_mut().for_each(r);
        if let Some(n) = self.next_step.as_mut() {
            r(n);
        }
    }
}

impl From<std::io::Error> for ToolError {
    fn from(err: std::io::Error) -> Self {
        ToolError::external(format!("I/O error: {err}"))
    }
}

/// The first io::Error kind in an error's source chain: hyper and reqwest wrap
/// the socket error that says what actually happened.
pub fn io_error_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        current = err.source();
    }
    None
}

/// An error and its causes on one line (`a: b: c`), without repeats.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

/// `2s`, or `500ms` when the duration is not whole seconds.
pub fn human_duration(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
