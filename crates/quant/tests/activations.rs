//! Activation quantization: every value is recovered within half a step (plus the f16 rounding
//! of the scale for `Q8_0`/`Q8_1`), the stored sums are the sums of the stored values, and the
//! extreme value maps to ±127 as llama.cpp's does.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use common::{Rng, random_activations};
use forja_quant::{ActRow, ActivationType, QuantizedActivations};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn quantized_activations_round_trip(
        kind in 0usize..3,
        rows in 1usize..4,
        blocks in 1usize..5,
        seed in any::<u64>(),
    ) {
        let ty = [ActivationType::Q8_0, ActivationType::Q8_1, ActivationType::Q8K][kind];
        let cols = blocks * ty.block_len();
        let x = random_activations(rows * cols, &mut Rng::new(seed));
        let mut q = QuantizedActivations::new();
        q.quantize(ty, &x, rows, cols).unwrap();
        prop_assert_eq!(q.rows(), rows);
        for r in 0..rows {
            let row = q.row(r).unwrap();
            let values = row.dequantize();
            let xs = &x[r * cols..(r + 1) * cols];
            for (b, (xb, vb)) in xs.chunks(ty.block_len()).zip(values.chunks(ty.block_len())).enumerate() {
                let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                // Half a step of amax / 127, and for f16 scales the scale's relative rounding
                // (2⁻¹¹) at the largest quant.
                let bound = amax / 127.0 * (0.5 + 127.0 / 2048.0) * 1.0001;
                for (i, (&x, &v)) in xb.iter().zip(vb).enumerate() {
                    prop_assert!((x - v).abs() <= bound, "{:?} block {} value {}: {} vs {}", ty, b, i, x, v);
                }
            }
            match row {
                ActRow::Q8_0(blocks) => {
                    for b in blocks {
                        prop_assert!(b.qs.iter().all(|&q| q != i8::MIN));
                        prop_assert!(b.qs.iter().any(|&q| q.unsigned_abs() == 127));
                        prop_assert_eq!(b.sum, b.qs.iter().map(|&q| i32::from(q)).sum::<i32>());
                    }
                }
                ActRow::Q8_1(blocks) => {
                    for b in blocks {
                        let sum: i32 = b.qs.iter().map(|&q| i32::from(q)).sum();
                        let exact = b.d * sum as f32;
                        prop_assert!((b.s - exact).abs() <= exact.abs() * 1e-3 + 1e-30, "s {} vs {}", b.s, exact);
                        prop_assert!(b.qs.iter().all(|&q| q != i8::MIN));
                    }
                }
                ActRow::Q8K(blocks) => {
                    for b in blocks {
                        for (g, s) in b.bsums.iter().enumerate() {
                            let sum: i16 = b.qs[16 * g..16 * g + 16].iter().map(|&q| i16::from(q)).sum();
                            prop_assert_eq!(*s, sum);
                        }
                        prop_assert!(b.qs.contains(&-127), "the signed extreme maps to -127");
                        prop_assert!(b.qs.iter().all(|&q| q != i8::MIN));
                    }
                }
            }
        }
    }
}

#[test]
fn zeros_quantize_to_zeros() {
    for ty in [
        ActivationType::Q8_0,
        ActivationType::Q8_1,
        ActivationType::Q8K,
    ] {
        let mut q = QuantizedActivations::new();
        q.quantize(ty, &vec![0.0; 256], 1, 256).unwrap();
        assert!(
            q.row(0).unwrap().dequantize().iter().all(|&v| v == 0.0),
            "{ty:?}"
        );
    }
}

#[test]
fn partial_blocks_are_errors() {
    let mut q = QuantizedActivations::new();
    assert!(q.quantize(ActivationType::Q8_0, &[1.0; 40], 1, 40).is_err());
    assert!(
        q.quantize(ActivationType::Q8K, &[1.0; 128], 1, 128)
            .is_err()
    );
    assert!(q.quantize(ActivationType::Q8_0, &[1.0; 64], 3, 32).is_err());
    assert!(q.row(0).is_none());
}

/// Every instruction set's quantizer gives the same blocks, bit for bit (they run the same
/// operations: one multiply and one rounding per value).
#[test]
fn every_instruction_set_quantizes_alike() {
    for seed in 0..40u64 {
        let mut rng = Rng::new(seed);
        let cols = 256 * (1 + seed as usize % 3);
        let x = random_activations(3 * cols, &mut rng);
        for ty in [
            ActivationType::Q8_0,
            ActivationType::Q8_1,
            ActivationType::Q8K,
        ] {
            let mut want = QuantizedActivations::new();
            want.quantize_with(forja_quant::Isa::Scalar, ty, &x, 3, cols)
                .unwrap();
            for isa in forja_quant::Isa::available() {
                let mut got = QuantizedActivations::new();
                got.quantize_with(isa, ty, &x, 3, cols).unwrap();
                for r in 0..3 {
                    let (a, b) = (want.row(r).unwrap(), got.row(r).unwrap());
                    assert_eq!(
                        format!("{a:?}"),
                        format!("{b:?}"),
                        "{ty:?} {isa:?} seed {seed}"
                    );
                }
            }
        }
    }
}

/// Rounding is to nearest with ties to even, as llama.cpp's x86 quantizers round.
#[test]
fn ties_round_to_even() {
    // amax 127 makes the scale 1: the values are their own quants.
    let mut x = vec![0.0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -2.5;
    x[3] = 3.5;
    x[4] = 0.5;
    let mut q = QuantizedActivations::new();
    q.quantize(ActivationType::Q8_0, &x, 1, 32).unwrap();
    let ActRow::Q8_0(b) = q.row(0).unwrap() else {
        panic!()
    };
    assert_eq!(b[0].d, 1.0);
    assert_eq!(&b[0].qs[..5], &[127, 2, -2, 4, 0]);
}
