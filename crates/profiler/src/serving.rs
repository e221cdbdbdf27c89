//! Serving workloads through the real scheduler.
//!
//! - Closed loop (`--concurrency N`): N requests in flight; each time one finishes the
//!   next is added, until `num_requests` have been issued.
//! - Open loop (`--request-rate R`): arrival times drawn up front from a Poisson
//!   process (exponential gaps of mean 1/R, seeded). A request whose arrival falls
//!   while a step runs is handed to the engine when the step returns; its arrival is
//!   the scheduled time, so that wait counts as queue time.
//!
//! Queue time = arrival -> first scheduled; compute time = first scheduled -> last token.

use crate::driver::RunDriver;
use crate::error::Result;
use crate::result::RunRecord;
use crate::run_plan::RunPlan;
use crate::static_batch::RequestShape;
use crate::workload::{Rng, Workload};
use engine_core::Engine;
use std::time::Duration;

/// The request issue policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrivals {
    Closed {
        concurrency: usize,
    },
    /// Open loop at the plan's arrival times (a request without one arrives at once).
    Poisson,
}

/// Arrival offsets (seconds from the run's start) of `n` Poisson arrivals at `rate`.
pub fn poisson_arrivals(n: usize, rate: f64, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let mut t = 0.0;
    (0..n)
        .map(|_| {
            t += rng.exponential(rate);
            t
        })
        .collect()
}

/// Run the requests of `plan` under `arrivals`.
pub fn run_serving(
    engine: &mut Engine,
    workload: &Workload,
    run_index: usize,
    plan: &RunPlan,
    arrivals: Arrivals,
    shape: &RequestShape,
    on_tokens: &mut dyn FnMut(usize),
) -> Result<RunRecord> {
    let mut d = RunDriver::new(run_index, engine);
    let start = d.record.start_s;
    let (requests, schedule) = (&plan.requests, &plan.arrivals_s);
    let num_requests = requests.len();
    let mut intended: Vec<(u64, f64)> = Vec::new();
    let result = (|| {
        let mut next = 0;
        loop {
            match arrivals {
                Arrivals::Closed { concurrency } => {
                    while d.in_flight.len() < concurrency && next < num_requests {
                        d.add(engine, workload, plan.run_seed, &requests[next], shape);
                        next += 1;
                    }
                }
                Arrivals::Poisson => {
                    let now = engine.now_s() - start;
                    while next < num_requests && schedule.get(next).is_none_or(|&a| a <= now) {
                        let r = &requests[next];
                        if let Some(id) = d.add(engine, workload, plan.run_seed, r, shape) {
                            intended.push((id, start + schedule[next]));
                        }
                        next += 1;
                    }
                }
            }
            if engine.has_unfinished() {
                on_tokens(d.step(engine)?);
            } else if next < num_requests {
                if let Some(&at) = schedule.get(next) {
                    let wait = at - (engine.now_s() - start);
                    std::thread::sleep(Duration::from_secs_f64(wait.clamp(0.0, 0.05)));
                }
            } else {
                return Ok(());
            }
        }
    })();
    match result {
        Ok(()) => {
            let mut rec = d.finish(engine);
            for r in &mut rec.requests {
                if let Some(&(_, at)) = intended.iter().find(|(id, _)| *id == r.id) {
                    r.timeline.arrival_s = r.timeline.arrival_s.min(at);
                }
            }
            Ok(rec)
        }
        Err(e) => {
            d.abandon(engine);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_arrivals_increase_at_the_rate() {
        let a = poisson_arrivals(4000, 10.0, 3);
        assert!(a.windows(2).all(|w| w[1] >= w[0]));
        let rate = a.len() as f64 / a[a.len() - 1];
        assert!((rate - 10.0).abs() < 0.6, "{rate}");
        assert_eq!(a, poisson_arrivals(4000, 10.0, 3));
    }
}
