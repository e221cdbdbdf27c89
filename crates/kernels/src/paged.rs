//! The paged KV cache's rules, written once: where a position's K/V row lives, which
//! rows write the cache, and which keys a query may see. The decoder's metadata builder,
//! the candle attention path, the CPU ports and the references all call these; the CUDA
//! kernels use the same formulas from `kernels/common.cuh` (`paged_slot`, `slot_writes`,
//! `first_visible`).
//!
//! ```text
//!  slot(pos) = block_table[pos / block_size] * block_size + pos % block_size
//!  a row with slot s writes cache row s  iff  s < num_slots   (SKIP_SLOT: padding)
//!
//!  query at position p sees key j  iff  first_visible(p, W) <= j <= p
//!  first_visible(p, W) = 0 without a window, max(0, p + 1 - W) with one
//!                        (Hugging Face: p - j < W, the query's own position included)
//! ```

/// The queries the attention kernels read: `heads` heads of `head_dim` at the start of
/// each row of `rows` (`[T, width]`, contiguous, `width >= heads * head_dim`), e.g. the
/// q part of the fused qkv projection's output, read in place with a row stride.
#[derive(Debug, Clone, Copy)]
pub struct QueryRows<'a> {
    pub rows: &'a candle_core::Tensor,
    pub heads: usize,
    pub head_dim: usize,
}

/// The cache slot of `pos` for a sequence with `block_table` (`pos / block_size` must be
/// inside the table: callers check the table's capacity once, when the step's metadata
/// is built).
#[inline]
pub fn slot(block_table: &[u32], block_size: usize, pos: usize) -> usize {
    block_table[pos / block_size] as usize * block_size + pos % block_size
}

/// The slot that marks a padding row (a CUDA graph bucket's rows past the batch): it
/// writes nowhere.
pub const SKIP_SLOT: u32 = u32::MAX;

/// Whether a row with `slot` writes cache row `slot` of a cache of `num_slots` rows.
/// [`SKIP_SLOT`] never does; any other slot `>= num_slots` is an input error that the
/// wrappers report when the slots are on the host ([`bad_slot`]) and the kernels skip.
#[inline]
pub fn slot_writes(slot: u32, num_slots: usize) -> bool {
    (slot as usize) < num_slots
}

/// The first slot that neither writes nor is [`SKIP_SLOT`], with its index.
pub fn bad_slot(slots: &[u32], num_slots: usize) -> Option<(usize, u32)> {
    slots
        .iter()
        .enumerate()
        .map(|(i, &s)| (i, s))
        .find(|&(_, s)| s != SKIP_SLOT && !slot_writes(s, num_slots))
}

/// The first key position a query at `pos` may see.
#[inline]
pub fn first_visible(pos: usize, sliding_window: Option<usize>) -> usize {
    sliding_window.map_or(0, |w| (pos + 1).saturating_sub(w))
}

/// Whether a query at `pos` sees the key at `key` (causal, optionally windowed).
#[inline]
pub fn visible(pos: usize, key: usize, sliding_window: Option<usize>) -> bool {
    key <= pos && key >= first_visible(pos, sliding_window)
}

/// Block tables padded with block 0 to the longest (padding is never read: every
/// reader stops at its sequence's context). Returns the row-major `[n, max_blocks]`
/// table and `max_blocks` (at least 1).
pub fn pad_tables<B: AsRef<[u32]>>(tables: &[B]) -> (Vec<u32>, usize) {
    let max_blocks = tables
        .iter()
        .map(|t| t.as_ref().len())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut padded = vec![0u32; tables.len() * max_blocks];
    for (dst, t) in padded.chunks_mut(max_blocks).zip(tables) {
        let t = t.as_ref();
        dst[..t.len()].copy_from_slice(t);
    }
    (padded, max_blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_block_table() {
        // block_size 4, table [7, 2, 9]: positions 0..4 -> 28..32, 4..8 -> 8..12, 8 -> 36.
        let t = [7, 2, 9];
        let got: Vec<usize> = (0..10).map(|p| slot(&t, 4, p)).collect();
        assert_eq!(got, vec![28, 29, 30, 31, 8, 9, 10, 11, 36, 37]);
    }

    #[test]
    fn padding_and_out_of_range_slots_write_nowhere() {
        assert!(slot_writes(0, 4) && slot_writes(3, 4));
        assert!(!slot_writes(4, 4) && !slot_writes(SKIP_SLOT, 4));
        assert_eq!(bad_slot(&[0, SKIP_SLOT, 3], 4), None);
        assert_eq!(bad_slot(&[0, SKIP_SLOT, 4, 9], 4), Some((2, 4)));
    }

    #[test]
    fn window_keeps_w_positions_including_the_query() {
        let seen: Vec<usize> = (0..10).filter(|&j| visible(9, j, Some(4))).collect();
        assert_eq!(seen, vec![6, 7, 8, 9]);
        assert_eq!(first_visible(2, Some(4)), 0);
        assert!(!visible(3, 4, None), "causal: no future key");
        assert_eq!((0..10).filter(|&j| visible(9, j, None)).count(), 10);
        assert!(!visible(5, 0, Some(1)) && visible(5, 5, Some(1)));
    }

    #[test]
    fn tables_pad_to_the_longest_with_block_zero() {
        let (t, m) = pad_tables(&[vec![3u32], vec![4, 5, 6], vec![]]);
        assert_eq!(m, 3);
        assert_eq!(t, vec![3, 0, 0, 4, 5, 6, 0, 0, 0]);
        let (t, m) = pad_tables::<Vec<u32>>(&[]);
        assert_eq!((t.len(), m), (0, 1));
    }
}
