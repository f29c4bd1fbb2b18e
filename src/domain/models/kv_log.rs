//! What the KV cache really is, from the lines llama.cpp prints (through
//! Ollama's log) when Ollama loads a model, and Ollama's own warnings when it
//! ignores the type it was asked for. Pure text parsing: set_kv_cache reads a
//! container's log or the unit's journal, the memory benchmark a server log.
//!
//! The lines (Ollama 0.11.4, verbatim in docs/ollama-0.11.4-observed.md):
//! ```text
//! llama_kv_cache_unified: kv_size = 8192, type_k = 'f16', type_v = 'f16', n_layer = 30, can_shift = 1, padding = 32
//! llama_kv_cache_unified: KV self size  =  180.00 MiB, K (f16):   90.00 MiB, V (f16):   90.00 MiB
//! level=WARN source=server.go:229 msg="quantized kv cache requested but flash attention disabled" type=q8_0
//! ```
//! Later llama.cpp prints `llama_kv_cache_unified: size = 180.00 MiB (8192
//! cells, 30 layers, 1/1 seqs), K (f16): 90.00 MiB, V (f16): 90.00 MiB`;
//! both forms are read. Models on Ollama's own engine (gemma3, gpt-oss, ...)
//! print neither.

/// One KV cache allocation as llama.cpp logged it.
#[derive(Debug, Clone, PartialEq)]
pub struct KvAllocation {
    /// Cells (tokens × slots, padded), when the log says.
    pub cells: Option<u64>,
    pub layers: Option<u32>,
    /// ggml type of K and V (`f16`, `q8_0`, `q4_0`).
    pub type_k: String,
    pub type_v: String,
    /// K + V, in MiB as printed (two decimals).
    pub total_mib: f64,
    pub k_mib: f64,
    pub v_mib: f64,
}

impl KvAllocation {
    /// The total in bytes (to the 0.01 MiB the log prints).
    pub fn total_bytes(&self) -> u64 {
        (self.total_mib * (1u64 << 20) as f64).round() as u64
    }
}

/// The text after the last `msg="server config"` line (the last start of
/// the server), or all of it when there is none.
pub fn since_last_start(log: &str) -> &str {
    match log.rfind("msg=\"server config\"") {
        Some(at) => &log[at..],
        None => log,
    }
}

fn after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.find(key).map(|i| line[i + key.len()..].trim_start())
}

fn number(s: &str) -> Option<f64> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s[..end].parse().ok()
}

/// `K (f16):   90.00 MiB` -> ("f16", 90.0).
fn typed_mib(line: &str, which: &str) -> Option<(String, f64)> {
    let rest = after(line, &format!("{which} ("))?;
    let close = rest.find(')')?;
    let t = rest[..close].to_string();
    let value = number(rest[close + 1..].trim_start_matches(':').trim_start())?;
    Some((t, value))
}

/// The last KV cache allocation in `log`.
pub fn last_allocation(log: &str) -> Option<KvAllocation> {
    let mut found: Option<KvAllocation> = None;
    let mut cells: Option<u64> = None;
    let mut layers: Option<u32> = None;
    for line in log.lines() {
        if !line.contains("llama_kv_cache") {
            continue;
        }
        if let Some(kv) = after(line, "kv_size =") {
            cells = number(kv).map(|n| n as u64);
            layers = after(line, "n_layer =").and_then(number).map(|n| n as u32);
            continue;
        }
        let (Some((type_k, k_mib)), Some((type_v, v_mib))) =
            (typed_mib(line, "K"), typed_mib(line, "V"))
        else {
            continue;
        };
        let total = after(line, "KV self size  =")
            .or_else(|| after(line, "KV self size ="))
            .or_else(|| after(line, "size ="))
            .and_then(number)
            .unwrap_or(k_mib + v_mib);
        // The newer one-line form carries cells and layers in parentheses.
        let (c, l) = match after(line, "MiB (") {
            Some(p) => (
                number(p).map(|n| n as u64),
                after(p, "cells,").and_then(number).map(|n| n as u32),
            ),
            None => (cells, layers),
        };
        found = Some(KvAllocation {
            cells: c,
            layers: l,
            type_k,
            type_v,
            total_mib: total,
            k_mib,
            v_mib,
        });
    }
    found
}

/// Ollama's warnings that it did not apply the KV cache type it was given:
/// (the message, the type named) for each, in order.
pub fn ignored_type_warnings(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            l.contains("quantized kv cache requested but flash attention disabled")
                || l.contains("kv cache type not supported by model")
        })
        .map(|l| {
            let msg = after(l, "msg=")
                .map(|m| m.trim_matches('"'))
                .unwrap_or(l)
                .to_string();
            msg.replace("\" type=", " type=")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLLAMA_0114: &str = r#"time=2026-11-28T07:36:11.485Z level=INFO source=routes.go:1304 msg="server config" env="map[OLLAMA_KV_CACHE_TYPE:q8_0]"
time=2026-11-28T07:37:20.522Z level=WARN source=server.go:206 msg="flash attention enabled but not supported by gpu"
time=2026-11-28T07:37:20.522Z level=WARN source=server.go:229 msg="quantized kv cache requested but flash attention disabled" type=q8_0
llama_context: n_ctx         = 8192
llama_kv_cache_unified: kv_size = 8192, type_k = 'f16', type_v = 'f16', n_layer = 30, can_shift = 1, padding = 32
llama_kv_cache_unified:        CPU KV buffer size =   180.00 MiB
llama_kv_cache_unified: KV self size  =  180.00 MiB, K (f16):   90.00 MiB, V (f16):   90.00 MiB
llama_context:        CPU compute buffer size =    98.25 MiB
"#;

    #[test]
    fn reads_ollama_0_11_4s_lines() {
        let a = last_allocation(OLLAMA_0114).expect("allocation");
        assert_eq!(a.cells, Some(8192));
        assert_eq!(a.layers, Some(30));
        assert_eq!((a.type_k.as_str(), a.type_v.as_str()), ("f16", "f16"));
        assert_eq!((a.total_mib, a.k_mib, a.v_mib), (180.0, 90.0, 90.0));
        assert_eq!(a.total_bytes(), 180 << 20);
        assert_eq!(
            ignored_type_warnings(OLLAMA_0114),
            ["quantized kv cache requested but flash attention disabled type=q8_0"]
        );
    }

    #[test]
    fn the_last_allocation_after_the_last_start_counts() {
        let two = format!(
            "{OLLAMA_0114}llama_kv_cache_unified: kv_size = 2048, type_k = 'q4_0', type_v = 'q4_0', n_layer = 30, can_shift = 1, padding = 256\nllama_kv_cache_unified: KV self size  =   12.66 MiB, K (q4_0):    6.33 MiB, V (q4_0):    6.33 MiB\n"
        );
        let a = last_allocation(&two).expect("allocation");
        assert_eq!((a.cells, a.type_k.as_str()), (Some(2048), "q4_0"));
        let restarted = format!(
            "{two}time=x level=INFO source=routes.go:1 msg=\"server config\" env=\"map[]\"\n"
        );
        assert_eq!(last_allocation(since_last_start(&restarted)), None);
        assert!(ignored_type_warnings(since_last_start(&restarted)).is_empty());
    }

    #[test]
    fn reads_the_newer_one_line_form() {
        let log = "llama_kv_cache_unified:        CPU KV buffer size =   180.00 MiB\nllama_kv_cache_unified: size =  180.00 MiB (  8192 cells,  30 layers,  1/1 seqs), K (q8_0):   47.81 MiB, V (q8_0):   47.81 MiB\n";
        let a = last_allocation(log).expect("allocation");
        assert_eq!(a.cells, Some(8192));
        assert_eq!(a.layers, Some(30));
        assert_eq!(a.type_k, "q8_0");
        assert_eq!(a.total_mib, 180.0);
        assert_eq!(last_allocation("nothing here"), None);
    }
}
