//! The block formats against candle's own GGML implementation (an independent one):
//! our reference decoder and candle's dequantization agree bit for bit on the same bytes
//! (from both quantizers, and random codes); the packed layout gives the GGUF bytes
//! back exactly; our quantizers are at least as accurate as candle's on the same data.

use anyhow::{ensure, Result};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};
use engine_quant::random::{gaussian, rms};
use engine_quant::{dequant::dequantize, quantize::quantize, CpuContext, GgmlType, QMatrix};
use std::borrow::Cow;

fn candle_type(ty: GgmlType) -> GgmlDType {
    match ty {
        GgmlType::F32 => GgmlDType::F32,
        GgmlType::F16 => GgmlDType::F16,
        GgmlType::BF16 => GgmlDType::BF16,
        GgmlType::Q4_0 => GgmlDType::Q4_0,
        GgmlType::Q4_1 => GgmlDType::Q4_1,
        GgmlType::Q5_0 => GgmlDType::Q5_0,
        GgmlType::Q5_1 => GgmlDType::Q5_1,
        GgmlType::Q8_0 => GgmlDType::Q8_0,
        GgmlType::Q2K => GgmlDType::Q2K,
        GgmlType::Q3K => GgmlDType::Q3K,
        GgmlType::Q4K => GgmlDType::Q4K,
        GgmlType::Q5K => GgmlDType::Q5K,
        GgmlType::Q6K => GgmlDType::Q6K,
    }
}

fn candle_dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    let storage = QStorage::from_data(Cow::Borrowed(bytes), &Device::Cpu, candle_type(ty))?;
    let t = QTensor::new(storage, (n,))?;
    Ok(t.dequantize(&Device::Cpu)?.to_vec1::<f32>()?)
}

fn candle_quantize(ty: GgmlType, x: &[f32]) -> Result<Vec<u8>> {
    let t = Tensor::from_slice(x, (x.len(),), &Device::Cpu)?;
    Ok(QTensor::quantize(&t, candle_type(ty))?.data()?.into_owned())
}

/// Random block bytes whose f16 scale fields hold small finite values.
fn random_blocks(ty: GgmlType, blocks: usize, seed: u64) -> Vec<u8> {
    let noise = gaussian(blocks * ty.block_bytes(), seed, 1000.0);
    let mut b: Vec<u8> = noise.iter().map(|v| (v.abs() as u32 % 256) as u8).collect();
    let scale_at: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q2K => &[80, 82],
        GgmlType::Q3K => &[108],
        GgmlType::Q6K => &[208],
        _ => &[],
    };
    for (i, blk) in b.chunks_mut(ty.block_bytes()).enumerate() {
        for (j, &at) in scale_at.iter().enumerate() {
            let v = 0.01 * (1 + (i + j) % 7) as f32 * if (i + j) % 2 == 0 { 1.0 } else { -1.0 };
            blk[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
    }
    b
}

fn same_bits(ty: GgmlType, what: &str, ours: &[f32], theirs: &[f32]) -> Result<()> {
    ensure!(ours.len() == theirs.len(), "{ty} {what}: lengths differ");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        ensure!(
            a.to_bits() == b.to_bits(),
            "{ty} {what}: element {i}: ours {a}, candle {b}"
        );
    }
    Ok(())
}

#[test]
fn dequantize_matches_candle_bit_for_bit() -> Result<()> {
    for ty in GgmlType::QUANTIZED {
        let n = 4 * 256;
        let x = gaussian(n, 5, 1.0);
        for (what, bytes) in [
            ("our quantizer", quantize(ty, &x)?),
            ("candle's quantizer", candle_quantize(ty, &x)?),
            ("random codes", random_blocks(ty, n / ty.block_elems(), 9)),
        ] {
            same_bits(
                ty,
                what,
                &dequantize(ty, &bytes)?,
                &candle_dequantize(ty, &bytes, n)?,
            )?;
        }
    }
    Ok(())
}

#[test]
fn packed_matrices_give_the_gguf_bytes_back() -> Result<()> {
    for ty in GgmlType::ALL {
        let cols = 2 * 256;
        let rows = 11;
        let bytes = match ty.is_quantized() {
            true => random_blocks(ty, rows * cols / ty.block_elems(), 3),
            false => quantize(ty, &gaussian(rows * cols, 3, 1.0))?,
        };
        let q = QMatrix::from_ggml(ty, rows, cols, &bytes)?;
        ensure!(q.to_ggml() == bytes, "{ty}: to_ggml differs");
        let reference = dequantize(ty, &bytes)?;
        same_bits(ty, "QMatrix::dequantize", &q.dequantize(), &reference)?;
        let perm: Vec<usize> = (0..rows).rev().collect();
        let flipped = q.select_rows(&perm)?.dequantize();
        same_bits(
            ty,
            "select_rows",
            &flipped[..cols],
            &reference[(rows - 1) * cols..],
        )?;
    }
    Ok(())
}

#[test]
fn quantizers_are_as_accurate_as_candles() -> Result<()> {
    let x = gaussian(64 * 256, 21, 1.0);
    for ty in GgmlType::QUANTIZED {
        let err = |bytes: &[u8]| -> Result<f32> {
            let y = dequantize(ty, bytes)?;
            let d: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a - b).collect();
            Ok(rms(&d) / rms(&x))
        };
        let (ours, theirs) = (err(&quantize(ty, &x)?)?, err(&candle_quantize(ty, &x)?)?);
        eprintln!("{ty}: relative rms error ours {ours:.5}, candle {theirs:.5}");
        ensure!(
            ours <= theirs * 1.02,
            "{ty}: ours {ours} vs candle {theirs}"
        );
    }
    Ok(())
}

#[test]
fn threaded_quantizing_and_packing_match_one_thread() -> Result<()> {
    let cpu = CpuContext::new(3)?;
    let (rows, cols) = (37, 512);
    let x = gaussian(rows * cols, 8, 1.0);
    for ty in [GgmlType::Q4K, GgmlType::Q8_0, GgmlType::Q3K] {
        let one = QMatrix::quantize(ty, rows, cols, &x)?;
        let many = QMatrix::quantize_on(ty, rows, cols, &x, Some(&cpu))?;
        ensure!(
            one.to_ggml() == many.to_ggml(),
            "{ty}: threaded quantization differs"
        );
        ensure!(
            one.to_ggml() == quantize(ty, &x)?,
            "{ty}: differs from quantize()"
        );
        let packed = QMatrix::from_ggml_on(ty, rows, cols, &one.to_ggml(), Some(&cpu))?;
        same_bits(
            ty,
            "threaded packing",
            &packed.dequantize(),
            &one.dequantize(),
        )?;
    }
    let mut bad = x.clone();
    bad[700] = f32::INFINITY;
    let err = QMatrix::quantize_on(GgmlType::Q4K, rows, cols, &bad, Some(&cpu)).unwrap_err();
    ensure!(err.to_string().contains("value 700"), "{err}");
    Ok(())
}
