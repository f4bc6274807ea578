//! `Linear`: a projection whose weight is dense or quantized — a property of the layer, not a
//! separate model. (LoRA adapters join here as a third part of the same layer.)

use candle_core::quantized::QMatMul;
use candle_core::{Module, Tensor};

use crate::error::Result;

/// The weight of a projection, `[out, in]`.
#[derive(Debug)]
pub enum LinearWeight {
    /// A dense matrix in its compute dtype.
    Dense(Tensor),
    /// A GGUF block-quantized matrix, multiplied without dequantizing it whole.
    Quantized(QMatMul),
}

#[derive(Debug)]
pub struct Linear {
    pub weight: LinearWeight,
    /// `[out]`
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(weight: LinearWeight, bias: Option<Tensor>) -> Self {
        Linear { weight, bias }
    }

    /// `x @ Wᵀ + b` for `x` of shape `[tokens, in]` → `[tokens, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            LinearWeight::Dense(w) => x.matmul(&w.t()?)?,
            LinearWeight::Quantized(q) => q.forward(x)?,
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}
