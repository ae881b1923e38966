//! The paged KV cache's bookkeeping: fixed-size blocks of cache slots, a
//! free list, reference counts, and the prefix cache.
//!
//! A full block whose content is known is registered under a hash of its
//! whole token prefix (the parent block's hash and its own tokens), so a
//! later sequence with the same prefix attaches it instead of recomputing
//! it. Registered blocks nobody holds stay cached until a new allocation
//! needs them, oldest released first. Only full blocks are ever shared, and
//! a sequence writes only past them, so no block is copied on write.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};

pub struct BlockPool {
    block_size: usize,
    refs: Vec<u32>,
    hash_of: Vec<Option<u64>>,
    /// Blocks with no holder and no registered content.
    free: Vec<u32>,
    /// Registered blocks with no holder, oldest release first. Entries whose
    /// stamp no longer matches `stamp` are stale (the block was revived).
    evictable: VecDeque<(u32, u64)>,
    stamp: Vec<u64>,
    n_evictable: usize,
    clock: u64,
    cached: HashMap<u64, u32>,
    /// Keyed per process, so clients cannot craft colliding prefixes.
    hasher: RandomState,
}

impl BlockPool {
    pub fn new(n_blocks: usize, block_size: usize) -> Self {
        assert!(n_blocks > 0 && block_size > 0);
        BlockPool {
            block_size,
            refs: vec![0; n_blocks],
            hash_of: vec![None; n_blocks],
            free: (0..n_blocks as u32).rev().collect(),
            evictable: VecDeque::with_capacity(n_blocks),
            stamp: vec![0; n_blocks],
            n_evictable: 0,
            clock: 0,
            cached: HashMap::with_capacity(n_blocks),
            hasher: RandomState::new(),
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn n_blocks(&self) -> usize {
        self.refs.len()
    }

    /// Blocks an allocation can take now (free, or cached and unheld).
    pub fn available(&self) -> usize {
        self.free.len() + self.n_evictable
    }

    /// Registered blocks that nobody holds.
    pub fn cached_unused(&self) -> usize {
        self.n_evictable
    }

    /// The hash of a full block of `tokens` following a prefix of hash
    /// `parent`; `tag` is whatever else decides what the block holds.
    pub fn hash(&self, parent: u64, tag: u64, tokens: &[u32]) -> u64 {
        self.hasher.hash_one((parent, tag, tokens))
    }

    /// Takes a block: a free one, else the oldest cached one nobody holds.
    pub fn allocate(&mut self) -> Option<u32> {
        if let Some(b) = self.free.pop() {
            self.refs[b as usize] = 1;
            return Some(b);
        }
        while let Some((b, st)) = self.evictable.pop_front() {
            let i = b as usize;
            if self.stamp[i] != st || self.refs[i] != 0 {
                continue;
            }
            if let Some(h) = self.hash_of[i].take() {
                self.cached.remove(&h);
            }
            self.n_evictable -= 1;
            self.refs[i] = 1;
            return Some(b);
        }
        None
    }

    /// Attaches the cached block of prefix hash `hash`, if there is one.
    pub fn lookup(&mut self, hash: u64) -> Option<u32> {
        let b = *self.cached.get(&hash)?;
        let i = b as usize;
        if self.refs[i] == 0 {
            self.n_evictable -= 1;
            self.stamp[i] = u64::MAX;
        }
        self.refs[i] += 1;
        Some(b)
    }

    /// Records that held block `b` now holds the full prefix `hash`. A
    /// prefix already cached elsewhere keeps its block; `b` stays private.
    pub fn register(&mut self, b: u32, hash: u64) {
        let i = b as usize;
        debug_assert!(self.refs[i] > 0);
        if self.hash_of[i].is_none() && !self.cached.contains_key(&hash) {
            self.cached.insert(hash, b);
            self.hash_of[i] = Some(hash);
        }
    }

    /// Drops one holder of `b`.
    pub fn release(&mut self, b: u32) {
        let i = b as usize;
        assert!(self.refs[i] > 0, "block {b} released twice");
        self.refs[i] -= 1;
        if self.refs[i] > 0 {
            return;
        }
        if self.hash_of[i].is_none() {
            self.free.push(b);
            return;
        }
        self.clock += 1;
        self.stamp[i] = self.clock;
        self.evictable.push_back((b, self.clock));
        self.n_evictable += 1;
        // Revived blocks leave stale entries behind; drop them now and then.
        if self.evictable.len() > 2 * self.refs.len() {
            let (stamp, refs) = (&self.stamp, &self.refs);
            self.evictable
                .retain(|&(b, st)| stamp[b as usize] == st && refs[b as usize] == 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_reference_counted_and_cached_until_needed() {
        let mut pool = BlockPool::new(3, 4);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        let h = pool.hash(0, 0, &[1, 2, 3, 4]);
        pool.register(a, h);
        assert_eq!(pool.available(), 1);

        // A second holder of the cached block.
        assert_eq!(pool.lookup(h), Some(a));
        pool.release(a);
        assert_eq!(pool.available(), 1, "still held once");
        pool.release(a);
        assert_eq!((pool.available(), pool.cached_unused()), (2, 1));
        // Unheld but cached: found again, and taken off the evictable list.
        assert_eq!(pool.lookup(h), Some(a));
        assert_eq!((pool.available(), pool.cached_unused()), (1, 0));
        pool.release(a);
        pool.release(b);

        // Free blocks go first; the cached one is evicted last.
        let c = pool.allocate().unwrap();
        let d = pool.allocate().unwrap();
        assert!(c != a && d != a);
        assert_eq!(pool.lookup(h), Some(a));
        pool.release(a);
        assert_eq!(pool.allocate(), Some(a));
        assert_eq!(pool.lookup(h), None, "evicted with its hash");
        assert_eq!(pool.allocate(), None);
    }

    #[test]
    fn a_prefix_is_registered_once() {
        let mut pool = BlockPool::new(2, 2);
        let (a, b) = (pool.allocate().unwrap(), pool.allocate().unwrap());
        let h = pool.hash(0, 0, &[7, 7]);
        pool.register(a, h);
        pool.register(b, h);
        pool.release(b);
        assert_eq!(pool.cached_unused(), 0, "b was private: freed");
        assert_eq!(pool.lookup(h), Some(a));
    }

    #[test]
    fn hashes_cover_the_whole_prefix() {
        let pool = BlockPool::new(1, 2);
        let first = pool.hash(0, 0, &[1, 2]);
        assert_ne!(pool.hash(first, 0, &[3, 4]), pool.hash(0, 0, &[3, 4]));
    }
}
