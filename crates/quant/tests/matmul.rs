//! Every quantized matmul against the reference (weights decoded by the reference
//! dequantizer, activations through the same 8-bit quantization, f64 sums), for every
//! weight type, every SIMD level this CPU has (forced in turn, the portable one always),
//! odd row counts, and 1, 2, 7, 16 and 64 activation rows; within
//! `engine_quant::reference::tolerance` (f32 rounding only: about (cols/8 + 16) * 2^-22
//! of the sum of |products|).

use anyhow::{ensure, Result};
use engine_quant::random::gaussian;
use engine_quant::{quantize::quantize, reference, CpuContext, GgmlType, Level, QMatrix};

fn check(ty: GgmlType, rows: usize, cols: usize, ms: &[usize], cpus: &[CpuContext]) -> Result<()> {
    let w = gaussian(rows * cols, (rows * 31 + cols) as u64, 0.5);
    let bytes = quantize(ty, &w)?;
    let q = QMatrix::from_ggml(ty, rows, cols, &bytes)?;
    for &m in ms {
        let x = gaussian(m * cols, (m * 7 + cols) as u64, 1.0);
        let (want, mag) = reference::matmul(ty, &bytes, rows, cols, &x, m)?;
        for cpu in cpus {
            let mut y = vec![f32::NAN; m * rows];
            q.matmul(&x, m, &mut y, cpu)?;
            for (i, ((&g, &r), &a)) in y.iter().zip(&want).zip(&mag).enumerate() {
                let tol = reference::tolerance(cols, a);
                ensure!(
                    (g - r).abs() <= tol,
                    "{ty} [{rows}x{cols}] m={m} {} x{} threads: y[{}][{}] = {g}, reference {r} (tolerance {tol})",
                    cpu.level(),
                    cpu.threads(),
                    i / rows,
                    i % rows
                );
            }
        }
    }
    Ok(())
}

fn contexts(threads: usize) -> Result<Vec<CpuContext>> {
    let levels = Level::available();
    eprintln!("levels on this CPU: {levels:?}");
    levels
        .into_iter()
        .map(|l| Ok(CpuContext::with_level(threads, l)?))
        .collect()
}

#[test]
fn every_type_every_level_every_batch() -> Result<()> {
    let cpus = contexts(2)?;
    let ms = [1, 2, 7, 16, 64];
    for ty in GgmlType::ALL {
        let cols = if ty.block_elems() == 256 { 512 } else { 96 };
        for rows in [1, 13, 40] {
            check(ty, rows, cols, &ms, &cpus)?;
        }
    }
    Ok(())
}

#[test]
fn long_rows_and_many_tiles() -> Result<()> {
    // Several tasks per thread, a partial last tile, a reduction of 1536 values (the
    // default model's down projection), 3 threads on 2 cores.
    let cpus = contexts(3)?;
    for ty in [
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q6K,
        GgmlType::F16,
    ] {
        check(ty, 203, 1536, &[1, 9], &cpus)?;
    }
    Ok(())
}

#[test]
fn one_thread_and_wide_panels() -> Result<()> {
    // 300 activation rows of 256: more than one panel of columns.
    let cpus = vec![CpuContext::new(1)?];
    check(GgmlType::Q5_0, 24, 2048, &[300], &cpus)?;
    check(GgmlType::Q3K, 17, 256, &[300], &cpus)?;
    Ok(())
}

#[test]
fn rejects_bad_shapes() -> Result<()> {
    let cpu = CpuContext::new(1)?;
    let q = QMatrix::quantize(GgmlType::Q8_0, 4, 64, &vec![0.5; 256])?;
    let mut y = vec![0.0; 4];
    let err = q
        .matmul(&[0.0; 63], 1, &mut y, &cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected 1 x 64"), "{err}");
    assert!(QMatrix::from_ggml(GgmlType::Q4K, 2, 96, &[0; 10]).is_err());
    assert!(QMatrix::from_ggml(GgmlType::Q8_0, 2, 64, &[0; 10]).is_err());
    Ok(())
}

/// A row's result does not depend on the rows multiplied with it: each of 16 activation
/// rows alone gives the bits it gives in the batch (the kernels' 8/4/2/1-column calls
/// accumulate each output in the same order). So where `--quant native` outputs depend
/// on the batch, the 1-ulp differences come from the float ops around the matmuls
/// (attention, norms), which the 8-bit activation rounding then amplifies.
#[test]
fn a_row_alone_gives_its_bits_in_a_batch() -> Result<()> {
    let cpu = CpuContext::new(2)?;
    let m = 16;
    for ty in [
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q6K,
        GgmlType::F32,
    ] {
        let (rows, cols) = (576, if ty.block_elems() == 256 { 1536 } else { 576 });
        let w = gaussian(rows * cols, 11, 0.5);
        let q = QMatrix::from_ggml(ty, rows, cols, &quantize(ty, &w)?)?;
        let x = gaussian(m * cols, 12, 1.0);
        let mut batch = vec![f32::NAN; m * rows];
        q.matmul(&x, m, &mut batch, &cpu)?;
        for r in 0..m {
            let mut alone = vec![f32::NAN; rows];
            q.matmul(&x[r * cols..(r + 1) * cols], 1, &mut alone, &cpu)?;
            let differ = alone
                .iter()
                .zip(&batch[r * rows..(r + 1) * rows])
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            ensure!(
                differ == 0,
                "{ty}: row {r} alone differs from the batch at {differ} of {rows} outputs"
            );
        }
    }
    Ok(())
}
