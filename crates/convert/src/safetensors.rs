//! The tensors of an HF folder: one or more safetensors files (`model.safetensors`, or the
//! shards `model.safetensors.index.json` names), read one tensor at a time as f32.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use forja_arch::safetensors_header::{SafetensorsHeader, SafetensorsTensor};

use crate::error::{ConvertError, Result, input};

/// Every tensor of the folder by name, with the file it is in.
pub struct Checkpoint {
    tensors: BTreeMap<String, (PathBuf, SafetensorsTensor)>,
}

impl Checkpoint {
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|source| ConvertError::Read {
                path: index.clone(),
                source,
            })?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| input(&index, format!("not valid JSON: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| input(&index, "no \"weight_map\" object"))?;
            let mut names: Vec<&str> = map.values().filter_map(|f| f.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            names.into_iter().map(|f| dir.join(f)).collect()
        } else {
            let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|source| ConvertError::Read {
                    path: dir.to_path_buf(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                .collect();
            found.sort();
            found
        };
        if files.is_empty() {
            return Err(input(dir, "no *.safetensors weights in this folder"));
        }
        let mut tensors = BTreeMap::new();
        for f in files {
            let header = SafetensorsHeader::read_path(&f)?;
            for t in header.tensors {
                if let Some((other, _)) = tensors.get(&t.name) {
                    let other: &PathBuf = other;
                    return Err(input(
                        &f,
                        format!("tensor {:?} is also in {}", t.name, other.display()),
                    ));
                }
                tensors.insert(t.name.clone(), (f.clone(), t));
            }
        }
        Ok(Checkpoint { tensors })
    }

    /// Shape and dtype of `name`, if present.
    pub fn info(&self, name: &str) -> Option<&SafetensorsTensor> {
        self.tensors.get(name).map(|(_, t)| t)
    }

    /// The values of `name` as f32 (F32, F16 and BF16 are exact in f32).
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let (path, t) = self.tensors.get(name).ok_or_else(|| ConvertError::Tensor {
            tensor: name.to_string(),
            what: "missing from the safetensors files".into(),
        })?;
        let decode: fn(&[u8]) -> f32 = match t.dtype.as_str() {
            "F32" => |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            "F16" => |b| half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            "BF16" => |b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            other => {
                return Err(input(
                    path,
                    format!(
                        "tensor {name:?} is {other}; only F32, F16 and BF16 weights can be quantized"
                    ),
                ));
            }
        };
        let read_err = |source| ConvertError::Read {
            path: path.clone(),
            source,
        };
        let mut f = std::fs::File::open(path).map_err(read_err)?;
        f.seek(SeekFrom::Start(t.data_start)).map_err(read_err)?;
        let mut bytes = vec![0u8; t.data_bytes as usize];
        f.read_exact(&mut bytes).map_err(read_err)?;
        let width = if t.dtype == "F32" { 4 } else { 2 };
        Ok(bytes.chunks_exact(width).map(decode).collect())
    }
}
