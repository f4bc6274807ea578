//! NEON dot products (aarch64), chosen at run time. Every aarch64 CPU has NEON; the dot-product
//! extension (`sdot`, ARMv8.2 and later: Apple M1 on, Graviton 2 on, Cortex-A55/A76 on) sums
//! four byte products into each i32 lane in one instruction, where baseline NEON takes two
//! widening multiplies and three pairwise adds ([`dot4`]).
//!
//! The kernels read the layouts [`crate::QMatrix`] keeps (`crate::panels` for the 32-value
//! block types, `crate::grouped` for `Q4_K`, `Q5_K` and `Q6_K`), whose four-byte groups are exactly what
//! `sdot` sums: a 32-byte register of those layouts is two NEON registers here. The integer
//! sums are the portable kernels' (every product is exact in i32); only the scales are f32.

pub(crate) mod grouped;
pub(crate) mod panels;
pub(crate) mod tiles;

use std::arch::aarch64::*;
use std::arch::asm;

/// Whether this CPU has the dot-product extension.
pub(crate) fn available_dot() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// `acc` plus, in each i32 lane, the sum of the four products of the signed bytes of `a` and
/// `b` in that lane: one `sdot` when `DOT`, else `smull`, `smull2`, two `saddlp` and an `addp`
/// (no i16 sum can overflow: a pair of products is at most 2 · 128 · 128, widened first).
///
/// # Safety
/// The CPU has the dot-product extension when `DOT` (the caller is compiled with it).
#[inline(always)]
pub(crate) unsafe fn dot4<const DOT: bool>(
    acc: int32x4_t,
    a: int8x16_t,
    b: int8x16_t,
) -> int32x4_t {
    if DOT {
        let mut acc = acc;
        // SAFETY: the caller's contract: the CPU has the dot-product extension. The
        // instruction reads and writes registers only.
        unsafe {
            asm!(
                "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
                acc = inout(vreg) acc,
                a = in(vreg) a,
                b = in(vreg) b,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        acc
    } else {
        // SAFETY: NEON, which every aarch64 CPU has.
        unsafe {
            let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
            let hi = vmull_high_s8(a, b);
            vaddq_s32(acc, vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi)))
        }
    }
}

/// Four f16 as f32, exactly (subnormals, infinities and NaNs included): the integer steps of
/// `crate::float::f16_to_f32` on four lanes.
#[inline]
#[target_feature(enable = "neon")]
fn f16x4(h: uint16x4_t) -> float32x4_t {
    let h = vmovl_u16(h);
    let shifted = vshlq_n_u32::<13>(vandq_u32(h, vdupq_n_u32(0x7fff)));
    let exp = vandq_u32(shifted, vdupq_n_u32(0x0f80_0000));
    let rebiased = vaddq_u32(shifted, vdupq_n_u32((127 - 15) << 23));
    let special = vceqq_u32(exp, vdupq_n_u32(0x0f80_0000));
    let rebiased = vaddq_u32(rebiased, vandq_u32(special, vdupq_n_u32((128 - 16) << 23)));
    let normalized = vsubq_f32(
        vreinterpretq_f32_u32(vaddq_u32(rebiased, vdupq_n_u32(1 << 23))),
        vdupq_n_f32(f32::from_bits(113 << 23)),
    );
    let subnormal = vceqq_u32(exp, vdupq_n_u32(0));
    let magnitude = vbslq_u32(subnormal, vreinterpretq_u32_f32(normalized), rebiased);
    let sign = vshlq_n_u32::<16>(vandq_u32(h, vdupq_n_u32(0x8000)));
    vreinterpretq_f32_u32(vorrq_u32(magnitude, sign))
}

/// The eight f16 at `p` (16 bytes, any alignment) as two f32 vectors.
///
/// # Safety
/// `p` points at 16 readable bytes.
#[inline(always)]
pub(crate) unsafe fn f16x8(p: *const u8) -> [float32x4_t; 2] {
    // SAFETY: the caller's contract; byte loads have no alignment requirement (little-endian
    // bytes reinterpreted as u16 lanes).
    unsafe {
        let h = vreinterpretq_u16_u8(vld1q_u8(p));
        [f16x4(vget_low_u16(h)), f16x4(vget_high_u16(h))]
    }
}

/// The f16 at `p` (two bytes, any alignment) as f32.
///
/// # Safety
/// `p` points at two readable bytes.
#[inline(always)]
pub(crate) unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller's contract.
    crate::float::f16_to_f32(unsafe { p.cast::<u16>().read_unaligned() })
}

/// 16 bytes at `p` as signed bytes.
///
/// # Safety
/// `p` points at 16 readable bytes.
#[inline(always)]
pub(crate) unsafe fn load16<T>(p: *const T) -> int8x16_t {
    // SAFETY: the caller's contract; byte loads have no alignment requirement.
    unsafe { vld1q_s8(p.cast()) }
}
