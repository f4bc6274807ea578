//! Scheduling worked step by step: chunked prefill, decode joining and leaving, prefix hits,
//! preemption by recompute, admission order, aborts, and what `add` refuses.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use std::collections::HashMap;

use common::{FakeRunner, STOP, expected_output};
use forja_kv::KvManager;
use forja_sched::{FinishReason, Request, SchedConfig, SchedError, Scheduler, StepPlan};

fn config(max_batched_tokens: usize, max_running: usize) -> SchedConfig {
    SchedConfig {
        max_batched_tokens,
        max_running,
        max_model_len: 64,
    }
}

fn scheduler(num_blocks: usize, block_size: usize, cfg: SchedConfig) -> Scheduler {
    Scheduler::new(cfg, KvManager::new(num_blocks, block_size, true).unwrap()).unwrap()
}

/// `(id, start, tokens, sample)` of each scheduled request.
fn chunks(plan: &StepPlan) -> Vec<(u64, usize, Vec<u32>, bool)> {
    plan.seqs
        .iter()
        .map(|s| (s.id, s.start, s.tokens.clone(), s.sample))
        .collect()
}

/// Adds `reqs` and steps with the fake runner until idle, checking the cache contents after
/// every step. With `stops`, a sampled [`STOP`] finishes its request. Returns each request's
/// outputs and every plan.
fn run_to_end(
    sched: &mut Scheduler,
    reqs: Vec<Request>,
    stops: bool,
) -> (HashMap<u64, Vec<u32>>, Vec<StepPlan>) {
    let salts: HashMap<u64, u64> = reqs.iter().map(|r| (r.id, r.salt)).collect();
    let mut tokens: HashMap<u64, Vec<u32>> =
        reqs.iter().map(|r| (r.id, r.prompt.clone())).collect();
    let prompt_lens: HashMap<u64, usize> = reqs.iter().map(|r| (r.id, r.prompt.len())).collect();
    for r in reqs {
        sched.add(r).unwrap();
    }
    let mut runner = FakeRunner::new(sched);
    let mut plans = Vec::new();
    while !sched.is_idle() {
        assert!(plans.len() < 1000, "not idle after 1000 steps");
        let plan = sched.schedule();
        let sampled = runner.run(&plan, &salts);
        sched.on_step_done(&sampled);
        for &(id, t) in &sampled {
            tokens.get_mut(&id).unwrap().push(t);
            if stops && t == STOP && sched.contains(id) {
                sched.finish(id, FinishReason::Stop).unwrap();
            }
        }
        for (&id, toks) in &tokens {
            if sched.contains(id) {
                runner.check_computed(sched, id, toks, salts[&id]);
            }
        }
        plans.push(plan);
    }
    assert_eq!(sched.kv_blocks_free(), sched.kv().num_blocks());
    let outputs = tokens
        .into_iter()
        .map(|(id, t)| (id, t[prompt_lens[&id]..].to_vec()))
        .collect();
    (outputs, plans)
}

#[test]
fn config_limits_are_checked() {
    let bad = [
        config(0, 1),
        config(4, 0),
        SchedConfig {
            max_model_len: 0,
            ..config(4, 1)
        },
        config(2, 3),
    ];
    for cfg in bad {
        let kv = KvManager::new(4, 4, true).unwrap();
        let err = Scheduler::new(cfg, kv).unwrap_err();
        assert!(matches!(err, SchedError::InvalidConfig { .. }), "{cfg:?}");
    }
    let err = config(2, 3).validate().unwrap_err();
    assert!(err.to_string().contains("max_batched_tokens = 2"), "{err}");
}

#[test]
fn add_refuses_requests_that_can_never_run() {
    // 4 blocks of 4 slots hold 16 tokens; max_model_len is 64.
    let mut s = scheduler(4, 4, config(8, 2));
    let cases = [
        (
            Request::new(1, vec![], 4),
            SchedError::EmptyPrompt { id: 1 },
        ),
        (
            Request::new(2, vec![1], 0),
            SchedError::ZeroMaxTokens { id: 2 },
        ),
        (
            Request::new(3, vec![1; 60], 5),
            SchedError::TooLong {
                id: 3,
                prompt: 60,
                max_tokens: 5,
                max_model_len: 64,
            },
        ),
        (
            Request::new(4, vec![1; 10], 8),
            SchedError::TooBigForPool {
                id: 4,
                blocks: 5,
                num_blocks: 4,
            },
        ),
    ];
    for (req, err) in cases {
        assert_eq!(s.add(req), Err(err));
    }
    // Exactly fits: 10 + 7 - 1 = 16 slots, since the last output is never fed.
    s.add(Request::new(5, vec![1; 10], 7)).unwrap();
    let err = s.add(Request::new(5, vec![2], 1)).unwrap_err();
    assert_eq!(err, SchedError::DuplicateId { id: 5 });
    assert!(err.to_string().starts_with("request 5: "), "{err}");
    assert_eq!(s.num_waiting(), 1);
}

#[test]
fn chunked_prefill_splits_a_long_prompt_over_steps() {
    let mut s = scheduler(8, 4, config(4, 2));
    s.add(Request::new(1, (0..10).collect(), 2)).unwrap();

    let plan = s.schedule();
    assert_eq!(chunks(&plan), [(1, 0, vec![0, 1, 2, 3], false)]);
    assert_eq!(plan.seqs[0].block_tables[0].len(), 1);
    assert_eq!(s.on_step_done(&[]), Vec::<u64>::new());

    let plan = s.schedule();
    assert_eq!(chunks(&plan), [(1, 4, vec![4, 5, 6, 7], false)]);
    assert_eq!(plan.seqs[0].block_tables[0].len(), 2);
    s.on_step_done(&[]);

    let plan = s.schedule();
    assert_eq!(chunks(&plan), [(1, 8, vec![8, 9], true)]);
    assert_eq!(plan.seqs[0].block_tables[0].len(), 3);
    assert_eq!(s.on_step_done(&[(1, 42)]), Vec::<u64>::new());
    assert_eq!(s.output(1), Some(&[42][..]));

    let plan = s.schedule();
    assert_eq!(chunks(&plan), [(1, 10, vec![42], true)]);
    assert_eq!(s.on_step_done(&[(1, 43)]), [1]);
    assert!(s.is_idle());
    assert_eq!(s.kv_blocks_used(), 0);
    assert_eq!(s.stats().length, 1);
}

#[test]
fn decoding_requests_join_and_leave_every_step() {
    let mut s = scheduler(16, 4, config(16, 4));
    s.add(Request::new(1, vec![1, 2, 3], 2)).unwrap();
    let plan = s.schedule();
    assert_eq!(chunks(&plan), [(1, 0, vec![1, 2, 3], true)]);
    // Arrives while the step runs; joins the next one.
    s.add(Request::new(2, vec![4, 5], 3)).unwrap();
    s.on_step_done(&[(1, 7)]);

    let plan = s.schedule();
    assert_eq!(
        chunks(&plan),
        [(1, 3, vec![7], true), (2, 0, vec![4, 5], true)]
    );
    assert_eq!(s.on_step_done(&[(1, 8), (2, 9)]), [1]);
    assert_eq!(s.num_running(), 1);
    assert!(!s.contains(1));

    let plan = s.schedule();
    assert_eq!(chunks(&plan), [(2, 2, vec![9], true)]);
    assert_eq!(s.on_step_done(&[(2, 10)]), Vec::<u64>::new());
    s.finish(2, FinishReason::Stop).unwrap();
    assert!(s.is_idle());
    assert_eq!(s.stats().stopped, 1);
}

#[test]
fn a_request_sharing_a_prompt_skips_its_cached_blocks() {
    let mut s = scheduler(16, 4, config(16, 4));
    let prompt: Vec<u32> = (0..9).collect();
    s.add(Request::new(1, prompt.clone(), 4)).unwrap();
    s.schedule();
    s.on_step_done(&[(1, 100)]);

    s.add(Request::new(2, prompt.clone(), 4)).unwrap();
    s.add(Request::new(3, prompt.clone(), 4).with_salt(1))
        .unwrap();
    let plan = s.schedule();
    assert_eq!(
        chunks(&plan),
        [
            (1, 9, vec![100], true),
            (2, 8, vec![8], true),
            (3, 0, prompt.clone(), true)
        ]
    );
    assert_eq!(
        plan.seqs[0].block_tables[0][..2],
        plan.seqs[1].block_tables[0][..2]
    );
    assert_eq!(s.num_computed(2), Some(8));
    assert!((s.prefix_hit_rate() - 8.0 / 27.0).abs() < 1e-12);
}

#[test]
fn preemption_recomputes_the_latest_request_with_the_same_outputs() {
    let reqs = || {
        vec![
            Request::new(1, vec![1, 2, 3, 4], 7),
            Request::new(2, vec![5, 6, 7, 8], 7),
        ]
    };
    // Each needs 5 blocks of 2 at full length; together they need 10 of the 6.
    let mut small = scheduler(6, 2, config(16, 4));
    let (outputs, plans) = run_to_end(&mut small, reqs(), false);
    assert!(small.stats().preemptions > 0);
    let step = plans.iter().position(|p| !p.preempted.is_empty()).unwrap();
    assert_eq!(plans[step].preempted, [2]);
    assert!(plans[step].seqs.iter().all(|s| s.id != 2));
    // Readmitted later with its prompt and outputs so far in one chunk, after its first block,
    // which stayed in the prefix cache (its last blocks were evicted first).
    let sampled_before = plans[..step]
        .iter()
        .flat_map(|p| &p.seqs)
        .filter(|s| s.id == 2 && s.sample)
        .count();
    let back = plans[step..]
        .iter()
        .flat_map(|p| &p.seqs)
        .find(|s| s.id == 2)
        .unwrap();
    assert_eq!(back.start, 2);
    assert_eq!(back.start + back.tokens.len(), 4 + sampled_before);
    assert!(back.sample);

    let mut roomy = scheduler(32, 2, config(16, 4));
    let (alone, _) = run_to_end(&mut roomy, reqs(), false);
    assert_eq!(roomy.stats().preemptions, 0);
    assert_eq!(outputs, alone);
    for r in reqs() {
        assert_eq!(
            outputs[&r.id],
            expected_output(&r.prompt, r.salt, r.max_tokens, false)
        );
    }
}

#[test]
fn admission_follows_priority_then_arrival() {
    let mut s = scheduler(16, 4, config(8, 1));
    s.add(Request::new(1, vec![1], 1)).unwrap();
    s.add(Request::new(2, vec![2], 1).with_priority(-1))
        .unwrap();
    s.add(Request::new(3, vec![3], 1).with_priority(-1))
        .unwrap();
    let mut order = Vec::new();
    while !s.is_idle() {
        let plan = s.schedule();
        assert_eq!(plan.seqs.len(), 1);
        let id = plan.seqs[0].id;
        order.push(id);
        assert_eq!(s.on_step_done(&[(id, 0)]), [id]);
    }
    assert_eq!(order, [2, 3, 1]);
}

#[test]
fn a_waiting_request_that_does_not_fit_holds_back_later_ones() {
    let mut s = scheduler(4, 4, config(32, 4));
    s.add(Request::new(1, vec![1; 12], 4)).unwrap();
    s.schedule();
    s.on_step_done(&[(1, 1)]);
    assert_eq!(s.kv_blocks_free(), 1);
    // Needs two blocks; one is free. The one-token request behind it would fit but waits.
    s.add(Request::new(2, vec![2; 8], 1)).unwrap();
    s.add(Request::new(3, vec![3], 1)).unwrap();
    let plan = s.schedule();
    assert_eq!(chunks(&plan), [(1, 12, vec![1], true)]);
    assert_eq!((s.num_running(), s.num_waiting()), (1, 2));
}

#[test]
fn the_budget_is_shared_in_order_and_prefill_takes_what_is_left() {
    let mut s = scheduler(16, 4, config(4, 2));
    for id in 1..=3 {
        s.add(Request::new(id, vec![id as u32; 3], 2)).unwrap();
    }
    let plan = s.schedule();
    assert_eq!(
        chunks(&plan),
        [(1, 0, vec![1; 3], true), (2, 0, vec![2], false)]
    );
    assert_eq!(plan.num_tokens(), 4);
    s.on_step_done(&[(1, 9)]);
    let plan = s.schedule();
    assert_eq!(
        chunks(&plan),
        [(1, 3, vec![9], true), (2, 1, vec![2, 2], true)]
    );
    assert_eq!((s.num_running(), s.num_waiting()), (2, 1));
}

#[test]
fn aborts_free_blocks_and_late_tokens_are_ignored() {
    let mut s = scheduler(8, 4, config(8, 2));
    s.add(Request::new(1, vec![1, 2, 3], 4)).unwrap();
    s.add(Request::new(2, vec![4; 20], 4)).unwrap();
    let plan = s.schedule();
    assert_eq!(plan.seqs.len(), 2);
    s.abort(1).unwrap();
    assert_eq!(s.on_step_done(&[(1, 5)]), Vec::<u64>::new());
    assert_eq!(s.output(1), None);
    assert_eq!(s.kv_blocks_used(), 2);
    s.abort(2).unwrap();
    assert_eq!(s.kv_blocks_used(), 0);
    assert_eq!(s.abort(2), Err(SchedError::UnknownRequest { id: 2 }));

    s.add(Request::new(3, vec![1], 1)).unwrap();
    s.abort(3).unwrap();
    assert!(s.is_idle());
    assert_eq!(s.stats().aborted, 3);
}

#[test]
fn a_missing_sample_feeds_the_last_token_again() {
    let mut s = scheduler(8, 4, config(8, 2));
    s.add(Request::new(1, vec![1, 2, 3], 4)).unwrap();
    s.schedule();
    s.on_step_done(&[]);
    assert_eq!(chunks(&s.schedule()), [(1, 2, vec![3], true)]);
    // Planning again without reporting drops the plan: the same chunk comes back.
    assert_eq!(chunks(&s.schedule()), [(1, 2, vec![3], true)]);
    s.on_step_done(&[(1, 6)]);
    assert_eq!(chunks(&s.schedule()), [(1, 3, vec![6], true)]);
}

#[test]
fn stop_tokens_end_requests_with_the_outputs_of_a_lone_run() {
    let reqs: Vec<Request> = (0..6)
        .map(|id| Request::new(id, (0..5 + id as u32).collect(), 12).with_salt(id % 2))
        .collect();
    let mut s = scheduler(12, 2, config(6, 3));
    let (outputs, _) = run_to_end(&mut s, reqs.clone(), true);
    for r in reqs {
        assert_eq!(
            outputs[&r.id],
            expected_output(&r.prompt, r.salt, r.max_tokens, true)
        );
    }
}
