//! Philox4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2,
//! 3", SC 2011): a counter-based generator. Output block = a keyed bijection of a 128-bit
//! counter, so any draw can be computed directly from (key, counter) with no state to carry
//! or advance: the CUDA sampler and its CPU port compute the same bits for the same draw in
//! any order, on any device, in any batch.
//!
//! The sampler keys it with the request's 64-bit seed and counts with
//! `(output position, vocabulary index / 4, 0, 0)` ([`sample_counter`]): one block of four
//! words per four vocabulary entries per generated token. kernels/sample.cu has the same
//! function (`philox4x32_10`); the known-answer tests below are Random123's.

/// Multipliers and Weyl key increments of Philox4x32 (Random123's constants).
const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Four 32-bit words of Philox4x32 with 10 rounds for `counter` under `key`.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let [mut c0, mut c1, mut c2, mut c3] = counter;
    let [mut k0, mut k1] = key;
    for _ in 0..10 {
        let p0 = u64::from(M0) * u64::from(c0);
        let p1 = u64::from(M1) * u64::from(c2);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0);
        k0 = k0.wrapping_add(W0);
        k1 = k1.wrapping_add(W1);
    }
    [c0, c1, c2, c3]
}

/// The Philox key of a request's seed: its low and high 32 bits.
pub fn seed_key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// The counter of the sampler's draws for vocabulary entries `4 * quad .. 4 * quad + 3`
/// at output `position` (entry `i` uses word `i % 4` of block `i / 4`).
pub fn sample_counter(position: u32, quad: u32) -> [u32; 4] {
    [position, quad, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random123_known_answers() {
        // Random123's tests/kat_vectors, philox4x32 with 10 rounds.
        let cases = [
            (
                [0u32; 4],
                [0u32; 2],
                [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8],
            ),
            (
                [u32::MAX; 4],
                [u32::MAX; 2],
                [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd],
            ),
            (
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0],
                [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1],
            ),
        ];
        for (ctr, key, want) in cases {
            assert_eq!(philox4x32_10(ctr, key), want, "ctr {ctr:x?} key {key:x?}");
        }
    }

    #[test]
    fn neighbouring_counters_and_keys_are_uncorrelated() {
        // Each output bit flips about half the time between adjacent counters or seeds.
        let mut flips = [0u32; 2];
        let n = 4096u32;
        for i in 0..n {
            let a = philox4x32_10(sample_counter(i, 7), seed_key(42));
            let b = philox4x32_10(sample_counter(i + 1, 7), seed_key(42));
            let c = philox4x32_10(sample_counter(i, 7), seed_key(43));
            for w in 0..4 {
                flips[0] += (a[w] ^ b[w]).count_ones();
                flips[1] += (a[w] ^ c[w]).count_ones();
            }
        }
        for f in flips {
            let frac = f64::from(f) / f64::from(n * 128);
            assert!((frac - 0.5).abs() < 0.01, "bit flip fraction {frac}");
        }
    }

    #[test]
    fn seed_key_splits_the_seed() {
        assert_eq!(seed_key(0x0123_4567_89ab_cdef), [0x89ab_cdef, 0x0123_4567]);
    }
}
