//! The block pool: reference counts, the free queue and the prefix-cache index.
//!
//! A block is either held (reference count > 0, in at least one block table) or free (count 0,
//! in the free queue). A free block may still be cached: its contents stay findable by hash
//! until the free queue hands it out again, which evicts it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::BlockId;
use crate::free_queue::FreeQueue;

/// Hash of a full block and, through its parent, of every token before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct BlockHash(u64);

impl BlockHash {
    /// Chains the hash of the previous block (`None` for the first), the namespace `salt` and
    /// this block's tokens. `DefaultHasher::new()` has fixed keys, so the result is the same in
    /// every process built by the same compiler.
    pub(crate) fn of(parent: Option<BlockHash>, salt: u64, tokens: &[u32]) -> Self {
        let mut h = DefaultHasher::new();
        parent.hash(&mut h);
        salt.hash(&mut h);
        tokens.hash(&mut h);
        Self(h.finish())
    }
}

/// What a cached block holds: the full key its hash was made from, compared on lookup so that a
/// hash collision is a miss rather than wrong contents, and the group of layers whose keys and
/// values it holds (the same tokens in another group are another block).
#[derive(Debug)]
struct Cached {
    hash: BlockHash,
    group: usize,
    parent: Option<BlockHash>,
    salt: u64,
    tokens: Box<[u32]>,
}

impl Cached {
    fn holds(&self, parent: Option<BlockHash>, salt: u64, tokens: &[u32]) -> bool {
        self.parent == parent && self.salt == salt && *self.tokens == *tokens
    }
}

#[derive(Debug, Default)]
struct Block {
    refs: u32,
    cached: Option<Cached>,
}

#[derive(Debug)]
pub(crate) struct BlockPool {
    blocks: Vec<Block>,
    free: FreeQueue,
    index: HashMap<(BlockHash, usize), BlockId>,
}

impl BlockPool {
    /// A pool of `num_blocks` free, uncached blocks.
    pub(crate) fn new(num_blocks: BlockId) -> Self {
        Self {
            blocks: (0..num_blocks).map(|_| Block::default()).collect(),
            free: FreeQueue::full(num_blocks),
            index: HashMap::new(),
        }
    }

    pub(crate) fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks no sequence holds, cached or not.
    pub(crate) fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Blocks whose contents can be found by hash, held or free.
    pub(crate) fn num_cached(&self) -> usize {
        self.index.len()
    }

    pub(crate) fn ref_count(&self, block: BlockId) -> Option<u32> {
        self.blocks.get(block as usize).map(|b| b.refs)
    }

    /// Free blocks in the order they are reused.
    pub(crate) fn free_blocks(&self) -> impl Iterator<Item = BlockId> + '_ {
        self.free.iter()
    }

    /// The cached block of `group` holding `tokens` after the block hashed `parent`.
    pub(crate) fn find(
        &self,
        hash: BlockHash,
        group: usize,
        parent: Option<BlockHash>,
        salt: u64,
        tokens: &[u32],
    ) -> Option<BlockId> {
        let &id = self.index.get(&(hash, group))?;
        let cached = self.blocks[id as usize].cached.as_ref()?;
        cached.holds(parent, salt, tokens).then_some(id)
    }

    /// Adds a holder to `block`, taking it out of the free queue if it was free.
    pub(crate) fn acquire(&mut self, block: BlockId) {
        let b = &mut self.blocks[block as usize];
        if b.refs == 0 {
            self.free.remove(block);
        }
        b.refs += 1;
    }

    /// Takes `n` blocks from the head of the free queue, each with one holder, evicting any
    /// cached contents. None, and nothing taken, when fewer than `n` are free.
    pub(crate) fn take_free(&mut self, n: usize) -> Option<Vec<BlockId>> {
        if n > self.free.len() {
            return None;
        }
        let taken: Vec<BlockId> = std::iter::from_fn(|| self.free.pop_front())
            .take(n)
            .collect();
        for &id in &taken {
            let b = &mut self.blocks[id as usize];
            b.refs = 1;
            if let Some(cached) = b.cached.take() {
                self.index.remove(&(cached.hash, cached.group));
            }
        }
        Some(taken)
    }

    /// Drops a holder of `block`. At zero holders the block becomes free: a cached one joins
    /// the tail of the free queue (evicted last), an uncached one the head (nothing is lost
    /// by reusing it first).
    pub(crate) fn release(&mut self, block: BlockId) {
        let b = &mut self.blocks[block as usize];
        debug_assert!(
            b.refs > 0,
            "block {block} released more often than acquired"
        );
        b.refs = b.refs.saturating_sub(1);
        if b.refs == 0 {
            if b.cached.is_some() {
                self.free.push_back(block);
            } else {
                self.free.push_front(block);
            }
        }
    }

    /// Makes held `block` of `group`, now full and computed with `tokens` after the block
    /// hashed `parent` (its own hash is `hash`), findable by later lookups. When another block
    /// of the group already holds the same hash, that one stays the cached copy and `block`
    /// stays private.
    pub(crate) fn register(
        &mut self,
        block: BlockId,
        hash: BlockHash,
        group: usize,
        parent: Option<BlockHash>,
        salt: u64,
        tokens: &[u32],
    ) {
        let b = &mut self.blocks[block as usize];
        if let Some(cached) = &b.cached {
            debug_assert!(
                cached.holds(parent, salt, tokens) && cached.group == group,
                "block {block} re-registered"
            );
            return;
        }
        if let Entry::Vacant(e) = self.index.entry((hash, group)) {
            e.insert(block);
            b.cached = Some(Cached {
                hash,
                group,
                parent,
                salt,
                tokens: tokens.into(),
            });
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]
mod tests {
    use super::*;

    #[test]
    fn chained_hash_depends_on_parent_salt_and_tokens() {
        let a = BlockHash::of(None, 0, &[1, 2]);
        assert_eq!(a, BlockHash::of(None, 0, &[1, 2]));
        assert_ne!(a, BlockHash::of(None, 1, &[1, 2]));
        assert_ne!(a, BlockHash::of(None, 0, &[2, 1]));
        let b = BlockHash::of(Some(a), 0, &[3, 4]);
        assert_ne!(b, BlockHash::of(None, 0, &[3, 4]));
        assert_ne!(
            b,
            BlockHash::of(Some(BlockHash::of(None, 0, &[9, 9])), 0, &[3, 4])
        );
    }

    fn register(pool: &mut BlockPool, block: BlockId, group: usize, tokens: &[u32]) {
        pool.register(
            block,
            BlockHash::of(None, 0, tokens),
            group,
            None,
            0,
            tokens,
        );
    }

    fn find(
        pool: &BlockPool,
        group: usize,
        parent: Option<BlockHash>,
        salt: u64,
        tokens: &[u32],
    ) -> Option<BlockId> {
        pool.find(
            BlockHash::of(parent, salt, tokens),
            group,
            parent,
            salt,
            tokens,
        )
    }

    #[test]
    fn a_hash_collision_is_a_miss_not_wrong_contents() {
        let mut pool = BlockPool::new(2);
        let [block] = pool.take_free(1).unwrap()[..] else {
            panic!("one block")
        };
        register(&mut pool, block, 0, &[1, 2]);
        assert_eq!(find(&pool, 0, None, 0, &[1, 2]), Some(block));

        // Forge a collision: file the block under the hash of different tokens.
        let other = BlockHash::of(None, 0, &[7, 8]);
        pool.index.insert((other, 0), block);
        assert_eq!(find(&pool, 0, None, 0, &[7, 8]), None);
        // Same tokens, but after another parent or in another namespace: also a miss.
        let forged_parent = BlockHash::of(Some(other), 0, &[1, 2]);
        pool.index.insert((forged_parent, 0), block);
        assert_eq!(find(&pool, 0, Some(other), 0, &[1, 2]), None);
        let forged_salt = BlockHash::of(None, 5, &[1, 2]);
        pool.index.insert((forged_salt, 0), block);
        assert_eq!(find(&pool, 0, None, 5, &[1, 2]), None);
    }

    #[test]
    fn groups_cache_the_same_tokens_apart() {
        let mut pool = BlockPool::new(3);
        let blocks = pool.take_free(2).unwrap();
        register(&mut pool, blocks[0], 0, &[4]);
        assert_eq!(find(&pool, 1, None, 0, &[4]), None);
        register(&mut pool, blocks[1], 1, &[4]);
        assert_eq!(pool.num_cached(), 2);
        assert_eq!(find(&pool, 0, None, 0, &[4]), Some(blocks[0]));
        assert_eq!(find(&pool, 1, None, 0, &[4]), Some(blocks[1]));
        // Evicting one group's copy leaves the other's.
        pool.release(blocks[1]);
        pool.take_free(2).unwrap();
        assert_eq!(find(&pool, 1, None, 0, &[4]), None);
        assert_eq!(find(&pool, 0, None, 0, &[4]), Some(blocks[0]));
    }

    #[test]
    fn duplicate_contents_keep_the_first_cached_copy() {
        let mut pool = BlockPool::new(2);
        let blocks = pool.take_free(2).unwrap();
        register(&mut pool, blocks[0], 0, &[4]);
        register(&mut pool, blocks[1], 0, &[4]);
        assert_eq!(pool.num_cached(), 1);
        pool.release(blocks[0]);
        pool.release(blocks[1]);
        // The uncached duplicate is reused first; the cached copy survives it.
        assert_eq!(
            pool.free_blocks().collect::<Vec<_>>(),
            [blocks[1], blocks[0]]
        );
        pool.take_free(1).unwrap();
        assert_eq!(find(&pool, 0, None, 0, &[4]), Some(blocks[0]));
    }

    #[test]
    fn reusing_a_free_cached_block_evicts_it() {
        let mut pool = BlockPool::new(1);
        let b = pool.take_free(1).unwrap()[0];
        register(&mut pool, b, 0, &[1]);
        pool.release(b);
        assert!(find(&pool, 0, None, 0, &[1]).is_some());
        assert_eq!(pool.take_free(2), None);
        assert!(find(&pool, 0, None, 0, &[1]).is_some());
        assert_eq!(pool.take_free(1), Some(vec![b]));
        assert_eq!(find(&pool, 0, None, 0, &[1]), None);
        assert_eq!(pool.num_cached(), 0);
    }
}
