//! Reference dequantization equals the `gguf` Python package's (numpy) bit for bit on the
//! random blocks of fixtures/goldens/dequant.* (made by scripts/goldens/dequant.py).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::path::PathBuf;

use forja_quant::{QuantType, dequantize};

#[test]
fn every_block_type_dequantizes_like_the_reference() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/goldens");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("dequant.json")).unwrap()).unwrap();
    let blob = std::fs::read(dir.join("dequant.bin")).unwrap();
    let mut report = Vec::new();
    for ty in QuantType::ALL {
        let Some(e) = index.get(ty.name()) else {
            assert_eq!(ty, QuantType::F32, "{ty} has no golden");
            continue;
        };
        let range =
            |k: &str| e[k][0].as_u64().unwrap() as usize..e[k][1].as_u64().unwrap() as usize;
        let want: Vec<f32> = blob[range("values")]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let got = dequantize(ty, &blob[range("raw")]).unwrap();
        assert_eq!(got.len(), want.len(), "{ty}");
        let differing = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        report.push(format!("{ty}: {differing} of {} values differ", want.len()));
    }
    println!("{}", report.join("\n"));
    assert!(
        report.iter().all(|r| r.contains(": 0 of")),
        "{}",
        report.join("\n")
    );
}

#[test]
fn f32_rows_are_their_bytes() {
    let values = [1.5f32, -0.0, f32::MAX, 3.25e-20];
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(dequantize(QuantType::F32, &bytes).unwrap(), values);
}

#[test]
fn block_sizes_are_ggmls() {
    let sizes = [
        (QuantType::Q4_0, 18),
        (QuantType::Q4_1, 20),
        (QuantType::Q5_0, 22),
        (QuantType::Q5_1, 24),
        (QuantType::Q8_0, 34),
        (QuantType::Q2K, 84),
        (QuantType::Q3K, 110),
        (QuantType::Q4K, 144),
        (QuantType::Q5K, 176),
        (QuantType::Q6K, 210),
        (QuantType::F16, 2),
        (QuantType::BF16, 2),
    ];
    for (ty, bytes) in sizes {
        assert_eq!(ty.block_bytes(), bytes, "{ty}");
        assert_eq!(QuantType::from_gguf_id(ty.gguf_id()), Some(ty));
    }
    assert_eq!(
        QuantType::from_gguf_id(15),
        None,
        "Q8_K is an activation type only"
    );
}
