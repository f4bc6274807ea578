//! RMSNorm, RoPE and the gated activation `act(gate)·up` as single ops with their backward
//! passes: each graph node keeps its output (and its inputs, which the graph holds anyway)
//! instead of one tensor per elementary step.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use forja_arch::decoder_config::Activation;
use forja_quant::math;

use super::{f32_values, with_values};
use crate::cpu_ops::run_chunks;
use crate::error::Result;
use crate::rope::RopeStyle;

/// `x / √(mean(x²) + eps) · scale` over the last dimension, the scale fixed.
struct RmsNormOp {
    scale: Vec<f32>,
    eps: f64,
}

/// The same with the scale as the op's second input, which gets its gradient (a trained norm).
struct RmsNormScaled {
    eps: f64,
}

const RMS: &str = "forja-rms-norm";

/// `1 / √(mean(x²) + eps)` of one row.
fn inv_rms(x: &[f32], eps: f64) -> f32 {
    let ms = x.iter().map(|v| f64::from(v * v)).sum::<f64>() / x.len().max(1) as f64;
    (1.0 / (ms + eps).sqrt()) as f32
}

/// The normed rows of `x` (`l` its layout).
fn norm_rows(x: &[f32], l: &Layout, scale: &[f32], eps: f64) -> candle_core::Result<Vec<f32>> {
    let dim = scale.len();
    if l.dims().last() != Some(&dim) {
        candle_core::bail!("{RMS}: input {:?} for {dim} scales", l.dims());
    }
    let mut y = vec![0f32; x.len()];
    run_chunks(&mut y, dim, &|start, part| {
        for (y, x) in part.chunks_exact_mut(dim).zip(x[start..].chunks_exact(dim)) {
            let inv = inv_rms(x, eps);
            for ((y, &x), &s) in y.iter_mut().zip(x).zip(scale) {
                *y = x * inv * s;
            }
        }
    });
    Ok(y)
}

/// `dx = r·(g·s) − x·r³·((g·s)·x)/D` per row, `r` the row's inverse RMS.
fn norm_input_grad(
    x: &Tensor,
    grad: &Tensor,
    scale: &[f32],
    eps: f64,
) -> candle_core::Result<Tensor> {
    let dim = scale.len();
    let dx = with_values(x, RMS, |x| {
        with_values(grad, RMS, |g| {
            let mut dx = vec![0f32; x.len()];
            run_chunks(&mut dx, dim, &|start, part| {
                let rows = part
                    .chunks_exact_mut(dim)
                    .zip(x[start..].chunks_exact(dim))
                    .zip(g[start..].chunks_exact(dim));
                for ((dx, x), g) in rows {
                    let r = inv_rms(x, eps);
                    let dot: f32 = g
                        .iter()
                        .zip(scale)
                        .zip(x)
                        .map(|((g, s), x)| g * s * x)
                        .sum();
                    let k = r * r * r * dot / dim as f32;
                    for (((d, &g), &s), &x) in dx.iter_mut().zip(g).zip(scale).zip(x) {
                        *d = r * g * s - x * k;
                    }
                }
            });
            Ok(dx)
        })
    })?;
    Tensor::from_vec(dx, x.shape(), x.device())
}

impl CustomOp1 for RmsNormOp {
    fn name(&self) -> &'static str {
        RMS
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = norm_rows(f32_values(s, l, RMS)?, l, &self.scale, self.eps)?;
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        norm_input_grad(x, grad, &self.scale, self.eps).map(Some)
    }
}

impl CustomOp2 for RmsNormScaled {
    fn name(&self) -> &'static str {
        RMS
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let scale = f32_values(s2, l2, RMS)?;
        let y = norm_rows(f32_values(s1, l1, RMS)?, l1, scale, self.eps)?;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    /// The input's gradient as above; the scale's is `Σ_rows g·x·r`.
    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let s = scale
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let dim = s.len();
        let dx = norm_input_grad(x, grad, &s, self.eps)?;
        let ds = with_values(x, RMS, |x| {
            with_values(grad, RMS, |g| {
                let mut ds = vec![0f64; dim];
                for (x, g) in x.chunks_exact(dim).zip(g.chunks_exact(dim)) {
                    let r = inv_rms(x, self.eps);
                    for ((d, &x), &g) in ds.iter_mut().zip(x).zip(g) {
                        *d += f64::from(g * x * r);
                    }
                }
                Ok(ds.into_iter().map(|v| v as f32).collect::<Vec<f32>>())
            })
        })?;
        let ds = Tensor::from_vec(ds, scale.shape(), scale.device())?;
        Ok((Some(dx), Some(ds)))
    }
}

/// RMSNorm of `x` over its last dimension (`scale`: the effective scale), one graph node.
pub(crate) fn rms_norm(x: &Tensor, scale: &[f32], eps: f64) -> Result<Tensor> {
    let op = RmsNormOp {
        scale: scale.to_vec(),
        eps,
    };
    Ok(x.contiguous()?.apply_op1(op)?)
}

/// RMSNorm of `x` whose effective scale `scale` `[dim]` is trained: one graph node whose
/// backward gives both gradients.
pub(crate) fn rms_norm_scaled(x: &Tensor, scale: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(x.contiguous()?
        .apply_op2(&scale.contiguous()?, RmsNormScaled { eps })?)
}

/// Rotary embedding of `[heads, t, head_dim]` with the tables of positions `start..start + t`.
struct RotateOp {
    /// `[t, half]` each, attention factor applied.
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
    style: RopeStyle,
}

const ROPE: &str = "forja-rope";

impl RotateOp {
    /// Rotates every head row of `x` into `y` by the tables; `inverse` rotates back (the
    /// transpose, which the backward pass applies to the gradient).
    fn rotate(&self, x: &[f32], dims: &[usize], inverse: bool) -> candle_core::Result<Vec<f32>> {
        let &[_, t, d] = dims else {
            candle_core::bail!("{ROPE}: [heads, tokens, dim] expected, found {dims:?}");
        };
        if 2 * self.half > d
            || self.cos.len() != t * self.half
            || !x.len().is_multiple_of((t * d).max(1))
        {
            candle_core::bail!("{ROPE}: {dims:?} against {} rotary pairs", self.half);
        }
        let mut y = x.to_vec();
        let sign = if inverse { -1.0 } else { 1.0 };
        run_chunks(&mut y, t * d, &|start, part| {
            for (i, row) in part.chunks_exact_mut(d).enumerate() {
                let pos = (start / d + i) % t;
                let (cos, sin) = (&self.cos[pos * self.half..], &self.sin[pos * self.half..]);
                for p in 0..self.half {
                    let (a, b) = match self.style {
                        RopeStyle::Neox => (p, p + self.half),
                        RopeStyle::Interleaved => (2 * p, 2 * p + 1),
                    };
                    let (c, s) = (cos[p], sign * sin[p]);
                    let (x1, x2) = (row[a], row[b]);
                    row[a] = x1 * c - x2 * s;
                    row[b] = x2 * c + x1 * s;
                }
            }
        });
        Ok(y)
    }
}

impl CustomOp1 for RotateOp {
    fn name(&self) -> &'static str {
        ROPE
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = self.rotate(f32_values(s, l, ROPE)?, l.dims(), false)?;
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dx = with_values(grad, ROPE, |g| self.rotate(g, x.dims(), true))?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// RoPE of `x` `[heads, t, head_dim]`, one graph node; `cos`, `sin` `[t, half]` (the first
/// `2·half` dimensions rotate).
pub(crate) fn rotate(
    x: &Tensor,
    (cos, sin): (Vec<f32>, Vec<f32>),
    half: usize,
    style: RopeStyle,
) -> Result<Tensor> {
    let op = RotateOp {
        cos,
        sin,
        half,
        style,
    };
    Ok(x.contiguous()?.apply_op1(op)?)
}

/// `act(gate)·up`.
struct GatedOp {
    act: Activation,
}

const GATED: &str = "forja-gated";

/// `(f(x), f'(x))` of tanh-GELU.
#[inline(always)]
fn gelu_tanh_and_slope(x: f32) -> (f32, f32) {
    const C: f32 = 0.797_884_6;
    const A: f32 = 0.044_715;
    let z = C * x * (1.0 + A * x * x);
    let t = 1.0 - 2.0 / (1.0 + math::exp(2.0 * z));
    let f = 0.5 * x * (1.0 + t);
    (
        f,
        0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * C * (1.0 + 3.0 * A * x * x),
    )
}

/// `(f(x), f'(x))` of SiLU.
#[inline(always)]
fn silu_and_slope(x: f32) -> (f32, f32) {
    let sig = 1.0 / (1.0 + math::exp(-x));
    (x * sig, sig * (1.0 + x * (1.0 - sig)))
}

/// `dg = dy·u·f'(g)` and `du = dy·f(g)`.
#[inline(always)]
fn gated_backward(
    f: impl Fn(f32) -> (f32, f32) + Sync,
    (g, u, dy): (&[f32], &[f32], &[f32]),
) -> (Vec<f32>, Vec<f32>) {
    let mut dg = vec![0f32; g.len()];
    run_chunks(&mut dg, 1, &|start, part| {
        for (((d, &g), &u), &dy) in part
            .iter_mut()
            .zip(&g[start..])
            .zip(&u[start..])
            .zip(&dy[start..])
        {
            *d = dy * u * f(g).1;
        }
    });
    let mut du = vec![0f32; g.len()];
    run_chunks(&mut du, 1, &|start, part| {
        for ((d, &g), &dy) in part.iter_mut().zip(&g[start..]).zip(&dy[start..]) {
            *d = dy * f(g).0;
        }
    });
    (dg, du)
}

impl CustomOp2 for GatedOp {
    fn name(&self) -> &'static str {
        GATED
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, u) = (f32_values(gs, gl, GATED)?, f32_values(us, ul, GATED)?);
        if g.len() != u.len() {
            candle_core::bail!("{GATED}: gate {:?} and up {:?}", gl.dims(), ul.dims());
        }
        // Inference's pass: training's forward gives the values serving does.
        let Some(y) = crate::cpu_ops::gated_values(g, u, self.act) else {
            candle_core::bail!("{GATED}: {:?} has no fused pass", self.act);
        };
        Ok((CpuStorage::F32(y), gl.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dg, du) = with_values(gate, GATED, |g| {
            with_values(up, GATED, |u| {
                with_values(grad, GATED, |dy| {
                    Ok(match self.act {
                        Activation::GeluTanh => gated_backward(gelu_tanh_and_slope, (g, u, dy)),
                        _ => gated_backward(silu_and_slope, (g, u, dy)),
                    })
                })
            })
        })?;
        let grad = |t: &Tensor, g: Vec<f32>| -> candle_core::Result<Option<Tensor>> {
            t.track_op()
                .then(|| Tensor::from_vec(g, t.shape(), t.device()))
                .transpose()
        };
        Ok((grad(gate, dg)?, grad(up, du)?))
    }
}

/// `act(gate)·up` as one graph node, for SiLU and tanh-GELU; `None` for other activations
/// (the caller keeps candle's ops).
pub(crate) fn gated(gate: &Tensor, up: &Tensor, act: Activation) -> Result<Option<Tensor>> {
    if !matches!(act, Activation::Silu | Activation::GeluTanh) || gate.shape() != up.shape() {
        return Ok(None);
    }
    Ok(Some(
        gate.contiguous()?
            .apply_op2(&up.contiguous()?, GatedOp { act })?,
    ))
}
