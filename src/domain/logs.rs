//! Logs as an agent asks for them: time bounds (RFC 3339 or relative, `10m`),
//! a grep pattern compiled with size limits, per-instance tails bounded in
//! lines and bytes, and the merge of several instances' lines by time. Pure:
//! the engine streams the lines, the logs tool feeds them through here.
use std::collections::VecDeque;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Lines returned when `tail` is not given.
pub const DEFAULT_TAIL: usize = 200;
/// The most lines one call returns.
pub const MAX_TAIL: usize = 10_000;
/// Bytes of line text returned when `max_bytes` is not given.
pub const DEFAULT_MAX_BYTES: usize = 256 * 1024;
/// The most bytes of line text one call returns (the JSON around them adds
/// about 100 bytes a line).
pub const MAX_MAX_BYTES: usize = 1024 * 1024;
/// A longer line is cut to this many bytes (one runaway line must not take
/// the whole answer).
pub const MAX_LINE_BYTES: usize = 4096;
/// What is read of one line before it is redacted and cut: Docker splits
/// lines at 16 KiB; other engines may not.
pub const MAX_RAW_LINE: usize = 64 * 1024;
/// The longest grep pattern accepted.
pub const MAX_PATTERN_CHARS: usize = 512;
/// Compiled-program and lazy-DFA budgets for a grep pattern: a pattern that
/// needs more is refused instead of taking the server's memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Relative bounds reach back at most this far (400 days).
const MAX_RELATIVE_NS: i128 = 400 * 86_400 * 1_000_000_000;

/// Which output stream of an instance a line came from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Which streams a caller wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Streams {
    /// stdout and stderr, each line tagged with its stream.
    #[default]
    Both,
    Stdout,
    Stderr,
}

impl Streams {
    pub fn stdout(self) -> bool {
        matches!(self, Streams::Both | Streams::Stdout)
    }
    pub fn stderr(self) -> bool {
        matches!(self, Streams::Both | Streams::Stderr)
    }
}

/// A time bound: RFC 3339 (`2026-11-28T08:00:00Z`) or a duration back from
/// `now_ns` (`30s`, `10m`, `2h`, `1d`, `1w`, or a sum such as `1h30m`).
pub fn parse_bound(text: &str, now_ns: i128) -> Result<i128, String> {
    let t = text.trim();
    if t.is_empty() || t.len() > 64 {
        return Err("give an RFC 3339 time (2026-11-28T08:00:00Z) or a relative one (30s, 10m, 2h, 1d, 1h30m)".into());
    }
    if let Some(ago) = relative_ns(t) {
        if ago > MAX_RELATIVE_NS {
            return Err(format!("`{t}` reaches back more than 400 days"));
        }
        return Ok(now_ns - ago);
    }
    crate::domain::time::rfc3339_to_unix_ns(t).ok_or_else(|| {
        format!(
            "`{}` is neither RFC 3339 (2026-11-28T08:00:00Z) nor a relative time (30s, 10m, 2h, 1d, 1h30m)",
            crate::domain::redact::cap(t, 64)
        )
    })
}

/// `1h30m` -> nanoseconds; None when it is not a sum of `<digits><unit>`.
fn relative_ns(t: &str) -> Option<i128> {
    let mut total: i128 = 0;
    let mut digits = String::new();
    let mut any = false;
    for c in t.chars() {
        if c.is_ascii_digit() {
            if digits.len() >= 12 {
                return None;
            }
            digits.push(c);
            continue;
        }
        let unit: i128 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return None,
        };
        let n: i128 = digits.parse().ok()?;
        digits.clear();
        total += n * unit * 1_000_000_000;
        any = true;
    }
    (any && digits.is_empty()).then_some(total)
}

/// A grep pattern: a literal (the default) or a regular expression, in the
/// `regex` crate's syntax (linear time, no backtracking), compiled within
/// fixed size limits.
#[derive(Debug, Clone)]
pub struct Grep(regex::Regex);

impl Grep {
    pub fn new(pattern: &str, is_regex: bool, ignore_case: bool) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("is empty; leave it out to keep every line".into());
        }
        if pattern.chars().count() > MAX_PATTERN_CHARS {
            return Err(format!("longer than {MAX_PATTERN_CHARS} characters"));
        }
        let source = if is_regex {
            pattern.to_string()
        } else {
            regex::escape(pattern)
        };
        regex::RegexBuilder::new(&source)
            .case_insensitive(ignore_case)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .nest_limit(64)
            .build()
            .map(Grep)
            .map_err(|e| {
                let why = e.to_string();
                // The crate's message spans lines with a caret diagram; one line is enough.
                let last = why
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("invalid")
                    .trim()
                    .trim_start_matches("error: ")
                    .to_string();
                format!("not a valid regular expression: {last}")
            })
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

/// One kept line of one source (an instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub time_ns: i128,
    pub stream: OutputStream,
    pub text: String,
}

/// The newest lines of one source, bounded in lines and bytes while they
/// stream in, so memory follows the bounds, not the size of the log.
#[derive(Debug, Clone)]
pub struct SourceTail {
    max_lines: usize,
    max_bytes: usize,
    lines: VecDeque<Kept>,
    bytes: usize,
    /// Lines that passed the filters and were pushed out by newer ones
    /// beyond the line bound.
    pub dropped: u64,
    /// ... beyond the byte bound.
    pub dropped_for_bytes: u64,
    /// Lines that passed the filters.
    pub matched: u64,
}

impl SourceTail {
    pub fn new(max_lines: usize, max_bytes: usize) -> Self {
        Self {
            max_lines,
            max_bytes,
            lines: VecDeque::new(),
            bytes: 0,
            dropped: 0,
            dropped_for_bytes: 0,
            matched: 0,
        }
    }

    /// Keeps a line (already filtered), dropping the oldest beyond the bounds.
    pub fn push(&mut self, line: Kept) {
        self.matched += 1;
        self.bytes += line.text.len() + 1;
        self.lines.push_back(line);
        while self.lines.len() > self.max_lines
            || (self.bytes > self.max_bytes && self.lines.len() > 1)
        {
            let for_lines = self.lines.len() > self.max_lines;
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.text.len() + 1;
                if for_lines {
                    self.dropped += 1;
                } else {
                    self.dropped_for_bytes += 1;
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// Raw line bytes as text (lossy UTF-8), kept whole up to MAX_RAW_LINE
/// bytes so redaction sees a secret whole before the line is cut for output.
pub fn decode_line(raw: &[u8]) -> String {
    String::from_utf8_lossy(&raw[..raw.len().min(MAX_RAW_LINE)]).into_owned()
}

/// A line as returned: at most MAX_LINE_BYTES (on a character boundary),
/// saying so when cut. Returns whether it was cut.
pub fn cap_line(text: String) -> (String, bool) {
    if text.len() <= MAX_LINE_BYTES {
        return (text, false);
    }
    let mut end = MAX_LINE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (
        format!("{} … [line cut: {} bytes]", &text[..end], text.len()),
        true,
    )
}

/// The merged, bounded answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// (source index, line), oldest first; ties in time keep each source's order.
    pub lines: Vec<(usize, Kept)>,
    /// Matching lines left out by the line bound (`tail`): the sources' own
    /// drops, and the merge's.
    pub cut_by_tail: u64,
    /// Matching lines left out because the text would pass `max_bytes`.
    pub cut_by_bytes: u64,
    /// Bytes of text returned (each line counted with one byte for its newline).
    pub bytes: usize,
}

/// Merges the sources by time and keeps the newest `tail` lines within
/// `max_bytes` of text; `finish` turns a kept line's text into what is
/// returned (redaction), and the byte bound counts its result.
///
/// The answer is always the newest stretch of the merged log with nothing
/// missing inside it: a source that dropped older lines (its bounds, or an
/// engine that returned only its tail) knows nothing before its oldest kept
/// line, so other sources' lines older than that are left out too.
pub fn merge(
    sources: Vec<SourceTail>,
    tail: usize,
    max_bytes: usize,
    finish: impl Fn(&str) -> String,
) -> Merged {
    let mut horizon: Option<(i128, bool)> = None;
    let mut cut_by_tail = 0u64;
    let mut cut_by_bytes = 0u64;
    for s in &sources {
        cut_by_tail += s.dropped;
        cut_by_bytes += s.dropped_for_bytes;
        if s.dropped + s.dropped_for_bytes > 0 {
            if let Some(first) = s.lines.front() {
                let for_bytes = s.dropped_for_bytes > 0;
                if horizon.is_none_or(|(t, _)| first.time_ns > t) {
                    horizon = Some((first.time_ns, for_bytes));
                }
            }
        }
    }
    let mut all: Vec<(i128, usize, usize, Kept)> = Vec::new();
    for (i, s) in sources.into_iter().enumerate() {
        for (seq, k) in s.lines.into_iter().enumerate() {
            match horizon {
                Some((t, for_bytes)) if k.time_ns < t => {
                    if for_bytes {
                        cut_by_bytes += 1;
                    } else {
                        cut_by_tail += 1;
                    }
                }
                _ => all.push((k.time_ns, i, seq, k)),
            }
        }
    }
    all.sort_by_key(|a| (a.0, a.1, a.2));
    let start = all.len().saturating_sub(tail);
    cut_by_tail += start as u64;
    let mut kept: Vec<(usize, Kept)> = Vec::new();
    let mut bytes = 0usize;
    let mut over = false;
    for (_, source, _, mut k) in all.into_iter().skip(start).rev() {
        if over {
            cut_by_bytes += 1;
            continue;
        }
        let text = finish(&k.text);
        if bytes + text.len() + 1 > max_bytes {
            over = true;
            cut_by_bytes += 1;
            continue;
        }
        bytes += text.len() + 1;
        k.text = text;
        kept.push((source, k));
    }
    kept.reverse();
    Merged {
        lines: kept,
        cut_by_tail,
        cut_by_bytes,
        bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i128 = 1_795_853_492_000_000_000;

    fn kept(t: i128, text: &str) -> Kept {
        Kept {
            time_ns: t,
            stream: OutputStream::Stdout,
            text: text.into(),
        }
    }

    #[test]
    fn bounds_are_rfc3339_or_relative() {
        let s = 1_000_000_000;
        assert_eq!(parse_bound("10m", NOW), Ok(NOW - 600 * s));
        assert_eq!(parse_bound("1h30m", NOW), Ok(NOW - 5400 * s));
        assert_eq!(parse_bound("2d", NOW), Ok(NOW - 2 * 86_400 * s));
        assert_eq!(parse_bound(" 45s ", NOW), Ok(NOW - 45 * s));
        assert_eq!(parse_bound("2026-11-28T08:11:32Z", NOW), Ok(NOW));
        for bad in [
            "",
            "10",
            "m",
            "10x",
            "1h-5m",
            "yesterday",
            "500d",
            "9999999999999s",
        ] {
            assert!(parse_bound(bad, NOW).is_err(), "{bad}");
        }
    }

    #[test]
    fn grep_is_literal_unless_asked() {
        let lit = Grep::new("a.c", false, false).expect("literal");
        assert!(lit.is_match("xa.cx") && !lit.is_match("abc"));
        let re = Grep::new("a.c", true, false).expect("regex");
        assert!(re.is_match("abc"));
        let ci = Grep::new("ERROR", false, true).expect("ci");
        assert!(ci.is_match("an error here"));
        let e = Grep::new("(unclosed", true, false).expect_err("bad regex");
        assert!(e.starts_with("not a valid regular expression"), "{e}");
        assert!(!e.contains('\n'));
        assert!(
            Grep::new("(unclosed", false, false).is_ok(),
            "a literal is never invalid"
        );
        let huge = Grep::new("\\w{1000}\\w{1000}\\w{1000}", true, false).expect_err("size");
        assert!(huge.contains("not a valid regular expression"), "{huge}");
        assert!(Grep::new("", false, false).is_err());
        assert!(Grep::new(&"a".repeat(513), false, false).is_err());
    }

    #[test]
    fn tails_bound_lines_and_bytes() {
        let mut t = SourceTail::new(3, 1000);
        for i in 0..10 {
            t.push(kept(i, &format!("l{i}")));
        }
        assert_eq!(t.len(), 3);
        assert_eq!((t.matched, t.dropped), (10, 7));
        let mut b = SourceTail::new(100, 10);
        for i in 0..5 {
            b.push(kept(i, "abcd"));
        }
        assert_eq!(b.len(), 2, "two 5-byte lines fit 10 bytes");
        assert_eq!((b.dropped, b.dropped_for_bytes), (0, 3));
    }

    #[test]
    fn merge_orders_by_time_and_keeps_the_newest() {
        let mut a = SourceTail::new(10, 1000);
        let mut b = SourceTail::new(10, 1000);
        for (t, s) in [(1, "a1"), (3, "a3"), (5, "a5"), (5, "a5bis")] {
            a.push(kept(t, s));
        }
        for (t, s) in [(2, "b2"), (4, "b4"), (5, "b5")] {
            b.push(kept(t, s));
        }
        let m = merge(vec![a.clone(), b.clone()], 100, 1000, str::to_string);
        let texts: Vec<&str> = m.lines.iter().map(|(_, k)| k.text.as_str()).collect();
        assert_eq!(texts, ["a1", "b2", "a3", "b4", "a5", "a5bis", "b5"]);
        let m = merge(vec![a.clone(), b.clone()], 3, 1000, str::to_string);
        let texts: Vec<&str> = m.lines.iter().map(|(_, k)| k.text.as_str()).collect();
        assert_eq!(texts, ["a5", "a5bis", "b5"]);
        assert_eq!(m.cut_by_tail, 4);
        let m = merge(vec![a, b], 100, 7, |t| t.to_uppercase());
        let texts: Vec<&str> = m.lines.iter().map(|(_, k)| k.text.as_str()).collect();
        assert_eq!(texts, ["B5"], "a5bis (6 bytes) would pass 7 bytes");
        assert_eq!((m.cut_by_bytes, m.bytes), (6, 3));
    }

    #[test]
    fn a_source_that_dropped_lines_bounds_the_others() {
        // a keeps its two newest lines (it dropped t=1 and t=3); b reaches
        // back further, but lines older than a's oldest kept one would leave
        // a gap, so they are left out.
        let mut a = SourceTail::new(2, 1000);
        for t in [1, 3, 5, 7] {
            a.push(kept(t, &format!("a{t}")));
        }
        let mut b = SourceTail::new(10, 1000);
        for t in [2, 4, 6] {
            b.push(kept(t, &format!("b{t}")));
        }
        let m = merge(vec![a, b], 100, 1000, str::to_string);
        let texts: Vec<&str> = m.lines.iter().map(|(_, k)| k.text.as_str()).collect();
        assert_eq!(texts, ["a5", "b6", "a7"]);
        assert_eq!(m.cut_by_tail, 4, "a's two drops and b's two older lines");
        let mut big = SourceTail::new(10, 10);
        for (t, s) in [(1, "aaaa"), (3, "bbbb"), (5, "cccc")] {
            big.push(kept(t, s));
        }
        let mut small = SourceTail::new(10, 1000);
        small.push(kept(2, "x"));
        small.push(kept(4, "y"));
        let m = merge(vec![big, small], 100, 1000, str::to_string);
        let texts: Vec<&str> = m.lines.iter().map(|(_, k)| k.text.as_str()).collect();
        assert_eq!(texts, ["bbbb", "y", "cccc"]);
        assert_eq!((m.cut_by_tail, m.cut_by_bytes), (0, 2));
    }

    #[test]
    fn long_lines_are_cut() {
        let (t, long) = cap_line(decode_line(&vec![b'x'; MAX_LINE_BYTES + 10]));
        assert!(long && t.ends_with("[line cut: 4106 bytes]"), "{t}");
        let (t, long) = cap_line(decode_line("é".as_bytes()));
        assert!(!long);
        assert_eq!(t, "é");
        assert_eq!(
            decode_line(&vec![b'y'; MAX_RAW_LINE * 2]).len(),
            MAX_RAW_LINE
        );
    }
}
