//! Activation checkpointing ("gradient checkpointing") for training: the forward pass keeps only
//! the hidden states that enter each layer, and the backward pass recomputes one layer's forward
//! at a time, differentiates that layer alone, and hands the gradient of its input to the layer
//! below. Activation memory drops from every layer's intermediates to one layer's, for one more
//! forward pass of compute.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::attention::{Masks, QkvProj};
use crate::decoder::{Decoder, HeadRows, Layer, SeqStep};
use crate::error::ModelError;
use crate::kv_cache::GraphKvCache;
use crate::linear::Linear;
use crate::lora::AdapterRows;
use crate::mlp::Mlp;

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

impl Decoder {
    /// Forward and backward over `seqs` (each a sequence from position 0, every position's
    /// logits) with activation checkpointing. `loss` maps the per-sequence logits `[n, vocab]`
    /// to a scalar; `on_grads` receives each partial gradient store — the output head's, then
    /// each layer's from the last down to the first — in which every trainable tensor (the
    /// adapters) has its gradient in exactly one store. Returns the loss (detached).
    ///
    /// The gradients are those of an ordinary backward pass: each recomputed layer draws the
    /// LoRA dropout masks its first forward drew, and the streams end where one forward leaves
    /// them.
    pub fn backward_checkpointed<E>(
        &self,
        seqs: &[&[u32]],
        loss: impl FnOnce(&[Tensor]) -> Result<Tensor, E>,
        mut on_grads: impl FnMut(&GradStore) -> Result<(), E>,
    ) -> Result<Tensor, E>
    where
        E: From<ModelError> + From<candle_core::Error>,
    {
        if seqs.is_empty() {
            return Err(ModelError::Input("nothing to train on: no sequences".into()).into());
        }
        for tokens in seqs {
            self.check_tokens(tokens)?;
        }
        let adapters = AdapterRows::none();
        let mut masks = Masks::default();
        // One layer over every sequence from an empty cache (the cache holds only this layer's
        // keys and values and is dropped with the call).
        let mut layer = |i: usize, x: &Tensor| -> crate::Result<Tensor> {
            let mut caches: Vec<GraphKvCache> = seqs
                .iter()
                .map(|_| GraphKvCache::new(self.layers.len()))
                .collect();
            let mut steps = SeqStep::every_position(seqs, &mut caches);
            self.layer_forward(i, x, &mut steps, &mut masks, &adapters)
        };

        // Forward: keep each layer's input, detached, and where its dropout streams stood.
        let mut inputs = Vec::with_capacity(self.layers.len() + 1);
        let mut dropout = Vec::with_capacity(self.layers.len());
        let mut x = self.embed_tokens(seqs)?.detach();
        for (i, l) in self.layers.iter().enumerate() {
            dropout.push(l.dropout_states());
            let next = layer(i, &x)?.detach();
            inputs.push(x);
            x = next;
        }

        // The head and the loss, differentiated with respect to the last hidden states.
        let last = Var::from_tensor(&x)?;
        drop(x);
        let rows: Vec<HeadRows> = seqs
            .iter()
            .map(|t| HeadRows {
                tokens: t.len(),
                all: true,
                adapter: None,
            })
            .collect();
        let logits = self.head(last.as_tensor(), &rows, AdapterRows::none())?;
        let value = loss(&logits)?;
        drop(logits);
        let grads = value.backward()?;
        on_grads(&grads)?;
        let mut grad = take_grad(grads, last.as_tensor())?;

        // Backward, one recomputed layer at a time.
        for i in (0..self.layers.len()).rev() {
            let (Some(input), Some(states)) = (inputs.pop(), dropout.get(i)) else {
                return Err(ModelError::Input(format!("no saved input for layer {i}")).into());
            };
            self.layers[i].restore_dropout(states);
            let input = Var::from_tensor(&input)?;
            let out = layer(i, input.as_tensor())?;
            // d(Σ out·grad)/d(param) is the chain rule's product with the gradient from above.
            let surrogate = (out * &grad)?.sum_all()?;
            let grads = surrogate.backward()?;
            on_grads(&grads)?;
            if i > 0 {
                grad = take_grad(grads, input.as_tensor())?;
            }
        }
        Ok(value.detach())
    }
}

/// The gradient of `of` in `grads` (every hidden state is on the loss's path).
fn take_grad(mut grads: GradStore, of: &Tensor) -> crate::Result<Tensor> {
    grads
        .remove(of)
        .ok_or_else(|| ModelError::Input("the loss does not depend on the hidden states".into()))
}
