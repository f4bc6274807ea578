//! `QMatrix::matmul` of F16 and BF16 weights with f32 activations against an f64 reference, on
//! every instruction set: any width, numbers of activation rows around the kernels' register
//! blocks (and their passes of 8, 4, 2 and 1 rows), numbers of weight rows around the 32-row
//! panels (the last one padded), and a matrix split over the pool.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use common::{Rng, random_activations};
use forja_quant::{Isa, QMatrix, QuantType, dequantize_row};
use proptest::prelude::*;

/// `rows × cols` random weights in `ty`, as stored (two bytes a value).
fn random_half(ty: QuantType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    (0..rows * cols)
        .flat_map(|_| {
            // Magnitudes over several binades, both signs.
            let v = rng.signed() * 4f32.powi((rng.unit() * 4.0) as i32 - 2);
            match ty {
                QuantType::F16 => half::f16::from_f32(v).to_le_bytes(),
                _ => half::bf16::from_f32(v).to_le_bytes(),
            }
        })
        .collect()
}

fn check(ty: QuantType, rows: usize, cols: usize, n: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let data = random_half(ty, rows, cols, &mut rng);
    let x = random_activations(n * cols, &mut rng);
    let mut w = vec![0f32; rows * cols];
    dequantize_row(ty, &data, &mut w).unwrap();
    let m = QMatrix::new(ty, rows, cols, data.clone()).unwrap();
    assert!(*m.gguf_bytes() == *data, "{ty}: bytes differ");
    assert!(*m.row(rows - 1).unwrap() == data[(rows - 1) * cols * 2..]);
    for isa in Isa::available() {
        let mut out = vec![f32::NAN; n * rows];
        m.matmul_with(isa, &x, n, &mut out).unwrap();
        for t in 0..n {
            for r in 0..rows {
                let (want, magnitude) = (0..cols).fold((0f64, 0f64), |(s, m), k| {
                    let p = f64::from(w[r * cols + k]) * f64::from(x[t * cols + k]);
                    (s + p, m + p.abs())
                });
                // f32 products summed in f32: the error grows with the number of terms in each
                // partial sum, at most cols of them.
                let tolerance = 2.0 * f64::from(f32::EPSILON) * cols as f64 * magnitude;
                let got = f64::from(out[t * rows + r]);
                assert!(
                    (got - want).abs() <= tolerance.max(1e-30),
                    "{ty} {isa:?} {rows}×{cols}, n {n}: out[{t}, {r}] = {got}, reference {want}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn half_matmul_matches_the_reference(
        bf in any::<bool>(),
        rows in 1usize..70,
        cols in 1usize..100,
        n in 1usize..20,
        seed in any::<u64>(),
    ) {
        check(if bf { QuantType::BF16 } else { QuantType::F16 }, rows, cols, n, seed);
    }
}

/// Split into tiles over the pool, with a partial last tile and a width past whole vectors.
#[test]
fn threaded_half_matmul_matches_the_reference() {
    for ty in [QuantType::F16, QuantType::BF16] {
        check(ty, 203, 1000, 1, 1);
        check(ty, 203, 1000, 9, 2);
    }
}

/// The sum is exact where every product and partial sum is representable: the tolerance above
/// is not what lets a wrong kernel pass.
#[test]
fn small_integer_products_are_exact() {
    let (rows, cols, n) = (13, 77, 6);
    for ty in [QuantType::F16, QuantType::BF16] {
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7) % 9) as f32 - 4.0)
            .collect();
        let x: Vec<f32> = (0..n * cols).map(|i| ((i * 5) % 7) as f32 - 3.0).collect();
        let data: Vec<u8> = w
            .iter()
            .flat_map(|&v| match ty {
                QuantType::F16 => half::f16::from_f32(v).to_le_bytes(),
                _ => half::bf16::from_f32(v).to_le_bytes(),
            })
            .collect();
        let m = QMatrix::new(ty, rows, cols, data).unwrap();
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; n * rows];
            m.matmul_with(isa, &x, n, &mut out).unwrap();
            for t in 0..n {
                for r in 0..rows {
                    let want: f32 = (0..cols).map(|k| w[r * cols + k] * x[t * cols + k]).sum();
                    assert_eq!(out[t * rows + r], want, "{ty} {isa:?} out[{t}, {r}]");
                }
            }
        }
    }
}

#[test]
fn f32_weights_are_refused() {
    let err = QMatrix::new(QuantType::F32, 2, 4, vec![0; 32]).unwrap_err();
    assert!(err.to_string().contains("F32"), "{err}");
}
