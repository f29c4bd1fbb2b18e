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

/// Redacts free text from a container (logs, health-check output, probe
/// answers): every known secret value, the value of every `KEY=value` /
/// `KEY: value` token whose key names a secret, and control characters
/// (terminal escapes) so the text cannot rewrite what a person sees.
pub fn redact_text(text: &str, secrets: &[String]) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_control() && c != '\t' && c != '\n' {
                ' '
            } else {
                c
            }
        })
        .collect();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), REDACTED);
    }
    out.lines()
        .map(redact_line_tokens)
        .collect::<Vec<_>>()
        .join("\n")
}

fn redact_line_tokens(line: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut redact_next = false;
    for word in line.split(' ') {
        if redact_next && !word.is_empty() {
            words.push(REDACTED.to_string());
            redact_next = false;
            continue;
        }
        match word.split_once('=') {
            Some((k, v))
                if !v.is_empty()
                    && is_secret_key(
                        k.trim_matches(|c: char| !c.is_alphanumeric() && c != '_'),
                    ) =>
            {
                words.push(format!("{k}={REDACTED}"));
            }
            _ => {
                if let Some(k) = word.strip_suffix(':') {
                    redact_next =
                        is_secret_key(k.trim_matches(|c: char| !c.is_alphanumeric() && c != '_'));
                }
                words.push(word.to_string());
            }
        }
    }
    words.join(" ")
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

/// The values of `KEY=value` entries whose keys name a secret (an
/// instance's environment, a .env): they are cut out of anything printed.
/// Values under 4 bytes are left out (masking `1` or `ab` would mangle text
/// and protect nothing).
pub fn secret_values(env: &[String]) -> Vec<String> {
    let mut out: Vec<String> = env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, v)| is_secret_key(k) && v.len() >= 4)
        .map(|(_, v)| v.to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Lines and bytes of text from a container, redacted and capped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CapturedText {
    pub lines: Vec<String>,
    /// Older lines or bytes were dropped to stay within the caps.
    pub truncated: bool,
}

/// Keeps the last `max_lines` lines within `max_bytes`, each redacted.
pub fn tail_lines(
    raw: &[u8],
    max_lines: usize,
    max_bytes: usize,
    secrets: &[String],
) -> CapturedText {
    let text = String::from_utf8_lossy(raw);
    let all: Vec<&str> = text.lines().collect();
    let mut truncated = all.len() > max_lines;
    let start = all.len().saturating_sub(max_lines);
    let mut kept: Vec<String> = Vec::new();
    let mut bytes = 0usize;
    for line in all[start..].iter().rev() {
        let line = redact_text(line, secrets);
        let line = cap(&line, max_bytes.min(1024));
        if bytes + line.len() + 1 > max_bytes {
            truncated = true;
            break;
        }
        bytes += line.len() + 1;
        kept.push(line);
    }
    kept.reverse();
    CapturedText {
        lines: kept,
        truncated,
    }
}

/// The last `max` bytes of `s`, on a char boundary, saying how much was cut.
pub fn tail_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[{start} bytes cut] …{}", &s[start..])
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
            redact_text("connecting with DB_PASSWORD=hunter2 user=app", &[]),
            "connecting with DB_PASSWORD=[redacted] user=app"
        );
        assert_eq!(
            redact_text("api_key: abc123 model: llama", &[]),
            "api_key: [redacted] model: llama"
        );
        assert_eq!(
            redact_text("bell\u{7}\u{1b}[2Jclear", &[]),
            "bell  [2Jclear"
        );
    }

    #[test]
    fn free_text_is_redacted() {
        let text = "starting\nDB_PASSWORD=hunter2 user=app\napi_key: abc123 next\nconnect with s3cr3t-value ok";
        let r = redact_text(text, &["s3cr3t-value".to_string()]);
        assert!(!r.contains("hunter2"), "{r}");
        assert!(!r.contains("abc123"), "{r}");
        assert!(!r.contains("s3cr3t-value"), "{r}");
        assert!(r.contains("user=app") && r.contains("next") && r.contains("starting"));
    }

    #[test]
    fn tails_keep_the_newest_lines_within_caps() {
        let raw = b"one\ntwo\nPASSWORD=x\nfour\n";
        let t = tail_lines(raw, 2, 1000, &[]);
        assert_eq!(t.lines, ["PASSWORD=[redacted]", "four"]);
        assert!(t.truncated);
        let t = tail_lines(raw, 10, 10, &[]);
        assert_eq!(t.lines, ["four"], "bytes cap drops the oldest lines");
        assert!(t.truncated);
        let t = tail_lines(b"a\nb\n", 10, 100, &[]);
        assert_eq!(t.lines, ["a", "b"]);
        assert!(!t.truncated);
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
