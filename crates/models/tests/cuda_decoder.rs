//! The decoder on the GPU against the same decoder on the CPU, for every dense family of the
//! tiny models (`fixtures/tiny`): a batch of prompts prefilled in one step, then greedy decoding
//! of every sequence together, over a KV pool whose blocks are handed out out of order. Built
//! with `--features cuda` and run on a machine with an NVIDIA GPU (`scripts/cuda/conformance`).

#![cfg(feature = "cuda")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use std::sync::Arc;

use forja_kernels::cuda::Gpu;
use forja_models::gpu::{GpuDecoder, GpuOptions, GpuSeq};
use forja_models::{Decoder, KvCache, SeqStep};

const FAMILIES: [&str; 10] = [
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
];
const BLOCK: usize = 4;
const STEPS: usize = 8;

fn load(name: &str) -> (Decoder, Vec<Vec<u32>>) {
    let (model, meta) = common::tiny_model(name);
    (model, common::id_lists(&meta["prompts"]))
}

/// Largest difference relative to the largest reference value.
fn rel_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "all-zero logits test nothing");
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
        / scale
}

fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0 as u32
}

/// Greedy continuation on the CPU (f16 KV cache, as on the GPU): the logits of every prompt row,
/// then of each decoded token.
fn cpu_run(model: &Decoder, prompt: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = model.new_cache();
    let mut out = Vec::new();
    let step = |tokens: &[u32], all: bool, cache: &mut dyn KvCache| {
        let mut s = [SeqStep {
            tokens,
            cache,
            all_logits: all,
            adapter: None,
        }];
        model.forward(&mut s).unwrap().remove(0)
    };
    let l = step(prompt, true, &mut cache);
    let rows = l.dim(0).unwrap();
    for r in 0..rows {
        out.push(l.get(r).unwrap().to_vec1::<f32>().unwrap());
    }
    for _ in 0..STEPS {
        let next = argmax(out.last().unwrap());
        let l = step(&[next], false, &mut cache);
        out.push(l.get(0).unwrap().to_vec1::<f32>().unwrap());
    }
    out
}

fn check_family(gpu: &Arc<Gpu>, name: &str, half: bool, tolerance: f32) {
    let (model, prompts) = load(name);
    let longest = prompts.iter().map(Vec::len).max().unwrap() + STEPS;
    let per_seq = longest.div_ceil(BLOCK);
    // One block table per layer group (the Gemmas' sliding-window layers are groups of their
    // own); a table's blocks are spread over the pool in reverse order: nothing contiguous.
    let groups = model.kv_groups();
    let n = prompts.len() * groups.windows.len();
    let opts = GpuOptions {
        half,
        quantized: false,
        block_size: BLOCK,
        blocks: per_seq * n + 5,
        max_context: longest,
    };
    let mut gpu_model = GpuDecoder::new(Arc::clone(gpu), &model, opts).unwrap();
    let mut tables: Vec<Vec<Vec<u32>>> = (0..prompts.len())
        .map(|s| {
            (0..groups.windows.len())
                .map(|g| {
                    let t = s * groups.windows.len() + g;
                    (0..per_seq).rev().map(|b| (5 + t + b * n) as u32).collect()
                })
                .collect()
        })
        .collect();
    let want: Vec<Vec<Vec<f32>>> = prompts.iter().map(|p| cpu_run(&model, p)).collect();

    let seqs: Vec<GpuSeq> = prompts
        .iter()
        .zip(&tables)
        .map(|(p, t)| GpuSeq {
            tokens: p,
            start: 0,
            tables: t,
            all_logits: true,
            pick: None,
        })
        .collect();
    let got = gpu_model.forward(&seqs).unwrap();
    let mut worst = 0f32;
    let mut next: Vec<u32> = Vec::new();
    for (s, (g, p)) in got.iter().zip(&prompts).enumerate() {
        let vocab = g.len() / p.len();
        for r in 0..p.len() {
            worst = worst.max(rel_diff(&g[r * vocab..(r + 1) * vocab], &want[s][r]));
        }
        next.push(argmax(&want[s][p.len() - 1]));
    }
    // Decoding: every sequence one token per step, the CPU's greedy tokens fed to both. As the
    // server's block manager does, a sliding window's blocks that its next query no longer
    // sees are given back: their entries become NULL_BLOCK, which nothing may read.
    for step in 0..STEPS {
        for (p, t) in prompts.iter().zip(&mut tables) {
            let computed = p.len() + step;
            for (table, window) in t.iter_mut().zip(&groups.windows) {
                if let Some(w) = window {
                    let gone = computed.saturating_sub(*w as usize - 1) / BLOCK;
                    table[..gone].fill(forja_kv::NULL_BLOCK);
                }
            }
        }
        let tokens: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
        let seqs: Vec<GpuSeq> = prompts
            .iter()
            .zip(&tables)
            .zip(&tokens)
            .map(|((p, t), tok)| GpuSeq {
                tokens: tok,
                start: p.len() + step,
                tables: t,
                all_logits: false,
                pick: None,
            })
            .collect();
        let got = gpu_model.forward(&seqs).unwrap();
        for (s, g) in got.iter().enumerate() {
            let w = &want[s][prompts[s].len() + step];
            worst = worst.max(rel_diff(g, w));
            next[s] = argmax(w);
        }
    }
    println!(
        "{name} ({} weights): {} sequences, {STEPS} decode steps, relative logit error {worst:.2e}",
        if half { "f16" } else { "f32" },
        prompts.len()
    );
    assert!(worst <= tolerance, "{name}: relative logit error {worst}");
}

fn gpu() -> Arc<Gpu> {
    let g = Gpu::open(0).unwrap_or_else(|e| panic!("this test needs an NVIDIA GPU: {e}"));
    println!("{} (compute {:?})", g.name(), g.capability());
    Arc::new(g)
}

/// f32 weights: the GPU computes what the CPU does, up to summation order — which can round a
/// key or value to the neighbouring f16 in the cache now and then (1e-3 relative); both caches
/// are f16.
#[test]
fn every_family_matches_the_cpu_with_f32_weights() {
    let g = gpu();
    for name in FAMILIES {
        check_family(&g, name, false, 1e-3);
    }
}

/// f16 weights (the fast path): the rounding of the weights is all that differs.
#[test]
fn every_family_stays_close_to_the_cpu_with_f16_weights() {
    let g = gpu();
    for name in FAMILIES {
        check_family(&g, name, true, 1e-2);
    }
}

/// Greedy tokens picked on the GPU, with decode steps replayed as graphs, equal the tokens
/// picked on the host from the logits of steps launched one by one.
#[test]
fn gpu_greedy_and_graphs_change_nothing() {
    let g = gpu();
    for name in ["llama", "gemma2", "qwen3"] {
        let (model, prompts) = load(name);
        let ctx = prompts.iter().map(Vec::len).max().unwrap() + 12;
        let per_seq = ctx.div_ceil(BLOCK);
        let groups = model.kv_groups().windows.len();
        let opts = GpuOptions {
            half: true,
            quantized: false,
            block_size: BLOCK,
            blocks: per_seq * prompts.len() * groups,
            max_context: ctx,
        };
        let tables: Vec<Vec<Vec<u32>>> = (0..prompts.len())
            .map(|s| {
                (0..groups)
                    .map(|g| {
                        let first = (s * groups + g) * per_seq;
                        (0..per_seq).map(|b| (first + b) as u32).collect()
                    })
                    .collect()
            })
            .collect();
        let mut runs = Vec::new();
        for graphs in [true, false] {
            let mut m = GpuDecoder::new(Arc::clone(&g), &model, opts).unwrap();
            m.set_graphs(graphs);
            let mut next: Vec<[u32; 1]> = Vec::new();
            let mut out = Vec::new();
            for step in 0..=12 {
                let seqs: Vec<GpuSeq> = prompts
                    .iter()
                    .zip(&tables)
                    .enumerate()
                    .map(|(s, (p, t))| GpuSeq {
                        tokens: if step == 0 { p } else { &next[s] },
                        start: if step == 0 { 0 } else { p.len() + step - 1 },
                        tables: t,
                        all_logits: false,
                        pick: None,
                    })
                    .collect();
                let tokens = if graphs {
                    m.forward_greedy(&seqs).unwrap()
                } else {
                    m.forward(&seqs)
                        .unwrap()
                        .iter()
                        .map(|l| argmax(l))
                        .collect()
                };
                next = tokens.iter().map(|&t| [t]).collect();
                out.push(tokens);
            }
            runs.push(out);
        }
        assert_eq!(runs[0], runs[1], "{name}");
        println!(
            "{name}: 13 greedy steps of {} sequences equal",
            prompts.len()
        );
    }
}

/// Bad steps are errors that name the problem, before any launch.
#[test]
fn bad_steps_are_refused() {
    let g = gpu();
    let (model, _) = load("llama");
    let opts = GpuOptions {
        half: false,
        quantized: false,
        block_size: BLOCK,
        blocks: 4,
        max_context: 16,
    };
    let mut m = GpuDecoder::new(g, &model, opts).unwrap();
    let bad = |m: &mut GpuDecoder, tokens: &[u32], start: usize, blocks: &[u32]| {
        m.forward(&[GpuSeq {
            tokens,
            start,
            tables: &[blocks.to_vec()],
            all_logits: false,
            pick: None,
        }])
        .unwrap_err()
        .to_string()
    };
    let two = [vec![0u32], vec![1u32]];
    let e = m
        .forward(&[GpuSeq {
            tokens: &[1],
            start: 0,
            tables: &two,
            all_logits: false,
            pick: None,
        }])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("2 block tables for a model of 1 layer groups"),
        "{e}"
    );
    // llama keeps every position: a block given back is refused, not read.
    let e = bad(&mut m, &[1], 4, &[forja_kv::NULL_BLOCK, 1]);
    assert!(e.contains("outside a pool"), "{e}");
    assert!(bad(&mut m, &[1, 2], 0, &[]).contains("0 blocks for 2 positions"));
    assert!(bad(&mut m, &[1], 0, &[9]).contains("block 9 outside a pool of 4"));
    assert!(bad(&mut m, &[9999], 0, &[0]).contains("outside the vocabulary"));
    assert!(bad(&mut m, &[1], 16, &[0, 1, 2, 3]).contains("context 16"));
}

/// Random GGUF blocks of `ty` with valid f16 scales: `rows` rows of `cols`.
fn random_blocks(ty: forja_quant::QuantType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    use forja_quant::QuantType as T;
    let mut x = seed;
    let mut byte = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 24) as u8
    };
    let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
    let mut out = Vec::new();
    for _ in 0..rows {
        match ty {
            T::Q8_0 | T::Q4_0 | T::Q4_1 | T::Q5_0 | T::Q5_1 => {
                for _ in 0..cols / 32 {
                    out.extend(f16(0.01 + f32::from(byte()) / 5000.0));
                    let n = match ty {
                        T::Q8_0 => 32,
                        T::Q4_0 => 16,
                        T::Q5_0 => 4 + 16,
                        _ => {
                            out.extend(f16(-0.05 + f32::from(byte()) / 5000.0));
                            if ty == T::Q5_1 { 4 + 16 } else { 16 }
                        }
                    };
                    out.extend((0..n).map(|_| byte()));
                }
            }
            T::Q4K | T::Q5K => {
                for _ in 0..cols / 256 {
                    out.extend(f16(0.002 + f32::from(byte()) / 50000.0));
                    out.extend(f16(0.001 + f32::from(byte()) / 50000.0));
                    let n = if ty == T::Q5K {
                        12 + 32 + 128
                    } else {
                        12 + 128
                    };
                    out.extend((0..n).map(|_| byte()));
                }
            }
            T::Q2K => {
                for _ in 0..cols / 256 {
                    out.extend((0..16 + 64).map(|_| byte()));
                    out.extend(f16(0.002 + f32::from(byte()) / 50000.0));
                    out.extend(f16(0.001 + f32::from(byte()) / 50000.0));
                }
            }
            T::Q3K => {
                for _ in 0..cols / 256 {
                    out.extend((0..32 + 64 + 12).map(|_| byte()));
                    out.extend(f16(0.002 + f32::from(byte()) / 50000.0));
                }
            }
            T::Q6K => {
                for _ in 0..cols / 256 {
                    out.extend((0..128 + 64 + 16).map(|_| byte()));
                    out.extend(f16(0.001 + f32::from(byte()) / 50000.0));
                }
            }
            _ => unreachable!("not a type under test"),
        }
    }
    out
}

/// The kernels that make a quantized product's input (RMSNorm rows, the attention output's
/// conversion, the gated activation, the attention writing the output projection's input) and
/// round it to 8 bits on the way give the product, bit for bit, what it computes when it
/// rounds the same input itself — over one row (GEMV), several (tensor-core tiles), and up to
/// the most rows read as blocks; past them no sink is given; a sink for another number of
/// values is refused.
#[test]
fn inputs_rounded_by_their_producers_multiply_as_the_product_rounds_them() {
    use forja_kernels::cuda::{Act, AttentionLaunch, AttentionTables, QuantKind, QuantPath};
    use forja_quant::QuantType as T;
    let g = gpu();
    let (cols, out) = (512, 24);
    // The most rows a product reads as blocks here, and one more.
    let most = (1..=1024)
        .take_while(|&r| g.quant_path(r) != QuantPath::F16)
        .last()
        .unwrap();
    let b = random_blocks(T::Q4K, out, cols, 7);
    let w = g
        .upload_quant(&[(QuantKind::Q4K, out, &b[..])], cols)
        .unwrap();
    let mut deq = g.alloc::<u16>(w.dequant_len()).unwrap();
    let scale: Vec<f32> = (0..cols).map(|i| 0.5 + (i % 7) as f32 / 7.0).collect();
    let norm_w = g.upload(&scale).unwrap();
    for rows in [1, 5, 16, most, most + 1] {
        let src: Vec<f32> = (0..rows * 2 * cols)
            .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        let xs = g.upload(&src).unwrap();
        // Attention: the rows' queries from `xs` (4 heads of 128 = `cols`), one sequence of
        // 1,100 positions in blocks of 16 (random f16 keys and values), row r seeing 1,100 − r
        // (in split-K parts, the last block of each row writing the output; a block takes both
        // heads of a KV group).
        let (heads, kv_heads, dim, ctx) = (4, 2, 128, 1100usize);
        let kv: Vec<u16> = (0..ctx.next_multiple_of(16) * kv_heads * dim)
            .map(|i| half::f16::from_f32(((i * 7919) % 997) as f32 / 500.0 - 1.0).to_bits())
            .collect();
        let cache = g.upload(&kv).unwrap();
        let mut tables =
            AttentionTables::new(&g, rows, ctx.div_ceil(16), (heads, kv_heads, dim), ctx).unwrap();
        g.upload_into(
            &(0..ctx.div_ceil(16) as u32).collect::<Vec<_>>(),
            &mut tables.block_tables,
        )
        .unwrap();
        g.upload_into(
            &(0..rows).map(|r| (ctx - r) as u32).collect::<Vec<_>>(),
            &mut tables.context_lens,
        )
        .unwrap();
        let launch = AttentionLaunch {
            rows,
            heads,
            kv_heads,
            head_dim: dim,
            block_size: 16,
            max_blocks: ctx.div_ceil(16),
            table_offset: 0,
            scale: 0.09,
            window: None,
            softcap: None,
            longest: ctx,
        };
        for producer in ["rms_norm_rows", "convert", "gated_act", "attention"] {
            let run = |act: &mut Act, sink| match producer {
                "rms_norm_rows" => g.rms_norm_rows(act, &xs, None, rows, &norm_w, 1e-6, sink),
                "convert" => g.convert(act, &xs, rows * cols, sink),
                "attention" => g.attention(act, &xs, &cache, &cache, &tables, &launch, sink),
                _ => g.gated_act(act, &xs, rows, cols, 0, sink),
            };
            let mut act = g.alloc_act(rows * cols, true).unwrap();
            let sink = g.q8_sink(&mut deq, &w, rows);
            let pre = sink.is_some();
            assert_eq!(pre, rows <= most, "{producer}, {rows} rows");
            run(&mut act, sink).unwrap();
            let mut fused = g.upload(&vec![0f32; rows * out]).unwrap();
            g.gemm_quant(
                g.quant_path(rows),
                &mut fused,
                &act,
                rows,
                &w,
                0.0,
                &mut deq,
                pre,
            )
            .unwrap();
            // The same input rounded by the product's own pass.
            let mut apart = g.upload(&vec![0f32; rows * out]).unwrap();
            g.gemm_quant(
                g.quant_path(rows),
                &mut apart,
                &act,
                rows,
                &w,
                0.0,
                &mut deq,
                false,
            )
            .unwrap();
            assert_eq!(
                g.download(&fused).unwrap(),
                g.download(&apart).unwrap(),
                "{producer}, {rows} rows"
            );
            if pre {
                println!("{producer}, {rows} rows: the fused rounding gives the same product");
            } else {
                println!("{producer}, {rows} rows: no sink past {most} rows, the product rounds");
            }
        }
        // A sink for another number of values is refused.
        if rows <= most {
            let mut act = g.alloc_act(rows * cols, true).unwrap();
            let sink = g.q8_sink(&mut deq, &w, rows);
            assert!(g.convert(&mut act, &xs, rows * cols - 32, sink).is_err());
        }
    }
}

/// Every way a product with GGUF blocks runs — the GEMV kernels (passes of up to eight rows),
/// the tensor-core tiles (any number of rows, tiles of 8 to 64), dequantization to f16 plus
/// cuBLAS — on weights of mixed types joined by rows whose parts are not multiples of the
/// tiles (two neighbours of one kind, which upload as one part), rows of 512 and 1280 values (one and several runs of blocks per warp) and of 1312
/// (a run cut short), against f64 sums over the rows forja's CPU dequantizes (checked against
/// gguf-py elsewhere): 8-bit activations exactly as the reference rounds them for the first
/// two, the f16-rounded weights for the last.
#[test]
fn quantized_weights_multiply_as_their_dequantized_rows() {
    use forja_kernels::cuda::{Act, QuantKind, QuantPath};
    use forja_quant::{QMatrix, QuantType as T};
    let g = gpu();
    let all = [
        (T::Q8_0, QuantKind::Q8_0, 40),
        (T::Q4_0, QuantKind::Q4_0, 24),
        (T::Q4_1, QuantKind::Q4_1, 8),
        (T::Q5_0, QuantKind::Q5_0, 21),
        (T::Q5_1, QuantKind::Q5_1, 11),
        (T::Q4K, QuantKind::Q4K, 33),
        // Neighbours of one kind: one part on the device.
        (T::Q4K, QuantKind::Q4K, 31),
        (T::Q5K, QuantKind::Q5K, 19),
        (T::Q3K, QuantKind::Q3K, 13),
        (T::Q2K, QuantKind::Q2K, 9),
        (T::Q6K, QuantKind::Q6K, 17),
    ];
    // 1312 values: 41 blocks of 32, so the Q5 types' high-bit areas need padding.
    let cases = [(512, &all[..]), (1280, &all[..]), (1312, &all[..5])];
    for (cols, kinds) in cases {
        let mut dense = Vec::new();
        let mut blocks = Vec::new();
        for (i, &(ty, kind, rows)) in kinds.iter().enumerate() {
            let b = random_blocks(ty, rows, cols, 99 + i as u64);
            let m = QMatrix::new(ty, rows, cols, b.clone()).unwrap();
            dense.extend(m.dequantize().unwrap());
            blocks.push((kind, rows, b));
        }
        let out: usize = kinds.iter().map(|k| k.2).sum();
        // Each type as an embedding table: looked-up rows are the dequantized rows × scale.
        let mut first = 0;
        for (&(_, kind, rows), (_, _, b)) in kinds.iter().zip(&blocks) {
            let table = g.upload_quant(&[(kind, rows, &b[..])], cols).unwrap();
            let ids = [0u32, rows as u32 - 1, 5, 5];
            let mut got = g.alloc::<f32>(ids.len() * cols).unwrap();
            g.embed_rows(&mut got, &table, &g.upload(&ids).unwrap(), ids.len(), 0.5)
                .unwrap();
            let want: Vec<f32> = ids
                .iter()
                .flat_map(|&i| dense[(first + i as usize) * cols..][..cols].to_vec())
                .map(|v| v * 0.5)
                .collect();
            let got = g.download(&got).unwrap();
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
                .fold(0f32, f32::max);
            assert!(
                worst <= 1e-6,
                "embedding rows of {kind:?} × {cols}: {worst:e}"
            );
            first += rows;
        }
        let parts: Vec<_> = blocks.iter().map(|(k, r, b)| (*k, *r, &b[..])).collect();
        let w = g.upload_quant(&parts, cols).unwrap();
        let mut deq = g.alloc::<u16>(w.dequant_len()).unwrap();
        let f16_weights: Vec<f32> = dense
            .iter()
            .map(|v| half::f16::from_f32(*v).to_f32())
            .collect();
        for rows in [1, 3, 8, 9, 17, 32, 40, 65, 100] {
            let x: Vec<f32> = (0..rows * cols)
                .map(|i| half::f16::from_f32(((i * 7919) % 1000) as f32 / 500.0 - 1.0).to_f32())
                .collect();
            let bits: Vec<u16> = x
                .iter()
                .map(|v| half::f16::from_f32(*v).to_bits())
                .collect();
            let xa = Act::F16(g.upload(&bits).unwrap());
            let (q, s) = forja_kernels::reference::quantize_q8(&x).unwrap();
            let x8: Vec<f64> = q
                .iter()
                .enumerate()
                .map(|(i, &v)| f64::from(v) * f64::from(s[i / 32][0]))
                .collect();
            let x16: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
            let y0: Vec<f32> = (0..rows * out).map(|i| (i % 13) as f32 / 13.0).collect();
            let mut paths = vec![QuantPath::F16];
            if rows <= 17 {
                paths.push(QuantPath::Gemv);
            }
            if g.mmq_available() && rows > 1 {
                paths.push(QuantPath::Mmq);
            }
            for path in paths {
                // Through f16 weights their rounding is the tolerance; on the blocks, the
                // 8-bit activations are rounded exactly as the reference rounds them.
                let (wr, xr) = match path {
                    QuantPath::F16 => (&f16_weights, &x16),
                    _ => (&dense, &x8),
                };
                // Through f16, also with a scratch of 7 weight rows: the matrix dequantized and
                // multiplied 7 rows at a time, ranges that cross the parts' edges.
                let mut small = g.alloc::<u16>(7 * cols).unwrap();
                let smalls: &[bool] = match path {
                    QuantPath::F16 => &[false, true],
                    _ => &[false],
                };
                for (&in_small, beta) in smalls.iter().flat_map(|s| [(s, 0.0f32), (s, 1.0)]) {
                    let scratch = if in_small { &mut small } else { &mut deq };
                    let mut y = g.upload(&y0).unwrap();
                    g.gemm_quant(path, &mut y, &xa, rows, &w, beta, scratch, false)
                        .unwrap();
                    let got = g.download(&y).unwrap();
                    let want: Vec<f32> = (0..rows * out)
                        .map(|i| {
                            let (r, o) = (i / out, i % out);
                            let dot: f64 = (0..cols)
                                .map(|k| xr[r * cols + k] * f64::from(wr[o * cols + k]))
                                .sum();
                            (dot + f64::from(beta) * f64::from(y0[i])) as f32
                        })
                        .collect();
                    let e = rel_diff(&got, &want);
                    println!(
                        "{path:?}: {rows} rows × {out} mixed-type outputs of {cols}, beta \
                         {beta}, 7-row scratch {in_small}: relative error {e:.2e}"
                    );
                    assert!(
                        e <= 1e-5,
                        "{path:?}, {rows} rows of {cols}, beta {beta}, small {in_small}: {e}"
                    );
                }
            }
        }
    }
}
