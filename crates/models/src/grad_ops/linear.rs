//! A LoRA-adapted projection as one op: `y = x·Wᵀ + s·(dropout(x)·Aᵀ)·Bᵀ` with `W` frozen.
//! Its graph node keeps `y` alone; the backward pass draws the dropout mask again from the
//! stream the forward pass used and recomputes `x·Aᵀ` (`rank` values per row).

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Storage, Tensor};
use forja_quant::QMatrix;

use super::{Failure, Mat, f32_values, gemm};
use crate::error::Result;
use crate::lora::{Lora, apply_dropout};

const NAME: &str = "forja-lora-matmul";

/// Rows of a quantized weight dequantized at once for a backward pass (what the planner prices).
const DEQUANT_ROWS: usize = forja_arch::training::CPU_DEQUANT_ROWS as usize;
/// Rows one worker dequantizes: a multiple of every panel's rows (8 or 16).
const DEQUANT_TASK_ROWS: usize = 32;

/// The base weight `[out, in]` of an adapted projection.
#[derive(Debug, Clone)]
pub(crate) enum FrozenWeight {
    /// Dense f32 on the CPU.
    Dense(Tensor),
    /// Block-quantized, multiplied by forja's kernels; its backward dequantizes a block of rows
    /// at a time, so the base stays quantized in memory.
    Quantized(Arc<QMatrix>),
}

impl FrozenWeight {
    /// `y = x·Wᵀ` for `x` `[n, in]`.
    pub(super) fn forward(
        &self,
        x: &[f32],
        n: usize,
        inp: usize,
        y: &mut [f32],
    ) -> candle_core::Result<()> {
        match self {
            FrozenWeight::Dense(w) => {
                let (storage, layout) = w.storage_and_layout();
                let Storage::Cpu(cpu) = &*storage else {
                    candle_core::bail!("{NAME}: CPU weight expected");
                };
                let w = f32_values(cpu, layout, NAME)?;
                let out = w.len() / inp.max(1);
                gemm(
                    y,
                    Mat::rows(x, n, inp),
                    Mat::rows(w, out, inp).t(),
                    1.0,
                    false,
                )
            }
            FrozenWeight::Quantized(m) => m
                .matmul(x, n, y)
                .map_err(|e| candle_core::Error::Msg(format!("{NAME}: {e}"))),
        }
    }

    /// `dx (+)= g·W` for `g` `[n, out]`.
    pub(super) fn backward(
        &self,
        g: &[f32],
        n: usize,
        out: usize,
        dx: &mut [f32],
        accumulate: bool,
    ) -> candle_core::Result<()> {
        let inp = dx.len() / n.max(1);
        match self {
            FrozenWeight::Dense(w) => {
                let (storage, layout) = w.storage_and_layout();
                let Storage::Cpu(cpu) = &*storage else {
                    candle_core::bail!("{NAME}: CPU weight expected");
                };
                let w = f32_values(cpu, layout, NAME)?;
                gemm(
                    dx,
                    Mat::rows(g, n, out),
                    Mat::rows(w, out, inp),
                    1.0,
                    accumulate,
                )
            }
            FrozenWeight::Quantized(m) => quantized_input_grad(m, g, n, dx, accumulate),
        }
    }
}

/// `dx (+)= g·W` for a quantized `W` `[out, in]` and `g` `[n, out]`: `W` dequantized
/// [`DEQUANT_ROWS`] rows at a time, each block's share added in turn.
pub(crate) fn quantized_input_grad(
    m: &QMatrix,
    g: &[f32],
    n: usize,
    dx: &mut [f32],
    accumulate: bool,
) -> candle_core::Result<()> {
    let (out, inp) = (m.rows(), m.cols());
    if g.len() != n * out || dx.len() != n * inp {
        candle_core::bail!(
            "{NAME}: gradient of {} values and input of {} for a {out}×{inp} weight",
            g.len(),
            dx.len()
        );
    }
    let mut block = vec![0f32; DEQUANT_ROWS.min(out) * inp];
    for first in (0..out).step_by(DEQUANT_ROWS) {
        let rows = DEQUANT_ROWS.min(out - first);
        let w = &mut block[..rows * inp];
        // The rows dequantized on the worker pool, a whole number of panels per task.
        let failed = Failure::default();
        forja_quant::parallel_chunks_mut(w, DEQUANT_TASK_ROWS * inp, &|start, part| {
            failed.record(
                m.dequantize_rows(first + start / inp, part)
                    .map_err(|e| candle_core::Error::Msg(format!("{NAME}: dequantizing: {e}"))),
            );
        });
        failed.check(NAME)?;
        let g_cols = Mat {
            data: &g[first..],
            rows: n,
            cols: rows,
            rs: out,
            cs: 1,
        };
        gemm(
            dx,
            g_cols,
            Mat::rows(w, rows, inp),
            1.0,
            accumulate || first > 0,
        )?;
    }
    Ok(())
}

/// The op: frozen weight, adapter scale, and the dropout stream and rate of this call.
struct LoraMatmul {
    weight: FrozenWeight,
    scale: f32,
    dropout: Option<(u64, f32)>,
}

/// The sizes of one call: rows, in, out, rank.
struct Dims {
    n: usize,
    inp: usize,
    out: usize,
    rank: usize,
}

impl LoraMatmul {
    fn dims(&self, x: &[f32], x_dims: &[usize], a: &[usize], b: &[usize]) -> Result<Dims> {
        let (&[rank, inp], &[out, b_rank]) = (a, b) else {
            return Err(
                candle_core::Error::Msg(format!("{NAME}: adapter shapes {a:?} and {b:?}")).into(),
            );
        };
        if b_rank != rank || x_dims.last() != Some(&inp) || inp == 0 {
            return Err(candle_core::Error::Msg(format!(
                "{NAME}: input {x_dims:?} with adapter shapes {a:?} and {b:?}"
            ))
            .into());
        }
        Ok(Dims {
            n: x.len() / inp,
            inp,
            out,
            rank,
        })
    }

    /// `x` with this call's dropout applied (borrowed when it has none): the mask is drawn
    /// again from the call's stream, never kept.
    fn masked<'a>(&self, x: &'a [f32]) -> Cow<'a, [f32]> {
        match self.dropout {
            Some((stream, p)) => {
                let mut xd = x.to_vec();
                apply_dropout(stream, p, &mut xd);
                Cow::Owned(xd)
            }
            None => Cow::Borrowed(x),
        }
    }
}

impl CustomOp3 for LoraMatmul {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        as_: &CpuStorage,
        al: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_values(xs, xl, NAME)?;
        let a = f32_values(as_, al, NAME)?;
        let b = f32_values(bs, bl, NAME)?;
        let d = self
            .dims(x, xl.dims(), al.dims(), bl.dims())
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let mut y = vec![0f32; d.n * d.out];
        self.weight.forward(x, d.n, d.inp, &mut y)?;
        let xd = self.masked(x);
        let mut xa = vec![0f32; d.n * d.rank];
        gemm(
            &mut xa,
            Mat::rows(&xd, d.n, d.inp),
            Mat::rows(a, d.rank, d.inp).t(),
            1.0,
            false,
        )?;
        gemm(
            &mut y,
            Mat::rows(&xa, d.n, d.rank),
            Mat::rows(b, d.out, d.rank).t(),
            self.scale,
            true,
        )?;
        let mut dims = xl.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = d.out;
        }
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (gs, gl) = grad.storage_and_layout();
        let (xs, xl) = x.storage_and_layout();
        let (as_, al) = a.storage_and_layout();
        let (bs, bl) = b.storage_and_layout();
        let (Storage::Cpu(gs), Storage::Cpu(xs), Storage::Cpu(as_), Storage::Cpu(bs)) =
            (&*gs, &*xs, &*as_, &*bs)
        else {
            candle_core::bail!("{NAME}: CPU tensors expected");
        };
        let (g, xv) = (f32_values(gs, gl, NAME)?, f32_values(xs, xl, NAME)?);
        let (av, bv) = (f32_values(as_, al, NAME)?, f32_values(bs, bl, NAME)?);
        let d = self
            .dims(xv, xl.dims(), al.dims(), bl.dims())
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let (n, inp, out, rank) = (d.n, d.inp, d.out, d.rank);
        let xd = self.masked(xv);
        // gb = g·B, [n, rank]: what reaches A's output.
        let mut gb = vec![0f32; n * rank];
        gemm(
            &mut gb,
            Mat::rows(g, n, out),
            Mat::rows(bv, out, rank),
            1.0,
            false,
        )?;
        let grad_b = if b.track_op() {
            let mut xa = vec![0f32; n * rank];
            gemm(
                &mut xa,
                Mat::rows(&xd, n, inp),
                Mat::rows(av, rank, inp).t(),
                1.0,
                false,
            )?;
            let mut db = vec![0f32; out * rank];
            gemm(
                &mut db,
                Mat::rows(g, n, out).t(),
                Mat::rows(&xa, n, rank),
                self.scale,
                false,
            )?;
            Some(Tensor::from_vec(db, b.shape(), b.device())?)
        } else {
            None
        };
        let grad_a = if a.track_op() {
            let mut da = vec![0f32; rank * inp];
            gemm(
                &mut da,
                Mat::rows(&gb, n, rank).t(),
                Mat::rows(&xd, n, inp),
                self.scale,
                false,
            )?;
            Some(Tensor::from_vec(da, a.shape(), a.device())?)
        } else {
            None
        };
        let grad_x = if x.track_op() {
            let mut dx = vec![0f32; n * inp];
            self.weight.backward(g, n, out, &mut dx, false)?;
            let through_a = (Mat::rows(&gb, n, rank), Mat::rows(av, rank, inp));
            match self.dropout {
                None => gemm(&mut dx, through_a.0, through_a.1, self.scale, true)?,
                Some((stream, p)) => {
                    // The adapter's share reaches x through the same mask.
                    drop(xd);
                    let mut t = vec![0f32; n * inp];
                    gemm(&mut t, through_a.0, through_a.1, self.scale, false)?;
                    apply_dropout(stream, p, &mut t);
                    for (d, t) in dx.iter_mut().zip(&t) {
                        *d += t;
                    }
                }
            }
            Some(Tensor::from_vec(dx, x.shape(), x.device())?)
        } else {
            None
        };
        Ok((grad_x, grad_a, grad_b))
    }
}

/// `x·Wᵀ + s·(dropout(x)·Aᵀ)·Bᵀ` for `x` `[.., in]` (f32 on the CPU), as one graph node. Draws
/// the adapter's next dropout stream when it trains with dropout, as [`Lora::delta`] does.
pub(crate) fn lora_matmul(x: &Tensor, weight: FrozenWeight, lora: &Lora) -> Result<Tensor> {
    let dropout =
        (lora.training && lora.dropout > 0.0).then(|| (lora.next_dropout_stream(), lora.dropout));
    let op = LoraMatmul {
        weight,
        scale: lora.scale as f32,
        dropout,
    };
    Ok(x.contiguous()?
        .apply_op3(&lora.a.contiguous()?, &lora.b.contiguous()?, op)?)
}
