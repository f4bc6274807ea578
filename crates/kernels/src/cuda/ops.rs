//! The kernels on buffers that stay on the device: what the decoder's GPU step is made of. Each
//! method queues one launch on the GPU's stream and returns; nothing waits or copies to the host.

use cudarc::driver::{
    CudaGraph, CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};

use super::blas::{GemmData, GemmWeight, Q8Sink};
use super::{Gpu, SHARED_BYTES, THREADS, cuda};
use crate::{KernelError, PagedAttention, Result};

/// Activations that feed a matrix product: f32, or f16 (bit patterns) for f16 weights.
#[derive(Debug)]
pub enum Act {
    F32(CudaSlice<f32>),
    F16(CudaSlice<u16>),
}

impl Act {
    /// Values it holds.
    pub fn len(&self) -> usize {
        match self {
            Act::F32(b) => b.len(),
            Act::F16(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn half(&self) -> i32 {
        i32::from(matches!(self, Act::F16(_)))
    }
}

/// The per-row tables of an attention call, on the device (see [`PagedAttention`]), and the
/// buffers its split-K parts meet in ([`AttentionTables::new`] sizes them).
#[derive(Debug)]
pub struct AttentionTables {
    pub block_tables: CudaSlice<u32>,
    pub row_seqs: CudaSlice<u32>,
    pub context_lens: CudaSlice<u32>,
    /// Each part's sums, max and exponent sum: [`attention_partials_len`] values.
    pub partials: CudaSlice<f32>,
    /// Parts finished per (row, head); zero between launches (the kernel resets them).
    pub arrivals: CudaSlice<u32>,
}

impl AttentionTables {
    /// Tables for launches of up to `rows` rows — and up to `rows` sequences' block tables of
    /// up to `max_blocks` blocks (a step has no more sequences than rows) —
    /// of `heads` heads (over `kv_heads` key/value heads) × `head_dim` seeing at most `longest`
    /// positions.
    pub fn new(
        g: &Gpu,
        rows: usize,
        max_blocks: usize,
        (heads, kv_heads, head_dim): (usize, usize, usize),
        longest: usize,
    ) -> Result<Self> {
        Ok(AttentionTables {
            block_tables: g.alloc(rows * max_blocks)?,
            row_seqs: g.alloc(rows)?,
            context_lens: g.alloc(rows)?,
            partials: g.alloc(attention_partials_len(
                rows,
                heads,
                kv_heads,
                head_dim,
                longest,
                g.attention_shared(),
            ))?,
            arrivals: g.alloc(rows * heads)?,
        })
    }
}

/// The scalar arguments of an attention launch.
#[derive(Debug, Clone, Copy)]
pub struct AttentionLaunch {
    pub rows: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    /// Entries from one sequence's block table to the next's.
    pub max_blocks: usize,
    /// Where this call's tables start in [`AttentionTables::block_tables`]: a runner keeping
    /// one table per layer group stores each sequence's tables side by side (`max_blocks`
    /// then spans them all) and points each layer at its group's.
    pub table_offset: usize,
    pub scale: f32,
    pub window: Option<u32>,
    pub softcap: Option<f32>,
    /// The most positions any row sees: sizes the scores in shared memory.
    pub longest: usize,
}

impl PagedAttention {
    /// The launch arguments of this call, for rows that see at most `longest` positions.
    pub fn launch(&self, longest: usize) -> AttentionLaunch {
        AttentionLaunch {
            rows: self.context_lens.len(),
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            block_size: self.block_size,
            max_blocks: self.max_blocks,
            table_offset: 0,
            scale: self.scale,
            window: self.window,
            softcap: self.softcap,
            longest,
        }
    }
}

/// A pointer argument that may be absent (the kernels test for null).
fn opt_ptr<T>(b: Option<&CudaSlice<T>>, gpu: &Gpu) -> u64 {
    use cudarc::driver::DevicePtr;
    match b {
        Some(b) => b.device_ptr(&gpu.stream).0,
        None => 0,
    }
}

fn rows_cfg(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn elementwise_cfg(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((n as u32).div_ceil(THREADS).clamp(1, 65_535), 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `q8` when it takes exactly the producer's `n` values in rows of `row` values — whole blocks
/// of 32 per row, which the kernels' warps round at once —, an error when it does not fit.
fn q8_fits(q8: Option<Q8Sink<'_>>, n: usize, row: usize) -> Result<Option<Q8Sink<'_>>> {
    match q8 {
        Some(s) if s.n != n || !row.is_multiple_of(32) || !THREADS.is_multiple_of(32) => {
            Err(KernelError::Shape(format!(
                "an 8-bit copy of {} values for {n} values in rows of {row}",
                s.n
            )))
        }
        other => Ok(other),
    }
}

/// The kernel's last two arguments: the 8-bit values and block scales, or two null pointers.
fn push_q8<'a>(
    l: &mut cudarc::driver::LaunchArgs<'a>,
    q8: Option<&'a mut Q8Sink<'_>>,
    null: &'a u64,
) {
    match q8 {
        Some(s) => {
            l.arg(&mut s.q).arg(&mut s.s);
        }
        None => {
            l.arg(null).arg(null);
        }
    }
}

/// Threads of a `sample_rows` block (`PICK_THREADS` in sample.cu).
const PICK_THREADS: u32 = 1024;

fn need(what: &str, have: usize, want: usize) -> Result<()> {
    if have < want {
        return Err(KernelError::Shape(format!(
            "{what}: {have} values where {want} are needed"
        )));
    }
    Ok(())
}

/// Whether the attention kernel takes heads of `head_dim` dims (any context: long ones are
/// split).
pub fn attention_fits(head_dim: usize) -> bool {
    head_dim <= 256 && head_dim.is_multiple_of(4)
}

/// Fewest positions per split-K part.
const PART_MIN: usize = 256;
/// Most parts per row (`ATT_MAX_PARTS` in attention.cu).
const MAX_PARTS: usize = 128;
/// Below this many blocks per part the GPU has idle SMs, and long rows are split to fill
/// them; above it rows are split only where the scores outgrow shared memory.
const SPLIT_BELOW: usize = 1024;
/// Shared memory kept for the attention kernel's static variables (336 bytes at most, as
/// `ptxas -v` reports for the eight-head kernel).
pub(super) const ATT_STATIC_SHARED: usize = 512;

/// How an attention launch is laid out: query heads per block (heads of one KV group, whose
/// key and value rows the block reads once), positions per split-K part, parts per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionSplit {
    pub group: usize,
    pub part: usize,
    pub parts: usize,
}

impl AttentionSplit {
    /// Shared memory of one block: the group's queries, then room for the scores, the warps'
    /// sums (eight warps) or the combining block's weights, whichever is largest.
    pub fn shared_bytes(&self, head_dim: usize) -> usize {
        let gd = self.group * head_dim;
        (gd + (self.group * self.part)
            .max(8 * gd)
            .max(self.group * self.parts))
            * 4
    }

    /// The kernel compiled for this layout (attention.cu's `PAGED_ATTENTION` instances).
    fn kernel(&self, head_dim: usize) -> String {
        format!(
            "paged_attention_g{}_c{}",
            self.group,
            head_dim.div_ceil(128)
        )
    }
}

/// Query heads per attention block: the largest divisor of the KV group up to 8 (up to 4 for
/// heads of more than 128 dims, whose sums would not fit the registers).
pub fn attention_group(heads: usize, kv_heads: usize, head_dim: usize) -> usize {
    let group = heads / kv_heads.max(1);
    let most = if head_dim > 128 { 4 } else { 8 };
    (1..=most.min(group.max(1)))
        .rev()
        .find(|g| group.is_multiple_of(*g))
        .unwrap_or(1)
}

/// The layout of an attention over `rows` rows of `heads` heads (`kv_heads` key/value heads)
/// whose rows see at most `visible` positions, with `shared` bytes of shared memory a block
/// ([`Gpu::attention_shared`]).
pub fn attention_split(
    rows: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    visible: usize,
    shared: usize,
) -> AttentionSplit {
    // Positions whose scores fit in shared memory beside `g` heads' queries and the kernel's
    // static shared variables (the warps' sums take the scores' place once they are used).
    let most_within = |bytes: usize, g: usize| {
        (bytes.saturating_sub(ATT_STATIC_SHARED) / 4 / g)
            .saturating_sub(head_dim)
            .max(1)
    };
    let most = |g: usize| most_within(shared, g);
    let blocks = |g: usize| (rows * heads / g).max(1);
    let visible = visible.max(1);
    let widest = attention_group(heads, kv_heads, head_dim);
    let (group, part) = if blocks(widest) < SPLIT_BELOW {
        // Idle SMs: split to fill them, in parts no longer than 48 KiB holds whatever a block
        // may use: more, shorter parts fill the GPU better (8,192 positions × 64 rows of 32/8
        // heads: 10.4 ms a step in three parts, 11.2 in two, on an H200).
        let fill = SPLIT_BELOW.div_ceil(blocks(widest)).min(MAX_PARTS);
        let part = PART_MIN
            .max(visible.div_ceil(fill))
            .min(most_within(shared.min(SHARED_BYTES), widest));
        (widest, part)
    } else {
        // Enough blocks: split only where the scores outgrow shared memory. Every part leaves
        // head_dim + 2 values per row and head, so a launch of many long rows takes the widest
        // group whose scores fit whole, else one head a block (the longest parts) — the
        // partials of a long prompt's rows would otherwise take gigabytes.
        let group = (1..=widest)
            .rev()
            .filter(|g| widest.is_multiple_of(*g))
            .find(|&g| visible <= most(g))
            .unwrap_or(1);
        (group, most(group))
    };
    let part = part.min(visible);
    AttentionSplit {
        group,
        part,
        parts: visible.div_ceil(part),
    }
}

/// Values of [`AttentionTables::partials`] for launches of 1 to `rows` rows.
pub fn attention_partials_len(
    rows: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    longest: usize,
    shared: usize,
) -> usize {
    (1..=rows)
        .map(|r| {
            let s = attention_split(r, heads, kv_heads, head_dim, longest, shared);
            if s.parts > 1 {
                r * heads * s.parts * (head_dim + 2)
            } else {
                0
            }
        })
        .max()
        .unwrap_or(0)
}

/// The index packed in a key of [`Gpu::argmax_rows`].
pub fn argmax_index(key: u64) -> u32 {
    0xffff_ffff - (key & 0xffff_ffff) as u32
}

/// A recorded sequence of launches, replayed with one call (a CUDA graph).
pub struct StepGraph(CudaGraph);

impl std::fmt::Debug for StepGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StepGraph")
    }
}

impl Gpu {
    /// Records the launches `f` queues (nothing runs) into a graph. `f` must only launch
    /// kernels and products on buffers that outlive the graph: no copies from the host.
    pub fn capture(&self, f: impl FnOnce() -> Result<()>) -> Result<StepGraph> {
        use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
        self.stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(cuda("begin capture"))?;
        let recorded = f();
        let graph = self
            .stream
            .end_capture(CUgraphInstantiate_flags(0))
            .map_err(cuda("end capture"))?;
        recorded?;
        graph
            .map(StepGraph)
            .ok_or_else(|| KernelError::Cuda("capture recorded nothing".into()))
    }

    /// Queues a recorded graph on the stream.
    pub fn replay(&self, g: &StepGraph) -> Result<()> {
        g.0.launch().map_err(cuda("graph launch"))
    }

    /// `keys[r]` = the largest of `cols` values in row `r` of `x` and its index (the first on
    /// ties), packed; [`argmax_index`] unpacks the index. Many blocks per row.
    pub fn argmax_rows(
        &self,
        keys: &mut CudaSlice<u64>,
        x: &CudaSlice<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        need("argmax_rows", x.len(), rows * cols)?;
        need("argmax_rows keys", keys.len(), rows)?;
        let zero = self.function("zero_u64")?;
        let rows_i = rows as i32;
        let mut l = self.stream.launch_builder(&zero);
        l.arg(&mut *keys).arg(&rows_i);
        // SAFETY: as below.
        unsafe { l.launch(elementwise_cfg(rows)) }.map_err(cuda("zero_u64"))?;
        let f = self.function("argmax_rows")?;
        let cols_i = cols as i32;
        // About 2048 values per block.
        let chunks = cols.div_ceil(2048).clamp(1, 1024) as u32;
        let mut l = self.stream.launch_builder(&f);
        l.arg(keys).arg(x).arg(&cols_i);
        let cfg = LaunchConfig {
            grid_dim: (chunks, rows as u32, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: as below; 256 threads, as the kernel's shared array is sized.
        unsafe { l.launch(cfg) }.map_err(cuda("argmax_rows"))?;
        Ok(())
    }

    /// A zeroed device buffer of `n` values.
    /// Each of `rows` rows of `logits` (`[rows, vocab]`) picks its next token by its
    /// [`DevicePick`](crate::DevicePick) (`params`: [`PICK_WORDS`](crate::PICK_WORDS) words a
    /// row, from [`DevicePick::words`](crate::DevicePick::words)); `out[row]` unpacks with
    /// [`picked`](crate::picked). One block per row.
    pub fn sample_rows(
        &self,
        out: &mut CudaSlice<u64>,
        logits: &CudaSlice<f32>,
        params: &CudaSlice<u32>,
        rows: usize,
        vocab: usize,
    ) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        if vocab == 0 || vocab >= 1 << 31 {
            return Err(KernelError::Shape(format!("sampling over {vocab} logits")));
        }
        need("sample_rows", logits.len(), rows * vocab)?;
        need("sample_rows params", params.len(), rows * crate::PICK_WORDS)?;
        need("sample_rows out", out.len(), rows)?;
        let f = self.function("sample_rows")?;
        let vocab_i = vocab as i32;
        let mut l = self.stream.launch_builder(&f);
        l.arg(out).arg(logits).arg(params).arg(&vocab_i);
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (PICK_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the buffers hold `rows` rows (checked above); 1024 threads, as the kernel's
        // shared arrays and launch bounds are sized.
        unsafe { l.launch(cfg) }.map_err(cuda("sample_rows"))?;
        Ok(())
    }

    pub fn alloc<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros::<T>(n.max(1))
            .map_err(cuda("alloc"))
    }

    /// Activations of `n` values in f16 or f32.
    pub fn alloc_act(&self, n: usize, half: bool) -> Result<Act> {
        Ok(if half {
            Act::F16(self.alloc(n)?)
        } else {
            Act::F32(self.alloc(n)?)
        })
    }

    /// Copies `host` into the start of `dev` (queued on the stream).
    pub fn upload_into<T: DeviceRepr>(&self, host: &[T], dev: &mut CudaSlice<T>) -> Result<()> {
        need("upload", dev.len(), host.len())?;
        let mut view = dev.slice_mut(..host.len());
        self.stream
            .memcpy_htod(host, &mut view)
            .map_err(cuda("upload"))
    }

    /// Copies the first `n` values of a device buffer to the host (waits for the work before
    /// it).
    pub fn download_first<T: DeviceRepr + Default + Clone>(
        &self,
        dev: &CudaSlice<T>,
        n: usize,
    ) -> Result<Vec<T>> {
        need("download", dev.len(), n)?;
        self.stream
            .clone_dtoh(&dev.slice(..n))
            .map_err(cuda("download"))
    }

    /// Copies `src` into the start of `dst` on the device (queued on the stream).
    pub fn copy<T: DeviceRepr>(&self, src: &CudaSlice<T>, dst: &mut CudaSlice<T>) -> Result<()> {
        need("copy", dst.len(), src.len())?;
        let mut view = dst.slice_mut(..src.len());
        self.stream
            .memcpy_dtod(src, &mut view)
            .map_err(cuda("copy"))
    }

    /// Waits for everything queued so far.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(cuda("synchronize"))
    }

    /// `out[r] = table[ids[r]] · scale` for `rows` rows of `table.inp` values: a table in f32,
    /// f16 or GGUF blocks (one type: rows decoded as `dequant_f16` decodes them).
    pub fn embed_rows(
        &self,
        out: &mut CudaSlice<f32>,
        table: &GemmWeight,
        ids: &CudaSlice<u32>,
        rows: usize,
        scale: f32,
    ) -> Result<()> {
        let cols = table.inp;
        need("embed_rows out", out.len(), rows * cols)?;
        need("embed_rows ids", ids.len(), rows)?;
        let cols_i = cols as i32;
        let name = match &table.data {
            GemmData::F32(_) => "embed_rows",
            GemmData::F16(_) => "embed_rows_f16",
            GemmData::Quant(_) => "embed_rows_quant",
        };
        let f = self.function(name)?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(out);
        let (stride, code);
        match &table.data {
            GemmData::F32(t) => {
                l.arg(t);
            }
            GemmData::F16(t) => {
                l.arg(t);
            }
            GemmData::Quant(parts) => {
                let [p] = &parts[..] else {
                    return Err(KernelError::Shape(format!(
                        "an embedding table of {} block types (one is read)",
                        parts.len()
                    )));
                };
                stride = p.stride as i32;
                code = p.kind.code();
                l.arg(&p.data)
                    .arg(ids)
                    .arg(&cols_i)
                    .arg(&stride)
                    .arg(&code)
                    .arg(&scale);
                // SAFETY: the arguments match the kernel; ids index rows of `table` (the
                // caller's token ids, checked against the vocabulary before upload).
                unsafe { l.launch(rows_cfg(rows)) }.map_err(cuda(name))?;
                return Ok(());
            }
        }
        l.arg(ids).arg(&cols_i).arg(&scale);
        // SAFETY: as above.
        unsafe { l.launch(rows_cfg(rows)) }.map_err(cuda(name))?;
        Ok(())
    }

    /// RMSNorm of `rows` rows of `x` (rows `pick[r]` when given) with weight `w` into `out`.
    #[allow(clippy::too_many_arguments, reason = "one launch's arguments")]
    pub fn rms_norm_rows(
        &self,
        out: &mut Act,
        x: &CudaSlice<f32>,
        pick: Option<&CudaSlice<u32>>,
        rows: usize,
        w: &CudaSlice<f32>,
        eps: f32,
        q8: Option<Q8Sink<'_>>,
    ) -> Result<()> {
        let cols = w.len();
        need("rms_norm_rows out", out.len(), rows * cols)?;
        let mut q8 = q8_fits(q8, rows * cols, cols)?;
        let f = self.function("rms_norm_rows")?;
        let (cols_i, half) = (cols as i32, out.half());
        let pick = opt_ptr(pick, self);
        let mut l = self.stream.launch_builder(&f);
        match out {
            Act::F32(b) => l.arg(b),
            Act::F16(b) => l.arg(b),
        };
        l.arg(x).arg(&pick).arg(w).arg(&cols_i).arg(&eps).arg(&half);
        let null = 0u64;
        push_q8(&mut l, q8.as_mut(), &null);
        // A row per block, of 1024 threads: a decode step's one row is one block; rows of up
        // to 16,384 values (a multiple of 32) stay in the threads' registers between the two
        // passes, so the block waits for memory once.
        let cfg = LaunchConfig {
            block_dim: (1024, 1, 1),
            ..rows_cfg(rows)
        };
        // SAFETY: as above; `pick` rows are inside `x` (the caller's row indices).
        unsafe { l.launch(cfg) }.map_err(cuda("rms_norm_rows"))?;
        Ok(())
    }

    /// `x[r] += RMSNorm(y[r]) · w` for `rows` rows.
    pub fn add_rms_norm(
        &self,
        x: &mut CudaSlice<f32>,
        y: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        let cols = w.len();
        need("add_rms_norm", x.len().min(y.len()), rows * cols)?;
        let f = self.function("add_rms_norm")?;
        let cols_i = cols as i32;
        let mut l = self.stream.launch_builder(&f);
        l.arg(x).arg(y).arg(w).arg(&cols_i).arg(&eps);
        // SAFETY: as above.
        unsafe { l.launch(rows_cfg(rows)) }.map_err(cuda("add_rms_norm"))?;
        Ok(())
    }

    /// Bias, QK-norm and RoPE of a fused q/k/v product, q to `q`, k and v to their slots of
    /// the caches (see `qkv_rope_cache` in kernels.cu).
    #[allow(clippy::too_many_arguments, reason = "one launch's arguments")]
    pub fn qkv_rope_cache(
        &self,
        qkv: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        norms: Option<(&CudaSlice<f32>, &CudaSlice<f32>)>,
        eps: f32,
        rope: (&CudaSlice<f32>, &CudaSlice<f32>, usize, bool),
        positions: &CudaSlice<u32>,
        slots: &CudaSlice<u32>,
        q: &mut CudaSlice<f32>,
        cache: (&mut CudaSlice<u16>, &mut CudaSlice<u16>),
        rows: usize,
        (heads, kv_heads, dim): (usize, usize, usize),
    ) -> Result<()> {
        let total = heads + 2 * kv_heads;
        need("qkv", qkv.len(), rows * total * dim)?;
        need("q", q.len(), rows * heads * dim)?;
        if 2 * rope.2 > dim {
            return Err(KernelError::Shape(format!(
                "{} rotary frequencies for heads of {dim}",
                rope.2
            )));
        }
        let f = self.function("qkv_rope_cache")?;
        let bias = opt_ptr(bias, self);
        let (qn, kn) = (
            opt_ptr(norms.map(|n| n.0), self),
            opt_ptr(norms.map(|n| n.1), self),
        );
        let (half, inter) = (rope.2 as i32, i32::from(rope.3));
        let ints = [heads, kv_heads, dim].map(|v| v as i32);
        let mut l = self.stream.launch_builder(&f);
        l.arg(qkv).arg(&bias).arg(&qn).arg(&kn).arg(&eps);
        l.arg(rope.0).arg(rope.1).arg(&half).arg(&inter);
        l.arg(positions).arg(slots).arg(q).arg(cache.0).arg(cache.1);
        for i in &ints {
            l.arg(i);
        }
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, total as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: (dim * 4) as u32,
        };
        // SAFETY: as above; positions are inside the cos/sin tables and slots inside the caches
        // (the runner sizes both for the context and block pool it was built with).
        unsafe { l.launch(cfg) }.map_err(cuda("qkv_rope_cache"))?;
        Ok(())
    }

    /// Paged attention of `a.rows` query rows (see [`PagedAttention`]) into `out` (f32 or f16:
    /// the next product's input), and with `q8` also in 8 bits for a quantized product (heads
    /// of a multiple of 32 dims).
    #[allow(clippy::too_many_arguments, reason = "one launch's arguments")]
    pub fn attention(
        &self,
        out: &mut Act,
        q: &CudaSlice<f32>,
        k_cache: &CudaSlice<u16>,
        v_cache: &CudaSlice<u16>,
        t: &AttentionTables,
        a: &AttentionLaunch,
        q8: Option<Q8Sink<'_>>,
    ) -> Result<()> {
        let visible = a.window.map_or(a.longest, |w| a.longest.min(w as usize));
        if !attention_fits(a.head_dim) {
            return Err(KernelError::Shape(format!(
                "heads of {} dims (the attention kernel takes multiples of 4 up to 256)",
                a.head_dim
            )));
        }
        if a.kv_heads == 0 || !a.heads.is_multiple_of(a.kv_heads) {
            return Err(KernelError::Shape(format!(
                "{} query heads over {} key/value heads (a whole number of query heads per \
                 key/value head is needed)",
                a.heads, a.kv_heads
            )));
        }
        let split = attention_split(
            a.rows,
            a.heads,
            a.kv_heads,
            a.head_dim,
            visible,
            self.attention_shared,
        );
        let (part, parts) = (split.part, split.parts);
        let shared = split.shared_bytes(a.head_dim);
        if parts > 1 {
            need(
                "attention partials",
                t.partials.len(),
                a.rows * a.heads * parts * (a.head_dim + 2),
            )?;
            need("attention arrivals", t.arrivals.len(), a.rows * a.heads)?;
        }
        let n = a.rows * a.heads * a.head_dim;
        need("attention q", q.len(), n)?;
        need("attention out", out.len(), n)?;
        let mut q8 = q8_fits(q8, n, a.head_dim)?;
        let f = self.function(&split.kernel(a.head_dim))?;
        let ints = [a.max_blocks, a.block_size, a.heads, a.kv_heads, a.head_dim].map(|x| x as i32);
        let window = a.window.map_or(0, |w| w as i32);
        let softcap = a.softcap.unwrap_or(0.0);
        let half = out.half();
        if a.table_offset >= t.block_tables.len() {
            return Err(KernelError::Shape(format!(
                "block tables start at {} of {}",
                a.table_offset,
                t.block_tables.len()
            )));
        }
        let tables = t.block_tables.slice(a.table_offset..);
        let mut l = self.stream.launch_builder(&f);
        match out {
            Act::F32(b) => l.arg(b),
            Act::F16(b) => l.arg(b),
        };
        l.arg(q).arg(k_cache).arg(v_cache);
        l.arg(&tables).arg(&t.row_seqs).arg(&t.context_lens);
        for i in &ints {
            l.arg(i);
        }
        l.arg(&a.scale).arg(&window).arg(&softcap).arg(&half);
        let null = 0u64;
        push_q8(&mut l, q8.as_mut(), &null);
        let part_i = part as i32;
        l.arg(&part_i).arg(&t.partials).arg(&t.arrivals);
        let cfg = LaunchConfig {
            grid_dim: ((a.heads / split.group) as u32, a.rows as u32, parts as u32),
            block_dim: (256, 1, 1),
            shared_mem_bytes: shared as u32,
        };
        // SAFETY: as above; the tables were checked (`PagedAttention::check`) or built by the
        // runner from its own block pool.
        unsafe { l.launch(cfg) }.map_err(cuda("paged_attention"))?;
        Ok(())
    }

    /// `act(gate) · up` from a fused `[rows, 2·ff]` product into `out` (`[rows, ff]`);
    /// `act`: 0 SiLU, 1 GELU (tanh), 2 GELU (erf), 3 ReLU.
    pub fn gated_act(
        &self,
        out: &mut Act,
        gate_up: &CudaSlice<f32>,
        rows: usize,
        ff: usize,
        act: i32,
        q8: Option<Q8Sink<'_>>,
    ) -> Result<()> {
        need("gated_act in", gate_up.len(), rows * 2 * ff)?;
        need("gated_act out", out.len(), rows * ff)?;
        let mut q8 = q8_fits(q8, rows * ff, ff)?;
        let f = self.function("gated_act")?;
        let (rows_i, ff_i, half) = (rows as i32, ff as i32, out.half());
        let mut l = self.stream.launch_builder(&f);
        match out {
            Act::F32(b) => l.arg(b),
            Act::F16(b) => l.arg(b),
        };
        l.arg(gate_up).arg(&rows_i).arg(&ff_i).arg(&act).arg(&half);
        let null = 0u64;
        push_q8(&mut l, q8.as_mut(), &null);
        // SAFETY: as above.
        unsafe { l.launch(elementwise_cfg(rows * ff)) }.map_err(cuda("gated_act"))?;
        Ok(())
    }

    /// The first `n` values of `x` into `out` (f32 or f16), and into `q8` in 8 bits when given
    /// (`n / rows` values a row).
    pub fn convert(
        &self,
        out: &mut Act,
        x: &CudaSlice<f32>,
        n: usize,
        q8: Option<Q8Sink<'_>>,
    ) -> Result<()> {
        need("convert", out.len().min(x.len()), n)?;
        let mut q8 = q8_fits(q8, n, n)?;
        let f = self.function("convert")?;
        let (n_i, half) = (n as i32, out.half());
        let mut l = self.stream.launch_builder(&f);
        match out {
            Act::F32(b) => l.arg(b),
            Act::F16(b) => l.arg(b),
        };
        l.arg(x).arg(&n_i).arg(&half);
        let null = 0u64;
        push_q8(&mut l, q8.as_mut(), &null);
        // SAFETY: as above.
        unsafe { l.launch(elementwise_cfg(n)) }.map_err(cuda("convert"))?;
        Ok(())
    }

    /// `x = cap · tanh(x / cap)` over the first `n` values.
    pub fn softcap(&self, x: &mut CudaSlice<f32>, n: usize, cap: f32) -> Result<()> {
        need("softcap", x.len(), n)?;
        let f = self.function("softcap_f32")?;
        let n_i = n as i32;
        let mut l = self.stream.launch_builder(&f);
        l.arg(x).arg(&n_i).arg(&cap);
        // SAFETY: as above.
        unsafe { l.launch(elementwise_cfg(n)) }.map_err(cuda("softcap_f32"))?;
        Ok(())
    }
}
