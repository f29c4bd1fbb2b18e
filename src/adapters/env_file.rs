//! Reads and writes the stack's `.env`. Writes replace the file atomically
//! (adapters::files), keeping its permissions, so a crash never leaves half a
//! file.
use std::path::Path;

use crate::domain::env::EnvFile;

/// Reads the file; a missing file is an empty one.
pub fn load(path: &Path) -> std::io::Result<EnvFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(EnvFile::parse(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(EnvFile::default()),
        Err(e) => Err(e),
    }
}

/// Replaces the file with `env`, keeping the file's permissions.
pub fn write_atomic(env: &EnvFile, path: &Path) -> std::io::Result<()> {
    crate::adapters::files::write_atomic(path, env.render().as_bytes(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(".env");
        std::fs::write(&path, "# comment\nA=1\nB=2\n").expect("write");
        let mut env = load(&path).expect("load");
        env.set("B", "x");
        write_atomic(&env, &path).expect("write_atomic");
        let back = load(&path).expect("reload");
        assert_eq!(back.get("B").as_deref(), Some("x"));
        assert_eq!(back.get("A").as_deref(), Some("1"));
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
