//! Timing records: one per request (its timeline) and one per engine step.
//!
//! Times are seconds since the engine's epoch (`Engine::new`), read from a monotonic
//! clock on the host; a step ends when its sampled ids are on the host and applied. The
//! device's own share (forward, sample) is timed by events on the stream.
//! The profiler derives every metric from these two records; nothing else is timed.

use serde::{Deserialize, Serialize};

/// The life of one request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestTimeline {
    /// Handed to the engine (`add_request`).
    pub arrival_s: f64,
    /// First step that computed any of its tokens.
    pub first_scheduled_s: Option<f64>,
    /// When each output token was available on the host.
    pub token_times_s: Vec<f64>,
    /// When it finished (last token, stop, abort).
    pub finished_s: Option<f64>,
    pub prompt_tokens: usize,
    /// Prompt tokens served from the prefix cache at admission.
    pub cached_prompt_tokens: usize,
    /// Times this request was preempted (its KV freed, recomputed later).
    pub num_preemptions: usize,
}

impl RequestTimeline {
    pub fn output_tokens(&self) -> usize {
        self.token_times_s.len()
    }

    /// Arrival -> first scheduled.
    pub fn queue_s(&self) -> Option<f64> {
        Some(self.first_scheduled_s? - self.arrival_s)
    }

    /// Arrival -> first token on the host.
    pub fn ttft_s(&self) -> Option<f64> {
        Some(self.token_times_s.first()? - self.arrival_s)
    }

    /// Arrival -> last token.
    pub fn e2e_s(&self) -> Option<f64> {
        Some(self.token_times_s.last()? - self.arrival_s)
    }

    /// Gaps between consecutive output tokens.
    pub fn itl_s(&self) -> Vec<f64> {
        self.token_times_s.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// (E2E - TTFT) / (output_tokens - 1); None with fewer than two tokens.
    pub fn tpot_s(&self) -> Option<f64> {
        let n = self.output_tokens();
        (n >= 2)
            .then(|| (self.e2e_s().unwrap_or(0.0) - self.ttft_s().unwrap_or(0.0)) / (n - 1) as f64)
    }
}

/// What one `Engine::step` did and how long it took.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: u64,
    /// Start and end, seconds since the engine's epoch; the end is when the step's
    /// results are applied. With overlap the start is the later of the step's launch
    /// and the previous step's end, so consecutive records never overlap.
    pub start_s: f64,
    pub end_s: f64,
    /// Parts of the step on the host: scheduling, input preparation, launching (the
    /// forward, the sample op and the copy back, enqueued), waiting for the results, and
    /// post-processing (detokenize, stop strings, scheduler update, outputs). On the CPU
    /// the ops run as they are launched, so `launch_s` holds the compute.
    pub schedule_s: f64,
    pub prepare_s: f64,
    #[serde(default)]
    pub launch_s: f64,
    #[serde(default)]
    pub wait_s: f64,
    #[serde(default)]
    pub postprocess_s: f64,
    /// The forward pass and the sample op as the device ran them (CUDA events; host
    /// times of the same calls on the CPU).
    pub forward_s: f64,
    pub sample_s: f64,
    /// Launched before the previous step's results were read: this step's interval
    /// overlaps its neighbours' (start to end spans two calls of `Engine::step`).
    #[serde(default)]
    pub overlapped: bool,
    /// Sequences in the batch, and how many of them are decoding one token.
    pub num_seqs: usize,
    pub num_decode_seqs: usize,
    /// Prompt (or recomputed) tokens computed this step.
    pub num_prefill_tokens: usize,
    /// All tokens computed this step (prefill + decode).
    pub num_batched_tokens: usize,
    /// Sum of context lengths attended to (KV tokens read).
    pub num_context_tokens: usize,
    pub blocks_in_use: usize,
    pub num_blocks: usize,
    /// Prompt tokens served from the prefix cache for requests admitted this step.
    pub cached_prefix_tokens: usize,
    pub num_preempted: usize,
    pub num_waiting: usize,
    /// The decode-graph bucket this step ran (0: it ran eagerly).
    #[serde(default)]
    pub graph_bucket: usize,
}

impl StepRecord {
    pub fn duration_s(&self) -> f64 {
        self.end_s - self.start_s
    }

    pub fn is_decode_only(&self) -> bool {
        self.num_prefill_tokens == 0 && self.num_decode_seqs > 0
    }
}
