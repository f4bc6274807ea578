//! Stacked MoE experts in a GGUF (`blk.N.ffn_*_exps.weight`, `[experts, rows, cols]`) are read
//! one expert at a time and stay in the file's quantized type; each equals its slice of the
//! whole stack.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use candle_core::Device;
use common::{max_abs_diff, noise};
use forja_arch::GgmlType;
use forja_models::linear::LinearWeight;
use forja_models::weight_source::{GgufSource, WeightSource};
use forja_testkit::gguf_builder::{GgufBuilder, Meta};

/// `blocks` blocks of `size` bytes whose leading f16 scales (`scales` of them) are small and
/// finite.
fn blocks(blocks: usize, size: usize, scales: usize, seed: u64) -> Vec<u8> {
    let mut data = noise(blocks * size, seed);
    for b in 0..blocks {
        for s in 0..scales {
            // 0x2000..0x27ff: f16 values between ~0.0078 and ~0.03.
            let at = b * size + 2 * s;
            data[at + 1] = 0x20 | (data[at + 1] & 0x07);
        }
    }
    data
}

#[test]
fn experts_are_slices_of_the_stack_and_stay_quantized() {
    let (experts, rows) = (4usize, 3usize);
    // (elements, bytes) of one block; Q4_K blocks carry two f16 scales (d, dmin).
    let block = |t: GgmlType| {
        let (n, b) = t.block();
        (n as usize, b as usize)
    };
    let (q8_n, q8_b) = block(GgmlType::Q8_0);
    let (q4k_n, q4k_b) = block(GgmlType::Q4K);
    let q8 = blocks(experts * rows * 64 / q8_n, q8_b, 1, 7);
    let q4k = blocks(experts * rows * 256 / q4k_n, q4k_b, 2, 11);
    let bytes = GgufBuilder::new()
        .meta("general.architecture", Meta::Str("mixtral".into()))
        .tensor_data(
            "blk.0.ffn_up_exps.weight",
            &[64, rows as u64, experts as u64],
            GgmlType::Q8_0.id(),
            q8,
        )
        .tensor_data(
            "blk.0.ffn_down_exps.weight",
            &[256, rows as u64, experts as u64],
            GgmlType::Q4K.id(),
            q4k,
        )
        .bytes();
    let file = tempfile::NamedTempFile::with_suffix(".gguf").unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let quantized = GgufSource::open(file.path(), &Device::Cpu, false).unwrap();
    let exact = GgufSource::open(file.path(), &Device::Cpu, true).unwrap();
    for name in ["blk.0.ffn_up_exps.weight", "blk.0.ffn_down_exps.weight"] {
        let stack = exact.tensor(name).unwrap();
        for e in 0..experts {
            let LinearWeight::Quantized(_) = quantized.expert(name, e).unwrap() else {
                panic!("{name} expert {e} was dequantized");
            };
            let LinearWeight::Dense(alone) = exact.expert(name, e).unwrap() else {
                panic!("dense expected");
            };
            let want = stack.get(e).unwrap();
            assert_eq!(alone.dims(), want.dims());
            assert_eq!(max_abs_diff(&alone, &want), 0.0, "{name} expert {e}");
        }
        let e = quantized.expert(name, experts).unwrap_err().to_string();
        assert!(e.contains("no expert 4 of 4"), "{e}");
    }
}
