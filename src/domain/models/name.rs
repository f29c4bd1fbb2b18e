//! An Ollama model name that has been checked before it reaches an adapter.
//!
//! The rules are Ollama's own (`types/model/name.go`): `[host/][namespace/]model[:tag]`,
//! each part made of ASCII letters, digits, `_`, `-` and `.`, starting with a
//! letter, digit or `_`; a namespace has no `.`; a host may carry a `:port`.
//! On top of that stackpilot refuses `..`, a leading `/`, whitespace, control
//! characters and shell metacharacters outright and caps the length, so a
//! name an agent made up can never become a path, a flag or a shell word on
//! the way to Ollama, and an error message never echoes a 10 KB argument.
use std::fmt;

use crate::domain::error::ToolError;

/// The longest name accepted, in bytes (Ollama's parts allow more; no real
/// model name comes close).
pub const MAX_LEN: usize = 256;
/// Ollama's limit for the model, namespace and tag parts.
const MAX_PART: usize = 80;
/// Ollama's limit for the host part.
const MAX_HOST: usize = 350;

/// What a valid name may contain, for error messages.
const ALLOWED: &str =
    "letters, digits, `.`, `_`, `-`; `/` between host, namespace and model; `:` before the tag";

/// A model name that passed `parse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelName {
    raw: String,
    host: Option<String>,
    namespace: Option<String>,
    model: String,
    tag: Option<String>,
}

fn bad(field: &str, rule: impl Into<String>) -> ToolError {
    ToolError::invalid(field, rule).next_step(format!(
        "give an Ollama model name such as `llama3.1:8b` or `namespace/model:tag` ({ALLOWED})"
    ))
}

/// How a character is described in an error, without echoing anything odd.
fn describe(c: char) -> String {
    if c.is_control() || c.is_whitespace() {
        format!("U+{:04X}", c as u32)
    } else {
        format!("`{c}`")
    }
}

fn check_part(field: &str, kind: &str, part: &str, max: usize) -> Result<(), ToolError> {
    if part.is_empty() {
        return Err(bad(field, format!("the {kind} part is empty")));
    }
    if part.len() > max {
        return Err(bad(
            field,
            format!(
                "the {kind} part is {} characters; at most {max}",
                part.len()
            ),
        ));
    }
    let first = part.chars().next().unwrap_or('_');
    if !(first.is_ascii_alphanumeric() || first == '_') {
        return Err(bad(
            field,
            format!(
                "the {kind} part must start with a letter, digit or `_`, not {}",
                describe(first)
            ),
        ));
    }
    for c in part.chars() {
        let ok = c.is_ascii_alphanumeric()
            || c == '_'
            || c == '-'
            || (c == '.' && kind != "namespace")
            || (c == ':' && kind == "host");
        if !ok {
            return Err(bad(
                field,
                format!("{} is not allowed in the {kind} part", describe(c)),
            ));
        }
    }
    Ok(())
}

impl ModelName {
    /// Validates `raw` as the value of input field `field`.
    pub fn parse(field: &str, raw: &str) -> Result<Self, ToolError> {
        if raw.is_empty() {
            return Err(bad(field, "is empty"));
        }
        if raw.len() > MAX_LEN {
            return Err(bad(
                field,
                format!("is {} bytes long; at most {MAX_LEN}", raw.len()),
            ));
        }
        if let Some(c) = raw.chars().find(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad(
                field,
                format!(
                    "contains {}: no whitespace or control characters",
                    describe(c)
                ),
            ));
        }
        const SHELL: &[char] = &[
            ';', '&', '|', '$', '`', '\\', '"', '\'', '<', '>', '(', ')', '{', '}', '[', ']', '*',
            '?', '!', '#', '~', '%', '^', '=', ',', '@', '+',
        ];
        if let Some(c) = raw.chars().find(|c| SHELL.contains(c)) {
            return Err(bad(
                field,
                format!(
                    "contains {} (shell metacharacters are not allowed)",
                    describe(c)
                ),
            ));
        }
        if !raw.is_ascii() {
            return Err(bad(field, format!("must be ASCII ({ALLOWED})")));
        }
        if raw.starts_with('/') {
            return Err(bad(field, "must not start with `/`"));
        }
        if raw.contains("..") {
            return Err(bad(field, "must not contain `..`"));
        }
        if raw.contains("//") || raw.ends_with('/') {
            return Err(bad(field, "has an empty part between `/`"));
        }
        let slashes: Vec<&str> = raw.split('/').collect();
        if slashes.len() > 3 {
            return Err(bad(
                field,
                "has more than three `/`-separated parts (host/namespace/model at most)",
            ));
        }
        let (host, namespace, last) = match slashes.as_slice() {
            [m] => (None, None, *m),
            [ns, m] => (None, Some(*ns), *m),
            [h, ns, m] => (Some(*h), Some(*ns), *m),
            _ => return Err(bad(field, "is not a model name")),
        };
        let (model, tag) = match last.split_once(':') {
            Some((m, t)) => (m, Some(t)),
            None => (last, None),
        };
        if let Some(h) = host {
            check_part(field, "host", h, MAX_HOST)?;
        }
        if let Some(ns) = namespace {
            check_part(field, "namespace", ns, MAX_PART)?;
        }
        check_part(field, "model", model, MAX_PART)?;
        if let Some(t) = tag {
            check_part(field, "tag", t, MAX_PART)?;
        }
        Ok(Self {
            raw: raw.to_string(),
            host: host.map(str::to_string),
            namespace: namespace.map(str::to_string),
            model: model.to_string(),
            tag: tag.map(str::to_string),
        })
    }

    /// The name as the caller wrote it (what is sent to Ollama).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Ollama's shortest display form, lowercased, for matching against
    /// `/api/tags` and `/api/ps` names: the default host and `library`
    /// namespace dropped, `:latest` added when no tag was given. Ollama
    /// matches names case-insensitively (`getExistingName`).
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        let host = self
            .host
            .as_deref()
            .filter(|h| !h.eq_ignore_ascii_case("registry.ollama.ai"));
        let namespace = self.namespace.as_deref();
        match (host, namespace) {
            (Some(h), ns) => {
                out.push_str(h);
                out.push('/');
                out.push_str(ns.unwrap_or("library"));
                out.push('/');
            }
            (None, Some(ns)) if !ns.eq_ignore_ascii_case("library") => {
                out.push_str(ns);
                out.push('/');
            }
            _ => {}
        }
        out.push_str(&self.model);
        out.push(':');
        out.push_str(self.tag.as_deref().unwrap_or("latest"));
        out.to_ascii_lowercase()
    }

    /// Whether a name Ollama reported (from `/api/tags` or `/api/ps`) is this model.
    pub fn matches(&self, reported: &str) -> bool {
        match ModelName::parse("reported", reported) {
            Ok(other) => other.canonical() == self.canonical(),
            Err(_) => reported.eq_ignore_ascii_case(&self.raw),
        }
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_names() {
        for ok in [
            "llama3.1:8b",
            "llama3.1",
            "qwen2.5:14b-instruct-q4_K_M",
            "nomic-embed-text:latest",
            "library/mistral:7b",
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
            "registry.ollama.ai/library/phi3:mini",
            "localhost:5000/team/model:v1",
            "_private:1",
        ] {
            assert!(ModelName::parse("model", ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_with_field_and_rule() {
        let long = "x".repeat(10 * 1024);
        for (bad, rule) in [
            ("", "empty"),
            ("llama3;rm -rf /", "U+0020"),
            ("llama3;reboot", "`;`"),
            ("$(reboot)", "`$`"),
            ("`id`", "shell metacharacters"),
            ("a|b", "`|`"),
            ("a&&b", "`&`"),
            ("../../etc/passwd", "`..`"),
            ("/etc/passwd", "start with `/`"),
            ("a/b/c/d", "three"),
            ("a//b", "empty part"),
            ("llama 3", "U+0020"),
            ("llama\n3", "U+000A"),
            ("llama\u{0}", "U+0000"),
            ("mödel", "ASCII"),
            (long.as_str(), "at most 256"),
            ("-rf", "start with"),
            ("ns.x/model", "`.` is not allowed in the namespace"),
            ("model:", "tag part is empty"),
            ("model:a:b", "`:` is not allowed in the tag"),
        ] {
            let e = ModelName::parse("model", bad).expect_err(bad);
            assert_eq!(e.field.as_deref(), Some("model"), "{bad}");
            assert!(
                e.message.contains(rule),
                "{bad:?}: {} lacks {rule}",
                e.message
            );
            assert!(e.message.len() < 400, "bounded message for {}", bad.len());
        }
    }

    #[test]
    fn canonical_forms_match_what_ollama_lists() {
        let n = ModelName::parse("model", "Llama3.1").expect("valid");
        assert_eq!(n.canonical(), "llama3.1:latest");
        assert!(n.matches("llama3.1:latest"));
        assert!(!n.matches("llama3.1:8b"));
        let n = ModelName::parse("model", "registry.ollama.ai/library/phi3:mini").expect("valid");
        assert_eq!(n.canonical(), "phi3:mini");
        assert!(n.matches("phi3:mini"));
        let n = ModelName::parse("model", "library/phi3:mini").expect("valid");
        assert!(n.matches("phi3:mini"));
        let n = ModelName::parse("model", "hf.co/org/m:q4").expect("valid");
        assert_eq!(n.canonical(), "hf.co/org/m:q4");
    }
}
