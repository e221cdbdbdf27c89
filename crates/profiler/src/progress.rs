//! A live progress bar on stderr: overall fraction of expected output tokens, the
//! current config and run, and an ETA. On a terminal it redraws one line (at most ten
//! times a second); otherwise it prints one line per run so logs stay readable.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    total: f64,
    done: f64,
    start: Instant,
    last_draw: Option<Instant>,
    label: String,
    tty: bool,
    enabled: bool,
}

impl Progress {
    /// A bar over `total` units (expected output tokens); `enabled = false` is silent.
    pub fn new(total: f64, enabled: bool) -> Self {
        Self {
            total: total.max(1.0),
            done: 0.0,
            start: Instant::now(),
            last_draw: None,
            label: String::new(),
            tty: std::io::stderr().is_terminal(),
            enabled,
        }
    }

    /// What is running now; printed as a line of its own when not on a terminal.
    pub fn set_label(&mut self, label: String) {
        self.label = label;
        if self.enabled && !self.tty {
            eprintln!("[{:5.1}%] {}", 100.0 * self.done / self.total, self.label);
        }
        self.draw(true);
    }

    /// `units` more done.
    pub fn advance(&mut self, units: f64) {
        self.done = (self.done + units).min(self.total);
        self.draw(false);
    }

    fn draw(&mut self, force: bool) {
        if !self.enabled || !self.tty {
            return;
        }
        let now = Instant::now();
        if !force
            && self
                .last_draw
                .is_some_and(|t| now - t < Duration::from_millis(100))
        {
            return;
        }
        self.last_draw = Some(now);
        let frac = self.done / self.total;
        let width = 30;
        let filled = (frac * width as f64).round() as usize;
        let elapsed = self.start.elapsed().as_secs_f64();
        let eta = if frac > 0.0 {
            elapsed * (1.0 - frac) / frac
        } else {
            f64::NAN
        };
        let eta = if eta.is_finite() {
            format!("{eta:.0}s")
        } else {
            "?".into()
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K[{}{}] {:5.1}% {:.0}s elapsed, ETA {eta} | {}",
            "#".repeat(filled.min(width)),
            ".".repeat(width - filled.min(width)),
            100.0 * frac,
            elapsed,
            self.label
        );
        let _ = err.flush();
    }

    /// End the bar's line.
    pub fn finish(&mut self) {
        if self.enabled && self.tty {
            self.done = self.total;
            self.draw(true);
            eprintln!();
        }
    }
}
