//! The pool of KV-cache blocks: which block ids are free.
//!
//! A block is `block_size` token slots of every layer's K and V. The pool hands out
//! ids from a free list in O(1) per block and takes them back; it never sees a tensor.
//! Running out is not an error: [`BlockPool::allocate`] returns `None` and the caller
//! decides (wait, preempt, reject).

/// Errors that reveal a caller bug (freeing what is not allocated).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockPoolError {
    #[error("block {0} is out of range for a pool of {1} blocks")]
    OutOfRange(u32, usize),
    #[error("block {0} freed twice")]
    DoubleFree(u32),
}

/// Free-list allocator of block ids `0..num_blocks`.
#[derive(Debug, Clone)]
pub struct BlockPool {
    free: Vec<u32>,
    in_use: Vec<bool>,
}

impl BlockPool {
    pub fn new(num_blocks: usize) -> Self {
        // Pop from the end: hand out low ids first.
        let free = (0..num_blocks as u32).rev().collect();
        Self {
            free,
            in_use: vec![false; num_blocks],
        }
    }

    pub fn num_blocks(&self) -> usize {
        self.in_use.len()
    }

    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    /// `n` blocks, or `None` (and nothing taken) if fewer are free.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<u32>> {
        if n > self.free.len() {
            return None;
        }
        let blocks = self.free.split_off(self.free.len() - n);
        for &b in &blocks {
            self.in_use[b as usize] = true;
        }
        Some(blocks)
    }

    /// Return blocks to the pool.
    pub fn free(&mut self, blocks: &[u32]) -> Result<(), BlockPoolError> {
        for &b in blocks {
            match self.in_use.get_mut(b as usize) {
                None => return Err(BlockPoolError::OutOfRange(b, self.in_use.len())),
                Some(false) => return Err(BlockPoolError::DoubleFree(b)),
                Some(used) => *used = false,
            }
            self.free.push(b);
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
        let a = pool.allocate(3).unwrap();
        assert_eq!(pool.num_free(), 1);
        assert!(pool.allocate(2).is_none());
        assert_eq!(pool.num_free(), 1, "a failed allocation takes nothing");
        pool.free(&a).unwrap();
        assert_eq!(pool.num_free(), 4);
        let all = pool.allocate(4).unwrap();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 1, 2, 3]);
    }

    #[test]
    fn double_free_and_out_of_range_are_errors() {
        let mut pool = BlockPool::new(2);
        let a = pool.allocate(1).unwrap();
        pool.free(&a).unwrap();
        assert_eq!(pool.free(&a), Err(BlockPoolError::DoubleFree(a[0])));
        assert_eq!(pool.free(&[9]), Err(BlockPoolError::OutOfRange(9, 2)));
    }

    #[test]
    fn blocks_for_rounds_up() {
        assert_eq!(blocks_for(0, 16), 0);
        assert_eq!(blocks_for(16, 16), 1);
        assert_eq!(blocks_for(17, 16), 2);
    }
}
