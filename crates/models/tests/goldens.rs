//! Parity with the reference implementation (transformers, f32) on tiny random models of every
//! family: logits of every prompt position within 1e-4, and greedy continuations equal wherever
//! the top-2 logits are clearly apart. Goldens: fixtures/tiny/*/goldens.* (scripts/goldens/).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use candle_core::{Device, Tensor};
use common::{id_lists, max_abs_diff, tiny_model};
use forja_models::{ContiguousKvCache, Decoder, GraphKvCache, SeqStep};

const FAMILIES: [&str; 13] = [
    "llama",
    "llama3_rope",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3",
    "phi3",
    "phi3_longrope",
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
];
const TOLERANCE: f32 = 1e-4;

struct Golden {
    prompts: Vec<Vec<u32>>,
    logits: Vec<Tensor>,
    greedy: Vec<Vec<u32>>,
}

fn golden(name: &str) -> (Decoder, Golden) {
    let (model, meta) = tiny_model(name);
    let dir = forja_testkit::fixtures_dir().join("tiny").join(name);
    let prompts = id_lists(&meta["prompts"]);
    let tensors =
        candle_core::safetensors::load(dir.join("goldens.safetensors"), &Device::Cpu).unwrap();
    let logits = (0..prompts.len())
        .map(|i| tensors[&format!("logits.{i}")].clone())
        .collect();
    (
        model,
        Golden {
            prompts,
            logits,
            greedy: id_lists(&meta["greedy"]),
        },
    )
}

#[test]
fn logits_match_the_reference_for_every_family() {
    let mut report = Vec::new();
    for name in FAMILIES {
        let (model, g) = golden(name);
        for (i, prompt) in g.prompts.iter().enumerate() {
            let d = max_abs_diff(&model.prompt_logits(prompt).unwrap(), &g.logits[i]);
            report.push(format!("{name} prompt {i}: max |Δlogit| = {d:.2e}"));
            assert!(d <= TOLERANCE, "{}", report.join("\n"));
        }
    }
    println!("{}", report.join("\n"));
}

/// Greedy decoding with the KV cache, one token a step, reproduces the reference's tokens where
/// the choice is clear (top-2 gap above 1e-3); near-ties are reported, not asserted.
#[test]
fn greedy_decoding_matches_the_reference() {
    for name in FAMILIES {
        let (model, g) = golden(name);
        let mut checked = 0;
        for (prompt, expected) in g.prompts.iter().zip(&g.greedy) {
            let mut cache = ContiguousKvCache::new(model.num_layers());
            let mut next = prompt.clone();
            for (step, &want) in expected.iter().enumerate() {
                let mut steps = [SeqStep {
                    tokens: &next,
                    cache: &mut cache,
                    all_logits: false,
                    adapter: None,
                }];
                let logits: Vec<f32> = model.forward(&mut steps).unwrap()[0]
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let mut order: Vec<usize> = (0..logits.len()).collect();
                order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
                let (top, second) = (order[0], order[1]);
                if logits[top] - logits[second] > 1e-3 {
                    assert_eq!(top as u32, want, "{name}: step {step} of prompt {prompt:?}");
                    checked += 1;
                } else if top as u32 != want {
                    println!(
                        "{name}: near-tie at step {step} ({} vs {})",
                        logits[top], logits[second]
                    );
                    break;
                }
                next = vec![want];
            }
        }
        // Near-ties may end a comparison early, but most steps must be compared.
        let total: usize = g.greedy.iter().map(Vec::len).sum();
        assert!(
            2 * checked >= total,
            "{name}: only {checked} of {total} steps compared"
        );
    }
}

/// A batch of sequences gives each one the logits it gets alone (up to float rounding), and a
/// prompt fed in two chunks through the cache gives the logits of feeding it whole.
#[test]
fn batching_and_chunked_prefill_change_nothing() {
    for name in ["llama", "gemma3", "mixtral"] {
        let (model, g) = golden(name);
        let alone: Vec<Tensor> = g
            .prompts
            .iter()
            .map(|p| model.prompt_logits(p).unwrap())
            .collect();
        let mut caches: Vec<ContiguousKvCache> = g
            .prompts
            .iter()
            .map(|_| ContiguousKvCache::new(model.num_layers()))
            .collect();
        let mut steps: Vec<SeqStep> = g
            .prompts
            .iter()
            .zip(caches.iter_mut())
            .map(|(p, c)| SeqStep {
                tokens: p,
                cache: c,
                all_logits: true,
                adapter: None,
            })
            .collect();
        let batched = model.forward(&mut steps).unwrap();
        for (a, b) in alone.iter().zip(&batched) {
            // One matrix for the whole batch sums in another order than one row alone.
            let d = max_abs_diff(a, b);
            assert!(d <= 1e-5, "{name}: batched differs by {d}");
        }
        let p = &g.prompts[2];
        let mut cache = ContiguousKvCache::new(model.num_layers());
        let split = 7;
        let mut first = [SeqStep {
            tokens: &p[..split],
            cache: &mut cache,
            all_logits: true,
            adapter: None,
        }];
        let a = model.forward(&mut first).unwrap().remove(0);
        let mut second = [SeqStep {
            tokens: &p[split..],
            cache: &mut cache,
            all_logits: true,
            adapter: None,
        }];
        let b = model.forward(&mut second).unwrap().remove(0);
        let chunked = Tensor::cat(&[a, b], 0).unwrap();
        let d = max_abs_diff(&chunked, &alone[2]);
        assert!(d <= 1e-5, "{name}: chunked prefill differs by {d}");
    }
}

#[test]
fn bad_token_ids_are_errors() {
    let (model, _) = golden("llama");
    let mut cache = ContiguousKvCache::new(model.num_layers());
    let mut steps = [SeqStep {
        tokens: &[1, 9999],
        cache: &mut cache,
        all_logits: false,
        adapter: None,
    }];
    let e = model.forward(&mut steps).unwrap_err().to_string();
    assert!(
        e.contains("token id 9999 outside the vocabulary of 256"),
        "{e}"
    );
}

/// The CPU attention kernel (reading the cache in place) and the tensor path other devices run,
/// with long prompts attended in chunks of one query row (the smallest budget), give the same
/// logits: sliding windows, soft-capping and QK-norm included.
#[test]
fn fused_cpu_attention_equals_the_chunked_tensor_path() {
    for name in ["llama", "mistral", "gemma2", "gemma3", "phi3"] {
        let (mut model, g) = golden(name);
        let whole: Vec<Tensor> = g
            .prompts
            .iter()
            .map(|p| model.prompt_logits(p).unwrap())
            .collect();
        // The tensor path (other devices), in chunks of one query row.
        model.set_fused_cpu_attention(false);
        model.set_score_block_bytes(1);
        for (p, w) in g.prompts.iter().zip(&whole) {
            let d = max_abs_diff(&model.prompt_logits(p).unwrap(), w);
            assert!(d <= 1e-5, "{name}: chunked scores differ by {d}");
        }
    }
}

/// Fails on appending to one layer once armed: a step that breaks midway.
struct FailingCache<C> {
    inner: C,
    fail_at_layer: Option<usize>,
}

impl<C: forja_models::KvCache> forja_models::KvCache for FailingCache<C> {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> forja_models::error::Result<forja_models::KvSpan> {
        if self.fail_at_layer == Some(layer) {
            return Err(forja_models::error::ModelError::Input("injected".into()));
        }
        self.inner.append(layer, k, v)
    }
    fn write(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> forja_models::error::Result<()> {
        if self.fail_at_layer == Some(layer) {
            return Err(forja_models::error::ModelError::Input("injected".into()));
        }
        self.inner.write(layer, k, v)
    }
    fn view(&self, layer: usize) -> forja_models::error::Result<forja_models::KvView<'_>> {
        self.inner.view(layer)
    }
    fn reads_in_place(&self) -> bool {
        self.inner.reads_in_place()
    }
    fn advance(&mut self, n: usize) {
        self.inner.advance(n)
    }
    fn can_keep(&self, len: usize) -> bool {
        self.inner.can_keep(len)
    }
    fn truncate(&mut self, len: usize) -> forja_models::error::Result<()> {
        self.inner.truncate(len)
    }
}

/// A step that fails midway leaves the cache as it was: the sequence continues as if the step
/// had never been tried. Truncating a cache and feeding the same tokens again reproduces them.
/// Both the inference cache (read in place by the CPU kernel) and the training cache (joined by
/// differentiable ops, attended on the tensor path) behave so, with the same logits.
#[test]
fn failed_steps_and_truncation_keep_the_cache_consistent() {
    let (model, _) = golden("gemma3");
    check_failed_steps_and_truncation(ContiguousKvCache::new(model.num_layers()));
    // Sliding layers kept as rings, in f32 as the reference.
    let windows: Vec<Option<usize>> = model
        .config
        .layers
        .iter()
        .map(|l| match l {
            forja_arch::LayerAttention::Sliding { window } => Some(*window as usize),
            _ => None,
        })
        .collect();
    check_failed_steps_and_truncation(ContiguousKvCache::for_layers(
        &windows,
        candle_core::DType::F32,
        512,
    ));
    check_failed_steps_and_truncation(GraphKvCache::new(model.num_layers()));
}

fn check_failed_steps_and_truncation<C: forja_models::KvCache>(inner: C) {
    let (model, g) = golden("gemma3");
    let p = &g.prompts[2];
    let whole = model.prompt_logits(p).unwrap();
    let mut cache = FailingCache {
        inner,
        fail_at_layer: None,
    };
    let step = |cache: &mut FailingCache<C>, tokens: &[u32]| {
        let mut s = [SeqStep {
            tokens,
            cache,
            all_logits: true,
            adapter: None,
        }];
        model.forward(&mut s).map(|mut v| v.remove(0))
    };
    let a = step(&mut cache, &p[..5]).unwrap();
    cache.fail_at_layer = Some(model.num_layers() - 1);
    let e = step(&mut cache, &p[5..]).unwrap_err().to_string();
    assert!(e.contains("injected"), "{e}");
    assert_eq!(forja_models::KvCache::len(&cache), 5);
    cache.fail_at_layer = None;
    let b = step(&mut cache, &p[5..]).unwrap();
    let d = max_abs_diff(&Tensor::cat(&[a, b], 0).unwrap(), &whole);
    assert!(d <= 1e-5, "after a failed step: {d}");

    forja_models::KvCache::truncate(&mut cache, 3).unwrap();
    let c = step(&mut cache, &p[3..]).unwrap();
    let d = max_abs_diff(&c, &whole.narrow(0, 3, p.len() - 3).unwrap());
    assert!(d <= 1e-5, "after truncation: {d}");
    assert!(forja_models::KvCache::truncate(&mut cache, p.len() + 1).is_err());
}

/// The model's own cache keeps a sliding-window layer's window and a step, wrapping around
/// its buffer: over a sequence many windows long, in steps of one token and steps longer than
/// the ring held so far, it gives the logits a cache keeping every token gives — on the CPU
/// kernel (reading through the ring's block table) and on the tensor path — while its sliding
/// layers hold a window and a step of slots. It goes back only as far as the windows reach.
#[test]
fn sliding_window_layers_keep_their_window_and_a_step() {
    for name in ["mistral", "gemma2", "gemma3"] {
        for fused in [true, false] {
            let (mut model, _) = golden(name);
            model.set_fused_cpu_attention(fused);
            let ids: Vec<u32> = (0..300u32).map(|i| (i * 37 + 11) % 256).collect();
            let steps = [5usize, 1, 1, 60, 1, 1, 90, 1, 1, 1, 40, 1, 1, 70, 1, 1];
            let mut ring = model.new_cache();
            let mut full = ContiguousKvCache::with_dtype(model.num_layers(), model.kv_dtype());
            let run = |cache: &mut ContiguousKvCache, tokens: &[u32]| {
                let mut s = [SeqStep {
                    tokens,
                    cache,
                    all_logits: true,
                    adapter: None,
                }];
                model.forward(&mut s).unwrap().remove(0)
            };
            let mut at = 0;
            for n in steps {
                let a = run(&mut ring, &ids[at..at + n]);
                let b = run(&mut full, &ids[at..at + n]);
                let d = max_abs_diff(&a, &b);
                assert_eq!(
                    d, 0.0,
                    "{name} (fused {fused}): step at {at} differs by {d}"
                );
                at += n;
            }
            let sliding: Vec<bool> = (0..model.num_layers())
                .map(|i| {
                    matches!(
                        model.config.layers.get(i),
                        Some(forja_arch::LayerAttention::Sliding { .. })
                    )
                })
                .collect();
            assert!(sliding.iter().any(|&s| s), "{name} has sliding layers");
            for (i, &s) in sliding.iter().enumerate() {
                // Window 6, longest step 90: 5 + 90 positions, whole blocks of 64.
                let expected = if s { 128 } else { 512 };
                assert_eq!(ring.capacity(i).unwrap(), expected, "{name} layer {i}");
                assert_eq!(full.capacity(i).unwrap(), 512, "{name} layer {i}");
            }
            // Back to where the windows still reach, and on: the same logits again.
            use forja_models::KvCache;
            assert!(!ring.can_keep(100) && ring.can_keep(at - 60) && ring.can_keep(0));
            let e = ring.truncate(100).unwrap_err().to_string();
            assert!(e.contains("no longer hold"), "{e}");
            let back = at - 60;
            ring.truncate(back).unwrap();
            full.truncate(back).unwrap();
            let a = run(&mut ring, &ids[back..back + 30]);
            let b = run(&mut full, &ids[back..back + 30]);
            assert_eq!(max_abs_diff(&a, &b), 0.0, "{name} after going back");
        }
    }
}

/// LongRoPE picks its factors by the context the model runs with: beyond the original context
/// (the default here, 512 > 4) the long factors, which the goldens' prompts use in the
/// reference; within it the short ones, which the reference uses for a prompt that fits.
#[test]
fn longrope_follows_the_context_it_runs_with() {
    let dir = forja_testkit::fixtures_dir().join("tiny/phi3_longrope");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("goldens.json")).unwrap()).unwrap();
    let prompt: Vec<u32> = meta["short_prompt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let want = candle_core::safetensors::load(dir.join("goldens.safetensors"), &Device::Cpu)
        .unwrap()["short_logits"]
        .clone();
    let options = forja_models::loader::LoadOptions {
        context: Some(4),
        ..Default::default()
    };
    let short = forja_models::loader::load_with(&dir, &Device::Cpu, options).unwrap();
    let d = max_abs_diff(&short.prompt_logits(&prompt).unwrap(), &want);
    assert!(d <= TOLERANCE, "short factors: {d}");
    let long = forja_models::loader::load(&dir, &Device::Cpu).unwrap();
    let d = max_abs_diff(&long.prompt_logits(&prompt).unwrap(), &want);
    assert!(d > 1e-2, "the long factors give other logits ({d})");
}
