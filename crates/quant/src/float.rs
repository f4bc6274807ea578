//! Half-precision weights (`F16`, `BF16`) times f32 activations. The weights stay in their two
//! bytes per value (half the memory and bandwidth of f32) and are widened to f32 in registers;
//! activations are not rounded, and every product is accumulated in f32.
//!
//! [`crate::QMatrix`] keeps them in panels of [`PANEL`] rows: for each column `k`, the 32
//! rows' values of that column are stored together (one 64-byte cache line), so vector loads
//! widen a column of the panel and multiply-adds with one broadcast activation advance 32 rows —
//! no horizontal sums, each widened vector serves every activation row of a register block, and
//! a single activation row (decode) reads the matrix front to back as one stream. A matrix whose
//! row count is not a multiple of 32 gets a last panel padded with zero rows (at most 31 rows of
//! memory); their outputs are never written.
//!
//! The kernel ([`panel_dot`]) is written once over [`Lanes`], the f32 vector of an instruction
//! set: AVX-512 (sixteen lanes, two per panel column), AVX2 (eight, four per column) and a
//! portable array of eight the compiler vectorizes.

use crate::dot::Isa;
use crate::format::QuantType;
use crate::matrix::OutTile;

/// Weight rows per panel.
pub(crate) const PANEL: usize = 32;

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

/// [`PANEL`] rows of `rb` bytes each (row-major) into a panel, in place: value `k` of row `l`
/// moves to bytes `2 · (PANEL · k + l) ..`.
pub(crate) fn pack(rows: &mut [u8], rb: usize) {
    let src = rows.to_vec();
    for (l, row) in src.chunks_exact(rb).enumerate() {
        for (k, v) in row.chunks_exact(2).enumerate() {
            rows[2 * (PANEL * k + l)..][..2].copy_from_slice(v);
        }
    }
}

/// The inverse of [`pack`].
pub(crate) fn unpack(panel: &mut [u8], rb: usize) {
    let src = panel.to_vec();
    for (l, row) in panel.chunks_exact_mut(rb).enumerate() {
        for (k, v) in row.chunks_exact_mut(2).enumerate() {
            v.copy_from_slice(&src[2 * (PANEL * k + l)..][..2]);
        }
    }
}

/// An f32 vector of an instruction set, as the panel kernel uses it.
pub(crate) trait Lanes: Copy {
    /// f32 lanes.
    const N: usize;

    /// All zero.
    ///
    /// # Safety
    /// The CPU has the instruction set.
    unsafe fn zero() -> Self;

    /// `N` values of `BF` type (bf16 when true, else f16) at `p`, widened.
    ///
    /// # Safety
    /// The CPU has the instruction set; `p` points at `2 · N` readable bytes.
    unsafe fn half<const BF: bool>(p: *const u8) -> Self;

    /// `acc + a · w` in every lane.
    ///
    /// # Safety
    /// The CPU has the instruction set.
    unsafe fn fma(a: f32, w: Self, acc: Self) -> Self;

    /// `a + b` in every lane.
    ///
    /// # Safety
    /// The CPU has the instruction set.
    unsafe fn add(a: Self, b: Self) -> Self;

    /// The lanes into `out[..N]`.
    ///
    /// # Safety
    /// The CPU has the instruction set; `out` holds at least `N` values.
    unsafe fn store(self, out: &mut [f32]);

    /// Asks for the cache line at `p` ahead of its use (a hint: any address).
    ///
    /// # Safety
    /// The CPU has the instruction set.
    unsafe fn prefetch(p: *const u8);
}

/// Eight f32 in an array: the portable [`Lanes`].
#[derive(Clone, Copy)]
pub(crate) struct Portable8([f32; 8]);

impl Lanes for Portable8 {
    const N: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable8([0.0; 8])
    }

    #[inline(always)]
    unsafe fn half<const BF: bool>(p: *const u8) -> Self {
        // SAFETY: the caller guarantees 16 readable bytes at `p`.
        let b = unsafe { std::slice::from_raw_parts(p, 16) };
        Portable8(std::array::from_fn(|l| half_at::<BF>(b, l)))
    }

    #[inline(always)]
    unsafe fn fma(a: f32, w: Self, acc: Self) -> Self {
        Portable8(std::array::from_fn(|l| acc.0[l] + a * w.0[l]))
    }

    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        Portable8(std::array::from_fn(|l| a.0[l] + b.0[l]))
    }

    #[inline(always)]
    unsafe fn store(self, out: &mut [f32]) {
        out[..8].copy_from_slice(&self.0);
    }

    #[inline(always)]
    unsafe fn prefetch(_: *const u8) {}
}

/// How far ahead a single activation row asks for panel bytes: with one row the weights stream
/// from memory, and the hardware prefetcher alone left F16 rows at 48–51 GB/s on two cores of
/// an AMD EPYC, 57–64 with this (`examples/kernel_bench 1`, 151936×896; noisy).
const PREFETCH: usize = 4096;

/// `out[r][l] = Σ_k w[l][k] · a[r · cols + k]` for the [`PANEL`] rows `w` of the panel `p` and
/// the `R` consecutive activation rows `a`; `NV` vectors of `V` make a panel column (`NV · V::N =
/// PANEL`), and `U` columns are summed into separate accumulators (so that one activation row
/// still keeps several multiply-adds in flight).
///
/// # Safety
/// The CPU has `V`'s instruction set; `a.len()` is a multiple of `R` and `p` holds `a.len() / R`
/// panel columns (`2 · PANEL` bytes each).
#[inline(always)]
pub(crate) unsafe fn panel_dot<
    V: Lanes,
    const BF: bool,
    const NV: usize,
    const R: usize,
    const U: usize,
>(
    p: &[u8],
    a: &[f32],
) -> [[f32; PANEL]; R] {
    let cols = a.len() / R;
    let base = p.as_ptr();
    let full = cols / U * U;
    let mut out = [[0f32; PANEL]; R];
    // SAFETY: the caller's contract: the CPU has `V`'s instruction set, `p` holds `cols` panel
    // columns of `2 · PANEL = 2 · NV · V::N` bytes, and every activation index is below `cols`.
    unsafe {
        let mut acc = [[[V::zero(); NV]; R]; U];
        let mut w = [V::zero(); NV];
        let mut k = 0;
        while k < full {
            if R == 1 {
                let mut line = 0;
                while line < 2 * PANEL * U {
                    V::prefetch(base.wrapping_add(2 * PANEL * k + line + PREFETCH));
                    line += 64;
                }
            }
            for acc in acc.iter_mut() {
                for (v, w) in w.iter_mut().enumerate() {
                    *w = V::half::<BF>(base.add(2 * (PANEL * k + v * V::N)));
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = *a.get_unchecked(cols * r + k);
                    for (acc, &w) in acc.iter_mut().zip(&w) {
                        *acc = V::fma(x, w, *acc);
                    }
                }
                k += 1;
            }
        }
        while k < cols {
            for (v, w) in w.iter_mut().enumerate() {
                *w = V::half::<BF>(base.add(2 * (PANEL * k + v * V::N)));
            }
            for (r, acc) in acc[0].iter_mut().enumerate() {
                let x = *a.get_unchecked(cols * r + k);
                for (acc, &w) in acc.iter_mut().zip(&w) {
                    *acc = V::fma(x, w, *acc);
                }
            }
            k += 1;
        }
        for (r, out) in out.iter_mut().enumerate() {
            for v in 0..NV {
                let mut s = acc[0][r][v];
                for acc in &acc[1..] {
                    s = V::add(s, acc[r][v]);
                }
                s.store(&mut out[v * V::N..]);
            }
        }
    }
    out
}

/// Every activation row of `x` (`out.n` rows of `cols`) against the panels `w` (covering the
/// tile's `out.rows` rows, the last panel padded): `R` activation rows per pass over the
/// panels, then the rest in passes of 8, 4, 2 and 1 rows, the smaller ones with `U4`, `U2` and
/// `U1` columns in flight so that they keep about as many accumulators busy.
///
/// # Safety
/// The CPU has `V`'s instruction set; `w` holds `out.rows.div_ceil(PANEL)` panels of `cols`
/// columns, `x` holds `out.n` rows of `cols`; `NV · V::N = PANEL`.
#[inline(always)]
unsafe fn tile<
    V: Lanes,
    const BF: bool,
    const NV: usize,
    const R: usize,
    const U4: usize,
    const U2: usize,
    const U1: usize,
>(
    w: &[u8],
    x: &[f32],
    cols: usize,
    out: &OutTile,
) {
    let n = out.n();
    let mut t0 = 0;
    // SAFETY (every pass): the caller's contract.
    while n - t0 >= R {
        unsafe { pass::<V, BF, NV, R, 1>(w, x, cols, out, t0) };
        t0 += R;
    }
    if R > 8 && n - t0 >= 8 {
        unsafe { pass::<V, BF, NV, 8, 1>(w, x, cols, out, t0) };
        t0 += 8;
    }
    if R > 4 && n - t0 >= 4 {
        unsafe { pass::<V, BF, NV, 4, U4>(w, x, cols, out, t0) };
        t0 += 4;
    }
    if R > 2 && n - t0 >= 2 {
        unsafe { pass::<V, BF, NV, 2, U2>(w, x, cols, out, t0) };
        t0 += 2;
    }
    if n - t0 >= 1 {
        unsafe { pass::<V, BF, NV, 1, U1>(w, x, cols, out, t0) };
    }
}

/// Activation rows `t0 .. t0 + R` against every panel of the tile.
///
/// # Safety
/// As [`tile`], and `t0 + R ≤ out.n`.
#[inline(always)]
unsafe fn pass<V: Lanes, const BF: bool, const NV: usize, const R: usize, const U: usize>(
    w: &[u8],
    x: &[f32],
    cols: usize,
    out: &OutTile,
    t0: usize,
) {
    // Rows `t0 .. t0 + R`, consecutive in `x`.
    let a = &x[t0 * cols..(t0 + R) * cols];
    for (g, p) in w.chunks_exact(2 * PANEL * cols).enumerate() {
        // SAFETY: the caller's contract; `a` holds `R · cols` values.
        let v = unsafe { panel_dot::<V, BF, NV, R, U>(p, a) };
        let rows = (out.rows() - g * PANEL).min(PANEL);
        for (r, v) in v.iter().enumerate() {
            for (l, &v) in v[..rows].iter().enumerate() {
                out.set(t0 + r, g * PANEL + l, v);
            }
        }
    }
}

/// A tile of `ty` (F16 or BF16) panels on the kernels of `isa`.
///
/// # Safety
/// The CPU runs `isa`; `w` holds `out.rows.div_ceil(PANEL)` panels of `cols` columns of `ty`,
/// `x` holds `out.n` rows of `cols`.
pub(crate) unsafe fn half_tile(
    isa: Isa,
    ty: QuantType,
    w: &[u8],
    x: &[f32],
    cols: usize,
    out: &OutTile,
) {
    let bf = ty == QuantType::BF16;
    // SAFETY (every arm): the caller's contract.
    match (isa, bf) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2 | Isa::AvxVnni, false) => unsafe { avx2_tile::<false>(w, x, cols, out) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2 | Isa::AvxVnni, true) => unsafe { avx2_tile::<true>(w, x, cols, out) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512 | Isa::Avx512Vnni, false) => unsafe { avx512_tile::<false>(w, x, cols, out) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512 | Isa::Avx512Vnni, true) => unsafe { avx512_tile::<true>(w, x, cols, out) },
        (_, false) => unsafe { tile::<Portable8, false, 4, 4, 1, 2, 4>(w, x, cols, out) },
        (_, true) => unsafe { tile::<Portable8, true, 4, 4, 1, 2, 4>(w, x, cols, out) },
    }
}

/// [`tile`] on AVX2: four eight-lane vectors per panel column, two activation rows per pass
/// (eight accumulators; three would need more than the sixteen registers).
///
/// # Safety
/// As [`half_tile`], and the CPU has AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_tile<const BF: bool>(w: &[u8], x: &[f32], cols: usize, out: &OutTile) {
    // SAFETY: the caller's contract.
    unsafe { tile::<core::arch::x86_64::__m256, BF, 4, 2, 1, 1, 2>(w, x, cols, out) }
}

/// [`tile`] on AVX-512: two sixteen-lane vectors per panel column, eight activation rows per
/// pass (sixteen accumulators of the thirty-two registers). Against sixteen-row panels with
/// sixteen activation rows a pass, one thread of an AMD EPYC did 10 % more at 64 rows and 20–25 %
/// more at 1–5 (`examples/kernel_bench`); AVX2 lost 5–9 % at 64 rows and gained 15 % at 1–5.
///
/// # Safety
/// As [`half_tile`], and the CPU has AVX-512 F, VL and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
unsafe fn avx512_tile<const BF: bool>(w: &[u8], x: &[f32], cols: usize, out: &OutTile) {
    // SAFETY: the caller's contract.
    unsafe { tile::<core::arch::x86_64::__m512, BF, 2, 8, 2, 4, 8>(w, x, cols, out) }
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

    #[test]
    fn unpack_inverts_pack() {
        let rb = 2 * 37;
        let rows: Vec<u8> = (0..super::PANEL * rb)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut p = rows.clone();
        super::pack(&mut p, rb);
        assert_ne!(p, rows);
        super::unpack(&mut p, rb);
        assert_eq!(p, rows);
    }
}
