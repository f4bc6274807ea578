//! Writes GGUF v3 files byte by byte, so tests can build exact headers (and break them on purpose).

/// A metadata value to write.
#[derive(Debug, Clone)]
pub enum Meta {
    U32(u32),
    U64(u64),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArray(Vec<String>),
    I32Array(Vec<i32>),
}

#[derive(Debug, Clone)]
pub struct TensorDef {
    pub name: String,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Data bytes this tensor occupies (the builder does not know block sizes).
    pub data_bytes: u64,
    /// The data; zeros when empty.
    pub data: Vec<u8>,
}

#[derive(Debug, Default, Clone)]
pub struct GgufBuilder {
    pub version: u32,
    pub meta: Vec<(String, Meta)>,
    pub tensors: Vec<TensorDef>,
    pub alignment: u64,
}

impl GgufBuilder {
    pub fn new() -> Self {
        GgufBuilder {
            version: 3,
            meta: Vec::new(),
            tensors: Vec::new(),
            alignment: 32,
        }
    }

    pub fn meta(mut self, key: &str, v: Meta) -> Self {
        self.meta.push((key.to_string(), v));
        self
    }

    pub fn tensor(mut self, name: &str, dims: &[u64], ggml_type: u32, data_bytes: u64) -> Self {
        self.tensors.push(TensorDef {
            name: name.to_string(),
            dims: dims.to_vec(),
            ggml_type,
            data_bytes,
            data: Vec::new(),
        });
        self
    }

    /// A tensor with its data bytes (already in `ggml_type`'s block layout).
    pub fn tensor_data(self, name: &str, dims: &[u64], ggml_type: u32, data: Vec<u8>) -> Self {
        let mut b = self.tensor(name, dims, ggml_type, data.len() as u64);
        if let Some(t) = b.tensors.last_mut() {
            t.data = data;
        }
        b
    }

    /// A small but complete llama-architecture model (F32 weights): 2 layers, hidden 64.
    pub fn tiny_llama() -> Self {
        let (h, ff, vocab, layers) = (64u64, 128u64, 256u64, 2u32);
        let mut b = GgufBuilder::new()
            .meta("general.architecture", Meta::Str("llama".into()))
            .meta("general.file_type", Meta::U32(0))
            .meta("llama.context_length", Meta::U32(2048))
            .meta("llama.embedding_length", Meta::U32(h as u32))
            .meta("llama.block_count", Meta::U32(layers))
            .meta("llama.feed_forward_length", Meta::U32(ff as u32))
            .meta("llama.attention.head_count", Meta::U32(4))
            .meta("llama.attention.head_count_kv", Meta::U32(2))
            .meta("llama.rope.freq_base", Meta::F32(10000.0))
            .meta("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5))
            .meta(
                "tokenizer.ggml.tokens",
                Meta::StrArray((0..vocab).map(|i| format!("t{i}")).collect()),
            );
        let f32_t = |b: GgufBuilder, name: &str, dims: &[u64]| {
            let n: u64 = dims.iter().product();
            b.tensor(name, dims, 0, n * 4)
        };
        b = f32_t(b, "token_embd.weight", &[h, vocab]);
        for i in 0..layers {
            b = f32_t(b, &format!("blk.{i}.attn_norm.weight"), &[h]);
            b = f32_t(b, &format!("blk.{i}.attn_q.weight"), &[h, h]);
            b = f32_t(b, &format!("blk.{i}.attn_k.weight"), &[h, h / 2]);
            b = f32_t(b, &format!("blk.{i}.attn_v.weight"), &[h, h / 2]);
            b = f32_t(b, &format!("blk.{i}.attn_output.weight"), &[h, h]);
            b = f32_t(b, &format!("blk.{i}.ffn_norm.weight"), &[h]);
            b = f32_t(b, &format!("blk.{i}.ffn_gate.weight"), &[h, ff]);
            b = f32_t(b, &format!("blk.{i}.ffn_up.weight"), &[h, ff]);
            b = f32_t(b, &format!("blk.{i}.ffn_down.weight"), &[ff, h]);
        }
        b = f32_t(b, "output_norm.weight", &[h]);
        f32_t(b, "output.weight", &[h, vocab])
    }

    /// The header bytes (up to and including padding to the data section).
    pub fn header_bytes(&self) -> Vec<u8> {
        let mut o = Vec::new();
        o.extend_from_slice(b"GGUF");
        o.extend_from_slice(&self.version.to_le_bytes());
        o.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        o.extend_from_slice(&(self.meta.len() as u64).to_le_bytes());
        for (k, v) in &self.meta {
            put_str(&mut o, k);
            match v {
                Meta::U32(x) => {
                    o.extend_from_slice(&4u32.to_le_bytes());
                    o.extend_from_slice(&x.to_le_bytes());
                }
                Meta::U64(x) => {
                    o.extend_from_slice(&10u32.to_le_bytes());
                    o.extend_from_slice(&x.to_le_bytes());
                }
                Meta::F32(x) => {
                    o.extend_from_slice(&6u32.to_le_bytes());
                    o.extend_from_slice(&x.to_le_bytes());
                }
                Meta::Bool(x) => {
                    o.extend_from_slice(&7u32.to_le_bytes());
                    o.push(u8::from(*x));
                }
                Meta::Str(s) => {
                    o.extend_from_slice(&8u32.to_le_bytes());
                    put_str(&mut o, s);
                }
                Meta::StrArray(items) => {
                    o.extend_from_slice(&9u32.to_le_bytes());
                    o.extend_from_slice(&8u32.to_le_bytes());
                    o.extend_from_slice(&(items.len() as u64).to_le_bytes());
                    for s in items {
                        put_str(&mut o, s);
                    }
                }
                Meta::I32Array(items) => {
                    o.extend_from_slice(&9u32.to_le_bytes());
                    o.extend_from_slice(&5u32.to_le_bytes());
                    o.extend_from_slice(&(items.len() as u64).to_le_bytes());
                    for x in items {
                        o.extend_from_slice(&x.to_le_bytes());
                    }
                }
            }
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut o, &t.name);
            o.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                o.extend_from_slice(&d.to_le_bytes());
            }
            o.extend_from_slice(&t.ggml_type.to_le_bytes());
            o.extend_from_slice(&offset.to_le_bytes());
            offset += t.data_bytes.div_ceil(self.alignment) * self.alignment;
        }
        while !(o.len() as u64).is_multiple_of(self.alignment) {
            o.push(0);
        }
        o
    }

    /// The whole file: header plus tensor data (zeros where none was given).
    pub fn bytes(&self) -> Vec<u8> {
        let mut o = self.header_bytes();
        for t in &self.tensors {
            let start = o.len();
            o.extend_from_slice(&t.data);
            let padded = t.data_bytes.div_ceil(self.alignment) * self.alignment;
            o.resize(start + padded as usize, 0);
        }
        o
    }
}

fn put_str(o: &mut Vec<u8>, s: &str) {
    o.extend_from_slice(&(s.len() as u64).to_le_bytes());
    o.extend_from_slice(s.as_bytes());
}
