//! Causal self-attention of one sequence as one op, for training: `q` `[heads, n, dim]` over
//! `k`, `v` `[kv_heads, s, dim]` (grouped heads share their KV head), with scale, optional
//! logit soft-capping and sliding window. The graph node keeps the output alone — no
//! `[heads, n, s]` score matrix — and the backward pass recomputes each query row's softmax
//! from `q` and `k` (as FlashAttention's backward does).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use forja_arch::kv_cache::first_visible;

use forja_quant::math;

use super::{Failure, Mat, SyncPtr, f32_values, gemm_serial, gemm_serial_add};
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
        let lo = first_visible(pos, self.window);
        lo..pos + 1
    }

    #[cfg(test)]
    pub(crate) fn keys_for_test(&self, i: usize) -> std::ops::Range<usize> {
        self.keys(i)
    }

    /// Values of a block's capped logits' `tanh` for `size` scores: none without soft-capping.
    fn tanh_len(&self, size: usize) -> usize {
        if self.softcap.is_some() { size } else { 0 }
    }

    /// The keys a block of query rows `rows` sees together: from the first row's first key
    /// to the last row's last.
    fn block_keys(&self, rows: &std::ops::Range<usize>) -> std::ops::Range<usize> {
        self.keys(rows.start).start..self.keys(rows.end - 1).end
    }

    /// The softmax weights of query rows `rows` over keys `cols` into `p` (`[rows, cols]`),
    /// from `q` `[n, d]` and `k` `[s, d]` of one head: each row's scaled logits soft-capped
    /// (their `tanh` kept in `t` for the backward pass; `t` is empty without soft-capping), its
    /// keys outside its own range zero.
    fn block_probs(
        &self,
        (q, k, d): (&[f32], &[f32], usize),
        rows: &std::ops::Range<usize>,
        cols: &std::ops::Range<usize>,
        p: &mut [f32],
        t: &mut [f32],
    ) -> candle_core::Result<()> {
        let len = cols.len();
        gemm_serial(
            p,
            Mat::rows(&q[rows.start * d..rows.end * d], rows.len(), d),
            Mat::rows(&k[cols.start * d..cols.end * d], len, d).t(),
            self.scale,
        )?;
        for (r, p) in p.chunks_exact_mut(len).enumerate() {
            let keys = self.keys(rows.start + r);
            let (a, b) = (keys.start - cols.start, keys.end - cols.start);
            p[..a].fill(0.0);
            p[b..].fill(0.0);
            let p = &mut p[a..b];
            if let Some(cap) = self.softcap {
                let t = &mut t[r * len..(r + 1) * len];
                t.fill(0.0);
                for (x, tj) in p.iter_mut().zip(&mut t[a..b]) {
                    *tj = (*x / cap).tanh();
                    *x = cap * *tj;
                }
            }
            let max = p.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let mut sum = 0f32;
            for x in p.iter_mut() {
                *x = math::exp(*x - max);
                sum += *x;
            }
            let inv = 1.0 / sum;
            for x in p.iter_mut() {
                *x *= inv;
            }
        }
        Ok(())
    }
}

/// Query rows per block: a block's scores (`[BLOCK, keys]`) are the only score values that
/// exist at a time in each task.
const BLOCK: usize = 32;

/// Part `at` of `t` cut in parts of `len`.
fn one(t: &[f32], at: usize, len: usize) -> &[f32] {
    &t[at * len..(at + 1) * len]
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
        let failed = Failure::default();
        // One task per head.
        forja_quant::parallel_chunks_mut(&mut out, (n * d).max(1), &|start, o| {
            let head = start / (n * d).max(1);
            let g = head / group;
            let (q, k, v) = (one(q, head, n * d), one(k, g, s * d), one(v, g, s * d));
            let mut p = vec![0f32; BLOCK.min(n) * s];
            let mut t = vec![0f32; self.tanh_len(BLOCK.min(n) * s)];
            for first in (0..n).step_by(BLOCK) {
                let rows = first..(first + BLOCK).min(n);
                let cols = self.block_keys(&rows);
                let size = rows.len() * cols.len();
                let (p, t) = (&mut p[..size], &mut t[..self.tanh_len(size)]);
                failed.record(
                    self.block_probs((q, k, d), &rows, &cols, p, t)
                        .and_then(|()| {
                            gemm_serial(
                                &mut o[rows.start * d..rows.end * d],
                                Mat::rows(p, rows.len(), cols.len()),
                                Mat::rows(&v[cols.start * d..cols.end * d], cols.len(), d),
                                1.0,
                            )
                        }),
                );
            }
        });
        failed.check(NAME)?;
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
        // Per query head: its rows of dq (heads are dq's outer dimension), and its share of its
        // KV head's dk and dv, summed over the group after.
        let per = 2 * s * d;
        let mut dq = vec![0f32; h * n * d];
        let mut shares = vec![0f32; h * per];
        let failed = Failure::default();
        let dq_ptr = SyncPtr(dq.as_mut_ptr());
        forja_quant::parallel_chunks_mut(&mut shares, per.max(1), &|start, dkv| {
            let (head, dq_ptr) = (start / per.max(1), &dq_ptr);
            let g = head / group;
            // SAFETY: `dq` holds `h·n·d` values and outlives the tasks; this task alone writes
            // head `head`'s `n·d` of them.
            let dq = unsafe { std::slice::from_raw_parts_mut(dq_ptr.0.add(head * n * d), n * d) };
            let (dk, dv) = dkv.split_at_mut(s * d);
            let (q, o, dout) = (
                one(&qv, head, n * d),
                one(&ov, head, n * d),
                one(&gv, head, n * d),
            );
            let (k, v) = (one(&kvv, g, s * d), one(&vv, g, s * d));
            let block = BLOCK.min(n) * s;
            let (mut p, mut ds) = (vec![0f32; block], vec![0f32; block]);
            let mut t = vec![0f32; self.tanh_len(block)];
            for first in (0..n).step_by(BLOCK) {
                let rows = first..(first + BLOCK).min(n);
                let cols = self.block_keys(&rows);
                let (b, len) = (rows.len(), cols.len());
                let (p, ds) = (&mut p[..b * len], &mut ds[..b * len]);
                let t = &mut t[..self.tanh_len(b * len)];
                let (qb, ob, dob) = (
                    &q[rows.start * d..rows.end * d],
                    &o[rows.start * d..rows.end * d],
                    &dout[rows.start * d..rows.end * d],
                );
                let (kb, vb) = (
                    &k[cols.start * d..cols.end * d],
                    &v[cols.start * d..cols.end * d],
                );
                let mut step = || -> candle_core::Result<()> {
                    self.block_probs((q, k, d), &rows, &cols, p, t)?;
                    // dP = dO·Vᵀ, then dS = P ∘ (dP − rowsum(dO ∘ O)) through the cap and scale.
                    gemm_serial(ds, Mat::rows(dob, b, d), Mat::rows(vb, len, d).t(), 1.0)?;
                    for (r, (ds, p)) in ds
                        .chunks_exact_mut(len)
                        .zip(p.chunks_exact(len))
                        .enumerate()
                    {
                        let di = dot(&dob[r * d..(r + 1) * d], &ob[r * d..(r + 1) * d]);
                        if self.softcap.is_some() {
                            let t = &t[r * len..(r + 1) * len];
                            for ((x, &pj), &tj) in ds.iter_mut().zip(p).zip(t) {
                                *x = pj * (*x - di) * (1.0 - tj * tj) * self.scale;
                            }
                        } else {
                            for (x, &pj) in ds.iter_mut().zip(p) {
                                *x = pj * (*x - di) * self.scale;
                            }
                        }
                    }
                    let (ds, p) = (Mat::rows(ds, b, len), Mat::rows(p, b, len));
                    gemm_serial(
                        &mut dq[rows.start * d..rows.end * d],
                        ds,
                        Mat::rows(kb, len, d),
                        1.0,
                    )?;
                    let (dkb, dvb) = (
                        &mut dk[cols.start * d..cols.end * d],
                        &mut dv[cols.start * d..cols.end * d],
                    );
                    gemm_serial_add(dkb, ds.t(), Mat::rows(qb, b, d))?;
                    gemm_serial_add(dvb, p.t(), Mat::rows(dob, b, d))
                };
                failed.record(step());
            }
        });
        failed.check(NAME)?;
        let mut dk = vec![0f32; kv * s * d];
        let mut dv = vec![0f32; kv * s * d];
        for (head, part) in shares.chunks_exact(per.max(1)).enumerate() {
            let (pk, pv) = part.split_at(s * d);
            let g = head / group;
            for (acc, x) in dk[g * s * d..(g + 1) * s * d].iter_mut().zip(pk) {
                *acc += x;
            }
            for (acc, x) in dv[g * s * d..(g + 1) * s * d].iter_mut().zip(pv) {
                *acc += x;
            }
        }
        drop(shares);
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
