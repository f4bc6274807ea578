//! The KV cache seam. The decoder appends each step's keys and values and reads back what a
//! layer attends to; storage is the cache's business (a contiguous cache here, a paged block
//! pool in the server).

use candle_core::{DType, Tensor};

use crate::error::{ModelError, Result};

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

    /// Writes `k`, `v` (`[new_tokens, kv_heads, head_dim]`, token-major as the cache stores
    /// them) to `layer` at positions `len()..`, for kernels that then read the cache in place
    /// through [`KvCache::view`].
    fn write(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<()>;

    /// Where `layer`'s keys and values are, after [`KvCache::write`] or [`KvCache::append`].
    fn view(&self, layer: usize) -> Result<KvView<'_>>;

    /// Whether kernels may read this cache in place through [`KvCache::view`]. A cache that
    /// says no (a step that trains: its keys and values must stay part of the gradient graph)
    /// keeps attention on the tensor path, which goes through [`KvCache::append`].
    fn reads_in_place(&self) -> bool {
        true
    }

    /// Records that a step of `new_tokens` finished (all layers appended).
    fn advance(&mut self, new_tokens: usize);

    /// Keeps the first `len` tokens of every layer (`len ≤ self.len()`), dropping the rest and
    /// anything appended since the last [`KvCache::advance`] (a step that failed midway).
    fn truncate(&mut self, len: usize) -> Result<()>;
}

/// Where one layer's keys and values live, for kernels that read them in place: `keys` and
/// `values` are `[slots, kv_heads, head_dim]`, position `p` of the sequence is in slot `p` or,
/// with a block table, in slot `table[p / block_size] · block_size + p % block_size`.
#[derive(Debug, Clone, Copy)]
pub struct KvView<'a> {
    pub keys: &'a Tensor,
    pub values: &'a Tensor,
    /// `(block table, block size)`; `None` when positions are slots.
    pub blocks: Option<(&'a [u32], usize)>,
}

impl<'a> KvView<'a> {
    /// Keys and values whose slot is the position (no block table).
    pub fn slots(keys: &'a Tensor, values: &'a Tensor) -> Self {
        KvView {
            keys,
            values,
            blocks: None,
        }
    }
}

/// Layer `layer` of a cache that stores `(keys, values)` per layer once written.
fn stored_layer(layers: &[Option<(Tensor, Tensor)>], layer: usize) -> Result<&(Tensor, Tensor)> {
    layers
        .get(layer)
        .and_then(Option::as_ref)
        .ok_or_else(|| ModelError::Input(format!("KV cache has nothing for layer {layer}")))
}

/// A cache holding `held` tokens can keep `len` of them.
fn check_keep(len: usize, held: usize) -> Result<()> {
    if len > held {
        return Err(ModelError::Input(format!(
            "cannot keep {len} tokens of a cache holding {held}"
        )));
    }
    Ok(())
}

/// One buffer per layer for keys and one for values, `[capacity, kv_heads, head_dim]`, grown
/// by doubling: a token's keys are written once, never copied by later steps.
#[derive(Debug, Default)]
pub struct ContiguousKvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    /// Storage type; `None`: the type of the first keys written.
    dtype: Option<DType>,
}

impl ContiguousKvCache {
    /// A cache that stores keys and values in the type they come in.
    pub fn new(num_layers: usize) -> Self {
        ContiguousKvCache {
            layers: (0..num_layers).map(|_| None).collect(),
            len: 0,
            dtype: None,
        }
    }

    /// A cache that stores keys and values as `dtype` (see `Decoder::kv_dtype`).
    pub fn with_dtype(num_layers: usize, dtype: DType) -> Self {
        ContiguousKvCache {
            dtype: Some(dtype),
            ..Self::new(num_layers)
        }
    }

    fn layer(&self, layer: usize) -> Result<&(Tensor, Tensor)> {
        stored_layer(&self.layers, layer)
    }
}

impl KvCache for ContiguousKvCache {
    fn len(&self) -> usize {
        self.len
    }

    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let k = k.transpose(0, 1)?.contiguous()?;
        let v = v.transpose(0, 1)?.contiguous()?;
        self.write(layer, &k, &v)?;
        let total = self.len + k.dim(0)?;
        let (kc, vc) = self.layer(layer)?;
        Ok((
            kc.narrow(0, 0, total)?.transpose(0, 1)?,
            vc.narrow(0, 0, total)?.transpose(0, 1)?,
        ))
    }

    fn write(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        let len = self.len;
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| ModelError::Input(format!("KV cache has no layer {layer}")))?;
        let (new, heads, dim) = k.dims3()?;
        let needed = len + new;
        let grown = match slot.take() {
            None => {
                let cap = needed.next_power_of_two().max(64);
                let dtype = self.dtype.unwrap_or(k.dtype());
                let zeros = || Tensor::zeros((cap, heads, dim), dtype, k.device());
                (zeros()?, zeros()?)
            }
            Some((kc, vc)) if kc.dim(0)? < needed => {
                let cap = kc.dim(0)?;
                let extra = needed.next_power_of_two().max(2 * cap) - cap;
                let more = Tensor::zeros((extra, heads, dim), kc.dtype(), kc.device())?;
                (
                    Tensor::cat(&[&kc, &more], 0)?,
                    Tensor::cat(&[&vc, &more], 0)?,
                )
            }
            Some(kv) => kv,
        };
        let (kc, vc) = slot.insert(grown);
        let (_, h, d) = kc.dims3()?;
        if (heads, dim) != (h, d) || v.dims3()? != (new, h, d) {
            return Err(ModelError::Input(format!(
                "keys {:?} and values {:?} for a cache of {h} heads × {d}",
                k.dims(),
                v.dims()
            )));
        }
        kc.slice_set(&k.to_dtype(kc.dtype())?, 0, len)?;
        vc.slice_set(&v.to_dtype(vc.dtype())?, 0, len)?;
        Ok(())
    }

    fn view(&self, layer: usize) -> Result<KvView<'_>> {
        let (keys, values) = self.layer(layer)?;
        Ok(KvView::slots(keys, values))
    }

    fn advance(&mut self, new_tokens: usize) {
        self.len += new_tokens;
    }

    fn truncate(&mut self, len: usize) -> Result<()> {
        check_keep(len, self.len)?;
        // Positions past `len` are overwritten by the next write.
        self.len = len;
        Ok(())
    }
}

/// A cache whose keys and values stay part of the gradient graph, for steps that train: each
/// append joins the new tensors to the old ones (`cat`, a differentiable op) instead of writing
/// into a buffer in place, so gradients reach the projections that made them. Training runs a
/// whole sequence in one step, so the copying a `cat` per step costs never adds up.
#[derive(Debug)]
pub struct GraphKvCache {
    /// Per layer `[tokens, kv_heads, head_dim]`, token-major as the other caches.
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl GraphKvCache {
    pub fn new(num_layers: usize) -> Self {
        GraphKvCache {
            layers: (0..num_layers).map(|_| None).collect(),
            len: 0,
        }
    }

    fn layer(&self, layer: usize) -> Result<&(Tensor, Tensor)> {
        stored_layer(&self.layers, layer)
    }
}

impl KvCache for GraphKvCache {
    fn len(&self) -> usize {
        self.len
    }

    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        self.write(layer, &k.transpose(0, 1)?, &v.transpose(0, 1)?)?;
        let (k, v) = self.layer(layer)?;
        Ok((k.transpose(0, 1)?, v.transpose(0, 1)?))
    }

    fn write(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        let len = self.len;
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| ModelError::Input(format!("KV cache has no layer {layer}")))?;
        let joined = match slot.take() {
            None => (k.clone(), v.clone()),
            Some((kc, vc)) => {
                // Drop what a failed step appended past `len` before joining.
                let kc = kc.narrow(0, 0, len)?;
                let vc = vc.narrow(0, 0, len)?;
                (Tensor::cat(&[&kc, k], 0)?, Tensor::cat(&[&vc, v], 0)?)
            }
        };
        *slot = Some(joined);
        Ok(())
    }

    fn view(&self, layer: usize) -> Result<KvView<'_>> {
        let (keys, values) = self.layer(layer)?;
        Ok(KvView::slots(keys, values))
    }

    fn reads_in_place(&self) -> bool {
        false
    }

    fn advance(&mut self, new_tokens: usize) {
        self.len += new_tokens;
    }

    fn truncate(&mut self, len: usize) -> Result<()> {
        check_keep(len, self.len)?;
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.narrow(0, 0, len)?;
            *v = v.narrow(0, 0, len)?;
        }
        self.len = len;
        Ok(())
    }
}
