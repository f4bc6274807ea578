//! forja's quantizers write the same bytes as ggml's reference quantizers (what `llama-quantize`
//! runs without an importance matrix) on the rows of fixtures/goldens/quantize (Gaussian,
//! heavy-tailed, one outlier a row, all-positive, constant, zero, f16-subnormal scales), made by
//! scripts/goldens/ggml_quantize.py from llama.cpp's libggml.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::path::PathBuf;

use forja_quant::{QuantType, quantize};

#[test]
fn every_type_quantizes_to_ggml_bytes() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/goldens/quantize");
    let rows: Vec<f32> = std::fs::read(dir.join("quantize.rows"))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let mut report = Vec::new();
    for ty in QuantType::ALL {
        if ty.block_len() == 1 {
            continue;
        }
        let golden = std::fs::read(dir.join(format!("quantize.{}", ty.name()))).unwrap();
        let ours = quantize(ty, &rows, 256).unwrap();
        assert_eq!(ours.len(), golden.len(), "{ty}");
        let size = ty.block_bytes();
        let differ: Vec<usize> = ours
            .chunks_exact(size)
            .zip(golden.chunks_exact(size))
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i)
            .collect();
        if !differ.is_empty() {
            report.push(format!(
                "{ty}: {} of {} blocks differ (first {:?})",
                differ.len(),
                ours.len() / size,
                &differ[..differ.len().min(5)]
            ));
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}
