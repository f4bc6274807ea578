//! The decoder's LoRA side: the projections an adapter can name (HF module paths, MoE experts
//! included), attaching and detaching adapters, and the served adapters' bookkeeping.

use forja_arch::Family;

use super::Decoder;
use crate::attention::QkvProj;
use crate::error::{ModelError, Result};
use crate::linear::Linear;
use crate::lora::{AdapterId, Lora, LoraSlot, LoraWeights};
use crate::mlp::{GatedMlp, Mlp};

impl Decoder {
    /// Every projection LoRA can adapt, with its module path in HF naming
    /// (`model.layers.3.self_attn.q_proj`, `model.layers.3.mlp.down_proj`, `lm_head`): the names
    /// PEFT adapters use. Fused projections are `qkv_proj` and `gate_up_proj` (Phi-3); a MoE
    /// layer's experts are `block_sparse_moe.experts.E.w1`/`w3`/`w2` (Mixtral) or
    /// `mlp.experts.E.gate_proj`/… and `mlp.shared_expert.…` (Qwen MoE); routers are not listed.
    pub fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        // HF's names of a MoE layer's experts: Mixtral's `block_sparse_moe.experts.E.w1/w3/w2`,
        // the others' `mlp.experts.E.gate_proj/up_proj/down_proj` (and `mlp.shared_expert`).
        let (moe, expert_names) = if self.config.family == Family::Mixtral {
            ("block_sparse_moe", ["w1", "w3", "w2"])
        } else {
            ("mlp", GATED_NAMES)
        };
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            match &mut layer.attn.qkv {
                QkvProj::Separate { q, k, v } => {
                    out.push((format!("{p}.self_attn.q_proj"), q));
                    out.push((format!("{p}.self_attn.k_proj"), k));
                    out.push((format!("{p}.self_attn.v_proj"), v));
                }
                QkvProj::Fused(qkv) => out.push((format!("{p}.self_attn.qkv_proj"), qkv)),
            }
            out.push((format!("{p}.self_attn.o_proj"), &mut layer.attn.o));
            match &mut layer.mlp {
                Mlp::Gated(m) => push_gated(&mut out, &format!("{p}.mlp"), GATED_NAMES, m),
                Mlp::Moe(m) => {
                    for (e, expert) in m.experts.iter_mut().enumerate() {
                        let path = format!("{p}.{moe}.experts.{e}");
                        push_gated(&mut out, &path, expert_names, expert);
                    }
                    if let Some(shared) = &mut m.shared {
                        let path = format!("{p}.mlp.shared_expert");
                        push_gated(&mut out, &path, GATED_NAMES, shared);
                    }
                }
            }
        }
        out.push(("lm_head".into(), &mut self.lm_head));
        out
    }

    /// Switches the LoRA adapters' dropout on (training) or off (evaluation, inference).
    pub fn set_lora_training(&mut self, training: bool) {
        for (_, linear) in self.linears_mut() {
            if let Some(lora) = &mut linear.lora {
                lora.training = training;
            }
        }
    }

    /// Removes every LoRA adapter (the served ones too).
    pub fn clear_lora(&mut self) {
        for (_, linear) in self.linears_mut() {
            linear.lora = None;
            linear.served.clear();
        }
        self.served.clear();
    }

    /// Attaches an adapter for inference (no dropout) to the projections `weights` names:
    /// [`LoraSlot::Single`] for every sequence, replacing any adapter there, or
    /// [`LoraSlot::Served`] for the sequences whose [`SeqStep::adapter`] is that id. Every
    /// module must exist with shapes that fit its weight; all are checked before any is
    /// attached, so a refused adapter leaves the decoder as it was.
    pub fn attach_lora(&mut self, weights: &LoraWeights, slot: LoraSlot) -> Result<()> {
        if let LoraSlot::Served(id) = slot
            && self.served.iter().any(|(s, _)| *s == id)
        {
            return Err(ModelError::Adapter(format!(
                "an adapter with id {id} is already attached"
            )));
        }
        if weights.modules.is_empty() {
            return Err(ModelError::Adapter("the adapter adapts no module".into()));
        }
        let device = self.device.clone();
        let order = self.qk_row_order();
        let mut linears: std::collections::HashMap<String, &mut Linear> =
            self.linears_mut().into_iter().collect();
        let mut staged = Vec::with_capacity(weights.modules.len());
        for (module, (a, b)) in &weights.modules {
            let Some(linear) = linears.get(module.as_str()) else {
                return Err(ModelError::Adapter(format!(
                    "adapts {module}, which this model does not have"
                )));
            };
            let (out_dim, in_dim) = linear.out_in()?;
            let fits = match (a.dims(), b.dims()) {
                (&[rank, a_in], &[b_out, b_rank]) => {
                    rank > 0 && rank == b_rank && a_in == in_dim && b_out == out_dim
                }
                _ => false,
            };
            if !fits {
                return Err(ModelError::Adapter(format!(
                    "{module}: lora_A {:?} / lora_B {:?} do not fit its {out_dim}×{in_dim} weight",
                    a.dims(),
                    b.dims()
                )));
            }
            let lora = Lora::new(
                a.to_device(&device)?,
                order.from_hf(module, b)?.to_device(&device)?,
                weights.scale,
                0.0,
            )?;
            staged.push((module.as_str(), lora));
        }
        // All checked: attach (nothing is half-attached on an error above).
        for (module, lora) in staged {
            if let Some(linear) = linears.get_mut(module) {
                match slot {
                    LoraSlot::Single => linear.lora = Some(lora),
                    LoraSlot::Served(id) => linear.served.push((id, lora)),
                }
            }
        }
        if let LoraSlot::Served(id) = slot {
            self.served.push((id, weights.bytes()));
        }
        Ok(())
    }

    /// Removes served adapter `id`; whether it was attached.
    pub fn detach_adapter(&mut self, id: AdapterId) -> bool {
        let before = self.served.len();
        self.served.retain(|(s, _)| *s != id);
        if self.served.len() == before {
            return false;
        }
        for (_, linear) in self.linears_mut() {
            linear.served.retain(|(s, _)| *s != id);
        }
        true
    }

    /// The served adapters attached, in the order they were.
    pub fn served_adapters(&self) -> Vec<AdapterId> {
        self.served.iter().map(|(id, _)| *id).collect()
    }

    /// Bytes the served adapters' matrices hold.
    pub fn served_adapter_bytes(&self) -> u64 {
        self.served.iter().map(|(_, b)| b).sum()
    }
}

/// HF's names of a gated MLP's gate, up and down projections.
const GATED_NAMES: [&str; 3] = ["gate_proj", "up_proj", "down_proj"];

/// A gated MLP's projections under `path` with `names` (gate, up, down); a fused `[gate; up]`
/// projection (Phi-3) is `gate_up_proj`.
fn push_gated<'a>(
    out: &mut Vec<(String, &'a mut Linear)>,
    path: &str,
    [gate_name, up_name, down_name]: [&str; 3],
    m: &'a mut GatedMlp,
) {
    match &mut m.gate {
        Some(gate) => {
            out.push((format!("{path}.{gate_name}"), gate));
            out.push((format!("{path}.{up_name}"), &mut m.up));
        }
        None => out.push((format!("{path}.gate_up_proj"), &mut m.up)),
    }
    out.push((format!("{path}.{down_name}"), &mut m.down));
}
