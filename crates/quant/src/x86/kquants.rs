//! AVX2 dot products of the k-quants against `Q8_K` activation blocks. Values are widened to
//! unsigned bytes (offsets such as `Q6_K`'s -32 are subtracted afterwards through the
//! activation block's group sums), multiplied by `vpmaddubsw`, and the per-group scales applied
//! by `vpmaddwd` with a vector holding the scale of the first 16 values in its low half and of
//! the next 16 in its high half.
//!
//! Each takes `R` activation rows: a weight block is widened once and multiplied with the block
//! of every row.
//!
//! # Safety (every function)
//! The CPU has AVX2, FMA and F16C; `w` holds at least `a[0].len()` blocks of the weight type and
//! every `a[r]` is at least as long as `a[0]`.

#![allow(
    clippy::needless_range_loop,
    reason = "one block index addresses the weight row and R activation rows at once"
)]

use std::arch::x86_64::*;

use super::{f16_at, hsum, load32};
use crate::activation::BlockQ8K;
use crate::kquants::{Q2K_BYTES, Q3K_BYTES, Q4K_BYTES, Q5K_BYTES, Q6K_BYTES, k4_scales_mins};

/// Shuffles that spread byte lanes `2p` and `2p + 1` over 8 bytes each, for `p` in 0..8: with
/// [`pair`], the scales of two 16-value groups.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pair_shuffles() -> [__m128i; 8] {
    std::array::from_fn(|p| {
        let (lo, hi) = ((2 * p) as i8, (2 * p + 1) as i8);
        _mm_set_epi8(
            hi, hi, hi, hi, hi, hi, hi, hi, lo, lo, lo, lo, lo, lo, lo, lo,
        )
    })
}

/// i16 lanes from 16 signed i8 `scales`: scale `2p` in the first 8, `2p + 1` in the last 8,
/// `shuffle` being `pair_shuffles()[p]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pair(scales: __m128i, shuffle: __m128i) -> __m256i {
    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, shuffle))
}

/// Σ over 32 values of `u · y` scaled per 16-value group, as 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scaled_dot(u: __m256i, y: __m256i, scales: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), scales)
}

/// Σ_g scale_g · bsum_g over the 16 groups of an activation block, spread over 8 i32 lanes;
/// `scales` holds the 16 group scales as i16 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn scaled_bsums(scales: __m256i, a: &BlockQ8K) -> __m256i {
    // SAFETY: `bsums` is 16 i16, exactly 32 bytes.
    _mm256_madd_epi16(scales, unsafe { load32(a.bsums.as_ptr()) })
}

/// 16 bytes at `p` as 16 i16 lanes, zero-extended (`signed`: sign-extended).
///
/// # Safety
/// `p` points at 16 readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn widen16(p: *const u8, signed: bool) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes; loadu has no alignment requirement.
    let b = unsafe { _mm_loadu_si128(p.cast()) };
    if signed {
        _mm256_cvtepi8_epi16(b)
    } else {
        _mm256_cvtepu8_epi16(b)
    }
}

/// `acc + d · sumi - dmin · mins`, the i32 lanes converted to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn scale_and_subtract(
    acc: __m256,
    d: f32,
    sumi: __m256i,
    dmin: f32,
    mins: __m256i,
) -> __m256 {
    let acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    _mm256_fnmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(mins), acc)
}

/// `Q2_K` · `Q8_K`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q2k<const R: usize>(w: &[u8], a: [&[BlockQ8K]; R]) -> [f32; R] {
    let mut acc = [_mm256_setzero_ps(); R];
    let three = _mm256_set1_epi8(3);
    let nibble = _mm_set1_epi8(0x0F);
    let shuffles = pair_shuffles();
    for i in 0..a[0].len() {
        let b = &w[i * Q2K_BYTES..(i + 1) * Q2K_BYTES];
        // SAFETY: `b` is one whole block: scales at 0..16 (min in the high nibble), d at 80,
        // dmin at 82.
        let (d, dmin, scales, group_mins) = unsafe {
            let p = b.as_ptr();
            let packed = _mm_loadu_si128(p.cast());
            let high = _mm_and_si128(_mm_srli_epi16(packed, 4), nibble);
            (
                f16_at(p.add(80)),
                f16_at(p.add(82)),
                _mm_and_si128(packed, nibble),
                _mm256_cvtepu8_epi16(high),
            )
        };
        let mut sumi = [_mm256_setzero_si256(); R];
        for h in 0..2 {
            // SAFETY: bytes 16 + 32h .. 48 + 32h of the block are quants.
            let q = unsafe { load32(b.as_ptr().add(16 + 32 * h)) };
            for j in 0..4 {
                let u =
                    _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * j as i32)), three);
                let sc = pair(scales, shuffles[4 * h + j]);
                for r in 0..R {
                    // SAFETY: activation values 128h + 32j .. + 32 lie within `qs`.
                    let y = unsafe { load32(a[r][i].qs.as_ptr().add(128 * h + 32 * j)) };
                    sumi[r] = _mm256_add_epi32(sumi[r], scaled_dot(u, y, sc));
                }
            }
        }
        for r in 0..R {
            let a = &a[r][i];
            let m = scaled_bsums(group_mins, a);
            acc[r] = scale_and_subtract(acc[r], d * a.d, sumi[r], dmin * a.d, m);
        }
    }
    acc.map(|v| hsum(v))
}

/// The 16 signed scales of a `Q3_K` block as i8 lanes, from its 12 packed bytes at `p`
/// ([`crate::kquants::q3k_scales`] without a loop): the low nibbles of bytes 0–7 then their high
/// nibbles, each with two more bits from byte `8 + j % 4` at bit `2·(j / 4)`, minus 32.
///
/// # Safety
/// `p` points at 12 readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3k_scales_i8(p: *const u8) -> __m128i {
    let nibble = _mm_set1_epi8(0x0F);
    // SAFETY: the caller guarantees 12 readable bytes: 8 here, 4 at 8.
    let (low8, top) = unsafe {
        (
            _mm_loadl_epi64(p.cast()),
            std::ptr::read_unaligned(p.add(8).cast::<i32>()),
        )
    };
    let low = _mm_unpacklo_epi64(
        _mm_and_si128(low8, nibble),
        _mm_and_si128(_mm_srli_epi16(low8, 4), nibble),
    );
    // Lane k of 32 bits holds the four top bytes shifted right by 2k: byte 4k + m is scale
    // 4k + m's two bits.
    let high = _mm_and_si128(
        _mm_srlv_epi32(_mm_set1_epi32(top), _mm_set_epi32(6, 4, 2, 0)),
        _mm_set1_epi8(3),
    );
    _mm_sub_epi8(
        _mm_or_si128(low, _mm_slli_epi16(high, 4)),
        _mm_set1_epi8(32),
    )
}

/// `Q3_K` · `Q8_K`: values as `u - 4` with `u = q2 | high bit << 2` in 0..8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q3k<const R: usize>(w: &[u8], a: [&[BlockQ8K]; R]) -> [f32; R] {
    let mut acc = [_mm256_setzero_ps(); R];
    let three = _mm256_set1_epi8(3);
    let four = _mm256_set1_epi8(4);
    let shuffles = pair_shuffles();
    for i in 0..a[0].len() {
        let b = &w[i * Q3K_BYTES..(i + 1) * Q3K_BYTES];
        // SAFETY: `b` is one whole block: hmask at 0..32, scales at 96..108, d at 108.
        let (d, hmask, scales) = unsafe {
            let p = b.as_ptr();
            (f16_at(p.add(108)), load32(p), q3k_scales_i8(p.add(96)))
        };
        let mut sumi = [_mm256_setzero_si256(); R];
        for h in 0..2 {
            // SAFETY: bytes 32 + 32h .. 64 + 32h of the block are quants.
            let q = unsafe { load32(b.as_ptr().add(32 + 32 * h)) };
            for j in 0..4 {
                let low =
                    _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * j as i32)), three);
                let bit = _mm256_set1_epi8((1u8 << (4 * h + j)) as i8);
                let set = _mm256_cmpeq_epi8(_mm256_and_si256(hmask, bit), bit);
                let u = _mm256_or_si256(low, _mm256_and_si256(set, four));
                let sc = pair(scales, shuffles[4 * h + j]);
                for r in 0..R {
                    // SAFETY: activation values 128h + 32j .. + 32 lie within `qs`.
                    let y = unsafe { load32(a[r][i].qs.as_ptr().add(128 * h + 32 * j)) };
                    sumi[r] = _mm256_add_epi32(sumi[r], scaled_dot(u, y, sc));
                }
            }
        }
        let scales16 = _mm256_cvtepi8_epi16(scales);
        for r in 0..R {
            let a = &a[r][i];
            let offset = _mm256_slli_epi32(scaled_bsums(scales16, a), 2);
            let s = _mm256_sub_epi32(sumi[r], offset);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(s), acc[r]);
        }
    }
    acc.map(|v| hsum(v))
}

/// `Q4_K`/`Q5_K` · `Q8_K`; `qh` is the byte offset of `Q5_K`'s fifth bits.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_k4<const R: usize>(
    w: &[u8],
    a: [&[BlockQ8K]; R],
    block_bytes: usize,
    qh: Option<usize>,
) -> [f32; R] {
    let mut acc = [_mm256_setzero_ps(); R];
    let low4 = _mm256_set1_epi8(0x0F);
    let sixteen = _mm256_set1_epi8(16);
    let qs_at = if qh.is_some() { 48 } else { 16 };
    for i in 0..a[0].len() {
        let b = &w[i * block_bytes..(i + 1) * block_bytes];
        let (sc, mn) = k4_scales_mins(&b[4..16]);
        // Group g's min serves bsums 2g and 2g + 1: each min twice, as i16 lanes.
        // SAFETY: `mn` is 8 bytes.
        let group_mins = unsafe {
            let m = _mm_loadl_epi64(mn.as_ptr().cast());
            _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m))
        };
        // SAFETY: `b` is one whole block: d at 0, dmin at 2; Q5_K's 32 high-bit bytes at 16.
        let (d, dmin, high) = unsafe {
            let p = b.as_ptr();
            let high = qh.map(|o| load32(p.add(o)));
            (f16_at(p), f16_at(p.add(2)), high)
        };
        let mut sumi = [_mm256_setzero_si256(); R];
        for j in 0..4 {
            // SAFETY: quants of groups 2j, 2j + 1 are bytes qs_at + 32j .. + 32 of the block.
            let q = unsafe { load32(b.as_ptr().add(qs_at + 32 * j)) };
            let mut lo = _mm256_and_si256(q, low4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
            if let Some(high) = high {
                let bit_lo = _mm256_set1_epi8((1u8 << (2 * j)) as i8);
                let bit_hi = _mm256_set1_epi8((1u8 << (2 * j + 1)) as i8);
                let set_lo = _mm256_cmpeq_epi8(_mm256_and_si256(high, bit_lo), bit_lo);
                let set_hi = _mm256_cmpeq_epi8(_mm256_and_si256(high, bit_hi), bit_hi);
                lo = _mm256_or_si256(lo, _mm256_and_si256(set_lo, sixteen));
                hi = _mm256_or_si256(hi, _mm256_and_si256(set_hi, sixteen));
            }
            let s_lo = _mm256_set1_epi16(i16::from(sc[2 * j]));
            let s_hi = _mm256_set1_epi16(i16::from(sc[2 * j + 1]));
            for r in 0..R {
                // SAFETY: the activations of groups 2j, 2j + 1 are values 64j .. 64j + 64.
                let (y0, y1) = unsafe {
                    let y = a[r][i].qs.as_ptr().add(64 * j);
                    (load32(y), load32(y.add(32)))
                };
                let s = _mm256_add_epi32(scaled_dot(lo, y0, s_lo), scaled_dot(hi, y1, s_hi));
                sumi[r] = _mm256_add_epi32(sumi[r], s);
            }
        }
        for r in 0..R {
            let a = &a[r][i];
            let m = scaled_bsums(group_mins, a);
            acc[r] = scale_and_subtract(acc[r], d * a.d, sumi[r], dmin * a.d, m);
        }
    }
    acc.map(|v| hsum(v))
}

/// `Q4_K` · `Q8_K`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4k<const R: usize>(w: &[u8], a: [&[BlockQ8K]; R]) -> [f32; R] {
    // SAFETY: forwarded contract.
    unsafe { dot_k4(w, a, Q4K_BYTES, None) }
}

/// `Q5_K` · `Q8_K`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q5k<const R: usize>(w: &[u8], a: [&[BlockQ8K]; R]) -> [f32; R] {
    // SAFETY: forwarded contract.
    unsafe { dot_k4(w, a, Q5K_BYTES, Some(16)) }
}

/// `Q6_K` · `Q8_K`: unsigned 6-bit values, minus 32 · Σ scale · bsum afterwards.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q6k<const R: usize>(w: &[u8], a: [&[BlockQ8K]; R]) -> [f32; R] {
    let mut acc = [_mm256_setzero_ps(); R];
    let low4 = _mm256_set1_epi8(0x0F);
    let two_bits = _mm256_set1_epi8(3);
    let shuffles = pair_shuffles();
    for i in 0..a[0].len() {
        let b = &w[i * Q6K_BYTES..(i + 1) * Q6K_BYTES];
        // SAFETY: `b` is one whole block: the 16 scales at 192, d at 208.
        let (scales, d) = unsafe {
            let p = b.as_ptr();
            (_mm_loadu_si128(p.add(192).cast()), f16_at(p.add(208)))
        };
        let mut sumi = [_mm256_setzero_si256(); R];
        for h in 0..2 {
            // SAFETY: half h's low bits are bytes 64h .. 64h + 64, its high bits bytes
            // 128 + 32h .. + 32 of the block.
            let (q0, q1, qh) = unsafe {
                let p = b.as_ptr();
                (
                    load32(p.add(64 * h)),
                    load32(p.add(64 * h + 32)),
                    load32(p.add(128 + 32 * h)),
                )
            };
            let hb = |k: i32| {
                let bits = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k));
                _mm256_slli_epi16(_mm256_and_si256(bits, two_bits), 4)
            };
            let u = [
                _mm256_or_si256(_mm256_and_si256(q0, low4), hb(0)),
                _mm256_or_si256(_mm256_and_si256(q1, low4), hb(1)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q0, 4), low4), hb(2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q1, 4), low4), hb(3)),
            ];
            for (k, u) in u.into_iter().enumerate() {
                let sc = pair(scales, shuffles[4 * h + k]);
                for r in 0..R {
                    // SAFETY: activation values 128h + 32k .. + 32 lie within `qs`.
                    let y = unsafe { load32(a[r][i].qs.as_ptr().add(128 * h + 32 * k)) };
                    sumi[r] = _mm256_add_epi32(sumi[r], scaled_dot(u, y, sc));
                }
            }
        }
        let scales16 = _mm256_cvtepi8_epi16(scales);
        for r in 0..R {
            let a = &a[r][i];
            let offset = _mm256_slli_epi32(scaled_bsums(scales16, a), 5);
            let s = _mm256_sub_epi32(sumi[r], offset);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(s), acc[r]);
        }
    }
    acc.map(|v| hsum(v))
}
