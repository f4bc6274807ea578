//! `forja tune --full` end to end: every weight of a small HF model folder (the tiny Llama with a
//! word-level tokenizer and a chat template written here) trained on chat and alpaca records; the
//! trained model comes out as an HF folder (same tensor names, shapes and dtypes) beside the loss
//! curve, `forja run` loads it, and a quantized GGUF or LoRA flags are refused in one line.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::path::Path;

use candle_core::Device;
use forja_testkit::{fixtures_dir, testdata_file};

mod tune_common;
use tune_common::{DATA, forja, text};

/// The tiny Llama (vocabulary of 256) as a model folder with a word-level tokenizer over the
/// words of `DATA` and a chat template.
fn tiny_model_folder(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let tiny = fixtures_dir().join("tiny/llama");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(tiny.join(f), dir.join(f)).unwrap();
    }
    let mut words = vec!["<unk>", "<s>", "</s>", "user", "assistant", ":", "."];
    for w in DATA
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let w: &'static str = Box::leak(w.to_lowercase().into_boxed_str());
        if !words.contains(&w) {
            words.push(w);
        }
    }
    assert!(words.len() < 256);
    let vocab: serde_json::Map<String, serde_json::Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), i.into()))
        .collect();
    let special = |id: usize, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": true})
    };
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let config = serde_json::json!({
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "chat_template": "{% for m in messages %}<s>{{ m['role'] }} : {{ m['content'] }}</s>\
                          {% endfor %}{% if add_generation_prompt %}<s>assistant :{% endif %}",
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
}

fn tensors(path: &Path) -> Vec<(String, Vec<usize>, candle_core::DType)> {
    let mut t: Vec<_> = candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.dims().to_vec(), t.dtype()))
        .collect();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

/// `forja tune --full` of `model` on `data` into `out`, with `extra` options.
fn tune_full(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "tune",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--full",
    ];
    args.extend_from_slice(extra);
    forja(&args)
}

#[test]
fn full_tuning_writes_a_model_folder_that_run_loads() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    tiny_model_folder(&model);
    let data = dir.path().join("clauses.jsonl");
    std::fs::write(&data, DATA).unwrap();
    let out = dir.path().join("trained");
    let r = tune_full(
        &model,
        &data,
        &out,
        &[
            "--steps",
            "8",
            "--batch",
            "2",
            "--grad-accum",
            "1",
            "--eval-split",
            "0.34",
            "--lr",
            "1e-2",
            "--seed",
            "3",
        ],
    );
    let stderr = text(&r.stderr);
    assert!(r.status.success(), "tune failed: {stderr}");
    assert!(
        stderr.contains("full fine-tuning of 30 weights, 143808 trainable parameters"),
        "{stderr}"
    );
    assert!(stderr.contains("step 8/8"), "{stderr}");
    let loss = |what: &str| -> f64 {
        let line = stderr.lines().find(|l| l.starts_with(what)).unwrap();
        let value = line[what.len()..].split_whitespace().next().unwrap();
        value.trim_end_matches(',').parse().unwrap()
    };
    // The held-out records share the training records' format: their loss falls.
    let (before, after) = (
        loss("eval before training: loss"),
        loss("eval after training: loss"),
    );
    assert!(after < before * 0.8, "eval loss {before} → {after}");
    assert_eq!(
        text(&r.stdout),
        format!("trained model written to {}\n", out.display())
    );
    // The base's files, its tensors under the same names, shapes and dtypes (new values), and
    // the loss curve; no checkpoint or staging folder is left.
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "config.json",
            "loss.csv",
            "loss.png",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    assert_eq!(
        tensors(&out.join("model.safetensors")),
        tensors(&model.join("model.safetensors"))
    );
    let changed = |name: &str| {
        let a = candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu)
            .unwrap()[name]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = candle_core::safetensors::load(model.join("model.safetensors"), &Device::Cpu)
            .unwrap()[name]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        a.iter().zip(&b).any(|(x, y)| x != y)
    };
    for name in [
        "model.embed_tokens.weight",
        "model.layers.2.mlp.down_proj.weight",
        "model.norm.weight",
        "lm_head.weight",
    ] {
        assert!(changed(name), "{name} was not trained");
    }

    let r = forja(&[
        "run",
        out.to_str().unwrap(),
        "--temperature",
        "0",
        "--max-tokens",
        "3",
        "Classify: the tenant may end the lease.",
    ]);
    assert!(r.status.success(), "run failed: {}", text(&r.stderr));
}

#[test]
fn full_tuning_refuses_a_gguf_and_lora_settings() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("clauses.jsonl");
    std::fs::write(&data, DATA).unwrap();
    let out = dir.path().join("out");
    let gguf = testdata_file("SmolLM2-135M-Instruct.Q4_1.gguf");
    let r = tune_full(&gguf, &data, &out, &[]);
    assert!(!r.status.success());
    let stderr = text(&r.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--full") && stderr.contains("HF folder") && stderr.contains("QLoRA"),
        "{stderr}"
    );
    assert!(!out.exists());

    let model = dir.path().join("tiny");
    tiny_model_folder(&model);
    let r = tune_full(&model, &data, &out, &["--rank", "4"]);
    assert!(!r.status.success());
    let stderr = text(&r.stderr);
    assert!(
        stderr.contains("'--full' cannot be used with '--rank"),
        "{stderr}"
    );
}
