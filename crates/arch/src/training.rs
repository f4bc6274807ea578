//! Fine-tuning memory: full fine-tuning, LoRA and QLoRA — on a GPU trainer ([`train_bytes`]),
//! and for LoRA and QLoRA on forja's own CPU trainer ([`cpu_train_bytes`]).
//!
//! GPU assumptions (stated so measurements can check them): mixed precision keeps an fp32 master copy
//! of trainable weights; AdamW keeps two fp32 moments (adamw-8bit: two 8-bit moments with one fp32
//! scale per 2048 values, as bitsandbytes); LoRA adapters are fp32; activations are bf16 with
//! memory-efficient attention (no `[seq × seq]` scores kept); logits are upcast to fp32 for the loss.

use serde::Serialize;

use crate::decoder_config::DecoderConfig;
use crate::tensors::{TensorKind, TensorSpec};
use crate::tokenizer::TokenizerShape;
use crate::weights::WeightBytes;
use crate::workspace::active_intermediate;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainMode {
    FullFinetune,
    Lora,
    Qlora,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    Adamw,
    Adamw8bit,
}

impl Optimizer {
    /// Optimizer-state bytes per trainable parameter.
    pub fn state_bytes_per_param(self) -> f64 {
        match self {
            Optimizer::Adamw => 8.0,
            Optimizer::Adamw8bit => 2.0 + 2.0 * 4.0 / 2048.0,
        }
    }
}

/// Projections a LoRA adapter can attach to (PEFT's `target_modules`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl LoraTarget {
    pub const ALL: [LoraTarget; 7] = [
        LoraTarget::Q,
        LoraTarget::K,
        LoraTarget::V,
        LoraTarget::O,
        LoraTarget::Gate,
        LoraTarget::Up,
        LoraTarget::Down,
    ];

    /// Accepts `q`, `q_proj`, `gate_proj`, `o_proj`, … and `all`.
    pub fn parse_list(s: &str) -> Result<Vec<LoraTarget>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let t = match part.trim_end_matches("_proj") {
                "all" | "all-linear" => {
                    out.extend(Self::ALL);
                    continue;
                }
                "q" => LoraTarget::Q,
                "k" => LoraTarget::K,
                "v" => LoraTarget::V,
                "o" => LoraTarget::O,
                "gate" => LoraTarget::Gate,
                "up" => LoraTarget::Up,
                "down" => LoraTarget::Down,
                other => {
                    return Err(format!(
                        "unknown LoRA target {other:?}: use q, k, v, o, gate, up, down or all"
                    ));
                }
            };
            out.push(t);
        }
        out.sort();
        out.dedup();
        if out.is_empty() {
            return Err("no LoRA target modules given".into());
        }
        Ok(out)
    }

    /// Whether this target covers the GGUF-named tensor `name` (fused tensors count once).
    fn covers(self, name: &str) -> bool {
        let base = name.split('.').nth(2).unwrap_or(name);
        match self {
            LoraTarget::Q => matches!(
                base,
                "attn_q" | "attn_q_a" | "attn_q_b" | "attn_qkv" | "cross_attn_q"
            ),
            LoraTarget::K => matches!(base, "attn_k" | "attn_kv_a_mqa" | "cross_attn_k"),
            LoraTarget::V => matches!(base, "attn_v" | "attn_kv_b" | "cross_attn_v"),
            LoraTarget::O => matches!(base, "attn_output" | "cross_attn_output"),
            LoraTarget::Gate => matches!(base, "ffn_gate" | "ffn_gate_exps" | "ffn_gate_shexp"),
            LoraTarget::Up => matches!(base, "ffn_up" | "ffn_up_exps" | "ffn_up_shexp"),
            LoraTarget::Down => matches!(base, "ffn_down" | "ffn_down_exps" | "ffn_down_shexp"),
        }
    }
}

/// The training job's shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainShape {
    pub mode: TrainMode,
    pub lora_rank: u64,
    pub lora_targets: Vec<LoraTarget>,
    pub optimizer: Optimizer,
    pub gradient_checkpointing: bool,
    pub micro_batch: u64,
    pub seq_len: u64,
}

/// Training memory, by component, in bytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainBytes {
    pub trainable_params: u64,
    /// LoRA adapter parameters (0 for full fine-tuning).
    pub lora_params: u64,
    pub base_weights: u64,
    pub trainable_weights: u64,
    pub master_weights: u64,
    pub gradients: u64,
    pub optimizer_states: u64,
    pub activations: u64,
    pub logits: u64,
    /// QLoRA: one base matrix dequantized to bf16 for forward and backward.
    pub dequant_workspace: u64,
    /// Bytes the gradients, activations, logits and dequantization workspace above count that
    /// are never alive at once: a step's peak is that of its worst phase (the head's pass, or
    /// the layers' backward), not the sum of every phase's memory. `total` subtracts them.
    pub not_together: u64,
    /// The trainer process itself (CPU trainer: program, tokenizer, thread pools); a GPU's
    /// runtime is the device's overhead instead.
    pub runtime: u64,
    /// Of `runtime`, the tokenizer's tables (CPU trainer).
    pub tokenizer: u64,
}

impl TrainBytes {
    pub fn total(&self) -> u64 {
        self.base_weights
            + self.trainable_weights
            + self.master_weights
            + self.gradients
            + self.optimizer_states
            + self.activations
            + self.logits
            + self.dequant_workspace
            + self.runtime
            - self.not_together
    }
}

/// Σ r·(d_in + d_out) over the targeted projections (every expert of an MoE projection).
pub fn lora_params(tensors: &[TensorSpec], targets: &[LoraTarget], rank: u64) -> u64 {
    tensors
        .iter()
        .filter(|t| matches!(t.kind, TensorKind::Linear | TensorKind::Experts))
        .filter(|t| targets.iter().any(|g| g.covers(&t.name)))
        .map(|t| {
            let (experts, d_out, d_in) = match t.shape.as_slice() {
                [e, o, i] => (*e, *o, *i),
                [o, i] => (1, *o, *i),
                _ => (0, 0, 0),
            };
            experts * rank * (d_in + d_out)
        })
        .sum()
}

/// Activation bytes kept for backward per token per layer (bf16).
fn activation_bytes_per_token_layer(cfg: &DecoderConfig, lora_rank_sum: u64) -> u64 {
    let h = cfg.hidden_size;
    let i = active_intermediate(cfg);
    // norm inputs and outputs (4h), q and attention output (2q), k, v, and the MLP's gate, up,
    // activation and product (4i), plus each adapter's rank-r intermediate; fp32 logsumexp per head.
    2 * (4 * h + 2 * cfg.q_dim() + cfg.k_dim() + cfg.v_dim() + 4 * i + lora_rank_sum)
        + 4 * cfg.num_heads
}

/// Memory of a training step. `base` prices the model in the precision it is trained or
/// frozen in (bf16 for full and LoRA, the quantized format for QLoRA).
pub fn train_bytes(
    cfg: &DecoderConfig,
    tensors: &[TensorSpec],
    base: &WeightBytes,
    shape: &TrainShape,
) -> TrainBytes {
    let tokens = shape.micro_batch.max(1) * shape.seq_len.max(1);
    let opt = shape.optimizer.state_bytes_per_param();
    let lora = match shape.mode {
        TrainMode::FullFinetune => 0,
        _ => lora_params(tensors, &shape.lora_targets, shape.lora_rank),
    };
    let layers = cfg.num_layers.max(1);
    let rank_sum_per_layer = match shape.mode {
        TrainMode::FullFinetune => 0,
        _ => shape.lora_rank * shape.lora_targets.len() as u64,
    };
    let per_layer = activation_bytes_per_token_layer(cfg, rank_sum_per_layer);
    let activations = if shape.gradient_checkpointing {
        layers * tokens * 2 * cfg.hidden_size + tokens * per_layer
    } else {
        layers * tokens * per_layer
    };
    // bf16 logits, their fp32 upcast, and the fp32 gradient.
    let logits = tokens * cfg.vocab_size * (2 + 4 + 4);
    match shape.mode {
        TrainMode::FullFinetune => {
            let p = base.params;
            let half = base.total_bytes <= 3 * p; // trained in 16-bit: keep an fp32 master copy
            TrainBytes {
                trainable_params: p,
                lora_params: 0,
                base_weights: 0,
                trainable_weights: base.total_bytes,
                master_weights: if half { 4 * p } else { 0 },
                gradients: base.total_bytes,
                optimizer_states: (p as f64 * opt).ceil() as u64,
                activations,
                logits,
                dequant_workspace: 0,
                not_together: 0,
                runtime: 0,
                tokenizer: 0,
            }
        }
        TrainMode::Lora | TrainMode::Qlora => {
            let largest = tensors
                .iter()
                .filter(|t| {
                    matches!(
                        t.kind,
                        TensorKind::Linear | TensorKind::Experts | TensorKind::Output
                    )
                })
                .map(|t| match t.kind {
                    TensorKind::Experts => t.n_elems() / t.shape[0].max(1),
                    _ => t.n_elems(),
                })
                .max()
                .unwrap_or(0);
            TrainBytes {
                trainable_params: lora,
                lora_params: lora,
                base_weights: base.total_bytes,
                trainable_weights: 4 * lora,
                master_weights: 0,
                gradients: 4 * lora,
                optimizer_states: (lora as f64 * opt).ceil() as u64,
                activations,
                logits,
                dequant_workspace: if shape.mode == TrainMode::Qlora {
                    2 * 2 * largest
                } else {
                    0
                },
                not_together: 0,
                runtime: 0,
                tokenizer: 0,
            }
        }
    }
}

/// Resident memory of a forja process computing on the CPU (`forja tune`, and the planner uses
/// it for `forja run` and `forja serve` too) beyond its tensors and its tokenizer: the
/// program, thread pools and allocator slack (see [`cpu_runtime_bytes`]). Measured as a QLoRA
/// run's peak resident size less the rest of the plan: 27–41 MB for SmolLM2-135M's runs at
/// 128–512 tokens, 30–66 MB for Qwen2.5-Coder-0.5B's at 128–256
/// (`bench/results/2026-11-29-tune-qlora.md`); `forja run`'s peaks against its plans are in
/// `bench/results/2026-11-29-cpu-run-memory.md`.
pub const CPU_RUNTIME_BYTES: u64 = 32 << 20;

/// Resident memory of a CPU process beyond what its tensors and buffers count:
/// [`CPU_RUNTIME_BYTES`] and the tokenizer's tables, which grow with the vocabulary (6 MB for
/// SmolLM2's 49k tokens, 25 MB for Qwen2.5's 152k).
pub fn cpu_runtime_bytes(tokenizer: &TokenizerShape) -> u64 {
    CPU_RUNTIME_BYTES + tokenizer.heap_bytes()
}

/// f32 logits the CPU trainer's loss head computes at once (its default; the trainer reads it
/// from here, `Decoder::set_head_chunk_bytes` changes it).
pub const CPU_HEAD_BLOCK_BYTES: u64 = 16 << 20;

/// Rows of a quantized base weight the CPU trainer dequantizes at once in a backward pass (the
/// trainer reads it from here).
pub const CPU_DEQUANT_ROWS: u64 = 256;

/// f32 values the CPU trainer's graph keeps per token and layer until the backward pass: each
/// node's output, as the layer creates them (one node per fused op): the attention and MLP
/// norms, the output and down projections and the two residual sums (6 × hidden); the q
/// projection, its head-major copy, RoPE, the attention output and its token-major copy (5 × q);
/// k's projection, copy and RoPE, v's projection and copy; gate, up and `act(gate)·up`. Biases,
/// QK-norm, Gemma's post-norms, several sequences per step (their outputs joined) and fused
/// gate/up (split then copied) add theirs.
pub fn cpu_floats_per_token_layer(cfg: &DecoderConfig, sequences: u64) -> u64 {
    let (h, q, k, v) = (cfg.hidden_size, cfg.q_dim(), cfg.k_dim(), cfg.v_dim());
    let i = active_intermediate(cfg);
    let mut n = 6 * h + 5 * q + 3 * k + 2 * v + 3 * i;
    if cfg.qkv_bias {
        n += q + k + v;
    }
    if cfg.qk_norm {
        n += q + k;
    }
    if cfg.post_norms {
        n += 2 * h;
    }
    if sequences > 1 {
        n += q;
    }
    if cfg.fused_gate_up {
        n += 2 * i;
    }
    n
}

/// f32 values alive at once while one layer's backward pass runs, per token: the gradients in
/// flight (the residual stream's, the MLP's `[tokens, intermediate]` ones and the sums candle
/// forms when it adds a gradient to a node's) and the adapted projections' recomputed inputs.
fn cpu_backward_floats_per_token(cfg: &DecoderConfig) -> u64 {
    4 * cfg.hidden_size + 4 * active_intermediate(cfg)
}

/// f32 values the attention's backward holds per token while it runs, beside the residual
/// stream's gradient: its inputs' contiguous copies (q, k, v, the output and its gradient), dq,
/// each query head's share of dk and dv before the group's sum, then dk and dv.
fn cpu_attention_backward_floats_per_token(cfg: &DecoderConfig) -> u64 {
    let (q, k, v) = (cfg.q_dim(), cfg.k_dim(), cfg.v_dim());
    (3 * q + k + v) + q + 2 * q + (k + v) + cfg.hidden_size
}

/// Memory of `forja tune` on the CPU (LoRA over an f32/f16/bf16 base, QLoRA over a GGUF, full
/// fine-tuning, [`cpu_full_finetune_bytes`]), everything in f32: the base as stored (the token
/// embedding too: its rows are dequantized as they are looked up, and a tied head multiplies
/// the same bytes) with the adapter, its gradients and AdamW moments, and the process; then the
/// step's worst phase: the head's pass (what the forward kept — every layer's graph
/// ([`cpu_floats_per_token_layer`]), or with gradient checkpointing each layer's input — and
/// one block of logits, every token counted as trained: an upper bound) or the layers'
/// backward (the gradients, one layer's backward in flight and, checkpointed, its recomputed
/// graph). [`TrainBytes::not_together`] holds what the components count beyond that phase.
pub fn cpu_train_bytes(
    cfg: &DecoderConfig,
    tensors: &[TensorSpec],
    base: &WeightBytes,
    shape: &TrainShape,
    tokenizer: &TokenizerShape,
) -> TrainBytes {
    let runtime = cpu_runtime_bytes(tokenizer);
    let tokenizer_bytes = tokenizer.heap_bytes();
    let sequences = shape.micro_batch.max(1);
    let tokens = sequences * shape.seq_len.max(1);
    let (h, vocab, layers) = (cfg.hidden_size, cfg.vocab_size, cfg.num_layers.max(1));
    let lora = lora_params(tensors, &shape.lora_targets, shape.lora_rank);
    let per_layer = cpu_floats_per_token_layer(cfg, sequences);
    // The embedded tokens (Gemma scales them: one more node), and the head's side of the step:
    // the last hidden states as the head's input, their gradient with candle's zeros and sum,
    // the picked and normed rows.
    let embedded = if cfg.embedding_scale.is_some() { 2 } else { 1 } * h;
    let head_side = 4 * tokens * 6 * h;
    let hidden = 4 * tokens * h;
    let nodes = 4 * tokens * per_layer;
    let head_rows = (CPU_HEAD_BLOCK_BYTES / (4 * vocab.max(1))).clamp(1, tokens);
    let logits = 4 * head_rows * vocab;
    // The larger of the MLP's and the attention's backward, and the layer's own ends: its input
    // as a variable, the surrogate product `out · grad`, the gradients in and out.
    let in_flight = 4
        * tokens
        * (cpu_backward_floats_per_token(cfg).max(cpu_attention_backward_floats_per_token(cfg))
            + 4 * h);
    if shape.mode == TrainMode::FullFinetune {
        return cpu_full_finetune_bytes(cfg, tensors, base, shape, tokens, logits, tokenizer);
    }
    let widest_in = tensors
        .iter()
        .filter(|t| t.kind == TensorKind::Linear)
        .map(|t| t.row_len())
        .max()
        .unwrap_or(0);
    let dequant_workspace = if shape.mode == TrainMode::Qlora {
        4 * CPU_DEQUANT_ROWS * widest_in
    } else {
        0
    };
    let gradients = 4 * lora;
    // The step in phases, each with what is alive at its worst. The head's pass comes first,
    // before any adapter gradient exists (the last step's were freed by the optimizer), with
    // what the forward kept. Then the layers' backward, with the gradient arriving from above:
    // without checkpointing over the whole kept graph; with it one recomputed layer at a time
    // from the last down, each saved input freed once its layer is done — at the top every
    // input is still saved and one layer's gradients exist, at the bottom one input is left
    // and every gradient exists (in between is a straight line between the two).
    let (saved, layer_phase) = if shape.gradient_checkpointing {
        let saved = layers * hidden;
        let one_layer = nodes + in_flight + hidden + dequant_workspace;
        let top = saved + one_layer + gradients / layers;
        let bottom = hidden + one_layer + gradients;
        (saved, top.max(bottom))
    } else {
        let saved = layers * nodes + 4 * tokens * embedded;
        (
            saved,
            saved + in_flight + hidden + gradients + dequant_workspace,
        )
    };
    let head_phase = saved + head_side + logits;
    // Every piece of activation memory the phases draw on; the peak is the larger phase.
    let activations = saved
        + head_side
        + in_flight
        + hidden
        + if shape.gradient_checkpointing {
            nodes
        } else {
            0
        };
    let components = gradients + activations + logits + dequant_workspace;
    TrainBytes {
        trainable_params: lora,
        lora_params: lora,
        base_weights: base.total_bytes,
        trainable_weights: 4 * lora,
        master_weights: 0,
        gradients,
        optimizer_states: (lora as f64 * shape.optimizer.state_bytes_per_param()).ceil() as u64,
        activations,
        logits,
        dequant_workspace,
        not_together: components.saturating_sub(head_phase.max(layer_phase)),
        runtime,
        tokenizer: tokenizer_bytes,
    }
}

/// [`cpu_train_bytes`] of full fine-tuning: every weight in f32 with as much again of
/// gradients and twice that of moments, the graph's nodes, the larger of the head's logits and
/// a layer's backward in flight, and the weights' gradients as they are formed: the embedding
/// table's (a zeroed table and the sum its rows are added into) and the largest projection's
/// (its product and the zeroed sum).
fn cpu_full_finetune_bytes(
    cfg: &DecoderConfig,
    tensors: &[TensorSpec],
    base: &WeightBytes,
    shape: &TrainShape,
    tokens: u64,
    logits: u64,
    tokenizer: &TokenizerShape,
) -> TrainBytes {
    let (h, vocab, layers) = (cfg.hidden_size, cfg.vocab_size, cfg.num_layers.max(1));
    let per_layer = cpu_floats_per_token_layer(cfg, shape.micro_batch.max(1));
    let embedded = if cfg.embedding_scale.is_some() { 2 } else { 1 } * h;
    let kept = if shape.gradient_checkpointing {
        layers * h + per_layer + 6 * h
    } else {
        layers * per_layer + embedded + 6 * h
    };
    // The head's block of logits and a layer's backward are never alive at once: the head's
    // backward pass finishes before the layers' begins.
    let in_flight = (4 * tokens * cpu_backward_floats_per_token(cfg)).saturating_sub(logits);
    let largest = tensors
        .iter()
        .filter(|t| t.kind == TensorKind::Linear)
        .map(TensorSpec::n_elems)
        .max()
        .unwrap_or(0);
    let forming = 4 * 2 * vocab * h + 4 * 2 * largest;
    let p = base.params;
    TrainBytes {
        trainable_params: p,
        lora_params: 0,
        base_weights: 0,
        trainable_weights: 4 * p,
        master_weights: 0,
        gradients: 4 * p,
        optimizer_states: (p as f64 * shape.optimizer.state_bytes_per_param()).ceil() as u64,
        activations: 4 * tokens * kept + in_flight + forming,
        logits,
        dequant_workspace: 0,
        not_together: 0,
        runtime: cpu_runtime_bytes(tokenizer),
        tokenizer: tokenizer.heap_bytes(),
    }
}
