//! Plain CPU versions of every GPU kernel, written for clarity: the GPU results are checked
//! against them on random inputs.

use half::f16;

use crate::{PagedAttention, Result, shapes};

/// RMSNorm of each row of `x` (`[rows, cols]`): `x / sqrt(mean(x²) + eps) · (offset + w)`;
/// `offset` is 1 for Gemma's `(1 + w)` weights, else 0.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, offset: f32) -> Result<Vec<f32>> {
    let cols = w.len();
    shapes::rows(x.len(), cols)?;
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(cols) {
        let ms = row
            .iter()
            .map(|v| f64::from(*v) * f64::from(*v))
            .sum::<f64>()
            / cols as f64;
        let inv = 1.0 / (ms + f64::from(eps)).sqrt();
        out.extend(
            row.iter()
                .zip(w)
                .map(|(v, g)| (f64::from(*v) * inv) as f32 * (offset + g)),
        );
    }
    Ok(out)
}

/// `silu(gate) · up`, elementwise.
pub fn silu_mul(gate: &[f32], up: &[f32]) -> Result<Vec<f32>> {
    shapes::gate_up(gate.len(), up.len())?;
    Ok(gate
        .iter()
        .zip(up)
        .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
        .collect())
}

/// Rotary embedding in the "neox" layout (first half of the rotated dims against the second)
/// of `x` (`[rows, heads · head_dim]`) in place, row `r` at position `positions[r]`, over the
/// first `2 · inv_freq.len()` dims of each head.
pub fn rope_neox(
    x: &mut [f32],
    positions: &[u32],
    heads: usize,
    head_dim: usize,
    inv_freq: &[f32],
) -> Result<()> {
    let half = inv_freq.len();
    shapes::rope(x.len(), positions.len(), heads, head_dim, half)?;
    for (row, &p) in x.chunks_exact_mut(heads * head_dim).zip(positions) {
        for head in row.chunks_exact_mut(head_dim) {
            for (i, &f) in inv_freq.iter().enumerate() {
                let angle = f64::from(p) * f64::from(f);
                let (c, s) = (angle.cos() as f32, angle.sin() as f32);
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * c - b * s;
                head[i + half] = b * c + a * s;
            }
        }
    }
    Ok(())
}

/// Writes token `t`'s keys and values (`[tokens, width]`, f32) as f16 into slot `slots[t]` of
/// the caches (`[slots, width]`).
pub fn reshape_and_cache(
    k: &[f32],
    v: &[f32],
    k_cache: &mut [f16],
    v_cache: &mut [f16],
    slots: &[u32],
    width: usize,
) -> Result<()> {
    shapes::cache_writes(
        k.len(),
        v.len(),
        slots,
        width,
        k_cache.len().min(v_cache.len()),
    )?;
    for (t, &slot) in slots.iter().enumerate() {
        let dst = slot as usize * width..(slot as usize + 1) * width;
        for (d, s) in k_cache[dst.clone()].iter_mut().zip(&k[t * width..]) {
            *d = f16::from_f32(*s);
        }
        for (d, s) in v_cache[dst].iter_mut().zip(&v[t * width..]) {
            *d = f16::from_f32(*s);
        }
    }
    Ok(())
}

/// Attention of each query row (`[rows, heads · head_dim]`) over the keys and values of the
/// positions it sees (see [`PagedAttention`]), found in the f16 caches (`[slots, kv_heads ·
/// head_dim]`) through its sequence's row of `block_tables`. Softmax in f64.
pub fn paged_attention(p: &PagedAttention, q: &[f32], k: &[f16], v: &[f16]) -> Result<Vec<f32>> {
    p.check(q.len(), k.len(), v.len())?;
    let (d, width) = (p.head_dim, p.kv_heads * p.head_dim);
    let group = p.heads / p.kv_heads;
    let mut out = vec![0f32; q.len()];
    for (r, (&ctx, &s)) in p.context_lens.iter().zip(&p.row_seqs).enumerate() {
        let (ctx, s) = (ctx as usize, s as usize);
        let first = p.window.map_or(0, |w| ctx.saturating_sub(w as usize));
        let table = &p.block_tables[s * p.max_blocks..(s + 1) * p.max_blocks];
        let slot = |j: usize| table[j / p.block_size] as usize * p.block_size + j % p.block_size;
        for h in 0..p.heads {
            let g = h / group;
            let qh = &q[(r * p.heads + h) * d..][..d];
            let scores: Vec<f64> = (first..ctx)
                .map(|j| {
                    let kj = &k[slot(j) * width + g * d..][..d];
                    let s = qh
                        .iter()
                        .zip(kj)
                        .map(|(a, b)| f64::from(*a) * f64::from(b.to_f32()))
                        .sum::<f64>()
                        * f64::from(p.scale);
                    match p.softcap {
                        Some(c) => f64::from(c) * (s / f64::from(c)).tanh(),
                        None => s,
                    }
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
            let sum: f64 = w.iter().sum();
            let o = &mut out[(r * p.heads + h) * d..][..d];
            for (c, o) in o.iter_mut().enumerate() {
                let acc: f64 = (first..ctx)
                    .zip(&w)
                    .map(|(j, w)| w * f64::from(v[slot(j) * width + g * d + c].to_f32()))
                    .sum();
                *o = (acc / sum) as f32;
            }
        }
    }
    Ok(out)
}

/// Row `ids[r]` of `table` (`[vocab, cols]`) times `scale`, for each id.
pub fn embed_rows(table: &[f32], ids: &[u32], cols: usize, scale: f32) -> Result<Vec<f32>> {
    shapes::rows(table.len(), cols)?;
    let vocab = table.len() / cols;
    let mut out = Vec::with_capacity(ids.len() * cols);
    for &id in ids {
        let id = id as usize;
        if id >= vocab {
            return Err(crate::KernelError::Shape(format!(
                "id {id} outside a table of {vocab} rows"
            )));
        }
        out.extend(table[id * cols..(id + 1) * cols].iter().map(|v| v * scale));
    }
    Ok(out)
}

/// `x[r] += RMSNorm(y[r]) · w` for each row (`[rows, w.len()]`).
pub fn add_rms_norm(x: &mut [f32], y: &[f32], w: &[f32], eps: f32) -> Result<()> {
    if x.len() != y.len() {
        return Err(crate::KernelError::Shape(format!(
            "{} values to add {} to",
            y.len(),
            x.len()
        )));
    }
    let normed = rms_norm(y, w, eps, 0.0)?;
    for (a, b) in x.iter_mut().zip(normed) {
        *a += b;
    }
    Ok(())
}

/// The activations `gated_act` takes, by code.
fn activate(g: f32, act: i32) -> f32 {
    let g = f64::from(g);
    (match act {
        0 => g / (1.0 + (-g).exp()),
        1 => {
            0.5 * g
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (g + 0.044715 * g.powi(3))).tanh())
        }
        2 => 0.5 * g * (1.0 + erf(g / std::f64::consts::SQRT_2)),
        _ => g.max(0.0),
    }) as f32
}

/// erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-x * x).exp();
    if x < 0.0 { -y } else { y }
}

/// `act(gate) · up` from a fused `[rows, 2·ff]` product (gate first) into `[rows, ff]`;
/// `act`: 0 SiLU, 1 GELU (tanh), 2 GELU (erf), 3 ReLU.
pub fn gated_act(gate_up: &[f32], ff: usize, act: i32) -> Result<Vec<f32>> {
    shapes::rows(gate_up.len(), 2 * ff)?;
    let mut out = Vec::with_capacity(gate_up.len() / 2);
    for row in gate_up.chunks_exact(2 * ff) {
        let (gate, up) = row.split_at(ff);
        out.extend(gate.iter().zip(up).map(|(&g, &u)| activate(g, act) * u));
    }
    Ok(out)
}

/// The heads of a fused q/k/v product and how they are rotated.
#[derive(Debug, Clone, Copy)]
pub struct QkvShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub dim: usize,
    /// Rotated pairs per head.
    pub half: usize,
    /// Adjacent pairs (llama.cpp's layout) instead of halves.
    pub interleaved: bool,
}

/// What `qkv_rope_cache` does, row by row: `qkv` (`[rows, (heads + 2·kv_heads)·dim]`) plus
/// `bias`, q and k heads RMS-normalized by `norms` when given, rotated by the `cos`/`sin` tables
/// (`[positions, half]`) at `positions[r]`; returns q (`[rows, heads·dim]`), writes k and v to
/// slot `slots[r]` of the f16 caches (`[slots, kv_heads·dim]`).
#[allow(clippy::too_many_arguments, reason = "one kernel's arguments")]
pub fn qkv_rope_cache(
    qkv: &[f32],
    bias: Option<&[f32]>,
    norms: Option<(&[f32], &[f32])>,
    eps: f32,
    (cos, sin): (&[f32], &[f32]),
    positions: &[u32],
    slots: &[u32],
    s: QkvShape,
    k_cache: &mut [f16],
    v_cache: &mut [f16],
) -> Result<Vec<f32>> {
    let total = (s.heads + 2 * s.kv_heads) * s.dim;
    shapes::rows(qkv.len(), total)?;
    let rows = qkv.len() / total;
    let width = s.kv_heads * s.dim;
    if positions.len() != rows || 2 * s.half > s.dim {
        return Err(crate::KernelError::Shape(format!(
            "{rows} rows, {} positions, {} rotated pairs of {}",
            positions.len(),
            s.half,
            s.dim
        )));
    }
    shapes::cache_writes(
        rows * width,
        rows * width,
        slots,
        width,
        k_cache.len().min(v_cache.len()),
    )?;
    let mut q = Vec::with_capacity(rows * s.heads * s.dim);
    for r in 0..rows {
        let p = positions[r] as usize;
        let (c, sn) = (&cos[p * s.half..][..s.half], &sin[p * s.half..][..s.half]);
        for h in 0..s.heads + 2 * s.kv_heads {
            let at = r * total + h * s.dim;
            let mut head: Vec<f32> = qkv[at..at + s.dim]
                .iter()
                .enumerate()
                .map(|(i, v)| v + bias.map_or(0.0, |b| b[h * s.dim + i]))
                .collect();
            let is_q = h < s.heads;
            let is_k = !is_q && h < s.heads + s.kv_heads;
            if let Some((qn, kn)) = norms.filter(|_| is_q || is_k) {
                head = rms_norm(&head, if is_q { qn } else { kn }, eps, 0.0)?;
            }
            if is_q || is_k {
                for i in 0..s.half {
                    let (a, b) = if s.interleaved {
                        (2 * i, 2 * i + 1)
                    } else {
                        (i, i + s.half)
                    };
                    let (x1, x2) = (head[a], head[b]);
                    head[a] = x1 * c[i] - x2 * sn[i];
                    head[b] = x2 * c[i] + x1 * sn[i];
                }
            }
            if is_q {
                q.extend(head);
            } else {
                let g = if is_k {
                    h - s.heads
                } else {
                    h - s.heads - s.kv_heads
                };
                let cache = if is_k { &mut *k_cache } else { &mut *v_cache };
                let dst = slots[r] as usize * width + g * s.dim;
                for (d, v) in cache[dst..dst + s.dim].iter_mut().zip(head) {
                    *d = f16::from_f32(v);
                }
            }
        }
    }
    Ok(q)
}

/// The index of each row's largest value (the first on ties).
pub fn argmax_rows(x: &[f32], cols: usize) -> Result<Vec<u32>> {
    shapes::rows(x.len(), cols)?;
    Ok(x.chunks_exact(cols)
        .map(|row| {
            let mut best = 0;
            for (i, v) in row.iter().enumerate() {
                if *v > row[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect())
}

/// Activation rows as the quantized GEMV reads them: blocks of 32 values (`x.len()` a multiple
/// of 32), each as 8-bit integers `q = round(x / d)` (ties to even) with `d = max|x| / 127`, and
/// `(d, d · Σq)` per block.
pub fn quantize_q8(x: &[f32]) -> Result<(Vec<i8>, Vec<[f32; 2]>)> {
    shapes::rows(x.len(), 32)?;
    let mut q = Vec::with_capacity(x.len());
    let mut scales = Vec::with_capacity(x.len() / 32);
    for b in x.chunks_exact(32) {
        let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let start = q.len();
        q.extend(b.iter().map(|v| {
            if amax == 0.0 {
                0
            } else {
                (v / d).round_ties_even() as i8
            }
        }));
        let sum: i32 = q[start..].iter().map(|&v| i32::from(v)).sum();
        scales.push([d, d * sum as f32]);
    }
    Ok((q, scales))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code fails loudly")]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_of_a_constant_row_is_the_weight() {
        let out = rms_norm(&[3.0; 8], &[0.5; 4], 0.0, 0.0).unwrap();
        assert!(out.iter().all(|v| (v - 0.5).abs() < 1e-6), "{out:?}");
        let out = rms_norm(&[-2.0; 4], &[0.5; 4], 0.0, 1.0).unwrap();
        assert!(out.iter().all(|v| (v + 1.5).abs() < 1e-6), "{out:?}");
        assert!(rms_norm(&[1.0; 5], &[1.0; 4], 0.0, 0.0).is_err());
    }

    #[test]
    fn silu_mul_matches_its_definition() {
        let out = silu_mul(&[0.0, 2.0], &[5.0, 3.0]).unwrap();
        assert_eq!(out[0], 0.0);
        assert!((out[1] - 3.0 * 2.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-6);
    }

    #[test]
    fn rope_at_position_zero_is_the_identity_and_keeps_norms() {
        let x: Vec<f32> = (0..16).map(|i| i as f32 - 7.5).collect();
        let mut y = x.clone();
        rope_neox(&mut y, &[0, 0], 2, 4, &[1.0, 0.01]).unwrap();
        assert_eq!(x, y);
        rope_neox(&mut y, &[5, 9], 2, 4, &[1.0, 0.01]).unwrap();
        let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        for (a, b) in x.chunks(4).zip(y.chunks(4)) {
            assert!((norm(a) - norm(b)).abs() < 1e-3);
        }
    }

    #[test]
    fn q8_blocks_round_to_the_largest_magnitude() {
        let mut x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) / 8.0).collect();
        x[32..].fill(0.0);
        let (q, s) = quantize_q8(&x).unwrap();
        // The first block's largest magnitude is 20/8 (x[0]): it becomes -127.
        assert_eq!(q[0], -127);
        assert_eq!(s[0][0], 2.5 / 127.0);
        let sum: i32 = q[..32].iter().map(|&v| i32::from(v)).sum();
        assert_eq!(s[0][1], s[0][0] * sum as f32);
        for (v, qv) in x[..32].iter().zip(&q) {
            assert!((v - f32::from(*qv) * s[0][0]).abs() <= s[0][0] / 2.0 + 1e-7);
        }
        assert!(q[32..].iter().all(|&v| v == 0) && s[1] == [0.0, 0.0]);
        assert!(quantize_q8(&[1.0; 40]).is_err());
    }

    #[test]
    fn attention_over_one_key_returns_its_value() {
        let p = PagedAttention {
            heads: 2,
            kv_heads: 1,
            head_dim: 2,
            block_size: 4,
            max_blocks: 1,
            block_tables: vec![1],
            row_seqs: vec![0],
            context_lens: vec![1],
            scale: 1.0,
            window: None,
            softcap: None,
        };
        let mut k = vec![f16::ZERO; 8 * 2];
        let mut v = vec![f16::ZERO; 8 * 2];
        reshape_and_cache(&[1.0, 2.0], &[3.0, -4.0], &mut k, &mut v, &[4], 2).unwrap();
        let out = paged_attention(&p, &[0.3, 0.1, -2.0, 5.0], &k, &v).unwrap();
        assert_eq!(out, vec![3.0, -4.0, 3.0, -4.0]);
    }
}
