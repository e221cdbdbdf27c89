//! Tests of `add_rms_norm` (declared from add_rms_norm.rs).
use super::*;

#[test]
fn cpu_port_matches_reference_in_every_dtype() -> anyhow::Result<()> {
    Ok(harness::check_all_shapes(&Spec, &Device::Cpu)?)
}

#[test]
fn every_row_length_up_to_70_and_row_counts_up_to_65() -> anyhow::Result<()> {
    for dtype in harness::DTYPES {
        for h in 1..=70 {
            let t = 1 + (h * 7) % 65;
            let c = Spec.check(&Device::Cpu, dtype, &[t, h], h as u64)?;
            assert!(c.pass(), "{dtype:?} [{t}, {h}]: {c:?}");
        }
    }
    Ok(())
}

#[test]
fn outputs_are_contiguous_halves_and_sum_is_rounded() -> anyhow::Result<()> {
    let x = Tensor::new(&[[1.0f32, 2.0, 3.0, 4.0]], &Device::Cpu)?.to_dtype(DType::BF16)?;
    let r = Tensor::new(&[[0.001f32, 0.0, 0.0, 0.0]], &Device::Cpu)?.to_dtype(DType::BF16)?;
    let w = Tensor::ones(4, DType::BF16, &Device::Cpu)?;
    let (n, s) = add_rms_norm(&x, &r, &w, 0.0)?;
    assert!(n.is_contiguous() && s.is_contiguous());
    assert_eq!((n.dims(), s.dims()), (&[1, 4][..], &[1, 4][..]));
    // 1 + 0.001 rounds to 1 in bf16; the norm then sees exactly [1, 2, 3, 4].
    assert_eq!(
        s.to_dtype(DType::F32)?.to_vec2::<f32>()?,
        vec![vec![1.0, 2.0, 3.0, 4.0]]
    );
    let inv = 1.0 / 7.5f32.sqrt();
    let want: Vec<f32> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .map(|v| round_to(DType::BF16)(v * inv))
        .collect();
    assert_eq!(n.to_dtype(DType::F32)?.to_vec2::<f32>()?, vec![want]);
    Ok(())
}

#[test]
fn block_sum_adds_every_lane() {
    let lanes: Vec<f32> = (0..96).map(|i| i as f32).collect();
    assert_eq!(block_sum(&lanes), (0..96).sum::<i32>() as f32);
    assert_eq!(block_sum(&[2.0; 1024]), 2048.0);
}

#[test]
fn rejects_bad_inputs() -> anyhow::Result<()> {
    let dev = &Device::Cpu;
    let x = Tensor::zeros((2, 8), DType::F32, dev)?;
    let w = Tensor::ones(8, DType::F32, dev)?;
    let err = |r: Result<(Tensor, Tensor)>| r.unwrap_err().to_string();
    let e = err(add_rms_norm(
        &x,
        &Tensor::zeros((2, 7), DType::F32, dev)?,
        &w,
        EPS,
    ));
    assert!(e.contains("differ in shape"), "{e}");
    let e = err(add_rms_norm(
        &x,
        &x,
        &Tensor::ones(7, DType::F32, dev)?,
        EPS,
    ));
    assert!(e.contains("weight"), "{e}");
    let e = err(add_rms_norm(&x, &x.to_dtype(DType::BF16)?, &w, EPS));
    assert!(e.contains("residual is BF16"), "{e}");
    let e = err(add_rms_norm(&x, &x, &w.to_dtype(DType::F16)?, EPS));
    assert!(e.contains("weight is F16"), "{e}");
    let e = err(add_rms_norm(&x, &x, &w, -1.0));
    assert!(e.contains("eps"), "{e}");
    let e = err(add_rms_norm(&x, &x, &w, f32::NAN));
    assert!(e.contains("eps"), "{e}");
    let s = Tensor::new(1f32, dev)?;
    assert!(err(add_rms_norm(&s, &s, &w, EPS)).contains("scalar"));
    let u = Tensor::zeros((2, 8), DType::U32, dev)?;
    let e = err(add_rms_norm(&u, &u, &w.to_dtype(DType::U32)?, EPS));
    assert!(e.contains("unsupported"), "{e}");
    Ok(())
}

#[test]
fn zero_tokens_give_empty_outputs() -> anyhow::Result<()> {
    let x = Tensor::zeros((0, 8), DType::F16, &Device::Cpu)?;
    let w = Tensor::ones(8, DType::F16, &Device::Cpu)?;
    let (n, s) = add_rms_norm(&x, &x, &w, EPS)?;
    assert_eq!((n.dims(), s.dims()), (&[0, 8][..], &[0, 8][..]));
    Ok(())
}

#[test]
#[ignore = "requires a CUDA device"]
fn cuda_matches_reference_in_every_dtype() -> anyhow::Result<()> {
    Ok(harness::check_all_shapes(&Spec, &Device::new_cuda(0)?)?)
}
