//! Checkpoints: a run stopped, saved and resumed in a fresh process state (new decoder, new
//! adapters, new optimizer) gives exactly the losses and adapter matrices of the same run done in
//! one go — optimizer moments, shuffled order, dropout masks and schedule all continue — and a
//! resume with other settings is refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use candle_core::Device;
use forja_models::Decoder;
use forja_testkit::fixtures_dir;
use forja_train::checkpoint::{self, Trained};
use forja_train::{Adapters, Example, Init, LoraSpec, TrainConfig, Trainer, attach};

fn tiny() -> Decoder {
    forja_models::loader::load(&fixtures_dir().join("tiny/llama"), &Device::Cpu).unwrap()
}

fn examples() -> Vec<Example> {
    (0..5u32)
        .map(|k| {
            let ids: Vec<u32> = (0..12).map(|i| (i * 7 + k * 13) % 90 + 3).collect();
            let trained = (0..12).map(|i| i >= 5).collect();
            Example::new(ids, trained)
        })
        .collect()
}

fn config() -> TrainConfig {
    TrainConfig {
        lr: 5e-3,
        weight_decay: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        warmup_steps: 2,
        steps: 8,
        batch: 2,
        grad_accum: 2,
        max_grad_norm: Some(1.0),
        shuffle: true,
        seed: 3,
        eval_every: Some(4),
        gradient_checkpointing: false,
    }
}

fn start() -> (Decoder, Adapters) {
    let mut d = tiny();
    let spec = LoraSpec {
        rank: 4,
        alpha: 8.0,
        // Dropout on: its masks must continue where they stopped too.
        dropout: 0.1,
        targets: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
        use_rslora: false,
    };
    let adapters = attach(&mut d, &spec, Init::Random, 11).unwrap();
    (d, adapters)
}

fn matrices(adapters: &Adapters) -> Vec<Vec<f32>> {
    adapters
        .modules
        .iter()
        .flat_map(|m| [m.a.as_tensor(), m.b.as_tensor()])
        .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

#[test]
fn a_resumed_run_repeats_the_uninterrupted_one_exactly() {
    let (train, eval) = (examples(), examples()[..2].to_vec());
    let cfg = config();
    let settings = serde_json::json!({"data": "five", "cfg": cfg});

    let (mut d, adapters) = start();
    let mut whole = Trainer::new(adapters.vars(), train.len(), &cfg).unwrap();
    while !whole.finished() {
        whole.step(&mut d, &train, &eval).unwrap();
    }
    let want = matrices(&adapters);

    let dir = tempfile::tempdir().unwrap();
    let ck_dir = dir.path().join("checkpoint");
    {
        let (mut d, adapters) = start();
        let mut first = Trainer::new(adapters.vars(), train.len(), &cfg).unwrap();
        let save = |t: &Trainer, d: &mut Decoder| {
            checkpoint::save(&ck_dir, t, d, Trained::Adapters(&adapters), &settings).unwrap();
        };
        for _ in 0..3 {
            first.step(&mut d, &train, &eval).unwrap();
        }
        save(&first, &mut d);
        // A later save replaces the earlier one whole.
        first.step(&mut d, &train, &eval).unwrap();
        save(&first, &mut d);
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["checkpoint"]);

    let (mut d, adapters) = start();
    let ck = checkpoint::load(&ck_dir).unwrap().unwrap();
    assert_eq!(ck.steps_done(), 4);
    let mut rest = Trainer::new(adapters.vars(), train.len(), &cfg).unwrap();
    rest.resume(&ck, &mut d, Trained::Adapters(&adapters), &settings)
        .unwrap();
    assert_eq!(rest.steps_done(), 4);
    while !rest.finished() {
        rest.step(&mut d, &train, &eval).unwrap();
    }
    assert_eq!(rest.reports.len(), 8);
    for (a, b) in whole.reports.iter().zip(&rest.reports) {
        assert_eq!(
            (a.step, a.loss, a.grad_norm, a.lr, a.epoch, a.eval),
            (b.step, b.loss, b.grad_norm, b.lr, b.epoch, b.eval)
        );
    }
    assert_eq!(matrices(&adapters), want);
}

#[test]
fn a_checkpoint_is_refused_by_a_run_with_other_settings() {
    let (train, eval) = (examples(), Vec::new());
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let ck_dir = dir.path().join("checkpoint");
    let (mut d, adapters) = start();
    let mut t = Trainer::new(adapters.vars(), train.len(), &cfg).unwrap();
    t.step(&mut d, &train, &eval).unwrap();
    let settings = serde_json::json!({"lr": 5e-3, "rank": 4});
    checkpoint::save(&ck_dir, &t, &mut d, Trained::Adapters(&adapters), &settings).unwrap();

    let ck = checkpoint::load(&ck_dir).unwrap().unwrap();
    let (mut d, adapters) = start();
    let mut t = Trainer::new(adapters.vars(), train.len(), &cfg).unwrap();
    let other = serde_json::json!({"lr": 1e-3, "rank": 4});
    let e = t
        .resume(&ck, &mut d, Trained::Adapters(&adapters), &other)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lr: 0.005 → 0.001") && e.contains("start over"),
        "{e}"
    );
    assert!(
        checkpoint::load(&dir.path().join("none"))
            .unwrap()
            .is_none()
    );

    std::fs::write(ck_dir.join("state.json"), b"{\"format\": 1").unwrap();
    let e = checkpoint::load(&ck_dir).unwrap_err().to_string();
    assert!(e.contains("unreadable checkpoint state"), "{e}");
}
