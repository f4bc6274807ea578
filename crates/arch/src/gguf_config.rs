//! GGUF metadata → [`DecoderConfig`], using llama.cpp's key names (`{arch}.block_count`, …) and
//! the tensor names present in the file for the properties that only the weights reveal
//! (QKV bias, QK-norm, tied embeddings, fused QKV).

use crate::decoder_config::{
    Activation, DecoderConfig, Family, LayerAttention, MlaConfig, MoeConfig, NormKind, RopeScaling,
    context_scale, longrope_attention_factor,
};
use crate::error::ArchError;
use crate::gguf::{GgufHeader, GgufValue};

const GGUF_ARCHES: &str = "llama, qwen2, qwen2moe, qwen3, qwen3moe, gemma, gemma2, gemma3, phi3, phimoe, deepseek2, mllama, qwen2vl";

/// Builds the decoder description from a GGUF header.
pub fn from_gguf(h: &GgufHeader) -> Result<DecoderConfig, ArchError> {
    let arch = h
        .architecture()
        .ok_or_else(|| gguf_err("missing general.architecture"))?;
    let family = match arch {
        "llama" => Family::Llama,
        "qwen2" => Family::Qwen2,
        "qwen2moe" => Family::Qwen2Moe,
        "qwen3" => Family::Qwen3,
        "qwen3moe" => Family::Qwen3Moe,
        "gemma" => Family::Gemma,
        "gemma2" => Family::Gemma2,
        "gemma3" => Family::Gemma3,
        "phi3" => Family::Phi3,
        "phimoe" => Family::PhiMoe,
        "deepseek2" => Family::DeepseekV3,
        "mllama" => Family::Mllama,
        "qwen2vl" => Family::Qwen2Vl,
        other => {
            return Err(ArchError::UnsupportedArchitecture {
                name: other.to_string(),
                origin: "GGUF general.architecture".into(),
                supported: GGUF_ARCHES,
            });
        }
    };
    let k = Keys { h, arch };
    let has = |name: &str| h.tensors.iter().any(|t| t.name == name);
    let hidden_size = k.u64_req("embedding_length")?;
    let num_layers = k.u64_req("block_count")?;
    let num_heads = k.u64_req("attention.head_count")?;
    let num_kv_heads = k.u64_opt("attention.head_count_kv")?.unwrap_or(num_heads);
    if num_heads == 0 {
        return Err(gguf_err(&format!(
            "{arch}.attention.head_count must be positive"
        )));
    }
    // MLA files written by current llama.cpp keep the per-head sizes in `*_mla` keys (the plain
    // keys then describe the compressed latent).
    let head_dim = match k.u64_opt("attention.key_length_mla")? {
        Some(d) => d,
        None => k
            .u64_opt("attention.key_length")?
            .unwrap_or(hidden_size / num_heads),
    };
    let v_head_dim = match k.u64_opt("attention.value_length_mla")? {
        Some(d) => d,
        None => k.u64_opt("attention.value_length")?.unwrap_or(head_dim),
    };
    let vocab_size = match k.u64_opt("vocab_size")? {
        Some(v) => v,
        None => match h.get("tokenizer.ggml.tokens") {
            Some(GgufValue::Array { len, .. }) => *len,
            _ => h
                .tensors
                .iter()
                .find(|t| t.name == "token_embd.weight")
                .and_then(|t| t.dims.get(1).copied())
                .ok_or_else(|| gguf_err("cannot tell the vocabulary size (no tokenizer.ggml.tokens, no token_embd.weight)"))?,
        },
    };
    let gemma = matches!(family, Family::Gemma | Family::Gemma2 | Family::Gemma3);
    let window = k.u64_opt("attention.sliding_window")?;
    if num_layers > 1 << 16 {
        return Err(gguf_err(&format!(
            "{arch}.block_count = {num_layers} is implausibly large"
        )));
    }
    let layers = (0..num_layers)
        .map(|i| match (family, window) {
            (Family::Gemma2, Some(w)) if i % 2 == 0 => LayerAttention::Sliding { window: w },
            (Family::Gemma3, Some(w)) if (i + 1) % 6 != 0 => LayerAttention::Sliding { window: w },
            (Family::Phi3, Some(w)) => LayerAttention::Sliding { window: w },
            _ => LayerAttention::Global,
        })
        .collect();
    let moe = match k.u64_opt("expert_count")? {
        Some(n) if n > 0 => Some(MoeConfig {
            num_experts: n,
            experts_per_token: k.u64_req("expert_used_count")?,
            expert_intermediate_size: match k.u64_opt("expert_feed_forward_length")? {
                Some(e) => e,
                None => k.u64_req("feed_forward_length")?,
            },
            shared_intermediate_size: match k.u64_opt("expert_shared_feed_forward_length")? {
                Some(s) => s,
                None => k
                    .u64_opt("expert_shared_count")?
                    .unwrap_or(0)
                    .checked_mul(k.u64_opt("expert_feed_forward_length")?.unwrap_or(0))
                    .ok_or_else(|| gguf_err(&format!("{arch}.expert_shared_count overflows")))?,
            },
            shared_expert_gate: has("blk.0.ffn_gate_inp_shexp.weight"),
            norm_topk_prob: k
                .bool_opt("expert_weights_norm")?
                // llama.cpp renormalizes Mixtral (llama), PhiMoE and Qwen3-MoE without the key.
                .unwrap_or(matches!(
                    family,
                    Family::Llama | Family::PhiMoe | Family::Qwen3Moe
                )),
            dense_layers: {
                let dense = k.u64_opt("leading_dense_block_count")?.unwrap_or(0);
                if dense > num_layers {
                    return Err(gguf_err(&format!(
                        "{arch}.leading_dense_block_count = {dense} exceeds block_count = {num_layers}"
                    )));
                }
                (0..dense).collect()
            },
        }),
        _ => None,
    };
    let mla = match k.u64_opt("attention.kv_lora_rank")? {
        Some(kv_lora_rank) => {
            let rope = k.u64_req("rope.dimension_count")?;
            Some(MlaConfig {
                kv_lora_rank,
                q_lora_rank: k.u64_opt("attention.q_lora_rank")?,
                qk_rope_head_dim: rope,
                qk_nope_head_dim: head_dim.saturating_sub(rope),
                v_head_dim,
            })
        }
        None => None,
    };
    let rope_scaling = match k.str_opt("rope.scaling.type") {
        None | Some("none") => RopeScaling::None,
        Some(kind) => {
            let factor = k.f64_opt("rope.scaling.factor")?.unwrap_or(1.0);
            let original = k
                .u64_opt("rope.scaling.original_context_length")?
                .unwrap_or(0);
            match kind {
                "linear" => RopeScaling::Linear { factor },
                "yarn" => RopeScaling::Yarn {
                    factor,
                    original_max_position: original,
                    beta_fast: k.f64_opt("rope.scaling.yarn_beta_fast")?.unwrap_or(32.0),
                    beta_slow: k.f64_opt("rope.scaling.yarn_beta_slow")?.unwrap_or(1.0),
                },
                "longrope" => RopeScaling::LongRope {
                    original_max_position: original,
                    attention_factor: match k.f64_opt("rope.scaling.attn_factor")? {
                        Some(a) => a,
                        None => {
                            let max = k.u64_opt("context_length")?.unwrap_or(original);
                            longrope_attention_factor(context_scale(max, original), original)
                        }
                    },
                    long_factor: Vec::new(),
                    short_factor: Vec::new(),
                },
                other => {
                    return Err(gguf_err(&format!(
                        "unsupported {arch}.rope.scaling.type {other:?}"
                    )));
                }
            }
        }
    };
    // Phi-3 long-context GGUFs carry LongRoPE's factors as tensors, not as a scaling type.
    let rope_scaling = if has("rope_factors_long.weight") && rope_scaling == RopeScaling::None {
        let original = k
            .u64_opt("rope.scaling.original_context_length")?
            .unwrap_or(0);
        let max = k.u64_opt("context_length")?.unwrap_or(original);
        RopeScaling::LongRope {
            original_max_position: original,
            attention_factor: match k.f64_opt("rope.scaling.attn_factor")? {
                Some(a) => a,
                None => longrope_attention_factor(context_scale(max, original), original),
            },
            long_factor: Vec::new(),
            short_factor: Vec::new(),
        }
    } else {
        rope_scaling
    };
    // Llama 3.x GGUFs carry their frequency divisors as a tensor instead of rope_scaling
    // parameters (factor 8 for 3.1, 32 for 3.2: only the tensor says which).
    let rope_scaling = if has("rope_freqs.weight") && rope_scaling == RopeScaling::None {
        RopeScaling::Factors {
            factors: Vec::new(),
        }
    } else {
        rope_scaling
    };
    let rope_dims = k.u64_opt("rope.dimension_count")?.unwrap_or(head_dim);
    let cfg = DecoderConfig {
        family,
        hidden_size,
        intermediate_size: k.u64_opt("feed_forward_length")?.unwrap_or(0),
        num_layers,
        num_heads,
        num_kv_heads: if mla.is_some() {
            num_heads
        } else {
            num_kv_heads
        },
        head_dim,
        v_head_dim,
        vocab_size,
        max_context: k.u64_opt("context_length")?.unwrap_or(2048),
        // The model's rule; that llama.cpp's converter stores Gemma's weights as 1 + w is a
        // property of the file (`WeightSource::norm_weights_include_one`).
        norm: if matches!(family, Family::Gemma | Family::Gemma2 | Family::Gemma3) {
            NormKind::RmsOnePlus
        } else {
            NormKind::Rms
        },
        norm_eps: k
            .f64_opt("attention.layer_norm_rms_epsilon")?
            .unwrap_or(1e-5),
        rope_theta: k.f64_opt("rope.freq_base")?.unwrap_or(10_000.0),
        rope_scaling,
        // llama.cpp runs Gemma 3's sliding-window layers with a fixed 10,000 base.
        rope_local_theta: (family == Family::Gemma3).then_some(10_000.0),
        partial_rotary_factor: if head_dim == 0 || mla.is_some() {
            1.0
        } else {
            rope_dims as f64 / head_dim as f64
        },
        qkv_bias: has("blk.0.attn_q.bias") || has("blk.0.attn_qkv.bias"),
        qk_norm: has("blk.0.attn_q_norm.weight"),
        post_norms: has("blk.0.post_attention_norm.weight"),
        fused_qkv: has("blk.0.attn_qkv.weight"),
        fused_gate_up: has("blk.0.ffn_up.weight") && !has("blk.0.ffn_gate.weight"),
        activation: if gemma {
            Activation::GeluTanh
        } else {
            Activation::Silu
        },
        // GGUF has no query_pre_attn_scalar: llama.cpp knows that the 27B Gemma 2 (46 layers)
        // and Gemma 3 (62 layers) use hidden/heads, and the others head_dim.
        query_pre_attn_scalar: match (family, num_layers) {
            (Family::Gemma2, 46) | (Family::Gemma3, 62) => Some((hidden_size / num_heads) as f64),
            _ => None,
        },
        attn_logit_softcap: k.f64_opt("attn_logit_softcapping")?,
        final_logit_softcap: k.f64_opt("final_logit_softcapping")?,
        tie_word_embeddings: !has("output.weight"),
        embedding_scale: gemma.then(|| (hidden_size as f64).sqrt()),
        layers,
        moe,
        mla,
        vision: None,
    };
    cfg.validate().map_err(|e| match e {
        ArchError::Config { what, .. } => gguf_err(&what),
        other => other,
    })?;
    Ok(cfg)
}

fn gguf_err(what: &str) -> ArchError {
    ArchError::Gguf {
        path: None,
        offset: 0,
        what: what.to_string(),
    }
}

struct Keys<'a> {
    h: &'a GgufHeader,
    arch: &'a str,
}

impl Keys<'_> {
    fn get(&self, key: &str) -> Option<&GgufValue> {
        self.h.get(&format!("{}.{key}", self.arch))
    }

    /// Scalars, or per-layer arrays whose entries all agree (some writers emit those).
    fn u64_opt(&self, key: &str) -> Result<Option<u64>, ArchError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let full = format!("{}.{key}", self.arch);
        match v {
            GgufValue::Array { values, .. } => {
                let nums: Option<Vec<u64>> = values.iter().map(GgufValue::as_u64).collect();
                match nums.as_deref() {
                    Some([first, rest @ ..]) if rest.iter().all(|x| x == first) => Ok(Some(*first)),
                    _ => Err(gguf_err(&format!(
                        "{full}: per-layer values that differ are not supported"
                    ))),
                }
            }
            other => other.as_u64().map(Some).ok_or_else(|| {
                gguf_err(&format!(
                    "{full} must be a non-negative integer, found {other:?}"
                ))
            }),
        }
    }

    fn u64_req(&self, key: &str) -> Result<u64, ArchError> {
        self.u64_opt(key)?
            .ok_or_else(|| gguf_err(&format!("missing {}.{key}", self.arch)))
    }

    fn f64_opt(&self, key: &str) -> Result<Option<f64>, ArchError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                gguf_err(&format!(
                    "{}.{key} must be a number, found {v:?}",
                    self.arch
                ))
            }),
        }
    }

    fn str_opt(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(GgufValue::as_str)
    }

    fn bool_opt(&self, key: &str) -> Result<Option<bool>, ArchError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| {
                gguf_err(&format!(
                    "{}.{key} must be a boolean, found {v:?}",
                    self.arch
                ))
            }),
        }
    }
}
