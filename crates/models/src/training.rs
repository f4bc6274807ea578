//! The decoder's training passes: the loss of predicting chosen tokens of whole sequences,
//! differentiated with respect to the trainable tensors (the LoRA adapters, or with full
//! fine-tuning every weight: [`Decoder::make_trainable`]), and the same loss without gradients.
//!
//! Backward needs what the forward pass computed. Either the forward keeps the graph of every
//! layer, or, with activation checkpointing ("gradient checkpointing"), it keeps only the hidden
//! states that enter each layer and backward recomputes one layer at a time, differentiates that
//! layer alone and hands the gradient of its input to the layer below: activation memory drops
//! from every layer's intermediates to one layer's, for one more forward pass of compute.
//!
//! Either way the output head runs only on the rows whose next token is predicted, a chunk of
//! rows at a time, each chunk differentiated on its own: the `[rows, vocab]` logits — the
//! largest activations of a small model — never exist for a whole sequence at once, and rows
//! that predict nothing (the prompt) cost no head computation.

use candle_core::backprop::GradStore;
use candle_core::{D, DType, Tensor, Var};

use crate::attention::{Masks, QkvProj};
use crate::decoder::{Decoder, HeadRows, Layer, SeqStep};
use crate::embedding::Embedding;
use crate::error::{ModelError, Result};
use crate::grad_ops::{self, FrozenWeight};
use crate::kv_cache::GraphKvCache;
use crate::linear::{Linear, LinearWeight};
use crate::lora::AdapterRows;
use crate::mlp::Mlp;

/// f32 logits computed at once by the output head (rows × vocabulary × 4 bytes), unless
/// [`Decoder::set_head_chunk_bytes`] says otherwise.
pub(crate) const HEAD_CHUNK_BYTES: usize = forja_arch::training::CPU_HEAD_BLOCK_BYTES as usize;

/// A predicted token: the row (of the sequences' tokens one after another) whose hidden state
/// predicts it, and the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub row: usize,
    pub token: u32,
}

/// Σ −log softmax(row)[target] over the rows of `logits` `[n, vocab]` (a differentiable scalar).
pub fn cross_entropy_sum(logits: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let logits = logits.to_dtype(DType::F32)?;
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_z = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?; // [n, 1]
    let targets = Tensor::from_vec(targets.to_vec(), (targets.len(), 1), logits.device())?;
    let picked = shifted.gather(&targets, 1)?; // [n, 1]
    Ok((log_z - picked)?.sum_all()?)
}

impl Layer {
    /// The projections of this layer that can carry a training adapter.
    fn linears(&self) -> Vec<&Linear> {
        let mut out = Vec::new();
        match &self.attn.qkv {
            QkvProj::Separate { q, k, v } => out.extend([q, k, v]),
            QkvProj::Fused(qkv) => out.push(qkv),
        }
        out.push(&self.attn.o);
        if let Mlp::Gated(m) = &self.mlp {
            out.extend(m.gate.as_ref());
            out.extend([&m.up, &m.down]);
        }
        out
    }

    /// Where each adapter's dropout stream stands (in [`Layer::linears`] order).
    fn dropout_states(&self) -> Vec<Option<u64>> {
        self.linears()
            .iter()
            .map(|l| l.lora.as_ref().map(|a| a.dropout_state()))
            .collect()
    }

    /// Puts the dropout streams back where [`Layer::dropout_states`] found them, so a recomputed
    /// forward draws the masks the first one drew.
    fn restore_dropout(&self, states: &[Option<u64>]) {
        for (l, s) in self.linears().iter().zip(states) {
            if let (Some(lora), Some(s)) = (&l.lora, s) {
                lora.seed_dropout(*s);
            }
        }
    }
}

/// A weight full fine-tuning trains: its name in an HF checkpoint of the model, and the
/// variable the decoder now reads.
#[derive(Debug, Clone)]
pub struct TrainedWeight {
    pub name: String,
    pub var: Var,
}

impl Decoder {
    /// Makes every weight a dense f32 training variable for full fine-tuning (quantized and
    /// 16-bit weights are dequantized; a tied output head stays the embedding table, one
    /// variable), each named as in an HF checkpoint. Refused for mixture-of-experts layers and
    /// with LoRA adapters attached.
    pub fn make_trainable(&mut self) -> Result<Vec<TrainedWeight>> {
        if self.layers.iter().any(|l| matches!(l.mlp, Mlp::Moe(_))) {
            return Err(ModelError::Unsupported(
                "full fine-tuning of a mixture-of-experts model".into(),
            ));
        }
        let adapted = self
            .linears_mut()
            .into_iter()
            .find(|(_, l)| l.lora.is_some() || !l.served.is_empty())
            .map(|(path, _)| path);
        if let Some(path) = adapted {
            // Checked before anything changes: a refused call leaves the decoder as it was.
            return Err(ModelError::Input(format!(
                "full fine-tuning with a LoRA adapter attached (at {path}): remove it first"
            )));
        }
        if !self.device().is_cpu() {
            return Err(ModelError::Unsupported(
                "full fine-tuning off the CPU (it trains in f32 on the CPU)".into(),
            ));
        }
        let family = self.config.family;
        let named = |gguf: &str| {
            crate::weight_source::hf_name(family, gguf)
                .ok_or_else(|| ModelError::Input(format!("no HF name for {gguf}")))
        };
        let mut out = Vec::new();
        // A stored (quantized or 16-bit) table is dequantized: it trains in f32.
        let embed = Var::from_tensor(&self.embed.to_dense(self.device())?)?;
        self.embed = Embedding::Dense(embed.as_tensor().clone());
        out.push(TrainedWeight {
            name: named("token_embd.weight")?,
            var: embed.clone(),
        });
        for (i, l) in self.layers.iter_mut().enumerate() {
            let norms = [
                ("attn_norm", Some(&mut l.attn_norm)),
                ("attn_q_norm", l.attn.q_norm.as_mut()),
                ("attn_k_norm", l.attn.k_norm.as_mut()),
                ("post_attention_norm", l.post_attn_norm.as_mut()),
                ("ffn_norm", Some(&mut l.ffn_norm)),
                ("post_ffw_norm", l.post_ffn_norm.as_mut()),
            ];
            for (name, norm) in norms {
                if let Some(norm) = norm {
                    out.push(TrainedWeight {
                        name: named(&format!("blk.{i}.{name}.weight"))?,
                        var: norm.make_trainable()?,
                    });
                }
            }
        }
        out.push(TrainedWeight {
            name: named("output_norm.weight")?,
            var: self.norm.make_trainable()?,
        });
        let tied = self.head_tied;
        for (path, linear) in self.linears_mut() {
            if path == "lm_head" && tied {
                linear.weight = LinearWeight::Dense(embed.as_tensor().clone());
                continue;
            }
            let (w, b) = linear
                .make_trainable()
                .map_err(|e| ModelError::Input(format!("{path}: {e}")))?;
            out.push(TrainedWeight {
                name: format!("{path}.weight"),
                var: w,
            });
            if let Some(b) = b {
                out.push(TrainedWeight {
                    name: format!("{path}.bias"),
                    var: b,
                });
            }
        }
        Ok(out)
    }

    /// The loss `scale · Σ −log p(target)` over `targets` of `seqs` (each a sequence from
    /// position 0), differentiated: `on_grads` receives each partial gradient store — the
    /// output head's, a chunk of rows at a time, then the layers' (all at once, or with
    /// `checkpointing` one at a time from the last down to the first). A trainable tensor's
    /// gradient is the sum of its entries in these stores. Returns the loss.
    ///
    /// With `checkpointing` the gradients are those of the ordinary pass: each recomputed layer
    /// draws the LoRA dropout masks its first forward drew, and the streams end where one
    /// forward leaves them.
    pub fn loss_backward<E>(
        &self,
        seqs: &[&[u32]],
        targets: &[Target],
        scale: f64,
        checkpointing: bool,
        mut on_grads: impl FnMut(&GradStore) -> std::result::Result<(), E>,
    ) -> std::result::Result<f64, E>
    where
        E: From<ModelError> + From<candle_core::Error>,
    {
        self.check_seqs(seqs, targets)?;
        let mut masks = Masks::default();
        // Full fine-tuning trains the embedding table: the graph starts at it.
        let embed_trained = self.embed.is_variable();
        let embedded = self.embed_tokens(seqs)?;
        let mut x = if embed_trained && !checkpointing {
            embedded
        } else {
            embedded.detach()
        };
        if !checkpointing {
            // The whole graph: every layer's intermediates stay until the backward below.
            for i in 0..self.layers.len() {
                x = self.layer_alone(i, &x, seqs, &mut masks)?;
            }
            let (loss, grad) = self.head_backward(&x.detach(), targets, scale, &mut on_grads)?;
            let surrogate = (x * grad)?.sum_all()?;
            on_grads(&surrogate.backward()?)?;
            return Ok(loss);
        }

        // Forward: keep each layer's input, detached, and where its dropout streams stood.
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut dropout = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            dropout.push(l.dropout_states());
            let next = self.layer_alone(i, &x, seqs, &mut masks)?.detach();
            inputs.push(x);
            x = next;
        }
        let (loss, mut grad) = self.head_backward(&x, targets, scale, &mut on_grads)?;
        drop(x);
        // Backward, one recomputed layer at a time.
        for i in (0..self.layers.len()).rev() {
            let (Some(input), Some(states)) = (inputs.pop(), dropout.get(i)) else {
                return Err(ModelError::Input(format!("no saved input for layer {i}")).into());
            };
            self.layers[i].restore_dropout(states);
            let input = Var::from_tensor(&input)?;
            let out = self.layer_alone(i, input.as_tensor(), seqs, &mut masks)?;
            // d(Σ out·grad)/d(param) is the chain rule's product with the gradient from above.
            let surrogate = (out * &grad)?.sum_all()?;
            let mut grads = surrogate.backward()?;
            on_grads(&grads)?;
            if i > 0 || embed_trained {
                grad = grads.remove(input.as_tensor()).ok_or_else(|| {
                    ModelError::Input(format!("layer {i}'s output does not depend on its input"))
                })?;
            }
        }
        if embed_trained {
            // The embedding table's gradient from the first layer's input's.
            let surrogate = (self.embed_tokens(seqs)? * &grad)?.sum_all()?;
            on_grads(&surrogate.backward()?)?;
        }
        Ok(loss)
    }

    /// `Σ −log p(target)` over `targets` of `seqs`, without gradients: each layer's output is
    /// detached as it is made, the head runs on the predicting rows a chunk at a time.
    pub fn loss_sum(&self, seqs: &[&[u32]], targets: &[Target]) -> Result<f64> {
        self.check_seqs(seqs, targets)?;
        let mut masks = Masks::default();
        let mut x = self.embed_tokens(seqs)?.detach();
        for i in 0..self.layers.len() {
            x = self.layer_alone(i, &x, seqs, &mut masks)?.detach();
        }
        let mut total = 0.0;
        for chunk in targets.chunks(self.head_call_rows(&x, targets.len())) {
            total += self.head_loss(&x, chunk)?.detach().to_scalar::<f32>()? as f64;
        }
        Ok(total)
    }

    fn check_seqs(&self, seqs: &[&[u32]], targets: &[Target]) -> Result<()> {
        if seqs.is_empty() {
            return Err(ModelError::Input("nothing to score: no sequences".into()));
        }
        for tokens in seqs {
            self.check_tokens(tokens)?;
        }
        let rows: usize = seqs.iter().map(|s| s.len()).sum();
        if let Some(t) = targets
            .iter()
            .find(|t| t.row >= rows || t.token as u64 >= self.config.vocab_size)
        {
            return Err(ModelError::Input(format!(
                "target {t:?} outside {rows} rows or the vocabulary of {}",
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    /// Layer `i` over every sequence of `seqs` from an empty cache (the cache holds only this
    /// layer's keys and values and is dropped with the call).
    fn layer_alone(
        &self,
        i: usize,
        x: &Tensor,
        seqs: &[&[u32]],
        masks: &mut Masks,
    ) -> Result<Tensor> {
        let mut caches: Vec<GraphKvCache> = seqs
            .iter()
            .map(|_| GraphKvCache::new(self.layers.len()))
            .collect();
        let mut steps = SeqStep::every_position(seqs, &mut caches);
        self.layer_forward(i, x, &mut steps, masks, &AdapterRows::none())
    }

    /// Head rows computed at once: `head_chunk_bytes` of f32 logits, at least one row.
    fn head_chunk_rows(&self) -> usize {
        (self.head_chunk_bytes / (4 * self.config.vocab_size.max(1) as usize)).max(1)
    }

    /// The logits of the rows of `x` that `targets` names, and the tokens they predict.
    /// The output head as one op that computes its logits a block at a time (contiguous f32
    /// on the CPU, a head without adapters or bias), if it applies.
    fn fused_head(&self, x: &Tensor) -> Option<FrozenWeight> {
        let head = &self.lm_head;
        let plain = head.lora.is_none() && head.served.is_empty() && head.bias.is_none();
        if !plain || !grad_ops::applies(x) {
            return None;
        }
        if self.head_tied
            && let Some(table) = self.embed.dense_f32()
        {
            // Full fine-tuning's variable (the head's weight is the table).
            return Some(FrozenWeight::Dense(table.clone()));
        }
        head.frozen_weight()
    }

    /// Rows of targets per call of [`Decoder::head_loss`]: all of them when the fused head
    /// bounds its own logits, else a chunk of `head_chunk_bytes`.
    fn head_call_rows(&self, x: &Tensor, targets: usize) -> usize {
        match self.fused_head(x) {
            Some(_) => targets.max(1),
            None => self.head_chunk_rows(),
        }
    }

    /// Σ cross-entropy of `targets` given the last layer's hidden states `x` (all rows), a
    /// scalar in the gradient graph when `x` is.
    fn head_loss(&self, x: &Tensor, targets: &[Target]) -> Result<Tensor> {
        let Some(weight) = self.fused_head(x) else {
            let (logits, tokens) = self.head_logits(x, targets)?;
            return cross_entropy_sum(&logits, &tokens);
        };
        let rows: Vec<u32> = targets.iter().map(|t| t.row as u32).collect();
        let picked = x.index_select(&Tensor::new(rows.as_slice(), x.device())?, 0)?;
        let tokens: Vec<u32> = targets.iter().map(|t| t.token).collect();
        grad_ops::head_loss(
            &self.norm.forward(&picked)?,
            weight,
            self.config.vocab_size as usize,
            &tokens,
            self.final_softcap,
            self.head_chunk_rows(),
        )
    }

    fn head_logits(&self, x: &Tensor, targets: &[Target]) -> Result<(Tensor, Vec<u32>)> {
        let rows: Vec<u32> = targets.iter().map(|t| t.row as u32).collect();
        let picked = x.index_select(&Tensor::new(rows.as_slice(), x.device())?, 0)?;
        let head = [HeadRows {
            tokens: rows.len(),
            all: true,
            adapter: None,
        }];
        let logits = self
            .head(&picked, &head, AdapterRows::none())?
            .into_iter()
            .next()
            .ok_or_else(|| ModelError::Input("the head gave no logits".into()))?;
        Ok((logits, targets.iter().map(|t| t.token).collect()))
    }

    /// The head's part of [`Decoder::loss_backward`] over the last hidden states `x`: the
    /// scaled loss, a chunk of rows at a time, each chunk's gradients handed to `on_grads`;
    /// returns the loss and its gradient with respect to `x`.
    fn head_backward<E>(
        &self,
        x: &Tensor,
        targets: &[Target],
        scale: f64,
        on_grads: &mut impl FnMut(&GradStore) -> std::result::Result<(), E>,
    ) -> std::result::Result<(f64, Tensor), E>
    where
        E: From<ModelError> + From<candle_core::Error>,
    {
        let last = Var::from_tensor(x)?;
        let mut grad = x.zeros_like()?;
        let mut loss = 0.0;
        for chunk in targets.chunks(self.head_call_rows(x, targets.len())) {
            let value = (self.head_loss(last.as_tensor(), chunk)? * scale)?;
            loss += value.to_scalar::<f32>()? as f64;
            let mut grads = value.backward()?;
            on_grads(&grads)?;
            if let Some(g) = grads.remove(last.as_tensor()) {
                grad = (grad + g)?;
            }
        }
        Ok((loss, grad))
    }
}
