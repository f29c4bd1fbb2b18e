//! The stack's `.env`: the single source of truth for compose. stackpilot only
//! ever rewrites the keys it owns; every other line and comment is kept as is
//! (adapters::env_file reads and replaces the file atomically).
use std::collections::BTreeMap;

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
}
