//! The vectorizable elementwise math against the standard library in f64.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use forja_quant::math;

/// Relative error of `f` against `want` over `xs`, ignoring results below `floor`.
fn worst(xs: impl Iterator<Item = f32>, f: impl Fn(f32) -> f32, want: impl Fn(f64) -> f64) -> f64 {
    let floor = 1e-30;
    xs.map(|x| {
        let (a, b) = (f64::from(f(x)), want(f64::from(x)));
        if b.abs() > floor {
            ((a - b) / b).abs()
        } else {
            0.0
        }
    })
    .fold(0.0, f64::max)
}

#[test]
fn exp_is_within_3e7_over_its_range_and_clamps_outside() {
    let xs = (0..400_000).map(|k| -87.0 + k as f32 * 0.000_437);
    let e = worst(xs, math::exp, f64::exp);
    assert!(e < 3e-7, "relative error {e}");
    for low in [-200.0, f32::NEG_INFINITY, f32::NAN] {
        let v = math::exp(low);
        assert!(v > 0.0 && v < 2e-38, "{low}: {v}");
    }
    for high in [100.0, f32::INFINITY] {
        let v = math::exp(high);
        assert!(v.is_finite() && v > 1e38, "{high}: {v}");
    }
}

#[test]
fn silu_and_gelu_match_their_definitions() {
    let xs = || (0..200_001).map(|k| -30.0 + k as f32 * 0.000_3);
    let silu = worst(xs(), math::silu, |x| x / (1.0 + (-x).exp()));
    assert!(silu < 1e-6, "silu relative error {silu}");
    let gelu = |x: f64| {
        let z = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044_715 * x * x * x);
        0.5 * x * (1.0 + z.tanh())
    };
    // Relative to max(|x|, 1): GELU's negative tail goes to 0 faster than x.
    let worst_gelu = xs()
        .map(|x| {
            (f64::from(math::gelu_tanh(x)) - gelu(f64::from(x))).abs() / f64::from(x.abs().max(1.0))
        })
        .fold(0.0, f64::max);
    assert!(worst_gelu < 1e-6, "gelu error {worst_gelu}");
    // Far from 0 both are x (positive side) or 0 (negative side), without overflow.
    for x in [1e30f32, 1e4] {
        assert_eq!((math::silu(x), math::gelu_tanh(x)), (x, x), "{x}");
        let (s, g) = (math::silu(-x), math::gelu_tanh(-x));
        assert!(s.abs() < 1e-6 && g.abs() < 1e-6, "{}: {s} {g}", -x);
    }
}
