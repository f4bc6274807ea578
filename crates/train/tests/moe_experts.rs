//! LoRA on the experts of mixture-of-experts layers (tiny Mixtral, Qwen2-MoE with its shared
//! expert, Qwen3-MoE), under the names HF and PEFT give them: training moves the experts'
//! adapters, the saved adapter merged into the model folder gives the logits of the adapter
//! applied, and a served adapter applies to the experts of the sequences that ask for it only —
//! each token routed to an expert keeps its own sequence's adapter.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use candle_core::Device;
use forja_models::{ContiguousKvCache, Decoder, LoraSlot, SeqStep};
use forja_testkit::{fixtures_dir, vectors::max_abs_diff};
use forja_train::examples::Example;
use forja_train::peft::{self, PeftAdapter};
use forja_train::{Init, LoraSpec, TrainConfig, attach, train};

fn load(family: &str) -> Decoder {
    forja_models::loader::load(&fixtures_dir().join("tiny").join(family), &Device::Cpu).unwrap()
}

/// The expert projections' names in `family` and one expert's path in layer 0.
fn names(family: &str) -> ([&'static str; 3], &'static str) {
    if family == "mixtral" {
        (
            ["w1", "w3", "w2"],
            "model.layers.0.block_sparse_moe.experts.1",
        )
    } else {
        (
            ["gate_proj", "up_proj", "down_proj"],
            "model.layers.0.mlp.experts.1",
        )
    }
}

fn spec(family: &str) -> LoraSpec {
    LoraSpec {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: names(family).0.iter().map(|s| s.to_string()).collect(),
        use_rslora: false,
    }
}

/// Logits of every token of `prompt`, then of one more, for one sequence alone.
fn alone(decoder: &Decoder, prompt: &[u32], next: u32, id: Option<u32>) -> Vec<Vec<f32>> {
    common::logits_alone(decoder, prompt, next, id)
}

fn worst(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| max_abs_diff(x, y))
        .fold(0.0, f32::max)
}

/// Trains expert adapters of `family` for a few steps and saves them; returns the adapter.
fn trained_adapter(family: &str, dir: &std::path::Path) -> PeftAdapter {
    let mut decoder = load(family);
    let spec = spec(family);
    let adapters = attach(&mut decoder, &spec, Init::Random, 11).unwrap();
    let (projections, expert) = names(family);
    for p in projections {
        let path = format!("{expert}.{p}");
        assert!(
            adapters.modules.iter().any(|m| m.path == path),
            "{family}: no adapter on {path}"
        );
    }
    if family == "qwen2_moe" {
        assert!(
            adapters
                .modules
                .iter()
                .any(|m| m.path == "model.layers.0.mlp.shared_expert.down_proj")
        );
    }
    assert!(adapters.modules.iter().all(|m| !m.path.ends_with(".gate")));
    let ids: Vec<u32> = (0..40).map(|i| (i * 29 % 250 + 3) as u32).collect();
    let example = Example {
        trained: vec![true; ids.len()],
        ids,
        packed: Vec::new(),
    };
    let cfg = TrainConfig {
        lr: 1e-2,
        weight_decay: 0.0,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        warmup_steps: 0,
        steps: 6,
        batch: 1,
        grad_accum: 1,
        max_grad_norm: None,
        shuffle: false,
        seed: 0,
        eval_every: None,
        gradient_checkpointing: false,
    };
    let b_before: Vec<f32> = adapters.modules[0..]
        .iter()
        .find(|m| m.path == format!("{expert}.{}", projections[2]))
        .map(|m| m.b.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
        .unwrap();
    let reports = train(
        &mut decoder,
        adapters.vars(),
        std::slice::from_ref(&example),
        &[],
        &cfg,
        |_| Ok(()),
    )
    .unwrap();
    let (first, last) = (reports[0].loss, reports.last().unwrap().loss);
    assert!(last < first, "{family}: loss {first} → {last}");
    // Expert 1's down projection received tokens and learned (B starts at zero).
    let b_after: Vec<f32> = adapters
        .modules
        .iter()
        .find(|m| m.path == format!("{expert}.{}", projections[2]))
        .map(|m| m.b.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
        .unwrap();
    assert!(b_before.iter().all(|&v| v == 0.0));
    assert!(
        b_after.iter().any(|&v| v != 0.0),
        "{family}: expert adapter unchanged"
    );
    peft::save(&mut decoder, &spec, family, dir).unwrap();
    peft::load(dir).unwrap()
}

#[test]
fn expert_adapters_train_and_merge_under_their_hf_names() {
    for family in ["mixtral", "qwen2_moe", "qwen3_moe"] {
        let dir = tempfile::tempdir().unwrap();
        let adapter = trained_adapter(family, &dir.path().join("adapter"));
        let (_, expert) = names(family);
        assert!(
            adapter.modules.keys().any(|k| k.starts_with(expert)),
            "{family}: {:?}",
            adapter.modules.keys().collect::<Vec<_>>()
        );
        // Merged into the model folder, the experts' weights carry the update.
        let merged_dir = dir.path().join("merged");
        let report = forja_train::merge::merge_into_folder(
            &fixtures_dir().join("tiny").join(family),
            &adapter,
            &merged_dir,
        )
        .unwrap();
        assert_eq!(report.merged, adapter.modules.len());
        let merged = forja_models::loader::load(&merged_dir, &Device::Cpu).unwrap();
        let mut applied = load(family);
        peft::apply(&mut applied, &adapter).unwrap();
        let base = load(family);
        let prompt: Vec<u32> = (0..12).map(|i| (i * 37 % 250 + 3) as u32).collect();
        let with = alone(&applied, &prompt, 7, None);
        let w = worst(&alone(&merged, &prompt, 7, None), &with);
        assert!(w < 1e-4, "{family}: merged vs applied {w}");
        let moved = worst(&alone(&base, &prompt, 7, None), &with);
        assert!(
            moved > 1e-3,
            "{family}: the adapter changes nothing ({moved})"
        );
        println!(
            "{family}: merged = applied within {w:.1e}; the adapter moves logits by {moved:.3}"
        );
    }
}

#[test]
fn served_expert_adapters_follow_each_token_to_its_experts() {
    for family in ["mixtral", "qwen2_moe"] {
        let dir = tempfile::tempdir().unwrap();
        let adapter = trained_adapter(family, &dir.path().join("adapter"));
        let base = load(family);
        let mut applied = load(family);
        peft::apply(&mut applied, &adapter).unwrap();
        let mut served = load(family);
        served
            .attach_lora(&adapter.weights(), LoraSlot::Served(1))
            .unwrap();
        // Sequences with and without the adapter in one step: each expert's tokens mix both.
        let seqs: [(Option<u32>, Vec<u32>, u32); 4] = [
            (None, vec![1, 5, 9, 13, 2, 7], 11),
            (Some(1), vec![3, 8, 21, 4], 17),
            (None, vec![40, 41], 3),
            (Some(1), vec![9, 9, 30, 31, 32], 6),
        ];
        let mut caches: Vec<ContiguousKvCache> = seqs
            .iter()
            .map(|_| ContiguousKvCache::new(served.num_layers()))
            .collect();
        let mut got: Vec<Vec<Vec<f32>>> = vec![Vec::new(); seqs.len()];
        for round in 0..2 {
            let nexts: Vec<[u32; 1]> = seqs.iter().map(|s| [s.2]).collect();
            let mut steps: Vec<SeqStep<'_>> = seqs
                .iter()
                .zip(caches.iter_mut())
                .zip(&nexts)
                .map(|((s, cache), next)| SeqStep {
                    tokens: if round == 0 { &s.1 } else { next },
                    cache,
                    all_logits: round == 0,
                    adapter: s.0,
                })
                .collect();
            for (i, l) in served.forward(&mut steps).unwrap().into_iter().enumerate() {
                got[i].push(l.flatten_all().unwrap().to_vec1().unwrap());
            }
        }
        for (i, s) in seqs.iter().enumerate() {
            let reference = if s.0.is_some() { &applied } else { &base };
            let want = alone(reference, &s.1, s.2, None);
            let w = worst(&got[i], &want);
            assert!(w < 1e-4, "{family}: sequence {i} differs by {w}");
        }
    }
}
