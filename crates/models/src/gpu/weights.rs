//! The decoder's weights copied to the GPU: taken from a loaded [`Decoder`] (so every name
//! mapping, GGUF permutation and norm convention of the CPU path holds on the GPU), quantized
//! matrices dequantized, q/k/v and gate/up joined into one product each.

use std::borrow::Cow;
use std::collections::HashMap;

use forja_arch::decoder_config::Activation;
use forja_kernels::cuda::{CudaSlice, GemmWeight, Gpu, QuantKind};
use forja_quant::QuantType;

use crate::attention::QkvProj;
use crate::decoder::{Decoder, Layer};
use crate::embedding::Embedding;
use crate::error::{ModelError, Result};
use crate::linear::{Linear, LinearWeight, QuantizedWeight};
use crate::mlp::Mlp;
use crate::rope::RopeStyle;

pub(super) fn kernel(e: forja_kernels::KernelError) -> ModelError {
    ModelError::Unsupported(format!("GPU: {e}"))
}

/// One layer on the device.
#[derive(Debug)]
pub(super) struct GpuLayer {
    pub attn_norm: CudaSlice<f32>,
    pub qkv: GemmWeight,
    /// `[(heads + 2·kv_heads)·dim]`
    pub qkv_bias: Option<CudaSlice<f32>>,
    pub qk_norm: Option<(CudaSlice<f32>, CudaSlice<f32>)>,
    pub o: GemmWeight,
    pub post_attn_norm: Option<CudaSlice<f32>>,
    pub ffn_norm: CudaSlice<f32>,
    /// `[2·ff, hidden]`, gate rows first.
    pub gate_up: GemmWeight,
    pub down: GemmWeight,
    pub post_ffn_norm: Option<CudaSlice<f32>>,
    pub scale: f32,
    pub window: Option<u32>,
    pub softcap: Option<f32>,
    /// Index into the runner's RoPE tables.
    pub rope: usize,
}

/// A RoPE table on the device: cos and sin `[positions, half]`.
#[derive(Debug)]
pub(super) struct RopeTable {
    pub cos: CudaSlice<f32>,
    pub sin: CudaSlice<f32>,
    pub half: usize,
    pub interleaved: bool,
}

/// Everything but the KV pool.
#[derive(Debug)]
pub(super) struct GpuWeights {
    pub embed: GemmWeight,
    pub embed_scale: f32,
    pub layers: Vec<GpuLayer>,
    pub norm: CudaSlice<f32>,
    pub lm_head: GemmWeight,
    pub final_softcap: Option<f32>,
    pub ropes: Vec<RopeTable>,
    pub eps: f32,
    pub ff: usize,
    /// 0 SiLU, 1 GELU (tanh), 2 GELU (erf), 3 ReLU, as `gated_act` takes it.
    pub act: i32,
    /// Bytes of weights on the device.
    pub bytes: usize,
    /// Their bytes and how many matrices (joined q/k/v and gate/up count once) stay GGUF
    /// blocks, for the ready line.
    pub summary: String,
    /// f16 values the largest quantized matrix dequantizes to (for products over many rows).
    pub dequant_len: usize,
}

fn no_lora(l: &Linear, what: &str) -> Result<()> {
    if l.lora.is_some() || !l.served.is_empty() {
        return Err(ModelError::Unsupported(format!(
            "a LoRA adapter on {what} on the GPU (merge it first)"
        )));
    }
    if what != "qkv" && l.bias.is_some() {
        return Err(ModelError::Unsupported(format!(
            "a bias on {what} on the GPU"
        )));
    }
    Ok(())
}

/// The GGUF block type a quantized weight keeps on the GPU, when the GPU reads it.
fn gpu_kind(l: &Linear) -> Option<(QuantKind, Cow<'_, [u8]>)> {
    let LinearWeight::Quantized(QuantizedWeight::Cpu(m)) = &l.weight else {
        return None;
    };
    Some((kind_of(m)?, m.gguf_bytes()))
}

/// The device's name for a matrix's block type, if the GPU reads it.
fn kind_of(m: &forja_quant::QMatrix) -> Option<QuantKind> {
    Some(match m.ty() {
        QuantType::Q8_0 => QuantKind::Q8_0,
        QuantType::Q4_0 => QuantKind::Q4_0,
        QuantType::Q4_1 => QuantKind::Q4_1,
        QuantType::Q5_0 => QuantKind::Q5_0,
        QuantType::Q5_1 => QuantKind::Q5_1,
        QuantType::Q2K => QuantKind::Q2K,
        QuantType::Q3K => QuantKind::Q3K,
        QuantType::Q4K => QuantKind::Q4K,
        QuantType::Q5K => QuantKind::Q5K,
        QuantType::Q6K => QuantKind::Q6K,
        _ => return None,
    })
}

/// The token embedding table: as stored when `quantized` and its blocks are of a type the GPU
/// reads (the lookup decodes the rows it needs), else dense (f16 when `half`).
fn embedding(gpu: &Gpu, e: &Embedding, (half, quantized): (bool, bool)) -> Result<GemmWeight> {
    if let (true, Embedding::Stored(m)) = (quantized, e)
        && let Some(kind) = kind_of(m)
    {
        return gpu
            .upload_quant(&[(kind, m.rows(), &m.gguf_bytes())], m.cols())
            .map_err(kernel);
    }
    let (vocab, hidden) = e.dims()?;
    let dense: Vec<f32> = e
        .to_dense(&candle_core::Device::Cpu)?
        .flatten_all()?
        .to_vec1()?;
    gpu.upload_weight(&dense, vocab, hidden, half)
        .map_err(kernel)
}

/// The rows of several projections joined into one `[Σ out, in]` weight: as stored when
/// `quantized` and every part is of a type the GPU reads, else dense (f16 when `half`).
fn joined(
    gpu: &Gpu,
    parts: &[&Linear],
    (half, quantized): (bool, bool),
    what: &str,
) -> Result<GemmWeight> {
    if quantized {
        let q: Option<Vec<_>> = parts
            .iter()
            .map(|l| {
                no_lora(l, what).ok()?;
                let (kind, bytes) = gpu_kind(l)?;
                Some((kind, l.out_in().ok()?, bytes))
            })
            .collect();
        if let Some(q) = q {
            let inp = q.first().map_or(0, |p| p.1.1);
            if q.iter().all(|p| p.1.1 == inp) {
                let parts: Vec<_> = q.iter().map(|(k, (o, _), b)| (*k, *o, &**b)).collect();
                return gpu.upload_quant(&parts, inp).map_err(kernel);
            }
        }
    }
    let mut rows = Vec::new();
    let mut out = 0;
    let mut inp = None;
    for l in parts {
        no_lora(l, what)?;
        let (o, i) = l.out_in()?;
        if *inp.get_or_insert(i) != i {
            return Err(ModelError::Input(format!(
                "{what}: projections of different input sizes"
            )));
        }
        out += o;
        rows.extend(l.dense_rows()?);
    }
    gpu.upload_weight(&rows, out, inp.unwrap_or(0), half)
        .map_err(kernel)
}

fn norm(gpu: &Gpu, n: &crate::norm::RmsNorm) -> Result<(CudaSlice<f32>, f64)> {
    let (w, eps) = n.values()?;
    Ok((gpu.upload(&w).map_err(kernel)?, eps))
}

fn bias(l: &Linear, out: usize) -> Result<Vec<f32>> {
    Ok(match &l.bias {
        Some(b) => b.to_dtype(candle_core::DType::F32)?.to_vec1()?,
        None => vec![0.0; out],
    })
}

fn layer(
    gpu: &Gpu,
    i: usize,
    l: &Layer,
    half: (bool, bool),
    ropes: &mut Vec<(Vec<f32>, RopeTable)>,
    positions: usize,
) -> Result<(GpuLayer, usize)> {
    let a = &l.attn;
    let qkv = match &a.qkv {
        QkvProj::Separate { q, k, v } => [q, k, v],
        QkvProj::Fused(f) => [f, f, f],
    };
    let (qkv_w, qkv_bias) = match &a.qkv {
        QkvProj::Separate { q, k, v } => {
            let b = if q.bias.is_some() || k.bias.is_some() || v.bias.is_some() {
                let mut b = bias(q, q.out_in()?.0)?;
                b.extend(bias(k, k.out_in()?.0)?);
                b.extend(bias(v, v.out_in()?.0)?);
                Some(gpu.upload(&b).map_err(kernel)?)
            } else {
                None
            };
            (joined(gpu, &qkv, half, "qkv")?, b)
        }
        QkvProj::Fused(f) => {
            let b = match &f.bias {
                Some(_) => Some(gpu.upload(&bias(f, f.out_in()?.0)?).map_err(kernel)?),
                None => None,
            };
            (joined(gpu, &[f], half, "qkv")?, b)
        }
    };
    let expect = (a.num_heads + 2 * a.num_kv_heads) * a.head_dim;
    if qkv_w.out != expect {
        return Err(ModelError::Input(format!(
            "layer {i}: q/k/v projections of {} rows for {expect}",
            qkv_w.out
        )));
    }
    let qk_norm = match (&a.q_norm, &a.k_norm) {
        (Some(q), Some(k)) => Some((norm(gpu, q)?.0, norm(gpu, k)?.0)),
        _ => None,
    };
    let (gate_up, down) = match &l.mlp {
        Mlp::Gated(m) => {
            let gu = match &m.gate {
                Some(g) => joined(gpu, &[g, &m.up], half, "gate/up")?,
                None => joined(gpu, &[&m.up], half, "gate/up")?,
            };
            (gu, joined(gpu, &[&m.down], half, "down")?)
        }
        Mlp::Moe(_) => {
            return Err(ModelError::Unsupported(
                "mixture-of-experts layers on the GPU".into(),
            ));
        }
    };
    let (cos, sin) = a.rope.table(0, positions);
    let rope = match ropes
        .iter()
        .position(|(c, t)| *c == cos && t.interleaved == (a.rope.style() == RopeStyle::Interleaved))
    {
        Some(r) => r,
        None => {
            let t = RopeTable {
                cos: gpu.upload(&cos).map_err(kernel)?,
                sin: gpu.upload(&sin).map_err(kernel)?,
                half: a.rope.half_dims(),
                interleaved: a.rope.style() == RopeStyle::Interleaved,
            };
            ropes.push((cos, t));
            ropes.len() - 1
        }
    };
    let post = |n: &Option<crate::norm::RmsNorm>| -> Result<Option<CudaSlice<f32>>> {
        n.as_ref().map(|n| Ok(norm(gpu, n)?.0)).transpose()
    };
    let ff = down.inp;
    let out = GpuLayer {
        attn_norm: norm(gpu, &l.attn_norm)?.0,
        qkv: qkv_w,
        qkv_bias,
        qk_norm,
        o: joined(gpu, &[&a.o], half, "the output projection")?,
        post_attn_norm: post(&l.post_attn_norm)?,
        ffn_norm: norm(gpu, &l.ffn_norm)?.0,
        gate_up,
        down,
        post_ffn_norm: post(&l.post_ffn_norm)?,
        scale: a.scale as f32,
        window: a.window.map(|w| w as u32),
        softcap: a.softcap.map(|c| c as f32),
        rope,
    };
    Ok((out, ff))
}

impl GpuWeights {
    /// Copies `d`'s weights to `gpu`, matrices as f16 when `half.0`, GGUF blocks the GPU reads
    /// kept as stored when `half.1`; RoPE tables for `positions`.
    pub fn upload(gpu: &Gpu, d: &Decoder, half: (bool, bool), positions: usize) -> Result<Self> {
        let mut ropes = Vec::new();
        let mut layers = Vec::with_capacity(d.layers.len());
        let mut ffs = HashMap::new();
        for (i, l) in d.layers.iter().enumerate() {
            let (gl, ff) = layer(gpu, i, l, half, &mut ropes, positions)?;
            ffs.insert(ff, ());
            layers.push(gl);
        }
        let ff = match ffs.keys().copied().collect::<Vec<_>>()[..] {
            [ff] => ff,
            _ => {
                return Err(ModelError::Unsupported(
                    "layers of different MLP sizes on the GPU".into(),
                ));
            }
        };
        let embed = embedding(gpu, &d.embed, half)?;
        let (norm_w, eps) = norm(gpu, &d.norm)?;
        let lm_head = joined(gpu, &[&d.lm_head], half, "the output head")?;
        let act = match d.config.activation {
            Activation::Silu => 0,
            Activation::GeluTanh => 1,
            Activation::Gelu => 2,
            Activation::Relu => 3,
        };
        let matrices: Vec<&GemmWeight> = layers
            .iter()
            .flat_map(|l| [&l.qkv, &l.o, &l.gate_up, &l.down])
            .chain([&lm_head, &embed])
            .collect();
        let bytes = matrices.iter().map(|w| w.bytes()).sum();
        let as_stored = matrices
            .iter()
            .filter(|w| matches!(w.data, forja_kernels::cuda::GemmData::Quant(_)))
            .count();
        let summary = format!(
            "weights {:.2} GiB, {as_stored} of {} matrices as GGUF blocks",
            bytes as f64 / f64::from(1u32 << 30),
            matrices.len()
        );
        let dequant_len = layers
            .iter()
            .flat_map(|l| [&l.qkv, &l.o, &l.gate_up, &l.down])
            .chain([&lm_head])
            .map(GemmWeight::dequant_len)
            .max()
            .unwrap_or(0);
        Ok(GpuWeights {
            dequant_len,
            embed,
            embed_scale: d.embed_scale.map_or(1.0, |s| s as f32),
            layers,
            norm: norm_w,
            lm_head,
            final_softcap: d.final_softcap.map(|c| c as f32),
            ropes: ropes.into_iter().map(|(_, t)| t).collect(),
            eps: eps as f32,
            ff,
            act,
            bytes,
            summary,
        })
    }
}
