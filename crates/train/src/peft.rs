//! Adapters in Hugging Face PEFT's layout: a folder with `adapter_config.json` and
//! `adapter_model.safetensors`, tensors named `base_model.model.<module>.lora_A.weight` /
//! `lora_B.weight` — what `PeftModel.from_pretrained` loads and `save_pretrained` writes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use forja_models::lora::{LoraSlot, LoraWeights};
use forja_models::{Decoder, ModelError};
use serde_json::{Value, json};

use crate::adapter::LoraSpec;
use crate::error::{Result, TrainError};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
const PREFIX: &str = "base_model.model.";

/// An adapter read from disk.
#[derive(Debug)]
pub struct PeftAdapter {
    pub dir: PathBuf,
    pub spec: LoraSpec,
    /// Module path → (`A` `[rank, in]`, `B` `[out, rank]`), f32.
    pub modules: BTreeMap<String, (Tensor, Tensor)>,
}

impl PeftAdapter {
    pub fn module(&self, path: &str) -> Option<(&Tensor, &Tensor)> {
        self.modules.get(path).map(|(a, b)| (a, b))
    }

    /// The matrices and scale, to attach to a decoder (the tensors are shared, not copied).
    pub fn weights(&self) -> LoraWeights {
        LoraWeights {
            modules: self.modules.clone(),
            scale: self.spec.scale(),
        }
    }

    /// A decoder's refusal of this adapter, naming its folder.
    pub fn error(&self, e: ModelError) -> TrainError {
        match e {
            ModelError::Adapter(what) => TrainError::Adapter {
                path: self.dir.clone(),
                what,
            },
            other => TrainError::Model(other),
        }
    }
}

/// Reads a PEFT LoRA adapter folder. Variants forja does not compute (DoRA, per-module ranks,
/// adapted embeddings, extra trained modules) are refused by name.
pub fn load(dir: &Path) -> Result<PeftAdapter> {
    let bad = |what: String| TrainError::Adapter {
        path: dir.to_path_buf(),
        what,
    };
    let config_path = dir.join(CONFIG_FILE);
    let text =
        std::fs::read_to_string(&config_path).map_err(|e| TrainError::io(&config_path, e))?;
    let config: Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("{CONFIG_FILE} is not valid JSON: {e}")))?;
    let get = |k: &str| config.get(k).filter(|v| !v.is_null());
    match get("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        other => {
            return Err(bad(format!(
                "peft_type {other:?}: only LORA adapters are supported"
            )));
        }
    }
    let flag = |k: &str| get(k).and_then(Value::as_bool).unwrap_or(false);
    for (key, what) in [
        ("use_dora", "DoRA"),
        ("fan_in_fan_out", "fan_in_fan_out (Conv1D weights)"),
    ] {
        if flag(key) {
            return Err(bad(format!("{what} adapters are not supported")));
        }
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        if get(key)
            .and_then(Value::as_object)
            .is_some_and(|o| !o.is_empty())
        {
            return Err(bad(format!(
                "per-module ranks or alphas ({key}) are not supported"
            )));
        }
    }
    if get("modules_to_save")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        return Err(bad(
            "fully trained extra modules (modules_to_save) are not supported".into(),
        ));
    }
    let rank = get("r")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("no rank `r`".into()))? as usize;
    let alpha = get("lora_alpha")
        .and_then(Value::as_f64)
        .ok_or_else(|| bad("no `lora_alpha`".into()))?;
    let dropout = get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0) as f32;
    let weights_path = dir.join(WEIGHTS_FILE);
    let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu)
        .map_err(|e| TrainError::io(&weights_path, e))?;
    let mut halves: BTreeMap<String, (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
    for (name, t) in tensors {
        let rest = name
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad(format!("tensor {name:?} is not under {PREFIX:?}")))?;
        let (module, is_a) = if let Some(m) = rest.strip_suffix(".lora_A.weight") {
            (m, true)
        } else if let Some(m) = rest.strip_suffix(".lora_B.weight") {
            (m, false)
        } else {
            return Err(bad(format!(
                "tensor {name:?} is not a LoRA matrix (lora_A / lora_B weight)"
            )));
        };
        let t = t.to_dtype(DType::F32)?;
        let slot = halves.entry(module.to_string()).or_default();
        if is_a {
            slot.0 = Some(t)
        } else {
            slot.1 = Some(t)
        }
    }
    let mut modules = BTreeMap::new();
    for (module, (a, b)) in halves {
        let (Some(a), Some(b)) = (a, b) else {
            return Err(bad(format!("{module} has only one of lora_A and lora_B")));
        };
        let (a_rank, _) = a.dims2()?;
        let (_, b_rank) = b.dims2()?;
        if a_rank != rank || b_rank != rank {
            return Err(bad(format!(
                "{module}: lora_A {:?} and lora_B {:?} do not have rank {rank}",
                a.dims(),
                b.dims()
            )));
        }
        modules.insert(module, (a, b));
    }
    if modules.is_empty() {
        return Err(bad(format!("{WEIGHTS_FILE} holds no LoRA matrices")));
    }
    let targets = match get("target_modules") {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        // A regular expression, or nothing: the modules present are the targets.
        _ => {
            let mut names: Vec<String> = modules
                .keys()
                .filter_map(|m| m.rsplit('.').next().map(str::to_string))
                .collect();
            names.sort();
            names.dedup();
            names
        }
    };
    Ok(PeftAdapter {
        dir: dir.to_path_buf(),
        spec: LoraSpec {
            rank,
            alpha,
            dropout,
            targets,
            use_rslora: flag("use_rslora"),
        },
        modules,
    })
}

/// Puts `adapter` on `decoder` for inference (no dropout, nothing trainable), on every sequence.
/// Every module of the adapter must exist in the decoder with matching shapes (checked by
/// [`Decoder::attach_lora`], which serves adapters per request the same way).
pub fn apply(decoder: &mut Decoder, adapter: &PeftAdapter) -> Result<()> {
    decoder
        .attach_lora(&adapter.weights(), LoraSlot::Single)
        .map_err(|e| adapter.error(e))
}

/// Writes the decoder's adapters to `dir` in PEFT's layout. Each file is written beside its
/// final name and renamed into place, so a failure leaves no half-written file.
pub fn save(decoder: &mut Decoder, spec: &LoraSpec, base_model: &str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (path, linear) in decoder.linears_mut() {
        if let Some(lora) = &linear.lora {
            tensors.insert(
                format!("{PREFIX}{path}.lora_A.weight"),
                lora.a.detach().to_device(&Device::Cpu)?,
            );
            tensors.insert(
                format!("{PREFIX}{path}.lora_B.weight"),
                lora.b.detach().to_device(&Device::Cpu)?,
            );
        }
    }
    // PEFT's row order, whatever order the base keeps its projections in.
    let order = decoder.qk_row_order();
    for (name, t) in tensors.iter_mut() {
        if let Some(path) = name
            .strip_prefix(PREFIX)
            .and_then(|n| n.strip_suffix(".lora_B.weight"))
        {
            *t = order.to_hf(path, t)?;
        }
    }
    if tensors.is_empty() {
        return Err(TrainError::Config(
            "the model carries no adapter to save".into(),
        ));
    }
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "target_modules": spec.targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "use_rslora": spec.use_rslora,
        "use_dora": false,
        "rank_pattern": {},
        "alpha_pattern": {},
        "layers_to_transform": null,
        "layers_pattern": null,
        "revision": null,
    });
    let weights = dir.join(WEIGHTS_FILE);
    let weights_tmp = dir.join(format!("{WEIGHTS_FILE}.partial"));
    candle_core::safetensors::save(&tensors, &weights_tmp)
        .map_err(|e| TrainError::io(&weights_tmp, e))?;
    let config_path = dir.join(CONFIG_FILE);
    let config_tmp = dir.join(format!("{CONFIG_FILE}.partial"));
    let text = serde_json::to_string_pretty(&config).map_err(|e| TrainError::io(&config_tmp, e))?;
    std::fs::write(&config_tmp, text + "\n").map_err(|e| TrainError::io(&config_tmp, e))?;
    std::fs::rename(&weights_tmp, &weights).map_err(|e| TrainError::io(&weights, e))?;
    std::fs::rename(&config_tmp, &config_path).map_err(|e| TrainError::io(&config_path, e))?;
    Ok(())
}
