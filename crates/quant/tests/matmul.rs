//! `QMatrix::matmul` against the reference: each output element equals the dequantized weight
//! row · the dequantized quantized activation row (f64), within the tolerance of
//! `dot_products.rs`; on every instruction set, for single rows (decode) and several (prompts),
//! on shapes that run on the calling thread and shapes split over the pool.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use common::{Rng, offset_rounding, random_activations, random_blocks, reference};
use forja_quant::{Isa, QMatrix, QuantType, QuantizedActivations};
use proptest::prelude::*;

fn check(ty: QuantType, rows: usize, blocks_per_row: usize, n: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let cols = blocks_per_row * ty.block_len();
    let blocks = random_blocks(ty, rows * blocks_per_row, &mut rng);
    let x = random_activations(n * cols, &mut rng);
    check_blocks(ty, rows, cols, &blocks, &x);
}

/// Every instruction set's matmul of `blocks` (GGUF order) with `x` against the reference.
fn check_blocks(ty: QuantType, rows: usize, cols: usize, blocks: &[u8], x: &[f32]) {
    let n = x.len() / cols;
    let row_bytes = blocks.len() / rows;
    let m = QMatrix::new(ty, rows, cols, blocks.to_vec()).unwrap();
    // The matrix gives back the blocks it was given, whatever order it keeps them in.
    assert!(*m.gguf_bytes() == *blocks, "{ty}: GGUF bytes differ");
    assert!(
        *m.row(rows - 1).unwrap() == blocks[(rows - 1) * row_bytes..],
        "{ty}: last row"
    );
    // Any run of rows dequantizes as those rows of the whole matrix (panel edges included).
    let whole = m.dequantize().unwrap();
    for (first, count) in [
        (0, rows),
        (1, rows - 1),
        (rows / 2, rows - rows / 2),
        (rows - 1, 1),
    ] {
        let mut part = vec![f32::NAN; count * cols];
        m.dequantize_rows(first, &mut part).unwrap();
        assert!(
            part == whole[first * cols..(first + count) * cols],
            "{ty}: rows {first}..{}",
            first + count
        );
    }
    assert!(m.dequantize_rows(rows, &mut vec![0.0; cols]).is_err());
    let mut acts = QuantizedActivations::new();
    acts.quantize(ty.activation().unwrap(), x, n, cols).unwrap();
    for isa in Isa::available() {
        let mut out = vec![f32::NAN; n * rows];
        m.matmul_with(isa, x, n, &mut out).unwrap();
        for t in 0..n {
            let a = acts.row(t).unwrap();
            for r in 0..rows {
                let w = &blocks[r * row_bytes..(r + 1) * row_bytes];
                let (want, magnitude) = reference(ty, w, &a);
                let tolerance = 2e-5 * magnitude + offset_rounding(ty, w, &a);
                let got = out[t * rows + r];
                assert!(
                    (f64::from(got) - want).abs() <= tolerance,
                    "{ty} {isa:?} {rows}×{cols}, n {n}: out[{t}, {r}] = {got}, reference {want}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn matmul_matches_the_reference(
        t in 0usize..10,
        rows in 1usize..70,
        blocks_per_row in 1usize..4,
        n in 1usize..6,
        seed in any::<u64>(),
    ) {
        check(common::QUANTIZED[t], rows, blocks_per_row, n, seed);
    }
}

/// Large enough to be split into tiles over the pool, with a partial last tile.
#[test]
fn threaded_matmul_matches_the_reference() {
    for (i, ty) in common::QUANTIZED.into_iter().enumerate() {
        let blocks_per_row = if ty.block_len() == 256 { 3 } else { 24 };
        check(ty, 203, blocks_per_row, 1, 100 + i as u64);
        check(ty, 203, blocks_per_row, 9, 200 + i as u64);
    }
}

/// Extreme quants with the largest activations, where a sum of byte products held in i16 would
/// overflow first if it could (the grouped `Q4_K`/`Q6_K` kernels add up to eight products per
/// i16 lane before scaling; `Q8_0` panels shift -128 to 0 with VNNI), in a panel of eight rows
/// and in the rows after it; and the dequantized matrix equals the blocks' dequantization.
#[test]
fn saturated_matrices_do_not_overflow() {
    for ty in common::QUANTIZED {
        for fill in [0x00u8, 0xFF, 0x80, 0x7F, 0x3F] {
            let (rows, cols) = (13, 2 * ty.block_len());
            let mut w = vec![fill; rows * ty.row_bytes(cols).unwrap()];
            for b in w.chunks_exact_mut(ty.block_bytes()) {
                for &at in common::f16_fields(ty) {
                    b[at..at + 2]
                        .copy_from_slice(&half::f16::from_f32(0.01).to_bits().to_le_bytes());
                }
            }
            for sign in [1.0f32, -1.0] {
                let x: Vec<f32> = (0..3 * cols)
                    .map(|i| if i % 7 == 3 { 0.5 * sign } else { sign })
                    .collect();
                check_blocks(ty, rows, cols, &w, &x);
            }
            let m = QMatrix::new(ty, rows, cols, w.clone()).unwrap();
            assert_eq!(
                m.dequantize().unwrap(),
                forja_quant::dequantize(ty, &w).unwrap()
            );
        }
    }
}

/// A matmul must not depend on what the previous one on the same thread left in its buffers.
#[test]
fn consecutive_matmuls_of_different_types_and_sizes_agree_with_fresh_ones() {
    let mut rng = Rng::new(3);
    let shapes = [
        (QuantType::Q4K, 512, 5),
        (QuantType::Q4_1, 96, 3),
        (QuantType::Q6K, 256, 1),
    ];
    for (ty, cols, n) in shapes {
        let m = QMatrix::new(
            ty,
            17,
            cols,
            random_blocks(ty, 17 * cols / ty.block_len(), &mut rng),
        )
        .unwrap();
        let x = random_activations(n * cols, &mut rng);
        let mut first = vec![0f32; n * 17];
        m.matmul(&x, n, &mut first).unwrap();
        let fresh = std::thread::spawn(move || {
            let mut out = vec![0f32; n * 17];
            m.matmul(&x, n, &mut out).unwrap();
            out
        })
        .join()
        .unwrap();
        assert_eq!(first, fresh, "{ty}");
    }
}

#[test]
fn wrong_sizes_are_errors() {
    let ty = QuantType::Q8_0;
    assert!(QMatrix::new(ty, 2, 32, vec![0; 67]).is_err());
    assert!(QMatrix::new(ty, 2, 33, vec![0; 68]).is_err());
    assert!(QMatrix::new(QuantType::F32, 2, 32, vec![0; 256]).is_err());
    assert!(QMatrix::new(QuantType::F16, 2, 32, vec![0; 127]).is_err());
    let m = QMatrix::new(ty, 2, 32, vec![0; 68]).unwrap();
    let mut out = vec![0f32; 2];
    assert!(m.matmul(&[0.0; 31], 1, &mut out).is_err());
    assert!(m.matmul(&[0.0; 32], 1, &mut out[..1]).is_err());
    assert!(m.matmul(&[0.0; 32], 1, &mut out).is_ok());
}

/// Many threads multiplying at once (the pool runs one job at a time; the others run alone) get
/// what a lone caller gets.
#[test]
fn concurrent_matmuls_agree_with_a_lone_one() {
    let mut rng = Rng::new(11);
    let ty = QuantType::Q4K;
    let (rows, cols) = (300, 512);
    let m = QMatrix::new(
        ty,
        rows,
        cols,
        random_blocks(ty, rows * cols / 256, &mut rng),
    )
    .unwrap();
    let x = random_activations(3 * cols, &mut rng);
    let mut want = vec![0f32; 3 * rows];
    m.matmul(&x, 3, &mut want).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..50 {
                    let mut out = vec![0f32; 3 * rows];
                    m.matmul(&x, 3, &mut out).unwrap();
                    assert_eq!(out, want);
                }
            });
        }
    });
}
