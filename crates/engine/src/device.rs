//! Device queries the engine needs: free and total memory (CUDA), and the CUDA device
//! the engine runs on, opened with the settings its hot path wants.

use candle_core::Device;

/// Open CUDA device `ordinal` for the engine: its own stream (not the per-thread default
/// stream, which graph capture cannot record), cudarc's per-allocation event tracking
/// off (the engine issues everything on that one stream, so the events only cost host
/// time, and a capture cannot wait on events recorded outside it), and the device's
/// memory pool keeping what is freed (release threshold at its maximum) so that a
/// step's allocations are served from the pool instead of the driver.
pub fn open_cuda(ordinal: usize) -> candle_core::Result<Device> {
    let device = Device::new_cuda_with_stream(ordinal)?;
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = &device {
        // SAFETY: no tensor exists on this device yet, and the engine uses its one
        // stream only (candle's ops and engine-kernels' launches both go to
        // `cuda_stream()`), so nothing needs events to order uses across streams.
        unsafe { d.disable_event_tracking() };
        keep_freed_memory(d)?;
    }
    Ok(device)
}

/// Set the device's default memory pool's release threshold to its maximum.
#[cfg(feature = "cuda")]
fn keep_freed_memory(d: &candle_core::CudaDevice) -> candle_core::Result<()> {
    use candle_core::cuda::cudarc::driver::{result, sys};
    let err = |e: result::DriverError| candle_core::Error::Msg(format!("memory pool: {e:?}"));
    let stream = d.cuda_stream();
    let ctx = stream.context();
    ctx.bind_to_thread().map_err(err)?;
    let mut threshold: u64 = u64::MAX;
    // SAFETY: cu_device() is the context's device; the attribute takes a u64.
    unsafe {
        let pool = result::device::get_default_mem_pool(ctx.cu_device()).map_err(err)?;
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .map_err(err)?;
    }
    Ok(())
}

/// `(free, total)` bytes of device memory; `None` on CPU.
pub fn memory_info(device: &Device) -> Option<(u64, u64)> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => d
            .cuda_stream()
            .context()
            .mem_get_info()
            .ok()
            .map(|(free, total)| (free as u64, total as u64)),
        _ => None,
    }
}

/// Memory kept free for activations on CUDA when sizing the KV cache from free memory:
/// a step's hidden states and MLP intermediates for `max_num_batched_tokens` tokens, the
/// logits of `max_num_seqs` rows, plus 1 GiB for the allocator and cuBLAS workspaces.
pub fn activation_reserve_bytes(
    cfg: &engine_model::DecoderConfig,
    dtype_bytes: u64,
    max_num_batched_tokens: usize,
    max_num_seqs: usize,
) -> u64 {
    let t = max_num_batched_tokens as u64;
    let per_token = (6 * cfg.hidden_size + 3 * cfg.intermediate_size) as u64 * dtype_bytes;
    let logits = max_num_seqs as u64 * cfg.vocab_size as u64 * 4 * 2;
    t * per_token + logits + (1 << 30)
}
