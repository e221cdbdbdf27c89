//! The weight types of GGML/GGUF: their ids in a GGUF file, block sizes and bytes per
//! block, and their names on the command line (`q4_k`, `q8_0`, ...).
//!
//! A row of `k` values of a block type is `k / block_elems` blocks stored back to back;
//! `k` must be a multiple of the block size (256 for the K-quants, 32 for the others).

use crate::error::{QuantError, Result};

/// A weight type of a GGUF tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
}

/// Elements in a K-quant super-block.
pub const QK_K: usize = 256;
/// Elements in a block of the legacy types (Q4_0 ... Q8_0).
pub const QK: usize = 32;

impl GgmlType {
    /// Every type, in GGUF id order.
    pub const ALL: [GgmlType; 13] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::BF16,
    ];

    /// The block types (everything but the float rows).
    pub const QUANTIZED: [GgmlType; 10] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ];

    /// The type of a GGUF tensor's `ggml_type` id.
    pub fn from_gguf_id(id: u32) -> Result<GgmlType> {
        Ok(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            10 => GgmlType::Q2K,
            11 => GgmlType::Q3K,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            30 => GgmlType::BF16,
            other => {
                return Err(QuantError::Input(format!(
                    "GGML type id {other} is not supported (supported: {})",
                    names()
                )))
            }
        })
    }

    /// The `ggml_type` id GGUF files use.
    pub fn gguf_id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q2K => 10,
            GgmlType::Q3K => 11,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::BF16 => 30,
        }
    }

    /// Elements per block (1 for the float rows).
    pub fn block_elems(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => {
                QK
            }
            _ => QK_K,
        }
    }

    /// Bytes per block, as stored in a GGUF file.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => 34,
            GgmlType::Q2K => 84,
            GgmlType::Q3K => 110,
            GgmlType::Q4K => 144,
            GgmlType::Q5K => 176,
            GgmlType::Q6K => 210,
        }
    }

    /// Bytes of `n` elements (`n` a multiple of the block size).
    pub fn bytes_for(self, n: usize) -> usize {
        n / self.block_elems() * self.block_bytes()
    }

    /// Bits per weight in the GGUF layout (4.5 for Q4_0, 8.5 for Q8_0, ...).
    pub fn bits_per_weight(self) -> f64 {
        (self.block_bytes() * 8) as f64 / self.block_elems() as f64
    }

    pub fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// The name used on the command line and in reports: `f32`, `q4_0`, `q4_k`, ...
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::BF16 => "bf16",
            GgmlType::Q4_0 => "q4_0",
            GgmlType::Q4_1 => "q4_1",
            GgmlType::Q5_0 => "q5_0",
            GgmlType::Q5_1 => "q5_1",
            GgmlType::Q8_0 => "q8_0",
            GgmlType::Q2K => "q2_k",
            GgmlType::Q3K => "q3_k",
            GgmlType::Q4K => "q4_k",
            GgmlType::Q5K => "q5_k",
            GgmlType::Q6K => "q6_k",
        }
    }

    /// The type to store rows of `k` values in when `--quant` asks for this one: itself
    /// if `k` fits its blocks, else (a K-quant on rows that are not a multiple of 256,
    /// like SmolLM2's 576) the 32-block type llama.cpp's quantizer falls back to, of at
    /// least as many bits: q2_k, q3_k -> q4_0 (llama.cpp: iq4_nl), q4_k -> q5_0, q5_k ->
    /// q5_1, q6_k -> q8_0. None if not even that fits.
    pub fn for_row_len(self, k: usize) -> Option<GgmlType> {
        let t = match self {
            _ if self.check_row_len(k).is_ok() => return Some(self),
            GgmlType::Q2K | GgmlType::Q3K => GgmlType::Q4_0,
            GgmlType::Q4K => GgmlType::Q5_0,
            GgmlType::Q5K => GgmlType::Q5_1,
            GgmlType::Q6K => GgmlType::Q8_0,
            _ => return None,
        };
        t.check_row_len(k).ok().map(|_| t)
    }

    /// Check that a row of `k` values can be stored in this type.
    pub fn check_row_len(self, k: usize) -> Result<()> {
        match k > 0 && k.is_multiple_of(self.block_elems()) {
            true => Ok(()),
            false => Err(QuantError::Input(format!(
                "{}: a row of {k} values is not a positive multiple of the block size {}",
                self.name(),
                self.block_elems()
            ))),
        }
    }
}

fn names() -> String {
    GgmlType::ALL
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for GgmlType {
    type Err = QuantError;
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.to_ascii_lowercase();
        GgmlType::ALL
            .into_iter()
            .find(|t| t.name() == lower || t.name().replace('_', "") == lower)
            .ok_or_else(|| {
                QuantError::Input(format!(
                    "unknown weight type {s:?}: expected one of {}",
                    names()
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_names_and_sizes_round_trip() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_gguf_id(t.gguf_id()).unwrap(), t);
            assert_eq!(t.name().parse::<GgmlType>().unwrap(), t);
            assert_eq!(t.name().to_uppercase().parse::<GgmlType>().unwrap(), t);
        }
        assert_eq!("q4k".parse::<GgmlType>().unwrap(), GgmlType::Q4K);
        assert!(
            GgmlType::from_gguf_id(9).is_err(),
            "Q8_1 is not a weight type here"
        );
        let err = "q4_9".parse::<GgmlType>().unwrap_err().to_string();
        assert!(err.contains("q4_9") && err.contains("q6_k"), "{err}");
        assert_eq!(GgmlType::Q4_1.bits_per_weight(), 5.0);
        assert_eq!(GgmlType::Q4K.bits_per_weight(), 4.5);
        assert_eq!(GgmlType::Q6K.bits_per_weight(), 6.5625);
        assert!(GgmlType::Q4K.check_row_len(576).is_err());
        assert!(GgmlType::Q4_0.check_row_len(576).is_ok());
        assert_eq!(GgmlType::Q4K.for_row_len(576), Some(GgmlType::Q5_0));
        assert_eq!(GgmlType::Q4K.for_row_len(4096), Some(GgmlType::Q4K));
        assert_eq!(GgmlType::Q6K.for_row_len(1536), Some(GgmlType::Q6K));
        assert_eq!(GgmlType::Q6K.for_row_len(576), Some(GgmlType::Q8_0));
        assert_eq!(GgmlType::Q8_0.for_row_len(48), None);
    }
}
