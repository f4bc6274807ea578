//! The legacy 32-value block formats: `Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`. Reference
//! dequantization (the same f32 operations as ggml's reference, so values agree bit for bit) and
//! portable dot products against 8-bit activation blocks.
//!
//! Block layouts (little-endian, f16 scales), value `i` of 32:
//! - `Q4_0` `[d][qs; 16]`: `d · (nibble(i) - 8)`
//! - `Q4_1` `[d][m][qs; 16]`: `d · nibble(i) + m`
//! - `Q5_0` `[d][qh: u32][qs; 16]`: `d · (nibble(i) | bit(qh, i) << 4) - 16)`
//! - `Q5_1` `[d][m][qh: u32][qs; 16]`: `d · (nibble(i) | bit(qh, i) << 4) + m`
//! - `Q8_0` `[d][qs: i8; 32]`: `d · qs[i]`
//!
//! where `nibble(i)` is the low nibble of `qs[i]` for `i < 16`, the high nibble of `qs[i - 16]`
//! otherwise.

use crate::activation::{BlockQ8_0, BlockQ8_1};
use crate::format::QK;

pub(crate) const Q4_0_BYTES: usize = 18;
pub(crate) const Q4_1_BYTES: usize = 20;
pub(crate) const Q5_0_BYTES: usize = 22;
pub(crate) const Q5_1_BYTES: usize = 24;
pub(crate) const Q8_0_BYTES: usize = 34;

/// The f16 at byte `i` of `b`, as f32.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    crate::float::f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}

#[inline(always)]
pub(crate) fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// The 32 4-bit values of a `qs` array, in value order.
#[inline(always)]
pub(crate) fn nibbles(qs: &[u8]) -> [u8; QK] {
    let mut v = [0u8; QK];
    for j in 0..QK / 2 {
        v[j] = qs[j] & 0x0F;
        v[j + QK / 2] = qs[j] >> 4;
    }
    v
}

/// The 32 5-bit values of a `qh`/`qs` pair, in value order.
#[inline(always)]
pub(crate) fn fives(qh: u32, qs: &[u8]) -> [u8; QK] {
    let mut v = nibbles(qs);
    for (i, x) in v.iter_mut().enumerate() {
        *x |= (((qh >> i) & 1) as u8) << 4;
    }
    v
}

/// The inverse of [`nibbles`] (and, with `qh`, of [`fives`]): 32 values in value order written
/// as a block's 16 nibble bytes and, for the 5-bit types, its 4 fifth-bit bytes.
#[inline(always)]
pub(crate) fn put_values(v: &[u8; QK], qs: &mut [u8], qh: Option<&mut [u8]>) {
    for j in 0..QK / 2 {
        qs[j] = (v[j] & 0x0F) | (v[j + QK / 2] & 0x0F) << 4;
    }
    if let Some(qh) = qh {
        let bits = v
            .iter()
            .enumerate()
            .fold(0u32, |acc, (j, v)| acc | u32::from((v >> 4) & 1) << j);
        qh[..4].copy_from_slice(&bits.to_le_bytes());
    }
}

pub(crate) fn dequant_q4_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (o, q) in out.iter_mut().zip(nibbles(&b[2..18])) {
        *o = d * f32::from(q as i8 - 8);
    }
}

pub(crate) fn dequant_q4_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (o, q) in out.iter_mut().zip(nibbles(&b[4..20])) {
        *o = d * f32::from(q) + m;
    }
}

pub(crate) fn dequant_q5_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (o, q) in out.iter_mut().zip(fives(u32_at(b, 2), &b[6..22])) {
        *o = d * f32::from(q as i8 - 16);
    }
}

pub(crate) fn dequant_q5_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (o, q) in out.iter_mut().zip(fives(u32_at(b, 4), &b[8..24])) {
        *o = d * f32::from(q) + m;
    }
}

pub(crate) fn dequant_q8_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..34]) {
        *o = d * f32::from(q as i8);
    }
}

/// Σ over a block of `w[i] · a[i]` for small integers.
#[inline(always)]
fn isum(w: &[i8; QK], a: &[i8; QK]) -> i32 {
    w.iter()
        .zip(a)
        .map(|(&w, &a)| i32::from(w) * i32::from(a))
        .sum()
}

#[inline(always)]
fn signed(v: [u8; QK], offset: i8) -> [i8; QK] {
    v.map(|q| q as i8 - offset)
}

#[inline(always)]
fn unsigned(v: [u8; QK]) -> [i8; QK] {
    // Values are at most 31, so they fit i8 unchanged.
    v.map(|q| q as i8)
}

/// `Q4_0` row · `Q8_0` row, one block each at a time.
pub(crate) fn dot_q4_0(w: &[u8], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.chunks_exact(Q4_0_BYTES).zip(a) {
        let s = isum(&signed(nibbles(&w[2..18]), 8), &a.qs);
        sum += f16_at(w, 0) * a.d * s as f32;
    }
    sum
}

/// `Q4_1` row · `Q8_1` row: `Σ d·d_a·Σ q·q_a + m·s_a`.
pub(crate) fn dot_q4_1(w: &[u8], a: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.chunks_exact(Q4_1_BYTES).zip(a) {
        let s = isum(&unsigned(nibbles(&w[4..20])), &a.qs);
        sum += f16_at(w, 0) * a.d * s as f32 + f16_at(w, 2) * a.s;
    }
    sum
}

/// `Q5_0` row · `Q8_0` row.
pub(crate) fn dot_q5_0(w: &[u8], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.chunks_exact(Q5_0_BYTES).zip(a) {
        let s = isum(&signed(fives(u32_at(w, 2), &w[6..22]), 16), &a.qs);
        sum += f16_at(w, 0) * a.d * s as f32;
    }
    sum
}

/// `Q5_1` row · `Q8_1` row.
pub(crate) fn dot_q5_1(w: &[u8], a: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.chunks_exact(Q5_1_BYTES).zip(a) {
        let s = isum(&unsigned(fives(u32_at(w, 4), &w[8..24])), &a.qs);
        sum += f16_at(w, 0) * a.d * s as f32 + f16_at(w, 2) * a.s;
    }
    sum
}

/// `Q8_0` row · `Q8_0` row.
pub(crate) fn dot_q8_0(w: &[u8], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.chunks_exact(Q8_0_BYTES).zip(a) {
        let mut q = [0i8; QK];
        for (q, &b) in q.iter_mut().zip(&w[2..34]) {
            *q = b as i8;
        }
        sum += f16_at(w, 0) * a.d * isum(&q, &a.qs) as f32;
    }
    sum
}
