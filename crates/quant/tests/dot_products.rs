//! Every dot product, portable and SIMD, against the reference (dequantize both operands, dot
//! in f64) on random blocks of several lengths; and SIMD against portable.
//!
//! Tolerances. The kernels compute each block's integer sum exactly; only the f32 products of
//! scales and the f32 accumulation over blocks round. Against the reference that is a relative
//! error of a few f32 ulps of the magnitude (Σ over blocks of max|w| · Σ|a|): allowed 2e-5 of
//! it, plus for `Q4_1`/`Q5_1` the f16 rounding of the activation sums (see
//! `common::offset_rounding`). SIMD against portable: the same integers, summed in another
//! order with fused multiply-adds, so they differ by at most (blocks + 2) f32 epsilons of the
//! magnitude.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use common::{QUANTIZED, Rng, offset_rounding, random_activations, random_blocks, reference};
use forja_quant::{
    ActRow, ActivationType, BlockQ8_0, BlockQ8_1, BlockQ8K, Isa, QuantType, QuantizedActivations,
    vec_dot,
};
use proptest::prelude::*;

/// Quantizes `x` for `ty` and runs `check` on the row.
fn with_row(ty: QuantType, x: &[f32], check: impl FnOnce(ActRow<'_>)) {
    let act = ty.activation().unwrap();
    let mut q = QuantizedActivations::new();
    q.quantize(act, x, 1, x.len()).unwrap();
    check(q.row(0).unwrap());
}

fn check_type(ty: QuantType, blocks: usize, seed: u64) -> Result<(), TestCaseError> {
    let mut rng = Rng::new(seed);
    let w = random_blocks(ty, blocks, &mut rng);
    let x = random_activations(blocks * ty.block_len(), &mut rng);
    let mut result = Ok(());
    with_row(ty, &x, |row| {
        let (want, magnitude) = reference(ty, &w, &row);
        let tolerance = 2e-5 * magnitude + offset_rounding(ty, &w, &row);
        let scalar = vec_dot(Isa::Scalar, ty, &w, row).unwrap();
        result = (|| {
            prop_assert!(
                (f64::from(scalar) - want).abs() <= tolerance,
                "{ty} scalar, {blocks} blocks: {scalar} vs reference {want} (±{tolerance})"
            );
            for isa in Isa::available() {
                let got = vec_dot(isa, ty, &w, row).unwrap();
                prop_assert!(
                    (f64::from(got) - want).abs() <= tolerance,
                    "{ty} {isa:?}, {blocks} blocks: {got} vs reference {want} (±{tolerance})"
                );
                let agree = (blocks as f64 + 2.0) * f64::from(f32::EPSILON) * magnitude;
                prop_assert!(
                    (f64::from(got) - f64::from(scalar)).abs() <= agree,
                    "{ty} {isa:?}, {blocks} blocks: {got} vs portable {scalar} (±{agree})"
                );
            }
            Ok(())
        })();
    });
    result
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn legacy_formats_match_the_reference(
        t in 0usize..5,
        blocks in prop::sample::select(vec![1usize, 2, 3, 7, 18, 40]),
        seed in any::<u64>(),
    ) {
        let ty = [QuantType::Q4_1, QuantType::Q5_0, QuantType::Q8_0, QuantType::Q4_0,
            QuantType::Q5_1][t];
        check_type(ty, blocks, seed)?;
    }

    #[test]
    fn k_quants_match_the_reference(
        t in 0usize..5,
        blocks in prop::sample::select(vec![1usize, 2, 3, 5]),
        seed in any::<u64>(),
    ) {
        let ty = [QuantType::Q4K, QuantType::Q6K, QuantType::Q5K, QuantType::Q3K,
            QuantType::Q2K][t];
        check_type(ty, blocks, seed)?;
    }
}

/// Extreme values in every position: all-maximal quants with the largest activation block,
/// where an i16 pair sum would overflow first if it could.
#[test]
fn saturated_blocks_do_not_overflow() {
    for ty in QUANTIZED {
        let size = ty.block_bytes();
        for fill in [0x00u8, 0xFF, 0x80, 0x7F] {
            let mut w = vec![fill; 2 * size];
            for b in w.chunks_exact_mut(size) {
                for &at in common::f16_fields(ty) {
                    b[at..at + 2]
                        .copy_from_slice(&half::f16::from_f32(0.01).to_bits().to_le_bytes());
                }
            }
            for sign in [1.0f32, -1.0] {
                let x = vec![sign; 2 * ty.block_len()];
                with_row(ty, &x, |row| {
                    let (want, magnitude) = reference(ty, &w, &row);
                    let tolerance = 2e-5 * magnitude + offset_rounding(ty, &w, &row) + 1e-12;
                    for isa in Isa::available() {
                        let got = vec_dot(isa, ty, &w, row).unwrap();
                        assert!(
                            (f64::from(got) - want).abs() <= tolerance,
                            "{ty} {isa:?} fill {fill:#x} sign {sign}: {got} vs {want}"
                        );
                    }
                });
            }
        }
    }
}

#[test]
fn zero_activations_give_zero() {
    let mut rng = Rng::new(7);
    for ty in QUANTIZED {
        let w = random_blocks(ty, 3, &mut rng);
        with_row(ty, &vec![0.0; 3 * ty.block_len()], |row| {
            for isa in Isa::available() {
                assert_eq!(vec_dot(isa, ty, &w, row).unwrap(), 0.0, "{ty} {isa:?}");
            }
        });
    }
}

#[test]
fn mismatched_operands_are_errors() {
    let w = vec![0u8; QuantType::Q4_1.block_bytes()];
    let q8_0 = [BlockQ8_0::default()];
    assert!(vec_dot(Isa::Scalar, QuantType::Q4_1, &w, ActRow::Q8_0(&q8_0)).is_err());
    let q8_1 = [BlockQ8_1::default(); 2];
    assert!(vec_dot(Isa::Scalar, QuantType::Q4_1, &w, ActRow::Q8_1(&q8_1)).is_err());
    let q8k = [BlockQ8K::default()];
    assert!(vec_dot(Isa::Scalar, QuantType::Q4K, &w, ActRow::Q8K(&q8k)).is_err());
    assert_eq!(QuantType::Q4K.activation(), Some(ActivationType::Q8K));
}

/// Which kernels the other tests exercised here: a test run on a CPU without AVX2 (or, on
/// aarch64, without the dot-product extension) checks fewer kernel sets, and says so.
#[test]
fn reports_the_instruction_sets_tested() {
    let isas = Isa::available();
    println!("instruction sets tested: {isas:?}");
    assert!(isas.contains(&Isa::Scalar));
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        assert!(isas.contains(&Isa::Avx2));
        assert_eq!(
            isas.contains(&Isa::AvxVnni),
            std::is_x86_feature_detected!("avxvnni")
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        assert!(isas.contains(&Isa::Neon));
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            assert!(isas.contains(&Isa::NeonDot));
        }
    }
}
