//! `KvManager` cases worked by hand: prefix hits and misses, eviction order, all-or-nothing
//! allocation, slot numbers, reference counts of shared blocks.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use forja_kv::{BlockId, KvError, KvManager, NULL_BLOCK, SeqId};

const BS: usize = 4;

fn kv(num_blocks: usize) -> KvManager {
    KvManager::new(num_blocks, BS, true).unwrap()
}

/// Opens `seq` with its cached prefix, allocates all of `tokens`, computes and commits them.
/// Returns the number of tokens the cache already held.
fn run(kv: &mut KvManager, seq: SeqId, tokens: &[u32], salt: u64) -> usize {
    let hit = kv.lookup_prefix(tokens, salt);
    let cached = hit.num_tokens();
    hit.allocate(seq, tokens.len()).unwrap();
    kv.commit(seq, tokens, tokens.len()).unwrap();
    cached
}

fn table(kv: &KvManager, seq: SeqId) -> Vec<BlockId> {
    kv.block_table(seq, 0).unwrap().to_vec()
}

#[test]
fn rejects_empty_pools_and_blocks() {
    for (blocks, size, field) in [(0, 4, "num_blocks"), (4, 0, "block_size")] {
        let err = KvManager::new(blocks, size, true).unwrap_err();
        assert!(matches!(err, KvError::InvalidConfig { field: f, .. } if f == field));
    }
    let err = KvManager::new(1 << 33, 1, true).unwrap_err();
    assert!(err.to_string().contains("num_blocks = 8589934592"), "{err}");
}

#[test]
fn a_shared_prompt_hits_its_full_blocks_except_the_last_token() {
    let mut kv = kv(16);
    let prompt: Vec<u32> = (0..10).collect();
    assert_eq!(run(&mut kv, 1, &prompt, 0), 0);
    // Same 10 tokens: blocks [0..4) and [4..8) are full and cached; [8..10) never is.
    assert_eq!(kv.lookup_prefix(&prompt, 0).num_tokens(), 8);
    // Exactly two blocks long: the last token must be computed, so only the first block hits.
    assert_eq!(kv.lookup_prefix(&prompt[..8], 0).num_tokens(), 4);
    assert_eq!(kv.lookup_prefix(&prompt[..9], 0).num_tokens(), 8);
    assert_eq!(kv.lookup_prefix(&prompt[..4], 0).num_tokens(), 0);
    assert_eq!(kv.lookup_prefix(&[], 0).num_tokens(), 0);

    assert_eq!(run(&mut kv, 2, &prompt, 0), 8);
    let (a, b) = (table(&kv, 1), table(&kv, 2));
    assert_eq!(a[..2], b[..2]);
    assert_ne!(a[2], b[2]);
    assert_eq!(kv.ref_count(a[0]), Some(2));
    assert_eq!(kv.ref_count(a[2]), Some(1));
    assert_eq!(kv.num_used_blocks(), 4);
    let stats = kv.prefix_stats();
    assert_eq!(
        (stats.queries, stats.query_tokens, stats.hit_tokens),
        (2, 20, 8)
    );
    assert!((stats.hit_rate() - 0.4).abs() < 1e-12);
}

#[test]
fn different_tokens_or_namespace_at_the_same_position_miss() {
    let mut kv = kv(16);
    let prompt: Vec<u32> = (0..9).collect();
    run(&mut kv, 1, &prompt, 0);
    let mut second_block_differs = prompt.clone();
    second_block_differs[5] = 99;
    assert_eq!(kv.lookup_prefix(&second_block_differs, 0).num_tokens(), 4);
    let mut first_block_differs = prompt.clone();
    first_block_differs[0] = 99;
    // The second block's own tokens match, but its prefix does not.
    assert_eq!(kv.lookup_prefix(&first_block_differs, 0).num_tokens(), 0);
    assert_eq!(kv.lookup_prefix(&prompt, 1).num_tokens(), 0);
}

#[test]
fn hits_survive_their_sequence_until_evicted() {
    let mut kv = kv(3);
    let prompt: Vec<u32> = (0..9).collect();
    run(&mut kv, 1, &prompt, 0);
    assert!(kv.free(1));
    assert_eq!(kv.num_free_blocks(), 3);
    assert_eq!(kv.num_cached_blocks(), 2);
    assert_eq!(kv.lookup_prefix(&prompt, 0).num_tokens(), 8);
    // A fresh sequence needing all three blocks evicts both cached ones.
    kv.lookup_prefix(&[7; 12], 0).allocate(2, 12).unwrap();
    assert_eq!(kv.num_cached_blocks(), 0);
    assert_eq!(kv.lookup_prefix(&prompt, 0).num_tokens(), 0);
}

#[test]
fn eviction_takes_uncached_then_least_recently_freed_tail_blocks_first() {
    let mut kv = kv(8);
    let a: Vec<u32> = (0..9).collect(); // two full blocks + one partial
    let b: Vec<u32> = (100..108).collect(); // two full blocks
    run(&mut kv, 1, &a, 0);
    run(&mut kv, 2, &b, 0);
    let (ta, tb) = (table(&kv, 1), table(&kv, 2));
    kv.free(1);
    kv.free(2);
    // Untouched blocks 5..8, then a's partial block, then a's and b's full blocks, each
    // sequence's tail before its head.
    let free: Vec<BlockId> = kv.free_blocks().collect();
    assert_eq!(free, [ta[2], 5, 6, 7, ta[1], ta[0], tb[1], tb[0]]);

    // Five fresh blocks: the four uncached ones and a's last full block.
    kv.lookup_prefix(&[], 0).allocate(3, 5 * BS).unwrap();
    assert_eq!(kv.lookup_prefix(&a, 0).num_tokens(), 4);
    assert_eq!(kv.lookup_prefix(&b, 0).num_tokens(), 4);
    let b9: Vec<u32> = (100..109).collect();
    assert_eq!(kv.lookup_prefix(&b9, 0).num_tokens(), 8);
}

#[test]
fn a_hit_takes_its_blocks_out_of_the_free_queue() {
    let mut kv = kv(4);
    let prompt: Vec<u32> = (0..5).collect();
    run(&mut kv, 1, &prompt, 0);
    let first = table(&kv, 1)[0];
    kv.free(1);
    assert_eq!(kv.num_free_blocks(), 4);
    assert_eq!(run(&mut kv, 2, &prompt, 0), 4);
    assert_eq!(table(&kv, 2)[0], first);
    assert!(kv.free_blocks().all(|b| b != first));
    assert_eq!(kv.ref_count(first), Some(1));
    assert_eq!(kv.num_free_blocks(), 2);
}

#[test]
fn allocation_is_all_or_nothing() {
    let mut kv = kv(4);
    kv.lookup_prefix(&[], 0).allocate(1, 5).unwrap();
    assert_eq!(table(&kv, 1).len(), 2);
    let before: Vec<BlockId> = kv.free_blocks().collect();
    let err = kv.allocate(1, 17).unwrap_err();
    assert_eq!(
        err,
        KvError::OutOfBlocks {
            seq: 1,
            needed: 3,
            free: 2
        }
    );
    assert_eq!(table(&kv, 1).len(), 2);
    assert_eq!(kv.free_blocks().collect::<Vec<_>>(), before);
    kv.allocate(1, 16).unwrap();
    assert_eq!(kv.num_free_blocks(), 0);
    // Growing within the blocks it has needs nothing.
    kv.allocate(1, 3).unwrap();
}

#[test]
fn a_failed_open_leaves_the_hit_blocks_free_and_cached() {
    let mut kv = kv(3);
    let prompt: Vec<u32> = (0..9).collect();
    run(&mut kv, 1, &prompt, 0);
    kv.free(1);
    let before: Vec<BlockId> = kv.free_blocks().collect();
    // The hit covers two blocks, both free; the rest needs two more, but only one is left.
    let hit = kv.lookup_prefix(&prompt, 0);
    assert_eq!(hit.num_tokens(), 8);
    let err = hit.allocate(2, 16).unwrap_err();
    assert!(
        matches!(
            err,
            KvError::OutOfBlocks {
                needed: 2,
                free: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(!kv.contains(2));
    assert_eq!(kv.free_blocks().collect::<Vec<_>>(), before);
    assert_eq!(kv.num_cached_blocks(), 2);
    assert_eq!(kv.prefix_stats().queries, 1);
}

#[test]
fn opening_an_open_sequence_is_an_error() {
    let mut kv = kv(4);
    kv.lookup_prefix(&[1], 0).allocate(1, 1).unwrap();
    let err = kv.lookup_prefix(&[1], 0).allocate(1, 1).unwrap_err();
    assert_eq!(err, KvError::SeqExists { seq: 1 });
    assert_eq!(kv.num_used_blocks(), 1);
}

#[test]
fn unknown_sequences() {
    let mut kv = kv(4);
    assert_eq!(kv.allocate(9, 1), Err(KvError::UnknownSeq { seq: 9 }));
    assert_eq!(kv.commit(9, &[1], 1), Err(KvError::UnknownSeq { seq: 9 }));
    assert!(!kv.free(9));
    assert_eq!(kv.block_table(9, 0), None);
    assert_eq!(kv.slot(9, 0, 0), None);
    assert_eq!(kv.ref_count(4), None);
}

#[test]
fn commit_checks_its_range() {
    let mut kv = kv(4);
    kv.lookup_prefix(&[], 0).allocate(1, 4).unwrap();
    let err = kv.commit(1, &[1, 2, 3], 4).unwrap_err();
    assert!(
        err.to_string().contains("sequence 1 cannot commit 4"),
        "{err}"
    );
    let err = kv.commit(1, &[0; 8], 5).unwrap_err();
    assert!(matches!(err, KvError::CommitOutOfRange { capacity: 4, .. }));
    // Partial blocks are not cached; committing less later is a no-op.
    kv.commit(1, &[1, 2, 3], 3).unwrap();
    assert_eq!(kv.num_cached_blocks(), 0);
    kv.commit(1, &[1, 2, 3, 4], 4).unwrap();
    kv.commit(1, &[1, 2, 3, 4], 2).unwrap();
    assert_eq!(kv.num_cached_blocks(), 1);
}

#[test]
fn slots_follow_the_block_table() {
    let mut kv = kv(4);
    kv.lookup_prefix(&[], 0).allocate(1, 1).unwrap();
    kv.lookup_prefix(&[], 0).allocate(2, 6).unwrap();
    let t = table(&kv, 2);
    assert_eq!(kv.slot(2, 0, 0), Some(t[0] as usize * BS));
    assert_eq!(kv.slot(2, 0, 5), Some(t[1] as usize * BS + 1));
    assert_eq!(kv.slot(2, 0, 7), Some(t[1] as usize * BS + 3));
    assert_eq!(kv.slot(2, 0, 8), None);
}

#[test]
fn without_prefix_caching_nothing_is_shared() {
    let mut kv = KvManager::new(8, BS, false).unwrap();
    let prompt: Vec<u32> = (0..9).collect();
    assert_eq!(run(&mut kv, 1, &prompt, 0), 0);
    assert_eq!(run(&mut kv, 2, &prompt, 0), 0);
    assert_eq!(kv.num_cached_blocks(), 0);
    assert_eq!(kv.num_used_blocks(), 6);
    assert_eq!(kv.prefix_stats().hit_rate(), 0.0);
}

#[test]
fn freeing_everything_frees_every_block() {
    let mut kv = kv(6);
    let prompt: Vec<u32> = (0..9).collect();
    run(&mut kv, 1, &prompt, 0);
    run(&mut kv, 2, &prompt, 0);
    assert_eq!(kv.num_seqs(), 2);
    assert!(kv.free(2));
    assert!(kv.free(1));
    assert!(!kv.free(1));
    assert_eq!(kv.num_free_blocks(), kv.num_blocks());
    assert_eq!(kv.num_used_blocks(), 0);
    assert!((0..6).all(|b| kv.ref_count(b) == Some(0)));
}

#[test]
fn a_sliding_window_group_gives_back_what_leaves_its_window() {
    // Group 0 keeps every position; group 1 a window of 6 (a query sees itself and 5 before).
    let mut kv = KvManager::with_groups(12, BS, true, &[None, Some(6)]).unwrap();
    let tokens: Vec<u32> = (0..40).collect();
    kv.lookup_prefix(&tokens[..12], 0).allocate(1, 12).unwrap();
    assert_eq!(kv.num_used_blocks(), 6);
    kv.commit(1, &tokens, 12).unwrap();
    // The next query, at 12, sees 7..=12: block 0 of the window group goes back.
    assert_eq!(kv.block_table(1, 1).unwrap()[0], NULL_BLOCK);
    assert_ne!(kv.block_table(1, 1).unwrap()[1], NULL_BLOCK);
    assert_eq!(kv.block_table(1, 0).unwrap().len(), 3);
    assert!(!kv.block_table(1, 0).unwrap().contains(&NULL_BLOCK));
    assert_eq!(kv.num_used_blocks(), 5);
    assert_eq!(kv.slot(1, 1, 3), None);
    assert!(kv.slot(1, 1, 7).is_some());
    assert!(kv.slot(1, 0, 3).is_some());
    kv.allocate(1, 20).unwrap();
    kv.commit(1, &tokens, 20).unwrap();
    // Computed 20: the next query sees 15..=20, blocks 3 and 4.
    assert_eq!(kv.block_table(1, 1).unwrap()[..3], [NULL_BLOCK; 3]);
    assert_eq!(kv.num_used_blocks(), 5 + 2);
    // What a sequence holds at most: every block of group 0, the window and a step in group 1.
    assert_eq!(kv.max_blocks_held(20, 1), 5 + 3);
    assert_eq!(kv.max_blocks_held(20, 8), 5 + 5);
    assert_eq!(kv.max_blocks_held(400, 1), 100 + 3);
    assert!(kv.free(1));
    assert_eq!(kv.num_free_blocks(), 12);

    // Its blocks stay cached: a longer prompt finds all 20 tokens, the window group needing
    // only its last two blocks.
    assert_eq!(kv.lookup_prefix(&tokens[..21], 0).num_tokens(), 20);
    // Free queue: 2 never used, then the window group's blocks 0..3 as they left, then the
    // sequence's blocks from its end. Taking four (two positions of 4 in two groups) evicts
    // the window group's blocks 0 and 1, which no hit of 20 tokens needs.
    kv.lookup_prefix(&[99], 0).allocate(2, 8).unwrap();
    assert_eq!(kv.lookup_prefix(&tokens[..21], 0).num_tokens(), 20);
    // Two more evict the window group's block 2 and group 0's block 4: a hit of 16 would need
    // window blocks 2 and 3, of 12 blocks 1 and 2, of 8 and 4 block 0 — nothing is left.
    kv.allocate(2, 12).unwrap();
    assert_eq!(kv.num_free_blocks(), 6);
    let hit = kv.lookup_prefix(&tokens[..21], 0);
    assert_eq!(hit.num_tokens(), 0);
    hit.allocate(3, 8).unwrap();
    assert_eq!(
        kv.block_tables(3)
            .unwrap()
            .iter()
            .map(Vec::len)
            .sum::<usize>(),
        4
    );
}

#[test]
fn groups_are_validated() {
    for (windows, field) in [(&[][..], "groups"), (&[None, Some(0)][..], "window")] {
        let e = KvManager::with_groups(4, 4, true, windows).unwrap_err();
        assert!(e.to_string().contains(field), "{e}");
    }
    assert!(KvManager::with_groups(u32::MAX as usize, 1, true, &[None]).is_err());
}
