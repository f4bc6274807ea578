#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]
//! QLoRA on a real quantized GGUF model: the base stays quantized, gradients cross its
//! quantized projections (through their dequantized rows) to reach every layer's adapters, and
//! a few steps on one conversation lower its loss.

use std::path::Path;

use forja_engine::LoadedModel;
use forja_models::linear::{LinearWeight, QuantizedWeight};
use forja_testkit::testdata_file;
use forja_train::dataset::parse;
use forja_train::examples::tokenize;
use forja_train::{Init, LoraSpec, TrainConfig, attach, train};

#[test]
fn qlora_lowers_the_loss_and_trains_adapters_behind_quantized_projections() {
    let mut model =
        LoadedModel::load_cpu(&testdata_file("SmolLM2-135M-Instruct.Q4_1.gguf"), Some(256))
            .unwrap();
    let records = parse(
        r#"{"messages": [{"role": "user", "content": "What is forja?"}, {"role": "assistant", "content": "A forge for language models."}]}"#,
        Path::new("one.jsonl"),
    )
    .unwrap();
    let (examples, _) = tokenize(&model, &records, 256, Path::new("one.jsonl")).unwrap();
    // Only q and v are adapted: o_proj stays a plain quantized projection, so q's and v's
    // adapters learn only if gradients pass through it.
    let spec = LoraSpec {
        rank: 8,
        alpha: 16.0,
        dropout: 0.0,
        targets: vec!["q_proj".into(), "v_proj".into()],
        use_rslora: false,
    };
    let adapters = attach(&mut model.decoder, &spec, Init::Random, 1).unwrap();
    assert_eq!(adapters.modules.len(), 2 * model.decoder.num_layers());
    for (path, linear) in model.decoder.linears_mut() {
        if path.ends_with("o_proj") {
            assert!(matches!(
                linear.weight,
                LinearWeight::Quantized(QuantizedWeight::Cpu(_))
            ));
            assert!(linear.lora.is_none());
        }
    }
    let cfg = TrainConfig {
        lr: 3e-3,
        weight_decay: 0.0,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        warmup_steps: 0,
        steps: 3,
        batch: 1,
        grad_accum: 1,
        max_grad_norm: Some(1.0),
        shuffle: false,
        seed: 0,
        eval_every: None,
        gradient_checkpointing: false,
    };
    let reports = train(
        &mut model.decoder,
        adapters.vars(),
        &examples,
        &[],
        &cfg,
        |_| Ok(()),
    )
    .unwrap();
    let losses: Vec<f64> = reports.iter().map(|r| r.loss).collect();
    assert!(losses[2] < losses[0] - 0.1, "{losses:?}");
    assert!(reports[0].grad_norm > 0.0);
    // B starts at zero; the first layer's moved, so the gradient crossed 29 layers of quantized
    // output projections.
    let first = &adapters.modules[0];
    assert_eq!(first.path, "model.layers.0.self_attn.q_proj");
    let b_abs = first.b.as_tensor().abs().unwrap().max_all().unwrap();
    assert!(b_abs.to_scalar::<f32>().unwrap() > 0.0);
}
