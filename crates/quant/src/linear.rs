//! [`QuantLinear`]: a linear layer whose weight stays quantized, with a candle-facing
//! `forward(&Tensor) -> Tensor` on either device.
//!
//! - CPU: the weight is a packed [`QMatrix`]; `forward` runs the threaded matmul of
//!   [`crate::matmul`] on the f32 activations (other dtypes are converted to f32 and the
//!   result back).
//! - CUDA (feature `cuda`): the weight is its GGUF bytes in device memory (a U8 tensor);
//!   up to 8 activation rows per call go to the quantized mat-vec kernels (activations
//!   quantized to Q8 blocks of 32 on the device), more rows are dequantized into a
//!   dense weight of the activations' dtype for candle's (cuBLAS) matmul.
//!
//! Shapes: `x [.., cols]` -> `y [.., rows]` (rows = out features), like `candle_nn::Linear`
//! without bias.

use crate::error::{input_err, QuantError, Result};
use crate::matmul::CpuContext;
use crate::matrix::QMatrix;
use crate::types::GgmlType;
use candle_core::{DType, Device, Storage, Tensor};
use std::sync::Arc;

enum Weight {
    Cpu {
        w: Arc<QMatrix>,
        cpu: Arc<CpuContext>,
    },
    #[cfg(feature = "cuda")]
    Cuda(Tensor),
}

/// A linear layer `y = x · Wᵀ` over a quantized weight `W [rows, cols]`.
pub struct QuantLinear {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    weight: Weight,
}

impl std::fmt::Debug for QuantLinear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dev = match &self.weight {
            Weight::Cpu { .. } => "cpu",
            #[cfg(feature = "cuda")]
            Weight::Cuda(_) => "cuda",
        };
        write!(
            f,
            "QuantLinear({} [{}, {}] on {dev})",
            self.ty, self.rows, self.cols
        )
    }
}

impl QuantLinear {
    /// A CPU layer over a packed matrix, running on `cpu`'s threads.
    pub fn cpu(w: Arc<QMatrix>, cpu: Arc<CpuContext>) -> QuantLinear {
        QuantLinear {
            ty: w.ty(),
            rows: w.rows(),
            cols: w.cols(),
            weight: Weight::Cpu { w, cpu },
        }
    }

    /// From a GGUF tensor's bytes (`[rows, cols]` of `ty`) on `device`; `cpu` runs the
    /// CPU matmuls (unused on CUDA).
    pub fn from_ggml(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
        device: &Device,
        cpu: &Arc<CpuContext>,
    ) -> Result<QuantLinear> {
        match device {
            Device::Cpu => Ok(QuantLinear::cpu(
                Arc::new(QMatrix::from_ggml(ty, rows, cols, bytes)?),
                cpu.clone(),
            )),
            #[cfg(feature = "cuda")]
            Device::Cuda(_) => {
                ty.check_row_len(cols)?;
                if !ty.is_quantized() || bytes.len() != rows * ty.bytes_for(cols) {
                    input_err!(
                        "{ty} [{rows}, {cols}] on CUDA: needs a block type and {} bytes, got {}",
                        rows * ty.bytes_for(cols),
                        bytes.len()
                    );
                }
                let w = Tensor::from_slice(bytes, bytes.len(), device)?;
                Ok(QuantLinear {
                    ty,
                    rows,
                    cols,
                    weight: Weight::Cuda(w),
                })
            }
            other => Err(QuantError::Input(format!(
                "quantized weights are not supported on {:?}",
                other.location()
            ))),
        }
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }
    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes the weight holds in memory on its device.
    pub fn size_bytes(&self) -> usize {
        match &self.weight {
            Weight::Cpu { w, .. } => w.size_bytes(),
            #[cfg(feature = "cuda")]
            Weight::Cuda(w) => w.elem_count(),
        }
    }

    /// `x [.., cols]` -> `[.., rows]`, in `x`'s dtype, on the weight's device.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        if dims.last() != Some(&self.cols) {
            input_err!(
                "{self:?}: input shape {dims:?} does not end in {}",
                self.cols
            );
        }
        let m = x.elem_count() / self.cols;
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("checked non-empty") = self.rows;
        let y = match &self.weight {
            Weight::Cpu { w, cpu } => cpu_forward(w, cpu, x, m)?,
            #[cfg(feature = "cuda")]
            Weight::Cuda(w) => crate::cuda::forward(w, self.ty, self.rows, self.cols, x, m)?,
        };
        Ok(y.reshape(out_dims)?)
    }
}

fn cpu_forward(w: &QMatrix, cpu: &CpuContext, x: &Tensor, m: usize) -> Result<Tensor> {
    if !x.device().is_cpu() {
        input_err!(
            "{w:?}: the input is on {:?}, the weight on the CPU",
            x.device().location()
        );
    }
    let xf = x.to_dtype(DType::F32)?.contiguous()?; // [m, cols]
    let mut y = vec![0f32; m * w.rows()]; // [m, rows]
    {
        let (storage, layout) = xf.storage_and_layout();
        let Storage::Cpu(s) = &*storage else {
            input_err!("{w:?}: input storage is not on the CPU");
        };
        let start = layout.start_offset();
        let xs = &s.as_slice::<f32>()?[start..start + m * w.cols()];
        w.matmul(xs, m, &mut y, cpu)?;
    }
    Ok(Tensor::from_vec(y, (m, w.rows()), &Device::Cpu)?.to_dtype(x.dtype())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::gaussian;
    use crate::reference;

    #[test]
    fn cpu_forward_matches_the_reference_in_every_dtype() -> anyhow::Result<()> {
        let cpu = Arc::new(CpuContext::new(2)?);
        let (rows, cols, ty) = (19, 256, GgmlType::Q4K);
        let bytes = crate::quantize::quantize(ty, &gaussian(rows * cols, 4, 0.3))?;
        let layer = QuantLinear::from_ggml(ty, rows, cols, &bytes, &Device::Cpu, &cpu)?;
        let x = gaussian(2 * 3 * cols, 5, 1.0);
        let (want, mag) = reference::matmul(ty, &bytes, rows, cols, &x, 6)?;
        for dtype in [DType::F32, DType::BF16] {
            let xt = Tensor::from_slice(&x, (2, 3, cols), &Device::Cpu)?.to_dtype(dtype)?;
            let y = layer.forward(&xt)?;
            assert_eq!(y.dims(), &[2, 3, rows]);
            assert_eq!(y.dtype(), dtype);
            if dtype == DType::F32 {
                let got = y.flatten_all()?.to_vec1::<f32>()?;
                for ((g, r), a) in got.iter().zip(&want).zip(&mag) {
                    assert!(
                        (g - r).abs() <= reference::tolerance(cols, *a),
                        "{g} vs {r}"
                    );
                }
            }
        }
        let bad = Tensor::zeros((2, cols + 1), DType::F32, &Device::Cpu)?;
        let err = layer.forward(&bad).unwrap_err().to_string();
        assert!(err.contains("does not end in 256"), "{err}");
        Ok(())
    }
}
