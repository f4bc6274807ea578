#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]
//! Served adapters on the tiny random Llama: one step batching sequences without an adapter,
//! with PEFT's trained adapter and with a second adapter gives each sequence the logits it gets
//! alone on a decoder where that adapter is applied to everything (`peft::apply`, the path of
//! `forja run --adapter`), prefill and decode alike.

mod common;

use candle_core::{Device, Tensor};
use forja_models::{ContiguousKvCache, Decoder, LoraSlot, SeqStep};
use forja_testkit::{fixtures_dir, vectors::max_abs_diff};
use forja_train::peft::{self, PeftAdapter};

fn tiny_llama() -> Decoder {
    forja_models::loader::load(&fixtures_dir().join("tiny/llama"), &Device::Cpu).unwrap()
}

/// PEFT's trained adapter of the tiny Llama.
fn trained() -> PeftAdapter {
    peft::load(&fixtures_dir().join("goldens/lora/trained")).unwrap()
}

/// A second adapter of the same modules: `A` from the trained one, `B` new random values
/// (SplitMix64), rank and alpha as the trained one.
fn other() -> PeftAdapter {
    let mut adapter = trained();
    let mut state = 7u64;
    for (_, b) in adapter.modules.values_mut() {
        let n = b.elem_count();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                let r = forja_models::lora::splitmix64(&mut state) >> 40;
                (r as f32 / (1u64 << 24) as f32 - 0.5) * 0.4
            })
            .collect();
        *b = Tensor::from_vec(v, b.dims(), &Device::Cpu).unwrap();
    }
    adapter
}

/// Logits of every token of `prompt`, then of one decoded token, for one sequence alone.
fn alone(decoder: &Decoder, prompt: &[u32], next: u32) -> Vec<Vec<f32>> {
    common::logits_alone(decoder, prompt, next, None)
}

#[test]
fn a_batch_mixing_adapters_gives_each_sequence_its_own_adapter() {
    let x = trained();
    let y = other();
    let mut served = tiny_llama();
    served
        .attach_lora(&x.weights(), LoraSlot::Served(1))
        .unwrap();
    served
        .attach_lora(&y.weights(), LoraSlot::Served(2))
        .unwrap();
    assert_eq!(served.served_adapters(), vec![1, 2]);
    assert_eq!(
        served.served_adapter_bytes(),
        x.weights().bytes() + y.weights().bytes()
    );

    // Sequences of different lengths; two use X, so its rows are not contiguous.
    let seqs: [(Option<u32>, Vec<u32>, u32); 5] = [
        (None, vec![1, 5, 9, 13, 2, 7], 11),
        (Some(1), vec![3, 8, 21, 4], 17),
        (Some(2), vec![6, 6, 30, 12, 19, 25, 2], 5),
        (Some(1), vec![40, 2, 9], 28),
        (Some(2), vec![10], 3),
    ];
    let mut caches: Vec<ContiguousKvCache> = seqs
        .iter()
        .map(|_| ContiguousKvCache::new(served.num_layers()))
        .collect();
    let mut batched: Vec<Vec<Vec<f32>>> = vec![Vec::new(); seqs.len()];
    for phase in 0..2 {
        let mut steps: Vec<SeqStep<'_>> = seqs
            .iter()
            .zip(caches.iter_mut())
            .map(|((adapter, prompt, next), cache)| SeqStep {
                tokens: if phase == 0 {
                    prompt.as_slice()
                } else {
                    std::slice::from_ref(next)
                },
                cache,
                all_logits: phase == 0,
                adapter: *adapter,
            })
            .collect();
        let out = served.forward(&mut steps).unwrap();
        for (i, l) in out.into_iter().enumerate() {
            batched[i].push(l.flatten_all().unwrap().to_vec1().unwrap());
        }
    }

    let base = tiny_llama();
    let mut with_x = tiny_llama();
    peft::apply(&mut with_x, &x).unwrap();
    let mut with_y = tiny_llama();
    peft::apply(&mut with_y, &y).unwrap();
    for (i, (adapter, prompt, next)) in seqs.iter().enumerate() {
        let reference = match adapter {
            None => &base,
            Some(1) => &with_x,
            _ => &with_y,
        };
        let want = alone(reference, prompt, *next);
        for (phase, (got, want)) in batched[i].iter().zip(&want).enumerate() {
            let diff = max_abs_diff(got, want);
            assert!(
                diff < 1e-5,
                "sequence {i} ({adapter:?}), step {phase}: differs by {diff}"
            );
        }
        // Each adapter changes the logits, so matching the right reference means something.
        let plain = alone(&base, prompt, *next);
        if adapter.is_some() {
            assert!(max_abs_diff(&want[0], &plain[0]) > 1e-2, "sequence {i}");
        }
    }
    // X and Y differ from each other too.
    let p = &seqs[1].1;
    assert!(max_abs_diff(&alone(&with_x, p, 1)[0], &alone(&with_y, p, 1)[0]) > 1e-2);
}

#[test]
fn served_adapters_are_checked_and_attached_whole() {
    let mut decoder = tiny_llama();
    let mut adapter = trained();
    let (a, b) = adapter.modules.values().next().cloned().unwrap();
    adapter
        .modules
        .insert("model.layers.9.self_attn.q_proj".into(), (a, b));
    let err = decoder
        .attach_lora(&adapter.weights(), LoraSlot::Served(1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.layers.9.self_attn.q_proj"), "{err}");
    assert!(decoder.served_adapters().is_empty());
    assert!(
        decoder
            .linears_mut()
            .iter()
            .all(|(_, l)| l.served.is_empty())
    );

    // A shape that does not fit its projection is named with both shapes.
    let mut adapter = trained();
    let (a, b) = adapter
        .modules
        .get("model.layers.0.self_attn.q_proj")
        .cloned()
        .unwrap();
    adapter
        .modules
        .insert("model.layers.0.mlp.down_proj".into(), (a, b));
    let err = decoder
        .attach_lora(&adapter.weights(), LoraSlot::Served(1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.layers.0.mlp.down_proj") && err.contains("do not fit"),
        "{err}"
    );

    // One id, one adapter; a step naming an id that is not attached is refused.
    decoder
        .attach_lora(&trained().weights(), LoraSlot::Served(1))
        .unwrap();
    assert!(
        decoder
            .attach_lora(&other().weights(), LoraSlot::Served(1))
            .is_err()
    );
    let mut cache = ContiguousKvCache::new(decoder.num_layers());
    let mut steps = [SeqStep {
        tokens: &[1, 2],
        cache: &mut cache,
        all_logits: false,
        adapter: Some(2),
    }];
    let err = decoder.forward(&mut steps).unwrap_err().to_string();
    assert!(err.contains("adapter 2"), "{err}");
    assert!(decoder.detach_adapter(1));
    assert!(decoder.served_adapters().is_empty());
    assert!(
        decoder
            .linears_mut()
            .iter()
            .all(|(_, l)| l.served.is_empty())
    );
}
