//! Per-request views of a configuration under realistic traffic: one row per use case,
//! and a least-squares fit of latency against request lengths, so a reader sees
//! whether latency grows linearly with the tokens asked for.
//!
//! **Fit**: over the requests of a config that produced a token, ordinary least squares
//! of E2E (seconds) on output tokens and prompt tokens with an intercept:
//! `E2E = intercept + s_per_output_token x output + s_per_prompt_token x prompt`. A
//! length that does not vary across the requests (or moves in lockstep with the
//! other) is left out of the fit and reported as none; with no varying length, or
//! fewer than 3 requests, there is no fit. `r2 = 1 - SS_res / SS_tot` (none when every
//! E2E is equal). Under load, a request's E2E also holds its queueing and its
//! neighbours' work: the slopes are what this load costs per token, not a kernel's.

use crate::metrics::Summary;
use crate::result::RunRecord;
use engine_core::RequestTimeline;
use serde::{Deserialize, Serialize};

/// The metrics of one use case's requests within a config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UseCaseSummary {
    pub name: String,
    pub requests: usize,
    pub mean_prompt_tokens: f64,
    pub mean_output_tokens: f64,
    pub ttft_s: Summary,
    pub tpot_s: Summary,
    pub e2e_s: Summary,
}

/// `E2E = intercept_s + s_per_output_token x output + s_per_prompt_token x prompt`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LengthFit {
    /// Requests fitted.
    pub requests: usize,
    pub intercept_s: f64,
    pub s_per_output_token: Option<f64>,
    pub s_per_prompt_token: Option<f64>,
    pub r2: Option<f64>,
}

fn requests(runs: &[RunRecord]) -> impl Iterator<Item = (&RequestTimeline, Option<&str>)> {
    runs.iter()
        .flat_map(|r| r.requests.iter())
        .map(|q| (&q.timeline, q.use_case.as_deref()))
}

/// One row per use case (sorted by name); empty when no request carries one.
pub fn use_cases(runs: &[RunRecord]) -> Vec<UseCaseSummary> {
    let mut names: Vec<&str> = requests(runs).filter_map(|(_, u)| u).collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let reqs: Vec<&RequestTimeline> = requests(runs)
                .filter(|(_, u)| *u == Some(name))
                .map(|(t, _)| t)
                .collect();
            let n = reqs.len().max(1) as f64;
            let of = |f: fn(&RequestTimeline) -> Option<f64>| {
                Summary::of(&reqs.iter().filter_map(|t| f(t)).collect::<Vec<_>>())
            };
            UseCaseSummary {
                name: name.to_string(),
                requests: reqs.len(),
                mean_prompt_tokens: reqs.iter().map(|t| t.prompt_tokens as f64).sum::<f64>() / n,
                mean_output_tokens: reqs.iter().map(|t| t.output_tokens() as f64).sum::<f64>() / n,
                ttft_s: of(RequestTimeline::ttft_s),
                tpot_s: of(RequestTimeline::tpot_s),
                e2e_s: of(RequestTimeline::e2e_s),
            }
        })
        .collect()
}

/// Sums of centered products.
fn centered(a: &[f64], b: &[f64], ma: f64, mb: f64) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum()
}

fn mean_of(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The fit of `y` on the varying columns of `(out, prompt)`; see the module docs.
pub fn fit(out: &[f64], prompt: &[f64], y: &[f64]) -> Option<LengthFit> {
    let n = y.len();
    if n < 3 || out.len() != n || prompt.len() != n {
        return None;
    }
    let (mo, mp, my) = (mean_of(out), mean_of(prompt), mean_of(y));
    let (soo, spp, sop) = (
        centered(out, out, mo, mo),
        centered(prompt, prompt, mp, mp),
        centered(out, prompt, mo, mp),
    );
    let (soy, spy) = (centered(out, y, mo, my), centered(prompt, y, mp, my));
    let varies = |s: f64, m: f64| s > 1e-9 * (1.0 + m * m) * n as f64;
    let (vo, vp) = (varies(soo, mo), varies(spp, mp));
    let det = soo * spp - sop * sop;
    let (bo, bp) = match (vo, vp) {
        (true, true) if det > 1e-9 * soo * spp => (
            Some((spp * soy - sop * spy) / det),
            Some((soo * spy - sop * soy) / det),
        ),
        (true, _) => (Some(soy / soo), None),
        (false, true) => (None, Some(spy / spp)),
        (false, false) => return None,
    };
    let intercept = my - bo.unwrap_or(0.0) * mo - bp.unwrap_or(0.0) * mp;
    let predict = |i: usize| intercept + bo.unwrap_or(0.0) * out[i] + bp.unwrap_or(0.0) * prompt[i];
    let ss_res: f64 = (0..n).map(|i| (y[i] - predict(i)).powi(2)).sum();
    let ss_tot: f64 = y.iter().map(|v| (v - my).powi(2)).sum();
    Some(LengthFit {
        requests: n,
        intercept_s: intercept,
        s_per_output_token: bo,
        s_per_prompt_token: bp,
        r2: (ss_tot > 0.0).then(|| 1.0 - ss_res / ss_tot),
    })
}

/// The E2E-vs-length fit over every request of `runs` that produced a token.
pub fn length_fit(runs: &[RunRecord]) -> Option<LengthFit> {
    let (mut out, mut prompt, mut y) = (Vec::new(), Vec::new(), Vec::new());
    for (t, _) in requests(runs) {
        if let Some(e2e) = t.e2e_s() {
            out.push(t.output_tokens() as f64);
            prompt.push(t.prompt_tokens as f64);
            y.push(e2e);
        }
    }
    fit(&out, &prompt, &y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::RequestRecord;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn an_exact_linear_law_is_recovered_with_r2_one() {
        let out = [10.0, 20.0, 35.0, 50.0, 80.0, 5.0];
        let prompt = [100.0, 40.0, 300.0, 80.0, 10.0, 700.0];
        let y: Vec<f64> = (0..6)
            .map(|i| 0.25 + 0.02 * out[i] + 0.001 * prompt[i])
            .collect();
        let f = fit(&out, &prompt, &y).unwrap();
        assert!((f.intercept_s - 0.25).abs() < 1e-9);
        assert!(close(f.s_per_output_token, 0.02));
        assert!(close(f.s_per_prompt_token, 0.001));
        assert!(close(f.r2, 1.0));
        assert_eq!(f.requests, 6);
    }

    #[test]
    fn noise_lowers_r2_and_constant_lengths_drop_out() {
        let out = [10.0, 20.0, 30.0, 40.0];
        let y = [0.3, 0.5, 0.6, 0.9]; // best line 0.1 + 0.019 x
        let f = fit(&out, &[64.0; 4], &y).unwrap();
        assert_eq!(f.s_per_prompt_token, None);
        assert!(close(f.s_per_output_token, 0.019));
        assert!((f.intercept_s - 0.1).abs() < 1e-9);
        // Residuals .01, .02, -.07, .04: SS_res = 0.007, SS_tot = 0.1875.
        assert!(f
            .r2
            .is_some_and(|r| (r - (1.0 - 0.007 / 0.1875)).abs() < 1e-9));
        assert!(fit(&[8.0; 4], &[64.0; 4], &y).is_none(), "nothing varies");
        assert!(fit(&out[..2], &[1.0, 2.0], &y[..2]).is_none(), "too few");
        // Lengths in lockstep: only the output slope is identifiable.
        let g = fit(&out, &[20.0, 40.0, 60.0, 80.0], &y).unwrap();
        assert!(g.s_per_output_token.is_some() && g.s_per_prompt_token.is_none());
    }

    #[test]
    fn use_case_rows_split_requests_by_their_tag() {
        let rec = |u: &str, prompt: usize, times: Vec<f64>| RequestRecord {
            id: 0,
            finish_reason: "length".into(),
            timeline: RequestTimeline {
                token_times_s: times,
                prompt_tokens: prompt,
                ..Default::default()
            },
            use_case: Some(u.into()),
        };
        let run = RunRecord {
            requests: vec![
                rec("rag", 1000, vec![1.0, 1.5]),
                rec("chat", 100, vec![0.2, 0.3, 0.4]),
                rec("rag", 3000, vec![3.0, 3.5]),
            ],
            ..Default::default()
        };
        let rows = use_cases(&[run]);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].name.as_str(), rows[0].requests), ("chat", 1));
        assert_eq!(rows[1].requests, 2);
        assert!((rows[1].mean_prompt_tokens - 2000.0).abs() < 1e-9);
        assert!((rows[1].mean_output_tokens - 2.0).abs() < 1e-9);
        assert!(close(rows[1].ttft_s.p50, 2.0));
        assert!(close(rows[0].tpot_s.mean, 0.1));
    }
}
