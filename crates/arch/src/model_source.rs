//! A model as the planner and engine see it: its decoder config, its tensor inventory and, when
//! it came from files, what those files actually store.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::decoder_config::DecoderConfig;
use crate::error::ArchError;
use crate::ggml_type::GgmlType;
use crate::gguf::GgufHeader;
use crate::gguf_config::from_gguf;
use crate::hf_config::from_hf_value;
use crate::safetensors_header::SafetensorsHeader;
use crate::tensors::{TensorSpec, decoder_tensors, gguf_tensors};
use crate::tokenizer::TokenizerShape;
use crate::weight_format::WeightFormat;
use crate::weights::{WeightBytes, price_stored, price_weights};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Container {
    Gguf,
    Safetensors,
}

/// What model files on disk hold.
#[derive(Debug, Clone, Serialize)]
pub struct StoredWeights {
    pub container: Container,
    /// Human name of the stored format (`q4_k_m`, `bf16`, `awq`, …).
    pub format_label: String,
    /// The equivalent requestable format, when there is one.
    pub format: Option<WeightFormat>,
    /// Parameters counted from the stored tensors (GGUF) or the config (safetensors).
    pub params: u64,
    /// Bytes of tensor data in the files.
    pub tensor_bytes: u64,
    /// Bytes of the files on disk.
    pub file_bytes: u64,
    pub files: Vec<PathBuf>,
}

/// A model ready for byte math.
#[derive(Debug, Clone)]
pub struct ModelDescription {
    /// Where it came from: a path or a catalog name.
    pub origin: String,
    pub config: DecoderConfig,
    pub tensors: Vec<TensorSpec>,
    pub stored: Option<StoredWeights>,
    /// GGML type of each tensor, for GGUF files.
    pub stored_types: Option<Vec<GgmlType>>,
    /// The vocabulary: counted from a GGUF file, estimated from the vocabulary size otherwise.
    pub tokenizer: TokenizerShape,
}

impl ModelDescription {
    /// From a parsed `config.json` (a catalog entry or a file).
    pub fn from_config_value(value: &serde_json::Value, origin: &str) -> Result<Self, ArchError> {
        let config = from_hf_value(value, origin)?;
        let tensors = decoder_tensors(&config);
        Ok(ModelDescription {
            origin: origin.to_string(),
            tokenizer: TokenizerShape::estimated(config.vocab_size),
            config,
            tensors,
            stored: None,
            stored_types: None,
        })
    }

    /// From a `config.json` file, an HF model folder, or a GGUF file (header only).
    pub fn from_path(path: &Path) -> Result<Self, ArchError> {
        let meta = std::fs::metadata(path).map_err(|source| ArchError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if meta.is_dir() {
            return Self::from_dir(path);
        }
        let mut magic = [0u8; 4];
        {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|source| ArchError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let _ = f.read(&mut magic).map_err(|source| ArchError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        }
        if &magic == b"GGUF" {
            return Self::from_gguf_path(path);
        }
        if path.extension().is_some_and(|e| e == "gguf") {
            return Err(ArchError::Gguf {
                path: Some(path.to_path_buf()),
                offset: 0,
                what: format!("not a GGUF file (magic {magic:02x?}, expected \"GGUF\")"),
            });
        }
        Self::from_config_file(path)
    }

    fn from_config_file(path: &Path) -> Result<Self, ArchError> {
        let text = std::fs::read_to_string(path).map_err(|source| ArchError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ArchError::Config {
                path: Some(path.to_path_buf()),
                what: format!("not valid JSON: {e}"),
            })?;
        let origin = path.display().to_string();
        Self::from_config_value(&value, &origin).map_err(|e| e.at_path(path))
    }

    fn from_gguf_path(path: &Path) -> Result<Self, ArchError> {
        let header = GgufHeader::read_path(path)?;
        Self::from_gguf_header(
            &header,
            &path.display().to_string(),
            vec![path.to_path_buf()],
        )
        .map_err(|e| e.at_path(path))
    }

    /// From a GGUF header read elsewhere (e.g. the first bytes of a file on a hub); `files` are
    /// where its weights are, if anywhere yet.
    pub fn from_gguf_header(
        header: &GgufHeader,
        origin: &str,
        files: Vec<PathBuf>,
    ) -> Result<Self, ArchError> {
        let config = from_gguf(header)?;
        let tensors = gguf_tensors(header);
        let types: Vec<GgmlType> = header.tensors.iter().map(|t| t.ggml_type).collect();
        let (format_label, format) = gguf_file_type(header);
        let stored = StoredWeights {
            container: Container::Gguf,
            format_label,
            format,
            params: header.n_params(),
            tensor_bytes: header.tensor_bytes(),
            file_bytes: header.file_bytes,
            files,
        };
        Ok(ModelDescription {
            origin: origin.to_string(),
            tokenizer: TokenizerShape::from_gguf(header)
                .unwrap_or_else(|| TokenizerShape::estimated(config.vocab_size)),
            config,
            tensors,
            stored: Some(stored),
            stored_types: Some(types),
        })
    }

    fn from_dir(dir: &Path) -> Result<Self, ArchError> {
        let entries = std::fs::read_dir(dir).map_err(|source| ArchError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            let ggufs: Vec<&PathBuf> = files
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
                .collect();
            return match ggufs.as_slice() {
                [one] => Self::from_gguf_path(one),
                [] => Err(ArchError::Config {
                    path: Some(dir.to_path_buf()),
                    what: "folder has neither config.json nor a .gguf file".into(),
                }),
                many => Err(ArchError::Config {
                    path: Some(dir.to_path_buf()),
                    what: format!(
                        "folder has {} .gguf files and no config.json: name the file to use",
                        many.len()
                    ),
                }),
            };
        }
        let mut model = Self::from_config_file(&config_path)?;
        model.origin = dir.display().to_string();
        let shards = weight_files(dir, files)?;
        if shards.is_empty() {
            return Ok(model);
        }
        let mut tensor_bytes = 0;
        let mut file_bytes = 0;
        let mut dtype_bytes: std::collections::BTreeMap<String, u64> = Default::default();
        for shard in &shards {
            let h = SafetensorsHeader::read_path(shard)?;
            file_bytes += h.file_bytes;
            for t in h.tensors {
                tensor_bytes += t.data_bytes;
                *dtype_bytes.entry(t.dtype).or_default() += t.data_bytes;
            }
        }
        let config_text = std::fs::read_to_string(&config_path).unwrap_or_default();
        let quant_method = serde_json::from_str::<serde_json::Value>(&config_text)
            .ok()
            .and_then(|v| {
                v.get("quantization_config")?
                    .get("quant_method")?
                    .as_str()
                    .map(str::to_string)
            });
        let (format_label, format) = match quant_method.as_deref() {
            Some("awq") => ("awq".to_string(), Some(WeightFormat::Awq)),
            Some("gptq") => ("gptq".to_string(), Some(WeightFormat::Gptq)),
            Some("fp8") | Some("compressed-tensors") => {
                ("fp8".to_string(), Some(WeightFormat::Fp8))
            }
            Some(other) => (other.to_string(), None),
            None => {
                let dominant = dtype_bytes
                    .iter()
                    .max_by_key(|(_, b)| **b)
                    .map(|(d, _)| d.as_str())
                    .unwrap_or("");
                match dominant {
                    "BF16" => ("bf16".to_string(), Some(WeightFormat::Bf16)),
                    "F16" => ("f16".to_string(), Some(WeightFormat::F16)),
                    "F32" => ("f32".to_string(), Some(WeightFormat::F32)),
                    other => (other.to_ascii_lowercase(), None),
                }
            }
        };
        model.stored = Some(StoredWeights {
            container: Container::Safetensors,
            format_label,
            format,
            params: price_weights(&model.config, &model.tensors, WeightFormat::Bf16).params,
            tensor_bytes,
            file_bytes,
            files: shards,
        });
        Ok(model)
    }

    /// Weights priced in `format`, or as stored when `format` is `None` (falls back to bf16 for a
    /// model without files).
    pub fn weights(&self, format: Option<WeightFormat>) -> WeightBytes {
        match (format, &self.stored_types) {
            (None, Some(types)) => price_stored(&self.config, &self.tensors, types),
            (None, None) => {
                let f = self
                    .stored
                    .as_ref()
                    .and_then(|s| s.format)
                    .unwrap_or(WeightFormat::Bf16);
                let mut w = price_weights(&self.config, &self.tensors, f);
                if let Some(s) = &self.stored {
                    w.total_bytes = s.tensor_bytes;
                }
                w
            }
            (Some(f), _) => price_weights(&self.config, &self.tensors, f),
        }
    }

    /// The format the files store, if any.
    pub fn stored_format(&self) -> Option<WeightFormat> {
        self.stored.as_ref().and_then(|s| s.format)
    }
}

/// The safetensors files that hold the model: the shards named by
/// `model.safetensors.index.json` when there is one; otherwise every `.safetensors` file, except
/// that Mistral-style `consolidated*.safetensors` duplicates are skipped when HF shards exist.
fn weight_files(dir: &Path, files: Vec<PathBuf>) -> Result<Vec<PathBuf>, ArchError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|source| ArchError::Io {
            path: index.clone(),
            source,
        })?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ArchError::Safetensors {
                path: index.clone(),
                what: format!("not valid JSON: {e}"),
            })?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ArchError::Safetensors {
                path: index.clone(),
                what: "has no weight_map".into(),
            })?;
        let mut names: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        return names
            .into_iter()
            .map(|n| {
                let p = dir.join(n);
                if n.contains('/') || n.contains("..") || !p.is_file() {
                    Err(ArchError::Safetensors {
                        path: index.clone(),
                        what: format!("names a missing shard {n:?}"),
                    })
                } else {
                    Ok(p)
                }
            })
            .collect();
    }
    let all: Vec<PathBuf> = files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    let is_consolidated = |p: &PathBuf| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("consolidated"))
    };
    if all.iter().any(|p| !is_consolidated(p)) {
        Ok(all.into_iter().filter(|p| !is_consolidated(p)).collect())
    } else {
        Ok(all)
    }
}

/// `general.file_type` (llama.cpp's `llama_ftype`) as a label and, where forja offers it, a format.
fn gguf_file_type(h: &GgufHeader) -> (String, Option<WeightFormat>) {
    let id = h.get("general.file_type").and_then(|v| v.as_u64());
    let label = match id {
        Some(0) => "f32",
        Some(1) => "f16",
        Some(2) => "q4_0",
        Some(3) => "q4_1",
        Some(7) => "q8_0",
        Some(8) => "q5_0",
        Some(9) => "q5_1",
        Some(10) => "q2_k",
        Some(11) => "q3_k_s",
        Some(12) => "q3_k_m",
        Some(13) => "q3_k_l",
        Some(14) => "q4_k_s",
        Some(15) => "q4_k_m",
        Some(16) => "q5_k_s",
        Some(17) => "q5_k_m",
        Some(18) => "q6_k",
        Some(19) => "iq2_xxs",
        Some(20) => "iq2_xs",
        Some(21) => "q2_k_s",
        Some(22) => "iq3_xs",
        Some(23) => "iq3_xxs",
        Some(24) => "iq1_s",
        Some(25) => "iq4_nl",
        Some(26) => "iq3_s",
        Some(27) => "iq3_m",
        Some(28) => "iq2_s",
        Some(29) => "iq2_m",
        Some(30) => "iq4_xs",
        Some(31) => "iq1_m",
        Some(32) => "bf16",
        Some(36) => "tq1_0",
        Some(37) => "tq2_0",
        Some(38) => "mxfp4_moe",
        _ => "unknown",
    };
    let format = WeightFormat::parse(label).ok();
    (label.to_string(), format)
}
