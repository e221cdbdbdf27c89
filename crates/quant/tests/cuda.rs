//! The CUDA quantized matmul (kernels/quant_matvec.cu for up to 8 activation rows,
//! kernels/quant_dequant.cu + cuBLAS beyond) against the CPU reference, every weight
//! type, several shapes and batch sizes. Needs a GPU: run with `--features cuda --
//! --include-ignored` on a GPU host.
#![cfg(feature = "cuda")]

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor};
use engine_quant::random::gaussian;
use engine_quant::reference::{self, Acts};
use engine_quant::{quantize::quantize, CpuContext, GgmlType, QuantLinear};
use std::sync::Arc;

fn check(
    dev: &Device,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    m: usize,
    dtype: DType,
) -> Result<()> {
    let cpu = Arc::new(CpuContext::new(1)?);
    let bytes = quantize(ty, &gaussian(rows * cols, (rows + cols) as u64, 0.5))?;
    let layer = QuantLinear::from_ggml(ty, rows, cols, &bytes, dev, &cpu)?;
    let x = gaussian(m * cols, m as u64, 1.0);
    let xt = Tensor::from_slice(&x, (m, cols), dev)?.to_dtype(dtype)?;
    // bf16 inputs: the reference sees the same rounded values.
    let x_seen = xt.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let acts = if m <= 8 { Acts::Q8F32 } else { Acts::F32 };
    let (want, mag) = reference::matmul_with(ty, &bytes, rows, cols, &x_seen, m, acts)?;
    let got = layer
        .forward(&xt)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    // f32: rounding only (plus TF32 if cuBLAS uses it: 2^-11 per product); bf16 outputs
    // and bf16 dequantized weights: 2^-8 relative.
    let rel = match (dtype, acts) {
        (DType::F32, Acts::Q8F32) => 0.0,
        (DType::F32, _) => 1e-3,
        _ => 8e-3,
    };
    for (i, ((g, r), a)) in got.iter().zip(&want).zip(&mag).enumerate() {
        let tol = reference::tolerance(cols, *a) + rel * a;
        ensure!(
            (g - r).abs() <= tol,
            "{ty} [{rows}x{cols}] m={m} {dtype:?}: y[{}][{}] = {g}, reference {r} (tolerance {tol})",
            i / rows,
            i % rows
        );
    }
    Ok(())
}

#[test]
#[ignore = "requires a CUDA device"]
fn cuda_matches_the_reference_for_every_type() -> Result<()> {
    let dev = Device::new_cuda(0)?;
    for ty in GgmlType::QUANTIZED {
        let cols = if ty.block_elems() == 256 { 512 } else { 96 };
        for rows in [13, 40] {
            for m in [1, 2, 7, 16, 64] {
                check(&dev, ty, rows, cols, m, DType::F32)?;
            }
            check(&dev, ty, rows, cols, 3, DType::BF16)?;
            check(&dev, ty, rows, cols, 33, DType::BF16)?;
        }
    }
    Ok(())
}

#[test]
#[ignore = "requires a CUDA device"]
fn cuda_llama_8b_shapes() -> Result<()> {
    let dev = Device::new_cuda(0)?;
    for ty in [GgmlType::Q4K, GgmlType::Q8_0, GgmlType::Q6K] {
        check(&dev, ty, 1024, 4096, 1, DType::BF16)?;
        check(&dev, ty, 4096, 14336, 4, DType::BF16)?;
        check(&dev, ty, 512, 4096, 128, DType::BF16)?;
    }
    Ok(())
}
