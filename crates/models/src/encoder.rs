//! A BERT encoder on candle, for sentence embeddings: word + position + token-type embeddings,
//! an embedding LayerNorm, then post-norm layers of bidirectional self-attention and a
//! feed-forward block. Sequences of one batch are padded on the right to the longest; padded
//! keys are masked out of attention, so every sequence gets the vectors it gets alone.
//!
//! Computation is f32 whatever the checkpoint stores (f32, f16 or bf16). Weight names are those of
//! transformers' `BertModel`, with or without the `bert.` prefix of task checkpoints.

use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use forja_arch::{EncoderConfig, Pooling};

use crate::error::{ModelError, Result};
use crate::linear::{Linear, LinearWeight};
use crate::mlp::activate;
use crate::norm::LayerNorm;
use crate::pooling::{l2_normalize, pool};

/// One sequence of a batch.
#[derive(Debug, Clone, Copy)]
pub struct EncoderInput<'a> {
    /// Token ids, special tokens included (`[CLS] … [SEP]`).
    pub ids: &'a [u32],
    /// Segment of each token (0 for a single text; 1 for the second text of a pair). `None`
    /// means all 0.
    pub type_ids: Option<&'a [u32]>,
}

impl<'a> EncoderInput<'a> {
    /// A single text's ids (all of segment 0).
    pub fn single(ids: &'a [u32]) -> Self {
        EncoderInput {
            ids,
            type_ids: None,
        }
    }
}

/// One post-norm encoder layer.
#[derive(Debug)]
struct EncoderLayer {
    /// Query, key and value fused: `[3·hidden, hidden]`.
    qkv: Linear,
    /// `attention.output.dense`
    attn_out: Linear,
    /// `attention.output.LayerNorm`
    attn_norm: LayerNorm,
    /// `intermediate.dense`: `[intermediate, hidden]`
    intermediate: Linear,
    /// `output.dense`: `[hidden, intermediate]`
    output: Linear,
    /// `output.LayerNorm`
    output_norm: LayerNorm,
}

/// A BERT encoder with its weights, ready to run.
#[derive(Debug)]
pub struct BertEncoder {
    config: EncoderConfig,
    /// `[vocab, hidden]`
    word_embeddings: Tensor,
    /// `[max_positions, hidden]`
    position_embeddings: Tensor,
    /// `[type_vocab, hidden]`
    token_type_embeddings: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<EncoderLayer>,
    device: Device,
}

/// The tensors of one safetensors checkpoint, by `BertModel` name.
struct Checkpoint {
    files: MmapedSafetensors,
    path: PathBuf,
    /// `"bert."` for task checkpoints (`BertForMaskedLM`, …), else empty.
    prefix: &'static str,
    device: Device,
}

impl Checkpoint {
    fn open(path: &Path, device: &Device) -> Result<Self> {
        if !path.is_file() {
            return Err(ModelError::Weights {
                path: path.display().to_string(),
                what: "missing (encoder weights are read from model.safetensors; \
                       pytorch_model.bin is not supported)"
                    .into(),
            });
        }
        // SAFETY: the file is mapped read-only; like every mmap-based loader, this assumes no
        // other process truncates it while it is loaded.
        let files = unsafe { MmapedSafetensors::new(path) }.map_err(|e| ModelError::Weights {
            path: path.display().to_string(),
            what: e.to_string(),
        })?;
        let prefix = if files.get("bert.embeddings.word_embeddings.weight").is_ok() {
            "bert."
        } else {
            ""
        };
        Ok(Checkpoint {
            files,
            path: path.to_path_buf(),
            prefix,
            device: device.clone(),
        })
    }

    fn has(&self, name: &str) -> bool {
        self.files.get(&format!("{}{name}", self.prefix)).is_ok()
    }

    /// The tensor `name` (of `BertModel`, under the checkpoint's prefix) in f32; it must have
    /// shape `shape`.
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.tensor_named(&format!("{}{name}", self.prefix), shape)
    }

    /// The tensor `full` (its whole name in the file) in f32, of shape `shape`.
    fn tensor_named(&self, full: &str, shape: &[usize]) -> Result<Tensor> {
        let full = full.to_string();
        let t = self
            .files
            .load(&full, &self.device)
            .map_err(|_| ModelError::MissingWeight {
                name: full.clone(),
                source_desc: self.path.display().to_string(),
            })?;
        if t.dims() != shape {
            return Err(ModelError::Shape {
                name: format!("{full} in {}", self.path.display()),
                found: t.dims().to_vec(),
                expected: shape.to_vec(),
            });
        }
        Ok(t.to_dtype(DType::F32)?)
    }

    fn linear(&self, base: &str, out: usize, inp: usize) -> Result<Linear> {
        Ok(Linear::new(
            LinearWeight::Dense(self.tensor(&format!("{base}.weight"), &[out, inp])?),
            Some(self.tensor(&format!("{base}.bias"), &[out])?),
        ))
    }

    /// A LayerNorm; checkpoints converted from TensorFlow name its parameters gamma and beta.
    fn layer_norm(&self, base: &str, hidden: usize, eps: f64) -> Result<LayerNorm> {
        let (w, b) = if self.has(&format!("{base}.weight")) || !self.has(&format!("{base}.gamma")) {
            ("weight", "bias")
        } else {
            ("gamma", "beta")
        };
        LayerNorm::new(
            self.tensor(&format!("{base}.{w}"), &[hidden])?,
            self.tensor(&format!("{base}.{b}"), &[hidden])?,
            eps,
        )
    }
}

/// A BERT sequence classifier (`BertForSequenceClassification`): the encoder, its pooler (tanh of
/// a dense layer over the `[CLS]` state) and a linear layer to one logit per label. With one
/// label and a (query, passage) pair as input, it is a cross-encoder reranker.
#[derive(Debug)]
pub struct SequenceClassifier {
    encoder: BertEncoder,
    pooler: Linear,
    classifier: Linear,
    labels: usize,
}

impl SequenceClassifier {
    /// Loads the classifier of the HF model folder `dir` (`bert.` + `pooler.dense` and
    /// `classifier` tensors beside the encoder's).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config = EncoderConfig::from_dir(dir)?;
        let ckpt = Checkpoint::open(&dir.join("model.safetensors"), device)?;
        let h = config.hidden_size;
        let bias = ckpt
            .files
            .get("classifier.bias")
            .map_err(|_| ModelError::MissingWeight {
                name: "classifier.bias".into(),
                source_desc: format!(
                    "{} (a sequence classifier, such as a cross-encoder reranker, has one)",
                    ckpt.path.display()
                ),
            })?;
        let labels = bias.shape().first().copied().unwrap_or(0);
        let classifier = Linear::new(
            LinearWeight::Dense(ckpt.tensor_named("classifier.weight", &[labels, h])?),
            Some(ckpt.tensor_named("classifier.bias", &[labels])?),
        );
        Ok(SequenceClassifier {
            pooler: ckpt.linear("pooler.dense", h, h)?,
            classifier,
            labels,
            encoder: BertEncoder::from_checkpoint(config, &ckpt)?,
        })
    }

    /// Outputs per input.
    pub fn labels(&self) -> usize {
        self.labels
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.encoder.config
    }

    /// The logits of a batch, `[batch, labels]`.
    pub fn logits(&self, batch: &[EncoderInput<'_>]) -> Result<Tensor> {
        let hidden = self.encoder.forward(batch)?;
        let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?.contiguous()?;
        let pooled = self.pooler.forward(&cls)?.tanh()?;
        self.classifier.forward(&pooled)
    }
}

impl BertEncoder {
    /// Loads the encoder of the HF model folder `dir` (`config.json` + `model.safetensors`).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config = EncoderConfig::from_dir(dir)?;
        let ckpt = Checkpoint::open(&dir.join("model.safetensors"), device)?;
        Self::from_checkpoint(config, &ckpt)
    }

    fn from_checkpoint(config: EncoderConfig, ckpt: &Checkpoint) -> Result<Self> {
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let inter = config.intermediate_size;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let base = format!("encoder.layer.{i}");
                let part = |name: &str| ckpt.linear(&format!("{base}.{name}"), h, h);
                // (weight [hidden, hidden], bias [hidden]) of a self-attention projection.
                let proj = |name: &str| -> Result<(Tensor, Tensor)> {
                    let p = format!("{base}.attention.self.{name}");
                    Ok((
                        ckpt.tensor(&format!("{p}.weight"), &[h, h])?,
                        ckpt.tensor(&format!("{p}.bias"), &[h])?,
                    ))
                };
                let ((qw, qb), (kw, kb), (vw, vb)) = (proj("query")?, proj("key")?, proj("value")?);
                let qkv = Linear::new(
                    LinearWeight::Dense(Tensor::cat(&[qw, kw, vw], 0)?),
                    Some(Tensor::cat(&[qb, kb, vb], 0)?),
                );
                Ok(EncoderLayer {
                    qkv,
                    attn_out: part("attention.output.dense")?,
                    attn_norm: ckpt.layer_norm(
                        &format!("{base}.attention.output.LayerNorm"),
                        h,
                        eps,
                    )?,
                    intermediate: ckpt.linear(&format!("{base}.intermediate.dense"), inter, h)?,
                    output: ckpt.linear(&format!("{base}.output.dense"), h, inter)?,
                    output_norm: ckpt.layer_norm(&format!("{base}.output.LayerNorm"), h, eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BertEncoder {
            word_embeddings: ckpt
                .tensor("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position_embeddings: ckpt.tensor(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            token_type_embeddings: ckpt.tensor(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?,
            embeddings_norm: ckpt.layer_norm("embeddings.LayerNorm", h, eps)?,
            layers,
            device: ckpt.device.clone(),
            config,
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Width of the token (and pooled sentence) vectors.
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// The last hidden states of a batch, `[batch, longest, hidden]`; row `i` holds
    /// `batch[i].ids.len()` tokens, and the rows past that length are padding (meaningless).
    pub fn forward(&self, batch: &[EncoderInput<'_>]) -> Result<Tensor> {
        let seq = self.check(batch)?;
        let b = batch.len();
        let h = self.config.hidden_size;
        let mut ids = vec![0u32; b * seq];
        let mut types = vec![0u32; b * seq];
        for (i, input) in batch.iter().enumerate() {
            ids[i * seq..i * seq + input.ids.len()].copy_from_slice(input.ids);
            if let Some(t) = input.type_ids {
                types[i * seq..i * seq + t.len()].copy_from_slice(t);
            }
        }
        let ids = Tensor::from_vec(ids, b * seq, &self.device)?;
        let types = Tensor::from_vec(types, b * seq, &self.device)?;
        // [b·seq, hidden]
        let tokens = (self.word_embeddings.index_select(&ids, 0)?
            + self.token_type_embeddings.index_select(&types, 0)?)?;
        let positions = self.position_embeddings.narrow(0, 0, seq)?;
        let x = tokens
            .reshape((b, seq, h))?
            .broadcast_add(&positions)?
            .reshape((b * seq, h))?;
        let mut x = self.embeddings_norm.forward(&x)?;
        let mask = self.key_mask(batch, seq)?;
        for layer in &self.layers {
            x = self.layer_forward(layer, &x, b, seq, mask.as_ref())?;
        }
        Ok(x.reshape((b, seq, h))?)
    }

    /// Pooled sentence vectors of a batch, `[batch, hidden]`, L2-normalized when `normalize`.
    pub fn embed(
        &self,
        batch: &[EncoderInput<'_>],
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Tensor> {
        let hidden = self.forward(batch)?;
        let lens: Vec<usize> = batch.iter().map(|s| s.ids.len()).collect();
        let pooled = pool(&hidden, &lens, pooling)?;
        if normalize {
            l2_normalize(&pooled)
        } else {
            Ok(pooled)
        }
    }

    /// Validates a batch; returns its longest length.
    fn check(&self, batch: &[EncoderInput<'_>]) -> Result<usize> {
        let c = &self.config;
        if batch.is_empty() {
            return Err(ModelError::Input("an empty batch".into()));
        }
        for (i, input) in batch.iter().enumerate() {
            let n = input.ids.len();
            if n == 0 {
                return Err(ModelError::Input(format!("sequence {i} has no tokens")));
            }
            if n > c.max_position_embeddings {
                return Err(ModelError::Input(format!(
                    "sequence {i} has {n} tokens; the encoder takes at most {}",
                    c.max_position_embeddings
                )));
            }
            if let Some(&bad) = input.ids.iter().find(|&&t| t as usize >= c.vocab_size) {
                return Err(ModelError::Input(format!(
                    "token id {bad} of sequence {i} is outside the vocabulary of {}",
                    c.vocab_size
                )));
            }
            if let Some(types) = input.type_ids {
                if types.len() != n {
                    return Err(ModelError::Input(format!(
                        "sequence {i} has {n} tokens but {} token types",
                        types.len()
                    )));
                }
                if let Some(&bad) = types.iter().find(|&&t| t as usize >= c.type_vocab_size) {
                    return Err(ModelError::Input(format!(
                        "token type {bad} of sequence {i} is outside the {} types",
                        c.type_vocab_size
                    )));
                }
            }
        }
        Ok(batch.iter().map(|s| s.ids.len()).max().unwrap_or(0))
    }

    /// Additive attention mask `[batch, 1, 1, seq]`: 0 for real keys, -∞ for padding; `None`
    /// when no sequence is padded.
    fn key_mask(&self, batch: &[EncoderInput<'_>], seq: usize) -> Result<Option<Tensor>> {
        if batch.iter().all(|s| s.ids.len() == seq) {
            return Ok(None);
        }
        let mask: Vec<f32> = batch
            .iter()
            .flat_map(|s| {
                (0..seq).map(move |j| {
                    if j < s.ids.len() {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        Ok(Some(Tensor::from_vec(
            mask,
            (batch.len(), 1, 1, seq),
            &self.device,
        )?))
    }

    /// One layer on `x` `[b·seq, hidden]`.
    fn layer_forward(
        &self,
        layer: &EncoderLayer,
        x: &Tensor,
        b: usize,
        seq: usize,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (heads, head_dim) = (c.num_attention_heads, c.head_dim());
        // [3, b, heads, seq, head_dim]
        let qkv = layer
            .qkv
            .forward(x)?
            .reshape((b, seq, 3, heads, head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)?.contiguous()? * (head_dim as f64).powf(-0.5))?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        // [b, heads, seq, seq]
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(m) = mask {
            // Every sequence has at least one real key, so no row is all -∞.
            scores = scores.broadcast_add(m)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        // [b·seq, hidden]
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b * seq, c.hidden_size))?;
        let x = layer
            .attn_norm
            .forward(&(layer.attn_out.forward(&context)? + x)?)?;
        let inner = activate(&layer.intermediate.forward(&x)?, c.hidden_act)?;
        layer
            .output_norm
            .forward(&(layer.output.forward(&inner)? + x)?)
    }
}
