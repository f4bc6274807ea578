//! Half-precision weight rows times f32 activation rows on AVX2 (eight lanes: `vcvtph2ps` for
//! f16, a zero-extend and shift for bf16) and AVX-512 (sixteen lanes), f32 multiply-adds.
//!
//! Both are [`HalfRows`] register blocks: `R · W` accumulators, each widened weight vector used
//! by `R` activation rows. Values past the last whole vector are added one by one.

use std::arch::x86_64::*;

use crate::float::{HalfRows, half_at};

/// Eight weights of `BF` type at `p` as f32.
///
/// # Safety
/// `p` points at 16 readable bytes; the CPU has AVX2 and F16C.
#[inline(always)]
unsafe fn load8<const BF: bool>(p: *const u8) -> __m256 {
    // SAFETY: the caller guarantees 16 readable bytes (loadu has no alignment requirement)
    // and the CPU features.
    unsafe {
        let h = _mm_loadu_si128(p.cast());
        if BF {
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
        } else {
            _mm256_cvtph_ps(h)
        }
    }
}

/// Sixteen weights of `BF` type at `p` as f32.
///
/// # Safety
/// `p` points at 32 readable bytes; the CPU has AVX-512 F.
#[inline(always)]
unsafe fn load16<const BF: bool>(p: *const u8) -> __m512 {
    // SAFETY: the caller guarantees 32 readable bytes (loadu has no alignment requirement)
    // and the CPU features.
    unsafe {
        let h = _mm256_loadu_si256(p.cast());
        if BF {
            _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
        } else {
            _mm512_cvtph_ps(h)
        }
    }
}

/// The products past `full` (the values after the last whole vector).
#[inline(always)]
fn tail<const BF: bool>(w: &[u8], a: &[f32], full: usize) -> f32 {
    (full..a.len()).map(|k| half_at::<BF>(w, k) * a[k]).sum()
}

/// Eight lanes, for CPUs with AVX2, FMA and F16C.
pub(crate) struct Avx2<const BF: bool>;

impl<const BF: bool> HalfRows for Avx2<BF> {
    #[inline(always)]
    unsafe fn dot<const R: usize, const W: usize>(w: [&[u8]; W], a: [&[f32]; R]) -> [[f32; W]; R] {
        let cols = a.first().map_or(0, |a| a.len());
        let full = cols / 8 * 8;
        let mut out = [[0f32; W]; R];
        // SAFETY: the caller's contract: the CPU has the instruction set; `w` holds `cols`
        // values, two bytes each, `a` holds `cols` values, and every load is below `full`.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); W]; R];
            let mut wv = [_mm256_setzero_ps(); W];
            for i in (0..full).step_by(8) {
                for (v, w) in wv.iter_mut().zip(w) {
                    *v = load8::<BF>(w.as_ptr().add(2 * i));
                }
                for (acc, a) in acc.iter_mut().zip(a) {
                    let av = _mm256_loadu_ps(a.as_ptr().add(i));
                    for (acc, &v) in acc.iter_mut().zip(&wv) {
                        *acc = _mm256_fmadd_ps(av, v, *acc);
                    }
                }
            }
            for ((o, acc), a) in out.iter_mut().zip(&acc).zip(a) {
                for ((o, &acc), w) in o.iter_mut().zip(acc).zip(w) {
                    *o = super::hsum(acc) + tail::<BF>(w, a, full);
                }
            }
        }
        out
    }
}

/// Sixteen lanes, for CPUs with AVX-512 F.
pub(crate) struct Avx512<const BF: bool>;

impl<const BF: bool> HalfRows for Avx512<BF> {
    #[inline(always)]
    unsafe fn dot<const R: usize, const W: usize>(w: [&[u8]; W], a: [&[f32]; R]) -> [[f32; W]; R] {
        let cols = a.first().map_or(0, |a| a.len());
        let full = cols / 16 * 16;
        let mut out = [[0f32; W]; R];
        // SAFETY: the caller's contract: the CPU has the instruction set; `w` holds `cols`
        // values, two bytes each, `a` holds `cols` values, and every load is below `full`.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); W]; R];
            let mut wv = [_mm512_setzero_ps(); W];
            for i in (0..full).step_by(16) {
                for (v, w) in wv.iter_mut().zip(w) {
                    *v = load16::<BF>(w.as_ptr().add(2 * i));
                }
                for (acc, a) in acc.iter_mut().zip(a) {
                    let av = _mm512_loadu_ps(a.as_ptr().add(i));
                    for (acc, &v) in acc.iter_mut().zip(&wv) {
                        *acc = _mm512_fmadd_ps(av, v, *acc);
                    }
                }
            }
            for ((o, acc), a) in out.iter_mut().zip(&acc).zip(a) {
                for ((o, &acc), w) in o.iter_mut().zip(acc).zip(w) {
                    *o = _mm512_reduce_add_ps(acc) + tail::<BF>(w, a, full);
                }
            }
        }
        out
    }
}
