//! The KV cache seam. The decoder appends each step's keys and values and reads back what a
//! layer attends to; storage is the cache's business (a contiguous cache here, a paged block
//! pool in the server).

use candle_core::{DType, Tensor};
use forja_arch::kv_cache::first_visible;

use crate::error::{ModelError, Result};

/// Keys and values of one sequence, per layer.
pub trait KvCache {
    /// Tokens already cached: the absolute position of the next token.
    fn len(&self) -> usize;

    /// Whether nothing is cached yet.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `k`, `v` (`[kv_heads, new_tokens, head_dim]`) to `layer` and returns the keys and
    /// values the step's queries may see, in position order: every position from
    /// [`KvSpan::first`] (0 unless the layer has a sliding window) to the end of the step.
    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<KvSpan>;

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

    /// Whether [`KvCache::truncate`] can keep `len` tokens: a cache whose sliding-window layers
    /// dropped old positions can only go back as far as their windows still reach.
    fn can_keep(&self, len: usize) -> bool {
        len <= self.len()
    }

    /// Keeps the first `len` tokens of every layer (`len ≤ self.len()`, see
    /// [`KvCache::can_keep`]), dropping the rest and anything appended since the last
    /// [`KvCache::advance`] (a step that failed midway).
    fn truncate(&mut self, len: usize) -> Result<()>;
}

/// What [`KvCache::append`] returns: keys and values `[kv_heads, positions, head_dim]` of
/// positions `first..` up to the end of the step.
#[derive(Debug, Clone)]
pub struct KvSpan {
    pub keys: Tensor,
    pub values: Tensor,
    /// The position of the first key.
    pub first: usize,
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

/// Positions a block of a ring layer's table covers; a ring's capacity is a multiple of it.
pub(crate) const RING_BLOCK: usize = forja_arch::kv_cache::KV_RING_ALIGN as usize;

/// One layer of a [`ContiguousKvCache`].
#[derive(Debug, Default)]
struct ContiguousLayer {
    /// Keys and values `[capacity, kv_heads, head_dim]`, once written.
    kv: Option<(Tensor, Tensor)>,
    /// A sliding-window layer's window: its buffer stops growing at the window plus a step
    /// (`ring_capacity`) and position `p` then lives in slot `p % capacity`.
    window: Option<usize>,
    /// Positions below this were overwritten by later ones (ring layers; 0 otherwise).
    oldest: usize,
    /// One past the last position written to the buffer, kept or not.
    written: usize,
    /// Block `i` of positions is block `table[i]` of the buffer, once the ring has wrapped.
    table: Vec<u32>,
}

impl ContiguousLayer {
    fn capacity(&self) -> Result<usize> {
        Ok(match &self.kv {
            Some((k, _)) => k.dim(0)?,
            None => 0,
        })
    }

    /// Whether positions are no longer their own slots.
    fn wrapped(&self) -> Result<bool> {
        Ok(self.written > self.capacity()?)
    }

    /// The buffer slots of positions `lo..hi` (`hi − lo ≤ capacity`), as at most two runs
    /// `(first slot, positions)`.
    fn runs(&self, lo: usize, hi: usize) -> Result<Vec<(usize, usize)>> {
        let cap = self.capacity()?;
        if !self.wrapped()? {
            return Ok(vec![(lo, hi - lo)]);
        }
        let first = lo % cap;
        let head = (cap - first).min(hi - lo);
        let mut runs = vec![(first, head)];
        if head < hi - lo {
            runs.push((0, hi - lo - head));
        }
        Ok(runs)
    }

    /// Positions `lo..hi` of keys and values, `[hi − lo, kv_heads, head_dim]`.
    fn gather(&self, lo: usize, hi: usize) -> Result<(Tensor, Tensor)> {
        let (kc, vc) = self
            .kv
            .as_ref()
            .ok_or_else(|| ModelError::Input("KV cache layer read before any write".into()))?;
        let runs = self.runs(lo, hi)?;
        let pick = |t: &Tensor| -> Result<Tensor> {
            let parts = runs
                .iter()
                .map(|&(s, n)| t.narrow(0, s, n))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Ok(if parts.len() == 1 {
                parts[0].clone()
            } else {
                Tensor::cat(&parts, 0)?
            })
        };
        Ok((pick(kc)?, pick(vc)?))
    }

    /// Keeps the buffer's slots in step with the positions `..self.written`.
    fn update_table(&mut self) -> Result<()> {
        let cap = self.capacity()?;
        if !self.wrapped()? {
            self.table.clear();
            return Ok(());
        }
        if !cap.is_multiple_of(RING_BLOCK) {
            return Err(ModelError::Input(format!(
                "a ring of {cap} slots is not whole blocks of {RING_BLOCK}"
            )));
        }
        let per = cap / RING_BLOCK;
        self.table.clear();
        self.table
            .extend((0..self.written.div_ceil(RING_BLOCK)).map(|i| (i % per) as u32));
        Ok(())
    }
}

/// Slots a sliding-window layer of `window` keeps while a step writes `new` tokens (the rule
/// the planner prices).
fn ring_capacity(window: usize, new: usize) -> usize {
    forja_arch::kv_cache::sliding_kv_slots(window as u64, new as u64) as usize
}

/// One buffer per layer for keys and one for values, `[capacity, kv_heads, head_dim]`, grown
/// by doubling up to the model's context: a token's keys are written once, never copied by
/// later steps. A sliding-window layer's buffer stops at its window plus a step's tokens and
/// then wraps around (position `p` in slot `p % capacity`), so it keeps what the layer attends
/// to, not the whole sequence; kernels read it through a block table.
#[derive(Debug, Default)]
pub struct ContiguousKvCache {
    layers: Vec<ContiguousLayer>,
    len: usize,
    /// Storage type; `None`: the type of the first keys written.
    dtype: Option<DType>,
    /// The most slots a buffer grows to in one go (the model's context); a step past it still
    /// gets room.
    limit: Option<usize>,
}

impl ContiguousKvCache {
    /// A cache that stores keys and values in the type they come in and keeps every token of
    /// every layer.
    pub fn new(num_layers: usize) -> Self {
        ContiguousKvCache {
            layers: (0..num_layers)
                .map(|_| ContiguousLayer::default())
                .collect(),
            len: 0,
            dtype: None,
            limit: None,
        }
    }

    /// A cache that stores keys and values as `dtype` (see `Decoder::kv_dtype`).
    pub fn with_dtype(num_layers: usize, dtype: DType) -> Self {
        ContiguousKvCache {
            dtype: Some(dtype),
            ..Self::new(num_layers)
        }
    }

    /// A cache in `dtype` for layers with these sliding windows (`None`: the layer sees every
    /// token), whose buffers grow to at most `context` slots unless a step needs more.
    pub fn for_layers(windows: &[Option<usize>], dtype: DType, context: usize) -> Self {
        ContiguousKvCache {
            layers: windows
                .iter()
                .map(|&window| ContiguousLayer {
                    window: window.filter(|&w| w > 0),
                    ..ContiguousLayer::default()
                })
                .collect(),
            len: 0,
            dtype: Some(dtype),
            limit: Some(context.max(1)),
        }
    }

    /// Positions layer `layer`'s buffers have room for (0 before its first write).
    pub fn capacity(&self, layer: usize) -> Result<usize> {
        self.layers
            .get(layer)
            .map_or(Ok(0), ContiguousLayer::capacity)
    }

    fn layer(&self, layer: usize) -> Result<&ContiguousLayer> {
        self.layers
            .get(layer)
            .filter(|l| l.kv.is_some())
            .ok_or_else(|| ModelError::Input(format!("KV cache has nothing for layer {layer}")))
    }

    /// The capacity layer `l` needs so that positions `..end` (`new` of them this step) fit,
    /// or `None` when it has it.
    fn needed_capacity(
        &self,
        l: &ContiguousLayer,
        end: usize,
        new: usize,
    ) -> Result<Option<usize>> {
        let cap = l.capacity()?;
        let ring = l.window.map(|w| ring_capacity(w, new));
        if end <= cap || ring.is_some_and(|r| cap >= r) {
            return Ok(None);
        }
        let doubled = end.next_power_of_two().max(2 * cap).max(64);
        let grown = self.limit.map_or(doubled, |c| doubled.min(c.max(end)));
        Ok(Some(ring.map_or(grown, |r| grown.min(r))))
    }
}

impl KvCache for ContiguousKvCache {
    fn len(&self) -> usize {
        self.len
    }

    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<KvSpan> {
        let k = k.transpose(0, 1)?.contiguous()?;
        let v = v.transpose(0, 1)?.contiguous()?;
        self.write(layer, &k, &v)?;
        let end = self.len + k.dim(0)?;
        let l = self.layer(layer)?;
        // A sliding layer returns what this step's queries can see.
        let first = first_visible(self.len, l.window).max(l.oldest);
        let (keys, values) = l.gather(first, end)?;
        Ok(KvSpan {
            keys: keys.transpose(0, 1)?,
            values: values.transpose(0, 1)?,
            first,
        })
    }

    fn write(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        let len = self.len;
        let (new, heads, dim) = k.dims3()?;
        let end = len + new;
        let l = self
            .layers
            .get(layer)
            .ok_or_else(|| ModelError::Input(format!("KV cache has no layer {layer}")))?;
        if let Some(cap) = self.needed_capacity(l, end, new)? {
            let (h, d, dtype) = match &l.kv {
                Some((kc, _)) => (kc.dim(1)?, kc.dim(2)?, kc.dtype()),
                None => (heads, dim, self.dtype.unwrap_or(k.dtype())),
            };
            let zeros = || Tensor::zeros((cap, h, d), dtype, k.device());
            let (kn, vn) = (zeros()?, zeros()?);
            // What the old buffer kept, at its slots in the new one.
            let kept = match &l.kv {
                Some(_) if len > l.oldest => Some(l.gather(l.oldest, len)?),
                _ => None,
            };
            let from = l.oldest;
            let l = &mut self.layers[layer];
            l.kv = Some((kn, vn));
            l.written = len;
            if let Some((ko, vo)) = kept {
                put(l, from, &ko, &vo)?;
            }
        }
        let l = &mut self.layers[layer];
        let (kc, _) = l
            .kv
            .as_ref()
            .ok_or_else(|| ModelError::Input(format!("KV cache layer {layer} has no buffer")))?;
        let (_, h, d) = kc.dims3()?;
        if (heads, dim) != (h, d) || v.dims3()? != (new, h, d) {
            return Err(ModelError::Input(format!(
                "keys {:?} and values {:?} for a cache of {h} heads × {d}",
                k.dims(),
                v.dims()
            )));
        }
        l.written = len;
        put(l, len, k, v)?;
        let cap = l.capacity()?;
        l.oldest = l.oldest.max(end.saturating_sub(cap));
        Ok(())
    }

    fn view(&self, layer: usize) -> Result<KvView<'_>> {
        let l = self.layer(layer)?;
        let (keys, values) = l
            .kv
            .as_ref()
            .ok_or_else(|| ModelError::Input(format!("KV cache has nothing for layer {layer}")))?;
        Ok(KvView {
            keys,
            values,
            blocks: if l.table.is_empty() {
                None
            } else {
                Some((&l.table, RING_BLOCK))
            },
        })
    }

    fn advance(&mut self, new_tokens: usize) {
        self.len += new_tokens;
    }

    fn can_keep(&self, len: usize) -> bool {
        len == 0
            || (len <= self.len
                && self
                    .layers
                    .iter()
                    .all(|l| first_visible(len, l.window) >= l.oldest))
    }

    fn truncate(&mut self, len: usize) -> Result<()> {
        check_keep(len, self.len)?;
        if !self.can_keep(len) {
            return Err(ModelError::Input(format!(
                "cannot keep {len} tokens: the sliding-window layers no longer hold the positions before them"
            )));
        }
        // Positions past `len` are overwritten by the next write.
        self.len = len;
        if len == 0 {
            for l in &mut self.layers {
                l.oldest = 0;
            }
        }
        Ok(())
    }
}

/// Writes `k`, `v` (`[n, kv_heads, head_dim]`) at positions `at..at + n` of a layer whose
/// buffer holds them (`n ≤ capacity`), and records them as written.
fn put(l: &mut ContiguousLayer, at: usize, k: &Tensor, v: &Tensor) -> Result<()> {
    let n = k.dim(0)?;
    l.written = l.written.max(at + n);
    let runs = l.runs(at, at + n)?;
    let (kc, vc) = l
        .kv
        .as_ref()
        .ok_or_else(|| ModelError::Input("KV cache layer written before it has a buffer".into()))?;
    let mut i = 0;
    for (slot, run) in runs {
        kc.slice_set(&k.narrow(0, i, run)?.to_dtype(kc.dtype())?, 0, slot)?;
        vc.slice_set(&v.narrow(0, i, run)?.to_dtype(vc.dtype())?, 0, slot)?;
        i += run;
    }
    l.update_table()
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

    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<KvSpan> {
        self.write(layer, &k.transpose(0, 1)?, &v.transpose(0, 1)?)?;
        let (k, v) = self.layer(layer)?;
        Ok(KvSpan {
            keys: k.transpose(0, 1)?,
            values: v.transpose(0, 1)?,
            first: 0,
        })
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
