//! Every CUDA kernel against its CPU reference on random inputs of several shapes (never on
//! zeros), on a real GPU: built with `--features cuda` and run on a machine with an NVIDIA GPU
//! and NVRTC (`scripts/cuda/conformance`). Errors are measured relative to the largest
//! reference value and printed.

#![cfg(feature = "cuda")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use forja_kernels::cuda::{Act, Gpu};
use forja_kernels::{PagedAttention, reference};
use half::f16;

/// Relative error allowed: f32 sums on the GPU against f64 sums on the CPU.
const TOLERANCE: f32 = 2e-5;

struct Rng(u64);

impl Rng {
    /// Uniform in [-scale, scale).
    fn values(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                ((self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale
            })
            .collect()
    }
}

fn gpu() -> Gpu {
    let g = Gpu::open(0).unwrap_or_else(|e| panic!("this test needs an NVIDIA GPU: {e}"));
    println!(
        "{} (compute {}.{})",
        g.name(),
        g.capability().0,
        g.capability().1
    );
    g
}

fn check(what: &str, got: &[f32], want: &[f32]) {
    check_within(what, got, want, TOLERANCE);
}

/// Activations rounded to 8 bits (the quantized GEMV's input): the same integers and the same
/// block scales as the reference, bit for bit, a block of zeros and a block at f16's range
/// included.
#[test]
fn q8_rounding_matches_its_reference() {
    let g = gpu();
    let mut r = Rng(17);
    for n in [32, 96, 4096, 14336] {
        let mut x = r.values(n, 3.0);
        x[..32].fill(0.0);
        if n > 64 {
            x[32] = 65504.0;
        }
        let (q, s) = g.quantize_q8(&x).unwrap();
        let (wq, ws) = reference::quantize_q8(&x).unwrap();
        assert_eq!(q, wq, "{n} values");
        assert_eq!(s, ws, "{n} values");
        println!("quantize_q8 {n}: {} blocks equal", s.len());
    }
    assert!(g.quantize_q8(&[1.0; 40]).is_err());
}

#[test]
fn elementwise_kernels_match_their_references() {
    let g = gpu();
    let mut rng = Rng(0x5EED);
    for (rows, cols, offset) in [(1, 896, 0.0), (7, 4096, 0.0), (3, 640, 1.0), (2, 100, 0.0)] {
        let x = rng.values(rows * cols, 3.0);
        let w = rng.values(cols, 1.0);
        check(
            &format!("rms_norm {rows}×{cols} offset {offset}"),
            &g.rms_norm(&x, &w, 1e-6, offset).unwrap(),
            &reference::rms_norm(&x, &w, 1e-6, offset).unwrap(),
        );
    }
    for n in [1, 4864, 100_003] {
        let (a, b) = (rng.values(n, 6.0), rng.values(n, 2.0));
        check(
            &format!("silu_mul {n}"),
            &g.silu_mul(&a, &b).unwrap(),
            &reference::silu_mul(&a, &b).unwrap(),
        );
    }
    for (rows, heads, dim, rot) in [(5, 14, 64, 64), (3, 32, 128, 128), (2, 4, 256, 128)] {
        let inv: Vec<f32> = (0..rot / 2)
            .map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / rot as f32))
            .collect();
        let positions: Vec<u32> = (0..rows as u32).map(|r| r * 997 + 3).collect();
        let x = rng.values(rows * heads * dim, 2.0);
        let (mut a, mut b) = (x.clone(), x);
        g.rope_neox(&mut a, &positions, heads, dim, &inv).unwrap();
        reference::rope_neox(&mut b, &positions, heads, dim, &inv).unwrap();
        check(
            &format!("rope_neox {rows}×{heads}×{dim} (rot {rot})"),
            &a,
            &b,
        );
    }
}

#[test]
fn paged_cache_writes_and_decode_attention_match_their_references() {
    let g = gpu();
    let mut rng = Rng(0xCAFE);
    // (heads, kv_heads, head_dim, block size, context lengths, query heads per block). A
    // block takes up to 8 heads of one KV group (4 over 128 dims). Rows longer than 256
    // positions are split into parts (split-K) when the blocks leave SMs idle; the 128 rows of
    // 64/8 heads (1,024 blocks or more) of 1,600 positions need no split, and eight heads'
    // scores would outgrow 48 KiB of shared memory: a block takes four (eight where
    // `FORJA_ATTENTION_SHARED_KB` allows them).
    let eight_fit = g.attention_shared() >= 4 * 8 * (1600 + 32) + 512;
    let shapes = [
        (14, 2, 64, 16, vec![1u32, 17, 300], 7),
        (32, 8, 128, 16, vec![513, 2, 64], 4),
        (4, 1, 256, 32, vec![1000], 4),
        (8, 8, 64, 8, vec![9, 8, 7, 31], 1),
        (6, 2, 80, 16, vec![5, 37, 70], 3),
        (12, 2, 96, 16, vec![700, 5], 6),
        (10, 2, 64, 16, vec![2600], 5),
        (16, 2, 128, 16, vec![1500, 1], 8),
        (16, 1, 256, 16, vec![900, 3], 4),
        (8, 4, 256, 16, vec![40, 300], 2),
        (8, 2, 128, 16, vec![1, 3000, 20_000], 4),
        (64, 1, 32, 16, vec![12_500; 16], 8),
        (
            64,
            8,
            32,
            16,
            vec![1600; 128],
            if eight_fit { 8 } else { 4 },
        ),
    ];
    for (heads, kv_heads, dim, bs, lens, group) in shapes {
        let width = kv_heads * dim;
        let max_blocks = lens
            .iter()
            .map(|&l| (l as usize).div_ceil(bs))
            .max()
            .unwrap();
        let blocks = max_blocks * lens.len() + 3;
        // Each sequence's blocks scattered over the pool, in reverse order.
        let mut tables = Vec::new();
        for s in 0..lens.len() {
            tables.extend(
                (0..max_blocks)
                    .rev()
                    .map(|b| (b * lens.len() + s + 3) as u32),
            );
        }
        let slots = blocks * bs;
        // Write every position of every sequence through the cache kernel, checked against the
        // reference's writes.
        let mut kc = vec![f16::ZERO; slots * width];
        let mut vc = kc.clone();
        let (mut kr, mut vr) = (kc.clone(), kc.clone());
        for (s, &len) in lens.iter().enumerate() {
            let slot_of: Vec<u32> = (0..len as usize)
                .map(|j| tables[s * max_blocks + j / bs] * bs as u32 + (j % bs) as u32)
                .collect();
            let k = rng.values(len as usize * width, 1.5);
            let v = rng.values(len as usize * width, 1.5);
            g.reshape_and_cache(&k, &v, &mut kc, &mut vc, &slot_of, width)
                .unwrap();
            reference::reshape_and_cache(&k, &v, &mut kr, &mut vr, &slot_of, width).unwrap();
        }
        assert!(
            kc == kr && vc == vr,
            "reshape_and_cache {heads}/{kv_heads}×{dim}"
        );
        let p = PagedAttention {
            heads,
            kv_heads,
            head_dim: dim,
            block_size: bs,
            max_blocks,
            block_tables: tables,
            row_seqs: (0..lens.len() as u32).collect(),
            context_lens: lens.clone(),
            scale: 1.0 / (dim as f32).sqrt(),
            window: None,
            softcap: None,
        };
        let q = rng.values(lens.len() * heads * dim, 2.0);
        // Whole contexts, then the last 3,000 positions, with soft-capped scores.
        for (window, softcap) in [(None, None), (Some(3000), Some(30.0))] {
            let p = PagedAttention {
                window,
                softcap,
                ..p.clone()
            };
            let split = forja_kernels::cuda::attention_split(
                lens.len(),
                heads,
                kv_heads,
                dim,
                lens.iter()
                    .map(|&l| window.unwrap_or(l).min(l))
                    .max()
                    .unwrap() as usize,
                g.attention_shared(),
            );
            assert_eq!(
                split.group, group,
                "heads per block, {heads}/{kv_heads} × {dim}"
            );
            if lens.len() == 128 {
                assert_eq!(split.parts, 1, "{split:?}: 1,024 blocks need no split");
            }
            check(
                &format!(
                    "paged_attention {heads}/{kv_heads} heads × {dim}, blocks of {bs}, {:?}, \
                     window {window:?}, {split:?}",
                    &lens[..lens.len().min(4)]
                ),
                &g.paged_attention(&p, &q, &kc, &vc).unwrap(),
                &reference::paged_attention(&p, &q, &kc, &vc).unwrap(),
            );
        }
        // A prompt's rows (causal: row j sees positions 0..=j) of the last sequence, then with a
        // sliding window and soft-capped scores.
        let last = lens.len() - 1;
        let n = lens[last].min(40);
        let prompt = PagedAttention {
            row_seqs: vec![last as u32; n as usize],
            context_lens: (1..=n).collect(),
            ..p.clone()
        };
        let q = rng.values(n as usize * heads * dim, 2.0);
        for (window, softcap) in [(None, None), (Some(7), None), (Some(5), Some(1.5))] {
            let p = PagedAttention {
                window,
                softcap,
                ..prompt.clone()
            };
            check(
                &format!(
                    "paged_attention, {n} prompt rows of {heads}/{kv_heads} × {dim}, window \
                     {window:?}, softcap {softcap:?}"
                ),
                &g.paged_attention(&p, &q, &kc, &vc).unwrap(),
                &reference::paged_attention(&p, &q, &kc, &vc).unwrap(),
            );
        }
    }
}

#[test]
fn bad_shapes_are_errors_before_any_launch() {
    let g = gpu();
    assert!(g.rms_norm(&[1.0; 5], &[1.0; 4], 1e-6, 0.0).is_err());
    let p = PagedAttention {
        heads: 2,
        kv_heads: 1,
        head_dim: 4,
        block_size: 4,
        max_blocks: 1,
        block_tables: vec![9],
        row_seqs: vec![0],
        context_lens: vec![3],
        scale: 1.0,
        window: None,
        softcap: None,
    };
    let cache = vec![f16::ONE; 8 * 4];
    let e = g
        .paged_attention(&p, &[1.0; 8], &cache, &cache)
        .unwrap_err();
    assert!(e.to_string().contains("block 9 outside"), "{e}");
    let odd = PagedAttention {
        head_dim: 6,
        block_tables: vec![0],
        ..p
    };
    let cache = vec![f16::ONE; 4 * 6];
    let e = g
        .paged_attention(&odd, &[1.0; 12], &cache, &cache)
        .unwrap_err();
    assert!(e.to_string().contains("multiples of 4"), "{e}");
}

fn check_within(what: &str, got: &[f32], want: &[f32], tolerance: f32) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: an all-zero reference tests nothing");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
        / scale;
    println!("{what}: relative error {worst:.2e}");
    assert!(worst <= tolerance, "{what}: relative error {worst}");
}

fn halves(bits: &[u16]) -> Vec<f32> {
    bits.iter().map(|b| f16::from_bits(*b).to_f32()).collect()
}

fn act_out(g: &Gpu, a: &Act) -> Vec<f32> {
    match a {
        Act::F32(b) => g.download(b).unwrap(),
        Act::F16(b) => halves(&g.download(b).unwrap()),
    }
}

/// The kernels of the decoder's step (on device buffers) against their references.
#[test]
fn decoder_step_kernels_match_their_references() {
    let g = gpu();
    let mut rng = Rng(0xD1CE);
    // Embedding rows, from a table in f32 and in f16.
    let (vocab, cols) = (50, 96);
    let table = rng.values(vocab * cols, 1.0);
    let ids = [3u32, 49, 0, 3];
    for half in [false, true] {
        let mut out = g.alloc::<f32>(ids.len() * cols).unwrap();
        let w = g.upload_weight(&table, vocab, cols, half).unwrap();
        g.embed_rows(&mut out, &w, &g.upload(&ids).unwrap(), 4, 1.7)
            .unwrap();
        let stored: Vec<f32> = if half {
            table.iter().map(|v| f16::from_f32(*v).to_f32()).collect()
        } else {
            table.clone()
        };
        check(
            &format!("embed_rows, f16 table {half}"),
            &g.download(&out).unwrap(),
            &reference::embed_rows(&stored, &ids, cols, 1.7).unwrap(),
        );
    }
    // RMSNorm of picked rows into f32 and f16 inputs (rows the kernel keeps in registers, and
    // rows it loops over: not a multiple of 32, or longer than its registers hold); the
    // residual form.
    let rows = 5;
    for cols in [640, 4096, 100, 20_480] {
        let x = rng.values(rows * cols, 3.0);
        let w = rng.values(cols, 1.0);
        let pick = [4u32, 0, 2];
        let picked: Vec<f32> = pick
            .iter()
            .flat_map(|&r| x[r as usize * cols..][..cols].to_vec())
            .collect();
        let want = reference::rms_norm(&picked, &w, 1e-5, 0.0).unwrap();
        let (xd, wd, pd) = (
            g.upload(&x).unwrap(),
            g.upload(&w).unwrap(),
            g.upload(&pick).unwrap(),
        );
        for half in [false, true] {
            let mut o = g.alloc_act(pick.len() * cols, half).unwrap();
            g.rms_norm_rows(&mut o, &xd, Some(&pd), pick.len(), &wd, 1e-5, None)
                .unwrap();
            let tol = if half { 1e-3 } else { TOLERANCE };
            check_within(
                &format!("rms_norm_rows ({cols} values, f16 out: {half})"),
                &act_out(&g, &o),
                &want,
                tol,
            );
        }
    }
    let cols = 640;
    let x = rng.values(rows * cols, 3.0);
    let w = rng.values(cols, 1.0);
    let wd = g.upload(&w).unwrap();
    let y = rng.values(rows * cols, 2.0);
    let mut xr = x.clone();
    reference::add_rms_norm(&mut xr, &y, &w, 1e-5).unwrap();
    let mut xg = g.upload(&x).unwrap();
    g.add_rms_norm(&mut xg, &g.upload(&y).unwrap(), &wd, rows, 1e-5)
        .unwrap();
    check("add_rms_norm", &g.download(&xg).unwrap(), &xr);
    // Gated activations, each kind.
    let (rows, ff) = (3, 4864);
    let gu = rng.values(rows * 2 * ff, 4.0);
    let gud = g.upload(&gu).unwrap();
    for act in 0..4 {
        let mut o = g.alloc_act(rows * ff, false).unwrap();
        g.gated_act(&mut o, &gud, rows, ff, act, None).unwrap();
        check(
            &format!("gated_act {act}"),
            &act_out(&g, &o),
            &reference::gated_act(&gu, ff, act).unwrap(),
        );
    }
    // Fused bias + QK-norm + RoPE + cache writes.
    let shapes = [
        (4, 2, 64, 32, false, true),
        (9, 3, 64, 32, true, false),
        (8, 2, 128, 32, false, false),
    ];
    for (heads, kv_heads, dim, half, interleaved, extras) in shapes {
        let s = reference::QkvShape {
            heads,
            kv_heads,
            dim,
            half,
            interleaved,
        };
        let rows = 6;
        let total = (heads + 2 * kv_heads) * dim;
        let qkv = rng.values(rows * total, 2.0);
        let bias = rng.values(total, 0.5);
        let (qn, kn) = (rng.values(dim, 1.0), rng.values(dim, 1.0));
        let positions: Vec<u32> = (0..rows as u32).map(|r| r * 37 + 1).collect();
        let slots: Vec<u32> = (0..rows as u32).rev().map(|r| r * 3 + 1).collect();
        let npos = 300;
        let angles: Vec<(f32, f32)> = (0..npos * half)
            .map(|i| {
                let a = (i / half) as f64 / 10000f64.powf((i % half) as f64 / half as f64);
                (a.cos() as f32, a.sin() as f32)
            })
            .collect();
        let cos: Vec<f32> = angles.iter().map(|a| a.0).collect();
        let sin: Vec<f32> = angles.iter().map(|a| a.1).collect();
        let width = kv_heads * dim;
        let cache_len = 20 * width;
        let (mut kr, mut vr) = (vec![f16::ZERO; cache_len], vec![f16::ZERO; cache_len]);
        let q_want = reference::qkv_rope_cache(
            &qkv,
            extras.then_some(&bias[..]),
            extras.then_some((&qn[..], &kn[..])),
            1e-6,
            (&cos, &sin),
            &positions,
            &slots,
            s,
            &mut kr,
            &mut vr,
        )
        .unwrap();
        let (bd, qnd, knd) = (
            g.upload(&bias).unwrap(),
            g.upload(&qn).unwrap(),
            g.upload(&kn).unwrap(),
        );
        let (mut kc, mut vc) = (
            g.alloc::<u16>(cache_len).unwrap(),
            g.alloc::<u16>(cache_len).unwrap(),
        );
        let mut q = g.alloc::<f32>(rows * heads * dim).unwrap();
        g.qkv_rope_cache(
            &g.upload(&qkv).unwrap(),
            extras.then_some(&bd),
            extras.then_some((&qnd, &knd)),
            1e-6,
            (
                &g.upload(&cos).unwrap(),
                &g.upload(&sin).unwrap(),
                half,
                interleaved,
            ),
            &g.upload(&positions).unwrap(),
            &g.upload(&slots).unwrap(),
            &mut q,
            (&mut kc, &mut vc),
            rows,
            (heads, kv_heads, dim),
        )
        .unwrap();
        let what = format!("qkv_rope_cache {heads}/{kv_heads}×{dim}, interleaved {interleaved}");
        check(&what, &g.download(&q).unwrap(), &q_want);
        // f16 writes: the same rounding of values within float error of each other.
        check_within(
            &format!("{what}, keys"),
            &halves(&g.download(&kc).unwrap()),
            &halves_of(&kr),
            1e-3,
        );
        check_within(
            &format!("{what}, values"),
            &halves(&g.download(&vc).unwrap()),
            &halves_of(&vr),
            1e-3,
        );
    }
    // Greedy picks: many blocks per row, ties to the first index.
    let (rows, cols) = (3, 50_000);
    let mut x = rng.values(rows * cols, 5.0);
    x[cols + 777] = 9.0;
    x[cols + 40_000] = 9.0;
    x[2 * cols + 49_999] = 9.5;
    let mut keys = g.alloc::<u64>(rows).unwrap();
    g.argmax_rows(&mut keys, &g.upload(&x).unwrap(), rows, cols)
        .unwrap();
    let got: Vec<u32> = g
        .download(&keys)
        .unwrap()
        .into_iter()
        .map(forja_kernels::cuda::argmax_index)
        .collect();
    assert_eq!(got, reference::argmax_rows(&x, cols).unwrap());
    assert_eq!(&got[1..], &[777, 49_999]);
}

fn halves_of(v: &[f16]) -> Vec<f32> {
    v.iter().map(|h| h.to_f32()).collect()
}

/// Products through cuBLAS (f32 and f16 weights, `beta` 0 and 1) against f64 sums, and a
/// recorded graph replayed on new inputs.
#[test]
fn products_and_graphs_match_their_references() {
    let g = gpu();
    let mut rng = Rng(0x6E33);
    for (rows, out, inp) in [(1, 960, 576), (7, 1536, 896), (64, 256, 4096)] {
        let w = rng.values(out * inp, 0.1);
        let x = rng.values(rows * inp, 1.0);
        let y0 = rng.values(rows * out, 1.0);
        for half in [false, true] {
            // The reference multiplies the values the GPU sees: f16-rounded when half.
            let round = |v: &[f32]| -> Vec<f32> {
                if half {
                    v.iter().map(|a| f16::from_f32(*a).to_f32()).collect()
                } else {
                    v.to_vec()
                }
            };
            let (wr, xr) = (round(&w), round(&x));
            let wd = g.upload_weight(&w, out, inp, half).unwrap();
            let mut xa = g.alloc_act(rows * inp, half).unwrap();
            g.convert(&mut xa, &g.upload(&x).unwrap(), rows * inp, None)
                .unwrap();
            for beta in [0.0f32, 1.0] {
                let want: Vec<f32> = (0..rows * out)
                    .map(|i| {
                        let (r, o) = (i / out, i % out);
                        let dot: f64 = (0..inp)
                            .map(|k| f64::from(xr[r * inp + k]) * f64::from(wr[o * inp + k]))
                            .sum();
                        (dot + f64::from(beta) * f64::from(y0[i])) as f32
                    })
                    .collect();
                let mut y = g.upload(&y0).unwrap();
                g.gemm(&mut y, &xa, rows, &wd, beta).unwrap();
                check(
                    &format!("gemm {rows}×{inp} by [{out}, {inp}], f16 {half}, beta {beta}"),
                    &g.download(&y).unwrap(),
                    &want,
                );
            }
        }
    }
    // A graph of two launches, recorded once, replayed after its input changed.
    let cols = 512;
    let w = rng.values(cols, 1.0);
    let wd = g.upload(&w).unwrap();
    let mut x = g.upload(&rng.values(2 * cols, 1.0)).unwrap();
    let mut o = g.alloc_act(2 * cols, false).unwrap();
    let mut keys = g.alloc::<u64>(2).unwrap();
    let o_ptr = &mut o;
    let graph = {
        let run = |o: &mut Act,
                   keys: &mut forja_kernels::cuda::CudaSlice<u64>,
                   x: &forja_kernels::cuda::CudaSlice<f32>| {
            g.rms_norm_rows(o, x, None, 2, &wd, 1e-6, None)?;
            match o {
                Act::F32(b) => g.argmax_rows(keys, b, 2, cols),
                Act::F16(_) => unreachable!(),
            }
        };
        g.capture(|| run(o_ptr, &mut keys, &x)).unwrap()
    };
    for _ in 0..3 {
        let fresh = rng.values(2 * cols, 1.0);
        g.upload_into(&fresh, &mut x).unwrap();
        g.replay(&graph).unwrap();
        let want = reference::rms_norm(&fresh, &w, 1e-6, 0.0).unwrap();
        check("graph replay", &act_out(&g, o_ptr), &want);
        let picks: Vec<u32> = g
            .download(&keys)
            .unwrap()
            .into_iter()
            .map(forja_kernels::cuda::argmax_index)
            .collect();
        assert_eq!(picks, reference::argmax_rows(&want, cols).unwrap());
    }
}
