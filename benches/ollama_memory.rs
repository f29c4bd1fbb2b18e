//! The memory model against what the REAL Ollama 0.11.4 allocates (issue 11,
//! part 5). Run: `cargo bench --bench ollama_memory` (needs
//! scripts/peers/ollama.sh start: the real binary and the registry with
//! SmolLM2-135M; no Docker).
//!
//! For each KV cache type (f16 with flash attention off; q8_0 and q4_0 with
//! OLLAMA_FLASH_ATTENTION=1, as select_profile writes them) a fresh
//! `ollama serve` pulls the model, then loads it at 2048, 8192 and 32768
//! tokens (`options.num_ctx`, unloading in between). llama.cpp's
//! `KV self size ... K (type) ... V (type)` line for each load is read from
//! the server's log with the product's reader (domain::models::kv_log) and set
//! beside select_profile's prediction (domain::models::memory, with the facts
//! the product takes from the real /api/show); the weights term (the
//! /api/tags size) beside the tensor buffer llama.cpp logs
//! (`CPU model buffer size`). Prints a markdown table.
//!
//! On this CPU-only machine 0.11.4 allocates f16 whatever type it is given
//! (no flash attention on CPU), and SmolLM2 was trained for 8192 tokens, so
//! Ollama caps 32768 at 8192: the table says which type and how many cells
//! were really allocated, and the quantized predictions are checked against
//! ggml's block sizes (ggml-common.h: block_q8_0 = 2 + 32 bytes per 32
//! elements, block_q4_0 = 2 + 16) instead.
#[path = "../tests/common/ollama_peers.rs"]
mod peers;

use std::time::Duration;

use serde_json::{json, Value};
use stackpilot::domain::models::facts;
use stackpilot::domain::models::kv_log;
use stackpilot::domain::models::memory::{self, KvCacheType};

const CONTEXTS: [u32; 3] = [2048, 8192, 32_768];

fn mib(b: u64) -> f64 {
    b as f64 / f64::from(1u32 << 20)
}

fn error_pct(predicted: f64, real: f64) -> String {
    if real == 0.0 {
        return "n/a".into();
    }
    format!("{:+.2} %", (predicted - real) / real * 100.0)
}

async fn post(url: &str, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .json(&body)
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .expect("request");
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: HTTP {status}: {v}");
    v
}

/// The `CPU model buffer size = N MiB` llama.cpp logs for the weights.
fn model_buffer_mib(log: &str) -> Option<f64> {
    log.lines()
        .rev()
        .find(|l| l.contains("model buffer size"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[tokio::main]
async fn main() {
    let Some(peers) = peers::ollama_peers() else {
        eprintln!("ollama_memory: the real Ollama is not prepared (scripts/peers/ollama.sh start)");
        return;
    };
    let model = peers.host_model();
    let mut rows = Vec::new();
    let mut weights_row = None;
    for (kv, fa) in [
        (KvCacheType::F16, "0"),
        (KvCacheType::Q8_0, "1"),
        (KvCacheType::Q4_0, "1"),
    ] {
        let ollama = peers::HostOllama::start(
            &peers,
            &[
                ("OLLAMA_KV_CACHE_TYPE", kv.as_str()),
                ("OLLAMA_FLASH_ATTENTION", fa),
            ],
        )
        .await;
        post(
            &ollama.url,
            "/api/pull",
            json!({"model": model, "insecure": true, "stream": false}),
        )
        .await;
        // The facts exactly as the product takes them: /api/show + /api/tags' size.
        let tags = ollama.get("/api/tags").await;
        let size = tags["models"][0]["size"].as_u64().expect("size");
        let show = post(&ollama.url, "/api/show", json!({"model": model})).await;
        let info = show["model_info"].as_object().cloned().unwrap_or_default();
        let f = facts::from_metadata(&model, size, &info).expect("facts");
        for ctx in CONTEXTS {
            let before = ollama.log_text().len();
            post(
                &ollama.url,
                "/api/generate",
                json!({"model": model, "prompt": "", "stream": false,
                    "options": {"num_ctx": ctx}}),
            )
            .await;
            let ps = ollama.get("/api/ps").await;
            let ps_ctx = ps["models"][0]["context_length"].as_u64();
            let ps_size = ps["models"][0]["size"].as_u64();
            post(
                &ollama.url,
                "/api/generate",
                json!({"model": model, "keep_alive": 0}),
            )
            .await;
            let log = ollama.log_text();
            let load = &log[before..];
            let a = kv_log::last_allocation(load).expect("a KV allocation line");
            let capped = load.contains("requested context size too large for model");
            let cells = a.cells.unwrap_or(0) as u32;
            let allocated_type = match a.type_k.as_str() {
                "q8_0" => KvCacheType::Q8_0,
                "q4_0" => KvCacheType::Q4_0,
                _ => KvCacheType::F16,
            };
            // The model for what was asked, and for what was really allocated.
            let predicted_asked = memory::kv_cache_bytes(&f, ctx, kv);
            let predicted_real = memory::kv_cache_bytes(&f, cells, allocated_type);
            let real = a.total_bytes();
            if weights_row.is_none() {
                weights_row = model_buffer_mib(load).map(|buf| (size, buf, ps_size));
            }
            rows.push(format!(
                "| {} | {ctx} | {} | {}{} | {:.2} MiB (K {} {:.2}, V {} {:.2}) | {:.2} MiB | {} | {:.2} MiB | {} |",
                kv.as_str(),
                ps_ctx.map(|c| c.to_string()).unwrap_or_default(),
                cells,
                if capped { " (capped: n_ctx_train 8192)" } else { "" },
                a.total_mib,
                a.type_k,
                a.k_mib,
                a.type_v,
                a.v_mib,
                mib(predicted_real),
                error_pct(predicted_real as f64, real as f64),
                mib(predicted_asked),
                if allocated_type == kv && cells == ctx.min(f.max_context) {
                    error_pct(predicted_asked as f64, real as f64)
                } else {
                    "not allocated here".into()
                },
            ));
            let warnings = kv_log::ignored_type_warnings(load);
            if !warnings.is_empty() {
                eprintln!("  {} at {ctx}: Ollama logged {:?}", kv.as_str(), warnings);
            }
        }
        drop(ollama);
    }
    println!("\nKV cache: select_profile's memory model vs llama.cpp's allocation (real Ollama {}, CPU)\n", peers.version);
    println!("| OLLAMA_KV_CACHE_TYPE | num_ctx | /api/ps context | cells allocated | llama.cpp `KV self size` | model, for the type and cells allocated | error | model, for the type and context asked (capped at the trained 8192 as Ollama does) | error |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    if let Some((size, buf, ps_size)) = weights_row {
        let buf_bytes = buf * f64::from(1u32 << 20);
        println!("\nWeights term: /api/tags size {size} bytes ({:.2} MiB) vs llama.cpp `CPU model buffer size = {buf:.2} MiB`: {} (the file also holds the tokenizer and metadata); /api/ps size of the first load {}",
            mib(size),
            error_pct(size as f64, buf_bytes),
            ps_size.map(|s| format!("{s} bytes")).unwrap_or_default());
    }
    // ggml's block sizes, which the quantized predictions use.
    println!(
        "\nBytes per element: f16 {}, q8_0 {} (block_q8_0: 2-byte scale + 32 x int8 per 32), q4_0 {} (block_q4_0: 2-byte scale + 16 bytes per 32)",
        KvCacheType::F16.bytes_per_element(),
        KvCacheType::Q8_0.bytes_per_element(),
        KvCacheType::Q4_0.bytes_per_element()
    );
}
