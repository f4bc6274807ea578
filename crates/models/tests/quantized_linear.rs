//! A quantized GGUF projection on CPU runs on forja-quant's kernels and computes what the same
//! weights dequantized to f32 compute, up to the 8-bit rounding of the activations; strided and
//! batched (`[batch, tokens, in]`) inputs give the same rows.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use candle_core::{Device, Tensor};
use common::{max_abs, max_abs_diff, noise};
use forja_arch::GgmlType;
use forja_models::linear::{Linear, LinearWeight, QuantizedWeight};
use forja_models::weight_source::{GgufSource, WeightSource};
use forja_testkit::gguf_builder::{GgufBuilder, Meta};

/// Random blocks whose f16 scales (at the given byte offsets) are small and finite.
fn blocks(t: GgmlType, count: usize, scales: &[usize], seed: u64) -> Vec<u8> {
    let size = t.block().1 as usize;
    let mut data = noise(count * size, seed);
    for b in data.chunks_exact_mut(size) {
        for &at in scales {
            // 0x2000..0x27ff: f16 values between ~0.0078 and ~0.03.
            b[at + 1] = 0x20 | (b[at + 1] & 0x07);
        }
    }
    data
}

#[test]
fn quantized_linears_match_their_dequantized_weights() {
    let (rows, cols) = (24usize, 512usize);
    // (name, type, byte offsets of the f16 scales in a block)
    let kinds: [(&str, GgmlType, &[usize]); 4] = [
        ("q4_1.weight", GgmlType::Q4_1, &[0, 2]),
        ("q5_0.weight", GgmlType::Q5_0, &[0]),
        ("q4_k.weight", GgmlType::Q4K, &[0, 2]),
        ("q6_k.weight", GgmlType::Q6K, &[208]),
    ];
    let mut builder = GgufBuilder::new().meta("general.architecture", Meta::Str("llama".into()));
    for (i, (name, t, scales)) in kinds.iter().enumerate() {
        let per_block = t.block().0 as usize;
        let data = blocks(*t, rows * cols / per_block, scales, 3 + i as u64);
        builder = builder.tensor_data(name, &[cols as u64, rows as u64], t.id(), data);
    }
    let file = tempfile::NamedTempFile::with_suffix(".gguf").unwrap();
    std::fs::write(file.path(), builder.bytes()).unwrap();
    let quantized = GgufSource::open(file.path(), &Device::Cpu, false).unwrap();
    let exact = GgufSource::open(file.path(), &Device::Cpu, true).unwrap();

    let x: Vec<f32> = noise(2 * 3 * cols, 99)
        .iter()
        .map(|&b| f32::from(b) / 128.0 - 1.0)
        .collect();
    let x = Tensor::from_vec(x, (6, cols), &Device::Cpu).unwrap();
    // The same values through a transposed (non-contiguous) view, and as `[2, 3, cols]`.
    let x_t = x.t().unwrap().contiguous().unwrap().t().unwrap();
    let x_3d = x.reshape((2, 3, cols)).unwrap();
    for (name, ..) in kinds {
        let q = quantized.linear(name).unwrap();
        assert!(
            matches!(q, LinearWeight::Quantized(QuantizedWeight::Cpu(_))),
            "{name} runs on forja-quant"
        );
        let q = Linear::new(q, None);
        let d = Linear::new(exact.linear(name).unwrap(), None);
        let want = d.forward(&x).unwrap();
        let scale = max_abs(&want);
        let got = q.forward(&x).unwrap();
        assert_eq!(got.dims(), &[6, rows]);
        let diff = max_abs_diff(&got, &want);
        // 8-bit activations: a fraction of a percent of the largest output.
        assert!(diff <= 0.02 * scale, "{name}: max |Δ| {diff} of {scale}");
        assert_eq!(max_abs_diff(&q.forward(&x_t).unwrap(), &got), 0.0, "{name}");
        let got_3d = q.forward(&x_3d).unwrap();
        assert_eq!(got_3d.dims(), &[2, 3, rows]);
        assert_eq!(
            max_abs_diff(&got_3d.reshape((6, rows)).unwrap(), &got),
            0.0,
            "{name}"
        );
    }
}
