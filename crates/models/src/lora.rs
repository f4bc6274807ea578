//! LoRA: a low-rank update that rides on a [`crate::linear::Linear`] — `y = base(x) + s·(x·Aᵀ)·Bᵀ`
//! with `A` `[rank, in]`, `B` `[out, rank]` and `s = alpha / rank` — so an adapted model is the
//! same decoder with adapters attached, never a second copy of it (Hu et al. 2021,
//! arXiv:2106.09685; the PEFT library's `LoraLayer` conventions for names and scaling).

use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Tensor};

use crate::error::{ModelError, Result};

/// The projection names PEFT targets, as they appear at the end of a module path
/// (`model.layers.3.self_attn.q_proj`).
pub const PEFT_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Whether the module at `path` is selected by `target` (PEFT's rule: the whole path, or its
/// last dot-separated components).
pub fn target_matches(path: &str, target: &str) -> bool {
    path == target || path.ends_with(&format!(".{target}"))
}

/// A LoRA adapter of one projection. `a` and `b` are f32; during training they are the tensors
/// of `candle_core::Var`s, so the optimizer's in-place updates are seen here.
#[derive(Debug)]
pub struct Lora {
    /// `[rank, in]`
    pub a: Tensor,
    /// `[out, rank]`
    pub b: Tensor,
    /// `alpha / rank` (or `alpha / √rank` with rsLoRA).
    pub scale: f64,
    /// Probability of zeroing an input feature of the adapter path while training.
    pub dropout: f32,
    /// Dropout is applied only while this is set.
    pub training: bool,
    /// State of the dropout masks' generator (SplitMix64), advanced once per forward.
    rng_state: AtomicU64,
}

impl Lora {
    /// An adapter for a projection `[out, in]`; checks the shapes agree with each other.
    pub fn new(a: Tensor, b: Tensor, scale: f64, dropout: f32) -> Result<Self> {
        let (rank, _) = a.dims2()?;
        let (_, b_rank) = b.dims2()?;
        if rank != b_rank || rank == 0 {
            return Err(ModelError::Shape {
                name: "lora_B".into(),
                found: b.dims().to_vec(),
                expected: vec![b.dim(0)?, rank],
            });
        }
        if !(0.0..1.0).contains(&dropout) {
            return Err(ModelError::Input(format!(
                "LoRA dropout {dropout} outside [0, 1)"
            )));
        }
        Ok(Lora {
            a: a.to_dtype(DType::F32)?,
            b: b.to_dtype(DType::F32)?,
            scale,
            dropout,
            training: false,
            rng_state: AtomicU64::new(0),
        })
    }

    /// Seeds the dropout masks (each adapter gets its own stream).
    pub fn seed_dropout(&self, seed: u64) {
        self.rng_state.store(seed, Ordering::Relaxed);
    }

    pub fn rank(&self) -> usize {
        self.a.dims().first().copied().unwrap_or(0)
    }

    /// `in` and `out` of the projection it adapts.
    pub fn in_out(&self) -> (usize, usize) {
        let a = self.a.dims();
        let b = self.b.dims();
        (
            a.get(1).copied().unwrap_or(0),
            b.first().copied().unwrap_or(0),
        )
    }

    /// `s·(dropout(x)·Aᵀ)·Bᵀ` in f32, for `x` `[.., in]`.
    pub fn delta(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(DType::F32)?;
        let x = if self.training && self.dropout > 0.0 {
            self.drop(&x)?
        } else {
            x
        };
        let h = x.broadcast_matmul(&self.a.t()?)?;
        Ok((h.broadcast_matmul(&self.b.t()?)? * self.scale)?)
    }

    /// Inverted dropout: each element kept with probability `1 − p` and scaled by `1/(1 − p)`.
    fn drop(&self, x: &Tensor) -> Result<Tensor> {
        let n = x.elem_count();
        // Each call starts its stream at a hashed counter value, so calls do not overlap.
        let mut counter = self.rng_state.fetch_add(1, Ordering::Relaxed);
        let mut state = splitmix64(&mut counter);
        let keep = 1.0 / (1.0 - self.dropout);
        let threshold = (f64::from(self.dropout) * (1u64 << 53) as f64) as u64;
        let mask: Vec<f32> = (0..n)
            .map(|_| {
                let r = splitmix64(&mut state) >> 11;
                if r < threshold { 0.0 } else { keep }
            })
            .collect();
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
        Ok((x * mask)?)
    }
}

/// One step of SplitMix64 (Steele, Lea, Flood 2014): a fast, well-mixed 64-bit generator.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
