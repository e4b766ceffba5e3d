//! A reference-counted allocator of fixed-size KV blocks.

use crate::error::{Error, Result};

/// Hands out block ids from a fixed pool; shared blocks (after a fork) are reference-counted.
#[derive(Clone, Debug)]
pub struct BlockAllocator {
    free: Vec<u32>,
    refcount: Vec<u32>,
}

impl BlockAllocator {
    /// An allocator over blocks `0..num_blocks`, all free.
    pub fn new(num_blocks: usize) -> Self {
        Self { free: (0..num_blocks as u32).rev().collect(), refcount: vec![0; num_blocks] }
    }

    /// Blocks in the pool.
    pub fn total(&self) -> usize {
        self.refcount.len()
    }

    /// Blocks not in use.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Take `n` free blocks, or fail with [`Error::KvCacheExhausted`] taking none.
    pub fn allocate(&mut self, n: usize) -> Result<Vec<u32>> {
        if n > self.free.len() {
            return Err(Error::KvCacheExhausted { needed: n, free: self.free.len(), total: self.total() });
        }
        let blocks = self.free.split_off(self.free.len() - n);
        for &b in &blocks {
            self.refcount[b as usize] = 1;
        }
        Ok(blocks)
    }

    /// Add a reference to an allocated block (a forked sequence shares it).
    pub fn share(&mut self, block: u32) {
        self.refcount[block as usize] += 1;
    }

    /// Number of sequences holding `block`.
    pub fn refs(&self, block: u32) -> u32 {
        self.refcount[block as usize]
    }

    /// Drop one reference; the block returns to the free list when none is left.
    pub fn release(&mut self, block: u32) {
        let count = &mut self.refcount[block as usize];
        debug_assert!(*count > 0, "double release of KV block {block}");
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.free.push(block);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_is_an_error_and_takes_nothing() {
        let mut a = BlockAllocator::new(3);
        let got = a.allocate(2).unwrap();
        assert_eq!(got.len(), 2);
        let err = a.allocate(2).unwrap_err();
        assert!(matches!(err, Error::KvCacheExhausted { needed: 2, free: 1, total: 3 }));
        assert_eq!(a.free_count(), 1);
    }

    #[test]
    fn shared_blocks_free_after_last_release() {
        let mut a = BlockAllocator::new(1);
        let b = a.allocate(1).unwrap()[0];
        a.share(b);
        a.release(b);
        assert_eq!(a.free_count(), 0);
        a.release(b);
        assert_eq!(a.free_count(), 1);
    }
}
