//! Merging an adapter into its base model: `W' = W + s·B·A` for every adapted projection,
//! written as a new HF model folder — the same tensor names, dtypes and shards, the other files
//! copied — that loads anywhere without the adapter.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use forja_arch::{Container, ModelDescription};

use crate::error::{Result, TrainError};
use crate::peft::PeftAdapter;

/// What a merge wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeReport {
    /// Projections whose weights changed.
    pub merged: usize,
    /// Files written (weights and copies).
    pub files: Vec<PathBuf>,
}

/// Merges `adapter` into the HF model folder `model_dir`, writing `out` (which must not exist).
/// The folder is built beside `out` and renamed into place, so a failure leaves nothing.
pub fn merge_into_folder(
    model_dir: &Path,
    adapter: &PeftAdapter,
    out: &Path,
) -> Result<MergeReport> {
    if !model_dir.is_dir() {
        return Err(TrainError::Config(format!(
            "{}: not an HF model folder (config.json, safetensors) or a .gguf file",
            model_dir.display()
        )));
    }
    if out.exists() {
        return Err(TrainError::Config(format!(
            "{} already exists: merge into a new folder",
            out.display()
        )));
    }
    let desc = ModelDescription::from_path(model_dir).map_err(forja_models::ModelError::from)?;
    let stored = desc
        .stored
        .as_ref()
        .filter(|s| s.container == Container::Safetensors)
        .ok_or_else(|| {
            TrainError::Config(format!("{}: no safetensors weights", model_dir.display()))
        })?;
    let partial = out.with_file_name(format!(
        "{}.partial",
        out.file_name()
            .map_or_else(|| "merged".into(), |n| n.to_string_lossy().into_owned())
    ));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| TrainError::io(&partial, e))?;
    }
    std::fs::create_dir_all(&partial).map_err(|e| TrainError::io(&partial, e))?;
    let result = write_merged(model_dir, &stored.files, adapter, &partial);
    match result {
        Ok(mut report) => {
            std::fs::rename(&partial, out).map_err(|e| TrainError::io(out, e))?;
            for f in &mut report.files {
                if let Some(name) = f.file_name() {
                    *f = out.join(name);
                }
            }
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

fn write_merged(
    model_dir: &Path,
    weight_files: &[PathBuf],
    adapter: &PeftAdapter,
    dest: &Path,
) -> Result<MergeReport> {
    let scale = adapter.spec.scale();
    let mut remaining: BTreeSet<&str> = adapter.modules.keys().map(String::as_str).collect();
    let mut files = Vec::new();
    for file in weight_files {
        let tensors = candle_core::safetensors::load(file, &Device::Cpu)
            .map_err(|e| TrainError::io(file, e))?;
        let mut merged: HashMap<String, Tensor> = HashMap::with_capacity(tensors.len());
        for (name, w) in tensors {
            let module = name.strip_suffix(".weight").unwrap_or_default();
            let w = match adapter.modules.get(module) {
                Some((a, b)) => {
                    let delta = (b.matmul(a)? * scale)?; // [out, in]
                    if delta.dims() != w.dims() {
                        return Err(TrainError::Adapter {
                            path: adapter.dir.clone(),
                            what: format!(
                                "{module}: the update is {:?}, the weight {:?}",
                                delta.dims(),
                                w.dims()
                            ),
                        });
                    }
                    remaining.remove(module);
                    (w.to_dtype(DType::F32)? + delta)?.to_dtype(w.dtype())?
                }
                None => w,
            };
            merged.insert(name, w);
        }
        let name = file
            .file_name()
            .ok_or_else(|| TrainError::io(file, "no file name"))?;
        let target = dest.join(name);
        candle_core::safetensors::save(&merged, &target).map_err(|e| TrainError::io(&target, e))?;
        files.push(target);
    }
    if !remaining.is_empty() {
        return Err(TrainError::Adapter {
            path: adapter.dir.clone(),
            what: format!(
                "adapts projections the model's files do not hold as weights: {} (tied \
                 embeddings cannot take an lm_head update)",
                remaining.into_iter().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    // Everything else the folder needs (config, tokenizer, generation settings, shard index).
    let entries = std::fs::read_dir(model_dir).map_err(|e| TrainError::io(model_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| TrainError::io(model_dir, e))?;
        let path = entry.path();
        let is_weights = path.extension().is_some_and(|e| e == "safetensors");
        if path.is_file() && !is_weights {
            let target = dest.join(entry.file_name());
            std::fs::copy(&path, &target).map_err(|e| TrainError::io(&target, e))?;
            files.push(target);
        }
    }
    Ok(MergeReport {
        merged: adapter.modules.len(),
        files,
    })
}
