//! The planner's model of the CPU trainer (`forja_arch::training::cpu_train_bytes`) against the
//! heap the trainer really allocates: this test binary counts every allocation, runs training
//! steps on the tiny models, and compares the peak bytes a step adds to what the model predicts
//! for that step (optimizer states, gradients, the graph's nodes, the head's logits and the
//! backward in flight). The process's own memory is measured by `bench/tune/peft-compare.sh`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use candle_core::Device;
use forja_arch::ModelDescription;
use forja_arch::training::{LoraTarget, Optimizer, TrainMode, TrainShape, cpu_train_bytes};
use forja_testkit::fixtures_dir;
use forja_testkit::heap::{self, Counting};
use forja_train::{Example, Init, LoraSpec, TrainConfig, attach, train};

#[global_allocator]
static HEAP: Counting = Counting;

const SEQ: usize = 256;

/// Peak heap bytes one training run of `steps` steps adds, and what the model predicts: LoRA
/// on every projection, or with `full` every weight trained.
fn measure(family: &str, checkpointing: bool, full: bool) -> (f64, f64) {
    let dir = fixtures_dir().join("tiny").join(family);
    let desc = ModelDescription::from_path(&dir).unwrap();
    let mut d = forja_models::loader::load(&dir, &Device::Cpu).unwrap();
    let spec = LoraSpec {
        rank: 8,
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
    let ids: Vec<u32> = (0..SEQ as u32)
        .map(|i| (i * 31 + 7) % (vocab - 3) + 3)
        .collect();
    let data = vec![Example::new(ids, vec![true; SEQ])];
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
        } else {
            TrainMode::Lora
        },
        lora_rank: 8,
        lora_targets: LoraTarget::ALL.to_vec(),
        optimizer: Optimizer::Adamw,
        gradient_checkpointing: checkpointing,
        micro_batch: 1,
        seq_len: SEQ as u64,
    };
    let t = cpu_train_bytes(&desc.config, &desc.tensors, &desc.weights(None), &shape);
    // What a run adds to a loaded model with its adapter attached.
    let predicted = t.gradients + t.optimizer_states + t.activations + t.logits;
    (measured, predicted as f64)
}

#[test]
fn the_cpu_training_model_predicts_the_heap_a_step_adds() {
    // Thread pools and the matrix kernels' per-thread workspaces are allocated on first use
    // and kept: first runs pay for them, and are not measured.
    // (Full fine-tuning's products go through candle's matmul, with workspaces of its own.)
    measure("llama", false, false);
    measure("llama", true, false);
    measure("llama", false, true);
    // Llama; Qwen2 (q/k/v biases); Gemma 3 (QK-norm, post-norms, embedding scale, windows).
    let mut failed = Vec::new();
    for family in ["llama", "qwen2", "gemma3"] {
        for (checkpointing, full) in [(false, false), (true, false), (false, true), (true, true)] {
            let (measured, predicted) = measure(family, checkpointing, full);
            let ratio = predicted / measured;
            eprintln!(
                "{family} checkpointing={checkpointing} full={full}: measured {measured:.0} B, \
                 predicted {predicted:.0} B, ratio {ratio:.3}"
            );
            if !(0.9..=1.1).contains(&ratio) {
                failed.push(format!(
                    "{family} checkpointing={checkpointing} full={full}: predicted \
                     {predicted:.0} B for {measured:.0} B measured (ratio {ratio:.3})"
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
