//! Attention on the CPU read straight from the KV cache: every query row's scores, softmax and
//! weighted sum of values are computed over the keys its position may see (causal, sliding
//! window), read in place from the cache's slots through the block table. No gathered copy of
//! the cache, no score tensor per layer, and one job on the worker pool for every sequence and
//! head of a step, instead of a dozen tensor operations per sequence.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Storage, Tensor};
use forja_arch::kv_cache::first_visible;
use half::f16;

use crate::error::{ModelError, Result};
use crate::kv_cache::KvView;

/// The attention settings every sequence of a step shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Multiplier on q·k.
    pub scale: f32,
    pub window: Option<usize>,
    pub softcap: Option<f32>,
}

/// One sequence of a step: `rows` query rows at positions `start..start + rows`, over the keys
/// and values of its cache view.
#[derive(Debug)]
pub(crate) struct SeqRows<'a> {
    pub start: usize,
    pub rows: usize,
    pub view: KvView<'a>,
}

/// Query rows one task handles: decode steps get one task per head and sequence, prompts are
/// split further so both threads stay busy.
const ROWS_PER_TASK: usize = 16;

/// `q`: `[Σ rows, heads · head_dim]` for the sequences one after another. Returns the attention
/// output in the same layout.
pub(crate) fn attend(h: &Heads, seqs: &[SeqRows<'_>], q: &[f32]) -> Result<Vec<f32>> {
    attend_with(&Kernels::pick(), h, seqs, q)
}

fn attend_with(kernels: &Kernels, h: &Heads, seqs: &[SeqRows<'_>], q: &[f32]) -> Result<Vec<f32>> {
    let width = h.heads * h.head_dim;
    let total: usize = seqs.iter().map(|s| s.rows).sum();
    if q.len() != total * width || h.kv_heads == 0 || !h.heads.is_multiple_of(h.kv_heads) {
        return Err(ModelError::Input(format!(
            "attention over {total} rows of {} heads × {} (KV heads {}) got {} values",
            h.heads,
            h.head_dim,
            h.kv_heads,
            q.len()
        )));
    }
    // The read guards live until every task has finished.
    let guards = seqs
        .iter()
        .map(|s| {
            Ok((
                s.view.keys.storage_and_layout(),
                s.view.values.storage_and_layout(),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut kv = Vec::with_capacity(seqs.len());
    for ((keys, kl), (values, vl)) in &guards {
        kv.push(match (kv_data(keys, kl)?, kv_data(values, vl)?) {
            (KvData::F32(k), KvData::F32(v)) => KvPair::F32(k, v),
            (KvData::F16(k), KvData::F16(v)) => KvPair::F16(k, v),
            _ => {
                return Err(ModelError::Input(
                    "keys and values of one cache in different types".into(),
                ));
            }
        });
    }
    let slot_width = h.kv_heads * h.head_dim;
    for (s, pair) in seqs.iter().zip(&kv) {
        let (k_len, v_len) = pair.lens();
        let needed = match s.view.blocks {
            None => s.start + s.rows,
            Some((table, bs)) => {
                let last = (s.start + s.rows).div_ceil(bs);
                // A sliding window reads from its first row's first visible position: blocks
                // before it may have gone back to the pool.
                let first = first_visible(s.start, h.window) / bs;
                let blocks = table.get(first.min(last)..last).ok_or_else(|| {
                    ModelError::Input(format!(
                        "{} positions need {last} blocks, the table has {}",
                        s.start + s.rows,
                        table.len()
                    ))
                })?;
                blocks
                    .iter()
                    .map(|&b| (b as usize + 1) * bs)
                    .max()
                    .unwrap_or(0)
            }
        };
        if k_len < needed * slot_width || v_len < needed * slot_width {
            return Err(ModelError::Input(format!(
                "a KV cache of {} slots read up to slot {needed}",
                k_len / slot_width.max(1)
            )));
        }
    }
    // Tasks: (sequence, head, first row, rows, first output row).
    let mut tasks = Vec::new();
    let mut out_row = 0;
    for (i, s) in seqs.iter().enumerate() {
        for head in 0..h.heads {
            for r0 in (0..s.rows).step_by(ROWS_PER_TASK) {
                let n = ROWS_PER_TASK.min(s.rows - r0);
                tasks.push((i, head, r0, n, out_row + r0));
            }
        }
        out_row += s.rows;
    }
    let mut out = vec![0f32; total * width];
    let out_ptr = SyncPtr(out.as_mut_ptr());
    forja_quant::parallel_for(tasks.len(), &|t| {
        let (i, head, r0, n, o0) = tasks[t];
        let s = &seqs[i];
        for r in 0..n {
            let row = o0 + r;
            let q_row = &q[row * width + head * h.head_dim..][..h.head_dim];
            // SAFETY: each task writes the `head` columns of its own rows: no two tasks write
            // the same element, and `out` outlives the job.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(
                    out_ptr.get().add(row * width + head * h.head_dim),
                    h.head_dim,
                )
            };
            let pos = s.start + r0 + r;
            match kv[i] {
                KvPair::F32(k, v) => (kernels.f32)(h, s, head, pos, q_row, k, v, dst),
                KvPair::F16(k, v) => (kernels.f16)(h, s, head, pos, q_row, k, v, dst),
            }
        }
    });
    Ok(out)
}

#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: used only to hand disjoint output ranges to the pool's tasks (see `attend`).
unsafe impl Sync for SyncPtr {}
unsafe impl Send for SyncPtr {}

impl SyncPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// A cache tensor's values, in the types the kernel reads.
enum KvData<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

#[derive(Clone, Copy)]
enum KvPair<'a> {
    F32(&'a [f32], &'a [f32]),
    F16(&'a [f16], &'a [f16]),
}

impl KvPair<'_> {
    fn lens(&self) -> (usize, usize) {
        match self {
            KvPair::F32(k, v) => (k.len(), v.len()),
            KvPair::F16(k, v) => (k.len(), v.len()),
        }
    }
}

fn kv_data<'a>(storage: &'a Storage, layout: &candle_core::Layout) -> Result<KvData<'a>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Err(ModelError::Input(
            "CPU attention needs a contiguous KV cache".into(),
        ));
    };
    let outside = || ModelError::Input("KV cache layout outside its storage".into());
    match storage {
        Storage::Cpu(CpuStorage::F32(data)) => {
            data.get(start..end).map(KvData::F32).ok_or_else(outside)
        }
        Storage::Cpu(CpuStorage::F16(data)) => {
            data.get(start..end).map(KvData::F16).ok_or_else(outside)
        }
        Storage::Cpu(other) => Err(ModelError::Input(format!(
            "CPU attention reads an f32 or f16 KV cache, this one holds {:?}",
            other.dtype()
        ))),
        _ => Err(ModelError::Input(
            "CPU attention over a KV cache on another device".into(),
        )),
    }
}

type RowKernel<E> = fn(&Heads, &SeqRows<'_>, usize, usize, &[f32], &[E], &[E], &mut [f32]);

/// The row kernels for this CPU, per stored type.
struct Kernels {
    f32: RowKernel<f32>,
    f16: RowKernel<f16>,
}

impl Kernels {
    fn pick() -> Kernels {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                return Kernels {
                    // SAFETY (both): the CPU has AVX2, FMA and F16C (checked above).
                    f32: |h, s, head, pos, q, k, v, out| unsafe {
                        x86::row_f32(h, s, head, pos, q, k, v, out)
                    },
                    f16: |h, s, head, pos, q, k, v, out| unsafe {
                        x86::row_f16(h, s, head, pos, q, k, v, out)
                    },
                };
            }
        }
        Kernels::portable()
    }

    fn portable() -> Kernels {
        Kernels {
            f32: row::<Plain, f32>,
            f16: row::<Plain, f16>,
        }
    }
}

/// How a row kernel reads one stored type: a dot product with the query and `out += w · v`.
trait Loads<E> {
    fn dot(q: &[f32], k: &[E]) -> f32;
    fn axpy(out: &mut [f32], w: f32, v: &[E]);
}

/// Plain loops: eight f32 lanes the compiler vectorizes; f16 converted one value at a time.
struct Plain;

impl Loads<f32> for Plain {
    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0f32; 8];
        let chunks = a.len() / 8 * 8;
        for (ca, cb) in a[..chunks].chunks_exact(8).zip(b[..chunks].chunks_exact(8)) {
            for l in 0..8 {
                acc[l] += ca[l] * cb[l];
            }
        }
        let mut total = acc.iter().sum::<f32>();
        for (x, y) in a[chunks..].iter().zip(&b[chunks..]) {
            total += x * y;
        }
        total
    }

    #[inline(always)]
    fn axpy(out: &mut [f32], w: f32, v: &[f32]) {
        for (o, &x) in out.iter_mut().zip(v) {
            *o += w * x;
        }
    }
}

impl Loads<f16> for Plain {
    #[inline(always)]
    fn dot(a: &[f32], b: &[f16]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y.to_f32()).sum()
    }

    #[inline(always)]
    fn axpy(out: &mut [f32], w: f32, v: &[f16]) {
        for (o, x) in out.iter_mut().zip(v) {
            *o += w * x.to_f32();
        }
    }
}

/// One query row at position `pos`: softmax(q·Kᵀ · scale) · V over the visible keys, with the
/// running maximum rescaled as keys arrive (one pass, no score buffer).
#[inline(always)]
#[allow(
    clippy::too_many_arguments,
    reason = "one row's inputs, as the kernel type spells them"
)]
fn row<L: Loads<E>, E>(
    h: &Heads,
    s: &SeqRows<'_>,
    head: usize,
    pos: usize,
    q: &[f32],
    keys: &[E],
    values: &[E],
    out: &mut [f32],
) {
    let d = h.head_dim;
    let g = head / (h.heads / h.kv_heads);
    let first = first_visible(pos, h.window);
    let mut max = f32::NEG_INFINITY;
    let mut sum = 0f32;
    out.fill(0.0);
    // Runs of consecutive slots: the whole range, or one run per block of the table.
    let mut p = first;
    while p <= pos {
        let (slot0, run) = match s.view.blocks {
            None => (p, pos + 1 - p),
            Some((table, bs)) => {
                let off = p % bs;
                (
                    table[p / bs] as usize * bs + off,
                    (bs - off).min(pos + 1 - p),
                )
            }
        };
        for slot in slot0..slot0 + run {
            let base = (slot * h.kv_heads + g) * d;
            let mut score = L::dot(q, &keys[base..base + d]) * h.scale;
            if let Some(cap) = h.softcap {
                score = (score / cap).tanh() * cap;
            }
            if score > max {
                let rescale = (max - score).exp();
                sum *= rescale;
                for o in out.iter_mut() {
                    *o *= rescale;
                }
                max = score;
            }
            let w = (score - max).exp();
            sum += w;
            L::axpy(out, w, &values[base..base + d]);
        }
        p += run;
    }
    let inv = 1.0 / sum;
    for o in out.iter_mut() {
        *o *= inv;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::{Heads, Loads, Plain, SeqRows, row};

    /// f16 keys and values widened eight at a time (`vcvtph2ps`), multiplied with FMA.
    struct F16c;

    impl Loads<f16> for F16c {
        #[inline(always)]
        fn dot(q: &[f32], k: &[f16]) -> f32 {
            // SAFETY: only reached from the `row_f16` below, compiled for AVX2/FMA/F16C.
            unsafe { dot_f16(q, k) }
        }

        #[inline(always)]
        fn axpy(out: &mut [f32], w: f32, v: &[f16]) {
            // SAFETY: as above.
            unsafe { axpy_f16(out, w, v) }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn dot_f16(q: &[f32], k: &[f16]) -> f32 {
        let n = q.len().min(k.len());
        let chunks = n / 8 * 8;
        let mut acc = _mm256_setzero_ps();
        for i in (0..chunks).step_by(8) {
            // SAFETY: i + 8 ≤ n, within both slices; unaligned loads.
            let (kv, qv) = unsafe {
                (
                    _mm256_cvtph_ps(_mm_loadu_si128(k.as_ptr().add(i).cast())),
                    _mm256_loadu_ps(q.as_ptr().add(i)),
                )
            };
            acc = _mm256_fmadd_ps(qv, kv, acc);
        }
        let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        let mut total = _mm_cvtss_f32(s);
        for i in chunks..n {
            total += q[i] * k[i].to_f32();
        }
        total
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn axpy_f16(out: &mut [f32], w: f32, v: &[f16]) {
        let n = out.len().min(v.len());
        let chunks = n / 8 * 8;
        let wv = _mm256_set1_ps(w);
        for i in (0..chunks).step_by(8) {
            // SAFETY: i + 8 ≤ n, within both slices; unaligned loads and stores.
            unsafe {
                let x = _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(i).cast()));
                let o = out.as_mut_ptr().add(i);
                _mm256_storeu_ps(o, _mm256_fmadd_ps(wv, x, _mm256_loadu_ps(o)));
            }
        }
        for i in chunks..n {
            out[i] += w * v[i].to_f32();
        }
    }

    /// # Safety
    /// The CPU has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments, reason = "the row kernel's inputs")]
    pub(super) unsafe fn row_f32(
        h: &Heads,
        s: &SeqRows<'_>,
        head: usize,
        pos: usize,
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        out: &mut [f32],
    ) {
        row::<Plain, f32>(h, s, head, pos, q, keys, values, out);
    }

    /// # Safety
    /// The CPU has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments, reason = "the row kernel's inputs")]
    pub(super) unsafe fn row_f16(
        h: &Heads,
        s: &SeqRows<'_>,
        head: usize,
        pos: usize,
        q: &[f32],
        keys: &[f16],
        values: &[f16],
        out: &mut [f32],
    ) {
        row::<F16c, f16>(h, s, head, pos, q, keys, values, out);
    }
}

/// Whether the fast path applies: f32 activations on the CPU.
pub(crate) fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code fails loudly")]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// softmax(q·k · scale) · v in f64 over the positions a row may see, keys and values given
    /// per position (`[positions, kv_heads, dim]`).
    fn reference(h: &Heads, pos: usize, head: usize, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
        let d = h.head_dim;
        let g = head / (h.heads / h.kv_heads);
        let first = first_visible(pos, h.window);
        let scores: Vec<f64> = (first..=pos)
            .map(|j| {
                let key = &k[(j * h.kv_heads + g) * d..][..d];
                let mut s = q
                    .iter()
                    .zip(key)
                    .map(|(a, b)| f64::from(a * b))
                    .sum::<f64>()
                    * f64::from(h.scale);
                if let Some(cap) = h.softcap {
                    s = (s / f64::from(cap)).tanh() * f64::from(cap);
                }
                s
            })
            .collect();
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f64 = weights.iter().sum();
        (0..d)
            .map(|c| {
                (first..=pos)
                    .zip(&weights)
                    .map(|(j, w)| w * f64::from(v[(j * h.kv_heads + g) * d + c]))
                    .sum::<f64>() as f32
                    / sum as f32
            })
            .collect()
    }

    #[test]
    fn matches_softmax_attention_over_paged_and_contiguous_caches() {
        let cases = [
            (None, None, DType::F32),
            (Some(5), None, DType::F32),
            (None, Some(3.0f32), DType::F32),
            (None, None, DType::F16),
            (Some(5), Some(3.0f32), DType::F16),
        ];
        for (window, softcap, dtype) in cases {
            let h = Heads {
                heads: 4,
                kv_heads: 2,
                head_dim: 12,
                scale: 0.4,
                window,
                softcap,
            };
            let slot = h.kv_heads * h.head_dim;
            let bs = 4;
            // A store of 8 blocks; sequence A owns blocks 5, 0, 6 (out of order), B slots 0...
            // Stored as `dtype`; the reference reads the stored values back as f32.
            let store = |seed| {
                let t =
                    Tensor::from_vec(values(8 * bs * slot, seed), (8 * bs, 2, 12), &Device::Cpu)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap();
                let back: Vec<f32> = t
                    .to_dtype(DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                (t, back)
            };
            let (keys, store_k) = store(1);
            let (vals, store_v) = store(2);
            let table = [5u32, 0, 6];
            // A: 3 cached + 8 new rows; B: a 19-row prompt (two tasks per head), contiguous.
            let seqs = [
                SeqRows {
                    start: 3,
                    rows: 8,
                    view: KvView {
                        keys: &keys,
                        values: &vals,
                        blocks: Some((&table, bs)),
                    },
                },
                SeqRows {
                    start: 0,
                    rows: 19,
                    view: KvView {
                        keys: &keys,
                        values: &vals,
                        blocks: None,
                    },
                },
            ];
            let width = h.heads * h.head_dim;
            let q = values(27 * width, 3);
            for kernels in [Kernels::pick(), Kernels::portable()] {
                let out = attend_with(&kernels, &h, &seqs, &q).unwrap();
                // The positions of A, laid out contiguously for the reference.
                let gather = |store: &[f32]| -> Vec<f32> {
                    (0..11)
                        .flat_map(|p| {
                            let s = table[p / bs] as usize * bs + p % bs;
                            store[s * slot..(s + 1) * slot].to_vec()
                        })
                        .collect()
                };
                let (ak, av) = (gather(&store_k), gather(&store_v));
                let mut worst = 0f32;
                for row in 0..27 {
                    let (pos, k, v) = if row < 8 {
                        (3 + row, &ak[..], &av[..])
                    } else {
                        (row - 8, &store_k[..], &store_v[..])
                    };
                    for head in 0..h.heads {
                        let qr = &q[row * width + head * 12..][..12];
                        let want = reference(&h, pos, head, qr, k, v);
                        let got = &out[row * width + head * 12..][..12];
                        for (a, b) in got.iter().zip(&want) {
                            worst = worst.max((a - b).abs());
                        }
                    }
                }
                assert!(
                    worst < 1e-5,
                    "{dtype:?} window {window:?} softcap {softcap:?}: {worst}"
                );
            }
        }
    }

    #[test]
    fn short_block_tables_and_foreign_dtypes_are_errors() {
        let h = Heads {
            heads: 2,
            kv_heads: 1,
            head_dim: 8,
            scale: 1.0,
            window: None,
            softcap: None,
        };
        let keys = Tensor::zeros((8, 1, 8), DType::F32, &Device::Cpu).unwrap();
        let table = [1u32];
        let seq = |blocks| SeqRows {
            start: 4,
            rows: 1,
            view: KvView {
                keys: &keys,
                values: &keys,
                blocks,
            },
        };
        let q = vec![0.5f32; 16];
        let e = attend(&h, &[seq(Some((&table, 4)))], &q).unwrap_err();
        assert!(e.to_string().contains("need 2 blocks"), "{e}");
        let e = attend(&h, &[seq(Some((&[9u32, 9], 4)))], &q).unwrap_err();
        assert!(e.to_string().contains("read up to slot"), "{e}");
        let half = keys.to_dtype(DType::BF16).unwrap();
        let s = SeqRows {
            start: 0,
            rows: 1,
            view: KvView {
                keys: &half,
                values: &half,
                blocks: None,
            },
        };
        let e = attend(&h, &[s], &q).unwrap_err();
        assert!(e.to_string().contains("f32 or f16 KV cache"), "{e}");
    }
}
