//! AdamW with decoupled weight decay (Loshchilov & Hutter; torch's `AdamW`), whose moments and
//! step count can be saved and restored, so a resumed run continues exactly where it stopped.
//! The arithmetic is candle-nn's `AdamW`, operation for operation.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

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

    /// Updates every variable `grads` has a gradient for.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.t += 1;
        let p = self.params;
        let t = i32::try_from(self.t).unwrap_or(i32::MAX);
        let scale_m = 1f64 / (1f64 - p.beta1.powi(t));
        let scale_v = 1f64 / (1f64 - p.beta2.powi(t));
        for (theta, (m, v)) in self.vars.iter().zip(&self.moments) {
            let Some(g) = grads.get(theta) else { continue };
            let next_m = ((m.as_tensor() * p.beta1)? + (g * (1.0 - p.beta1))?)?;
            let next_v = ((v.as_tensor() * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let m_hat = (&next_m * scale_m)?;
            let v_hat = (&next_v * scale_v)?;
            let next_theta = (theta.as_tensor() * (1f64 - p.lr * p.weight_decay))?;
            let adjusted = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
            let next_theta = (next_theta - (adjusted * p.lr)?)?;
            m.set(&next_m)?;
            v.set(&next_v)?;
            theta.set(&next_theta)?;
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
