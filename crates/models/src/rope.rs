//! Rotary position embeddings: frequency tables for the default, linear, llama3, YaRN and
//! LongRoPE variants (dynamic NTK equals the default within the trained length), applied in the
//! "neox" layout (rotate halves, as HF checkpoints expect) or interleaved pairs (llama.cpp's
//! layout for `llama`-architecture GGUFs, whose q/k weights are permuted for it).
//!
//! Frequency formulas follow transformers `modeling_rope_utils.py` (llama3, yarn).

use candle_core::{DType, Device, Tensor};
use forja_arch::decoder_config::RopeScaling;

use crate::error::{ModelError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Rotate the first half against the second half of each head.
    Neox,
    /// Rotate adjacent pairs (x0, x1), (x2, x3), …
    Interleaved,
}

/// Precomputed rotation for one head size and one frequency setting. `context` is the length the
/// model runs with; LongRoPE picks its short or long factors by it.
#[derive(Debug, Clone)]
pub struct Rope {
    /// Rotated dimensions (≤ head_dim).
    rot_dims: usize,
    /// `[rot_dims / 2]` inverse frequencies.
    inv_freq: Vec<f32>,
    /// Multiplier on cos/sin (YaRN's and LongRoPE's attention factor; 1 otherwise).
    mscale: f32,
    style: RopeStyle,
}

impl Rope {
    pub fn new(
        head_dim: usize,
        partial: f64,
        theta: f64,
        scaling: &RopeScaling,
        style: RopeStyle,
        context: usize,
    ) -> Result<Self> {
        let rot_dims = ((head_dim as f64 * partial) as usize) & !1;
        if rot_dims == 0 || rot_dims > head_dim {
            return Err(ModelError::Input(format!(
                "rotary dims {rot_dims} for head size {head_dim}"
            )));
        }
        let half = rot_dims / 2;
        let base: Vec<f64> = (0..half)
            .map(|i| 1.0 / theta.powf(2.0 * i as f64 / rot_dims as f64))
            .collect();
        let mut mscale = 1.0;
        let inv: Vec<f64> = match *scaling {
            RopeScaling::None | RopeScaling::Dynamic { .. } => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Factors { ref factors } => {
                if factors.len() != half {
                    return Err(ModelError::Input(format!(
                        "RoPE frequency factors: {half} needed for {rot_dims} rotary dims, found {}",
                        factors.len()
                    )));
                }
                base.iter().zip(factors).map(|(f, d)| f / d).collect()
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            } => {
                let orig = original_max_position as f64;
                let low_wavelen = orig / low_freq_factor;
                let high_wavelen = orig / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (orig / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
            RopeScaling::Yarn {
                factor,
                original_max_position,
                beta_fast,
                beta_slow,
            } => {
                let orig = original_max_position as f64;
                let dim = rot_dims as f64;
                let correction = |rotations: f64| {
                    dim * (orig / (rotations * 2.0 * std::f64::consts::PI)).ln()
                        / (2.0 * theta.ln())
                };
                let low = correction(beta_fast).floor().max(0.0);
                let high = correction(beta_slow).ceil().min(dim - 1.0);
                let span = if high == low {
                    high - low + 0.001
                } else {
                    high - low
                };
                mscale = if factor <= 1.0 {
                    1.0
                } else {
                    0.1 * factor.ln() + 1.0
                };
                base.iter()
                    .enumerate()
                    .map(|(i, &f)| {
                        let ramp = ((i as f64 - low) / span).clamp(0.0, 1.0);
                        let extrapolation_weight = 1.0 - ramp;
                        (f / factor) * (1.0 - extrapolation_weight) + f * extrapolation_weight
                    })
                    .collect()
            }
            RopeScaling::LongRope {
                original_max_position,
                attention_factor,
                ref long_factor,
                ref short_factor,
            } => {
                // Fixed for the context the model runs with (as llama.cpp does), so every cached
                // key was rotated like the queries that read it.
                let ext = if context as u64 > original_max_position {
                    long_factor
                } else {
                    short_factor
                };
                if ext.len() != half {
                    return Err(ModelError::Input(format!(
                        "LongRoPE needs {half} factors for {rot_dims} rotary dims, found {}",
                        ext.len()
                    )));
                }
                mscale = attention_factor;
                base.iter().zip(ext).map(|(f, e)| f / e).collect()
            }
        };
        Ok(Rope {
            rot_dims,
            inv_freq: inv.iter().map(|&f| f as f32).collect(),
            mscale: mscale as f32,
            style,
        })
    }

    /// Rotates `x` of shape `[heads, tokens, head_dim]` for absolute positions
    /// `start..start + tokens`.
    pub fn apply(&self, x: &Tensor, start: usize) -> Result<Tensor> {
        let (_, t, head_dim) = x.dims3()?;
        if x.track_op() && crate::grad_ops::applies(x) {
            let table = self.table(start, t);
            return crate::grad_ops::rotate(x, table, self.inv_freq.len(), self.style);
        }
        let (cos, sin) = self.tables(start, t, x.device())?;
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let rot = x.narrow(2, 0, self.rot_dims)?;
        let rotated = match self.style {
            RopeStyle::Neox => {
                let half = self.rot_dims / 2;
                let x1 = rot.narrow(2, 0, half)?;
                let x2 = rot.narrow(2, half, half)?;
                let cos = cos.unsqueeze(0)?;
                let sin = sin.unsqueeze(0)?;
                let a = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
                let b = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
                Tensor::cat(&[a, b], 2)?
            }
            RopeStyle::Interleaved => {
                let heads = rot.dim(0)?;
                let pairs = rot.reshape((heads, t, self.rot_dims / 2, 2))?;
                let x1 = pairs.narrow(3, 0, 1)?.squeeze(3)?;
                let x2 = pairs.narrow(3, 1, 1)?.squeeze(3)?;
                let cos = cos.unsqueeze(0)?;
                let sin = sin.unsqueeze(0)?;
                let a = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
                let b = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
                Tensor::stack(&[a, b], 3)?.reshape((heads, t, self.rot_dims))?
            }
        };
        let out = if self.rot_dims < head_dim {
            Tensor::cat(
                &[
                    rotated,
                    x.narrow(2, self.rot_dims, head_dim - self.rot_dims)?,
                ],
                2,
            )?
        } else {
            rotated
        };
        Ok(out.to_dtype(dtype)?)
    }

    /// Rotates rows in place: each `(x, heads)` of `xs` is `[rows, heads · head_dim]` (f32),
    /// row `r` at absolute position `positions[r]` (a step's queries and keys). Same values as
    /// [`Rope::apply`], without tensors. Each row's cos/sin are computed once for all of `xs`,
    /// on forja-quant's worker pool when the step is long.
    pub fn apply_rows(&self, xs: &mut [(&mut [f32], usize)], head_dim: usize, positions: &[usize]) {
        let table = self.row_table(positions);
        self.rotate_rows(xs, head_dim, &table);
    }

    /// Per row of `positions`: the cos of every frequency, then the sin (what
    /// [`Rope::rotate_rows`] reads). Layers whose ropes are [`Rope::same_table`] share it.
    pub fn row_table(&self, positions: &[usize]) -> Vec<f32> {
        let half = self.inv_freq.len();
        let mut table = vec![0f32; positions.len() * 2 * half];
        if half == 0 {
            return table;
        }
        crate::cpu_ops::run_chunks(&mut table, 2 * half, &|start, part| {
            let first = start / (2 * half);
            for (row, &p) in part.chunks_exact_mut(2 * half).zip(&positions[first..]) {
                let (cos, sin) = row.split_at_mut(half);
                for ((c, s), &f) in cos.iter_mut().zip(sin).zip(&self.inv_freq) {
                    (*c, *s) = self.cos_sin(p, f);
                }
            }
        });
        table
    }

    /// Whether `other` computes the same [`Rope::row_table`] (frequencies and attention factor).
    pub fn same_table(&self, other: &Rope) -> bool {
        self.inv_freq == other.inv_freq && self.mscale.to_bits() == other.mscale.to_bits()
    }

    /// [`Rope::apply_rows`] with the rows' table already made by [`Rope::row_table`].
    pub fn rotate_rows(&self, xs: &mut [(&mut [f32], usize)], head_dim: usize, table: &[f32]) {
        let half = self.inv_freq.len();
        if half == 0 {
            return;
        }
        let style = self.style;
        for (x, heads) in xs.iter_mut() {
            let width = *heads * head_dim;
            crate::cpu_ops::run_chunks(x, width, &|start, part| {
                let first = start / width.max(1);
                for (r, row) in part.chunks_exact_mut(width).enumerate() {
                    let t = &table[(first + r) * 2 * half..(first + r + 1) * 2 * half];
                    let (cos, sin) = t.split_at(half);
                    for head in row.chunks_exact_mut(head_dim) {
                        for i in 0..half {
                            let (a, b) = match style {
                                RopeStyle::Neox => (i, i + half),
                                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                            };
                            let (x1, x2) = (head[a], head[b]);
                            head[a] = x1 * cos[i] - x2 * sin[i];
                            head[b] = x2 * cos[i] + x1 * sin[i];
                        }
                    }
                }
            });
        }
    }

    /// `(cos, sin)` for positions `start..start + t`, each `[t, rot_dims / 2]` row-major, with
    /// the attention factor applied: the tables the tensor path and the GPU kernels use.
    pub fn table(&self, start: usize, t: usize) -> (Vec<f32>, Vec<f32>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in start..start + t {
            for &f in &self.inv_freq {
                let (c, s) = self.cos_sin(p, f);
                cos.push(c);
                sin.push(s);
            }
        }
        (cos, sin)
    }

    /// `(cos, sin)` of position `p` at inverse frequency `f`, times the attention factor.
    fn cos_sin(&self, p: usize, f: f32) -> (f32, f32) {
        // f64 angle: f32 loses precision at large positions.
        let (sin, cos) = (p as f64 * f64::from(f)).sin_cos();
        (cos as f32 * self.mscale, sin as f32 * self.mscale)
    }

    /// Rotated dimensions / 2.
    pub fn half_dims(&self) -> usize {
        self.inv_freq.len()
    }

    pub fn style(&self) -> RopeStyle {
        self.style
    }

    /// `(cos, sin)`, each `[tokens, rot_dims / 2]`, f32.
    fn tables(&self, start: usize, t: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let (cos, sin) = self.table(start, t);
        Ok((
            Tensor::from_vec(cos, (t, half), device)?,
            Tensor::from_vec(sin, (t, half), device)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF's stored divisors (what llama.cpp's converter computes from `rope_scaling`)
    /// reproduce the Llama 3 frequencies they were made from.
    #[test]
    fn stored_factors_reproduce_llama3_frequencies() {
        let llama3 = RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position: 8192,
        };
        let plain = Rope::new(64, 1.0, 500_000.0, &RopeScaling::None, RopeStyle::Neox, 1).unwrap();
        let scaled = Rope::new(64, 1.0, 500_000.0, &llama3, RopeStyle::Neox, 1).unwrap();
        let factors: Vec<f64> = plain
            .inv_freq
            .iter()
            .zip(&scaled.inv_freq)
            .map(|(p, s)| f64::from(*p) / f64::from(*s))
            .collect();
        assert!(
            factors.iter().any(|&f| (f - 32.0).abs() < 1e-3),
            "{factors:?}"
        );
        let stored = RopeScaling::Factors { factors };
        let from_file = Rope::new(64, 1.0, 500_000.0, &stored, RopeStyle::Neox, 1).unwrap();
        for (a, b) in from_file.inv_freq.iter().zip(&scaled.inv_freq) {
            assert!((a - b).abs() <= 1e-6 * b.abs(), "{a} vs {b}");
        }
        let short = RopeScaling::Factors { factors: vec![1.0] };
        assert!(Rope::new(64, 1.0, 500_000.0, &short, RopeStyle::Neox, 1).is_err());
    }

    /// The row path (one table for queries and keys, long steps on the worker pool) gives the
    /// tensor path's values, for both layouts, partial rotation and a step long enough to be
    /// split into tasks.
    #[test]
    fn rows_rotate_as_the_tensor_path() {
        let (d, qh, kh, rows, start) = (64, 4, 2, 300, 1000);
        for (style, partial) in [(RopeStyle::Neox, 1.0), (RopeStyle::Interleaved, 0.5)] {
            let rope = Rope::new(d, partial, 10_000.0, &RopeScaling::None, style, 4096).unwrap();
            let values = |heads: usize| -> Vec<f32> {
                (0..rows * heads * d)
                    .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                    .collect()
            };
            let (mut q, mut k) = (values(qh), values(kh));
            let want = |x: &[f32], heads: usize| -> Vec<f32> {
                let t = Tensor::from_vec(x.to_vec(), (rows, heads, d), &Device::Cpu).unwrap();
                let t = t.transpose(0, 1).unwrap().contiguous().unwrap();
                let r = rope.apply(&t, start).unwrap().transpose(0, 1).unwrap();
                r.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            };
            let (wq, wk) = (want(&q, qh), want(&k, kh));
            let positions: Vec<usize> = (start..start + rows).collect();
            rope.apply_rows(&mut [(&mut q, qh), (&mut k, kh)], d, &positions);
            for (got, want) in [(&q, &wq), (&k, &wk)] {
                let worst = got
                    .iter()
                    .zip(want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(worst <= 1e-6, "{style:?}: {worst}");
            }
            assert_ne!(q, values(qh), "rotated");
        }
    }
}
