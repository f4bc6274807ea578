//! Hand-computed cases for KV cache, LoRA and training memory, and properties of the planner's
//! search (monotone footprints, exact boundaries).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use forja_arch::kv_cache::{kv_bytes, kv_bytes_per_token};
use forja_arch::training::{LoraTarget, lora_params};
use forja_arch::{KvDtype, WeightFormat};
use forja_planner::footprint::inference_footprint;
use forja_planner::gpu_catalog::find_gpu;
use forja_planner::model_catalog::{find_model, models};
use forja_planner::{Device, PlanRequest, Serving, Workload, plan};
use proptest::prelude::*;

#[test]
fn gemma3_27b_sliding_window_kv() {
    let m = find_model("gemma-3-27b-it").unwrap().describe().unwrap();
    // 62 layers; every 6th is global, the other 52 keep a 1024-token window.
    // One token in one layer: K and V, 16 KV heads × 128 dims, f16 = 8192 bytes.
    let per_layer_token = 2 * 16 * 128 * 2;
    // A decode step (1 token) needs the window; a step of 512 tokens also needs the 1,023
    // positions before its first token and its own, 1,535 → 1,536 (whole blocks of 64).
    let expected = 10 * 32768 * per_layer_token + 52 * 1024 * per_layer_token;
    assert_eq!(kv_bytes(&m.config, 32768, 1, KvDtype::F16), expected);
    let stepped = 10 * 32768 * per_layer_token + 52 * 1536 * per_layer_token;
    assert_eq!(kv_bytes(&m.config, 32768, 512, KvDtype::F16), stepped);
    // Below the window every layer keeps every token.
    assert_eq!(
        kv_bytes(&m.config, 512, 512, KvDtype::F16),
        62 * 512 * per_layer_token
    );
}

#[test]
fn deepseek_r1_mla_kv_is_one_latent_per_token() {
    let m = find_model("deepseek-r1").unwrap().describe().unwrap();
    // 61 layers × (kv_lora_rank 512 + rope dims 64) × 2 bytes.
    assert_eq!(
        kv_bytes_per_token(&m.config, KvDtype::F16),
        (61 * 576 * 2) as f64
    );
}

#[test]
fn lora_parameters_match_peft_for_llama3_8b() {
    let m = find_model("llama-3-8b-instruct")
        .unwrap()
        .describe()
        .unwrap();
    let qkvo = [LoraTarget::Q, LoraTarget::K, LoraTarget::V, LoraTarget::O];
    // PEFT prints "trainable params: 13,631,488" for r=16 on q,k,v,o of Llama-3-8B.
    assert_eq!(lora_params(&m.tensors, &qkvo, 16), 13_631_488);
    // All linear layers, r=8, per layer: q and o 8·(4096+4096), k and v 8·(4096+1024),
    // gate, up and down 8·(4096+14336): 131,072 + 81,920 + 442,368 = 655,360.
    assert_eq!(lora_params(&m.tensors, &LoraTarget::ALL, 8), 32 * 655_360);
}

#[test]
fn moe_aggregate_bound_equals_single_user_bound_at_one_user() {
    let m = find_model("mixtral-8x7b-instruct-v0.1")
        .unwrap()
        .describe()
        .unwrap();
    let dev = Device::from_spec(&find_gpu("h100").unwrap(), 1);
    let req = PlanRequest {
        format: Some(WeightFormat::parse("q4_k_m").unwrap()),
        serving: Serving {
            ctx_tokens: 4096,
            users: 1,
            step_tokens: 512,
            kv_dtype: KvDtype::F16,
        },
        workload: Workload::Inference,
        devices: vec![dev],
        fixed_counts: true,
    };
    let p = plan(&m, &req).unwrap();
    let d = &p.devices[0];
    let single = d.decode_tok_s_upper.unwrap();
    assert!((single - d.aggregate_tok_s_upper.unwrap()).abs() < 1e-6);
    // One token reads the active bytes: 2 of 8 experts plus everything shared, and its KV.
    let w = m.weights(req.format);
    let kv = kv_bytes(&m.config, 4096, 1, KvDtype::F16) as f64;
    assert!((single - 3350e9 / (w.active_bytes as f64 + kv)).abs() / single < 1e-9);
    // 64 users touch nearly all experts: the bound per user falls, the total rises.
    let busy = plan(
        &m,
        &PlanRequest {
            serving: Serving {
                users: 64,
                ..req.serving
            },
            ..req.clone()
        },
    )
    .unwrap();
    let agg = busy.devices[0].aggregate_tok_s_upper.unwrap();
    assert!(agg > single && agg / 64.0 < single);
}

fn catalog_index() -> impl Strategy<Value = usize> {
    0..models().unwrap().len()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// More context or more users never needs less memory.
    #[test]
    fn footprint_is_monotone(i in catalog_index(), ctx in 1u64..32768, users in 1u64..64, dctx in 1u64..4096, du in 1u64..8) {
        let e = &models().unwrap()[i];
        let m = e.describe().unwrap();
        let w = m.weights(Some(WeightFormat::parse("q4_k_m").unwrap()));
        let dev = Device::from_spec(&find_gpu("h100").unwrap(), 1);
        let s = Serving { ctx_tokens: ctx, users, step_tokens: 512, kv_dtype: KvDtype::F16 };
        let base = inference_footprint(&m, &w, &s, &dev, 1).total_bytes;
        let more_ctx = inference_footprint(&m, &w, &Serving { ctx_tokens: ctx + dctx, ..s }, &dev, 1).total_bytes;
        let more_users = inference_footprint(&m, &w, &Serving { users: users + du, ..s }, &dev, 1).total_bytes;
        prop_assert!(more_ctx >= base, "{}: ctx {} → {}", e.name, ctx, ctx + dctx);
        prop_assert!(more_users > base, "{}: users {} → {}", e.name, users, users + du);
    }

    /// The reported largest context fits and one more token does not (unless it is the model's
    /// maximum); likewise for users.
    #[test]
    fn max_context_and_users_are_exact_boundaries(i in catalog_index(), gpu in prop::sample::select(vec!["4090", "3060", "h100", "a100-40gb"]), users in 1u64..16) {
        let e = &models().unwrap()[i];
        let m = e.describe().unwrap();
        let dev = Device::from_spec(&find_gpu(gpu).unwrap(), 1);
        let format = Some(WeightFormat::parse("q4_k_m").unwrap());
        let s = Serving { ctx_tokens: 1024.min(m.config.max_context), users, step_tokens: 512, kv_dtype: KvDtype::F16 };
        let req = PlanRequest { format, serving: s, workload: Workload::Inference, devices: vec![dev.clone()], fixed_counts: true };
        let p = plan(&m, &req).unwrap();
        let d = &p.devices[0];
        let w = m.weights(format);
        let total = |s: Serving| inference_footprint(&m, &w, &s, &dev, 1).total_bytes;
        match d.devices_needed {
            None => prop_assert!(total(s) > dev.usable_bytes),
            Some(_) => {
                let c = d.max_ctx_tokens.unwrap();
                let at_c = total(Serving { ctx_tokens: c, ..s });
                let past_c = total(Serving { ctx_tokens: c + 1, ..s });
                prop_assert!(at_c <= dev.usable_bytes);
                prop_assert!(c == m.config.max_context || past_c > dev.usable_bytes);
                let u = d.max_users.unwrap();
                let at_u = total(Serving { users: u, ..s });
                let past_u = total(Serving { users: u + 1, ..s });
                prop_assert!(at_u <= dev.usable_bytes);
                prop_assert!(u == 1 << 16 || past_u > dev.usable_bytes);
            }
        }
    }
}

/// Regression: a quantized GGUF planned for full fine-tuning was priced in its stored format.
#[test]
fn full_finetune_of_a_gguf_is_priced_in_bf16() {
    let path = forja_testkit::testdata_file("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    let m = forja_arch::ModelDescription::from_path(&path).unwrap();
    let shape = forja_arch::training::TrainShape {
        mode: forja_arch::training::TrainMode::FullFinetune,
        lora_rank: 16,
        lora_targets: vec![LoraTarget::Q],
        optimizer: forja_arch::training::Optimizer::Adamw,
        gradient_checkpointing: true,
        micro_batch: 1,
        seq_len: 512,
    };
    let req = PlanRequest {
        format: None,
        serving: Serving {
            ctx_tokens: 512,
            users: 1,
            step_tokens: 512,
            kv_dtype: KvDtype::F16,
        },
        workload: Workload::Train(shape),
        devices: vec![Device::from_spec(&find_gpu("4090").unwrap(), 1)],
        fixed_counts: true,
    };
    let p = plan(&m, &req).unwrap();
    assert_eq!(p.format.name, "bf16");
    let t = p.memory.training.as_ref().unwrap();
    assert_eq!(t.trainable_weights, 2 * m.weights(None).params);
    assert_eq!(t.master_weights, 4 * m.weights(None).params);
}

/// forja's NVIDIA runner computes the head for every token of a step into one f32 buffer (its
/// scratch holds `[step tokens, vocabulary]` logits): a GPU plan counts that buffer, a CPU plan
/// the sampled rows only, and both grow with the step as the runner's buffer does.
#[test]
fn a_gpu_plan_counts_f32_logits_for_every_token_of_a_step() {
    let m = find_model("llama-3.1-8b-instruct")
        .unwrap()
        .describe()
        .unwrap();
    let w = m.weights(Some(WeightFormat::parse("q4_k_m").unwrap()));
    let gpu = Device::from_spec(&find_gpu("4090").unwrap(), 1);
    let cpu = Device {
        id: None,
        name: "a CPU".into(),
        kind: forja_planner::DeviceKind::Cpu,
        memory_bytes: 64 << 30,
        usable_bytes: 64 << 30,
        bandwidth_gbps: Some(50.0),
        tier: None,
        count: 1,
    };
    let at = |step: u64, dev: &Device| {
        let s = Serving {
            ctx_tokens: 8192,
            users: 1,
            step_tokens: step,
            kv_dtype: KvDtype::F16,
        };
        inference_footprint(&m, &w, &s, dev, 1).activations_bytes
    };
    let vocab = m.config.vocab_size;
    assert_eq!(vocab, 128_256);
    for step in [512, 2048] {
        // The GPU's activations hold at least the logits of the whole step.
        assert!(at(step, &gpu) >= step * vocab * 4, "step {step}");
    }
    // Each further token of a step adds its logits row on the GPU; on the CPU, which samples
    // one row, it adds less than a row (its f32 activations and score tiles only).
    let row = vocab * 4;
    assert!(at(2048, &gpu) - at(512, &gpu) >= 1536 * row);
    assert!(at(2048, &cpu) - at(512, &cpu) < 1536 * row);
}
