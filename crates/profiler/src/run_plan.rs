//! The requests of one run, decided before the run starts. Every random choice of a
//! benchmark (a request's use case and lengths, its prompt tokens, its sampling seed,
//! open-loop arrival times) is a function of the *run seed*, and the run seed is a
//! function of `--seed`, the configuration and the run's index, nothing else: the
//! seed parity of the profiler (the same command reproduces the same workload).
//!
//! The drivers ([`crate::static_batch`], [`crate::serving`]) only execute a plan;
//! prompt tokens are drawn from [`crate::workload::Workload::prompt`] with the run seed
//! and the request's index.

use crate::serving::poisson_arrivals;
use crate::spec::{ConfigSpec, Load};
use crate::traffic::Traffic;
use engine_scheduler::blocks_for;

/// One request of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRequest {
    pub index: usize,
    /// Its use case's name (`None` without `--workload` / length distributions).
    pub use_case: Option<String>,
    pub input_len: usize,
    pub output_len: usize,
}

impl PlannedRequest {
    /// Its sampling seed.
    pub fn sampling_seed(&self, run_seed: u64) -> u64 {
        run_seed ^ self.index as u64
    }
}

/// Everything random about one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    pub run_seed: u64,
    pub requests: Vec<PlannedRequest>,
    /// Open loop: arrival offsets from the run's start (seconds), one per request.
    pub arrivals_s: Vec<f64>,
}

/// A stable 64-bit hash of a label (FNV-1a), so that configs differing only in their
/// workload get different seeds.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// The seed of run `run` (warm-ups first) of `spec` under `--seed seed`. Distinct per
/// config and run, so prompts are fresh (no prefix-cache hits between runs).
pub fn run_seed(seed: u64, spec: &ConfigSpec, run: usize) -> u64 {
    let base = seed
        ^ ((spec.input_len as u64) << 32)
        ^ (((spec.load.value() * 1000.0) as u64) << 8)
        ^ (spec.output_len as u64)
        ^ spec.workload.as_deref().map_or(0, fnv1a);
    base.wrapping_add(run as u64 * 0x1_0000_0001)
}

/// The plan of `n` requests of `spec` in the run seeded `run_seed`. `traffic` draws the
/// lengths (else the spec's fixed lengths); `context` is the model's context length;
/// `open_loop` draws Poisson arrivals at the spec's rate.
pub fn plan_run(
    spec: &ConfigSpec,
    traffic: Option<&Traffic>,
    run_seed: u64,
    n: usize,
    context: usize,
    open_loop: bool,
) -> RunPlan {
    let requests = (0..n)
        .map(|index| match traffic {
            Some(t) => {
                let d = t.draw(run_seed, index as u64, context);
                PlannedRequest {
                    index,
                    use_case: Some(t.use_cases[d.use_case].name.clone()),
                    input_len: d.input_len,
                    output_len: d.output_len,
                }
            }
            None => PlannedRequest {
                index,
                use_case: None,
                input_len: spec.input_len,
                output_len: spec.output_len,
            },
        })
        .collect();
    let arrivals_s = match (spec.load, open_loop) {
        (Load::Rate { requests_per_s }, true) => poisson_arrivals(n, requests_per_s, run_seed),
        _ => Vec::new(),
    };
    RunPlan {
        run_seed,
        requests,
        arrivals_s,
    }
}

/// The engine's limits a plan must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub context: usize,
    pub max_num_seqs: usize,
    pub block_size: usize,
    pub num_blocks: usize,
}

impl RunPlan {
    /// `Ok` when the plan can run, else why not. A static batch (`all_at_once`) must
    /// hold every sequence at full length in the KV cache at once; otherwise each
    /// request must fit on its own.
    pub fn fits(&self, cap: &Capacity, all_at_once: bool) -> Result<(), String> {
        if let Some(r) = self
            .requests
            .iter()
            .find(|r| r.input_len == 0 || r.output_len == 0)
        {
            return Err(format!(
                "request {}: input and output lengths must be at least 1",
                r.index
            ));
        }
        let longest = self
            .requests
            .iter()
            .map(|r| r.input_len + r.output_len)
            .max()
            .unwrap_or(0);
        if longest > cap.context {
            return Err(format!(
                "{longest} tokens per sequence exceed the model's context of {}",
                cap.context
            ));
        }
        let batch = if all_at_once { self.requests.len() } else { 1 };
        if batch > cap.max_num_seqs {
            return Err(format!(
                "batch {batch} exceeds max_num_seqs {}",
                cap.max_num_seqs
            ));
        }
        let blocks = |r: &PlannedRequest| blocks_for(r.input_len + r.output_len, cap.block_size);
        let needed: usize = if all_at_once {
            self.requests.iter().map(blocks).sum()
        } else {
            self.requests.iter().map(blocks).max().unwrap_or(0)
        };
        if needed > cap.num_blocks {
            return Err(if all_at_once {
                format!(
                    "needs {needed} KV blocks ({batch} sequences, up to {longest} tokens, block size {}), the cache has {}",
                    cap.block_size, cap.num_blocks
                )
            } else {
                format!(
                    "a {longest}-token sequence needs {needed} KV blocks (block size {}), the cache has {}",
                    cap.block_size, cap.num_blocks
                )
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Sweep;

    fn spec(load: Load, workload: Option<&str>) -> ConfigSpec {
        ConfigSpec {
            load,
            input_len: 16,
            output_len: 8,
            temperature: 0.0,
            top_p: 1.0,
            workload: workload.map(String::from),
        }
    }

    #[test]
    fn seeds_depend_on_seed_config_and_run_only() {
        let s = spec(
            Load::Rate {
                requests_per_s: 2.0,
            },
            Some("mixed"),
        );
        assert_eq!(run_seed(1, &s, 0), run_seed(1, &s, 0));
        let others = [
            run_seed(2, &s, 0),
            run_seed(1, &s, 1),
            run_seed(
                1,
                &spec(
                    Load::Rate {
                        requests_per_s: 3.0,
                    },
                    Some("mixed"),
                ),
                0,
            ),
            run_seed(
                1,
                &spec(
                    Load::Rate {
                        requests_per_s: 2.0,
                    },
                    Some("chat"),
                ),
                0,
            ),
        ];
        assert!(others.iter().all(|&o| o != run_seed(1, &s, 0)));
    }

    #[test]
    fn the_same_seed_plans_the_same_run() {
        let t = Traffic::preset("mixed").unwrap();
        let s = spec(
            Load::Rate {
                requests_per_s: 4.0,
            },
            Some("mixed"),
        );
        let plan = |seed| plan_run(&s, Some(&t), run_seed(seed, &s, 1), 32, 8192, true);
        let (a, b, c) = (plan(5), plan(5), plan(6));
        assert_eq!(a, b);
        assert_eq!(a.arrivals_s.len(), 32);
        assert_ne!(a.requests, c.requests);
        assert_ne!(a.arrivals_s, c.arrivals_s);
        assert!(a
            .requests
            .iter()
            .any(|r| r.input_len != a.requests[0].input_len));
    }

    #[test]
    fn prompts_are_a_function_of_the_seed_and_the_plan() {
        let t = Traffic::preset("chat").unwrap();
        let s = spec(Load::Concurrency { n: 2 }, Some("chat"));
        let prompts = |seed: u64| {
            // The workload is seeded by --seed too (bench.rs builds it from the same flag).
            let w = crate::workload::Workload::random(300, &[256, 257], seed).unwrap();
            let p = plan_run(&s, Some(&t), run_seed(seed, &s, 0), 8, 256, false);
            p.requests
                .iter()
                .map(|r| w.prompt(p.run_seed, r.index as u64, r.input_len))
                .collect::<Vec<_>>()
        };
        assert_eq!(prompts(1), prompts(1));
        assert_ne!(prompts(1), prompts(2));
    }

    #[test]
    fn fixed_lengths_without_traffic_and_no_arrivals_in_closed_loop() {
        let s = spec(Load::Concurrency { n: 4 }, None);
        let p = plan_run(&s, None, 9, 3, 256, true);
        assert!(p.arrivals_s.is_empty());
        assert!(p
            .requests
            .iter()
            .all(|r| (r.input_len, r.output_len) == (16, 8)));
        assert_eq!(p.requests[2].sampling_seed(9), 9 ^ 2);
    }

    #[test]
    fn fit_checks_the_batch_at_once_or_each_request_alone() {
        let s = Sweep {
            loads: vec![Load::Batch { size: 4 }],
            input_lens: vec![8],
            output_lens: vec![8],
            temperatures: vec![0.0],
            top_ps: vec![1.0],
            workload: None,
        }
        .expand();
        let p = plan_run(&s[0], None, 0, 4, 256, false);
        let cap = Capacity {
            context: 256,
            max_num_seqs: 256,
            block_size: 16,
            num_blocks: 4,
        };
        assert_eq!(p.fits(&cap, true), Ok(()));
        let small = Capacity {
            num_blocks: 3,
            ..cap
        };
        assert!(p
            .fits(&small, true)
            .unwrap_err()
            .contains("needs 4 KV blocks"));
        assert_eq!(p.fits(&small, false), Ok(()));
        let short = Capacity { context: 15, ..cap };
        assert!(p.fits(&short, false).unwrap_err().contains("context of 15"));
    }
}
