//! Job counters, the progress line, and the final summary.
//!
//! Progress is counted in input lines: a line is *resolved* once its result or error is
//! on disk, or once it is skipped (already done, blank, another shard's). On a terminal
//! the bar is redrawn in place a few times a second; otherwise (a log file, a test) a
//! plain line is printed every 10 seconds. Rates and the ETA use this run's work only,
//! so ids skipped on resume do not inflate them.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// What the job has done so far.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Results written this run.
    pub written: u64,
    /// Ids already in the output when this run started, met again in the input.
    pub already_done: u64,
    /// Lines that failed this run (recorded now or by an earlier run).
    pub failed: u64,
    /// Of those, error records written this run.
    pub errors_recorded: u64,
    /// Lines left to other shards, and blank lines.
    pub not_ours: u64,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
}

impl Counters {
    /// Lines whose fate is settled.
    pub fn resolved(&self) -> u64 {
        self.written + self.already_done + self.failed + self.not_ours
    }
}

/// Draws the progress line on stderr.
pub struct Progress {
    total_lines: u64,
    start: Instant,
    last: Option<Instant>,
    tty: bool,
    enabled: bool,
}

impl Progress {
    pub fn new(total_lines: u64, enabled: bool) -> Self {
        Self {
            total_lines,
            start: Instant::now(),
            last: None,
            tty: std::io::stderr().is_terminal(),
            enabled,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Redraw if it is time to.
    pub fn tick(&mut self, c: &Counters) {
        let every = Duration::from_millis(if self.tty { 200 } else { 10_000 });
        let due = self.last.is_none_or(|t| t.elapsed() >= every);
        if !self.enabled || !due {
            return;
        }
        self.last = Some(Instant::now());
        let line = self.render(c);
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }

    /// End the in-place line before other output.
    pub fn finish(&mut self) {
        if self.enabled && self.tty && self.last.is_some() {
            eprintln!();
        }
    }

    fn render(&self, c: &Counters) -> String {
        let secs = self.elapsed().as_secs_f64().max(1e-9);
        let done = c.resolved().min(self.total_lines);
        let width = 24usize;
        let filled = (done * width as u64)
            .checked_div(self.total_lines)
            .unwrap_or(width as u64) as usize;
        let bar: String = "#".repeat(filled) + &"-".repeat(width - filled);
        let work = (c.resolved() - c.already_done) as f64;
        let eta = if work > 0.0 {
            let left = self.total_lines.saturating_sub(done) as f64;
            format_duration(left * secs / work)
        } else {
            "?".into()
        };
        format!(
            "[{bar}] {done}/{} lines | {} written, {} failed | {:.0} tok/s | ETA {eta}",
            self.total_lines,
            c.written,
            c.failed,
            c.output_tokens as f64 / secs,
        )
    }
}

/// `1:02:03` or `2:03`.
pub fn format_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, m, s) => format!("{m}:{s:02}"),
        (h, m, s) => format!("{h}:{m:02}:{s:02}"),
    }
}

/// The summary printed when the job ends.
pub fn summary(c: &Counters, elapsed: Duration, errors_path: &std::path::Path) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut s = format!(
        "requests: {} written this run, {} already done | tokens: {} prompt, {} output | \
         throughput: {:.1} req/s, {:.0} output tok/s | elapsed: {}",
        c.written,
        c.already_done,
        c.prompt_tokens,
        c.output_tokens,
        c.written as f64 / secs,
        c.output_tokens as f64 / secs,
        format_duration(secs),
    );
    if c.failed > 0 {
        s += &format!(
            "\nerrors: {} line(s) failed ({} newly recorded) -> {}",
            c.failed,
            c.errors_recorded,
            errors_path.display()
        );
    } else {
        s += "\nerrors: none";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_bar() {
        assert_eq!(format_duration(62.4), "1:02");
        assert_eq!(format_duration(3723.0), "1:02:03");
        let p = Progress::new(10, true);
        let c = Counters {
            written: 4,
            failed: 1,
            ..Default::default()
        };
        let line = p.render(&c);
        assert!(
            line.starts_with("[############------------] 5/10 lines"),
            "{line}"
        );
        assert!(line.contains("4 written, 1 failed"), "{line}");
    }
}
