//! A small GGUF metadata reader: the header, the key/value metadata and the
//! tensor descriptions (name, shape, type), never the tensor data.
//!
//! Format (github.com/ggml-org/ggml docs/gguf.md), little-endian:
//! `"GGUF"`, u32 version (2 or 3), u64 tensor_count, u64 kv_count, then
//! kv_count × (string key, u32 type, value), then tensor_count × (string
//! name, u32 n_dims, n_dims × u64 dim, u32 ggml type, u64 offset). A string
//! is u64 length + UTF-8 bytes; an array is u32 element type, u64 count,
//! elements. Value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32,
//! 7 bool, 8 string, 9 array, 10 u64, 11 i64, 12 f64.
//!
//! Arrays longer than `keep_arrays` are skipped, not kept: that is what
//! Ollama's `/api/show` does (it sends them empty) and keeps a 49,152-entry
//! token list out of memory.
use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::Path;

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

#[derive(Debug, Clone)]
pub struct Gguf {
    pub version: u32,
    /// Metadata in file order; arrays longer than the limit are empty.
    pub kv: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

struct Reader<R> {
    r: R,
}

impl<R: Read + Seek> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b)?;
        Ok(b)
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn string(&mut self) -> io::Result<String> {
        let n = self.u64()?;
        if n > MAX_STRING {
            return Err(bad(format!("string of {n} bytes")));
        }
        let mut buf = vec![0u8; n as usize];
        self.r.read_exact(&mut buf)?;
        String::from_utf8(buf).map_err(|_| bad("string is not UTF-8"))
    }
    fn skip_string(&mut self) -> io::Result<()> {
        let n = self.u64()?;
        if n > MAX_STRING {
            return Err(bad(format!("string of {n} bytes")));
        }
        self.r.seek_relative(n as i64)
    }

    fn scalar_size(t: u32) -> Option<i64> {
        match t {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        }
    }

    fn value(&mut self, t: u32, keep_arrays: u64) -> io::Result<Value> {
        Ok(match t {
            0 => Value::from(u8::from_le_bytes(self.bytes()?)),
            1 => Value::from(i8::from_le_bytes(self.bytes()?)),
            2 => Value::from(u16::from_le_bytes(self.bytes()?)),
            3 => Value::from(i16::from_le_bytes(self.bytes()?)),
            4 => Value::from(self.u32()?),
            5 => Value::from(i32::from_le_bytes(self.bytes()?)),
            // As Go encodes a float32: its shortest decimal form.
            6 => {
                let f = f32::from_le_bytes(self.bytes()?);
                format!("{f}")
                    .parse::<f64>()
                    .ok()
                    .and_then(Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
            7 => Value::Bool(self.bytes::<1>()?[0] != 0),
            8 => Value::String(self.string()?),
            9 => {
                let et = self.u32()?;
                let n = self.u64()?;
                if n > MAX_COUNT {
                    return Err(bad(format!("array of {n} elements")));
                }
                if n > keep_arrays {
                    match (et, Self::scalar_size(et)) {
                        (_, Some(size)) => self.r.seek_relative(size * n as i64)?,
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
            11 => Value::from(i64::from_le_bytes(self.bytes()?)),
            12 => Number::from_f64(f64::from_le_bytes(self.bytes()?))
                .map(Value::Number)
                .unwrap_or(Value::Null),
            other => return Err(bad(format!("unknown value type {other}"))),
        })
    }
}

impl Gguf {
    /// Reads the metadata of the GGUF file at `path`.
    pub fn open(path: &Path, keep_arrays: u64) -> io::Result<Self> {
        let file = File::open(path)?;
        Self::read(BufReader::new(file), keep_arrays)
    }

    pub fn read<R: Read + Seek>(r: R, keep_arrays: u64) -> io::Result<Self> {
        let mut r = Reader { r };
        if &r.bytes::<4>()? != b"GGUF" {
            return Err(bad("not a GGUF file (magic)"));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(bad(format!("GGUF version {version} (2 and 3 are read)")));
        }
        let tensor_count = r.u64()?;
        let kv_count = r.u64()?;
        if tensor_count > MAX_COUNT || kv_count > MAX_COUNT {
            return Err(bad("implausible counts"));
        }
        let mut kv = Vec::with_capacity(kv_count as usize);
        for _ in 0..kv_count {
            let key = r.string()?;
            let t = r.u32()?;
            let v = r.value(t, keep_arrays)?;
            kv.push((key, v));
        }
        let mut tensors = Vec::with_capacity(tensor_count as usize);
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
        self.tensors
            .iter()
            .map(|t| t.shape.iter().product::<u64>())
            .sum()
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
    pub fn file_type_name(&self) -> String {
        let ft = self.get("general.file_type").and_then(Value::as_u64);
        match ft {
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
            _ => "unknown",
        }
        .to_string()
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
        _ => "unknown",
    }
}

/// Ollama's `format.HumanNumber`: 134515008 -> `134.52M`, 8030261248 -> `8.0B`.
pub fn human_number(n: u64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    }

    /// A hand-built GGUF v3: three keys (one a long array), two tensors.
    fn sample() -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend(4u64.to_le_bytes());
        s(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        s(&mut b, "llama");
        s(&mut b, "llama.block_count");
        b.extend(4u32.to_le_bytes());
        b.extend(30u32.to_le_bytes());
        s(&mut b, "llama.rope.freq_base");
        b.extend(6u32.to_le_bytes());
        b.extend(100000f32.to_le_bytes());
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
        let g = Gguf::read(Cursor::new(sample()), 5).expect("parse");
        assert_eq!(g.version, 3);
        assert_eq!(g.architecture(), Some("llama"));
        assert_eq!(g.get("llama.block_count"), Some(&Value::from(30u32)));
        assert_eq!(g.get("llama.rope.freq_base"), Some(&Value::from(100000.0)));
        assert_eq!(g.get("tokenizer.ggml.tokens"), Some(&Value::Array(vec![])));
        assert_eq!(g.tensors.len(), 2);
        assert_eq!(g.tensors[0].shape, vec![576, 49152]);
        assert_eq!(ggml_type_name(g.tensors[0].ggml_type), "Q4_1");
        assert_eq!(g.parameter_count(), 576 * 49152 + 576);
        let kept = Gguf::read(Cursor::new(sample()), 10).expect("parse");
        assert_eq!(
            kept.get("tokenizer.ggml.tokens")
                .and_then(Value::as_array)
                .map(Vec::len),
            Some(7)
        );
    }

    #[test]
    fn refuses_what_is_not_gguf() {
        assert!(Gguf::read(Cursor::new(b"GGML\x03\0\0\0".to_vec()), 5).is_err());
        let mut truncated = sample();
        truncated.truncate(40);
        assert!(Gguf::read(Cursor::new(truncated), 5).is_err());
        let mut v9 = sample();
        v9[4] = 9;
        assert!(Gguf::read(Cursor::new(v9), 5).is_err());
    }

    #[test]
    fn human_numbers_as_ollama_prints_them() {
        assert_eq!(human_number(134_515_008), "134.52M");
        assert_eq!(human_number(8_030_261_248), "8.0B");
        assert_eq!(human_number(7_000_000_000), "7B");
        assert_eq!(human_number(1_500), "2K");
    }
}
