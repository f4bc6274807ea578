//! Quantization round trips through the reference dequantization: for every type, random rows
//! (Gaussian, with outliers, all-equal, all-zero) come back within a stated relative RMS error,
//! and the parallel matrix quantizer writes the same bytes as row-by-row quantization.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use common::Rng;
use forja_quant::{QuantType, dequantize, quantize, quantize_row};

/// Largest relative RMS error (RMS of the error over RMS of the row) accepted on Gaussian rows,
/// per type. Measured (`--nocapture`): Q8_0 0.0053, Q6_K 0.0178, Q5_K 0.036, Q5_1 0.038,
/// Q5_0 0.043, Q4_K 0.071, Q4_1 0.079, Q4_0 0.086, Q3_K 0.151, Q2_K 0.297; the bounds leave
/// about a third more. A wrong scale, a swapped nibble or a lost bit breaks them by far.
fn bound(ty: QuantType) -> f64 {
    match ty {
        QuantType::F32 => 0.0,
        QuantType::F16 => 0.001,
        QuantType::BF16 => 0.005,
        QuantType::Q8_0 => 0.0075,
        QuantType::Q6K => 0.024,
        QuantType::Q5K => 0.048,
        QuantType::Q5_1 => 0.05,
        QuantType::Q5_0 => 0.057,
        QuantType::Q4K => 0.095,
        QuantType::Q4_1 => 0.105,
        QuantType::Q4_0 => 0.115,
        QuantType::Q3K => 0.2,
        QuantType::Q2K => 0.4,
    }
}

/// Standard normal values (Box-Muller), scaled by `sigma`.
fn gaussian(n: usize, sigma: f32, rng: &mut Rng) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let (u, v) = (rng.unit().max(1e-7), rng.unit());
            sigma * (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect()
}

fn rel_rms(x: &[f32], y: &[f32]) -> f64 {
    let err: f64 = x.iter().zip(y).map(|(a, b)| f64::from(a - b).powi(2)).sum();
    let norm: f64 = x.iter().map(|a| f64::from(*a).powi(2)).sum();
    (err / norm).sqrt()
}

fn round_trip(ty: QuantType, x: &[f32]) -> Vec<f32> {
    let mut q = vec![0u8; ty.row_bytes(x.len()).unwrap()];
    quantize_row(ty, x, &mut q).unwrap();
    dequantize(ty, &q).unwrap()
}

#[test]
fn gaussian_rows_come_back_within_the_bound_of_each_type() {
    let mut rng = Rng::new(7);
    for ty in QuantType::ALL {
        let x = gaussian(64 * 256, 0.02, &mut rng);
        let e = rel_rms(&x, &round_trip(ty, &x));
        println!("{ty}: relative RMS error {e:.5}");
        assert!(
            e <= bound(ty),
            "{ty}: relative RMS error {e} above {}",
            bound(ty)
        );
        if ty.block_len() > 1 {
            // Quantization loses something: an identity "quantizer" would pass the bound too.
            assert!(e > bound(ty) / 20.0, "{ty}: error {e} suspiciously small");
        }
    }
}

#[test]
fn rows_with_outliers_keep_the_outlier_and_the_bound_on_the_rest() {
    let mut rng = Rng::new(11);
    for ty in QuantType::ALL {
        let mut x = gaussian(16 * 256, 1.0, &mut rng);
        // One large value in every 256: the block scales must follow it.
        for b in 0..16 {
            x[b * 256 + (b * 37) % 256] = if b % 2 == 0 { 40.0 } else { -40.0 };
        }
        let y = round_trip(ty, &x);
        for b in 0..16 {
            let i = b * 256 + (b * 37) % 256;
            let rel = ((y[i] - x[i]) / x[i]).abs();
            assert!(rel < 0.12, "{ty}: outlier {} came back as {}", x[i], y[i]);
        }
        // The rest of an outlier's block loses precision (its step grows); the whole row stays
        // within a few times the Gaussian bound, and far better than zeroing it.
        let e = rel_rms(&x, &y);
        println!("{ty}: relative RMS error with outliers {e:.5}");
        assert!(e <= 4.0 * bound(ty).max(0.002), "{ty}: {e}");
    }
}

#[test]
fn all_equal_and_all_zero_rows() {
    for ty in QuantType::ALL {
        for c in [0.0f32, 0.37, -0.15, 12.0] {
            let x = vec![c; 512];
            let y = round_trip(ty, &x);
            for (i, v) in y.iter().enumerate() {
                if c == 0.0 {
                    assert_eq!(*v, 0.0, "{ty}: zero row, value {i} came back as {v}");
                } else {
                    let rel = ((v - c) / c).abs();
                    // k-quants with a minimum store the constant as scale · level − min through
                    // two 6-bit (4-bit for Q2_K) factors.
                    let tol = match ty {
                        QuantType::Q2K => 0.08,
                        QuantType::Q3K => 0.02,
                        _ => 0.01,
                    };
                    assert!(rel <= tol, "{ty}: constant {c} came back as {v} at {i}");
                }
            }
        }
    }
}

#[test]
fn matrix_quantization_is_rowwise_quantization_in_parallel() {
    let mut rng = Rng::new(3);
    for ty in [
        QuantType::Q4K,
        QuantType::Q8_0,
        QuantType::Q6K,
        QuantType::F16,
    ] {
        let (rows, cols) = (37, 512);
        let x = gaussian(rows * cols, 0.5, &mut rng);
        let all = quantize(ty, &x, cols).unwrap();
        let rb = ty.row_bytes(cols).unwrap();
        for r in 0..rows {
            let mut one = vec![0u8; rb];
            quantize_row(ty, &x[r * cols..(r + 1) * cols], &mut one).unwrap();
            assert_eq!(&all[r * rb..(r + 1) * rb], &one[..], "{ty} row {r}");
        }
    }
}

#[test]
fn bad_shapes_and_non_finite_values_are_errors() {
    let x = vec![1.0f32; 300];
    let err = quantize(QuantType::Q4K, &x, 300).unwrap_err().to_string();
    assert!(err.contains("300") && err.contains("256"), "{err}");
    let mut y = vec![0.5f32; 256];
    y[17] = f32::NAN;
    let err = quantize(QuantType::Q8_0, &y, 256).unwrap_err().to_string();
    assert!(err.contains("value 17") && err.contains("NaN"), "{err}");
    let mut out = vec![0u8; 10];
    assert!(quantize_row(QuantType::Q8_0, &x[..32], &mut out).is_err());
}
