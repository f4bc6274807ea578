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

use forja_kernels::cuda::Gpu;
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
    assert!(worst <= TOLERANCE, "{what}: relative error {worst}");
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
    // (heads, kv_heads, head_dim, block size, context lengths)
    let shapes = [
        (14, 2, 64, 16, vec![1u32, 17, 300]),
        (32, 8, 128, 16, vec![513, 2, 64]),
        (4, 1, 256, 32, vec![1000]),
        (8, 8, 64, 8, vec![9, 8, 7, 31]),
    ];
    for (heads, kv_heads, dim, bs, lens) in shapes {
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
        check(
            &format!("paged_attention {heads}/{kv_heads} heads × {dim}, blocks of {bs}, {lens:?}"),
            &g.paged_attention(&p, &q, &kc, &vc).unwrap(),
            &reference::paged_attention(&p, &q, &kc, &vc).unwrap(),
        );
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
    let long = PagedAttention {
        max_blocks: 4000,
        block_tables: vec![0; 4000],
        context_lens: vec![16000],
        row_seqs: vec![0],
        ..p
    };
    let cache = vec![f16::ONE; 16000 * 4];
    let e = g
        .paged_attention(&long, &[1.0; 8], &cache, &cache)
        .unwrap_err();
    assert!(e.to_string().contains("shared memory"), "{e}");
}
