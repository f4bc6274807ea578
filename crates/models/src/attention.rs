//! Self-attention with grouped KV heads, optional QKV bias and QK-norm, RoPE, sliding windows and
//! logit soft-capping, over whatever the KV cache holds for the sequence.

use candle_core::{DType, Tensor};
use forja_arch::kv_cache::first_visible;

use crate::cpu_attention::{self, Heads, SeqRows};
use crate::decoder::SeqStep;
use crate::error::{ModelError, Result};
use crate::grad_ops::{self, CausalAttention};
use crate::kv_cache::KvCache;
use crate::linear::Linear;
use crate::lora::AdapterRows;
use crate::norm::RmsNorm;
use crate::rope::Rope;

/// The q/k/v projections: separate, or one fused `qkv_proj` (Phi-3).
#[derive(Debug)]
pub enum QkvProj {
    Separate { q: Linear, k: Linear, v: Linear },
    Fused(Linear),
}

#[derive(Debug)]
pub struct Attention {
    pub qkv: QkvProj,
    pub o: Linear,
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub rope: Rope,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Multiplier on q·k.
    pub scale: f64,
    /// Attend to at most this many most recent tokens (the current one included).
    pub window: Option<usize>,
    pub softcap: Option<f64>,
    /// Bytes of f32 scores computed at once; longer prompts go in chunks of query rows.
    pub score_block_bytes: usize,
    /// f32 activations on the CPU use the kernel that reads the cache in place.
    pub fused_cpu: bool,
}

impl Attention {
    /// `x`: `[tokens, hidden]`, the new tokens of every sequence of `steps` one after another;
    /// each sequence attends over its own cache; `adapters` says which rows use which served
    /// adapter. Returns `[tokens, hidden]`.
    pub fn forward_batch(
        &self,
        x: &Tensor,
        layer: usize,
        steps: &mut [SeqStep<'_>],
        masks: &mut Masks,
        adapters: &AdapterRows,
    ) -> Result<Tensor> {
        let (q, k, v) = match &self.qkv {
            QkvProj::Separate { q, k, v } => (
                q.forward_rows(x, adapters)?,
                k.forward_rows(x, adapters)?,
                v.forward_rows(x, adapters)?,
            ),
            QkvProj::Fused(qkv) => {
                let all = qkv.forward_rows(x, adapters)?;
                let qd = self.num_heads * self.head_dim;
                let kd = self.num_kv_heads * self.head_dim;
                (
                    all.narrow(1, 0, qd)?,
                    all.narrow(1, qd, kd)?,
                    all.narrow(1, qd + kd, kd)?,
                )
            }
        };
        if self.fused_cpu
            && cpu_attention::applies(x)
            && steps.iter().all(|s| s.cache.reads_in_place())
        {
            return self.forward_batch_cpu((q, k, v), layer, steps, masks, adapters);
        }
        let mut outs = Vec::with_capacity(steps.len());
        let mut row = 0;
        for step in steps.iter_mut() {
            let t = step.tokens.len();
            let rows = |m: &Tensor| -> Result<Tensor> {
                if t == x.dim(0)? {
                    Ok(m.clone())
                } else {
                    Ok(m.narrow(0, row, t)?)
                }
            };
            outs.push(self.attend_sequence(
                rows(&q)?,
                rows(&k)?,
                rows(&v)?,
                layer,
                step.cache,
                masks,
            )?);
            row += t;
        }
        let out = if outs.len() == 1 {
            outs.remove(0)
        } else {
            Tensor::cat(&outs, 0)?
        };
        self.o.forward_rows(&out.to_dtype(x.dtype())?, adapters)
    }

    /// The CPU path of [`Attention::forward_batch`] for f32 activations: QK-norm and RoPE over
    /// the whole step at once, keys and values written to each cache, then one attention job
    /// that reads every sequence's cache in place.
    fn forward_batch_cpu(
        &self,
        (q, k, v): (Tensor, Tensor, Tensor),
        layer: usize,
        steps: &mut [SeqStep<'_>],
        masks: &mut Masks,
        adapters: &AdapterRows,
    ) -> Result<Tensor> {
        let (rows, _) = q.dims2()?;
        let d = self.head_dim;
        let (h, kvh) = (self.num_heads, self.num_kv_heads);
        let normed = |x: Tensor, n: usize, norm: &Option<RmsNorm>| -> Result<Vec<f32>> {
            let x = match norm {
                Some(norm) => norm.forward(&x.reshape((rows, n, d))?)?,
                None => x,
            };
            Ok(x.flatten_all()?.to_vec1::<f32>()?)
        };
        let mut q = normed(q, h, &self.q_norm)?;
        let mut k = normed(k, kvh, &self.k_norm)?;
        let positions: Vec<usize> = steps
            .iter()
            .flat_map(|s| s.cache.len()..s.cache.len() + s.tokens.len())
            .collect();
        let table = masks.rope_table(&self.rope, &positions);
        self.rope
            .rotate_rows(&mut [(&mut q, h), (&mut k, kvh)], d, table);
        let device = v.device().clone();
        let k = Tensor::from_vec(k, (rows, kvh, d), &device)?;
        let v = v.contiguous()?.reshape((rows, kvh, d))?;
        let mut row = 0;
        for step in steps.iter_mut() {
            let n = step.tokens.len();
            step.cache
                .write(layer, &k.narrow(0, row, n)?, &v.narrow(0, row, n)?)?;
            row += n;
        }
        let seqs = steps
            .iter()
            .map(|s| {
                Ok(SeqRows {
                    start: s.cache.len(),
                    rows: s.tokens.len(),
                    view: s.cache.view(layer)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let heads = Heads {
            heads: h,
            kv_heads: kvh,
            head_dim: d,
            scale: self.scale as f32,
            window: self.window,
            softcap: self.softcap.map(|c| c as f32),
        };
        let out = cpu_attention::attend(&heads, &seqs, &q)?;
        self.o
            .forward_rows(&Tensor::from_vec(out, (rows, h * d), &device)?, adapters)
    }

    /// One sequence's projected `q`, `k`, `v` (`[tokens, heads·dim]`) at positions
    /// `cache.len()..`: QK-norm, RoPE, cache append and attention. Returns
    /// `[tokens, heads·dim]` before the output projection.
    fn attend_sequence(
        &self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        layer: usize,
        cache: &mut dyn KvCache,
        masks: &mut Masks,
    ) -> Result<Tensor> {
        let (t, _) = q.dims2()?;
        // [tokens, heads·dim] → [heads, tokens, dim]
        let heads = |x: Tensor, n: usize| -> Result<Tensor> {
            Ok(x.reshape((t, n, self.head_dim))?
                .transpose(0, 1)?
                .contiguous()?)
        };
        let mut q = heads(q, self.num_heads)?;
        let mut k = heads(k, self.num_kv_heads)?;
        let v = heads(v, self.num_kv_heads)?;
        if let Some(n) = &self.q_norm {
            q = n.forward(&q)?;
        }
        if let Some(n) = &self.k_norm {
            k = n.forward(&k)?;
        }
        let start = cache.len();
        let q = self.rope.apply(&q, start)?;
        let k = self.rope.apply(&k, start)?;
        let span = cache.append(layer, &k, &v)?;
        let k_all = span.keys.to_dtype(DType::F32)?;
        let v_all = span.values.to_dtype(DType::F32)?;
        let q = q.to_dtype(DType::F32)?;
        let trains = q.track_op() || k_all.track_op() || v_all.track_op();
        if trains && span.first > 0 {
            return Err(ModelError::Input(
                "a step that trains needs a cache that keeps every position".into(),
            ));
        }
        if trains && grad_ops::applies(&q) {
            let op = CausalAttention {
                scale: self.scale as f32,
                softcap: self.softcap.map(|c| c as f32),
                window: self.window,
                start,
            };
            return Ok(grad_ops::causal_attention(&q, &k_all, &v_all, op)?
                .transpose(0, 1)?
                .reshape((t, self.num_heads * self.head_dim))?);
        }
        // Positions `span.first..start + t` are held.
        let s = k_all.dim(1)?;
        // Query rows per chunk, so the f32 score block stays within its budget.
        let row_bytes = self.num_heads * s * 4;
        let chunk = (self.score_block_bytes / row_bytes).clamp(1, t);
        let mut outs = Vec::with_capacity(t.div_ceil(chunk));
        for i0 in (0..t).step_by(chunk) {
            let n = chunk.min(t - i0);
            // Keys this chunk can see: causal end, sliding-window start.
            let first_pos = start + i0;
            let k_end = first_pos + n;
            let k_begin = first_visible(first_pos, self.window);
            let at = k_begin.checked_sub(span.first).ok_or_else(|| {
                ModelError::Input(format!(
                    "position {first_pos} sees keys from {k_begin}; the cache holds them from {}",
                    span.first
                ))
            })?;
            let k = k_all.narrow(1, at, k_end - k_begin)?.contiguous()?;
            let v = v_all.narrow(1, at, k_end - k_begin)?.contiguous()?;
            let q = if n == t {
                q.clone()
            } else {
                q.narrow(1, i0, n)?.contiguous()?
            };
            let mask = if n == 1 {
                None
            } else {
                Some(masks.get(first_pos, n, k_begin, k_end, self.window, q.device())?)
            };
            outs.push(self.attend(&q, &k, &v, mask.as_ref())?);
        }
        let out = if outs.len() == 1 {
            outs.remove(0)
        } else {
            Tensor::cat(&outs, 1)?
        };
        Ok(out
            .transpose(0, 1)?
            .reshape((t, self.num_heads * self.head_dim))?)
    }

    /// Attention of `q` `[heads, n, dim]` over `k`, `v` `[kv_heads, s, dim]`: each group of
    /// query heads shares its KV head without copying it. Returns `[heads, n, dim]`.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (h, n, d) = q.dims3()?;
        let kv = self.num_kv_heads;
        let s = k.dim(1)?;
        let q = q.reshape((kv, (h / kv) * n, d))?;
        let mut scores = (q.matmul(&k.t()?)? * self.scale)?;
        if let Some(cap) = self.softcap {
            scores = ((scores / cap)?.tanh()? * cap)?;
        }
        if let Some(mask) = mask {
            scores =
                scores
                    .reshape((h, n, s))?
                    .broadcast_add(mask)?
                    .reshape((kv, (h / kv) * n, s))?;
        }
        let probs = if scores.track_op() {
            softmax_with_grad(&scores)?
        } else {
            candle_nn::ops::softmax_last_dim(&scores)?
        };
        Ok(probs.matmul(v)?.reshape((h, n, d))?)
    }
}

/// Softmax over the last dimension from differentiable ops (candle's fused kernel has no
/// backward), for steps that train. The row maximum is a constant shift: detached, it adds no
/// work to the backward pass.
fn softmax_with_grad(scores: &Tensor) -> Result<Tensor> {
    let max = scores.max_keepdim(candle_core::D::Minus1)?.detach();
    let e = scores.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(candle_core::D::Minus1)?)?)
}

/// Default bytes of f32 attention scores computed at once.
pub const SCORE_BLOCK_BYTES: usize = 64 << 20;

/// Additive causal / sliding-window masks of one forward step, built once and shared by every
/// layer with the same window; likewise the rows' RoPE tables, shared by every layer with the
/// same frequencies (Gemma's local and global layers make two).
#[derive(Debug, Default)]
pub struct Masks {
    built: Vec<(MaskKey, Tensor)>,
    ropes: Vec<(Rope, Vec<usize>, Vec<f32>)>,
}

/// First query position, query rows, key range, window.
type MaskKey = (usize, usize, usize, usize, Option<usize>);

impl Masks {
    /// The [`Rope::row_table`] of `rope` at `positions`, made once per step.
    fn rope_table(&mut self, rope: &Rope, positions: &[usize]) -> &[f32] {
        let found = self
            .ropes
            .iter()
            .position(|(r, p, _)| r.same_table(rope) && p == positions);
        let i = match found {
            Some(i) => i,
            None => {
                let table = rope.row_table(positions);
                self.ropes.push((rope.clone(), positions.to_vec(), table));
                self.ropes.len() - 1
            }
        };
        &self.ropes[i].2
    }

    /// Mask `[n, k_end − k_begin]`: query `i` (position `first_pos + i`) sees key `j` when
    /// `j ≤ first_pos + i` and, with a window `w`, `j > first_pos + i − w`.
    fn get(
        &mut self,
        first_pos: usize,
        n: usize,
        k_begin: usize,
        k_end: usize,
        window: Option<usize>,
        device: &candle_core::Device,
    ) -> Result<Tensor> {
        let key = (first_pos, n, k_begin, k_end, window);
        if let Some((_, m)) = self.built.iter().find(|(k, _)| *k == key) {
            return Ok(m.clone());
        }
        let s = k_end - k_begin;
        let mut m = vec![0f32; n * s];
        for i in 0..n {
            let pos = first_pos + i;
            for (jj, slot) in m[i * s..(i + 1) * s].iter_mut().enumerate() {
                let j = k_begin + jj;
                let future = j > pos;
                let outside = window.is_some_and(|w| j + w <= pos);
                if future || outside {
                    *slot = f32::NEG_INFINITY;
                }
            }
        }
        let m = Tensor::from_vec(m, (n, s), device)?;
        self.built.push((key, m.clone()));
        Ok(m)
    }
}
