//! `Linear`: a projection whose weight is dense or quantized — a property of the layer, not a
//! separate model. (LoRA adapters join here as a third part of the same layer.)

use candle_core::quantized::QMatMul;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Shape, Tensor};
use forja_quant::QMatrix;

use crate::error::Result;

/// The weight of a projection, `[out, in]`.
#[derive(Debug)]
pub enum LinearWeight {
    /// A dense matrix in its compute dtype.
    Dense(Tensor),
    /// A GGUF block-quantized matrix, multiplied without dequantizing it whole.
    Quantized(QuantizedWeight),
}

/// Who multiplies a quantized weight.
#[derive(Debug)]
pub enum QuantizedWeight {
    /// forja's CPU kernels (`forja_quant`): activations quantized to 8 bits as llama.cpp does,
    /// SIMD dot products, rows split over the thread pool.
    Cpu(QMatrix),
    /// candle's quantized matmul: other devices, and types forja's kernels do not cover.
    Candle(QMatMul),
}

impl From<QMatrix> for LinearWeight {
    fn from(m: QMatrix) -> Self {
        LinearWeight::Quantized(QuantizedWeight::Cpu(m))
    }
}

impl From<QMatMul> for LinearWeight {
    fn from(m: QMatMul) -> Self {
        LinearWeight::Quantized(QuantizedWeight::Candle(m))
    }
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

    /// `x @ Wᵀ + b` for `x` of shape `[tokens, in]` (or `[batch, tokens, in]`) →
    /// `[tokens, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            LinearWeight::Dense(w) => x.matmul(&w.t()?)?,
            LinearWeight::Quantized(QuantizedWeight::Candle(q)) => q.forward(x)?,
            LinearWeight::Quantized(QuantizedWeight::Cpu(m)) => {
                // No copy when `x` is already contiguous f32, as the decoder's activations are.
                let x = x.to_dtype(DType::F32)?.contiguous()?;
                x.apply_op1_no_bwd(&CpuMatmul(m))?
            }
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// `x @ Wᵀ` on forja's kernels, as a candle op on CPU storage: `[.., in]` → `[.., out]`.
struct CpuMatmul<'a>(&'a QMatrix);

impl CustomOp1 for CpuMatmul<'_> {
    fn name(&self) -> &'static str {
        "forja-quant-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let m = self.0;
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("{}: f32 input expected", self.name());
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("{}: contiguous input expected", self.name());
        };
        let dims = layout.dims();
        if dims.last() != Some(&m.cols()) {
            candle_core::bail!(
                "{}: input {dims:?} against a {}×{} weight",
                self.name(),
                m.rows(),
                m.cols()
            );
        }
        let n = (end - start) / m.cols();
        let mut out = vec![0f32; n * m.rows()];
        m.matmul(&data[start..end], n, &mut out)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = m.rows();
        }
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }
}
