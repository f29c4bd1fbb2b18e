//! The stack: a directory with compose file(s) and a `.env`, plus where
//! stackpilot keeps its state. Resolved once at startup, cheaply.
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::adapters::env_file::EnvFile;

#[derive(Debug, Clone)]
pub struct Stack {
    /// Absolute stack directory.
    pub dir: PathBuf,
    /// Where the lock, audit log and confirmation key live.
    pub state_dir: PathBuf,
    /// The compose project name (COMPOSE_PROJECT_NAME, else the directory name).
    pub project: String,
    /// Stable identifier: sha256(dir, project), first 16 hex digits.
    pub id: String,
}

/// Normalizes a name the way compose does: lowercase, [a-z0-9_-], leading alnum.
pub fn normalize_project_name(name: &str) -> String {
    let lowered: String = name
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    lowered
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

impl Stack {
    pub fn open(dir: &Path, state_dir: Option<&Path>) -> std::io::Result<Self> {
        let dir = std::fs::canonicalize(dir).map_err(|e| {
            std::io::Error::new(e.kind(), format!("stack directory {}: {e}", dir.display()))
        })?;
        let env = EnvFile::load(&dir.join(".env"))?;
        let project = env
            .get("COMPOSE_PROJECT_NAME")
            .map(|p| normalize_project_name(&p))
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| {
                normalize_project_name(
                    &dir.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "stack".into()),
                )
            });
        let id = hex::encode(Sha256::digest(format!("{}\0{}", dir.display(), project)))[..16]
            .to_string();
        let state_dir = state_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.join(".stackpilot"));
        Ok(Self {
            dir,
            state_dir,
            project,
            id,
        })
    }

    pub fn env_path(&self) -> PathBuf {
        self.dir.join(".env")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_follow_compose_rules() {
        assert_eq!(normalize_project_name("My Stack.v2"), "mystackv2");
        assert_eq!(normalize_project_name("_x-Y"), "x-y");
    }
}
