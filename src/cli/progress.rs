//! Progress of a long call on the command line: a bar with rate and ETA
//! (indicatif, on stderr) when a person watches a terminal, plain lines at a
//! calm pace otherwise (CI logs, pipes). The tools report through the same
//! `Progress` port MCP uses; what their numbers mean depends on the tool.
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{BinaryBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::guard::Progress;

use super::render::duration;

/// What a tool's progress value counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes moved (pull_model, backup): a bar with rate and ETA.
    Bytes,
    /// Seconds elapsed (recover's wait against its timeout, restore).
    Seconds,
    /// Events (compose output lines and ticks): a spinner with the last line.
    Steps,
}

pub fn unit_of(tool: &str) -> Unit {
    match tool {
        "pull_model" | "backup" => Unit::Bytes,
        "recover" | "restore" => Unit::Seconds,
        _ => Unit::Steps,
    }
}

pub struct CliProgress {
    tool: &'static str,
    unit: Unit,
    state: Mutex<State>,
}

enum State {
    Bar {
        bar: Option<ProgressBar>,
        with_total: bool,
    },
    Plain(Plain),
}

struct Plain {
    started: Instant,
    first: Option<(Instant, f64)>,
    printed_at: Option<Instant>,
    printed_kind: String,
}

impl CliProgress {
    /// `bars`: draw a bar (stdout and stderr are a terminal); else plain lines.
    pub fn new(tool: &'static str, bars: bool) -> Self {
        let state = if bars {
            State::Bar {
                bar: None,
                with_total: false,
            }
        } else {
            State::Plain(Plain {
                started: Instant::now(),
                first: None,
                printed_at: None,
                printed_kind: String::new(),
            })
        };
        Self {
            tool,
            unit: unit_of(tool),
            state: Mutex::new(state),
        }
    }

    /// Clears the bar before the result is printed.
    pub fn finish(&self) {
        if let Ok(mut s) = self.state.lock() {
            if let State::Bar { bar: Some(b), .. } = &mut *s {
                b.finish_and_clear();
            }
        }
    }

    /// Runs `f` (a question on the terminal) with the bar hidden.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        let bar = match self.state.lock() {
            Ok(s) => match &*s {
                State::Bar { bar: Some(b), .. } => Some(b.clone()),
                _ => None,
            },
            Err(_) => None,
        };
        match bar {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    fn style(&self, with_total: bool) -> ProgressStyle {
        let template = match (self.unit, with_total) {
            (Unit::Bytes, true) => {
                "{spinner} {wide_msg}\n  [{bar:40}] {binary_bytes}/{binary_total_bytes}  {binary_bytes_per_sec}  ETA {eta}"
            }
            (Unit::Bytes, false) => "{spinner} {binary_bytes} written  {binary_bytes_per_sec}  {elapsed}  {wide_msg}",
            (Unit::Seconds, true) => "{spinner} [{bar:30}] {pos}/{len} s  {wide_msg}",
            _ => "{spinner} {elapsed:>4}  {wide_msg}",
        };
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .progress_chars("=> ")
    }
}

/// Numbers the tools write as `123456789 bytes` read as sizes.
pub fn humanize(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(i) = rest.find(" bytes") {
        let head = &rest[..i];
        let digits = head.len() - head.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            out.push_str(&rest[..i + 6]);
        } else {
            let n: u64 = head[head.len() - digits..].parse().unwrap_or(0);
            out.push_str(&head[..head.len() - digits]);
            out.push_str(&BinaryBytes(n).to_string());
        }
        rest = &rest[i + 6..];
    }
    out.push_str(rest);
    out
}

/// A message without its numbers: a new kind of message is worth a line.
fn kind_of(message: &str) -> String {
    message.chars().filter(|c| !c.is_ascii_digit()).collect()
}

impl Plain {
    fn line(
        &mut self,
        tool: &str,
        unit: Unit,
        value: f64,
        total: Option<f64>,
        message: &str,
    ) -> Option<String> {
        let now = Instant::now();
        let first = *self.first.get_or_insert((now, value));
        let kind = kind_of(message);
        let calm = match unit {
            Unit::Bytes => Duration::from_secs(1),
            _ => Duration::from_secs(10),
        };
        let due = self
            .printed_at
            .is_none_or(|t| now.duration_since(t) >= calm)
            || kind != self.printed_kind;
        if !due {
            return None;
        }
        self.printed_at = Some(now);
        self.printed_kind = kind;
        let elapsed = now.duration_since(first.0).as_secs_f64();
        let head = match unit {
            Unit::Bytes => {
                let rate = if elapsed > 0.5 {
                    (value - first.1).max(0.0) / elapsed
                } else {
                    0.0
                };
                let rate_text = if rate > 0.0 {
                    format!(", {}/s", BinaryBytes(rate as u64))
                } else {
                    String::new()
                };
                match total {
                    Some(t) if t > 0.0 => {
                        let eta = if rate > 0.0 {
                            format!(", ETA {}", duration(((t - value).max(0.0)) / rate))
                        } else {
                            String::new()
                        };
                        format!(
                            "{} of {} ({:.0} %){rate_text}{eta}",
                            BinaryBytes(value as u64),
                            BinaryBytes(t as u64),
                            100.0 * value / t
                        )
                    }
                    _ => format!("{} written{rate_text}", BinaryBytes(value as u64)),
                }
            }
            Unit::Seconds => match total {
                Some(t) => format!("{:.0} s of {:.0} s", value, t),
                None => duration(now.duration_since(self.started).as_secs_f64()),
            },
            Unit::Steps => duration(now.duration_since(self.started).as_secs_f64()),
        };
        Some(format!("{tool}: {head}: {message}"))
    }
}

/// `1.2 GiB written (postgres)` says the count the bar already shows: keep
/// what is being written.
fn without_count(message: &str) -> &str {
    match message.split_once(" written (") {
        Some((head, rest)) if head.split(' ').count() <= 2 && rest.ends_with(')') => {
            &rest[..rest.len() - 1]
        }
        _ => message,
    }
}

impl Progress for CliProgress {
    fn report(&self, progress: f64, total: Option<f64>, message: Option<String>) {
        let message = humanize(message.as_deref().unwrap_or(""));
        let message = if self.unit == Unit::Bytes {
            without_count(&message).to_string()
        } else {
            message
        };
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        match &mut *state {
            State::Plain(p) => {
                if let Some(line) = p.line(self.tool, self.unit, progress, total, &message) {
                    eprintln!("{line}");
                }
            }
            State::Bar { bar, with_total } => {
                let b = bar.get_or_insert_with(|| {
                    let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                    b.set_style(self.style(false));
                    b.enable_steady_tick(Duration::from_millis(120));
                    b
                });
                let has_total = total.is_some_and(|t| t > 0.0) && self.unit != Unit::Steps;
                if has_total != *with_total {
                    b.set_style(self.style(has_total));
                    *with_total = has_total;
                }
                if let Some(t) = total.filter(|_| has_total) {
                    b.set_length(t as u64);
                }
                if self.unit != Unit::Steps {
                    b.set_position(progress as u64);
                }
                b.set_message(message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_in_messages_read_as_sizes() {
        assert_eq!(
            humanize("1073741824 bytes written (postgres)"),
            "1.00 GiB written (postgres)"
        );
        assert_eq!(humanize("no numbers here"), "no numbers here");
        assert_eq!(humanize("a bytes b 5 bytes"), "a bytes b 5 B");
        assert_eq!(without_count("1.00 GiB written (postgres)"), "postgres");
        assert_eq!(
            without_count("backup set x committed"),
            "backup set x committed"
        );
    }

    #[test]
    fn plain_lines_carry_the_rate_and_eta_and_stay_calm() {
        let mut p = Plain {
            started: Instant::now(),
            first: None,
            printed_at: None,
            printed_kind: String::new(),
        };
        let first = p
            .line("pull_model", Unit::Bytes, 0.0, Some(1e9), "pulling abc")
            .expect("the first report is printed");
        assert!(
            first.starts_with("pull_model: 0 B of 953.67 MiB (0 %)"),
            "{first}"
        );
        // The same kind of message within a second: not printed again.
        assert!(p
            .line("pull_model", Unit::Bytes, 10.0, Some(1e9), "pulling abc")
            .is_none());
        // A new status is printed at once.
        assert!(p
            .line(
                "pull_model",
                Unit::Bytes,
                20.0,
                Some(1e9),
                "verifying sha256 digest"
            )
            .is_some());
        // A second later: the rate and the ETA.
        p.first = Some((Instant::now() - Duration::from_secs(2), 0.0));
        p.printed_at = Some(Instant::now() - Duration::from_secs(2));
        let later = p
            .line(
                "pull_model",
                Unit::Bytes,
                2e8,
                Some(1e9),
                "verifying sha256 digest",
            )
            .expect("due");
        assert!(
            later.contains("95.37 MiB/s") && later.contains("ETA 8.0 s"),
            "{later}"
        );
    }
}
