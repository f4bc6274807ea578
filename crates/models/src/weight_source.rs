//! Where weights come from: HF safetensors (memory-mapped, sharded) or a GGUF file. The decoder
//! asks for tensors by their GGUF names; each family's HF names are one table here.

use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, QMatMul, gguf_file};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use forja_arch::Family;

use crate::error::{ModelError, Result};
use crate::linear::LinearWeight;
use crate::rope::RopeStyle;

/// A provider of named weights.
pub trait WeightSource {
    /// For errors: the file(s) read.
    fn describe(&self) -> String;
    fn has(&self, gguf_name: &str) -> bool;
    /// A tensor in f32 (dequantized if stored quantized).
    fn tensor(&self, gguf_name: &str) -> Result<Tensor>;
    /// A projection weight, kept quantized when the file is.
    fn linear(&self, gguf_name: &str) -> Result<LinearWeight>;
    /// Expert `e` of a stacked expert projection (`blk.{i}.ffn_gate_exps.weight`).
    fn expert(&self, gguf_name: &str, e: usize) -> Result<LinearWeight>;
    /// The RoPE layout the stored q/k weights expect.
    fn rope_style(&self) -> RopeStyle;
    /// Whether norm weights of a (1 + w) model are stored with the 1 already added.
    fn norm_weights_include_one(&self) -> bool {
        false
    }
}

/// HF checkpoint name of a GGUF-named tensor for `family`; experts use the pseudo-name
/// `blk.{i}.ffn_gate_exps.{e}`.
pub fn hf_name(family: Family, gguf: &str) -> Option<String> {
    use Family::*;
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, name) = rest.split_once('.')?;
    let gemma_norms = matches!(family, Gemma2 | Gemma3);
    let moe = if family == Mixtral {
        "block_sparse_moe"
    } else {
        "mlp"
    };
    let mapped = match name {
        "attn_norm.weight" => "input_layernorm.weight".to_string(),
        "attn_q.weight" | "attn_q.bias" | "attn_k.weight" | "attn_k.bias" | "attn_v.weight"
        | "attn_v.bias" => {
            let (proj, kind) = name.split_once('.')?;
            format!("self_attn.{}_proj.{kind}", &proj[5..])
        }
        "attn_output.weight" => "self_attn.o_proj.weight".into(),
        "attn_output.bias" => "self_attn.o_proj.bias".into(),
        "attn_qkv.weight" => "self_attn.qkv_proj.weight".into(),
        "attn_q_norm.weight" => "self_attn.q_norm.weight".into(),
        "attn_k_norm.weight" => "self_attn.k_norm.weight".into(),
        "ffn_norm.weight" if gemma_norms => "pre_feedforward_layernorm.weight".into(),
        "ffn_norm.weight" => "post_attention_layernorm.weight".into(),
        "post_attention_norm.weight" => "post_attention_layernorm.weight".into(),
        "post_ffw_norm.weight" => "post_feedforward_layernorm.weight".into(),
        "ffn_up.weight" if family == Phi3 => "mlp.gate_up_proj.weight".into(),
        "ffn_gate.weight" => "mlp.gate_proj.weight".into(),
        "ffn_up.weight" => "mlp.up_proj.weight".into(),
        "ffn_down.weight" => "mlp.down_proj.weight".into(),
        "ffn_gate_inp.weight" => format!("{moe}.gate.weight"),
        "ffn_gate_shexp.weight" => "mlp.shared_expert.gate_proj.weight".into(),
        "ffn_up_shexp.weight" => "mlp.shared_expert.up_proj.weight".into(),
        "ffn_down_shexp.weight" => "mlp.shared_expert.down_proj.weight".into(),
        "ffn_gate_inp_shexp.weight" => "mlp.shared_expert_gate.weight".into(),
        other => {
            let (stack, e) = other.rsplit_once('.')?;
            let e: usize = e.parse().ok()?;
            let proj = match (family, stack) {
                (Mixtral, "ffn_gate_exps") => "w1",
                (Mixtral, "ffn_up_exps") => "w3",
                (Mixtral, "ffn_down_exps") => "w2",
                (_, "ffn_gate_exps") => "gate_proj",
                (_, "ffn_up_exps") => "up_proj",
                (_, "ffn_down_exps") => "down_proj",
                _ => return None,
            };
            format!("{moe}.experts.{e}.{proj}.weight")
        }
    };
    Some(format!("model.layers.{layer}.{mapped}"))
}

/// Drops this process's resident pages of a mapped file region whose values were copied out,
/// so loading a checkpoint holds its weights once, not the copy and the mapped file both. The
/// pages come back from the file if read again. Whole pages inside `bytes` only.
fn release_mapped(bytes: &[u8]) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = (bytes.as_ptr() as usize).next_multiple_of(PAGE);
        let end = (bytes.as_ptr() as usize + bytes.len()) / PAGE * PAGE;
        if end > start {
            // SAFETY: `start..end` lies inside a read-only private file mapping (a safetensors
            // file mapped by `MmapedSafetensors`, which stays mapped). MADV_DONTNEED only drops
            // the resident pages: later reads fault them in again from the file, so every
            // reference into the mapping stays valid and sees the same bytes.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}

/// A memory-mapped HF checkpoint (one or more safetensors files).
pub struct SafetensorsSource {
    files: MmapedSafetensors,
    family: Family,
    paths: Vec<PathBuf>,
    device: Device,
}

impl std::fmt::Debug for SafetensorsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsSource")
            .field("paths", &self.paths)
            .finish()
    }
}

impl SafetensorsSource {
    pub fn open(paths: &[PathBuf], family: Family, device: &Device) -> Result<Self> {
        // SAFETY: the files are mapped read-only; like every mmap-based loader, this assumes no
        // other process truncates them while the model is loaded.
        let files =
            unsafe { MmapedSafetensors::multi(paths) }.map_err(|e| ModelError::Weights {
                path: paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                what: e.to_string(),
            })?;
        Ok(SafetensorsSource {
            files,
            family,
            paths: paths.to_vec(),
            device: device.clone(),
        })
    }

    fn load(&self, gguf_name: &str) -> Result<Tensor> {
        let name = hf_name(self.family, gguf_name).ok_or_else(|| self.missing(gguf_name))?;
        let t = self
            .files
            .load(&name, &self.device)
            .map_err(|_| self.missing(&name))?;
        if let Ok(view) = self.files.get(&name) {
            release_mapped(view.data());
        }
        Ok(t)
    }

    /// A 2-D F16/BF16 weight kept in its two bytes per value on forja's CPU kernels (instead
    /// of widened to f32); `None` for other dtypes and devices.
    fn half_matrix(&self, gguf_name: &str) -> Result<Option<forja_quant::QMatrix>> {
        if !self.device.is_cpu() {
            return Ok(None);
        }
        let name = hf_name(self.family, gguf_name).ok_or_else(|| self.missing(gguf_name))?;
        let view = self.files.get(&name).map_err(|_| self.missing(&name))?;
        let ty = match view.dtype() {
            safetensors::Dtype::F16 => forja_quant::QuantType::F16,
            safetensors::Dtype::BF16 => forja_quant::QuantType::BF16,
            _ => return Ok(None),
        };
        let &[rows, cols] = view.shape() else {
            return Ok(None);
        };
        let data = view.data().to_vec();
        release_mapped(view.data());
        forja_quant::QMatrix::new(ty, rows, cols, data)
            .map(Some)
            .map_err(|e| ModelError::Weights {
                path: self.describe(),
                what: format!("{name}: {e}"),
            })
    }

    fn missing(&self, name: &str) -> ModelError {
        ModelError::MissingWeight {
            name: name.to_string(),
            source_desc: self.describe(),
        }
    }
}

impl WeightSource for SafetensorsSource {
    fn describe(&self) -> String {
        self.paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn has(&self, gguf_name: &str) -> bool {
        hf_name(self.family, gguf_name).is_some_and(|n| self.files.get(&n).is_ok())
    }

    fn tensor(&self, gguf_name: &str) -> Result<Tensor> {
        Ok(self.load(gguf_name)?.to_dtype(DType::F32)?)
    }

    fn linear(&self, gguf_name: &str) -> Result<LinearWeight> {
        if let Some(m) = self.half_matrix(gguf_name)? {
            return Ok(m.into());
        }
        Ok(LinearWeight::Dense(self.tensor(gguf_name)?))
    }

    fn expert(&self, gguf_name: &str, e: usize) -> Result<LinearWeight> {
        let stack = gguf_name.strip_suffix(".weight").unwrap_or(gguf_name);
        self.linear(&format!("{stack}.{e}"))
    }

    fn rope_style(&self) -> RopeStyle {
        RopeStyle::Neox
    }
}

/// A GGUF file; quantized tensors stay quantized for matmuls.
pub struct GgufSource {
    content: gguf_file::Content,
    path: PathBuf,
    arch: String,
    device: Device,
    /// Dequantize every weight to f32 (the reference path parity tests compare).
    dequantize: bool,
}

impl std::fmt::Debug for GgufSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufSource")
            .field("path", &self.path)
            .finish()
    }
}

impl GgufSource {
    /// Opens `path`; with `dequantize`, every weight becomes f32 instead of staying quantized.
    pub fn open(path: &Path, device: &Device, dequantize: bool) -> Result<Self> {
        let err = |what: String| ModelError::Weights {
            path: path.display().to_string(),
            what,
        };
        let mut file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| err(e.to_string()))?;
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        Ok(GgufSource {
            content,
            path: path.to_path_buf(),
            arch,
            device: device.clone(),
            dequantize,
        })
    }

    fn qtensor(&self, name: &str) -> Result<candle_core::quantized::QTensor> {
        if !self.content.tensor_infos.contains_key(name) {
            return Err(ModelError::MissingWeight {
                name: name.into(),
                source_desc: self.describe(),
            });
        }
        let mut file = std::fs::File::open(&self.path).map_err(|e| ModelError::Weights {
            path: self.describe(),
            what: e.to_string(),
        })?;
        Ok(self.content.tensor(&mut file, name, &self.device)?)
    }

    fn dtype(&self, name: &str) -> Result<GgmlDType> {
        self.content
            .tensor_infos
            .get(name)
            .map(|i| i.ggml_dtype)
            .ok_or_else(|| ModelError::MissingWeight {
                name: name.into(),
                source_desc: self.describe(),
            })
    }

    /// The stored blocks of a `[rows, cols]` matrix, or of expert `e` of a stacked
    /// `[experts, rows, cols]` tensor (experts are contiguous, so its blocks are one slice of the
    /// stack), read alone and kept in the file's type.
    fn raw_matrix(&self, name: &str, expert: Option<usize>) -> Result<RawMatrix> {
        use std::io::{Read, Seek, SeekFrom};
        let info =
            self.content
                .tensor_infos
                .get(name)
                .ok_or_else(|| ModelError::MissingWeight {
                    name: name.into(),
                    source_desc: self.describe(),
                })?;
        let bad = |what: String| ModelError::Weights {
            path: self.describe(),
            what: format!("{name}: {what}"),
        };
        let (e, rows, cols) = match (info.shape.dims(), expert) {
            (&[rows, cols], None) => (0, rows, cols),
            (&[experts, rows, cols], Some(e)) => {
                if e >= experts {
                    return Err(bad(format!("no expert {e} of {experts}")));
                }
                (e, rows, cols)
            }
            (dims, None) => return Err(bad(format!("expected [rows, cols], found {dims:?}"))),
            (dims, Some(_)) => {
                return Err(bad(format!(
                    "expected [experts, rows, cols], found {dims:?}"
                )));
            }
        };
        let dtype = info.ggml_dtype;
        let block = dtype.block_size();
        if (rows * cols) % block != 0 {
            return Err(bad(format!(
                "{rows}×{cols} is not a whole number of {block}-blocks"
            )));
        }
        let bytes = rows * cols / block * dtype.type_size();
        let start = self.content.tensor_data_offset + info.offset + (e * bytes) as u64;
        let mut file = std::fs::File::open(&self.path).map_err(|err| bad(err.to_string()))?;
        let mut data = vec![0u8; bytes];
        file.seek(SeekFrom::Start(start))
            .and_then(|_| file.read_exact(&mut data))
            .map_err(|err| bad(format!("reading {} bytes at {start}: {err}", bytes)))?;
        Ok(RawMatrix {
            dtype,
            rows,
            cols,
            data,
        })
    }

    /// Whether a projection weight stored as `dtype` is loaded as a dense f32 matrix: when asked
    /// to (training), for F32, and for F16/BF16 off the CPU (candle's matmul); F16/BF16 on the CPU
    /// keep their two bytes a value on forja's kernels, like the block types.
    fn widens(&self, dtype: GgmlDType) -> bool {
        self.dequantize
            || (dtype.block_size() == 1
                && !(self.device.is_cpu() && forja_quant_type(dtype).is_some()))
    }

    /// A quantized projection weight: on forja's CPU kernels when they cover the stored type,
    /// else on candle's. Either way the file's blocks are held once.
    fn quantized(&self, name: &str, expert: Option<usize>) -> Result<LinearWeight> {
        let raw = self.raw_matrix(name, expert)?;
        if self.device.is_cpu()
            && let Some(ty) = forja_quant_type(raw.dtype)
        {
            let m = forja_quant::QMatrix::new(ty, raw.rows, raw.cols, raw.data).map_err(|e| {
                ModelError::Weights {
                    path: self.describe(),
                    what: format!("{name}: {e}"),
                }
            })?;
            return Ok(m.into());
        }
        let q = candle_core::quantized::ggml_file::qtensor_from_ggml(
            raw.dtype,
            &raw.data,
            vec![raw.rows, raw.cols],
            &self.device,
        )?;
        Ok(QMatMul::from_qtensor(q)?.into())
    }
}

/// One matrix's blocks as stored in the file.
struct RawMatrix {
    dtype: GgmlDType,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

/// The `forja_quant` type of a GGUF type its kernels multiply; `None` for the rest.
fn forja_quant_type(dtype: GgmlDType) -> Option<forja_quant::QuantType> {
    use forja_quant::QuantType as Q;
    Some(match dtype {
        GgmlDType::Q4_0 => Q::Q4_0,
        GgmlDType::Q4_1 => Q::Q4_1,
        GgmlDType::Q5_0 => Q::Q5_0,
        GgmlDType::Q5_1 => Q::Q5_1,
        GgmlDType::Q8_0 => Q::Q8_0,
        GgmlDType::Q2K => Q::Q2K,
        GgmlDType::Q3K => Q::Q3K,
        GgmlDType::Q4K => Q::Q4K,
        GgmlDType::Q5K => Q::Q5K,
        GgmlDType::Q6K => Q::Q6K,
        GgmlDType::F16 => Q::F16,
        GgmlDType::BF16 => Q::BF16,
        _ => return None,
    })
}

impl WeightSource for GgufSource {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn has(&self, gguf_name: &str) -> bool {
        self.content.tensor_infos.contains_key(gguf_name)
    }

    fn tensor(&self, gguf_name: &str) -> Result<Tensor> {
        Ok(self
            .qtensor(gguf_name)?
            .dequantize(&self.device)?
            .to_dtype(DType::F32)?)
    }

    fn linear(&self, gguf_name: &str) -> Result<LinearWeight> {
        let dtype = self.dtype(gguf_name)?;
        if self.widens(dtype) {
            let q = self.qtensor(gguf_name)?;
            return Ok(LinearWeight::Dense(
                q.dequantize(&self.device)?.to_dtype(DType::F32)?,
            ));
        }
        self.quantized(gguf_name, None)
    }

    fn expert(&self, gguf_name: &str, e: usize) -> Result<LinearWeight> {
        let raw = self.raw_matrix(gguf_name, Some(e))?;
        if self.widens(raw.dtype) {
            let q = candle_core::quantized::ggml_file::qtensor_from_ggml(
                raw.dtype,
                &raw.data,
                vec![raw.rows, raw.cols],
                &self.device,
            )?;
            return Ok(LinearWeight::Dense(
                q.dequantize(&self.device)?.to_dtype(DType::F32)?,
            ));
        }
        self.quantized(gguf_name, Some(e))
    }

    fn norm_weights_include_one(&self) -> bool {
        // llama.cpp's converter adds 1 to Gemma's norm weights.
        true
    }

    fn rope_style(&self) -> RopeStyle {
        gguf_rope_style(&self.arch)
    }
}

/// The rotary layout of a GGUF of architecture `arch`: llama.cpp permutes the q/k rows of
/// `llama`-architecture models for the interleaved layout.
pub(crate) fn gguf_rope_style(arch: &str) -> RopeStyle {
    if arch == "llama" {
        RopeStyle::Interleaved
    } else {
        RopeStyle::Neox
    }
}
