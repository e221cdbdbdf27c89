//! Refill a persistent device buffer from the host in one copy: the decode graphs' input
//! buffers (token ids, positions, slots, context lengths, block tables) keep their device
//! addresses across steps, because a captured graph reads them there, and each step
//! writes its new contents into them with one host-to-device copy.

use crate::error::{input_err, Result};
use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Tensor};

/// Copy `src` into the u32 tensor `dst` (contiguous, exactly `src.len()` elements) in
/// place: one host-to-device copy on CUDA (ordered on the device's stream), a memcpy on
/// the CPU.
pub fn upload_u32(dst: &Tensor, src: &[u32]) -> Result<()> {
    if dst.dtype() != DType::U32 || !dst.is_contiguous() || dst.elem_count() != src.len() {
        input_err!(
            "upload_u32: dst {:?} {:?} must be contiguous u32 with {} elements",
            dst.shape(),
            dst.dtype(),
            src.len()
        );
    }
    Ok(dst.inplace_op1(&Upload { src })?)
}

struct Upload<'a> {
    src: &'a [u32],
}

impl InplaceOp1 for Upload<'_> {
    fn name(&self) -> &'static str {
        "upload_u32"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let (a, b) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("upload_u32: dst not contiguous".into()))?;
        match s {
            CpuStorage::U32(v) => v[a..b].copy_from_slice(self.src),
            _ => candle_core::bail!("upload_u32: dst is not u32"),
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &mut candle_core::CudaStorage, l: &Layout) -> candle_core::Result<()> {
        htod("upload_u32", self.src, s, l)
    }
}

/// Copy `src` into the u32 device storage `s` at layout `l` (contiguous), on its stream.
#[cfg(feature = "cuda")]
fn htod<S>(
    name: &str,
    src: &S,
    s: &mut candle_core::CudaStorage,
    l: &Layout,
) -> candle_core::Result<()>
where
    S: candle_core::cuda::cudarc::driver::HostSlice<u32> + ?Sized,
{
    use candle_core::cuda::CudaStorageSlice;
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{name}: dst not contiguous")))?;
    let stream = s.device.cuda_stream();
    match &mut s.slice {
        CudaStorageSlice::U32(d) => {
            let mut view = d.slice_mut(a..b);
            stream
                .memcpy_htod(src, &mut view)
                .map_err(|e| candle_core::Error::Msg(format!("{name}: {e:?}")))?;
        }
        _ => candle_core::bail!("{name}: dst is not u32"),
    }
    Ok(())
}

/// [`upload_u32`] from page-locked host memory of `dst`'s length: the copy is enqueued
/// on the stream and returns at once (from pageable memory the driver may first wait
/// for the stream, which would stall a host that runs ahead of the device). The buffer
/// records its copy's end: writing it again (`as_mut_slice`) waits for that.
#[cfg(feature = "cuda")]
pub fn upload_u32_pinned(
    dst: &Tensor,
    src: &candle_core::cuda::cudarc::driver::PinnedHostSlice<u32>,
) -> Result<()> {
    if dst.dtype() != DType::U32 || !dst.is_contiguous() || dst.elem_count() != src.len() {
        input_err!(
            "upload_u32_pinned: dst {:?} {:?} must be contiguous u32 with {} elements",
            dst.shape(),
            dst.dtype(),
            src.len()
        );
    }
    Ok(dst.inplace_op1(&UploadPinned { src })?)
}

#[cfg(feature = "cuda")]
struct UploadPinned<'a> {
    src: &'a candle_core::cuda::cudarc::driver::PinnedHostSlice<u32>,
}

#[cfg(feature = "cuda")]
impl InplaceOp1 for UploadPinned<'_> {
    fn name(&self) -> &'static str {
        "upload_u32_pinned"
    }

    fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout) -> candle_core::Result<()> {
        candle_core::bail!("upload_u32_pinned: the destination is on the CPU")
    }

    fn cuda_fwd(&self, s: &mut candle_core::CudaStorage, l: &Layout) -> candle_core::Result<()> {
        htod("upload_u32_pinned", self.src, s, l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn refills_in_place_and_keeps_the_storage() -> anyhow::Result<()> {
        let buf = Tensor::zeros(6, DType::U32, &Device::Cpu)?;
        let view = buf.narrow(0, 2, 3)?;
        upload_u32(&view, &[7, 8, 9])?;
        assert_eq!(buf.to_vec1::<u32>()?, vec![0, 0, 7, 8, 9, 0]);
        upload_u32(&view, &[1, 2, 3])?;
        assert_eq!(view.to_vec1::<u32>()?, vec![1, 2, 3]);
        assert!(upload_u32(&view, &[1, 2]).is_err());
        assert!(upload_u32(&Tensor::zeros(2, DType::F32, &Device::Cpu)?, &[1, 2]).is_err());
        Ok(())
    }
}
