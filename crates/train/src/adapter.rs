//! Attaching trainable LoRA adapters to a decoder's projections.

use candle_core::{DType, Tensor, Var};
use forja_models::Decoder;
use forja_models::lora::{Lora, target_matches};

use crate::error::{Result, TrainError};
use crate::peft::PeftAdapter;
use crate::rng::Rng;

/// What to adapt and how.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    pub rank: usize,
    pub alpha: f64,
    /// Dropout on the adapter's input while training.
    pub dropout: f32,
    /// Module names as PEFT writes them (`q_proj`, `down_proj`, or a longer path suffix).
    pub targets: Vec<String>,
    /// rsLoRA: scale by `alpha / √rank` instead of `alpha / rank`.
    pub use_rslora: bool,
}

impl LoraSpec {
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(TrainError::Config("LoRA rank must be at least 1".into()));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(TrainError::Config(format!(
                "LoRA alpha must be positive, got {}",
                self.alpha
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(TrainError::Config(format!(
                "LoRA dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        if self.targets.is_empty() {
            return Err(TrainError::Config("no LoRA target modules".into()));
        }
        Ok(())
    }
}

/// One adapted projection's trainable matrices.
#[derive(Debug)]
pub struct AdapterVars {
    /// Module path in HF naming (`model.layers.0.self_attn.q_proj`).
    pub path: String,
    /// `[rank, in]`
    pub a: Var,
    /// `[out, rank]`
    pub b: Var,
}

/// The adapters attached to a decoder, for the optimizer.
#[derive(Debug)]
pub struct Adapters {
    pub spec: LoraSpec,
    pub modules: Vec<AdapterVars>,
}

impl Adapters {
    pub fn vars(&self) -> Vec<Var> {
        self.modules
            .iter()
            .flat_map(|m| [m.a.clone(), m.b.clone()])
            .collect()
    }

    /// Trainable parameters.
    pub fn num_params(&self) -> usize {
        self.modules
            .iter()
            .map(|m| m.a.elem_count() + m.b.elem_count())
            .sum()
    }
}

/// Where an adapter's first values come from.
#[derive(Debug, Clone, Copy)]
pub enum Init<'a> {
    /// PEFT's default: `A` Kaiming-uniform (bound `1/√in`), `B` zero, so training starts from
    /// the base model exactly. Drawn from the seed given to [`attach`].
    Random,
    /// The values of an existing adapter (continuing training, or a fixed start).
    From(&'a PeftAdapter),
}

/// Attaches an adapter to every projection `spec.targets` selects, replacing any adapter there.
/// Random initial values and dropout masks come from `seed`.
pub fn attach(
    decoder: &mut Decoder,
    spec: &LoraSpec,
    init: Init<'_>,
    seed: u64,
) -> Result<Adapters> {
    spec.validate()?;
    let device = decoder.device().clone();
    let mut rng = Rng::new(seed);
    let mut modules = Vec::new();
    let mut matched = vec![false; spec.targets.len()];
    let mut names = Vec::new();
    // PEFT's "all-linear": every projection but the output head.
    let all_linear = spec.targets.iter().any(|t| t == ALL_LINEAR || t == "all");
    let mut adapted: Vec<String> = Vec::new();
    // PEFT adapters are in HF's row order; the decoder may keep q/k rows in another.
    let order = decoder.qk_row_order();
    for (path, linear) in decoder.linears_mut() {
        if let Some(short) = path.rsplit('.').next()
            && !names.iter().any(|n: &String| n == short)
        {
            names.push(short.to_string());
        }
        let mut selected = false;
        for (t, m) in spec.targets.iter().zip(matched.iter_mut()) {
            if target_matches(&path, t) {
                *m = true;
                selected = true;
            }
        }
        if all_linear && path != "lm_head" {
            selected = true;
        }
        if !selected {
            continue;
        }
        if let Some(short) = path.rsplit('.').next()
            && !adapted.iter().any(|n| n == short)
        {
            adapted.push(short.to_string());
        }
        let (out_dim, in_dim) = linear.out_in()?;
        let (a, b) = match init {
            Init::Random => {
                let bound = 1.0 / (in_dim as f64).sqrt();
                let a: Vec<f32> = (0..spec.rank * in_dim)
                    .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
                    .collect();
                (
                    Tensor::from_vec(a, (spec.rank, in_dim), &device)?,
                    Tensor::zeros((out_dim, spec.rank), DType::F32, &device)?,
                )
            }
            Init::From(adapter) => {
                let (a, b) = adapter.module(&path).ok_or_else(|| TrainError::Adapter {
                    path: adapter.dir.clone(),
                    what: format!("has no matrices for {path}"),
                })?;
                (a.to_device(&device)?, b.to_device(&device)?)
            }
        };
        let b = match init {
            Init::From(_) => order.from_hf(&path, &b)?,
            Init::Random => b,
        };
        if a.dims() != [spec.rank, in_dim] || b.dims() != [out_dim, spec.rank] {
            return Err(TrainError::Config(format!(
                "{path}: adapter shapes {:?} and {:?} do not fit a rank-{} adapter of a \
                 {out_dim}×{in_dim} projection",
                a.dims(),
                b.dims(),
                spec.rank
            )));
        }
        let a = Var::from_tensor(&a.to_dtype(DType::F32)?)?;
        let b = Var::from_tensor(&b.to_dtype(DType::F32)?)?;
        let lora = Lora::new(
            a.as_tensor().clone(),
            b.as_tensor().clone(),
            spec.scale(),
            spec.dropout,
        )?;
        lora.seed_dropout(rng.next_u64());
        linear.lora = Some(lora);
        modules.push(AdapterVars { path, a, b });
    }
    for (t, m) in spec.targets.iter().zip(&matched) {
        if !m && !(all_linear && (t == ALL_LINEAR || t == "all")) {
            return Err(TrainError::Config(format!(
                "no projection of this model is named {t:?}; it has {}",
                names.join(", ")
            )));
        }
    }
    // The adapter's configuration names what was adapted, as PEFT records it.
    let spec = if all_linear {
        LoraSpec {
            targets: adapted,
            ..spec.clone()
        }
    } else {
        spec.clone()
    };
    Ok(Adapters { spec, modules })
}

/// The target that selects every projection but the output head (PEFT's name; `all` too).
pub const ALL_LINEAR: &str = "all-linear";
