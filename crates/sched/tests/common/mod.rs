//! A fake model runner over a paged cache of plain numbers. The "key/value" at position `p` is
//! a running hash of the request's salt and tokens `0..=p`, written into every group's block
//! and computed from the value at `p - 1` read back through every group's block table (each
//! must agree; sliding windows are at least 2); a sampled token comes from the value at the
//! last position fed. So a wrong block table, a wrong prefix hit, a block given back while its
//! window still reaches it or a clobbered block changes the outputs or fails a check, and
//! correct scheduling gives the outputs of running each request alone.

use std::collections::HashMap;

use forja_kv::NULL_BLOCK;
use forja_sched::{Scheduler, StepPlan};

/// Token the fake engine treats as a stop token.
pub const STOP: u32 = 0;

/// Size of the fake vocabulary; small, so that stop tokens and shared prefixes are common.
pub const VOCAB: u32 = 8;

fn seed(salt: u64) -> u64 {
    mix(0x9e37_79b9_7f4a_7c15 ^ salt, u32::MAX)
}

fn mix(state: u64, token: u32) -> u64 {
    let mut z = state ^ u64::from(token).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 30)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn sample(state: u64) -> u32 {
    (state % u64::from(VOCAB)) as u32
}

/// What a request generates when run alone: sampled tokens up to `max_tokens`, or with
/// `stops` up to the first [`STOP`] (included).
pub fn expected_output(prompt: &[u32], salt: u64, max_tokens: usize, stops: bool) -> Vec<u32> {
    let mut state = prompt.iter().fold(seed(salt), |s, &t| mix(s, t));
    let mut out = Vec::new();
    loop {
        let token = sample(state);
        out.push(token);
        if (stops && token == STOP) || out.len() == max_tokens {
            return out;
        }
        state = mix(state, token);
    }
}

/// The fake runner's cache: one value per pool slot.
#[derive(Debug)]
pub struct FakeRunner {
    block_size: usize,
    slots: Vec<Option<u64>>,
}

impl FakeRunner {
    /// A runner for the scheduler's KV pool.
    pub fn new(sched: &Scheduler) -> Self {
        let kv = sched.kv();
        Self {
            block_size: kv.block_size(),
            slots: vec![None; kv.num_blocks() * kv.block_size()],
        }
    }

    fn slot(&self, table: &[u32], position: usize) -> usize {
        let block = table[position / self.block_size];
        assert_ne!(
            block, NULL_BLOCK,
            "position {position} read after its block went back"
        );
        block as usize * self.block_size + position % self.block_size
    }

    /// Runs `plan`: computes and stores every fed position, samples where asked. `salts` maps
    /// request ids to their salts.
    pub fn run(&mut self, plan: &StepPlan, salts: &HashMap<u64, u64>) -> Vec<(u64, u32)> {
        let mut sampled = Vec::new();
        for s in &plan.seqs {
            let end = s.start + s.tokens.len();
            assert!(!s.block_tables.is_empty());
            for table in &s.block_tables {
                assert!(table.len() * self.block_size >= end, "{s:?}");
            }
            let mut state = if s.start == 0 {
                seed(salts[&s.id])
            } else {
                let read: Vec<Option<u64>> = s
                    .block_tables
                    .iter()
                    .map(|t| self.slots[self.slot(t, s.start - 1)])
                    .collect();
                assert!(
                    read.windows(2).all(|w| w[0] == w[1]),
                    "groups disagree: {read:?}"
                );
                read[0].expect("the position before the chunk is computed")
            };
            for (p, &t) in (s.start..end).zip(&s.tokens) {
                state = mix(state, t);
                for table in &s.block_tables {
                    let slot = self.slot(table, p);
                    self.slots[slot] = Some(state);
                }
            }
            if s.sample {
                sampled.push((s.id, sample(state)));
            }
        }
        sampled
    }

    /// Checks that the cache holds the right value for every computed position of request
    /// `id`, whose tokens are `tokens`, in every group that still holds it.
    pub fn check_computed(&self, sched: &Scheduler, id: u64, tokens: &[u32], salt: u64) {
        let computed = sched.num_computed(id).expect("live request");
        let Some(tables) = sched.kv().block_tables(id) else {
            assert_eq!(
                computed, 0,
                "request {id} has computed tokens but no blocks"
            );
            return;
        };
        let mut state = seed(salt);
        for (p, &t) in tokens[..computed].iter().enumerate() {
            state = mix(state, t);
            for (table, window) in tables.iter().zip(sched.kv().windows()) {
                if table[p / self.block_size] == NULL_BLOCK {
                    let w = window.expect("only a sliding window gives blocks back");
                    assert!(
                        p + w <= computed,
                        "request {id}: position {p} still in the window"
                    );
                    continue;
                }
                let slot = self.slot(table, p);
                assert_eq!(self.slots[slot], Some(state), "request {id} position {p}");
            }
        }
    }
}
