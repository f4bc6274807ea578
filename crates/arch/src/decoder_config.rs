//! `DecoderConfig`: one normalized description of a decoder-only transformer, whichever file it
//! came from (HF `config.json` or GGUF metadata). The engine builds its one configurable decoder
//! from it; the byte math in this crate reads the same numbers.

use serde::Serialize;

use crate::error::ArchError;

/// The model families forja knows. A family is a config mapping and a weight-name table, never a
/// separate model implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Llama,
    Mistral,
    Mixtral,
    Qwen2,
    Qwen2Moe,
    Qwen3,
    Qwen3Moe,
    Gemma,
    Gemma2,
    Gemma3,
    Phi3,
    PhiMoe,
    DeepseekV2,
    DeepseekV3,
    /// Llama 3.2 Vision: a Llama decoder with interleaved cross-attention layers.
    Mllama,
    /// Qwen2-VL / Qwen2.5-VL: a Qwen2 decoder plus a vision tower.
    Qwen2Vl,
}

/// Families listed in error messages.
pub const SUPPORTED_FAMILIES: &str = "llama, mistral, mixtral, qwen2, qwen2_moe, qwen3, qwen3_moe, gemma, gemma2, gemma3, phi3, phimoe, deepseek_v2, deepseek_v3, mllama, qwen2_5_vl";

impl Family {
    /// The `general.architecture` value llama.cpp writes for this family.
    pub fn gguf_arch(self) -> &'static str {
        match self {
            Family::Llama | Family::Mistral | Family::Mixtral => "llama",
            Family::Qwen2 => "qwen2",
            Family::Qwen2Moe => "qwen2moe",
            Family::Qwen3 => "qwen3",
            Family::Qwen3Moe => "qwen3moe",
            Family::Gemma => "gemma",
            Family::Gemma2 => "gemma2",
            Family::Gemma3 => "gemma3",
            Family::Phi3 => "phi3",
            Family::PhiMoe => "phimoe",
            Family::DeepseekV2 | Family::DeepseekV3 => "deepseek2",
            Family::Mllama => "mllama",
            Family::Qwen2Vl => "qwen2vl",
        }
    }
}

/// RMSNorm flavour: `x / rms(x) * w`, or Gemma's `x / rms(x) * (1 + w)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    Rms,
    RmsOnePlus,
}

/// MLP activation (of the gated decoder MLP, or of an encoder's intermediate layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Silu,
    /// GELU, tanh approximation.
    GeluTanh,
    /// GELU, exact (erf).
    Gelu,
    Relu,
}

/// How many times `max` positions extend `original` ones.
pub fn context_scale(max: u64, original: u64) -> f64 {
    max as f64 / original.max(1) as f64
}

/// LongRoPE's default multiplier on cos/sin for a context extended `scale` times beyond
/// `original` positions: √(1 + ln(scale) / ln(original)), 1 without extension.
pub fn longrope_attention_factor(scale: f64, original: u64) -> f64 {
    if scale <= 1.0 || original <= 1 {
        1.0
    } else {
        (1.0 + scale.ln() / (original as f64).ln()).sqrt()
    }
}

/// RoPE frequency scaling, as in HF `rope_scaling`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RopeScaling {
    None,
    Linear {
        factor: f64,
    },
    Dynamic {
        factor: f64,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position: u64,
    },
    Yarn {
        factor: f64,
        original_max_position: u64,
        beta_fast: f64,
        beta_slow: f64,
    },
    /// Per-frequency divisors stored with the weights (GGUF `rope_freqs.weight`, which llama.cpp's
    /// converter writes for Llama 3.x instead of its `rope_scaling` parameters). Empty until the
    /// weights are read.
    Factors {
        #[serde(skip)]
        factors: Vec<f64>,
    },
    /// Phi-3 long-context (`longrope` / `su`): per-frequency divisors for contexts within the
    /// original length (short) and beyond it (long), and a multiplier on cos/sin.
    LongRope {
        original_max_position: u64,
        attention_factor: f64,
        /// Empty when the weights carry them (GGUF `rope_factors_long.weight`).
        #[serde(skip)]
        long_factor: Vec<f64>,
        /// Empty when the weights carry them (GGUF `rope_factors_short.weight`).
        #[serde(skip)]
        short_factor: Vec<f64>,
    },
}

/// Attention of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerAttention {
    /// Attends to the whole context.
    Global,
    /// Attends to the last `window` tokens only.
    Sliding { window: u64 },
    /// Cross-attention to image tokens; keeps no per-token self-attention KV.
    Cross,
}

/// Mixture-of-experts MLP.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoeConfig {
    pub num_experts: u64,
    pub experts_per_token: u64,
    pub expert_intermediate_size: u64,
    /// Total intermediate size of the always-on shared expert(s), 0 if none.
    pub shared_intermediate_size: u64,
    /// Qwen2-MoE's sigmoid gate on the shared expert.
    pub shared_expert_gate: bool,
    /// Whether the top-k routing weights are renormalized to sum to one (Mixtral always; Qwen
    /// MoE per `norm_topk_prob`).
    pub norm_topk_prob: bool,
    /// Layers that use the dense MLP (`intermediate_size`) instead of experts.
    pub dense_layers: Vec<u64>,
}

/// DeepSeek multi-head latent attention: the KV cache stores one compressed latent per token.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MlaConfig {
    pub kv_lora_rank: u64,
    pub q_lora_rank: Option<u64>,
    pub qk_rope_head_dim: u64,
    pub qk_nope_head_dim: u64,
    pub v_head_dim: u64,
}

/// A ViT-style image encoder attached to a multimodal model (parameters only; it is planned as
/// f16 weights beside the decoder).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VisionConfig {
    pub hidden_size: u64,
    pub intermediate_size: u64,
    pub num_layers: u64,
    pub patch_size: u64,
    pub image_size: u64,
}

/// The normalized decoder description.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecoderConfig {
    pub family: Family,
    pub hidden_size: u64,
    /// Dense MLP width (per layer that is not MoE).
    pub intermediate_size: u64,
    pub num_layers: u64,
    pub num_heads: u64,
    pub num_kv_heads: u64,
    /// Query/key width per head.
    pub head_dim: u64,
    /// Value width per head (equal to `head_dim` except in MLA models).
    pub v_head_dim: u64,
    pub vocab_size: u64,
    /// Longest context: the model's trained length, or the shorter one it is loaded to run
    /// with (`models::loader::LoadOptions::context`; LongRoPE picks its factors by it).
    pub max_context: u64,
    pub norm: NormKind,
    pub norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    /// RoPE base of sliding-window layers when it differs (Gemma 3: 10,000 locally, 1,000,000
    /// on global layers, which alone get `rope_scaling`).
    pub rope_local_theta: Option<f64>,
    /// Fraction of `head_dim` that is rotated (Phi-2 style partial RoPE); 1.0 for most models.
    pub partial_rotary_factor: f64,
    pub qkv_bias: bool,
    pub qk_norm: bool,
    /// Gemma 2/3: extra norms after attention and after the MLP.
    pub post_norms: bool,
    /// q/k/v stored as one projection (Phi-3's `qkv_proj`, GGUF `attn_qkv`).
    pub fused_qkv: bool,
    /// gate/up stored as one projection (Phi-3's `gate_up_proj`, GGUF `ffn_up` of twice the
    /// width and no `ffn_gate`).
    pub fused_gate_up: bool,
    pub activation: Activation,
    /// Gemma 2/3: attention scores are scaled by `query_pre_attn_scalar^-0.5` instead of
    /// `head_dim^-0.5`.
    pub query_pre_attn_scalar: Option<f64>,
    pub attn_logit_softcap: Option<f64>,
    pub final_logit_softcap: Option<f64>,
    pub tie_word_embeddings: bool,
    /// Multiplier on token embeddings (Gemma: sqrt(hidden_size)).
    pub embedding_scale: Option<f64>,
    /// Per-layer attention kind; `layers.len() == num_layers`.
    pub layers: Vec<LayerAttention>,
    pub moe: Option<MoeConfig>,
    pub mla: Option<MlaConfig>,
    pub vision: Option<VisionConfig>,
}

impl DecoderConfig {
    /// Query projection width (`num_heads * head_dim`).
    pub fn q_dim(&self) -> u64 {
        self.num_heads * self.head_dim
    }

    /// Key width of one token in one layer (`num_kv_heads * head_dim`).
    pub fn k_dim(&self) -> u64 {
        self.num_kv_heads * self.head_dim
    }

    /// Value width of one token in one layer.
    pub fn v_dim(&self) -> u64 {
        self.num_kv_heads * self.v_head_dim
    }

    /// Whether layer `i` uses experts.
    pub fn is_moe_layer(&self, i: u64) -> bool {
        self.moe
            .as_ref()
            .is_some_and(|m| !m.dense_layers.contains(&i))
    }

    /// Checks the invariants every consumer relies on; the message names the offending field.
    pub fn validate(&self) -> Result<(), ArchError> {
        let bad = |what: String| Err(ArchError::Config { path: None, what });
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("max context", self.max_context),
        ] {
            if v == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        const LIMIT: u64 = 1 << 24;
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
        ] {
            if v > LIMIT {
                return bad(format!("{name} = {v} is implausibly large (limit {LIMIT})"));
            }
        }
        if self.v_head_dim == 0 || self.v_head_dim > LIMIT {
            return bad(format!(
                "value head size {} is out of range",
                self.v_head_dim
            ));
        }
        for (name, product) in [
            (
                "num_attention_heads × head_dim",
                self.num_heads.saturating_mul(self.head_dim),
            ),
            (
                "num_attention_heads × value head size",
                self.num_heads.saturating_mul(self.v_head_dim),
            ),
            (
                "num_key_value_heads × head_dim",
                self.num_kv_heads.saturating_mul(self.head_dim),
            ),
        ] {
            if product > 1 << 20 {
                return bad(format!("{name} = {product} is implausibly large"));
            }
        }
        if self.num_kv_heads > self.num_heads {
            return bad(format!(
                "num_key_value_heads ({}) exceeds num_attention_heads ({})",
                self.num_kv_heads, self.num_heads
            ));
        }
        if let Some(m) = &self.mla {
            for (name, v) in [
                ("kv_lora_rank", m.kv_lora_rank),
                ("q_lora_rank", m.q_lora_rank.unwrap_or(1)),
                ("qk_rope_head_dim", m.qk_rope_head_dim),
                ("qk_nope_head_dim", m.qk_nope_head_dim),
                ("v_head_dim", m.v_head_dim),
            ] {
                if v > LIMIT {
                    return bad(format!("{name} = {v} is implausibly large"));
                }
            }
        }
        if let Some(v) = &self.vision {
            for (name, x) in [
                ("vision hidden_size", v.hidden_size),
                ("vision intermediate_size", v.intermediate_size),
                ("vision num_hidden_layers", v.num_layers),
                ("vision patch_size", v.patch_size),
                ("vision image_size", v.image_size),
            ] {
                if x > 1 << 16 {
                    return bad(format!("{name} = {x} is implausibly large"));
                }
            }
        }
        if self.max_context > 1 << 26 {
            return bad(format!(
                "context length {} is implausibly large",
                self.max_context
            ));
        }
        if self.mla.is_none() && !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.layers.len() as u64 != self.num_layers {
            return bad(format!(
                "{} layer attention kinds for {} layers",
                self.layers.len(),
                self.num_layers
            ));
        }
        if let Some(moe) = &self.moe {
            if moe.num_experts == 0
                || moe.experts_per_token == 0
                || moe.experts_per_token > moe.num_experts
            {
                return bad(format!(
                    "MoE with {} experts and {} experts per token",
                    moe.num_experts, moe.experts_per_token
                ));
            }
            if moe.dense_layers.len() as u64 > self.num_layers
                || moe.dense_layers.iter().any(|&l| l >= self.num_layers)
            {
                return bad("MoE dense layers outside the model's layers".into());
            }
            if moe.num_experts > 4096
                || moe.expert_intermediate_size > LIMIT
                || moe.shared_intermediate_size > LIMIT
            {
                return bad(format!(
                    "MoE with {} experts is implausibly large",
                    moe.num_experts
                ));
            }
        }
        Ok(())
    }
}
