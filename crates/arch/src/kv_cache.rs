//! KV-cache bytes: `2 × layers × kv_heads × head_dim × tokens × bytes`, made exact per layer:
//! sliding-window layers hold at most their window, cross-attention layers hold no per-token
//! entries, and MLA layers hold one compressed latent (`kv_lora_rank + rope dims`) per token.

use crate::decoder_config::{DecoderConfig, LayerAttention};
use crate::weight_format::KvDtype;

/// Elements one token adds to layer `i`'s cache (K and V together).
pub fn kv_elems_per_token(cfg: &DecoderConfig, layer: usize) -> u64 {
    if cfg.layers.get(layer) == Some(&LayerAttention::Cross) {
        return 0;
    }
    match &cfg.mla {
        Some(m) => m.kv_lora_rank + m.qk_rope_head_dim,
        None => cfg.k_dim() + cfg.v_dim(),
    }
}

/// The first position a query at `pos` sees: `pos + 1 − window` with a sliding window (the
/// query and the `window − 1` positions before it), else 0.
pub fn first_visible(pos: usize, window: Option<usize>) -> usize {
    window.map_or(0, |w| (pos + 1).saturating_sub(w))
}

/// A sliding-window layer's cache holds a whole number of blocks of this many positions.
pub const KV_RING_ALIGN: u64 = 64;

/// Positions a sliding-window layer of `window` keeps while a step writes `step_tokens`: its
/// window and the step — the step's first query still sees the `window − 1` positions before
/// it (what llama.cpp's sliding-window cache keeps too) — rounded up to whole blocks of
/// [`KV_RING_ALIGN`]. The size of `forja_models::ContiguousKvCache`'s ring.
pub fn sliding_kv_slots(window: u64, step_tokens: u64) -> u64 {
    (window.saturating_sub(1) + step_tokens.max(1)).next_multiple_of(KV_RING_ALIGN)
}

/// Tokens layer `i` keeps for a sequence of `ctx_tokens` computed `step_tokens` at a time (a
/// sliding-window layer: at most [`sliding_kv_slots`]).
pub fn kv_tokens_kept(cfg: &DecoderConfig, layer: usize, ctx_tokens: u64, step_tokens: u64) -> u64 {
    match cfg.layers.get(layer) {
        Some(LayerAttention::Sliding { window }) => {
            ctx_tokens.min(sliding_kv_slots(*window, step_tokens))
        }
        Some(LayerAttention::Cross) => 0,
        _ => ctx_tokens,
    }
}

/// Bytes one token adds while every layer still keeps it (context shorter than any window).
pub fn kv_bytes_per_token(cfg: &DecoderConfig, dtype: KvDtype) -> f64 {
    let elems: u64 = (0..cfg.layers.len())
        .map(|i| kv_elems_per_token(cfg, i))
        .sum();
    elems as f64 * dtype.bytes_per_elem()
}

/// Bytes of the cache of one sequence holding `ctx_tokens` tokens, computed `step_tokens` at a
/// time (see [`kv_tokens_kept`]; a decode step is 1).
pub fn kv_bytes(cfg: &DecoderConfig, ctx_tokens: u64, step_tokens: u64, dtype: KvDtype) -> u64 {
    let elems: u128 = (0..cfg.layers.len())
        .map(|i| {
            u128::from(kv_elems_per_token(cfg, i))
                * u128::from(kv_tokens_kept(cfg, i, ctx_tokens, step_tokens))
        })
        .sum();
    // `as` saturates for floats: an absurd request becomes u64::MAX bytes, never a wrap.
    (elems as f64 * dtype.bytes_per_elem()).ceil() as u64
}

/// Most block tables a paged pool keeps per sequence (see [`KvGroups::for_layers`]).
pub const MAX_KV_GROUPS: usize = 8;

/// How a paged KV pool lays out layers that keep different spans of a sequence (every token, or
/// a sliding window). Layers of one kind are split into groups of [`group_size`] layers; a
/// sequence has one block table per group, and a pool block holds `block_size` positions of one
/// group's layers. Every block has the same size, so full-attention and sliding-window groups
/// draw on one pool, and a sliding-window group's blocks go back to it once they leave the
/// window. The pool's storage is `group_size` key and value buffers of `blocks` blocks; layer
/// `i` reads and writes buffer [`layers`]`[i].1` through its group's table.
///
/// [`group_size`]: KvGroups::group_size
/// [`layers`]: KvGroups::layers
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvGroups {
    /// Layers in each group (a group of a kind with fewer layers leaves buffers unused).
    pub group_size: usize,
    /// Each group's window: `None` keeps every position.
    pub windows: Vec<Option<u64>>,
    /// Each layer's group and its buffer (its place in the group).
    pub layers: Vec<(usize, usize)>,
}

impl KvGroups {
    /// Groups layers by window (`windows[i]` is layer `i`'s; `None` attends to everything), in
    /// layer order within each kind. The group size is the one leaving the fewest unused buffers
    /// among those giving at most [`MAX_KV_GROUPS`] groups (ties: the larger size). Gemma 3's
    /// 5:1 pattern gives one full group and five sliding ones with no buffer unused on most
    /// sizes; a model of one kind is one group.
    pub fn for_layers(windows: &[Option<u64>]) -> Self {
        let mut kinds: Vec<(Option<u64>, usize)> = Vec::new();
        for w in windows {
            match kinds.iter_mut().find(|(k, _)| k == w) {
                Some((_, n)) => *n += 1,
                None => kinds.push((*w, 1)),
            }
        }
        let smallest = kinds.iter().map(|k| k.1).min().unwrap_or(1);
        let cost = |g: usize| {
            let groups: usize = kinds.iter().map(|k| k.1.div_ceil(g)).sum();
            let unused: usize = kinds.iter().map(|k| k.1.div_ceil(g) * g - k.1).sum();
            (groups, unused)
        };
        let group_size = (1..=smallest)
            .rev()
            .filter(|&g| cost(g).0 <= MAX_KV_GROUPS || g == smallest)
            .min_by_key(|&g| (cost(g).1, std::cmp::Reverse(g)))
            .unwrap_or(smallest);
        let mut groups = Vec::new();
        let mut first_group = Vec::with_capacity(kinds.len());
        for &(w, n) in &kinds {
            first_group.push(groups.len());
            groups.extend(std::iter::repeat_n(w, n.div_ceil(group_size)));
        }
        let mut seen = vec![0usize; kinds.len()];
        let layers = windows
            .iter()
            .map(|w| {
                let k = kinds.iter().position(|(kw, _)| kw == w).unwrap_or(0);
                let j = seen[k];
                seen[k] += 1;
                (first_group[k] + j / group_size, j % group_size)
            })
            .collect();
        KvGroups {
            group_size,
            windows: groups,
            layers,
        }
    }

    /// The groups of a model's layers that keep per-token entries (cross-attention layers keep
    /// none and are left out).
    pub fn of(cfg: &DecoderConfig) -> Self {
        let windows: Vec<Option<u64>> = cfg
            .layers
            .iter()
            .filter_map(|l| match l {
                LayerAttention::Sliding { window } => Some(Some(*window)),
                LayerAttention::Global => Some(None),
                LayerAttention::Cross => None,
            })
            .collect();
        Self::for_layers(&windows)
    }

    /// Whether some group keeps only a window.
    pub fn has_sliding(&self) -> bool {
        self.windows.iter().any(Option::is_some)
    }

    /// Blocks of `block_size` positions a group of `window` holds at most for a sequence of
    /// `tokens` computed at most `step` at a time: the window before the step's first position
    /// and the step, plus one block where they do not start on a block boundary.
    pub fn group_blocks(window: Option<u64>, tokens: u64, step: u64, block_size: u64) -> u64 {
        let all = tokens.div_ceil(block_size);
        match window {
            None => all,
            Some(w) => all.min((w.saturating_sub(1) + step.max(1)).div_ceil(block_size) + 1),
        }
    }

    /// Blocks the pool holds at most for one sequence of `tokens` (see [`Self::group_blocks`]).
    pub fn sequence_blocks(&self, tokens: u64, step: u64, block_size: u64) -> u64 {
        self.windows
            .iter()
            .map(|&w| Self::group_blocks(w, tokens, step, block_size))
            .sum()
    }
}

/// Block size of `forja serve`'s paged pool unless `--block-size` says otherwise.
pub const SERVE_BLOCK_SIZE: u64 = 16;

/// Bytes a paged pool of `block_size`-position blocks (laid out by [`KvGroups::of`]) holds at
/// most for one sequence of `ctx_tokens` computed `step_tokens` at a time: every group's blocks
/// (see [`KvGroups::group_blocks`]) of `group_size` layers each.
pub fn paged_kv_bytes(
    cfg: &DecoderConfig,
    ctx_tokens: u64,
    step_tokens: u64,
    dtype: KvDtype,
    block_size: u64,
) -> u64 {
    let groups = KvGroups::of(cfg);
    let elems = (0..cfg.layers.len())
        .map(|i| kv_elems_per_token(cfg, i))
        .max()
        .unwrap_or(0);
    let slots: u128 = groups
        .windows
        .iter()
        .map(|&w| {
            u128::from(KvGroups::group_blocks(
                w,
                ctx_tokens,
                step_tokens,
                block_size,
            )) * u128::from(block_size)
        })
        .sum();
    let elems = slots * groups.group_size as u128 * u128::from(elems);
    (elems as f64 * dtype.bytes_per_elem()).ceil() as u64
}

#[cfg(test)]
mod groups_tests {
    use super::*;

    fn gemma3(layers: usize, window: u64) -> Vec<Option<u64>> {
        (0..layers)
            .map(|i| (!(i + 1).is_multiple_of(6)).then_some(window))
            .collect()
    }

    #[test]
    fn one_kind_is_one_group() {
        let g = KvGroups::for_layers(&[None; 5]);
        assert_eq!((g.group_size, g.windows.clone()), (5, vec![None]));
        assert_eq!(g.layers, (0..5).map(|i| (0, i)).collect::<Vec<_>>());
        assert!(!g.has_sliding());
        let g = KvGroups::for_layers(&[Some(4096); 3]);
        assert_eq!((g.group_size, g.windows), (3, vec![Some(4096)]));
    }

    #[test]
    fn gemma_patterns_group_without_waste_where_they_can() {
        // Gemma 2: alternating sliding and global layers.
        let alt: Vec<Option<u64>> = (0..26).map(|i| (i % 2 == 0).then_some(4096)).collect();
        let g = KvGroups::for_layers(&alt);
        assert_eq!((g.group_size, g.windows.len()), (13, 2));
        assert_eq!(g.layers[0], (0, 0));
        assert_eq!(g.layers[1], (1, 0));
        assert_eq!(g.layers[25], (1, 12));
        // Gemma 3 270M (18 layers: 3 global), 12B (48: 8), 4B (34: 5), 27B (62: 10).
        for (layers, size, groups, unused) in
            [(18, 3, 6, 0), (48, 8, 6, 0), (34, 5, 7, 1), (62, 10, 7, 8)]
        {
            let g = KvGroups::for_layers(&gemma3(layers, 1024));
            let free = g.windows.len() * g.group_size - layers;
            assert_eq!(
                (g.group_size, g.windows.len(), free),
                (size, groups, unused)
            );
            assert!(g.windows.len() <= MAX_KV_GROUPS);
            // Every (group, buffer) pair is one layer's, and a group keeps one kind.
            let mut pairs = g.layers.clone();
            pairs.sort_unstable();
            pairs.dedup();
            assert_eq!(pairs.len(), layers);
            for (i, &(group, buffer)) in g.layers.iter().enumerate() {
                assert!(buffer < g.group_size);
                assert_eq!(g.windows[group], gemma3(layers, 1024)[i]);
            }
        }
    }

    #[test]
    fn a_sliding_group_holds_its_window_and_a_step() {
        assert_eq!(KvGroups::group_blocks(None, 1000, 512, 16), 63);
        // 511 positions before a 1-token step: 32 blocks, one more when unaligned.
        assert_eq!(KvGroups::group_blocks(Some(512), 100_000, 1, 16), 33);
        assert_eq!(KvGroups::group_blocks(Some(512), 100_000, 512, 16), 65);
        assert_eq!(KvGroups::group_blocks(Some(512), 300, 512, 16), 19);
        let g = KvGroups::for_layers(&gemma3(18, 512));
        assert_eq!(g.sequence_blocks(32_768, 1, 16), 2048 + 5 * 33);
    }
}
