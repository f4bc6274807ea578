//! Dot products of `Q4_K`, `Q5_K` and `Q6_K` blocks in the grouped layout (`crate::grouped`) with `Q8_K`
//! activations in the same order, for `R` activation rows at once.
//!
//! Every i32 lane of a block's sum belongs to one scale group, so a block's registers add up
//! before its scales are applied: with VNNI, eight `vpdpbusd` and one `vpmulld` per block and
//! row (the GGUF-order kernels take sixteen multiplies); without, `vpmaddubsw` products add up as
//! i16 (at most eight 4-bit or two 6-bit products per lane, which cannot overflow: 8 · 2 · 15 ·
//! 127 and 2 · 2 · 63 · 127 are below 32768) before one `vpmaddwd` applies the scales.
//!
//! The kernels are inlined into the caller (compiled for AVX2, or for AVX-512 with VNNI when
//! `VNNI`), whose target features they take.
//!
//! # Safety (every function)
//! The CPU has AVX2, FMA and F16C (and AVX-512 VNNI + VL when `VNNI`); `w` holds at least
//! `a[0].len()` grouped blocks of the weight type, every `a[r]` is at least as long as `a[0]`
//! and its blocks are in the grouped order of the weight type.

#![allow(
    clippy::needless_range_loop,
    reason = "one block index addresses the weight row and R activation rows at once"
)]

use std::arch::x86_64::*;

use super::kquants::{scale_and_subtract, scaled_bsums, widen16};
use super::{NO_VNNI, dpbusd, f16_at, hsum, load32};
use crate::activation::BlockQ8K;
use crate::kquants::{Q4K_BYTES, Q5K_BYTES, Q6K_BYTES, k4_scales_mins};

/// 8 bytes at `p` as i16 lanes, each twice (`signed`: sign-extended).
///
/// # Safety
/// `p` points at 8 readable bytes; the CPU has AVX2.
#[inline(always)]
unsafe fn pairs16(p: *const u8, signed: bool) -> __m256i {
    // SAFETY: the caller's contract.
    unsafe {
        let b = _mm_loadl_epi64(p.cast());
        let twice = _mm_unpacklo_epi8(b, b);
        if signed {
            _mm256_cvtepi8_epi16(twice)
        } else {
            _mm256_cvtepu8_epi16(twice)
        }
    }
}

/// 8 bytes at `p` as i32 lanes (`signed`: sign-extended).
///
/// # Safety
/// `p` points at 8 readable bytes; the CPU has AVX2.
#[inline(always)]
unsafe fn lanes32(p: *const u8, signed: bool) -> __m256i {
    // SAFETY: the caller's contract.
    unsafe {
        let b = _mm_loadl_epi64(p.cast());
        if signed {
            _mm256_cvtepi8_epi32(b)
        } else {
            _mm256_cvtepu8_epi32(b)
        }
    }
}

/// `acc` plus the products of `u` with the activations at `y` (32 bytes): summed as i32 lanes
/// with VNNI, as i16 lanes without.
///
/// # Safety
/// `y` points at 32 readable bytes; the CPU has the features of [`dpbusd`].
#[inline(always)]
unsafe fn add_products<const VNNI: u8>(acc: __m256i, u: __m256i, y: *const i8) -> __m256i {
    // SAFETY: the caller's contract.
    unsafe {
        if VNNI != NO_VNNI {
            dpbusd::<VNNI>(acc, u, load32(y))
        } else {
            _mm256_add_epi16(acc, _mm256_maddubs_epi16(u, load32(y)))
        }
    }
}

/// Grouped `Q4_K` (`FIVE` false) or `Q5_K` (`FIVE`: `Q4_K`'s registers with a fifth bit per
/// value, bit `m` of the high-bit bytes for register `m`) · grouped `Q8_K`. Without VNNI the
/// i16 sums are widened and scaled once per block for `Q4_K` and every four registers for
/// `Q5_K` (four pairs of products of 31 and 128 stay below 2¹⁵, eight would not).
#[inline(always)]
unsafe fn dot_k4<const R: usize, const VNNI: u8, const FIVE: bool>(
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
    let parts = if FIVE && VNNI == NO_VNNI { 2 } else { 1 };
    // SAFETY: the module's contract; offsets are within one block and within the activations'
    // 256 quants.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        let low4 = _mm256_set1_epi8(0x0F);
        let one = _mm256_set1_epi8(1);
        for i in 0..a[0].len() {
            let b = &w[i * size..(i + 1) * size];
            let p = b.as_ptr();
            let (sc, mn) = k4_scales_mins(&b[4..16]);
            let (d, dmin) = (f16_at(p), f16_at(p.add(2)));
            // Register `m`'s fifth bits (`Q5_K`), at bit 4 of each byte.
            let qh = if FIVE {
                load32(p.add(16))
            } else {
                _mm256_setzero_si256()
            };
            let fifth = |m: usize| {
                let bit = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(m as i32));
                _mm256_slli_epi16(_mm256_and_si256(bit, one), 4)
            };
            let scales = if VNNI != NO_VNNI {
                lanes32(sc.as_ptr(), false)
            } else {
                pairs16(sc.as_ptr(), false)
            };
            let mut sums = [_mm256_setzero_si256(); R];
            for part in 0..parts {
                let mut s = [_mm256_setzero_si256(); R];
                for c in part * 4 / parts..(part + 1) * 4 / parts {
                    let q = load32(p.add(quants + 32 * c));
                    let mut lo = _mm256_and_si256(q, low4);
                    let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
                    if FIVE {
                        lo = _mm256_or_si256(lo, fifth(2 * c));
                        hi = _mm256_or_si256(hi, fifth(2 * c + 1));
                    }
                    for r in 0..R {
                        let y = a[r][i].qs.as_ptr().add(64 * c);
                        s[r] = add_products::<VNNI>(s[r], lo, y);
                        s[r] = add_products::<VNNI>(s[r], hi, y.add(32));
                    }
                }
                for r in 0..R {
                    let s = if VNNI != NO_VNNI {
                        s[r]
                    } else {
                        _mm256_madd_epi16(s[r], scales)
                    };
                    sums[r] = _mm256_add_epi32(sums[r], s);
                }
            }
            let group_mins = pairs16(mn.as_ptr(), false);
            for r in 0..R {
                let a = &a[r][i];
                let s = if VNNI != NO_VNNI {
                    _mm256_mullo_epi32(sums[r], scales)
                } else {
                    sums[r]
                };
                let m = scaled_bsums(group_mins, a);
                acc[r] = scale_and_subtract(acc[r], d * a.d, s, dmin * a.d, m);
            }
        }
        acc.map(|v| hsum(v))
    }
}

/// Grouped `Q4_K` · grouped `Q8_K`.
#[inline(always)]
pub(crate) unsafe fn dot_q4k<const R: usize, const VNNI: u8>(
    w: &[u8],
    a: [&[BlockQ8K]; R],
) -> [f32; R] {
    // SAFETY: forwarded contract.
    unsafe { dot_k4::<R, VNNI, false>(w, a) }
}

/// Grouped `Q5_K` · grouped `Q8_K`.
#[inline(always)]
pub(crate) unsafe fn dot_q5k<const R: usize, const VNNI: u8>(
    w: &[u8],
    a: [&[BlockQ8K]; R],
) -> [f32; R] {
    // SAFETY: forwarded contract.
    unsafe { dot_k4::<R, VNNI, true>(w, a) }
}

/// Grouped `Q6_K` · grouped `Q8_K`: unsigned 6-bit values, minus 32 · Σ scale · bsum.
#[inline(always)]
pub(crate) unsafe fn dot_q6k<const R: usize, const VNNI: u8>(
    w: &[u8],
    a: [&[BlockQ8K]; R],
) -> [f32; R] {
    // SAFETY: the module's contract; offsets are within one block (low nibbles 0..128, top
    // bits 128..192, scales 192..208, d 208) and within the activations' 256 quants.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        let low4 = _mm256_set1_epi8(0x0F);
        let three = _mm256_set1_epi8(3);
        for i in 0..a[0].len() {
            let p = w.as_ptr().add(i * Q6K_BYTES);
            let d = f16_at(p.add(208));
            let scales = |h: usize| {
                let at = p.add(192 + 8 * h);
                if VNNI != NO_VNNI {
                    lanes32(at, true)
                } else {
                    pairs16(at, true)
                }
            };
            let half_scales = [scales(0), scales(1)];
            // Per half: i32 sums (VNNI: scaled when the block ends; else scaled per chunk).
            let mut sums = [[_mm256_setzero_si256(); 2]; R];
            for c in 0..4 {
                let (h, j) = (c / 2, 2 * (c % 2));
                let q = load32(p.add(32 * c));
                let top = load32(p.add(128 + 32 * h));
                let top_bits = |j: usize| {
                    let t = _mm256_srl_epi16(top, _mm_cvtsi32_si128(2 * j as i32));
                    _mm256_slli_epi16(_mm256_and_si256(t, three), 4)
                };
                let u0 = _mm256_or_si256(_mm256_and_si256(q, low4), top_bits(j));
                let u1 = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(q, 4), low4),
                    top_bits(j + 1),
                );
                for r in 0..R {
                    let y = a[r][i].qs.as_ptr().add(64 * c);
                    if VNNI != NO_VNNI {
                        let s = add_products::<VNNI>(sums[r][h], u0, y);
                        sums[r][h] = add_products::<VNNI>(s, u1, y.add(32));
                    } else {
                        let s = add_products::<VNNI>(_mm256_setzero_si256(), u0, y);
                        let s = add_products::<VNNI>(s, u1, y.add(32));
                        let s = _mm256_madd_epi16(s, half_scales[h]);
                        sums[r][h] = _mm256_add_epi32(sums[r][h], s);
                    }
                }
            }
            let all_scales = widen16(p.add(192), true);
            for r in 0..R {
                let a = &a[r][i];
                let s = if VNNI != NO_VNNI {
                    _mm256_add_epi32(
                        _mm256_mullo_epi32(sums[r][0], half_scales[0]),
                        _mm256_mullo_epi32(sums[r][1], half_scales[1]),
                    )
                } else {
                    _mm256_add_epi32(sums[r][0], sums[r][1])
                };
                let offset = _mm256_slli_epi32(scaled_bsums(all_scales, a), 5);
                let s = _mm256_sub_epi32(s, offset);
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(s), acc[r]);
            }
        }
        acc.map(|v| hsum(v))
    }
}
