//! A conversation kept in a cache whose sliding-window layers dropped old positions (tiny
//! Mistral, window 6): a prompt that extends the conversation reuses the cache, one that departs
//! from it before the windows' reach is computed from the start — both give the tokens a fresh
//! cache gives.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use forja_engine::{GenerateParams, LoadedModel, SamplingParams, generate};
use forja_models::KvCache;

fn params() -> GenerateParams {
    GenerateParams {
        sampling: SamplingParams::greedy(),
        max_tokens: 6,
        ..Default::default()
    }
}

/// Tokens greedy decoding gives for `prompt` from an empty cache.
fn fresh(model: &LoadedModel, prompt: &[u32]) -> Vec<u32> {
    common::greedy_alone(model, prompt, params().max_tokens)
}

#[test]
fn a_conversation_departing_before_the_windows_reach_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny_model(dir.path(), "mistral");
    let first: Vec<u32> = (0..100).map(|i| (i * 37 % 250 + 3) as u32).collect();
    let mut cache = model.new_cache();
    let mut cached = Vec::new();
    let g = generate(
        &model,
        &first,
        &mut cache,
        &mut cached,
        &params(),
        &mut |_| true,
    )
    .unwrap();
    let tokens: Vec<u32> = g.tokens.iter().map(|t| t.token).collect();
    assert_eq!(tokens, fresh(&model, &first));

    // Extending the conversation by 100 tokens keeps what the cache holds; the sliding layers'
    // buffers (window 6 plus a 100-token step: 128 slots) wrap around.
    let mut next = cached.clone();
    next.extend((0..100).map(|i| (i * 13 % 250 + 2) as u32));
    let held = cached.len();
    let g = generate(
        &model,
        &next,
        &mut cache,
        &mut cached,
        &params(),
        &mut |_| true,
    )
    .unwrap();
    assert_eq!(g.prefill_tokens, next.len() - held);
    assert_eq!(
        g.tokens.iter().map(|t| t.token).collect::<Vec<_>>(),
        fresh(&model, &next)
    );
    // The windows no longer reach the start of the conversation.
    assert!(!cache.can_keep(20));

    // Departing at token 20: computed from the start, the same tokens as a fresh cache.
    let mut other = first[..20].to_vec();
    other.extend((0..30).map(|i| (i * 11 % 240 + 5) as u32));
    let g = generate(
        &model,
        &other,
        &mut cache,
        &mut cached,
        &params(),
        &mut |_| true,
    )
    .unwrap();
    assert_eq!(g.prefill_tokens, other.len());
    assert_eq!(
        g.tokens.iter().map(|t| t.token).collect::<Vec<_>>(),
        fresh(&model, &other)
    );
}
