//! A small deterministic pseudo-random number generator for the host side: random
//! prompts and test data from a seed. (Sampling draws do not use it: they come from
//! Philox keyed by the request's seed and output position, on the device; see
//! [`crate::sampler`].)
//!
//! [`SeqRng`] is xoshiro256** (Blackman & Vigna) whose 256-bit state is filled from
//! the 64-bit seed by SplitMix64, as the xoshiro authors recommend. There is no global
//! state: the same seed always yields the same stream. It is fast and of good
//! statistical quality, but it is not cryptographically secure.

/// Deterministic xoshiro256** generator seeded through SplitMix64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqRng {
    s: [u64; 4],
}

/// One SplitMix64 step: advances `state` and returns the next output.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SeqRng {
    /// Creates a generator from `seed`. Equal seeds give equal streams.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        // SplitMix64 is a bijection on successive counters, so the four outputs cannot
        // all be zero (the one forbidden xoshiro state); no fix-up is needed.
        Self { s }
    }

    /// Next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform `f32` in `[0, 1)` with 24 bits of precision (multiples of 2^-24).
    pub fn next_f32(&mut self) -> f32 {
        // The top 24 bits fit the f32 mantissa exactly, so the result is < 1.
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Uniform `f64` in `[0, 1)` with 53 bits of precision (multiples of 2^-53).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // Reference outputs of SplitMix64 seeded with 1234567.
        let mut s = 1234567u64;
        let out: Vec<u64> = (0..3).map(|_| splitmix64(&mut s)).collect();
        assert_eq!(
            out,
            vec![
                6457827717110365317,
                3203168211198807973,
                9817491932198370423
            ]
        );
    }

    #[test]
    fn xoshiro_reference_values() {
        // xoshiro256** with state [1, 2, 3, 4] (reference implementation outputs).
        let mut r = SeqRng { s: [1, 2, 3, 4] };
        let out: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(out, vec![11520, 0, 1509978240, 1215971899390074240]);
    }

    #[test]
    fn same_seed_same_stream() {
        let mut a = SeqRng::new(42);
        let mut b = SeqRng::new(42);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut a = SeqRng::new(7);
        let mut b = a.clone();
        for _ in 0..100 {
            assert_eq!(a.next_f32().to_bits(), b.next_f32().to_bits());
            assert_eq!(a.next_f64().to_bits(), b.next_f64().to_bits());
        }
    }

    #[test]
    fn different_seeds_differ() {
        let mut a = SeqRng::new(0);
        let mut b = SeqRng::new(1);
        let va: Vec<u64> = (0..16).map(|_| a.next_u64()).collect();
        let vb: Vec<u64> = (0..16).map(|_| b.next_u64()).collect();
        assert_ne!(va, vb);
        // Seed 0 must not produce a degenerate all-zero stream.
        assert!(va.iter().any(|&x| x != 0));
    }

    #[test]
    fn floats_in_unit_interval_with_sane_mean() {
        let mut r = SeqRng::new(123);
        let n = 100_000;
        let (mut s32, mut s64) = (0.0f64, 0.0f64);
        for _ in 0..n {
            let x = r.next_f32();
            assert!((0.0..1.0).contains(&x), "f32 out of range: {x}");
            s32 += x as f64;
            let y = r.next_f64();
            assert!((0.0..1.0).contains(&y), "f64 out of range: {y}");
            s64 += y;
        }
        // Mean of U[0,1) is 0.5 with std 1/sqrt(12 n) ~ 0.0009; allow ~5 sigma.
        assert!((s32 / n as f64 - 0.5).abs() < 0.005);
        assert!((s64 / n as f64 - 0.5).abs() < 0.005);
    }

    #[test]
    fn f32_is_24_bit_grid() {
        let mut r = SeqRng::new(99);
        for _ in 0..1000 {
            let x = r.next_f32();
            let scaled = x * (1u32 << 24) as f32;
            assert_eq!(scaled, scaled.trunc());
        }
    }
}
