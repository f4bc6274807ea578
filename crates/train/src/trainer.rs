//! The training loop: micro-batches through the decoder with the adapters attached (or its own
//! weights trained), loss on the
//! trained tokens only, gradients accumulated over micro-batches and clipped to a global norm,
//! AdamW (`optim.rs`, whose state a checkpoint keeps) on a warmup + cosine schedule, evaluation
//! loss and perplexity.

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use forja_models::Decoder;
use forja_models::training::Target;

#[cfg(doc)]
use crate::adapter::Adapters;
use crate::error::{Result, TrainError};
use crate::examples::Example;
use crate::optim::{AdamW, AdamWParams};
use crate::rng::Rng;
use crate::schedule::cosine_with_warmup;

/// Optimizer and loop settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Optimizer steps of linear warmup.
    pub warmup_steps: usize,
    /// Optimizer steps to run.
    pub steps: usize,
    /// Sequences per forward pass.
    pub batch: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Clip the global gradient L2 norm to this (none: no clipping).
    pub max_grad_norm: Option<f64>,
    /// Shuffle the examples each epoch (seeded); otherwise they go in order.
    pub shuffle: bool,
    pub seed: u64,
    /// Evaluate every this many steps (and after the last); none: only after the last.
    pub eval_every: Option<usize>,
    /// Keep only each layer's input in the forward pass and recompute the layer in backward
    /// (less activation memory, one more forward pass of compute).
    #[serde(default)]
    pub gradient_checkpointing: bool,
}

impl TrainConfig {
    /// Steps that cover `epochs` passes over `num_examples`.
    pub fn steps_for_epochs(
        num_examples: usize,
        epochs: f64,
        batch: usize,
        grad_accum: usize,
    ) -> usize {
        let per_step = (batch * grad_accum).max(1);
        ((num_examples as f64 * epochs) / per_step as f64)
            .ceil()
            .max(1.0) as usize
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(TrainError::Config(what));
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("learning rate must be positive, got {}", self.lr));
        }
        if self.steps == 0 {
            return bad("zero training steps".into());
        }
        if self.batch == 0 || self.grad_accum == 0 {
            return bad("batch size and gradient accumulation must be at least 1".into());
        }
        if self.max_grad_norm.is_some_and(|n| n.is_nan() || n <= 0.0) {
            return bad("the gradient clipping norm must be positive".into());
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("AdamW betas must be in [0, 1)".into());
        }
        Ok(())
    }
}

/// Loss on a held-out set.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalReport {
    /// Mean cross-entropy per trained token (nats).
    pub loss: f64,
    pub perplexity: f64,
}

/// What one optimizer step did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepReport {
    /// From 1.
    pub step: usize,
    pub total_steps: usize,
    /// Passes over the training examples so far.
    pub epoch: f64,
    pub lr: f64,
    /// Mean cross-entropy per trained token of this step's examples.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens through the model in this step.
    pub tokens: usize,
    /// Training throughput of this step (forward, backward, update; evaluation excluded).
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
    pub eval: Option<EvalReport>,
}

/// Trains `vars` — the adapters attached to `decoder` ([`Adapters::vars`]), or its own weights
/// ([`Decoder::make_trainable`]) — on `train`, evaluating on `eval` when it is not empty;
/// `on_step` sees each step as it ends (an error from it stops training).
pub fn train(
    decoder: &mut Decoder,
    vars: Vec<Var>,
    train: &[Example],
    eval: &[Example],
    cfg: &TrainConfig,
    mut on_step: impl FnMut(&StepReport) -> Result<()>,
) -> Result<Vec<StepReport>> {
    let mut t = Trainer::new(vars, train.len(), cfg)?;
    while !t.finished() {
        let r = t.step(decoder, train, eval)?;
        on_step(&r)?;
    }
    Ok(t.reports)
}

/// A training run, one optimizer step at a time; its whole state can be saved and restored
/// ([`crate::checkpoint`]).
#[derive(Debug)]
pub struct Trainer {
    pub(crate) cfg: TrainConfig,
    pub(crate) vars: Vec<candle_core::Var>,
    pub(crate) opt: AdamW,
    pub(crate) order: ExampleStream,
    /// Steps done.
    pub(crate) done: usize,
    /// Every step's report so far (the loss curve).
    pub reports: Vec<StepReport>,
    /// Seconds spent before this process (a resumed run's earlier part).
    pub(crate) elapsed_before: f64,
    pub(crate) started: Instant,
}

impl Trainer {
    /// A run training `vars` on `num_train` examples.
    pub fn new(vars: Vec<Var>, num_train: usize, cfg: &TrainConfig) -> Result<Self> {
        cfg.validate()?;
        if num_train == 0 {
            return Err(TrainError::Config("no training examples".into()));
        }
        let opt = AdamW::new(
            vars.clone(),
            AdamWParams {
                lr: cfg.lr,
                beta1: cfg.beta1,
                beta2: cfg.beta2,
                eps: cfg.eps,
                weight_decay: cfg.weight_decay,
            },
        )?;
        Ok(Trainer {
            cfg: cfg.clone(),
            vars,
            opt,
            order: ExampleStream::new(num_train, cfg.shuffle, cfg.seed),
            done: 0,
            reports: Vec::with_capacity(cfg.steps),
            elapsed_before: 0.0,
            started: Instant::now(),
        })
    }

    /// Steps done so far.
    pub fn steps_done(&self) -> usize {
        self.done
    }

    pub fn finished(&self) -> bool {
        self.done >= self.cfg.steps
    }

    /// Runs the next optimizer step (and the evaluation due after it).
    pub fn step(
        &mut self,
        decoder: &mut Decoder,
        train: &[Example],
        eval: &[Example],
    ) -> Result<StepReport> {
        let cfg = &self.cfg;
        let step = self.done;
        let t0 = Instant::now();
        let chosen: Vec<&Example> = (0..cfg.batch * cfg.grad_accum)
            .map(|_| self.order.next_index())
            .map(|i| train.get(i))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| TrainError::Config("the training set changed size".into()))?;
        let trained_tokens: usize = chosen.iter().map(|e| e.trained_tokens()).sum();
        let tokens: usize = chosen.iter().map(|e| e.ids.len()).sum();
        decoder.set_lora_training(true);
        let mut acc: Vec<Option<Tensor>> = vec![None; self.vars.len()];
        let mut loss = 0.0;
        for micro in chosen.chunks(cfg.batch) {
            let (seqs, targets) = targets_of(micro);
            if targets.is_empty() {
                continue;
            }
            loss += decoder.loss_backward(
                &seqs,
                &targets,
                1.0 / trained_tokens as f64,
                cfg.gradient_checkpointing,
                |grads| accumulate(&mut acc, &self.vars, grads),
            )?;
        }
        decoder.set_lora_training(false);
        let grad_norm = global_norm(&acc)?;
        let clip = match cfg.max_grad_norm {
            // torch.nn.utils.clip_grad_norm_: scale by max / (norm + 1e-6) when that is below 1.
            Some(max) => (max / (grad_norm + 1e-6)).min(1.0),
            None => 1.0,
        };
        let mut store = GradStore::default();
        for (g, var) in acc.into_iter().zip(&self.vars) {
            if let Some(g) = g {
                let g = if clip < 1.0 { (g * clip)? } else { g };
                store.insert(var.as_tensor(), g);
            }
        }
        let lr = cfg.lr * cosine_with_warmup(step, cfg.warmup_steps, cfg.steps);
        self.opt.set_learning_rate(lr);
        self.opt.step(&store)?;
        if !loss.is_finite() {
            return Err(TrainError::Config(format!(
                "the loss became {loss} at step {}: try a lower learning rate",
                step + 1
            )));
        }
        // Training speed, without the evaluation below.
        let secs = t0.elapsed().as_secs_f64();
        let done = step + 1;
        let due = done == cfg.steps
            || cfg
                .eval_every
                .is_some_and(|n| n > 0 && done.is_multiple_of(n));
        let eval_report = if due && !eval.is_empty() {
            Some(evaluate(decoder, eval, cfg.batch)?)
        } else {
            None
        };
        let report = StepReport {
            step: done,
            total_steps: cfg.steps,
            epoch: self.order.consumed as f64 / train.len() as f64,
            lr,
            loss,
            grad_norm,
            tokens,
            tokens_per_s: tokens as f64 / secs.max(1e-9),
            elapsed_s: self.elapsed_before + self.started.elapsed().as_secs_f64(),
            eval: eval_report,
        };
        self.done = done;
        self.reports.push(report.clone());
        Ok(report)
    }
}

/// Mean loss per trained token over `examples`, in batches of `batch`, and its perplexity.
pub fn evaluate(decoder: &Decoder, examples: &[Example], batch: usize) -> Result<EvalReport> {
    let mut total = 0.0;
    let mut count = 0;
    for chunk in examples.chunks(batch.max(1)) {
        let (seqs, targets) = targets_of(chunk);
        if targets.is_empty() {
            continue;
        }
        total += decoder.loss_sum(&seqs, &targets)?;
        count += targets.len();
    }
    if count == 0 {
        return Err(TrainError::Config(
            "the evaluation set has no trained tokens".into(),
        ));
    }
    let loss = total / count as f64;
    Ok(EvalReport {
        loss,
        perplexity: loss.exp(),
    })
}

/// Adds each trainable tensor's gradient in `grads` to its running sum.
fn accumulate(acc: &mut [Option<Tensor>], vars: &[Var], grads: &GradStore) -> Result<()> {
    for (slot, var) in acc.iter_mut().zip(vars) {
        if let Some(g) = grads.get(var.as_tensor()) {
            *slot = Some(match slot.take() {
                Some(prev) => (prev + g)?,
                None => g.clone(),
            });
        }
    }
    Ok(())
}

/// The sequences of `batch` (a packed example's one by one) and the tokens the loss predicts:
/// each trained token from the row before it. Position `t` predicts token `t + 1`.
fn targets_of<E: std::borrow::Borrow<Example>>(batch: &[E]) -> (Vec<&[u32]>, Vec<Target>) {
    let mut seqs = Vec::new();
    let mut targets = Vec::new();
    let mut offset = 0;
    for ex in batch {
        let ex = ex.borrow();
        for r in ex.sequences() {
            let (ids, trained) = (&ex.ids[r.clone()], &ex.trained[r]);
            targets.extend((1..ids.len()).filter(|&t| trained[t]).map(|t| Target {
                row: offset + t - 1,
                token: ids[t],
            }));
            offset += ids.len();
            seqs.push(ids);
        }
    }
    (seqs, targets)
}

/// L2 norm of all gradients together.
fn global_norm(grads: &[Option<Tensor>]) -> Result<f64> {
    // Summed in f64 in one fixed order: candle's f32 reductions may group a large tensor's
    // sum differently from one call to the next, and a resumed run must repeat the norm
    // exactly.
    let mut sq = 0.0;
    for g in grads.iter().flatten() {
        let values = g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        sq += values
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>();
    }
    Ok(sq.sqrt())
}

/// Indices of training examples, epoch after epoch (each epoch a new seeded permutation when
/// shuffling).
#[derive(Debug)]
pub(crate) struct ExampleStream {
    pub(crate) order: Vec<usize>,
    pub(crate) pos: usize,
    shuffle: bool,
    pub(crate) rng: Rng,
    pub(crate) consumed: usize,
}

impl ExampleStream {
    fn new(n: usize, shuffle: bool, seed: u64) -> Self {
        let mut s = ExampleStream {
            order: (0..n).collect(),
            pos: 0,
            shuffle,
            rng: Rng::new(seed ^ 0x00DD_BA11),
            consumed: 0,
        };
        if shuffle {
            s.rng.shuffle(&mut s.order);
        }
        s
    }

    fn next_index(&mut self) -> usize {
        if self.pos == self.order.len() {
            self.pos = 0;
            if self.shuffle {
                self.rng.shuffle(&mut self.order);
            }
        }
        let i = self.order[self.pos];
        self.pos += 1;
        self.consumed += 1;
        i
    }
}
