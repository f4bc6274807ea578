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

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::Device;
use forja_arch::ModelDescription;
use forja_arch::training::{LoraTarget, Optimizer, TrainMode, TrainShape, cpu_train_bytes};
use forja_testkit::fixtures_dir;
use forja_train::{Example, Init, LoraSpec, TrainConfig, attach, train};

/// The system allocator, counting the bytes live now and the most live since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's pointer, layout and size.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grow(new_size);
        }
        p
    }
}

fn grow(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

#[global_allocator]
static COUNTING: Counting = Counting;

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
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    train(&mut d, vars, &data, &[], &cfg, |_| Ok(())).unwrap();
    let measured = (PEAK.load(Ordering::Relaxed) - before) as f64;

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
