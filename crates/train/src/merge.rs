//! Writing a new HF model folder from a base one — the same tensor names, dtypes and shards,
//! the other files copied — that loads anywhere: an adapter merged into its base
//! (`W' = W + s·B·A` for every adapted projection), or the weights full fine-tuning trained.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use forja_arch::{Container, ModelDescription};

use crate::error::{Result, TrainError};
use crate::peft::PeftAdapter;
use forja_models::training::TrainedWeight;

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
    if out.exists() {
        return Err(TrainError::Config(format!(
            "{} already exists: merge into a new folder",
            out.display()
        )));
    }
    let scale = adapter.spec.scale();
    let mut remaining: BTreeSet<&str> = adapter.modules.keys().map(String::as_str).collect();
    let partial = partial_beside(out);
    let files = write_folder(model_dir, &partial, |name, stored| {
        let w = stored.load()?;
        let module = name.strip_suffix(".weight").unwrap_or_default();
        let Some((a, b)) = adapter.modules.get(module) else {
            return Ok(w);
        };
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
        Ok((w.to_dtype(DType::F32)? + delta)?.to_dtype(w.dtype())?)
    })
    .and_then(|files| {
        if remaining.is_empty() {
            Ok(files)
        } else {
            Err(TrainError::Adapter {
                path: adapter.dir.clone(),
                what: format!(
                    "adapts projections the model's files do not hold as weights: {} (tied \
                     embeddings cannot take an lm_head update)",
                    remaining.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            })
        }
    });
    let files = finish(files, &partial, out)?;
    Ok(MergeReport {
        merged: adapter.modules.len(),
        files,
    })
}

/// Writes the weights full fine-tuning trained (`weights`, named as in the checkpoint) as an
/// HF model folder `out` (which must not exist): the files of `model_dir` with the trained
/// values in each tensor's own dtype, the other files copied. Every trained weight must be in
/// the files; a tied `lm_head.weight` stored there gets the trained embedding table. Built
/// beside `out` and renamed into place, so a failure leaves nothing.
pub fn save_trained_folder(
    model_dir: &Path,
    weights: &[TrainedWeight],
    out: &Path,
) -> Result<Vec<PathBuf>> {
    if out.exists() {
        return Err(TrainError::Config(format!(
            "{} already exists: write the model into a new folder",
            out.display()
        )));
    }
    let by_name: HashMap<&str, &TrainedWeight> =
        weights.iter().map(|w| (w.name.as_str(), w)).collect();
    let embed = by_name.get("model.embed_tokens.weight").copied();
    let mut remaining: BTreeSet<&str> = by_name.keys().copied().collect();
    let partial = partial_beside(out);
    let files = write_folder(model_dir, &partial, |name, stored| {
        let trained = match by_name.get(name) {
            Some(t) => {
                remaining.remove(name);
                t
            }
            // A tied head stored anyway: it is the embedding table.
            None if name == "lm_head.weight" => match embed {
                Some(e) => e,
                None => return stored.load(),
            },
            None => return stored.load(),
        };
        let value = trained.var.as_tensor().detach();
        if value.dims() != stored.dims {
            return Err(TrainError::Config(format!(
                "{name}: trained as {:?}, stored as {:?}",
                value.dims(),
                stored.dims
            )));
        }
        Ok(value.to_dtype(stored.dtype)?)
    })
    .and_then(|files| {
        if remaining.is_empty() {
            Ok(files)
        } else {
            Err(TrainError::Config(format!(
                "{}: the model's files do not hold the trained weights {}",
                model_dir.display(),
                remaining.iter().copied().collect::<Vec<_>>().join(", ")
            )))
        }
    });
    finish(files, &partial, out)
}

/// The folder a write to `out` is built in.
fn partial_beside(out: &Path) -> PathBuf {
    out.with_file_name(format!(
        "{}.partial",
        out.file_name()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
    ))
}

/// Renames the finished folder `partial` to `out` (the files' paths with it), or removes it
/// after a failure.
fn finish(files: Result<Vec<PathBuf>>, partial: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    match files {
        Ok(files) => {
            std::fs::rename(partial, out).map_err(|e| TrainError::io(out, e))?;
            Ok(files
                .into_iter()
                .map(|f| f.file_name().map_or(f.clone(), |n| out.join(n)))
                .collect())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(partial);
            Err(e)
        }
    }
}

/// A tensor of a base model's file: its dtype and shape, and its values read on demand (a
/// tensor being replaced is never read).
struct Stored<'a> {
    dtype: DType,
    dims: Vec<usize>,
    read: &'a dyn Fn() -> Result<Tensor>,
}

impl Stored<'_> {
    fn load(&self) -> Result<Tensor> {
        (self.read)()
    }
}

/// Writes the HF model folder `model_dir` into the new folder `dest`: each safetensors file
/// with every tensor passed through `map(name, stored)` (same names, files and shards), and
/// every other file copied. Returns the files written.
fn write_folder(
    model_dir: &Path,
    dest: &Path,
    mut map: impl FnMut(&str, &Stored<'_>) -> Result<Tensor>,
) -> Result<Vec<PathBuf>> {
    if !model_dir.is_dir() {
        return Err(TrainError::Config(format!(
            "{}: not an HF model folder (config.json, safetensors) or a .gguf file",
            model_dir.display()
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
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(|e| TrainError::io(dest, e))?;
    }
    std::fs::create_dir_all(dest).map_err(|e| TrainError::io(dest, e))?;
    let mut files = Vec::new();
    for file in &stored.files {
        // SAFETY: the mapping is only read, while this function runs; the file is the model's
        // own weights, which forja does not write.
        let mapped = unsafe { candle_core::safetensors::MmapedSafetensors::new(file) }
            .map_err(|e| TrainError::io(file, e))?;
        let mut written: HashMap<String, Tensor> = HashMap::new();
        for (name, view) in mapped.tensors() {
            let dtype = DType::try_from(view.dtype()).map_err(|e| TrainError::io(file, e))?;
            let read = || -> Result<Tensor> {
                mapped
                    .load(&name, &Device::Cpu)
                    .map_err(|e| TrainError::io(file, e))
            };
            let stored = Stored {
                dtype,
                dims: view.shape().to_vec(),
                read: &read,
            };
            let w = map(&name, &stored)?;
            written.insert(name, w);
        }
        let name = file
            .file_name()
            .ok_or_else(|| TrainError::io(file, "no file name"))?;
        let target = dest.join(name);
        candle_core::safetensors::save(&written, &target)
            .map_err(|e| TrainError::io(&target, e))?;
        files.push(target);
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
    Ok(files)
}
