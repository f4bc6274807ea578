//! A llama-architecture GGUF stores the q and k projections' rows in llama.cpp's order (each
//! head's two rotary halves interleaved), HF checkpoints and PEFT adapters in HF's. Adapters
//! cross that boundary in both directions: a PEFT adapter applied to the GGUF gives PEFT's
//! logits, an adapter trained or loaded on the GGUF is saved in HF's order, and an adapter
//! merged into the GGUF (each adapted projection quantized again to its type) gives the logits
//! of the adapter applied at run time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use forja_arch::Family;
use forja_models::Decoder;
use forja_models::weight_source::hf_name;
use forja_quant::QuantType;
use forja_testkit::fixtures_dir;
use forja_testkit::gguf_builder::{GgufBuilder, Meta};
use forja_testkit::vectors::{max_abs_diff, rel_rms};
use forja_train::merge_gguf::merge_into_gguf;
use forja_train::{Init, attach, peft};

fn hf_dir() -> PathBuf {
    fixtures_dir().join("tiny/llama")
}

fn golden_adapter() -> PathBuf {
    fixtures_dir().join("goldens/lora/trained")
}

/// llama.cpp's permutation of a q/k weight's rows: row `h·D + 2m + s` of the GGUF is row
/// `h·D + s·D/2 + m` of the HF weight (`D` the head size).
fn permute_rows(w: &Tensor, heads: usize) -> Tensor {
    let (rows, cols) = w.dims2().unwrap();
    let d = rows / heads;
    w.reshape((heads, 2, d / 2, cols))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((rows, cols))
        .unwrap()
}

/// The tiny HF llama written as a GGUF the way llama.cpp's converter writes it: matrices as
/// `ty` (F32 or a block type), vectors as F32.
fn write_gguf(path: &Path, ty: QuantType) {
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf_dir().join("config.json")).unwrap())
            .unwrap();
    let u = |k: &str| cfg[k].as_u64().unwrap() as u32;
    let weights =
        candle_core::safetensors::load(hf_dir().join("model.safetensors"), &Device::Cpu).unwrap();
    let (heads, kv_heads) = (u("num_attention_heads"), u("num_key_value_heads"));
    let mut b = GgufBuilder::new()
        .meta("general.architecture", Meta::Str("llama".into()))
        .meta("general.file_type", Meta::U32(0))
        .meta(
            "llama.context_length",
            Meta::U32(u("max_position_embeddings")),
        )
        .meta("llama.embedding_length", Meta::U32(u("hidden_size")))
        .meta("llama.block_count", Meta::U32(u("num_hidden_layers")))
        .meta(
            "llama.feed_forward_length",
            Meta::U32(u("intermediate_size")),
        )
        .meta("llama.attention.head_count", Meta::U32(heads))
        .meta("llama.attention.head_count_kv", Meta::U32(kv_heads))
        .meta("llama.rope.freq_base", Meta::F32(10000.0))
        .meta("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-6))
        .meta(
            "tokenizer.ggml.tokens",
            Meta::StrArray((0..u("vocab_size")).map(|i| format!("t{i}")).collect()),
        );
    let mut names = vec!["token_embd.weight".to_string()];
    for i in 0..u("num_hidden_layers") {
        for t in [
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ] {
            names.push(format!("blk.{i}.{t}.weight"));
        }
    }
    names.extend(["output_norm.weight".into(), "output.weight".into()]);
    for name in names {
        let w = &weights[&hf_name(Family::Llama, &name).unwrap()];
        let w = if name.contains(".attn_q.") {
            permute_rows(w, heads as usize)
        } else if name.contains(".attn_k.") {
            permute_rows(w, kv_heads as usize)
        } else {
            w.clone()
        };
        let mut dims: Vec<u64> = w.dims().iter().map(|&d| d as u64).collect();
        dims.reverse();
        let values: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        let ty = if dims.len() == 2 { ty } else { QuantType::F32 };
        let bytes = forja_quant::quantize(ty, &values, dims[0] as usize).unwrap();
        b = b.tensor_data(&name, &dims, ty.gguf_id(), bytes);
    }
    std::fs::write(path, b.bytes()).unwrap();
}

fn logits(d: &Decoder) -> Vec<f32> {
    let probe: Vec<u32> = (0..14).map(|i| (i * 37 + 5) % 250).collect();
    d.prompt_logits(&probe)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn load(path: &Path) -> Decoder {
    forja_models::loader::load(path, &Device::Cpu).unwrap()
}

#[test]
fn adapters_keep_hf_row_order_on_a_llama_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("tiny-llama.f32.gguf");
    write_gguf(&gguf, QuantType::F32);
    let (mut hf, mut gg) = (load(&hf_dir()), load(&gguf));
    // The same model either way (the GGUF reader's rotary layout undoes the permutation).
    let d = max_abs_diff(&logits(&hf), &logits(&gg));
    assert!(d < 1e-4, "base logits differ by {d}");

    // A PEFT adapter (trained by PEFT on the HF model, q_proj and k_proj included) gives the
    // same logits on both.
    let adapter = peft::load(&golden_adapter()).unwrap();
    peft::apply(&mut hf, &adapter).unwrap();
    peft::apply(&mut gg, &adapter).unwrap();
    let want = logits(&hf);
    let d = max_abs_diff(&want, &logits(&gg));
    assert!(d < 1e-4, "adapted logits differ by {d}");

    // Loaded into the GGUF's trainable adapters and saved, it is the same adapter in HF's
    // order, and gives the same logits on the HF model.
    let mut gg = load(&gguf);
    attach(&mut gg, &adapter.spec, Init::From(&adapter), 0).unwrap();
    let d = max_abs_diff(&want, &logits(&gg));
    assert!(d < 1e-4, "trainable adapter's logits differ by {d}");
    let saved = tmp.path().join("saved");
    peft::save(&mut gg, &adapter.spec, "tiny-llama.f32.gguf", &saved).unwrap();
    let back = peft::load(&saved).unwrap();
    for (path, (a, b)) in &adapter.modules {
        let (a2, b2) = back.module(path).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(a), flat(a2), "{path} lora_A");
        assert_eq!(flat(b), flat(b2), "{path} lora_B");
    }
}

#[test]
fn an_adapter_merged_into_a_gguf_gives_the_run_time_adapters_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let adapter = peft::load(&golden_adapter()).unwrap();
    // F32: the merge is exact but for rounding. Q8_0: the adapted matrices are rounded to Q8_0
    // once more (measured 3.1 % of the logits' RMS; one Q8_0 rounding of a tiny model's weights
    // costs 1.5–1.7 % in crates/convert's tests, and the update widens each block's range).
    for (ty, tolerance) in [(QuantType::F32, 1e-5), (QuantType::Q8_0, 0.04)] {
        let base = tmp.path().join(format!("tiny-{ty:?}.gguf"));
        write_gguf(&base, ty);
        let mut run_time = load(&base);
        let plain = logits(&run_time);
        peft::apply(&mut run_time, &adapter).unwrap();
        let want = logits(&run_time);
        let merged = tmp.path().join(format!("tiny-{ty:?}-merged.gguf"));
        let report = merge_into_gguf(&base, &adapter, &merged).unwrap();
        assert_eq!(report.merged, adapter.modules.len());
        let got = logits(&load(&merged));
        let d = rel_rms(&want, &got);
        println!("{ty:?}: merged logits' RMS distance {d:.5} of their RMS");
        assert!(
            d < tolerance,
            "{ty:?}: merged logits differ by {d} of their RMS"
        );
        // The adapter moved the logits much further than the merge's rounding did.
        assert!(rel_rms(&want, &plain) > 10.0 * d, "{ty:?}");
        // Every tensor keeps its type; the file is complete and nothing else was left.
        let (h0, h1) = (
            forja_arch::gguf::GgufHeader::read_path(&base).unwrap(),
            forja_arch::gguf::GgufHeader::read_path(&merged).unwrap(),
        );
        let types = |h: &forja_arch::gguf::GgufHeader| {
            h.tensors
                .iter()
                .map(|t| (t.name.clone(), t.ggml_type))
                .collect::<Vec<_>>()
        };
        assert_eq!(types(&h0), types(&h1));
        assert_eq!(h0.metadata, h1.metadata);
        // A second merge onto an existing file is refused and leaves it as it was.
        let err = merge_into_gguf(&base, &adapter, &merged)
            .unwrap_err()
            .to_string();
        assert!(err.contains("already exists"), "{err}");
    }
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}
