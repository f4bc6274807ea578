//! safetensors header reader: tensor names, dtypes and shapes, never the data.
//!
//! Format: an 8-byte little-endian header length, then a JSON object
//! `{name: {dtype, shape, data_offsets}, "__metadata__": {...}}`.

use std::io::Read;
use std::path::Path;

use crate::error::ArchError;

/// Largest header accepted (real headers are well under 1 MiB).
const MAX_HEADER_BYTES: u64 = 100 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct SafetensorsTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub data_bytes: u64,
    /// Where the data starts in the file (bytes from its beginning).
    pub data_start: u64,
}

#[derive(Debug, Clone)]
pub struct SafetensorsHeader {
    pub tensors: Vec<SafetensorsTensor>,
    pub file_bytes: u64,
}

/// Bytes per element of a safetensors dtype.
pub fn dtype_bytes(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
        _ => return None,
    })
}

impl SafetensorsHeader {
    pub fn read_path(path: &Path) -> Result<Self, ArchError> {
        let io = |source| ArchError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bad = |what: String| ArchError::Safetensors {
            path: path.to_path_buf(),
            what,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let file_bytes = file.metadata().map_err(io)?.len();
        let mut len_buf = [0u8; 8];
        file.read_exact(&mut len_buf).map_err(|_| {
            bad(format!(
                "file has {file_bytes} bytes, too short for a header"
            ))
        })?;
        let n = u64::from_le_bytes(len_buf);
        if n > MAX_HEADER_BYTES || n > file_bytes.saturating_sub(8) {
            return Err(bad(format!(
                "header length {n} does not fit the {file_bytes}-byte file"
            )));
        }
        let mut json = vec![0u8; n as usize];
        file.read_exact(&mut json).map_err(io)?;
        let value: serde_json::Value = serde_json::from_slice(&json)
            .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| bad("header is not a JSON object".into()))?;
        let data_len = file_bytes - 8 - n;
        let mut tensors = Vec::with_capacity(obj.len());
        for (name, info) in obj {
            if name == "__metadata__" {
                continue;
            }
            let dtype = info
                .get("dtype")
                .and_then(|d| d.as_str())
                .ok_or_else(|| bad(format!("tensor {name:?} has no dtype")))?;
            let elem = dtype_bytes(dtype)
                .ok_or_else(|| bad(format!("tensor {name:?} has unknown dtype {dtype:?}")))?;
            let shape: Vec<u64> = info
                .get("shape")
                .and_then(|s| s.as_array())
                .ok_or_else(|| bad(format!("tensor {name:?} has no shape")))?
                .iter()
                .map(|d| {
                    d.as_u64()
                        .ok_or_else(|| bad(format!("tensor {name:?} has a non-integer dimension")))
                })
                .collect::<Result<_, _>>()?;
            let offsets: Vec<u64> = info
                .get("data_offsets")
                .and_then(|s| s.as_array())
                .map(|a| a.iter().filter_map(|d| d.as_u64()).collect())
                .unwrap_or_default();
            let [start, end] = offsets[..] else {
                return Err(bad(format!("tensor {name:?} has malformed data_offsets")));
            };
            let n_elems = shape
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .ok_or_else(|| bad(format!("tensor {name:?} shape overflows")))?;
            let data_bytes = n_elems
                .checked_mul(elem)
                .ok_or_else(|| bad(format!("tensor {name:?} size overflows")))?;
            if end < start || end - start != data_bytes || end > data_len {
                return Err(bad(format!(
                    "tensor {name:?}: data_offsets [{start}, {end}] disagree with its shape or the file size (truncated?)"
                )));
            }
            tensors.push(SafetensorsTensor {
                name: name.clone(),
                dtype: dtype.to_string(),
                shape,
                data_bytes,
                data_start: 8 + n + start,
            });
        }
        Ok(SafetensorsHeader {
            tensors,
            file_bytes,
        })
    }
}
