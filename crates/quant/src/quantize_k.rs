//! The k-quant quantizers (see `quantize.rs` for the common contract). Each works on one
//! 256-value super-block and writes the layout `kquants.rs` documents and decodes.
//!
//! Two searches pick a group's scale:
//! - [`symmetric_search`] (`Q3_K`, `Q6_K`): levels `-n … n-1` times a scale. It starts from the
//!   scale that maps the largest magnitude to `-n` and either sweeps nearby scales keeping the
//!   one of least `x²`-weighted squared error (`Q6_K`), or moves single values to a better level
//!   while that lowers the error (`Q3_K`).
//! - [`offset_search`] (`Q2_K`, `Q4_K`, `Q5_K`): levels `0 … n` times a scale plus a minimum
//!   (never positive). For each candidate scale of a sweep, the levels are fixed and the scale
//!   and minimum come from the weighted least-squares fit; the candidate of least weighted error
//!   wins.

use crate::format::QK_K;
use crate::legacy;

/// Round half to even (the rounding ggml's k-quants use).
#[inline(always)]
fn nearest(v: f32) -> i32 {
    v.round_ties_even() as i32
}

/// Magnitudes below this count as an all-zero group.
const ZERO_EPS: f32 = 1e-15;

fn put_f16(o: &mut [u8], at: usize, v: f32) {
    o[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
}

/// The value of largest magnitude (first on ties) with its sign; `None` for an all-zero group.
fn signed_max(x: &[f32]) -> Option<f32> {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (amax >= ZERO_EPS).then_some(max)
}

/// Levels in `-n … n-1` for `x` at inverse scale `iscale`, with the sums `Σ w·x·l` and `Σ w·l²`
/// for weights `w = x²`.
fn levels_at(x: &[f32], n: i32, iscale: f32, l: &mut [i32]) -> (f32, f32) {
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (l, &v) in l.iter_mut().zip(x) {
        *l = nearest(iscale * v).clamp(-n, n - 1);
        let (w, lf) = (v * v, *l as f32);
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    (sumlx, suml2)
}

/// `Q6_K`'s group search: levels (stored as `l + n`) into `out`, returns the scale.
fn symmetric_search(x: &[f32], n: i32, out: &mut [i8]) -> f32 {
    let Some(max) = signed_max(x) else {
        out.fill(0);
        return 0.0;
    };
    let mut l = [0i32; 16];
    let l = &mut l[..x.len()];
    let (sumlx, suml2) = levels_at(x, n, -(n as f32) / max, l);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    let mut best_l = [0i32; 16];
    best_l[..x.len()].copy_from_slice(l);
    for step in (-9..=9).filter(|&s| s != 0) {
        let iscale = -(n as f32 + 0.1 * step as f32) / max;
        let (sumlx, suml2) = levels_at(x, n, iscale, l);
        // A better fit has a larger Σ(w·x·l)² / Σ(w·l²).
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            scale = sumlx / suml2;
            best = scale * sumlx;
            best_l[..x.len()].copy_from_slice(l);
        }
    }
    for (o, &l) in out.iter_mut().zip(&best_l) {
        *o = (l + n) as i8;
    }
    scale
}

/// `Q3_K`'s group search: start at the scale of the largest magnitude, then move single values
/// to the level their leave-one-out fit prefers while that improves the fit (at most 5 passes).
fn refine_search(x: &[f32], n: i32, out: &mut [i8]) -> f32 {
    let Some(max) = signed_max(x) else {
        out.fill(0);
        return 0.0;
    };
    let mut l = [0i32; 16];
    let l = &mut l[..x.len()];
    let (mut sumlx, mut suml2) = levels_at(x, n, -(n as f32) / max, l);
    for _ in 0..5 {
        let mut changed = false;
        for (i, &v) in x.iter().enumerate() {
            let w = v * v;
            let mut slx = sumlx - w * v * l[i] as f32;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * l[i] as f32 * l[i] as f32;
                let new = nearest(v * sl2 / slx).clamp(-n, n - 1);
                if new != l[i] {
                    slx += w * v * new as f32;
                    sl2 += w * new as f32 * new as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new;
                        (sumlx, suml2) = (slx, sl2);
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for (o, &l) in out.iter_mut().zip(l.iter()) {
        *o = (l + n) as i8;
    }
    if suml2 > 0.0 { sumlx / suml2 } else { 0.0 }
}

/// Parameters of an [`offset_search`] sweep: candidate inverse scales
/// `(first + step·k + n) / range` for `k = 0 … steps`; `abs_error` weighs |error| instead of
/// error².
struct Sweep {
    first: f32,
    step: f32,
    steps: u32,
    abs_error: bool,
}

/// Levels `0 … n` (into `out`), scale and minimum (as a non-negative offset to subtract) of one
/// group under weights `w`.
fn offset_search(x: &[f32], w: &[f32], n: u8, out: &mut [u8], s: &Sweep) -> (f32, f32) {
    let nf = f32::from(n);
    let (mut min, mut max) = (x[0], x[0]);
    let (mut sum_w, mut sum_x) = (w[0], w[0] * x[0]);
    for (&v, &w) in x.iter().zip(w).skip(1) {
        min = if v < min { v } else { min };
        max = if v > max { v } else { max };
        sum_w += w;
        sum_x += w * v;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        out.fill(0);
        return (0.0, -min);
    }
    let err = |d: f32| if s.abs_error { d.abs() } else { d * d };
    // The offset of later candidates is the best fit's minimum so far.
    let level =
        |v: f32, iscale: f32, min: f32| nearest(iscale * (v - min)).clamp(0, i32::from(n)) as u8;
    let iscale = nf / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(w) {
        *o = level(v, iscale, min);
        best_error += w * err(scale * f32::from(*o) + min - v);
    }
    let mut trial = [0u8; 32];
    let trial = &mut trial[..x.len()];
    for k in 0..=s.steps {
        let iscale = (s.first + s.step * k as f32 + nf) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for ((t, &v), &w) in trial.iter_mut().zip(x).zip(w) {
            *t = level(v, iscale, min);
            let l = f32::from(*t);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * v;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur = 0f32;
            for ((&t, &v), &w) in trial.iter().zip(x).zip(w) {
                cur += w * err(this_scale * f32::from(t) + this_min - v);
            }
            if cur < best_error {
                out.copy_from_slice(trial);
                best_error = cur;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Packs 2-bit levels (value order) the way `Q2_K`/`Q3_K` store them: byte `32h + l` of half
/// `h` holds values `128h + l + 32k` at bits `2k`.
fn pack_twos(levels: &[u8; QK_K], qs: &mut [u8]) {
    for h in 0..2 {
        for l in 0..32 {
            let at = 128 * h + l;
            qs[32 * h + l] = (0..4).fold(0u8, |b, k| b | (levels[at + 32 * k] & 3) << (2 * k));
        }
    }
}

pub(crate) fn q2k_block(x: &[f32], o: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let (mut scales, mut mins) = ([0f32; 16], [0f32; 16]);
    let sweep = Sweep {
        first: -0.5,
        step: 0.1,
        steps: 15,
        abs_error: true,
    };
    for g in 0..16 {
        let xg = &x[16 * g..16 * (g + 1)];
        let w: [f32; 16] = std::array::from_fn(|i| xg[i].abs());
        (scales[g], mins[g]) = offset_search(xg, &w, 3, &mut levels[16 * g..16 * (g + 1)], &sweep);
    }
    let max_scale = scales.iter().fold(0f32, |m, &s| if s > m { s } else { m });
    let max_min = mins.iter().fold(0f32, |m, &s| if s > m { s } else { m });
    o[..16].fill(0);
    if max_scale > 0.0 {
        let iscale = 15.0 / max_scale;
        for g in 0..16 {
            o[g] = nearest(iscale * scales[g]) as u8;
        }
    }
    put_f16(
        o,
        80,
        if max_scale > 0.0 {
            max_scale / 15.0
        } else {
            0.0
        },
    );
    if max_min > 0.0 {
        let iscale = 15.0 / max_min;
        for g in 0..16 {
            o[g] |= (nearest(iscale * mins[g]) as u8) << 4;
        }
    }
    put_f16(o, 82, if max_min > 0.0 { max_min / 15.0 } else { 0.0 });
    let (d, dmin) = (legacy::f16_at(o, 80), legacy::f16_at(o, 82));
    for (g, &packed) in o[..16].iter().enumerate() {
        let dl = d * f32::from(packed & 0x0F);
        if dl == 0.0 {
            continue;
        }
        let ml = dmin * f32::from(packed >> 4);
        for i in 16 * g..16 * (g + 1) {
            levels[i] = nearest((x[i] + ml) / dl).clamp(0, 3) as u8;
        }
    }
    pack_twos(&levels, &mut o[16..80]);
}

pub(crate) fn q3k_block(x: &[f32], o: &mut [u8]) {
    let mut levels = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut amax, mut max_scale) = (0f32, 0f32);
    for g in 0..16 {
        scales[g] = refine_search(
            &x[16 * g..16 * (g + 1)],
            4,
            &mut levels[16 * g..16 * (g + 1)],
        );
        if scales[g].abs() > amax {
            amax = scales[g].abs();
            max_scale = scales[g];
        }
    }
    // Layout: [hmask; 32][qs; 64][scales; 12][d].
    o.fill(0);
    let packed = &mut o[96..108];
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (g, &s) in scales.iter().enumerate() {
            let l = ((nearest(iscale * s) as i8).clamp(-32, 31) + 32) as u8;
            if g < 8 {
                packed[g] = l & 0x0F;
            } else {
                packed[g - 8] |= (l & 0x0F) << 4;
            }
            packed[8 + g % 4] |= (l >> 4) << (2 * (g / 4));
        }
        put_f16(o, 108, 1.0 / iscale);
    }
    let d = legacy::f16_at(o, 108);
    let stored = crate::kquants::q3k_scales(&o[96..108]);
    for (g, &sc) in stored.iter().enumerate() {
        let dl = d * f32::from(sc);
        if dl == 0.0 {
            continue;
        }
        for i in 16 * g..16 * (g + 1) {
            levels[i] = (nearest(x[i] / dl).clamp(-4, 3) + 4) as i8;
        }
    }
    // Levels 0…7: bit 2 goes to hmask (byte i % 32, bit i / 32), bits 0-1 to qs.
    let mut low = [0u8; QK_K];
    for (i, &l) in levels.iter().enumerate() {
        let l = l as u8;
        if l > 3 {
            o[i % 32] |= 1 << (i / 32);
        }
        low[i] = l & 3;
    }
    pack_twos(&low, &mut o[32..96]);
}

/// `Q4_K` (`five` false) and `Q5_K`: groups of 32 weighted by `rms(group) + |x|`, 6-bit scales
/// and mins against two f16 super-block scales.
pub(crate) fn k4_block(x: &[f32], o: &mut [u8], five: bool) {
    let n: u8 = if five { 31 } else { 15 };
    let sweep = if five {
        Sweep {
            first: -0.5,
            step: 0.1,
            steps: 15,
            abs_error: false,
        }
    } else {
        Sweep {
            first: -1.0,
            step: 0.1,
            steps: 20,
            abs_error: false,
        }
    };
    let mut levels = [0u8; QK_K];
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    for g in 0..8 {
        let xg = &x[32 * g..32 * (g + 1)];
        let sum_x2 = xg.iter().fold(0f32, |s, &v| s + v * v);
        let av = (sum_x2 / 32.0).sqrt();
        let w: [f32; 32] = std::array::from_fn(|i| av + xg[i].abs());
        (scales[g], mins[g]) = offset_search(xg, &w, n, &mut levels[32 * g..32 * (g + 1)], &sweep);
    }
    let max_scale = scales.iter().fold(0f32, |m, &s| if s > m { s } else { m });
    let max_min = mins.iter().fold(0f32, |m, &s| if s > m { s } else { m });
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    o.fill(0);
    {
        let packed = &mut o[4..16];
        for g in 0..8 {
            let ls = (nearest(inv_scale * scales[g]) as u8).min(63);
            let lm = (nearest(inv_min * mins[g]) as u8).min(63);
            if g < 4 {
                packed[g] = ls;
                packed[g + 4] = lm;
            } else {
                packed[g + 4] = (ls & 0x0F) | (lm & 0x0F) << 4;
                packed[g - 4] |= (ls >> 4) << 6;
                packed[g] |= (lm >> 4) << 6;
            }
        }
    }
    put_f16(o, 0, max_scale / 63.0);
    put_f16(o, 2, max_min / 63.0);
    let (d, dmin) = (legacy::f16_at(o, 0), legacy::f16_at(o, 2));
    for g in 0..8 {
        let (sc, m) = crate::kquants::k4_scale_min(g, &o[4..16]);
        let dl = d * f32::from(sc);
        if dl == 0.0 {
            continue;
        }
        let ml = dmin * f32::from(m);
        for i in 32 * g..32 * (g + 1) {
            levels[i] = nearest((x[i] + ml) / dl).clamp(0, i32::from(n)) as u8;
        }
    }
    let qs_at = if five { 48 } else { 16 };
    let (head, qs) = o.split_at_mut(qs_at);
    crate::kquants::put_k4_values(&levels, qs, five.then(|| &mut head[16..48]));
}

pub(crate) fn q6k_block(x: &[f32], o: &mut [u8]) {
    let mut levels = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut amax, mut max_scale) = (0f32, 0f32);
    for g in 0..16 {
        scales[g] = symmetric_search(
            &x[16 * g..16 * (g + 1)],
            32,
            &mut levels[16 * g..16 * (g + 1)],
        );
        if scales[g].abs() > amax {
            amax = scales[g].abs();
            max_scale = scales[g];
        }
    }
    // Layout: [ql; 128][qh; 64][scales: i8; 16][d].
    o.fill(0);
    if amax < ZERO_EPS {
        return;
    }
    let iscale = -128.0 / max_scale;
    put_f16(o, 208, 1.0 / iscale);
    for g in 0..16 {
        o[192 + g] = nearest(iscale * scales[g]).min(127) as i8 as u8;
    }
    let d = legacy::f16_at(o, 208);
    for g in 0..16 {
        let dl = d * f32::from(o[192 + g] as i8);
        if dl == 0.0 {
            continue;
        }
        for i in 16 * g..16 * (g + 1) {
            levels[i] = (nearest(x[i] / dl).clamp(-32, 31) + 32) as i8;
        }
    }
    let (ql, qh) = o.split_at_mut(128);
    crate::kquants::put_six_bits(&levels.map(|l| l as u8), ql, &mut qh[..64]);
}
