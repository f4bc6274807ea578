//! RMSNorm in its two variants: `x / rms(x) · w` and Gemma's `x / rms(x) · (1 + w)`, computed in
//! f32 over the last dimension.

use candle_core::{DType, Tensor};
use forja_arch::decoder_config::NormKind;

use crate::error::Result;

#[derive(Debug)]
pub struct RmsNorm {
    /// The effective scale (`1 + w` already applied for Gemma), f32.
    scale: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(weight: Tensor, kind: NormKind, eps: f64) -> Result<Self> {
        let w = weight.to_dtype(DType::F32)?;
        let scale = match kind {
            NormKind::Rms => w,
            NormKind::RmsOnePlus => (w + 1.0)?,
        };
        Ok(RmsNorm { scale, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let ms = x.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
        let normed = x.broadcast_div(&(ms + self.eps)?.sqrt()?)?;
        Ok(normed.broadcast_mul(&self.scale)?.to_dtype(dtype)?)
    }
}
