//! Checkpoints: everything a training run needs to go on exactly where it stopped — the adapters'
//! matrices (or with full fine-tuning the model's weights), AdamW's moments and step count, the position in the (shuffled) example order, the
//! dropout masks' generators, the loss curve so far — plus the settings it was started with, so a
//! resume with other settings is refused instead of silently training something else.
//!
//! A checkpoint is a folder: `state.safetensors` (tensors) and `state.json` (the rest). It is
//! written beside its place and renamed into it, so a crash while saving leaves the previous
//! checkpoint whole.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use forja_models::Decoder;
use forja_models::training::TrainedWeight;
use serde::{Deserialize, Serialize};

use crate::adapter::Adapters;
use crate::error::{Result, TrainError};
use crate::rng::Rng;
use crate::trainer::{StepReport, Trainer};

const FORMAT: u32 = 1;
const TENSORS: &str = "state.safetensors";
const STATE: &str = "state.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    format: u32,
    steps_done: usize,
    optimizer_steps: u64,
    order: Vec<usize>,
    order_pos: usize,
    order_rng: u64,
    consumed: usize,
    /// Per adapted module, in the adapters' order.
    dropout: Vec<u64>,
    elapsed_s: f64,
    reports: Vec<StepReport>,
    /// What the run was started with (model, data, LoRA and optimizer settings).
    settings: serde_json::Value,
}

/// A saved training state.
#[derive(Debug)]
pub struct Checkpoint {
    state: State,
    tensors: HashMap<String, Tensor>,
    dir: PathBuf,
}

impl Checkpoint {
    /// Steps the checkpointed run had done.
    pub fn steps_done(&self) -> usize {
        self.state.steps_done
    }
}

/// What a run trains: LoRA adapters attached to the decoder, or the decoder's own weights.
#[derive(Debug, Clone, Copy)]
pub enum Trained<'a> {
    Adapters(&'a Adapters),
    /// Full fine-tuning ([`Decoder::make_trainable`]).
    Weights(&'a [TrainedWeight]),
}

impl Trained<'_> {
    /// The tensors a checkpoint keeps for it, by their names there.
    fn tensors(&self) -> Vec<(String, &Var)> {
        match self {
            Trained::Adapters(adapters) => adapters
                .modules
                .iter()
                .enumerate()
                .flat_map(|(i, m)| [(format!("a.{i}"), &m.a), (format!("b.{i}"), &m.b)])
                .collect(),
            Trained::Weights(weights) => weights
                .iter()
                .map(|w| (format!("w.{}", w.name), &w.var))
                .collect(),
        }
    }

    /// Modules with a dropout generator (adapters only).
    fn dropout_modules(&self) -> usize {
        match self {
            Trained::Adapters(a) => a.modules.len(),
            Trained::Weights(_) => 0,
        }
    }
}

/// The dropout generators of the trained adapters' modules in `decoder`, in the adapters'
/// order (none for trained weights).
fn dropout_states(decoder: &mut Decoder, trained: Trained<'_>) -> Result<Vec<u64>> {
    let Trained::Adapters(adapters) = trained else {
        return Ok(Vec::new());
    };
    let mut by_path: HashMap<String, u64> = decoder
        .linears_mut()
        .into_iter()
        .filter_map(|(path, l)| l.lora.as_ref().map(|lora| (path, lora.dropout_state())))
        .collect();
    adapters
        .modules
        .iter()
        .map(|m| {
            by_path
                .remove(&m.path)
                .ok_or_else(|| TrainError::Config(format!("{} has no adapter attached", m.path)))
        })
        .collect()
}

/// Saves `trainer`'s state (with the adapters in `decoder`) as the checkpoint folder `dir`,
/// replacing the one there once the new one is complete.
pub fn save(
    dir: &Path,
    trainer: &Trainer,
    decoder: &mut Decoder,
    trained: Trained<'_>,
    settings: &serde_json::Value,
) -> Result<()> {
    let (moments, optimizer_steps) = trainer.opt.state();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, var) in trained.tensors() {
        tensors.insert(name, var.as_tensor().clone());
    }
    for (i, (m, v)) in moments.into_iter().enumerate() {
        tensors.insert(format!("m.{i}"), m);
        tensors.insert(format!("v.{i}"), v);
    }
    let state = State {
        format: FORMAT,
        steps_done: trainer.done,
        optimizer_steps,
        order: trainer.order.order.clone(),
        order_pos: trainer.order.pos,
        order_rng: trainer.order.rng.state(),
        consumed: trainer.order.consumed,
        dropout: dropout_states(decoder, trained)?,
        elapsed_s: trainer.elapsed_before + trainer.started.elapsed().as_secs_f64(),
        reports: trainer.reports.clone(),
        settings: settings.clone(),
    };
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let tmp = dir.with_file_name(format!(".{name}.partial"));
    let old = dir.with_file_name(format!(".{name}.old"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    let written = (|| {
        candle_core::safetensors::save(&tensors, tmp.join(TENSORS))
            .map_err(|e| TrainError::io(&tmp.join(TENSORS), e))?;
        let json = serde_json::to_string(&state)
            .map_err(|e| TrainError::Config(format!("checkpoint state: {e}")))?;
        std::fs::write(tmp.join(STATE), json).map_err(|e| TrainError::io(&tmp.join(STATE), e))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // The old checkpoint stays until the new one is in place.
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| TrainError::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| TrainError::io(dir, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// The checkpoint in `dir`, or `None` when there is none.
pub fn load(dir: &Path) -> Result<Option<Checkpoint>> {
    if !dir.join(STATE).is_file() {
        return Ok(None);
    }
    let bad = |what: String| TrainError::Io {
        path: dir.to_path_buf(),
        what,
    };
    let text = std::fs::read_to_string(dir.join(STATE)).map_err(|e| TrainError::io(dir, e))?;
    let state: State = serde_json::from_str(&text)
        .map_err(|e| bad(format!("unreadable checkpoint state: {e}")))?;
    if state.format != FORMAT {
        return Err(bad(format!(
            "checkpoint format {} (this forja reads {FORMAT})",
            state.format
        )));
    }
    let tensors = candle_core::safetensors::load(dir.join(TENSORS), &Device::Cpu)
        .map_err(|e| bad(format!("unreadable checkpoint tensors: {e}")))?;
    Ok(Some(Checkpoint {
        state,
        tensors,
        dir: dir.to_path_buf(),
    }))
}

/// The settings that differ between `saved` and `now`, as `key.sub: saved → now`.
fn differences(saved: &serde_json::Value, now: &serde_json::Value) -> Vec<String> {
    fn walk(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        if let (Some(x), Some(y)) = (a.as_object(), b.as_object()) {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            let null = serde_json::Value::Null;
            for k in keys {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                walk(
                    &key,
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        } else if a != b {
            out.push(format!("{prefix}: {a} → {b}"));
        }
    }
    let mut out = Vec::new();
    walk("", saved, now, &mut out);
    out
}

impl Trainer {
    /// Continues from `ck`: the adapters in `decoder`, the optimizer, the example order, the
    /// dropout generators and the loss curve become what they were when it was saved. The run
    /// must have been started with the same `settings`.
    pub fn resume(
        &mut self,
        ck: &Checkpoint,
        decoder: &mut Decoder,
        trained: Trained<'_>,
        settings: &serde_json::Value,
    ) -> Result<()> {
        let diff = differences(&ck.state.settings, settings);
        if !diff.is_empty() {
            return Err(TrainError::Config(format!(
                "the checkpoint in {} was made with other settings ({}): resume with the same \
                 ones, or start over without --resume",
                ck.dir.display(),
                diff.join("; ")
            )));
        }
        let s = &ck.state;
        if s.steps_done > self.cfg.steps
            || s.dropout.len() != trained.dropout_modules()
            || s.order.len() != self.order.order.len()
        {
            return Err(TrainError::Config(format!(
                "the checkpoint in {} does not fit this run (steps, adapters or examples differ)",
                ck.dir.display()
            )));
        }
        let tensor = |name: String| {
            ck.tensors
                .get(&name)
                .cloned()
                .ok_or_else(|| TrainError::Io {
                    path: ck.dir.clone(),
                    what: format!("the checkpoint has no tensor {name}"),
                })
        };
        let device = decoder.device().clone();
        for (name, var) in trained.tensors() {
            var.set(&tensor(name)?.to_device(&device)?)?;
        }
        let moments = (0..self.vars.len())
            .map(|i| {
                Ok((
                    tensor(format!("m.{i}"))?.to_device(&device)?,
                    tensor(format!("v.{i}"))?.to_device(&device)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        self.opt.restore(&moments, s.optimizer_steps)?;
        let mut seeds: HashMap<&str, u64> = match trained {
            Trained::Adapters(adapters) => adapters
                .modules
                .iter()
                .map(|m| m.path.as_str())
                .zip(s.dropout.iter().copied())
                .collect(),
            Trained::Weights(_) => HashMap::new(),
        };
        for (path, l) in decoder.linears_mut() {
            if let (Some(lora), Some(seed)) = (l.lora.as_ref(), seeds.remove(path.as_str())) {
                lora.seed_dropout(seed);
            }
        }
        self.order.order = s.order.clone();
        self.order.pos = s.order_pos;
        self.order.rng = Rng::new(s.order_rng);
        self.order.consumed = s.consumed;
        self.done = s.steps_done;
        self.reports = s.reports.clone();
        self.elapsed_before = s.elapsed_s;
        self.started = Instant::now();
        Ok(())
    }
}
