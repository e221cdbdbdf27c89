//! The decoder's layers on engine-kernels' fused ops (`--kernels fused`).
//!
//! ```text
//!  x = embed(ids); residual = x; hs = rms_norm(x)                    (layer 0)
//!  per layer:
//!    q, k, v = proj(hs); rope(q), rope(k) in place
//!    reshape_and_cache(k -> k_cache[slot]), (v -> v_cache[slot])
//!    out[T, heads*d] = paged_decode (decode rows) + paged_prefill (prefill rows)
//!    hs, residual = add_rms_norm(o_proj(out), residual)       one pass, two outputs
//!    x = down(silu_mul(gate(hs), up(hs)))
//!    hs, residual = add_rms_norm(x, residual)                  (next layer's input norm)
//! ```
//! Same math as the candle layers in decoder.rs; the differences are where rounding
//! happens (fused ops compute in f32 and round once).

use crate::decoder::Decoder;
use crate::inputs::{ForwardInputs, FusedAttn};
use crate::kv_cache::KvCache;
use crate::Result;
use candle_core::Tensor;
use engine_kernels::{add_rms_norm::add_rms_norm, paged_decode, paged_prefill, silu_mul};

impl Decoder {
    /// The fused layers; returns the final-normed hidden states of the logits rows
    /// ([S, hidden]), or None when there are none.
    pub(crate) fn layers_fused(
        &self,
        inputs: &ForwardInputs,
        attn: &FusedAttn,
        kv: &mut KvCache,
    ) -> Result<Option<Tensor>> {
        let t = inputs.num_tokens()?;
        let (heads, _, d) = self.heads();
        let eps = self.cfg.rms_norm_eps as f32;
        // The running residual stream, and the last MLP output not yet added to it.
        let mut residual = self.embed_tokens.index_select(&inputs.input_ids, 0)?; // [T, hidden]
        let mut pending: Option<Tensor> = None;
        for (l, layer) in self.layers.iter().enumerate() {
            let hs = match pending.take() {
                None => candle_nn::ops::rms_norm(&residual, &layer.input_layernorm, eps)?,
                Some(mlp) => {
                    let (normed, sum) = add_rms_norm(&mlp, &residual, &layer.input_layernorm, eps)?;
                    residual = sum;
                    normed
                }
            };
            // Fresh matmul outputs (contiguous() is then free): safe to rotate in place.
            let [q, k, v] = layer.qkv(&hs, self.heads())?.map(|x| x.contiguous());
            let (q, k, v) = (q?, k?, v?);
            self.rope.apply_inplace(&q, &inputs.positions)?;
            self.rope.apply_inplace(&k, &inputs.positions)?;
            kv.write_slots(l, &k, &v, &attn.slots)?;
            // Every row is written by exactly one of the two attention kernels.
            let out = engine_kernels::uninit(&[t, heads * d], q.dtype(), q.device())?;
            let (k_cache, v_cache) = kv.layer(l);
            if let Some(meta) = &attn.decode {
                paged_decode::paged_decode(&out, &q, k_cache, v_cache, meta)?;
            }
            if let Some(meta) = &attn.prefill {
                paged_prefill::paged_prefill(&out, &q, k_cache, v_cache, meta)?;
            }
            let o = layer.o_proj.forward(&out)?;
            let (normed, sum) = add_rms_norm(&o, &residual, &layer.post_attention_layernorm, eps)?;
            residual = sum;
            let gate = layer.gate_proj.forward(&normed)?;
            let up = layer.up_proj.forward(&normed)?;
            pending = Some(layer.down_proj.forward(&silu_mul::silu_mul(&gate, &up)?)?);
        }
        self.final_norm(inputs, &residual, pending.as_ref(), eps)
    }

    /// `norm(residual + pending)` of the logits rows only.
    fn final_norm(
        &self,
        inputs: &ForwardInputs,
        residual: &Tensor,
        pending: Option<&Tensor>,
        eps: f32,
    ) -> Result<Option<Tensor>> {
        if inputs.logits_indices.dim(0)? == 0 {
            return Ok(None);
        }
        let rows = residual.index_select(&inputs.logits_indices, 0)?; // [S, hidden]
        Ok(Some(match pending {
            None => candle_nn::ops::rms_norm(&rows, &self.norm, eps)?,
            Some(p) => {
                let p = p.index_select(&inputs.logits_indices, 0)?;
                add_rms_norm(&p, &rows, &self.norm, eps)?.0
            }
        }))
    }
}
