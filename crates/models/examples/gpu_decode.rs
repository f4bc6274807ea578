//! The GPU decoder on a real model, against the CPU, and its speed: greedy tokens on both (f16 KV
//! cache on both), then prefill and decode throughput on the GPU at several batch sizes. Prints
//! markdown table rows. Built with `--features cuda`; run on the GPU machine by
//! `bench/gpu/run.sh`.
//!
//! `gpu_decode MODEL [--f32 | --quantized] [--prompt N] [--gen N] [--check N] [--batches 1,16,64]
//! [--sample] [--check-prompt N] [--depth N] [--pool-context N]`: `--depth` tokens precede the
//! timed decode steps (16 by default), the check starts after `--check-prompt` tokens (24);
//! `--pool-context` sizes the block tables for sequences that long, as a server does for the
//! model's context.
//! `gpu_decode --random-llama HIDDEN,LAYERS,FF,HEADS,KV_HEADS,VOCAB DIR ...` first writes a
//! Llama-shaped model with random f16 weights to DIR (for shapes no small file has), then runs
//! on it unless `--write-only` is given. `gpu_decode --gemv-bench` times the quantized GEMV
//! kernels alone.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark fails loudly"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use forja_kernels::cuda::Gpu;
use forja_models::gpu::{GpuDecoder, GpuOptions, GpuSeq};
use forja_models::{Decoder, DevicePick, SeqOutput, SeqStep};

fn argmax(v: &[f32]) -> (u32, f32) {
    let mut best = (0, f32::NEG_INFINITY, f32::NEG_INFINITY);
    for (i, &x) in v.iter().enumerate() {
        if x > best.1 {
            best = (i, x, best.1);
        } else if x > best.2 {
            best.2 = x;
        }
    }
    (best.0 as u32, best.1 - best.2)
}

/// One decode step with each sequence's token sampled on the GPU (the server's default rules).
fn sampled(g: &mut GpuDecoder, seqs: &[GpuSeq<'_>], step: u64) -> Vec<u32> {
    let picked: Vec<GpuSeq<'_>> = seqs
        .iter()
        .enumerate()
        .map(|(i, s)| GpuSeq {
            pick: Some(DevicePick {
                temperature: 0.7,
                top_k: 40,
                top_p: 0.95,
                min_p: 0.05,
                rng_state: (i as u64) << 32 | step,
            }),
            ..*s
        })
        .collect();
    g.step(&picked)
        .unwrap()
        .into_iter()
        .map(|o| match o {
            SeqOutput::Picked { token, .. } => token,
            other => panic!("no token picked: {other:?}"),
        })
        .collect()
}

fn random_llama(spec: &str, dir: &Path) {
    let v: Vec<usize> = spec.split(',').map(|s| s.parse().unwrap()).collect();
    let [hidden, layers, ff, heads, kv_heads, vocab] = v[..] else {
        panic!("--random-llama HIDDEN,LAYERS,FF,HEADS,KV_HEADS,VOCAB")
    };
    let d = hidden / heads;
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": hidden, "intermediate_size": ff, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": vocab,
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "tie_word_embeddings": false, "torch_dtype": "float16", "hidden_act": "silu"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut t = HashMap::new();
    // Uniform values of the given standard deviation, made on every core (an 8B model has
    // 8·10⁹ of them; shapes and value ranges are what a speed measurement needs).
    let seed = std::cell::Cell::new(1u64);
    let r = |shape: &[usize], std: f64| {
        let n: usize = shape.iter().product();
        let mut v = vec![half::f16::ZERO; n];
        let a = (std * 3f64.sqrt()) as f32;
        let base = seed.get();
        seed.set(base + 1);
        let threads = std::thread::available_parallelism().map_or(4, |t| t.get());
        let chunk = n.div_ceil(threads).max(1);
        std::thread::scope(|s| {
            for (c, part) in v.chunks_mut(chunk).enumerate() {
                s.spawn(move || {
                    let mut x = (base << 32) ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    for o in part {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let u = (x >> 40) as f32 / (1u64 << 24) as f32;
                        *o = half::f16::from_f32(a * (2.0 * u - 1.0));
                    }
                });
            }
        });
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    };
    let ones = |n: usize| Tensor::ones(n, DType::F16, &Device::Cpu).unwrap();
    let s = 1.0 / (hidden as f64).sqrt();
    t.insert(
        "model.embed_tokens.weight".to_string(),
        r(&[vocab, hidden], 1.0),
    );
    t.insert("lm_head.weight".to_string(), r(&[vocab, hidden], s));
    t.insert("model.norm.weight".to_string(), ones(hidden));
    for l in 0..layers {
        let p = |n: &str| format!("model.layers.{l}.{n}");
        t.insert(p("input_layernorm.weight"), ones(hidden));
        t.insert(p("post_attention_layernorm.weight"), ones(hidden));
        t.insert(p("self_attn.q_proj.weight"), r(&[heads * d, hidden], s));
        t.insert(p("self_attn.k_proj.weight"), r(&[kv_heads * d, hidden], s));
        t.insert(p("self_attn.v_proj.weight"), r(&[kv_heads * d, hidden], s));
        t.insert(p("self_attn.o_proj.weight"), r(&[hidden, heads * d], s));
        t.insert(p("mlp.gate_proj.weight"), r(&[ff, hidden], s));
        t.insert(p("mlp.up_proj.weight"), r(&[ff, hidden], s));
        t.insert(
            p("mlp.down_proj.weight"),
            r(&[hidden, ff], 1.0 / (ff as f64).sqrt()),
        );
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
}

struct Args {
    model: PathBuf,
    half: bool,
    quantized: bool,
    prompt: usize,
    generate: usize,
    check: usize,
    batches: Vec<usize>,
    /// Only write the `--random-llama` model.
    write_only: bool,
    /// Tokens of the prompt the check against the CPU starts from.
    check_prompt: usize,
    /// Tokens each sequence holds before the timed decode steps.
    depth: usize,
    /// Decode with tokens sampled on the GPU (temperature 0.7, top-k 40, top-p 0.95, min-p
    /// 0.05) instead of greedy picks.
    sample: bool,
    /// The longest sequence the pool allows (its block tables' width), as a server sizes it
    /// for the model's context; at least what the run needs.
    pool_context: usize,
}

fn args() -> Args {
    let mut a = std::env::args().skip(1);
    let mut out = Args {
        model: PathBuf::new(),
        half: true,
        quantized: false,
        prompt: 512,
        generate: 128,
        check: 32,
        batches: vec![1, 16, 64],
        write_only: false,
        sample: false,
        check_prompt: 24,
        depth: 16,
        pool_context: 0,
    };
    while let Some(x) = a.next() {
        match x.as_str() {
            "--f32" => out.half = false,
            "--quantized" => out.quantized = true,
            "--write-only" => out.write_only = true,
            "--sample" => out.sample = true,
            "--check-prompt" => out.check_prompt = a.next().unwrap().parse().unwrap(),
            "--depth" => out.depth = a.next().unwrap().parse().unwrap(),
            "--pool-context" => out.pool_context = a.next().unwrap().parse().unwrap(),
            "--prompt" => out.prompt = a.next().unwrap().parse().unwrap(),
            "--gen" => out.generate = a.next().unwrap().parse().unwrap(),
            "--check" => out.check = a.next().unwrap().parse().unwrap(),
            "--batches" => {
                out.batches = a
                    .next()
                    .unwrap()
                    .split(',')
                    .map(|s| s.parse().unwrap())
                    .collect()
            }
            "--random-llama" => {
                let spec = a.next().unwrap();
                let dir = PathBuf::from(a.next().unwrap());
                let t = Instant::now();
                random_llama(&spec, &dir);
                eprintln!("wrote {} in {:.1?}", dir.display(), t.elapsed());
                out.model = dir;
            }
            m => out.model = PathBuf::from(m),
        }
    }
    out
}

/// Pseudo-random prompt ids in the vocabulary.
fn prompt(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % vocab as u64) as u32
        })
        .collect()
}

/// The CPU's logits (f16 KV cache, as on the GPU) for every prompt row, then for `n - 1`
/// greedy steps.
fn cpu_rows(model: &Decoder, prompt: &[u32], n: usize) -> Vec<Vec<f32>> {
    let mut cache = model.new_cache();
    let mut out: Vec<Vec<f32>> = Vec::new();
    let mut tokens = prompt.to_vec();
    for step in 0..n {
        let mut s = [SeqStep {
            tokens: &tokens,
            cache: &mut cache,
            all_logits: step == 0,
            adapter: None,
        }];
        let l = model.forward(&mut s).unwrap().remove(0);
        for r in 0..l.dim(0).unwrap() {
            out.push(l.get(r).unwrap().to_vec1::<f32>().unwrap());
        }
        tokens = vec![argmax(out.last().unwrap()).0];
    }
    out
}

/// Largest difference relative to the largest reference value.
fn rel_diff(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
        / scale
}

/// Mean seconds per call of `f` over `reps` calls, after a warm-up.
fn time(gpu: &Gpu, reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..5 {
        f();
    }
    gpu.synchronize().unwrap();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    gpu.synchronize().unwrap();
    t.elapsed().as_secs_f64() / reps as f64
}

/// Products with quantized weights on Llama-3-8B's matrix shapes (random blocks with valid
/// scales) at 1 to 512 activation rows, each way they can run (GEMV, tensor-core tiles, f16
/// copy + cuBLAS), the f16 product through cuBLAS beside them, and the device's copy bandwidth
/// (read + write) for scale. Prints markdown rows.
fn gemv_bench(gpu: &Gpu) {
    use forja_kernels::cuda::{Act, QuantKind, QuantPath};
    let copy_bytes = 1usize << 30;
    let src = gpu.alloc::<u8>(copy_bytes).unwrap();
    let mut dst = gpu.alloc::<u8>(copy_bytes).unwrap();
    let secs = time(gpu, 20, || gpu.copy(&src, &mut dst).unwrap());
    let copy_bw = 2.0 * copy_bytes as f64 / secs / 1e9;
    drop((src, dst));
    println!("device copy of 1 GiB: {copy_bw:.0} GB/s (bytes read + written)");
    println!();
    println!("| weight | shape | rows | time | weight bytes / time | % of copy bandwidth |");
    println!("|---|---|---|---|---|---|");
    let shapes = [(4096, 4096), (14336, 4096), (4096, 14336), (128_256, 4096)];
    for (out, inp) in shapes {
        let kinds: &[QuantKind] = if out > 100_000 {
            &[QuantKind::Q6K]
        } else {
            &[
                QuantKind::Q4K,
                QuantKind::Q5K,
                QuantKind::Q6K,
                QuantKind::Q3K,
                QuantKind::Q2K,
                QuantKind::Q8_0,
                QuantKind::Q4_0,
                QuantKind::Q4_1,
                QuantKind::Q5_0,
                QuantKind::Q5_1,
            ]
        };
        let row = |name: &str, rows: usize, secs: f64, bytes: usize| {
            let bw = bytes as f64 / secs / 1e9;
            println!(
                "| {name} | [{out}, {inp}] | {rows} | {:.1} µs | {bw:.0} GB/s | {:.0} % |",
                secs * 1e6,
                100.0 * bw / copy_bw
            );
        };
        for &kind in kinds {
            let rb = kind.row_bytes(inp).unwrap();
            let mut bytes: Vec<u8> = (0..out * rb)
                .map(|i| ((i * 2_654_435_761) >> 7) as u8)
                .collect();
            // Valid f16 scales where each block keeps them.
            let (block, at): (usize, &[usize]) = match kind {
                QuantKind::Q4K => (144, &[0, 2]),
                QuantKind::Q5K => (176, &[0, 2]),
                QuantKind::Q6K => (210, &[208]),
                QuantKind::Q3K => (110, &[108]),
                QuantKind::Q2K => (84, &[80, 82]),
                QuantKind::Q8_0 => (34, &[0]),
                QuantKind::Q4_0 => (18, &[0]),
                QuantKind::Q4_1 => (20, &[0, 2]),
                QuantKind::Q5_0 => (22, &[0]),
                QuantKind::Q5_1 => (24, &[0, 2]),
            };
            let scale = half::f16::from_f32(0.01).to_le_bytes();
            for b in bytes.chunks_exact_mut(block) {
                for &o in at {
                    b[o..o + 2].copy_from_slice(&scale);
                }
            }
            let w = gpu.upload_quant(&[(kind, out, &bytes[..])], inp).unwrap();
            let mut deq = gpu.alloc::<u16>(w.dequant_len()).unwrap();
            for rows in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512] {
                let x = Act::F16(gpu.upload(&vec![0x3c00u16; rows * inp]).unwrap());
                let mut y = gpu.alloc::<f32>(rows * out).unwrap();
                let paths = [
                    (QuantPath::Gemv, rows <= 16),
                    (QuantPath::Mmq, rows > 1 && gpu.mmq_available()),
                    (QuantPath::F16, rows >= 16),
                ];
                for (path, _) in paths.iter().filter(|p| p.1) {
                    let secs = time(gpu, 100, || {
                        gpu.gemm_quant(*path, &mut y, &x, rows, &w, 0.0, &mut deq, false)
                            .unwrap()
                    });
                    row(&format!("{kind:?} {path:?}"), rows, secs, w.bytes());
                }
            }
        }
        let dense: Vec<f32> = (0..out * inp)
            .map(|i| ((i * 7919) % 1000) as f32 / 1e5)
            .collect();
        let w = gpu.upload_weight(&dense, out, inp, true).unwrap();
        for rows in [1, 16, 64, 128, 512] {
            let x = Act::F16(gpu.upload(&vec![0x3c00u16; rows * inp]).unwrap());
            let mut y = gpu.alloc::<f32>(rows * out).unwrap();
            let secs = time(gpu, 100, || gpu.gemm(&mut y, &x, rows, &w, 0.0).unwrap());
            row("f16 (cuBLAS)", rows, secs, w.bytes());
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--gemv-bench") {
        gemv_bench(&Gpu::open(0).unwrap());
        return;
    }
    let a = args();
    if a.write_only {
        return;
    }
    let t = Instant::now();
    let model = forja_models::loader::load(&a.model, &Device::Cpu).unwrap();
    eprintln!(
        "loaded {} on the CPU in {:.1?}",
        a.model.display(),
        t.elapsed()
    );
    let vocab = model.config.vocab_size as usize;
    let gpu = Arc::new(Gpu::open(0).unwrap());
    let max_batch = a.batches.iter().copied().max().unwrap_or(1);
    // Room for the timed runs, and for the check: its prompt then `check` steps.
    let ctx = (a.prompt + a.generate + 1)
        .max(a.depth + a.generate + 2)
        .max(a.check_prompt + a.check + 1);
    let pool_context = ctx.max(a.pool_context);
    let bs = 16;
    let per_seq = ctx.div_ceil(bs);
    // Every position of every layer group is kept (no block goes back here).
    let groups = model.kv_groups().windows.len();
    let opts = GpuOptions {
        half: a.half,
        quantized: a.quantized,
        block_size: bs,
        blocks: per_seq * max_batch * groups,
        max_context: pool_context,
    };
    let t = Instant::now();
    let mut g = GpuDecoder::new(Arc::clone(&gpu), &model, opts).unwrap();
    eprintln!(
        "{}: weights {:.2} GiB ({}), KV pool {:.2} GiB, uploaded in {:.1?}",
        gpu.name(),
        g.weight_bytes() as f64 / (1u64 << 30) as f64,
        if a.quantized {
            "GGUF blocks where the GPU reads them, else f16"
        } else if a.half {
            "f16"
        } else {
            "f32"
        },
        g.kv_bytes() as f64 / (1u64 << 30) as f64,
        t.elapsed()
    );
    let table = |s: usize| -> Vec<Vec<u32>> {
        (0..groups)
            .map(|g| {
                let first = (s * groups + g) * per_seq;
                (0..per_seq).map(|b| (first + b) as u32).collect()
            })
            .collect()
    };

    // Logits and greedy tokens against the CPU: every prompt row, then each decode step fed
    // the CPU's token.
    if a.check > 0 {
        let p = prompt(a.check_prompt, vocab, 7);
        // The reference: f32 arithmetic on dequantized weights (the CPU's quantized kernels
        // round activations to 8 bits, as llama.cpp's do; the GPU computes in f32/f16).
        let exact = forja_models::loader::load_with(
            &a.model,
            &Device::Cpu,
            forja_models::loader::LoadOptions {
                dequantize: true,
                ..Default::default()
            },
        )
        .unwrap();
        let want = cpu_rows(&exact, &p, a.check);
        for graphs in [false, true] {
            g.set_graphs(graphs);
            let blocks = table(0);
            let l = g
                .forward(&[GpuSeq {
                    tokens: &p,
                    start: 0,
                    tables: &blocks,
                    all_logits: true,
                    pick: None,
                }])
                .unwrap()
                .remove(0);
            let (mut worst, mut at) = (0f32, 0);
            for r in 0..p.len() {
                let e = rel_diff(&l[r * vocab..(r + 1) * vocab], &want[r]);
                if e > worst {
                    (worst, at) = (e, r);
                }
            }
            let mut same = 0;
            let mut first_diff = None;
            let mut decode_worst = 0f32;
            for i in 0..a.check {
                let w = &want[p.len() - 1 + i];
                let (cpu_tok, gap) = argmax(w);
                let got = if i == 0 {
                    l[(p.len() - 1) * vocab..].to_vec()
                } else {
                    let prev = [argmax(&want[p.len() - 2 + i]).0];
                    g.forward(&[GpuSeq {
                        tokens: &prev,
                        start: p.len() + i - 1,
                        tables: &blocks,
                        all_logits: false,
                        pick: None,
                    }])
                    .unwrap()
                    .remove(0)
                };
                decode_worst = decode_worst.max(rel_diff(&got, w));
                if argmax(&got).0 == cpu_tok {
                    same += 1;
                } else if first_diff.is_none() {
                    first_diff = Some((i, argmax(&got).0, cpu_tok, gap));
                }
            }
            println!(
                "| vs CPU, {} | prompt rows: worst relative logit error {worst:.2e} (row {at}); \
                 decode: {:.2e}; greedy tokens equal: {same}/{}{} |",
                if graphs {
                    "CUDA graphs"
                } else {
                    "launch by launch"
                },
                decode_worst,
                a.check,
                first_diff.map_or(String::new(), |(i, gt, ct, gap)| format!(
                    " (first difference at {i}: GPU {gt}, CPU {ct}, CPU top-2 gap {gap:.3})"
                ))
            );
        }
        g.set_graphs(true);
    }

    // Prefill: one prompt of `prompt` tokens.
    let p = prompt(a.prompt, vocab, 11);
    let b0 = table(0);
    let run_prefill = |g: &mut GpuDecoder| {
        g.forward(&[GpuSeq {
            tokens: &p,
            start: 0,
            tables: &b0,
            all_logits: false,
            pick: None,
        }])
        .unwrap();
    };
    run_prefill(&mut g);
    let t = Instant::now();
    let reps = 5;
    for _ in 0..reps {
        run_prefill(&mut g);
    }
    let pp = (a.prompt * reps) as f64 / t.elapsed().as_secs_f64();
    println!("| pp{} | batch 1 | {pp:.0} tok/s |", a.prompt);

    // Decode: `batch` sequences after a prompt of `depth` tokens each, `gen` steps.
    for &batch in &a.batches {
        let tables: Vec<Vec<Vec<u32>>> = (0..batch).map(table).collect();
        let prompts: Vec<Vec<u32>> = (0..batch)
            .map(|s| prompt(a.depth, vocab, 100 + s as u64))
            .collect();
        for graphs in [true, false] {
            g.set_graphs(graphs);
            // Prompts one at a time: long ones would not fit the step buffers together.
            let first: Vec<u32> = prompts
                .iter()
                .zip(&tables)
                .map(|(p, t)| {
                    g.forward_greedy(&[GpuSeq {
                        tokens: p,
                        start: 0,
                        tables: t,
                        all_logits: false,
                        pick: None,
                    }])
                    .unwrap()[0]
                })
                .collect();
            let mut next: Vec<[u32; 1]> = first.iter().map(|&t| [t]).collect();
            // One untimed step records the graph of this batch size.
            let mut timed = None;
            for step in 0..=a.generate {
                if step == 1 {
                    timed = Some(Instant::now());
                }
                let seqs: Vec<GpuSeq> = next
                    .iter()
                    .zip(&tables)
                    .map(|(tok, t)| GpuSeq {
                        tokens: tok,
                        start: a.depth + step,
                        tables: t,
                        all_logits: false,
                        pick: None,
                    })
                    .collect();
                next = if a.sample {
                    sampled(&mut g, &seqs, step as u64)
                } else {
                    g.forward_greedy(&seqs).unwrap()
                }
                .iter()
                .map(|&t| [t])
                .collect();
            }
            let secs = timed.unwrap().elapsed().as_secs_f64();
            println!(
                "| tg{} @ {} | batch {batch} | {}{} | {:.1} tok/s | {:.2} ms/step |",
                a.generate,
                a.depth,
                if graphs {
                    "CUDA graphs"
                } else {
                    "launch by launch"
                },
                if a.sample { ", sampled on the GPU" } else { "" },
                (a.generate * batch) as f64 / secs,
                secs * 1e3 / a.generate as f64
            );
        }
    }
}
