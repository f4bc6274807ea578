//! F16 and BF16 checkpoints keep their projection weights in two bytes a value on forja's CPU
//! kernels, and compute what the same (rounded) values widened to f32 compute: a tiny model of
//! each family converted to half precision against the same model with its weights rounded to
//! half precision and stored as f32.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::{max_abs, max_abs_diff};
use forja_models::Decoder;
use forja_models::linear::{LinearWeight, QuantizedWeight};
use forja_quant::QuantType;

/// A copy of the tiny model `name` whose tensors went through `edit`.
fn edited_copy(name: &str, edit: impl Fn(Tensor) -> Tensor) -> tempfile::TempDir {
    let src = forja_testkit::fixtures_dir().join("tiny").join(name);
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            continue;
        }
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let tensors = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(name, t)| (name, edit(t)))
        .collect::<HashMap<_, _>>();
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
    dir
}

fn load(dir: &Path) -> Decoder {
    forja_models::loader::load(dir, &Device::Cpu).unwrap()
}

#[test]
fn half_precision_weights_run_on_the_half_kernels_and_match_f32() {
    let prompt: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % 100).collect();
    for family in ["llama", "qwen2", "gemma3", "mixtral"] {
        for (dtype, ty) in [(DType::F16, QuantType::F16), (DType::BF16, QuantType::BF16)] {
            let half = edited_copy(family, |t| t.to_dtype(dtype).unwrap());
            let rounded = edited_copy(family, |t| {
                t.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap()
            });
            let mut model = load(half.path());
            let mut kept = 0;
            for (name, l) in model.linears_mut() {
                match &l.weight {
                    LinearWeight::Quantized(QuantizedWeight::Cpu(m)) => {
                        assert_eq!(m.ty(), ty, "{family} {name}");
                        kept += 1;
                    }
                    other => panic!("{family} {name}: {other:?} instead of {ty} on the CPU"),
                }
            }
            assert!(kept >= 7, "{family}: {kept} projections");
            let got = model.prompt_logits(&prompt).unwrap();
            let want = load(rounded.path()).prompt_logits(&prompt).unwrap();
            let scale = max_abs(&want);
            let diff = max_abs_diff(&got, &want);
            println!("{family} {ty}: max |Δ| {diff:.2e} of {scale:.2}");
            // The same values multiplied in f32, summed in another order.
            assert!(
                diff <= 2e-5 * scale,
                "{family} {ty}: max |Δ| {diff} of {scale}"
            );
        }
    }
}
