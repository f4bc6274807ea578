//! KV storage in fixed-size blocks shared by many sequences: one preallocated tensor per layer
//! for keys and one for values, `[blocks · block_size, kv_heads, head_dim]`. Which blocks a
//! sequence owns is decided elsewhere (the server's block manager); a [`PagedSeq`] is one
//! sequence's view through its block table and implements [`KvCache`] for the decoder.

use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};
use crate::kv_cache::{KvCache, KvSpan, KvView};

/// Preallocated keys and values of every layer, addressed by slot
/// (`block · block_size + offset`).
#[derive(Debug)]
pub struct PagedKvStore {
    layers: Vec<(Tensor, Tensor)>,
    block_size: usize,
    num_blocks: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl PagedKvStore {
    /// Allocates `num_blocks` blocks of `block_size` tokens for `num_layers` layers of
    /// `kv_heads` heads of `head_dim` values each, in `dtype`.
    pub fn new(
        num_layers: usize,
        num_blocks: usize,
        block_size: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if num_blocks == 0 || block_size == 0 {
            return Err(ModelError::Input(format!(
                "a paged KV store needs blocks and slots (got {num_blocks} blocks of {block_size})"
            )));
        }
        let shape = (num_blocks * block_size, kv_heads, head_dim);
        let layers = (0..num_layers)
            .map(|_| {
                Ok((
                    Tensor::zeros(shape, dtype, device)?,
                    Tensor::zeros(shape, dtype, device)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PagedKvStore {
            layers,
            block_size,
            num_blocks,
            kv_heads,
            head_dim,
        })
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// The view of one sequence holding `len` computed tokens in `blocks`.
    pub fn sequence<'a>(&'a self, blocks: &'a [u32], len: usize) -> PagedSeq<'a> {
        PagedSeq {
            store: self,
            blocks,
            len,
        }
    }

    fn layer(&self, layer: usize) -> Result<&(Tensor, Tensor)> {
        self.layers
            .get(layer)
            .ok_or_else(|| ModelError::Input(format!("KV store has no layer {layer}")))
    }

    fn slot(&self, blocks: &[u32], pos: usize) -> Result<usize> {
        let block = blocks.get(pos / self.block_size).ok_or_else(|| {
            ModelError::Input(format!(
                "position {pos} is beyond the {} blocks given to the sequence",
                blocks.len()
            ))
        })?;
        let block = *block as usize;
        if block >= self.num_blocks {
            return Err(ModelError::Input(format!(
                "block {block} outside a store of {} blocks",
                self.num_blocks
            )));
        }
        Ok(block * self.block_size + pos % self.block_size)
    }
}

/// One sequence's keys and values in a [`PagedKvStore`].
#[derive(Debug)]
pub struct PagedSeq<'a> {
    store: &'a PagedKvStore,
    blocks: &'a [u32],
    len: usize,
}

impl KvCache for PagedSeq<'_> {
    fn len(&self) -> usize {
        self.len
    }

    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<KvSpan> {
        // [heads, new, dim] → [new, heads, dim], the slot-major layout of the store.
        let k = k.transpose(0, 1)?.contiguous()?;
        let v = v.transpose(0, 1)?.contiguous()?;
        self.write(layer, &k, &v)?;
        let store = self.store;
        let (kc, vc) = store.layer(layer)?;
        let total = self.len + k.dim(0)?;
        let slots = (0..total)
            .map(|p| store.slot(self.blocks, p).map(|s| s as u32))
            .collect::<Result<Vec<u32>>>()?;
        let slots = Tensor::new(slots.as_slice(), kc.device())?;
        Ok(KvSpan {
            keys: kc.index_select(&slots, 0)?.transpose(0, 1)?,
            values: vc.index_select(&slots, 0)?.transpose(0, 1)?,
            first: 0,
        })
    }

    fn write(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        let store = self.store;
        let (kc, vc) = store.layer(layer)?;
        let (new, heads, dim) = k.dims3()?;
        if heads != store.kv_heads || dim != store.head_dim || v.dims3()? != (new, heads, dim) {
            return Err(ModelError::Input(format!(
                "keys {:?} and values {:?} for a store of {} heads × {}",
                k.dims(),
                v.dims(),
                store.kv_heads,
                store.head_dim
            )));
        }
        let k = k.to_dtype(kc.dtype())?;
        let v = v.to_dtype(vc.dtype())?;
        // Write each run of tokens that falls in one block at once.
        let mut i = 0;
        while i < new {
            let pos = self.len + i;
            let slot = store.slot(self.blocks, pos)?;
            let run = (store.block_size - pos % store.block_size).min(new - i);
            kc.slice_set(&k.narrow(0, i, run)?, 0, slot)?;
            vc.slice_set(&v.narrow(0, i, run)?, 0, slot)?;
            i += run;
        }
        Ok(())
    }

    fn view(&self, layer: usize) -> Result<KvView<'_>> {
        let (keys, values) = self.store.layer(layer)?;
        Ok(KvView {
            keys,
            values,
            blocks: Some((self.blocks, self.store.block_size)),
        })
    }

    fn advance(&mut self, new_tokens: usize) {
        self.len += new_tokens;
    }

    fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            return Err(ModelError::Input(format!(
                "cannot keep {len} tokens of a sequence holding {}",
                self.len
            )));
        }
        // The slots past `len` are simply overwritten by the next append.
        self.len = len;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code fails loudly")]
mod tests {
    use super::*;
    use crate::kv_cache::ContiguousKvCache;
    use crate::test_util::max_abs_diff;

    fn random(heads: usize, n: usize, dim: usize, seed: u64) -> Tensor {
        let vals: Vec<f32> = (0..heads * n * dim)
            .map(|i| ((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        Tensor::from_vec(vals, (heads, n, dim), &Device::Cpu).unwrap()
    }

    #[test]
    fn paged_view_returns_what_a_contiguous_cache_returns() {
        let store = PagedKvStore::new(2, 6, 4, 2, 3, DType::F32, &Device::Cpu).unwrap();
        // Blocks out of order and not starting at 0, as a block pool hands them out.
        let blocks = [4u32, 1, 3];
        let mut paged = store.sequence(&blocks, 0);
        let mut plain = ContiguousKvCache::new(2);
        for (step, n) in [5usize, 1, 3, 1].into_iter().enumerate() {
            for layer in 0..2 {
                let k = random(2, n, 3, (step * 2 + layer) as u64);
                let v = random(2, n, 3, (step * 2 + layer + 50) as u64);
                let p = paged.append(layer, &k, &v).unwrap();
                let c = plain.append(layer, &k, &v).unwrap();
                assert_eq!((p.first, c.first), (0, 0));
                assert_eq!(max_abs_diff(&p.keys, &c.keys), 0.0);
                assert_eq!(max_abs_diff(&p.values, &c.values), 0.0);
            }
            paged.advance(n);
            plain.advance(n);
        }
        assert_eq!(paged.len(), 10);
        // The 11th..12th tokens fit; the 13th needs a fourth block.
        let k = random(2, 3, 3, 9);
        let e = paged.append(0, &k, &k).unwrap_err().to_string();
        assert!(e.contains("beyond the 3 blocks"), "{e}");
    }

    #[test]
    fn bad_shapes_and_blocks_are_errors() {
        let store = PagedKvStore::new(1, 2, 4, 2, 3, DType::F32, &Device::Cpu).unwrap();
        let blocks = [7u32];
        let mut seq = store.sequence(&blocks, 0);
        let k = random(2, 1, 3, 1);
        assert!(
            seq.append(0, &k, &k)
                .unwrap_err()
                .to_string()
                .contains("block 7")
        );
        let blocks = [0u32];
        let mut seq = store.sequence(&blocks, 0);
        let wrong = random(1, 1, 3, 1);
        assert!(seq.append(0, &wrong, &wrong).is_err());
        assert!(seq.append(1, &k, &k).is_err());
        assert!(PagedKvStore::new(1, 0, 4, 2, 3, DType::F32, &Device::Cpu).is_err());
    }
}
