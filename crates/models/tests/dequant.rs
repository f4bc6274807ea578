//! Dequantization of every GGML block type as forja runs it (candle's block decoders, which the
//! GGUF loader calls) equals the reference (`gguf` package, numpy) bit for bit, on random blocks. Goldens: fixtures/goldens/dequant.* made by
//! scripts/goldens/dequant.py. (Q8_K is an activation type with no reference dequantizer.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use candle_core::Device;
use candle_core::quantized::GgmlDType;
use candle_core::quantized::ggml_file::qtensor_from_ggml;

#[test]
fn every_block_type_dequantizes_like_the_reference() {
    let dir = forja_testkit::fixtures_dir().join("goldens");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("dequant.json")).unwrap()).unwrap();
    let blob = std::fs::read(dir.join("dequant.bin")).unwrap();
    use GgmlDType::*;
    let ids = [
        ("Q4_0", Q4_0),
        ("Q4_1", Q4_1),
        ("Q5_0", Q5_0),
        ("Q5_1", Q5_1),
        ("Q8_0", Q8_0),
        ("Q2_K", Q2K),
        ("Q3_K", Q3K),
        ("Q4_K", Q4K),
        ("Q5_K", Q5K),
        ("Q6_K", Q6K),
        ("F16", F16),
        ("BF16", BF16),
    ];
    let mut report = Vec::new();
    for (name, id) in ids {
        let e = &index[name];
        let range =
            |k: &str| e[k][0].as_u64().unwrap() as usize..e[k][1].as_u64().unwrap() as usize;
        let raw = &blob[range("raw")];
        let want: Vec<f32> = blob[range("values")]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let q = qtensor_from_ggml(id, raw, vec![want.len()], &Device::Cpu).unwrap();
        let got: Vec<f32> = q.dequantize(&Device::Cpu).unwrap().to_vec1().unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        let differing = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        report.push(format!(
            "{name}: {differing} of {} values differ (max |Δ| {worst:e})",
            want.len()
        ));
    }
    println!("{}", report.join("\n"));
    assert!(
        report.iter().all(|r| r.contains(": 0 of")),
        "{}",
        report.join("\n")
    );
}
