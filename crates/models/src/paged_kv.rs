//! KV storage in fixed-size blocks shared by many sequences. The model's layers come in groups
//! ([`KvGroups`]: those keeping every position, those keeping a sliding window); a block holds
//! `block_size` positions of one group's layers, and the store keeps `group_size` key and value
//! tensors of `[blocks · block_size, kv_heads, head_dim]`, layer `i` using tensor
//! `layers[i].1` through its group's block table. Which blocks a sequence owns is decided
//! elsewhere (the server's block manager); a [`PagedSeq`] is one sequence's view through its
//! block tables and implements [`KvCache`] for the decoder.

use candle_core::{DType, Device, Tensor};
use forja_arch::kv_cache::KvGroups;
use forja_arch::kv_cache::first_visible;

use crate::error::{ModelError, Result};
use crate::kv_cache::{KvCache, KvSpan, KvView};

/// A layer's key and value tensors, its window and its group's block table.
type LayerKv<'a> = (&'a (Tensor, Tensor), Option<usize>, &'a [u32]);

/// Where one layer's keys and values live.
#[derive(Debug, Clone, Copy)]
struct LayerPlace {
    group: usize,
    buffer: usize,
    window: Option<usize>,
}

/// Preallocated keys and values of every group, addressed by slot
/// (`block · block_size + offset`).
#[derive(Debug)]
pub struct PagedKvStore {
    buffers: Vec<(Tensor, Tensor)>,
    layers: Vec<LayerPlace>,
    groups: usize,
    block_size: usize,
    num_blocks: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl PagedKvStore {
    /// Allocates `num_blocks` blocks of `block_size` tokens for the layers of `groups`, each of
    /// `kv_heads` heads of `head_dim` values, in `dtype`.
    pub fn new(
        groups: &KvGroups,
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
        let layers = groups
            .layers
            .iter()
            .map(|&(group, buffer)| {
                let window = groups.windows.get(group).ok_or_else(|| {
                    ModelError::Input(format!("KV group {group} of {}", groups.windows.len()))
                })?;
                Ok(LayerPlace {
                    group,
                    buffer,
                    window: window.map(|w| w as usize),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let shape = (num_blocks * block_size, kv_heads, head_dim);
        let buffers = (0..groups.group_size)
            .map(|_| {
                Ok((
                    Tensor::zeros(shape, dtype, device)?,
                    Tensor::zeros(shape, dtype, device)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PagedKvStore {
            buffers,
            layers,
            groups: groups.windows.len(),
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

    /// The view of one sequence holding `len` computed tokens in `tables` (one block table per
    /// group).
    pub fn sequence<'a>(&'a self, tables: &'a [Vec<u32>], len: usize) -> PagedSeq<'a> {
        PagedSeq {
            store: self,
            tables,
            len,
        }
    }

    /// Layer `layer`'s tensors, window and block table among `tables`.
    fn layer<'a>(&'a self, tables: &'a [Vec<u32>], layer: usize) -> Result<LayerKv<'a>> {
        let place = self
            .layers
            .get(layer)
            .ok_or_else(|| ModelError::Input(format!("KV store has no layer {layer}")))?;
        let table = tables.get(place.group).ok_or_else(|| {
            ModelError::Input(format!(
                "{} block tables for a store of {} groups",
                tables.len(),
                self.groups
            ))
        })?;
        let buffers = self
            .buffers
            .get(place.buffer)
            .ok_or_else(|| ModelError::Input(format!("KV store has no buffer {}", place.buffer)))?;
        Ok((buffers, place.window, table))
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
            return Err(ModelError::Input(
                if block == forja_kv::NULL_BLOCK as usize {
                    format!("position {pos} has left its sliding window: its block went back")
                } else {
                    format!(
                        "block {block} outside a store of {} blocks",
                        self.num_blocks
                    )
                },
            ));
        }
        Ok(block * self.block_size + pos % self.block_size)
    }
}

/// One sequence's keys and values in a [`PagedKvStore`].
#[derive(Debug)]
pub struct PagedSeq<'a> {
    store: &'a PagedKvStore,
    tables: &'a [Vec<u32>],
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
        let ((kc, vc), window, table) = store.layer(self.tables, layer)?;
        let total = self.len + k.dim(0)?;
        // A sliding layer returns what this step's queries can see.
        let first = first_visible(self.len, window);
        let slots = (first..total)
            .map(|p| store.slot(table, p).map(|s| s as u32))
            .collect::<Result<Vec<u32>>>()?;
        let slots = Tensor::new(slots.as_slice(), kc.device())?;
        Ok(KvSpan {
            keys: kc.index_select(&slots, 0)?.transpose(0, 1)?,
            values: vc.index_select(&slots, 0)?.transpose(0, 1)?,
            first,
        })
    }

    fn write(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        let store = self.store;
        let ((kc, vc), _, table) = store.layer(self.tables, layer)?;
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
            let slot = store.slot(table, pos)?;
            let run = (store.block_size - pos % store.block_size).min(new - i);
            kc.slice_set(&k.narrow(0, i, run)?, 0, slot)?;
            vc.slice_set(&v.narrow(0, i, run)?, 0, slot)?;
            i += run;
        }
        Ok(())
    }

    fn view(&self, layer: usize) -> Result<KvView<'_>> {
        let ((keys, values), _, table) = self.store.layer(self.tables, layer)?;
        Ok(KvView {
            keys,
            values,
            blocks: Some((table, self.store.block_size)),
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

    fn one_group(layers: usize) -> KvGroups {
        KvGroups::for_layers(&vec![None; layers])
    }

    #[test]
    fn paged_view_returns_what_a_contiguous_cache_returns() {
        let store = PagedKvStore::new(&one_group(2), 6, 4, 2, 3, DType::F32, &Device::Cpu).unwrap();
        // Blocks out of order and not starting at 0, as a block pool hands them out.
        let tables = [vec![4u32, 1, 3]];
        let mut paged = store.sequence(&tables, 0);
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
    fn a_sliding_group_reads_its_window_after_its_blocks_went_back() {
        // Layers 0 and 2 keep everything, 1 and 3 a window of 5: two groups of two layers, so
        // two buffers, each block holding one group's two layers.
        let windows = [None, Some(5), None, Some(5)];
        let groups = KvGroups::for_layers(&windows);
        assert_eq!((groups.group_size, groups.windows.len()), (2, 2));
        let store = PagedKvStore::new(&groups, 12, 4, 2, 3, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(store.buffers.len(), 2);
        let windows: Vec<Option<usize>> = windows.iter().map(|w| w.map(|w| w as usize)).collect();
        let mut plain = ContiguousKvCache::for_layers(&windows, DType::F32, 64);
        let mut tables = vec![vec![7u32, 2, 9, 0], vec![5u32, 11, 1, 6]];
        let mut len = 0usize;
        for (step, n) in [3usize, 6, 1, 2, 3].into_iter().enumerate() {
            // What the block manager does after each step: blocks wholly before the window's
            // reach (the next query, at `len`, sees from `len − 4`) go back.
            let gone = len.saturating_sub(4) / 4;
            for entry in &mut tables[1][..gone] {
                *entry = forja_kv::NULL_BLOCK;
            }
            let mut paged = store.sequence(&tables, len);
            for (layer, window) in windows.iter().enumerate() {
                let k = random(2, n, 3, (step * 4 + layer) as u64);
                let v = random(2, n, 3, (step * 4 + layer + 50) as u64);
                let p = paged.append(layer, &k, &v).unwrap();
                let c = plain.append(layer, &k, &v).unwrap();
                assert_eq!(p.first, c.first, "step {step} layer {layer}");
                assert_eq!(p.first, window.map_or(0, |w| (len + 1).saturating_sub(w)));
                assert_eq!(max_abs_diff(&p.keys, &c.keys), 0.0);
                assert_eq!(max_abs_diff(&p.values, &c.values), 0.0);
            }
            len += n;
            plain.advance(n);
        }
        assert_eq!(tables[1][..2], [forja_kv::NULL_BLOCK; 2]);
        // A read before the window names what went wrong.
        let paged = store.sequence(&tables, 0);
        let k = random(2, 1, 3, 1);
        let e = { paged }.append(1, &k, &k).unwrap_err().to_string();
        assert!(e.contains("left its sliding window"), "{e}");
    }

    #[test]
    fn bad_shapes_and_blocks_are_errors() {
        let store = PagedKvStore::new(&one_group(1), 2, 4, 2, 3, DType::F32, &Device::Cpu).unwrap();
        let tables = [vec![7u32]];
        let mut seq = store.sequence(&tables, 0);
        let k = random(2, 1, 3, 1);
        assert!(
            seq.append(0, &k, &k)
                .unwrap_err()
                .to_string()
                .contains("block 7")
        );
        let tables = [vec![0u32]];
        let mut seq = store.sequence(&tables, 0);
        let wrong = random(1, 1, 3, 1);
        assert!(seq.append(0, &wrong, &wrong).is_err());
        assert!(seq.append(1, &k, &k).is_err());
        let none: [Vec<u32>; 0] = [];
        assert!(store.sequence(&none, 0).append(0, &k, &k).is_err());
        assert!(PagedKvStore::new(&one_group(1), 0, 4, 2, 3, DType::F32, &Device::Cpu).is_err());
    }
}
