//! `/metrics`: counters, gauges and histograms in Prometheus' text format.
//!
//! Every value is an atomic inside one [`Metrics`] shared (`Arc`) by the engine thread,
//! which sets the gauges after each step and observes latencies when requests finish,
//! and the HTTP handlers, which count the requests they refuse themselves. Reading them
//! never waits for the engine. Latencies are measured from the moment the server
//! received the request (so they include the wait for the engine thread), with the
//! engine's token times: TTFT = first token - received, ITL = gaps between tokens,
//! E2E = last token - received, queue = first scheduled - received.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// How a request ended, as counted in `engine_requests_total{outcome=...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Finished: EOS, a stop condition or max_tokens.
    Ok,
    /// 429: the waiting queue (or the command queue) was full.
    Rejected,
    /// 400/404: malformed, unsupported or impossible (context) requests.
    Invalid,
    /// The client went away (disconnected or dropped the stream); aborted.
    Aborted,
    /// Ran past `--request-timeout`; aborted.
    Timeout,
    /// The engine failed while running it.
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Ok,
        Outcome::Rejected,
        Outcome::Invalid,
        Outcome::Aborted,
        Outcome::Timeout,
        Outcome::Error,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Rejected => "rejected",
            Outcome::Invalid => "invalid",
            Outcome::Aborted => "aborted",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
        }
    }
}

const LATENCY_BUCKETS_S: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0,
];
const ITL_BUCKETS_S: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5,
];

/// A fixed-bucket histogram of seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), plus one for +Inf.
    counts: Vec<AtomicU64>,
    sum_bits: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        if !v.is_finite() {
            return;
        }
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i].fetch_add(1, Relaxed);
        let _ = self.sum_bits.fetch_update(Relaxed, Relaxed, |b| {
            Some((f64::from_bits(b) + v).to_bits())
        });
        self.count.fetch_add(1, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, b) in self.bounds.iter().enumerate() {
            cum += self.counts[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += self.counts[self.bounds.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
        let sum = f64::from_bits(self.sum_bits.load(Relaxed));
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cum}");
    }
}

/// Everything `/metrics` shows.
#[derive(Debug)]
pub struct Metrics {
    requests: [AtomicU64; 6],
    pub prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    pub preemptions: AtomicU64,
    pub waiting: AtomicU64,
    pub running: AtomicU64,
    pub in_flight: AtomicU64,
    pub blocks_in_use: AtomicU64,
    pub num_blocks: AtomicU64,
    pub ttft: Histogram,
    pub itl: Histogram,
    pub e2e: Histogram,
    pub queue: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Default::default(),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            preemptions: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            running: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            blocks_in_use: AtomicU64::new(0),
            num_blocks: AtomicU64::new(0),
            ttft: Histogram::new(LATENCY_BUCKETS_S),
            itl: Histogram::new(ITL_BUCKETS_S),
            e2e: Histogram::new(LATENCY_BUCKETS_S),
            queue: Histogram::new(LATENCY_BUCKETS_S),
        }
    }
}

fn index(o: Outcome) -> usize {
    Outcome::ALL.iter().position(|&x| x == o).unwrap_or(0)
}

impl Metrics {
    pub fn count(&self, o: Outcome) {
        self.requests[index(o)].fetch_add(1, Relaxed);
    }

    pub fn requests(&self, o: Outcome) -> u64 {
        self.requests[index(o)].load(Relaxed)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("# HELP engine_requests_total Requests by outcome: ok (finished), rejected (429, queue full), invalid (400/404), aborted (client went away), timeout (--request-timeout), error (engine failure).\n# TYPE engine_requests_total counter\n");
        for o in Outcome::ALL {
            let _ = writeln!(
                s,
                "engine_requests_total{{outcome=\"{}\"}} {}",
                o.label(),
                self.requests(o)
            );
        }
        let simple = [
            (
                "engine_prompt_tokens_total",
                "counter",
                "Prompt tokens of admitted requests.",
                &self.prompt_tokens,
            ),
            (
                "engine_generation_tokens_total",
                "counter",
                "Tokens generated.",
                &self.generation_tokens,
            ),
            (
                "engine_preemptions_total",
                "counter",
                "Requests preempted (KV blocks freed, recomputed later).",
                &self.preemptions,
            ),
            (
                "engine_requests_waiting",
                "gauge",
                "Requests in the engine's waiting queue.",
                &self.waiting,
            ),
            (
                "engine_requests_running",
                "gauge",
                "Requests in the running batch.",
                &self.running,
            ),
            (
                "engine_requests_in_flight",
                "gauge",
                "Admitted requests not yet finished (waiting + running).",
                &self.in_flight,
            ),
            (
                "engine_kv_cache_blocks_in_use",
                "gauge",
                "KV-cache blocks referenced by requests.",
                &self.blocks_in_use,
            ),
            (
                "engine_kv_cache_blocks_total",
                "gauge",
                "KV-cache blocks.",
                &self.num_blocks,
            ),
        ];
        for (name, kind, help, v) in simple {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Relaxed)
            );
        }
        let used = self.blocks_in_use.load(Relaxed) as f64;
        let total = self.num_blocks.load(Relaxed).max(1) as f64;
        let _ = writeln!(s, "# HELP engine_kv_cache_usage_ratio Fraction of KV-cache blocks in use.\n# TYPE engine_kv_cache_usage_ratio gauge\nengine_kv_cache_usage_ratio {}", used / total);
        self.ttft.render(
            &mut s,
            "engine_time_to_first_token_seconds",
            "Received -> first token.",
        );
        self.itl.render(
            &mut s,
            "engine_inter_token_latency_seconds",
            "Gaps between consecutive tokens of a request.",
        );
        self.e2e.render(
            &mut s,
            "engine_e2e_request_latency_seconds",
            "Received -> last token, finished requests.",
        );
        self.queue.render(
            &mut s,
            "engine_queue_time_seconds",
            "Received -> first scheduled.",
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let m = Metrics::default();
        for v in [0.005, 0.02, 0.02, 3.0, 500.0] {
            m.ttft.observe(v);
        }
        m.ttft.observe(f64::NAN);
        m.count(Outcome::Ok);
        m.count(Outcome::Rejected);
        m.count(Outcome::Rejected);
        let text = m.render();
        assert!(text.contains("engine_time_to_first_token_seconds_bucket{le=\"0.01\"} 1\n"));
        assert!(text.contains("engine_time_to_first_token_seconds_bucket{le=\"0.025\"} 3\n"));
        assert!(text.contains("engine_time_to_first_token_seconds_bucket{le=\"5\"} 4\n"));
        assert!(text.contains("engine_time_to_first_token_seconds_bucket{le=\"+Inf\"} 5\n"));
        assert!(text.contains("engine_time_to_first_token_seconds_count 5\n"));
        assert!(text.contains("engine_time_to_first_token_seconds_sum 503.045"));
        assert!(text.contains("engine_requests_total{outcome=\"rejected\"} 2\n"));
        assert!(text.contains("engine_requests_total{outcome=\"ok\"} 1\n"));
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let v = line.rsplit(' ').next().unwrap();
            assert!(v.parse::<f64>().is_ok(), "{line}");
        }
    }
}
