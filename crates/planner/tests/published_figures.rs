//! The planner's arithmetic pinned to hand-computed cases and published figures.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use forja_arch::kv_cache::kv_bytes_per_token;
use forja_arch::{KvDtype, WeightFormat};
use forja_planner::model_catalog::{find_model, models};

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b
}

#[test]
fn llama3_70b_rule_of_thumb_figures() {
    let m = find_model("llama-3-70b-instruct")
        .unwrap()
        .describe()
        .unwrap();
    let f16 = m.weights(Some(WeightFormat::F16));
    // The usual figures: ~140 GB in FP16 and ~42 GB at 4 bits under the 1.2 rule.
    assert!(
        rel(f16.total_bytes as f64, 140e9) < 0.02,
        "f16 weights {}",
        f16.total_bytes
    );
    let rule_4bit = f16.params as f64 * 0.5 * 1.2;
    assert!(rel(rule_4bit, 42e9) < 0.02, "4-bit rule {rule_4bit}");
    assert_eq!(f16.params, 70_553_706_496);
}

#[test]
fn llama31_8b_kv_is_128_kib_per_token_in_f16() {
    let m = find_model("llama-3.1-8b-instruct")
        .unwrap()
        .describe()
        .unwrap();
    // 2 (K,V) × 32 layers × 8 KV heads × 128 head_dim × 2 bytes.
    assert_eq!(kv_bytes_per_token(&m.config, KvDtype::F16), 131_072.0);
    assert_eq!(
        kv_bytes_per_token(&m.config, KvDtype::Q8_0),
        131_072.0 / 2.0 * 34.0 / 32.0
    );
}

#[test]
fn llama31_8b_q4_k_m_file_size_matches_published_4_92_gb() {
    let m = find_model("llama-3.1-8b-instruct")
        .unwrap()
        .describe()
        .unwrap();
    let w = m.weights(Some(WeightFormat::parse("q4_k_m").unwrap()));
    let file = forja_arch::weights::estimated_gguf_file_bytes(&m.config, &m.tensors, &w);
    assert!(rel(file as f64, 4.92e9) < 0.02, "predicted {file}");
}

#[test]
fn mixtral_total_and_active_parameters() {
    let m = find_model("mixtral-8x7b-instruct-v0.1")
        .unwrap()
        .describe()
        .unwrap();
    let w = m.weights(Some(WeightFormat::Bf16));
    assert!(rel(w.params as f64, 46.7e9) < 0.005, "total {}", w.params);
    assert!(
        rel(w.active_params as f64, 12.9e9) < 0.005,
        "active {}",
        w.active_params
    );
}

/// Every catalog entry's parameter count, computed from its config, equals the published count.
#[test]
fn catalog_parameter_counts_match_published() {
    let mut bad = Vec::new();
    for e in models().unwrap() {
        let Some(published) = e.published_params else {
            continue;
        };
        let m = e.describe().unwrap();
        let ours = m.weights(Some(WeightFormat::Bf16)).params;
        // Some publishers count a stored copy of a tied LM head; memory holds one copy.
        let head = m.config.vocab_size * m.config.hidden_size;
        let tied_copy = m.config.tie_word_embeddings && ours + head == published;
        // Image encoders are priced from their ViT shape, not their exact tensor list.
        let tolerance = if m.config.vision.is_some() {
            0.03
        } else {
            0.01
        };
        if !tied_copy && rel(ours as f64, published as f64) > tolerance {
            bad.push(format!("{}: ours {ours}, published {published}", e.name));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
