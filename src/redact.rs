//! Secret redaction and output bounding: values whose keys name a secret never
//! reach an agent or the audit log, and text from containers is capped.
use serde_json::Value;

const SECRET_MARKERS: [&str; 5] = ["PASSWORD", "SECRET", "TOKEN", "KEY", "CREDENTIAL"];

/// Whether a key (env var name, argument name) names a secret.
pub fn is_secret_key(key: &str) -> bool {
    let upper = key.to_ascii_uppercase();
    SECRET_MARKERS.iter().any(|m| upper.contains(m))
}

pub const REDACTED: &str = "[redacted]";

/// Redacts every object member whose key names a secret, recursively.
pub fn redact_json(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    if is_secret_key(k) && !v.is_null() {
                        (k.clone(), Value::String(REDACTED.into()))
                    } else {
                        (k.clone(), redact_json(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact_json).collect()),
        Value::String(s) => Value::String(cap(s, 4096)),
        other => other.clone(),
    }
}

/// Redacts `KEY=value` pairs in free text (env dumps, command lines).
pub fn redact_env_line(line: &str) -> String {
    match line.split_once('=') {
        Some((k, _)) if is_secret_key(k.trim()) => format!("{}={REDACTED}", k),
        _ => line.to_string(),
    }
}

/// Redacts secrets in free text from a container (log lines, probe output):
/// every `KEY=value` token and every `key: value` pair whose key names a
/// secret, and drops control characters (terminal escapes) so the text cannot
/// rewrite what a person sees.
pub fn redact_text(line: &str) -> String {
    let clean: String = line
        .chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect();
    let mut out: Vec<String> = Vec::new();
    let mut hide_next = false;
    for token in clean.split(' ') {
        if hide_next && !token.is_empty() {
            out.push(REDACTED.to_string());
            hide_next = false;
            continue;
        }
        if let Some((k, _)) = token.split_once('=') {
            let key = k.trim_start_matches(['-', '"', '\'']);
            if is_secret_key(key) {
                out.push(format!("{k}={REDACTED}"));
                continue;
            }
        }
        if let Some(key) = token.strip_suffix(':') {
            if is_secret_key(key.trim_matches(['"', '\''])) {
                hide_next = true;
            }
        }
        out.push(token.to_string());
    }
    out.join(" ")
}

/// Caps a string at `max` bytes on a char boundary, saying how much was cut.
pub fn cap(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} bytes cut]", &s[..end], s.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_redacted_recursively() {
        let v = json!({"POSTGRES_PASSWORD": "x", "nested": {"api_key": "y", "model": "m"}, "confirm_token": "t"});
        let r = redact_json(&v);
        assert_eq!(r["POSTGRES_PASSWORD"], REDACTED);
        assert_eq!(r["nested"]["api_key"], REDACTED);
        assert_eq!(r["nested"]["model"], "m");
        assert_eq!(r["confirm_token"], REDACTED);
    }

    #[test]
    fn free_text_secrets_are_redacted() {
        assert_eq!(
            redact_text("connecting with DB_PASSWORD=hunter2 user=app"),
            "connecting with DB_PASSWORD=[redacted] user=app"
        );
        assert_eq!(
            redact_text("api_key: abc123 model: llama"),
            "api_key: [redacted] model: llama"
        );
        assert_eq!(redact_text("bell\u{7}\u{1b}[2Jclear"), "bell  [2Jclear");
    }

    #[test]
    fn env_lines_and_caps() {
        assert_eq!(
            redact_env_line("DB_PASSWORD=hunter2"),
            "DB_PASSWORD=[redacted]"
        );
        assert_eq!(redact_env_line("MODEL=llama"), "MODEL=llama");
        let long = "é".repeat(100);
        let c = cap(&long, 11);
        assert!(c.starts_with("ééééé"));
        assert!(c.contains("bytes cut"));
    }
}
