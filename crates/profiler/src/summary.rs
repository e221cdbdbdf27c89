//! Per-configuration metrics, derived only from the engine's records (request
//! timelines and step records) of the measured runs; warm-up runs never reach here.
//!
//! Definitions (see docs/metrics.md): TTFT = first token - arrival; ITL = every gap
//! between consecutive tokens of a request, pooled over all requests; TPOT = per
//! request (E2E - TTFT) / (tokens - 1); E2E = last token - arrival; queue = first
//! scheduled - arrival; compute = E2E - queue. A *prefill step* is any step that
//! computed prompt tokens (mixed steps included); a *decode step* is a decode-only
//! step. Throughputs divide token counts by the measured window of each run.

use crate::analysis::{goodput, Goodput, Slo};
use crate::metrics::{coefficient_of_variation, Summary};
use crate::result::RunRecord;
use engine_core::StepRecord;
use serde::{Deserialize, Serialize};

/// The metrics of one configuration over its measured runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigSummary {
    pub measured_runs: usize,
    pub num_requests: usize,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    pub ttft_s: Summary,
    pub itl_s: Summary,
    pub tpot_s: Summary,
    pub e2e_s: Summary,
    pub queue_s: Summary,
    pub compute_s: Summary,
    /// Per run: total duration of its prefill steps.
    pub prefill_s: Summary,
    /// Prompt tokens computed over prefill-step time, all runs pooled.
    pub prefill_tok_per_s: Option<f64>,
    /// Duration of each decode-only step.
    pub decode_step_s: Summary,
    /// Of each decode-only step: its forward pass (finished on the device).
    #[serde(default)]
    pub decode_forward_s: Summary,
    /// Of each decode-only step: its sampling (the one sample launch and the copy of
    /// ids / logprobs to the host), apart from the forward.
    #[serde(default)]
    pub decode_sample_s: Summary,
    /// Decode tokens over decode-step time, all runs pooled.
    pub decode_tok_per_s: Option<f64>,
    /// Per run: output tokens over the run's window (sustained output throughput).
    pub output_tok_per_s: Summary,
    /// Coefficient of variation of the per-run output throughput.
    pub output_tok_per_s_cv: Option<f64>,
    /// (prompt + output) tokens over the pooled window.
    pub total_tok_per_s: Option<f64>,
    pub requests_per_s: Option<f64>,
    pub goodput: Option<Goodput>,
    /// The profiler's own time between steps.
    pub overhead_s: Summary,
    /// Peak KV blocks in use over all steps, and the cache's size.
    pub max_blocks_in_use: usize,
    pub num_blocks: usize,
    pub num_preemptions: usize,
    pub cached_prompt_tokens: usize,
    /// Requests refused (engine admission, or HTTP 429), failed and timed out (over
    /// HTTP), all runs: counted here, never in the latency metrics.
    #[serde(default)]
    pub rejected: usize,
    #[serde(default)]
    pub failed: usize,
    #[serde(default)]
    pub timed_out: usize,
    /// The summed measured windows (seconds): the time the cost figures pay for.
    #[serde(default)]
    pub window_s: f64,
    /// One row per use case (`--workload`, length distributions), else empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub use_cases: Vec<crate::breakdown::UseCaseSummary>,
    /// E2E against output and prompt lengths (none when lengths do not vary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length_fit: Option<crate::breakdown::LengthFit>,
}

impl ConfigSummary {
    /// Mean sustained output throughput, the throughput the analysis uses.
    pub fn throughput(&self) -> Option<f64> {
        self.output_tok_per_s.mean
    }
}

fn steps_where<'a>(
    runs: &'a [RunRecord],
    pred: impl Fn(&StepRecord) -> bool + 'a,
) -> impl Iterator<Item = &'a StepRecord> + 'a {
    runs.iter()
        .flat_map(|r| r.steps.iter())
        .filter(move |s| pred(s))
}

fn is_prefill(s: &StepRecord) -> bool {
    s.num_prefill_tokens > 0
}

fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| num / den)
}

/// Summarize the measured runs of one configuration.
pub fn summarize(runs: &[RunRecord], slo: &Slo) -> ConfigSummary {
    let reqs: Vec<_> = runs
        .iter()
        .flat_map(|r| r.requests.iter().map(|q| &q.timeline))
        .collect();
    let collect = |f: &dyn Fn(&engine_core::RequestTimeline) -> Option<f64>| -> Vec<f64> {
        reqs.iter().filter_map(|t| f(t)).collect()
    };
    let itl: Vec<f64> = reqs.iter().flat_map(|t| t.itl_s()).collect();
    let compute = collect(&|t| Some(t.e2e_s()? - t.queue_s()?));
    let prompt_tokens: usize = reqs.iter().map(|t| t.prompt_tokens).sum();
    let output_tokens: usize = reqs.iter().map(|t| t.output_tokens()).sum();
    let wall: f64 = runs.iter().map(RunRecord::wall_s).sum();

    // Runs without step records (measured over HTTP) have no prefill time to report.
    let prefill_per_run: Vec<f64> = runs
        .iter()
        .filter(|r| !r.steps.is_empty())
        .map(|r| {
            r.steps
                .iter()
                .filter(|s| is_prefill(s))
                .map(StepRecord::duration_s)
                .sum()
        })
        .collect();
    let prefill_tokens: usize = steps_where(runs, is_prefill)
        .map(|s| s.num_prefill_tokens)
        .sum();
    let decode: Vec<&StepRecord> = steps_where(runs, StepRecord::is_decode_only).collect();
    let decode_times: Vec<f64> = decode.iter().map(|s| s.duration_s()).collect();
    let decode_tokens: usize = decode.iter().map(|s| s.num_decode_seqs).sum();
    let per_run_tput: Vec<f64> = runs
        .iter()
        .filter_map(|r| {
            let toks: usize = r.requests.iter().map(|q| q.timeline.output_tokens()).sum();
            ratio(toks as f64, r.wall_s())
        })
        .collect();
    let all_steps = || runs.iter().flat_map(|r| r.steps.iter());
    let overhead: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.overhead_s.iter().copied())
        .collect();

    ConfigSummary {
        measured_runs: runs.len(),
        num_requests: reqs.len(),
        prompt_tokens,
        output_tokens,
        ttft_s: Summary::of(&collect(&|t| t.ttft_s())),
        itl_s: Summary::of(&itl),
        tpot_s: Summary::of(&collect(&|t| t.tpot_s())),
        e2e_s: Summary::of(&collect(&|t| t.e2e_s())),
        queue_s: Summary::of(&collect(&|t| t.queue_s())),
        compute_s: Summary::of(&compute),
        prefill_tok_per_s: ratio(prefill_tokens as f64, prefill_per_run.iter().sum()),
        prefill_s: Summary::of(&prefill_per_run),
        decode_step_s: Summary::of(&decode_times),
        decode_forward_s: Summary::of(&decode.iter().map(|s| s.forward_s).collect::<Vec<_>>()),
        decode_sample_s: Summary::of(&decode.iter().map(|s| s.sample_s).collect::<Vec<_>>()),
        decode_tok_per_s: ratio(decode_tokens as f64, decode_times.iter().sum()),
        output_tok_per_s_cv: coefficient_of_variation(&per_run_tput),
        output_tok_per_s: Summary::of(&per_run_tput),
        total_tok_per_s: ratio((prompt_tokens + output_tokens) as f64, wall),
        requests_per_s: ratio(reqs.len() as f64, wall),
        goodput: (!slo.is_empty()).then(|| goodput(&reqs, slo, wall)),
        overhead_s: Summary::of(&overhead),
        max_blocks_in_use: all_steps().map(|s| s.blocks_in_use).max().unwrap_or(0),
        num_blocks: all_steps().map(|s| s.num_blocks).max().unwrap_or(0),
        num_preemptions: reqs.iter().map(|t| t.num_preemptions).sum(),
        cached_prompt_tokens: reqs.iter().map(|t| t.cached_prompt_tokens).sum(),
        rejected: runs.iter().map(|r| r.rejected).sum(),
        failed: runs.iter().map(|r| r.failed).sum(),
        timed_out: runs.iter().map(|r| r.timed_out).sum(),
        window_s: wall,
        use_cases: crate::breakdown::use_cases(runs),
        length_fit: crate::breakdown::length_fit(runs),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::result::RequestRecord;
    use engine_core::RequestTimeline;

    /// A synthetic static batch of `b` requests: prefill takes 1 s (one step), then
    /// `n - 1` decode steps of 0.1 s each; every request gets a token per step.
    pub(crate) fn synthetic_run(b: usize, n: usize) -> RunRecord {
        let mut steps = vec![StepRecord {
            start_s: 0.0,
            end_s: 1.0,
            num_seqs: b,
            num_prefill_tokens: 10 * b,
            num_batched_tokens: 10 * b,
            ..Default::default()
        }];
        for i in 1..n {
            let t = 1.0 + 0.1 * i as f64;
            steps.push(StepRecord {
                start_s: t - 0.1,
                end_s: t,
                num_seqs: b,
                num_decode_seqs: b,
                num_batched_tokens: b,
                forward_s: 0.07,
                sample_s: 0.02,
                ..Default::default()
            });
        }
        let times: Vec<f64> = (0..n).map(|i| 1.0 + 0.1 * i as f64).collect();
        let requests = (0..b)
            .map(|i| RequestRecord {
                id: i as u64,
                finish_reason: "length".into(),
                timeline: RequestTimeline {
                    arrival_s: 0.0,
                    first_scheduled_s: Some(0.0),
                    token_times_s: times.clone(),
                    finished_s: times.last().copied(),
                    prompt_tokens: 10,
                    ..Default::default()
                },
                use_case: None,
            })
            .collect();
        RunRecord {
            index: 0,
            start_s: 0.0,
            end_s: *times.last().unwrap_or(&1.0),
            requests,
            steps,
            overhead_s: vec![1e-5; n],
            ..Default::default()
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn static_batch_metrics_have_known_answers() {
        // 4 requests, 11 tokens each: TTFT 1 s, ITL 0.1 s, E2E 2 s, TPOT 0.1 s.
        let s = summarize(&[synthetic_run(4, 11)], &Slo::default());
        assert_eq!(s.num_requests, 4);
        assert_eq!(s.output_tokens, 44);
        assert!(close(s.ttft_s.p50, 1.0));
        assert!(close(s.itl_s.p99, 0.1));
        assert_eq!(s.itl_s.count, 40);
        assert!(close(s.tpot_s.mean, 0.1));
        assert!(close(s.e2e_s.p90, 2.0));
        assert!(close(s.prefill_s.mean, 1.0));
        assert!(close(s.prefill_tok_per_s, 40.0));
        assert_eq!(s.decode_step_s.count, 10);
        assert!(close(s.decode_tok_per_s, 40.0)); // 4 tokens per 0.1 s step
        assert!(close(s.decode_forward_s.p50, 0.07) && close(s.decode_sample_s.p50, 0.02));
        assert_eq!(s.decode_sample_s.count, 10, "decode-only steps only");
        assert!(close(s.output_tok_per_s.mean, 22.0)); // 44 tokens in 2 s
        assert!(close(s.requests_per_s, 2.0));
        assert!(close(s.total_tok_per_s, 42.0)); // (40 + 44) / 2
        assert!(s.goodput.is_none());
    }

    #[test]
    fn itl_pools_gaps_while_tpot_averages_per_request() {
        // Request A: tokens at 1, 2, 10 (gaps 1 and 8); request B: 1, 2 (gap 1).
        let mk = |times: Vec<f64>| RequestRecord {
            id: 0,
            finish_reason: "length".into(),
            timeline: RequestTimeline {
                token_times_s: times,
                first_scheduled_s: Some(0.5),
                ..Default::default()
            },
            use_case: None,
        };
        let run = RunRecord {
            end_s: 10.0,
            requests: vec![mk(vec![1.0, 2.0, 10.0]), mk(vec![1.0, 2.0])],
            ..Default::default()
        };
        let s = summarize(&[run], &Slo::default());
        // ITL samples {1, 8, 1}: p50 = 1, mean 10/3. TPOT samples {4.5, 1}: mean 2.75.
        assert_eq!(s.itl_s.count, 3);
        assert!(close(s.itl_s.p50, 1.0));
        assert!(close(s.itl_s.mean, 10.0 / 3.0));
        assert_eq!(s.tpot_s.count, 2);
        assert!(close(s.tpot_s.mean, 2.75));
        assert!(close(s.queue_s.mean, 0.5));
        assert!(close(s.compute_s.p50, (9.5 + 1.5) / 2.0));
    }

    #[test]
    fn cv_is_over_runs() {
        let a = synthetic_run(2, 11);
        let mut b = synthetic_run(2, 11);
        b.end_s = 4.0; // same tokens, twice the window: half the throughput
        let s = summarize(&[a, b], &Slo::default());
        assert_eq!(s.output_tok_per_s.count, 2);
        assert!(close(s.output_tok_per_s.mean, (11.0 + 5.5) / 2.0));
        assert!(s.output_tok_per_s_cv.is_some_and(|cv| cv > 0.4));
    }
}
