//! Activation / workspace bytes of inference: the buffers one forward step needs beside weights
//! and KV cache. The engine's step plan allocates exactly these buffers, so this is the number
//! the planner and the running server both use.
//!
//! Model: one layer's buffers are live at a time (layers run in sequence and reuse them);
//! attention is flash-style (scores are tiled, never `[tokens × ctx]`); logits are computed in
//! f32 only for the positions that are sampled (one per sequence per step).

use serde::Serialize;

use crate::decoder_config::DecoderConfig;

/// Score tile width of flash-style attention.
pub const ATTENTION_TILE: u64 = 256;

/// Tokens of one forward step unless told otherwise: a prompt longer than this is computed in
/// chunks of it (`forja run`, the server's scheduler), and `forja plan --batch` prices it.
pub const DEFAULT_STEP_TOKENS: u64 = 512;

/// The shape of one engine step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepShape {
    /// Tokens processed in one forward step (prefill chunk + decode tokens), i.e. `--batch`.
    pub step_tokens: u64,
    /// Sequences sampled in one step (concurrent users).
    pub num_seqs: u64,
    /// Bytes per activation element: 2 on GPUs (f16/bf16), 4 on CPUs (f32).
    pub act_bytes: u64,
    /// f32 logits are held for every token of the step, not only the sampled ones: forja's
    /// NVIDIA runner computes the head into one `[step tokens, vocabulary]` buffer.
    pub all_logits: bool,
}

/// MLP width one token actually computes (routed experts plus shared experts for MoE).
pub fn active_intermediate(cfg: &DecoderConfig) -> u64 {
    match &cfg.moe {
        Some(m) => {
            let routed =
                m.experts_per_token * m.expert_intermediate_size + m.shared_intermediate_size;
            if m.dense_layers.is_empty() {
                routed
            } else {
                routed.max(cfg.intermediate_size)
            }
        }
        None => cfg.intermediate_size,
    }
}

/// Workspace bytes for one step of `shape`.
pub fn inference_workspace_bytes(cfg: &DecoderConfig, shape: StepShape) -> u64 {
    let t = shape.step_tokens.max(1);
    let h = cfg.hidden_size;
    let i = active_intermediate(cfg);
    let q = cfg.q_dim();
    // residual, normed input, attention output; q, k, v; gate, up, activated product.
    let per_token = 3 * h + q + cfg.k_dim() + cfg.v_dim() + 3 * i;
    let router = cfg.moe.as_ref().map_or(0, |m| m.num_experts);
    let hidden = t * (per_token + router) * shape.act_bytes;
    // Flash-style score tiles in f32, one per head and token in the step.
    let scores = t * cfg.num_heads * ATTENTION_TILE * 4;
    // f32 logits for the sampled positions, plus the same again for sampling's sort/softmax;
    // on the GPU a buffer for every token of the step.
    let sampled = shape.num_seqs.max(1) * cfg.vocab_size * 4 * 2;
    let logits = if shape.all_logits {
        sampled.max(t * cfg.vocab_size * 4)
    } else {
        sampled
    };
    hidden + scores + logits
}
