//! forja's GPU kernels and their CPU references. The CUDA kernels (`kernels.cu`) are compiled
//! at run time by NVRTC for the GPU that is present, so the build needs no CUDA toolkit and the
//! code always matches the driver; the driver and NVRTC libraries are loaded at run time, so a
//! binary built with the `cuda` feature still starts on machines without them. [`reference`]
//! holds a plain CPU version of every kernel, which the GPU results are checked against.

#[cfg(feature = "cuda")]
pub mod cuda;
mod pick;
pub mod quant;
pub mod reference;

/// Errors of the kernels and their setup.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// No usable GPU: the libraries are missing or the driver reports no device.
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    #[error("CUDA: {0}")]
    Cuda(String),
}

pub use pick::{DevicePick, PICK_WORDS, picked};

pub type Result<T> = std::result::Result<T, KernelError>;

/// Shape checks shared by the CPU references and the GPU launches, so both refuse the same
/// inputs with the same words.
pub mod shapes {
    use crate::{KernelError, Result};

    /// `x` holds whole rows of `cols` values.
    pub fn rows(x: usize, cols: usize) -> Result<()> {
        if cols == 0 || !x.is_multiple_of(cols) {
            return Err(KernelError::Shape(format!("{x} values in rows of {cols}")));
        }
        Ok(())
    }

    /// The gate and up halves of a gated MLP have the same length.
    pub fn gate_up(gate: usize, up: usize) -> Result<()> {
        if gate != up {
            return Err(KernelError::Shape(format!(
                "gate of {gate} and up of {up} values"
            )));
        }
        Ok(())
    }

    /// `x` is `[positions, heads · head_dim]` and `half` frequencies fit a head.
    pub fn rope(
        x: usize,
        positions: usize,
        heads: usize,
        head_dim: usize,
        half: usize,
    ) -> Result<()> {
        if 2 * half > head_dim || x != positions * heads * head_dim {
            return Err(KernelError::Shape(format!(
                "{x} values for {positions} rows of {heads} heads × {head_dim} ({half} frequencies)"
            )));
        }
        Ok(())
    }

    /// `k`, `v` are `[tokens, width]` and every slot lies inside caches of `cache` values.
    pub fn cache_writes(
        k: usize,
        v: usize,
        slots: &[u32],
        width: usize,
        cache: usize,
    ) -> Result<()> {
        if k != slots.len() * width || v != k {
            return Err(KernelError::Shape(format!(
                "{k} keys and {v} values for {} tokens of {width}",
                slots.len()
            )));
        }
        let cache_slots = cache / width.max(1);
        if let Some(s) = slots.iter().find(|&&s| s as usize >= cache_slots) {
            return Err(KernelError::Shape(format!("slot {s} outside the cache")));
        }
        Ok(())
    }
}

/// The shape of one paged attention call over `rows = context_lens.len()` query rows of `heads`
/// heads: row `r` belongs to sequence `row_seqs[r]` and attends over that sequence's first
/// `context_lens[r]` cached positions (its own position + 1: a decode row sees everything, the
/// rows of a prompt are causal), the last `window` of them when set; position `j` of sequence
/// `s` is in slot `block_tables[s · max_blocks + j / block_size] · block_size + j % block_size`.
#[derive(Debug, Clone)]
pub struct PagedAttention {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub max_blocks: usize,
    pub block_tables: Vec<u32>,
    pub row_seqs: Vec<u32>,
    pub context_lens: Vec<u32>,
    /// Multiplier on q·k.
    pub scale: f32,
    /// Attend to at most this many most recent positions.
    pub window: Option<u32>,
    /// Scores capped as `cap · tanh(s / cap)`.
    pub softcap: Option<f32>,
}

impl PagedAttention {
    /// Sequences (rows of the block tables).
    pub fn seqs(&self) -> usize {
        self.block_tables.len() / self.max_blocks.max(1)
    }

    /// Checks the sizes of `q` and of the caches (in values) against the shape and the tables.
    pub fn check(&self, q: usize, k: usize, v: usize) -> Result<()> {
        let rows = self.context_lens.len();
        let bad = |m: String| Err(KernelError::Shape(m));
        if self.kv_heads == 0 || !self.heads.is_multiple_of(self.kv_heads) || self.head_dim == 0 {
            return bad(format!(
                "{} heads over {} KV heads of {}",
                self.heads, self.kv_heads, self.head_dim
            ));
        }
        if q != rows * self.heads * self.head_dim || self.row_seqs.len() != rows {
            return bad(format!(
                "{q} query values and {} sequence indices for {rows} rows",
                self.row_seqs.len()
            ));
        }
        if self.max_blocks == 0
            || !self.block_tables.len().is_multiple_of(self.max_blocks)
            || self.block_size == 0
        {
            return bad(format!(
                "block tables of {} entries in rows of {} blocks",
                self.block_tables.len(),
                self.max_blocks
            ));
        }
        let width = self.kv_heads * self.head_dim;
        let slots = k.min(v) / width;
        let seqs = self.seqs();
        for (r, (&len, &s)) in self.context_lens.iter().zip(&self.row_seqs).enumerate() {
            let blocks = (len as usize).div_ceil(self.block_size);
            if len == 0 || blocks > self.max_blocks || s as usize >= seqs {
                return bad(format!(
                    "row {r}: {len} positions of sequence {s} (of {seqs})"
                ));
            }
            let table = &self.block_tables[s as usize * self.max_blocks..][..blocks];
            if let Some(b) = table
                .iter()
                .find(|&&b| (b as usize + 1) * self.block_size > slots)
            {
                return bad(format!(
                    "row {r}: block {b} outside a cache of {slots} slots"
                ));
            }
        }
        Ok(())
    }
}
