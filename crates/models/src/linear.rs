//! `Linear`: a projection whose weight is dense or quantized, optionally with a LoRA adapter —
//! properties of the layer, not separate models. With an adapter the base weight is not trained:
//! gradients flow through it to the input (quantized weights included, by their dequantized
//! rows), and to the adapter's matrices; full fine-tuning makes the weight itself a dense f32
//! variable ([`Linear::make_trainable`]).

use std::sync::Arc;

use candle_core::quantized::QMatMul;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Shape, Tensor, Var};
use forja_quant::QMatrix;

use crate::error::{ModelError, Result};
use crate::grad_ops::{self, FrozenWeight};
use crate::lora::{AdapterId, AdapterRows, Lora};

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
    Cpu(Arc<QMatrix>),
    /// candle's quantized matmul: other devices, and types forja's kernels do not cover.
    Candle(QMatMul),
}

impl From<QMatrix> for LinearWeight {
    fn from(m: QMatrix) -> Self {
        LinearWeight::Quantized(QuantizedWeight::Cpu(Arc::new(m)))
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
    /// A low-rank update added to every output row (training, `forja run --adapter`).
    pub lora: Option<Lora>,
    /// Served adapters by id: each adds its update only to the rows of the sequences that name
    /// it ([`Linear::forward_rows`]).
    pub served: Vec<(AdapterId, Lora)>,
}

impl Linear {
    pub fn new(weight: LinearWeight, bias: Option<Tensor>) -> Self {
        Linear {
            weight,
            bias,
            lora: None,
            served: Vec::new(),
        }
    }

    /// The served adapter `id`, if this projection has one.
    pub fn served_adapter(&self, id: AdapterId) -> Option<&Lora> {
        self.served.iter().find(|(i, _)| *i == id).map(|(_, l)| l)
    }

    /// `[out, in]` of the weight.
    pub fn out_in(&self) -> Result<(usize, usize)> {
        Ok(match &self.weight {
            LinearWeight::Dense(w) => w.dims2()?,
            LinearWeight::Quantized(QuantizedWeight::Cpu(m)) => (m.rows(), m.cols()),
            LinearWeight::Quantized(QuantizedWeight::Candle(q)) => match q {
                QMatMul::QTensor(t) => t.shape().dims2()?,
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.dims2()?,
            },
        })
    }

    /// The weight as row-major f32 values `[out, in]` (dequantized when quantized), for
    /// devices that keep their own copy.
    pub fn dense_rows(&self) -> Result<Vec<f32>> {
        let t = match &self.weight {
            LinearWeight::Dense(w) => w.clone(),
            LinearWeight::Quantized(QuantizedWeight::Cpu(m)) => {
                return m
                    .dequantize()
                    .map_err(|e| ModelError::Input(format!("dequantizing a weight: {e}")));
            }
            LinearWeight::Quantized(QuantizedWeight::Candle(q)) => match q {
                QMatMul::QTensor(t) => t.dequantize(&candle_core::Device::Cpu)?,
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.clone(),
            },
        };
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
    }

    /// `x @ Wᵀ + b` for `x` of shape `[tokens, in]` (or `[batch, tokens, in]`) →
    /// `[tokens, out]`, plus the update of [`Linear::lora`] if any.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_rows(x, &AdapterRows::none())
    }

    /// [`Linear::forward`] for `x` `[tokens, in]` whose rows `rows` assigns to served adapters:
    /// each adapter present (and attached here) adds its update to its rows, as one matrix.
    pub fn forward_rows(&self, x: &Tensor, rows: &AdapterRows) -> Result<Tensor> {
        // A training adapter on the CPU: base and update as one node of the gradient graph.
        let trained = self
            .lora
            .as_ref()
            .filter(|l| (l.a.track_op() || l.b.track_op()) && grad_ops::applies(x))
            .and_then(|l| Some((l, self.frozen_weight()?)));
        let fused = trained.is_some();
        let y = match (trained, &self.weight) {
            (Some((lora, w)), _) => grad_ops::lora_matmul(x, w, lora)?,
            (None, LinearWeight::Dense(w)) => x.matmul(&w.t()?)?,
            (None, LinearWeight::Quantized(QuantizedWeight::Candle(q))) => {
                if x.track_op() && matches!(q, QMatMul::QTensor(_)) {
                    // candle's quantized matmul has no backward: gradients would stop here.
                    return Err(ModelError::Unsupported(
                        "training through candle's quantized matmul (a quantized base off the \
                         CPU): load it dequantized"
                            .into(),
                    ));
                }
                q.forward(x)?
            }
            (None, LinearWeight::Quantized(QuantizedWeight::Cpu(m))) => {
                // No copy when `x` is already contiguous f32, as the decoder's activations are.
                let x = x.to_dtype(DType::F32)?.contiguous()?;
                // Records a backward only when `x` takes part in a gradient computation.
                x.apply_op1(CpuMatmul(Arc::clone(m)))?
            }
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut y = match &self.lora {
            Some(lora) if !fused => lora.add_to(y, x, None)?,
            _ => y,
        };
        if !self.served.is_empty() {
            for (id, group) in rows.groups() {
                if let Some(lora) = self.served_adapter(id) {
                    y = lora.add_to(y, x, group)?;
                }
            }
        }
        Ok(y)
    }
}

impl Linear {
    /// Makes the weight (dequantized to dense f32 if it is not already) and the bias training
    /// variables (full fine-tuning) and returns them. Refused with an adapter attached: full
    /// fine-tuning trains the weights themselves.
    pub fn make_trainable(&mut self) -> Result<(Var, Option<Var>)> {
        if self.lora.is_some() || !self.served.is_empty() {
            return Err(ModelError::Input(
                "full fine-tuning of a projection that carries a LoRA adapter".into(),
            ));
        }
        let (out, inp) = self.out_in()?;
        let w = match &self.weight {
            LinearWeight::Dense(w) if w.is_variable() => Var::from_tensor(w)?,
            _ => {
                let rows = self.dense_rows()?;
                Var::from_tensor(&Tensor::from_vec(
                    rows,
                    (out, inp),
                    &candle_core::Device::Cpu,
                )?)?
            }
        };
        self.weight = LinearWeight::Dense(w.as_tensor().clone());
        let bias = match &self.bias {
            Some(b) => {
                let v = Var::from_tensor(&b.to_dtype(DType::F32)?)?;
                self.bias = Some(v.as_tensor().clone());
                Some(v)
            }
            None => None,
        };
        Ok((w, bias))
    }

    /// The weight as the training ops take it: dense f32 on the CPU, or on forja's kernels.
    pub(crate) fn frozen_weight(&self) -> Option<FrozenWeight> {
        match &self.weight {
            LinearWeight::Dense(w) if grad_ops::applies(w) => Some(FrozenWeight::Dense(w.clone())),
            LinearWeight::Quantized(QuantizedWeight::Cpu(m)) => {
                Some(FrozenWeight::Quantized(Arc::clone(m)))
            }
            _ => None,
        }
    }
}

/// `x @ Wᵀ` on forja's kernels, as a candle op on CPU storage: `[.., in]` → `[.., out]`. Its
/// backward gives the input's gradient, `grad · W`, through the dequantized weight (made for the
/// call and dropped after it, so the base stays quantized in memory); `W` gets none.
struct CpuMatmul(Arc<QMatrix>);

impl CustomOp1 for CpuMatmul {
    fn name(&self) -> &'static str {
        "forja-quant-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let m = &self.0;
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

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        self.input_grad(grad_res)
            .map(Some)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}

impl CpuMatmul {
    fn input_grad(&self, grad_res: &Tensor) -> Result<Tensor> {
        let m = &self.0;
        let g = grad_res.to_dtype(DType::F32)?.contiguous()?;
        let n = g.elem_count() / m.rows().max(1);
        let mut dx = vec![0f32; n * m.cols()];
        {
            let (storage, layout) = g.storage_and_layout();
            let Some(gv) = crate::cpu_ops::cpu_f32(&storage, layout) else {
                return Err(ModelError::Input("a backward pass off the CPU".into()));
            };
            grad_ops::quantized_input_grad(m, gv, n, &mut dx, false)?;
        }
        let mut dims = g.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = m.cols();
        }
        Ok(Tensor::from_vec(dx, dims, g.device())?)
    }
}
