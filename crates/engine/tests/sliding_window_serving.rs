//! The server's paged pool with layers that keep a sliding window (tiny Gemma 3: sliding,
//! global, sliding, window 6): each sequence has a block table per layer group, the sliding
//! groups give blocks back as their window moves on, and requests served together in small
//! steps give the tokens each gives alone with a cache that keeps every position it needs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use forja_arch::kv_cache::KvGroups;
use forja_engine::serving::{Engine, ServingConfig};
use forja_engine::{GenerateParams, LoadedModel, SamplingParams};
use forja_kv::KvManager;

const MAX_TOKENS: usize = 10;
const BLOCK: usize = 4;
const STEP: usize = 16;

fn params() -> GenerateParams {
    GenerateParams {
        sampling: SamplingParams::greedy(),
        max_tokens: MAX_TOKENS,
        ..Default::default()
    }
}

/// Greedy tokens for `prompt` alone, from an empty single-sequence cache.
fn alone(model: &LoadedModel, prompt: &[u32]) -> Vec<u32> {
    common::greedy_alone(model, prompt, MAX_TOKENS)
}

fn engine(model: &Arc<LoadedModel>, kv_bytes: u64) -> Engine {
    let cfg = ServingConfig {
        block_size: BLOCK,
        kv_bytes,
        // Small steps: prompts are computed in chunks beside other sequences' decodes.
        max_batched_tokens: STEP,
        max_running: 8,
        ..Default::default()
    };
    Engine::start(Arc::clone(model), &cfg).unwrap().0
}

fn serve(engine: &Engine, prompts: &[Vec<u32>]) -> Vec<Vec<u32>> {
    common::serve_all(engine, prompts, &params())
        .into_iter()
        .map(|s| s.iter().map(|x| x.token).collect())
        .collect()
}

#[test]
fn sliding_window_groups_give_blocks_back_and_keep_the_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(common::tiny_model(dir.path(), "gemma3"));
    // Learn a block's bytes from a first pool.
    let probe = engine(&model, 1 << 20);
    assert_eq!(
        probe.pool.groups, 3,
        "sliding, sliding, global: one layer a group"
    );
    let block_bytes = probe.pool.bytes / probe.pool.num_blocks as u64;
    drop(probe);

    let prompts: Vec<Vec<u32>> = (0..4)
        .map(|r| {
            (0..110 + 7 * r)
                .map(|i| ((i * 37 + r * 11) % 250 + 3) as u32)
                .collect()
        })
        .collect();
    // A sequence of up to 130 tokens holds 33 blocks of the global group and at most 7 of each
    // sliding one (5 positions before a step of 16, plus one block where they straddle): 47.
    // Four fit in 188 blocks together; were the sliding groups to keep every position, each
    // would need 99 and the requests would preempt each other.
    let engine = engine(&model, block_bytes * 188);
    assert_eq!(engine.pool.num_blocks, 188);
    assert_eq!(
        engine.pool.max_model_len, 512,
        "the context, not the pool, bounds a request"
    );
    let served = serve(&engine, &prompts);
    for (i, (p, got)) in prompts.iter().zip(&served).enumerate() {
        assert_eq!(got.len(), MAX_TOKENS);
        assert_eq!(*got, alone(&model, p), "request {i}");
    }
    let g = &engine.gauges;
    assert_eq!(g.preemptions.load(Ordering::Relaxed), 0);
    assert!(g.steps.load(Ordering::Relaxed) > 110 / STEP as u64);
    drop(engine);

    // With room to spare, a prompt sharing the first 96 tokens of one served before finds them
    // in the prefix cache: the global group's blocks all along, the sliding groups' last two
    // (its first query, at 96, sees from 91).
    let engine = self::engine(&model, block_bytes * 400);
    let g = &engine.gauges;
    serve(&engine, &prompts[..1]);
    let mut again = prompts[0][..96].to_vec();
    again.extend([5, 6, 7]);
    let out = serve(&engine, std::slice::from_ref(&again));
    assert_eq!(out[0], alone(&model, &again));
    assert_eq!(g.prefix_hit_tokens.load(Ordering::Relaxed), 96);
}

#[test]
fn the_planner_prices_what_the_pool_holds_at_most() {
    // One rule on both sides: the planner's paged price (`arch::kv_cache`) and the block
    // manager's bound (`kv::KvManager::max_blocks_held`, which the scheduler admits by).
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny_model(dir.path(), "gemma3");
    let groups = model.decoder.kv_groups();
    assert_eq!(groups, KvGroups::of(&model.decoder.config));
    for windows in [
        groups.windows.clone(),
        vec![None],
        vec![Some(4096)],
        vec![None, Some(512), Some(512)],
        vec![Some(7), None, Some(33)],
    ] {
        let kv_windows: Vec<Option<usize>> =
            windows.iter().map(|w| w.map(|w| w as usize)).collect();
        for bs in [1usize, 4, 16, 64] {
            let kv = KvManager::with_groups(1024, bs, true, &kv_windows).unwrap();
            let g = KvGroups {
                group_size: 1,
                windows: windows.clone(),
                layers: Vec::new(),
            };
            for tokens in [1usize, 5, 100, 513, 4096, 100_000] {
                for step in [1usize, 16, 512] {
                    assert_eq!(
                        kv.max_blocks_held(tokens, step) as u64,
                        g.sequence_blocks(tokens as u64, step as u64, bs as u64),
                        "{windows:?}, block {bs}, {tokens} tokens, step {step}"
                    );
                }
            }
        }
    }
}

#[test]
fn one_sequence_pools_hold_the_context_and_the_planner_prices_their_bytes() {
    // A chat's pool (`ServingConfig::one_sequence`, what `forja run --device cuda` asks for),
    // sized by the planner's paged price, holds the whole context: for a model with sliding
    // groups and one without; and a block of the pool costs what the price counts per block.
    let dir = tempfile::tempdir().unwrap();
    for family in ["gemma3", "llama"] {
        let sub = dir.path().join(family);
        std::fs::create_dir_all(&sub).unwrap();
        let model = Arc::new(common::tiny_model(&sub, family));
        let dc = model.decoder.config.clone();
        let mut cfg = ServingConfig::one_sequence(
            &dc,
            forja_engine::RunnerDevice::Cpu,
            forja_engine::DeviceWeights::Stored,
        );
        let (engine, _thread) = Engine::start(Arc::clone(&model), &cfg).unwrap();
        assert_eq!(
            engine.pool.max_model_len, dc.max_context as usize,
            "{family}"
        );
        // Without the spare block the context still fits; one block fewer per group does not.
        let groups = model.decoder.kv_groups().windows.len();
        let block = engine.pool.bytes / engine.pool.num_blocks as u64;
        let step = cfg.max_batched_tokens as u64;
        let bs = cfg.block_size as u64;
        let dtype = match model.decoder.kv_dtype() {
            candle_core::DType::F16 => forja_arch::KvDtype::F16,
            _ => forja_arch::KvDtype::F32,
        };
        let priced = forja_arch::kv_cache::paged_kv_bytes(&dc, dc.max_context, step, dtype, bs);
        let held = KvGroups::of(&dc).sequence_blocks(dc.max_context, step, bs);
        assert_eq!(
            priced,
            held * block,
            "{family}: the price is the pool's blocks"
        );
        drop(engine);
        cfg.kv_bytes = priced - block * groups as u64;
        let (engine, _thread) = Engine::start(Arc::clone(&model), &cfg).unwrap();
        assert!(
            engine.pool.max_model_len < dc.max_context as usize,
            "{family}"
        );
    }
}
