//! The f32 vectors of the half-precision panel kernel (`crate::float`): AVX2 (eight lanes;
//! `vcvtph2ps` widens f16, a zero-extend and shift widens bf16) and AVX-512 (sixteen lanes).
//! The multiply-add takes a broadcast activation, which the compiler folds into the
//! instruction's memory operand.

use std::arch::x86_64::*;

use crate::float::Lanes;

impl Lanes for __m256 {
    const N: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: the caller's contract: the CPU has AVX.
        unsafe { _mm256_setzero_ps() }
    }

    #[inline(always)]
    unsafe fn half<const BF: bool>(p: *const u8) -> Self {
        // SAFETY: the caller guarantees 16 readable bytes (loadu has no alignment requirement)
        // and AVX2 + F16C.
        unsafe {
            let h = _mm_loadu_si128(p.cast());
            if BF {
                _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
            } else {
                _mm256_cvtph_ps(h)
            }
        }
    }

    #[inline(always)]
    unsafe fn fma(a: f32, w: Self, acc: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has AVX and FMA.
        unsafe { _mm256_fmadd_ps(_mm256_set1_ps(a), w, acc) }
    }

    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has AVX.
        unsafe { _mm256_add_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn store(self, out: &mut [f32]) {
        assert!(out.len() >= 8);
        // SAFETY: `out` holds at least eight values (checked); the CPU has AVX.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), self) }
    }

    #[inline(always)]
    unsafe fn prefetch(p: *const u8) {
        // SAFETY: a prefetch is a hint and never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
}

impl Lanes for __m512 {
    const N: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: the caller's contract: the CPU has AVX-512 F.
        unsafe { _mm512_setzero_ps() }
    }

    #[inline(always)]
    unsafe fn half<const BF: bool>(p: *const u8) -> Self {
        // SAFETY: the caller guarantees 32 readable bytes (loadu has no alignment requirement)
        // and AVX-512 F.
        unsafe {
            let h = _mm256_loadu_si256(p.cast());
            if BF {
                _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
            } else {
                _mm512_cvtph_ps(h)
            }
        }
    }

    #[inline(always)]
    unsafe fn fma(a: f32, w: Self, acc: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has AVX-512 F.
        unsafe { _mm512_fmadd_ps(_mm512_set1_ps(a), w, acc) }
    }

    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has AVX-512 F.
        unsafe { _mm512_add_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn store(self, out: &mut [f32]) {
        assert!(out.len() >= 16);
        // SAFETY: `out` holds at least sixteen values (checked); the CPU has AVX-512 F.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), self) }
    }

    #[inline(always)]
    unsafe fn prefetch(p: *const u8) {
        // SAFETY: a prefetch is a hint and never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
}
