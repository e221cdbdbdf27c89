//! What a launched step leaves behind until its results are read: the copy of its
//! sampled words to the host (asynchronous, into pinned memory, on CUDA) and the device
//! clock of its forward and sample parts (CUDA events; on the CPU every op has finished
//! when it returns, so host instants).
//!
//! Nothing here waits at launch: [`Readback::start`] and [`Marks::mark`] enqueue work on
//! the device's one stream; [`Readback::finish`] and [`Marks::spans`] wait for it. That
//! is what lets the engine schedule and prepare step n+1 while step n runs.

use crate::error::Result;
use candle_core::{Device, Tensor};
use std::time::Instant;

/// Points in a step's device work, in stream order.
#[derive(Default)]
pub(crate) struct Marks(Vec<Mark>);

enum Mark {
    Host(Instant),
    #[cfg(feature = "cuda")]
    Cuda(candle_core::cuda::cudarc::driver::CudaEvent),
}

impl Marks {
    /// Mark the device's progress now: a timing event recorded on the stream (CUDA), or
    /// the current instant (the CPU, where the work so far has finished).
    pub(crate) fn mark(&mut self, dev: &Device) -> Result<()> {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(d) = dev {
            use candle_core::cuda::cudarc::driver::sys::CUevent_flags;
            let ev = d
                .cuda_stream()
                .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| cuda_err("record event", e))?;
            self.0.push(Mark::Cuda(ev));
            return Ok(());
        }
        let _ = dev;
        self.0.push(Mark::Host(Instant::now()));
        Ok(())
    }

    /// Seconds between consecutive marks; waits for the device to pass the last one.
    pub(crate) fn spans(&self) -> Result<Vec<f64>> {
        self.0
            .windows(2)
            .map(|w| match (&w[0], &w[1]) {
                (Mark::Host(a), Mark::Host(b)) => Ok((*b - *a).as_secs_f64()),
                #[cfg(feature = "cuda")]
                (Mark::Cuda(a), Mark::Cuda(b)) => a
                    .elapsed_ms(b)
                    .map(|ms| f64::from(ms) / 1e3)
                    .map_err(|e| cuda_err("event time", e)),
                #[cfg(feature = "cuda")]
                _ => Err(crate::EngineError::Internal("mixed step marks".into())),
            })
            .collect()
    }
}

/// A step's `[rows, width]` u32 results on their way to the host.
pub(crate) struct Readback {
    words: Words,
}

enum Words {
    /// Already on the host (the CPU).
    Host(Vec<u32>),
    /// Being copied into page-locked memory (the first `.1` words); the buffer's event
    /// marks the copy's end.
    #[cfg(feature = "cuda")]
    Pinned(
        candle_core::cuda::cudarc::driver::PinnedHostSlice<u32>,
        usize,
    ),
}

/// Page-locked host buffers for readbacks, reused: at most two are in use when steps
/// overlap (one being filled by the device, one being read).
#[derive(Default)]
pub(crate) struct HostBuffers {
    #[cfg(feature = "cuda")]
    spare: Vec<candle_core::cuda::cudarc::driver::PinnedHostSlice<u32>>,
}

impl Readback {
    /// Start copying `t` (u32, any shape) to the host; returns at once on CUDA.
    pub(crate) fn start(t: &Tensor, bufs: &mut HostBuffers) -> Result<Self> {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(d) = t.device() {
            let buf = copy_to_pinned(d, &t.contiguous()?, bufs)?;
            let words = Words::Pinned(buf, t.elem_count());
            return Ok(Self { words });
        }
        let _ = bufs;
        let words = Words::Host(t.flatten_all()?.to_vec1::<u32>()?);
        Ok(Self { words })
    }

    /// Wait for the copy; the words, and the buffer back to `bufs`.
    pub(crate) fn finish(self, bufs: &mut HostBuffers) -> Result<Vec<u32>> {
        match self.words {
            Words::Host(v) => {
                let _ = bufs;
                Ok(v)
            }
            #[cfg(feature = "cuda")]
            Words::Pinned(p, len) => {
                let v = p
                    .as_slice()
                    .map_err(|e| cuda_err("readback", e))?
                    .get(..len)
                    .map(<[u32]>::to_vec)
                    .ok_or_else(|| crate::EngineError::Internal("short readback".into()));
                bufs.spare.push(p);
                v
            }
        }
    }
}

#[cfg(feature = "cuda")]
fn copy_to_pinned(
    d: &candle_core::CudaDevice,
    t: &Tensor,
    bufs: &mut HostBuffers,
) -> Result<candle_core::cuda::cudarc::driver::PinnedHostSlice<u32>> {
    let n = t.elem_count();
    let stream = d.cuda_stream();
    let mut buf = match bufs.spare.iter().position(|b| b.len() >= n) {
        Some(i) => bufs.spare.swap_remove(i),
        // SAFETY: the words are written by the copy below before anyone reads them
        // (reads wait for the buffer's event, recorded after the copy).
        None => unsafe {
            stream
                .context()
                .alloc_pinned_with_flags::<u32>(n.max(1024), 0)
        }
        .map_err(|e| cuda_err("pinned alloc", e))?,
    };
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cuda(cs) = &*storage else {
        return Err(crate::EngineError::Internal(
            "readback: not a CUDA tensor".into(),
        ));
    };
    let start = layout.start_offset();
    let src = cs.as_cuda_slice::<u32>()?.slice(start..start + n);
    stream
        .memcpy_dtoh(&src, &mut buf)
        .map_err(|e| cuda_err("readback copy", e))?;
    Ok(buf)
}

#[cfg(feature = "cuda")]
fn cuda_err(what: &str, e: candle_core::cuda::cudarc::driver::DriverError) -> crate::EngineError {
    crate::EngineError::Internal(format!("CUDA {what}: {e:?}"))
}
