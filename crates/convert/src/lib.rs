//! HF safetensors folders → llama.cpp-compatible GGUF files (`forja quantize`).
//!
//! The tensors are those `forja_arch::tensors::decoder_tensors` lists for the folder's
//! `config.json`, named as llama.cpp names them and read through the one HF ↔ GGUF name table
//! (`forja_models::weight_source::hf_name`); each gets the type llama.cpp's recipe gives it
//! (`forja_arch::quant_recipe::assign_types`, the table the planner prices with), in the order
//! `llama-quantize` walks them (by layer, then by name), and is quantized by `forja_quant`.
//! `llama`-architecture models get llama.cpp's Q/K row permutation (its RoPE pairs neighbouring
//! dimensions, HF's pairs halves). The file is written beside the target under a temporary
//! name and renamed into place only when complete: a failure leaves nothing behind.

pub mod error;
mod metadata;
mod safetensors;
pub mod vocab;

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use forja_arch::decoder_config::{DecoderConfig, Family, RopeScaling};
use forja_arch::gguf_writer::{GgufWriter, TensorOut};
use forja_arch::tensors::{TensorKind, TensorSpec, decoder_tensors};
use forja_arch::{GgmlType, GgufRecipe, quant_recipe};
use forja_quant::QuantType;

pub use error::{ConvertError, Result};
pub use metadata::recipe_file_type;
use safetensors::Checkpoint;

/// What [`quantize_folder`] wrote.
#[derive(Debug, Clone)]
pub struct Summary {
    pub path: PathBuf,
    pub bytes: u64,
    pub tensors: usize,
    /// Tensors per stored type, e.g. `("Q4_K", 98)`, most first.
    pub types: Vec<(&'static str, usize)>,
}

/// Progress reports: called before each tensor with its index, the count, name and type.
pub trait Progress {
    fn tensor(&mut self, index: usize, count: usize, name: &str, ty: &str);
}

impl Progress for () {
    fn tensor(&mut self, _: usize, _: usize, _: &str, _: &str) {}
}

/// The GGML type a recipe stores as a block format this crate can write.
fn quant_type(t: GgmlType) -> Option<QuantType> {
    QuantType::from_gguf_id(t.id())
}

fn check_supported(cfg: &DecoderConfig, dir: &Path) -> Result<()> {
    let fam = cfg.family;
    if !matches!(
        fam,
        Family::Llama | Family::Mistral | Family::Qwen2 | Family::Qwen3
    ) || cfg.moe.is_some()
        || cfg.mla.is_some()
        || cfg.vision.is_some()
        || cfg.fused_qkv
        || cfg.fused_gate_up
    {
        return Err(ConvertError::Unsupported(format!(
            "{}: quantizing {fam:?} models is not supported; forja quantize converts llama, \
             mistral, qwen2 and qwen3 decoders",
            dir.display()
        )));
    }
    if !matches!(
        cfg.rope_scaling,
        RopeScaling::None | RopeScaling::Linear { .. }
    ) {
        return Err(ConvertError::Unsupported(format!(
            "{}: rope_scaling {:?} is not supported by forja quantize (none or linear is)",
            dir.display(),
            cfg.rope_scaling
        )));
    }
    Ok(())
}

/// llama-quantize's order: tensors outside the layers first, then layer by layer, by name
/// within each.
fn llama_cpp_order(tensors: &mut [TensorSpec]) {
    tensors.sort_by(|a, b| {
        let layer = |t: &TensorSpec| t.layer.map_or(-1, |l| l as i64);
        layer(a).cmp(&layer(b)).then_with(|| a.name.cmp(&b.name))
    });
}

/// Reorders the rows of a Q or K projection (or bias) of `heads` heads from HF's RoPE layout
/// (rotation pairs `i` and `i + d/2`) to llama.cpp's (pairs `2i` and `2i + 1`).
fn permute_rows(values: &[f32], rows: usize, heads: usize) -> Vec<f32> {
    let cols = values.len() / rows;
    let half = rows / heads / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = h * 2 * half + j * half + i;
                let dst = h * 2 * half + i * 2 + j;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// Removes the temporary file unless the write completed.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Reads the folder's `config.json` into the normalized description.
pub fn read_config(dir: &Path) -> Result<DecoderConfig> {
    let path = dir.join("config.json");
    if !dir.is_dir() {
        return Err(error::input(
            dir,
            "not a folder (expected an HF model folder)",
        ));
    }
    if !path.is_file() {
        return Err(error::input(dir, "no config.json in this folder"));
    }
    let text = std::fs::read_to_string(&path).map_err(|source| ConvertError::Read {
        path: path.clone(),
        source,
    })?;
    forja_arch::hf_config::parse_hf_config(&text, &path.display().to_string())
        .map_err(|e| ConvertError::Arch(e.at_path(&path)))
}

/// Converts the HF folder `dir` to a GGUF of `recipe` at `out`. `out` must not exist.
pub fn quantize_folder(
    dir: &Path,
    recipe: GgufRecipe,
    out: &Path,
    progress: &mut dyn Progress,
) -> Result<Summary> {
    let cfg = read_config(dir)?;
    check_supported(&cfg, dir)?;
    let ckpt = Checkpoint::open(dir)?;
    let mut specs = decoder_tensors(&cfg);
    llama_cpp_order(&mut specs);
    let types = quant_recipe::assign_types(recipe, &cfg, &specs);
    let mut outs = Vec::with_capacity(specs.len());
    let mut hf_names = Vec::with_capacity(specs.len());
    for (spec, &ty) in specs.iter().zip(&types) {
        let hf = forja_models::weight_source::hf_name(cfg.family, &spec.name).ok_or_else(|| {
            ConvertError::Unsupported(format!("no HF name for GGUF tensor {:?}", spec.name))
        })?;
        let info = ckpt.info(&hf).ok_or_else(|| {
            error::input(
                dir,
                format!(
                    "tensor {hf:?} (GGUF {:?}) is missing from the safetensors files",
                    spec.name
                ),
            )
        })?;
        if info.shape != spec.shape {
            return Err(error::input(
                dir,
                format!(
                    "tensor {hf:?} has shape {:?}, but config.json implies {:?}",
                    info.shape, spec.shape
                ),
            ));
        }
        if !matches!(info.dtype.as_str(), "F32" | "F16" | "BF16") {
            return Err(error::input(
                dir,
                format!(
                    "tensor {hf:?} is {}; only F32, F16 and BF16 weights can be quantized",
                    info.dtype
                ),
            ));
        }
        if quant_type(ty).is_none() {
            return Err(ConvertError::Unsupported(format!(
                "the {recipe:?} recipe stores {} as {}, which forja cannot write",
                spec.name,
                ty.name()
            )));
        }
        let mut dims = spec.shape.clone();
        dims.reverse();
        outs.push(TensorOut {
            name: spec.name.clone(),
            dims,
            ggml_type: ty,
        });
        hf_names.push(hf);
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let mut meta = metadata::model_metadata(&cfg, recipe, &name);
    meta.extend(vocab::tokenizer_metadata(dir, cfg.vocab_size)?);

    if out.exists() {
        return Err(error::input(out, "already exists; not overwritten"));
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = out
        .file_name()
        .ok_or_else(|| error::input(out, "is not a file path"))?
        .to_string_lossy()
        .into_owned();
    let tmp = TempFile {
        path: parent.join(format!(".{file_name}.partial-{}", std::process::id())),
        keep: false,
    };
    let write_err = |source| ConvertError::Write {
        path: tmp.path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp.path)
        .map_err(write_err)?;
    let arch_write = |e: forja_arch::ArchError| error::input(out, format!("{e}"));
    let mut w = GgufWriter::start(BufWriter::with_capacity(1 << 20, file), &meta, &outs)
        .map_err(arch_write)?;
    let heads = cfg.num_heads as usize;
    let kv_heads = cfg.num_kv_heads as usize;
    let permute = cfg.family.gguf_arch() == "llama";
    for (i, ((spec, t), hf)) in specs.iter().zip(&outs).zip(&hf_names).enumerate() {
        progress.tensor(i, outs.len(), &t.name, t.ggml_type.name());
        let mut values = ckpt.read_f32(hf)?;
        let rows = spec.shape.first().copied().unwrap_or(1) as usize;
        if permute && spec.name.contains(".attn_q.") {
            values = permute_rows(&values, rows, heads);
        } else if permute && spec.name.contains(".attn_k.") {
            values = permute_rows(&values, rows, kv_heads);
        }
        let row_len = if spec.kind == TensorKind::Vector {
            values.len()
        } else {
            spec.row_len() as usize
        };
        let qt = quant_type(t.ggml_type).ok_or_else(|| {
            ConvertError::Unsupported(format!("cannot write {}", t.ggml_type.name()))
        })?;
        let bytes =
            forja_quant::quantize(qt, &values, row_len).map_err(|e| ConvertError::Tensor {
                tensor: hf.clone(),
                what: e.to_string(),
            })?;
        w.write_tensor(&t.name, &bytes).map_err(arch_write)?;
    }
    let file = w
        .finish()
        .map_err(arch_write)?
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    file.sync_all().map_err(write_err)?;
    drop(file);
    let bytes = std::fs::metadata(&tmp.path).map_err(write_err)?.len();
    // Never replace a file that appeared meanwhile.
    if out.exists() {
        return Err(error::input(
            out,
            "appeared while quantizing; not overwritten",
        ));
    }
    std::fs::rename(&tmp.path, out).map_err(|source| ConvertError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let mut tmp = tmp;
    tmp.keep = true;
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for t in &outs {
        match counts.iter_mut().find(|(n, _)| *n == t.ggml_type.name()) {
            Some((_, c)) => *c += 1,
            None => counts.push((t.ggml_type.name(), 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    Ok(Summary {
        path: out.to_path_buf(),
        bytes,
        tensors: outs.len(),
        types: counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_interleaves_the_halves_of_each_head() {
        // 2 heads of 4 rows, 1 column: HF rows [a0 a1 b0 b1] per head → [a0 b0 a1 b1].
        let v: Vec<f32> = (0..8).map(|i| i as f32).collect();
        assert_eq!(
            permute_rows(&v, 8, 2),
            vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]
        );
    }
}
