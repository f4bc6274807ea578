//! Hugging Face `config.json` → [`DecoderConfig`].
//!
//! Field names and class defaults follow the transformers configuration classes of each family
//! (`configuration_llama.py`, `configuration_qwen2.py`, `configuration_gemma3.py`, …).

use serde_json::{Map, Value};

use crate::decoder_config::{
    Activation, DecoderConfig, Family, LayerAttention, MlaConfig, MoeConfig, NormKind, RopeScaling,
    SUPPORTED_FAMILIES, VisionConfig, context_scale, longrope_attention_factor,
};
use crate::error::ArchError;

/// Parses the text of a `config.json`; `origin` names it in errors (a path or a catalog entry).
pub fn parse_hf_config(text: &str, origin: &str) -> Result<DecoderConfig, ArchError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ArchError::Config {
        path: None,
        what: format!("{origin}: not valid JSON: {e}"),
    })?;
    from_hf_value(&value, origin)
}

/// Maps an already-parsed `config.json` value.
pub fn from_hf_value(value: &Value, origin: &str) -> Result<DecoderConfig, ArchError> {
    let top = value.as_object().ok_or_else(|| ArchError::Config {
        path: None,
        what: format!("{origin}: expected a JSON object"),
    })?;
    let model_type = top
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let arch_name = top
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .unwrap_or_default();
    let family =
        family_of(model_type, arch_name).ok_or_else(|| ArchError::UnsupportedArchitecture {
            name: if model_type.is_empty() {
                arch_name.to_string()
            } else {
                model_type.to_string()
            },
            origin: origin.to_string(),
            supported: SUPPORTED_FAMILIES,
        })?;
    // Multimodal configs nest the language model; Qwen2.5-VL keeps it at the top level.
    let text = match top.get("text_config").and_then(Value::as_object) {
        Some(t) if t.contains_key("hidden_size") => t,
        _ => top,
    };
    let f = Fields {
        map: text,
        top,
        origin,
        defaults: class_defaults(family),
    };
    let cfg = build(family, &f)?;
    cfg.validate().map_err(|e| match e {
        ArchError::Config { what, .. } => ArchError::Config {
            path: None,
            what: format!("{origin}: {what}"),
        },
        other => other,
    })?;
    Ok(cfg)
}

fn family_of(model_type: &str, arch: &str) -> Option<Family> {
    Some(match model_type {
        "llama" => Family::Llama,
        "mistral" => Family::Mistral,
        "mixtral" => Family::Mixtral,
        "qwen2" => Family::Qwen2,
        "qwen2_moe" => Family::Qwen2Moe,
        "qwen3" => Family::Qwen3,
        "qwen3_moe" => Family::Qwen3Moe,
        "gemma" => Family::Gemma,
        "gemma2" => Family::Gemma2,
        "gemma3" | "gemma3_text" => Family::Gemma3,
        "phi3" => Family::Phi3,
        "phimoe" => Family::PhiMoe,
        "deepseek_v2" => Family::DeepseekV2,
        "deepseek_v3" => Family::DeepseekV3,
        "mllama" => Family::Mllama,
        "qwen2_vl" | "qwen2_5_vl" => Family::Qwen2Vl,
        _ => match arch {
            "LlamaForCausalLM" => Family::Llama,
            "MistralForCausalLM" => Family::Mistral,
            "MixtralForCausalLM" => Family::Mixtral,
            "Qwen2ForCausalLM" => Family::Qwen2,
            "Qwen3ForCausalLM" => Family::Qwen3,
            "Gemma2ForCausalLM" => Family::Gemma2,
            "Gemma3ForCausalLM" | "Gemma3ForConditionalGeneration" => Family::Gemma3,
            "Phi3ForCausalLM" => Family::Phi3,
            _ => return None,
        },
    })
}

struct Fields<'a> {
    map: &'a Map<String, Value>,
    top: &'a Map<String, Value>,
    origin: &'a str,
    /// Values the transformers configuration class fills in when `config.json` omits them.
    defaults: &'static [(&'static str, u64)],
}

/// Class defaults of transformers' configuration classes that real `config.json` files rely on
/// (Gemma 3's `text_config` omits its head counts and sizes; Gemma and Qwen3 omit `head_dim`).
fn class_defaults(family: Family) -> &'static [(&'static str, u64)] {
    match family {
        Family::Gemma3 => &[
            ("hidden_size", 2304),
            ("intermediate_size", 9216),
            ("num_hidden_layers", 26),
            ("num_attention_heads", 8),
            ("num_key_value_heads", 4),
            ("head_dim", 256),
            ("vocab_size", 262_208),
            ("sliding_window", 4096),
            ("max_position_embeddings", 131_072),
            ("sliding_window_pattern", 6),
        ],
        Family::Gemma2 => &[
            ("hidden_size", 2304),
            ("intermediate_size", 9216),
            ("num_hidden_layers", 26),
            ("num_attention_heads", 8),
            ("num_key_value_heads", 4),
            ("head_dim", 256),
            ("vocab_size", 256_000),
            ("sliding_window", 4096),
            ("max_position_embeddings", 8192),
        ],
        Family::Gemma => &[
            ("head_dim", 256),
            ("vocab_size", 256_000),
            ("max_position_embeddings", 8192),
        ],
        Family::Qwen3 | Family::Qwen3Moe => &[("head_dim", 128)],
        _ => &[],
    }
}

impl Fields<'_> {
    fn err(&self, what: String) -> ArchError {
        ArchError::Config {
            path: None,
            what: format!("{}: {what}", self.origin),
        }
    }

    fn raw(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn u64_opt(&self, key: &str) -> Result<Option<u64>, ArchError> {
        match self.raw(key) {
            None => Ok(self
                .defaults
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| *v)),
            Some(v) => v
                .as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                        .map(|f| f as u64)
                })
                .map(Some)
                .ok_or_else(|| {
                    self.err(format!("{key} must be a non-negative integer, found {v}"))
                }),
        }
    }

    fn u64_req(&self, key: &str) -> Result<u64, ArchError> {
        self.u64_opt(key)?
            .ok_or_else(|| self.err(format!("missing {key}")))
    }

    fn f64_opt(&self, key: &str) -> Result<Option<f64>, ArchError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(format!("{key} must be a number, found {v}"))),
        }
    }

    fn bool_opt(&self, key: &str) -> Result<Option<bool>, ArchError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(format!("{key} must be true or false, found {v}"))),
        }
    }

    fn str_opt(&self, key: &str) -> Option<&str> {
        self.raw(key).and_then(Value::as_str)
    }
}

fn build(family: Family, f: &Fields<'_>) -> Result<DecoderConfig, ArchError> {
    use Family::*;
    let hidden_size = f.u64_req("hidden_size")?;
    let num_layers = f.u64_req("num_hidden_layers")?;
    let num_heads = f.u64_req("num_attention_heads")?;
    let num_kv_heads = f.u64_opt("num_key_value_heads")?.unwrap_or(num_heads);
    if num_heads == 0 {
        return Err(f.err("num_attention_heads must be positive".into()));
    }
    let head_dim = match f.u64_opt("head_dim")? {
        Some(d) => d,
        None => hidden_size / num_heads,
    };
    let vocab_size = f.u64_req("vocab_size")?;
    let intermediate_size = f
        .u64_opt("intermediate_size")?
        .unwrap_or(hidden_size.saturating_mul(4));
    let max_context = f
        .u64_opt("max_position_embeddings")?
        .unwrap_or(match family {
            Gemma3 => 131_072,
            _ => 4096,
        });
    let gemma = matches!(family, Gemma | Gemma2 | Gemma3);
    let norm_eps = f
        .f64_opt("rms_norm_eps")?
        .unwrap_or(if gemma { 1e-6 } else { 1e-5 });
    let rope = rope_config(family, f)?;
    let act_name = f
        .str_opt("hidden_activation")
        .or_else(|| f.str_opt("hidden_act"))
        .unwrap_or(if gemma { "gelu_pytorch_tanh" } else { "silu" });
    let activation = match act_name {
        "silu" | "swiglu" => Activation::Silu,
        // Gemma 1 configs say "gelu" but the model runs the tanh approximation.
        "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
        "gelu" if gemma => Activation::GeluTanh,
        "gelu" => Activation::Gelu,
        other => return Err(f.err(format!("unsupported activation {other:?}"))),
    };
    let qkv_bias = match family {
        Qwen2 | Qwen2Moe | Qwen2Vl => true,
        _ => f.bool_opt("attention_bias")?.unwrap_or(false),
    };
    let tie_default = matches!(family, Gemma | Gemma2 | Gemma3);
    // Gemma 3 multimodal configs keep `tie_word_embeddings` at the top level.
    let tie_word_embeddings = match f.bool_opt("tie_word_embeddings")? {
        Some(t) => t,
        None => f
            .top
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(tie_default),
    };
    let layers = layer_attention(family, f, num_layers)?;
    let moe = moe_config(family, f, num_layers)?;
    let mla = match family {
        DeepseekV2 | DeepseekV3 => Some(MlaConfig {
            kv_lora_rank: f.u64_req("kv_lora_rank")?,
            q_lora_rank: f.u64_opt("q_lora_rank")?,
            qk_rope_head_dim: f.u64_req("qk_rope_head_dim")?,
            qk_nope_head_dim: f.u64_req("qk_nope_head_dim")?,
            v_head_dim: f.u64_req("v_head_dim")?,
        }),
        _ => None,
    };
    let (head_dim, v_head_dim) = match &mla {
        Some(m) => (m.qk_nope_head_dim + m.qk_rope_head_dim, m.v_head_dim),
        None => (head_dim, head_dim),
    };
    let vision = vision_config(f)?;
    Ok(DecoderConfig {
        family,
        hidden_size,
        intermediate_size,
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
        max_context,
        norm: if gemma {
            NormKind::RmsOnePlus
        } else {
            NormKind::Rms
        },
        norm_eps,
        rope_theta: rope.theta,
        rope_scaling: rope.scaling,
        rope_local_theta: rope.local_theta,
        partial_rotary_factor: rope.partial_rotary_factor,
        qkv_bias,
        qk_norm: matches!(family, Qwen3 | Qwen3Moe | Gemma3),
        post_norms: matches!(family, Gemma2 | Gemma3),
        fused_qkv: matches!(family, Phi3),
        fused_gate_up: matches!(family, Phi3),
        activation,
        query_pre_attn_scalar: f.f64_opt("query_pre_attn_scalar")?,
        attn_logit_softcap: f.f64_opt("attn_logit_softcapping")?,
        final_logit_softcap: f.f64_opt("final_logit_softcapping")?,
        tie_word_embeddings,
        embedding_scale: gemma.then(|| (hidden_size as f64).sqrt()),
        layers,
        moe,
        mla,
        vision,
    })
}

struct Rope {
    theta: f64,
    scaling: RopeScaling,
    local_theta: Option<f64>,
    partial_rotary_factor: f64,
}

/// RoPE settings from either layout: transformers 5 writes `rope_parameters` (one object, or one
/// per layer type for Gemma 3), older files `rope_theta` + `rope_scaling` (+ Gemma 3's
/// `rope_local_base_freq`).
fn rope_config(family: Family, f: &Fields<'_>) -> Result<Rope, ArchError> {
    let default_theta = if family == Family::Gemma3 {
        1_000_000.0
    } else {
        10_000.0
    };
    let local_default = (family == Family::Gemma3).then_some(10_000.0);
    if let Some(params) = f.raw("rope_parameters").and_then(Value::as_object) {
        let (global, local) = match params.get("full_attention").and_then(Value::as_object) {
            Some(full) => (
                full,
                params.get("sliding_attention").and_then(Value::as_object),
            ),
            None => (params, None),
        };
        let g = Fields {
            map: global,
            top: f.top,
            origin: f.origin,
            defaults: &[],
        };
        let local_theta = match local {
            Some(l) => Fields {
                map: l,
                top: f.top,
                origin: f.origin,
                defaults: &[],
            }
            .f64_opt("rope_theta")?,
            None => None,
        };
        return Ok(Rope {
            theta: g.f64_opt("rope_theta")?.unwrap_or(default_theta),
            scaling: parse_scaling(f, global)?,
            local_theta: local_theta.or(local_default),
            partial_rotary_factor: g
                .f64_opt("partial_rotary_factor")?
                .or(f.f64_opt("partial_rotary_factor")?)
                .unwrap_or(1.0),
        });
    }
    let scaling = match f.raw("rope_scaling").and_then(Value::as_object) {
        Some(obj) => parse_scaling(f, obj)?,
        None => RopeScaling::None,
    };
    Ok(Rope {
        theta: f.f64_opt("rope_theta")?.unwrap_or(default_theta),
        scaling,
        local_theta: f.f64_opt("rope_local_base_freq")?.or(local_default),
        partial_rotary_factor: f.f64_opt("partial_rotary_factor")?.unwrap_or(1.0),
    })
}

fn parse_scaling(f: &Fields<'_>, obj: &Map<String, Value>) -> Result<RopeScaling, ArchError> {
    let sub = Fields {
        map: obj,
        top: f.top,
        origin: f.origin,
        defaults: &[],
    };
    let kind = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let factor = sub.f64_opt("factor")?.unwrap_or(1.0);
    let original = sub
        .u64_opt("original_max_position_embeddings")?
        .or(f.u64_opt("original_max_position_embeddings")?)
        .unwrap_or(0);
    Ok(match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor },
        "dynamic" => RopeScaling::Dynamic { factor },
        "llama3" => RopeScaling::Llama3 {
            factor,
            low_freq_factor: sub.f64_opt("low_freq_factor")?.unwrap_or(1.0),
            high_freq_factor: sub.f64_opt("high_freq_factor")?.unwrap_or(4.0),
            original_max_position: original,
        },
        "yarn" => RopeScaling::Yarn {
            factor,
            original_max_position: original,
            beta_fast: sub.f64_opt("beta_fast")?.unwrap_or(32.0),
            beta_slow: sub.f64_opt("beta_slow")?.unwrap_or(1.0),
        },
        "longrope" | "su" => {
            let factors = |key: &str| -> Result<Vec<f64>, ArchError> {
                match obj.get(key) {
                    Some(Value::Array(a)) => a
                        .iter()
                        .map(|v| {
                            v.as_f64()
                                .filter(|x| x.is_finite() && *x > 0.0)
                                .ok_or_else(|| {
                                    f.err(format!(
                                        "rope_scaling.{key} holds {v}, not a positive number"
                                    ))
                                })
                        })
                        .collect(),
                    // Planning needs no factors; running a model without them is an error there.
                    None | Some(Value::Null) => Ok(Vec::new()),
                    Some(v) => Err(f.err(format!("rope_scaling.{key} must be a list, found {v}"))),
                }
            };
            let max = f.u64_opt("max_position_embeddings")?.unwrap_or(original);
            // transformers: the ratio of the context lengths unless `factor` is given.
            let attention_factor = match (sub.f64_opt("attention_factor")?, sub.f64_opt("factor")?)
            {
                (Some(a), _) => a,
                (None, Some(fac)) => longrope_attention_factor(fac, original),
                (None, None) => longrope_attention_factor(context_scale(max, original), original),
            };
            RopeScaling::LongRope {
                original_max_position: original,
                attention_factor,
                long_factor: factors("long_factor")?,
                short_factor: factors("short_factor")?,
            }
        }
        // Qwen2.5-VL's multimodal RoPE has the same frequencies as the default one for text.
        "mrope" => RopeScaling::None,
        other => return Err(f.err(format!("unsupported rope_scaling type {other:?}"))),
    })
}

fn layer_attention(
    family: Family,
    f: &Fields<'_>,
    num_layers: u64,
) -> Result<Vec<LayerAttention>, ArchError> {
    use Family::*;
    let window = f.u64_opt("sliding_window")?;
    if num_layers > 1 << 16 {
        return Err(f.err(format!(
            "num_hidden_layers = {num_layers} is implausibly large"
        )));
    }
    if let Some(types) = f.raw("layer_types").and_then(Value::as_array) {
        if types.len() as u64 != num_layers {
            return Err(f.err(format!(
                "layer_types has {} entries for {num_layers} layers",
                types.len()
            )));
        }
        return types
            .iter()
            .map(|t| match (t.as_str(), window) {
                (Some("full_attention"), _) => Ok(LayerAttention::Global),
                (Some("sliding_attention"), Some(w)) => Ok(LayerAttention::Sliding { window: w }),
                (Some("sliding_attention"), None) => {
                    Err(f.err("sliding layers without sliding_window".into()))
                }
                _ => Err(f.err(format!("unknown layer type {t}"))),
            })
            .collect();
    }
    let sliding = |w: u64| LayerAttention::Sliding { window: w };
    let layers = (0..num_layers)
        .map(|i| match (family, window) {
            (Gemma2, Some(w)) if i % 2 == 0 => sliding(w),
            (Gemma3, Some(w)) => {
                let pattern = f
                    .u64_opt("sliding_window_pattern")
                    .ok()
                    .flatten()
                    .unwrap_or(6)
                    .max(1);
                if (i + 1) % pattern == 0 {
                    LayerAttention::Global
                } else {
                    sliding(w)
                }
            }
            (Qwen2 | Qwen2Moe | Qwen3 | Qwen3Moe | Qwen2Vl, Some(w)) => {
                let enabled = f
                    .bool_opt("use_sliding_window")
                    .ok()
                    .flatten()
                    .unwrap_or(false);
                let from = f
                    .u64_opt("max_window_layers")
                    .ok()
                    .flatten()
                    .unwrap_or(num_layers);
                if enabled && i >= from {
                    sliding(w)
                } else {
                    LayerAttention::Global
                }
            }
            (Mistral | Mixtral | Phi3 | PhiMoe, Some(w))
                if w < f
                    .u64_opt("max_position_embeddings")
                    .ok()
                    .flatten()
                    .unwrap_or(u64::MAX) =>
            {
                sliding(w)
            }
            _ => LayerAttention::Global,
        })
        .collect::<Vec<_>>();
    if family == Mllama {
        let cross: Vec<u64> = f
            .raw("cross_attention_layers")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        return Ok(layers
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                if cross.contains(&(i as u64)) {
                    LayerAttention::Cross
                } else {
                    l
                }
            })
            .collect());
    }
    Ok(layers)
}

fn moe_config(
    family: Family,
    f: &Fields<'_>,
    num_layers: u64,
) -> Result<Option<MoeConfig>, ArchError> {
    use Family::*;
    let experts = match family {
        Mixtral | PhiMoe => f.u64_opt("num_local_experts")?,
        // transformers 5 writes `num_local_experts` for Qwen MoE too.
        Qwen2Moe | Qwen3Moe => f
            .u64_opt("num_experts")?
            .or(f.u64_opt("num_local_experts")?),
        DeepseekV2 | DeepseekV3 => f.u64_opt("n_routed_experts")?,
        _ => None,
    };
    let Some(num_experts) = experts else {
        return Ok(None);
    };
    let experts_per_token = f.u64_req("num_experts_per_tok")?;
    let (expert_intermediate_size, shared, shared_gate) = match family {
        Mixtral | PhiMoe => (f.u64_req("intermediate_size")?, 0, false),
        Qwen2Moe => (
            f.u64_req("moe_intermediate_size")?,
            f.u64_opt("shared_expert_intermediate_size")?.unwrap_or(0),
            true,
        ),
        Qwen3Moe => (f.u64_req("moe_intermediate_size")?, 0, false),
        _ => {
            let e = f.u64_req("moe_intermediate_size")?;
            (e, f.u64_opt("n_shared_experts")?.unwrap_or(0) * e, false)
        }
    };
    let dense_layers = match family {
        DeepseekV2 | DeepseekV3 => {
            let first = f.u64_opt("first_k_dense_replace")?.unwrap_or(0);
            let freq = f.u64_opt("moe_layer_freq")?.unwrap_or(1).max(1);
            (0..num_layers)
                .filter(|&i| i < first || i % freq != 0)
                .collect()
        }
        Qwen2Moe | Qwen3Moe => {
            let step = f.u64_opt("decoder_sparse_step")?.unwrap_or(1).max(1);
            let only: Vec<u64> = f
                .raw("mlp_only_layers")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            (0..num_layers)
                .filter(|i| only.contains(i) || (i + 1) % step != 0)
                .collect()
        }
        _ => Vec::new(),
    };
    Ok(Some(MoeConfig {
        num_experts,
        experts_per_token,
        expert_intermediate_size,
        shared_intermediate_size: shared,
        shared_expert_gate: shared_gate,
        norm_topk_prob: match family {
            Mixtral | PhiMoe => true,
            _ => f.bool_opt("norm_topk_prob")?.unwrap_or(false),
        },
        dense_layers,
    }))
}

fn vision_config(f: &Fields<'_>) -> Result<Option<VisionConfig>, ArchError> {
    let Some(obj) = f.top.get("vision_config").and_then(Value::as_object) else {
        return Ok(None);
    };
    let v = Fields {
        map: obj,
        top: f.top,
        origin: f.origin,
        defaults: &[],
    };
    // Qwen2-VL's `hidden_size` is the projector's output; the tower's width is `embed_dim`.
    let hidden_size = v.u64_opt("embed_dim")?.or(v.u64_opt("hidden_size")?);
    let Some(hidden_size) = hidden_size else {
        return Ok(None);
    };
    let mlp_ratio = v.f64_opt("mlp_ratio")?.unwrap_or(4.0);
    let intermediate_size = match v.u64_opt("intermediate_size")? {
        Some(i) => i,
        None => (hidden_size as f64 * mlp_ratio) as u64,
    };
    // Llama 3.2 Vision adds `num_global_layers` after its local layers.
    let layers = v
        .u64_opt("num_hidden_layers")?
        .or(v.u64_opt("depth")?)
        .unwrap_or(0)
        .saturating_add(v.u64_opt("num_global_layers")?.unwrap_or(0));
    if layers > 1 << 16 {
        return Err(f.err(format!(
            "vision_config has {layers} layers, implausibly many"
        )));
    }
    Ok(Some(VisionConfig {
        hidden_size,
        intermediate_size,
        num_layers: layers,
        patch_size: v.u64_opt("patch_size")?.unwrap_or(14),
        image_size: v.u64_opt("image_size")?.unwrap_or(448),
    }))
}
