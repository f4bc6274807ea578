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

/// A block-table entry of a sliding-window group whose block went back to the pool once its
/// positions left the group's window. Nothing reads it: attention starts at the window.
pub const NULL_BLOCK: BlockId = BlockId::MAX;

#[derive(Debug)]
struct SeqBlocks {
    salt: u64,
    /// One table per group, all of one length; entries a sliding-window group released are
    /// [`NULL_BLOCK`].
    tables: Vec<Vec<BlockId>>,
    /// Hashes of the leading blocks known full and computed, in order.
    hashes: Vec<BlockHash>,
    /// Tokens committed as computed.
    computed: usize,
    /// Per group: leading entries released (always 0 for a group keeping every token).
    released: Vec<usize>,
}

/// Paged KV-cache bookkeeping: which pool blocks hold each sequence's token positions.
///
/// The model's layers come in groups (see `forja_arch::kv_cache::KvGroups`): each group has its
/// own block table per sequence, and every block of the pool holds `block_size` positions of
/// one group's layers. A group either keeps every position or only a sliding window: once a
/// block of a sliding-window group holds only positions no later query sees, it goes back to
/// the pool and its table entry becomes [`NULL_BLOCK`].
///
/// A sequence's life: [`lookup_prefix`](Self::lookup_prefix) finds its cached leading blocks and
/// [`PrefixHit::allocate`] opens it with them; before each step [`allocate`](Self::allocate)
/// grows its block tables to the tokens that step will have computed; after the step
/// [`commit`](Self::commit) makes its newly full blocks findable by later sequences and
/// releases what left the windows; [`free`](Self::free) releases it. Blocks shared by several
/// sequences are reference counted.
#[derive(Debug)]
pub struct KvManager {
    pool: BlockPool,
    block_size: usize,
    prefix_caching: bool,
    /// Each group's window (`None`: every position).
    windows: Vec<Option<usize>>,
    seqs: HashMap<SeqId, SeqBlocks>,
    stats: PrefixStats,
}

impl KvManager {
    /// A pool of `num_blocks` blocks of `block_size` token slots each, for one group of layers
    /// that keep every position. Without `prefix_caching`, lookups find nothing and commits
    /// register nothing.
    pub fn new(
        num_blocks: usize,
        block_size: usize,
        prefix_caching: bool,
    ) -> Result<Self, KvError> {
        Self::with_groups(num_blocks, block_size, prefix_caching, &[None])
    }

    /// A pool shared by groups of layers, `windows[g]` being group `g`'s sliding window (`None`:
    /// it keeps every position).
    pub fn with_groups(
        num_blocks: usize,
        block_size: usize,
        prefix_caching: bool,
        windows: &[Option<usize>],
    ) -> Result<Self, KvError> {
        let invalid = |field, value, why| KvError::InvalidConfig { field, value, why };
        let Some(blocks) = BlockId::try_from(num_blocks)
            .ok()
            .filter(|&b| b != NULL_BLOCK)
        else {
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
        if windows.is_empty() {
            return Err(invalid("groups", 0, "must be at least 1"));
        }
        if windows.contains(&Some(0)) {
            return Err(invalid("window", 0, "must be at least 1"));
        }
        Ok(Self {
            pool: BlockPool::new(blocks),
            block_size,
            prefix_caching,
            windows: windows.to_vec(),
            seqs: HashMap::new(),
            stats: PrefixStats::default(),
        })
    }

    /// Token slots per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Each group's sliding window (`None`: it keeps every position).
    pub fn windows(&self) -> &[Option<usize>] {
        &self.windows
    }

    /// Block tables per sequence.
    pub fn num_groups(&self) -> usize {
        self.windows.len()
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

    /// Entries of one block table covering `num_tokens` tokens.
    pub fn blocks_needed(&self, num_tokens: usize) -> usize {
        num_tokens.div_ceil(self.block_size)
    }

    /// Blocks one sequence holds at most on its way to `num_tokens` tokens computed at most
    /// `step` at a time: every group's table, less what sliding-window groups have released
    /// (their window before a step's first position, and the step).
    pub fn max_blocks_held(&self, num_tokens: usize, step: usize) -> usize {
        let all = self.blocks_needed(num_tokens);
        self.windows
            .iter()
            .map(|w| match w {
                None => all,
                Some(w) => all.min((w - 1 + step.max(1)).div_ceil(self.block_size) + 1),
            })
            .sum()
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

    /// `seq`'s block tables, one per group: position `p` of group `g` lives in block
    /// `tables[g][p / block_size]` ([`NULL_BLOCK`] once it left a sliding window).
    pub fn block_tables(&self, seq: SeqId) -> Option<&[Vec<BlockId>]> {
        self.seqs.get(&seq).map(|s| s.tables.as_slice())
    }

    /// `seq`'s block table of `group`.
    pub fn block_table(&self, seq: SeqId, group: usize) -> Option<&[BlockId]> {
        self.seqs
            .get(&seq)
            .and_then(|s| s.tables.get(group))
            .map(Vec::as_slice)
    }

    /// The pool slot of `seq`'s token `position` in `group` (`block * block_size + offset`);
    /// None when the sequence is unknown, its blocks do not reach that far, or the block left
    /// the group's window.
    pub fn slot(&self, seq: SeqId, group: usize, position: usize) -> Option<usize> {
        let block = *self
            .block_table(seq, group)?
            .get(position / self.block_size)?;
        (block != NULL_BLOCK).then(|| block as usize * self.block_size + position % self.block_size)
    }

    /// Finds the longest run of leading full blocks of `tokens` (in namespace `salt`, e.g. a
    /// model or adapter) that the cache holds: every block for a group keeping every position,
    /// the blocks a next query still sees for a sliding-window group. It stops one token short
    /// of the end: the last token is always computed, so the runner has logits to sample from.
    pub fn lookup_prefix(&mut self, tokens: &[u32], salt: u64) -> PrefixHit<'_> {
        let bs = self.block_size;
        let groups = self.windows.len();
        let mut found: Vec<Vec<Option<BlockId>>> = vec![Vec::new(); groups];
        let mut hashes = Vec::new();
        if self.prefix_caching {
            let max_blocks = tokens.len().saturating_sub(1) / bs;
            let mut parent = None;
            for chunk in tokens.chunks_exact(bs).take(max_blocks) {
                let hash = BlockHash::of(parent, salt, chunk);
                let row: Vec<Option<BlockId>> = (0..groups)
                    .map(|g| self.pool.find(hash, g, parent, salt, chunk))
                    .collect();
                let keeps_all = |g: usize| self.windows[g].is_none();
                if (0..groups).any(|g| keeps_all(g) && row[g].is_none()) {
                    break;
                }
                for (g, b) in row.into_iter().enumerate() {
                    found[g].push(b);
                }
                hashes.push(hash);
                parent = Some(hash);
            }
        }
        // The longest hit whose sliding-window groups hold the blocks its next query sees.
        let runs: Vec<Vec<usize>> = found
            .iter()
            .map(|f| {
                f.iter()
                    .scan(0, |run, b| {
                        *run = if b.is_some() { *run + 1 } else { 0 };
                        Some(*run)
                    })
                    .collect()
            })
            .collect();
        let hit = (1..=hashes.len())
            .rev()
            .find(|&k| {
                self.windows.iter().zip(&runs).all(|(w, run)| {
                    let first = w.map_or(0, |w| first_kept(w, k * bs, bs));
                    k == first || run[k - 1] >= k - first
                })
            })
            .unwrap_or(0);
        hashes.truncate(hit);
        let blocks = found
            .iter()
            .zip(&self.windows)
            .map(|(f, w)| {
                let first = w.map_or(0, |w| first_kept(w, hit * bs, bs));
                (0..hit)
                    .map(|i| match f[i] {
                        Some(b) if i >= first => b,
                        _ => NULL_BLOCK,
                    })
                    .collect()
            })
            .collect();
        PrefixHit {
            query_tokens: tokens.len(),
            salt,
            blocks,
            hashes,
            kv: self,
        }
    }

    /// Grows `seq`'s block tables to hold `num_tokens` tokens (a no-op when they already do).
    /// All or nothing: on `OutOfBlocks` the tables and the pool are unchanged.
    pub fn allocate(&mut self, seq: SeqId, num_tokens: usize) -> Result<(), KvError> {
        let needed = self.blocks_needed(num_tokens);
        let s = self.seqs.get_mut(&seq).ok_or(KvError::UnknownSeq { seq })?;
        let have = s.tables.first().map_or(0, Vec::len);
        let Some(more) = needed.checked_sub(have).filter(|&n| n > 0) else {
            return Ok(());
        };
        let fresh = self
            .pool
            .take_free(more * s.tables.len())
            .ok_or(KvError::OutOfBlocks {
                seq,
                needed: more * s.tables.len(),
                free: self.pool.num_free(),
            })?;
        for (table, fresh) in s.tables.iter_mut().zip(fresh.chunks_exact(more)) {
            table.extend_from_slice(fresh);
        }
        Ok(())
    }

    /// Records that `seq`'s first `computed` tokens, `tokens[..computed]`, now have their keys
    /// and values in its blocks: makes its newly full blocks findable by later lookups, and
    /// releases the blocks that left its sliding windows. Committing fewer tokens than before
    /// is a no-op.
    pub fn commit(&mut self, seq: SeqId, tokens: &[u32], computed: usize) -> Result<(), KvError> {
        let bs = self.block_size;
        let s = self.seqs.get_mut(&seq).ok_or(KvError::UnknownSeq { seq })?;
        let capacity = s.tables.first().map_or(0, Vec::len) * bs;
        if computed > tokens.len() || computed > capacity {
            return Err(KvError::CommitOutOfRange {
                seq,
                computed,
                tokens: tokens.len(),
                capacity,
            });
        }
        if computed <= s.computed {
            return Ok(());
        }
        if self.prefix_caching {
            for i in s.hashes.len()..computed / bs {
                let parent = s.hashes.last().copied();
                let chunk = &tokens[i * bs..(i + 1) * bs];
                let hash = BlockHash::of(parent, s.salt, chunk);
                for (g, table) in s.tables.iter().enumerate() {
                    if table[i] != NULL_BLOCK {
                        self.pool.register(table[i], hash, g, parent, s.salt, chunk);
                    }
                }
                s.hashes.push(hash);
            }
        }
        s.computed = computed;
        for (g, window) in self.windows.iter().enumerate() {
            let Some(w) = *window else { continue };
            let table = &mut s.tables[g];
            let upto = first_kept(w, computed, bs).min(table.len());
            for entry in &mut table[s.released[g].min(upto)..upto] {
                if *entry != NULL_BLOCK {
                    self.pool.release(*entry);
                    *entry = NULL_BLOCK;
                }
            }
            s.released[g] = s.released[g].max(upto);
        }
        Ok(())
    }

    /// Releases `seq`'s blocks; each block that no other sequence holds becomes free, the
    /// sequence's last positions first so that they are evicted before its leading ones.
    /// Returns false, doing nothing, for a sequence that holds no blocks.
    pub fn free(&mut self, seq: SeqId) -> bool {
        let Some(s) = self.seqs.remove(&seq) else {
            return false;
        };
        let len = s.tables.first().map_or(0, Vec::len);
        for i in (0..len).rev() {
            for table in &s.tables {
                if table[i] != NULL_BLOCK {
                    self.pool.release(table[i]);
                }
            }
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
    /// Per group, with [`NULL_BLOCK`] where a sliding window no longer reaches.
    blocks: Vec<Vec<BlockId>>,
    hashes: Vec<BlockHash>,
}

impl PrefixHit<'_> {
    /// Leading tokens whose keys and values are already in cached blocks: the new sequence's
    /// computed tokens once allocated.
    pub fn num_tokens(&self) -> usize {
        self.hashes.len() * self.kv.block_size
    }

    /// Opens `seq` holding the cached blocks plus fresh ones up to `num_tokens` tokens (never
    /// fewer blocks than the hit). All or nothing: on error the pool is unchanged, and the
    /// lookup can be repeated later.
    pub fn allocate(self, seq: SeqId, num_tokens: usize) -> Result<(), KvError> {
        let Self {
            kv,
            salt,
            query_tokens,
            blocks: mut tables,
            hashes,
        } = self;
        if kv.seqs.contains_key(&seq) {
            return Err(KvError::SeqExists { seq });
        }
        let hit = hashes.len();
        let per_table = kv.blocks_needed(num_tokens).saturating_sub(hit);
        let more = per_table * tables.len();
        let held = || tables.iter().flatten().filter(|&&b| b != NULL_BLOCK);
        // Free cached blocks of the hit leave the free queue too.
        let revived = held().filter(|&&b| kv.pool.ref_count(b) == Some(0)).count();
        let free = kv.pool.num_free() - revived;
        if more > free {
            return Err(KvError::OutOfBlocks {
                seq,
                needed: more,
                free,
            });
        }
        let hit_blocks: Vec<BlockId> = held().copied().collect();
        for &b in &hit_blocks {
            kv.pool.acquire(b);
        }
        let Some(fresh) = kv.pool.take_free(more) else {
            // Unreachable after the count above; undo the hit rather than keep half of it.
            for &b in hit_blocks.iter().rev() {
                kv.pool.release(b);
            }
            return Err(KvError::OutOfBlocks {
                seq,
                needed: more,
                free,
            });
        };
        if per_table > 0 {
            for (table, fresh) in tables.iter_mut().zip(fresh.chunks_exact(per_table)) {
                table.extend_from_slice(fresh);
            }
        }
        let released = tables
            .iter()
            .map(|t| t.iter().take_while(|&&b| b == NULL_BLOCK).count())
            .collect();
        let computed = hit * kv.block_size;
        kv.stats.queries += 1;
        kv.stats.query_tokens += query_tokens as u64;
        kv.stats.hit_tokens += computed as u64;
        kv.seqs.insert(
            seq,
            SeqBlocks {
                salt,
                tables,
                hashes,
                computed,
                released,
            },
        );
        Ok(())
    }
}

/// The first block of `block_size` positions a sliding window of `window` still needs once
/// `computed` tokens are computed: the next query, at position `computed`, sees from
/// `computed − window + 1`.
fn first_kept(window: usize, computed: usize, block_size: usize) -> usize {
    computed.saturating_sub(window - 1) / block_size
}
