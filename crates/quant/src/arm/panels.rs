//! NEON dot products of interleaved 32-value blocks (`crate::panels`: eight weight rows per
//! panel) with `R` activation rows: each result holds the eight rows' dot products.
//!
//! Register `k` of a panel (32 bytes, byte `4l + j` = value `4k + j` of row `l`) is two NEON
//! registers, rows 0–3 and rows 4–7; one [`dot4`] of each with the four activation bytes
//! `4k .. 4k + 4` broadcast advances four rows, so sixteen advance the panel's eight rows over
//! a block, and its f32 work (convert, scale, accumulate) is done for four rows at a time. The
//! 4- and 5-bit values are non-negative bytes below 32, so signed `sdot` takes them as they are;
//! their offsets come back through the activation block's integer sum (`Q4_0`, `Q5_0`) or its
//! `s` (`Q4_1`, `Q5_1`).
//!
//! # Safety (every function)
//! The CPU has NEON (and the dot-product extension when `DOT`; the caller is compiled with
//! it); `w` holds at least `a[0].len()` panels of the weight type and every `a[r]` is at least
//! as long as `a[0]`.

#![allow(
    clippy::needless_range_loop,
    reason = "one block index addresses the panels and R activation rows at once"
)]

use std::arch::aarch64::*;

use super::{dot4, f16x8, load16};
use crate::activation::{BlockQ8_0, BlockQ8_1};
use crate::legacy::{Q4_0_BYTES, Q4_1_BYTES, Q5_0_BYTES, Q5_1_BYTES, Q8_0_BYTES};
use crate::panels::ROWS;

/// How a panel stores its quants.
const FOUR_BITS: u8 = 0;
const FIVE_BITS: u8 = 1;
const BYTES: u8 = 2;

/// Register `k` of a panel's quants at `q` as its two halves (rows 0–3, rows 4–7).
///
/// # Safety
/// `q` points at the panel's quants.
#[inline(always)]
unsafe fn register<const KIND: u8>(q: *const u8, k: usize) -> [int8x16_t; 2] {
    // SAFETY: the caller's contract: registers are at `32k` (`BYTES`), nibbles of bytes
    // `32 · (k / 2) ..`, fifth bits at `128 ..`, all inside the panel.
    unsafe {
        if KIND == BYTES {
            return [load16(q.add(32 * k)), load16(q.add(32 * k + 16))];
        }
        let half = |h: usize| {
            let b = vld1q_u8(q.add(32 * (k / 2) + 16 * h));
            let nibble = if k.is_multiple_of(2) {
                vandq_u8(b, vdupq_n_u8(0x0F))
            } else {
                vshrq_n_u8::<4>(b)
            };
            if KIND == FOUR_BITS {
                return vreinterpretq_s8_u8(nibble);
            }
            let top = vld1q_u8(q.add(128 + 16 * h));
            let bit = vandq_u8(vshlq_u8(top, vdupq_n_s8(-(k as i8))), vdupq_n_u8(1));
            vreinterpretq_s8_u8(vorrq_u8(nibble, vshlq_n_u8::<4>(bit)))
        };
        [half(0), half(1)]
    }
}

/// The integer dot products of a panel's quants at `q` with `R` activation rows' quants: rows
/// 0–3 in the first vector, 4–7 in the second.
#[inline(always)]
unsafe fn block_dots<const R: usize, const DOT: bool, const KIND: u8>(
    q: *const u8,
    qs: [&[i8; 32]; R],
) -> [[int32x4_t; 2]; R] {
    // SAFETY: the module's contract.
    unsafe {
        let mut dots = [[vdupq_n_s32(0); 2]; R];
        for k in 0..ROWS {
            let u = register::<KIND>(q, k);
            for r in 0..R {
                let four = qs[r].as_ptr().add(4 * k).cast::<i32>().read_unaligned();
                let y = vreinterpretq_s8_s32(vdupq_n_s32(four));
                dots[r][0] = dot4::<DOT>(dots[r][0], u[0], y);
                dots[r][1] = dot4::<DOT>(dots[r][1], u[1], y);
            }
        }
        dots
    }
}

/// The lanes of each row's two accumulators as an array.
#[inline(always)]
fn lanes<const R: usize>(acc: [[float32x4_t; 2]; R]) -> [[f32; ROWS]; R] {
    acc.map(|[lo, hi]| {
        let mut o = [0f32; ROWS];
        // SAFETY: `o` holds 8 f32; `vst1q_f32` writes four at each of its two halves.
        unsafe {
            vst1q_f32(o.as_mut_ptr(), lo);
            vst1q_f32(o.as_mut_ptr().add(4), hi);
        }
        o
    })
}

/// Panels of a type paired with `Q8_0` activations: `d · (u - offset)` per value.
#[inline(always)]
unsafe fn panels_q8_0<const R: usize, const DOT: bool, const KIND: u8>(
    w: &[u8],
    a: [&[BlockQ8_0]; R],
    panel_bytes: usize,
    offset: i32,
) -> [[f32; ROWS]; R] {
    // SAFETY: the module's contract; a panel is 16 bytes of `d`, then its quants.
    unsafe {
        let mut acc = [[vdupq_n_f32(0.0); 2]; R];
        for i in 0..a[0].len() {
            let p = w.as_ptr().add(i * panel_bytes);
            let dots = block_dots::<R, DOT, KIND>(p.add(16), a.map(|a| &a[i].qs));
            let d = f16x8(p);
            for r in 0..R {
                let b = &a[r][i];
                let off = vdupq_n_s32(offset * b.sum);
                for h in 0..2 {
                    let s = vcvtq_f32_s32(vsubq_s32(dots[r][h], off));
                    acc[r][h] = vfmaq_f32(acc[r][h], vmulq_n_f32(d[h], b.d), s);
                }
            }
        }
        lanes(acc)
    }
}

/// Panels of a type paired with `Q8_1` activations: `d · u + m` per value.
#[inline(always)]
unsafe fn panels_q8_1<const R: usize, const DOT: bool, const KIND: u8>(
    w: &[u8],
    a: [&[BlockQ8_1]; R],
    panel_bytes: usize,
) -> [[f32; ROWS]; R] {
    // SAFETY: the module's contract; a panel is 16 bytes of `d`, 16 of `m`, then its quants.
    unsafe {
        let mut acc = [[vdupq_n_f32(0.0); 2]; R];
        for i in 0..a[0].len() {
            let p = w.as_ptr().add(i * panel_bytes);
            let dots = block_dots::<R, DOT, KIND>(p.add(32), a.map(|a| &a[i].qs));
            let (d, m) = (f16x8(p), f16x8(p.add(16)));
            for r in 0..R {
                let b = &a[r][i];
                for h in 0..2 {
                    let s = vcvtq_f32_s32(dots[r][h]);
                    acc[r][h] = vfmaq_f32(acc[r][h], vmulq_n_f32(d[h], b.d), s);
                    acc[r][h] = vfmaq_n_f32(acc[r][h], m[h], b.s);
                }
            }
        }
        lanes(acc)
    }
}

/// `Q4_0` panels: nibbles minus 8.
#[inline(always)]
pub(crate) unsafe fn dot_q4_0<const R: usize, const DOT: bool>(
    w: &[u8],
    a: [&[BlockQ8_0]; R],
) -> [[f32; ROWS]; R] {
    // SAFETY: forwarded contract.
    unsafe { panels_q8_0::<R, DOT, FOUR_BITS>(w, a, ROWS * Q4_0_BYTES, 8) }
}

/// `Q5_0` panels: 5-bit values minus 16.
#[inline(always)]
pub(crate) unsafe fn dot_q5_0<const R: usize, const DOT: bool>(
    w: &[u8],
    a: [&[BlockQ8_0]; R],
) -> [[f32; ROWS]; R] {
    // SAFETY: forwarded contract.
    unsafe { panels_q8_0::<R, DOT, FIVE_BITS>(w, a, ROWS * Q5_0_BYTES, 16) }
}

/// `Q8_0` panels: signed × signed bytes.
#[inline(always)]
pub(crate) unsafe fn dot_q8_0<const R: usize, const DOT: bool>(
    w: &[u8],
    a: [&[BlockQ8_0]; R],
) -> [[f32; ROWS]; R] {
    // SAFETY: forwarded contract.
    unsafe { panels_q8_0::<R, DOT, BYTES>(w, a, ROWS * Q8_0_BYTES, 0) }
}

/// `Q4_1` panels.
#[inline(always)]
pub(crate) unsafe fn dot_q4_1<const R: usize, const DOT: bool>(
    w: &[u8],
    a: [&[BlockQ8_1]; R],
) -> [[f32; ROWS]; R] {
    // SAFETY: forwarded contract.
    unsafe { panels_q8_1::<R, DOT, FOUR_BITS>(w, a, ROWS * Q4_1_BYTES) }
}

/// `Q5_1` panels.
#[inline(always)]
pub(crate) unsafe fn dot_q5_1<const R: usize, const DOT: bool>(
    w: &[u8],
    a: [&[BlockQ8_1]; R],
) -> [[f32; ROWS]; R] {
    // SAFETY: forwarded contract.
    unsafe { panels_q8_1::<R, DOT, FIVE_BITS>(w, a, ROWS * Q5_1_BYTES) }
}
