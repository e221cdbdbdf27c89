//! Tests of `reshape_and_cache` (declared from reshape_and_cache.rs).
use super::*;

#[test]
fn cpu_port_matches_reference_in_every_dtype() -> anyhow::Result<()> {
    Ok(harness::check_all_shapes(&Spec, &Device::Cpu)?)
}

#[test]
fn matches_the_reference_with_skips() -> anyhow::Result<()> {
    let dev = &Device::Cpu;
    let (t, width, num_slots) = (6, 10, 9);
    let (cache, ch) = harness::random_input(&[num_slots, width], 1.0, 1, DType::F16, dev)?;
    let (src, sh) = harness::random_input(&[t, width], 1.0, 2, DType::F16, dev)?;
    let slots = vec![3, SKIP_SLOT, 0, 8, SKIP_SLOT, 5];
    reshape_and_cache(&cache, &src, &Tensor::from_vec(slots.clone(), t, dev)?)?;
    assert_eq!(
        harness::host_f32(&cache)?,
        reference(&ch, &sh, &slots, width)
    );
    Ok(())
}

#[test]
fn random_slots_are_distinct_with_the_skips_asked_for() {
    let s = random_slots(17, 64, 3, 5);
    assert_eq!(s.len(), 17);
    assert_eq!(s.iter().filter(|&&x| x == SKIP_SLOT).count(), 3);
    let mut real: Vec<u32> = s.into_iter().filter(|&x| x != SKIP_SLOT).collect();
    real.sort();
    real.dedup();
    assert_eq!(real.len(), 14);
    assert!(real.iter().all(|&x| x < 64));
}

#[test]
fn takes_three_dim_src_and_cache() -> anyhow::Result<()> {
    let dev = &Device::Cpu;
    let cache = Tensor::zeros((8, 2, 4), DType::BF16, dev)?;
    let (src, sh) = harness::random_input(&[3, 2, 4], 1.0, 3, DType::BF16, dev)?;
    reshape_and_cache(&cache, &src, &Tensor::new(&[7u32, 0, SKIP_SLOT], dev)?)?;
    let got = harness::host_f32(&cache)?;
    assert_eq!(&got[56..64], &sh[0..8]);
    assert_eq!(&got[0..8], &sh[8..16]);
    assert!(got[8..56].iter().all(|&v| v == 0.0));
    Ok(())
}

#[test]
fn out_of_range_slot_is_an_error_and_leaves_the_cache_alone() -> anyhow::Result<()> {
    let dev = &Device::Cpu;
    let cache = Tensor::zeros((4, 8), DType::F32, dev)?;
    let src = Tensor::ones((2, 8), DType::F32, dev)?;
    let e = reshape_and_cache(&cache, &src, &Tensor::new(&[1u32, 4], dev)?).unwrap_err();
    assert!(e.to_string().contains("slots[1] = 4"), "{e}");
    assert!(harness::host_f32(&cache)?.iter().all(|&v| v == 0.0));
    // The CPU port checks too (before writing anything).
    let mut c = vec![0f32; 32];
    assert!(cpu_scatter(&mut c, (&[1f32; 16], 8, 0), &[0, 7], 8).is_err());
    assert!(c.iter().all(|&v| v == 0.0));
    Ok(())
}

#[test]
fn rejects_bad_inputs() -> anyhow::Result<()> {
    let dev = &Device::Cpu;
    let cache = Tensor::zeros((4, 8), DType::F32, dev)?;
    let src = Tensor::zeros((2, 8), DType::F32, dev)?;
    let slots = Tensor::zeros(2, DType::U32, dev)?;
    let err = |r: Result<()>| r.unwrap_err().to_string();
    let e = err(reshape_and_cache(
        &cache,
        &Tensor::zeros((2, 6), DType::F32, dev)?,
        &slots,
    ));
    assert!(e.contains("src"), "{e}");
    let e = err(reshape_and_cache(
        &Tensor::zeros(8, DType::F32, dev)?,
        &src,
        &slots,
    ));
    assert!(e.contains("num_slots"), "{e}");
    let e = err(reshape_and_cache(
        &cache,
        &src.to_dtype(DType::BF16)?,
        &slots,
    ));
    assert!(e.contains("src is BF16"), "{e}");
    let e = err(reshape_and_cache(
        &cache,
        &src,
        &slots.to_dtype(DType::I64)?,
    ));
    assert!(e.contains("slots"), "{e}");
    let e = err(reshape_and_cache(
        &cache,
        &src,
        &Tensor::zeros(3, DType::U32, dev)?,
    ));
    assert!(e.contains("slots"), "{e}");
    let t = Tensor::zeros((8, 4), DType::F32, dev)?.t()?;
    let e = err(reshape_and_cache(&t, &src, &slots));
    assert!(e.contains("contiguous"), "{e}");
    let u = Tensor::zeros((4, 8), DType::U32, dev)?;
    let e = err(reshape_and_cache(&u, &src.to_dtype(DType::U32)?, &slots));
    assert!(e.contains("expected f32"), "{e}");
    Ok(())
}

#[test]
fn zero_tokens_is_a_no_op() -> anyhow::Result<()> {
    let dev = &Device::Cpu;
    let cache = Tensor::zeros((4, 8), DType::F16, dev)?;
    let src = Tensor::zeros((0, 8), DType::F16, dev)?;
    Ok(reshape_and_cache(
        &cache,
        &src,
        &Tensor::zeros(0, DType::U32, dev)?,
    )?)
}

#[test]
#[ignore = "requires a CUDA device"]
fn cuda_matches_reference_in_every_dtype() -> anyhow::Result<()> {
    Ok(harness::check_all_shapes(&Spec, &Device::new_cuda(0)?)?)
}

#[test]
#[ignore = "requires a CUDA device"]
fn cuda_skips_out_of_range_slots() -> anyhow::Result<()> {
    let dev = &Device::new_cuda(0)?;
    let cache = Tensor::zeros((4, 8), DType::F32, dev)?;
    let src = Tensor::ones((3, 8), DType::F32, dev)?;
    reshape_and_cache(&cache, &src, &Tensor::new(&[2u32, 4, SKIP_SLOT], dev)?)?;
    let got = harness::host_f32(&cache)?;
    assert!(got[16..24].iter().all(|&v| v == 1.0));
    assert_eq!(got.iter().filter(|&&v| v != 0.0).count(), 8);
    Ok(())
}

#[test]
fn columns_of_wider_rows_equal_the_same_rows_copied_out() -> anyhow::Result<()> {
    // qkv rows [q: 24 | k: 8 | v: 8]: caching columns 24..32 and 32..40 equals caching
    // contiguous copies of k and v.
    let dev = &Device::Cpu;
    let (t, num_slots) = (5, 12);
    for dtype in harness::DTYPES {
        let (qkv, _) = harness::random_input(&[t, 40], 1.0, 3, dtype, dev)?;
        let slots = Tensor::from_vec(vec![7u32, SKIP_SLOT, 0, 11, 4], t, dev)?;
        for col in [24, 32] {
            let a = Tensor::zeros((num_slots, 8), dtype, dev)?;
            let b = Tensor::zeros((num_slots, 8), dtype, dev)?;
            reshape_and_cache_cols(&a, &qkv, col, &slots)?;
            reshape_and_cache(&b, &qkv.narrow(1, col, 8)?.contiguous()?, &slots)?;
            assert_eq!(
                harness::host_f32(&a)?,
                harness::host_f32(&b)?,
                "{dtype:?} {col}"
            );
        }
        let c = Tensor::zeros((num_slots, 8), dtype, dev)?;
        let err = reshape_and_cache_cols(&c, &qkv, 33, &slots)
            .unwrap_err()
            .to_string();
        assert!(err.contains("columns 33..41"), "{err}");
    }
    Ok(())
}
