//! The pool of KV-cache blocks: ref counts, an O(1) free queue, and the prefix cache.
//!
//! ```text
//!  free queue (LRU first)        cached: hash -> block
//!  head ─► [7] ⇄ [2] ⇄ [9] ◄─ tail     h(a) -> 2, h(a,b) -> 9
//!           │
//!  get_new_blocks pops from the head; a cached block popped there is evicted (its hash
//!  forgotten). free_blocks appends blocks whose ref count reached 0 to the tail, still
//!  cached. touch() takes a cached block back out of the queue (from anywhere: O(1) with
//!  the prev/next links) when a new request reuses it.
//! ```
//! A block is `block_size` token slots of every layer's K and V. Running out is not an
//! error: [`BlockPool::get_new_blocks`] returns `None` and the caller decides.

use std::collections::HashMap;

pub type BlockId = u32;
/// Chained hash of a full block's tokens and its parent block's hash.
pub type BlockHash = u64;

const NIL: u32 = u32::MAX;

/// Errors that reveal a caller bug (freeing what is not allocated).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockPoolError {
    #[error("block {0} is out of range for a pool of {1} blocks")]
    OutOfRange(u32, usize),
    #[error("block {0} freed twice")]
    DoubleFree(u32),
}

#[derive(Debug, Clone)]
struct Block {
    ref_cnt: u32,
    hash: Option<BlockHash>,
    prev: u32,
    next: u32,
}

/// Ref-counted blocks `0..num_blocks` with a prefix cache.
#[derive(Debug, Clone)]
pub struct BlockPool {
    blocks: Vec<Block>,
    head: u32,
    tail: u32,
    num_free: usize,
    cached: HashMap<BlockHash, BlockId>,
}

impl BlockPool {
    pub fn new(num_blocks: usize) -> Self {
        let n = num_blocks as u32;
        let blocks = (0..n)
            .map(|i| Block {
                ref_cnt: 0,
                hash: None,
                prev: if i == 0 { NIL } else { i - 1 },
                next: if i + 1 == n { NIL } else { i + 1 },
            })
            .collect();
        Self {
            blocks,
            head: if n == 0 { NIL } else { 0 },
            tail: if n == 0 { NIL } else { n - 1 },
            num_free: num_blocks,
            cached: HashMap::new(),
        }
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks with ref count 0 (free, possibly still holding cached KV).
    pub fn num_free(&self) -> usize {
        self.num_free
    }

    pub fn num_cached(&self) -> usize {
        self.cached.len()
    }

    pub fn ref_count(&self, b: BlockId) -> u32 {
        self.blocks.get(b as usize).map_or(0, |blk| blk.ref_cnt)
    }

    /// `n` fresh blocks (ref count 1), evicting cached ones from the LRU end, or `None`
    /// (taking nothing) if fewer than `n` are free.
    pub fn get_new_blocks(&mut self, n: usize) -> Option<Vec<BlockId>> {
        if n > self.num_free {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let b = self.head;
            self.unlink(b);
            let blk = &mut self.blocks[b as usize];
            if let Some(h) = blk.hash.take() {
                if self.cached.get(&h) == Some(&b) {
                    self.cached.remove(&h);
                }
            }
            self.blocks[b as usize].ref_cnt = 1;
            out.push(b);
        }
        Some(out)
    }

    /// The cached block holding `hash`, if any.
    pub fn get_cached_block(&self, hash: BlockHash) -> Option<BlockId> {
        self.cached.get(&hash).copied()
    }

    /// Take a reference to each (cached) block, pulling free ones out of the queue.
    pub fn touch(&mut self, blocks: &[BlockId]) {
        for &b in blocks {
            if self.blocks[b as usize].ref_cnt == 0 {
                self.unlink(b);
            }
            self.blocks[b as usize].ref_cnt += 1;
        }
    }

    /// Drop one reference to each block, in order; blocks reaching 0 join the queue's
    /// tail (so pass a sequence's blocks last-first: its tail is evicted first).
    pub fn free_blocks(&mut self, blocks: &[BlockId]) -> Result<(), BlockPoolError> {
        let n = self.blocks.len();
        for &b in blocks {
            let blk = self
                .blocks
                .get_mut(b as usize)
                .ok_or(BlockPoolError::OutOfRange(b, n))?;
            if blk.ref_cnt == 0 {
                return Err(BlockPoolError::DoubleFree(b));
            }
            blk.ref_cnt -= 1;
            if blk.ref_cnt == 0 {
                self.push_tail(b);
            }
        }
        Ok(())
    }

    /// Record that full block `b` holds the tokens hashed to `hash`. A hash already
    /// cached in another block keeps that block (the duplicate is simply not cached).
    pub fn cache_block(&mut self, b: BlockId, hash: BlockHash) {
        if self.blocks[b as usize].hash.is_some() || self.cached.contains_key(&hash) {
            return;
        }
        self.blocks[b as usize].hash = Some(hash);
        self.cached.insert(hash, b);
    }

    /// Forget every cached hash (e.g. when prefix caching is reset).
    pub fn reset_prefix_cache(&mut self) {
        self.cached.clear();
        for blk in &mut self.blocks {
            blk.hash = None;
        }
    }

    fn unlink(&mut self, b: BlockId) {
        let (prev, next) = (self.blocks[b as usize].prev, self.blocks[b as usize].next);
        match prev {
            NIL => self.head = next,
            p => self.blocks[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            nx => self.blocks[nx as usize].prev = prev,
        }
        self.blocks[b as usize].prev = NIL;
        self.blocks[b as usize].next = NIL;
        self.num_free -= 1;
    }

    fn push_tail(&mut self, b: BlockId) {
        self.blocks[b as usize].prev = self.tail;
        self.blocks[b as usize].next = NIL;
        match self.tail {
            NIL => self.head = b,
            t => self.blocks[t as usize].next = b,
        }
        self.tail = b;
        self.num_free += 1;
    }

    /// Check the queue links and counts (tests and debug assertions).
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = 0usize;
        let mut cur = self.head;
        let mut prev = NIL;
        while cur != NIL {
            let blk = &self.blocks[cur as usize];
            if blk.ref_cnt != 0 || blk.prev != prev {
                return Err(format!(
                    "block {cur} in the free queue has ref {} / bad link",
                    blk.ref_cnt
                ));
            }
            seen += 1;
            if seen > self.blocks.len() {
                return Err("free queue has a cycle".into());
            }
            prev = cur;
            cur = blk.next;
        }
        let zero = self.blocks.iter().filter(|b| b.ref_cnt == 0).count();
        if seen != self.num_free || zero != self.num_free || prev != self.tail {
            return Err(format!(
                "free queue {seen}, ref-0 blocks {zero}, num_free {}",
                self.num_free
            ));
        }
        for (h, &b) in &self.cached {
            if self.blocks[b as usize].hash != Some(*h) {
                return Err(format!("cached hash of block {b} does not match"));
            }
        }
        Ok(())
    }
}

/// Blocks needed to hold `num_tokens` tokens.
pub fn blocks_for(num_tokens: usize, block_size: usize) -> usize {
    num_tokens.div_ceil(block_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_until_empty_then_none_and_free_restores() {
        let mut pool = BlockPool::new(4);
        let a = pool.get_new_blocks(3).unwrap();
        assert_eq!(pool.num_free(), 1);
        assert!(pool.get_new_blocks(2).is_none());
        assert_eq!(pool.num_free(), 1, "a failed allocation takes nothing");
        pool.free_blocks(&a).unwrap();
        assert_eq!(pool.num_free(), 4);
        pool.check_invariants().unwrap();
    }

    #[test]
    fn double_free_and_out_of_range_are_errors() {
        let mut pool = BlockPool::new(2);
        let a = pool.get_new_blocks(1).unwrap();
        pool.free_blocks(&a).unwrap();
        assert_eq!(pool.free_blocks(&a), Err(BlockPoolError::DoubleFree(a[0])));
        assert_eq!(
            pool.free_blocks(&[9]),
            Err(BlockPoolError::OutOfRange(9, 2))
        );
    }

    #[test]
    fn cached_free_blocks_are_reused_by_touch_and_evicted_lru_first() {
        let mut pool = BlockPool::new(3);
        let a = pool.get_new_blocks(2).unwrap();
        pool.cache_block(a[0], 11);
        pool.cache_block(a[1], 22);
        pool.free_blocks(&[a[1], a[0]]).unwrap(); // tail block first: evicted first
        assert_eq!(pool.get_cached_block(11), Some(a[0]));
        pool.touch(&[a[0]]);
        assert_eq!(pool.ref_count(a[0]), 1);
        assert_eq!(pool.num_free(), 2);
        // Two new blocks: the never-used one, then a[1] (evicting hash 22).
        let b = pool.get_new_blocks(2).unwrap();
        assert!(b.contains(&a[1]));
        assert_eq!(pool.get_cached_block(22), None);
        assert_eq!(pool.get_cached_block(11), Some(a[0]));
        pool.check_invariants().unwrap();
    }

    #[test]
    fn blocks_for_rounds_up() {
        assert_eq!(blocks_for(0, 16), 0);
        assert_eq!(blocks_for(16, 16), 1);
        assert_eq!(blocks_for(17, 16), 2);
    }
}
