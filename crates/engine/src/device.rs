//! Device queries the engine needs: free and total memory (CUDA), and a default device.

use candle_core::Device;

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
