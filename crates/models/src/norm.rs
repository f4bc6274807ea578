//! RMSNorm in its two variants: `x / rms(x) · w` and Gemma's `x / rms(x) · (1 + w)`, and the
//! LayerNorm of encoders, `(x - mean(x)) / std(x) · w + b`; all computed in f32 over the last
//! dimension.

use candle_core::{DType, Tensor, Var};
use forja_arch::decoder_config::NormKind;

use crate::error::Result;

#[derive(Debug)]
pub struct RmsNorm {
    /// The effective scale (`1 + w` already applied for Gemma), f32.
    scale: Tensor,
    /// The same values, for the fused CPU pass.
    values: Vec<f32>,
    eps: f64,
    kind: NormKind,
    /// The weight as stored (`w`, f32), the tensor full fine-tuning trains.
    weight: Tensor,
    /// Full fine-tuning: `weight` as a training variable, which the forward pass then reads
    /// (the scale above is its value when training began).
    trained: Option<Var>,
}

impl RmsNorm {
    pub fn new(weight: Tensor, kind: NormKind, eps: f64) -> Result<Self> {
        let w = weight.to_dtype(DType::F32)?;
        let scale = match kind {
            NormKind::Rms => w.clone(),
            NormKind::RmsOnePlus => (&w + 1.0)?,
        };
        let values = scale.flatten_all()?.to_vec1()?;
        Ok(RmsNorm {
            scale,
            values,
            eps,
            kind,
            weight: w,
            trained: None,
        })
    }

    /// Makes the stored weight a training variable (full fine-tuning) and returns it; the
    /// forward pass reads it from then on.
    pub fn make_trainable(&mut self) -> Result<Var> {
        if let Some(v) = &self.trained {
            return Ok(v.clone());
        }
        let v = Var::from_tensor(&self.weight)?;
        self.weight = v.as_tensor().clone();
        self.trained = Some(v.clone());
        Ok(v)
    }

    /// The effective scale as a tensor: the trained weight's current value when training.
    fn scale_tensor(&self) -> Result<Tensor> {
        Ok(match (&self.trained, self.kind) {
            (None, _) => self.scale.clone(),
            (Some(w), NormKind::Rms) => w.as_tensor().clone(),
            (Some(w), NormKind::RmsOnePlus) => (w.as_tensor() + 1.0)?,
        })
    }

    /// The effective scale (`1 + w` for Gemma) as f32 values, and epsilon.
    pub fn values(&self) -> Result<(Vec<f32>, f64)> {
        if self.trained.is_some() {
            let scale = self.scale_tensor()?.detach();
            return Ok((scale.flatten_all()?.to_vec1()?, self.eps));
        }
        Ok((self.values.clone(), self.eps))
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.trained.is_some() {
            let scale = self.scale_tensor()?;
            if crate::grad_ops::applies(x) {
                return crate::grad_ops::rms_norm_scaled(x, &scale, self.eps);
            }
            return self.composite(x, &scale);
        }
        if let Some(y) = crate::cpu_ops::rms_norm(x, &self.values, self.eps)? {
            return Ok(y);
        }
        if x.track_op() && crate::grad_ops::applies(x) {
            return crate::grad_ops::rms_norm(x, &self.values, self.eps);
        }
        self.composite(x, &self.scale)
    }

    /// The norm as candle's elementary ops (other devices and dtypes).
    fn composite(&self, x: &Tensor, scale: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let ms = x.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
        let normed = x.broadcast_div(&(ms + self.eps)?.sqrt()?)?;
        Ok(normed.broadcast_mul(scale)?.to_dtype(dtype)?)
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
