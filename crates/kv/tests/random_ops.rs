//! Random sequences of opens, growth, commits and frees over a small pool and a two-token
//! alphabet (so prefixes repeat), with groups of layers keeping every position or a sliding
//! window, checked after every operation against a model of what the caller holds and of what
//! each block physically contains.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::collections::{HashMap, HashSet};

use forja_kv::{BlockId, KvError, KvManager, NULL_BLOCK, SeqId};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Open a new sequence with its cached prefix plus `chunk` more tokens.
    Open {
        tokens: Vec<u32>,
        salt: u64,
        chunk: usize,
    },
    /// Append tokens to a live sequence (as sampling does).
    Extend {
        seq: usize,
        tokens: Vec<u32>,
    },
    /// Allocate `n` more tokens of a live sequence.
    Grow {
        seq: usize,
        n: usize,
    },
    /// Compute `n` more allocated tokens and commit.
    Compute {
        seq: usize,
        n: usize,
    },
    Free {
        seq: usize,
    },
}

fn tokens(max_len: usize) -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0u32..2, 1..=max_len)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (tokens(16), 0u64..2, 0usize..=16)
            .prop_map(|(tokens, salt, chunk)| Op::Open { tokens, salt, chunk }),
        1 => (any::<usize>(), tokens(4)).prop_map(|(seq, tokens)| Op::Extend { seq, tokens }),
        2 => (any::<usize>(), 1usize..8).prop_map(|(seq, n)| Op::Grow { seq, n }),
        3 => (any::<usize>(), 1usize..12).prop_map(|(seq, n)| Op::Compute { seq, n }),
        2 => any::<usize>().prop_map(|seq| Op::Free { seq }),
    ]
}

/// What the caller knows about one open sequence.
#[derive(Debug)]
struct Seq {
    id: SeqId,
    salt: u64,
    tokens: Vec<u32>,
    /// Tokens its block tables must hold.
    allocated: usize,
    computed: usize,
    table_len: usize,
}

/// What a computed block holds: its group, the salt and the whole prefix up to the block's end.
type Contents = (usize, u64, Vec<u32>);

/// The cache under test, the caller's sequences, and what each fully computed block holds.
struct World {
    kv: KvManager,
    seqs: Vec<Seq>,
    contents: HashMap<BlockId, Contents>,
    next_id: SeqId,
}

impl World {
    fn apply(&mut self, op: Op) {
        match op {
            Op::Open {
                tokens,
                salt,
                chunk,
            } => self.open(tokens, salt, chunk),
            Op::Extend { seq, tokens } => {
                if let Some(s) = self.pick(seq) {
                    self.seqs[s].tokens.extend(tokens);
                }
            }
            Op::Grow { seq, n } => {
                if let Some(s) = self.pick(seq) {
                    self.grow(s, n);
                }
            }
            Op::Compute { seq, n } => {
                if let Some(s) = self.pick(seq) {
                    self.compute(s, n);
                }
            }
            Op::Free { seq } => {
                if let Some(s) = self.pick(seq) {
                    let s = self.seqs.swap_remove(s);
                    assert!(self.kv.free(s.id));
                }
            }
        }
    }

    fn pick(&self, seq: usize) -> Option<usize> {
        (!self.seqs.is_empty()).then(|| seq % self.seqs.len())
    }

    fn open(&mut self, tokens: Vec<u32>, salt: u64, chunk: usize) {
        let bs = self.kv.block_size();
        let free_before: Vec<BlockId> = self.kv.free_blocks().collect();
        let hit = self.kv.lookup_prefix(&tokens, salt);
        let cached = hit.num_tokens();
        assert_eq!(cached % bs, 0);
        assert!(cached < tokens.len());
        let allocated = (cached + chunk).min(tokens.len());
        let id = self.next_id;
        self.next_id += 1;
        match hit.allocate(id, allocated) {
            Ok(()) => {}
            Err(KvError::OutOfBlocks { .. }) => {
                assert!(!self.kv.contains(id));
                assert_eq!(self.kv.free_blocks().collect::<Vec<_>>(), free_before);
                return;
            }
            Err(e) => panic!("unexpected {e}"),
        }
        let tables = self.kv.block_tables(id).unwrap().to_vec();
        for (g, table) in tables.iter().enumerate() {
            for (i, b) in table.iter().enumerate() {
                if *b == NULL_BLOCK {
                    continue;
                }
                if i < cached / bs {
                    let expected = (g, salt, tokens[..(i + 1) * bs].to_vec());
                    assert_eq!(
                        self.contents.get(b),
                        Some(&expected),
                        "hit block {b} holds other tokens"
                    );
                } else {
                    self.contents.remove(b);
                }
            }
        }
        self.seqs.push(Seq {
            id,
            salt,
            tokens,
            allocated,
            computed: cached,
            table_len: tables[0].len(),
        });
    }

    fn grow(&mut self, s: usize, n: usize) {
        let seq = &mut self.seqs[s];
        let target = seq.allocated + n;
        let free_before = self.kv.num_free_blocks();
        match self.kv.allocate(seq.id, target) {
            Ok(()) => {
                let tables = self.kv.block_tables(seq.id).unwrap();
                for table in tables {
                    for b in &table[seq.table_len..] {
                        self.contents.remove(b);
                    }
                }
                seq.allocated = target;
                seq.table_len = tables[0].len();
            }
            Err(KvError::OutOfBlocks { needed, free, .. }) => {
                assert!(needed > free);
                assert_eq!(free, free_before);
                assert_eq!(self.kv.num_free_blocks(), free_before);
                assert_eq!(self.kv.block_table(seq.id, 0).unwrap().len(), seq.table_len);
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }

    fn compute(&mut self, s: usize, n: usize) {
        let bs = self.kv.block_size();
        let seq = &mut self.seqs[s];
        let computed = (seq.computed + n).min(seq.allocated).min(seq.tokens.len());
        // Blocks the commit releases from a sliding window hold their tokens too.
        let tables = self.kv.block_tables(seq.id).unwrap().to_vec();
        self.kv.commit(seq.id, &seq.tokens, computed).unwrap();
        seq.computed = seq.computed.max(computed);
        for (g, table) in tables.iter().enumerate() {
            for (i, &b) in table.iter().enumerate().take(computed / bs) {
                if b != NULL_BLOCK {
                    let prefix = seq.tokens[..(i + 1) * bs].to_vec();
                    self.contents.insert(b, (g, seq.salt, prefix));
                }
            }
        }
    }

    fn check(&self) {
        let n = self.kv.num_blocks();
        let mut holders = vec![0u32; n];
        let bs = self.kv.block_size();
        for s in &self.seqs {
            let tables = self.kv.block_tables(s.id).unwrap();
            assert_eq!(tables.len(), self.kv.num_groups());
            let mut held = Vec::new();
            for (table, window) in tables.iter().zip(self.kv.windows()) {
                assert_eq!(table.len(), s.table_len);
                assert!(table.len() >= self.kv.blocks_needed(s.allocated));
                // A sliding window gives back exactly the blocks its next query no longer sees.
                let gone = window.map_or(0, |w| {
                    (s.computed.saturating_sub(w - 1) / bs).min(table.len())
                });
                for (i, &b) in table.iter().enumerate() {
                    assert_eq!(
                        b == NULL_BLOCK,
                        i < gone,
                        "entry {i} of {table:?}, window {window:?}"
                    );
                }
                held.extend(table.iter().copied().filter(|&b| b != NULL_BLOCK));
            }
            let distinct: HashSet<_> = held.iter().collect();
            assert_eq!(distinct.len(), held.len(), "a block twice in one sequence");
            let step = s.allocated.saturating_sub(s.computed);
            assert!(held.len() <= self.kv.max_blocks_held(s.allocated, step));
            for b in held {
                holders[b as usize] += 1;
            }
        }
        for (b, &h) in holders.iter().enumerate() {
            assert_eq!(self.kv.ref_count(b as BlockId), Some(h), "block {b}");
        }
        let free: Vec<BlockId> = self.kv.free_blocks().collect();
        let distinct: HashSet<_> = free.iter().collect();
        assert_eq!(distinct.len(), free.len(), "a block queued twice");
        assert!(
            free.iter().all(|&b| holders[b as usize] == 0),
            "a held block is free"
        );
        assert_eq!(free.len(), holders.iter().filter(|&&h| h == 0).count());
        assert_eq!(self.kv.num_free_blocks(), free.len());
        assert_eq!(self.kv.num_used_blocks() + self.kv.num_free_blocks(), n);
        assert_eq!(self.kv.num_seqs(), self.seqs.len());
        assert!(self.kv.num_cached_blocks() <= n);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn bookkeeping_stays_consistent(
        num_blocks in 4usize..=32,
        block_size in 1usize..=4,
        prefix_caching in prop::bool::weighted(0.8),
        windows in prop_oneof![
            Just(vec![None]),
            (1usize..=9).prop_map(|w| vec![None, Some(w)]),
            (1usize..=9).prop_map(|w| vec![Some(w)]),
            (1usize..=9, 1usize..=9).prop_map(|(a, b)| vec![Some(a), None, Some(b)]),
        ],
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut w = World {
            kv: KvManager::with_groups(num_blocks, block_size, prefix_caching, &windows).unwrap(),
            seqs: Vec::new(),
            contents: HashMap::new(),
            next_id: 0,
        };
        for op in ops {
            w.apply(op);
            w.check();
        }
        for s in std::mem::take(&mut w.seqs) {
            assert!(w.kv.free(s.id));
        }
        w.check();
        prop_assert_eq!(w.kv.num_free_blocks(), num_blocks);
        prop_assert_eq!(w.kv.num_used_blocks(), 0);
        let stats = w.kv.prefix_stats();
        prop_assert!(stats.hit_tokens <= stats.query_tokens);
    }
}
