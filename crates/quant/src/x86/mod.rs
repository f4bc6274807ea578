//! AVX2 + FMA + F16C dot products (x86-64), chosen at run time when the CPU has them.
//!
//! Every kernel computes the same integer sums as the portable one in `legacy`/`kquants`, 32
//! bytes at a time: 4- to 6-bit weights are widened to bytes, multiplied with the i8 activations
//! by `vpmaddubsw` (unsigned × signed bytes → i16 pairs; signed weights go through
//! `vpsignb` so the left operand is non-negative), widened to i32 by `vpmaddwd` (which also
//! applies the k-quants' per-group scales) and accumulated; only the per-block scales are
//! floating point. No i16 pair sum can overflow: the largest is 2 · 128 · 127.

pub(crate) mod float;
pub(crate) mod grouped;
pub(crate) mod kquants;
pub(crate) mod legacy;
pub(crate) mod panels;

use std::arch::x86_64::*;

/// Whether this CPU runs the kernels of this module.
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Whether this CPU also has the AVX-512 subsets the wide tiles are compiled for.
pub(crate) fn available_avx512() -> bool {
    available()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512bw")
}

/// Whether this CPU also has AVX-512 VNNI (`vpdpbusd`) for the VNNI tiles.
pub(crate) fn available_vnni() -> bool {
    available_avx512() && is_x86_feature_detected!("avx512vnni")
}

/// Whether this CPU has AVX-VNNI (`vpdpbusd` on 256-bit registers without AVX-512).
pub(crate) fn available_avx_vnni() -> bool {
    available() && is_x86_feature_detected!("avxvnni")
}

/// The f16 at `p` (two bytes, little-endian, any alignment) as f32.
///
/// # Safety
/// `p` points at two readable bytes; the CPU has F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees two readable bytes at `p`.
    let bits = unsafe { p.cast::<u16>().read_unaligned() };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// 32 bytes at `p`, any alignment.
///
/// # Safety
/// `p` points at 32 readable bytes; the CPU has AVX.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn load32<T>(p: *const T) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes; loadu has no alignment requirement.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// The 32 nibbles of the 16 bytes at `p`: low nibbles in bytes 0..16, high in 16..32.
///
/// # Safety
/// `p` points at 16 readable bytes; the CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn nibbles16(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes; loadu has no alignment requirement.
    let b = unsafe { _mm_loadu_si128(p.cast()) };
    let m = _mm_set1_epi8(0x0F);
    _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), m), _mm_and_si128(b, m))
}

/// Byte `i` is 0xFF where bit `i` of `bits` is set, 0 elsewhere.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn bit_bytes(bits: u32) -> __m256i {
    // Byte i takes byte i / 8 of `bits` (the shuffle works within each 128-bit lane, and both
    // lanes hold all four bytes), then keeps bit i % 8.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3,
            3, 3, 3,
        ),
    );
    let select = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select)
}

/// Sums of adjacent pairs of `u · s` (u unsigned bytes ≤ 127 + 1, s signed bytes) as 8 i32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

/// The kernels' `VNNI` parameter: byte products summed by `vpmaddubsw` + `vpmaddwd` (AVX2)…
pub(crate) const NO_VNNI: u8 = 0;
/// …by AVX-512 VNNI's `vpdpbusd` (EVEX-encoded; the caller is compiled for AVX-512 VNNI + VL)…
pub(crate) const VNNI_512: u8 = 1;
/// …or by AVX-VNNI's `vpdpbusd` (VEX-encoded, on CPUs without AVX-512: Alder Lake and later
/// Intel cores, Zen 5; the caller is compiled for `avxvnni`).
pub(crate) const VNNI_VEX: u8 = 2;

/// `acc` plus the sums of `u · s` over groups of 4 bytes (u unsigned bytes ≤ 128, s signed):
/// one `vpdpbusd` with `VNNI` ([`VNNI_512`] or [`VNNI_VEX`]), else [`dot_u8_i8`] and an add.
/// All give the same i32 lanes.
///
/// # Safety
/// The CPU has AVX2, and AVX-512 VNNI + VL with [`VNNI_512`], AVX-VNNI with [`VNNI_VEX`].
#[inline(always)]
pub(crate) unsafe fn dpbusd<const VNNI: u8>(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    match VNNI {
        // SAFETY: the caller's contract.
        VNNI_512 => unsafe { _mm256_dpbusd_epi32(acc, u, s) },
        // SAFETY: the caller's contract.
        VNNI_VEX => unsafe { _mm256_dpbusd_avx_epi32(acc, u, s) },
        // SAFETY: the caller's contract.
        _ => unsafe { _mm256_add_epi32(acc, dot_u8_i8(u, s)) },
    }
}

/// [`dpbusd`] for two signed operands: `|a| · (b with a's sign)`.
///
/// # Safety
/// As [`dpbusd`].
#[inline(always)]
pub(crate) unsafe fn dpbssd<const VNNI: u8>(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    // SAFETY: the caller's contract.
    unsafe { dpbusd::<VNNI>(acc, _mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a)) }
}

/// The sum of the 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}
