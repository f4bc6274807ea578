//! Each training op against the composite of candle ops it replaces: the same forward values
//! and the same gradients (of `Σ out·w` for a random `w`) for every input, on random data.

#![allow(clippy::unwrap_used, reason = "test code fails loudly")]

use std::sync::Arc;

use candle_core::{D, Device, Tensor, Var};
use forja_arch::decoder_config::{Activation, RopeScaling};
use forja_quant::{QMatrix, QuantType};

use super::*;
use crate::lora::Lora;
use crate::rope::{Rope, RopeStyle};

fn random(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut state = seed;
    let v: Vec<f32> = (0..n)
        .map(|_| (crate::lora::splitmix64(&mut state) >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Relative error of `b` against `a`: max |a − b| / max |a|.
fn rel(a: &Tensor, b: &Tensor) -> f32 {
    let scale = a
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(scale > 0.0, "all-zero reference");
    crate::test_util::max_abs_diff(a, b) / scale
}

/// `Σ out·w` backward: the gradients of `vars`.
fn grads(out: &Tensor, w: &Tensor, vars: &[&Var]) -> Vec<Tensor> {
    let g = (out * w).unwrap().sum_all().unwrap().backward().unwrap();
    vars.iter()
        .map(|v| g.get(v.as_tensor()).unwrap().clone())
        .collect()
}

fn check(name: &str, fused: (&Tensor, Vec<Tensor>), reference: (&Tensor, Vec<Tensor>), tol: f32) {
    let e = rel(reference.0, fused.0);
    assert!(e < tol, "{name}: forward off by {e}");
    for (i, (r, f)) in reference.1.iter().zip(&fused.1).enumerate() {
        let e = rel(r, f);
        assert!(e < tol, "{name}: gradient {i} off by {e}");
    }
}

#[test]
fn lora_matmul_matches_base_plus_adapter_with_and_without_dropout() {
    let (n, inp, out, rank) = (37, 64, 48, 8);
    let w = random(&[out, inp], 1);
    // Q8_0 blocks of `w`: the quantized base against its own dequantized values.
    let q = forja_quant::quantize(
        QuantType::Q8_0,
        &w.flatten_all().unwrap().to_vec1().unwrap(),
        inp,
    )
    .unwrap();
    let qm = Arc::new(QMatrix::new(QuantType::Q8_0, out, inp, q).unwrap());
    let wq = Tensor::from_vec(qm.dequantize().unwrap(), (out, inp), &Device::Cpu).unwrap();
    for (weight, dense, dropout) in [
        (FrozenWeight::Dense(w.clone()), w.clone(), 0.0),
        (FrozenWeight::Dense(w.clone()), w.clone(), 0.3),
        (FrozenWeight::Quantized(Arc::clone(&qm)), wq.clone(), 0.1),
    ] {
        let x = Var::from_tensor(&random(&[n, inp], 2)).unwrap();
        let a = Var::from_tensor(&(random(&[rank, inp], 3) * 0.1).unwrap()).unwrap();
        let b = Var::from_tensor(&(random(&[out, rank], 4) * 0.1).unwrap()).unwrap();
        let make = || {
            let mut l =
                Lora::new(a.as_tensor().clone(), b.as_tensor().clone(), 2.0, dropout).unwrap();
            l.a = a.as_tensor().clone();
            l.b = b.as_tensor().clone();
            l.training = true;
            l.seed_dropout(99);
            l
        };
        let wo = random(&[n, out], 5);
        let fused = lora_matmul(x.as_tensor(), weight.clone(), &make()).unwrap();
        let fg = grads(&fused, &wo, &[&x, &a, &b]);
        let l = make();
        let reference = (x.as_tensor().matmul(&dense.t().unwrap()).unwrap()
            + l.delta(x.as_tensor()).unwrap())
        .unwrap();
        let rg = grads(&reference, &wo, &[&x, &a, &b]);
        // The quantized base quantizes x to 8 bits in its forward pass.
        let tol = if matches!(weight, FrozenWeight::Quantized(_)) {
            2e-2
        } else {
            1e-5
        };
        check(
            &format!("lora dropout {dropout}"),
            (&fused, fg),
            (&reference, rg),
            tol,
        );
    }
}

#[test]
fn quantized_input_gradient_matches_the_dequantized_product_across_row_blocks() {
    // More rows than one dequantized block, not a multiple of it.
    let (n, inp, out) = (3, 64, 600);
    let w = random(&[out, inp], 6);
    let q = forja_quant::quantize(
        QuantType::Q4_0,
        &w.flatten_all().unwrap().to_vec1().unwrap(),
        inp,
    )
    .unwrap();
    let m = QMatrix::new(QuantType::Q4_0, out, inp, q).unwrap();
    let wd = Tensor::from_vec(m.dequantize().unwrap(), (out, inp), &Device::Cpu).unwrap();
    let g = random(&[n, out], 7);
    let mut dx = vec![0f32; n * inp];
    quantized_input_grad(
        &m,
        &g.flatten_all().unwrap().to_vec1().unwrap(),
        n,
        &mut dx,
        false,
    )
    .unwrap();
    let dx = Tensor::from_vec(dx, (n, inp), &Device::Cpu).unwrap();
    assert!(rel(&g.matmul(&wd).unwrap(), &dx) < 1e-5);
}

#[test]
fn rms_norm_rope_and_gated_match_candles_ops() {
    let x = Var::from_tensor(&random(&[2, 5, 32], 8)).unwrap();
    let scale: Vec<f32> = (0..32).map(|i| 0.5 + i as f32 / 32.0).collect();
    let st = Tensor::new(scale.as_slice(), &Device::Cpu).unwrap();
    let w = random(&[2, 5, 32], 9);
    let fused = rms_norm(x.as_tensor(), &scale, 1e-5).unwrap();
    let fg = grads(&fused, &w, &[&x]);
    let xt = x.as_tensor();
    let ms = xt.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    let reference = xt
        .broadcast_div(&(ms + 1e-5).unwrap().sqrt().unwrap())
        .unwrap()
        .broadcast_mul(&st)
        .unwrap();
    let rg = grads(&reference, &w, &[&x]);
    check("rms norm", (&fused, fg), (&reference, rg), 1e-5);

    for (style, partial) in [
        (RopeStyle::Neox, 1.0),
        (RopeStyle::Interleaved, 1.0),
        (RopeStyle::Neox, 0.5),
    ] {
        let rope = Rope::new(32, partial, 10_000.0, &RopeScaling::None, style, 64).unwrap();
        // Positions 3.. (a later chunk of a sequence).
        let fused = rope.apply(x.as_tensor(), 3).unwrap();
        let fg = grads(&fused, &w, &[&x]);
        let reference = rope
            .apply(&x.as_tensor().detach().copy().unwrap(), 3)
            .unwrap();
        // The composite path on a tracked copy: Var through an identity op.
        let xr = Var::from_tensor(x.as_tensor()).unwrap();
        let composite = composite_rope(&rope, xr.as_tensor(), 3);
        let rg = grads(&composite, &w, &[&xr]);
        check(
            &format!("rope {style:?} {partial}"),
            (&fused, fg),
            (&composite, rg),
            1e-5,
        );
        assert!(rel(&reference, &fused) < 1e-5);
    }

    let g = Var::from_tensor(&(random(&[7, 40], 10) * 4.0).unwrap()).unwrap();
    let u = Var::from_tensor(&random(&[7, 40], 11)).unwrap();
    let wg = random(&[7, 40], 12);
    for act in [Activation::Silu, Activation::GeluTanh] {
        let fused = gated(g.as_tensor(), u.as_tensor(), act).unwrap().unwrap();
        let fg = grads(&fused, &wg, &[&g, &u]);
        let reference =
            (crate::mlp::activate(g.as_tensor(), act).unwrap() * u.as_tensor()).unwrap();
        let rg = grads(&reference, &wg, &[&g, &u]);
        check(&format!("{act:?}"), (&fused, fg), (&reference, rg), 1e-4);
    }
    assert!(
        gated(g.as_tensor(), u.as_tensor(), Activation::Relu)
            .unwrap()
            .is_none()
    );
}

/// RoPE from candle ops on `[heads, t, dim]` (what `Rope::apply` computes for untracked
/// tensors), differentiable.
fn composite_rope(rope: &Rope, x: &Tensor, start: usize) -> Tensor {
    let (_, t, d) = x.dims3().unwrap();
    let half = rope.half_dims();
    let (cos, sin) = rope.table(start, t);
    let cos = Tensor::from_vec(cos, (1, t, half), &Device::Cpu).unwrap();
    let sin = Tensor::from_vec(sin, (1, t, half), &Device::Cpu).unwrap();
    let heads = x.dim(0).unwrap();
    let (x1, x2, rest) = match rope.style() {
        RopeStyle::Neox => (
            x.narrow(2, 0, half).unwrap(),
            x.narrow(2, half, half).unwrap(),
            x.narrow(2, 2 * half, d - 2 * half).unwrap(),
        ),
        RopeStyle::Interleaved => {
            let p = x.reshape((heads, t, half, 2)).unwrap();
            (
                p.narrow(3, 0, 1).unwrap().squeeze(3).unwrap(),
                p.narrow(3, 1, 1).unwrap().squeeze(3).unwrap(),
                x.narrow(2, d, 0).unwrap(),
            )
        }
    };
    let a = (x1.broadcast_mul(&cos).unwrap() - x2.broadcast_mul(&sin).unwrap()).unwrap();
    let b = (x2.broadcast_mul(&cos).unwrap() + x1.broadcast_mul(&sin).unwrap()).unwrap();
    match rope.style() {
        RopeStyle::Neox => Tensor::cat(&[a, b, rest], 2).unwrap(),
        RopeStyle::Interleaved => Tensor::stack(&[a, b], 3)
            .unwrap()
            .reshape((heads, t, d))
            .unwrap(),
    }
}

/// Softmax attention from candle ops: `q` `[h, n, d]` at positions `start..`, `k`, `v`
/// `[kv, s, d]`, grouped heads, causal and windowed, soft-capped.
fn composite_attention(q: &Tensor, k: &Tensor, v: &Tensor, op: CausalAttention) -> Tensor {
    let (h, n, _) = q.dims3().unwrap();
    let (kv, s, _) = k.dims3().unwrap();
    let group = h / kv;
    let mut mask = vec![0f32; n * s];
    for i in 0..n {
        let keys = op.keys_for_test(i);
        for j in 0..s {
            if !keys.contains(&j) {
                mask[i * s + j] = f32::NEG_INFINITY;
            }
        }
    }
    let mask = Tensor::from_vec(mask, (n, s), &Device::Cpu).unwrap();
    let mut outs = Vec::new();
    for head in 0..h {
        let qh = q.get(head).unwrap();
        let kh = k.get(head / group).unwrap();
        let vh = v.get(head / group).unwrap();
        let mut sc = (qh.matmul(&kh.t().unwrap()).unwrap() * f64::from(op.scale)).unwrap();
        if let Some(cap) = op.softcap {
            let cap = f64::from(cap);
            sc = ((sc / cap).unwrap().tanh().unwrap() * cap).unwrap();
        }
        let sc = sc.broadcast_add(&mask).unwrap();
        let max = sc.max_keepdim(D::Minus1).unwrap().detach();
        let e = sc.broadcast_sub(&max).unwrap().exp().unwrap();
        let p = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
        outs.push(p.matmul(&vh).unwrap());
    }
    Tensor::stack(&outs, 0).unwrap()
}

#[test]
fn attention_matches_softmax_attention_with_groups_windows_and_softcap() {
    let cases = [
        // h, kv, n, s, d, start, window, softcap
        (4, 2, 9, 9, 16, 0, None, None),
        (6, 2, 5, 12, 8, 7, Some(4), None),
        (2, 1, 11, 11, 16, 0, Some(3), Some(5.0f32)),
        (3, 3, 1, 6, 8, 5, None, None),
        // Several blocks of query rows.
        (2, 1, 150, 160, 16, 10, Some(70), None),
        (4, 2, 130, 130, 8, 0, None, Some(3.0)),
    ];
    for (i, &(h, kv, n, s, d, start, window, softcap)) in cases.iter().enumerate() {
        let seed = 20 + 5 * i as u64;
        let q = Var::from_tensor(&(random(&[h, n, d], seed) * 2.0).unwrap()).unwrap();
        let k = Var::from_tensor(&(random(&[kv, s, d], seed + 1) * 2.0).unwrap()).unwrap();
        let v = Var::from_tensor(&random(&[kv, s, d], seed + 2)).unwrap();
        let w = random(&[h, n, d], seed + 3);
        let op = CausalAttention {
            scale: 1.0 / (d as f32).sqrt(),
            softcap,
            window,
            start,
        };
        let fused = causal_attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), op).unwrap();
        let fg = grads(&fused, &w, &[&q, &k, &v]);
        let reference = composite_attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), op);
        let rg = grads(&reference, &w, &[&q, &k, &v]);
        check(
            &format!("attention case {i}"),
            (&fused, fg),
            (&reference, rg),
            1e-5,
        );
    }
    // Shapes that do not fit are errors, not panics.
    let q = Var::from_tensor(&random(&[3, 4, 8], 1)).unwrap();
    let k = random(&[2, 4, 8], 2);
    let op = CausalAttention {
        scale: 1.0,
        softcap: None,
        window: None,
        start: 0,
    };
    assert!(causal_attention(q.as_tensor(), &k, &k, op).is_err());
}

#[test]
fn head_loss_matches_logits_then_cross_entropy_in_any_block_size() {
    let (n, hidden, vocab) = (7, 32, 50);
    let w = random(&[vocab, hidden], 40);
    let targets: Vec<u32> = (0..n as u32).map(|i| (i * 13) % vocab as u32).collect();
    for (softcap, block) in [(None, 100), (None, 3), (Some(2.5f32), 2), (Some(2.5), 1)] {
        let x = Var::from_tensor(&(random(&[n, hidden], 41) * 2.0).unwrap()).unwrap();
        let fused = head_loss(
            x.as_tensor(),
            FrozenWeight::Dense(w.clone()),
            vocab,
            &targets,
            softcap.map(f64::from),
            block,
        )
        .unwrap();
        let one = Tensor::new(1f32, &Device::Cpu).unwrap();
        let fg = grads(&fused, &one, &[&x]);
        let mut z = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
        if let Some(c) = softcap {
            let c = f64::from(c);
            z = ((z / c).unwrap().tanh().unwrap() * c).unwrap();
        }
        let reference = crate::training::cross_entropy_sum(&z, &targets).unwrap();
        let rg = grads(&reference, &one, &[&x]);
        check(
            &format!("head softcap {softcap:?} block {block}"),
            (&fused, fg),
            (&reference, rg),
            1e-5,
        );
    }
    let x = random(&[2, hidden], 42);
    let far = head_loss(
        &x,
        FrozenWeight::Dense(w),
        vocab,
        &[1, vocab as u32],
        None,
        4,
    );
    assert!(far.is_err(), "a target outside the vocabulary");
}

#[test]
fn dropout_mask_drawn_in_parts_is_the_streams_sequence() {
    // Long enough to be drawn in parts on the worker pool.
    let (stream, p, n) = (0x1234_5678_9abc_def0u64, 0.3f32, 100_003);
    let mask = crate::lora::dropout_mask(stream, p, n);
    let mut state = stream;
    let threshold = (f64::from(p) * 65536.0).round() as u64;
    let mut dropped = 0;
    let mut draw = 0;
    for (i, &m) in mask.iter().enumerate() {
        if i % 4 == 0 {
            draw = crate::lora::splitmix64(&mut state);
        }
        let bits = (draw >> (16 * (i % 4))) & 0xFFFF;
        let want = if bits < threshold {
            0.0
        } else {
            1.0 / (1.0 - p)
        };
        assert_eq!(m, want, "value {i}");
        dropped += usize::from(m == 0.0);
    }
    let rate = dropped as f64 / n as f64;
    assert!((rate - 0.3).abs() < 0.01, "dropped {rate}");
}

#[test]
fn products_split_over_the_pool_match_the_definition() {
    let values = |n: usize, seed: u64| -> Vec<f32> { random(&[n], seed).to_vec1::<f32>().unwrap() };
    // (m, k, n, a transposed, accumulate): bands of rows, bands of columns, a small product.
    let cases = [
        (200, 64, 50, false, false),
        (8, 300, 300, true, true),
        (3, 5, 7, false, true),
    ];
    for (i, &(m, k, n, at, acc)) in cases.iter().enumerate() {
        let (av, bv) = (values(m * k, 1 + i as u64), values(k * n, 9 + i as u64));
        let a = if at {
            Mat::rows(&av, k, m).t()
        } else {
            Mat::rows(&av, m, k)
        };
        let b = Mat::rows(&bv, k, n);
        let start = values(m * n, 20 + i as u64);
        let mut out = start.clone();
        gemm(&mut out, a, b, 0.5, acc).unwrap();
        for r in 0..m {
            for c in 0..n {
                let sum: f32 = (0..k)
                    .map(|j| a.data[r * a.rs + j * a.cs] * b.data[j * b.rs + c * b.cs])
                    .sum();
                let want = 0.5 * sum + if acc { start[r * n + c] } else { 0.0 };
                let got = out[r * n + c];
                assert!(
                    (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "case {i} ({r}, {c}): {got} vs {want}"
                );
            }
        }
    }
}
