//! Per-request block tables over the [`BlockPool`], and prefix-cache lookups.
//!
//! ```text
//!  request r: tokens [t0 .. t37], block_size 16
//!  block_table[r] = [b4, b9, b1]        b4: t0..16   b9: t16..32   b1: t32..37 (partial)
//!  hashes:  h0 = H(0, t0..16), h1 = H(h0, t16..32)       (full blocks only, chained)
//! ```
//! `allocate_slots` makes room for the tokens a step will compute, or returns `None`
//! (taking nothing) when the pool cannot provide the blocks.

use crate::block_pool::{blocks_for, BlockHash, BlockId, BlockPool, BlockPoolError};
use crate::sequence::SeqId;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Chained hash of one full block: its parent's hash and its tokens.
pub fn hash_block(parent: Option<BlockHash>, tokens: &[u32]) -> BlockHash {
    // SipHash with fixed keys: deterministic across runs and processes.
    let mut h = std::hash::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

#[derive(Debug, Default, Clone)]
struct ReqBlocks {
    table: Vec<BlockId>,
    hashes: Vec<BlockHash>,
}

/// Block tables of all live requests.
#[derive(Debug, Clone)]
pub struct KvCacheManager {
    pool: BlockPool,
    block_size: usize,
    enable_caching: bool,
    reqs: HashMap<SeqId, ReqBlocks>,
}

impl KvCacheManager {
    pub fn new(num_blocks: usize, block_size: usize, enable_caching: bool) -> Self {
        Self {
            pool: BlockPool::new(num_blocks),
            block_size,
            enable_caching,
            reqs: HashMap::new(),
        }
    }

    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks_in_use(&self) -> usize {
        self.pool.num_blocks() - self.pool.num_free()
    }

    pub fn block_table(&self, id: SeqId) -> &[BlockId] {
        self.reqs.get(&id).map_or(&[], |r| r.table.as_slice())
    }

    /// Cached blocks holding a prefix of `tokens`, leaving at least one token to compute
    /// (its logits are needed). Returns the blocks and the tokens they cover.
    pub fn get_computed_blocks(&self, tokens: &[u32]) -> (Vec<BlockId>, usize) {
        if !self.enable_caching || tokens.is_empty() {
            return (Vec::new(), 0);
        }
        let max_blocks = (tokens.len() - 1) / self.block_size;
        let mut blocks = Vec::new();
        let mut parent = None;
        for chunk in tokens.chunks(self.block_size).take(max_blocks) {
            let h = hash_block(parent, chunk);
            match self.pool.get_cached_block(h) {
                Some(b) => blocks.push(b),
                None => break,
            }
            parent = Some(h);
        }
        let n = blocks.len() * self.block_size;
        (blocks, n)
    }

    /// Make `id`'s table hold `total_tokens` tokens, first appending `computed` (prefix
    /// hits from [`get_computed_blocks`](Self::get_computed_blocks)). `None`: not enough
    /// free blocks; nothing changed.
    pub fn allocate_slots(
        &mut self,
        id: SeqId,
        total_tokens: usize,
        computed: &[BlockId],
    ) -> Option<()> {
        let have = self.reqs.get(&id).map_or(0, |r| r.table.len()) + computed.len();
        let need = blocks_for(total_tokens, self.block_size).saturating_sub(have);
        // Prefix hits that are free now leave the free queue when touched.
        let free_hits = computed
            .iter()
            .filter(|&&b| self.pool.ref_count(b) == 0)
            .count();
        if need + free_hits > self.pool.num_free() {
            return None;
        }
        self.pool.touch(computed);
        let fresh = self.pool.get_new_blocks(need)?;
        let req = self.reqs.entry(id).or_default();
        req.table.extend_from_slice(computed);
        req.table.extend(fresh);
        Some(())
    }

    /// Register the full blocks among the first `num_computed` of `tokens` in the prefix
    /// cache (their K/V are now written).
    pub fn cache_full_blocks(&mut self, id: SeqId, tokens: &[u32], num_computed: usize) {
        if !self.enable_caching {
            return;
        }
        let Some(req) = self.reqs.get_mut(&id) else {
            return;
        };
        let full = (num_computed / self.block_size).min(req.table.len());
        while req.hashes.len() < full {
            let i = req.hashes.len();
            let chunk = &tokens[i * self.block_size..(i + 1) * self.block_size];
            let h = hash_block(req.hashes.last().copied(), chunk);
            self.pool.cache_block(req.table[i], h);
            req.hashes.push(h);
        }
    }

    /// Release all of `id`'s blocks (tail first, so the tail is evicted first).
    pub fn free(&mut self, id: SeqId) -> Result<(), BlockPoolError> {
        match self.reqs.remove(&id) {
            Some(req) => {
                let rev: Vec<BlockId> = req.table.iter().rev().copied().collect();
                self.pool.free_blocks(&rev)
            }
            None => Ok(()),
        }
    }

    /// Check pool invariants and that ref counts equal table references.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.pool.check_invariants()?;
        let mut refs = vec![0u32; self.pool.num_blocks()];
        for r in self.reqs.values() {
            for &b in &r.table {
                refs[b as usize] += 1;
            }
        }
        for (b, &n) in refs.iter().enumerate() {
            if self.pool.ref_count(b as BlockId) != n {
                return Err(format!(
                    "block {b}: ref count {} but {n} table references",
                    self.pool.ref_count(b as BlockId)
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_hit_reuses_blocks_and_leaves_one_token_to_compute() {
        let mut m = KvCacheManager::new(8, 4, true);
        let prompt: Vec<u32> = (0..12).collect();
        m.allocate_slots(1, 12, &[]).unwrap();
        m.cache_full_blocks(1, &prompt, 12);
        // Same 12 tokens: only 2 blocks may be reused (the last token must be computed).
        let (hit, n) = m.get_computed_blocks(&prompt);
        assert_eq!((hit.len(), n), (2, 8));
        assert_eq!(hit, m.block_table(1)[..2].to_vec());
        m.allocate_slots(2, 12, &hit).unwrap();
        assert_eq!(m.pool().ref_count(hit[0]), 2);
        m.free(1).unwrap();
        m.free(2).unwrap();
        m.check_invariants().unwrap();
        assert_eq!(m.pool().num_free(), 8);
    }

    #[test]
    fn allocation_that_does_not_fit_takes_nothing() {
        let mut m = KvCacheManager::new(3, 4, false);
        m.allocate_slots(1, 8, &[]).unwrap();
        assert!(m.allocate_slots(2, 8, &[]).is_none());
        assert_eq!(m.block_table(2).len(), 0);
        assert_eq!(m.pool().num_free(), 1);
        m.check_invariants().unwrap();
    }
}
