//! Where a serving step runs: the seam between the engine's scheduler and a device. The scheduler
//! plans a step (which sequences, which new tokens, which KV blocks hold each) the same way for
//! every device; a [`StepRunner`] owns the KV pool those block ids index and turns the step into
//! each sequence's next-token logits. On the CPU that is the [`Decoder`] over a [`PagedKvStore`];
//! with the `cuda` feature, the same step on an NVIDIA GPU (`gpu::GpuDecoder`, its weights and
//! KV pool in GPU memory). The engine never names a device type: this module is the one place
//! that chooses.

use std::str::FromStr;

use candle_core::DType;

use crate::decoder::{Decoder, SeqStep};
use crate::error::{ModelError, Result};
use crate::lora::AdapterId;
use crate::paged_kv::PagedKvStore;
pub use forja_kernels::DevicePick;

/// The device a runner steps on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RunnerDevice {
    #[default]
    Cpu,
    /// An NVIDIA GPU by ordinal.
    Cuda(usize),
}

impl FromStr for RunnerDevice {
    type Err = String;

    /// `cpu`, `cuda` (GPU 0) or `cuda:N`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "cpu" => Ok(RunnerDevice::Cpu),
            "cuda" | "gpu" => Ok(RunnerDevice::Cuda(0)),
            _ => t
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(RunnerDevice::Cuda)
                .ok_or_else(|| format!("`{s}`: use cpu, cuda or cuda:N")),
        }
    }
}

impl std::fmt::Display for RunnerDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunnerDevice::Cpu => write!(f, "cpu"),
            RunnerDevice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// How a GPU runner keeps a quantized model's matrices (the CPU always reads them as stored).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceWeights {
    /// GGUF blocks as the file stores them (the GPU multiplies every block type forja reads:
    /// Q2_K–Q6_K, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), so the weights take what the file (and `forja
    /// plan`) says; dense matrices (F32, F16, BF16) in f16.
    #[default]
    Stored,
    /// Every matrix dequantized to f16: about 3× the memory of Q4_K_M blocks; faster only when
    /// many sequences (64 and more on an H200) decode together.
    F16,
}

impl FromStr for DeviceWeights {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "stored" => Ok(DeviceWeights::Stored),
            "f16" => Ok(DeviceWeights::F16),
            _ => Err(format!("`{s}`: use stored or f16")),
        }
    }
}

impl std::fmt::Display for DeviceWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceWeights::Stored => "stored",
            DeviceWeights::F16 => "f16",
        })
    }
}

/// The KV pool a runner is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolShape {
    /// Blocks wanted; a GPU runner keeps fewer when its memory holds fewer.
    pub blocks: usize,
    pub block_size: usize,
    /// Longest sequence.
    pub max_context: usize,
}

/// One sequence's part of a step.
#[derive(Debug, Clone, Copy)]
pub struct RunnerSeq<'a> {
    pub tokens: &'a [u32],
    /// Positions already in the cache before `tokens`.
    pub start: usize,
    /// The pool blocks holding positions `0..start + tokens.len()`, in order: one table per
    /// group of [`Decoder::kv_groups`] (a sliding-window group's entries before its window may
    /// be `forja_kv::NULL_BLOCK`).
    pub tables: &'a [Vec<u32>],
    /// The served LoRA adapter the sequence asked for.
    pub adapter: Option<AdapterId>,
    /// Pick the next token on the device by these rules, when the runner can (a GPU runner
    /// does; the CPU runner returns the logits).
    pub pick: Option<DevicePick>,
}

/// What a step gives one sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum SeqOutput {
    /// The logits for the token after its last one (`vocab` values).
    Logits(Vec<f32>),
    /// The token picked on the device by the sequence's [`DevicePick`], with its
    /// log-probability under the tempered distribution.
    Picked { token: u32, logprob: f32 },
    /// Picked on the device, but no logit was finite.
    NoFiniteLogit,
}

/// Runs scheduler steps on one device, over a KV pool of its own.
pub trait StepRunner {
    /// Each sequence's next token, picked on the device where it asked to be and the runner
    /// can, else its logits.
    fn step(&mut self, decoder: &Decoder, seqs: &[RunnerSeq<'_>]) -> Result<Vec<SeqOutput>>;
    /// Blocks in the pool (what the scheduler may hand out), shared by the groups of
    /// [`Decoder::kv_groups`]: a block holds `block_size` positions of one group's layers.
    fn blocks(&self) -> usize;
    /// The KV element type.
    fn kv_dtype(&self) -> DType;
    /// The device, in words (`cpu`, `NVIDIA H100 80GB HBM3 (cuda:0)`).
    fn describe(&self) -> String;
}

/// The CPU runner: the decoder reading and writing a [`PagedKvStore`].
struct CpuRunner {
    store: PagedKvStore,
    blocks: usize,
    dtype: DType,
}

impl StepRunner for CpuRunner {
    fn step(&mut self, decoder: &Decoder, seqs: &[RunnerSeq<'_>]) -> Result<Vec<SeqOutput>> {
        let mut views: Vec<_> = seqs
            .iter()
            .map(|s| self.store.sequence(s.tables, s.start))
            .collect();
        let mut steps: Vec<SeqStep<'_>> = seqs
            .iter()
            .zip(views.iter_mut())
            .map(|(s, v)| SeqStep {
                tokens: s.tokens,
                cache: v,
                all_logits: false,
                adapter: s.adapter,
            })
            .collect();
        decoder
            .forward(&mut steps)?
            .into_iter()
            .map(|l| Ok(SeqOutput::Logits(l.flatten_all()?.to_vec1::<f32>()?)))
            .collect()
    }

    fn blocks(&self) -> usize {
        self.blocks
    }

    fn kv_dtype(&self) -> DType {
        self.dtype
    }

    fn describe(&self) -> String {
        "cpu".into()
    }
}

/// A runner for `decoder` on `device` with (up to) `pool`'s blocks, a GPU's matrices kept as
/// `weights` says. Make it on the thread that steps it (a GPU runner is not `Send`: its context
/// belongs to that thread).
pub fn open_runner(
    decoder: &Decoder,
    device: RunnerDevice,
    pool: PoolShape,
    weights: DeviceWeights,
) -> Result<Box<dyn StepRunner>> {
    if pool.blocks == 0 || pool.block_size == 0 {
        return Err(ModelError::Input(format!("an empty KV pool: {pool:?}")));
    }
    match device {
        RunnerDevice::Cpu => {
            let c = &decoder.config;
            let store = PagedKvStore::new(
                &decoder.kv_groups(),
                pool.blocks,
                pool.block_size,
                c.num_kv_heads as usize,
                c.head_dim as usize,
                decoder.kv_dtype(),
                decoder.device(),
            )?;
            Ok(Box::new(CpuRunner {
                store,
                blocks: pool.blocks,
                dtype: decoder.kv_dtype(),
            }))
        }
        RunnerDevice::Cuda(ordinal) => cuda_runner(decoder, ordinal, pool, weights),
    }
}

#[cfg(feature = "cuda")]
fn cuda_runner(
    decoder: &Decoder,
    ordinal: usize,
    pool: PoolShape,
    weights: DeviceWeights,
) -> Result<Box<dyn StepRunner>> {
    crate::gpu::runner(decoder, ordinal, pool, weights)
}

#[cfg(not(feature = "cuda"))]
fn cuda_runner(
    _: &Decoder,
    ordinal: usize,
    _: PoolShape,
    _: DeviceWeights,
) -> Result<Box<dyn StepRunner>> {
    Err(ModelError::Input(format!(
        "cuda:{ordinal} asked for, but this forja was built without GPU support: build it with \
         `cargo build --release --features cuda -p forja-cli` (`scripts/cuda/conformance build` makes \
         one), or run on the CPU"
    )))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "test code fails loudly"
    )]
    use super::*;

    #[test]
    fn devices_parse_and_print() {
        assert_eq!("cpu".parse::<RunnerDevice>().unwrap(), RunnerDevice::Cpu);
        assert_eq!(
            "CUDA".parse::<RunnerDevice>().unwrap(),
            RunnerDevice::Cuda(0)
        );
        assert_eq!(
            "cuda:3".parse::<RunnerDevice>().unwrap(),
            RunnerDevice::Cuda(3)
        );
        assert!("cuda:x".parse::<RunnerDevice>().is_err());
        for w in [DeviceWeights::Stored, DeviceWeights::F16] {
            assert_eq!(w.to_string().parse::<DeviceWeights>().unwrap(), w);
        }
        assert_eq!(" F16".parse::<DeviceWeights>().unwrap(), DeviceWeights::F16);
        assert!(
            "q4".parse::<DeviceWeights>()
                .unwrap_err()
                .contains("stored or f16")
        );
        assert!(
            "tpu"
                .parse::<RunnerDevice>()
                .unwrap_err()
                .contains("cpu, cuda or cuda:N")
        );
        assert_eq!(RunnerDevice::Cuda(1).to_string(), "cuda:1");
    }
}
