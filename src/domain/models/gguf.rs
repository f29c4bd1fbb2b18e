//! GGUF metadata from bytes: the header, the key/value metadata and the tensor
//! descriptions (name, shape, type), never the tensor data. Pure: it parses a
//! byte slice; reading a file is the adapter's job (adapters::gguf_file), and
//! when the slice ends before the header does, the error says how many bytes
//! are needed, so the reader can fetch more and parse again.
//!
//! Format (github.com/ggml-org/ggml docs/gguf.md), little-endian:
//! `"GGUF"`, u32 version (2 or 3), u64 tensor_count, u64 kv_count, then
//! kv_count × (string key, u32 type, value), then tensor_count × (string
//! name, u32 n_dims, n_dims × u64 dim, u32 ggml type, u64 offset). A string
//! is u64 length + UTF-8 bytes; an array is u32 element type, u64 count,
//! elements. Value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32,
//! 7 bool, 8 string, 9 array, 10 u64, 11 i64, 12 f64.
//!
//! Arrays longer than `keep_arrays` are skipped, not kept: Ollama's
//! `/api/show` sends them empty too, and a 49,152-entry token list has no
//! place in memory. Per-layer arrays (a head count per layer) are short
//! enough to keep with a limit of a few hundred.
//!
//! Self-contained (std and serde_json only): the Ollama stand-in's own build
//! (tests/images/ollama-standin) includes this file as it is.
use std::fmt;

use serde_json::{Map, Number, Value};

const MAX_STRING: u64 = 16 << 20;
const MAX_COUNT: u64 = 1 << 24;
const MAX_DIMS: u32 = 4;

/// One tensor's description.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<u64>,
    pub ggml_type: u32,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// A GGUF file's metadata.
#[derive(Debug, Clone)]
pub struct Gguf {
    pub version: u32,
    /// Metadata in file order; arrays longer than the limit are empty.
    pub kv: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    /// Bytes of the header (metadata and tensor descriptions) parsed.
    pub header_bytes: u64,
}

/// Why bytes are not a GGUF header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GgufError {
    /// The bytes end before the header does: parse again with at least this many.
    Truncated { needed: u64 },
    /// Not GGUF, or not a GGUF this reader understands.
    Invalid(String),
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufError::Truncated { needed } => {
                write!(
                    f,
                    "the GGUF header goes on past the bytes read (needs at least {needed})"
                )
            }
            GgufError::Invalid(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for GgufError {}

fn bad(msg: impl Into<String>) -> GgufError {
    GgufError::Invalid(msg.into())
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], GgufError> {
        let end = (self.at as u64).saturating_add(n);
        if end > self.b.len() as u64 {
            return Err(GgufError::Truncated { needed: end });
        }
        let s = &self.b[self.at..end as usize];
        self.at = end as usize;
        Ok(s)
    }
    fn skip(&mut self, n: u64) -> Result<(), GgufError> {
        self.take(n).map(|_| ())
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64)?);
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn string(&mut self) -> Result<String, GgufError> {
        let n = self.u64()?;
        if n > MAX_STRING {
            return Err(bad(format!("string of {n} bytes")));
        }
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| bad("string is not UTF-8"))
    }
    fn skip_string(&mut self) -> Result<(), GgufError> {
        let n = self.u64()?;
        if n > MAX_STRING {
            return Err(bad(format!("string of {n} bytes")));
        }
        self.skip(n)
    }

    fn scalar_size(t: u32) -> Option<u64> {
        match t {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        }
    }

    fn value(&mut self, t: u32, keep_arrays: u64) -> Result<Value, GgufError> {
        Ok(match t {
            0 => Value::from(u8::from_le_bytes(self.array()?)),
            1 => Value::from(i8::from_le_bytes(self.array()?)),
            2 => Value::from(u16::from_le_bytes(self.array()?)),
            3 => Value::from(i16::from_le_bytes(self.array()?)),
            4 => Value::from(self.u32()?),
            5 => Value::from(i32::from_le_bytes(self.array()?)),
            // As Go encodes a float32 (Ollama's JSON): its shortest decimal form.
            6 => {
                let f = f32::from_le_bytes(self.array()?);
                format!("{f}")
                    .parse::<f64>()
                    .ok()
                    .and_then(Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
            7 => Value::Bool(self.array::<1>()?[0] != 0),
            8 => Value::String(self.string()?),
            9 => {
                let et = self.u32()?;
                let n = self.u64()?;
                if n > MAX_COUNT {
                    return Err(bad(format!("array of {n} elements")));
                }
                if n > keep_arrays {
                    match (et, Self::scalar_size(et)) {
                        (_, Some(size)) => self.skip(size * n)?,
                        (8, None) => {
                            for _ in 0..n {
                                self.skip_string()?;
                            }
                        }
                        _ => {
                            for _ in 0..n {
                                self.value(et, 0)?;
                            }
                        }
                    }
                    Value::Array(Vec::new())
                } else {
                    let mut items = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        items.push(self.value(et, keep_arrays)?);
                    }
                    Value::Array(items)
                }
            }
            10 => Value::from(self.u64()?),
            11 => Value::from(i64::from_le_bytes(self.array()?)),
            12 => Number::from_f64(f64::from_le_bytes(self.array()?))
                .map(Value::Number)
                .unwrap_or(Value::Null),
            other => return Err(bad(format!("unknown value type {other}"))),
        })
    }
}

impl Gguf {
    /// Parses the header at the start of `bytes` (the rest of the file may be
    /// missing: only the header is read). Arrays longer than `keep_arrays`
    /// come back empty.
    pub fn parse(bytes: &[u8], keep_arrays: u64) -> Result<Self, GgufError> {
        let mut r = Cursor { b: bytes, at: 0 };
        if r.take(4).map_err(|_| GgufError::Truncated { needed: 24 })? != b"GGUF" {
            return Err(bad("not a GGUF file (its first bytes are not `GGUF`)"));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(bad(format!("GGUF version {version} (2 and 3 are read)")));
        }
        let tensor_count = r.u64()?;
        let kv_count = r.u64()?;
        if tensor_count > MAX_COUNT || kv_count > MAX_COUNT {
            return Err(bad("implausible tensor or metadata counts"));
        }
        let mut kv = Vec::with_capacity(kv_count.min(4096) as usize);
        for _ in 0..kv_count {
            let key = r.string()?;
            let t = r.u32()?;
            let v = r.value(t, keep_arrays)?;
            kv.push((key, v));
        }
        let mut tensors = Vec::with_capacity(tensor_count.min(1 << 16) as usize);
        for _ in 0..tensor_count {
            let name = r.string()?;
            let n_dims = r.u32()?;
            if n_dims > MAX_DIMS {
                return Err(bad(format!("tensor {name} has {n_dims} dimensions")));
            }
            let mut shape = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                shape.push(r.u64()?);
            }
            let ggml_type = r.u32()?;
            let _offset = r.u64()?;
            tensors.push(TensorInfo {
                name,
                shape,
                ggml_type,
            });
        }
        Ok(Self {
            version,
            kv,
            tensors,
            header_bytes: r.at as u64,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture")?.as_str()
    }

    /// Sum of the tensors' element counts (what Ollama reports as
    /// `general.parameter_count`).
    pub fn parameter_count(&self) -> u64 {
        self.tensors.iter().map(TensorInfo::elements).sum()
    }

    /// `/api/show`'s model_info: every key but `general.name` and
    /// `tokenizer.chat_template` (Ollama drops both), plus the parameter count.
    pub fn model_info(&self) -> Map<String, Value> {
        let mut m = Map::new();
        for (k, v) in &self.kv {
            if k == "general.name" || k == "tokenizer.chat_template" {
                continue;
            }
            m.insert(k.clone(), v.clone());
        }
        m.insert(
            "general.parameter_count".into(),
            Value::from(self.parameter_count()),
        );
        m
    }

    /// Ollama's name for `general.file_type` (llama.cpp's LLAMA_FTYPE).
    pub fn file_type_name(&self) -> &'static str {
        match self.get("general.file_type").and_then(Value::as_u64) {
            Some(0) => "F32",
            Some(1) => "F16",
            Some(2) => "Q4_0",
            Some(3) => "Q4_1",
            Some(7) => "Q8_0",
            Some(8) => "Q5_0",
            Some(9) => "Q5_1",
            Some(10) => "Q2_K",
            Some(11) => "Q3_K_S",
            Some(12) => "Q3_K_M",
            Some(13) => "Q3_K_L",
            Some(14) => "Q4_K_S",
            Some(15) => "Q4_K_M",
            Some(16) => "Q5_K_S",
            Some(17) => "Q5_K_M",
            Some(18) => "Q6_K",
            Some(32) => "BF16",
            Some(38) => "MXFP4",
            _ => "unknown",
        }
    }
}

/// ggml's name for a tensor type (`api.Tensor.Type`).
pub fn ggml_type_name(t: u32) -> &'static str {
    match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        30 => "BF16",
        39 => "MXFP4",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    }

    /// A hand-built GGUF v3: four keys (one a long array, one a per-layer
    /// array), two tensors.
    fn sample() -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend(5u64.to_le_bytes());
        s(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        s(&mut b, "llama");
        s(&mut b, "llama.block_count");
        b.extend(4u32.to_le_bytes());
        b.extend(3u32.to_le_bytes());
        s(&mut b, "llama.rope.freq_base");
        b.extend(6u32.to_le_bytes());
        b.extend(100000f32.to_le_bytes());
        s(&mut b, "llama.attention.head_count_kv");
        b.extend(9u32.to_le_bytes());
        b.extend(5u32.to_le_bytes());
        b.extend(3u64.to_le_bytes());
        for h in [2i32, 4, 0] {
            b.extend(h.to_le_bytes());
        }
        s(&mut b, "tokenizer.ggml.tokens");
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(7u64.to_le_bytes());
        for t in ["a", "bb", "c", "d", "e", "f", "g"] {
            s(&mut b, t);
        }
        s(&mut b, "token_embd.weight");
        b.extend(2u32.to_le_bytes());
        b.extend(576u64.to_le_bytes());
        b.extend(49152u64.to_le_bytes());
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        s(&mut b, "output_norm.weight");
        b.extend(1u32.to_le_bytes());
        b.extend(576u64.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b
    }

    #[test]
    fn reads_metadata_and_skips_long_arrays() {
        let g = Gguf::parse(&sample(), 5).expect("parse");
        assert_eq!(g.version, 3);
        assert_eq!(g.architecture(), Some("llama"));
        assert_eq!(g.get("llama.block_count"), Some(&Value::from(3u32)));
        assert_eq!(g.get("llama.rope.freq_base"), Some(&Value::from(100000.0)));
        assert_eq!(
            g.get("llama.attention.head_count_kv"),
            Some(&serde_json::json!([2, 4, 0])),
            "a per-layer array is kept"
        );
        assert_eq!(g.get("tokenizer.ggml.tokens"), Some(&Value::Array(vec![])));
        assert_eq!(g.tensors.len(), 2);
        assert_eq!(g.tensors[0].shape, vec![576, 49152]);
        assert_eq!(ggml_type_name(g.tensors[0].ggml_type), "Q4_1");
        assert_eq!(g.parameter_count(), 576 * 49152 + 576);
        assert_eq!(g.header_bytes, sample().len() as u64);
        let kept = Gguf::parse(&sample(), 10).expect("parse");
        assert_eq!(
            kept.get("tokenizer.ggml.tokens")
                .and_then(Value::as_array)
                .map(Vec::len),
            Some(7)
        );
    }

    #[test]
    fn trailing_bytes_are_not_read_and_short_ones_ask_for_more() {
        let mut with_data = sample();
        with_data.extend([0xAAu8; 1000]);
        let g = Gguf::parse(&with_data, 5).expect("parse");
        assert_eq!(g.header_bytes, sample().len() as u64);
        for cut in [3usize, 20, 40, 100, sample().len() - 1] {
            match Gguf::parse(&sample()[..cut], 5) {
                Err(GgufError::Truncated { needed }) => {
                    assert!(needed > cut as u64, "cut {cut}: needs {needed}")
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_what_is_not_gguf() {
        assert!(matches!(
            Gguf::parse(b"GGML\x03\0\0\0", 5),
            Err(GgufError::Invalid(_))
        ));
        let mut v9 = sample();
        v9[4] = 9;
        assert!(matches!(Gguf::parse(&v9, 5), Err(GgufError::Invalid(_))));
        let mut huge = sample();
        // tensor_count = 2^40
        huge[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(Gguf::parse(&huge, 5), Err(GgufError::Invalid(_))));
    }
}
