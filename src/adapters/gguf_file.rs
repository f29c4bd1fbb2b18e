//! A GGUF file's header, read from disk for the pure parser in
//! domain::models::gguf: the first MiB, and more only when the header goes on
//! (a tokenizer with a quarter million tokens makes it several MiB). Tensor
//! data is never read. Bounded: a header past `MAX_HEADER_BYTES` is refused.
use std::io::Read;
use std::path::Path;

use crate::domain::models::gguf::{Gguf, GgufError};

/// The first read.
const FIRST_READ: u64 = 1 << 20;
/// No GGUF header is this large (gemma3's, the largest vocabulary here, is
/// under 20 MiB); a file that claims one is refused.
pub const MAX_HEADER_BYTES: u64 = 128 << 20;

/// A GGUF file's metadata and its size on disk.
#[derive(Debug, Clone)]
pub struct GgufFile {
    pub gguf: Gguf,
    pub file_bytes: u64,
}

/// Why a file could not be read as GGUF.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    Format(GgufError),
    TooLarge(u64),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Format(GgufError::Truncated { needed }) => write!(
                f,
                "the file ends inside its GGUF header (it needs at least {needed} bytes)"
            ),
            ReadError::Format(e) => write!(f, "{e}"),
            ReadError::TooLarge(n) => write!(
                f,
                "its GGUF header claims more than {n} bytes: not a model file this reader accepts"
            ),
        }
    }
}

/// Reads the header of the GGUF file at `path` (arrays longer than
/// `keep_arrays` come back empty).
pub fn read(path: &Path, keep_arrays: u64) -> Result<GgufFile, ReadError> {
    let mut file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let file_bytes = file.metadata().map_err(ReadError::Io)?.len();
    let mut buf: Vec<u8> = Vec::new();
    let mut want = FIRST_READ.min(file_bytes);
    loop {
        let have = buf.len() as u64;
        if want > have {
            (&mut file)
                .take(want - have)
                .read_to_end(&mut buf)
                .map_err(ReadError::Io)?;
        }
        match Gguf::parse(&buf, keep_arrays) {
            Ok(gguf) => return Ok(GgufFile { gguf, file_bytes }),
            Err(GgufError::Truncated { needed }) if (buf.len() as u64) < file_bytes => {
                if needed > MAX_HEADER_BYTES {
                    return Err(ReadError::TooLarge(MAX_HEADER_BYTES));
                }
                want = needed.max(want.saturating_mul(2)).min(file_bytes);
            }
            Err(e) => return Err(ReadError::Format(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_gguf_or_ends_early_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("x.gguf");
        std::fs::write(&p, b"not a model at all").expect("write");
        let e = read(&p, 5).expect_err("refused");
        assert!(e.to_string().contains("GGUF"), "{e}");
        // A valid start that stops: GGUF v3, 0 tensors, 1 key, then nothing.
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        std::fs::write(&p, &b).expect("write");
        let e = read(&p, 5).expect_err("refused");
        assert!(e.to_string().contains("ends inside its GGUF header"), "{e}");
        assert!(matches!(
            read(&dir.path().join("missing.gguf"), 5),
            Err(ReadError::Io(_))
        ));
    }
}
