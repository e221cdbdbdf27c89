//! Tests of `rope_and_cache` (declared from rope_and_cache.rs).
use super::*;
use crate::harness;
use crate::paged::SKIP_SLOT;
use crate::reshape_and_cache::reshape_and_cache_cols;
use crate::rope::{cos_sin_table, rope_rows_inplace};
use candle_core::{DType, Device};

fn geo(heads: usize, kv_heads: usize, head_dim: usize) -> QkvHeads {
    QkvHeads {
        heads,
        kv_heads,
        head_dim,
    }
}

/// Bits of a tensor's elements as host f32.
fn bits(t: &Tensor) -> anyhow::Result<Vec<u32>> {
    Ok(harness::host_f32(t)?.iter().map(|v| v.to_bits()).collect())
}

#[test]
fn cpu_port_matches_reference_and_composition_in_every_dtype() -> anyhow::Result<()> {
    Ok(harness::check_all_shapes(&Spec, &Device::Cpu)?)
}

/// Fused vs rope + reshape_and_cache_cols on `dev`, the caches random (not poisoned), so
/// the rows a padded row must not write are compared too; qkv rows wider than q, k, v.
fn equals_the_composition(dev: &Device) -> anyhow::Result<()> {
    let shapes = [
        (5, 8, 2, 128, true),
        (6, 4, 4, 64, false),
        (3, 6, 3, 64, true),
        (9, 2, 1, 36, true),
    ];
    for dtype in harness::DTYPES {
        for (i, &(t, h, kv, d, neox)) in shapes.iter().enumerate() {
            let g = geo(h, kv, d);
            let (width, num_slots, max_pos) = (g.qkv_width() + 8, 2 * t + 1, 3 * t);
            let seed = 10 * i as u64;
            let (qkv, _) = harness::random_input(&[t, width], 2.0, seed, dtype, dev)?;
            let (k, _) =
                harness::random_input(&[num_slots, g.kv_width()], 1.0, seed + 1, dtype, dev)?;
            let (v, _) =
                harness::random_input(&[num_slots, g.kv_width()], 1.0, seed + 2, dtype, dev)?;
            let cs =
                Tensor::from_vec(cos_sin_table(max_pos, d), (max_pos, d), dev)?.to_dtype(dtype)?;
            let pos: Vec<u32> = (0..t as u32)
                .map(|r| (7 * r + 2) % max_pos as u32)
                .collect();
            let mut slots: Vec<u32> = (0..t as u32)
                .map(|r| (2 * r + 1) % num_slots as u32)
                .collect();
            slots[t / 2] = SKIP_SLOT;
            let (pos, slots) = (
                Tensor::from_vec(pos, t, dev)?,
                Tensor::from_vec(slots, t, dev)?,
            );
            let (q2, k2, v2) = (qkv.copy()?, k.copy()?, v.copy()?);
            let rotary = Rotary { cos_sin: &cs, neox };
            rope_and_cache(&qkv, g, rotary, &pos, (&k, &v), &slots)?;
            rope_rows_inplace(&q2, &cs, &pos, h + kv, d, neox)?;
            reshape_and_cache_cols(&k2, &q2, h * d, &slots)?;
            reshape_and_cache_cols(&v2, &q2, (h + kv) * d, &slots)?;
            let what = format!("{dtype:?} t={t} h={h} kv={kv} d={d} neox={neox}");
            assert_eq!(bits(&qkv)?, bits(&q2)?, "qkv {what}");
            assert_eq!(bits(&k)?, bits(&k2)?, "k_cache {what}");
            assert_eq!(bits(&v)?, bits(&v2)?, "v_cache {what}");
        }
    }
    Ok(())
}

#[test]
fn equals_rope_then_reshape_and_cache_bit_for_bit() -> anyhow::Result<()> {
    equals_the_composition(&Device::Cpu)
}

#[test]
fn padded_rows_are_rotated_and_write_no_cache_element() -> anyhow::Result<()> {
    let dev = &Device::Cpu;
    let g = geo(2, 1, 8);
    let (qkv, qh) = harness::random_input(&[3, g.qkv_width()], 1.0, 4, DType::F32, dev)?;
    let cs = Tensor::from_vec(cos_sin_table(8, 8), (8, 8), dev)?;
    let (k, v) = (
        Tensor::zeros((4, 8), DType::F32, dev)?,
        Tensor::zeros((4, 8), DType::F32, dev)?,
    );
    let slots = Tensor::new(&[SKIP_SLOT; 3], dev)?;
    let rotary = Rotary {
        cos_sin: &cs,
        neox: true,
    };
    rope_and_cache(
        &qkv,
        g,
        rotary,
        &Tensor::new(&[1u32, 2, 3], dev)?,
        (&k, &v),
        &slots,
    )?;
    assert!(harness::host_f32(&k)?
        .iter()
        .chain(&harness::host_f32(&v)?)
        .all(|&x| x == 0.0));
    let got = harness::host_f32(&qkv)?;
    assert_ne!(&got[..24], &qh[..24], "q and k rotated");
    assert_eq!(&got[24..32], &qh[24..32], "v untouched");
    Ok(())
}

#[test]
fn takes_three_dim_caches() -> anyhow::Result<()> {
    let dev = &Device::Cpu;
    let g = geo(4, 2, 8);
    let (qkv, _) = harness::random_input(&[2, g.qkv_width()], 1.0, 5, DType::BF16, dev)?;
    let cs = Tensor::from_vec(cos_sin_table(4, 8), (4, 8), dev)?.to_dtype(DType::BF16)?;
    let k = Tensor::zeros((6, 2, 8), DType::BF16, dev)?;
    let v = Tensor::zeros((6, 2, 8), DType::BF16, dev)?;
    let rotary = Rotary {
        cos_sin: &cs,
        neox: false,
    };
    let (pos, slots) = (Tensor::new(&[3u32, 0], dev)?, Tensor::new(&[5u32, 1], dev)?);
    rope_and_cache(&qkv, g, rotary, &pos, (&k, &v), &slots)?;
    let (q, vh) = (harness::host_f32(&qkv)?, harness::host_f32(&v)?);
    assert_eq!(
        &harness::host_f32(&k)?[80..96],
        &q[32..48],
        "row 0's rotated k at slot 5"
    );
    assert_eq!(&vh[16..32], &q[112..128], "row 1's v at slot 1");
    Ok(())
}

#[test]
fn out_of_range_position_or_slot_is_an_error_and_writes_nothing() -> anyhow::Result<()> {
    let dev = &Device::Cpu;
    let g = geo(2, 1, 8);
    let (qkv, qh) = harness::random_input(&[3, g.qkv_width()], 1.0, 1, DType::F32, dev)?;
    let cs = Tensor::from_vec(cos_sin_table(4, 8), (4, 8), dev)?;
    let (k, v) = (
        Tensor::zeros((4, 8), DType::F32, dev)?,
        Tensor::zeros((4, 8), DType::F32, dev)?,
    );
    let rotary = Rotary {
        cos_sin: &cs,
        neox: true,
    };
    let run = |pos: &[u32], slots: &[u32]| {
        let (p, s) = (Tensor::new(pos, dev)?, Tensor::new(slots, dev)?);
        rope_and_cache(&qkv, g, rotary, &p, (&k, &v), &s)
    };
    let e = run(&[0, 4, 1], &[0, 1, 2]).unwrap_err().to_string();
    assert!(e.contains("positions[1] = 4"), "{e}");
    let e = run(&[0, 1, 2], &[0, SKIP_SLOT, 4]).unwrap_err().to_string();
    assert!(e.contains("slots[2] = 4"), "{e}");
    assert_eq!(harness::host_f32(&qkv)?, qh);
    assert!(harness::host_f32(&k)?
        .iter()
        .chain(&harness::host_f32(&v)?)
        .all(|&x| x == 0.0));
    // The CPU port checks too, before writing anything.
    let (mut q, mut kc, mut vc) = (qh.clone(), vec![0f32; 32], vec![0f32; 32]);
    let (cs, pos) = (cos_sin_table(4, 8), [0u32, 1, 2]);
    let x = Host {
        qkv: &mut q,
        width: 32,
        cs: &cs,
        pos: &pos,
        slots: &[0, 1, 9],
    };
    assert!(cpu_rope_and_cache(x, &mut kc, &mut vc, g, true).is_err());
    assert_eq!(q, qh);
    assert!(kc.iter().chain(&vc).all(|&x| x == 0.0));
    Ok(())
}

#[test]
fn rejects_bad_inputs() -> anyhow::Result<()> {
    let dev = &Device::Cpu;
    let g = geo(2, 1, 8);
    let qkv = Tensor::zeros((2, 32), DType::F32, dev)?;
    let cs = Tensor::zeros((4, 8), DType::F32, dev)?;
    let (p, s) = (
        Tensor::zeros(2, DType::U32, dev)?,
        Tensor::zeros(2, DType::U32, dev)?,
    );
    let k = Tensor::zeros((4, 8), DType::F32, dev)?;
    let v = Tensor::zeros((4, 8), DType::F32, dev)?;
    let rotary = Rotary {
        cos_sin: &cs,
        neox: true,
    };
    let err = |qkv: &Tensor, g: QkvHeads, k: &Tensor, v: &Tensor| {
        rope_and_cache(qkv, g, rotary, &p, (k, v), &s)
            .unwrap_err()
            .to_string()
    };
    let e = err(&qkv, geo(3, 1, 8), &k, &v);
    assert!(e.contains("columns 32..40"), "{e}");
    let e = err(&qkv, geo(2, 0, 8), &k, &v);
    assert!(e.contains("kv_heads"), "{e}");
    let e = err(&qkv, g, &Tensor::zeros((4, 16), DType::F32, dev)?, &v);
    assert!(e.contains("k_cache"), "{e}");
    let e = err(&qkv, g, &k, &v.to_dtype(DType::F16)?);
    assert!(e.contains("cache is F16"), "{e}");
    let e = err(&qkv, g, &k, &k);
    assert!(e.contains("share storage"), "{e}");
    let e = err(&qkv, g, &k, &qkv.narrow(1, 24, 8)?);
    assert!(e.contains("contiguous"), "{e}");
    let e = err(&qkv, g, &qkv.reshape((8, 8))?.narrow(0, 4, 4)?, &v);
    assert!(
        e.contains("k_cache shares storage with another operand"),
        "{e}"
    );
    let both = Tensor::zeros((8, 8), DType::F32, dev)?;
    let e = err(&qkv, g, &both.narrow(0, 0, 4)?, &both.narrow(0, 4, 4)?);
    assert!(e.contains("k_cache and v_cache share storage"), "{e}");
    let e = err(&qkv.reshape((2, 4, 8))?, g, &k, &v);
    assert!(e.contains("[tokens, width]"), "{e}");
    Ok(())
}

#[test]
fn zero_tokens_is_a_no_op() -> anyhow::Result<()> {
    let dev = &Device::Cpu;
    let qkv = Tensor::zeros((0, 32), DType::F16, dev)?;
    let cs = Tensor::zeros((4, 8), DType::F16, dev)?;
    let (k, v) = (
        Tensor::zeros((4, 8), DType::F16, dev)?,
        Tensor::zeros((4, 8), DType::F16, dev)?,
    );
    let none = Tensor::zeros(0, DType::U32, dev)?;
    let rotary = Rotary {
        cos_sin: &cs,
        neox: false,
    };
    Ok(rope_and_cache(
        &qkv,
        geo(2, 1, 8),
        rotary,
        &none,
        (&k, &v),
        &none,
    )?)
}

#[test]
#[ignore = "requires a CUDA device"]
fn cuda_matches_reference_and_composition_in_every_dtype() -> anyhow::Result<()> {
    Ok(harness::check_all_shapes(&Spec, &Device::new_cuda(0)?)?)
}

#[test]
#[ignore = "requires a CUDA device"]
fn cuda_equals_rope_then_reshape_and_cache_bit_for_bit() -> anyhow::Result<()> {
    equals_the_composition(&Device::new_cuda(0)?)
}

#[test]
#[ignore = "requires a CUDA device"]
fn cuda_skips_what_the_composition_skips() -> anyhow::Result<()> {
    // Positions 4 and u32::MAX (>= max_pos) are not rotated, slots 4 and SKIP_SLOT not
    // written: the same as rope + reshape_and_cache on the device.
    let dev = &Device::new_cuda(0)?;
    let g = geo(2, 1, 8);
    let (qkv, _) = harness::random_input(&[4, g.qkv_width()], 1.0, 1, DType::F32, dev)?;
    let cs = Tensor::from_vec(cos_sin_table(4, 8), (4, 8), dev)?;
    let (k, v) = (
        Tensor::zeros((4, 8), DType::F32, dev)?,
        Tensor::zeros((4, 8), DType::F32, dev)?,
    );
    let (q2, k2, v2) = (qkv.copy()?, k.copy()?, v.copy()?);
    let pos = Tensor::new(&[1u32, 4, u32::MAX, 3], dev)?;
    let slots = Tensor::new(&[0u32, 1, 4, SKIP_SLOT], dev)?;
    let rotary = Rotary {
        cos_sin: &cs,
        neox: true,
    };
    rope_and_cache(&qkv, g, rotary, &pos, (&k, &v), &slots)?;
    rope_rows_inplace(&q2, &cs, &pos, 3, 8, true)?;
    reshape_and_cache_cols(&k2, &q2, 16, &slots)?;
    reshape_and_cache_cols(&v2, &q2, 24, &slots)?;
    assert_eq!(bits(&qkv)?, bits(&q2)?);
    assert_eq!(bits(&k)?, bits(&k2)?);
    assert_eq!(bits(&v)?, bits(&v2)?);
    Ok(())
}
