//! GGUF writer (version 3, little-endian, data aligned to 32 bytes): the metadata and tensor
//! infos first, then each tensor's data in the order declared. Tensor data is handed over one
//! tensor at a time, so a converter never holds a whole model in memory. The output reads back
//! through [`crate::gguf::GgufHeader`] and through the `gguf` Python package.

use std::io::Write;

use crate::error::ArchError;
use crate::ggml_type::GgmlType;
use crate::gguf::{
    GGUF_TYPE_ARRAY, GGUF_TYPE_BOOL, GGUF_TYPE_FLOAT32, GGUF_TYPE_FLOAT64, GGUF_TYPE_INT8,
    GGUF_TYPE_INT16, GGUF_TYPE_INT32, GGUF_TYPE_INT64, GGUF_TYPE_STRING, GGUF_TYPE_UINT8,
    GGUF_TYPE_UINT16, GGUF_TYPE_UINT32, GGUF_TYPE_UINT64, GgufValue,
};

/// Alignment of the data section and of every tensor in it (GGUF's default).
pub const ALIGNMENT: u64 = 32;

/// A tensor to be written: `dims` in ggml order (`dims[0]` is the row length).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorOut {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
}

impl TensorOut {
    /// Exact bytes of the tensor's data; an error when rows are not whole blocks.
    pub fn data_bytes(&self) -> Result<u64, ArchError> {
        let n: u64 = self.dims.iter().product();
        let row = self.dims.first().copied().unwrap_or(1);
        let (block, _) = self.ggml_type.block();
        match self.ggml_type.bytes_for(n) {
            Some(b) if row.is_multiple_of(block) => Ok(b),
            _ => Err(ArchError::Invalid(format!(
                "tensor {:?}: rows of {row} values are not whole {} blocks of {block}",
                self.name,
                self.ggml_type.name()
            ))),
        }
    }
}

/// Writes one GGUF stream: [`GgufWriter::start`] writes everything before the data, then
/// [`GgufWriter::write_tensor`] once per tensor in declaration order, then
/// [`GgufWriter::finish`].
#[derive(Debug)]
pub struct GgufWriter<W: Write> {
    out: W,
    tensors: Vec<(TensorOut, u64)>,
    next: usize,
}

fn io(e: std::io::Error) -> ArchError {
    ArchError::Invalid(format!("writing GGUF: {e}"))
}

fn put_string(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn type_id(v: &GgufValue) -> u32 {
    match v {
        GgufValue::U8(_) => GGUF_TYPE_UINT8,
        GgufValue::I8(_) => GGUF_TYPE_INT8,
        GgufValue::U16(_) => GGUF_TYPE_UINT16,
        GgufValue::I16(_) => GGUF_TYPE_INT16,
        GgufValue::U32(_) => GGUF_TYPE_UINT32,
        GgufValue::I32(_) => GGUF_TYPE_INT32,
        GgufValue::U64(_) => GGUF_TYPE_UINT64,
        GgufValue::I64(_) => GGUF_TYPE_INT64,
        GgufValue::F32(_) => GGUF_TYPE_FLOAT32,
        GgufValue::F64(_) => GGUF_TYPE_FLOAT64,
        GgufValue::Bool(_) => GGUF_TYPE_BOOL,
        GgufValue::String(_) => GGUF_TYPE_STRING,
        GgufValue::Array { .. } => GGUF_TYPE_ARRAY,
    }
}

fn put_value(b: &mut Vec<u8>, key: &str, v: &GgufValue) -> Result<(), ArchError> {
    match v {
        GgufValue::U8(x) => b.push(*x),
        GgufValue::I8(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => b.push(u8::from(*x)),
        GgufValue::String(s) => put_string(b, s),
        GgufValue::Array {
            elem_type,
            len,
            values,
        } => {
            if *len != values.len() as u64 {
                return Err(ArchError::Invalid(format!(
                    "metadata {key:?}: array says {len} elements but holds {}",
                    values.len()
                )));
            }
            if let Some(bad) = values.iter().find(|v| type_id(v) != *elem_type) {
                return Err(ArchError::Invalid(format!(
                    "metadata {key:?}: array of type {elem_type} holds a {bad:?}"
                )));
            }
            if *elem_type == GGUF_TYPE_ARRAY {
                return Err(ArchError::Invalid(format!(
                    "metadata {key:?}: nested arrays are not written"
                )));
            }
            b.extend_from_slice(&elem_type.to_le_bytes());
            b.extend_from_slice(&len.to_le_bytes());
            for v in values {
                put_value(b, key, v)?;
            }
        }
    }
    Ok(())
}

/// An array of strings (token lists, merges).
pub fn string_array<I: IntoIterator<Item = String>>(items: I) -> GgufValue {
    let values: Vec<GgufValue> = items.into_iter().map(GgufValue::String).collect();
    GgufValue::Array {
        elem_type: GGUF_TYPE_STRING,
        len: values.len() as u64,
        values,
    }
}

/// An array of `i32` (token types).
pub fn i32_array<I: IntoIterator<Item = i32>>(items: I) -> GgufValue {
    let values: Vec<GgufValue> = items.into_iter().map(GgufValue::I32).collect();
    GgufValue::Array {
        elem_type: GGUF_TYPE_INT32,
        len: values.len() as u64,
        values,
    }
}

/// An array of `f32` (token scores).
pub fn f32_array<I: IntoIterator<Item = f32>>(items: I) -> GgufValue {
    let values: Vec<GgufValue> = items.into_iter().map(GgufValue::F32).collect();
    GgufValue::Array {
        elem_type: GGUF_TYPE_FLOAT32,
        len: values.len() as u64,
        values,
    }
}

impl<W: Write> GgufWriter<W> {
    /// Writes the header (magic, version 3, counts, metadata, tensor infos) and the padding
    /// before the data section. Keys must be unique; `general.alignment` is not written (the
    /// default 32 applies).
    pub fn start(
        mut out: W,
        metadata: &[(String, GgufValue)],
        tensors: &[TensorOut],
    ) -> Result<Self, ArchError> {
        let mut seen = std::collections::HashSet::new();
        let mut b = Vec::with_capacity(1 << 20);
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (key, v) in metadata {
            if !seen.insert(key.as_str()) || key == "general.alignment" {
                return Err(ArchError::Invalid(format!(
                    "metadata key {key:?} given twice or reserved"
                )));
            }
            put_string(&mut b, key);
            b.extend_from_slice(&type_id(v).to_le_bytes());
            put_value(&mut b, key, v)?;
        }
        let mut names = std::collections::HashSet::new();
        let mut offset = 0u64;
        let mut placed = Vec::with_capacity(tensors.len());
        for t in tensors {
            if !names.insert(t.name.as_str()) {
                return Err(ArchError::Invalid(format!(
                    "tensor {:?} given twice",
                    t.name
                )));
            }
            if t.dims.is_empty() || t.dims.len() > 4 || t.dims.contains(&0) {
                return Err(ArchError::Invalid(format!(
                    "tensor {:?}: shape {:?} is not 1 to 4 positive dimensions",
                    t.name, t.dims
                )));
            }
            let bytes = t.data_bytes()?;
            put_string(&mut b, &t.name);
            b.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            b.extend_from_slice(&offset.to_le_bytes());
            placed.push((t.clone(), bytes));
            offset += bytes.div_ceil(ALIGNMENT) * ALIGNMENT;
        }
        b.resize(
            (b.len() as u64).div_ceil(ALIGNMENT) as usize * ALIGNMENT as usize,
            0,
        );
        out.write_all(&b).map_err(io)?;
        Ok(GgufWriter {
            out,
            tensors: placed,
            next: 0,
        })
    }

    /// Writes the data of the next tensor, which must be `name` with exactly its byte size.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<(), ArchError> {
        let Some((t, bytes)) = self.tensors.get(self.next) else {
            return Err(ArchError::Invalid(format!(
                "tensor {name:?} written after all {} declared ones",
                self.tensors.len()
            )));
        };
        if t.name != name || *bytes != data.len() as u64 {
            return Err(ArchError::Invalid(format!(
                "expected the {} bytes of tensor {:?}, got {} bytes of {name:?}",
                bytes,
                t.name,
                data.len()
            )));
        }
        let pad = (data.len() as u64).div_ceil(ALIGNMENT) * ALIGNMENT - data.len() as u64;
        self.out.write_all(data).map_err(io)?;
        self.out.write_all(&[0u8; 32][..pad as usize]).map_err(io)?;
        self.next += 1;
        Ok(())
    }

    /// Checks that every declared tensor was written, flushes and returns the output.
    pub fn finish(mut self) -> Result<W, ArchError> {
        if self.next != self.tensors.len() {
            return Err(ArchError::Invalid(format!(
                "only {} of {} tensors were written",
                self.next,
                self.tensors.len()
            )));
        }
        self.out.flush().map_err(io)?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufHeader;

    #[test]
    fn written_files_read_back_through_the_reader() {
        let meta = vec![
            (
                "general.architecture".to_string(),
                GgufValue::String("llama".into()),
            ),
            ("llama.block_count".to_string(), GgufValue::U32(2)),
            ("llama.rope.freq_base".to_string(), GgufValue::F32(1e4)),
            (
                "tokenizer.ggml.add_bos_token".to_string(),
                GgufValue::Bool(true),
            ),
            (
                "tokenizer.ggml.tokens".to_string(),
                string_array(["a".into(), "b c".into()]),
            ),
            ("tokenizer.ggml.token_type".to_string(), i32_array([1, 3])),
            ("tokenizer.ggml.scores".to_string(), f32_array([0.0, -1.5])),
        ];
        let tensors = vec![
            TensorOut {
                name: "token_embd.weight".into(),
                dims: vec![32, 3],
                ggml_type: GgmlType::Q8_0,
            },
            TensorOut {
                name: "output_norm.weight".into(),
                dims: vec![5],
                ggml_type: GgmlType::F32,
            },
        ];
        let mut w = GgufWriter::start(Vec::new(), &meta, &tensors).unwrap();
        assert!(w.write_tensor("output_norm.weight", &[0; 20]).is_err());
        w.write_tensor("token_embd.weight", &[7; 102]).unwrap();
        let early = GgufWriter::start(Vec::new(), &meta, &tensors)
            .unwrap()
            .finish();
        assert!(early.is_err());
        w.write_tensor("output_norm.weight", &[9; 20]).unwrap();
        let bytes = w.finish().unwrap();
        let h = GgufHeader::read(&bytes[..], bytes.len() as u64).unwrap();
        assert_eq!(h.version, 3);
        for (k, v) in &meta {
            assert_eq!(h.get(k), Some(v), "{k}");
        }
        assert_eq!(h.tensors.len(), 2);
        assert_eq!(h.tensors[0].dims, vec![32, 3]);
        assert_eq!(h.tensors[0].ggml_type, GgmlType::Q8_0);
        assert_eq!(h.tensors[1].offset, 128);
        let at = |t: usize| (h.data_offset + h.tensors[t].offset) as usize;
        assert_eq!(&bytes[at(0)..at(0) + 102], &[7; 102][..]);
        assert_eq!(&bytes[at(1)..at(1) + 20], &[9; 20][..]);
        assert_eq!(bytes.len(), at(1) + 32);
        // Rows that are not whole blocks, and duplicate names, are refused.
        let bad = TensorOut {
            name: "x".into(),
            dims: vec![30, 1],
            ggml_type: GgmlType::Q8_0,
        };
        assert!(GgufWriter::start(Vec::new(), &[], &[bad]).is_err());
        let twice = [tensors[1].clone(), tensors[1].clone()];
        assert!(GgufWriter::start(Vec::new(), &[], &twice).is_err());
    }
}
