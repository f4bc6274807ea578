//! NEON dot products of `Q4_K`, `Q5_K` and `Q6_K` blocks in the grouped layout (`crate::grouped`) with
//! `Q8_K` activations in the same order, for `R` activation rows at once.
//!
//! Each four-byte lane of a grouped register belongs to one scale group, so [`dot4`] leaves
//! per-group sums that add up over the block's registers; one multiply by the group scales per
//! block and row finishes the integer work (the GGUF-order kernels multiply per register).
//!
//! # Safety (every function)
//! The CPU has NEON (and the dot-product extension when `DOT`; the caller is compiled with
//! it); `w` holds at least `a[0].len()` grouped blocks of the weight type, every `a[r]` is at
//! least as long as `a[0]` and its blocks are in the grouped order of the weight type.

#![allow(
    clippy::needless_range_loop,
    reason = "one block index addresses the weight row and R activation rows at once"
)]

use std::arch::aarch64::*;

use super::{dot4, f16_at, load16};
use crate::activation::BlockQ8K;
use crate::kquants::{Q4K_BYTES, Q5K_BYTES, Q6K_BYTES, k4_scales_mins};

/// Eight bytes as i32 lanes, the first four and the last four (`signed`: sign-extended).
#[inline]
#[target_feature(enable = "neon")]
fn lanes32(b: [u8; 8], signed: bool) -> [int32x4_t; 2] {
    // SAFETY: `b` is eight readable bytes.
    let v = unsafe { vld1_u8(b.as_ptr()) };
    if signed {
        let w = vmovl_s8(vreinterpret_s8_u8(v));
        [vmovl_s16(vget_low_s16(w)), vmovl_s16(vget_high_s16(w))]
    } else {
        let w = vreinterpretq_s16_u16(vmovl_u8(v));
        [vmovl_s16(vget_low_s16(w)), vmovl_s16(vget_high_s16(w))]
    }
}

/// `Σ_g scales[g] · sums[g]` over eight groups (two vectors of four), as four i32 lanes.
#[inline]
#[target_feature(enable = "neon")]
fn scaled(sums: [int32x4_t; 2], scales: [int32x4_t; 2]) -> int32x4_t {
    vmlaq_s32(vmulq_s32(sums[0], scales[0]), sums[1], scales[1])
}

/// The activation block's sums of each 32 values (eight groups), from its sums of 16.
#[inline]
#[target_feature(enable = "neon")]
fn bsums32(a: &BlockQ8K) -> [int32x4_t; 2] {
    // SAFETY: `bsums` is sixteen i16.
    let (lo, hi) = unsafe {
        (
            vld1q_s16(a.bsums.as_ptr()),
            vld1q_s16(a.bsums.as_ptr().add(8)),
        )
    };
    // Adjacent pairs: at most 2 · 16 · 128, an i16 still.
    let pairs = vpaddq_s16(lo, hi);
    [
        vmovl_s16(vget_low_s16(pairs)),
        vmovl_s16(vget_high_s16(pairs)),
    ]
}

/// Grouped `Q4_K` (`FIVE` false) or `Q5_K` (`FIVE`: `Q4_K`'s registers with a fifth bit per
/// value, bit `m` of the high-bit bytes for register `m`) · grouped `Q8_K`.
#[inline(always)]
unsafe fn dot_k4<const R: usize, const DOT: bool, const FIVE: bool>(
    w: &[u8],
    a: [&[BlockQ8K]; R],
) -> [f32; R] {
    // Block bytes and where the four-bit values start: `Q4_K` d 0, dmin 2, scales 4..16,
    // quants 16..144; `Q5_K` the same, then high bits 16..48 and quants 48..176.
    let (size, quants) = if FIVE {
        (Q5K_BYTES, 48)
    } else {
        (Q4K_BYTES, 16)
    };
    // SAFETY: the module's contract; offsets are within one block and within the activations'
    // 256 quants.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); R];
        let (low4, one) = (vdupq_n_u8(0x0F), vdupq_n_u8(1));
        for i in 0..a[0].len() {
            let b = &w[i * size..(i + 1) * size];
            let p = b.as_ptr();
            let (sc, mn) = k4_scales_mins(&b[4..16]);
            let (d, dmin) = (f16_at(p), f16_at(p.add(2)));
            let mut sums = [[vdupq_n_s32(0); 2]; R];
            for h in 0..2 {
                let qh = if FIVE {
                    vld1q_u8(p.add(16 + 16 * h))
                } else {
                    vdupq_n_u8(0)
                };
                // Register `m`'s fifth bits (`Q5_K`), at bit 4 of each byte.
                let fifth = |m: i8| vshlq_n_u8::<4>(vandq_u8(vshlq_u8(qh, vdupq_n_s8(-m)), one));
                for c in 0..4 {
                    let q = vld1q_u8(p.add(quants + 32 * c + 16 * h));
                    let (mut lo, mut hi) = (vandq_u8(q, low4), vshrq_n_u8::<4>(q));
                    if FIVE {
                        lo = vorrq_u8(lo, fifth(2 * c as i8));
                        hi = vorrq_u8(hi, fifth(2 * c as i8 + 1));
                    }
                    let (lo, hi) = (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi));
                    for r in 0..R {
                        let y = a[r][i].qs.as_ptr().add(64 * c + 16 * h);
                        sums[r][h] = dot4::<DOT>(sums[r][h], lo, load16(y));
                        sums[r][h] = dot4::<DOT>(sums[r][h], hi, load16(y.add(32)));
                    }
                }
            }
            let (scales, mins) = (lanes32(sc, false), lanes32(mn, false));
            for r in 0..R {
                let a = &a[r][i];
                let s = vcvtq_f32_s32(scaled(sums[r], scales));
                let m = vcvtq_f32_s32(scaled(bsums32(a), mins));
                acc[r] = vfmaq_n_f32(acc[r], s, d * a.d);
                acc[r] = vfmsq_n_f32(acc[r], m, dmin * a.d);
            }
        }
        acc.map(|v| vaddvq_f32(v))
    }
}

/// Grouped `Q4_K` · grouped `Q8_K`.
#[inline(always)]
pub(crate) unsafe fn dot_q4k<const R: usize, const DOT: bool>(
    w: &[u8],
    a: [&[BlockQ8K]; R],
) -> [f32; R] {
    // SAFETY: forwarded contract.
    unsafe { dot_k4::<R, DOT, false>(w, a) }
}

/// Grouped `Q5_K` · grouped `Q8_K`.
#[inline(always)]
pub(crate) unsafe fn dot_q5k<const R: usize, const DOT: bool>(
    w: &[u8],
    a: [&[BlockQ8K]; R],
) -> [f32; R] {
    // SAFETY: forwarded contract.
    unsafe { dot_k4::<R, DOT, true>(w, a) }
}

/// Grouped `Q6_K` · grouped `Q8_K`: unsigned 6-bit values, minus 32 · Σ scale · bsum.
#[inline(always)]
pub(crate) unsafe fn dot_q6k<const R: usize, const DOT: bool>(
    w: &[u8],
    a: [&[BlockQ8K]; R],
) -> [f32; R] {
    // SAFETY: the module's contract; offsets are within one block (low nibbles 0..128, top
    // bits 128..192, scales 192..208, d 208) and within the activations' 256 quants.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); R];
        let low4 = vdupq_n_u8(0x0F);
        let three = vdupq_n_u8(3);
        for i in 0..a[0].len() {
            let p = w.as_ptr().add(i * Q6K_BYTES);
            let d = f16_at(p.add(208));
            let scale_bytes = |h: usize| -> [u8; 8] { p.add(192 + 8 * h).cast::<[u8; 8]>().read() };
            let scales = [lanes32(scale_bytes(0), true), lanes32(scale_bytes(1), true)];
            // Per half of the block (groups 0–7, 8–15): per-group sums, in two vectors each.
            let mut sums = [[[vdupq_n_s32(0); 2]; 2]; R];
            for c in 0..4 {
                let (h, j) = (c / 2, 2 * (c % 2) as i8);
                for l in 0..2 {
                    let q = vld1q_u8(p.add(32 * c + 16 * l));
                    let top = vld1q_u8(p.add(128 + 32 * h + 16 * l));
                    let bits = |j: i8| {
                        let t = vandq_u8(vshlq_u8(top, vdupq_n_s8(-2 * j)), three);
                        vshlq_n_u8::<4>(t)
                    };
                    let u0 = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(q, low4), bits(j)));
                    let u1 = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8::<4>(q), bits(j + 1)));
                    for r in 0..R {
                        let y = a[r][i].qs.as_ptr().add(64 * c + 16 * l);
                        sums[r][h][l] = dot4::<DOT>(sums[r][h][l], u0, load16(y));
                        sums[r][h][l] = dot4::<DOT>(sums[r][h][l], u1, load16(y.add(32)));
                    }
                }
            }
            for r in 0..R {
                let a = &a[r][i];
                let s = vaddq_s32(scaled(sums[r][0], scales[0]), scaled(sums[r][1], scales[1]));
                // 32 · Σ_g scale_g · bsum_g over the sixteen groups of 16.
                let bsums = |h: usize| {
                    let v = vld1q_s16(a.bsums.as_ptr().add(8 * h));
                    [vmovl_s16(vget_low_s16(v)), vmovl_s16(vget_high_s16(v))]
                };
                let offset = vaddq_s32(scaled(bsums(0), scales[0]), scaled(bsums(1), scales[1]));
                let s = vsubq_s32(s, vshlq_n_s32::<5>(offset));
                acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(s), d * a.d);
            }
        }
        acc.map(|v| vaddvq_f32(v))
    }
}
