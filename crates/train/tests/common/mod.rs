#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]
#![allow(dead_code, reason = "each test crate uses part of these")]
//! What the training tests share: a golden file's hyper-parameters as a [`TrainConfig`] and
//! its examples; one sequence's logits alone.

use forja_train::TrainConfig;
use forja_train::examples::Example;
use serde_json::Value;

/// The golden's `hyper` as the trainer's settings (examples in order, no evaluation).
pub fn config_from(g: &Value, checkpointing: bool) -> TrainConfig {
    let h = &g["hyper"];
    let f = |k: &str| h[k].as_f64().unwrap();
    let u = |k: &str| h[k].as_u64().unwrap() as usize;
    TrainConfig {
        lr: f("lr"),
        weight_decay: f("weight_decay"),
        beta1: f("beta1"),
        beta2: f("beta2"),
        eps: f("eps"),
        warmup_steps: u("warmup_steps"),
        steps: u("steps"),
        batch: u("batch"),
        grad_accum: u("grad_accum"),
        max_grad_norm: Some(f("max_grad_norm")),
        shuffle: false,
        seed: 0,
        eval_every: None,
        gradient_checkpointing: checkpointing,
    }
}

pub fn examples_from(g: &Value) -> Vec<Example> {
    let ints = |v: &Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    g["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| Example {
            ids: ints(&e["ids"]),
            trained: e["trained"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_bool().unwrap())
                .collect(),
            packed: Vec::new(),
        })
        .collect()
}

/// Logits of every token of `prompt`, then of one more token `next`, for one sequence alone
/// (with served adapter `adapter`).
pub fn logits_alone(
    decoder: &forja_models::Decoder,
    prompt: &[u32],
    next: u32,
    adapter: Option<u32>,
) -> Vec<Vec<f32>> {
    let mut cache = forja_models::ContiguousKvCache::new(decoder.num_layers());
    let mut out = Vec::new();
    for (tokens, all) in [(prompt, true), (&[next][..], false)] {
        let mut steps = [forja_models::SeqStep {
            tokens,
            cache: &mut cache,
            all_logits: all,
            adapter,
        }];
        let l = decoder.forward(&mut steps).unwrap().remove(0);
        out.push(l.flatten_all().unwrap().to_vec1().unwrap());
    }
    out
}
