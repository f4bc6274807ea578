//! LoRA on `Linear`: the output is the base projection plus the scaled low-rank update; dropout
//! acts only while training; gradients reach the input through a quantized base exactly as
//! through its dequantized weights, and reach the adapter's matrices.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use candle_core::{Device, Tensor, Var};
use common::{max_abs, max_abs_diff, noise};
use forja_arch::GgmlType;
use forja_models::linear::{Linear, LinearWeight};
use forja_models::weight_source::{GgufSource, WeightSource};
use forja_models::{AdapterRows, Lora};
use forja_testkit::gguf_builder::{GgufBuilder, Meta};

fn values(n: usize, seed: u64, shape: (usize, usize)) -> Tensor {
    let v: Vec<f32> = noise(n, seed)
        .iter()
        .map(|&b| f32::from(b) / 128.0 - 1.0)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn lora_adds_the_scaled_low_rank_update() {
    let (out_dim, in_dim, rank) = (12, 16, 3);
    let w = values(out_dim * in_dim, 1, (out_dim, in_dim));
    let a = values(rank * in_dim, 2, (rank, in_dim));
    let b = values(out_dim * rank, 3, (out_dim, rank));
    let x = values(5 * in_dim, 4, (5, in_dim));
    let mut linear = Linear::new(LinearWeight::Dense(w.clone()), None);
    let base = linear.forward(&x).unwrap();
    linear.lora = Some(Lora::new(a.clone(), b.clone(), 2.5, 0.0).unwrap());
    let got = linear.forward(&x).unwrap();
    let want = (x.matmul(&w.t().unwrap()).unwrap()
        + (x.matmul(&a.t().unwrap())
            .unwrap()
            .matmul(&b.t().unwrap())
            .unwrap()
            * 2.5)
            .unwrap())
    .unwrap();
    assert!(max_abs_diff(&got, &want) < 1e-5);
    assert!(
        max_abs_diff(&got, &base) > 0.1,
        "the adapter changes the output"
    );
}

#[test]
fn dropout_acts_only_while_training() {
    let (out_dim, in_dim, rank) = (8, 64, 4);
    let w = values(out_dim * in_dim, 5, (out_dim, in_dim));
    let x = values(32 * in_dim, 6, (32, in_dim));
    let mut linear = Linear::new(LinearWeight::Dense(w), None);
    let lora = Lora::new(
        values(rank * in_dim, 7, (rank, in_dim)),
        values(out_dim * rank, 8, (out_dim, rank)),
        1.0,
        0.5,
    )
    .unwrap();
    lora.seed_dropout(42);
    linear.lora = Some(lora);
    let eval_a = linear.forward(&x).unwrap();
    let eval_b = linear.forward(&x).unwrap();
    assert_eq!(max_abs_diff(&eval_a, &eval_b), 0.0);
    linear.lora.as_mut().unwrap().training = true;
    let train_a = linear.forward(&x).unwrap();
    let train_b = linear.forward(&x).unwrap();
    assert!(
        max_abs_diff(&train_a, &eval_a) > 0.01,
        "dropout changed nothing"
    );
    assert!(
        max_abs_diff(&train_a, &train_b) > 0.01,
        "each call draws a new mask"
    );
}

#[test]
fn gradients_flow_through_a_quantized_base_as_through_its_dequantized_weights() {
    let (rows, cols, rank) = (32usize, 256usize, 4usize);
    let t = GgmlType::Q4_1;
    let per_block = t.block().0 as usize;
    let size = t.block().1 as usize;
    let mut data = noise(rows * cols / per_block * size, 11);
    for blk in data.chunks_exact_mut(size) {
        for at in [0, 2] {
            blk[at + 1] = 0x20 | (blk[at + 1] & 0x07);
        }
    }
    let builder = GgufBuilder::new()
        .meta("general.architecture", Meta::Str("llama".into()))
        .tensor_data("w.weight", &[cols as u64, rows as u64], t.id(), data);
    let file = tempfile::NamedTempFile::with_suffix(".gguf").unwrap();
    std::fs::write(file.path(), builder.bytes()).unwrap();
    let quantized = GgufSource::open(file.path(), &Device::Cpu, false).unwrap();
    let exact = GgufSource::open(file.path(), &Device::Cpu, true).unwrap();
    let a = values(rank * cols, 12, (rank, cols));
    let b = values(rows * rank, 13, (rows, rank));
    let x0 = values(6 * cols, 14, (6, cols));
    let upstream = values(6 * rows, 15, (6, rows));
    let grads_of = |weight: LinearWeight| {
        let mut linear = Linear::new(weight, None);
        let a = Var::from_tensor(&a).unwrap();
        let b = Var::from_tensor(&b).unwrap();
        linear.lora =
            Some(Lora::new(a.as_tensor().clone(), b.as_tensor().clone(), 0.5, 0.0).unwrap());
        let x = Var::from_tensor(&x0).unwrap();
        let y = linear.forward(x.as_tensor()).unwrap();
        let loss = (y * &upstream).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        [x.as_tensor(), a.as_tensor(), b.as_tensor()].map(|t| g.get(t).unwrap().clone())
    };
    let q = grads_of(quantized.linear("w.weight").unwrap());
    let d = grads_of(exact.linear("w.weight").unwrap());
    // The input's gradient goes through the weight's dequantized rows in both (the forward's
    // 8-bit activation rounding does not enter it); A's and B's do not involve the base weight.
    for (name, (gq, gd)) in ["x", "A", "B"].iter().zip(q.iter().zip(&d)) {
        let scale = max_abs(gd);
        let diff = max_abs_diff(gq, gd);
        assert!(
            scale > 0.0 && diff <= 1e-4 * scale,
            "{name}: {diff} of {scale}"
        );
    }
}

#[test]
fn served_adapters_update_only_their_rows_each_row_as_if_alone() {
    // `in` not a multiple of 8, so the row kernel's tail is used too.
    let (out_dim, in_dim, rank) = (12, 43, 3);
    let w = values(out_dim * in_dim, 21, (out_dim, in_dim));
    let x = values(6 * in_dim, 22, (6, in_dim));
    let mats = |seed| {
        (
            values(rank * in_dim, seed, (rank, in_dim)),
            values(out_dim * rank, seed + 1, (out_dim, rank)),
        )
    };
    let (ax, bx) = mats(23);
    let (ay, by) = mats(25);
    let mut linear = Linear::new(LinearWeight::Dense(w.clone()), None);
    linear.served = vec![
        (1, Lora::new(ax.clone(), bx.clone(), 1.5, 0.0).unwrap()),
        (2, Lora::new(ay.clone(), by.clone(), 0.5, 0.0).unwrap()),
    ];
    // Rows 0–1 use no adapter, 2–3 and 5 adapter 1, 4 adapter 2.
    let rows = AdapterRows::new(
        &[(None, 2), (Some(1), 2), (Some(2), 1), (Some(1), 1)],
        &Device::Cpu,
    )
    .unwrap();
    let got = linear.forward_rows(&x, &rows).unwrap();
    let base = x.matmul(&w.t().unwrap()).unwrap();
    for (row, adapter) in [None, None, Some(1), Some(1), Some(2), Some(1)]
        .into_iter()
        .enumerate()
    {
        let xr = x.narrow(0, row, 1).unwrap();
        let want = base.narrow(0, row, 1).unwrap();
        let want = match adapter {
            None => want,
            Some(id) => {
                let (a, b, s) = if id == 1 {
                    (&ax, &bx, 1.5)
                } else {
                    (&ay, &by, 0.5)
                };
                let delta = (xr
                    .matmul(&a.t().unwrap())
                    .unwrap()
                    .matmul(&b.t().unwrap())
                    .unwrap()
                    * s)
                    .unwrap();
                (want + delta).unwrap()
            }
        };
        let diff = max_abs_diff(&got.narrow(0, row, 1).unwrap(), &want);
        assert!(diff < 1e-5, "row {row} ({adapter:?}) differs by {diff}");
    }
    assert!(
        max_abs_diff(
            &got.narrow(0, 2, 1).unwrap(),
            &base.narrow(0, 2, 1).unwrap()
        ) > 0.1,
        "the adapter changes its rows"
    );
    // Each row's update has the same bits whichever rows share the call.
    let lora = &linear.served[0].1;
    let together = lora.delta(&x).unwrap();
    for row in 0..6 {
        let alone = lora.delta(&x.narrow(0, row, 1).unwrap()).unwrap();
        assert_eq!(
            max_abs_diff(&together.narrow(0, row, 1).unwrap(), &alone),
            0.0,
            "row {row}"
        );
    }
    // Without served rows, served adapters cost nothing and change nothing.
    let plain = linear.forward(&x).unwrap();
    assert_eq!(max_abs_diff(&plain, &base), 0.0);
}
