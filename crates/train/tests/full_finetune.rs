#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]
//! Full fine-tuning against transformers on the tiny random models (goldens from
//! scripts/goldens/full_finetune.py): every weight trained from the same start on the same data
//! with the same hyper-parameters gives transformers' per-step losses and trained values — on
//! a separate head (Llama), q/k/v biases and a tied head (Qwen2), and Gemma 3's `(1 + w)` norms,
//! QK-norm, post-norms and scaled embeddings; with and without recomputing layers. The trained
//! model written as an HF folder loads back with the trained logits.

use candle_core::Device;
use forja_testkit::fixtures_dir;
use forja_testkit::vectors::max_abs_diff;
use forja_train::checkpoint::{self, Trained};
use forja_train::{Trainer, train};
use serde_json::Value;

mod common;
use common::{config_from, examples_from};

fn golden(family: &str) -> Value {
    let path = fixtures_dir().join(format!("goldens/full_finetune/{family}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn full_fine_tuning_gives_the_losses_and_weights_of_transformers() {
    for family in ["llama", "qwen2", "gemma3"] {
        let g = golden(family);
        let want = floats(&g["losses"]);
        for checkpointing in [false, true] {
            let dir = fixtures_dir().join("tiny").join(family);
            let mut d = forja_models::loader::load(&dir, &Device::Cpu).unwrap();
            let weights = d.make_trainable().unwrap();
            let vars = weights.iter().map(|w| w.var.clone()).collect();
            let cfg = config_from(&g, checkpointing);
            let reports = train(&mut d, vars, &examples_from(&g), &[], &cfg, |_| Ok(())).unwrap();
            let got: Vec<f64> = reports.iter().map(|r| r.loss).collect();
            assert_eq!(got.len(), want.len());
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-3,
                    "{family} checkpointing={checkpointing} step {}: forja {a:.6}, \
                     transformers {b:.6}\nforja {got:?}\ntransformers {want:?}",
                    i + 1
                );
            }
            // Training moved the model: the loss more than halves.
            assert!(got[got.len() - 1] < got[0] * 0.6, "{family}: {got:?}");
            for (name, values) in g["probes"].as_object().unwrap() {
                let w = weights.iter().find(|w| &w.name == name).unwrap();
                let t = w.var.as_tensor();
                let row = if t.rank() == 1 {
                    t.to_vec1::<f32>().unwrap()
                } else {
                    t.get(1).unwrap().to_vec1::<f32>().unwrap()
                };
                let worst = floats(values)
                    .iter()
                    .zip(&row)
                    .map(|(a, &b)| (a - f64::from(b)).abs())
                    .fold(0.0, f64::max);
                eprintln!("{family} checkpointing={checkpointing} {name}: worst {worst:.2e}");
                assert!(worst < 1e-4, "{family} {name}: differs by {worst}");
            }
            if checkpointing {
                continue;
            }
            // Written as an HF folder, the trained model loads back with the trained logits.
            let tmp = tempfile::tempdir().unwrap();
            let out = tmp.path().join("trained");
            forja_train::merge::save_trained_folder(&dir, &weights, &out).unwrap();
            assert!(out.join("config.json").is_file());
            let back = forja_models::loader::load(&out, &Device::Cpu).unwrap();
            let probe = [1u32, 17, 42, 250, 7, 99, 12, 2, 64];
            let logits = |d: &forja_models::Decoder| -> Vec<f32> {
                let t = d.prompt_logits(&probe).unwrap();
                t.flatten_all().unwrap().to_vec1().unwrap()
            };
            let worst = max_abs_diff(&logits(&d), &logits(&back));
            assert!(worst < 1e-4, "{family}: reloaded logits differ by {worst}");
            // And a folder is never written over.
            let again = forja_train::merge::save_trained_folder(&dir, &weights, &out);
            assert!(again.unwrap_err().to_string().contains("already exists"));
        }
    }
}

#[test]
fn a_full_fine_tuning_run_resumes_exactly() {
    let g = golden("qwen2");
    let data = examples_from(&g);
    let cfg = config_from(&g, false);
    let dir = fixtures_dir().join("tiny/qwen2");
    let run = |stop_at: Option<usize>, ck: &std::path::Path| -> Vec<f64> {
        let mut d = forja_models::loader::load(&dir, &Device::Cpu).unwrap();
        let weights = d.make_trainable().unwrap();
        let vars = || weights.iter().map(|w| w.var.clone()).collect();
        let settings = serde_json::json!({"full": true});
        let mut t = Trainer::new(vars(), data.len(), &cfg).unwrap();
        if stop_at.is_none() && ck.join("state.json").is_file() {
            let saved = checkpoint::load(ck).unwrap().unwrap();
            t.resume(&saved, &mut d, Trained::Weights(&weights), &settings)
                .unwrap();
        }
        while !t.finished() {
            t.step(&mut d, &data, &[]).unwrap();
            if Some(t.steps_done()) == stop_at {
                checkpoint::save(ck, &t, &mut d, Trained::Weights(&weights), &settings).unwrap();
                break;
            }
        }
        t.reports.iter().map(|r| r.loss).collect()
    };
    let tmp = tempfile::tempdir().unwrap();
    let whole = run(None, &tmp.path().join("none"));
    let ck = tmp.path().join("ck");
    run(Some(4), &ck);
    let resumed = run(None, &ck);
    assert_eq!(
        resumed, whole,
        "a resumed run must repeat the whole one exactly"
    );
}

#[test]
fn a_decoder_with_an_adapter_is_refused_and_left_as_it_was() {
    let dir = fixtures_dir().join("tiny/llama");
    let mut d = forja_models::loader::load(&dir, &Device::Cpu).unwrap();
    let spec = forja_train::LoraSpec {
        rank: 2,
        alpha: 4.0,
        dropout: 0.0,
        targets: vec!["v_proj".into()],
        use_rslora: false,
    };
    forja_train::attach(&mut d, &spec, forja_train::Init::Random, 1).unwrap();
    let before = d.prompt_logits(&[1, 17, 42]).unwrap();
    let e = d.make_trainable().unwrap_err().to_string();
    assert!(e.contains("LoRA adapter") && e.contains("v_proj"), "{e}");
    let after = d.prompt_logits(&[1, 17, 42]).unwrap();
    let values = |t: candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(max_abs_diff(&values(before), &values(after)), 0.0);
    // Without the adapter, the same decoder trains in full.
    d.clear_lora();
    assert_eq!(d.make_trainable().unwrap().len(), 30);
}
