//! Half-precision weights (`F16`, `BF16`) times f32 activations. The weights stay in their two
//! bytes per value (half the memory and bandwidth of f32) and are widened to f32 in registers;
//! activations are not rounded, and every product is accumulated in f32.
//!
//! A tile is computed in register blocks: `R` activation rows against `W` weight rows at a time
//! ([`HalfRows::dot`]), so each widened weight vector serves `R` rows and each activation vector
//! `W` rows. The kernels implement [`HalfRows`] once per instruction set; the loops here are
//! shared.

use crate::dot::Isa;
use crate::format::QuantType;
use crate::matrix::OutTile;

/// Whether `ty` is one of the half-precision types this module multiplies.
pub(crate) fn is_half(ty: QuantType) -> bool {
    matches!(ty, QuantType::F16 | QuantType::BF16)
}

/// The value at element `k` of a row of `BF` (bf16 when true, else f16) values.
#[inline(always)]
pub(crate) fn half_at<const BF: bool>(w: &[u8], k: usize) -> f32 {
    let bits = u16::from_le_bytes([w[2 * k], w[2 * k + 1]]);
    if BF {
        // bf16 is the top half of an f32.
        f32::from_bits(u32::from(bits) << 16)
    } else {
        f16_to_f32(bits)
    }
}

/// An f16 as f32, exactly (subnormals, infinities and NaNs included), without branches or
/// tables, so that a loop of them vectorizes on any CPU: the exponent is rebiased by an add,
/// infinities and NaNs get the rest of the f32 exponent range, and subnormals are normalized by
/// one floating-point subtraction.
#[inline(always)]
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let shifted = (h & 0x7fff) << 13;
    let exp = shifted & 0x0f80_0000;
    let rebiased = shifted + ((127 - 15) << 23);
    let rebiased = if exp == 0x0f80_0000 {
        rebiased + ((128 - 16) << 23)
    } else {
        rebiased
    };
    let magnitude = if exp == 0 {
        f32::from_bits(rebiased + (1 << 23)) - f32::from_bits(113 << 23)
    } else {
        f32::from_bits(rebiased)
    };
    f32::from_bits(magnitude.to_bits() | (h & 0x8000) << 16)
}

/// A register block of dot products.
pub(crate) trait HalfRows {
    /// `out[r][j] = w[j] · a[r]`: each `w[j]` is a row of `a[r].len()` half-precision values
    /// (little-endian, two bytes each), every `a[r]` of the same length.
    ///
    /// # Safety
    /// The CPU has the instruction set of the implementation; the lengths are as stated.
    unsafe fn dot<const R: usize, const W: usize>(w: [&[u8]; W], a: [&[f32]; R]) -> [[f32; W]; R];
}

/// The first eight values of `w` (at least 16 bytes) as f32.
#[inline(always)]
fn widen8<const BF: bool>(w: &[u8]) -> [f32; 8] {
    let Some(b) = w.first_chunk::<16>() else {
        return [f32::NAN; 8];
    };
    std::array::from_fn(|l| half_at::<BF>(b, l))
}

/// The portable kernel: eight weights widened at a time into an array, multiplied into eight
/// partial sums per product (loops the compiler vectorizes).
pub(crate) struct Portable<const BF: bool>;

impl<const BF: bool> HalfRows for Portable<BF> {
    #[inline(always)]
    unsafe fn dot<const R: usize, const W: usize>(w: [&[u8]; W], a: [&[f32]; R]) -> [[f32; W]; R] {
        let cols = a.first().map_or(0, |a| a.len());
        let full = cols / 8 * 8;
        let mut acc = [[[0f32; 8]; W]; R];
        for k0 in (0..full).step_by(8) {
            let wv: [[f32; 8]; W] = std::array::from_fn(|j| widen8::<BF>(&w[j][2 * k0..]));
            for (acc, a) in acc.iter_mut().zip(a) {
                let a = &a[k0..k0 + 8];
                for (acc, wv) in acc.iter_mut().zip(&wv) {
                    for ((acc, w), a) in acc.iter_mut().zip(wv).zip(a) {
                        *acc += w * a;
                    }
                }
            }
        }
        let mut out = [[0f32; W]; R];
        for ((o, acc), a) in out.iter_mut().zip(&acc).zip(a) {
            for ((o, acc), w) in o.iter_mut().zip(acc).zip(w) {
                let tail: f32 = (full..cols).map(|k| half_at::<BF>(w, k) * a[k]).sum();
                *o = acc.iter().sum::<f32>() + tail;
            }
        }
        out
    }
}

/// Every activation row of `x` (`out.n` rows of `cols`) against every weight row of the tile
/// `w` (`out.rows` rows of `rb` bytes), `R` activation rows by `W` weight rows at a time, and
/// single activation rows (the last `n % R`, or all of them when `n` is 1) by `W1` weight rows.
///
/// # Safety
/// The CPU has `K`'s instruction set; `w` holds `out.rows` rows of `cols` values (`rb = 2 ·
/// cols`), `x` holds `out.n` rows of `cols`.
#[inline(always)]
pub(crate) unsafe fn tile<K: HalfRows, const R: usize, const W: usize, const W1: usize>(
    w: &[u8],
    rb: usize,
    x: &[f32],
    cols: usize,
    out: &OutTile,
) {
    let n = out.n();
    let full = n / R * R;
    for t0 in (0..full).step_by(R) {
        let a: [&[f32]; R] = std::array::from_fn(|r| &x[(t0 + r) * cols..(t0 + r + 1) * cols]);
        // SAFETY: the caller's contract.
        unsafe { act_rows::<K, R, W>(w, rb, a, t0, out) };
    }
    for t in full..n {
        // SAFETY: the caller's contract.
        unsafe { act_rows::<K, 1, W1>(w, rb, [&x[t * cols..(t + 1) * cols]], t, out) };
    }
}

/// The activation rows `a` (output rows `t0 ..`) against every weight row of the tile, `W` at
/// a time, then the rest one by one.
///
/// # Safety
/// As [`tile`].
#[inline(always)]
unsafe fn act_rows<K: HalfRows, const R: usize, const W: usize>(
    w: &[u8],
    rb: usize,
    a: [&[f32]; R],
    t0: usize,
    out: &OutTile,
) {
    let rows = out.rows();
    let full = rows / W * W;
    for j0 in (0..full).step_by(W) {
        let ws: [&[u8]; W] = std::array::from_fn(|j| &w[(j0 + j) * rb..(j0 + j + 1) * rb]);
        // SAFETY: the caller's contract; each row is `cols` values.
        put(out, t0, j0, unsafe { K::dot::<R, W>(ws, a) });
    }
    for j in full..rows {
        // SAFETY: as above.
        put(out, t0, j, unsafe {
            K::dot::<R, 1>([&w[j * rb..(j + 1) * rb]], a)
        });
    }
}

/// Writes a register block's results: output rows `t0 ..`, tile rows `j0 ..`.
#[inline(always)]
fn put<const R: usize, const W: usize>(out: &OutTile, t0: usize, j0: usize, v: [[f32; W]; R]) {
    for (r, v) in v.into_iter().enumerate() {
        for (j, v) in v.into_iter().enumerate() {
            out.set(t0 + r, j0 + j, v);
        }
    }
}

/// A tile of `ty` (F16 or BF16) weights on the kernels of `isa`.
///
/// # Safety
/// The CPU runs `isa`; `w` holds `out.rows` rows of `cols` values of `ty` (`rb = 2 · cols`), `x`
/// holds `out.n` rows of `cols`.
pub(crate) unsafe fn half_tile(
    isa: Isa,
    ty: QuantType,
    w: &[u8],
    rb: usize,
    x: &[f32],
    cols: usize,
    out: &OutTile,
) {
    let bf = ty == QuantType::BF16;
    // SAFETY (every arm): the caller's contract.
    match (isa, bf) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, false) => unsafe { avx2_tile::<false>(w, rb, x, cols, out) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, true) => unsafe { avx2_tile::<true>(w, rb, x, cols, out) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512 | Isa::Avx512Vnni, false) => unsafe {
            avx512_tile::<false>(w, rb, x, cols, out)
        },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512 | Isa::Avx512Vnni, true) => unsafe {
            avx512_tile::<true>(w, rb, x, cols, out)
        },
        (_, false) => unsafe { tile::<Portable<false>, 4, 2, 4>(w, rb, x, cols, out) },
        (_, true) => unsafe { tile::<Portable<true>, 4, 2, 4>(w, rb, x, cols, out) },
    }
}

/// [`tile`] on AVX2: four activation rows by two weight rows (eight accumulators of the
/// sixteen registers), single rows by four.
///
/// # Safety
/// As [`half_tile`], and the CPU has AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_tile<const BF: bool>(w: &[u8], rb: usize, x: &[f32], cols: usize, out: &OutTile) {
    // SAFETY: the caller's contract.
    unsafe { tile::<crate::x86::float::Avx2<BF>, 4, 2, 4>(w, rb, x, cols, out) }
}

/// [`tile`] on AVX-512: four activation rows by four weight rows (sixteen accumulators of the
/// thirty-two registers), single rows by four.
///
/// # Safety
/// As [`half_tile`], and the CPU has AVX-512 F, VL and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
unsafe fn avx512_tile<const BF: bool>(w: &[u8], rb: usize, x: &[f32], cols: usize, out: &OutTile) {
    // SAFETY: the caller's contract.
    unsafe { tile::<crate::x86::float::Avx512<BF>, 4, 4, 4>(w, rb, x, cols, out) }
}

#[cfg(test)]
mod tests {
    /// Every f16, against the `half` crate's conversion.
    #[test]
    fn f16_to_f32_is_exact_for_every_value() {
        for h in 0..=u16::MAX {
            let want = half::f16::from_bits(h).to_f32();
            let got = super::f16_to_f32(h);
            if want.is_nan() {
                assert!(got.is_nan(), "{h:#06x}: {got}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{h:#06x}: {got} vs {want}");
            }
        }
    }
}
