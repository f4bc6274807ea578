//! GGUF header reader: metadata key/values and tensor infos, never the tensor data.
//!
//! Format: ggml `docs/gguf.md` (versions 2 and 3, little-endian). Every length read from the file is
//! checked against the bytes that remain before anything is allocated, so a corrupt or hostile
//! header yields an error, not an allocation failure or a panic.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::error::ArchError;
use crate::ggml_type::GgmlType;

/// Arrays longer than this keep only their length and element type (e.g. a 262k-entry vocabulary).
pub const KEEP_ARRAY_LIMIT: u64 = 4096;
/// Largest string accepted in a header (a chat template or a merges entry is far smaller).
const MAX_STRING_BYTES: u64 = 64 << 20;
/// Largest tensor rank ggml supports (`GGML_MAX_DIMS`).
const MAX_DIMS: u32 = 4;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    /// `values` is empty when `len` exceeds [`KEEP_ARRAY_LIMIT`].
    Array {
        elem_type: u32,
        len: u64,
        values: Vec<GgufValue>,
    },
}

impl GgufValue {
    /// Integer view of any integer-typed value (negative values are rejected).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Float view of any numeric value.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }
}

/// One tensor as the header describes it. `dims` are in ggml order: `dims[0]` is the row length.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset from the start of the data section, in bytes.
    pub offset: u64,
    /// Exact bytes of the tensor data.
    pub data_bytes: u64,
}

impl GgufTensorInfo {
    pub fn n_elems(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// Everything in a GGUF file before the tensor data.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    /// Bytes each array value's elements take in the file, by key (a string array: 8 a string
    /// plus its text), kept also where the elements are not.
    pub array_bytes: BTreeMap<String, u64>,
    pub tensors: Vec<GgufTensorInfo>,
    pub alignment: u64,
    /// Absolute file offset where tensor data starts.
    pub data_offset: u64,
    /// Size of the file the header was read from.
    pub file_bytes: u64,
}

impl GgufHeader {
    /// Reads the header of the GGUF file at `path`.
    pub fn read_path(path: &Path) -> Result<Self, ArchError> {
        let file = std::fs::File::open(path).map_err(|source| ArchError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let file_bytes = file
            .metadata()
            .map_err(|source| ArchError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let reader = std::io::BufReader::with_capacity(1 << 16, file);
        Self::read(reader, file_bytes).map_err(|e| e.at_path(path))
    }

    /// Reads a header from `reader`, which holds `file_bytes` bytes in all.
    pub fn read<R: Read>(reader: R, file_bytes: u64) -> Result<Self, ArchError> {
        let mut r = HeaderReader {
            inner: reader,
            pos: 0,
            len: file_bytes,
        };
        let magic = r.bytes4()?;
        if &magic != b"GGUF" {
            return Err(r.err(
                0,
                format!("not a GGUF file (magic {magic:02x?}, expected \"GGUF\")"),
            ));
        }
        let version = r.u32()?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(r.err(
                    4,
                    "GGUF version 1 is not supported (re-convert the model)".into(),
                ));
            }
            v if v.swap_bytes() <= 3 => {
                return Err(r.err(4, "big-endian GGUF files are not supported".into()));
            }
            v => return Err(r.err(4, format!("unknown GGUF version {v}"))),
        }
        let n_tensors = r.u64()?;
        let n_kv = r.u64()?;
        // Each KV needs at least 8 (key len) + 4 (type) + 1 bytes; each tensor at least 8+4+8+4+8.
        if n_kv > r.remaining() / 13 || n_tensors > r.remaining() / 32 {
            return Err(r.err(8, format!(
                "header claims {n_tensors} tensors and {n_kv} metadata entries, more than the file can hold"
            )));
        }
        let mut metadata = BTreeMap::new();
        let mut array_bytes = BTreeMap::new();
        for _ in 0..n_kv {
            let at = r.pos;
            let key = r.string()?;
            let value_type = r.u32()?;
            let start = r.pos;
            let value = r.value(value_type, 0)?;
            if value_type == GGUF_TYPE_ARRAY {
                // After the element type (4 bytes) and the length (8).
                array_bytes.insert(key.clone(), (r.pos - start).saturating_sub(12));
            }
            if metadata.insert(key.clone(), value).is_some() {
                return Err(r.err(at, format!("duplicate metadata key {key:?}")));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => return Err(r.err(r.pos, format!("invalid general.alignment {v:?}"))),
            },
        };
        let mut tensors = Vec::with_capacity(n_tensors.min(1 << 16) as usize);
        for _ in 0..n_tensors {
            let at = r.pos;
            let name = r.string()?;
            let n_dims = r.u32()?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(r.err(
                    at,
                    format!("tensor {name:?} has {n_dims} dimensions (1..=4 allowed)"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64()?);
            }
            let type_id = r.u32()?;
            let offset = r.u64()?;
            let Some(ggml_type) = GgmlType::from_id(type_id) else {
                return Err(r.err(
                    at,
                    format!("tensor {name:?} has unknown ggml type id {type_id}"),
                ));
            };
            let n_elems = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| r.err(at, format!("tensor {name:?} shape {dims:?} overflows")))?;
            if dims[0] % ggml_type.block().0 != 0 {
                return Err(r.err(
                    at,
                    format!(
                        "tensor {name:?}: row length {} is not a multiple of the {} block size {}",
                        dims[0],
                        ggml_type,
                        ggml_type.block().0
                    ),
                ));
            }
            let data_bytes = ggml_type
                .bytes_for(n_elems)
                .ok_or_else(|| r.err(at, format!("tensor {name:?} size overflows")))?;
            if offset % alignment != 0 {
                return Err(r.err(
                    at,
                    format!("tensor {name:?} data offset {offset} is not aligned to {alignment}"),
                ));
            }
            tensors.push(GgufTensorInfo {
                name,
                dims,
                ggml_type,
                offset,
                data_bytes,
            });
        }
        let data_offset = r.pos.div_ceil(alignment) * alignment;
        let data_bytes = file_bytes.saturating_sub(data_offset);
        let mut by_offset: Vec<&GgufTensorInfo> = tensors.iter().collect();
        by_offset.sort_by_key(|t| t.offset);
        let mut end = 0u64;
        for t in by_offset {
            if t.offset < end {
                return Err(r.err(
                    r.pos,
                    format!("tensor {:?} overlaps the previous tensor", t.name),
                ));
            }
            end = t.offset.saturating_add(t.data_bytes);
            if end > data_bytes {
                return Err(r.err(r.pos, format!(
                    "tensor {:?} ends at byte {} of the data section, but the file has only {} (truncated file?)",
                    t.name,
                    end,
                    data_bytes
                )));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for t in &tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(r.err(r.pos, format!("duplicate tensor name {:?}", t.name)));
            }
        }
        Ok(GgufHeader {
            version,
            metadata,
            array_bytes,
            tensors,
            alignment,
            data_offset,
            file_bytes,
        })
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// `general.architecture`, e.g. `llama`, `qwen2`, `gemma3`.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(GgufValue::as_str)
    }

    /// Total number of weights in all tensors.
    pub fn n_params(&self) -> u64 {
        self.tensors.iter().map(GgufTensorInfo::n_elems).sum()
    }

    /// Total bytes of tensor data (without header and padding).
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.data_bytes).sum()
    }
}

pub(crate) const GGUF_TYPE_UINT8: u32 = 0;
pub(crate) const GGUF_TYPE_INT8: u32 = 1;
pub(crate) const GGUF_TYPE_UINT16: u32 = 2;
pub(crate) const GGUF_TYPE_INT16: u32 = 3;
pub(crate) const GGUF_TYPE_UINT32: u32 = 4;
pub(crate) const GGUF_TYPE_INT32: u32 = 5;
pub(crate) const GGUF_TYPE_FLOAT32: u32 = 6;
pub(crate) const GGUF_TYPE_BOOL: u32 = 7;
pub(crate) const GGUF_TYPE_STRING: u32 = 8;
pub(crate) const GGUF_TYPE_ARRAY: u32 = 9;
pub(crate) const GGUF_TYPE_UINT64: u32 = 10;
pub(crate) const GGUF_TYPE_INT64: u32 = 11;
pub(crate) const GGUF_TYPE_FLOAT64: u32 = 12;

struct HeaderReader<R> {
    inner: R,
    pos: u64,
    len: u64,
}

impl<R: Read> HeaderReader<R> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn err(&self, offset: u64, what: String) -> ArchError {
        ArchError::Gguf {
            path: None,
            offset,
            what,
        }
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), ArchError> {
        let at = self.pos;
        if (buf.len() as u64) > self.remaining() {
            return Err(self.err(
                at,
                format!(
                    "file ends after {} bytes while reading the header (truncated file?)",
                    self.len
                ),
            ));
        }
        self.inner
            .read_exact(buf)
            .map_err(|e| self.err(at, format!("read failed: {e}")))?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn bytes4(&mut self) -> Result<[u8; 4], ArchError> {
        let mut b = [0u8; 4];
        self.fill(&mut b)?;
        Ok(b)
    }

    fn u8(&mut self) -> Result<u8, ArchError> {
        let mut b = [0u8; 1];
        self.fill(&mut b)?;
        Ok(b[0])
    }

    fn u16(&mut self) -> Result<u16, ArchError> {
        let mut b = [0u8; 2];
        self.fill(&mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    fn u32(&mut self) -> Result<u32, ArchError> {
        Ok(u32::from_le_bytes(self.bytes4()?))
    }

    fn u64(&mut self) -> Result<u64, ArchError> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn checked_len(&self, at: u64, len: u64, elem_bytes: u64, what: &str) -> Result<(), ArchError> {
        if len.saturating_mul(elem_bytes) > self.remaining() {
            return Err(self.err(
                at,
                format!(
                    "{what} of length {len} does not fit in the {} bytes left in the file",
                    self.remaining()
                ),
            ));
        }
        Ok(())
    }

    fn string(&mut self) -> Result<String, ArchError> {
        let at = self.pos;
        let len = self.u64()?;
        self.checked_len(at, len, 1, "string")?;
        if len > MAX_STRING_BYTES {
            return Err(self.err(
                at,
                format!("string of {len} bytes is too long for a header"),
            ));
        }
        let mut buf = vec![0u8; len as usize];
        self.fill(&mut buf)?;
        String::from_utf8(buf).map_err(|_| self.err(at, "string is not valid UTF-8".into()))
    }

    fn skip_string(&mut self) -> Result<(), ArchError> {
        let at = self.pos;
        let len = self.u64()?;
        self.checked_len(at, len, 1, "string")?;
        self.skip(at, len)
    }

    /// Advances `len` bytes (already checked against the file length). Reads through the buffer
    /// instead of seeking, since seeking a buffered reader throws its buffer away.
    fn skip(&mut self, at: u64, len: u64) -> Result<(), ArchError> {
        let copied = std::io::copy(&mut (&mut self.inner).take(len), &mut std::io::sink())
            .map_err(|e| self.err(at, format!("read failed: {e}")))?;
        if copied != len {
            return Err(self.err(at, "file ends inside the header (truncated file?)".into()));
        }
        self.pos += len;
        Ok(())
    }

    fn value(&mut self, value_type: u32, depth: u32) -> Result<GgufValue, ArchError> {
        let at = self.pos;
        Ok(match value_type {
            GGUF_TYPE_UINT8 => GgufValue::U8(self.u8()?),
            GGUF_TYPE_INT8 => GgufValue::I8(self.u8()? as i8),
            GGUF_TYPE_UINT16 => GgufValue::U16(self.u16()?),
            GGUF_TYPE_INT16 => GgufValue::I16(self.u16()? as i16),
            GGUF_TYPE_UINT32 => GgufValue::U32(self.u32()?),
            GGUF_TYPE_INT32 => GgufValue::I32(self.u32()? as i32),
            GGUF_TYPE_FLOAT32 => GgufValue::F32(f32::from_bits(self.u32()?)),
            GGUF_TYPE_UINT64 => GgufValue::U64(self.u64()?),
            GGUF_TYPE_INT64 => GgufValue::I64(self.u64()? as i64),
            GGUF_TYPE_FLOAT64 => GgufValue::F64(f64::from_bits(self.u64()?)),
            GGUF_TYPE_BOOL => match self.u8()? {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.err(at, format!("boolean value {b} is neither 0 nor 1"))),
            },
            GGUF_TYPE_STRING => GgufValue::String(self.string()?),
            GGUF_TYPE_ARRAY => {
                if depth > 0 {
                    return Err(self.err(at, "nested arrays are not supported".into()));
                }
                let elem_type = self.u32()?;
                let len = self.u64()?;
                let min_elem_bytes = match elem_type {
                    GGUF_TYPE_UINT8 | GGUF_TYPE_INT8 | GGUF_TYPE_BOOL => 1,
                    GGUF_TYPE_UINT16 | GGUF_TYPE_INT16 => 2,
                    GGUF_TYPE_UINT32 | GGUF_TYPE_INT32 | GGUF_TYPE_FLOAT32 => 4,
                    GGUF_TYPE_UINT64 | GGUF_TYPE_INT64 | GGUF_TYPE_FLOAT64 | GGUF_TYPE_STRING => 8,
                    t => return Err(self.err(at, format!("array of unsupported element type {t}"))),
                };
                self.checked_len(at, len, min_elem_bytes, "array")?;
                let keep = len <= KEEP_ARRAY_LIMIT;
                let mut values = Vec::with_capacity(if keep { len as usize } else { 0 });
                if keep {
                    for _ in 0..len {
                        values.push(self.value(elem_type, depth + 1)?);
                    }
                } else if elem_type == GGUF_TYPE_STRING {
                    for _ in 0..len {
                        self.skip_string()?;
                    }
                } else {
                    let here = self.pos;
                    self.skip(here, len * min_elem_bytes)?;
                }
                if self.pos > self.len {
                    return Err(self.err(at, "array runs past the end of the file".into()));
                }
                GgufValue::Array {
                    elem_type,
                    len,
                    values,
                }
            }
            t => return Err(self.err(at, format!("unknown metadata value type {t}"))),
        })
    }
}
