//! The tensor inventory of a model: every weight with its shape, in GGUF naming
//! (`blk.{i}.attn_q.weight`). Built from a [`DecoderConfig`] (what a converter would write) or read
//! from a GGUF header (what a file holds); the byte math prices either one the same way.

use serde::Serialize;

use crate::decoder_config::{DecoderConfig, Family, LayerAttention, RopeScaling};
use crate::gguf::GgufHeader;

/// What a tensor is, as far as storage and quantization care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorKind {
    /// Token embedding table `[vocab, hidden]`.
    Embedding,
    /// LM head `[vocab, hidden]`.
    Output,
    /// A 2-D projection `[out, in]`.
    Linear,
    /// Stacked expert projections `[experts, out, in]`.
    Experts,
    /// MoE router `[experts, hidden]` (never quantized).
    Router,
    /// Norm weights, biases, RoPE factors: 1-D, kept in full precision.
    Vector,
    /// An image encoder, priced as f16 (shape is `[params]`).
    Vision,
}

/// One weight tensor. `shape` is in PyTorch order (`[out, in]`); the row length is the last dim.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<u64>,
    pub kind: TensorKind,
    pub layer: Option<u64>,
}

impl TensorSpec {
    /// Elements (saturating: validated configs stay far below `u64::MAX`).
    pub fn n_elems(&self) -> u64 {
        self.shape.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }

    /// Length of one row (the reduction dimension of a matmul); quant blocks run along it.
    pub fn row_len(&self) -> u64 {
        self.shape.last().copied().unwrap_or(0)
    }

    /// Rows (output features, times experts for stacked experts).
    pub fn n_rows(&self) -> u64 {
        let r = self.row_len();
        self.n_elems().checked_div(r).unwrap_or(0)
    }
}

fn spec(name: String, shape: Vec<u64>, kind: TensorKind, layer: Option<u64>) -> TensorSpec {
    TensorSpec {
        name,
        shape,
        kind,
        layer,
    }
}

/// The tensors a converter writes for `cfg`, in file order.
pub fn decoder_tensors(cfg: &DecoderConfig) -> Vec<TensorSpec> {
    use TensorKind::*;
    let h = cfg.hidden_size;
    let mut out = vec![spec(
        "token_embd.weight".into(),
        vec![cfg.vocab_size, h],
        Embedding,
        None,
    )];
    if matches!(
        cfg.rope_scaling,
        RopeScaling::Llama3 { .. } | RopeScaling::Factors { .. }
    ) {
        out.push(spec(
            "rope_freqs.weight".into(),
            vec![cfg.head_dim / 2],
            Vector,
            None,
        ));
    }
    for i in 0..cfg.num_layers {
        let l = Some(i);
        let n = |s: &str| format!("blk.{i}.{s}");
        let cross = cfg.layers.get(i as usize) == Some(&LayerAttention::Cross);
        let p = if cross { "cross_attn_" } else { "attn_" };
        out.push(spec(n(&format!("{p}norm.weight")), vec![h], Vector, l));
        match &cfg.mla {
            Some(m) => {
                let qk = m.qk_nope_head_dim + m.qk_rope_head_dim;
                match m.q_lora_rank {
                    Some(r) => {
                        out.push(spec(n("attn_q_a.weight"), vec![r, h], Linear, l));
                        out.push(spec(n("attn_q_a_norm.weight"), vec![r], Vector, l));
                        out.push(spec(
                            n("attn_q_b.weight"),
                            vec![cfg.num_heads * qk, r],
                            Linear,
                            l,
                        ));
                    }
                    None => out.push(spec(
                        n("attn_q.weight"),
                        vec![cfg.num_heads * qk, h],
                        Linear,
                        l,
                    )),
                }
                out.push(spec(
                    n("attn_kv_a_mqa.weight"),
                    vec![m.kv_lora_rank + m.qk_rope_head_dim, h],
                    Linear,
                    l,
                ));
                out.push(spec(
                    n("attn_kv_a_norm.weight"),
                    vec![m.kv_lora_rank],
                    Vector,
                    l,
                ));
                out.push(spec(
                    n("attn_kv_b.weight"),
                    vec![
                        cfg.num_heads * (m.qk_nope_head_dim + m.v_head_dim),
                        m.kv_lora_rank,
                    ],
                    Linear,
                    l,
                ));
                out.push(spec(
                    n("attn_output.weight"),
                    vec![h, cfg.num_heads * m.v_head_dim],
                    Linear,
                    l,
                ));
            }
            None if cfg.fused_qkv => {
                out.push(spec(
                    n("attn_qkv.weight"),
                    vec![cfg.q_dim() + cfg.k_dim() + cfg.v_dim(), h],
                    Linear,
                    l,
                ));
                out.push(spec(
                    n("attn_output.weight"),
                    vec![h, cfg.num_heads * cfg.v_head_dim],
                    Linear,
                    l,
                ));
            }
            None => {
                out.push(spec(
                    n(&format!("{p}q.weight")),
                    vec![cfg.q_dim(), h],
                    Linear,
                    l,
                ));
                out.push(spec(
                    n(&format!("{p}k.weight")),
                    vec![cfg.k_dim(), h],
                    Linear,
                    l,
                ));
                out.push(spec(
                    n(&format!("{p}v.weight")),
                    vec![cfg.v_dim(), h],
                    Linear,
                    l,
                ));
                if cfg.qkv_bias {
                    out.push(spec(n(&format!("{p}q.bias")), vec![cfg.q_dim()], Vector, l));
                    out.push(spec(n(&format!("{p}k.bias")), vec![cfg.k_dim()], Vector, l));
                    out.push(spec(n(&format!("{p}v.bias")), vec![cfg.v_dim()], Vector, l));
                }
                if cfg.qk_norm || cross {
                    out.push(spec(
                        n(&format!("{p}q_norm.weight")),
                        vec![cfg.head_dim],
                        Vector,
                        l,
                    ));
                    out.push(spec(
                        n(&format!("{p}k_norm.weight")),
                        vec![cfg.head_dim],
                        Vector,
                        l,
                    ));
                }
                out.push(spec(
                    n(&format!("{p}output.weight")),
                    vec![h, cfg.num_heads * cfg.v_head_dim],
                    Linear,
                    l,
                ));
            }
        }
        if cfg.post_norms {
            out.push(spec(n("post_attention_norm.weight"), vec![h], Vector, l));
        }
        out.push(spec(n("ffn_norm.weight"), vec![h], Vector, l));
        match &cfg.moe {
            Some(m) if cfg.is_moe_layer(i) => {
                let e = m.num_experts;
                let ie = m.expert_intermediate_size;
                out.push(spec(n("ffn_gate_inp.weight"), vec![e, h], Router, l));
                if cfg.family == Family::DeepseekV3 {
                    out.push(spec(n("exp_probs_b.bias"), vec![e], Vector, l));
                }
                out.push(spec(n("ffn_gate_exps.weight"), vec![e, ie, h], Experts, l));
                out.push(spec(n("ffn_down_exps.weight"), vec![e, h, ie], Experts, l));
                out.push(spec(n("ffn_up_exps.weight"), vec![e, ie, h], Experts, l));
                if m.shared_intermediate_size > 0 {
                    let is = m.shared_intermediate_size;
                    if m.shared_expert_gate {
                        out.push(spec(n("ffn_gate_inp_shexp.weight"), vec![h], Vector, l));
                    }
                    out.push(spec(n("ffn_gate_shexp.weight"), vec![is, h], Linear, l));
                    out.push(spec(n("ffn_down_shexp.weight"), vec![h, is], Linear, l));
                    out.push(spec(n("ffn_up_shexp.weight"), vec![is, h], Linear, l));
                }
            }
            _ if cfg.fused_gate_up => {
                out.push(spec(
                    n("ffn_down.weight"),
                    vec![h, cfg.intermediate_size],
                    Linear,
                    l,
                ));
                out.push(spec(
                    n("ffn_up.weight"),
                    vec![2 * cfg.intermediate_size, h],
                    Linear,
                    l,
                ));
            }
            _ => {
                out.push(spec(
                    n("ffn_gate.weight"),
                    vec![cfg.intermediate_size, h],
                    Linear,
                    l,
                ));
                out.push(spec(
                    n("ffn_down.weight"),
                    vec![h, cfg.intermediate_size],
                    Linear,
                    l,
                ));
                out.push(spec(
                    n("ffn_up.weight"),
                    vec![cfg.intermediate_size, h],
                    Linear,
                    l,
                ));
            }
        }
        if cfg.post_norms {
            out.push(spec(n("post_ffw_norm.weight"), vec![h], Vector, l));
        }
    }
    out.push(spec("output_norm.weight".into(), vec![h], Vector, None));
    if !cfg.tie_word_embeddings {
        out.push(spec(
            "output.weight".into(),
            vec![cfg.vocab_size, h],
            Output,
            None,
        ));
    }
    if let Some(v) = &cfg.vision {
        out.push(spec(
            "v.tower".into(),
            vec![vision_params(v, h)],
            Vision,
            None,
        ));
    }
    out
}

/// Parameters of a ViT image encoder plus a two-layer projector into the decoder's width.
fn vision_params(v: &crate::decoder_config::VisionConfig, text_hidden: u64) -> u64 {
    let h = v.hidden_size;
    let per_layer =
        4 * h * h + 4 * h + 2 * h * v.intermediate_size + v.intermediate_size + h + 4 * h;
    let patches = (v.image_size / v.patch_size.max(1)).pow(2);
    let embed = 3 * v.patch_size * v.patch_size * h + h + patches * h;
    let projector = h * text_hidden + text_hidden * text_hidden + 2 * text_hidden;
    v.num_layers * per_layer + embed + projector
}

/// Classifies a GGUF tensor name.
pub fn kind_of_gguf_name(name: &str, n_dims: usize) -> TensorKind {
    let base = match name.strip_prefix("blk.") {
        Some(rest) => rest.split_once('.').map_or(rest, |(_, b)| b),
        None => name,
    };
    if name.starts_with("v.") || name.starts_with("mm.") {
        TensorKind::Vision
    } else if base == "token_embd.weight" {
        TensorKind::Embedding
    } else if base == "output.weight" {
        TensorKind::Output
    } else if base == "ffn_gate_inp.weight" {
        TensorKind::Router
    } else if n_dims <= 1 {
        TensorKind::Vector
    } else if base.contains("_exps.") {
        TensorKind::Experts
    } else {
        TensorKind::Linear
    }
}

/// The tensors of a GGUF file, in file order, with shapes in PyTorch order.
pub fn gguf_tensors(h: &GgufHeader) -> Vec<TensorSpec> {
    h.tensors
        .iter()
        .map(|t| {
            let dims: Vec<u64> = t.dims.iter().rev().copied().collect();
            let layer = t
                .name
                .strip_prefix("blk.")
                .and_then(|r| r.split_once('.'))
                .and_then(|(i, _)| i.parse().ok());
            let kind = kind_of_gguf_name(&t.name, t.dims.iter().filter(|&&d| d > 1).count().max(1));
            spec(t.name.clone(), dims, kind, layer)
        })
        .collect()
}
