//! AVX2 dot products of the 32-value formats against `Q8_0`/`Q8_1` activation blocks, for `R`
//! activation rows at once: each weight block is loaded and widened once, then multiplied with
//! the block of every row (`R = 1` for a single token, more for a prompt).
//!
//! The kernels are inlined into the caller (compiled for AVX2, or for AVX-512 with VNNI when
//! `VNNI`), whose target features they take.
//!
//! # Safety (every function)
//! The CPU has AVX2, FMA and F16C (and AVX-512 VNNI + VL when `VNNI`); `w` holds at least `a[0].len()` blocks of the weight type and
//! every `a[r]` is at least as long as `a[0]`.

#![allow(
    clippy::needless_range_loop,
    reason = "one block index addresses the weight row and R activation rows at once"
)]

use std::arch::x86_64::*;

use super::{bit_bytes, dpbssd, dpbusd, f16_at, hsum, load32, nibbles16};
use crate::activation::{BlockQ8_0, BlockQ8_1};
use crate::legacy::{Q4_0_BYTES, Q4_1_BYTES, Q5_0_BYTES, Q5_1_BYTES, Q8_0_BYTES};

/// The weight blocks of one row against `R` rows of `Q8_0` blocks: `widen` turns block `i`
/// (its first byte at the pointer) into its scale and 32 signed bytes.
#[inline(always)]
unsafe fn rows_q8_0<const R: usize, const VNNI: u8>(
    w: &[u8],
    a: [&[BlockQ8_0]; R],
    block_bytes: usize,
    widen: impl Fn(*const u8) -> (f32, __m256i),
) -> [f32; R] {
    // SAFETY: the caller's contract (module docs) and the features the callers enable.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        for i in 0..a[0].len() {
            let (d, q) = widen(w.as_ptr().add(i * block_bytes));
            for r in 0..R {
                let b = &a[r][i];
                let zero = _mm256_setzero_si256();
                let s = _mm256_cvtepi32_ps(dpbssd::<VNNI>(zero, q, load32(b.qs.as_ptr())));
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * b.d), s, acc[r]);
            }
        }
        acc.map(|v| hsum(v))
    }
}

/// As [`rows_q8_0`] for `Q8_1` activations and unsigned weights with an offset `m` per block:
/// `widen` gives the scale, the offset and 32 unsigned bytes.
#[inline(always)]
unsafe fn rows_q8_1<const R: usize, const VNNI: u8>(
    w: &[u8],
    a: [&[BlockQ8_1]; R],
    block_bytes: usize,
    widen: impl Fn(*const u8) -> (f32, f32, __m256i),
) -> [f32; R] {
    // SAFETY: the caller's contract (module docs) and the features the callers enable.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        let mut offsets = [0f32; R];
        for i in 0..a[0].len() {
            let (d, m, q) = widen(w.as_ptr().add(i * block_bytes));
            for r in 0..R {
                let b = &a[r][i];
                let zero = _mm256_setzero_si256();
                let s = _mm256_cvtepi32_ps(dpbusd::<VNNI>(zero, q, load32(b.qs.as_ptr())));
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * b.d), s, acc[r]);
                offsets[r] += m * b.s;
            }
        }
        let mut out = [0f32; R];
        for r in 0..R {
            out[r] = hsum(acc[r]) + offsets[r];
        }
        out
    }
}

/// `Q4_0` · `Q8_0`: nibbles minus 8, signed × signed.
#[inline(always)]
pub(crate) unsafe fn dot_q4_0<const R: usize, const VNNI: u8>(
    w: &[u8],
    a: [&[BlockQ8_0]; R],
) -> [f32; R] {
    // SAFETY: forwarded contract; a block is d at 0 and 16 quant bytes at 2..18.
    unsafe {
        rows_q8_0::<R, VNNI>(w, a, Q4_0_BYTES, |p| {
            let q = _mm256_sub_epi8(nibbles16(p.add(2)), _mm256_set1_epi8(8));
            (f16_at(p), q)
        })
    }
}

/// `Q4_1` · `Q8_1`: unsigned nibbles × signed bytes, plus `m · s` per block.
#[inline(always)]
pub(crate) unsafe fn dot_q4_1<const R: usize, const VNNI: u8>(
    w: &[u8],
    a: [&[BlockQ8_1]; R],
) -> [f32; R] {
    // SAFETY: forwarded contract; a block is d at 0, m at 2, 16 quant bytes at 4..20.
    unsafe {
        rows_q8_1::<R, VNNI>(w, a, Q4_1_BYTES, |p| {
            (f16_at(p), f16_at(p.add(2)), nibbles16(p.add(4)))
        })
    }
}

/// `Q5_0` · `Q8_0`: the fifth bit selects between `n` and `n - 16` (0xF0 | n as i8).
#[inline(always)]
pub(crate) unsafe fn dot_q5_0<const R: usize, const VNNI: u8>(
    w: &[u8],
    a: [&[BlockQ8_0]; R],
) -> [f32; R] {
    // SAFETY: forwarded contract; a block is d at 0, qh at 2..6, 16 quant bytes at 6..22.
    unsafe {
        rows_q8_0::<R, VNNI>(w, a, Q5_0_BYTES, |p| {
            let qh = u32::from_le(p.add(2).cast::<u32>().read_unaligned());
            // Where the bit is clear the value is n - 16, whose i8 pattern is 0xF0 | n.
            let minus16 = _mm256_andnot_si256(bit_bytes(qh), _mm256_set1_epi8(-16));
            (f16_at(p), _mm256_or_si256(nibbles16(p.add(6)), minus16))
        })
    }
}

/// `Q5_1` · `Q8_1`: unsigned 5-bit values × signed bytes, plus `m · s` per block.
#[inline(always)]
pub(crate) unsafe fn dot_q5_1<const R: usize, const VNNI: u8>(
    w: &[u8],
    a: [&[BlockQ8_1]; R],
) -> [f32; R] {
    // SAFETY: forwarded contract; a block is d at 0, m at 2, qh at 4..8, quants at 8..24.
    unsafe {
        rows_q8_1::<R, VNNI>(w, a, Q5_1_BYTES, |p| {
            let qh = u32::from_le(p.add(4).cast::<u32>().read_unaligned());
            let high = _mm256_and_si256(bit_bytes(qh), _mm256_set1_epi8(16));
            let q = _mm256_or_si256(nibbles16(p.add(8)), high);
            (f16_at(p), f16_at(p.add(2)), q)
        })
    }
}

/// `Q8_0` · `Q8_0`: signed × signed bytes.
#[inline(always)]
pub(crate) unsafe fn dot_q8_0<const R: usize, const VNNI: u8>(
    w: &[u8],
    a: [&[BlockQ8_0]; R],
) -> [f32; R] {
    // SAFETY: forwarded contract; a block is d at 0 and 32 quant bytes at 2..34.
    unsafe { rows_q8_0::<R, VNNI>(w, a, Q8_0_BYTES, |p| (f16_at(p), load32(p.add(2)))) }
}
