//! Self-attention with grouped KV heads, optional QKV bias and QK-norm, RoPE, sliding windows and
//! logit soft-capping, over whatever the KV cache holds for the sequence.

use candle_core::{D, DType, Tensor};

use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::linear::Linear;
use crate::norm::RmsNorm;
use crate::rope::Rope;

/// The q/k/v projections: separate, or one fused `qkv_proj` (Phi-3).
#[derive(Debug)]
pub enum QkvProj {
    Separate { q: Linear, k: Linear, v: Linear },
    Fused(Linear),
}

#[derive(Debug)]
pub struct Attention {
    pub qkv: QkvProj,
    pub o: Linear,
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub rope: Rope,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Multiplier on q·k.
    pub scale: f64,
    /// Attend to at most this many most recent tokens (the current one included).
    pub window: Option<usize>,
    pub softcap: Option<f64>,
}

impl Attention {
    /// `x`: `[tokens, hidden]` of one sequence at positions `cache.len()..`; returns
    /// `[tokens, hidden]`.
    pub fn forward(&self, x: &Tensor, layer: usize, cache: &mut dyn KvCache) -> Result<Tensor> {
        let (t, _) = x.dims2()?;
        let (q, k, v) = match &self.qkv {
            QkvProj::Separate { q, k, v } => (q.forward(x)?, k.forward(x)?, v.forward(x)?),
            QkvProj::Fused(qkv) => {
                let all = qkv.forward(x)?;
                let qd = self.num_heads * self.head_dim;
                let kd = self.num_kv_heads * self.head_dim;
                (
                    all.narrow(1, 0, qd)?,
                    all.narrow(1, qd, kd)?,
                    all.narrow(1, qd + kd, kd)?,
                )
            }
        };
        // [tokens, heads·dim] → [heads, tokens, dim]
        let heads = |x: Tensor, n: usize| -> Result<Tensor> {
            Ok(x.reshape((t, n, self.head_dim))?
                .transpose(0, 1)?
                .contiguous()?)
        };
        let mut q = heads(q, self.num_heads)?;
        let mut k = heads(k, self.num_kv_heads)?;
        let v = heads(v, self.num_kv_heads)?;
        if let Some(n) = &self.q_norm {
            q = n.forward(&q)?;
        }
        if let Some(n) = &self.k_norm {
            k = n.forward(&k)?;
        }
        let start = cache.len();
        let q = self.rope.apply(&q, start)?;
        let k = self.rope.apply(&k, start)?;
        let (k_all, v_all) = cache.append(layer, &k, &v)?;
        let s = k_all.dim(1)?;
        let group = self.num_heads / self.num_kv_heads;
        let repeat = |x: &Tensor| -> Result<Tensor> {
            if group == 1 {
                return Ok(x.clone());
            }
            let (h, s, d) = x.dims3()?;
            Ok(x.unsqueeze(1)?
                .expand((h, group, s, d))?
                .reshape((h * group, s, d))?)
        };
        let k_all = repeat(&k_all)?.to_dtype(DType::F32)?;
        let v_all = repeat(&v_all)?.to_dtype(DType::F32)?;
        let q = q.to_dtype(DType::F32)?;
        // [heads, tokens, s]
        let mut scores = (q.matmul(&k_all.t()?)? * self.scale)?;
        if let Some(cap) = self.softcap {
            scores = ((scores / cap)?.tanh()? * cap)?;
        }
        let mask = self.mask(t, s, start, x.device())?;
        let scores = scores.broadcast_add(&mask)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let out = probs.matmul(&v_all)?.to_dtype(x.dtype())?;
        let out = out
            .transpose(0, 1)?
            .reshape((t, self.num_heads * self.head_dim))?;
        self.o.forward(&out)
    }

    /// Additive mask `[tokens, s]`: query `i` (position `start + i`) sees key `j` when
    /// `j ≤ start + i` and, with a window `w`, `j > start + i − w`.
    fn mask(
        &self,
        t: usize,
        s: usize,
        start: usize,
        device: &candle_core::Device,
    ) -> Result<Tensor> {
        let mut m = vec![0f32; t * s];
        for i in 0..t {
            let pos = start + i;
            for j in 0..s {
                let future = j > pos;
                let outside = self.window.is_some_and(|w| j + w <= pos);
                if future || outside {
                    m[i * s + j] = f32::NEG_INFINITY;
                }
            }
        }
        Ok(Tensor::from_vec(m, (t, s), device)?)
    }
}
