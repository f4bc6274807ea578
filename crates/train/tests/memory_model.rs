//! The planner's model of the CPU trainer (`forja_arch::training::cpu_train_bytes`) against the
//! heap the trainer really allocates: this test binary counts every allocation, runs training
//! steps on the tiny models and a real GGUF, and compares the peak bytes a step adds to what
//! the model predicts for that step (optimizer states, gradients, the graph's nodes, the head's
//! logits and the backward in flight). The process's own memory is measured by `bench/tune/peft-compare.sh`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::path::{Path, PathBuf};

use candle_core::Device;
use forja_arch::training::{LoraTarget, Optimizer, TrainMode, TrainShape, cpu_train_bytes};
use forja_arch::{Container, ModelDescription};
use forja_testkit::heap::{self, Counting};
use forja_testkit::{fixtures_dir, testdata_file};
use forja_train::{Example, Init, LoraSpec, TrainConfig, attach, train};

#[global_allocator]
static HEAP: Counting = Counting;

/// What one run trains.
struct Run<'a> {
    path: &'a Path,
    seq: usize,
    rank: usize,
    checkpointing: bool,
    full: bool,
}

fn tiny(family: &str) -> PathBuf {
    fixtures_dir().join("tiny").join(family)
}

/// Peak heap bytes one training run of two steps adds, and what the model predicts: LoRA
/// on every projection, or with `full` every weight trained.
fn measure(run: &Run) -> (f64, f64) {
    let (seq, checkpointing, full) = (run.seq, run.checkpointing, run.full);
    let desc = ModelDescription::from_path(run.path).unwrap();
    let mut d = forja_models::loader::load(run.path, &Device::Cpu).unwrap();
    let spec = LoraSpec {
        rank: run.rank,
        alpha: 16.0,
        dropout: 0.1,
        targets: forja_models::lora::PEFT_TARGETS.map(String::from).to_vec(),
        use_rslora: false,
    };
    let vars = if full {
        let weights = d.make_trainable().unwrap();
        weights.into_iter().map(|w| w.var).collect()
    } else {
        attach(&mut d, &spec, Init::Random, 3).unwrap().vars()
    };
    // Every token trained, as the model assumes.
    let vocab = desc.config.vocab_size as u32;
    let ids: Vec<u32> = (0..seq as u32)
        .map(|i| (i * 31 + 7) % (vocab - 3) + 3)
        .collect();
    let data = vec![Example::new(ids, vec![true; seq])];
    let cfg = TrainConfig {
        lr: 1e-3,
        weight_decay: 0.0,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        warmup_steps: 0,
        steps: 2,
        batch: 1,
        grad_accum: 1,
        max_grad_norm: Some(1.0),
        shuffle: false,
        seed: 1,
        eval_every: None,
        gradient_checkpointing: checkpointing,
    };
    let before = heap::reset_peak();
    train(&mut d, vars, &data, &[], &cfg, |_| Ok(())).unwrap();
    let measured = (heap::peak() - before) as f64;

    let shape = TrainShape {
        mode: if full {
            TrainMode::FullFinetune
        } else if desc
            .stored
            .as_ref()
            .is_some_and(|s| s.container == Container::Gguf)
        {
            TrainMode::Qlora
        } else {
            TrainMode::Lora
        },
        lora_rank: run.rank as u64,
        lora_targets: LoraTarget::ALL.to_vec(),
        optimizer: Optimizer::Adamw,
        gradient_checkpointing: checkpointing,
        micro_batch: 1,
        seq_len: seq as u64,
    };
    let t = cpu_train_bytes(
        &desc.config,
        &desc.tensors,
        &desc.weights(None),
        &shape,
        &desc.tokenizer,
    );
    eprintln!("{t:?}");
    // What a run adds to a loaded model with its adapter attached.
    let predicted =
        t.gradients + t.optimizer_states + t.activations + t.logits + t.dequant_workspace
            - t.not_together;
    (measured, predicted as f64)
}

#[test]
fn the_cpu_training_model_predicts_the_heap_a_step_adds() {
    // Thread pools and the matrix kernels' per-thread workspaces are allocated on first use
    // and kept: first runs pay for them, and are not measured.
    // (Full fine-tuning's products go through candle's matmul, with workspaces of its own.)
    let llama = tiny("llama");
    for (checkpointing, full) in [(false, false), (true, false), (false, true)] {
        measure(&Run {
            path: &llama,
            seq: 256,
            rank: 8,
            checkpointing,
            full,
        });
    }
    // Llama; Qwen2 (q/k/v biases); Gemma 3 (QK-norm, post-norms, embedding scale, windows):
    // 256 tokens over a 1k vocabulary. Then QLoRA on a real GGUF, whose 49k-entry vocabulary
    // makes the head's block of logits outweigh a layer's backward.
    let mut runs = Vec::new();
    for family in ["llama", "qwen2", "gemma3"] {
        for (checkpointing, full) in [(false, false), (true, false), (false, true), (true, true)] {
            runs.push((
                family.to_string(),
                tiny(family),
                256,
                8,
                checkpointing,
                full,
            ));
        }
    }
    let smollm2 = testdata_file("SmolLM2-135M-Instruct.Q4_1.gguf");
    for (seq, checkpointing) in [(128, true), (128, false), (512, true)] {
        runs.push((
            "SmolLM2 Q4_1".into(),
            smollm2.clone(),
            seq,
            16,
            checkpointing,
            false,
        ));
    }
    let mut failed = Vec::new();
    for (name, path, seq, rank, checkpointing, full) in runs {
        let (measured, predicted) = measure(&Run {
            path: &path,
            seq,
            rank,
            checkpointing,
            full,
        });
        let ratio = predicted / measured;
        let what = format!("{name} {seq} tokens checkpointing={checkpointing} full={full}");
        eprintln!("{what}: measured {measured:.0} B, predicted {predicted:.0} B, ratio {ratio:.3}");
        if !(0.9..=1.1).contains(&ratio) {
            failed.push(format!(
                "{what}: predicted {predicted:.0} B for {measured:.0} B measured (ratio {ratio:.3})"
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
