//! Kubernetes name rules: compose names (`postgres_data`, `Ollama.GPU`)
//! become DNS-1123 labels, and names given by a person are checked before
//! anything reaches the API server.

/// A DNS-1123 label (namespaces, Services, most object names): 1-63 of
/// `[a-z0-9-]`, starting and ending with a letter or digit.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && s.as_bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

/// A compose name as a DNS-1123 label: lowercased, `_` and `.` become `-`,
/// anything else dropped, trimmed to 63 with letters or digits at both ends.
/// Empty when nothing usable is left (the caller reports it).
pub fn to_dns1123_label(name: &str) -> String {
    let mapped: String = name
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => Some(c),
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            '_' | '.' => Some('-'),
            _ => None,
        })
        .collect();
    let trimmed = mapped.trim_matches('-');
    let mut out: String = trimmed.chars().take(63).collect();
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// A label value: at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends (or empty).
pub fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.as_bytes()
                .first()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && s.as_bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric()))
}

/// A ConfigMap / Secret key: `[-._a-zA-Z0-9]+`, at most 253.
pub fn is_config_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(is_dns1123_label("ollama-gpu"));
        assert!(!is_dns1123_label("Ollama"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert_eq!(to_dns1123_label("postgres_data"), "postgres-data");
        assert_eq!(to_dns1123_label("_My.Svc_"), "my-svc");
        assert_eq!(to_dns1123_label("$$"), "");
        assert!(is_label_value("stackpilot"));
        assert!(!is_label_value("a b"));
        assert!(is_config_key("OLLAMA_HOST"));
        assert!(!is_config_key("A B"));
    }
}
