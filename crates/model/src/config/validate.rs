//! The invariants the decoder relies on, checked once when a config is made.
//!
//! Sizes must be positive and under limits far above any real model (so that products
//! like parameter and KV-cache byte counts cannot overflow), heads must divide, rotary
//! dimensions must be even, floats must be finite and positive, special tokens must lie
//! in the vocabulary, and the weights must hold exactly the configured layers. Each
//! error names the field and its value; the caller's `ModelError::Config` adds the file.

use super::DecoderConfig;
use crate::{ModelError, Result};
use std::collections::BTreeSet;

/// Upper bounds: (field, limit). The largest real values are about 260k (vocabulary),
/// 16k (hidden), 53k (intermediate), 126 (layers), 128 (heads), 256 (head_dim), 10M
/// (context).
const LIMITS: &[(&str, usize)] = &[
    ("vocab_size", 1 << 24),
    ("hidden_size", 1 << 17),
    ("intermediate_size", 1 << 20),
    ("num_hidden_layers", 1 << 12),
    ("num_attention_heads", 1 << 12),
    ("num_key_value_heads", 1 << 12),
    ("head_dim", 1 << 12),
    ("max_position_embeddings", 1 << 27),
];

impl DecoderConfig {
    fn sizes(&self) -> [usize; 8] {
        [
            self.vocab_size,
            self.hidden_size,
            self.intermediate_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.num_key_value_heads,
            self.head_dim,
            self.max_position_embeddings,
        ]
    }

    /// Check the invariants the decoder relies on; `source_name` names the input.
    pub fn validate(&self, source_name: &str) -> Result<()> {
        let err = |reason: String| Err(ModelError::config(source_name, reason));
        for (&(name, limit), value) in LIMITS.iter().zip(self.sizes()) {
            if value == 0 {
                return err(format!("`{name}` = 0 must be positive"));
            }
            if value > limit {
                return err(format!("`{name}` = {value} is over the limit of {limit}"));
            }
        }
        let (heads, kv) = (self.num_attention_heads, self.num_key_value_heads);
        if !heads.is_multiple_of(kv) {
            return err(format!(
                "`num_attention_heads` = {heads} must be a multiple of `num_key_value_heads` = {kv}"
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return err(format!(
                "`head_dim` = {} must be even for rotary embeddings",
                self.head_dim
            ));
        }
        let eps = self.rms_norm_eps;
        if !(eps.is_finite() && eps > 0.0 && eps < 1.0) {
            return err(format!("`rms_norm_eps` = {eps} must be in (0, 1)"));
        }
        let theta = self.rope_theta;
        if !(theta.is_finite() && theta > 0.0) {
            return err(format!(
                "`rope_theta` = {theta} must be finite and positive"
            ));
        }
        if let Some(w) = self.sliding_window.filter(|&w| w == 0) {
            return err(format!("`sliding_window` = {w} must be positive"));
        }
        self.validate_rope_scaling(source_name)?;
        let ids = self.bos_token_id.iter().map(|id| ("bos_token_id", id));
        let ids = ids.chain(self.eos_token_ids.iter().map(|id| ("eos_token_id", id)));
        for (field, &id) in ids {
            if id as usize >= self.vocab_size {
                return err(format!(
                    "`{field}` = {id} is outside the vocabulary (`vocab_size` = {})",
                    self.vocab_size
                ));
            }
        }
        Ok(())
    }

    fn validate_rope_scaling(&self, source_name: &str) -> Result<()> {
        let Some(s) = &self.rope_scaling else {
            return Ok(());
        };
        let positive = |x: f64| x.is_finite() && x > 0.0;
        let reason = if !positive(s.factor) {
            format!(
                "`rope_scaling.factor` = {} must be finite and positive",
                s.factor
            )
        } else if !positive(s.low_freq_factor) || !positive(s.high_freq_factor) {
            format!(
                "`rope_scaling.low_freq_factor` = {} and `high_freq_factor` = {} must be \
                 finite and positive",
                s.low_freq_factor, s.high_freq_factor
            )
        } else if s.high_freq_factor <= s.low_freq_factor {
            format!(
                "`rope_scaling.high_freq_factor` = {} must be greater than `low_freq_factor` = {}",
                s.high_freq_factor, s.low_freq_factor
            )
        } else if s.original_max_position_embeddings == 0 {
            "`rope_scaling.original_max_position_embeddings` = 0 must be positive".to_string()
        } else {
            return Ok(());
        };
        Err(ModelError::config(source_name, reason))
    }

    /// The weights must hold layers `0..num_hidden_layers`, no more and no fewer;
    /// `layers` yields the layer number of every per-layer tensor.
    pub fn check_layers(
        &self,
        layers: impl Iterator<Item = usize>,
        source_name: &str,
    ) -> Result<()> {
        let found: BTreeSet<usize> = layers.collect();
        let n = self.num_hidden_layers;
        let missing = (0..n).find(|i| !found.contains(i));
        let extra = found.range(n..).next();
        let reason = match (missing, extra) {
            (None, None) => return Ok(()),
            (_, Some(&extra)) => {
                format!("`num_hidden_layers` = {n} but the weights have tensors for layer {extra}")
            }
            (Some(missing), None) => format!(
                "`num_hidden_layers` = {n} but the weights have no tensors for layer {missing} \
                 ({} layers found)",
                found.len()
            ),
        };
        Err(ModelError::config(source_name, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Architecture, Llama3RopeScaling};

    fn tiny() -> DecoderConfig {
        DecoderConfig {
            architecture: Architecture::Llama,
            vocab_size: 300,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 8,
            rms_norm_eps: 1e-5,
            rope_theta: 1e4,
            rope_scaling: None,
            max_position_embeddings: 32,
            sliding_window: None,
            qkv_bias: false,
            tie_word_embeddings: true,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
        }
    }

    fn reason(f: impl FnOnce(&mut DecoderConfig)) -> String {
        let mut c = tiny();
        f(&mut c);
        c.validate("m.json").unwrap_err().to_string()
    }

    #[test]
    fn each_rule_names_the_field_and_value() {
        assert!(tiny().validate("m.json").is_ok());
        let cases: Vec<(String, &str)> = vec![
            (
                reason(|c| c.hidden_size = 0),
                "`hidden_size` = 0 must be positive",
            ),
            (
                reason(|c| c.vocab_size = usize::MAX),
                "`vocab_size` = 18446744073709551615 is over",
            ),
            (
                reason(|c| c.num_key_value_heads = 3),
                "`num_key_value_heads` = 3",
            ),
            (reason(|c| c.head_dim = 7), "`head_dim` = 7 must be even"),
            (
                reason(|c| c.rms_norm_eps = f64::NAN),
                "`rms_norm_eps` = NaN",
            ),
            (
                reason(|c| c.rope_theta = f64::INFINITY),
                "`rope_theta` = inf",
            ),
            (reason(|c| c.rope_theta = -1.0), "`rope_theta` = -1"),
            (
                reason(|c| c.sliding_window = Some(0)),
                "`sliding_window` = 0",
            ),
            (
                reason(|c| c.bos_token_id = Some(300)),
                "`bos_token_id` = 300 is outside",
            ),
            (
                reason(|c| c.eos_token_ids = vec![2, 999]),
                "`eos_token_id` = 999",
            ),
            (
                reason(|c| {
                    c.rope_scaling = Some(Llama3RopeScaling {
                        factor: 8.0,
                        low_freq_factor: 4.0,
                        high_freq_factor: 4.0,
                        original_max_position_embeddings: 8192,
                    })
                }),
                "`rope_scaling.high_freq_factor` = 4 must be greater",
            ),
        ];
        for (got, want) in cases {
            assert!(
                got.contains(want) && got.contains("m.json"),
                "{got} lacks {want}"
            );
        }
    }

    #[test]
    fn layers_must_match_the_config() {
        let c = tiny();
        assert!(c.check_layers([0, 1, 1, 0].into_iter(), "w").is_ok());
        let e = c
            .check_layers([0, 1, 2].into_iter(), "w")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tensors for layer 2"), "{e}");
        let e = c
            .check_layers([1].into_iter(), "w")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no tensors for layer 0"), "{e}");
    }
}
