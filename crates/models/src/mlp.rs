//! The MLP block: gated (`down(act(gate(x)) · up(x))`, with Phi-3's fused gate/up) or a mixture
//! of experts with top-k routing.

use candle_core::{DType, Tensor};
use forja_arch::decoder_config::Activation;

use crate::error::Result;
use crate::linear::Linear;
use crate::lora::AdapterRows;

#[derive(Debug)]
pub struct GatedMlp {
    /// `None` when `up` holds gate and up fused (`[2·inter, hidden]`, gate first).
    pub gate: Option<Linear>,
    pub up: Linear,
    pub down: Linear,
    pub activation: Activation,
}

/// `a(x)`, elementwise.
pub fn activate(x: &Tensor, a: Activation) -> Result<Tensor> {
    Ok(match a {
        Activation::Silu => x.silu()?,
        Activation::GeluTanh => x.gelu()?,
        Activation::Gelu => x.gelu_erf()?,
        Activation::Relu => x.relu()?,
    })
}

impl GatedMlp {
    /// `x`: `[tokens, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_rows(x, &AdapterRows::none())
    }

    /// `x`: `[tokens, hidden]`, whose rows `adapters` assigns to served adapters.
    pub fn forward_rows(&self, x: &Tensor, adapters: &AdapterRows) -> Result<Tensor> {
        let (gate, up) = match &self.gate {
            Some(g) => (
                g.forward_rows(x, adapters)?,
                self.up.forward_rows(x, adapters)?,
            ),
            None => {
                let fused = self.up.forward_rows(x, adapters)?;
                let inter = fused.dim(1)? / 2;
                (fused.narrow(1, 0, inter)?, fused.narrow(1, inter, inter)?)
            }
        };
        let trains = (gate.track_op() || up.track_op()) && crate::grad_ops::applies(&gate);
        let fused = if trains {
            crate::grad_ops::gated(&gate, &up, self.activation)?
        } else {
            crate::cpu_ops::gated(&gate, &up, self.activation)?
        };
        let hidden = match fused {
            Some(h) => h,
            None => (activate(&gate, self.activation)? * up)?,
        };
        self.down.forward_rows(&hidden, adapters)
    }
}

#[derive(Debug)]
pub struct MoeMlp {
    /// `[experts, hidden]`
    pub router: Linear,
    pub experts: Vec<GatedMlp>,
    pub top_k: usize,
    pub norm_topk_prob: bool,
    /// An expert every token uses (Qwen2-MoE).
    pub shared: Option<Box<GatedMlp>>,
    /// `[1, hidden]`: sigmoid gate on the shared expert's output.
    pub shared_gate: Option<Linear>,
}

impl MoeMlp {
    /// Softmax routing over experts, the top-k kept (and renormalized when configured), each
    /// token's output the weighted sum of its experts; served adapters apply to the experts'
    /// projections for the rows that use them.
    pub fn forward(&self, x: &Tensor, adapters: &AdapterRows) -> Result<Tensor> {
        let (tokens, _) = x.dims2()?;
        let logits = self.router.forward(x)?.to_dtype(DType::F32)?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)?.to_vec2::<f32>()?;
        let mut out = x.zeros_like()?;
        // Tokens per expert with their weights.
        let mut routed: Vec<Vec<(u32, f32)>> = vec![Vec::new(); self.experts.len()];
        for (t, p) in probs.iter().enumerate() {
            let mut idx: Vec<usize> = (0..p.len()).collect();
            idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            let chosen = &idx[..self.top_k.min(idx.len())];
            let sum: f32 = chosen.iter().map(|&e| p[e]).sum();
            for &e in chosen {
                let w = if self.norm_topk_prob {
                    p[e] / sum
                } else {
                    p[e]
                };
                routed[e].push((t as u32, w));
            }
        }
        for (e, list) in routed.iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            let rows: Vec<u32> = list.iter().map(|(t, _)| *t).collect();
            let ws: Vec<f32> = list.iter().map(|(_, w)| *w).collect();
            let ids = Tensor::new(rows.as_slice(), x.device())?;
            let ws = Tensor::from_vec(ws, (list.len(), 1), x.device())?.to_dtype(x.dtype())?;
            let sub = adapters.select(&rows, x.device())?;
            let y = self.experts[e]
                .forward_rows(&x.index_select(&ids, 0)?, &sub)?
                .broadcast_mul(&ws)?;
            out = out.index_add(&ids, &y, 0)?;
        }
        debug_assert_eq!(out.dim(0).ok(), Some(tokens));
        if let Some(shared) = &self.shared {
            let mut y = shared.forward_rows(x, adapters)?;
            if let Some(g) = &self.shared_gate {
                y = y.broadcast_mul(&candle_nn::ops::sigmoid(&g.forward(x)?)?)?;
            }
            out = (out + y)?;
        }
        Ok(out)
    }
}

#[derive(Debug)]
pub enum Mlp {
    Gated(GatedMlp),
    Moe(MoeMlp),
}

impl Mlp {
    /// `x`: `[tokens, hidden]`; served adapters apply to the gated MLP's projections, or to
    /// a MoE layer's experts (and shared expert); routers are not adaptable.
    pub fn forward(&self, x: &Tensor, adapters: &AdapterRows) -> Result<Tensor> {
        match self {
            Mlp::Gated(m) => m.forward_rows(x, adapters),
            Mlp::Moe(m) => m.forward(x, adapters),
        }
    }
}
