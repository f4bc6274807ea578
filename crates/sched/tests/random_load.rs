//! Random request streams interleaved with steps and aborts, run by the fake runner, checked
//! after every step: budget and running limits, fed tokens, block accounting, cache contents.
//! At the end every request must have finished or been aborted, with the outputs of a lone run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use std::collections::{HashMap, HashSet};

use common::{FakeRunner, STOP, expected_output};
use forja_kv::{BlockId, KvManager, NULL_BLOCK};
use forja_sched::{FinishReason, Request, SchedConfig, SchedError, Scheduler, StepPlan};
use proptest::prelude::*;

const MAX_MODEL_LEN: usize = 32;

/// Prompts start with a prefix of this, so that they share cached blocks.
const SHARED: [u32; 16] = [3, 1, 4, 1, 5, 2, 6, 5, 3, 5, 7, 2, 7, 1, 6, 2];

#[derive(Debug, Clone)]
enum Op {
    Add {
        shared: usize,
        suffix: Vec<u32>,
        max_tokens: usize,
        priority: i32,
        salt: u64,
    },
    Step,
    /// Abort the n-th live request (modulo their number).
    Abort(usize),
    /// Abort the n-th live request between planning a step and reporting it.
    AbortMidStep(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..=16, prop::collection::vec(1u32..4, 0..8), 1usize..12, -1i32..=1, 0u64..2)
            .prop_map(|(shared, suffix, max_tokens, priority, salt)| Op::Add {
                shared,
                suffix,
                max_tokens,
                priority,
                salt,
            }),
        6 => Just(Op::Step),
        1 => any::<usize>().prop_map(Op::Abort),
        1 => any::<usize>().prop_map(Op::AbortMidStep),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Finished,
    Aborted,
}

#[derive(Debug)]
struct Req {
    prompt_len: usize,
    /// Prompt, then the outputs sampled for it.
    tokens: Vec<u32>,
    salt: u64,
    max_tokens: usize,
    outcome: Option<Outcome>,
}

struct World {
    sched: Scheduler,
    runner: FakeRunner,
    reqs: HashMap<u64, Req>,
    salts: HashMap<u64, u64>,
    /// Live requests in the order they were added.
    live: Vec<u64>,
    next_id: u64,
}

impl World {
    fn new(cfg: SchedConfig, kv: KvManager) -> Self {
        let sched = Scheduler::new(cfg, kv).unwrap();
        let runner = FakeRunner::new(&sched);
        Self {
            sched,
            runner,
            reqs: HashMap::new(),
            salts: HashMap::new(),
            live: Vec::new(),
            next_id: 0,
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Add {
                shared,
                suffix,
                max_tokens,
                priority,
                salt,
            } => {
                let mut prompt = SHARED[..shared].to_vec();
                prompt.extend(suffix);
                if prompt.is_empty() {
                    prompt.push(1);
                }
                self.add(prompt, max_tokens, priority, salt);
            }
            Op::Step => self.step(None),
            Op::Abort(n) => {
                if let Some(id) = self.pick(n) {
                    self.end(id, Outcome::Aborted);
                    self.sched.abort(id).unwrap();
                    self.check_state();
                }
            }
            Op::AbortMidStep(n) => self.step(Some(n)),
        }
    }

    fn pick(&self, n: usize) -> Option<u64> {
        (!self.live.is_empty()).then(|| self.live[n % self.live.len()])
    }

    fn end(&mut self, id: u64, outcome: Outcome) {
        let req = self.reqs.get_mut(&id).unwrap();
        assert_eq!(req.outcome, None, "request {id} ended twice");
        req.outcome = Some(outcome);
        self.live.retain(|&l| l != id);
    }

    fn add(&mut self, prompt: Vec<u32>, max_tokens: usize, priority: i32, salt: u64) {
        let id = self.next_id;
        self.next_id += 1;
        let total = prompt.len() + max_tokens;
        let step = self.sched.config().max_batched_tokens;
        let kv = self.sched.kv();
        let fits_pool = kv.max_blocks_held(total - 1, step) <= kv.num_blocks();
        let req = Request {
            id,
            prompt: prompt.clone(),
            max_tokens,
            priority,
            salt,
        };
        match self.sched.add(req) {
            Ok(()) => {
                assert!(total <= MAX_MODEL_LEN && fits_pool);
                self.live.push(id);
                self.salts.insert(id, salt);
                self.reqs.insert(
                    id,
                    Req {
                        prompt_len: prompt.len(),
                        tokens: prompt,
                        salt,
                        max_tokens,
                        outcome: None,
                    },
                );
            }
            Err(SchedError::TooLong { .. }) => assert!(total > MAX_MODEL_LEN),
            Err(SchedError::TooBigForPool { .. }) => assert!(!fits_pool),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    fn step(&mut self, abort_mid: Option<usize>) {
        let plan = self.sched.schedule();
        self.check_plan(&plan);
        self.check_state();
        if let Some(id) = abort_mid.and_then(|n| self.pick(n)) {
            self.end(id, Outcome::Aborted);
            self.sched.abort(id).unwrap();
        }
        let sampled = self.runner.run(&plan, &self.salts);
        let finished = self.sched.on_step_done(&sampled);
        for &(id, token) in &sampled {
            let req = &mut self.reqs.get_mut(&id).unwrap();
            if req.outcome.is_none() {
                req.tokens.push(token);
            }
        }
        for &id in &finished {
            let req = &self.reqs[&id];
            assert_eq!(req.tokens.len() - req.prompt_len, req.max_tokens);
            self.end(id, Outcome::Finished);
        }
        for &(id, token) in &sampled {
            if token == STOP && self.sched.contains(id) {
                self.sched.finish(id, FinishReason::Stop).unwrap();
                self.end(id, Outcome::Finished);
            }
        }
        self.check_state();
    }

    fn check_plan(&self, plan: &StepPlan) {
        let cfg = self.sched.config();
        assert!(
            plan.num_tokens() <= cfg.max_batched_tokens,
            "over budget: {plan:?}"
        );
        assert!(self.sched.num_running() <= cfg.max_running);
        let mut ids = HashSet::new();
        for s in &plan.seqs {
            assert!(ids.insert(s.id), "request {} scheduled twice", s.id);
            assert!(
                !plan.preempted.contains(&s.id),
                "request {} preempted and run",
                s.id
            );
            let known = &self.reqs[&s.id].tokens;
            let end = s.start + s.tokens.len();
            assert!(!s.tokens.is_empty());
            assert_eq!(s.tokens, known[s.start..end]);
            assert_eq!(s.sample, end == known.len());
            assert_eq!(
                Some(s.block_tables.as_slice()),
                self.sched.kv().block_tables(s.id)
            );
        }
        for &id in &plan.preempted {
            assert_eq!(self.sched.kv().block_tables(id), None);
        }
    }

    fn check_state(&self) {
        let kv = self.sched.kv();
        let mut holders: HashMap<BlockId, u32> = HashMap::new();
        let mut running = 0;
        for &id in &self.live {
            let req = &self.reqs[&id];
            assert_eq!(self.sched.output(id), Some(&req.tokens[req.prompt_len..]));
            self.runner
                .check_computed(&self.sched, id, &req.tokens, req.salt);
            if let Some(tables) = kv.block_tables(id) {
                running += 1;
                for &b in tables.iter().flatten().filter(|&&b| b != NULL_BLOCK) {
                    *holders.entry(b).or_default() += 1;
                }
            }
        }
        assert_eq!(running, self.sched.num_running());
        assert_eq!(self.live.len(), running + self.sched.num_waiting());
        assert_eq!(
            kv.num_seqs(),
            running,
            "blocks held by a request that is not running"
        );
        assert_eq!(kv.num_used_blocks(), holders.len());
        for b in 0..kv.num_blocks() as BlockId {
            let held = holders.get(&b).copied().unwrap_or(0);
            assert_eq!(kv.ref_count(b), Some(held), "block {b}");
        }
    }
}

/// A generous bound on the steps to drain everything: every request can be preempted and
/// recomputed many times over and still finish.
const DRAIN_STEPS: usize = 20_000;

/// The scheduler's limits, the pool's blocks, block size and prefix caching, and its groups'
/// windows (one group keeping every position, or sliding windows beside it or alone).
type Setup = (SchedConfig, usize, usize, bool, Vec<Option<usize>>);

fn scheduler_config() -> impl Strategy<Value = Setup> {
    (
        1usize..=16,
        1usize..=6,
        2usize..=48,
        1usize..=4,
        prop::bool::weighted(0.8),
        prop_oneof![
            2 => Just(vec![None]),
            1 => (2usize..=9).prop_map(|w| vec![None, Some(w)]),
            1 => (2usize..=9, 2usize..=9).prop_map(|(a, b)| vec![Some(a), Some(b), None]),
            1 => (2usize..=9).prop_map(|w| vec![Some(w)]),
        ],
    )
        .prop_map(
            |(budget, running, blocks, block_size, prefix_caching, windows)| {
                let cfg = SchedConfig {
                    max_batched_tokens: budget,
                    max_running: running.min(budget),
                    max_model_len: MAX_MODEL_LEN,
                };
                (cfg, blocks, block_size, prefix_caching, windows)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_request_ends_with_the_outputs_of_a_lone_run(
        (cfg, num_blocks, block_size, prefix_caching, windows) in scheduler_config(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let kv = KvManager::with_groups(num_blocks, block_size, prefix_caching, &windows).unwrap();
        let mut w = World::new(cfg, kv);
        for op in ops {
            w.apply(op);
        }
        let mut steps = 0;
        while !w.sched.is_idle() {
            prop_assert!(steps < DRAIN_STEPS, "stuck: {:?}", w.sched);
            w.step(None);
            steps += 1;
        }
        prop_assert_eq!(w.sched.kv_blocks_free(), num_blocks);
        prop_assert_eq!(w.sched.kv_blocks_used(), 0);
        for (id, req) in &w.reqs {
            let expected = expected_output(&req.tokens[..req.prompt_len], req.salt, req.max_tokens, true);
            let output = &req.tokens[req.prompt_len..];
            match req.outcome {
                Some(Outcome::Finished) => prop_assert_eq!(output, &expected[..], "request {}", id),
                Some(Outcome::Aborted) => prop_assert!(expected.starts_with(output), "request {}", id),
                None => prop_assert!(false, "request {} never ended", id),
            }
        }
    }
}
