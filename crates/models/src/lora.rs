//! LoRA: a low-rank update that rides on a [`crate::linear::Linear`] — `y = base(x) + s·(x·Aᵀ)·Bᵀ`
//! with `A` `[rank, in]`, `B` `[out, rank]` and `s = alpha / rank` — so an adapted model is the
//! same decoder with adapters attached, never a second copy of it (Hu et al. 2021,
//! arXiv:2106.09685; the PEFT library's `LoraLayer` conventions for names and scaling).
//!
//! A `Linear` carries at most one adapter for every row (`Linear::lora`: training, `forja run
//! --adapter`) and any number of *served* adapters, each known by an [`AdapterId`], that apply
//! only to the rows of the sequences naming them ([`AdapterRows`]): a server batches requests
//! for different adapters in one step without merging any into the base.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Tensor};

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

    /// Where the dropout masks' stream stands (`seed_dropout` with it continues it).
    pub fn dropout_state(&self) -> u64 {
        self.rng_state.load(Ordering::Relaxed)
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
        if let Some(d) = self.delta_rows_cpu(x)? {
            return Ok(d);
        }
        let x = x.to_dtype(DType::F32)?;
        let x = if self.training && self.dropout > 0.0 {
            self.drop(&x)?
        } else {
            x
        };
        let h = x.broadcast_matmul(&self.a.t()?)?;
        Ok((h.broadcast_matmul(&self.b.t()?)? * self.scale)?)
    }

    /// [`Lora::delta`] on the CPU for inference (f32, no gradient, no dropout): each row on its
    /// own in a fixed order, so a row's update does not depend on which rows share the call.
    /// A request then gets the same bits alone or batched with others, as the base model's
    /// kernels give it; a general matmul may block its sums by the number of rows. `None` where
    /// it does not apply.
    fn delta_rows_cpu(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let grads = x.track_op() || self.a.track_op() || self.b.track_op();
        if grads || (self.training && self.dropout > 0.0) || !x.device().is_cpu() {
            return Ok(None);
        }
        let (rank, in_dim) = self.a.dims2()?;
        let (out_dim, _) = self.b.dims2()?;
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let (as_, al) = self.a.storage_and_layout();
        let (bs, bl) = self.b.storage_and_layout();
        let (Some(xv), Some(av), Some(bv)) = (
            crate::cpu_ops::cpu_f32(&xs, xl),
            crate::cpu_ops::cpu_f32(&as_, al),
            crate::cpu_ops::cpu_f32(&bs, bl),
        ) else {
            return Ok(None);
        };
        if xv.len() % in_dim != 0 || av.len() != rank * in_dim || bv.len() != out_dim * rank {
            return Ok(None);
        }
        let scale = self.scale as f32;
        let mut out = vec![0f32; xv.len() / in_dim * out_dim];
        let mut h = vec![0f32; rank];
        for (row, y) in xv.chunks_exact(in_dim).zip(out.chunks_exact_mut(out_dim)) {
            for (hk, a_row) in h.iter_mut().zip(av.chunks_exact(in_dim)) {
                *hk = dot(row, a_row);
            }
            for (yo, b_row) in y.iter_mut().zip(bv.chunks_exact(rank)) {
                *yo = scale * dot(b_row, &h);
            }
        }
        let mut dims = x.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = out_dim;
        }
        Ok(Some(Tensor::from_vec(out, dims, x.device())?))
    }

    /// `y` with this adapter's update added: to every row (`rows` `None`), or to the given rows
    /// only — those rows of `x` go through the adapter as one small matrix.
    pub fn add_to(&self, y: Tensor, x: &Tensor, rows: Option<&Tensor>) -> Result<Tensor> {
        match rows {
            None => Ok((&y + self.delta(x)?.to_dtype(y.dtype())?)?),
            Some(rows) => {
                let delta = self.delta(&x.index_select(rows, 0)?)?;
                Ok(y.index_add(rows, &delta.to_dtype(y.dtype())?, 0)?)
            }
        }
    }

    /// Inverted dropout: each element kept with probability `1 − p` and scaled by `1/(1 − p)`.
    fn drop(&self, x: &Tensor) -> Result<Tensor> {
        let mask = dropout_mask(self.next_dropout_stream(), self.dropout, x.elem_count());
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
        Ok((x * mask)?)
    }

    /// The state one forward pass draws its dropout mask from ([`dropout_mask`]). Each call
    /// starts its stream at a hashed counter value, so calls do not overlap.
    pub(crate) fn next_dropout_stream(&self) -> u64 {
        let mut counter = self.rng_state.fetch_add(1, Ordering::Relaxed);
        splitmix64(&mut counter)
    }
}

/// An inverted-dropout mask of `n` values drawn from `stream`: each `0` with probability `p`
/// (to 1/65536), else `1/(1 − p)`. The same stream gives the same mask, so a backward pass
/// draws its forward pass's mask again instead of keeping it.
pub(crate) fn dropout_mask(stream: u64, p: f32, n: usize) -> Vec<f32> {
    let mut mask = vec![1f32; n];
    apply_dropout(stream, p, &mut mask);
    mask
}

/// `values` times [`dropout_mask`]`(stream, p, values.len())`, in place, without the mask.
pub(crate) fn apply_dropout(stream: u64, p: f32, values: &mut [f32]) {
    let keep = 1.0 / (1.0 - p);
    let threshold = (f64::from(p) * 65536.0).round() as u64;
    // Values `4i .. 4i + 4` take the four 16-bit parts of the stream's `i + 1`-th draw, and
    // splitmix64's state after `i` draws is `stream + i·γ`: any part starting at a multiple of
    // four is drawn on its own (on the worker pool).
    crate::cpu_ops::run_chunks(values, DRAW_VALUES, &|start, part| {
        let draws = (start / DRAW_VALUES) as u64;
        let mut state = stream.wrapping_add(draws.wrapping_mul(SPLITMIX_GAMMA));
        let mut quads = part.chunks_exact_mut(DRAW_VALUES);
        for quad in &mut quads {
            let r = splitmix64(&mut state);
            for (k, v) in quad.iter_mut().enumerate() {
                let bits = (r >> (16 * k)) & 0xFFFF;
                *v = if bits < threshold { 0.0 } else { *v * keep };
            }
        }
        let r = splitmix64(&mut state);
        for (k, v) in quads.into_remainder().iter_mut().enumerate() {
            let bits = (r >> (16 * k)) & 0xFFFF;
            *v = if bits < threshold { 0.0 } else { *v * keep };
        }
    });
}

/// Mask values per 64-bit draw (16 bits each).
const DRAW_VALUES: usize = 4;

/// `a·b` summed in eight lanes and then a fixed tree, the same order for every call (the
/// compiler vectorizes the lanes).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
        + tail
}

/// A served adapter's number within one decoder (`SeqStep::adapter` names it).
pub type AdapterId = u32;

/// Where an adapter goes on each projection it adapts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraSlot {
    /// `Linear::lora`: applied to every row.
    Single,
    /// `Linear::served`: applied to the rows of the sequences that name this id.
    Served(AdapterId),
}

/// An adapter's matrices for every module it adapts, ready to attach to a decoder.
#[derive(Debug, Clone)]
pub struct LoraWeights {
    /// Module path in HF naming (`model.layers.0.self_attn.q_proj`) → (`A` `[rank, in]`, `B`
    /// `[out, rank]`).
    pub modules: BTreeMap<String, (Tensor, Tensor)>,
    /// `alpha / rank` (or `alpha / √rank` with rsLoRA).
    pub scale: f64,
}

impl LoraWeights {
    /// Bytes of the matrices as attached (f32).
    pub fn bytes(&self) -> u64 {
        self.modules
            .values()
            .map(|(a, b)| (a.elem_count() + b.elem_count()) as u64 * 4)
            .sum()
    }
}

/// Which rows of a step's activations use which served adapter: one group per adapter present,
/// in order of first appearance. Rows without an adapter are in no group and cost nothing.
#[derive(Debug, Clone, Default)]
pub struct AdapterRows {
    groups: Vec<RowGroup>,
    /// Each row's adapter (empty when no row has one), for [`AdapterRows::select`].
    per_row: Vec<Option<AdapterId>>,
}

#[derive(Debug, Clone)]
struct RowGroup {
    id: AdapterId,
    /// `[n]` u32 row indices; `None` when the group is every row.
    rows: Option<Tensor>,
}

impl AdapterRows {
    /// No row uses a served adapter.
    pub fn none() -> Self {
        AdapterRows::default()
    }

    /// Rows of consecutive segments (a sequence's tokens, in step order), each segment using
    /// the adapter given with its length, or none.
    pub fn new(segments: &[(Option<AdapterId>, usize)], device: &Device) -> Result<Self> {
        let per_row: Vec<Option<AdapterId>> = segments
            .iter()
            .flat_map(|&(adapter, n)| std::iter::repeat_n(adapter, n))
            .collect();
        Self::of_rows(per_row, device)
    }

    /// The rows `rows` (indices into these rows, in that order) as the rows of a smaller step:
    /// the tokens a mixture-of-experts layer routes to one expert.
    pub fn select(&self, rows: &[u32], device: &Device) -> Result<Self> {
        if self.is_empty() {
            return Ok(AdapterRows::none());
        }
        let per_row = rows
            .iter()
            .map(|&r| {
                self.per_row.get(r as usize).copied().ok_or_else(|| {
                    ModelError::Input(format!("row {r} of {} adapter rows", self.per_row.len()))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::of_rows(per_row, device)
    }

    fn of_rows(per_row: Vec<Option<AdapterId>>, device: &Device) -> Result<Self> {
        let total = per_row.len();
        let mut lists: Vec<(AdapterId, Vec<u32>)> = Vec::new();
        for (row, adapter) in per_row.iter().enumerate() {
            if let Some(id) = *adapter {
                let list = match lists.iter().position(|(i, _)| *i == id) {
                    Some(k) => &mut lists[k].1,
                    None => {
                        lists.push((id, Vec::new()));
                        let last = lists.len() - 1;
                        &mut lists[last].1
                    }
                };
                list.push(row as u32);
            }
        }
        if lists.is_empty() {
            return Ok(AdapterRows::none());
        }
        let groups = lists
            .into_iter()
            .map(|(id, list)| {
                let rows = if list.len() == total {
                    None
                } else {
                    Some(Tensor::new(list.as_slice(), device)?)
                };
                Ok(RowGroup { id, rows })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdapterRows { groups, per_row })
    }

    /// Whether no row uses a served adapter.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The adapters present and their rows (`None`: every row).
    pub(crate) fn groups(&self) -> impl Iterator<Item = (AdapterId, Option<&Tensor>)> {
        self.groups.iter().map(|g| (g.id, g.rows.as_ref()))
    }
}

/// splitmix64's increment.
const SPLITMIX_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// One step of SplitMix64 (Steele, Lea, Flood 2014): a fast, well-mixed 64-bit generator.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(SPLITMIX_GAMMA);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
