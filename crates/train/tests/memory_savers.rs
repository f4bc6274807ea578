//! Gradient checkpointing and packing change how training uses memory and batches, never what
//! it learns: checkpointed runs give the ordinary run's losses, gradients and adapters (LoRA
//! dropout included), the output head in chunks of rows the whole head's, and packed examples
//! the unpacked ones' losses.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use candle_core::Device;
use forja_models::Decoder;
use forja_testkit::fixtures_dir;
use forja_train::examples::pack;
use forja_train::trainer::evaluate;
use forja_train::{Adapters, Example, Init, LoraSpec, StepReport, TrainConfig, attach, train};

fn tiny(family: &str) -> Decoder {
    forja_models::loader::load(&fixtures_dir().join("tiny").join(family), &Device::Cpu).unwrap()
}

/// Examples of different lengths, the loss on their second half.
fn examples(n: u32) -> Vec<Example> {
    (0..n)
        .map(|k| {
            let len = 6 + (k as usize * 5) % 11;
            let ids: Vec<u32> = (0..len as u32).map(|i| (i * 7 + k * 13) % 90 + 3).collect();
            let trained = (0..len).map(|i| i >= len / 2).collect();
            Example::new(ids, trained)
        })
        .collect()
}

fn config(batch: usize, grad_accum: usize, steps: usize, shuffle: bool) -> TrainConfig {
    TrainConfig {
        lr: 5e-3,
        weight_decay: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        warmup_steps: 1,
        steps,
        batch,
        grad_accum,
        max_grad_norm: Some(1.0),
        shuffle,
        seed: 5,
        eval_every: Some(3),
        gradient_checkpointing: false,
    }
}

fn start(family: &str, dropout: f32) -> (Decoder, Adapters) {
    let mut d = tiny(family);
    let spec = LoraSpec {
        rank: 4,
        alpha: 8.0,
        dropout,
        targets: forja_models::lora::PEFT_TARGETS.map(String::from).to_vec(),
        use_rslora: false,
    };
    let adapters = attach(&mut d, &spec, Init::Random, 17).unwrap();
    (d, adapters)
}

fn matrices(adapters: &Adapters) -> Vec<f32> {
    adapters
        .modules
        .iter()
        .flat_map(|m| [m.a.as_tensor(), m.b.as_tensor()])
        .flat_map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

fn run(
    family: &str,
    dropout: f32,
    data: &[Example],
    cfg: &TrainConfig,
) -> (Vec<StepReport>, Vec<f32>) {
    let (mut d, adapters) = start(family, dropout);
    let reports = train(&mut d, adapters.vars(), data, &data[..2], cfg, |_| Ok(())).unwrap();
    (reports, matrices(&adapters))
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs()).max(1.0)
}

/// Same losses, gradient norms and evaluations, and adapters within `tol` of each other.
fn assert_same_runs(
    (ra, ma): &(Vec<StepReport>, Vec<f32>),
    (rb, mb): &(Vec<StepReport>, Vec<f32>),
    tol: f32,
) {
    assert_eq!(ra.len(), rb.len());
    for (a, b) in ra.iter().zip(rb) {
        assert!(
            close(a.loss, b.loss, 1e-5),
            "step {}: {a:?} vs {b:?}",
            a.step
        );
        assert!(
            close(a.grad_norm, b.grad_norm, 1e-4),
            "step {}: {a:?} vs {b:?}",
            a.step
        );
        assert_eq!(a.eval.is_some(), b.eval.is_some());
        if let (Some(x), Some(y)) = (a.eval, b.eval) {
            assert!(
                close(x.loss, y.loss, 1e-5),
                "step {}: {x:?} vs {y:?}",
                a.step
            );
        }
    }
    assert_eq!(ma.len(), mb.len());
    let worst = ma
        .iter()
        .zip(mb)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < tol, "adapters differ by up to {worst}");
}

#[test]
fn checkpointed_training_learns_what_ordinary_training_learns() {
    let data = examples(6);
    // Gemma 3 adds post-norms, QK-norm, sliding windows and embedding scaling to the layer.
    for family in ["llama", "gemma3"] {
        let plain = config(2, 2, 6, true);
        let checkpointed = TrainConfig {
            gradient_checkpointing: true,
            ..plain.clone()
        };
        // Dropout on: a recomputed layer must draw the masks its first forward drew.
        let a = run(family, 0.2, &data, &plain);
        let b = run(family, 0.2, &data, &checkpointed);
        assert!(a.0[5].loss < a.0[0].loss, "{family}: {:?}", a.0);
        // The two sum a layer's gradients in another order. AdamW moves each value by about
        // the learning rate whatever its gradient's size, so an entry whose gradient is near
        // zero carries that rounding into its step: within 1 % of one step.
        assert_same_runs(&a, &b, plain.lr as f32 * 1e-2);
    }
}

#[test]
fn the_output_head_in_chunks_of_rows_gives_the_whole_heads_gradients() {
    let data = examples(4);
    let cfg = config(2, 1, 3, false);
    let whole = run("llama", 0.0, &data, &cfg);
    for checkpointing in [false, true] {
        let (mut d, adapters) = start("llama", 0.0);
        // Three rows of the 256-entry vocabulary's logits at a time.
        d.set_head_chunk_bytes(3 * 256 * 4);
        let cfg = TrainConfig {
            gradient_checkpointing: checkpointing,
            ..cfg.clone()
        };
        let r = train(&mut d, adapters.vars(), &data, &data[..2], &cfg, |_| Ok(())).unwrap();
        assert_same_runs(&whole, &(r, matrices(&adapters)), 1e-5);
    }
}

#[test]
fn packing_fills_packs_first_fit_and_keeps_every_sequence() {
    let data = examples(9);
    let lens: Vec<usize> = data.iter().map(|e| e.ids.len()).collect();
    let packs = pack(data.clone(), 24).unwrap();
    assert!(packs.len() < data.len());
    // Longest first, each into the first pack with room.
    let total: usize = lens.iter().sum();
    assert_eq!(packs.iter().map(|p| p.ids.len()).sum::<usize>(), total);
    assert!(packs.iter().all(|p| p.ids.len() <= 24), "{packs:?}");
    let mut seen: Vec<(Vec<u32>, Vec<bool>)> = packs
        .iter()
        .flat_map(|p| {
            p.sequences()
                .into_iter()
                .map(|r| (p.ids[r.clone()].to_vec(), p.trained[r].to_vec()))
        })
        .collect();
    let mut want: Vec<(Vec<u32>, Vec<bool>)> = data
        .iter()
        .map(|e| (e.ids.clone(), e.trained.clone()))
        .collect();
    seen.sort();
    want.sort();
    assert_eq!(seen, want);
    let trained: usize = data.iter().map(Example::trained_tokens).sum();
    assert_eq!(
        packs.iter().map(Example::trained_tokens).sum::<usize>(),
        trained
    );
    // The same input packs the same way; an example longer than a pack is refused.
    assert_eq!(pack(data.clone(), 24).unwrap(), packs);
    let err = pack(data, 10).unwrap_err().to_string();
    assert!(err.contains("does not fit a pack of 10"), "{err}");
}

#[test]
fn packed_examples_score_and_train_as_the_examples_one_by_one() {
    let data = examples(5);
    let total: usize = data.iter().map(|e| e.ids.len()).sum();
    let packed = pack(data.clone(), total).unwrap();
    assert_eq!(packed.len(), 1);

    let (d, _adapters) = start("llama", 0.0);
    let one_by_one = evaluate(&d, &data, 1).unwrap();
    let as_pack = evaluate(&d, &packed, 1).unwrap();
    assert!(
        close(one_by_one.loss, as_pack.loss, 1e-5),
        "{one_by_one:?} vs {as_pack:?}"
    );

    // One pack a step vs all five examples a step: the same step, the same losses.
    let reports = |data: &[Example], batch: usize, checkpointing: bool| {
        let cfg = TrainConfig {
            eval_every: None,
            gradient_checkpointing: checkpointing,
            ..config(batch, 1, 3, false)
        };
        let (mut d, adapters) = start("llama", 0.0);
        let r = train(&mut d, adapters.vars(), data, &[], &cfg, |_| Ok(())).unwrap();
        (r, matrices(&adapters))
    };
    // A pack puts the rows in another order (longest first), so sums over rows round
    // differently.
    let unpacked = reports(&data, 5, false);
    assert_same_runs(&unpacked, &reports(&packed, 1, false), 1e-4);
    assert_same_runs(&unpacked, &reports(&packed, 1, true), 1e-4);
}
