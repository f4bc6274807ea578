//! `general.*` and the architecture's hyperparameter keys, named as llama.cpp reads them
//! (`{arch}.block_count`, `{arch}.attention.head_count_kv`, …).

use forja_arch::GgufRecipe;
use forja_arch::decoder_config::{DecoderConfig, Family, RopeScaling};
use forja_arch::gguf::GgufValue;

/// llama.cpp's `llama_ftype` number of a recipe (`general.file_type`).
pub fn recipe_file_type(recipe: GgufRecipe) -> u32 {
    use GgufRecipe::*;
    match recipe {
        Q4_0 => 2,
        Q4_1 => 3,
        Q8_0 => 7,
        Q5_0 => 8,
        Q5_1 => 9,
        Q2K => 10,
        Q3KS => 11,
        Q3KM => 12,
        Q3KL => 13,
        Q4KS => 14,
        Q4KM => 15,
        Q5KS => 16,
        Q5KM => 17,
        Q6K => 18,
        Iq4Nl => 25,
        Iq4Xs => 30,
    }
}

fn u32_of(v: u64) -> GgufValue {
    GgufValue::U32(u32::try_from(v).unwrap_or(u32::MAX))
}

pub(crate) fn model_metadata(
    cfg: &DecoderConfig,
    recipe: GgufRecipe,
    name: &str,
) -> Vec<(String, GgufValue)> {
    let arch = cfg.family.gguf_arch();
    let mut m: Vec<(String, GgufValue)> = vec![
        (
            "general.architecture".into(),
            GgufValue::String(arch.into()),
        ),
        ("general.type".into(), GgufValue::String("model".into())),
        ("general.name".into(), GgufValue::String(name.into())),
        (
            "general.file_type".into(),
            GgufValue::U32(recipe_file_type(recipe)),
        ),
        ("general.quantization_version".into(), GgufValue::U32(2)),
    ];
    let mut k = |key: &str, v: GgufValue| m.push((format!("{arch}.{key}"), v));
    k("vocab_size", u32_of(cfg.vocab_size));
    k("context_length", u32_of(cfg.max_context));
    k("embedding_length", u32_of(cfg.hidden_size));
    k("block_count", u32_of(cfg.num_layers));
    k("feed_forward_length", u32_of(cfg.intermediate_size));
    k("attention.head_count", u32_of(cfg.num_heads));
    k("attention.head_count_kv", u32_of(cfg.num_kv_heads));
    k("rope.freq_base", GgufValue::F32(cfg.rope_theta as f32));
    k(
        "attention.layer_norm_rms_epsilon",
        GgufValue::F32(cfg.norm_eps as f32),
    );
    let rope_dims = (cfg.head_dim as f64 * cfg.partial_rotary_factor).round() as u64;
    k("rope.dimension_count", u32_of(rope_dims));
    if cfg.head_dim * cfg.num_heads != cfg.hidden_size || cfg.family == Family::Qwen3 {
        k("attention.key_length", u32_of(cfg.head_dim));
        k("attention.value_length", u32_of(cfg.v_head_dim));
    }
    if let RopeScaling::Linear { factor } = cfg.rope_scaling {
        k("rope.scaling.type", GgufValue::String("linear".into()));
        k("rope.scaling.factor", GgufValue::F32(factor as f32));
    }
    m
}
