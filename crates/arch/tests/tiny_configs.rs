//! The tiny reference models' `config.json` files (written by transformers 5, with
//! `rope_parameters`) map to the decoder features they exercise.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use forja_arch::decoder_config::{Activation, NormKind, RopeScaling};
use forja_arch::{DecoderConfig, Family, LayerAttention, ModelDescription};

fn load(name: &str) -> DecoderConfig {
    let dir = forja_testkit::fixtures_dir().join("tiny").join(name);
    ModelDescription::from_path(&dir).unwrap().config
}

#[test]
fn tiny_models_map_to_their_features() {
    let sliding = LayerAttention::Sliding { window: 6 };
    let g3 = load("gemma3");
    assert_eq!(g3.family, Family::Gemma3);
    assert_eq!(g3.layers, vec![sliding, LayerAttention::Global, sliding]);
    assert_eq!(
        (g3.rope_theta, g3.rope_local_theta),
        (1_000_000.0, Some(10_000.0))
    );
    assert_eq!(g3.rope_scaling, RopeScaling::Linear { factor: 2.0 });
    assert!(g3.qk_norm && g3.post_norms && g3.tie_word_embeddings);
    assert_eq!(
        (g3.norm, g3.activation),
        (NormKind::RmsOnePlus, Activation::GeluTanh)
    );

    let g2 = load("gemma2");
    assert_eq!(g2.layers, vec![sliding, LayerAttention::Global, sliding]);
    assert_eq!(
        (g2.attn_logit_softcap, g2.final_logit_softcap),
        (Some(50.0), Some(30.0))
    );

    let l3 = load("llama3_rope");
    assert!(matches!(
        l3.rope_scaling,
        RopeScaling::Llama3 {
            factor: 8.0,
            original_max_position: 64,
            ..
        }
    ));
    assert_eq!(l3.rope_theta, 500_000.0);

    assert_eq!(load("mistral").layers, vec![sliding; 3]);
    let q2 = load("qwen2");
    assert!(
        q2.qkv_bias
            && q2.tie_word_embeddings
            && q2.layers.iter().all(|l| *l == LayerAttention::Global)
    );
    assert!(load("qwen3").qk_norm);
    assert_eq!(load("qwen3").head_dim, 32);
    assert!(load("phi3").fused_qkv && load("phi3").fused_gate_up);
    assert!(!load("llama").fused_gate_up);
    let mx = load("mixtral").moe.unwrap();
    assert_eq!(
        (
            mx.num_experts,
            mx.experts_per_token,
            mx.expert_intermediate_size
        ),
        (4, 2, 128)
    );
    let qm = load("qwen3_moe").moe.unwrap();
    assert_eq!(
        (
            qm.num_experts,
            qm.experts_per_token,
            qm.expert_intermediate_size
        ),
        (4, 2, 32)
    );
}

/// LongRoPE from `config.json` (factors listed, attention factor from the context ratio as
/// transformers derives it) and from GGUF metadata (factors are tensors, the attention factor
/// a key written by the converter).
#[test]
fn longrope_maps_from_both_formats() {
    let p = load("phi3_longrope");
    let RopeScaling::LongRope {
        original_max_position,
        attention_factor,
        long_factor,
        short_factor,
    } = p.rope_scaling
    else {
        panic!("{:?}", p.rope_scaling)
    };
    assert_eq!(original_max_position, 4);
    let want = (1.0 + (512.0f64 / 4.0).ln() / 4.0f64.ln()).sqrt();
    assert!(
        (attention_factor - want).abs() < 1e-12,
        "{attention_factor}"
    );
    assert_eq!(long_factor, vec![1.0, 1.5, 2.5, 4.0, 7.0, 11.0]);
    assert_eq!(short_factor.len(), 6);
    assert_eq!(p.partial_rotary_factor, 0.75);

    use forja_testkit::gguf_builder::{GgufBuilder, Meta};
    let bytes = GgufBuilder::tiny_llama()
        .meta("llama.rope.scaling.original_context_length", Meta::U32(512))
        .meta("llama.rope.scaling.attn_factor", Meta::F32(1.25))
        .tensor("rope_factors_long.weight", &[8], 0, 32)
        .tensor("rope_factors_short.weight", &[8], 0, 32)
        .bytes();
    let h = forja_arch::GgufHeader::read(std::io::Cursor::new(&bytes), bytes.len() as u64).unwrap();
    let cfg = forja_arch::gguf_config::from_gguf(&h).unwrap();
    assert_eq!(
        cfg.rope_scaling,
        RopeScaling::LongRope {
            original_max_position: 512,
            attention_factor: 1.25,
            long_factor: vec![],
            short_factor: vec![],
        }
    );
}
