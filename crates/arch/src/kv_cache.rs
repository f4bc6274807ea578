//! KV-cache bytes: `2 × layers × kv_heads × head_dim × tokens × bytes`, made exact per layer:
//! sliding-window layers hold at most their window, cross-attention layers hold no per-token
//! entries, and MLA layers hold one compressed latent (`kv_lora_rank + rope dims`) per token.

use crate::decoder_config::{DecoderConfig, LayerAttention};
use crate::weight_format::KvDtype;

/// Elements one token adds to layer `i`'s cache (K and V together).
pub fn kv_elems_per_token(cfg: &DecoderConfig, layer: usize) -> u64 {
    if cfg.layers.get(layer) == Some(&LayerAttention::Cross) {
        return 0;
    }
    match &cfg.mla {
        Some(m) => m.kv_lora_rank + m.qk_rope_head_dim,
        None => cfg.k_dim() + cfg.v_dim(),
    }
}

/// A sliding-window layer's cache holds a whole number of blocks of this many positions.
pub const KV_RING_ALIGN: u64 = 64;

/// Positions a sliding-window layer of `window` keeps while a step writes `step_tokens`: its
/// window and the step — the step's first query still sees the `window − 1` positions before
/// it (what llama.cpp's sliding-window cache keeps too) — rounded up to whole blocks of
/// [`KV_RING_ALIGN`]. The size of `forja_models::ContiguousKvCache`'s ring.
pub fn sliding_kv_slots(window: u64, step_tokens: u64) -> u64 {
    (window.saturating_sub(1) + step_tokens.max(1)).next_multiple_of(KV_RING_ALIGN)
}

/// Tokens layer `i` keeps for a sequence of `ctx_tokens` computed `step_tokens` at a time (a
/// sliding-window layer: at most [`sliding_kv_slots`]).
pub fn kv_tokens_kept(cfg: &DecoderConfig, layer: usize, ctx_tokens: u64, step_tokens: u64) -> u64 {
    match cfg.layers.get(layer) {
        Some(LayerAttention::Sliding { window }) => {
            ctx_tokens.min(sliding_kv_slots(*window, step_tokens))
        }
        Some(LayerAttention::Cross) => 0,
        _ => ctx_tokens,
    }
}

/// Bytes one token adds while every layer still keeps it (context shorter than any window).
pub fn kv_bytes_per_token(cfg: &DecoderConfig, dtype: KvDtype) -> f64 {
    let elems: u64 = (0..cfg.layers.len())
        .map(|i| kv_elems_per_token(cfg, i))
        .sum();
    elems as f64 * dtype.bytes_per_elem()
}

/// Bytes of the cache of one sequence holding `ctx_tokens` tokens, computed `step_tokens` at a
/// time (see [`kv_tokens_kept`]; a decode step is 1).
pub fn kv_bytes(cfg: &DecoderConfig, ctx_tokens: u64, step_tokens: u64, dtype: KvDtype) -> u64 {
    let elems: u128 = (0..cfg.layers.len())
        .map(|i| {
            u128::from(kv_elems_per_token(cfg, i))
                * u128::from(kv_tokens_kept(cfg, i, ctx_tokens, step_tokens))
        })
        .sum();
    // `as` saturates for floats: an absurd request becomes u64::MAX bytes, never a wrap.
    (elems as f64 * dtype.bytes_per_elem()).ceil() as u64
}
