//! AdamW with decoupled weight decay (Loshchilov & Hutter; torch's `AdamW`), whose moments and
//! step count can be saved and restored, so a resumed run continues exactly where it stopped.
//! The arithmetic is candle-nn's `AdamW`, operation for operation, in f32, written in place.

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Tensor, Var};

use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

#[derive(Debug)]
pub struct AdamW {
    vars: Vec<Var>,
    /// First and second moments per variable.
    moments: Vec<(Var, Var)>,
    params: AdamWParams,
    /// Steps taken.
    t: u64,
}

impl AdamW {
    pub fn new(vars: Vec<Var>, params: AdamWParams) -> Result<Self> {
        let moments = vars
            .iter()
            .map(|v| {
                Ok((
                    Var::zeros(v.shape(), v.dtype(), v.device())?,
                    Var::zeros(v.shape(), v.dtype(), v.device())?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            vars,
            moments,
            params,
            t: 0,
        })
    }

    pub fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    pub fn steps_taken(&self) -> u64 {
        self.t
    }

    /// Updates every variable `grads` has a gradient for, in place: the moments and the weights
    /// are rewritten where they lie, so a step allocates nothing of a variable's size (but a
    /// contiguous copy of a gradient that is not).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.t += 1;
        let p = self.params;
        let t = i32::try_from(self.t).unwrap_or(i32::MAX);
        let update = Update {
            beta1: p.beta1 as f32,
            beta2: p.beta2 as f32,
            scale_m: (1f64 / (1f64 - p.beta1.powi(t))) as f32,
            scale_v: (1f64 / (1f64 - p.beta2.powi(t))) as f32,
            decay: (1f64 - p.lr * p.weight_decay) as f32,
            lr: p.lr as f32,
            eps: p.eps as f32,
        };
        for (theta, (m, v)) in self.vars.iter().zip(&self.moments) {
            let Some(g) = grads.get(theta) else { continue };
            let g = g.contiguous()?;
            m.as_tensor().inplace_op2(
                &g,
                &Moment {
                    update,
                    second: false,
                },
            )?;
            v.as_tensor().inplace_op2(
                &g,
                &Moment {
                    update,
                    second: true,
                },
            )?;
            theta
                .as_tensor()
                .inplace_op3(m.as_tensor(), v.as_tensor(), &update)?;
        }
        Ok(())
    }

    /// The moments, in the order of the variables, and the step count.
    pub fn state(&self) -> (Vec<(Tensor, Tensor)>, u64) {
        let moments = self
            .moments
            .iter()
            .map(|(m, v)| (m.as_tensor().clone(), v.as_tensor().clone()))
            .collect();
        (moments, self.t)
    }

    /// Puts back what [`AdamW::state`] gave.
    pub fn restore(&mut self, moments: &[(Tensor, Tensor)], t: u64) -> Result<()> {
        if moments.len() != self.moments.len() {
            return Err(crate::error::TrainError::Config(format!(
                "the checkpoint has optimizer state for {} tensors, this run trains {}",
                moments.len(),
                self.moments.len()
            )));
        }
        for ((m, v), (sm, sv)) in self.moments.iter().zip(moments) {
            m.set(sm)?;
            v.set(sv)?;
        }
        self.t = t;
        Ok(())
    }
}

/// One step's constants.
#[derive(Debug, Clone, Copy)]
struct Update {
    beta1: f32,
    beta2: f32,
    /// Bias corrections `1 / (1 − βᵗ)`.
    scale_m: f32,
    scale_v: f32,
    /// `1 − lr · weight_decay`.
    decay: f32,
    lr: f32,
    eps: f32,
}

/// A moment's update from the gradient: `m·β₁ + g·(1 − β₁)`, or `v·β₂ + g²·(1 − β₂)`.
struct Moment {
    update: Update,
    second: bool,
}

const OP: &str = "forja-adamw";

/// The contiguous f32 values of an op's operand.
fn values<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{OP}: contiguous f32 tensors expected"),
    }
}

/// The contiguous f32 values of an op's destination.
fn values_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("{OP}: contiguous f32 tensors expected"),
    }
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (m, g) = (values_mut(s1, l1)?, values(s2, l2)?);
        if m.len() != g.len() {
            candle_core::bail!("{OP}: {} moments for {} gradients", m.len(), g.len());
        }
        let u = self.update;
        if self.second {
            for (v, &g) in m.iter_mut().zip(g) {
                *v = *v * u.beta2 + (g * g) * (1.0 - u.beta2);
            }
        } else {
            for (m, &g) in m.iter_mut().zip(g) {
                *m = *m * u.beta1 + g * (1.0 - u.beta1);
            }
        }
        Ok(())
    }
}

/// The weight's update from its new moments:
/// `θ·(1 − lr·wd) − lr·(m·c₁) / (√(v·c₂) + ε)`.
impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let (theta, m, v) = (values_mut(s1, l1)?, values(s2, l2)?, values(s3, l3)?);
        if theta.len() != m.len() || theta.len() != v.len() {
            candle_core::bail!(
                "{OP}: {} values for {} and {} moments",
                theta.len(),
                m.len(),
                v.len()
            );
        }
        for ((t, &m), &v) in theta.iter_mut().zip(m).zip(v) {
            let adjusted = (m * self.scale_m) / ((v * self.scale_v).sqrt() + self.eps);
            *t = *t * self.decay - adjusted * self.lr;
        }
        Ok(())
    }
}
