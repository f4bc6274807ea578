//! The one configurable decoder. Every supported family is this struct built from a
//! `DecoderConfig`: norms, RoPE variant, QKV bias, QK-norm, sliding windows, soft-capping, gated
//! MLP or MoE, tied embeddings and embedding scaling are fields, not subclasses.

use candle_core::{DType, Device, Tensor};
use forja_arch::decoder_config::{LayerAttention, NormKind, RopeScaling};
use forja_arch::{DecoderConfig, Family};

use crate::attention::{Attention, Masks, QkvProj, SCORE_BLOCK_BYTES};
use crate::embedding::Embedding;
use crate::error::{ModelError, Result};
use crate::kv_cache::{ContiguousKvCache, KvCache};
use crate::linear::{Linear, LinearWeight};
use crate::lora::{AdapterId, AdapterRows};
use crate::mlp::{GatedMlp, Mlp, MoeMlp};

mod lora;
use crate::norm::RmsNorm;
use crate::rope::{Rope, RopeStyle};
use crate::weight_source::WeightSource;

#[derive(Debug)]
pub(crate) struct Layer {
    pub(crate) attn_norm: RmsNorm,
    pub(crate) attn: Attention,
    /// Gemma 2/3: norm of the attention output before the residual add.
    pub(crate) post_attn_norm: Option<RmsNorm>,
    pub(crate) ffn_norm: RmsNorm,
    pub(crate) mlp: Mlp,
    pub(crate) post_ffn_norm: Option<RmsNorm>,
}

/// Which logits the output head computes for one sequence of a step.
pub(crate) struct HeadRows {
    /// The sequence's new tokens.
    pub(crate) tokens: usize,
    /// Every token's logits, else the last one's.
    pub(crate) all: bool,
    pub(crate) adapter: Option<AdapterId>,
}

/// How a decoder orders the output rows of its q and k projections against HF's: a
/// llama-architecture GGUF keeps them as llama.cpp permutes them (each head's two rotary halves
/// interleaved: row `h·D + 2m + s` holds HF's row `h·D + s·D/2 + m`), every other source as HF.
/// LoRA adapters are stored in HF's order (PEFT), so their `B` crosses this boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QkRowOrder {
    interleaved: bool,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl QkRowOrder {
    /// The order a GGUF of architecture `arch` (`general.architecture`) keeps for `cfg`.
    pub fn of_gguf(arch: &str, cfg: &DecoderConfig) -> Self {
        QkRowOrder {
            interleaved: crate::weight_source::gguf_rope_style(arch) == RopeStyle::Interleaved,
            heads: cfg.num_heads as usize,
            kv_heads: cfg.num_kv_heads as usize,
            head_dim: cfg.head_dim as usize,
        }
    }

    /// A LoRA `B` `[out, rank]` of module `path`, in HF's row order, put in the decoder's.
    pub fn from_hf(&self, path: &str, b: &Tensor) -> Result<Tensor> {
        self.reorder(path, b, true)
    }

    /// The decoder's `B` of module `path` in HF's row order.
    pub fn to_hf(&self, path: &str, b: &Tensor) -> Result<Tensor> {
        self.reorder(path, b, false)
    }

    fn reorder(&self, path: &str, b: &Tensor, from_hf: bool) -> Result<Tensor> {
        let heads = if path.ends_with("self_attn.q_proj") {
            self.heads
        } else if path.ends_with("self_attn.k_proj") {
            self.kv_heads
        } else {
            0
        };
        let d = self.head_dim;
        if !self.interleaved || heads == 0 || !d.is_multiple_of(2) || b.dim(0)? != heads * d {
            return Ok(b.clone());
        }
        let index: Vec<u32> = (0..heads * d)
            .map(|row| {
                let (h, r) = (row / d, row % d);
                let other = if from_hf {
                    h * d + (r % 2) * (d / 2) + r / 2
                } else {
                    h * d + 2 * (r % (d / 2)) + r / (d / 2)
                };
                other as u32
            })
            .collect();
        Ok(b.index_select(&Tensor::new(index.as_slice(), b.device())?, 0)?)
    }
}

/// One sequence's step: its new tokens and its cache.
pub struct SeqStep<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut dyn KvCache,
    /// Logits for every new token (prefill scoring) instead of the last one only.
    pub all_logits: bool,
    /// The served adapter this sequence runs with (attached by [`Decoder::attach_lora`] with
    /// [`LoraSlot::Served`]); `None`: the model as loaded.
    pub adapter: Option<AdapterId>,
}

impl<'a> SeqStep<'a> {
    /// One step per sequence of `seqs`, each over its own cache of `caches` (in order), with
    /// every position's logits and no served adapter: scoring whole sequences, as training does.
    pub fn every_position<C: KvCache>(seqs: &[&'a [u32]], caches: &'a mut [C]) -> Vec<SeqStep<'a>> {
        seqs.iter()
            .zip(caches.iter_mut())
            .map(|(tokens, cache)| SeqStep {
                tokens,
                cache,
                all_logits: true,
                adapter: None,
            })
            .collect()
    }
}

impl std::fmt::Debug for SeqStep<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeqStep")
            .field("tokens", &self.tokens.len())
            .field("cached", &self.cache.len())
            .field("all_logits", &self.all_logits)
            .field("adapter", &self.adapter)
            .finish()
    }
}

#[derive(Debug)]
pub struct Decoder {
    pub config: DecoderConfig,
    /// The token embedding table `[vocab, hidden]`, as stored (`embedding.rs`).
    pub(crate) embed: Embedding,
    pub(crate) embed_scale: Option<f64>,
    pub(crate) layers: Vec<Layer>,
    pub(crate) norm: RmsNorm,
    pub(crate) lm_head: Linear,
    /// The output head is the token embedding table (the same values as `embed`, which the
    /// training passes use: f32, no dequantizing per block of logits).
    pub(crate) head_tied: bool,
    pub(crate) final_softcap: Option<f64>,
    device: Device,
    /// Served adapters attached, with the bytes they hold.
    served: Vec<(AdapterId, u64)>,
    /// f32 logits the training passes compute at once ([`crate::training`]).
    pub(crate) head_chunk_bytes: usize,
    /// The q and k projections' rows are in llama.cpp's order (a llama-architecture GGUF: each
    /// head's two rotary halves interleaved), not HF's.
    qk_rows_interleaved: bool,
}

fn opt_bias(src: &dyn WeightSource, name: &str) -> Result<Option<Tensor>> {
    if src.has(name) {
        Ok(Some(src.tensor(name)?))
    } else {
        Ok(None)
    }
}

/// RoPE divisors the config leaves to the weights (GGUF `rope_freqs.weight`, LongRoPE's
/// `rope_factors_long/short.weight`), read into the scaling.
fn with_rope_factors(scaling: &RopeScaling, src: &dyn WeightSource) -> Result<RopeScaling> {
    let mut scaling = scaling.clone();
    let lists: Vec<(&mut Vec<f64>, &str)> = match &mut scaling {
        RopeScaling::Factors { factors } => vec![(factors, "rope_freqs.weight")],
        RopeScaling::LongRope {
            long_factor,
            short_factor,
            ..
        } => vec![
            (long_factor, "rope_factors_long.weight"),
            (short_factor, "rope_factors_short.weight"),
        ],
        _ => Vec::new(),
    };
    for (list, name) in lists {
        if list.is_empty() {
            if !src.has(name) {
                return Err(ModelError::Input(format!(
                    "RoPE scaling without its factors (neither in config.json nor {name})"
                )));
            }
            let t = src.tensor(name)?.to_dtype(DType::F64)?.flatten_all()?;
            *list = t.to_vec1()?;
        }
    }
    Ok(scaling)
}

impl Decoder {
    /// Builds the decoder for `cfg` from `src`.
    pub fn load(cfg: &DecoderConfig, src: &dyn WeightSource, device: &Device) -> Result<Self> {
        cfg.validate()?;
        if cfg.mla.is_some() {
            return Err(ModelError::Unsupported(
                "multi-head latent attention (DeepSeek V2/V3)".into(),
            ));
        }
        if matches!(cfg.family, Family::Mllama | Family::Qwen2Vl) {
            return Err(ModelError::Unsupported(format!(
                "the {:?} multimodal decoder",
                cfg.family
            )));
        }
        if cfg.family == Family::PhiMoe {
            // LayerNorm with bias, sparsemixer routing and output biases: not built here.
            return Err(ModelError::Unsupported(
                "the Phi-3.5-MoE decoder (LayerNorm, sparsemixer routing)".into(),
            ));
        }
        let norm_kind = match cfg.norm {
            NormKind::RmsOnePlus if src.norm_weights_include_one() => NormKind::Rms,
            kind => kind,
        };
        let norm = |name: &str| RmsNorm::new(src.tensor(name)?, norm_kind, cfg.norm_eps);
        // q/k/v biases as the config says (missing ones are errors); an output-projection bias
        // (models with `attention_bias`) when the weights have one.
        let linear = |name: &str, bias: Option<&str>| -> Result<Linear> {
            let bias = match bias {
                Some(b) if cfg.qkv_bias => Some(src.tensor(b)?),
                _ => None,
            };
            Ok(Linear::new(src.linear(name)?, bias))
        };
        let head_dim = cfg.head_dim as usize;
        let style = src.rope_style();
        let global_scaling = with_rope_factors(&cfg.rope_scaling, src)?;
        let mut layers = Vec::with_capacity(cfg.num_layers as usize);
        for i in 0..cfg.num_layers as usize {
            let n = |s: &str| format!("blk.{i}.{s}");
            let kind = cfg.layers.get(i).copied().unwrap_or(LayerAttention::Global);
            let window = match kind {
                LayerAttention::Sliding { window } => Some(window as usize),
                LayerAttention::Global => None,
                LayerAttention::Cross => {
                    return Err(ModelError::Unsupported("cross-attention layers".into()));
                }
            };
            // Gemma 3: sliding layers use their own base and no scaling.
            let (theta, scaling) = match (window, cfg.rope_local_theta) {
                (Some(_), Some(local)) => (local, RopeScaling::None),
                _ => (cfg.rope_theta, global_scaling.clone()),
            };
            let rope = Rope::new(
                head_dim,
                cfg.partial_rotary_factor,
                theta,
                &scaling,
                style,
                cfg.max_context as usize,
            )?;
            let qkv = if cfg.fused_qkv {
                QkvProj::Fused(linear(&n("attn_qkv.weight"), Some(&n("attn_qkv.bias")))?)
            } else {
                QkvProj::Separate {
                    q: linear(&n("attn_q.weight"), Some(&n("attn_q.bias")))?,
                    k: linear(&n("attn_k.weight"), Some(&n("attn_k.bias")))?,
                    v: linear(&n("attn_v.weight"), Some(&n("attn_v.bias")))?,
                }
            };
            let (q_norm, k_norm) = if cfg.qk_norm {
                (
                    Some(norm(&n("attn_q_norm.weight"))?),
                    Some(norm(&n("attn_k_norm.weight"))?),
                )
            } else {
                (None, None)
            };
            let scale = 1.0
                / cfg
                    .query_pre_attn_scalar
                    .unwrap_or(cfg.head_dim as f64)
                    .sqrt();
            let attn = Attention {
                qkv,
                o: Linear::new(
                    src.linear(&n("attn_output.weight"))?,
                    opt_bias(src, &n("attn_output.bias"))?,
                ),
                q_norm,
                k_norm,
                rope,
                num_heads: cfg.num_heads as usize,
                num_kv_heads: cfg.num_kv_heads as usize,
                head_dim,
                scale,
                window,
                softcap: cfg.attn_logit_softcap,
                score_block_bytes: SCORE_BLOCK_BYTES,
                fused_cpu: true,
            };
            let gated =
                |gate: Option<LinearWeight>, up: LinearWeight, down: LinearWeight| GatedMlp {
                    gate: gate.map(|g| Linear::new(g, None)),
                    up: Linear::new(up, None),
                    down: Linear::new(down, None),
                    activation: cfg.activation,
                };
            let mlp = match &cfg.moe {
                Some(m) if cfg.is_moe_layer(i as u64) => {
                    // Always-on shared expert (Qwen2-MoE), optionally behind a sigmoid gate.
                    let shared = if m.shared_intermediate_size > 0 {
                        Some(Box::new(gated(
                            Some(src.linear(&n("ffn_gate_shexp.weight"))?),
                            src.linear(&n("ffn_up_shexp.weight"))?,
                            src.linear(&n("ffn_down_shexp.weight"))?,
                        )))
                    } else {
                        None
                    };
                    let shared_gate = if m.shared_expert_gate {
                        // Stored as one row `[1, hidden]` (HF) or a vector `[hidden]` (GGUF).
                        let w = src.tensor(&n("ffn_gate_inp_shexp.weight"))?;
                        let w = w.reshape((1, cfg.hidden_size as usize))?;
                        Some(Linear::new(LinearWeight::Dense(w), None))
                    } else {
                        None
                    };
                    let experts = (0..m.num_experts as usize)
                        .map(|e| {
                            Ok(gated(
                                Some(src.expert(&n("ffn_gate_exps.weight"), e)?),
                                src.expert(&n("ffn_up_exps.weight"), e)?,
                                src.expert(&n("ffn_down_exps.weight"), e)?,
                            ))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Mlp::Moe(MoeMlp {
                        router: linear(&n("ffn_gate_inp.weight"), None)?,
                        experts,
                        top_k: m.experts_per_token as usize,
                        norm_topk_prob: m.norm_topk_prob,
                        shared,
                        shared_gate,
                    })
                }
                _ if cfg.fused_gate_up => Mlp::Gated(gated(
                    None,
                    src.linear(&n("ffn_up.weight"))?,
                    src.linear(&n("ffn_down.weight"))?,
                )),
                _ => Mlp::Gated(gated(
                    Some(src.linear(&n("ffn_gate.weight"))?),
                    src.linear(&n("ffn_up.weight"))?,
                    src.linear(&n("ffn_down.weight"))?,
                )),
            };
            let post = |s: &str| -> Result<Option<RmsNorm>> {
                if cfg.post_norms {
                    Ok(Some(norm(&n(s))?))
                } else {
                    Ok(None)
                }
            };
            layers.push(Layer {
                attn_norm: norm(&n("attn_norm.weight"))?,
                attn,
                post_attn_norm: post("post_attention_norm.weight")?,
                ffn_norm: norm(&n("ffn_norm.weight"))?,
                mlp,
                post_ffn_norm: post("post_ffw_norm.weight")?,
            });
        }
        let embed_weight = src.linear("token_embd.weight")?;
        let embed = Embedding::of(&embed_weight, || src.tensor("token_embd.weight"))?;
        let (vocab, hidden) = embed.dims()?;
        if vocab as u64 != cfg.vocab_size || hidden as u64 != cfg.hidden_size {
            return Err(ModelError::Shape {
                name: "token_embd.weight".into(),
                found: vec![vocab, hidden],
                expected: vec![cfg.vocab_size as usize, cfg.hidden_size as usize],
            });
        }
        let head_tied = !src.has("output.weight") && cfg.tie_word_embeddings;
        let lm_head = if head_tied {
            // The table's own bytes, not a second copy.
            Linear::new(embed_weight, None)
        } else {
            // An untied model without its output head fails here, naming the tensor.
            Linear::new(src.linear("output.weight")?, None)
        };
        Ok(Decoder {
            config: cfg.clone(),
            embed,
            embed_scale: cfg.embedding_scale,
            layers,
            norm: norm("output_norm.weight")?,
            lm_head,
            head_tied,
            final_softcap: cfg.final_logit_softcap,
            device: device.clone(),
            served: Vec::new(),
            head_chunk_bytes: crate::training::HEAD_CHUNK_BYTES,
            qk_rows_interleaved: style == RopeStyle::Interleaved,
        })
    }

    /// Runs one step for a batch of sequences; returns per sequence logits `[n, vocab]` (f32),
    /// `n` the step's tokens with `all_logits`, else 1. The sequences' tokens go through the
    /// projections and MLPs as one matrix; attention runs per sequence over its own cache. A
    /// step that fails leaves every cache as it was.
    pub fn forward(&self, steps: &mut [SeqStep<'_>]) -> Result<Vec<Tensor>> {
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        for step in steps.iter() {
            self.check_tokens(step.tokens)?;
            if let Some(id) = step.adapter
                && !self.served.iter().any(|(s, _)| *s == id)
            {
                return Err(ModelError::Input(format!(
                    "a step names adapter {id}, which is not attached"
                )));
            }
        }
        let before: Vec<usize> = steps.iter().map(|s| s.cache.len()).collect();
        match self.run_layers(steps) {
            Ok(logits) => Ok(logits),
            Err(e) => {
                // Drop what the failed step appended, so the caches stay usable.
                for (step, &len) in steps.iter_mut().zip(&before) {
                    step.cache.truncate(len)?;
                }
                Err(e)
            }
        }
    }

    /// A step's tokens: at least one, each in the vocabulary.
    pub(crate) fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(ModelError::Input("a step needs at least one token".into()));
        }
        match tokens
            .iter()
            .find(|&&id| id as u64 >= self.config.vocab_size)
        {
            Some(bad) => Err(ModelError::Input(format!(
                "token id {bad} outside the vocabulary of {}",
                self.config.vocab_size
            ))),
            None => Ok(()),
        }
    }

    fn run_layers(&self, steps: &mut [SeqStep<'_>]) -> Result<Vec<Tensor>> {
        let tokens: Vec<&[u32]> = steps.iter().map(|s| s.tokens).collect();
        let mut x = self.embed_tokens(&tokens)?;
        let segments: Vec<(Option<AdapterId>, usize)> =
            steps.iter().map(|s| (s.adapter, s.tokens.len())).collect();
        let adapters = AdapterRows::new(&segments, &self.device)?;
        let mut masks = Masks::default();
        for i in 0..self.layers.len() {
            x = self.layer_forward(i, &x, steps, &mut masks, &adapters)?;
        }
        let outputs: Vec<HeadRows> = steps
            .iter_mut()
            .map(|step| {
                step.cache.advance(step.tokens.len());
                HeadRows {
                    tokens: step.tokens.len(),
                    all: step.all_logits,
                    adapter: step.adapter,
                }
            })
            .collect();
        self.head(&x, &outputs, adapters)
    }

    /// The embedding rows of `ids` as the first layer receives them (scaled where the model
    /// scales them), `[ids.len(), hidden]` row-major in f32.
    pub fn embed_rows(&self, ids: &[u32]) -> Result<Vec<f32>> {
        Ok(self
            .embed_tokens(&[ids])?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?)
    }

    /// The embeddings `[tokens, hidden]` of every sequence's tokens, one after another.
    pub(crate) fn embed_tokens(&self, tokens: &[&[u32]]) -> Result<Tensor> {
        let ids: Vec<u32> = tokens.iter().flat_map(|t| t.iter().copied()).collect();
        let x = self.embed.rows(&ids, &self.device)?;
        match self.embed_scale {
            // Gemma multiplies by sqrt(hidden) rounded to the activation dtype.
            Some(s) => Ok((x * f64::from(s as f32))?),
            None => Ok(x),
        }
    }

    /// Layer `i` over the hidden states `x` of `steps`' tokens (keys and values go to their
    /// caches).
    pub(crate) fn layer_forward(
        &self,
        i: usize,
        x: &Tensor,
        steps: &mut [SeqStep<'_>],
        masks: &mut Masks,
        adapters: &AdapterRows,
    ) -> Result<Tensor> {
        let layer = self
            .layers
            .get(i)
            .ok_or_else(|| ModelError::Input(format!("no layer {i}")))?;
        let h =
            layer
                .attn
                .forward_batch(&layer.attn_norm.forward(x)?, i, steps, masks, adapters)?;
        let h = match &layer.post_attn_norm {
            Some(n) => n.forward(&h)?,
            None => h,
        };
        let x = (x + h)?;
        let h = layer.mlp.forward(&layer.ffn_norm.forward(&x)?, adapters)?;
        let h = match &layer.post_ffn_norm {
            Some(n) => n.forward(&h)?,
            None => h,
        };
        Ok((x + h)?)
    }

    /// The final norm and the output head over the last layer's hidden states `x`: per sequence
    /// the logits (f32) of every row, or of its last row.
    pub(crate) fn head(
        &self,
        x: &Tensor,
        outputs: &[HeadRows],
        adapters: AdapterRows,
    ) -> Result<Vec<Tensor>> {
        // The rows whose logits are wanted: every row of `all` sequences, else the last.
        let mut rows = Vec::new();
        let mut counts = Vec::with_capacity(outputs.len());
        let mut head_segments = Vec::with_capacity(outputs.len());
        let mut offset = 0u32;
        for out in outputs {
            let t = out.tokens as u32;
            let n = if out.all {
                rows.extend(offset..offset + t);
                t as usize
            } else {
                rows.push(offset + t - 1);
                1
            };
            counts.push(n);
            head_segments.push((out.adapter, n));
            offset += t;
        }
        let x = if rows.len() as u32 == offset {
            x.clone()
        } else {
            x.index_select(&Tensor::new(rows.as_slice(), &self.device)?, 0)?
        };
        let head_adapters = if adapters.is_empty() {
            adapters
        } else {
            AdapterRows::new(&head_segments, &self.device)?
        };
        let mut logits = self
            .lm_head
            .forward_rows(&self.norm.forward(&x)?, &head_adapters)?
            .to_dtype(DType::F32)?;
        if let Some(cap) = self.final_softcap {
            logits = ((logits / cap)?.tanh()? * cap)?;
        }
        let mut out = Vec::with_capacity(counts.len());
        let mut row = 0;
        for n in counts {
            out.push(logits.narrow(0, row, n)?);
            row += n;
        }
        Ok(out)
    }

    /// Whether f32 activations on the CPU attend with the kernel that reads the KV cache in
    /// place (the default) or with the tensor path other devices use.
    pub fn set_fused_cpu_attention(&mut self, on: bool) {
        for l in &mut self.layers {
            l.attn.fused_cpu = on;
        }
    }

    /// Bounds the f32 attention scores the tensor path computes at once (default 64 MiB):
    /// prompts whose score matrix is larger are processed in chunks of query rows.
    pub fn set_score_block_bytes(&mut self, bytes: usize) {
        for l in &mut self.layers {
            l.attn.score_block_bytes = bytes.max(1);
        }
    }

    /// Bounds the f32 logits the training passes compute at once (default 16 MiB): the output
    /// head runs on that many bytes' worth of predicting rows at a time.
    pub fn set_head_chunk_bytes(&mut self, bytes: usize) {
        self.head_chunk_bytes = bytes.max(1);
    }

    /// How this decoder orders the q and k projections' output rows, against HF's.
    pub fn qk_row_order(&self) -> QkRowOrder {
        QkRowOrder {
            interleaved: self.qk_rows_interleaved,
            heads: self.config.num_heads as usize,
            kv_heads: self.config.num_kv_heads as usize,
            head_dim: self.config.head_dim as usize,
        }
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Where the weights and activations live.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype of activations, keys and values.
    pub fn activation_dtype(&self) -> DType {
        self.embed.dtype()
    }

    /// What the KV cache stores: f16 for f32 activations on the CPU (half the memory and
    /// bandwidth of f32, the default of `forja plan` and of llama.cpp), else the activation type.
    pub fn kv_dtype(&self) -> DType {
        match self.activation_dtype() {
            DType::F32 if self.device.is_cpu() => DType::F16,
            dtype => dtype,
        }
    }

    /// The logits `[tokens, vocab]` of every position of `tokens` read as one prompt from an
    /// empty cache kept in f32 (not [`Decoder::kv_dtype`]), so the arithmetic is the reference
    /// one: scoring a text, and comparisons with other implementations.
    pub fn prompt_logits(&self, tokens: &[u32]) -> Result<Tensor> {
        let mut cache = ContiguousKvCache::new(self.num_layers());
        let mut steps = [SeqStep {
            tokens,
            cache: &mut cache,
            all_logits: true,
            adapter: None,
        }];
        self.forward(&mut steps)?
            .into_iter()
            .next()
            .ok_or_else(|| ModelError::Input("a step gave no logits".into()))
    }

    /// How a paged KV pool groups this model's layers (every position, or a sliding window):
    /// the block manager's groups and the pool's buffers both follow it.
    pub fn kv_groups(&self) -> forja_arch::kv_cache::KvGroups {
        let windows: Vec<Option<u64>> = self
            .layers
            .iter()
            .map(|l| l.attn.window.map(|w| w as u64))
            .collect();
        forja_arch::kv_cache::KvGroups::for_layers(&windows)
    }

    /// An empty cache for one sequence, in [`Decoder::kv_dtype`], that keeps each sliding-window
    /// layer's window (plus a step) rather than the whole sequence.
    pub fn new_cache(&self) -> ContiguousKvCache {
        let windows: Vec<Option<usize>> = self.layers.iter().map(|l| l.attn.window).collect();
        ContiguousKvCache::for_layers(&windows, self.kv_dtype(), self.config.max_context as usize)
    }
}
