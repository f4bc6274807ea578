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
