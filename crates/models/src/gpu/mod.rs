//! The decoder on an NVIDIA GPU (the `cuda` feature): the same step as [`Decoder::forward`] —
//! several sequences' new tokens through the projections as one matrix, attention per row over
//! each sequence's blocks of a paged f16 KV pool — on forja's kernels and cuBLAS, with every
//! buffer on the device; only the token ids and block tables go up and the wanted logits come
//! back. Blocks are the caller's: a sequence names the pool blocks that hold its positions, one
//! table per layer group ([`Decoder::kv_groups`]: layers keeping every position, layers keeping
//! a sliding window), as the server's block manager hands them out.
//!
//! Decode steps (one token per sequence) are recorded once per batch-size bucket as a CUDA graph
//! and replayed: a step costs one launch instead of a dozen per layer. The batch is padded to its
//! bucket with rows that write to a block of their own and whose output nobody reads.

mod weights;

use forja_arch::kv_cache::first_visible;
use std::collections::HashMap;
use std::sync::Arc;

use forja_kernels::cuda::{
    Act, AttentionLaunch, AttentionTables, CudaSlice, GemmWeight, Gpu, StepGraph, argmax_index,
    attention_fits,
};
use forja_kernels::{DevicePick, PICK_WORDS, picked};

use crate::decoder::Decoder;
use crate::error::{ModelError, Result};
use crate::runner::SeqOutput;
use forja_arch::kv_cache::KvGroups;
use weights::{GpuWeights, kernel};

mod runner;
pub(crate) use runner::runner;

/// How to build a [`GpuDecoder`].
#[derive(Debug, Clone, Copy)]
pub struct GpuOptions {
    /// Matrices in f16 (tensor cores, half the memory) instead of f32.
    pub half: bool,
    /// Keep GGUF blocks the GPU reads (Q8_0, Q4_0, Q4_1, Q4_K, Q6_K) as stored: a few rows are
    /// multiplied on the blocks, many rows through an f16 copy made per product. Needs `half`.
    pub quantized: bool,
    /// Positions per KV block.
    pub block_size: usize,
    /// Blocks in the KV pool, shared by the layer groups: a block holds `block_size` positions
    /// of one group's layers.
    pub blocks: usize,
    /// Longest sequence: sizes the RoPE tables.
    pub max_context: usize,
}

/// One sequence's part of a step.
#[derive(Debug, Clone, Copy)]
pub struct GpuSeq<'a> {
    pub tokens: &'a [u32],
    /// Position of the first token (how many are cached before it).
    pub start: usize,
    /// Pool blocks holding positions `0..start + tokens.len()`, in order: one table per group of
    /// [`Decoder::kv_groups`]. A sliding-window group's entries before its window may be
    /// `forja_kv::NULL_BLOCK` (their blocks went back to the pool).
    pub tables: &'a [Vec<u32>],
    /// Logits for every token instead of the last.
    pub all_logits: bool,
    /// Pick the next token on the GPU by these rules ([`GpuDecoder::step`]; not with
    /// `all_logits`).
    pub pick: Option<DevicePick>,
}

/// Device buffers of one step, sized for `rows` token rows. Graphs hold their addresses: they
/// are dropped whenever these are reallocated.
#[derive(Debug)]
struct Scratch {
    rows: usize,
    x: CudaSlice<f32>,
    /// Input of a product (`[rows, max(hidden, heads·dim, ff)]`).
    act: Act,
    qkv: CudaSlice<f32>,
    q: CudaSlice<f32>,
    /// The attention output in f32, for heads whose 8-bit rounding the attention kernel cannot
    /// do itself (not a multiple of 32 dims).
    att: Act,
    gate_up: CudaSlice<f32>,
    tmp: CudaSlice<f32>,
    logits: CudaSlice<f32>,
    /// A quantized matrix dequantized to f16, for products over many rows.
    deq: CudaSlice<u16>,
    /// Greedy picks, packed (see `argmax_index`), or sampled ones (see `picked`).
    tokens: CudaSlice<u64>,
    /// Each picked row's [`DevicePick`] words.
    picks: CudaSlice<u32>,
    ids: CudaSlice<u32>,
    positions: CudaSlice<u32>,
    /// Each layer group's cache slot of every row.
    slots: Vec<CudaSlice<u32>>,
    pick: CudaSlice<u32>,
    /// The block tables hold each sequence's group tables side by side.
    tables: AttentionTables,
}

/// What a step hands back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Output {
    Logits,
    Argmax,
    /// Each picked row's token by its [`DevicePick`] (and the logits).
    Sample,
}

/// Host-side description of a step, padded when it runs as a graph.
#[derive(Debug, Default)]
struct Plan {
    ids: Vec<u32>,
    positions: Vec<u32>,
    /// Per layer group.
    slots: Vec<Vec<u32>>,
    row_seqs: Vec<u32>,
    context_lens: Vec<u32>,
    pick: Vec<u32>,
    /// [`DevicePick`] words of each picked row.
    picks: Vec<u32>,
    /// Each sequence's group tables side by side, `width` entries each.
    tables: Vec<u32>,
    /// Entries of one group table in `tables`: the step's longest table (a graph's: rounded up
    /// to a power of two), not the pool's longest possible one, so a step uploads what it uses.
    width: usize,
    /// Wanted rows per sequence.
    counts: Vec<usize>,
    longest: usize,
}

/// Narrowest table width a decode graph is recorded for.
const MIN_GRAPH_WIDTH: usize = 16;

/// Largest batch replayed as a graph; bigger decode steps run launch by launch.
const MAX_GRAPH_BATCH: usize = 256;

/// The decoder on one GPU, with its KV pool.
#[derive(Debug)]
pub struct GpuDecoder {
    gpu: Arc<Gpu>,
    w: GpuWeights,
    /// `groups.group_size` key and value buffers; layer `i` uses buffer `groups.layers[i].1`.
    kv: Vec<(CudaSlice<u16>, CudaSlice<u16>)>,
    groups: KvGroups,
    opts: GpuOptions,
    dims: Dims,
    scratch: Option<Scratch>,
    /// Decode graphs by padded batch size, output and table width.
    graphs: HashMap<(usize, Output, usize), StepGraph>,
    /// Replay decode steps as graphs (on by default).
    use_graphs: bool,
}

#[derive(Debug, Clone, Copy)]
struct Dims {
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    vocab: usize,
    /// Entries of one group's block table.
    max_blocks: usize,
    block_size: usize,
    /// Layer groups: block tables per sequence.
    groups: usize,
}

impl GpuDecoder {
    /// Copies `d` to `gpu` and allocates the KV pool (plus one block padding rows write to).
    pub fn new(gpu: Arc<Gpu>, d: &Decoder, opts: GpuOptions) -> Result<Self> {
        Self::build(gpu, d, opts, None)
    }

    /// As [`GpuDecoder::new`], with at most `opts.blocks` KV blocks: as many as the memory left
    /// after the weights holds, keeping `reserve` bytes free for step buffers.
    pub fn fitting(gpu: Arc<Gpu>, d: &Decoder, opts: GpuOptions, reserve: usize) -> Result<Self> {
        Self::build(gpu, d, opts, Some(reserve))
    }

    fn build(gpu: Arc<Gpu>, d: &Decoder, mut opts: GpuOptions, fit: Option<usize>) -> Result<Self> {
        if opts.block_size == 0 || opts.blocks == 0 || opts.max_context == 0 {
            return Err(ModelError::Input(format!("GPU options {opts:?}")));
        }
        let c = &d.config;
        let groups = d.kv_groups();
        let dims = Dims {
            hidden: c.hidden_size as usize,
            heads: c.num_heads as usize,
            kv_heads: c.num_kv_heads as usize,
            head_dim: c.head_dim as usize,
            vocab: c.vocab_size as usize,
            max_blocks: opts.max_context.div_ceil(opts.block_size),
            block_size: opts.block_size,
            groups: groups.windows.len(),
        };
        if opts.quantized && !opts.half {
            return Err(ModelError::Input(
                "quantized GPU weights work with f16 activations (half)".into(),
            ));
        }
        let w = GpuWeights::upload(&gpu, d, (opts.half, opts.quantized), opts.max_context)?;
        if let Some(reserve) = fit {
            let (free, _) = gpu.memory().map_err(kernel)?;
            // Keys and values, f16, the layers of one group.
            let block_bytes =
                2 * 2 * groups.group_size * opts.block_size * dims.kv_heads * dims.head_dim;
            let fits = free.saturating_sub(reserve) / block_bytes.max(1);
            // One block more is kept for padding rows.
            let fits = fits.saturating_sub(1);
            if fits == 0 {
                return Err(ModelError::Input(format!(
                    "the GPU holds the weights ({:.2} GiB) but no KV block after them ({:.2} GiB \
                     free, {:.2} GiB kept for step buffers)",
                    w.bytes as f64 / f64::from(1u32 << 30),
                    free as f64 / f64::from(1u32 << 30),
                    reserve as f64 / f64::from(1u32 << 30)
                )));
            }
            opts.blocks = opts.blocks.min(fits);
        }
        let slots = (opts.blocks + 1) * opts.block_size * dims.kv_heads * dims.head_dim;
        let kv = (0..groups.group_size)
            .map(|_| {
                Ok((
                    gpu.alloc(slots).map_err(kernel)?,
                    gpu.alloc(slots).map_err(kernel)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GpuDecoder {
            gpu,
            w,
            kv,
            groups,
            opts,
            dims,
            scratch: None,
            graphs: HashMap::new(),
            use_graphs: true,
        })
    }

    /// The GPU's name, as the driver reports it.
    pub fn gpu_name(&self) -> &str {
        self.gpu.name()
    }

    /// Bytes of weights on the device.
    pub fn weight_bytes(&self) -> usize {
        self.w.bytes
    }

    /// The weights' bytes and how many matrices stay GGUF blocks (`weights 4.58 GiB, 130 of 130
    /// matrices as GGUF blocks`).
    pub fn weights_summary(&self) -> &str {
        &self.w.summary
    }

    /// Bytes of the KV pool.
    pub fn kv_bytes(&self) -> usize {
        let d = &self.dims;
        self.kv.len() * 2 * (self.opts.blocks + 1) * d.block_size * d.kv_heads * d.head_dim * 2
    }

    pub fn options(&self) -> GpuOptions {
        self.opts
    }

    /// Whether decode steps are recorded and replayed as CUDA graphs (default on).
    pub fn set_graphs(&mut self, on: bool) {
        self.use_graphs = on;
        self.graphs.clear();
    }

    /// Runs one step; returns per sequence its logits, row-major `[n, vocab]` (`n` its tokens
    /// with `all_logits`, else 1). The KV pool gets every new token's keys and values.
    pub fn forward(&mut self, seqs: &[GpuSeq<'_>]) -> Result<Vec<Vec<f32>>> {
        let (plan, rows, graphed) = self.plan(seqs)?;
        self.run(&plan, rows, graphed, Output::Logits)?;
        let sc = self.buffers()?;
        let n: usize = plan.counts[..seqs.len()].iter().sum();
        let vocab = self.dims.vocab;
        let logits = self
            .gpu
            .download_first(&sc.logits, n * vocab)
            .map_err(kernel)?;
        let mut out = Vec::with_capacity(seqs.len());
        let mut row = 0;
        for &c in &plan.counts[..seqs.len()] {
            out.push(logits[row * vocab..(row + c) * vocab].to_vec());
            row += c;
        }
        Ok(out)
    }

    /// Runs one step: each sequence with a [`GpuSeq::pick`] gets its next token picked on the
    /// GPU (only the token comes back), the others their last logits.
    pub fn step(&mut self, seqs: &[GpuSeq<'_>]) -> Result<Vec<SeqOutput>> {
        if seqs.iter().any(|s| s.all_logits) {
            return Err(ModelError::Input(
                "a serving step gives one row per sequence (no all_logits)".into(),
            ));
        }
        let picking = seqs.iter().any(|s| s.pick.is_some());
        let (plan, rows, graphed) = self.plan(seqs)?;
        let output = if picking {
            Output::Sample
        } else {
            Output::Logits
        };
        self.run(&plan, rows, graphed, output)?;
        let sc = self.buffers()?;
        let n = seqs.len();
        let vocab = self.dims.vocab;
        let tokens = if picking {
            self.gpu.download_first(&sc.tokens, n).map_err(kernel)?
        } else {
            Vec::new()
        };
        let logits = if seqs.iter().any(|s| s.pick.is_none()) {
            self.gpu
                .download_first(&sc.logits, n * vocab)
                .map_err(kernel)?
        } else {
            Vec::new()
        };
        Ok(seqs
            .iter()
            .enumerate()
            .map(|(i, s)| match s.pick {
                Some(_) => match tokens.get(i).copied().and_then(picked) {
                    Some((token, logprob)) => SeqOutput::Picked { token, logprob },
                    None => SeqOutput::NoFiniteLogit,
                },
                None => SeqOutput::Logits(logits[i * vocab..(i + 1) * vocab].to_vec()),
            })
            .collect())
    }

    /// Runs one step and returns each sequence's greedy next token (the largest logit of its
    /// last row), computed on the GPU: only the ids come back.
    pub fn forward_greedy(&mut self, seqs: &[GpuSeq<'_>]) -> Result<Vec<u32>> {
        if seqs.iter().any(|s| s.all_logits) {
            return Err(ModelError::Input(
                "greedy steps give one token per sequence (no all_logits)".into(),
            ));
        }
        let (plan, rows, graphed) = self.plan(seqs)?;
        self.run(&plan, rows, graphed, Output::Argmax)?;
        let sc = self.buffers()?;
        Ok(self
            .gpu
            .download_first(&sc.tokens, seqs.len())
            .map_err(kernel)?
            .into_iter()
            .map(argmax_index)
            .collect())
    }

    fn buffers(&self) -> Result<&Scratch> {
        self.scratch
            .as_ref()
            .ok_or_else(|| ModelError::Input("no step buffers".into()))
    }

    /// The host arrays of a step, and how many rows it runs (padded to a graph bucket for
    /// decode steps).
    fn plan(&self, seqs: &[GpuSeq<'_>]) -> Result<(Plan, usize, bool)> {
        let d = self.dims;
        let bs = d.block_size;
        let groups = d.groups;
        let graphed = self.graphable(seqs);
        let used = seqs
            .iter()
            .map(|q| (q.start + q.tokens.len()).div_ceil(bs))
            .max()
            .unwrap_or(0)
            .min(d.max_blocks);
        let width = if graphed {
            used.next_power_of_two()
                .max(MIN_GRAPH_WIDTH)
                .min(d.max_blocks)
        } else {
            used.max(1)
        };
        let stride = groups * width;
        let trash = self.opts.blocks as u32;
        let mut p = Plan {
            tables: vec![trash; seqs.len() * stride],
            slots: vec![Vec::new(); groups],
            width,
            ..Plan::default()
        };
        for (s, q) in seqs.iter().enumerate() {
            let end = q.start + q.tokens.len();
            if q.tokens.is_empty() || end > self.opts.max_context {
                return Err(ModelError::Input(format!(
                    "sequence {s}: {} tokens at {} (context {})",
                    q.tokens.len(),
                    q.start,
                    self.opts.max_context
                )));
            }
            let needed = end.div_ceil(bs);
            if q.tables.len() != groups {
                return Err(ModelError::Input(format!(
                    "sequence {s}: {} block tables for a model of {groups} layer groups",
                    q.tables.len()
                )));
            }
            for (g, (table, window)) in q.tables.iter().zip(&self.groups.windows).enumerate() {
                if table.len() < needed {
                    return Err(ModelError::Input(format!(
                        "sequence {s}: {} blocks for {end} positions",
                        table.len()
                    )));
                }
                // What the step's first row sees must be in the pool; before it a sliding
                // window's blocks may have gone back (they point at the padding block here).
                let first = first_visible(q.start, window.map(|w| w as usize)) / bs;
                if let Some(b) = table[first..needed]
                    .iter()
                    .find(|&&b| b as usize >= self.opts.blocks)
                {
                    return Err(ModelError::Input(format!(
                        "sequence {s}: block {b} outside a pool of {}",
                        self.opts.blocks
                    )));
                }
                p.tables[s * stride + g * width..][first..needed]
                    .copy_from_slice(&table[first..needed]);
            }
            if let Some(&bad) = q.tokens.iter().find(|&&t| t as usize >= d.vocab) {
                return Err(ModelError::Input(format!(
                    "token id {bad} outside the vocabulary of {}",
                    d.vocab
                )));
            }
            for (i, &t) in q.tokens.iter().enumerate() {
                let pos = q.start + i;
                if q.all_logits || i + 1 == q.tokens.len() {
                    p.pick.push(p.ids.len() as u32);
                    p.picks.extend(q.pick.unwrap_or(DevicePick::GREEDY).words());
                }
                p.ids.push(t);
                p.positions.push(pos as u32);
                for (slots, table) in p.slots.iter_mut().zip(q.tables) {
                    slots.push(table[pos / bs] * bs as u32 + (pos % bs) as u32);
                }
                p.row_seqs.push(s as u32);
                p.context_lens.push(pos as u32 + 1);
            }
            p.counts.push(if q.all_logits { q.tokens.len() } else { 1 });
            p.longest = p.longest.max(end);
        }
        let rows = p.ids.len();
        if !graphed {
            return Ok((p, rows, false));
        }
        // Pad to the bucket: rows of one token at position 0 in the padding block, each its
        // own sequence whose table names only that block.
        let bucket = rows.next_power_of_two();
        for r in rows..bucket {
            p.ids.push(0);
            p.positions.push(0);
            for slots in &mut p.slots {
                slots.push(trash * bs as u32);
            }
            p.row_seqs.push(r as u32);
            p.context_lens.push(1);
            p.pick.push(r as u32);
            p.picks.extend(DevicePick::GREEDY.words());
            p.tables.extend(std::iter::repeat_n(trash, stride));
            p.counts.push(1);
        }
        // Graphs are recorded for the longest context their tables reach.
        p.longest = self.opts.max_context.min(width * bs);
        Ok((p, bucket, true))
    }

    /// Decode steps (one token per sequence, last logits only) of a bucketed size.
    fn graphable(&self, seqs: &[GpuSeq<'_>]) -> bool {
        self.use_graphs
            && seqs.len() <= MAX_GRAPH_BATCH
            && seqs.iter().all(|s| s.tokens.len() == 1 && !s.all_logits)
            && attention_fits(self.dims.head_dim)
    }

    fn run(&mut self, plan: &Plan, rows: usize, graphed: bool, output: Output) -> Result<()> {
        self.ensure_scratch(rows)?;
        let gpu = Arc::clone(&self.gpu);
        let sc = self
            .scratch
            .as_mut()
            .ok_or_else(|| ModelError::Input("no step buffers".into()))?;
        for (host, dev) in plan.slots.iter().zip(sc.slots.iter_mut()) {
            gpu.upload_into(host, dev).map_err(kernel)?;
        }
        for (host, dev) in [
            (&plan.ids, &mut sc.ids),
            (&plan.positions, &mut sc.positions),
            (&plan.row_seqs, &mut sc.tables.row_seqs),
            (&plan.context_lens, &mut sc.tables.context_lens),
            (&plan.pick, &mut sc.pick),
            (&plan.picks, &mut sc.picks),
            (&plan.tables, &mut sc.tables.block_tables),
        ] {
            gpu.upload_into(host, dev).map_err(kernel)?;
        }
        let n = plan.pick.len();
        let steps = Steps {
            gpu: &gpu,
            w: &self.w,
            places: &self.groups.layers,
            dims: self.dims,
            rows,
            n,
            longest: plan.longest,
            width: plan.width,
            output,
        };
        if !graphed {
            return steps.launch(sc, &mut self.kv);
        }
        let graph_key = (rows, output, plan.width);
        if let Some(g) = self.graphs.get(&graph_key) {
            return gpu.replay(g).map_err(kernel);
        }
        // First step of this size: run it, then record it for the next ones.
        steps.launch(sc, &mut self.kv)?;
        let kv = &mut self.kv;
        let graph = gpu
            .capture(|| steps.launch(sc, kv).map_err(kernel_back))
            .map_err(kernel)?;
        self.graphs.insert(graph_key, graph);
        Ok(())
    }

    fn ensure_scratch(&mut self, rows: usize) -> Result<()> {
        if self.scratch.as_ref().is_some_and(|s| s.rows >= rows) {
            return Ok(());
        }
        let rows = rows.next_power_of_two().max(16);
        let g = &self.gpu;
        let d = self.dims;
        let ff = self.w.ff;
        let widest = d.hidden.max(d.heads * d.head_dim).max(ff);
        let total = (d.heads + 2 * d.kv_heads) * d.head_dim;
        let f = |n: usize| g.alloc::<f32>(n).map_err(kernel);
        let u = |n: usize| g.alloc::<u32>(n).map_err(kernel);
        // Graphs point into the old buffers; device memory is what runs out, so free first.
        self.graphs.clear();
        self.scratch = None;
        self.scratch = Some(Scratch {
            rows,
            x: f(rows * d.hidden)?,
            act: g
                .alloc_act(rows * widest, self.w.lm_head.is_half())
                .map_err(kernel)?,
            qkv: f(rows * total)?,
            q: f(rows * d.heads * d.head_dim)?,
            att: Act::F32(f(rows * d.heads * d.head_dim)?),
            gate_up: f(rows * 2 * ff)?,
            tmp: f(rows * d.hidden)?,
            logits: f(rows * d.vocab)?,
            deq: g.alloc::<u16>(self.w.dequant_len).map_err(kernel)?,
            tokens: g.alloc::<u64>(rows).map_err(kernel)?,
            picks: u(rows * PICK_WORDS)?,
            ids: u(rows)?,
            positions: u(rows)?,
            slots: (0..d.groups).map(|_| u(rows)).collect::<Result<_>>()?,
            pick: u(rows)?,
            tables: AttentionTables::new(
                g,
                rows,
                d.groups * d.max_blocks,
                (d.heads, d.kv_heads, d.head_dim),
                self.opts.max_context,
            )
            .map_err(kernel)?,
        });
        Ok(())
    }
}

/// A step's launches, with everything they read fixed: run directly or recorded into a graph.
struct Steps<'a> {
    gpu: &'a Gpu,
    w: &'a GpuWeights,
    /// Each layer's group and KV buffer.
    places: &'a [(usize, usize)],
    dims: Dims,
    rows: usize,
    /// Rows whose logits are computed.
    n: usize,
    longest: usize,
    /// Entries of one group table (see [`Plan::width`]).
    width: usize,
    output: Output,
}

/// `y = x · Wᵀ + beta · y` for a dense or quantized weight; `pre`: the kernel that made `x`
/// also wrote it in 8 bits into `deq` (it was given [`Gpu::q8_sink`]'s sink for this product).
#[allow(clippy::too_many_arguments, reason = "one product's operands")]
fn prod(
    g: &Gpu,
    y: &mut CudaSlice<f32>,
    x: &Act,
    rows: usize,
    w: &GemmWeight,
    beta: f32,
    deq: &mut CudaSlice<u16>,
    pre: bool,
) -> Result<()> {
    g.gemm_quant(g.quant_path(rows), y, x, rows, w, beta, deq, pre)
        .map_err(kernel)
}

fn kernel_back(e: ModelError) -> forja_kernels::KernelError {
    forja_kernels::KernelError::Cuda(e.to_string())
}

impl Steps<'_> {
    fn launch(&self, sc: &mut Scratch, kv: &mut [(CudaSlice<u16>, CudaSlice<u16>)]) -> Result<()> {
        let (g, w, d, rows) = (self.gpu, self.w, self.dims, self.rows);
        let k = kernel;
        g.embed_rows(&mut sc.x, &w.embed, &sc.ids, rows, w.embed_scale)
            .map_err(k)?;
        for (l, &(group, buffer)) in w.layers.iter().zip(self.places) {
            let (kc, vc) = kv
                .get_mut(buffer)
                .ok_or_else(|| ModelError::Input(format!("no KV buffer {buffer}")))?;
            let slots = sc
                .slots
                .get(group)
                .ok_or_else(|| ModelError::Input(format!("no slots of group {group}")))?;
            // Each product's input is rounded to 8 bits by the kernel that makes it, when the
            // product reads it so.
            let sink = g.q8_sink(&mut sc.deq, &l.qkv, rows);
            let pre = sink.is_some();
            g.rms_norm_rows(&mut sc.act, &sc.x, None, rows, &l.attn_norm, w.eps, sink)
                .map_err(k)?;
            prod(g, &mut sc.qkv, &sc.act, rows, &l.qkv, 0.0, &mut sc.deq, pre)?;
            let rope = &w.ropes[l.rope];
            g.qkv_rope_cache(
                &sc.qkv,
                l.qkv_bias.as_ref(),
                l.qk_norm.as_ref().map(|(a, b)| (a, b)),
                w.eps,
                (&rope.cos, &rope.sin, rope.half, rope.interleaved),
                &sc.positions,
                slots,
                &mut sc.q,
                (kc, vc),
                rows,
                (d.heads, d.kv_heads, d.head_dim),
            )
            .map_err(k)?;
            let launch = AttentionLaunch {
                rows,
                heads: d.heads,
                kv_heads: d.kv_heads,
                head_dim: d.head_dim,
                block_size: d.block_size,
                max_blocks: d.groups * self.width,
                table_offset: group * self.width,
                scale: l.scale,
                window: l.window,
                softcap: l.softcap,
                longest: self.longest,
            };
            // The attention writes the output projection's input itself (rounded to 8 bits
            // too when the product reads blocks), unless those blocks of 32 would straddle
            // heads: then it writes f32 and one pass converts and rounds.
            let sink = g.q8_sink(&mut sc.deq, &l.o, rows);
            let pre = sink.is_some();
            if pre && !d.head_dim.is_multiple_of(32) {
                g.attention(&mut sc.att, &sc.q, kc, vc, &sc.tables, &launch, None)
                    .map_err(k)?;
                let Act::F32(att) = &sc.att else {
                    return Err(ModelError::Input("attention scratch is not f32".into()));
                };
                g.convert(&mut sc.act, att, rows * d.heads * d.head_dim, sink)
                    .map_err(k)?;
            } else {
                g.attention(&mut sc.act, &sc.q, kc, vc, &sc.tables, &launch, sink)
                    .map_err(k)?;
            }
            match &l.post_attn_norm {
                Some(n) => {
                    prod(g, &mut sc.tmp, &sc.act, rows, &l.o, 0.0, &mut sc.deq, pre)?;
                    g.add_rms_norm(&mut sc.x, &sc.tmp, n, rows, w.eps)
                        .map_err(k)?;
                }
                None => prod(g, &mut sc.x, &sc.act, rows, &l.o, 1.0, &mut sc.deq, pre)?,
            }
            let sink = g.q8_sink(&mut sc.deq, &l.gate_up, rows);
            let pre = sink.is_some();
            g.rms_norm_rows(&mut sc.act, &sc.x, None, rows, &l.ffn_norm, w.eps, sink)
                .map_err(k)?;
            let (gate_up, act) = (&mut sc.gate_up, &sc.act);
            prod(g, gate_up, act, rows, &l.gate_up, 0.0, &mut sc.deq, pre)?;
            let sink = g.q8_sink(&mut sc.deq, &l.down, rows);
            let pre = sink.is_some();
            g.gated_act(&mut sc.act, &sc.gate_up, rows, w.ff, w.act, sink)
                .map_err(k)?;
            match &l.post_ffn_norm {
                Some(n) => {
                    prod(
                        g,
                        &mut sc.tmp,
                        &sc.act,
                        rows,
                        &l.down,
                        0.0,
                        &mut sc.deq,
                        pre,
                    )?;
                    g.add_rms_norm(&mut sc.x, &sc.tmp, n, rows, w.eps)
                        .map_err(k)?;
                }
                None => prod(g, &mut sc.x, &sc.act, rows, &l.down, 1.0, &mut sc.deq, pre)?,
            }
        }
        let n = self.n;
        let sink = g.q8_sink(&mut sc.deq, &w.lm_head, n);
        let pre = sink.is_some();
        g.rms_norm_rows(&mut sc.act, &sc.x, Some(&sc.pick), n, &w.norm, w.eps, sink)
            .map_err(k)?;
        prod(
            g,
            &mut sc.logits,
            &sc.act,
            n,
            &w.lm_head,
            0.0,
            &mut sc.deq,
            pre,
        )?;
        if let Some(cap) = w.final_softcap {
            g.softcap(&mut sc.logits, n * d.vocab, cap).map_err(k)?;
        }
        match self.output {
            Output::Logits => {}
            Output::Argmax => g
                .argmax_rows(&mut sc.tokens, &sc.logits, n, d.vocab)
                .map_err(k)?,
            Output::Sample => g
                .sample_rows(&mut sc.tokens, &sc.logits, &sc.picks, n, d.vocab)
                .map_err(k)?,
        }
        Ok(())
    }
}
