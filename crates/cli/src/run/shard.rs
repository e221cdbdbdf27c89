//! Stable hashing of request ids, and `--shard i/n` selection.
//!
//! An id's key is its canonical JSON text (`"a"` for the string a, `7` for the number 7),
//! so the string `"7"` and the number `7` are different ids. Sharding hashes that key
//! with 64-bit FNV-1a, a fixed function with no per-process seed, so every process, on
//! every machine and every run, puts an id in the same shard. Lines without a readable
//! id are sharded by their line number, so each bad line is reported by exactly one shard.

use anyhow::{bail, Context};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`, continuing from `state`.
fn fnv1a_from(state: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(state, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// 64-bit FNV-1a.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_from(FNV_OFFSET, bytes)
}

/// A 128-bit fingerprint of an id key: two independent FNV-1a streams. Kept instead of
/// the key itself in the seen/done sets (16 bytes per id whatever its length); a
/// collision among a billion ids has odds of about 1e-21.
pub fn fingerprint(key: &str) -> u128 {
    let lo = fnv1a(key.as_bytes());
    let hi = fnv1a_from(fnv1a(b"engine-run"), key.as_bytes());
    (u128::from(hi) << 64) | u128::from(lo)
}

/// This process's part of the job: ids whose hash mod `count` is `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// The whole job.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parse `i/n` with `0 <= i < n`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let (i, n) = s
            .split_once('/')
            .with_context(|| format!("--shard {s}: expected i/n, e.g. 0/4"))?;
        let index: u64 = i
            .trim()
            .parse()
            .with_context(|| format!("--shard {s}: bad index {i:?}"))?;
        let count: u64 = n
            .trim()
            .parse()
            .with_context(|| format!("--shard {s}: bad count {n:?}"))?;
        if count == 0 || index >= count {
            bail!("--shard {s}: need 0 <= i < n");
        }
        Ok(Self { index, count })
    }

    /// Does the id with this canonical key belong to this shard?
    pub fn owns_key(&self, key: &str) -> bool {
        fnv1a(key.as_bytes()) % self.count == self.index
    }

    /// Does a line without a readable id belong to this shard?
    pub fn owns_line(&self, line_no: u64) -> bool {
        self.owns_key(&format!("line:{line_no}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn shards_partition_ids() {
        let shards: Vec<Shard> = (0..3).map(|i| Shard { index: i, count: 3 }).collect();
        let mut sizes = [0usize; 3];
        for id in 0..3000 {
            let key = format!("\"req-{id}\"");
            let owners: Vec<usize> = (0..3).filter(|&i| shards[i].owns_key(&key)).collect();
            assert_eq!(owners.len(), 1, "{key}");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&n| n > 800), "unbalanced: {sizes:?}");
    }

    #[test]
    fn parse_rejects_bad_specs() {
        assert_eq!(Shard::parse("1/3").unwrap(), Shard { index: 1, count: 3 });
        for bad in ["3/3", "0/0", "1", "a/2", "-1/2"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprints_differ_for_string_and_number_ids() {
        assert_ne!(fingerprint("\"7\""), fingerprint("7"));
        assert_eq!(fingerprint("7"), fingerprint("7"));
    }
}
