//! Chrome / Perfetto trace (JSON trace-event format): one process per configuration,
//! thread 0 carries every engine step as a complete (`X`) event with its parts
//! (schedule, prepare, forward, sample, postprocess) nested inside; one thread per
//! request shows its queue and compute spans. Timestamps are microseconds since the engine's epoch.

use crate::result::{BenchResults, ConfigResult};
use serde_json::{json, Value};

fn step_events(pid: usize, cfg: &ConfigResult, out: &mut Vec<Value>) {
    for run in &cfg.runs {
        for s in &run.steps {
            let kind = match (s.num_prefill_tokens > 0, s.num_decode_seqs > 0) {
                (true, true) => "mixed step",
                (true, false) => "prefill step",
                _ => "decode step",
            };
            let ts = s.start_s * 1e6;
            out.push(json!({
                "name": kind, "ph": "X", "pid": pid, "tid": 0, "ts": ts, "dur": s.duration_s() * 1e6,
                "args": {"run": run.index, "step": s.step, "num_seqs": s.num_seqs,
                         "num_prefill_tokens": s.num_prefill_tokens,
                         "num_batched_tokens": s.num_batched_tokens,
                         "num_context_tokens": s.num_context_tokens,
                         "blocks_in_use": s.blocks_in_use, "num_waiting": s.num_waiting}
            }));
            let mut t = ts;
            for (name, d) in [
                ("schedule", s.schedule_s),
                ("prepare", s.prepare_s),
                ("forward", s.forward_s),
                ("sample", s.sample_s),
                ("postprocess", s.postprocess_s),
            ] {
                if d > 0.0 {
                    out.push(json!({"name": name, "ph": "X", "pid": pid, "tid": 0, "ts": t, "dur": d * 1e6}));
                    t += d * 1e6;
                }
            }
        }
    }
}

fn request_events(pid: usize, cfg: &ConfigResult, out: &mut Vec<Value>) {
    let mut tid = 1;
    for run in &cfg.runs {
        for q in &run.requests {
            let t = &q.timeline;
            out.push(
                json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                            "args": {"name": format!("run {} request {}", run.index, q.id)}}),
            );
            let first = t.first_scheduled_s.unwrap_or(t.arrival_s);
            out.push(json!({"name": "queue", "ph": "X", "pid": pid, "tid": tid,
                            "ts": t.arrival_s * 1e6, "dur": (first - t.arrival_s).max(0.0) * 1e6}));
            if let Some(end) = t.token_times_s.last() {
                out.push(json!({"name": "compute", "ph": "X", "pid": pid, "tid": tid, "ts": first * 1e6,
                                "dur": (end - first).max(0.0) * 1e6,
                                "args": {"output_tokens": t.output_tokens(), "finish": q.finish_reason}}));
            }
            tid += 1;
        }
    }
}

/// The trace as a JSON value (`{"traceEvents": [...]}`).
pub fn render(r: &BenchResults) -> Value {
    let mut events = Vec::new();
    for (pid, cfg) in r.configs.iter().enumerate() {
        events.push(json!({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": cfg.spec.label()}}));
        events.push(json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": "engine steps"}}));
        step_events(pid, cfg, &mut events);
        request_events(pid, cfg, &mut events);
    }
    json!({"traceEvents": events, "displayTimeUnit": "ms",
           "otherData": {"model": r.environment.model, "device": r.environment.device_name}})
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_event_has_phase_and_pid() {
        let r = crate::report::tests::sample_results();
        let v = super::render(&r);
        let events = v["traceEvents"].as_array().cloned().unwrap_or_default();
        assert!(events.iter().any(|e| e["name"] == "prefill step"));
        assert!(events.iter().any(|e| e["name"] == "decode step"));
        assert!(events
            .iter()
            .all(|e| e["ph"].is_string() && e["pid"].is_u64()));
    }
}
