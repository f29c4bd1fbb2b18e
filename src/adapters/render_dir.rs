//! Where a Kubernetes render is written: a directory stackpilot owns. It
//! must not exist yet, be empty, or hold a previous render (its
//! `.stackpilot-render` list of files); files of the previous render that the
//! new one lacks are removed, nothing else is touched. Every file is
//! written atomically; files with secret values get mode 0600.
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::adapters::files::write_atomic;

/// Lists the files of the render in the directory (one relative path a line).
pub const MARKER: &str = ".stackpilot-render";

#[derive(Debug, Clone)]
pub struct Written {
    /// Relative to the directory.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    pub secret: bool,
}

/// Why a directory cannot take a render.
#[derive(Debug)]
pub enum DirError {
    /// It holds files stackpilot did not write.
    Foreign(PathBuf, Vec<String>),
    /// It is a file, or unreadable.
    NotADirectory(PathBuf),
    Io(std::io::Error),
}

impl From<std::io::Error> for DirError {
    fn from(e: std::io::Error) -> Self {
        DirError::Io(e)
    }
}

fn previous(dir: &Path) -> Result<Option<Vec<String>>, DirError> {
    if !dir.exists() {
        return Ok(None);
    }
    if !dir.is_dir() {
        return Err(DirError::NotADirectory(dir.to_path_buf()));
    }
    match std::fs::read_to_string(dir.join(MARKER)) {
        Ok(text) => Ok(Some(
            text.lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
        )),
        Err(_) => {
            let mut entries: Vec<String> = std::fs::read_dir(dir)?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            entries.sort();
            if entries.is_empty() {
                Ok(Some(Vec::new()))
            } else {
                Err(DirError::Foreign(dir.to_path_buf(), entries))
            }
        }
    }
}

/// Writes the files (relative paths without `..`), replacing a previous render.
pub fn write(dir: &Path, files: &[(String, Vec<u8>, bool)]) -> Result<Vec<Written>, DirError> {
    let old = previous(dir)?.unwrap_or_default();
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for (rel, bytes, secret) in files {
        let path = dir.join(rel);
        write_atomic(&path, bytes, Some(if *secret { 0o600 } else { 0o644 }))?;
        out.push(Written {
            path: rel.clone(),
            bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
            secret: *secret,
        });
    }
    for stale in old
        .iter()
        .filter(|o| !files.iter().any(|(rel, _, _)| rel == *o))
    {
        if !stale.contains("..") {
            let _ = std::fs::remove_file(dir.join(stale));
        }
    }
    let mut list: Vec<&str> = files.iter().map(|(rel, _, _)| rel.as_str()).collect();
    list.sort();
    let mut marker = list.join("\n");
    marker.push('\n');
    write_atomic(&dir.join(MARKER), marker.as_bytes(), Some(0o644))?;
    Ok(out)
}
