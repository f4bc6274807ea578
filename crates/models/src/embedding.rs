//! The token embedding table, `[vocab, hidden]`. On the CPU a quantized or 16-bit table stays
//! as the file stores it and only the looked-up rows are dequantized — widening it to f32 at
//! load cost 4 bytes a value (2.1 GB for Llama 3 8B's 128,256 × 4,096, whose Q4_K_M file keeps
//! it in 0.3 GB) — and a tied output head multiplies the same bytes.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use forja_quant::QMatrix;

use crate::error::{ModelError, Result};
use crate::grad_ops;
use crate::linear::{LinearWeight, QuantizedWeight};

/// The table itself.
#[derive(Debug, Clone)]
pub(crate) enum Embedding {
    /// A dense tensor in the activation dtype (in full fine-tuning, a variable).
    Dense(Tensor),
    /// GGUF blocks (or f16/bf16 panels) as loaded for forja's CPU kernels; rows come out in f32.
    Stored(Arc<QMatrix>),
}

impl Embedding {
    /// The table for `weight` as a projection source loaded it (so that a tied head can share
    /// it), or the dense `fallback` where forja's CPU kernels do not hold it.
    pub(crate) fn of(
        weight: &LinearWeight,
        fallback: impl FnOnce() -> Result<Tensor>,
    ) -> Result<Self> {
        Ok(match weight {
            LinearWeight::Dense(t) => Embedding::Dense(t.clone()),
            LinearWeight::Quantized(QuantizedWeight::Cpu(m)) => Embedding::Stored(Arc::clone(m)),
            LinearWeight::Quantized(QuantizedWeight::Candle(_)) => Embedding::Dense(fallback()?),
        })
    }

    /// `[vocab, hidden]`.
    pub(crate) fn dims(&self) -> Result<(usize, usize)> {
        match self {
            Embedding::Dense(t) => Ok(t.dims2()?),
            Embedding::Stored(m) => Ok((m.rows(), m.cols())),
        }
    }

    /// The dtype of the rows a lookup gives (the activation dtype).
    pub(crate) fn dtype(&self) -> DType {
        match self {
            Embedding::Dense(t) => t.dtype(),
            Embedding::Stored(_) => DType::F32,
        }
    }

    /// Rows `ids` of the table, `[ids.len(), hidden]`.
    pub(crate) fn rows(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        let (vocab, hidden) = self.dims()?;
        if let Some(id) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(ModelError::Input(format!(
                "token id {id} is outside the vocabulary of {vocab}"
            )));
        }
        match self {
            Embedding::Dense(t) => Ok(t.index_select(&Tensor::new(ids, device)?, 0)?),
            Embedding::Stored(m) => {
                let mut out = vec![0f32; ids.len() * hidden];
                for (&id, row) in ids.iter().zip(out.chunks_exact_mut(hidden.max(1))) {
                    m.dequantize_rows(id as usize, row).map_err(dequant)?;
                }
                Ok(Tensor::from_vec(out, (ids.len(), hidden), device)?)
            }
        }
    }

    /// The whole table as a dense f32 tensor (for full fine-tuning and the GPU upload).
    pub(crate) fn to_dense(&self, device: &Device) -> Result<Tensor> {
        match self {
            Embedding::Dense(t) => Ok(t.to_dtype(DType::F32)?),
            Embedding::Stored(m) => Ok(Tensor::from_vec(
                m.dequantize().map_err(dequant)?,
                (m.rows(), m.cols()),
                device,
            )?),
        }
    }

    /// Whether the training ops' CPU f32 path can read it as a dense tensor.
    pub(crate) fn dense_f32(&self) -> Option<&Tensor> {
        match self {
            Embedding::Dense(t) if grad_ops::applies(t) => Some(t),
            _ => None,
        }
    }

    /// Whether training computes its gradient (full fine-tuning).
    pub(crate) fn is_variable(&self) -> bool {
        matches!(self, Embedding::Dense(t) if t.is_variable())
    }
}

fn dequant(e: forja_quant::QuantError) -> ModelError {
    ModelError::Input(format!("dequantizing the token embedding table: {e}"))
}
