//! Tests of `rope` (declared from rope.rs).
use super::*;
use crate::harness;
use candle_core::Device;

#[test]
fn cpu_port_matches_reference_in_every_dtype() -> anyhow::Result<()> {
    Ok(harness::check_all_shapes(&Spec, &Device::Cpu)?)
}

#[test]
fn vector_and_scalar_units_both_occur_in_the_test_shapes() {
    // (d/2) % V decides: d = 36 is scalar for neox in every dtype, vector for
    // interleaved f32; d = 128 is vector everywhere.
    assert_eq!(pairs_per_unit(18, true, true, 2), 1);
    assert_eq!(pairs_per_unit(18, true, true, 4), 1);
    assert_eq!(pairs_per_unit(18, false, true, 4), 2);
    assert_eq!(pairs_per_unit(64, true, true, 2), 8);
    assert_eq!(pairs_per_unit(64, false, true, 2), 4);
    assert_eq!(pairs_per_unit(64, false, false, 2), 1);
}

#[test]
fn position_zero_is_the_identity() -> anyhow::Result<()> {
    let dev = &Device::Cpu;
    for dtype in harness::DTYPES {
        for neox in [true, false] {
            let (x, _) = harness::random_input(&[5, 3, 64], 3.0, 7, dtype, dev)?;
            let before = harness::host_f32(&x)?;
            let cs = Tensor::from_vec(cos_sin_table(4, 64), (4, 64), dev)?.to_dtype(dtype)?;
            rope_inplace(&x, &cs, &Tensor::zeros(5, DType::U32, dev)?, neox)?;
            assert_eq!(harness::host_f32(&x)?, before, "{dtype:?} neox={neox}");
        }
    }
    Ok(())
}

#[test]
fn quarter_turn_rotates_each_pair() -> anyhow::Result<()> {
    // d = 2: one pair; cos = 0, sin = 1 turns (1, 2) into (-2, 1).
    let dev = &Device::Cpu;
    let cs = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], dev)?;
    for neox in [true, false] {
        let x = Tensor::new(&[[[1f32, 2.0]]], dev)?;
        rope_inplace(&x, &cs, &Tensor::new(&[1u32], dev)?, neox)?;
        assert_eq!(x.flatten_all()?.to_vec1::<f32>()?, vec![-2.0, 1.0]);
    }
    Ok(())
}

#[test]
fn interleaved_equals_neox_on_deinterleaved_heads() -> anyhow::Result<()> {
    // Interleaved rope on x == neox rope on x with each head's pairs moved to the
    // halves (x[2i] -> i, x[2i+1] -> d/2 + i), moved back.
    let dev = &Device::Cpu;
    let (t, h, d) = (9, 4, 16);
    let (x, xh) = harness::random_input(&[t, h, d], 2.0, 3, DType::BF16, dev)?;
    let cs = Tensor::from_vec(cos_sin_table(32, d), (32, d), dev)?.to_dtype(DType::BF16)?;
    let pos = Tensor::from_vec(
        (0..t as u32).map(|i| (i * 5) % 32).collect::<Vec<_>>(),
        t,
        dev,
    )?;
    let split: Vec<f32> = (0..t * h * d)
        .map(|j| {
            let (row, c) = (j / d, j % d);
            let src = if c < d / 2 {
                2 * c
            } else {
                2 * (c - d / 2) + 1
            };
            xh[row * d + src]
        })
        .collect();
    let xs = Tensor::from_vec(split, (t, h, d), dev)?.to_dtype(DType::BF16)?;
    rope_inplace(&x, &cs, &pos, false)?;
    rope_inplace(&xs, &cs, &pos, true)?;
    let (a, b) = (harness::host_f32(&x)?, harness::host_f32(&xs)?);
    for row in 0..t * h {
        for i in 0..d / 2 {
            assert_eq!(a[row * d + 2 * i], b[row * d + i]);
            assert_eq!(a[row * d + 2 * i + 1], b[row * d + d / 2 + i]);
        }
    }
    Ok(())
}

#[test]
fn out_of_range_position_is_an_error_and_leaves_x_alone() -> anyhow::Result<()> {
    let dev = &Device::Cpu;
    let (x, xh) = harness::random_input(&[3, 2, 8], 1.0, 1, DType::F32, dev)?;
    let cs = Tensor::from_vec(cos_sin_table(4, 8), (4, 8), dev)?;
    let e = rope_inplace(&x, &cs, &Tensor::new(&[0u32, 4, 1], dev)?, true).unwrap_err();
    assert!(e.to_string().contains("positions[1] = 4"), "{e}");
    assert_eq!(harness::host_f32(&x)?, xh);
    // The CPU port checks too (before writing anything).
    let (mut xs, cs2) = (xh.clone(), cos_sin_table(4, 8));
    assert!(cpu_rope(&mut xs, 16, &cs2, &[0, 1, 9], (2, 8), false).is_err());
    assert_eq!(xs, xh);
    Ok(())
}

#[test]
fn rejects_bad_inputs() -> anyhow::Result<()> {
    let dev = &Device::Cpu;
    let x = Tensor::zeros((2, 3, 8), DType::F32, dev)?;
    let cs = Tensor::zeros((4, 8), DType::F32, dev)?;
    let p = Tensor::zeros(2, DType::U32, dev)?;
    let err = |r: Result<()>| r.unwrap_err().to_string();
    let e = err(rope_inplace(
        &Tensor::zeros((2, 24), DType::F32, dev)?,
        &cs,
        &p,
        true,
    ));
    assert!(e.contains("[tokens, heads, head_dim]"), "{e}");
    let odd = Tensor::zeros((2, 3, 7), DType::F32, dev)?;
    assert!(err(rope_inplace(
        &odd,
        &Tensor::zeros((4, 7), DType::F32, dev)?,
        &p,
        true
    ))
    .contains("even"));
    let e = err(rope_inplace(
        &x.transpose(0, 1)?,
        &cs,
        &Tensor::zeros(3, DType::U32, dev)?,
        true,
    ));
    assert!(e.contains("contiguous"), "{e}");
    let e = err(rope_inplace(
        &x,
        &Tensor::zeros((4, 6), DType::F32, dev)?,
        &p,
        true,
    ));
    assert!(e.contains("cos_sin"), "{e}");
    let e = err(rope_inplace(&x, &cs.to_dtype(DType::BF16)?, &p, true));
    assert!(e.contains("cos_sin is BF16"), "{e}");
    assert!(err(rope_inplace(&x, &cs, &p.to_dtype(DType::I64)?, true)).contains("positions"));
    assert!(err(rope_inplace(
        &x,
        &cs,
        &Tensor::zeros(3, DType::U32, dev)?,
        true
    ))
    .contains("positions"));
    let u = Tensor::zeros((2, 3, 8), DType::U32, dev)?;
    assert!(err(rope_inplace(&u, &cs.to_dtype(DType::U32)?, &p, true)).contains("expected f32"));
    Ok(())
}

#[test]
fn zero_tokens_is_a_no_op() -> anyhow::Result<()> {
    let dev = &Device::Cpu;
    let x = Tensor::zeros((0, 3, 8), DType::F16, dev)?;
    let cs = Tensor::zeros((4, 8), DType::F16, dev)?;
    Ok(rope_inplace(
        &x,
        &cs,
        &Tensor::zeros(0, DType::U32, dev)?,
        false,
    )?)
}

#[test]
#[ignore = "requires a CUDA device"]
fn cuda_matches_reference_in_every_dtype() -> anyhow::Result<()> {
    Ok(harness::check_all_shapes(&Spec, &Device::new_cuda(0)?)?)
}

#[test]
#[ignore = "requires a CUDA device"]
fn cuda_skips_out_of_range_positions() -> anyhow::Result<()> {
    let dev = &Device::new_cuda(0)?;
    let (x, xh) = harness::random_input(&[3, 2, 8], 1.0, 1, DType::F32, dev)?;
    let cs = Tensor::from_vec(cos_sin_table(4, 8), (4, 8), dev)?;
    rope_inplace(&x, &cs, &Tensor::new(&[0u32, 4, u32::MAX], dev)?, true)?;
    assert_eq!(harness::host_f32(&x)?, xh); // pos 0: identity; 4 and MAX: skipped
    Ok(())
}

#[test]
fn rows_rotate_the_leading_heads_in_place_and_leave_the_rest() -> anyhow::Result<()> {
    // Rows [q: 4 heads | k: 2 heads | v: 2 heads] of d = 16: rotating the first 6 heads of
    // each row equals rotating copies of q and k alone; v is untouched.
    let dev = &Device::Cpu;
    let (t, d) = (7, 16);
    for dtype in harness::DTYPES {
        for neox in [true, false] {
            let (qkv, _) = harness::random_input(&[t, 8 * d], 2.0, 11, dtype, dev)?;
            let cs = Tensor::from_vec(cos_sin_table(40, d), (40, d), dev)?.to_dtype(dtype)?;
            let pos = Tensor::from_vec((0..t as u32).map(|i| i * 5).collect::<Vec<_>>(), t, dev)?;
            let qk = qkv.narrow(1, 0, 6 * d)?.reshape((t, 6, d))?.contiguous()?;
            let v = harness::host_f32(&qkv.narrow(1, 6 * d, 2 * d)?)?;
            rope_inplace(&qk, &cs, &pos, neox)?;
            rope_rows_inplace(&qkv, &cs, &pos, 6, d, neox)?;
            let got_qk = harness::host_f32(&qkv.narrow(1, 0, 6 * d)?)?;
            assert_eq!(got_qk, harness::host_f32(&qk)?, "{dtype:?} neox={neox}");
            assert_eq!(harness::host_f32(&qkv.narrow(1, 6 * d, 2 * d)?)?, v);
        }
    }
    let x = Tensor::zeros((2, 10), DType::F32, dev)?;
    let cs = Tensor::zeros((4, 4), DType::F32, dev)?;
    let err = rope_rows_inplace(&x, &cs, &Tensor::zeros(2, DType::U32, dev)?, 3, 4, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("do not fit"), "{err}");
    Ok(())
}
