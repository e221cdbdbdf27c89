//! ggml tensor types: id, name, and the block layout that gives a tensor's byte size.
//!
//! A quantized type stores `block_size` elements in `type_size` bytes; a tensor of `n`
//! elements (with `n` along its innermost dimension a multiple of `block_size`) takes
//! `n / block_size * type_size` bytes. The table follows ggml's `ggml_type` ids; ids
//! ggml has retired (4, 5, 31-33, 36-38) are unknown here and rejected.

/// One ggml tensor type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlType {
    /// ggml's `ggml_type` id, as stored in the file.
    pub id: u32,
    /// ggml's name (`q4_K`, `f16`, ...).
    pub name: &'static str,
    /// Elements per block.
    pub block_size: u64,
    /// Bytes per block.
    pub type_size: u64,
}

const fn t(id: u32, name: &'static str, block_size: u64, type_size: u64) -> GgmlType {
    GgmlType {
        id,
        name,
        block_size,
        type_size,
    }
}

/// Every type this reader knows, by id.
pub const TYPES: &[GgmlType] = &[
    t(0, "f32", 1, 4),
    t(1, "f16", 1, 2),
    t(2, "q4_0", 32, 18),
    t(3, "q4_1", 32, 20),
    t(6, "q5_0", 32, 22),
    t(7, "q5_1", 32, 24),
    t(8, "q8_0", 32, 34),
    t(9, "q8_1", 32, 36),
    t(10, "q2_K", 256, 84),
    t(11, "q3_K", 256, 110),
    t(12, "q4_K", 256, 144),
    t(13, "q5_K", 256, 176),
    t(14, "q6_K", 256, 210),
    t(15, "q8_K", 256, 292),
    t(16, "iq2_xxs", 256, 66),
    t(17, "iq2_xs", 256, 74),
    t(18, "iq3_xxs", 256, 98),
    t(19, "iq1_s", 256, 50),
    t(20, "iq4_nl", 32, 18),
    t(21, "iq3_s", 256, 110),
    t(22, "iq2_s", 256, 82),
    t(23, "iq4_xs", 256, 136),
    t(24, "i8", 1, 1),
    t(25, "i16", 1, 2),
    t(26, "i32", 1, 4),
    t(27, "i64", 1, 8),
    t(28, "f64", 1, 8),
    t(29, "iq1_m", 256, 56),
    t(30, "bf16", 1, 2),
    t(34, "tq1_0", 256, 54),
    t(35, "tq2_0", 256, 66),
    t(39, "mxfp4", 32, 17),
];

impl GgmlType {
    /// The type with this id, if ggml defines it.
    pub fn from_id(id: u32) -> Option<Self> {
        TYPES.iter().copied().find(|t| t.id == id)
    }

    pub const F32: Self = t(0, "f32", 1, 4);
    pub const F16: Self = t(1, "f16", 1, 2);

    /// Bytes of `elements` elements, `None` when `elements` is not a whole number of
    /// blocks or the size overflows.
    pub fn bytes_for(&self, elements: u64) -> Option<u64> {
        if !elements.is_multiple_of(self.block_size) {
            return None;
        }
        (elements / self.block_size).checked_mul(self.type_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_sizes_whole() {
        for (i, a) in TYPES.iter().enumerate() {
            assert!(TYPES[i + 1..].iter().all(|b| b.id != a.id), "{}", a.name);
            assert_eq!(GgmlType::from_id(a.id), Some(*a));
        }
        assert_eq!(GgmlType::from_id(4), None);
        let q4k = GgmlType::from_id(12).unwrap();
        assert_eq!(q4k.bytes_for(512), Some(288));
        assert_eq!(q4k.bytes_for(100), None);
        assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
    }
}
