//! The engine's scheduler driving the GPU runner, on a machine with an NVIDIA GPU
//! (`scripts/cuda/conformance run`): requests submitted together share steps (continuous
//! batching, prefill in chunks, a system prompt computed once and found in the prefix cache)
//! and give the CPU engine's greedy tokens wherever the CPU's choice is clear.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use std::sync::Arc;

use forja_engine::serving::{Engine, ServingConfig};
use forja_engine::{GenerateParams, LoadedModel, Message, RunnerDevice, Sampled, SamplingParams};

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// A CPU pick whose runner-up is closer than this (in log-probability) is a near tie: f16 GPU
/// arithmetic may pick either, and the sequences part ways there.
const CLEAR: f32 = 0.3;

/// Every prompt's sampled tokens, all submitted at once to an engine on `device`. Asking for
/// no alternatives (`top_logprobs` 0) lets a GPU runner pick the tokens itself.
fn serve(
    model: &Arc<LoadedModel>,
    device: RunnerDevice,
    prompts: &[Vec<u32>],
    sampling: &SamplingParams,
    top_logprobs: usize,
) -> Vec<Vec<Sampled>> {
    let cfg = ServingConfig {
        kv_bytes: 64 << 20,
        // Small steps: long prompts are prefilled in chunks beside other sequences' decodes.
        max_batched_tokens: 48,
        max_running: 8,
        device,
        ..Default::default()
    };
    let (engine, _thread) = Engine::start(Arc::clone(model), &cfg).unwrap();
    eprintln!(
        "{device}: {} ({} KV blocks)",
        engine.device(),
        engine.pool.num_blocks
    );
    let params = GenerateParams {
        sampling: sampling.clone(),
        max_tokens: 24,
        stop: Vec::new(),
        top_logprobs,
    };
    common::serve_all(&engine, prompts, &params)
}

#[test]
fn the_scheduler_drives_the_gpu_runner_to_the_cpu_tokens() {
    let path = forja_testkit::testdata_file(MODEL);
    let model = Arc::new(LoadedModel::load_cpu(&path, None).unwrap());
    let system = "You are a concise assistant. Answer in one short sentence, in the language of \
                  the question, without lists or greetings.";
    let questions = [
        "What is the capital of France?",
        "Name three primary colors.",
        "¿Cuál es el río más largo de España?",
        "Write the numbers from one to ten in words, separated by commas, and then explain in \
         a few words why counting matters for children who are learning mathematics at school.",
        "What does a CPU do?",
        "Who wrote Don Quixote?",
    ];
    let prompts: Vec<Vec<u32>> = questions
        .iter()
        .map(|q| {
            model
                .chat_prompt(
                    &[Message::new("system", system), Message::new("user", q)],
                    None,
                )
                .unwrap()
        })
        .collect();
    let greedy = SamplingParams::greedy();
    let cpu = serve(&model, RunnerDevice::Cpu, &prompts, &greedy, 2);
    // Picked on the host from the GPU's logits, then on the GPU itself.
    let gpu = serve(&model, RunnerDevice::Cuda(0), &prompts, &greedy, 2);
    let gpu_picked = serve(&model, RunnerDevice::Cuda(0), &prompts, &greedy, 0);
    compare_clear(&cpu, &gpu, CLEAR, 40);
    compare_clear(&cpu, &gpu_picked, CLEAR, 40);
}

#[test]
fn sliding_window_groups_serve_on_the_gpu_as_on_the_cpu() {
    // Tiny Gemma 3 (sliding, global, sliding; window 6): three block tables per sequence, the
    // sliding ones giving blocks back as the prompts are prefilled in chunks of the 48-token
    // step budget and decoded.
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(common::tiny_model(dir.path(), "gemma3"));
    let prompts: Vec<Vec<u32>> = (0..4)
        .map(|r| {
            (0..60 + 23 * r)
                .map(|i| ((i * 37 + r * 11) % 250 + 3) as u32)
                .collect()
        })
        .collect();
    let greedy = SamplingParams::greedy();
    let cpu = serve(&model, RunnerDevice::Cpu, &prompts, &greedy, 2);
    let gpu = serve(&model, RunnerDevice::Cuda(0), &prompts, &greedy, 2);
    let gpu_picked = serve(&model, RunnerDevice::Cuda(0), &prompts, &greedy, 0);
    // A random model's distributions are flat: its top-2 gaps are small, but its f16 logits
    // on the GPU stay within ~3e-3 of the CPU's (`models/tests/cuda_decoder.rs`), far below
    // this gap.
    compare_clear(&cpu, &gpu, 0.05, 24);
    compare_clear(&cpu, &gpu_picked, 0.05, 24);
}

/// The GPU's tokens equal the CPU's wherever the CPU's top-2 gap is at least `clear`; at least
/// `min` are.
fn compare_clear(cpu: &[Vec<Sampled>], gpu: &[Vec<Sampled>], clear: f32, min: usize) {
    let mut compared = 0;
    for (i, (c, g)) in cpu.iter().zip(gpu).enumerate() {
        let mut same = 0;
        for (a, b) in c.iter().zip(g) {
            let gap = match a.top.as_slice() {
                [first, second, ..] => first.1 - second.1,
                _ => f32::INFINITY,
            };
            if gap < clear {
                eprintln!("prompt {i}, token {same}: a gap of {gap:.3}, no further comparison");
                break;
            }
            assert_eq!(
                a.token,
                b.token,
                "prompt {i}, token {same}: the CPU's pick leads by {gap:.2} but the GPU took \
                 another (CPU {:?}, GPU {:?})",
                c.iter().map(|s| s.token).collect::<Vec<_>>(),
                g.iter().map(|s| s.token).collect::<Vec<_>>()
            );
            same += 1;
        }
        eprintln!(
            "prompt {i}: {same} of {} tokens compared and equal",
            c.len()
        );
        compared += same;
    }
    assert!(
        compared >= min,
        "only {compared} tokens were clear enough to compare"
    );
}

/// The tiny random Llama with a word-level tokenizer, in `dir`.
fn tiny_llama(dir: &std::path::Path) -> Arc<LoadedModel> {
    Arc::new(common::tiny_model(dir, "llama"))
}

#[test]
fn tokens_sampled_on_the_gpu_are_the_hosts_picks_from_the_same_logits() {
    // One request at a time, so both runs make the same steps and see the same logits: the
    // host (asked for one alternative, which keeps the pick there) and the GPU must agree.
    // A random model's flat distributions make every draw count.
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path());
    let prompt: Vec<u32> = (0..40).map(|i| (i * 37 % 250 + 3) as u32).collect();
    let settings = [
        (0.8, 40, 0.95, 0.05, 1),
        (1.0, 0, 1.0, 0.0, 2),
        (1.2, 0, 0.9, 0.0, 3),
        (0.6, 5, 1.0, 0.2, 4),
        (0.0, 0, 1.0, 0.0, 5),
    ];
    for (temperature, top_k, top_p, min_p, seed) in settings {
        let sampling = SamplingParams {
            temperature,
            top_k,
            top_p,
            min_p,
            seed,
            ..Default::default()
        };
        let prompts = [prompt.clone()];
        let host = serve(&model, RunnerDevice::Cuda(0), &prompts, &sampling, 1);
        let device = serve(&model, RunnerDevice::Cuda(0), &prompts, &sampling, 0);
        let tokens = |s: &[Sampled]| s.iter().map(|x| x.token).collect::<Vec<_>>();
        assert_eq!(
            tokens(&host[0]),
            tokens(&device[0]),
            "{sampling:?}: host and GPU picks differ"
        );
        for (h, d) in host[0].iter().zip(&device[0]) {
            assert!(
                (h.logprob - d.logprob).abs() < 1e-4,
                "{sampling:?}: log-probability {} on the host, {} on the GPU",
                h.logprob,
                d.logprob
            );
        }
        eprintln!(
            "{sampling:?}: {} tokens, the same: {:?}",
            host[0].len(),
            tokens(&host[0])
        );
    }
}
