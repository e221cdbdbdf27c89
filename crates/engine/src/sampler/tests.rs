//! Tests of the sampler (declared from sampler/mod.rs).

use super::*;

fn params(temperature: f32) -> SamplingParams {
    SamplingParams {
        temperature,
        ..Default::default()
    }
}

/// softmax(logits / t) in f64.
fn softmax(logits: &[f32], t: f32) -> Vec<f64> {
    let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = logits
        .iter()
        .map(|&x| ((x as f64 - m) / t as f64).exp())
        .collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// Pseudo-random logits in [-scale, scale) from a seed.
fn random_logits(seed: u64, v: usize, scale: f32) -> Vec<f32> {
    let mut r = SeqRng::new(seed);
    (0..v).map(|_| (r.next_f32() * 2.0 - 1.0) * scale).collect()
}

#[test]
fn greedy_is_argmax_and_uses_no_randomness() {
    let logits = [0.1, 3.0, -2.0, 2.9, 3.0];
    let p = SamplingParams::greedy(4);
    let mut rng = SeqRng::new(5);
    let before = rng.clone();
    let out = sample(&logits, &p, &mut rng);
    assert_eq!(out.token, 1, "ties go to the lowest id");
    assert_eq!(rng, before, "greedy must not consume randomness");
    for seed in 0..20 {
        let l = random_logits(seed, 1000, 5.0);
        let expect = l
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, &x)| if x > b.1 { (i, x) } else { b },
            )
            .0;
        assert_eq!(sample(&l, &p, &mut rng).token as usize, expect);
    }
}

#[test]
fn same_seed_same_draws_different_seed_differs() {
    let logits = random_logits(1, 500, 2.0);
    let p = params(1.0);
    let run = |seed: u64| {
        let mut rng = SeqRng::new(seed);
        (0..100)
            .map(|_| sample(&logits, &p, &mut rng).token)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}

#[test]
fn each_non_greedy_sample_uses_one_draw() {
    let logits = random_logits(2, 50, 3.0);
    let p = SamplingParams {
        top_k: Some(1),
        ..params(0.8)
    };
    let mut rng = SeqRng::new(3);
    let mut reference = rng.clone();
    sample(&logits, &p, &mut rng);
    reference.next_u64();
    assert_eq!(rng, reference);
}

#[test]
fn top_k_one_equals_greedy() {
    let greedy = SamplingParams::greedy(1);
    for seed in 0..50 {
        let logits = random_logits(seed, 300, 4.0);
        let p = SamplingParams {
            top_k: Some(1),
            ..params(1.5)
        };
        let mut rng = SeqRng::new(seed);
        let g = sample(&logits, &greedy, &mut rng);
        for _ in 0..5 {
            assert_eq!(sample(&logits, &p, &mut rng), g);
        }
    }
}

#[test]
fn tiny_top_p_equals_greedy() {
    let greedy = SamplingParams::greedy(1);
    for seed in 0..50 {
        let logits = random_logits(seed + 100, 300, 4.0);
        let p = SamplingParams {
            top_p: 1e-6,
            ..params(1.0)
        };
        let mut rng = SeqRng::new(seed);
        let g = sample(&logits, &greedy, &mut rng);
        for _ in 0..5 {
            assert_eq!(sample(&logits, &p, &mut rng), g);
        }
    }
}

#[test]
fn min_p_one_equals_greedy() {
    let greedy = SamplingParams::greedy(1);
    for seed in 0..50 {
        let logits = random_logits(seed + 200, 300, 4.0);
        let p = SamplingParams {
            min_p: 1.0,
            ..params(2.0)
        };
        let mut rng = SeqRng::new(seed);
        let g = sample(&logits, &greedy, &mut rng);
        for _ in 0..5 {
            assert_eq!(sample(&logits, &p, &mut rng), g);
        }
    }
}

#[test]
fn tiny_temperature_is_greedy_and_does_not_panic() {
    let logits = [1.0, 5.0, 4.999, -3.0, 5.0];
    for t in [1e-30, f32::MIN_POSITIVE, 1e-45] {
        let mut rng = SeqRng::new(0);
        for _ in 0..100 {
            // Two tied maxima (ids 1 and 4) share the mass; nothing else is drawn.
            let tok = sample(&logits, &params(t), &mut rng).token;
            assert!(tok == 1 || tok == 4, "t={t} tok={tok}");
        }
    }
}

/// Draws `n` samples and returns empirical frequencies.
fn frequencies(logits: &[f32], p: &SamplingParams, seed: u64, n: usize) -> Vec<f64> {
    let mut rng = SeqRng::new(seed);
    let mut counts = vec![0usize; logits.len()];
    for _ in 0..n {
        counts[sample(logits, p, &mut rng).token as usize] += 1;
    }
    counts.into_iter().map(|c| c as f64 / n as f64).collect()
}

#[test]
fn empirical_distribution_matches_softmax() {
    // 20,000 draws: the standard error of each frequency is at most
    // sqrt(0.25 / 20000) ~= 0.0035; the tolerance is 0.015 absolute (> 4 sigma).
    const N: usize = 20_000;
    const TOL: f64 = 0.015;
    let logits = [1.0f32, 2.0, 0.5, -1.0, 3.0, 2.5, -4.0, 0.0];
    for (t, seed) in [(1.0f32, 17u64), (0.7, 18), (2.0, 19)] {
        let want = softmax(&logits, t);
        let got = frequencies(&logits, &params(t), seed, N);
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() < TOL,
                "T={t} token {i}: empirical {g:.4} vs softmax {w:.4}"
            );
        }
    }
}

#[test]
fn empirical_distribution_after_top_k_renormalizes() {
    const N: usize = 20_000;
    const TOL: f64 = 0.015;
    let logits = [1.0f32, 2.0, 0.5, -1.0, 3.0, 2.5, -4.0, 0.0];
    let p = SamplingParams {
        top_k: Some(3),
        ..params(1.0)
    };
    // Top 3: ids 4, 5, 1.
    let kept = [4usize, 5, 1];
    let sub: Vec<f32> = kept.iter().map(|&i| logits[i]).collect();
    let want = softmax(&sub, 1.0);
    let got = frequencies(&logits, &p, 23, N);
    for (j, &i) in kept.iter().enumerate() {
        assert!(
            (got[i] - want[j]).abs() < TOL,
            "token {i}: {} vs {}",
            got[i],
            want[j]
        );
    }
    let excluded: f64 = (0..logits.len())
        .filter(|i| !kept.contains(i))
        .map(|i| got[i])
        .sum();
    assert_eq!(excluded, 0.0);
}

#[test]
fn top_k_and_top_p_never_pick_excluded_tokens() {
    let logits = random_logits(77, 200, 3.0);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));

    // top-k = 5 (streaming selection) and 40 (select_nth_unstable path).
    let mut rng = SeqRng::new(1);
    for k in [5usize, 40] {
        let p = SamplingParams {
            top_k: Some(k),
            ..params(1.0)
        };
        let allowed = &order[..k];
        let mut seen = std::collections::HashSet::new();
        for _ in 0..5000 {
            let t = sample(&logits, &p, &mut rng).token as usize;
            assert!(allowed.contains(&t), "top-k={k} picked excluded token {t}");
            seen.insert(t);
        }
        assert!(
            seen.len() > k / 2,
            "top-k={k} only drew {} tokens",
            seen.len()
        );
    }

    // top-p = 0.5 at T = 0.5: the nucleus is the smallest prefix with mass >= 0.5.
    let t = 0.5;
    let probs = softmax(&logits, t);
    let mut cum = 0.0;
    let mut nucleus = Vec::new();
    for &i in &order {
        nucleus.push(i);
        cum += probs[i];
        if cum >= 0.5 {
            break;
        }
    }
    assert!(nucleus.len() > 1 && nucleus.len() < 50);
    let p = SamplingParams {
        top_p: 0.5,
        ..params(t)
    };
    let mut seen = std::collections::HashSet::new();
    for _ in 0..5000 {
        let tok = sample(&logits, &p, &mut rng).token as usize;
        assert!(nucleus.contains(&tok), "top-p picked excluded token {tok}");
        seen.insert(tok);
    }
    assert!(
        seen.len() > 1,
        "top-p should still sample among several tokens"
    );

    // top-k and top-p combined: the intersection of both.
    let p = SamplingParams {
        top_k: Some(2),
        top_p: 0.5,
        ..params(t)
    };
    for _ in 0..2000 {
        let tok = sample(&logits, &p, &mut rng).token as usize;
        assert!(order[..2].contains(&tok));
    }
}

/// End to end: nothing outside a large nucleus (past the lazy selection's first rounds)
/// is ever drawn.
#[test]
fn large_nucleus_never_draws_outside() {
    let logits = random_logits(9, 3000, 1.0);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    let probs = softmax(&logits, 1.0);
    let (mut cum, mut n) = (0.0, 0);
    while cum < 0.8 {
        cum += probs[order[n]];
        n += 1;
    }
    assert!(n > 1000);
    let allowed: std::collections::HashSet<usize> = order[..n].iter().copied().collect();
    let p = SamplingParams {
        top_p: 0.8,
        ..params(1.0)
    };
    let mut rng = SeqRng::new(5);
    for _ in 0..3000 {
        let t = sample(&logits, &p, &mut rng).token as usize;
        assert!(allowed.contains(&t), "picked {t} outside the nucleus");
    }
}

#[test]
fn min_p_drops_unlikely_tokens() {
    // p ratios to the max: token 0 = 1, token 1 = e^-1 ~ 0.37, token 2 = e^-3 ~ 0.05.
    let logits = [0.0f32, -1.0, -3.0];
    let p = SamplingParams {
        min_p: 0.1,
        ..params(1.0)
    };
    let f = frequencies(&logits, &p, 9, 5000);
    assert_eq!(f[2], 0.0);
    assert!(f[0] > 0.0 && f[1] > 0.0);
}

#[test]
fn logprobs_are_raw_log_softmax() {
    let logits = random_logits(5, 64, 4.0);
    let want = softmax(&logits, 1.0);
    let p = SamplingParams {
        logprobs: Some(20),
        top_k: Some(3),
        ..params(0.3)
    };
    let mut rng = SeqRng::new(0);
    let out = sample(&logits, &p, &mut rng);
    // Chosen token logprob is temperature-1 and unfiltered.
    assert!((out.logprob as f64 - want[out.token as usize].ln()).abs() < 1e-5);

    assert_eq!(out.top_logprobs.len(), 20);
    for w in out.top_logprobs.windows(2) {
        assert!(w[0].1 >= w[1].1, "top_logprobs not descending");
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| want[b].total_cmp(&want[a]).then(a.cmp(&b)));
    for (k, &(id, lp)) in out.top_logprobs.iter().enumerate() {
        assert_eq!(id as usize, order[k]);
        assert!((lp as f64 - want[id as usize].ln()).abs() < 1e-5);
    }
    // The chosen token (from top-3) is in the reported top list.
    assert!(out.top_logprobs.iter().any(|&(id, _)| id == out.token));

    // With logprobs = V every token appears and the probabilities sum to 1.
    let p = SamplingParams {
        logprobs: Some(logits.len()),
        ..params(1.0)
    };
    let out = sample(&logits, &p, &mut rng);
    let total: f64 = out
        .top_logprobs
        .iter()
        .map(|&(_, lp)| (lp as f64).exp())
        .sum();
    assert!((total - 1.0).abs() < 1e-5, "sum of probs = {total}");
}

#[test]
fn logprob_ties_ordered_by_lowest_id() {
    let logits = [1.0f32, 2.0, 2.0, 0.0, 2.0, -0.0];
    let p = SamplingParams {
        logprobs: Some(6),
        ..SamplingParams::greedy(1)
    };
    let out = sample(&logits, &p, &mut SeqRng::new(0));
    let ids: Vec<u32> = out.top_logprobs.iter().map(|&(i, _)| i).collect();
    assert_eq!(ids, vec![1, 2, 4, 0, 3, 5]);
    assert_eq!(out.token, 1);
    let none = sample(&logits, &SamplingParams::greedy(1), &mut SeqRng::new(0));
    assert!(none.top_logprobs.is_empty());
}

#[test]
fn nan_and_infinite_logits_do_not_panic() {
    let logits = [f32::NAN, 1.0, f32::NAN, 0.5, f32::NEG_INFINITY];
    let p = SamplingParams {
        logprobs: Some(5),
        ..params(1.0)
    };
    let mut rng = SeqRng::new(4);
    for _ in 0..500 {
        let out = sample(&logits, &p, &mut rng);
        assert!(out.token == 1 || out.token == 3, "picked NaN/-inf token");
        assert!(out.logprob.is_finite());
    }
    let out = sample(&logits, &SamplingParams::greedy(1), &mut rng);
    assert_eq!(out.token, 1);
    let ids: Vec<u32> = out.top_logprobs.iter().map(|&(i, _)| i).collect();
    assert!(ids.is_empty());
    let out = sample(&logits, &p, &mut rng);
    let ids: Vec<u32> = out.top_logprobs.iter().map(|&(i, _)| i).collect();
    assert_eq!(ids, vec![1, 3, 0, 2, 4]);
    assert_eq!(out.top_logprobs[4].1, f32::NEG_INFINITY);

    // +inf tokens share all the mass.
    let logits = [0.0f32, f32::INFINITY, 3.0, f32::INFINITY];
    for _ in 0..200 {
        let out = sample(&logits, &params(1.0), &mut rng);
        assert!(out.token == 1 || out.token == 3);
        assert!((out.logprob - (-std::f32::consts::LN_2)).abs() < 1e-6);
    }
}

#[test]
fn degenerate_rows_return_token_zero() {
    let p = SamplingParams {
        logprobs: Some(2),
        top_p: 0.5,
        top_k: Some(2),
        min_p: 0.5,
        ..params(1.0)
    };
    for logits in [
        vec![f32::NAN; 4],
        vec![f32::NEG_INFINITY; 3],
        vec![f32::NAN, f32::NEG_INFINITY],
    ] {
        let mut rng = SeqRng::new(1);
        let before = rng.clone();
        let out = sample(&logits, &p, &mut rng);
        assert_eq!(out.token, 0);
        assert_eq!(out.logprob, f32::NEG_INFINITY);
        assert_eq!(
            out.top_logprobs,
            vec![(0, f32::NEG_INFINITY), (1, f32::NEG_INFINITY)]
        );
        assert_eq!(rng, before);
    }
    let out = sample(&[], &p, &mut SeqRng::new(1));
    assert_eq!(out.token, 0);
    assert_eq!(out.logprob, f32::NEG_INFINITY);
    assert!(out.top_logprobs.is_empty());
}

#[test]
fn top_k_larger_than_vocab_or_zero_is_off() {
    let logits = [0.0f32, 0.1, 0.2];
    for k in [Some(0), Some(3), Some(100), None] {
        let p = SamplingParams {
            top_k: k,
            ..params(1.0)
        };
        let f = frequencies(&logits, &p, 8, 3000);
        assert!(f.iter().all(|&x| x > 0.2), "k={k:?} f={f:?}");
    }
}
