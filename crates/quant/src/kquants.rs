//! The k-quants: 256-value super-blocks of 16 or 32-value groups, each group with its own
//! integer scale (and min), one or two f16 super-block scales. Reference dequantization (the
//! same f32 operations as ggml's reference, so values agree bit for bit) and portable dot
//! products against `Q8_K` activation blocks.
//!
//! Layouts (little-endian), value `i` of 256, `h = i / 128` (the half), `c = i % 128`:
//! - `Q2_K` `[scales; 16][qs; 64][d][dmin]`: group `g = i / 16` has scale `scales[g] & 15` and
//!   min `scales[g] >> 4`; `q = (qs[32h + c % 32] >> 2·(c / 32)) & 3`;
//!   value `d · scale · q - dmin · min`.
//! - `Q3_K` `[hmask; 32][qs; 64][scales; 12][d]`: 16 signed 6-bit scales (see [`q3k_scales`]);
//!   `q = (qs[…] >> …) & 3` as in `Q2_K`, minus 4 where bit `4h + c / 32` of `hmask[c % 32]` is
//!   clear; value `d · scale · q`.
//! - `Q4_K` `[d][dmin][scales; 12][qs; 128]`: 8 groups of 32, 6-bit scales and mins (see
//!   [`k4_scale_min`]); group `g`'s values are the low (even `g`) or high (odd `g`) nibbles of
//!   `qs[32·(g / 2)..][..32]`; value `d · scale · q - dmin · min`.
//! - `Q5_K` `[d][dmin][scales; 12][qh; 32][qs; 128]`: `Q4_K` plus a fifth bit, bit `g` of
//!   `qh[i % 32]`.
//! - `Q6_K` `[ql; 128][qh; 64][scales: i8; 16][d]`: in half `h`, value `c = 32k + l` takes the
//!   low (k = 0, 1) or high (k = 2, 3) nibble of `ql[64h + 32·(k % 2) + l]` and bits
//!   `2k, 2k + 1` of `qh[32h + l]`, minus 32; group `i / 16`; value `d · scale · q`.

use crate::activation::BlockQ8K;
use crate::format::QK_K;
use crate::legacy::f16_at;

pub(crate) const Q2K_BYTES: usize = 84;
pub(crate) const Q3K_BYTES: usize = 110;
pub(crate) const Q4K_BYTES: usize = 144;
pub(crate) const Q5K_BYTES: usize = 176;
pub(crate) const Q6K_BYTES: usize = 210;

/// The 16 signed scales of a `Q3_K` block from its 12 packed bytes: scale `j` is the low
/// (`j < 8`) or high nibble of byte `j % 8`, with 2 more bits from byte `8 + j % 4` at bit
/// `2·(j / 4)`, as a 6-bit value minus 32.
#[inline(always)]
pub(crate) fn q3k_scales(packed: &[u8]) -> [i8; 16] {
    let mut s = [0i8; 16];
    for (j, s) in s.iter_mut().enumerate() {
        let low = if j < 8 {
            packed[j] & 0x0F
        } else {
            packed[j - 8] >> 4
        };
        let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        *s = (low | high << 4) as i8 - 32;
    }
    s
}

/// Scale and min of group `j` (of 8) of a `Q4_K`/`Q5_K` block from its 12 packed bytes: the
/// first four groups use the low 6 bits of bytes `j` and `j + 4`; the last four combine a nibble
/// of byte `j + 4` with the top 2 bits of bytes `j - 4` and `j`.
#[inline(always)]
pub(crate) fn k4_scale_min(j: usize, packed: &[u8]) -> (u8, u8) {
    if j < 4 {
        (packed[j] & 63, packed[j + 4] & 63)
    } else {
        (
            (packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4),
            (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4),
        )
    }
}

/// All 8 scales and mins of a `Q4_K`/`Q5_K` block.
#[inline(always)]
pub(crate) fn k4_scales_mins(packed: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..8 {
        (sc[j], mn[j]) = k4_scale_min(j, packed);
    }
    (sc, mn)
}

/// The 2-bit values of a `Q2_K`/`Q3_K` block, in value order.
#[inline(always)]
fn twos(qs: &[u8]) -> [u8; QK_K] {
    let mut v = [0u8; QK_K];
    for (i, v) in v.iter_mut().enumerate() {
        let (h, c) = (i / 128, i % 128);
        *v = (qs[32 * h + c % 32] >> (2 * (c / 32))) & 3;
    }
    v
}

/// The signed 3-bit values of a `Q3_K` block, in value order.
#[inline(always)]
fn threes(hmask: &[u8], qs: &[u8]) -> [i8; QK_K] {
    let low = twos(qs);
    let mut v = [0i8; QK_K];
    for (i, v) in v.iter_mut().enumerate() {
        let (h, c) = (i / 128, i % 128);
        let high = (hmask[c % 32] >> (4 * h + c / 32)) & 1;
        *v = low[i] as i8 - if high == 1 { 0 } else { 4 };
    }
    v
}

/// The 4-bit (plus, with `qh`, 5-bit) values of a `Q4_K`/`Q5_K` block, in value order.
#[inline(always)]
pub(crate) fn k4_values(qs: &[u8], qh: Option<&[u8]>) -> [u8; QK_K] {
    let mut v = [0u8; QK_K];
    for (i, v) in v.iter_mut().enumerate() {
        let (g, l) = (i / 32, i % 32);
        let byte = qs[32 * (g / 2) + l];
        *v = if g % 2 == 0 { byte & 0x0F } else { byte >> 4 };
        if let Some(qh) = qh {
            *v |= ((qh[l] >> g) & 1) << 4;
        }
    }
    v
}

/// The inverse of [`k4_values`]: 256 values in value order written as a `Q4_K`/`Q5_K` block's
/// 128 nibble bytes and, for `Q5_K`, its 32 fifth-bit bytes.
#[inline(always)]
pub(crate) fn put_k4_values(v: &[u8; QK_K], qs: &mut [u8], qh: Option<&mut [u8]>) {
    for j in 0..4 {
        for l in 0..32 {
            qs[32 * j + l] = (v[64 * j + l] & 0x0F) | (v[64 * j + 32 + l] & 0x0F) << 4;
        }
    }
    if let Some(qh) = qh {
        for (l, qh) in qh.iter_mut().enumerate().take(32) {
            *qh = (0..8).fold(0u8, |acc, g| acc | ((v[32 * g + l] >> 4) & 1) << g);
        }
    }
}

/// The 6-bit values of a `Q6_K` block as stored (unsigned, 32 above the signed value), in value
/// order.
#[inline(always)]
pub(crate) fn six_bits(ql: &[u8], qh: &[u8]) -> [u8; QK_K] {
    let mut v = [0u8; QK_K];
    for (i, v) in v.iter_mut().enumerate() {
        let (h, c) = (i / 128, i % 128);
        let (k, l) = (c / 32, c % 32);
        let byte = ql[64 * h + 32 * (k % 2) + l];
        let low = if k < 2 { byte & 0x0F } else { byte >> 4 };
        let high = (qh[32 * h + l] >> (2 * k)) & 3;
        *v = low | high << 4;
    }
    v
}

/// The inverse of [`six_bits`]: in half `h`, value `32k + l` goes to a nibble of
/// `ql[64h + 32·(k % 2) + l]` (the high one for `k ≥ 2`) and bits `2k, 2k + 1` of `qh[32h + l]`.
#[inline(always)]
pub(crate) fn put_six_bits(v: &[u8; QK_K], ql: &mut [u8], qh: &mut [u8]) {
    for h in 0..2 {
        for l in 0..32 {
            let q = |k: usize| v[128 * h + 32 * k + l];
            ql[64 * h + l] = (q(0) & 0x0F) | (q(2) & 0x0F) << 4;
            ql[64 * h + 32 + l] = (q(1) & 0x0F) | (q(3) & 0x0F) << 4;
            qh[32 * h + l] = (q(0) >> 4) | (q(1) >> 4) << 2 | (q(2) >> 4) << 4 | (q(3) >> 4) << 6;
        }
    }
}

/// The signed 6-bit values of a `Q6_K` block, in value order.
#[inline(always)]
fn sixes(ql: &[u8], qh: &[u8]) -> [i8; QK_K] {
    six_bits(ql, qh).map(|v| v as i8 - 32)
}

pub(crate) fn dequant_q2k(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    let q = twos(&b[16..80]);
    for (g, (out, q)) in out.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
        let dl = d * f32::from(b[g] & 0x0F);
        let ml = dmin * f32::from(b[g] >> 4);
        for (o, &q) in out.iter_mut().zip(q) {
            *o = dl * f32::from(q) - ml;
        }
    }
}

pub(crate) fn dequant_q3k(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 108);
    let scales = q3k_scales(&b[96..108]);
    let q = threes(&b[0..32], &b[32..96]);
    for (g, (out, q)) in out.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
        let dl = d * f32::from(scales[g]);
        for (o, &q) in out.iter_mut().zip(q) {
            *o = dl * f32::from(q);
        }
    }
}

fn dequant_k4(b: &[u8], qh: Option<&[u8]>, qs: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (sc, mn) = k4_scales_mins(&b[4..16]);
    let q = k4_values(qs, qh);
    for (g, (out, q)) in out.chunks_exact_mut(32).zip(q.chunks_exact(32)).enumerate() {
        let dl = d * f32::from(sc[g]);
        let ml = dmin * f32::from(mn[g]);
        for (o, &q) in out.iter_mut().zip(q) {
            *o = dl * f32::from(q) - ml;
        }
    }
}

pub(crate) fn dequant_q4k(b: &[u8], out: &mut [f32]) {
    dequant_k4(b, None, &b[16..144], out);
}

pub(crate) fn dequant_q5k(b: &[u8], out: &mut [f32]) {
    dequant_k4(b, Some(&b[16..48]), &b[48..176], out);
}

pub(crate) fn dequant_q6k(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 208);
    let q = sixes(&b[0..128], &b[128..192]);
    for (g, (out, q)) in out.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
        let dl = d * f32::from(b[192 + g] as i8);
        for (o, &q) in out.iter_mut().zip(q) {
            *o = dl * f32::from(q);
        }
    }
}

/// Per-group integer sums `Σ w · a` over groups of `GROUP` values.
#[inline(always)]
fn group_sums<const GROUPS: usize>(w: &[i8; QK_K], a: &[i8; QK_K]) -> [i32; GROUPS] {
    let len = QK_K / GROUPS;
    let mut s = [0i32; GROUPS];
    for (g, s) in s.iter_mut().enumerate() {
        *s = w[g * len..(g + 1) * len]
            .iter()
            .zip(&a[g * len..(g + 1) * len])
            .map(|(&w, &a)| i32::from(w) * i32::from(a))
            .sum();
    }
    s
}

#[inline(always)]
fn as_i8(v: [u8; QK_K]) -> [i8; QK_K] {
    // Values are below 32, so they fit i8 unchanged.
    v.map(|q| q as i8)
}

/// `Q2_K` row · `Q8_K` row: `Σ d·d_a·Σ_g scale_g·Σ q·q_a - dmin·d_a·Σ_g min_g·bsum_g`.
pub(crate) fn dot_q2k(w: &[u8], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.chunks_exact(Q2K_BYTES).zip(a) {
        let sums = group_sums::<16>(&as_i8(twos(&w[16..80])), &a.qs);
        let (mut si, mut mi) = (0i32, 0i32);
        for g in 0..16 {
            si += i32::from(w[g] & 0x0F) * sums[g];
            mi += i32::from(w[g] >> 4) * i32::from(a.bsums[g]);
        }
        sum += a.d * (f16_at(w, 80) * si as f32 - f16_at(w, 82) * mi as f32);
    }
    sum
}

/// `Q3_K` row · `Q8_K` row.
pub(crate) fn dot_q3k(w: &[u8], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.chunks_exact(Q3K_BYTES).zip(a) {
        let sums = group_sums::<16>(&threes(&w[0..32], &w[32..96]), &a.qs);
        let scales = q3k_scales(&w[96..108]);
        let si: i32 = (0..16).map(|g| i32::from(scales[g]) * sums[g]).sum();
        sum += a.d * f16_at(w, 108) * si as f32;
    }
    sum
}

fn dot_k4(w: &[u8], qh: Option<&[u8]>, qs: &[u8], a: &BlockQ8K) -> f32 {
    let sums = group_sums::<8>(&as_i8(k4_values(qs, qh)), &a.qs);
    let (sc, mn) = k4_scales_mins(&w[4..16]);
    let (mut si, mut mi) = (0i32, 0i32);
    for g in 0..8 {
        si += i32::from(sc[g]) * sums[g];
        mi += i32::from(mn[g]) * (i32::from(a.bsums[2 * g]) + i32::from(a.bsums[2 * g + 1]));
    }
    a.d * (f16_at(w, 0) * si as f32 - f16_at(w, 2) * mi as f32)
}

/// `Q4_K` row · `Q8_K` row.
pub(crate) fn dot_q4k(w: &[u8], a: &[BlockQ8K]) -> f32 {
    w.chunks_exact(Q4K_BYTES)
        .zip(a)
        .map(|(w, a)| dot_k4(w, None, &w[16..144], a))
        .sum()
}

/// `Q5_K` row · `Q8_K` row.
pub(crate) fn dot_q5k(w: &[u8], a: &[BlockQ8K]) -> f32 {
    w.chunks_exact(Q5K_BYTES)
        .zip(a)
        .map(|(w, a)| dot_k4(w, Some(&w[16..48]), &w[48..176], a))
        .sum()
}

/// `Q6_K` row · `Q8_K` row.
pub(crate) fn dot_q6k(w: &[u8], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.chunks_exact(Q6K_BYTES).zip(a) {
        let sums = group_sums::<16>(&sixes(&w[0..128], &w[128..192]), &a.qs);
        let si: i32 = (0..16).map(|g| i32::from(w[192 + g] as i8) * sums[g]).sum();
        sum += a.d * f16_at(w, 208) * si as f32;
    }
    sum
}
