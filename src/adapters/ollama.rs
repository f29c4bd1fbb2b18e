//! Ollama's HTTP API (docs/api.md; shapes from api/types.go), over reqwest.
//!
//! ollama-rs (0.3.6) was weighed and left out: its schemars dependency turns
//! on serde_json's `preserve_order` for the whole binary (every JSON object
//! and the exported tools/ change key order), and of the endpoints needed it
//! covers only `/api/show` without loss: it has no `/api/ps` or
//! `/api/version`, drops `/api/tags`' details, folds HTTP status codes into a
//! string (a 404 on delete cannot be told from a failure), and its pull stream
//! grows its line buffer without limit. Here the pull stream is read line by
//! line with a bounded buffer.
//!
//! Where Ollama is: OLLAMA_HOST when set (a host Ollama, as on apple-metal),
//! else the stack's ollama service on its published port (found through the
//! engine by tools::models::endpoint), else Ollama's default `127.0.0.1:11434`.
use std::time::Duration;

use reqwest::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::adapters::ollama_probe::{self, DEFAULT_OLLAMA_URL};
use crate::domain::error::ToolError;

/// Connecting, and any one non-streaming request, give up after this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Non-streaming requests (tags, ps, show, delete) give up after this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest NDJSON line accepted from a pull stream. Ollama's lines are
/// about 150 bytes; anything this long is not Ollama, and buffering it would
/// break the memory bound.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Where the Ollama endpoint came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndpointSource {
    /// The OLLAMA_HOST environment variable (a host Ollama).
    OllamaHost,
    /// The stack's ollama service, on its published port.
    Compose,
    /// Ollama's default address, 127.0.0.1:11434.
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub source: EndpointSource,
}

/// Resolves the endpoint: OLLAMA_HOST, else the stack's service (its URL as
/// the caller found it), else the default.
pub fn resolve(stack_url: Option<String>) -> Endpoint {
    let env_set = std::env::var("OLLAMA_HOST")
        .map(|v| !v.trim().is_empty())
        .unwrap_or(false);
    if env_set {
        return Endpoint {
            url: ollama_probe::ollama_url_from_env(),
            source: EndpointSource::OllamaHost,
        };
    }
    match stack_url {
        Some(url) => Endpoint {
            url,
            source: EndpointSource::Compose,
        },
        None => Endpoint {
            url: DEFAULT_OLLAMA_URL.to_string(),
            source: EndpointSource::Default,
        },
    }
}

// ------------------------------------------------------------ wire types

/// `details` of a model (api.ModelDetails).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ModelDetails {
    #[serde(default)]
    pub parent_model: String,
    #[serde(default)]
    pub format: String,
    #[serde(default)]
    pub family: String,
    #[serde(default)]
    pub families: Option<Vec<String>>,
    #[serde(default)]
    pub parameter_size: String,
    #[serde(default)]
    pub quantization_level: String,
}

/// One entry of `GET /api/tags` (api.ListModelResponse).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TagModel {
    pub name: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub modified_at: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub details: ModelDetails,
}

#[derive(Deserialize)]
struct TagsResponse {
    #[serde(default)]
    models: Vec<TagModel>,
}

/// One entry of `GET /api/ps` (api.ProcessModelResponse).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PsModel {
    pub name: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub details: ModelDetails,
    #[serde(default)]
    pub expires_at: String,
    #[serde(default)]
    pub size_vram: u64,
    /// Absent before Ollama 0.6 (not in docs/api.md, but in api/types.go).
    #[serde(default)]
    pub context_length: Option<u64>,
}

#[derive(Deserialize)]
struct PsResponse {
    #[serde(default)]
    models: Vec<PsModel>,
}

/// What `/api/show` says about a local model.
#[derive(Debug, Clone, Default)]
pub struct ShowInfo {
    /// GGUF metadata (`general.architecture`, `llama.block_count`, ...);
    /// arrays longer than 5 are sent empty by Ollama.
    pub model_info: Map<String, Value>,
    pub capabilities: Vec<String>,
    pub details: ModelDetails,
}

/// `POST /api/show`'s answer (api.ShowResponse), the parts used here.
#[derive(Deserialize)]
struct ShowResponse {
    #[serde(default)]
    model_info: Option<Map<String, Value>>,
    #[serde(default)]
    capabilities: Option<Vec<String>>,
    #[serde(default)]
    details: ModelDetails,
}

/// One line of a pull stream (api.ProgressResponse).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PullEvent {
    pub status: String,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub total: Option<u64>,
    #[serde(default)]
    pub completed: Option<u64>,
}

/// Either a progress line or Ollama's `{"error": ...}` line.
#[derive(Deserialize)]
#[serde(untagged)]
enum StreamLine {
    Error { error: String },
    Event(PullEvent),
}

#[derive(Serialize)]
struct ModelRequest<'a> {
    model: &'a str,
}

#[derive(Serialize)]
struct ShowRequest<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    verbose: bool,
}

#[derive(Serialize)]
struct PullRequest<'a> {
    model: &'a str,
    insecure: bool,
    stream: bool,
}

#[derive(Serialize)]
struct LoadRequest<'a> {
    model: &'a str,
    keep_alive: &'a str,
    stream: bool,
}

#[derive(Serialize)]
struct UnloadRequest<'a> {
    model: &'a str,
    keep_alive: u32,
}

// ------------------------------------------------------------ errors

/// Ollama's error bodies are `{"error": "..."}`; anything else is quoted, capped.
pub fn error_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Body {
        error: String,
    }
    match serde_json::from_str::<Body>(body.trim()) {
        Ok(b) => b.error,
        Err(_) if body.trim().is_empty() => "(empty body)".to_string(),
        Err(_) => crate::domain::redact::cap(body.trim(), 300),
    }
}

fn status_error(url: &str, what: &str, status: StatusCode, body: &str) -> ToolError {
    let msg = error_message(body);
    ToolError::external(format!(
        "Ollama at {url} answered {what} with HTTP {}: {msg}",
        status.as_u16()
    ))
    .evidence(format!(
        "{what} -> HTTP {status}: {}",
        crate::domain::redact::cap(body, 500)
    ))
}

/// One line for a failed request: refused, timed out, or what reqwest said.
fn transport_error(url: &str, what: &str, e: &reqwest::Error) -> ToolError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut refused = false;
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            refused = io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = err.source();
    }
    let message = if refused {
        format!("no Ollama at {url}: connection refused during {what}")
    } else if e.is_timeout() {
        format!("Ollama at {url} did not answer {what} in time")
    } else {
        format!("lost Ollama at {url} during {what}: {e}")
    };
    ToolError::external(message).next_step(
        "check that Ollama is running (detect_hardware shows whether it is reachable) and that OLLAMA_HOST points at it",
    )
}

// ------------------------------------------------------------ client

/// A connected Ollama: its version answered, so later failures are the
/// request's, not the address's.
#[derive(Debug, Clone)]
pub struct Ollama {
    pub url: String,
    pub source: EndpointSource,
    pub version: String,
    http: reqwest::Client,
}

impl Ollama {
    /// Checks `/api/version` first: an unreachable Ollama is one clear error
    /// naming the URL tried, before any model request.
    pub async fn connect(endpoint: &Endpoint) -> Result<Self, ToolError> {
        let probe = ollama_probe::probe_ollama(&endpoint.url, CONNECT_TIMEOUT).await;
        let version = match (probe.reachable, probe.version) {
            (true, Some(v)) => v,
            _ => {
                let why = probe
                    .error
                    .unwrap_or_else(|| format!("no Ollama at {}", endpoint.url));
                let source = match endpoint.source {
                    EndpointSource::OllamaHost => "from OLLAMA_HOST",
                    EndpointSource::Compose => "the stack's ollama service",
                    EndpointSource::Default => "Ollama's default address; OLLAMA_HOST is not set",
                };
                return Err(ToolError::external(why)
                    .evidence(format!("tried {}/api/version ({source})", endpoint.url))
                    .next_step("start Ollama (the stack's ollama service, or `ollama serve` on the host) or point OLLAMA_HOST at it"));
            }
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        if is_loopback(&endpoint.url) {
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| ToolError::internal(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            url: endpoint.url.trim_end_matches('/').to_string(),
            source: endpoint.source,
            version,
            http,
        })
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ToolError> {
        let what = format!("GET {path}");
        let resp = self
            .http
            .get(self.endpoint(path))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| transport_error(&self.url, &what, &e))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| transport_error(&self.url, &what, &e))?;
        if !status.is_success() {
            return Err(status_error(&self.url, &what, status, &body));
        }
        serde_json::from_str(&body).map_err(|e| {
            ToolError::external(format!(
                "Ollama at {} answered {what} with JSON this build does not understand: {e}",
                self.url
            ))
            .evidence(crate::domain::redact::cap(&body, 500))
        })
    }

    /// `GET /api/tags`: the local models.
    pub async fn tags(&self) -> Result<Vec<TagModel>, ToolError> {
        Ok(self.get_json::<TagsResponse>("/api/tags").await?.models)
    }

    /// `GET /api/ps`: the models loaded in memory now.
    pub async fn ps(&self) -> Result<Vec<PsModel>, ToolError> {
        Ok(self.get_json::<PsResponse>("/api/ps").await?.models)
    }

    /// `POST /api/show` for a local model (a 404 is an error naming it).
    pub async fn show(&self, model: &str) -> Result<ShowInfo, ToolError> {
        self.show_with(model, false).await
    }

    /// `POST /api/show` with `verbose: true`: arrays included (the tokenizer's
    /// too, so megabytes for a large vocabulary: only when they are needed).
    pub async fn show_verbose(&self, model: &str) -> Result<ShowInfo, ToolError> {
        self.show_with(model, true).await
    }

    async fn show_with(&self, model: &str, verbose: bool) -> Result<ShowInfo, ToolError> {
        let what = "POST /api/show";
        let resp = self
            .http
            .post(self.endpoint("/api/show"))
            .json(&ShowRequest { model, verbose })
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| transport_error(&self.url, what, &e))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| transport_error(&self.url, what, &e))?;
        if !status.is_success() {
            return Err(status_error(&self.url, what, status, &body));
        }
        let show: ShowResponse = serde_json::from_str(&body).map_err(|e| {
            ToolError::external(format!(
                "Ollama at {} answered {what} for {model} with JSON this build does not understand: {e}",
                self.url
            ))
        })?;
        Ok(ShowInfo {
            model_info: show.model_info.unwrap_or_default(),
            capabilities: show.capabilities.unwrap_or_default(),
            details: show.details,
        })
    }

    /// `DELETE /api/delete`. `Ok(false)`: Ollama answered 404 (already gone).
    pub async fn delete(&self, model: &str) -> Result<bool, ToolError> {
        let what = "DELETE /api/delete";
        let resp = self
            .http
            .delete(self.endpoint("/api/delete"))
            .json(&ModelRequest { model })
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| transport_error(&self.url, what, &e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(true);
        }
        let body = resp.text().await.unwrap_or_default();
        if status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        Err(status_error(&self.url, what, status, &body))
    }

    /// Unloads a model from memory: `/api/generate` with no prompt and
    /// `keep_alive: 0`, Ollama's documented way.
    pub async fn unload(&self, model: &str) -> Result<(), ToolError> {
        let what = "POST /api/generate (unload)";
        let resp = self
            .http
            .post(self.endpoint("/api/generate"))
            .json(&UnloadRequest {
                model,
                keep_alive: 0,
            })
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| transport_error(&self.url, what, &e))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status.is_success() {
            Ok(())
        } else {
            Err(status_error(&self.url, what, status, &body))
        }
    }

    /// Waits until `/api/ps` no longer lists `model` (an unload answers before
    /// the runner lets go: the real 0.11.4 still lists it right after).
    /// `Ok(false)`: still listed when `timeout` ran out.
    pub async fn wait_unloaded(&self, model: &str, timeout: Duration) -> Result<bool, ToolError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let listed = self
                .ps()
                .await?
                .iter()
                .any(|p| p.name == model || p.model == model);
            if !listed {
                return Ok(true);
            }
            if std::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Loads a model into memory and keeps it for `keep_alive`: `/api/generate`
    /// with no prompt, Ollama's documented way to preload. Returns how long the
    /// load took. Loading a large model can take minutes: bounded by `timeout`.
    pub async fn load(
        &self,
        model: &str,
        keep_alive: &str,
        timeout: Duration,
    ) -> Result<Duration, ToolError> {
        let what = "POST /api/generate (load)";
        let started = std::time::Instant::now();
        let resp = self
            .http
            .post(self.endpoint("/api/generate"))
            .json(&LoadRequest {
                model,
                keep_alive,
                stream: false,
            })
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| transport_error(&self.url, what, &e))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status.is_success() {
            Ok(started.elapsed())
        } else {
            Err(status_error(&self.url, what, status, &body))
        }
    }

    /// Starts `POST /api/pull` (streaming). An HTTP error status is a tool
    /// error with Ollama's message; lines are then read with `PullStream::next`.
    pub async fn pull(&self, model: &str, insecure: bool) -> Result<PullStream, ToolError> {
        let what = "POST /api/pull";
        let resp = self
            .http
            .post(self.endpoint("/api/pull"))
            .json(&PullRequest {
                model,
                insecure,
                stream: true,
            })
            .send()
            .await
            .map_err(|e| transport_error(&self.url, what, &e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(status_error(&self.url, what, status, &body));
        }
        Ok(PullStream {
            url: self.url.clone(),
            resp,
            buf: Vec::with_capacity(4096),
            pending: 0,
            done: false,
        })
    }
}

fn is_loopback(url: &str) -> bool {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .map(|h| {
            let h = h.trim_start_matches('[').trim_end_matches(']').to_string();
            h.eq_ignore_ascii_case("localhost")
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
        .unwrap_or(false)
}

/// A pull in progress. Reads the body chunk by chunk and hands back one
/// parsed line at a time; memory stays at one chunk plus one line, whatever
/// the model's size. Dropping it closes the connection, which is how a pull
/// is cancelled (Ollama keeps the layers it has and resumes next time).
pub struct PullStream {
    url: String,
    resp: reqwest::Response,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already handed out as lines.
    pending: usize,
    done: bool,
}

impl PullStream {
    /// The next line: `Ok(None)` at the end of the stream; an `{"error": ...}`
    /// line (Ollama's way to fail mid-stream on a 200 response) is `Err` with
    /// Ollama's message.
    pub async fn next(&mut self) -> Result<Option<PullEvent>, ToolError> {
        loop {
            if let Some(line) = self.take_line() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return self.parse(&line).map(Some);
            }
            if self.done {
                // A last line without a newline, or nothing.
                let rest = self.buf.split_off(self.pending);
                self.buf.clear();
                self.pending = 0;
                if rest.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                return self.parse(&rest).map(Some);
            }
            match self.resp.chunk().await {
                Ok(Some(bytes)) => {
                    if self.pending > 0 {
                        self.buf.drain(..self.pending);
                        self.pending = 0;
                    }
                    self.buf.extend_from_slice(&bytes);
                    if self.buf.len() > MAX_LINE_BYTES && !self.buf.contains(&b'\n') {
                        return Err(ToolError::external(format!(
                            "Ollama at {} sent a pull line longer than {} KiB: not Ollama's stream",
                            self.url,
                            MAX_LINE_BYTES / 1024
                        )));
                    }
                }
                Ok(None) => self.done = true,
                Err(e) => return Err(transport_error(&self.url, "the pull stream", &e)),
            }
        }
    }

    fn take_line(&mut self) -> Option<Vec<u8>> {
        let rest = &self.buf[self.pending..];
        let at = rest.iter().position(|b| *b == b'\n')?;
        let line = rest[..at].to_vec();
        self.pending += at + 1;
        Some(line)
    }

    fn parse(&self, line: &[u8]) -> Result<PullEvent, ToolError> {
        match serde_json::from_slice::<StreamLine>(line) {
            Ok(StreamLine::Event(e)) => Ok(e),
            Ok(StreamLine::Error { error }) => Err(ToolError::external(format!(
                "Ollama at {} reported an error during the pull: {error}",
                self.url
            ))
            .evidence(format!("stream line: {}", String::from_utf8_lossy(line)))),
            Err(e) => Err(ToolError::external(format!(
                "Ollama at {} sent a pull line that is not Ollama's progress JSON: {e}",
                self.url
            ))
            .evidence(crate::domain::redact::cap(
                &String::from_utf8_lossy(line),
                300,
            ))),
        }
    }
}

// ------------------------------------------------------------ model facts

/// The memory model's facts from `/api/show`'s model_info (the GGUF keys
/// llama.cpp reads to size the KV cache) and the local size from `/api/tags`
/// (domain::models::facts). None when it is not a text model the memory model
/// can size, or when a per-layer array was withheld (see `Ollama::model_facts`).
pub fn facts_from_model_info(
    name: &str,
    weights_bytes: u64,
    info: &Map<String, Value>,
) -> Option<crate::domain::models::catalogue::ModelFacts> {
    crate::domain::models::facts::from_metadata(name, weights_bytes, info).ok()
}

/// `<arch>.context_length` from model_info, the trained maximum.
pub fn max_context(info: &Map<String, Value>) -> Option<u64> {
    crate::domain::models::facts::max_context(info)
}

impl Ollama {
    /// The facts of a local model from `/api/show`; when a key the facts need
    /// is an array Ollama left out (it sends arrays only with `verbose`), asks
    /// once more with `verbose: true`. Ok(None): not a model the memory model
    /// can size.
    pub async fn model_facts(
        &self,
        name: &str,
        weights_bytes: u64,
    ) -> Result<Option<crate::domain::models::catalogue::ModelFacts>, ToolError> {
        use crate::domain::models::facts::{from_metadata, FactsGap};
        let info = self.show(name).await?;
        match from_metadata(name, weights_bytes, &info.model_info) {
            Ok(f) => Ok(Some(f)),
            Err(FactsGap::Missing(_)) => Ok(None),
            Err(FactsGap::ArraysWithheld(_)) => {
                let info = self.show_verbose(name).await?;
                Ok(from_metadata(name, weights_bytes, &info.model_info).ok())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_message(r#"{"error":"model 'x' not found"}"#),
            "model 'x' not found"
        );
        assert_eq!(error_message(""), "(empty body)");
        assert_eq!(
            error_message("<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
    }

    #[test]
    fn stream_lines_parse_both_ways() {
        let ok: StreamLine = serde_json::from_str(
            r#"{"status":"pulling 6a0746a1ec1a","digest":"sha256:6a07","total":10,"completed":4}"#,
        )
        .expect("line");
        assert!(matches!(
            ok,
            StreamLine::Event(PullEvent {
                total: Some(10),
                completed: Some(4),
                ..
            })
        ));
        let err: StreamLine =
            serde_json::from_str(r#"{"error":"max retries exceeded"}"#).expect("line");
        assert!(matches!(err, StreamLine::Error { .. }));
        let bare: StreamLine = serde_json::from_str(r#"{"status":"success"}"#).expect("line");
        assert!(matches!(
            bare,
            StreamLine::Event(PullEvent {
                completed: None,
                ..
            })
        ));
    }
}
