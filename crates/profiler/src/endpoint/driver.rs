//! Issuing requests over HTTP the way the in-process drivers hand them to the engine: a
//! static batch (all at once), a closed loop (N in flight, the next sent when one
//! ends), or Poisson arrivals (seeded, as in [`crate::serving`]). Every request ends in
//! one [`Outcome`]: answered, rejected (429), failed or timed out; none is dropped.
//! [`run_record`] turns a run's outcomes into the same [`RunRecord`] the in-process
//! drivers produce, so that the summary, the report and `engine report A B` apply as they are.

use super::http::{self, BaseUrl};
use super::request::{clip, Api, StreamLog, TokenSource};
use super::sse::SseParser;
use crate::result::{RequestRecord, RunRecord};
use crate::run_plan::RunPlan;
use engine_core::RequestTimeline;
use futures_util::stream::{FuturesUnordered, StreamExt};
use hyper::Method;
use std::time::{Duration, Instant};

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct Client {
    pub url: BaseUrl,
    pub api: Api,
    /// Give up on a request after this long (it counts as timed out).
    pub timeout: Duration,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    Answered(StreamLog),
    /// HTTP 429.
    Rejected,
    Failed(String),
    TimedOut,
}

/// One request: its index in the run, when it was sent and when it ended (seconds since
/// the run's epoch), and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub index: usize,
    pub arrival_s: f64,
    pub end_s: f64,
    pub ended: Ended,
}

/// The request issue policy.
#[derive(Debug, Clone, PartialEq)]
pub enum Issue {
    /// All at once.
    Batch,
    /// This many in flight.
    Closed(usize),
    /// Open loop: each request sent at its offset (seconds from the epoch), as planned.
    Open(Vec<f64>),
}

/// The message of an OpenAI error body, or the body itself.
fn error_message(body: &str) -> String {
    let v: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let msg = v.as_ref().and_then(|v| {
        let m = v
            .get("error")
            .and_then(|e| e.get("message"))
            .or_else(|| v.get("message"));
        m.and_then(|m| m.as_str()).map(String::from)
    });
    clip(msg.as_deref().unwrap_or(body.trim()))
}

async fn exchange(client: &Client, body: Vec<u8>, epoch: Instant) -> Ended {
    let mut resp = match http::send(&client.url, Method::POST, client.api.path(), Some(body)).await
    {
        Ok(r) => r,
        Err(e) => return Ended::Failed(e),
    };
    if resp.status == 429 {
        return Ended::Rejected;
    }
    if resp.status != 200 {
        let status = resp.status;
        let text = resp.text().await.unwrap_or_default();
        return Ended::Failed(format!("HTTP {status}: {}", error_message(&text)));
    }
    let mut parser = SseParser::default();
    let mut log = StreamLog::default();
    while let Some(data) = resp.next_data().await {
        let data = match data {
            Ok(d) => d,
            Err(e) => return Ended::Failed(e),
        };
        let t = epoch.elapsed().as_secs_f64();
        for event in parser.push(&data) {
            log.on_event(&event, t);
        }
        if log.done {
            break;
        }
    }
    match &log.error {
        Some(e) => Ended::Failed(format!("error event: {e}")),
        None if !log.done && log.finish_reason.is_none() => {
            Ended::Failed("the stream ended without a finish_reason or [DONE]".into())
        }
        None => Ended::Answered(log),
    }
}

async fn one(client: &Client, index: usize, body: Vec<u8>, epoch: Instant) -> Outcome {
    let arrival_s = epoch.elapsed().as_secs_f64();
    let ended = tokio::time::timeout(client.timeout, exchange(client, body, epoch))
        .await
        .unwrap_or(Ended::TimedOut);
    Outcome {
        index,
        arrival_s,
        end_s: epoch.elapsed().as_secs_f64(),
        ended,
    }
}

/// Send `bodies` under `issue`; `on_end` hears each outcome as it ends.
pub async fn run(
    client: &Client,
    bodies: Vec<Vec<u8>>,
    issue: Issue,
    epoch: Instant,
    on_end: &mut dyn FnMut(&Outcome),
) -> Vec<Outcome> {
    let n = bodies.len();
    let schedule = match &issue {
        Issue::Open(at) => at.clone(),
        _ => Vec::new(),
    };
    let limit = match issue {
        Issue::Closed(c) => c.max(1),
        _ => usize::MAX,
    };
    let mut bodies = bodies.into_iter().enumerate();
    let mut pending = FuturesUnordered::new();
    let mut outcomes = Vec::with_capacity(n);
    let mut next = 0;
    loop {
        if !matches!(issue, Issue::Open(_)) {
            while pending.len() < limit {
                let Some((i, b)) = bodies.next() else { break };
                pending.push(one(client, i, b, epoch));
                next += 1;
            }
        }
        let due = schedule
            .get(next)
            .map(|&at| epoch + Duration::from_secs_f64(at));
        tokio::select! {
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now).into()), if due.is_some() => {
                if let Some((i, b)) = bodies.next() {
                    pending.push(one(client, i, b, epoch));
                }
                next += 1;
            }
            Some(o) = pending.next(), if !pending.is_empty() => {
                on_end(&o);
                outcomes.push(o);
            }
            else => break,
        }
    }
    outcomes
}

/// Output tokens of an outcome (for progress): answered ones only.
pub fn output_tokens(o: &Outcome) -> usize {
    match &o.ended {
        Ended::Answered(log) => log.completion_tokens.unwrap_or(0),
        _ => 0,
    }
}

/// The run as the in-process drivers record it: answered requests with their timelines
/// and use cases (no queue time or steps: the server does not expose them), the rest
/// counted. The plan's prompt length is used when the server reports no usage.
pub fn run_record(
    index: usize,
    outcomes: Vec<Outcome>,
    plan: &RunPlan,
    count: &dyn Fn(&str) -> usize,
    sources: &mut Vec<TokenSource>,
) -> RunRecord {
    let mut rec = RunRecord {
        index,
        start_s: outcomes
            .iter()
            .map(|o| o.arrival_s)
            .fold(f64::INFINITY, f64::min),
        end_s: outcomes.iter().map(|o| o.end_s).fold(0.0, f64::max),
        ..Default::default()
    };
    if outcomes.is_empty() {
        rec.start_s = 0.0;
    }
    for o in outcomes {
        match o.ended {
            Ended::Answered(log) => {
                let (times, source) = log.token_times(count);
                let planned = plan.requests.get(o.index);
                if !sources.contains(&source) {
                    sources.push(source);
                }
                rec.requests.push(RequestRecord {
                    id: o.index as u64,
                    finish_reason: log
                        .finish_reason
                        .clone()
                        .unwrap_or_else(|| "unknown".into()),
                    timeline: RequestTimeline {
                        arrival_s: o.arrival_s,
                        first_scheduled_s: None,
                        token_times_s: times,
                        finished_s: Some(o.end_s),
                        prompt_tokens: log
                            .prompt_tokens
                            .unwrap_or(planned.map_or(0, |p| p.input_len)),
                        ..Default::default()
                    },
                    use_case: planned.and_then(|p| p.use_case.clone()),
                });
            }
            Ended::Rejected => rec.rejected += 1,
            Ended::TimedOut => rec.timed_out += 1,
            Ended::Failed(e) => {
                rec.failed += 1;
                if rec.errors.len() < 5 && !rec.errors.contains(&e) {
                    rec.errors.push(e);
                }
            }
        }
    }
    rec.requests.sort_by_key(|r| r.id);
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(tokens: &[f64]) -> Ended {
        let mut log = StreamLog::default();
        for (i, &t) in tokens.iter().enumerate() {
            let v = serde_json::json!({"choices": [{"text": "x", "finish_reason": null}],
                "usage": {"prompt_tokens": 3, "completion_tokens": i + 1}});
            log.on_event(&v.to_string(), t);
        }
        log.on_event("[DONE]", tokens.last().copied().unwrap_or(0.0));
        Ended::Answered(log)
    }

    #[test]
    fn outcomes_become_a_run_record_with_every_failure_counted() {
        let o = |index, arrival_s, end_s, ended| Outcome {
            index,
            arrival_s,
            end_s,
            ended,
        };
        let outcomes = vec![
            o(1, 0.5, 3.0, answered(&[1.0, 2.0, 3.0])),
            o(0, 0.0, 2.0, answered(&[0.5, 2.0])),
            o(2, 0.6, 0.7, Ended::Rejected),
            o(3, 0.6, 9.0, Ended::TimedOut),
            o(4, 0.7, 0.8, Ended::Failed("HTTP 400: bad".into())),
            o(5, 0.7, 0.8, Ended::Failed("HTTP 400: bad".into())),
        ];
        let mut sources = Vec::new();
        let plan = RunPlan {
            run_seed: 7,
            requests: (0..6)
                .map(|index| crate::run_plan::PlannedRequest {
                    index,
                    use_case: Some("chat".into()),
                    input_len: 99,
                    output_len: 3,
                })
                .collect(),
            arrivals_s: Vec::new(),
        };
        let rec = run_record(0, outcomes, &plan, &|_| 0, &mut sources);
        assert_eq!((rec.start_s, rec.end_s), (0.0, 9.0));
        assert_eq!((rec.rejected, rec.timed_out, rec.failed), (1, 1, 2));
        assert_eq!(rec.errors, vec!["HTTP 400: bad".to_string()]);
        assert_eq!(rec.requests.len(), 2);
        let t = &rec.requests[1].timeline;
        assert_eq!((rec.requests[1].id, t.prompt_tokens), (1, 3));
        assert_eq!(rec.requests[1].use_case.as_deref(), Some("chat"));
        assert_eq!(t.ttft_s(), Some(0.5));
        assert_eq!(t.itl_s(), vec![1.0, 1.0]);
        assert!(t.queue_s().is_none());
        assert_eq!(sources, vec![TokenSource::ChunkUsage]);
    }

    #[test]
    fn error_bodies_give_their_message() {
        assert_eq!(
            error_message(r#"{"error":{"message":"too long","type":"x"}}"#),
            "too long"
        );
        assert_eq!(error_message(r#"{"object":"error","message":"m"}"#), "m");
        assert_eq!(error_message(" plain "), "plain");
    }
}
