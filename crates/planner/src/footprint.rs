//! Memory of one placement: a model, a format, a workload, on `n` devices of one kind.

use serde::Serialize;

use forja_arch::kv_cache::{SERVE_BLOCK_SIZE, kv_bytes, paged_kv_bytes};
use forja_arch::training::{
    TrainBytes, TrainShape, cpu_runtime_bytes, cpu_train_bytes, train_bytes,
};
use forja_arch::workspace::{StepShape, inference_workspace_bytes};
use forja_arch::{DecoderConfig, KvDtype, ModelDescription, WeightBytes};

use crate::device::{Device, DeviceKind};

/// What runs: serving requests, or a training job.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Workload {
    Inference,
    Train(TrainShape),
}

/// The knobs of an inference placement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Serving {
    /// Context length per sequence (prompt + output).
    pub ctx_tokens: u64,
    /// Concurrent sequences, each with a full context.
    pub users: u64,
    /// Tokens per forward step (prefill chunk), across all sequences.
    pub step_tokens: u64,
    pub kv_dtype: KvDtype,
}

/// Bytes on each device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Footprint {
    pub devices: u32,
    pub weights_bytes: u64,
    pub kv_cache_bytes: u64,
    pub activations_bytes: u64,
    /// Memory before any model byte: a GPU's runtime; on a CPU, forja's own process.
    pub overhead_bytes: u64,
    /// Of `overhead_bytes`, the tokenizer's tables (on a CPU).
    pub tokenizer_bytes: u64,
    /// Training components beyond the weights (gradients, optimizer, …), when training.
    pub training: Option<TrainBytes>,
    pub total_bytes: u64,
}

/// KV bytes one device holds under `n`-way tensor parallelism: heads are split while there are
/// enough KV heads; fewer KV heads than devices are replicated; MLA latents are replicated.
fn kv_share(cfg: &DecoderConfig, kv_total: u64, n: u64) -> u64 {
    if cfg.mla.is_some() || n <= 1 {
        kv_total
    } else if cfg.num_kv_heads >= n {
        kv_total.div_ceil(n)
    } else {
        kv_total.div_ceil(cfg.num_kv_heads)
    }
}

/// Whether `n`-way tensor parallelism can split this model's attention heads.
pub fn tp_valid(cfg: &DecoderConfig, n: u64) -> bool {
    n == 1
        || (cfg.num_heads.is_multiple_of(n)
            && (cfg.num_kv_heads.is_multiple_of(n) || n.is_multiple_of(cfg.num_kv_heads)))
}

/// Footprint of serving `model` with `weights` on `n` devices like `dev`.
pub fn inference_footprint(
    model: &ModelDescription,
    weights: &WeightBytes,
    s: &Serving,
    dev: &Device,
    n: u64,
) -> Footprint {
    let cfg = &model.config;
    // A step computes at most `step_tokens` tokens across all sequences: a sliding-window layer
    // holds its window and a decode token for every sequence but one, which may hold a whole
    // step. Priced as the larger of the two caches that hold them: `forja run`'s contiguous
    // one (a ring per sliding layer) and `forja serve`'s paged pool (whole blocks per layer
    // group, at its default block size).
    let total = |one: &dyn Fn(u64) -> u64| {
        one(1)
            .saturating_mul(s.users.saturating_sub(1))
            .saturating_add(one(s.step_tokens))
    };
    let kv_total =
        total(&|step| kv_bytes(cfg, s.ctx_tokens, step, s.kv_dtype)).max(total(&|step| {
            paged_kv_bytes(cfg, s.ctx_tokens, step, s.kv_dtype, SERVE_BLOCK_SIZE)
        }));
    let kv = kv_share(cfg, kv_total, n);
    let w = weights.total_bytes.div_ceil(n);
    let act = inference_workspace_bytes(
        cfg,
        StepShape {
            step_tokens: s.step_tokens.min(s.ctx_tokens * s.users).max(1),
            num_seqs: s.users,
            act_bytes: dev.act_bytes(),
            all_logits: dev.kind == DeviceKind::NvidiaGpu,
        },
    );
    // On a CPU the process itself shares the memory: program, threads and the tokenizer.
    let cpu = dev.kind == DeviceKind::Cpu;
    let overhead = dev.overhead_bytes()
        + if cpu {
            cpu_runtime_bytes(&model.tokenizer)
        } else {
            0
        };
    Footprint {
        devices: n as u32,
        weights_bytes: w,
        kv_cache_bytes: kv,
        activations_bytes: act,
        overhead_bytes: overhead,
        tokenizer_bytes: if cpu { model.tokenizer.heap_bytes() } else { 0 },
        training: None,
        total_bytes: w
            .saturating_add(kv)
            .saturating_add(act)
            .saturating_add(overhead),
    }
}

/// Footprint of a training step on one device: on the CPU, forja's own trainer
/// ([`cpu_train_bytes`]); on a GPU, a trainer with 16-bit activations ([`train_bytes`]).
pub fn train_footprint(
    model: &ModelDescription,
    weights: &WeightBytes,
    shape: &TrainShape,
    dev: &Device,
) -> Footprint {
    let t = match dev.kind {
        DeviceKind::Cpu => cpu_train_bytes(
            &model.config,
            &model.tensors,
            weights,
            shape,
            &model.tokenizer,
        ),
        _ => train_bytes(&model.config, &model.tensors, weights, shape),
    };
    let weights_bytes = t.base_weights + t.trainable_weights;
    let overhead = dev.overhead_bytes();
    let total = t.total() + overhead;
    Footprint {
        devices: 1,
        weights_bytes,
        kv_cache_bytes: 0,
        activations_bytes: (t.activations + t.logits).saturating_sub(t.not_together),
        // The CPU trainer's process is its runtime, as a GPU's context is.
        overhead_bytes: overhead + t.runtime,
        tokenizer_bytes: t.tokenizer,
        total_bytes: total,
        training: Some(t),
    }
}
