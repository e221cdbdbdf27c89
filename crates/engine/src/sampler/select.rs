//! Selection without a full sort: the `n` most likely tokens (one top-k selection for
//! both top-k filtering and top logprobs) and the top-p nucleus, built lazily.

use super::fastmath::clean;
use std::cmp::Ordering;

/// A candidate token: `(id, value)`, where `value` is a cleaned logit or a weight.
pub(super) type Cand = (u32, f32);

/// Ordering "more likely first": value descending, then token id ascending.
/// Values are NaN-free here; `-0.0` and `+0.0` compare equal, consistent with the `>`
/// used by the argmax rule (engine_kernels::argmax::argmax_row).
#[inline]
pub(super) fn more_likely_first(a: &Cand, b: &Cand) -> Ordering {
    b.1.partial_cmp(&a.1)
        .unwrap_or(Ordering::Equal)
        .then(a.0.cmp(&b.0))
}

/// Above this many requested logprobs, [`top_n`] switches from a streaming insertion
/// buffer (O(V) typical, O(V n) worst case) to `select_nth_unstable` (O(V) always).
pub(super) const STREAMING_TOP_N_MAX: usize = 32;

/// The `n` most likely tokens (cleaned logits), sorted more-likely-first.
pub(super) fn top_n(logits: &[f32], n: usize) -> Vec<Cand> {
    if n == 0 {
        return Vec::new();
    }
    if n <= STREAMING_TOP_N_MAX {
        let mut best: Vec<Cand> = Vec::with_capacity(n + 1);
        for (i, &x) in logits.iter().enumerate() {
            let c = (i as u32, clean(x));
            if best.len() == n
                && best
                    .last()
                    .is_some_and(|w| more_likely_first(&c, w).is_ge())
            {
                continue;
            }
            let pos = best.partition_point(|b| more_likely_first(b, &c).is_lt());
            best.insert(pos, c);
            best.truncate(n);
        }
        return best;
    }
    let mut all: Vec<Cand> = logits
        .iter()
        .enumerate()
        .map(|(i, &x)| (i as u32, clean(x)))
        .collect();
    if n < all.len() {
        all.select_nth_unstable_by(n - 1, more_likely_first);
        all.truncate(n);
    }
    all.sort_unstable_by(more_likely_first);
    all
}

/// Length of the top-p nucleus of `items` (weights): the smallest more-likely-first
/// prefix whose mass reaches `top_p` of the total, at least 1. On return
/// `items[..len]` holds that prefix in order. If `sorted` is false the order is built
/// lazily: select and sort the best 256, then 1024, ... until the prefix mass reaches
/// the cutoff, so a small nucleus costs O(V) rather than a full O(V log V) sort.
pub(super) fn nucleus_len(items: &mut [Cand], top_p: f32, sorted: bool) -> usize {
    let len = items.len();
    let total: f64 = items.iter().map(|&(_, w)| f64::from(w)).sum();
    let cutoff = f64::from(top_p) * total;
    let mut m = if sorted { len } else { len.min(256) };
    loop {
        if !sorted {
            if m < len {
                items.select_nth_unstable_by(m - 1, more_likely_first);
            }
            items[..m].sort_unstable_by(more_likely_first);
        }
        let mut cum = 0.0f64;
        for (n, &(_, w)) in items[..m].iter().enumerate() {
            cum += f64::from(w);
            if cum >= cutoff {
                return n + 1;
            }
        }
        if m >= len {
            // Only through rounding in the running sum: keep everything.
            return len.max(1);
        }
        m = len.min(m.saturating_mul(4));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeqRng;

    /// Pseudo-random logits in [-scale, scale) from a seed.
    fn random_logits(seed: u64, v: usize, scale: f32) -> Vec<f32> {
        let mut r = SeqRng::new(seed);
        (0..v).map(|_| (r.next_f32() * 2.0 - 1.0) * scale).collect()
    }

    #[test]
    fn lazy_nucleus_matches_full_sort() {
        // Flat logits give nuclei much larger than the first 256-token round.
        for (seed, top_p) in [(1u64, 0.9f32), (2, 0.3), (3, 0.999), (4, 0.01)] {
            let logits = random_logits(seed, 5000, 1.0);
            let items: Vec<Cand> = logits
                .iter()
                .enumerate()
                .map(|(i, &x)| (i as u32, x.exp()))
                .collect();
            let mut full = items.clone();
            full.sort_by(more_likely_first);
            let want = nucleus_len(&mut full, top_p, true);
            let mut lazy = items.clone();
            let got = nucleus_len(&mut lazy, top_p, false);
            assert_eq!(got, want, "top_p={top_p}");
            assert_eq!(&lazy[..got], &full[..want]);
        }
    }
}
