//! The serving step on an NVIDIA GPU: [`GpuDecoder`] behind the device-neutral
//! [`StepRunner`](crate::runner::StepRunner).

use std::sync::Arc;

use candle_core::DType;
use forja_kernels::cuda::Gpu;

use super::{GpuDecoder, GpuOptions, GpuSeq, kernel};
use crate::decoder::Decoder;
use crate::error::{ModelError, Result};
use crate::runner::{DeviceWeights, PoolShape, RunnerSeq, SeqOutput, StepRunner};

struct GpuRunner {
    decoder: GpuDecoder,
    ordinal: usize,
}

/// GPU memory left free for step buffers, cuBLAS and the driver: 2 GiB plus 4 % of the card.
fn reserve(total: usize) -> usize {
    (2 << 30) + total / 25
}

/// A runner on GPU `ordinal`: `decoder`'s weights as `weights` says (GGUF blocks the GPU reads
/// as stored, the rest in f16; or all in f16) and a KV pool of up to `pool.blocks` blocks, as
/// many as fit beside them.
pub(crate) fn runner(
    decoder: &Decoder,
    ordinal: usize,
    pool: PoolShape,
    weights: DeviceWeights,
) -> Result<Box<dyn StepRunner>> {
    let gpu = Arc::new(Gpu::open(ordinal).map_err(kernel)?);
    let (_, total) = gpu.memory().map_err(kernel)?;
    let opts = GpuOptions {
        half: true,
        quantized: weights == DeviceWeights::Stored,
        block_size: pool.block_size,
        blocks: pool.blocks,
        max_context: pool.max_context,
    };
    let decoder = GpuDecoder::fitting(gpu, decoder, opts, reserve(total))?;
    Ok(Box::new(GpuRunner { decoder, ordinal }))
}

impl StepRunner for GpuRunner {
    fn step(&mut self, _: &Decoder, seqs: &[RunnerSeq<'_>]) -> Result<Vec<SeqOutput>> {
        if seqs.iter().any(|s| s.adapter.is_some()) {
            return Err(ModelError::Input(
                "LoRA adapters are served on the CPU only: serve the adapter without --device \
                 cuda"
                    .into(),
            ));
        }
        let steps: Vec<GpuSeq<'_>> = seqs
            .iter()
            .map(|s| GpuSeq {
                tokens: s.tokens,
                start: s.start,
                tables: s.tables,
                all_logits: false,
                pick: s.pick,
            })
            .collect();
        self.decoder.step(&steps)
    }

    fn blocks(&self) -> usize {
        self.decoder.options().blocks
    }

    fn kv_dtype(&self) -> DType {
        DType::F16
    }

    fn describe(&self) -> String {
        format!(
            "{} (cuda:{}; {})",
            self.decoder.gpu_name(),
            self.ordinal,
            self.decoder.weights_summary()
        )
    }
}
