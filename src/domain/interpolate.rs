//! Compose's variable interpolation (compose-spec "Interpolation"), for the
//! few values stackpilot must read before compose runs (the project `name:`):
//! `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:+alt}`,
//! `${VAR+alt}`, `${VAR:?message}`, `${VAR?message}` and `$$` for a literal
//! `$`. Defaults may hold further substitutions. An unset variable without a
//! default is empty, as compose makes it (with a warning); a `?` form whose
//! variable is missing gives an empty value here (compose refuses the file,
//! and the next `docker compose` run says so).

/// Substitutes every variable in `text` using `lookup`.
pub fn interpolate(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some('{') => match matching_brace(&chars, i + 2) {
                Some(end) => {
                    let inner: String = chars[i + 2..end].iter().collect();
                    out.push_str(&braced(&inner, lookup));
                    i = end + 1;
                }
                None => {
                    // Unterminated: compose rejects it; keep the text as written.
                    out.extend(&chars[i..]);
                    break;
                }
            },
            Some(n) if is_name_start(*n) => {
                let mut j = i + 1;
                while j < chars.len() && is_name_char(chars[j]) {
                    j += 1;
                }
                let name: String = chars[i + 1..j].iter().collect();
                out.push_str(&lookup(&name).unwrap_or_default());
                i = j;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    out
}

/// The names of the variables `text` reads (`$VAR`, `${VAR}`, `${VAR:-x}`
/// and the variables in defaults), in order, each once; `$$` is a literal.
pub fn references(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let seen = std::cell::RefCell::new(Vec::<String>::new());
    // Interpolating with a lookup that records every name asked for visits
    // exactly the references compose would resolve, defaults included
    // (a lookup that answers None makes every default get evaluated).
    let record = |name: &str| {
        let mut s = seen.borrow_mut();
        if !name.is_empty() && !s.iter().any(|n| n == name) {
            s.push(name.to_string());
        }
        None
    };
    interpolate(text, &record);
    names.extend(seen.into_inner());
    names
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The index of the `}` closing a `${` whose body starts at `from`.
fn matching_brace(chars: &[char], from: usize) -> Option<usize> {
    let mut depth = 1;
    let mut i = from;
    while i < chars.len() {
        match chars[i] {
            '$' if chars.get(i + 1) == Some(&'{') => {
                depth += 1;
                i += 2;
                continue;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The body of `${...}`.
fn braced(inner: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let name_len = inner
        .char_indices()
        .find(|(_, c)| !is_name_char(*c))
        .map(|(i, _)| i)
        .unwrap_or(inner.len());
    let (name, rest) = inner.split_at(name_len);
    let value = lookup(name);
    let set = value.is_some();
    let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
    let nested = |text: &str| interpolate(text, lookup);
    if rest.is_empty() {
        return value.unwrap_or_default();
    }
    for (op, use_alt_when) in [
        (":-", !non_empty),
        ("-", !set),
        (":?", false),
        ("?", false),
        (":+", non_empty),
        ("+", set),
    ] {
        if let Some(arg) = rest.strip_prefix(op) {
            return match op {
                ":-" | "-" if use_alt_when => nested(arg),
                ":-" | "-" => value.unwrap_or_default(),
                ":+" | "+" if use_alt_when => nested(arg),
                ":+" | "+" => String::new(),
                _ => value.unwrap_or_default(),
            };
        }
    }
    value.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn references_are_every_variable_read() {
        assert_eq!(
            references("postgres://${DB_USER:-app}:${DB_PASSWORD:?set it}@db/$DB_NAME $$NOT ${X:-${Y}} $DB_USER"),
            ["DB_USER", "DB_PASSWORD", "DB_NAME", "X", "Y"]
        );
        assert!(references("no vars, 100$").is_empty());
    }

    #[test]
    fn substitutions_follow_the_compose_spec() {
        let cases = [
            ("plain", "plain"),
            ("$SET", "value"),
            ("${SET}", "value"),
            ("x-${SET}-y", "x-value-y"),
            ("${UNSET}", ""),
            ("${UNSET:-dflt}", "dflt"),
            ("${EMPTY:-dflt}", "dflt"),
            ("${EMPTY-dflt}", ""),
            ("${UNSET-dflt}", "dflt"),
            ("${SET:+alt}", "alt"),
            ("${EMPTY:+alt}", ""),
            ("${EMPTY+alt}", "alt"),
            ("${UNSET+alt}", ""),
            ("${UNSET:-${SET}}", "value"),
            ("${UNSET:-a${UNSET2:-b}c}", "abc"),
            ("$$SET", "$SET"),
            ("100$", "100$"),
            ("${UNSET:?must be set}", ""),
            ("${SET:?must be set}", "value"),
        ];
        for (input, want) in cases {
            assert_eq!(interpolate(input, &env), want, "{input}");
        }
    }
}
