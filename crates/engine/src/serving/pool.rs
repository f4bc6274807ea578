//! How big a serving engine's KV pool is: blocks of `block_size` positions of one layer
//! group's layers (`Decoder::kv_groups`), as many as the configured bytes hold, and the longest
//! sequence they hold.

use candle_core::DType;
use forja_arch::kv_cache::{KvGroups, kv_bytes_per_token, paged_kv_bytes};
use forja_arch::{DecoderConfig, KvDtype};
use forja_kv::KvManager;
use forja_models::{DeviceWeights, PoolShape, RunnerDevice};

use super::ServingConfig;
use crate::error::{EngineError, Result};
use crate::model::LoadedModel;

/// The pool a runner is asked for and how its bytes were counted.
pub(super) struct Sizing {
    pub shape: PoolShape,
    pub groups: KvGroups,
    /// KV bytes of one token while every layer keeps it.
    pub bytes_per_token: f64,
    pub block_bytes: f64,
}

/// The pool `cfg` asks for `model`: a GPU runner keeps keys and values in f16, the CPU the
/// decoder's KV type; a group keeping every position bounds a sequence by the pool, sliding
/// windows alone (which give their blocks back) only by the context.
pub(super) fn sizing(model: &LoadedModel, cfg: &ServingConfig) -> Result<Sizing> {
    let dc = &model.decoder.config;
    let dtype = match cfg.device {
        RunnerDevice::Cpu => model.decoder.kv_dtype(),
        RunnerDevice::Cuda(_) => DType::F16,
    };
    let kv_dtype = match dtype {
        DType::F16 => KvDtype::F16,
        DType::BF16 => KvDtype::Bf16,
        _ => KvDtype::F32,
    };
    let bytes_per_token = kv_bytes_per_token(dc, kv_dtype);
    let groups = model.decoder.kv_groups();
    let layers = dc.layers.len().max(1) as f64;
    let block_bytes = bytes_per_token / layers * groups.group_size as f64 * cfg.block_size as f64;
    let wanted = (cfg.kv_bytes as f64 / block_bytes).floor() as usize;
    if wanted == 0 || cfg.block_size == 0 {
        return Err(EngineError::Input(format!(
            "a KV pool of {} bytes holds no block of {} tokens ({block_bytes:.0} bytes each)",
            cfg.kv_bytes, cfg.block_size
        )));
    }
    let context = dc.max_context as usize;
    let max_context = if groups.windows.iter().all(Option::is_some) {
        context
    } else {
        context.min(wanted * cfg.block_size)
    };
    Ok(Sizing {
        shape: PoolShape {
            blocks: wanted,
            block_size: cfg.block_size,
            max_context,
        },
        groups,
        bytes_per_token,
        block_bytes,
    })
}

impl ServingConfig {
    /// One sequence at a time on `device` (a GPU keeping the matrices as `weights` says), in a
    /// pool of f16 blocks that holds the model's whole context as the paged pool keeps it
    /// (sliding-window layers their window and a step), plus one block of every layer to spare:
    /// what a chat on a GPU asks for.
    pub fn one_sequence(cfg: &DecoderConfig, device: RunnerDevice, weights: DeviceWeights) -> Self {
        let mut s = ServingConfig {
            max_running: 1,
            max_pending: 1,
            device,
            weights,
            ..ServingConfig::default()
        };
        let block = s.block_size as u64;
        let step = s.max_batched_tokens as u64;
        s.kv_bytes = paged_kv_bytes(cfg, cfg.max_context, step, KvDtype::F16, block)
            + (kv_bytes_per_token(cfg, KvDtype::F16) * block as f64) as u64;
        s
    }
}

/// The longest sequence (at most `context`) whose blocks `kv`'s pool holds while it is
/// computed at most `step` tokens at a time.
pub(super) fn longest_fitting(kv: &KvManager, step: usize, context: usize) -> usize {
    let fits = |n: usize| kv.max_blocks_held(n, step) <= kv.num_blocks();
    if fits(context) {
        return context;
    }
    // `fits(lo)` holds and `fits(hi)` does not.
    let (mut lo, mut hi) = (0, context);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}
