//! ollama-standin: an Ollama stand-in for stackpilot's tests and benchmark.
//!
//! No Ollama binary can be had where stackpilot is built, so this serves
//! Ollama's documented API (docs/api.md, the JSON shapes of api/types.go,
//! the behaviour of server/routes.go) with no inference behind it:
//!
//! - `GET /api/version`, `GET|HEAD /api/tags`, `GET /api/ps`, `POST /api/show`,
//!   `DELETE /api/delete` (200 with an empty body; 404 `{"error":"model 'x' not found"}`),
//!   `POST /api/pull` (an `application/x-ndjson` stream: `pulling manifest`,
//!   `pulling <digest[7:19]>` with digest/total/completed every 60 ms per
//!   layer, `verifying sha256 digest`, `writing manifest`, `success`; errors
//!   as a final `{"error": ...}` line; `stream: false` answers one JSON
//!   object, or the error with status 500), and `POST /api/generate` for the
//!   load (empty prompt) and unload (`keep_alive: 0`) forms only.
//! - Bytes are synthetic: a layer "downloads" at `rate` bytes a second, so a
//!   640 GiB model costs nothing. Partial layers survive a dropped connection
//!   and the next pull resumes from them, as Ollama's do.
//! - `/api/show`'s model_info comes from a real GGUF file (`--gguf`), read
//!   with stackpilot's own GGUF parser (src/domain/models/gguf.rs, included
//!   as it is: the stand-in image builds without the stackpilot crate); its
//!   header only, never the tensors.
//! - The environment Ollama reads (OLLAMA_CONTEXT_LENGTH, OLLAMA_KV_CACHE_TYPE,
//!   OLLAMA_FLASH_ATTENTION, OLLAMA_NUM_PARALLEL) is logged at startup the way
//!   Ollama logs its `server config`, and `/api/ps` serves the context length.
//! - `GET /standin/state` (not Ollama's) tells tests how many requests came
//!   in, how many pulls are streaming, and each blob's bytes on disk.
//!
//! Failure knobs per model (in the `--catalogue` JSON): `fail_after_bytes`
//! (an error line mid-stream on the 200 response), `http_status` (the pull is
//! answered with that status and `{"error": ...}`, as a proxy or registry
//! failure reaches clients), `quiet_ms` (silence before verifying, as Ollama
//! hashing a large blob), `rate_bytes_per_sec`.
// Not every item of the product's parser is used here.
#[allow(dead_code)]
#[path = "../../src/domain/models/gguf.rs"]
mod gguf;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use clap::Parser;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

const VERSION: &str = "0.12.6";
/// Ollama's default context when OLLAMA_CONTEXT_LENGTH is unset (below 24 GiB of VRAM).
const DEFAULT_CONTEXT: u64 = 4096;

#[derive(Parser, Debug)]
#[command(
    name = "ollama-standin",
    about = "Ollama's API without the models, for tests"
)]
struct Args {
    /// `serve` (the default) or `list`: as the real `ollama` binary, so an image
    /// with the stand-in as /bin/ollama runs the same compose healthcheck
    /// (`ollama list`) and entrypoint (`ollama serve`) as ollama/ollama.
    #[arg(value_parser = ["serve", "list"])]
    command: Option<String>,
    /// Address to listen on; port 0 picks one (printed on stdout). Default:
    /// OLLAMA_HOST as Ollama reads it, else 127.0.0.1:11434.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// A GGUF file whose metadata backs /api/show for models marked `"gguf": true`.
    #[arg(long)]
    gguf: Option<PathBuf>,
    /// JSON file: {"models": [...], "rate_bytes_per_sec": N, "tick_ms": N}.
    #[arg(long)]
    catalogue: Option<PathBuf>,
    /// Simulated download speed, bytes a second.
    #[arg(long, default_value_t = 1 << 30)]
    rate: u64,
    /// Progress period of a downloading layer (Ollama: 60 ms).
    #[arg(long, default_value_t = 60)]
    tick_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayerSpec {
    #[serde(default)]
    digest: Option<String>,
    size: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadedSpec {
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    size_vram: u64,
}

/// One model the stand-in's registry can serve.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSpec {
    name: String,
    /// Explicit layers, or `layer_count` × `layer_size`.
    #[serde(default)]
    layers: Vec<LayerSpec>,
    #[serde(default)]
    layer_count: Option<u32>,
    #[serde(default)]
    layer_size: Option<u64>,
    /// /api/show's model_info and details from `--gguf`.
    #[serde(default)]
    gguf: bool,
    #[serde(default)]
    model_info: Option<Map<String, Value>>,
    #[serde(default)]
    details: Option<Value>,
    /// Already pulled when the stand-in starts.
    #[serde(default)]
    local: bool,
    /// Loaded in memory when the stand-in starts.
    #[serde(default)]
    loaded: Option<LoadedSpec>,
    #[serde(default)]
    fail_after_bytes: Option<u64>,
    #[serde(default)]
    fail_message: Option<String>,
    #[serde(default)]
    http_status: Option<u16>,
    #[serde(default)]
    http_message: Option<String>,
    #[serde(default)]
    quiet_ms: Option<u64>,
    #[serde(default)]
    rate_bytes_per_sec: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    #[serde(default)]
    models: Vec<ModelSpec>,
    #[serde(default)]
    rate_bytes_per_sec: Option<u64>,
    #[serde(default)]
    tick_ms: Option<u64>,
}

#[derive(Debug, Clone)]
struct Layer {
    digest: String,
    size: u64,
}

#[derive(Debug, Clone)]
struct Model {
    spec: ModelSpec,
    /// Ollama's shortest display name (`llama3.1:8b`, `ns/model:tag`).
    display: String,
    layers: Vec<Layer>,
}

impl Model {
    fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }

    /// The manifest digest /api/tags shows: sha256 of the layer digests.
    fn manifest_digest(&self) -> String {
        let mut h = Sha256::new();
        for l in &self.layers {
            h.update(l.digest.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

#[derive(Debug, Clone)]
struct Local {
    modified_at: String,
}

#[derive(Debug, Clone)]
struct Loaded {
    size: u64,
    size_vram: u64,
    expires_at: String,
}

struct Inner {
    registry: BTreeMap<String, Model>,
    local: BTreeMap<String, Local>,
    loaded: BTreeMap<String, Loaded>,
    /// Bytes of each blob on disk (complete or partial).
    blobs: HashMap<String, u64>,
    requests: u64,
    /// Pull requests that reached the stream (after the name was accepted).
    pulls: u64,
    active_pulls: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    gguf: Option<gguf::Gguf>,
    rate: u64,
    tick: Duration,
    context_length: u64,
}

type St = Arc<Shared>;

fn now_rfc3339(offset: Duration) -> String {
    let t = time::OffsetDateTime::now_utc() + offset;
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Ollama's model name rules (types/model/name.go), returning the shortest
/// display form, or None for an invalid name.
fn display_name(raw: &str) -> Option<String> {
    fn part_ok(kind: &str, s: &str) -> bool {
        let max = if kind == "host" { 350 } else { 80 };
        if s.is_empty() || s.len() > max {
            return false;
        }
        s.chars().enumerate().all(|(i, c)| {
            if i == 0 {
                return c.is_ascii_alphanumeric() || c == '_';
            }
            c.is_ascii_alphanumeric()
                || c == '_'
                || c == '-'
                || (c == '.' && kind != "namespace")
                || (c == ':' && kind == "host")
        })
    }
    let parts: Vec<&str> = raw.split('/').collect();
    let (host, ns, last) = match parts.as_slice() {
        [m] => ("registry.ollama.ai", "library", *m),
        [n, m] => ("registry.ollama.ai", *n, *m),
        [h, n, m] => (*h, *n, *m),
        _ => return None,
    };
    let (model, tag) = last.split_once(':').unwrap_or((last, "latest"));
    if !(part_ok("host", host)
        && part_ok("namespace", ns)
        && part_ok("model", model)
        && part_ok("tag", tag))
    {
        return None;
    }
    let mut out = String::new();
    if !host.eq_ignore_ascii_case("registry.ollama.ai") {
        out.push_str(&format!("{host}/{ns}/"));
    } else if !ns.eq_ignore_ascii_case("library") {
        out.push_str(&format!("{ns}/"));
    }
    out.push_str(&format!("{model}:{tag}"));
    Some(out)
}

fn key(display: &str) -> String {
    display.to_ascii_lowercase()
}

fn layer_digest(model: &str, i: usize) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(format!("ollama-standin:{model}:{i}")))
    )
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    json_response(status, json!({ "error": msg.into() }))
}

fn count(st: &St) {
    if let Ok(mut i) = st.inner.lock() {
        i.requests += 1;
    }
}

/// The body as JSON: 400 like gin's binding errors otherwise.
fn parse_body(body: &Bytes) -> Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("missing request body".into());
    }
    serde_json::from_slice::<Value>(body).map_err(|e| e.to_string())
}

fn model_field(v: &Value) -> String {
    let m = v.get("model").and_then(Value::as_str).unwrap_or("");
    if m.is_empty() {
        v.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    } else {
        m.to_string()
    }
}

fn details_of(st: &Shared, m: &Model) -> Value {
    if let Some(d) = &m.spec.details {
        return d.clone();
    }
    match (&st.gguf, m.spec.gguf) {
        (Some(g), true) => {
            let arch = g.architecture().unwrap_or("").to_string();
            json!({
                "parent_model": "",
                "format": "gguf",
                "family": arch,
                "families": [arch],
                "parameter_size": human_number(g.parameter_count()),
                "quantization_level": g.file_type_name(),
            })
        }
        _ => json!({
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "",
            "quantization_level": "",
        }),
    }
}

/// The header of the GGUF file at `path`: the first MiB, more while the
/// parser says the header goes on (arrays longer than 5 come back empty, as
/// /api/show sends them).
fn read_gguf(path: &std::path::Path) -> Result<gguf::Gguf, String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut buf = Vec::new();
    let mut want = (1u64 << 20).min(size);
    loop {
        let have = buf.len() as u64;
        (&mut file)
            .take(want.saturating_sub(have))
            .read_to_end(&mut buf)
            .map_err(|e| e.to_string())?;
        match gguf::Gguf::parse(&buf, 5) {
            Ok(g) => return Ok(g),
            Err(gguf::GgufError::Truncated { needed }) if (buf.len() as u64) < size => {
                want = needed.max(want * 2).min(size);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Ollama's `format.HumanNumber`: 134515008 -> `134.52M`, 8030261248 -> `8.0B`.
fn human_number(n: u64) -> String {
    const B: f64 = 1e9;
    const M: f64 = 1e6;
    const K: f64 = 1e3;
    let f = n as f64;
    if f >= B {
        let v = f / B;
        if v.fract() == 0.0 {
            format!("{v:.0}B")
        } else {
            format!("{v:.1}B")
        }
    } else if f >= M {
        let v = f / M;
        if v.fract() == 0.0 {
            format!("{v:.0}M")
        } else {
            format!("{v:.2}M")
        }
    } else if f >= K {
        format!("{:.0}K", f / K)
    } else {
        n.to_string()
    }
}

// ------------------------------------------------------------ handlers

async fn root(method: Method) -> Response {
    if method == Method::GET || method == Method::HEAD {
        (StatusCode::OK, "Ollama is running").into_response()
    } else {
        (StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed").into_response()
    }
}

async fn version(State(st): State<St>) -> Response {
    count(&st);
    json_response(StatusCode::OK, json!({ "version": VERSION }))
}

async fn tags(State(st): State<St>) -> Response {
    count(&st);
    let Ok(inner) = st.inner.lock() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "lock");
    };
    let mut models: Vec<(String, Value)> = inner
        .local
        .iter()
        .filter_map(|(k, l)| {
            let m = inner.registry.get(k)?;
            Some((
                l.modified_at.clone(),
                json!({
                    "name": m.display,
                    "model": m.display,
                    "modified_at": l.modified_at,
                    "size": m.size(),
                    "digest": m.manifest_digest(),
                    "details": details_of(&st, m),
                }),
            ))
        })
        .collect();
    // Most recently modified first, as Ollama sorts.
    models.sort_by(|a, b| b.0.cmp(&a.0));
    let models: Vec<Value> = models.into_iter().map(|(_, v)| v).collect();
    json_response(StatusCode::OK, json!({ "models": models }))
}

async fn ps(State(st): State<St>) -> Response {
    count(&st);
    let Ok(inner) = st.inner.lock() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "lock");
    };
    let models: Vec<Value> = inner
        .loaded
        .iter()
        .filter_map(|(k, l)| {
            let m = inner.registry.get(k)?;
            Some(json!({
                "name": m.display,
                "model": m.display,
                "size": l.size,
                "digest": m.manifest_digest(),
                "details": details_of(&st, m),
                "expires_at": l.expires_at,
                "size_vram": l.size_vram,
                "context_length": st.context_length,
            }))
        })
        .collect();
    json_response(StatusCode::OK, json!({ "models": models }))
}

async fn show(State(st): State<St>, body: Bytes) -> Response {
    count(&st);
    let v = match parse_body(&body) {
        Ok(v) => v,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let name = model_field(&v);
    if name.is_empty() {
        return error(StatusCode::BAD_REQUEST, "model is required");
    }
    let Some(display) = display_name(&name) else {
        return error(StatusCode::BAD_REQUEST, "invalid model name");
    };
    let Ok(inner) = st.inner.lock() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "lock");
    };
    let k = key(&display);
    let (Some(m), Some(local)) = (inner.registry.get(&k), inner.local.get(&k)) else {
        return error(StatusCode::NOT_FOUND, format!("model '{name}' not found"));
    };
    let (model_info, tensors) = match (&st.gguf, m.spec.gguf, &m.spec.model_info) {
        (_, _, Some(info)) => (info.clone(), Vec::new()),
        (Some(g), true, None) => {
            let tensors: Vec<Value> = g
                .tensors
                .iter()
                .map(|t| json!({"name": t.name, "type": gguf::ggml_type_name(t.ggml_type), "shape": t.shape}))
                .collect();
            (g.model_info(), tensors)
        }
        _ => (Map::new(), Vec::new()),
    };
    let mut resp = json!({
        "license": "",
        "modelfile": format!("# Modelfile generated by \"ollama show\"\n# To build a new Modelfile based on this, replace FROM with:\n# FROM {}\n\nFROM {}\nTEMPLATE {{{{ .Prompt }}}}\n", m.display, m.display),
        "parameters": "",
        "template": "{{ .Prompt }}",
        "details": details_of(&st, m),
        "model_info": model_info,
        "capabilities": ["completion"],
        "modified_at": local.modified_at,
    });
    if !tensors.is_empty() {
        resp["tensors"] = Value::Array(tensors);
    }
    json_response(StatusCode::OK, resp)
}

async fn delete(State(st): State<St>, body: Bytes) -> Response {
    count(&st);
    let v = match parse_body(&body) {
        Ok(v) => v,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let name = model_field(&v);
    let Some(display) = display_name(&name) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("name \"{name}\" is invalid"),
        );
    };
    let Ok(mut inner) = st.inner.lock() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "lock");
    };
    let k = key(&display);
    if inner.local.remove(&k).is_none() {
        return error(StatusCode::NOT_FOUND, format!("model '{name}' not found"));
    }
    // Ollama prunes blobs no other local model uses.
    let in_use: Vec<String> = inner
        .local
        .keys()
        .filter_map(|lk| inner.registry.get(lk))
        .flat_map(|m| m.layers.iter().map(|l| l.digest.clone()))
        .collect();
    if let Some(m) = inner.registry.get(&k).cloned() {
        for l in &m.layers {
            if !in_use.contains(&l.digest) {
                inner.blobs.remove(&l.digest);
            }
        }
    }
    StatusCode::OK.into_response()
}

async fn generate(State(st): State<St>, body: Bytes) -> Response {
    count(&st);
    let v = match parse_body(&body) {
        Ok(v) => v,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let name = model_field(&v);
    let Some(display) = display_name(&name) else {
        return error(StatusCode::NOT_FOUND, format!("model '{name}' not found"));
    };
    let prompt = v.get("prompt").and_then(Value::as_str).unwrap_or("");
    let keep_alive_zero = matches!(v.get("keep_alive"), Some(Value::Number(n)) if n.as_f64() == Some(0.0))
        || matches!(v.get("keep_alive"), Some(Value::String(s)) if s == "0" || s == "0s");
    let Ok(mut inner) = st.inner.lock() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "lock");
    };
    let k = key(&display);
    let Some(m) = inner
        .registry
        .get(&k)
        .filter(|_| inner.local.contains_key(&k))
        .cloned()
    else {
        return error(StatusCode::NOT_FOUND, format!("model '{name}' not found"));
    };
    if !prompt.is_empty() {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "ollama-standin does not generate text",
        );
    }
    let created_at = now_rfc3339(Duration::ZERO);
    if keep_alive_zero {
        inner.loaded.remove(&k);
        return json_response(
            StatusCode::OK,
            json!({"model": name, "created_at": created_at, "response": "", "done": true, "done_reason": "unload"}),
        );
    }
    inner.loaded.insert(
        k,
        Loaded {
            size: m.size(),
            size_vram: 0,
            expires_at: now_rfc3339(Duration::from_secs(300)),
        },
    );
    json_response(
        StatusCode::OK,
        json!({"model": name, "created_at": created_at, "response": "", "done": true, "done_reason": "load"}),
    )
}

async fn standin_state(State(st): State<St>) -> Response {
    let Ok(inner) = st.inner.lock() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "lock");
    };
    json_response(
        StatusCode::OK,
        json!({
            "requests": inner.requests,
            "pulls": inner.pulls,
            "active_pulls": inner.active_pulls,
            "blobs": inner.blobs,
        }),
    )
}

// ------------------------------------------------------------ pull

/// Decrements the active-pull count however the producer ends (finished,
/// failed, or the client went away).
struct ActivePull(St);
impl Drop for ActivePull {
    fn drop(&mut self) {
        if let Ok(mut i) = self.0.inner.lock() {
            i.active_pulls = i.active_pulls.saturating_sub(1);
        }
    }
}

fn line(v: Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

fn progress(status: &str, digest: &str, total: u64, completed: u64) -> Value {
    // Ollama's ProgressResponse: digest/total/completed are omitempty.
    let mut v = json!({ "status": status, "digest": digest, "total": total });
    if completed > 0 {
        v["completed"] = json!(completed);
    }
    v
}

/// Produces the pull's lines into `tx`; stops when the client has gone
/// (the send fails), keeping the bytes each blob reached.
async fn produce(st: St, model: Option<Model>, tx: tokio::sync::mpsc::Sender<Value>) {
    let _active = ActivePull(st.clone());
    if tx
        .send(json!({"status": "pulling manifest"}))
        .await
        .is_err()
    {
        return;
    }
    let Some(model) = model else {
        let _ = tx
            .send(json!({"error": "pull model manifest: file does not exist"}))
            .await;
        return;
    };
    let rate = model.spec.rate_bytes_per_sec.unwrap_or(st.rate).max(1);
    let per_tick = ((rate as u128 * st.tick.as_millis()) / 1000).max(1) as u64;
    let mut moved: u64 = 0;
    for layer in &model.layers {
        let status = format!("pulling {}", &layer.digest[7..19]);
        let have = st
            .inner
            .lock()
            .ok()
            .and_then(|i| i.blobs.get(&layer.digest).copied())
            .unwrap_or(0)
            .min(layer.size);
        if have == layer.size {
            // A blob already on disk: one line, complete.
            if tx
                .send(progress(&status, &layer.digest, layer.size, layer.size))
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        let mut done = have;
        if tx
            .send(progress(&status, &layer.digest, layer.size, done))
            .await
            .is_err()
        {
            return;
        }
        while done < layer.size {
            tokio::time::sleep(st.tick).await;
            let step = per_tick.min(layer.size - done);
            if let Some(limit) = model.spec.fail_after_bytes {
                if moved + step > limit {
                    let partial = limit - moved;
                    done += partial;
                    if let Ok(mut i) = st.inner.lock() {
                        i.blobs.insert(layer.digest.clone(), done);
                    }
                    let msg = model
                        .spec
                        .fail_message
                        .clone()
                        .unwrap_or_else(|| "max retries exceeded: unexpected EOF".into());
                    let _ = tx.send(json!({ "error": msg })).await;
                    return;
                }
            }
            done += step;
            moved += step;
            if let Ok(mut i) = st.inner.lock() {
                i.blobs.insert(layer.digest.clone(), done);
            }
            if tx
                .send(progress(&status, &layer.digest, layer.size, done))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    if let Some(ms) = model.spec.quiet_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    for status in ["verifying sha256 digest", "writing manifest"] {
        if tx.send(json!({ "status": status })).await.is_err() {
            return;
        }
    }
    if let Ok(mut i) = st.inner.lock() {
        i.local.insert(
            key(&model.display),
            Local {
                modified_at: now_rfc3339(Duration::ZERO),
            },
        );
    }
    let _ = tx.send(json!({"status": "success"})).await;
}

async fn pull(State(st): State<St>, body: Bytes) -> Response {
    count(&st);
    let v = match parse_body(&body) {
        Ok(v) => v,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let name = model_field(&v);
    let Some(display) = display_name(&name) else {
        return error(StatusCode::BAD_REQUEST, "invalid model name");
    };
    let stream = v.get("stream").and_then(Value::as_bool).unwrap_or(true);
    let model = {
        let Ok(mut inner) = st.inner.lock() else {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "lock");
        };
        let model = inner.registry.get(&key(&display)).cloned();
        if let Some(m) = &model {
            if let Some(code) = m.spec.http_status {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let msg = m
                    .spec
                    .http_message
                    .clone()
                    .unwrap_or_else(|| "registry unavailable".into());
                return error(status, msg);
            }
        }
        inner.pulls += 1;
        inner.active_pulls += 1;
        model
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Value>(16);
    tokio::spawn(produce(st.clone(), model, tx));
    if !stream {
        // waitForStream: the last progress, or the error with status 500.
        let mut last = json!({});
        while let Some(v) = rx.recv().await {
            if v.get("error").is_some() {
                return json_response(StatusCode::INTERNAL_SERVER_ERROR, v);
            }
            last = v;
        }
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            last.to_string(),
        )
            .into_response();
    }
    let body = futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|o| o.map(|v| Ok::<_, std::io::Error>(line(v))))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain")],
        "404 page not found",
    )
        .into_response()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::CONTENT_TYPE, "text/plain")],
        "405 method not allowed",
    )
        .into_response()
}

// ------------------------------------------------------------ startup

fn build(args: &Args) -> Result<Shared, String> {
    let cat: CatalogueFile = match &args.catalogue {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => CatalogueFile::default(),
    };
    let gguf = match &args.gguf {
        Some(p) => {
            let g = read_gguf(p).map_err(|e| format!("{}: {e}", p.display()))?;
            eprintln!(
                "ollama-standin: {} is GGUF v{} ({} keys, {} tensors, {} parameters)",
                p.display(),
                g.version,
                g.kv.len(),
                g.tensors.len(),
                g.parameter_count()
            );
            Some(g)
        }
        None => None,
    };
    let mut inner = Inner {
        registry: BTreeMap::new(),
        local: BTreeMap::new(),
        loaded: BTreeMap::new(),
        blobs: HashMap::new(),
        requests: 0,
        pulls: 0,
        active_pulls: 0,
    };
    for spec in cat.models {
        let display =
            display_name(&spec.name).ok_or_else(|| format!("invalid model name {}", spec.name))?;
        if spec.gguf && gguf.is_none() {
            return Err(format!("{} wants --gguf", spec.name));
        }
        let mut layers: Vec<Layer> = spec
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| Layer {
                digest: l
                    .digest
                    .clone()
                    .unwrap_or_else(|| layer_digest(&display, i)),
                size: l.size,
            })
            .collect();
        if let (Some(n), Some(size)) = (spec.layer_count, spec.layer_size) {
            for i in layers.len()..layers.len() + n as usize {
                layers.push(Layer {
                    digest: layer_digest(&display, i),
                    size,
                });
            }
        }
        if spec.gguf && layers.is_empty() {
            let size = args
                .gguf
                .as_ref()
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .unwrap_or(1);
            layers.push(Layer {
                digest: layer_digest(&display, 0),
                size,
            });
        }
        if layers
            .iter()
            .any(|l| l.digest.len() < 19 || !l.digest.starts_with("sha256:"))
        {
            return Err(format!("{}: layer digests are sha256:<hex>", spec.name));
        }
        let model = Model {
            display: display.clone(),
            layers,
            spec,
        };
        let k = key(&display);
        if model.spec.local {
            for l in &model.layers {
                inner.blobs.insert(l.digest.clone(), l.size);
            }
            inner.local.insert(
                k.clone(),
                Local {
                    modified_at: now_rfc3339(Duration::ZERO),
                },
            );
        }
        if let Some(l) = &model.spec.loaded {
            inner.loaded.insert(
                k.clone(),
                Loaded {
                    size: l.size.unwrap_or_else(|| model.size()),
                    size_vram: l.size_vram,
                    expires_at: now_rfc3339(Duration::from_secs(300)),
                },
            );
        }
        inner.registry.insert(k, model);
    }
    let context_length = std::env::var("OLLAMA_CONTEXT_LENGTH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_CONTEXT);
    Ok(Shared {
        inner: Mutex::new(inner),
        gguf,
        rate: cat.rate_bytes_per_sec.unwrap_or(args.rate).max(1),
        tick: Duration::from_millis(cat.tick_ms.unwrap_or(args.tick_ms).max(1)),
        context_length,
    })
}

/// Ollama's startup line: `server config env="map[...]"`, Go map order (sorted).
fn server_config_line() -> String {
    let env = |k: &str, default: &str| std::env::var(k).unwrap_or_else(|_| default.to_string());
    let fa = matches!(
        env("OLLAMA_FLASH_ATTENTION", "").trim(),
        "1" | "true" | "TRUE" | "True"
    );
    let vars = [
        (
            "OLLAMA_CONTEXT_LENGTH",
            env("OLLAMA_CONTEXT_LENGTH", &DEFAULT_CONTEXT.to_string()),
        ),
        ("OLLAMA_FLASH_ATTENTION", fa.to_string()),
        ("OLLAMA_HOST", env("OLLAMA_HOST", "http://127.0.0.1:11434")),
        ("OLLAMA_KEEP_ALIVE", env("OLLAMA_KEEP_ALIVE", "5m0s")),
        ("OLLAMA_KV_CACHE_TYPE", env("OLLAMA_KV_CACHE_TYPE", "")),
        (
            "OLLAMA_MAX_LOADED_MODELS",
            env("OLLAMA_MAX_LOADED_MODELS", "0"),
        ),
        ("OLLAMA_NUM_PARALLEL", env("OLLAMA_NUM_PARALLEL", "1")),
    ];
    let body: Vec<String> = vars.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!(
        "time={} level=INFO source=routes.go:1 msg=\"server config\" env=\"map[{}]\"",
        now_rfc3339(Duration::ZERO),
        body.join(" ")
    )
}

/// OLLAMA_HOST as Ollama reads it (`host`, `host:port`, `scheme://host:port`;
/// default port 11434), or its default 127.0.0.1:11434.
fn ollama_host() -> Result<SocketAddr, String> {
    let raw = std::env::var("OLLAMA_HOST").unwrap_or_default();
    let raw = raw.trim();
    let raw = raw.split_once("://").map(|(_, r)| r).unwrap_or(raw);
    let raw = raw.trim_end_matches('/');
    let with_port = match raw {
        "" => "127.0.0.1:11434".to_string(),
        r if r.contains(':') => r.to_string(),
        r => format!("{r}:11434"),
    };
    with_port
        .parse()
        .map_err(|e| format!("OLLAMA_HOST {raw:?} is not an address: {e}"))
}

/// `ollama list`: GET /api/tags from the server at OLLAMA_HOST (0.0.0.0 means
/// this machine) and print the names; exit 1 when the server does not answer
/// 200. Plain std I/O: the healthcheck of a FROM scratch image.
fn list() -> std::process::ExitCode {
    use std::io::{Read, Write};
    let fail = |msg: String| {
        eprintln!("Error: {msg}");
        std::process::ExitCode::from(1)
    };
    let mut addr = match ollama_host() {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let timeout = Duration::from_secs(5);
    let mut conn = match std::net::TcpStream::connect_timeout(&addr, timeout) {
        Ok(c) => c,
        Err(e) => return fail(format!("could not connect to ollama server at {addr}: {e}")),
    };
    let _ = conn.set_read_timeout(Some(timeout));
    let req = format!("GET /api/tags HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut resp = Vec::new();
    if let Err(e) = conn
        .write_all(req.as_bytes())
        .and_then(|_| conn.read_to_end(&mut resp))
    {
        return fail(format!("GET /api/tags: {e}"));
    }
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return fail(format!(
            "GET /api/tags: {}",
            head.lines().next().unwrap_or("")
        ));
    }
    // The body may be chunked; the JSON object is between the first `{` and the last `}`.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if a < b => &body[a..=b],
        _ => return fail("GET /api/tags: no JSON body".into()),
    };
    let v: Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(e) => return fail(format!("GET /api/tags: {e}")),
    };
    println!("NAME");
    for m in v["models"].as_array().into_iter().flatten() {
        println!("{}", m["name"].as_str().unwrap_or(""));
    }
    std::process::ExitCode::SUCCESS
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.command.as_deref() == Some("list") {
        return list();
    }
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(serve(args)),
        Err(e) => {
            eprintln!("ollama-standin: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn serve(args: Args) -> std::process::ExitCode {
    let listen = match args.listen.map(Ok).unwrap_or_else(ollama_host) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ollama-standin: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let shared = match build(&args) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("ollama-standin: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let app = Router::new()
        .route("/", any(root))
        .route("/api/version", get(version).head(version))
        .route("/api/tags", get(tags).head(tags))
        .route("/api/ps", get(ps))
        .route("/api/show", axum::routing::post(show))
        .route("/api/delete", axum::routing::delete(delete))
        .route("/api/pull", axum::routing::post(pull))
        .route("/api/generate", axum::routing::post(generate))
        .route("/standin/state", get(standin_state))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(shared);
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ollama-standin: cannot listen on {listen}: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    eprintln!("{}", server_config_line());
    eprintln!(
        "time={} level=INFO source=routes.go:1 msg=\"Listening on {addr} (version {VERSION})\"",
        now_rfc3339(Duration::ZERO)
    );
    println!("ollama-standin listening on http://{addr}");
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("ollama-standin: {e}");
        return std::process::ExitCode::from(1);
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_numbers_as_ollama_prints_them() {
        assert_eq!(super::human_number(134_515_008), "134.52M");
        assert_eq!(super::human_number(8_030_261_248), "8.0B");
        assert_eq!(super::human_number(7_000_000_000), "7B");
        assert_eq!(super::human_number(1_500), "2K");
    }

    use super::*;

    #[test]
    fn names_follow_ollama() {
        assert_eq!(display_name("llama3.1").as_deref(), Some("llama3.1:latest"));
        assert_eq!(
            display_name("library/phi3:mini").as_deref(),
            Some("phi3:mini")
        );
        assert_eq!(
            display_name("registry.ollama.ai/library/phi3:mini").as_deref(),
            Some("phi3:mini")
        );
        assert_eq!(
            display_name("hf.co/org/m:q4").as_deref(),
            Some("hf.co/org/m:q4")
        );
        assert_eq!(display_name("a b"), None);
        assert_eq!(display_name("../x"), None);
        assert_eq!(display_name("a/b/c/d"), None);
    }

    #[test]
    fn progress_lines_omit_zero_completed() {
        let v = progress("pulling abc", "sha256:abc", 10, 0);
        assert!(v.get("completed").is_none());
        assert_eq!(progress("p", "d", 10, 4)["completed"], 4);
    }
}
