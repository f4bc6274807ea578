//! RMSNorm in its two variants: `x / rms(x) · w` and Gemma's `x / rms(x) · (1 + w)`, and the
//! LayerNorm of encoders, `(x - mean(x)) / std(x) · w + b`; all computed in f32 over the last
//! dimension.

use candle_core::{DType, Tensor};
use forja_arch::decoder_config::NormKind;

use crate::error::Result;

#[derive(Debug)]
pub struct RmsNorm {
    /// The effective scale (`1 + w` already applied for Gemma), f32.
    scale: Tensor,
    /// The same values, for the fused CPU pass.
    values: Vec<f32>,
    eps: f64,
}

impl RmsNorm {
    pub fn new(weight: Tensor, kind: NormKind, eps: f64) -> Result<Self> {
        let w = weight.to_dtype(DType::F32)?;
        let scale = match kind {
            NormKind::Rms => w,
            NormKind::RmsOnePlus => (w + 1.0)?,
        };
        let values = scale.flatten_all()?.to_vec1()?;
        Ok(RmsNorm { scale, values, eps })
    }

    /// The effective scale (`1 + w` for Gemma) as f32 values, and epsilon.
    pub fn values(&self) -> Result<(Vec<f32>, f64)> {
        Ok((self.values.clone(), self.eps))
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = crate::cpu_ops::rms_norm(x, &self.values, self.eps)? {
            return Ok(y);
        }
        if x.track_op() && crate::grad_ops::applies(x) {
            return crate::grad_ops::rms_norm(x, &self.values, self.eps);
        }
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let ms = x.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
        let normed = x.broadcast_div(&(ms + self.eps)?.sqrt()?)?;
        Ok(normed.broadcast_mul(&self.scale)?.to_dtype(dtype)?)
    }
}

/// LayerNorm with weight and bias, two-pass (the mean is subtracted before the variance is
/// taken, so activations with a large mean lose no precision).
#[derive(Debug)]
pub struct LayerNorm {
    /// `[hidden]`, f32.
    weight: Tensor,
    /// `[hidden]`, f32.
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: weight.to_dtype(DType::F32)?,
            bias: bias.to_dtype(DType::F32)?,
            eps,
        })
    }

    /// `x`: `[.., hidden]`, f32.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Centering first leaves the fused kernel's one-pass variance (E[x²] − mean²) nothing
        // to cancel, so it is as exact as a two-pass one.
        let centered = x.broadcast_sub(&x.mean_keepdim(candle_core::D::Minus1)?)?;
        Ok(candle_nn::ops::layer_norm(
            &centered,
            &self.weight,
            &self.bias,
            self.eps as f32,
        )?)
    }
}
