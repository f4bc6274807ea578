//! The KV cache seam. The decoder appends each step's keys and values and reads back what a
//! layer attends to; storage is the cache's business (a contiguous cache here, a paged block
//! pool in the server).

use candle_core::Tensor;

use crate::error::Result;

/// Keys and values of one sequence, per layer.
pub trait KvCache {
    /// Tokens already cached: the absolute position of the next token.
    fn len(&self) -> usize;

    /// Whether nothing is cached yet.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `k`, `v` (`[kv_heads, new_tokens, head_dim]`) to `layer` and returns every key and
    /// value the layer holds for this sequence (`[kv_heads, cached + new, head_dim]`).
    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)>;

    /// Records that a step of `new_tokens` finished (all layers appended).
    fn advance(&mut self, new_tokens: usize);

    /// Keeps the first `len` tokens of every layer (`len ≤ self.len()`), dropping the rest and
    /// anything appended since the last [`KvCache::advance`] (a step that failed midway).
    fn truncate(&mut self, len: usize) -> Result<()>;
}

/// One growing tensor per layer.
#[derive(Debug, Default)]
pub struct ContiguousKvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl ContiguousKvCache {
    pub fn new(num_layers: usize) -> Self {
        ContiguousKvCache {
            layers: (0..num_layers).map(|_| None).collect(),
            len: 0,
        }
    }
}

impl KvCache for ContiguousKvCache {
    fn len(&self) -> usize {
        self.len
    }

    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let slot = self.layers.get_mut(layer).ok_or_else(|| {
            crate::error::ModelError::Input(format!("KV cache has no layer {layer}"))
        })?;
        let (k, v) = match slot.take() {
            None => (k.clone(), v.clone()),
            Some((pk, pv)) => (Tensor::cat(&[&pk, k], 1)?, Tensor::cat(&[&pv, v], 1)?),
        };
        *slot = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    fn advance(&mut self, new_tokens: usize) {
        self.len += new_tokens;
    }

    fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            return Err(crate::error::ModelError::Input(format!(
                "cannot keep {len} tokens of a cache holding {}",
                self.len
            )));
        }
        for slot in &mut self.layers {
            *slot = match slot.take() {
                Some(_) if len == 0 => None,
                Some((k, v)) => Some((k.narrow(1, 0, len)?, v.narrow(1, 0, len)?)),
                None => None,
            };
        }
        self.len = len;
        Ok(())
    }
}
