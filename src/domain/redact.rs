//! Secret redaction and output bounding: values whose keys name a secret never
//! reach an agent or the audit log, and text from containers is capped.
use serde_json::Value;

const SECRET_MARKERS: [&str; 5] = ["PASSWORD", "SECRET", "TOKEN", "KEY", "CREDENTIAL"];

/// Whether a key (env var name, argument name) names a secret. A `_FILE`
/// variable (`POSTGRES_PASSWORD_FILE`, the Docker-secret convention) names
/// the path of a file that holds the secret: the path is not secret, and
/// errors about it must be able to show it.
pub fn is_secret_key(key: &str) -> bool {
    let upper = key.to_ascii_uppercase();
    !upper.ends_with("_FILE") && SECRET_MARKERS.iter().any(|m| upper.contains(m))
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
/// answers): every known secret value (longest first, so a value that
/// contains another is cut whole), then the shapes secrets are written in
/// even when stackpilot does not know the value: the password of a URL's
/// userinfo (`postgres://app:PASSWORD@db`), `Authorization:` headers and bare
/// `Bearer` credentials, JSON members whose key names a secret
/// (`"api_key": "..."`), and `KEY=value` / `KEY: value` tokens whose key
/// names a secret. Control characters (terminal escapes) become spaces so
/// the text cannot rewrite what a person sees.
pub fn redact_text(text: &str, secrets: &[String]) -> String {
    let clean: String = text
        .chars()
        .map(|c| {
            if c.is_control() && c != '\t' && c != '\n' {
                ' '
            } else {
                c
            }
        })
        .collect();
    mask(&clean, secrets)
        .lines()
        .map(redact_line_tokens)
        .collect::<Vec<_>>()
        .join("\n")
}

/// What every output, audit line and log line gets, stackpilot's own words
/// included: the known secret values (longest first) and the unmistakable
/// shapes (URL userinfo, authorization and bearer credentials, secret-named
/// JSON members). The looser `KEY: value` token rule is for container text
/// only (`redact_text`), where it cannot mangle stackpilot's messages.
pub fn mask(text: &str, secrets: &[String]) -> String {
    let mut out = std::borrow::Cow::Borrowed(text);
    let mut known: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    known.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in known {
        if out.contains(s.as_str()) {
            out = std::borrow::Cow::Owned(out.replace(s.as_str(), REDACTED));
        }
    }
    redact_shapes(&out)
}

struct Shapes {
    url_userinfo: regex::Regex,
    authorization: regex::Regex,
    bearer: regex::Regex,
    json_member: regex::Regex,
}

fn shapes() -> &'static Shapes {
    static SHAPES: std::sync::OnceLock<Shapes> = std::sync::OnceLock::new();
    SHAPES.get_or_init(|| {
        let re = |p: &str| regex::Regex::new(p).expect("a valid built-in pattern");
        Shapes {
            url_userinfo: re(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]*):([^\s@/]+)@"),
            authorization: re(
                r#"(?i)\b((?:proxy-)?authorization"?\s*[:=]\s*"?\s*(?:(?:bearer|basic|token|digest|apikey)\s+)?)([^\s",;]+)"#,
            ),
            bearer: re(r"(?i)\b(bearer\s+)([A-Za-z0-9\-._~+/]{4,}=*)"),
            json_member: re(
                r#"(?i)("[^"\n]*(?:password|passwd|secret|token|key|credential)[^"\n]*"\s*:\s*)("(?:[^"\\\n]|\\.)*"|[^\s,}\]]+)"#,
            ),
        }
    })
}

/// The shape-based rules of `redact_text` (URL userinfo, authorization,
/// bearer credentials, secret-named JSON members).
fn redact_shapes(text: &str) -> String {
    let sh = shapes();
    let text = sh
        .url_userinfo
        .replace_all(text, format!("${{1}}:{REDACTED}@").as_str());
    let text = sh
        .authorization
        .replace_all(&text, format!("${{1}}{REDACTED}").as_str());
    let text = sh
        .bearer
        .replace_all(&text, format!("${{1}}{REDACTED}").as_str());
    let text = sh
        .json_member
        .replace_all(&text, |c: &regex::Captures<'_>| {
            let value = &c[2];
            let name = c[1].to_ascii_lowercase();
            // A bare number or word is masked only under a name that surely holds
            // a secret (`"keys": 3` is a count, `"db_password": 1234` is not).
            let surely = [
                "password",
                "passwd",
                "secret",
                "token",
                "credential",
                "api_key",
                "apikey",
                "private_key",
            ]
            .iter()
            .any(|m| name.contains(m));
            if value.starts_with('"') {
                format!("{}\"{REDACTED}\"", &c[1])
            } else if value == "null" || value == "true" || value == "false" || !surely {
                c[0].to_string()
            } else {
                format!("{}\"{REDACTED}\"", &c[1])
            }
        });
    text.into_owned()
}

/// Applies `mask` to every string inside a JSON value (keys kept, structure
/// kept, so a tool's structured output still matches its schema).
pub fn redact_json_strings(value: &mut Value, secrets: &[String]) {
    match value {
        Value::String(s) => {
            let r = mask(s, secrets);
            if r != *s {
                *s = r;
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| redact_json_strings(v, secrets)),
        Value::Object(map) => map
            .values_mut()
            .for_each(|v| redact_json_strings(v, secrets)),
        _ => {}
    }
}

/// Every secret value stackpilot has seen (the .env, the compose model, the
/// instances' environments), so anything it returns, logs or audits can be
/// masked by value, the way CI systems mask their secrets. Bounded: past
/// [`SecretBook::MAX`] values the oldest learning stops (the shape rules
/// still apply).
#[derive(Debug, Default)]
pub struct SecretBook {
    values: std::sync::RwLock<std::collections::BTreeSet<String>>,
}

impl SecretBook {
    pub const MAX: usize = 4096;

    /// Learns the secret values of `KEY=value` entries (see [`secret_values`]).
    pub fn learn_env(&self, env: &[String]) {
        self.learn(secret_values(env));
    }

    pub fn learn(&self, values: impl IntoIterator<Item = String>) {
        let fresh: Vec<String> = {
            let Ok(known) = self.values.read() else {
                return;
            };
            values
                .into_iter()
                .filter(|v| v.len() >= MIN_SECRET_LEN && !known.contains(v))
                .collect()
        };
        if fresh.is_empty() {
            return;
        }
        if let Ok(mut known) = self.values.write() {
            for v in fresh {
                if known.len() >= Self::MAX {
                    break;
                }
                known.insert(v);
            }
        }
    }

    /// The values, longest first.
    pub fn snapshot(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .values
            .read()
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default();
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        v
    }
}

/// Shorter values are not masked by value: masking `1` or `ab` would mangle
/// text and protect nothing (the shape rules still apply to them).
pub const MIN_SECRET_LEN: usize = 4;

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

/// The secret values in `KEY=value` entries (an instance's environment, a
/// .env): the values of keys that name a secret, and the password of any
/// URL's userinfo whatever its key (`DATABASE_URL=postgres://u:PASSWORD@db`).
/// They are cut out of anything printed. Values under 4 bytes are left out
/// (masking `1` or `ab` would mangle text and protect nothing).
pub fn secret_values(env: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (k, v) in env.iter().filter_map(|kv| kv.split_once('=')) {
        if is_secret_key(k) && v.len() >= MIN_SECRET_LEN {
            out.push(v.to_string());
        }
        for c in shapes().url_userinfo.captures_iter(v) {
            let password = c[2].to_string();
            if password.len() >= MIN_SECRET_LEN {
                out.push(password);
            }
        }
    }
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
        // A Docker-secret path is not the secret.
        let r = redact_json(&json!({"POSTGRES_PASSWORD_FILE": "/run/secrets/pg"}));
        assert_eq!(r["POSTGRES_PASSWORD_FILE"], "/run/secrets/pg");
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
    fn shapes_are_redacted_without_knowing_the_value() {
        let cases = [
            (
                "starting with postgres://postgres:SuperSecret123!@db:5432/app",
                "SuperSecret123!",
            ),
            ("redis://:hunter2hunter2@cache:6379/0", "hunter2hunter2"),
            ("Authorization: Bearer sk-abcdef123456", "sk-abcdef123456"),
            ("authorization=Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
            (
                "curl -H 'X: y' with bearer eyJhbGciOiJIUzI1NiJ9.payload.sig",
                "eyJhbGciOiJIUzI1NiJ9.payload.sig",
            ),
            (r#"{"password":"p4ss-w0rd","user":"app"}"#, "p4ss-w0rd"),
            (r#"{"api_key": "key-123456", "model": "m"}"#, "key-123456"),
            (r#"{"db_password": 987654321}"#, "987654321"),
            (r#"{"token":"with \"escaped\" quote"}"#, "escaped"),
            ("password: hunter22 next", "hunter22"),
            ("DB_PASSWORD=hunter2 user=app", "hunter2"),
        ];
        for (text, secret) in cases {
            let r = redact_text(text, &[]);
            assert!(!r.contains(secret), "{text} -> {r}");
            assert!(r.contains(REDACTED), "{text} -> {r}");
        }
        // What is not a secret stays.
        let plain = r#"{"model":"llama3","keys":3} postgres://db:5432/app user=app"#;
        assert_eq!(redact_text(plain, &[]), plain);
    }

    #[test]
    fn known_values_are_masked_in_any_shape_and_json_keeps_its_structure() {
        let book = SecretBook::default();
        book.learn_env(&[
            "POSTGRES_PASSWORD=s3cr3t-value".into(),
            "DATABASE_URL=postgres://app:urlpass99@db/app".into(),
            "MODEL=llama3".into(),
            "API_KEY=ab".into(),
        ]);
        let known = book.snapshot();
        assert_eq!(known.len(), 2, "{known:?}");
        let r = redact_text("the password is s3cr3t-value, and urlpass99 too", &known);
        assert!(
            !r.contains("s3cr3t-value") && !r.contains("urlpass99"),
            "{r}"
        );
        let mut v =
            serde_json::json!({"lines": ["x s3cr3t-value y"], "n": 3, "confirm_token": "abc.def"});
        redact_json_strings(&mut v, &known);
        assert_eq!(v["lines"][0], "x [redacted] y");
        assert_eq!(v["n"], 3);
        assert_eq!(
            v["confirm_token"], "abc.def",
            "structure and non-secrets kept"
        );
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
