//! The stack's `.env`: the single source of truth for compose. stackpilot only
//! ever rewrites the keys it owns; every other line and comment is kept as is,
//! and the file is replaced atomically so a crash never leaves half a file.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// A parsed `.env` that remembers its original lines.
#[derive(Debug, Clone, Default)]
pub struct EnvFile {
    lines: Vec<String>,
}

fn parse_assignment(line: &str) -> Option<(&str, &str)> {
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') {
        return None;
    }
    let body = trimmed.strip_prefix("export ").unwrap_or(trimmed);
    let (key, value) = body.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    Some((key, value))
}

fn unquote(value: &str) -> String {
    let v = value.trim();
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].to_string();
        }
    }
    // An unquoted value ends at an inline comment (` #`).
    match v.find(" #") {
        Some(i) => v[..i].trim_end().to_string(),
        None => v.to_string(),
    }
}

impl EnvFile {
    pub fn parse(text: &str) -> Self {
        Self {
            lines: text.lines().map(str::to_string).collect(),
        }
    }

    /// Reads the file; a missing file is an empty one.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Self::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// The value of `key` (the last assignment wins, as in compose).
    pub fn get(&self, key: &str) -> Option<String> {
        self.lines
            .iter()
            .filter_map(|l| parse_assignment(l))
            .rfind(|(k, _)| *k == key)
            .map(|(_, v)| unquote(v))
    }

    pub fn values(&self) -> BTreeMap<String, String> {
        self.lines
            .iter()
            .filter_map(|l| parse_assignment(l))
            .map(|(k, v)| (k.to_string(), unquote(v)))
            .collect()
    }

    /// Sets `key` in place (every assignment of it), or appends it.
    pub fn set(&mut self, key: &str, value: &str) {
        let mut found = false;
        for line in &mut self.lines {
            if matches!(parse_assignment(line), Some((k, _)) if k == key) {
                *line = format!("{key}={value}");
                found = true;
            }
        }
        if !found {
            self.lines.push(format!("{key}={value}"));
        }
    }

    pub fn render(&self) -> String {
        let mut out = self.lines.join("\n");
        out.push('\n');
        out
    }

    /// Writes through a temporary file in the same directory, fsyncs it, and
    /// renames it over the target, keeping the target's permissions.
    pub fn write_atomic(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(".env.stackpilot-")
            .tempfile_in(dir)?;
        tmp.write_all(self.render().as_bytes())?;
        tmp.as_file().sync_all()?;
        if let Ok(meta) = std::fs::metadata(path) {
            tmp.as_file().set_permissions(meta.permissions())?;
        }
        tmp.persist(path).map_err(|e| e.error)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# comment\nexport A=1\nB=\"two words\"\n\n# keep me\nC=3 # inline\nA=4\n";

    #[test]
    fn parses_and_keeps_unowned_lines() {
        let mut env = EnvFile::parse(SAMPLE);
        assert_eq!(env.get("A").as_deref(), Some("4"));
        assert_eq!(env.get("B").as_deref(), Some("two words"));
        assert_eq!(env.get("C").as_deref(), Some("3"));
        env.set("C", "30");
        env.set("D", "new");
        let out = env.render();
        assert!(out.starts_with(
            "# comment\nexport A=1\nB=\"two words\"\n\n# keep me\nC=30\nA=4\nD=new\n"
        ));
    }

    #[test]
    fn atomic_write_replaces_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(".env");
        std::fs::write(&path, SAMPLE).expect("write");
        let mut env = EnvFile::load(&path).expect("load");
        env.set("B", "x");
        env.write_atomic(&path).expect("write_atomic");
        let back = EnvFile::load(&path).expect("reload");
        assert_eq!(back.get("B").as_deref(), Some("x"));
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
