//! Dot products of interleaved 32-value blocks (`crate::panels`: eight weight rows per panel)
//! with `R` activation rows: each result holds the eight rows' dot products in its lanes.
//!
//! Per block, eight `vpdpbusd` (each with four activation bytes broadcast) advance all eight
//! rows, then one convert, one multiply of the eight rows' scales by the activation's and one
//! fma finish it — where the GGUF-order kernels spend the f32 work once per row. Unsigned
//! weights (`Q4_*`, `Q5_*`, and `Q8_0` shifted by 128 with VNNI) take their offset back through
//! the activation block's integer sum; without VNNI `Q8_0` stays signed and goes through the
//! sign trick (its shifted bytes would saturate `vpmaddubsw`).
//!
//! The kernels are inlined into the caller (compiled for AVX2, or for AVX-512 with VNNI when
//! `VNNI`), whose target features they take.
//!
//! # Safety (every function)
//! The CPU has AVX2, FMA and F16C (and AVX-512 VNNI + VL when `VNNI`); `w` holds at least
//! `a[0].len()` panels of the weight type and every `a[r]` is at least as long as `a[0]`.

#![allow(
    clippy::needless_range_loop,
    reason = "one block index addresses the panels and R activation rows at once"
)]

use std::arch::x86_64::*;

use super::{NO_VNNI, dpbssd, dpbusd, load32};
use crate::activation::{BlockQ8_0, BlockQ8_1};
use crate::legacy::{Q4_0_BYTES, Q4_1_BYTES, Q5_0_BYTES, Q5_1_BYTES, Q8_0_BYTES};
use crate::panels::ROWS;

/// Eight f16 at `p` as f32 lanes.
///
/// # Safety
/// `p` points at 16 readable bytes; the CPU has F16C.
#[inline(always)]
unsafe fn f16x8(p: *const u8) -> __m256 {
    // SAFETY: the caller's contract.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
}

/// Four activation bytes `4k .. 4k + 4` of `qs`, in every lane.
///
/// # Safety
/// `qs` has at least `4k + 4` bytes; the CPU has AVX2.
#[inline(always)]
unsafe fn broadcast4(qs: &[i8], k: usize) -> __m256i {
    // SAFETY: the caller's contract.
    unsafe { _mm256_set1_epi32(qs.as_ptr().add(4 * k).cast::<i32>().read_unaligned()) }
}

/// How a panel stores its quants.
const FOUR_BITS: u8 = 0;
const FIVE_BITS: u8 = 1;
const BYTES: u8 = 2;

/// Register `k` of a panel's quants at `q`: unsigned bytes, except `BYTES` without VNNI
/// (signed).
///
/// # Safety
/// `q` points at the panel's quants; the CPU has AVX2.
#[inline(always)]
unsafe fn register<const KIND: u8, const VNNI: u8>(q: *const u8, k: usize) -> __m256i {
    // SAFETY: the caller's contract.
    unsafe {
        if KIND == BYTES {
            let v = load32(q.add(32 * k));
            return if VNNI != NO_VNNI {
                _mm256_xor_si256(v, _mm256_set1_epi8(-128))
            } else {
                v
            };
        }
        let low4 = _mm256_set1_epi8(0x0F);
        let bytes = load32(q.add(32 * (k / 2)));
        let nibble = if k.is_multiple_of(2) {
            _mm256_and_si256(bytes, low4)
        } else {
            _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4)
        };
        if KIND == FOUR_BITS {
            return nibble;
        }
        let high = _mm256_srl_epi16(load32(q.add(128)), _mm_cvtsi32_si128(k as i32));
        let high = _mm256_slli_epi16(_mm256_and_si256(high, _mm256_set1_epi8(1)), 4);
        _mm256_or_si256(nibble, high)
    }
}

/// Registers whose i16 pair sums are added before widening, without VNNI.
const WIDEN_EVERY: usize = 4;

/// The integer dot products of a panel's quants at `q` with `R` activation rows' quants.
#[inline(always)]
unsafe fn block_dots<const R: usize, const VNNI: u8, const KIND: u8>(
    q: *const u8,
    qs: [&[i8; 32]; R],
) -> [__m256i; R] {
    // SAFETY: the module's contract.
    unsafe {
        let mut dots = [_mm256_setzero_si256(); R];
        if VNNI == NO_VNNI && KIND != BYTES {
            // Without VNNI, `vpmaddubsw`'s i16 pair sums of four registers are added as i16
            // before one widening `vpmaddwd`: a pair of 4- or 5-bit weights (≤ 31) and
            // activations (|a| ≤ 128) is at most 7,936, four of them 31,744 < 2¹⁵. The same
            // i32 sums as four widenings, with a quarter of them.
            for half in 0..ROWS / WIDEN_EVERY {
                let mut pairs = [_mm256_setzero_si256(); R];
                for k in half * WIDEN_EVERY..(half + 1) * WIDEN_EVERY {
                    let u = register::<KIND, VNNI>(q, k);
                    for r in 0..R {
                        let y = broadcast4(qs[r], k);
                        pairs[r] = _mm256_add_epi16(pairs[r], _mm256_maddubs_epi16(u, y));
                    }
                }
                for r in 0..R {
                    dots[r] = _mm256_add_epi32(
                        dots[r],
                        _mm256_madd_epi16(pairs[r], _mm256_set1_epi16(1)),
                    );
                }
            }
            return dots;
        }
        for k in 0..ROWS {
            let u = register::<KIND, VNNI>(q, k);
            for r in 0..R {
                let y = broadcast4(qs[r], k);
                dots[r] = if KIND == BYTES && VNNI == NO_VNNI {
                    dpbssd::<VNNI>(dots[r], u, y)
                } else {
                    dpbusd::<VNNI>(dots[r], u, y)
                };
            }
        }
        dots
    }
}

/// The eight lanes of each accumulator as an array.
#[inline(always)]
fn lanes<const R: usize>(acc: [__m256; R]) -> [[f32; ROWS]; R] {
    acc.map(|v| {
        let mut o = [0f32; ROWS];
        // SAFETY: `o` holds 8 f32; storeu has no alignment requirement.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) };
        o
    })
}

/// Panels of a type paired with `Q8_0` activations: `d · (u - offset)` per value.
#[inline(always)]
unsafe fn panels_q8_0<const R: usize, const VNNI: u8, const KIND: u8>(
    w: &[u8],
    a: [&[BlockQ8_0]; R],
    panel_bytes: usize,
    offset: i32,
) -> [[f32; ROWS]; R] {
    // SAFETY: the module's contract; a panel is 16 bytes of `d`, then its quants.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        for i in 0..a[0].len() {
            let p = w.as_ptr().add(i * panel_bytes);
            let dots = block_dots::<R, VNNI, KIND>(p.add(16), a.map(|a| &a[i].qs));
            let d = f16x8(p);
            for r in 0..R {
                let b = &a[r][i];
                let s = _mm256_sub_epi32(dots[r], _mm256_set1_epi32(offset * b.sum));
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(b.d));
                acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(s), acc[r]);
            }
        }
        lanes(acc)
    }
}

/// Panels of a type paired with `Q8_1` activations: `d · u + m` per value.
#[inline(always)]
unsafe fn panels_q8_1<const R: usize, const VNNI: u8, const KIND: u8>(
    w: &[u8],
    a: [&[BlockQ8_1]; R],
    panel_bytes: usize,
) -> [[f32; ROWS]; R] {
    // SAFETY: the module's contract; a panel is 16 bytes of `d`, 16 of `m`, then its quants.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        for i in 0..a[0].len() {
            let p = w.as_ptr().add(i * panel_bytes);
            let dots = block_dots::<R, VNNI, KIND>(p.add(32), a.map(|a| &a[i].qs));
            let (d, m) = (f16x8(p), f16x8(p.add(16)));
            for r in 0..R {
                let b = &a[r][i];
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(b.d));
                acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(dots[r]), acc[r]);
                acc[r] = _mm256_fmadd_ps(m, _mm256_set1_ps(b.s), acc[r]);
            }
        }
        lanes(acc)
    }
}

/// `Q4_0` panels: nibbles minus 8.
#[inline(always)]
pub(crate) unsafe fn dot_q4_0<const R: usize, const VNNI: u8>(
    w: &[u8],
    a: [&[BlockQ8_0]; R],
) -> [[f32; ROWS]; R] {
    // SAFETY: forwarded contract.
    unsafe { panels_q8_0::<R, VNNI, FOUR_BITS>(w, a, ROWS * Q4_0_BYTES, 8) }
}

/// `Q5_0` panels: 5-bit values minus 16.
#[inline(always)]
pub(crate) unsafe fn dot_q5_0<const R: usize, const VNNI: u8>(
    w: &[u8],
    a: [&[BlockQ8_0]; R],
) -> [[f32; ROWS]; R] {
    // SAFETY: forwarded contract.
    unsafe { panels_q8_0::<R, VNNI, FIVE_BITS>(w, a, ROWS * Q5_0_BYTES, 16) }
}

/// `Q8_0` panels: with VNNI the signed bytes shifted to unsigned (`^ 0x80` = `+ 128`), then 128
/// times the activation sum taken back; without, signed × signed.
#[inline(always)]
pub(crate) unsafe fn dot_q8_0<const R: usize, const VNNI: u8>(
    w: &[u8],
    a: [&[BlockQ8_0]; R],
) -> [[f32; ROWS]; R] {
    let offset = if VNNI != NO_VNNI { 128 } else { 0 };
    // SAFETY: forwarded contract.
    unsafe { panels_q8_0::<R, VNNI, BYTES>(w, a, ROWS * Q8_0_BYTES, offset) }
}

/// `Q4_1` panels.
#[inline(always)]
pub(crate) unsafe fn dot_q4_1<const R: usize, const VNNI: u8>(
    w: &[u8],
    a: [&[BlockQ8_1]; R],
) -> [[f32; ROWS]; R] {
    // SAFETY: forwarded contract.
    unsafe { panels_q8_1::<R, VNNI, FOUR_BITS>(w, a, ROWS * Q4_1_BYTES) }
}

/// `Q5_1` panels.
#[inline(always)]
pub(crate) unsafe fn dot_q5_1<const R: usize, const VNNI: u8>(
    w: &[u8],
    a: [&[BlockQ8_1]; R],
) -> [[f32; ROWS]; R] {
    // SAFETY: forwarded contract.
    unsafe { panels_q8_1::<R, VNNI, FIVE_BITS>(w, a, ROWS * Q5_1_BYTES) }
}
