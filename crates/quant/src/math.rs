//! Elementwise math written so loops over it vectorize: only arithmetic and bit operations,
//! no library calls.

/// `e^x` within 3·10⁻⁷ relative (Cephes' range reduction and polynomial). Inputs are clamped to
/// `[−87.3, 88.0]` (so −∞ gives `e^−87.3 ≈ 1e-38`, +∞ gives `e^88 ≈ 1.7e38`; NaN gives
/// `e^−87.3`).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Adding 1.5·2²³ rounds to an integer held in the low mantissa bits (`round` and `as i32`
    // are library calls or saturating conversions that keep a loop scalar).
    const ROUND: f32 = 12_582_912.0;
    let x = if x >= -87.3 { x } else { -87.3 };
    let x = if x <= 88.0 { x } else { 88.0 };
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    // x − n·ln2 in two parts, so the reduction loses nothing.
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_66)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^n from n's bits: the low mantissa bits of `shifted` hold n + 2²² (−126 ≤ n ≤ 127 here).
    let n_int = shifted.to_bits().wrapping_sub(0x4B40_0000);
    e * f32::from_bits(n_int.wrapping_add(127) << 23)
}

/// `x · sigmoid(x)`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// The tanh approximation of GELU (PyTorch's `gelu(approximate="tanh")`):
/// `0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))`, with `tanh(z) = 1 − 2 / (1 + e^2z)`.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let z = SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x);
    let tanh = 1.0 - 2.0 / (1.0 + exp(2.0 * z));
    0.5 * x * (1.0 + tanh)
}
