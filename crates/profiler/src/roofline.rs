//! Hardware floors: how fast each step could possibly be on this machine, and how close
//! the measured steps came.
//!
//! - Decode step floor = (weight bytes read + KV bytes read) / memory bandwidth (the better
//!   of the measured copy and GEMV rates); weight bytes read = all weights but an
//!   untied embedding table (of which only the batch's rows are gathered); KV bytes read = `num_context_tokens * kv_bytes_per_token` (every sequence reads its
//!   whole context once per layer; the per-token figure already sums the layers).
//! - Prefill step floor = FLOPs / peak matmul rate, with FLOPs =
//!   `2 * P_body * num_batched_tokens` (P_body: parameters of the layers, excluding the
//!   embedding table and the LM head) `+ 2 * vocab * hidden * num_seqs` (the LM head runs
//!   on sampled rows only) `+ 2 * layers * q_dim * num_prefill_tokens * mean context`
//!   (QK^T and PV, halved for causality). The attention term is an estimate from the
//!   step record's pooled context length.
//!
//! The achieved fraction is floor / measured (1.0 would be at the hardware limit).
//! Ceilings come from [`crate::device`], measured on this machine, not from datasheets.

use crate::device::Ceilings;
use crate::result::{ModelFacts, RunRecord};
use engine_core::StepRecord;
use serde::{Deserialize, Serialize};

/// Floors against measurements for one configuration, summed over its measured runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Roofline {
    pub mem_bandwidth_bytes_per_s: f64,
    pub matmul_flops_per_s: f64,
    pub decode_steps: usize,
    pub decode_floor_s: f64,
    pub decode_measured_s: f64,
    pub decode_fraction: Option<f64>,
    pub prefill_steps: usize,
    pub prefill_flops: f64,
    pub prefill_floor_s: f64,
    pub prefill_measured_s: f64,
    pub prefill_fraction: Option<f64>,
}

/// Bytes a decode step must read at least once: every weight except an untied embedding
/// table (only the batch's rows of it are gathered), plus the KV of every context token.
pub fn decode_bytes(step: &StepRecord, m: &ModelFacts) -> f64 {
    let kv = step.num_context_tokens as f64 * m.kv_bytes_per_token as f64;
    if m.weight_bytes_read > 0 {
        return m.weight_bytes_read as f64 + kv;
    }
    let bytes_per_param = m.weight_bytes as f64 / (m.num_parameters.max(1)) as f64;
    let untied_embed = if m.tie_word_embeddings {
        0.0
    } else {
        (m.vocab_size * m.hidden_size) as f64 * bytes_per_param
    };
    m.weight_bytes as f64 - untied_embed
        + step.num_context_tokens as f64 * m.kv_bytes_per_token as f64
}

/// Matmul FLOPs of a step (see the module docs).
pub fn step_flops(step: &StepRecord, m: &ModelFacts) -> f64 {
    let embed = (m.vocab_size * m.hidden_size) as f64;
    let head = if m.tie_word_embeddings { 0.0 } else { embed };
    let body = (m.num_parameters as f64 - embed - head).max(0.0);
    let mean_ctx = if step.num_seqs > 0 {
        step.num_context_tokens as f64 / step.num_seqs as f64
    } else {
        0.0
    };
    2.0 * body * step.num_batched_tokens as f64
        + 2.0 * embed * step.num_seqs as f64
        + 2.0 * (m.num_hidden_layers * m.q_dim) as f64 * step.num_prefill_tokens as f64 * mean_ctx
}

/// The roofline of the measured `runs`.
pub fn roofline(runs: &[RunRecord], m: &ModelFacts, c: &Ceilings) -> Roofline {
    let mut r = Roofline {
        mem_bandwidth_bytes_per_s: c.mem_bandwidth_bytes_per_s(),
        matmul_flops_per_s: c.matmul_flops_per_s,
        ..Default::default()
    };
    for s in runs.iter().flat_map(|run| run.steps.iter()) {
        if s.num_prefill_tokens > 0 {
            let flops = step_flops(s, m);
            r.prefill_steps += 1;
            r.prefill_flops += flops;
            r.prefill_floor_s += flops / c.matmul_flops_per_s.max(1.0);
            r.prefill_measured_s += s.duration_s();
        } else if s.is_decode_only() {
            r.decode_steps += 1;
            r.decode_floor_s += decode_bytes(s, m) / r.mem_bandwidth_bytes_per_s.max(1.0);
            r.decode_measured_s += s.duration_s();
        }
    }
    let frac = |floor: f64, measured: f64| (measured > 0.0).then(|| floor / measured);
    r.decode_fraction = frac(r.decode_floor_s, r.decode_measured_s);
    r.prefill_fraction = frac(r.prefill_floor_s, r.prefill_measured_s);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ModelFacts {
        ModelFacts {
            num_parameters: 1_000 + 2 * 100,
            weight_bytes: 1_000_000,
            kv_bytes_per_token: 100,
            vocab_size: 10,
            hidden_size: 10,
            num_hidden_layers: 2,
            q_dim: 10,
            tie_word_embeddings: true,
            ..Default::default()
        }
    }

    #[test]
    fn floors_follow_the_formulas() {
        let ceilings = Ceilings {
            copy_bytes_per_s: 1e9,
            matmul_flops_per_s: 1e6,
            ..Default::default()
        };
        let decode = StepRecord {
            start_s: 0.0,
            end_s: 0.004,
            num_seqs: 2,
            num_decode_seqs: 2,
            num_batched_tokens: 2,
            num_context_tokens: 10_000,
            ..Default::default()
        };
        let prefill = StepRecord {
            start_s: 0.0,
            end_s: 1.0,
            num_seqs: 1,
            num_prefill_tokens: 10,
            num_batched_tokens: 10,
            num_context_tokens: 10,
            ..Default::default()
        };
        let m = facts();
        // (1e6 + 1e4 * 100) bytes = 2e6 bytes at 1 GB/s = 2 ms; measured 4 ms -> 0.5.
        assert_eq!(decode_bytes(&decode, &m), 2e6);
        // body = 1200 - 100 (tied embedding) = 1100:
        // 2*1100*10 + 2*100*1 + 2*(2*10)*10*10 = 22000 + 200 + 4000
        assert_eq!(step_flops(&prefill, &m), 26_200.0);
        // Untied: the embedding table (100 params of 1200, 1e6 bytes) is not read.
        let untied = ModelFacts {
            tie_word_embeddings: false,
            ..facts()
        };
        assert!((decode_bytes(&decode, &untied) - (2e6 - 1e6 / 12.0)).abs() < 1e-6);
        // The decoder's own count of bytes read (quantized weights) wins.
        let quantized = ModelFacts {
            weight_bytes_read: 300_000,
            ..facts()
        };
        assert_eq!(decode_bytes(&decode, &quantized), 1.3e6);
        let run = RunRecord {
            steps: vec![prefill, decode],
            ..Default::default()
        };
        let r = roofline(&[run], &m, &ceilings);
        assert!((r.decode_floor_s - 0.002).abs() < 1e-12);
        assert!((r.decode_fraction.unwrap() - 0.5).abs() < 1e-9);
        assert!((r.prefill_floor_s - 0.0262).abs() < 1e-12);
        assert!((r.prefill_fraction.unwrap() - 0.0262).abs() < 1e-9);
    }
}
