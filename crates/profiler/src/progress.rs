//! The benchmark's progress on stderr: a bar over the expected output tokens, the
//! current config and run, and an ETA from [`crate::eta`] (none until a warm run has
//! been measured). On a terminal, indicatif draws and rate-limits the bar; otherwise
//! (logs, CI) one `tracing` line per run says where the sweep stands, so logs stay
//! readable and carry timestamps when `RUST_LOG` asks for them.

use crate::eta::{short_duration, Estimator, Planned};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// The bar, or the plain lines, for one benchmark.
pub struct Progress {
    bar: Option<ProgressBar>,
    eta: Estimator,
    /// Token offsets where each config starts (`plan.len() + 1` entries).
    starts: Vec<f64>,
    done: f64,
    config: usize,
    run: Option<RunState>,
    label: String,
    enabled: bool,
    last_message: Option<Instant>,
}

/// The run in progress: when it started and the tokens it has produced.
struct RunState {
    start: Instant,
    tokens: f64,
}

const TEMPLATE: &str = "[{bar:25}] {percent:>3}% {elapsed:>4} | {wide_msg}";

impl Progress {
    /// Progress over the configs of `plan`; `enabled = false` is silent.
    pub fn new(plan: Vec<Planned>, enabled: bool) -> Self {
        let mut starts = vec![0.0];
        for p in &plan {
            starts.push(starts.last().copied().unwrap_or(0.0) + p.tokens.max(0.0));
        }
        let total = starts.last().copied().unwrap_or(0.0).max(1.0);
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(total.ceil() as u64),
                ProgressDrawTarget::stderr_with_hz(10),
            );
            if let Ok(style) = ProgressStyle::with_template(TEMPLATE) {
                bar.set_style(style.progress_chars("#>."));
            }
            bar
        });
        Self {
            bar,
            eta: Estimator::new(plan),
            starts,
            done: 0.0,
            config: 0,
            run: None,
            label: String::new(),
            enabled,
            last_message: None,
        }
    }

    /// Config `index` of the plan starts (earlier ones count as done).
    pub fn start_config(&mut self, index: usize) {
        self.end_run();
        self.config = index;
        self.done = self.done.max(self.start_of(index));
        self.show(true);
    }

    /// A run starts; `label` says which.
    pub fn start_run(&mut self, label: String) {
        self.end_run();
        self.label = label;
        self.run = Some(RunState {
            start: Instant::now(),
            tokens: 0.0,
        });
        if self.enabled && self.bar.is_none() {
            tracing::info!(
                "[{:>3.0}%] {}{}",
                100.0 * self.fraction(),
                self.label,
                self.eta_text(" (ETA ", ")")
            );
        }
        self.show(true);
    }

    /// `tokens` more output tokens (one engine step's).
    pub fn advance(&mut self, tokens: f64) {
        let end = self.start_of(self.config + 1);
        self.done = (self.done + tokens).min(end);
        if let Some(r) = &mut self.run {
            r.tokens += tokens;
        }
        self.show(false);
    }

    /// The sweep is over.
    pub fn finish(&mut self) {
        self.end_run();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn end_run(&mut self) {
        if let Some(r) = self.run.take() {
            let secs = r.start.elapsed().as_secs_f64();
            self.eta.run_done(self.config, secs, r.tokens);
        }
    }

    fn start_of(&self, config: usize) -> f64 {
        let last = self.starts.last().copied().unwrap_or(0.0);
        self.starts.get(config).copied().unwrap_or(last)
    }

    fn fraction(&self) -> f64 {
        self.done / self.start_of(usize::MAX).max(1.0)
    }

    /// `ETA 1m05s` (with `pre`/`post` around it), or `""` while there is no estimate.
    fn eta_text(&self, pre: &str, post: &str) -> String {
        let left = self.start_of(self.config + 1) - self.done;
        let elapsed = self
            .run
            .as_ref()
            .map_or(0.0, |r| r.start.elapsed().as_secs_f64());
        match self.eta.remaining_s(self.config, left, elapsed) {
            Some(s) => format!("{pre}{}{post}", short_duration(s)),
            None => String::new(),
        }
    }

    /// Update the bar; its message (with the ETA) at most twice a second.
    fn show(&mut self, force: bool) {
        let Some(bar) = &self.bar else { return };
        bar.set_position(self.done.round() as u64);
        let now = Instant::now();
        if force
            || self
                .last_message
                .is_none_or(|t| now - t >= Duration::from_millis(500))
        {
            self.last_message = Some(now);
            let eta = self.eta_text("ETA ", " | ");
            bar.set_message(format!("{eta}{}", self.label));
        }
    }
}
