//! Weight bytes: the exact storage of each tensor in a given format, summed.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::decoder_config::DecoderConfig;
use crate::ggml_type::GgmlType;
use crate::quant_recipe::assign_types;
use crate::tensors::{TensorKind, TensorSpec};
use crate::weight_format::WeightFormat;

/// Group size of AWQ/GPTQ checkpoints.
const INT4_GROUP: u64 = 128;

/// The priced weights of a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightBytes {
    /// All parameters (every expert counted).
    pub params: u64,
    /// Parameters used for one token (MoE: only the routed experts).
    pub active_params: u64,
    /// Bytes of all weights (every expert counted).
    pub total_bytes: u64,
    /// Bytes read to produce one token (MoE: routed experts only; the embedding row lookup is
    /// counted as one row).
    pub active_bytes: u64,
    /// Bytes per storage type (`q4_K`, `f32`, `bf16`, …).
    pub bytes_by_type: BTreeMap<String, u64>,
    /// Parameters of the image encoder, included in `params` (0 for text-only models).
    pub vision_params: u64,
    /// Bytes of routed-expert tensors (0 for dense models), included in `total_bytes`.
    pub expert_bytes: u64,
    /// Bytes of the token embedding table, included in `total_bytes`.
    pub embedding_bytes: u64,
}

impl WeightBytes {
    /// Effective bits per weight over the whole model.
    pub fn bits_per_weight(&self) -> f64 {
        if self.params == 0 {
            0.0
        } else {
            self.total_bytes as f64 * 8.0 / self.params as f64
        }
    }
}

/// Storage of one tensor in `format`: `(type label, bytes)`. `ggml` is the GGUF type already
/// chosen by the recipe when `format` is GGUF.
fn tensor_bytes(t: &TensorSpec, format: WeightFormat, ggml: Option<GgmlType>) -> (String, u64) {
    let n = t.n_elems();
    let quantizable = matches!(t.kind, TensorKind::Linear | TensorKind::Experts);
    let half = ("bf16".to_string(), n.saturating_mul(2));
    match format {
        WeightFormat::F32 => ("f32".into(), n.saturating_mul(4)),
        WeightFormat::F16 => ("f16".into(), n.saturating_mul(2)),
        WeightFormat::Bf16 => half,
        WeightFormat::Fp8 if quantizable => ("fp8".into(), n + 4 * t.n_rows()),
        WeightFormat::Int8 if quantizable => ("int8".into(), n + 2 * t.n_rows()),
        WeightFormat::Awq | WeightFormat::Gptq if quantizable => {
            let groups = n.div_ceil(INT4_GROUP);
            // 4-bit weights + an fp16 scale and a 4-bit zero point per group of 128.
            let mut bytes = n / 2 + groups * 2 + groups.div_ceil(2);
            if format == WeightFormat::Gptq {
                let experts = if t.kind == TensorKind::Experts {
                    t.shape[0]
                } else {
                    1
                };
                bytes += 4 * t.row_len() * experts;
            }
            ("int4".into(), bytes)
        }
        WeightFormat::Fp8 | WeightFormat::Int8 | WeightFormat::Awq | WeightFormat::Gptq => half,
        WeightFormat::Gguf(_) => {
            let ty = ggml.unwrap_or(GgmlType::F32);
            let bytes = ty
                .bytes_for(n)
                .unwrap_or_else(|| GgmlType::F16.bytes_for(n).unwrap_or(2 * n));
            (ty.name().to_string(), bytes)
        }
    }
}

/// Prices `tensors` in `format` (for GGUF, with llama.cpp's per-tensor recipe).
pub fn price_weights(
    cfg: &DecoderConfig,
    tensors: &[TensorSpec],
    format: WeightFormat,
) -> WeightBytes {
    let types = match format {
        WeightFormat::Gguf(recipe) => assign_types(recipe, cfg, tensors)
            .into_iter()
            .map(Some)
            .collect(),
        _ => vec![None; tensors.len()],
    };
    let priced: Vec<(String, u64)> = tensors
        .iter()
        .zip(types)
        .map(|(t, ty)| tensor_bytes(t, format, ty))
        .collect();
    sum_priced(cfg, tensors, &priced)
}

/// Prices tensors whose storage is already known (a GGUF file): `types[i]` is tensor `i`'s type.
pub fn price_stored(
    cfg: &DecoderConfig,
    tensors: &[TensorSpec],
    types: &[GgmlType],
) -> WeightBytes {
    let priced: Vec<(String, u64)> = tensors
        .iter()
        .zip(types)
        .map(|(t, ty)| {
            (
                ty.name().to_string(),
                ty.bytes_for(t.n_elems()).unwrap_or(0),
            )
        })
        .collect();
    sum_priced(cfg, tensors, &priced)
}

fn sum_priced(
    cfg: &DecoderConfig,
    tensors: &[TensorSpec],
    priced: &[(String, u64)],
) -> WeightBytes {
    let (top_k, n_exp) = cfg
        .moe
        .as_ref()
        .map_or((1, 1), |m| (m.experts_per_token, m.num_experts.max(1)));
    let mut out = WeightBytes {
        params: 0,
        active_params: 0,
        total_bytes: 0,
        active_bytes: 0,
        bytes_by_type: BTreeMap::new(),
        vision_params: 0,
        expert_bytes: 0,
        embedding_bytes: 0,
    };
    for (t, (label, bytes)) in tensors.iter().zip(priced) {
        let n = t.n_elems();
        out.params = out.params.saturating_add(n);
        out.total_bytes = out.total_bytes.saturating_add(*bytes);
        let by_type = out.bytes_by_type.entry(label.clone()).or_default();
        *by_type = by_type.saturating_add(*bytes);
        match t.kind {
            TensorKind::Experts => {
                out.expert_bytes += bytes;
                out.active_params += n / n_exp * top_k;
                out.active_bytes += bytes / n_exp * top_k;
            }
            TensorKind::Embedding => {
                out.embedding_bytes += bytes;
                out.active_params += n;
                // Decoding reads one row of the table; with tied embeddings the head reads it all.
                let rows = t.n_rows().max(1);
                out.active_bytes += if cfg.tie_word_embeddings {
                    *bytes
                } else {
                    bytes / rows
                };
            }
            TensorKind::Vision => {
                out.vision_params += n;
                out.active_params += n;
            }
            _ => {
                out.active_params += n;
                out.active_bytes += bytes;
            }
        }
    }
    out
}

/// Bytes of GGUF metadata per vocabulary entry (token string, score, type and, for BPE, its
/// merge), measured on the real test models: 36 (SmolLM2), 39 (Qwen2.5) and 25 (Gemma 3) bytes.
const GGUF_METADATA_BYTES_PER_TOKEN: u64 = 40;
/// Bytes of one tensor-info record (name, dims, type, offset) plus alignment padding, roughly.
const GGUF_TENSOR_INFO_BYTES: u64 = 96;

/// Predicted size of a GGUF file holding `weights`: tensor data plus the metadata and tensor
/// table, which scale with the vocabulary and the tensor count.
pub fn estimated_gguf_file_bytes(
    cfg: &DecoderConfig,
    tensors: &[TensorSpec],
    weights: &WeightBytes,
) -> u64 {
    weights.total_bytes
        + cfg.vocab_size * GGUF_METADATA_BYTES_PER_TOKEN
        + tensors.len() as u64 * GGUF_TENSOR_INFO_BYTES
}
