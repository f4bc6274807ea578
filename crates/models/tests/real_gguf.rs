//! The decoder alone on the real Gemma 3 GGUF (this crate has no tokenizer): token ids stand in
//! for text. The ids were checked with transformers' Gemma 3 tokenizer
//! (decode([2, 818, 5279, 529, 7001, 563]) = "<bos>The capital of France is"; 5279 = " capital",
//! 7001 = " France"). The engine's tests compare whole continuations with llama.cpp's.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use forja_models::loader::{LoadOptions, load_with};
use forja_models::{ContiguousKvCache, SeqStep};

/// Greedy continuation of `prompt`: each step's token and its logit lead over the runner-up.
fn greedy(dequantize: bool, prompt: &[u32], n: usize) -> Vec<(u32, f32)> {
    let path = forja_testkit::testdata_file("gemma-3-270m-q4_k_m.gguf");
    let d = load_with(
        &path,
        &candle_core::Device::Cpu,
        LoadOptions {
            dequantize,
            ..Default::default()
        },
    )
    .unwrap();
    let mut cache = ContiguousKvCache::new(d.num_layers());
    let mut next = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..n {
        let mut s = [SeqStep {
            tokens: &next,
            cache: &mut cache,
            all_logits: false,
            adapter: None,
        }];
        let l: Vec<f32> = d.forward(&mut s).unwrap()[0]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let t = (0..l.len()).max_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap();
        let second = (0..l.len())
            .filter(|&i| i != t)
            .map(|i| l[i])
            .fold(f32::MIN, f32::max);
        out.push((t as u32, l[t] - second));
        next = vec![t as u32];
    }
    out
}

/// Logit lead under which two computations of the same model may pick different greedy tokens
/// (the engine's llama.cpp comparison uses the same bound).
const NEAR_TIE: f32 = 0.25;

/// Regression: Gemma GGUFs store norm weights as 1 + w; applying Gemma's (1 + w) again made the
/// model emit garbage. With plain scaling it continues on topic, quantized or not.
#[test]
fn gemma3_gguf_continues_on_topic() {
    let prompt = [2, 818, 5279, 529, 7001, 563];
    let quantized: Vec<u32> = greedy(false, &prompt, 12).iter().map(|s| s.0).collect();
    assert!(
        quantized.contains(&5279) && quantized.contains(&7001),
        "{quantized:?}"
    );
    // 8-bit activations move logits by tenths, so the two paths agree until a step where the
    // f32 path's own choice is a near-tie.
    let exact = greedy(true, &prompt, 12);
    if let Some(k) = (0..12).find(|&k| exact[k].0 != quantized[k]) {
        assert!(
            exact[k].1 < NEAR_TIE,
            "the quantized path leaves the f32 path at step {k} where f32 leads by {}: \
             {quantized:?} vs {exact:?}",
            exact[k].1
        );
    }
}
