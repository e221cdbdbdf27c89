//! Tests of `sample` (declared from sample.rs): the element math, the radix select against
//! a sort, the port's kept sets against the reference, chi-square tests of the draws,
//! logprobs, seed determinism across batches and row orders, edge cases, input errors.
use super::math;
use super::port::{self, Radix, Want};
use super::reference_impl::{mix_params, test_logits};
use super::stats::{chi2_p_value, goodness_of_fit, knob_cases, op_tokens, port_tokens};
use super::*;
use crate::harness::{self, KernelSpec};

/// Radix parameters that reach every path with small rows: 1-bit digits (a level per bit),
/// buffers that overflow, no buffer at all, one huge digit.
const RADIXES: [Radix; 5] = [
    port::RADIX,
    Radix {
        digit_bits: 3,
        cap: 4,
    },
    Radix {
        digit_bits: 1,
        cap: 0,
    },
    Radix {
        digit_bits: 5,
        cap: 64,
    },
    Radix {
        digit_bits: 16,
        cap: 1 << 20,
    },
];

fn rp(temperature: f32) -> RowParams {
    RowParams {
        temperature,
        seed: 5,
        ..Default::default()
    }
}

/// Rows that stress ties and non-finite values: uniform, coarse (ties), bf16-rounded,
/// constant, with NaN/-inf sprinkled.
fn tricky_row(kind: usize, v: usize, seed: u64) -> Vec<f32> {
    let mut x = harness::random(v, 6.0, seed);
    match kind % 5 {
        1 => x.iter_mut().for_each(|a| *a = (*a * 2.0).round() / 2.0),
        2 => x
            .iter_mut()
            .for_each(|a| *a = half::bf16::from_f32(*a).to_f32()),
        3 => x.iter_mut().for_each(|a| *a = 1.5),
        4 => x.iter_mut().step_by(3).for_each(|a| *a = f32::NAN),
        _ => {}
    }
    if kind % 7 == 6 && v > 2 {
        x[v / 2] = f32::NEG_INFINITY;
    }
    x
}

#[test]
fn cpu_port_matches_reference_in_every_dtype() -> anyhow::Result<()> {
    Ok(harness::check_all_shapes(&Spec, &Device::Cpu)?)
}

#[test]
fn bench_mixes_pass_the_check() -> anyhow::Result<()> {
    for mix in 1..=4 {
        let c = Spec.check(&Device::Cpu, DType::BF16, &[9, 20000, mix], 3)?;
        assert!(c.pass(), "mix {mix}: {c:?}");
    }
    Ok(())
}

#[test]
fn exp_and_exponential_are_accurate() {
    let mut worst = 0f64;
    let mut x = 0f32;
    while x > -87.0 {
        let want = f64::from(x).exp();
        worst = worst.max((f64::from(math::exp_nonpos(x)) - want).abs() / want);
        x -= 0.000_913;
    }
    assert!(worst < 3e-7, "exp: max relative error {worst:e}");
    assert_eq!(math::exp_nonpos(0.0), 1.0);
    for z in [-87.0, -1e30, f32::NEG_INFINITY, f32::NAN] {
        assert_eq!(math::exp_nonpos(z), 0.0, "{z}");
    }
    let mut worst = 0f64;
    let edges = [
        0u32,
        1,
        0x7fff_ffff,
        0x8000_0000,
        0x8000_0001,
        u32::MAX - 1,
        u32::MAX,
    ];
    let sweep = (0..200_000u32).map(|i| i.wrapping_mul(0x9E37_79B9));
    for b in edges.into_iter().chain(sweep) {
        let u = (2.0 * f64::from(b) + 1.0) / 2f64.powi(33);
        let want = -u.ln(); // u is exact in f64
        let got = f64::from(math::exponential(b));
        worst = worst.max((got - want).abs() / want);
    }
    assert!(worst < 1e-6, "exponential: max relative error {worst:e}");
}

#[test]
fn keys_order_more_likely_first_and_round_trip() {
    let keys = math::Keys::new(1000);
    let vals = [f32::NEG_INFINITY, -3.5, -1e-30, 0.0, 1e-30, 2.0, f32::MAX];
    for (a, &va) in vals.iter().enumerate() {
        for (b, &vb) in vals.iter().enumerate() {
            let (ka, kb) = (keys.key(va, 10), keys.key(vb, 20));
            assert_eq!(ka > kb, a >= b, "{va} vs {vb}");
        }
        let k = keys.key(va, 999);
        assert_eq!((keys.value(k), keys.id(k)), (va, 999));
    }
    assert!(keys.key(1.0, 3) > keys.key(1.0, 4), "ties: lower id first");
    assert_eq!(math::clean(-0.0).to_bits(), 0, "-0 keys like +0");
}

/// The count and mass selects against a sort of the same keys and masses, for every
/// radix configuration, on rows full of ties.
#[test]
fn radix_select_equals_a_sort() {
    for (case, v) in [1usize, 2, 3, 5, 17, 100, 1000, 4099]
        .into_iter()
        .enumerate()
    {
        for kind in 0..7 {
            let raw = tricky_row(kind, v, (case * 10 + kind) as u64);
            let x: Vec<f32> = raw.iter().map(|&a| math::clean(a)).collect();
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if max == f32::NEG_INFINITY {
                continue;
            }
            let keys = math::Keys::new(v);
            let row = port::Row {
                x: &x,
                keys,
                max,
                t: 0.8,
            };
            let mut sorted: Vec<u64> = (0..v).map(|i| keys.key(x[i], i)).collect();
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            let m = |k: u64| math::mass(math::weight(keys.value(k), max, 0.8));
            for radix in RADIXES {
                for n in [1, 2, v / 3 + 1, v].into_iter().filter(|&n| n <= v) {
                    let got = port::select(&row, Want::Count(n as u64), 0, radix);
                    assert_eq!(
                        got,
                        sorted[n - 1],
                        "count {n} of {v}, kind {kind}, {radix:?}"
                    );
                    for top_p in [1e-6f32, 0.3, 0.9, 0.999] {
                        let within: Vec<u64> = sorted[..n].to_vec();
                        let total: u64 = within.iter().map(|&k| m(k)).sum();
                        let cut = port::cutoff(top_p, total);
                        let mut cum = 0;
                        let want = within
                            .iter()
                            .find(|&&k| {
                                cum += m(k);
                                cum >= cut
                            })
                            .copied()
                            .unwrap_or(sorted[n - 1]);
                        let got = port::select(&row, Want::Mass(top_p), got, radix);
                        assert_eq!(got, want, "mass {top_p} in top {n} of {v}, kind {kind}");
                    }
                }
            }
        }
    }
}

/// The tokens the port can draw equal the reference's support, over random rows and
/// every preset.
#[test]
fn kept_sets_equal_the_reference() {
    let mut rows = 0;
    for v in [2usize, 9, 64, 700, 3000] {
        for kind in 0..10 {
            let x = tricky_row(kind, v, (v * 31 + kind) as u64);
            for i in 0..11 {
                let p = mix_params(i, 0, 1);
                let e = reference(&x, &p);
                if !e.valid {
                    continue;
                }
                let want: Vec<usize> = (0..v).filter(|&j| e.probs[j] > 0.0).collect();
                for radix in [RADIXES[0], RADIXES[1]] {
                    let got = port::kept_tokens(&x, &p, radix);
                    assert_eq!(got, want, "v {v} kind {kind} preset {i} {radix:?}");
                }
                rows += 1;
            }
        }
    }
    assert!(rows > 400);
}

#[test]
fn chi2_p_value_matches_tables() {
    for (x, df, p) in [
        (10.828, 1, 0.001),
        (29.588, 10, 0.001),
        (3.841, 1, 0.05),
        (124.342, 100, 0.05),
    ] {
        let got = chi2_p_value(x, df);
        assert!((got - p).abs() < p * 0.01, "x {x} df {df}: {got} vs {p}");
    }
    let x = 2.0 * 1000f64.ln(); // df 2: Q = exp(-x / 2)
    assert!((chi2_p_value(x, 2) - 0.001).abs() < 1e-9);
}

/// 100,000 draws per case, each knob alone and combined, against the exact filtered
/// distribution: no draw outside it, chi-square p > 0.001.
#[test]
fn draws_match_the_filtered_distribution() {
    for case in knob_cases(256, 11) {
        let probs = reference(&case.logits, &case.params).probs;
        let kept = probs.iter().filter(|&&q| q > 0.0).count();
        assert!(
            kept > 5,
            "{}: only {kept} tokens kept: a weak test",
            case.name
        );
        let tokens = port_tokens(&case.logits, &case.params, 100_000, case.radix);
        let (pv, outside) = goodness_of_fit(&tokens, &probs);
        assert_eq!(
            outside, 0,
            "{}: drew tokens outside the kept set",
            case.name
        );
        assert!(pv > 0.001, "{}: chi-square p-value {pv:e}", case.name);
    }
}

/// The same test rejects a distribution that is off (so its passes mean something).
#[test]
fn goodness_of_fit_rejects_a_wrong_distribution() {
    let logits = harness::random(256, 4.0, 11);
    let p = rp(1.0);
    let off = reference(
        &logits,
        &RowParams {
            temperature: 1.05,
            ..p
        },
    )
    .probs;
    let (pv, _) = goodness_of_fit(&port_tokens(&logits, &p, 100_000, port::RADIX), &off);
    assert!(pv < 1e-6, "T=1 draws passed as T=1.05: p {pv:e}");
}

/// The spec's statistical mix through the op (what `engine kernels test sample --shapes
/// 100000,256,5` runs on a GPU), here with fewer draws.
#[test]
fn the_draws_check_runs_through_the_op() -> anyhow::Result<()> {
    let c = Spec.check(&Device::Cpu, DType::BF16, &[20_000, 128, 5], 3)?;
    assert!(c.pass() && c.max_abs > 0.001, "{c:?}");
    let (tokens, _) = op_tokens(
        &Device::Cpu,
        DType::F32,
        &knob_cases(100, 1)[5].logits,
        &rp(1.0),
        50,
    )?;
    assert_eq!(tokens.len(), 50);
    assert!(
        Spec.check(&Device::Cpu, DType::F32, &[10, 32, 5], 3)
            .is_err(),
        "vocab < 64"
    );
    Ok(())
}

#[test]
#[ignore = "requires a CUDA device"]
fn cuda_matches_reference_and_port_in_every_dtype() -> anyhow::Result<()> {
    Ok(harness::check_all_shapes(&Spec, &Device::new_cuda(0)?)?)
}

/// On the device: the same chi-square tests, and the very tokens of the CPU port.
#[test]
#[ignore = "requires a CUDA device"]
fn cuda_draws_match_the_filtered_distribution_and_the_port() -> anyhow::Result<()> {
    let c = Spec.check(&Device::new_cuda(0)?, DType::F32, &[100_000, 256, 5], 11)?;
    assert!(c.pass(), "{c:?}");
    Ok(())
}

#[path = "sample_more_tests.rs"]
mod more;

#[path = "sample_math_tests.rs"]
mod cuh;
