//! What a person reads in a terminal: a tool's structured output turned into
//! a few labelled fields and aligned tables (comfy-table), sizes and durations
//! in human units, errors as one sentence. `--json` bypasses all of it and
//! prints the structured output unchanged.
use comfy_table::{presets, Cell, ContentArrangement, Table};
use indicatif::{BinaryBytes, HumanCount};
use serde_json::Value;

use super::views;

/// A rendered page: blocks printed one after another, a blank line between.
#[derive(Debug, Default)]
pub struct Doc {
    pub blocks: Vec<Block>,
}

#[derive(Debug)]
pub enum Block {
    /// `label  value` lines, labels aligned.
    Fields(Vec<(String, String)>),
    /// The same under a title, indented.
    Section {
        title: String,
        fields: Vec<(String, String)>,
    },
    /// A titled table; no rows prints `title: none`.
    Table {
        title: String,
        header: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    /// A titled bullet list.
    List { title: String, items: Vec<String> },
    /// Lines printed as they are, unwrapped (log lines).
    Verbatim(Vec<String>),
}

impl Doc {
    pub fn fields(&mut self, fields: Vec<(String, String)>) {
        if !fields.is_empty() {
            self.blocks.push(Block::Fields(fields));
        }
    }

    pub fn section(&mut self, title: &str, fields: Vec<(String, String)>) {
        if !fields.is_empty() {
            self.blocks.push(Block::Section {
                title: title.to_string(),
                fields,
            });
        }
    }

    pub fn list(&mut self, title: &str, items: Vec<String>) {
        if !items.is_empty() {
            self.blocks.push(Block::List {
                title: title.to_string(),
                items,
            });
        }
    }

    pub fn verbatim(&mut self, lines: Vec<String>) {
        if !lines.is_empty() {
            self.blocks.push(Block::Verbatim(lines));
        }
    }

    pub fn table(&mut self, title: &str, header: &[&str], rows: Vec<Vec<String>>) {
        self.blocks.push(Block::Table {
            title: title.to_string(),
            header: header.iter().map(|h| h.to_uppercase()).collect(),
            rows,
        });
    }

    /// The page as text; `width` wraps long cells to a terminal's width.
    pub fn to_text(&self, width: Option<u16>) -> String {
        let mut out = String::new();
        for (i, b) in self.blocks.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            match b {
                Block::Fields(rows) => {
                    let mut t = plain_table(width);
                    for (k, v) in rows {
                        t.add_row(vec![Cell::new(k), Cell::new(v)]);
                    }
                    out.push_str(&finish(t));
                }
                Block::Section { title, fields } => {
                    out.push_str(&format!("{title}:\n"));
                    let mut t = plain_table(width.map(|w| w.saturating_sub(2)));
                    for (k, v) in fields {
                        t.add_row(vec![Cell::new(k), Cell::new(v)]);
                    }
                    for line in finish(t).lines() {
                        out.push_str(&format!("  {line}\n"));
                    }
                }
                Block::Table {
                    title,
                    header,
                    rows,
                } => {
                    if rows.is_empty() {
                        out.push_str(&format!("{title}: none\n"));
                        continue;
                    }
                    out.push_str(&format!("{title}:\n"));
                    let mut t = plain_table(width);
                    t.set_header(header.clone());
                    for r in rows {
                        t.add_row(r.clone());
                    }
                    out.push_str(&finish(t));
                }
                Block::Verbatim(lines) => {
                    for line in lines {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
                Block::List { title, items } => {
                    out.push_str(&format!("{title}:\n"));
                    for item in items {
                        out.push_str(&format!("  - {item}\n"));
                    }
                }
            }
        }
        out
    }
}

/// No borders, two spaces between columns, like `docker ps` and `kubectl get`.
fn plain_table(width: Option<u16>) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    match width {
        Some(w) => {
            t.set_content_arrangement(ContentArrangement::Dynamic);
            t.set_width(w);
        }
        None => {
            t.set_content_arrangement(ContentArrangement::Disabled);
        }
    }
    t
}

fn finish(mut t: Table) -> String {
    let n = t.column_count();
    for i in 0..n {
        if let Some(c) = t.column_mut(i) {
            c.set_padding((0, if i + 1 == n { 0 } else { 2 }));
        }
    }
    let mut s = String::new();
    for line in t.lines() {
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

/// The human page for `tool`'s output `v` (a result, a confirmation request,
/// a declined plan; errors go through [`error_line`]).
pub fn render(tool: &str, v: &Value) -> Doc {
    if v.get("confirmation_required").and_then(Value::as_bool) == Some(true) {
        return confirmation(v);
    }
    if v.get("declined").and_then(Value::as_bool) == Some(true) {
        return declined(v);
    }
    let mut doc = match views::view(tool) {
        Some(view) => view(v),
        None => generic(v),
    };
    // A dry run shows what would run.
    if v.get("dry_run").and_then(Value::as_bool) == Some(true) {
        if let Some(plan) = v.get("plan") {
            plan_blocks(&mut doc, plan);
        }
    }
    doc
}

fn confirmation(v: &Value) -> Doc {
    let mut doc = Doc::default();
    let plan = &v["plan"];
    doc.fields(vec![
        (
            "confirmation".into(),
            "required: nothing was changed".into(),
        ),
        ("why".into(), text(&v["reason"])),
        ("expires".into(), text(&v["expires_at"])),
    ]);
    plan_blocks(&mut doc, plan);
    doc
}

fn declined(v: &Value) -> Doc {
    let mut doc = Doc::default();
    let how = match v["answer"].as_str() {
        Some("cancel") => "cancelled",
        _ => "declined",
    };
    doc.fields(vec![
        (how.into(), "nothing was changed".into()),
        ("plan".into(), text(&v["plan"]["summary"])),
    ]);
    doc
}

/// A plan: its one-line summary and its steps.
pub fn plan_blocks(doc: &mut Doc, plan: &Value) {
    doc.fields(vec![
        ("plan".into(), text(&plan["summary"])),
        ("digest".into(), short_digest(&plan["digest"])),
    ]);
    let rows = items(&plan["steps"])
        .iter()
        .map(|s| {
            vec![
                text(&s["action"]),
                text(&s["target"]),
                text(&s["detail"]),
                if s["destructive"].as_bool() == Some(true) {
                    "yes".into()
                } else {
                    "".into()
                },
            ]
        })
        .collect();
    doc.table(
        "steps",
        &["action", "target", "detail", "destructive"],
        rows,
    );
}

fn short_digest(v: &Value) -> String {
    let s = text(v);
    if s.len() > 12 {
        s[..12].to_string()
    } else {
        s
    }
}

/// The one-sentence error a person sees on stderr: the message, with the
/// allowed values when the field has a closed set; the next step follows on
/// its own line when there is one.
pub fn error_line(err: &Value) -> String {
    let message = text(&err["message"]);
    let allowed: Vec<String> = items(&err["allowed"]).iter().map(text).collect();
    let mut line = if allowed.is_empty() {
        message
    } else {
        // serde's "..., expected one of `a`, `b`" and our "(allowed: a, b)"
        // say the values once more: say them once.
        let head = message
            .split(", expected ")
            .next()
            .unwrap_or(&message)
            .split(" (allowed: ")
            .next()
            .unwrap_or(&message)
            .to_string();
        format!("{head} (allowed: {})", allowed.join(", "))
    };
    if !line.ends_with('.') {
        line.push('.');
    }
    let mut out = format!("error: {line}");
    if let Some(next) = err["next_step"].as_str() {
        out.push_str(&format!("\nhint: {next}"));
    }
    out
}

/// The elements of an array (none for anything else).
pub fn items(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// A scalar as text; `-` for null or absent.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) if i.abs() >= 10_000 => HumanCount(i.unsigned_abs()).to_string(),
            _ => n.to_string(),
        },
        Value::Array(a) => {
            if a.is_empty() {
                "-".into()
            } else {
                a.iter().map(text).collect::<Vec<_>>().join(", ")
            }
        }
        Value::Object(_) => v.to_string(),
    }
}

/// Bytes in binary units (`1.50 GiB`); `-` when absent.
pub fn bytes(v: &Value) -> String {
    match v.as_f64() {
        Some(n) if n < 0.0 => format!("-{}", BinaryBytes((-n) as u64)),
        Some(n) => BinaryBytes(n as u64).to_string(),
        None => "-".into(),
    }
}

/// Seconds as `850 ms`, `12.3 s`, `4m 05s`, `2h 10m`.
pub fn secs(v: &Value) -> String {
    match v.as_f64() {
        Some(s) => duration(s),
        None => "-".into(),
    }
}

pub fn duration(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        let s = s.round() as u64;
        format!("{}m {:02}s", s / 60, s % 60)
    } else if s < 86_400.0 {
        let m = (s / 60.0).round() as u64;
        format!("{}h {:02}m", m / 60, m % 60)
    } else {
        let h = (s / 3600.0).round() as u64;
        format!("{}d {}h", h / 24, h % 24)
    }
}

pub fn millis(v: &Value) -> String {
    match v.as_f64() {
        Some(ms) => duration(ms / 1000.0),
        None => "-".into(),
    }
}

/// A 0..1 share as a percentage.
pub fn share(v: &Value) -> String {
    match v.as_f64() {
        Some(x) => format!("{:.0} %", x * 100.0),
        None => "-".into(),
    }
}

pub fn pct(v: &Value) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.1} %"),
        None => "-".into(),
    }
}

/// An RFC 3339 time as how long ago it was (`3m 12s ago`), with the time
/// itself when it is older than a day.
pub fn ago(v: &Value) -> String {
    let Some(s) = v.as_str() else {
        return "-".into();
    };
    let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
    else {
        return s.to_string();
    };
    let age = (time::OffsetDateTime::now_utc() - t).as_seconds_f64();
    if age < 0.0 {
        return s.to_string();
    }
    if age >= 86_400.0 {
        return format!(
            "{} ago ({})",
            duration(age),
            &s[..s.len().min(16)].replace('T', " ")
        );
    }
    format!("{} ago", duration(age))
}

/// Published ports as `127.0.0.1:5432->5432/tcp`.
pub fn ports(v: &Value) -> String {
    let ps: Vec<String> = items(v)
        .iter()
        .map(|p| {
            let ip = p["host_ip"].as_str().unwrap_or("");
            let ip = if ip.is_empty() { "0.0.0.0" } else { ip };
            format!(
                "{ip}:{}->{}/{}",
                text(&p["host_port"]),
                text(&p["container_port"]),
                p["protocol"].as_str().unwrap_or("tcp")
            )
        })
        .collect();
    if ps.is_empty() {
        "-".into()
    } else {
        ps.join(", ")
    }
}

/// A value formatted by what its key says it is (`*_bytes`, `*_s`, `*_ms`,
/// `*_pct`, `*_at`), else as plain text.
pub fn by_key(key: &str, v: &Value) -> String {
    if v.is_null() {
        return "-".into();
    }
    if key == "bytes" || key.ends_with("_bytes") {
        bytes(v)
    } else if key.ends_with("_s") && v.is_number() {
        secs(v)
    } else if key.ends_with("_ms") && v.is_number() {
        millis(v)
    } else if key.ends_with("_pct") {
        pct(v)
    } else if key == "gpu_share" {
        share(v)
    } else if key == "ports" {
        ports(v)
    } else if key == "started_at" {
        ago(v)
    } else {
        text(v)
    }
}

/// An array holding objects (a table, not a field).
fn holds_objects(v: &Value) -> bool {
    v.as_array().is_some_and(|a| a.iter().any(Value::is_object))
}

/// Any output without a view of its own: top-level scalars as fields, arrays
/// of objects as tables of their scalar fields, other objects as fields with
/// dotted labels (one level down).
pub fn generic(v: &Value) -> Doc {
    let mut doc = Doc::default();
    let Some(map) = v.as_object() else {
        doc.fields(vec![("result".into(), text(v))]);
        return doc;
    };
    let mut fields = Vec::new();
    let mut tables = Vec::new();
    for (k, x) in map {
        match x {
            Value::Array(a) if a.iter().any(Value::is_object) => tables.push((k, a)),
            Value::Object(o) if k != "plan" => {
                for (k2, y) in o {
                    if !y.is_object() && !holds_objects(y) {
                        fields.push((format!("{k}.{k2}").replace('_', " "), by_key(k2, y)));
                    }
                }
            }
            Value::Object(_) => {}
            _ => fields.push((k.replace('_', " "), by_key(k, x))),
        }
    }
    doc.fields(fields);
    for (k, a) in tables {
        let mut cols: Vec<String> = Vec::new();
        for item in a {
            if let Some(o) = item.as_object() {
                for (ck, cv) in o {
                    let scalar = !cv.is_object() && !holds_objects(cv);
                    if (scalar || ck == "ports") && !cols.contains(ck) {
                        cols.push(ck.clone());
                    }
                }
            }
        }
        let rows = a
            .iter()
            .map(|item| cols.iter().map(|c| by_key(c, &item[c])).collect())
            .collect();
        let header: Vec<String> = cols.iter().map(|c| c.replace('_', " ")).collect();
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        doc.table(&k.replace('_', " "), &header, rows);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_durations_and_counts_read_as_a_person_says_them() {
        assert_eq!(bytes(&json!(74_567_720_960u64)), "69.45 GiB");
        assert_eq!(bytes(&json!(512)), "512 B");
        assert_eq!(bytes(&json!(-1_073_741_824i64)), "-1.00 GiB");
        assert_eq!(secs(&json!(0.25)), "250 ms");
        assert_eq!(secs(&json!(12.34)), "12.3 s");
        assert_eq!(secs(&json!(245)), "4m 05s");
        assert_eq!(secs(&json!(7800)), "2h 10m");
        assert_eq!(text(&json!(131072)), "131,072");
        assert_eq!(text(&json!(true)), "yes");
        assert_eq!(share(&json!(0.75)), "75 %");
        assert_eq!(
            ports(
                &json!([{"host_ip": "127.0.0.1", "host_port": 5432, "container_port": 5432, "protocol": "tcp"}])
            ),
            "127.0.0.1:5432->5432/tcp"
        );
        assert_eq!(by_key("free_bytes", &json!(1024)), "1.00 KiB");
        assert_eq!(by_key("duration_s", &json!(3.21)), "3.2 s");
    }

    #[test]
    fn an_error_is_one_sentence_with_the_allowed_values_once() {
        let err = json!({
            "kind": "invalid_input",
            "field": "kv_cache_types[0]",
            "message": "invalid `kv_cache_types[0]`: unknown variant `q5`, expected one of `f16`, `q8_0`, `q4_0`",
            "allowed": ["f16", "q8_0", "q4_0"]
        });
        assert_eq!(
            error_line(&err),
            "error: invalid `kv_cache_types[0]`: unknown variant `q5` (allowed: f16, q8_0, q4_0)."
        );
        let err =
            json!({"kind": "busy", "message": "the stack is busy", "next_step": "wait and retry"});
        assert_eq!(
            error_line(&err),
            "error: the stack is busy.\nhint: wait and retry"
        );
    }

    #[test]
    fn tables_align_their_columns() {
        let mut doc = Doc::default();
        doc.fields(vec![
            ("project".into(), "demo".into()),
            ("ready".into(), "yes".into()),
        ]);
        doc.table(
            "services",
            &["service", "state"],
            vec![
                vec!["db".into(), "running".into()],
                vec!["web-frontend".into(), "exited".into()],
            ],
        );
        let text = doc.to_text(None);
        assert_eq!(
            text,
            "project  demo\nready    yes\n\nservices:\nSERVICE       STATE\ndb            running\nweb-frontend  exited\n"
        );
    }

    #[test]
    fn a_confirmation_request_shows_the_plan() {
        let v = json!({
            "confirmation_required": true, "reason": "destructive", "expires_at": "2026-01-01T00:00:00Z",
            "confirm_token": "t", "plan": {"summary": "write .env", "digest": "0123456789abcdef",
            "steps": [{"action": "overwrite", "target": "OLLAMA_KV_CACHE_TYPE", "detail": "f16 -> q8_0", "destructive": true}]}
        });
        let text = render("select_profile", &v).to_text(None);
        assert!(text.contains("nothing was changed"), "{text}");
        assert!(
            text.contains("overwrite  OLLAMA_KV_CACHE_TYPE  f16 -> q8_0"),
            "{text}"
        );
        assert!(
            text.contains("0123456789ab") && !text.contains("0123456789abc"),
            "{text}"
        );
    }
}
