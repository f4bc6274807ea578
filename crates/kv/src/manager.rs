//! `KvManager`: one block table per sequence over a shared block pool, with prefix caching.

use std::collections::HashMap;

use crate::pool::{BlockHash, BlockPool};
use crate::{BlockId, KvError, SeqId};

/// Prefix-cache lookups, counted when a looked-up sequence is allocated (a request that waits
/// and looks again is counted once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixStats {
    /// Sequences opened through [`KvManager::lookup_prefix`].
    pub queries: u64,
    /// Tokens those sequences had when opened.
    pub query_tokens: u64,
    /// Of those, tokens found in cached blocks.
    pub hit_tokens: u64,
}

impl PrefixStats {
    /// Fraction of queried tokens found in the cache; 0 before any query.
    pub fn hit_rate(&self) -> f64 {
        if self.query_tokens == 0 {
            0.0
        } else {
            self.hit_tokens as f64 / self.query_tokens as f64
        }
    }
}

#[derive(Debug)]
struct SeqBlocks {
    salt: u64,
    blocks: Vec<BlockId>,
    /// Hashes of the leading blocks known full and computed, in order.
    hashes: Vec<BlockHash>,
}

/// Paged KV-cache bookkeeping: which pool blocks hold each sequence's token positions.
///
/// A sequence's life: [`lookup_prefix`](Self::lookup_prefix) finds its cached leading blocks and
/// [`PrefixHit::allocate`] opens it with them; before each step [`allocate`](Self::allocate)
/// grows its block table to the tokens that step will have computed; after the step
/// [`commit`](Self::commit) makes its newly full blocks findable by later sequences;
/// [`free`](Self::free) releases it. Blocks shared by several sequences are reference counted.
#[derive(Debug)]
pub struct KvManager {
    pool: BlockPool,
    block_size: usize,
    prefix_caching: bool,
    seqs: HashMap<SeqId, SeqBlocks>,
    stats: PrefixStats,
}

impl KvManager {
    /// A pool of `num_blocks` blocks of `block_size` token slots each. Without
    /// `prefix_caching`, lookups find nothing and commits register nothing.
    pub fn new(
        num_blocks: usize,
        block_size: usize,
        prefix_caching: bool,
    ) -> Result<Self, KvError> {
        let invalid = |field, value, why| KvError::InvalidConfig { field, value, why };
        let Ok(blocks) = BlockId::try_from(num_blocks) else {
            return Err(invalid(
                "num_blocks",
                num_blocks,
                "must fit a 32-bit block id",
            ));
        };
        if blocks == 0 {
            return Err(invalid("num_blocks", num_blocks, "must be at least 1"));
        }
        if block_size == 0 {
            return Err(invalid("block_size", block_size, "must be at least 1"));
        }
        if num_blocks.checked_mul(block_size).is_none() {
            return Err(invalid(
                "block_size",
                block_size,
                "overflows the slot numbers",
            ));
        }
        Ok(Self {
            pool: BlockPool::new(blocks),
            block_size,
            prefix_caching,
            seqs: HashMap::new(),
            stats: PrefixStats::default(),
        })
    }

    /// Token slots per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks in the pool.
    pub fn num_blocks(&self) -> usize {
        self.pool.num_blocks()
    }

    /// Blocks no sequence holds, including cached ones that allocation may evict.
    pub fn num_free_blocks(&self) -> usize {
        self.pool.num_free()
    }

    /// Blocks held by at least one sequence.
    pub fn num_used_blocks(&self) -> usize {
        self.num_blocks() - self.num_free_blocks()
    }

    /// Blocks whose contents later sequences can find, held or free.
    pub fn num_cached_blocks(&self) -> usize {
        self.pool.num_cached()
    }

    /// Whether lookups and commits use the prefix cache.
    pub fn prefix_caching(&self) -> bool {
        self.prefix_caching
    }

    /// Prefix-cache counters since the manager was made.
    pub fn prefix_stats(&self) -> PrefixStats {
        self.stats
    }

    /// Blocks needed to hold `num_tokens` tokens.
    pub fn blocks_needed(&self, num_tokens: usize) -> usize {
        num_tokens.div_ceil(self.block_size)
    }

    /// Sequences holding blocks.
    pub fn num_seqs(&self) -> usize {
        self.seqs.len()
    }

    /// Whether `seq` holds blocks.
    pub fn contains(&self, seq: SeqId) -> bool {
        self.seqs.contains_key(&seq)
    }

    /// How many block tables hold `block`; None for a block outside the pool.
    pub fn ref_count(&self, block: BlockId) -> Option<u32> {
        self.pool.ref_count(block)
    }

    /// Free blocks in the order allocation takes them: uncached ones first, then cached ones
    /// from least to most recently freed.
    pub fn free_blocks(&self) -> impl Iterator<Item = BlockId> + '_ {
        self.pool.free_blocks()
    }

    /// The blocks holding `seq`'s positions: position `p` lives in block `p / block_size`.
    pub fn block_table(&self, seq: SeqId) -> Option<&[BlockId]> {
        self.seqs.get(&seq).map(|s| s.blocks.as_slice())
    }

    /// The pool slot of `seq`'s token `position` (`block * block_size + offset`); None when the
    /// sequence is unknown or its blocks do not reach that far.
    pub fn slot(&self, seq: SeqId, position: usize) -> Option<usize> {
        let block = *self.block_table(seq)?.get(position / self.block_size)?;
        Some(block as usize * self.block_size + position % self.block_size)
    }

    /// Finds the longest run of leading full blocks of `tokens` (in namespace `salt`, e.g. a
    /// model or adapter) that the cache holds. It stops one token short of the end: the last
    /// token is always computed, so the runner has logits to sample from.
    pub fn lookup_prefix(&mut self, tokens: &[u32], salt: u64) -> PrefixHit<'_> {
        let mut blocks = Vec::new();
        let mut hashes = Vec::new();
        if self.prefix_caching {
            let max_blocks = tokens.len().saturating_sub(1) / self.block_size;
            let mut parent = None;
            for chunk in tokens.chunks_exact(self.block_size).take(max_blocks) {
                let Some((block, hash)) = self.pool.find(parent, salt, chunk) else {
                    break;
                };
                blocks.push(block);
                hashes.push(hash);
                parent = Some(hash);
            }
        }
        PrefixHit {
            query_tokens: tokens.len(),
            salt,
            blocks,
            hashes,
            kv: self,
        }
    }

    /// Grows `seq`'s block table to hold `num_tokens` tokens (a no-op when it already does).
    /// All or nothing: on `OutOfBlocks` the table and the pool are unchanged.
    pub fn allocate(&mut self, seq: SeqId, num_tokens: usize) -> Result<(), KvError> {
        let needed = self.blocks_needed(num_tokens);
        let s = self.seqs.get_mut(&seq).ok_or(KvError::UnknownSeq { seq })?;
        let Some(more) = needed.checked_sub(s.blocks.len()).filter(|&n| n > 0) else {
            return Ok(());
        };
        let fresh = self.pool.take_free(more).ok_or(KvError::OutOfBlocks {
            seq,
            needed: more,
            free: self.pool.num_free(),
        })?;
        s.blocks.extend(fresh);
        Ok(())
    }

    /// Records that `seq`'s first `computed` tokens, `tokens[..computed]`, now have their keys
    /// and values in its blocks, and makes its newly full blocks findable by later lookups.
    /// Committing fewer tokens than before is a no-op.
    pub fn commit(&mut self, seq: SeqId, tokens: &[u32], computed: usize) -> Result<(), KvError> {
        let bs = self.block_size;
        let s = self.seqs.get_mut(&seq).ok_or(KvError::UnknownSeq { seq })?;
        let capacity = s.blocks.len() * bs;
        if computed > tokens.len() || computed > capacity {
            return Err(KvError::CommitOutOfRange {
                seq,
                computed,
                tokens: tokens.len(),
                capacity,
            });
        }
        if !self.prefix_caching {
            return Ok(());
        }
        for i in s.hashes.len()..computed / bs {
            let parent = s.hashes.last().copied();
            let hash =
                self.pool
                    .register(s.blocks[i], parent, s.salt, &tokens[i * bs..(i + 1) * bs]);
            s.hashes.push(hash);
        }
        Ok(())
    }

    /// Releases `seq`'s blocks; each block that no other sequence holds becomes free, the
    /// sequence's last blocks first so that they are evicted before its leading ones. Returns
    /// false, doing nothing, for a sequence that holds no blocks.
    pub fn free(&mut self, seq: SeqId) -> bool {
        let Some(s) = self.seqs.remove(&seq) else {
            return false;
        };
        for &block in s.blocks.iter().rev() {
            self.pool.release(block);
        }
        true
    }
}

/// The cached prefix [`KvManager::lookup_prefix`] found for a new sequence. It borrows the
/// manager, so nothing can evict the blocks it found before [`allocate`](Self::allocate)
/// takes them.
#[derive(Debug)]
#[must_use = "a prefix hit holds nothing until it is allocated"]
pub struct PrefixHit<'a> {
    kv: &'a mut KvManager,
    salt: u64,
    query_tokens: usize,
    blocks: Vec<BlockId>,
    hashes: Vec<BlockHash>,
}

impl PrefixHit<'_> {
    /// Leading tokens whose keys and values are already in cached blocks: the new sequence's
    /// computed tokens once allocated.
    pub fn num_tokens(&self) -> usize {
        self.blocks.len() * self.kv.block_size
    }

    /// Opens `seq` holding the cached blocks plus fresh ones up to `num_tokens` tokens (never
    /// fewer blocks than the hit). All or nothing: on error the pool is unchanged, and the
    /// lookup can be repeated later.
    pub fn allocate(self, seq: SeqId, num_tokens: usize) -> Result<(), KvError> {
        let Self {
            kv,
            salt,
            query_tokens,
            mut blocks,
            hashes,
        } = self;
        if kv.seqs.contains_key(&seq) {
            return Err(KvError::SeqExists { seq });
        }
        let more = kv.blocks_needed(num_tokens).saturating_sub(blocks.len());
        // Free cached blocks of the hit leave the free queue too.
        let revived = blocks
            .iter()
            .filter(|&&b| kv.pool.ref_count(b) == Some(0))
            .count();
        let free = kv.pool.num_free() - revived;
        if more > free {
            return Err(KvError::OutOfBlocks {
                seq,
                needed: more,
                free,
            });
        }
        for &b in &blocks {
            kv.pool.acquire(b);
        }
        let Some(fresh) = kv.pool.take_free(more) else {
            // Unreachable after the count above; undo the hit rather than keep half of it.
            for &b in blocks.iter().rev() {
                kv.pool.release(b);
            }
            return Err(KvError::OutOfBlocks {
                seq,
                needed: more,
                free,
            });
        };
        blocks.extend(fresh);
        kv.stats.queries += 1;
        kv.stats.query_tokens += query_tokens as u64;
        kv.stats.hit_tokens += (hashes.len() * kv.block_size) as u64;
        kv.seqs.insert(
            seq,
            SeqBlocks {
                salt,
                blocks,
                hashes,
            },
        );
        Ok(())
    }
}
