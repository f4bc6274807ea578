//! Per-tensor GGML type choice for llama.cpp's quantization recipes (`*_M`, `*_S` mixes).
//!
//! Port of the rules in llama.cpp `src/llama-quant.cpp` (`llama_tensor_get_type_impl` and
//! `tensor_type_fallback`, as of 2026-10; no importance matrix, default options) for the recipes
//! forja offers, including the fallback for rows that are not a multiple of 256 and the counters
//! that decide which layers get more bits.

use crate::decoder_config::{DecoderConfig, Family};
use crate::ggml_type::{GgmlType, QK_K};
use crate::tensors::{TensorKind, TensorSpec};
use crate::weight_format::GgufRecipe;

/// llama.cpp's `use_more_bits`: the first and last eighth of layers, and every third in between.
fn use_more_bits(i_layer: u64, n_layers: u64) -> bool {
    let (i, n) = (i_layer as i64, n_layers as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8).rem_euclid(3) == 2
}

/// The type every quantized tensor gets unless a rule says otherwise.
pub fn default_type(recipe: GgufRecipe) -> GgmlType {
    use GgufRecipe::*;
    match recipe {
        Q8_0 => GgmlType::Q8_0,
        Q6K => GgmlType::Q6K,
        Q5KM | Q5KS => GgmlType::Q5K,
        Q5_1 => GgmlType::Q5_1,
        Q5_0 => GgmlType::Q5_0,
        Q4KM | Q4KS => GgmlType::Q4K,
        Q4_1 => GgmlType::Q4_1,
        Q4_0 => GgmlType::Q4_0,
        Iq4Xs => GgmlType::Iq4Xs,
        Iq4Nl => GgmlType::Iq4Nl,
        Q3KL | Q3KM | Q3KS => GgmlType::Q3K,
        Q2K => GgmlType::Q2K,
    }
}

/// Assigns a GGML type to every tensor of `tensors` (in file order, as the counters require).
/// Tensors llama.cpp never quantizes (1-D, routers) are F32; image-encoder weights are F16.
pub fn assign_types(
    recipe: GgufRecipe,
    cfg: &DecoderConfig,
    tensors: &[TensorSpec],
) -> Vec<GgmlType> {
    let n_attention_wv = tensors
        .iter()
        .filter(|t| {
            t.name.contains("attn_v.weight")
                || t.name.contains("attn_qkv.weight")
                || t.name.contains("attn_kv_b.weight")
        })
        .count() as u64;
    let has_output = tensors.iter().any(|t| t.kind == TensorKind::Output);
    let n_expert = cfg.moe.as_ref().map_or(1, |m| m.num_experts.max(1));
    let gqa = cfg.num_heads / cfg.num_kv_heads.max(1);
    let is_70b = matches!(cfg.family, Family::Llama | Family::Mistral) && cfg.num_layers == 80;
    let mut i_attention_wv = 0u64;
    let mut i_ffn_down = 0u64;
    tensors
        .iter()
        .map(|t| {
            let ctx = Ctx {
                recipe,
                n_attention_wv,
                has_output,
                n_expert,
                gqa,
                is_70b,
                n_layers: cfg.num_layers,
            };
            let ty = pick(t, &ctx, &mut i_attention_wv, &mut i_ffn_down);
            match t.kind {
                TensorKind::Vector | TensorKind::Router => GgmlType::F32,
                TensorKind::Vision => GgmlType::F16,
                _ => fallback(ty, t.row_len()),
            }
        })
        .collect()
}

struct Ctx {
    recipe: GgufRecipe,
    n_attention_wv: u64,
    has_output: bool,
    n_expert: u64,
    gqa: u64,
    is_70b: bool,
    n_layers: u64,
}

fn pick(t: &TensorSpec, c: &Ctx, i_attention_wv: &mut u64, i_ffn_down: &mut u64) -> GgmlType {
    use GgufRecipe::*;
    let r = c.recipe;
    let default = default_type(r);
    let name = t.name.as_str();
    if matches!(
        t.kind,
        TensorKind::Vector | TensorKind::Router | TensorKind::Vision
    ) {
        return GgmlType::F32;
    }
    let is_output =
        t.kind == TensorKind::Output || (!c.has_output && t.kind == TensorKind::Embedding);
    if is_output {
        return if !t.row_len().is_multiple_of(QK_K) {
            GgmlType::Q8_0
        } else if default != GgmlType::Q8_0 {
            GgmlType::Q6K
        } else {
            default
        };
    }
    if t.kind == TensorKind::Embedding {
        return default;
    }
    // llama.cpp treats fused QKV and MLA's kv_b like attn_v (`category_is_attn_v`).
    if name.contains("attn_v.weight")
        || name.contains("attn_qkv.weight")
        || name.contains("attn_kv_b.weight")
    {
        let i = *i_attention_wv;
        *i_attention_wv += 1;
        let mut ty = match r {
            Q2K => {
                if c.gqa >= 4 {
                    GgmlType::Q4K
                } else {
                    GgmlType::Q3K
                }
            }
            Q3KM => {
                if i < 2 {
                    GgmlType::Q5K
                } else {
                    GgmlType::Q4K
                }
            }
            Q3KL => GgmlType::Q5K,
            Iq4Nl | Iq4Xs if c.gqa >= 4 => GgmlType::Q5K,
            Q4KM | Q5KM if use_more_bits(i, c.n_attention_wv) => GgmlType::Q6K,
            Q4KS if i < 4 => GgmlType::Q5K,
            _ => default,
        };
        if c.is_70b && matches!(ty, GgmlType::Q3K | GgmlType::Q4K) {
            ty = GgmlType::Q5K;
        }
        if c.n_expert == 8 {
            ty = GgmlType::Q8_0;
        }
        return ty;
    }
    if name.contains("attn_k.weight") {
        return if c.n_expert == 8 {
            GgmlType::Q8_0
        } else {
            default
        };
    }
    if name.contains("ffn_down") {
        let i_layer = if c.n_expert > 1 {
            t.layer.unwrap_or(*i_ffn_down)
        } else {
            *i_ffn_down
        };
        *i_ffn_down += 1;
        let n = c.n_layers;
        return match r {
            Q2K => GgmlType::Q3K,
            Q3KM => {
                if i_layer < n / 16 {
                    GgmlType::Q5K
                } else {
                    GgmlType::Q4K
                }
            }
            Q3KL => GgmlType::Q5K,
            Q4KM if use_more_bits(i_layer, n) => GgmlType::Q6K,
            Iq4Nl | Iq4Xs if i_layer < n / 8 => GgmlType::Q5K,
            Q5KM if use_more_bits(i_layer, n) => GgmlType::Q6K,
            Q4KS if i_layer < n / 8 => GgmlType::Q5K,
            _ => default,
        };
    }
    if name.contains("attn_output.weight") {
        if c.n_expert == 8 {
            return match r {
                Q2K | Q3KS | Q3KM | Iq4Nl | Q4KS | Q4KM | Iq4Xs => GgmlType::Q5K,
                _ => default,
            };
        }
        return match r {
            Q2K => GgmlType::Q3K,
            Q3KM => GgmlType::Q4K,
            Q3KL => GgmlType::Q5K,
            _ => default,
        };
    }
    default
}

/// llama.cpp's substitution when a row is not a whole number of 256-weight super-blocks.
fn fallback(ty: GgmlType, row_len: u64) -> GgmlType {
    if !ty.is_k_quant_family() || row_len.is_multiple_of(QK_K) {
        return ty;
    }
    let sub = match ty {
        GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        GgmlType::Q6K => GgmlType::Q8_0,
        GgmlType::Q2K | GgmlType::Q3K | GgmlType::Tq1_0 | GgmlType::Tq2_0 => GgmlType::Q4_0,
        _ => GgmlType::Iq4Nl,
    };
    if row_len.is_multiple_of(sub.block().0) {
        sub
    } else {
        GgmlType::F16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_bits_pattern_for_32_layers() {
        let picked: Vec<u64> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(
            picked,
            vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
    }

    #[test]
    fn fallback_for_rows_not_multiple_of_256() {
        assert_eq!(fallback(GgmlType::Q4K, 896), GgmlType::Q5_0);
        assert_eq!(fallback(GgmlType::Q6K, 576), GgmlType::Q8_0);
        assert_eq!(fallback(GgmlType::Q4K, 4096), GgmlType::Q4K);
        assert_eq!(fallback(GgmlType::Q2K, 640), GgmlType::Q4_0);
        assert_eq!(fallback(GgmlType::Iq4Xs, 640), GgmlType::Iq4Nl);
    }
}
