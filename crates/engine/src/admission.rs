//! Admission checks on sizes that come from users (a request's `max_tokens`, the cache
//! flags), in checked arithmetic: a request or a cache that cannot fit is rejected with
//! a message naming the numbers, never wrapped around into a pass, never allocated until
//! the process aborts.

use crate::{EngineConfig, EngineError, Result};
use engine_model::Decoder;

/// `prompt_tokens + max_tokens` must fit in the model's context.
pub fn check_context(prompt_tokens: usize, max_tokens: usize, max_model_len: usize) -> Result<()> {
    match prompt_tokens.checked_add(max_tokens) {
        Some(total) if total <= max_model_len => Ok(()),
        _ => Err(EngineError::ContextLength {
            max_model_len,
            prompt_tokens,
            max_tokens,
        }),
    }
}

/// A KV cache of `num_blocks` blocks for `decoder`: `kv_cache_memory_bytes`, when given,
/// holds at least one block, and the cache's size neither overflows nor exceeds the
/// memory the device has available.
pub fn check_kv_cache(cfg: &EngineConfig, decoder: &Decoder, num_blocks: usize) -> Result<()> {
    let err = |m: String| Err(EngineError::Config(m));
    let per_token = decoder.config().kv_bytes_per_token(decoder.dtype());
    let Some(per_block) = per_token.checked_mul(cfg.block_size as u64) else {
        return err(format!("block_size {} is too large", cfg.block_size));
    };
    if let Some(bytes) = cfg.kv_cache_memory_bytes.filter(|&b| b < per_block) {
        return err(format!(
            "kv_cache_memory {bytes} bytes is smaller than one KV-cache block ({} tokens x \
             {per_token} bytes = {per_block} bytes)",
            cfg.block_size
        ));
    }
    let total = per_block.checked_mul(num_blocks as u64);
    let available = match decoder.device() {
        candle_core::Device::Cpu => engine_model::source::available_memory_bytes(),
        device => crate::device::memory_info(device).map(|(free, _)| free),
    };
    match (total, available) {
        (Some(total), Some(avail)) if total > avail => err(format!(
            "a KV cache of {num_blocks} blocks needs {:.1} GB but the device has {:.1} GB \
             available (lower num_blocks or kv_cache_memory)",
            total as f64 / 1e9,
            avail as f64 / 1e9
        )),
        (None, _) => err(format!("a KV cache of {num_blocks} blocks is too large")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_check_does_not_wrap() {
        assert!(check_context(5, 27, 32).is_ok());
        let e = check_context(5, usize::MAX, 32).unwrap_err().to_string();
        assert_eq!(
            e,
            "this model's context is 32 tokens; the prompt has 5 and max_tokens asks for \
             18446744073709551615"
        );
        assert!(check_context(5, 28, 32).is_err());
        assert!(check_context(usize::MAX, 1, usize::MAX).is_err());
    }
}
