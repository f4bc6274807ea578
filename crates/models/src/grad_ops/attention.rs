//! Causal self-attention of one sequence as one op, for training: `q` `[heads, n, dim]` over
//! `k`, `v` `[kv_heads, s, dim]` (grouped heads share their KV head), with scale, optional
//! logit soft-capping and sliding window. The graph node keeps the output alone — no
//! `[heads, n, s]` score matrix — and the backward pass recomputes each query row's softmax
//! from `q` and `k` (as FlashAttention's backward does).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::f32_values;
use crate::error::Result;

const NAME: &str = "forja-causal-attention";

/// The attention of one sequence whose query row 0 is at position `start` and whose keys are
/// positions `0..s`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CausalAttention {
    pub scale: f32,
    pub softcap: Option<f32>,
    /// Attend to at most this many most recent positions (the query's own included).
    pub window: Option<usize>,
    pub start: usize,
}

/// Sizes of a call: heads, kv heads, query rows, keys, head size.
#[derive(Debug, Clone, Copy)]
struct Dims {
    h: usize,
    kv: usize,
    n: usize,
    s: usize,
    d: usize,
}

impl CausalAttention {
    fn dims(&self, q: &[usize], k: &[usize], v: &[usize]) -> candle_core::Result<Dims> {
        let (&[h, n, d], &[kv, s, kd]) = (q, k) else {
            candle_core::bail!("{NAME}: q {q:?}, k {k:?}");
        };
        if kd != d || v != k || kv == 0 || !h.is_multiple_of(kv) || self.start + n > s {
            candle_core::bail!(
                "{NAME}: q {q:?}, k {k:?}, v {v:?} from position {}",
                self.start
            );
        }
        Ok(Dims { h, kv, n, s, d })
    }

    /// The keys query row `i` sees.
    fn keys(&self, i: usize) -> std::ops::Range<usize> {
        let pos = self.start + i;
        let lo = self.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        lo..pos + 1
    }

    #[cfg(test)]
    pub(crate) fn keys_for_test(&self, i: usize) -> std::ops::Range<usize> {
        self.keys(i)
    }

    /// Row `i`'s softmax weights over its keys into `p` (`[keys]`), and the capped logits'
    /// `tanh` into `t` when soft-capping (for the backward pass).
    fn probs(&self, q: &[f32], k: &[f32], d: usize, i: usize, p: &mut [f32], t: &mut [f32]) {
        let keys = self.keys(i);
        let mut max = f32::NEG_INFINITY;
        for ((pj, tj), j) in p.iter_mut().zip(t.iter_mut()).zip(keys) {
            let mut x = self.scale * dot(q, &k[j * d..(j + 1) * d]);
            if let Some(cap) = self.softcap {
                *tj = (x / cap).tanh();
                x = cap * *tj;
            }
            *pj = x;
            max = max.max(x);
        }
        let mut sum = 0f32;
        for pj in p.iter_mut() {
            *pj = (*pj - max).exp();
            sum += *pj;
        }
        for pj in p.iter_mut() {
            *pj /= sum;
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

fn axpy(out: &mut [f32], w: f32, x: &[f32]) {
    for (o, x) in out.iter_mut().zip(x) {
        *o += w * x;
    }
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let Dims { h, kv, n, s, d } = self.dims(ql.dims(), kl.dims(), vl.dims())?;
        let (q, k, v) = (
            f32_values(qs, ql, NAME)?,
            f32_values(ks, kl, NAME)?,
            f32_values(vs, vl, NAME)?,
        );
        let group = h / kv;
        let mut out = vec![0f32; h * n * d];
        // One task per head.
        forja_quant::parallel_chunks_mut(&mut out, (n * d).max(1), &|start, o| {
            let head = start / (n * d).max(1);
            let g = head / group;
            let (k, v) = (
                &k[g * s * d..(g + 1) * s * d],
                &v[g * s * d..(g + 1) * s * d],
            );
            let mut p = vec![0f32; s];
            let mut t = vec![0f32; s];
            for i in 0..n {
                let keys = self.keys(i);
                let len = keys.len();
                let qi = &q[(head * n + i) * d..(head * n + i + 1) * d];
                self.probs(qi, k, d, i, &mut p[..len], &mut t[..len]);
                let oi = &mut o[i * d..(i + 1) * d];
                for (&pj, j) in p[..len].iter().zip(keys) {
                    axpy(oi, pj, &v[j * d..(j + 1) * d]);
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((h, n, d))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Dims { h, kv, n, s, d } = self.dims(q.dims(), k.dims(), v.dims())?;
        let values = |t: &Tensor| -> candle_core::Result<Vec<f32>> {
            t.contiguous()?.flatten_all()?.to_vec1::<f32>()
        };
        let (qv, kvv, vv, ov, gv) = (
            values(q)?,
            values(k)?,
            values(v)?,
            values(res)?,
            values(grad)?,
        );
        let group = h / kv;
        // Per KV head: its query heads' dq, then its dk and dv.
        let per = group * n * d + 2 * s * d;
        let mut all = vec![0f32; kv * per];
        forja_quant::parallel_chunks_mut(&mut all, per.max(1), &|start, part| {
            let g = start / per.max(1);
            let (dq, dkv) = part.split_at_mut(group * n * d);
            let (dk, dv) = dkv.split_at_mut(s * d);
            let (k, v) = (
                &kvv[g * s * d..(g + 1) * s * d],
                &vv[g * s * d..(g + 1) * s * d],
            );
            let mut p = vec![0f32; s];
            let mut t = vec![0f32; s];
            for hh in 0..group {
                let head = g * group + hh;
                for i in 0..n {
                    let row = (head * n + i) * d..(head * n + i + 1) * d;
                    let (qi, oi, doi) = (&qv[row.clone()], &ov[row.clone()], &gv[row]);
                    let keys = self.keys(i);
                    let len = keys.len();
                    self.probs(qi, k, d, i, &mut p[..len], &mut t[..len]);
                    let di = dot(doi, oi);
                    let dqi = &mut dq[(hh * n + i) * d..(hh * n + i + 1) * d];
                    for ((&pj, &tj), j) in p[..len].iter().zip(&t[..len]).zip(keys) {
                        let (kj, vj) = (&k[j * d..(j + 1) * d], &v[j * d..(j + 1) * d]);
                        let mut ds = pj * (dot(doi, vj) - di);
                        if self.softcap.is_some() {
                            ds *= 1.0 - tj * tj;
                        }
                        ds *= self.scale;
                        axpy(dqi, ds, kj);
                        axpy(&mut dk[j * d..(j + 1) * d], ds, qi);
                        axpy(&mut dv[j * d..(j + 1) * d], pj, doi);
                    }
                }
            }
        });
        let mut dq = Vec::with_capacity(h * n * d);
        let mut dk = Vec::with_capacity(kv * s * d);
        let mut dv = Vec::with_capacity(kv * s * d);
        for part in all.chunks_exact(per.max(1)) {
            let (pq, pkv) = part.split_at(group * n * d);
            let (pk, pv) = pkv.split_at(s * d);
            dq.extend_from_slice(pq);
            dk.extend_from_slice(pk);
            dv.extend_from_slice(pv);
        }
        // Only inputs in the graph get a gradient (candle would keep any other until the end).
        let grad = |t: &Tensor, g: Vec<f32>| -> candle_core::Result<Option<Tensor>> {
            t.track_op()
                .then(|| Tensor::from_vec(g, t.shape(), t.device()))
                .transpose()
        };
        Ok((grad(q, dq)?, grad(k, dk)?, grad(v, dv)?))
    }
}

/// `softmax(scale·q·kᵀ (soft-capped, causal, windowed))·v` for one sequence, one graph node.
pub(crate) fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    op: CausalAttention,
) -> Result<Tensor> {
    Ok(q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)?)
}
