//! `quantize_folder` end to end on tiny random llama and qwen2 folders (bf16 and f16 weights,
//! rows of 256 so every k-quant is used): for every recipe, the GGUF loads in forja's decoder
//! and its logits stay within a stated distance of the safetensors model's; Q8_0 decodes the
//! same greedy tokens. The tensor types are the planner's recipe, the metadata reads back, the
//! embedded tokenizer encodes like the folder's, and bad input fails cleanly.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use std::path::Path;

use candle_core::Device;
use common::*;
use forja_arch::gguf::GgufHeader;
use forja_arch::tensors::decoder_tensors;
use forja_arch::{GgufRecipe, quant_recipe};
use forja_convert::{quantize_folder, read_config};
use forja_models::{ContiguousKvCache, Decoder, SeqStep};
use forja_testkit::vectors::rel_rms;

const PROMPT: [u32; 12] = [72, 256, 257, 111, 32, 119, 258, 114, 108, 100, 10, 33];

/// Largest relative RMS distance of the quantized model's logits from the safetensors model's
/// (RMS of the difference over RMS of the reference logits, all positions), per recipe. Measured
/// values are printed with `--nocapture` and are about two thirds of these.
/// Relative RMS distance of the last-token logits from the unquantized model's, per recipe: the
/// largest measured on the two tiny models (llama bf16 / qwen2 f16: Q8_0 0.017 / 0.015, Q6_K
/// 0.047 / 0.037, Q5_K_M 0.083 / 0.057, Q4_K_M 0.148 / 0.105, Q4_0 0.184 / 0.130, Q3_K_M
/// 0.256 / 0.162, Q2_K 0.511 / 0.316) with about a third of headroom. It includes the CPU
/// kernels' rounding of activations to 8 bits, which the unquantized model does not do.
fn tolerance(r: GgufRecipe) -> f64 {
    match r {
        GgufRecipe::Q8_0 => 0.025,
        GgufRecipe::Q6K => 0.065,
        GgufRecipe::Q5KM => 0.11,
        GgufRecipe::Q4KM => 0.2,
        GgufRecipe::Q4_0 => 0.25,
        GgufRecipe::Q3KM => 0.35,
        GgufRecipe::Q2K => 0.7,
        _ => unreachable!(),
    }
}

const RECIPES: [GgufRecipe; 7] = [
    GgufRecipe::Q8_0,
    GgufRecipe::Q6K,
    GgufRecipe::Q5KM,
    GgufRecipe::Q4KM,
    GgufRecipe::Q4_0,
    GgufRecipe::Q3KM,
    GgufRecipe::Q2K,
];

fn logits(model: &Decoder, prompt: &[u32]) -> Vec<f32> {
    let t = model.prompt_logits(prompt).unwrap();
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn greedy(model: &Decoder, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = ContiguousKvCache::new(model.num_layers());
    let mut next = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..n {
        let mut steps = [SeqStep {
            tokens: &next,
            cache: &mut cache,
            all_logits: false,
            adapter: None,
        }];
        let l: Vec<f32> = model.forward(&mut steps).unwrap()[0]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let top = (0..l.len()).max_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap() as u32;
        out.push(top);
        next = vec![top];
    }
    out
}

fn check_family(model_type: &str, dtype: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(model_type);
    std::fs::create_dir(&dir).unwrap();
    write_model(&dir, model_type, dtype, 42);
    let reference = forja_models::loader::load(&dir, &Device::Cpu).unwrap();
    let want = logits(&reference, &PROMPT);
    let want_greedy = greedy(&reference, &PROMPT, 8);
    let cfg = read_config(&dir).unwrap();
    for recipe in RECIPES {
        let out = tmp.path().join(format!("{model_type}-{recipe:?}.gguf"));
        let summary = quantize_folder(&dir, recipe, &out, &mut ()).unwrap();
        assert_eq!(summary.bytes, std::fs::metadata(&out).unwrap().len());
        // The types are the planner's recipe, tensor by tensor.
        let header = GgufHeader::read_path(&out).unwrap();
        let specs = decoder_tensors(&cfg);
        let planned = quant_recipe::assign_types(recipe, &cfg, &specs);
        for (spec, ty) in specs.iter().zip(planned) {
            let t = header.tensors.iter().find(|t| t.name == spec.name).unwrap();
            assert_eq!(t.ggml_type, ty, "{recipe:?} {}", spec.name);
        }
        let model = forja_models::loader::load(&out, &Device::Cpu).unwrap();
        let got = logits(&model, &PROMPT);
        let d = rel_rms(&want, &got);
        println!("{model_type} {dtype} {recipe:?}: relative RMS logit distance {d:.4}");
        assert!(d <= tolerance(recipe), "{model_type} {recipe:?}: {d}");
        if recipe == GgufRecipe::Q8_0 {
            assert_eq!(greedy(&model, &PROMPT, 8), want_greedy, "{model_type} Q8_0");
        }
    }
    // Nothing but the outputs was left in the folder (no temporary files).
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn llama_bf16_quantizes_to_every_recipe_with_close_logits() {
    // Also proves the Q/K permutation: forja reads llama GGUFs with interleaved RoPE.
    check_family("llama", "BF16");
}

#[test]
fn qwen2_f16_quantizes_to_every_recipe_with_close_logits() {
    check_family("qwen2", "F16");
}

#[test]
fn metadata_and_tokenizer_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    write_model(&dir, "llama", "F32", 1);
    let out = tmp.path().join("m.gguf");
    quantize_folder(&dir, GgufRecipe::Q4KM, &out, &mut ()).unwrap();
    let h = GgufHeader::read_path(&out).unwrap();
    let u = |k: &str| h.get(k).and_then(|v| v.as_u64()).unwrap();
    let s = |k: &str| h.get(k).and_then(|v| v.as_str()).unwrap().to_string();
    assert_eq!(s("general.architecture"), "llama");
    assert_eq!(u("general.file_type"), 15);
    assert_eq!(u("llama.block_count"), LAYERS as u64);
    assert_eq!(u("llama.embedding_length"), HIDDEN as u64);
    assert_eq!(u("llama.feed_forward_length"), FFN as u64);
    assert_eq!(u("llama.attention.head_count"), HEADS as u64);
    assert_eq!(u("llama.attention.head_count_kv"), KV_HEADS as u64);
    assert_eq!(u("llama.rope.dimension_count"), (HIDDEN / HEADS) as u64);
    assert_eq!(u("llama.context_length"), 512);
    assert_eq!(s("tokenizer.ggml.model"), "gpt2");
    assert_eq!(s("tokenizer.ggml.pre"), "gpt-2");
    assert_eq!(u("tokenizer.ggml.eos_token_id"), 259);
    assert_eq!(u("tokenizer.ggml.padding_token_id"), 259);
    assert!(s("tokenizer.chat_template").contains("<|im_start|>assistant"));
    // The description forja derives from the file matches the folder's.
    let from_gguf = forja_arch::ModelDescription::from_path(&out).unwrap();
    let from_dir = read_config(&dir).unwrap();
    assert_eq!(from_gguf.config.num_layers, from_dir.num_layers);
    assert_eq!(from_gguf.config.vocab_size, from_dir.vocab_size);
    assert_eq!(from_gguf.config.rope_theta, from_dir.rope_theta);
    // The embedded tokenizer (padding rows included) encodes like tokenizer.json.
    let hf = forja_engine::Tokenizer::from_hf_dir(&dir).unwrap();
    let gg = forja_engine::Tokenizer::from_gguf_path(&out).unwrap();
    assert_eq!(gg.vocab_size(), VOCAB);
    for text in [
        "hello world",
        "<|im_start|>user\nhe said: ll!<|im_end|>",
        "ünïcödé 123",
    ] {
        assert_eq!(
            gg.encode(text, false).unwrap(),
            hf.encode(text, false).unwrap(),
            "{text}"
        );
    }
    assert!(gg.chat_template.is_some());
}

/// Real tokenizers (Llama 3.1, Qwen2.5, Qwen3): the GGUF vocabulary written from tokenizer.json
/// encodes every test string as tokenizer.json does.
#[test]
fn real_tokenizers_survive_the_conversion() {
    let texts = [
        "Hello, world! 12345 tokens",
        "  leading spaces\n\nand\ttabs",
        "<|im_start|>user\nWhat's 2+2?<|im_end|>",
        "naïve café — 東京 🙂",
    ];
    for name in ["llama3_1", "qwen2_5", "qwen3"] {
        let src = forja_testkit::testdata_dir()
            .join("hf-tokenizers")
            .join(name);
        assert!(
            src.is_dir(),
            "missing {}: run scripts/fetch-testdata",
            src.display()
        );
        let hf = forja_engine::Tokenizer::from_hf_dir(&src).unwrap();
        let tok: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer.json")).unwrap())
                .unwrap();
        let max_id = tok["added_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_u64().unwrap())
            .chain(
                tok["model"]["vocab"]
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|v| v.as_u64().unwrap()),
            )
            .max()
            .unwrap();
        let meta = forja_convert::vocab::tokenizer_metadata(&src, max_id + 1).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vocab.gguf");
        let t = forja_arch::gguf_writer::TensorOut {
            name: "token_embd.weight".into(),
            dims: vec![32, 1],
            ggml_type: forja_arch::GgmlType::F32,
        };
        let mut w = forja_arch::gguf_writer::GgufWriter::start(
            std::fs::File::create(&path).unwrap(),
            &meta,
            std::slice::from_ref(&t),
        )
        .unwrap();
        w.write_tensor("token_embd.weight", &[0u8; 128]).unwrap();
        w.finish().unwrap();
        let gg = forja_engine::Tokenizer::from_gguf_path(&path).unwrap();
        for text in texts {
            assert_eq!(
                gg.encode(text, false).unwrap(),
                hf.encode(text, false).unwrap(),
                "{name}: {text:?}"
            );
        }
        assert_eq!(gg.chat_template, hf.chat_template, "{name}");
    }
}

fn expect_error(dir: &Path, out: &Path, needle: &str) {
    let err = quantize_folder(dir, GgufRecipe::Q4KM, out, &mut ())
        .unwrap_err()
        .to_string();
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    assert!(!out.exists(), "{} was written", out.display());
    let parent = out.parent().unwrap();
    if parent.is_dir() {
        let left: Vec<_> = std::fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains(".partial"))
            .collect();
        assert!(left.is_empty(), "left {left:?}");
    }
}

#[test]
fn bad_input_fails_with_what_and_where_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    let out = tmp.path().join("out.gguf");
    expect_error(&dir, &out, "no config.json");
    write_model(&dir, "llama", "F32", 3);
    // Unsupported architecture.
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let gemma = cfg.replace("\"llama\"", "\"gemma\"");
    std::fs::write(dir.join("config.json"), &gemma).unwrap();
    expect_error(&dir, &out, "not supported");
    std::fs::write(dir.join("config.json"), "{not json").unwrap();
    expect_error(&dir, &out, "config.json");
    std::fs::write(dir.join("config.json"), &cfg).unwrap();
    // A tensor of the wrong shape, then of an integer dtype.
    let st = dir.join("model.safetensors");
    let good = std::fs::read(&st).unwrap();
    write_safetensors(
        &st,
        &[(
            "lm_head.weight".into(),
            vec![VOCAB, 128],
            "F32",
            vec![0.0; VOCAB * 128],
        )],
    );
    // llama-quantize's order starts with the output head.
    expect_error(&dir, &out, "\"lm_head.weight\" has shape [264, 128]");
    write_safetensors(
        &st,
        &[(
            "lm_head.weight".into(),
            vec![VOCAB, HIDDEN],
            "I32",
            vec![0.0; VOCAB * HIDDEN],
        )],
    );
    expect_error(&dir, &out, "I32");
    std::fs::write(&st, &good).unwrap();
    // A NaN in a weight is named.
    let mut nan = good.clone();
    let end = nan.len();
    nan[end - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&st, &nan).unwrap();
    expect_error(&dir, &out, "model.norm.weight");
    std::fs::write(&st, &good).unwrap();
    // No tokenizer.
    std::fs::rename(dir.join("tokenizer.json"), dir.join("t.json")).unwrap();
    expect_error(&dir, &out, "tokenizer.json");
    std::fs::rename(dir.join("t.json"), dir.join("tokenizer.json")).unwrap();
    // An output folder that does not exist, and an existing output.
    expect_error(&dir, &tmp.path().join("missing/out.gguf"), "missing");
    std::fs::write(&out, b"keep").unwrap();
    let err = quantize_folder(&dir, GgufRecipe::Q8_0, &out, &mut ()).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
}

/// A full disk, on a real 64 KiB tmpfs: the write fails with the reason and the target's
/// name, and neither the output nor its temporary file remains.
#[test]
fn a_full_disk_leaves_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    write_model(&dir, "llama", "F32", 5);
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=65536", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: mounting a tmpfs needs root (CI runs this test as root)");
        return;
    }
    let out = mnt.join("out.gguf");
    let result = quantize_folder(&dir, GgufRecipe::Q8_0, &out, &mut ());
    let left: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("out.gguf") && err.contains("No space left"),
        "{err}"
    );
    assert!(left.is_empty(), "left {left:?}");
}
