//! The secrets a stack's .env must hold, and generated values for them.
//!
//! Which keys: every variable the compose files read (`${VAR}`, defaults
//! included) or pass through by name (`environment: [VAR]`, `VAR:` with no
//! value) whose name marks it as a secret (PASSWORD, SECRET, TOKEN, KEY,
//! CREDENTIAL: the same rule that redacts them everywhere), plus the ones an
//! image needs without the compose file naming them: POSTGRES_PASSWORD for a
//! Postgres service that reads the stack's .env through `env_file`.
//!
//! The policy (seed 003): at least 8 characters with an upper-case letter, a
//! lower-case letter, a digit and a symbol. The symbols are `-`, `_` and `.`:
//! they need no quoting in a .env, a shell assignment, YAML or a URL's user
//! part, so a generated value works wherever the stack puts it.
use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::Value;

use crate::domain::redact::is_secret_key;
use crate::domain::stack_model::Role;

pub const DEFAULT_LENGTH: usize = 32;
pub const MIN_LENGTH: usize = 8;
pub const MAX_LENGTH: usize = 128;

const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const DIGITS: &[u8] = b"0123456789";
const SYMBOLS: &[u8] = b"-_.";

/// Whether a value meets the password policy.
pub fn meets_policy(value: &str) -> bool {
    let has = |set: &[u8]| value.bytes().any(|b| set.contains(&b));
    value.len() >= MIN_LENGTH && has(UPPER) && has(LOWER) && has(DIGITS) && has(SYMBOLS)
}

/// A value of `length` characters (MIN_LENGTH..=MAX_LENGTH) that meets the
/// policy: one character of each class, the rest uniform over all of them,
/// shuffled. `rng` must be a cryptographic generator.
pub fn generate<R: Rng + rand::CryptoRng + ?Sized>(length: usize, rng: &mut R) -> String {
    let length = length.clamp(MIN_LENGTH, MAX_LENGTH);
    let all: Vec<u8> = [UPPER, LOWER, DIGITS, SYMBOLS].concat();
    let mut out: Vec<u8> = [UPPER, LOWER, DIGITS, SYMBOLS]
        .iter()
        .map(|set| set[rng.random_range(0..set.len())])
        .collect();
    while out.len() < length {
        out.push(all[rng.random_range(0..all.len())]);
    }
    out.shuffle(rng);
    // Every byte comes from the ASCII sets above.
    out.into_iter().map(char::from).collect()
}

/// One key the .env should hold, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub key: String,
    /// Where the stack needs it, in one line (`referenced in docker-compose.yml`).
    pub why: String,
}

/// A valid .env key name.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 128
        && key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn walk_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| walk_strings(i, out)),
        Value::Object(map) => map.values().for_each(|i| walk_strings(i, out)),
        _ => {}
    }
}

/// Keys a service takes by name from compose's environment (`environment:
/// [VAR]` or `VAR:` with no value): compose fills them from the .env.
fn passed_through(service: &Value) -> Vec<String> {
    match service.get("environment") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.contains('='))
            .map(|s| s.trim().to_string())
            .collect(),
        Some(Value::Object(map)) => map
            .iter()
            .filter(|(_, v)| v.is_null())
            .map(|(k, _)| k.clone())
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether a service reads the stack's `.env` through `env_file`.
fn reads_dotenv(service: &Value) -> bool {
    let is_dotenv = |p: &str| matches!(p.trim().trim_start_matches("./"), ".env");
    match service.get("env_file") {
        Some(Value::String(p)) => is_dotenv(p),
        Some(Value::Array(items)) => items.iter().any(|i| match i {
            Value::String(p) => is_dotenv(p),
            Value::Object(o) => o.get("path").and_then(Value::as_str).is_some_and(is_dotenv),
            _ => false,
        }),
        _ => false,
    }
}

/// Keys a service sets itself in `environment` (so a .env value would be ignored).
fn sets_itself(service: &Value, key: &str) -> bool {
    match service.get("environment") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .any(|s| s.split_once('=').is_some_and(|(k, _)| k.trim() == key)),
        Some(Value::Object(map)) => map.get(key).is_some_and(|v| !v.is_null()),
        _ => false,
    }
}

/// The secret keys the stack needs from its .env, sorted, each once (with
/// the first reason found). `documents` are the compose files as written
/// (file label, parsed YAML); `roles` the services' roles from the model.
pub fn wanted_keys(documents: &[(String, Value)], roles: &BTreeMap<String, Role>) -> Vec<Wanted> {
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    let mut add = |key: String, why: String| {
        if valid_key(&key) {
            found.entry(key).or_insert(why);
        }
    };
    for (file, doc) in documents {
        let mut strings = Vec::new();
        walk_strings(doc, &mut strings);
        for s in &strings {
            for name in crate::domain::interpolate::references(s) {
                if is_secret_key(&name) {
                    add(name.clone(), format!("referenced as ${{{name}}} in {file}"));
                }
            }
        }
        let Some(Value::Object(services)) = doc.get("services") else {
            continue;
        };
        for (name, svc) in services {
            for key in passed_through(svc) {
                if is_secret_key(&key) {
                    add(
                        key.clone(),
                        format!(
                            "passed to service `{name}` by name (environment: {key}) in {file}"
                        ),
                    );
                }
            }
            let role = roles.get(name).copied();
            if role == Some(Role::Postgres)
                && reads_dotenv(svc)
                && !sets_itself(svc, "POSTGRES_PASSWORD")
                && !sets_itself(svc, "POSTGRES_PASSWORD_FILE")
            {
                add(
                    "POSTGRES_PASSWORD".into(),
                    format!("service `{name}` (role postgres) reads the .env through env_file in {file}; the postgres image needs it to initialize"),
                );
            }
        }
    }
    found
        .into_iter()
        .map(|(key, why)| Wanted { key, why })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generated_values_meet_the_policy() {
        let mut rng = rand::rng();
        for len in [8, 9, 32, 128] {
            for _ in 0..200 {
                let v = generate(len, &mut rng);
                assert_eq!(v.len(), len);
                assert!(meets_policy(&v), "{v}");
            }
        }
        let a = generate(32, &mut rng);
        let b = generate(32, &mut rng);
        assert_ne!(a, b);
        assert!(!meets_policy("Abcdefg1"), "no symbol");
        assert!(!meets_policy("Ab1-"), "too short");
        assert!(meets_policy("Abcdef1-"));
    }

    #[test]
    fn wanted_keys_come_from_references_pass_throughs_and_roles() {
        let doc = json!({
            "services": {
                "db": {"image": "postgres:16", "env_file": ".env"},
                "api": {
                    "image": "app:${APP_TAG:-1}",
                    "environment": ["DATABASE_URL=postgres://app:${DB_PASSWORD}@db/app", "JWT_SECRET", "MODE=prod", "LOG_LEVEL"],
                },
                "worker": {"image": "w", "environment": {"API_TOKEN": null, "OTHER": "x", "SESSION_KEY": "${SESSION_KEY:-dev}"}},
                "pg2": {"image": "postgres:16", "env_file": ["./.env"], "environment": {"POSTGRES_PASSWORD": "literal"}}
            }
        });
        let roles = BTreeMap::from([
            ("db".to_string(), Role::Postgres),
            ("pg2".to_string(), Role::Postgres),
            ("api".to_string(), Role::Api),
        ]);
        let w = wanted_keys(&[("docker-compose.yml".into(), doc)], &roles);
        let keys: Vec<&str> = w.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "API_TOKEN",
                "DB_PASSWORD",
                "JWT_SECRET",
                "POSTGRES_PASSWORD",
                "SESSION_KEY"
            ]
        );
        let pg = w.iter().find(|w| w.key == "POSTGRES_PASSWORD").expect("pg");
        assert!(pg.why.contains("`db`"), "{}", pg.why);
    }
}
