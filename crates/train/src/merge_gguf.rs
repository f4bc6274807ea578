//! Merging an adapter into a GGUF model: each adapted projection is dequantized, gets
//! `s·B·A`, and is quantized again to its own type (as llama.cpp's `export-lora` does); every
//! other tensor and all metadata are copied unchanged. The file is written beside `out` and
//! renamed into place, so a failure leaves nothing.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufWriter, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use forja_arch::ModelDescription;
use forja_arch::gguf::GgufHeader;
use forja_arch::gguf_writer::{GgufWriter, TensorOut};
use forja_models::QkRowOrder;
use forja_models::weight_source::hf_name;
use forja_quant::QuantType;

use crate::error::{Result, TrainError};
use crate::merge::MergeReport;
use crate::peft::PeftAdapter;

/// Merges `adapter` into the GGUF file `model`, writing the GGUF `out` (which must not exist).
pub fn merge_into_gguf(model: &Path, adapter: &PeftAdapter, out: &Path) -> Result<MergeReport> {
    if out.exists() {
        return Err(TrainError::Config(format!(
            "{} already exists: merge into a new file",
            out.display()
        )));
    }
    let arch_err = |e: forja_arch::ArchError| TrainError::io(model, e);
    let header = GgufHeader::read_path(model).map_err(arch_err)?;
    let desc = ModelDescription::from_path(model).map_err(arch_err)?;
    let cfg = &desc.config;
    let order = QkRowOrder::of_gguf(header.architecture().unwrap_or_default(), cfg);
    // Adapter module (HF path) → its GGUF tensor.
    let by_module: HashMap<String, usize> = header
        .tensors
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let hf = hf_name(cfg.family, &t.name)?;
            Some((hf.strip_suffix(".weight")?.to_string(), i))
        })
        .collect();
    let missing: Vec<&str> = adapter
        .modules
        .keys()
        .filter(|m| !by_module.contains_key(m.as_str()))
        .map(String::as_str)
        .collect();
    if missing.iter().any(|m| m.contains(".experts.")) {
        return Err(TrainError::Adapter {
            path: adapter.dir.clone(),
            what: format!(
                "adapts experts of mixture-of-experts layers, which {} stores stacked in one \
                 tensor per projection; forja merges those only into an HF model folder — or \
                 serve the adapter unmerged (`forja serve --adapter`)",
                model.display()
            ),
        });
    }
    if !missing.is_empty() {
        return Err(TrainError::Adapter {
            path: adapter.dir.clone(),
            what: format!(
                "adapts projections {} does not hold as weights: {} (tied embeddings cannot take \
                 an lm_head update)",
                model.display(),
                missing.join(", ")
            ),
        });
    }
    let adapted: HashMap<usize, &str> = adapter
        .modules
        .keys()
        .filter_map(|m| Some((*by_module.get(m)?, m.as_str())))
        .collect();

    let name = out
        .file_name()
        .ok_or_else(|| TrainError::Config(format!("{} is not a file path", out.display())))?;
    let partial = out.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    let result = write(model, &header, adapter, &adapted, order, &partial);
    match result.and_then(|merged| {
        std::fs::rename(&partial, out).map_err(|e| TrainError::io(out, e))?;
        Ok(merged)
    }) {
        Ok(merged) => Ok(MergeReport {
            merged,
            files: vec![out.to_path_buf()],
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

fn write(
    model: &Path,
    header: &GgufHeader,
    adapter: &PeftAdapter,
    adapted: &HashMap<usize, &str>,
    order: QkRowOrder,
    dest: &Path,
) -> Result<usize> {
    let meta: Vec<_> = header
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() != "general.alignment")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let outs: Vec<TensorOut> = header
        .tensors
        .iter()
        .map(|t| TensorOut {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ggml_type: t.ggml_type,
        })
        .collect();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|e| TrainError::io(dest, e))?;
    let arch_err = |e: forja_arch::ArchError| TrainError::io(dest, e);
    let mut w = GgufWriter::start(BufWriter::with_capacity(1 << 20, file), &meta, &outs)
        .map_err(arch_err)?;
    let mut src = std::fs::File::open(model).map_err(|e| TrainError::io(model, e))?;
    let scale = adapter.spec.scale();
    let mut done = BTreeSet::new();
    for (i, t) in header.tensors.iter().enumerate() {
        let mut bytes = vec![0u8; t.data_bytes as usize];
        src.seek(SeekFrom::Start(header.data_offset + t.offset))
            .and_then(|_| src.read_exact(&mut bytes))
            .map_err(|e| TrainError::io(model, format!("reading {}: {e}", t.name)))?;
        if let Some(module) = adapted.get(&i) {
            bytes = merged_bytes(t, &bytes, adapter, module, order, scale)?;
            done.insert(*module);
        }
        w.write_tensor(&t.name, &bytes).map_err(arch_err)?;
    }
    let file = w
        .finish()
        .map_err(arch_err)?
        .into_inner()
        .map_err(|e| TrainError::io(dest, e.into_error()))?;
    file.sync_all().map_err(|e| TrainError::io(dest, e))?;
    Ok(done.len())
}

/// The tensor `t` (its `bytes`) with module `module`'s update added, in its own type.
fn merged_bytes(
    t: &forja_arch::gguf::GgufTensorInfo,
    bytes: &[u8],
    adapter: &PeftAdapter,
    module: &str,
    order: QkRowOrder,
    scale: f64,
) -> Result<Vec<u8>> {
    let cannot = |what: String| TrainError::Adapter {
        path: adapter.dir.clone(),
        what: format!("{module} ({}, {}): {what}", t.name, t.ggml_type.name()),
    };
    let ty = QuantType::from_gguf_id(t.ggml_type.id())
        .ok_or_else(|| cannot("forja cannot quantize this type again".into()))?;
    let (a, b) = adapter
        .module(module)
        .ok_or_else(|| cannot("not in the adapter".into()))?;
    let (cols, rows) = match t.dims.as_slice() {
        [c, r] => (*c as usize, *r as usize),
        _ => return Err(cannot(format!("a {:?} tensor is not a matrix", t.dims))),
    };
    let b = order.from_hf(module, &b.to_dtype(DType::F32)?)?;
    let delta = (b.matmul(&a.to_dtype(DType::F32)?)? * scale)?; // [out, in]
    if delta.dims() != [rows, cols] {
        return Err(cannot(format!(
            "the update is {:?}, the weight {rows}×{cols}",
            delta.dims()
        )));
    }
    let values = forja_quant::dequantize(ty, bytes).map_err(|e| cannot(e.to_string()))?;
    let merged = (Tensor::from_vec(values, (rows, cols), &Device::Cpu)? + delta)?;
    let merged: Vec<f32> = merged.flatten_all()?.to_vec1()?;
    forja_quant::quantize(ty, &merged, cols).map_err(|e| cannot(e.to_string()))
}

/// Whether `path` names a GGUF file (merged into a GGUF) rather than a model folder.
pub fn is_gguf(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// `out` for a GGUF merge: a `.gguf` file name.
pub fn gguf_out(out: &Path) -> Result<PathBuf> {
    if out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        Ok(out.to_path_buf())
    } else {
        Err(TrainError::Config(format!(
            "{}: a GGUF base merges into a GGUF file: give --out NAME.gguf",
            out.display()
        )))
    }
}
