//! The output head and the cross-entropy loss as one op: `Σ_rows (logsumexp(z) − z[target])`
//! with `z = x·Wᵀ` (soft-capped when the model caps its logits). The logits exist one block of
//! rows at a time, in the forward pass and again in the backward pass, which recomputes them
//! and sends `softmax(z) − onehot(target)` back through `W`; the graph node keeps nothing of
//! vocabulary size. A weight being trained (full fine-tuning) gets its gradient from the same
//! blocks.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use super::{FrozenWeight, Mat, f32_values, gemm};
use crate::error::Result;

const NAME: &str = "forja-head-loss";

struct HeadLoss {
    weight: FrozenWeight,
    vocab: usize,
    targets: Vec<u32>,
    softcap: Option<f32>,
    /// Rows whose logits are computed at once.
    block_rows: usize,
}

impl HeadLoss {
    /// Each block of rows: its logits (soft-capped), then `f(first_row, rows, logits)`.
    fn blocks(
        &self,
        x: &[f32],
        hidden: usize,
        mut f: impl FnMut(usize, usize, &mut [f32]) -> candle_core::Result<()>,
    ) -> candle_core::Result<()> {
        let n = x.len() / hidden.max(1);
        if n != self.targets.len() {
            candle_core::bail!("{NAME}: {n} rows for {} targets", self.targets.len());
        }
        if let Some(t) = self.targets.iter().find(|&&t| t as usize >= self.vocab) {
            candle_core::bail!("{NAME}: target {t} outside a vocabulary of {}", self.vocab);
        }
        let block = self.block_rows.clamp(1, n.max(1));
        let mut logits = vec![0f32; block * self.vocab];
        for first in (0..n).step_by(block) {
            let rows = block.min(n - first);
            let z = &mut logits[..rows * self.vocab];
            let xs = &x[first * hidden..(first + rows) * hidden];
            self.weight.forward(xs, rows, hidden, z)?;
            if let Some(cap) = self.softcap {
                for v in z.iter_mut() {
                    *v = cap * (*v / cap).tanh();
                }
            }
            f(first, rows, z)?;
        }
        Ok(())
    }
}

/// `(max, log Σ exp(z − max))` of one row.
fn log_sum_exp(z: &[f32]) -> (f32, f64) {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = z.iter().map(|&v| f64::from((v - max).exp())).sum();
    (max, sum.ln())
}

impl CustomOp1 for HeadLoss {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_values(s, l, NAME)?;
        let hidden = l.dims().last().copied().unwrap_or(0);
        let mut total = 0f64;
        self.blocks(x, hidden, |first, _, z| {
            for (row, t) in z.chunks_exact(self.vocab).zip(&self.targets[first..]) {
                let (max, lse) = log_sum_exp(row);
                total += f64::from(max) + lse - f64::from(row[*t as usize]);
            }
            Ok(())
        })?;
        Ok((CpuStorage::F32(vec![total as f32]), Shape::from(())))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.grads(x, grad, false)?.0))
    }
}

/// The same op with the (dense, trained) weight as its second input, for its gradient too:
/// `dW = Σ_blocks gᵀ·x` over the same blocks of logits.
impl CustomOp2 for HeadLoss {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        _w: &CpuStorage,
        _wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        // `self.weight` is the same tensor as the second input.
        CustomOp1::cpu_fwd(self, s, l)
    }

    fn bwd(
        &self,
        x: &Tensor,
        _w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = self.grads(x, grad, true)?;
        Ok((Some(dx), dw))
    }
}

impl HeadLoss {
    /// The gradient of the input and, with `weight_grad`, of the weight.
    fn grads(
        &self,
        x: &Tensor,
        grad: &Tensor,
        weight_grad: bool,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let scale = grad.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        let xs = x.contiguous()?;
        let (storage, layout) = xs.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            candle_core::bail!("{NAME}: CPU input expected");
        };
        let xv = f32_values(cpu, layout, NAME)?;
        let hidden = layout.dims().last().copied().unwrap_or(0);
        let mut dx = vec![0f32; xv.len()];
        let mut dw = if weight_grad {
            vec![0f32; self.vocab * hidden]
        } else {
            Vec::new()
        };
        self.blocks(xv, hidden, |first, rows, z| {
            for (row, t) in z.chunks_exact_mut(self.vocab).zip(&self.targets[first..]) {
                let (max, lse) = log_sum_exp(row);
                let shift = f64::from(max) + lse;
                let at = *t as usize;
                for (j, v) in row.iter_mut().enumerate() {
                    let p = (f64::from(*v) - shift).exp() as f32;
                    let hot = if j == at { 1.0 } else { 0.0 };
                    // Through the cap: z = c·tanh(l/c), dz/dl = 1 − (z/c)².
                    let slope = self.softcap.map_or(1.0, |c| 1.0 - (*v / c) * (*v / c));
                    *v = scale * (p - hot) * slope;
                }
            }
            let g = &*z;
            let block = &xv[first * hidden..(first + rows) * hidden];
            if weight_grad {
                gemm(
                    &mut dw,
                    Mat::rows(g, rows, self.vocab).t(),
                    Mat::rows(block, rows, hidden),
                    1.0,
                    true,
                )?;
            }
            let out = &mut dx[first * hidden..(first + rows) * hidden];
            self.weight.backward(g, rows, self.vocab, out, false)
        })?;
        let dx = Tensor::from_vec(dx, x.shape(), x.device())?;
        let dw = if weight_grad {
            Some(Tensor::from_vec(dw, (self.vocab, hidden), x.device())?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// `Σ_rows (logsumexp(z) − z[target])` for the rows of `x` `[n, hidden]` and `z = x·Wᵀ`
/// (soft-capped by `softcap`), as one graph node computing at most `block_rows` rows of logits
/// at once. A scalar.
pub(crate) fn head_loss(
    x: &Tensor,
    weight: FrozenWeight,
    vocab: usize,
    targets: &[u32],
    softcap: Option<f64>,
    block_rows: usize,
) -> Result<Tensor> {
    let op = HeadLoss {
        weight,
        vocab,
        targets: targets.to_vec(),
        softcap: softcap.map(|c| c as f32),
        block_rows,
    };
    match &op.weight {
        // A weight being trained (full fine-tuning) gets its gradient through a second input.
        FrozenWeight::Dense(w) if w.is_variable() => {
            let w = w.clone();
            Ok(x.contiguous()?.apply_op2(&w, op)?)
        }
        _ => Ok(x.contiguous()?.apply_op1(op)?),
    }
}
