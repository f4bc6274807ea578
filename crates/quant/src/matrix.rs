//! A block-quantized weight matrix and its product with f32 activations, threaded over tiles of
//! weight rows on the crate's worker pool.
//!
//! `y = x · Wᵀ` for `x` of `[n, cols]` and `W` of `[rows, cols]`: each activation row is
//! quantized once (into a per-thread buffer that is reused between calls), then the weight rows
//! are cut into tiles small enough to stay in cache and the tiles spread over the pool. Inside a
//! tile every activation row meets every weight row, so with `n > 1` (a prompt) each weight
//! block is read from memory once per tile and from cache for the other rows; the SIMD kernels
//! also widen each weight block once for four activation rows.

use std::borrow::Cow;
use std::cell::Cell;

use crate::activation::{BlockQ8K, QuantizedActivations};
#[cfg(target_arch = "aarch64")]
use crate::arm::tiles as arm;
use crate::dequant::dequantize_row;
use crate::dot::Isa;
use crate::error::{QuantError, Result};
use crate::format::{ActivationType, QK, QuantType};
use crate::pool::{MAX_TASKS, Pool};
use crate::{float, grouped, kquants, legacy, panels};

/// Weight bytes a tile aims to stay under (about half of a core's L2, leaving room for the
/// activations).
const TILE_BYTES: usize = 256 << 10;
/// Tiles per thread, so that uneven progress still balances.
const TILES_PER_THREAD: usize = 4;
/// Below this many block dot products, a matmul runs on the calling thread alone.
const SERIAL_BLOCKS: usize = 1024;

/// A `[rows, cols]` matrix stored as GGUF blocks, row-major: row `r` is bytes
/// `r · row_bytes .. (r + 1) · row_bytes`. The blocks are kept in the layout the SIMD kernels
/// read, in the same bytes: the 32-value types in panels of eight rows (`crate::panels`; rows
/// past the last multiple of eight stay in GGUF order), `Q4_K`, `Q5_K` and `Q6_K` grouped
/// (`crate::grouped`). [`QMatrix::gguf_bytes`] and [`QMatrix::row`] give GGUF order back.
#[derive(Debug, Clone)]
pub struct QMatrix {
    ty: QuantType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: Vec<u8>,
}

thread_local! {
    /// The quantized activations of the matmul running on this thread, kept for the next one.
    static SCRATCH: Cell<QuantizedActivations> = Cell::new(QuantizedActivations::new());
}

impl QMatrix {
    /// Takes ownership of `data`, `rows` rows of `cols` values stored as `ty` blocks. The block
    /// types and F16/BF16 are accepted (F32 is not: it has no narrower form to keep).
    pub fn new(ty: QuantType, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self> {
        if ty.activation().is_none() && !float::is_half(ty) {
            return Err(QuantError::Unsupported(format!(
                "a quantized matmul of {ty} weights"
            )));
        }
        let row_bytes = ty.row_bytes(cols)?;
        if data.len() != rows * row_bytes {
            return Err(QuantError::Shape(format!(
                "{rows}×{cols} {ty} needs {} bytes, got {}",
                rows * row_bytes,
                data.len()
            )));
        }
        let mut data = data;
        if grouped::group_len(ty).is_some() {
            in_parts(&mut data, row_bytes, |part| grouped::pack(ty, part));
        }
        if panels::interleaves(ty) {
            let full = rows / panels::ROWS * panels::ROWS * row_bytes;
            in_parts(&mut data[..full], panels::ROWS * row_bytes, |part| {
                panels::pack(ty, part, row_bytes)
            });
        }
        if float::is_half(ty) {
            // Whole panels: the last one padded with zero rows.
            data.resize(rows.next_multiple_of(float::PANEL) * row_bytes, 0);
            in_parts(&mut data, float::PANEL * row_bytes, |part| {
                for panel in part.chunks_exact_mut(float::PANEL * row_bytes) {
                    float::pack(panel, row_bytes)
                }
            });
        }
        Ok(QMatrix {
            ty,
            rows,
            cols,
            row_bytes,
            data,
        })
    }

    pub fn ty(&self) -> QuantType {
        self.ty
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The blocks of every row in GGUF order (a copy for the types kept in another layout).
    pub fn gguf_bytes(&self) -> Cow<'_, [u8]> {
        if grouped::group_len(self.ty).is_none() && self.panel_len().is_none() {
            return Cow::Borrowed(&self.data);
        }
        let mut v = self.data.clone();
        grouped::unpack(self.ty, &mut v);
        if let Some(len) = self.panel_len() {
            let full = self.panel_rows() * self.row_bytes;
            for group in v[..full].chunks_exact_mut(len * self.row_bytes) {
                self.unpack_panel(group);
            }
        }
        v.truncate(self.rows * self.row_bytes);
        Cow::Owned(v)
    }

    /// The blocks of row `r` in GGUF order.
    pub fn row(&self, r: usize) -> Option<Cow<'_, [u8]>> {
        let rb = self.row_bytes;
        if r >= self.rows {
            return None;
        }
        if let Some(len) = self.panel_len().filter(|_| r < self.panel_rows()) {
            let first = r / len * len;
            let mut group = self.data[first * rb..(first + len) * rb].to_vec();
            self.unpack_panel(&mut group);
            let at = (r - first) * rb;
            return Some(Cow::Owned(group[at..at + rb].to_vec()));
        }
        let row = self.data.get(r * rb..(r + 1) * rb)?;
        if grouped::group_len(self.ty).is_none() {
            return Some(Cow::Borrowed(row));
        }
        let mut v = row.to_vec();
        grouped::unpack(self.ty, &mut v);
        Some(Cow::Owned(v))
    }

    /// Rows per panel for the types kept in panels: eight for the 32-value block types
    /// (`crate::panels`), sixteen for F16/BF16 (`crate::float`).
    fn panel_len(&self) -> Option<usize> {
        if panels::interleaves(self.ty) {
            Some(panels::ROWS)
        } else if float::is_half(self.ty) {
            Some(float::PANEL)
        } else {
            None
        }
    }

    /// Rows kept in panels: the leading multiple of eight for the interleaved block types
    /// (the rest stay in GGUF order), every row (the last panel padded) for F16/BF16, none for
    /// the others.
    fn panel_rows(&self) -> usize {
        match self.panel_len() {
            Some(_) if float::is_half(self.ty) => self.rows.next_multiple_of(float::PANEL),
            Some(len) => self.rows / len * len,
            None => 0,
        }
    }

    /// One panel's rows back in GGUF order, in place.
    fn unpack_panel(&self, group: &mut [u8]) {
        if float::is_half(self.ty) {
            float::unpack(group, self.row_bytes);
        } else {
            panels::unpack(self.ty, group, self.row_bytes);
        }
    }

    /// The whole matrix in f32, `[rows, cols]` row-major.
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.rows * self.cols];
        dequantize_row(self.ty, &self.gguf_bytes(), &mut out)?;
        Ok(out)
    }

    /// Rows `first..` of the matrix in f32, row-major, as many as `out` holds (a multiple of
    /// the columns): a block of [`QMatrix::dequantize`] that costs only its rows (each panel
    /// they touch unpacked once).
    pub fn dequantize_rows(&self, first: usize, out: &mut [f32]) -> Result<()> {
        let cols = self.cols;
        let n = out.len().checked_div(cols).unwrap_or(0);
        if cols == 0 || n * cols != out.len() || first + n > self.rows {
            return Err(QuantError::Shape(format!(
                "{} values from row {first} of a {}×{cols} matrix",
                out.len(),
                self.rows
            )));
        }
        let rb = self.row_bytes;
        let end = first + n;
        let mut rows_out = out.chunks_exact_mut(cols);
        let mut r = first;
        while r < end {
            if let Some(len) = self.panel_len().filter(|_| r < self.panel_rows()) {
                let group_first = r / len * len;
                let mut group = self.data[group_first * rb..(group_first + len) * rb].to_vec();
                self.unpack_panel(&mut group);
                let last = (group_first + len).min(end);
                for (row, dst) in (r..last).zip(&mut rows_out) {
                    let at = (row - group_first) * rb;
                    dequantize_row(self.ty, &group[at..at + rb], dst)?;
                }
                r = last;
            } else {
                let (Some(row), Some(dst)) = (self.row(r), rows_out.next()) else {
                    return Err(QuantError::Shape(format!("row {r} of {}", self.rows)));
                };
                dequantize_row(self.ty, &row, dst)?;
                r += 1;
            }
        }
        Ok(())
    }

    /// `out = x · Wᵀ` for `x` of `[n, cols]` and `out` of `[n, rows]`, both row-major, on the
    /// fastest kernels this CPU runs.
    pub fn matmul(&self, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
        self.matmul_with(Isa::best(), x, n, out)
    }

    /// [`QMatrix::matmul`] on the kernels of `isa` (an error if this CPU lacks it).
    pub fn matmul_with(&self, isa: Isa, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
        isa.check()?;
        if x.len() != n * self.cols || out.len() != n * self.rows {
            return Err(QuantError::Shape(format!(
                "[{n}, {}] activations and [{n}, {}] output for a {}×{} matrix",
                x.len().checked_div(n).unwrap_or(0),
                out.len().checked_div(n).unwrap_or(0),
                self.rows,
                self.cols
            )));
        }
        if n == 0 || self.rows == 0 {
            return Ok(());
        }
        if float::is_half(self.ty) {
            let (ty, cols) = (self.ty, self.cols);
            // SAFETY: `isa.check()` passed; each tile is whole panels of `cols` columns of `ty`
            // covering its rows (`run` extends a tile to the end of its last panel), and `x`
            // holds `n` rows of `cols` (checked above).
            self.run(n, out, &|w, tile| unsafe {
                float::half_tile(isa, ty, w, x, cols, tile)
            });
            return Ok(());
        }
        let act_ty = self.ty.activation().unwrap_or(ActivationType::Q8_0);
        // Taken out of the thread-local for the call, so a matmul started on this thread while
        // this one runs (from inside one of its tasks) gets a buffer of its own.
        let mut acts = SCRATCH.with(Cell::take);
        let result = acts.quantize_with(isa, act_ty, x, n, self.cols);
        if result.is_ok() {
            // The SIMD kernels read grouped weights with grouped activations; the portable one
            // restores GGUF order block by block and takes the activations as they are.
            if let Some(len) = grouped::group_len(self.ty).filter(|_| isa != Isa::Scalar) {
                acts.group_q8k(len);
            }
            self.run(n, out, &|w, tile| self.run_tile(isa, &acts, w, tile));
        }
        SCRATCH.with(|s| s.set(acts));
        result
    }

    /// Weight rows per tile: at most [`TILE_BYTES`] of weights, at least
    /// [`TILES_PER_THREAD`] tiles per thread when the matrix has the rows for it.
    fn tile_rows(&self) -> usize {
        let threads = Pool::global().threads();
        let by_cache = (TILE_BYTES / self.row_bytes.max(1)).max(1);
        let by_balance = self.rows.div_ceil(threads * TILES_PER_THREAD).max(1);
        let rows = by_cache.min(by_balance).max(self.rows.div_ceil(MAX_TASKS));
        match self.panel_len() {
            Some(len) => rows.next_multiple_of(len),
            None => rows,
        }
    }

    /// Calls `tile_fn` with the weight rows of each tile and the part of `out` it writes, on the
    /// worker pool when there is enough work.
    fn run(&self, n: usize, out: &mut [f32], tile_fn: &(dyn Fn(&[u8], &OutTile) + Sync)) {
        let tile_rows = self.tile_rows();
        let tiles = self.rows.div_ceil(tile_rows);
        let len = out.len();
        let ptr = SharedMut(out.as_mut_ptr());
        let tile = |t: usize| {
            let first_row = t * tile_rows;
            let last_row = (first_row + tile_rows).min(self.rows);
            let tile = OutTile {
                ptr,
                len,
                stride: self.rows,
                first_row,
                rows: last_row - first_row,
                n,
            };
            // A tile ends with its last panel (F16/BF16 pad the matrix's last one).
            let end = last_row.max(self.panel_rows().min(first_row + tile_rows));
            let w = &self.data[first_row * self.row_bytes..end * self.row_bytes];
            tile_fn(w, &tile);
        };
        let blocks = n * self.rows * (self.cols / self.ty.block_len().max(QK));
        if tiles == 1 || blocks < SERIAL_BLOCKS {
            (0..tiles).for_each(tile);
        } else {
            Pool::global().run(tiles, &tile);
        }
    }

    /// One tile: its rows kept in panels (the tiles of an interleaved type start at multiples
    /// of eight), then any in GGUF order.
    fn run_tile(&self, isa: Isa, acts: &QuantizedActivations, w: &[u8], out: &OutTile) {
        let rb = self.row_bytes;
        let bpr = self.cols / self.ty.block_len();
        let in_panels = self
            .panel_rows()
            .saturating_sub(out.first_row)
            .min(out.rows);
        if in_panels == 0 {
            return self.plain_tile(isa, acts, w, out);
        }
        let (pw, rest) = w.split_at(in_panels * rb);
        let (pout, rest_out) = out.split(in_panels);
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `matmul_with` checked that the CPU has AVX2/FMA/F16C; `pw` is whole
            // panels of `self.ty` and `acts` holds `out.n` rows of `bpr` blocks of the paired
            // type.
            Isa::Avx2 | Isa::Avx512 => unsafe { avx2_panels(self.ty, pw, rb, acts, bpr, &pout) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, and the CPU has AVX-512 F/VL/BW and VNNI.
            Isa::Avx512Vnni => unsafe { vnni_panels(self.ty, pw, rb, acts, bpr, &pout) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, and the CPU has AVX-VNNI.
            Isa::AvxVnni => unsafe { avx_vnni_panels(self.ty, pw, rb, acts, bpr, &pout) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: `matmul_with` checked that the CPU has NEON; `pw` is whole panels of
            // `self.ty` and `acts` holds `out.n` rows of `bpr` blocks of the paired type.
            Isa::Neon => unsafe { arm::neon_panels(self.ty, pw, rb, acts, bpr, &pout) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: as above, and the CPU has the dot-product extension.
            Isa::NeonDot => unsafe { arm::dot_panels(self.ty, pw, rb, acts, bpr, &pout) },
            _ => {
                let mut rows = pw.to_vec();
                panels::unpack(self.ty, &mut rows, rb);
                scalar_tile(self.ty, &rows, rb, acts, bpr, &pout);
            }
        }
        if rest_out.rows > 0 {
            self.plain_tile(isa, acts, rest, &rest_out);
        }
    }

    /// A tile of rows in GGUF order (or the grouped layout of its type).
    fn plain_tile(&self, isa: Isa, acts: &QuantizedActivations, w: &[u8], out: &OutTile) {
        let rb = self.row_bytes;
        let bpr = self.cols / self.ty.block_len();
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `matmul_with` checked that the CPU has AVX2/FMA/F16C; `w` is whole rows
            // of `self.ty` and `acts` holds `out.n` rows of `bpr` blocks of the paired type.
            Isa::Avx2 => unsafe { avx2_tile(self.ty, w, rb, acts, bpr, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, and the CPU has AVX-512 F/VL/BW.
            Isa::Avx512 => unsafe { avx512_tile(self.ty, w, rb, acts, bpr, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, and the CPU has AVX-512 F/VL/BW and VNNI.
            Isa::Avx512Vnni => unsafe { vnni_tile(self.ty, w, rb, acts, bpr, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, and the CPU has AVX-VNNI.
            Isa::AvxVnni => unsafe { avx_vnni_tile(self.ty, w, rb, acts, bpr, out) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: `matmul_with` checked that the CPU has NEON; `w` is whole rows of
            // `self.ty` (grouped where the type is) and `acts` holds `out.n` rows of `bpr`
            // blocks of the paired type, grouped as the weights are.
            Isa::Neon => unsafe { arm::neon_tile(self.ty, w, rb, acts, bpr, out) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: as above, and the CPU has the dot-product extension.
            Isa::NeonDot => unsafe { arm::dot_tile(self.ty, w, rb, acts, bpr, out) },
            _ => scalar_tile(self.ty, w, rb, acts, bpr, out),
        }
    }
}

/// Runs `f` over consecutive parts of `data` of about a MiB (whole multiples of `unit` bytes)
/// on the worker pool.
fn in_parts(data: &mut [u8], unit: usize, f: impl Fn(&mut [u8]) + Sync) {
    let chunk = unit.max(1) * (1usize << 20).div_ceil(unit.max(1));
    crate::parallel_chunks_mut(data, chunk, &|_, part| f(part));
}

/// A buffer shared by the tasks of one pool job, each writing its own part: the output of a
/// matmul (written through `OutTile::set`), or the parts of `parallel_chunks_mut`.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<T>(pub(crate) *mut T);

impl<T> SharedMut<T> {
    pub(crate) fn of(part: &mut [T]) -> Self {
        SharedMut(part.as_mut_ptr())
    }
}

// SAFETY: the pointer is only written at indices no other task of the same job writes, while
// the job holds the `&mut` borrow it came from.
unsafe impl<T: Send> Send for SharedMut<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedMut<T> {}

/// The output pointer of a matmul.
type OutPtr = SharedMut<f32>;

/// The part of the output one tile writes: columns `first_row .. first_row + rows` of each of
/// the `n` output rows.
pub(crate) struct OutTile {
    ptr: OutPtr,
    len: usize,
    stride: usize,
    first_row: usize,
    rows: usize,
    n: usize,
}

impl OutTile {
    /// The first `rows` rows of the tile, and the rest.
    fn split(&self, rows: usize) -> (OutTile, OutTile) {
        let part = |first_row, rows| OutTile {
            ptr: self.ptr,
            len: self.len,
            stride: self.stride,
            first_row,
            rows,
            n: self.n,
        };
        (
            part(self.first_row, rows),
            part(self.first_row + rows, self.rows - rows),
        )
    }

    /// Activation (and output) rows.
    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// Weight rows of the tile.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Writes output row `t`, tile row `r`.
    #[inline(always)]
    pub(crate) fn set(&self, t: usize, r: usize, v: f32) {
        let i = t * self.stride + self.first_row + r;
        assert!(r < self.rows && t < self.n && i < self.len);
        // SAFETY: `i` is inside the output slice (checked above), which outlives the tiles
        // (`run` returns only after every tile has finished); tiles own disjoint ranges of
        // weight rows, so no other thread writes element `i`.
        unsafe { *self.ptr.0.add(i) = v }
    }
}

/// Every activation row against every weight row of a tile, `R` activation rows at a time
/// (`dot`; the rows left over go through `dot1`). Activation rows are the outer loop: the tile's
/// weights stay in cache while the activations stream past them, and each weight block loaded
/// serves `R` rows.
#[inline(always)]
pub(crate) fn tile_loop<A, const R: usize>(
    w: &[u8],
    row_bytes: usize,
    acts: &[A],
    bpr: usize,
    out: &OutTile,
    dot: impl Fn(&[u8], [&[A]; R]) -> [f32; R],
    dot1: impl Fn(&[u8], &[A]) -> f32,
) {
    let full = out.n / R * R;
    for t0 in (0..full).step_by(R) {
        let a: [&[A]; R] = std::array::from_fn(|k| &acts[(t0 + k) * bpr..(t0 + k + 1) * bpr]);
        for (r, w) in w.chunks_exact(row_bytes).enumerate() {
            for (k, v) in dot(w, a).into_iter().enumerate() {
                out.set(t0 + k, r, v);
            }
        }
    }
    for t in full..out.n {
        let a = &acts[t * bpr..(t + 1) * bpr];
        for (r, w) in w.chunks_exact(row_bytes).enumerate() {
            out.set(t, r, dot1(w, a));
        }
    }
}

/// [`tile_loop`] for rows in panels of eight: `dot` gives the eight rows of a panel row against
/// `R` activation rows (`dot1` against one).
#[inline(always)]
pub(crate) fn panel_loop<A, const R: usize>(
    w: &[u8],
    row_bytes: usize,
    acts: &[A],
    bpr: usize,
    out: &OutTile,
    dot: impl Fn(&[u8], [&[A]; R]) -> [[f32; panels::ROWS]; R],
    dot1: impl Fn(&[u8], &[A]) -> [f32; panels::ROWS],
) {
    let group = panels::ROWS * row_bytes;
    let full = out.n / R * R;
    for t0 in (0..full).step_by(R) {
        let a: [&[A]; R] = std::array::from_fn(|k| &acts[(t0 + k) * bpr..(t0 + k + 1) * bpr]);
        for (g, w) in w.chunks_exact(group).enumerate() {
            for (k, v) in dot(w, a).into_iter().enumerate() {
                for (l, v) in v.into_iter().enumerate() {
                    out.set(t0 + k, panels::ROWS * g + l, v);
                }
            }
        }
    }
    for t in full..out.n {
        let a = &acts[t * bpr..(t + 1) * bpr];
        for (g, w) in w.chunks_exact(group).enumerate() {
            for (l, v) in dot1(w, a).into_iter().enumerate() {
                out.set(t, panels::ROWS * g + l, v);
            }
        }
    }
}

/// [`tile_loop`] one row at a time.
#[inline(always)]
fn tile_loop1<A>(
    w: &[u8],
    row_bytes: usize,
    acts: &[A],
    bpr: usize,
    out: &OutTile,
    dot: impl Fn(&[u8], &[A]) -> f32,
) {
    tile_loop::<A, 1>(w, row_bytes, acts, bpr, out, |w, a| [dot(w, a[0])], &dot);
}

pub(crate) fn scalar_tile(
    ty: QuantType,
    w: &[u8],
    rb: usize,
    acts: &QuantizedActivations,
    bpr: usize,
    out: &OutTile,
) {
    let (q8_0, q8_1, q8k) = (acts.q8_0_rows(), acts.q8_1_rows(), acts.q8k_rows());
    match ty {
        QuantType::Q4_0 => tile_loop1(w, rb, q8_0, bpr, out, legacy::dot_q4_0),
        QuantType::Q5_0 => tile_loop1(w, rb, q8_0, bpr, out, legacy::dot_q5_0),
        QuantType::Q8_0 => tile_loop1(w, rb, q8_0, bpr, out, legacy::dot_q8_0),
        QuantType::Q4_1 => tile_loop1(w, rb, q8_1, bpr, out, legacy::dot_q4_1),
        QuantType::Q5_1 => tile_loop1(w, rb, q8_1, bpr, out, legacy::dot_q5_1),
        QuantType::Q2K => tile_loop1(w, rb, q8k, bpr, out, kquants::dot_q2k),
        QuantType::Q3K => tile_loop1(w, rb, q8k, bpr, out, kquants::dot_q3k),
        QuantType::Q4K => tile_loop1(w, rb, q8k, bpr, out, |w, a| {
            ungrouped_dot(QuantType::Q4K, w, a, kquants::dot_q4k)
        }),
        QuantType::Q5K => tile_loop1(w, rb, q8k, bpr, out, |w, a| {
            ungrouped_dot(QuantType::Q5K, w, a, kquants::dot_q5k)
        }),
        QuantType::Q6K => tile_loop1(w, rb, q8k, bpr, out, |w, a| {
            ungrouped_dot(QuantType::Q6K, w, a, kquants::dot_q6k)
        }),
        // `QMatrix::new` accepts only types with a dot product.
        QuantType::F32 | QuantType::F16 | QuantType::BF16 => {}
    }
}

/// `dot` of a grouped weight row with natural-order activations, block by block, each block
/// put back in GGUF order on the stack first.
fn ungrouped_dot(
    ty: QuantType,
    w: &[u8],
    a: &[BlockQ8K],
    dot: impl Fn(&[u8], &[BlockQ8K]) -> f32,
) -> f32 {
    let size = ty.block_bytes();
    let mut block = [0u8; 256];
    w.chunks_exact(size)
        .zip(a.chunks_exact(1))
        .map(|(w, a)| {
            let b = &mut block[..size];
            b.copy_from_slice(w);
            grouped::unpack(ty, b);
            dot(b, a)
        })
        .sum()
}

/// The x86 tile for `R` activation rows per weight block (then single rows), the kernels of
/// `crate::x86` inlined into the function it expands in, so they take its target features.
#[cfg(target_arch = "x86_64")]
macro_rules! x86_tile {
    ($r:literal, $vnni:literal, $ty:expr, $w:expr, $rb:expr, $acts:expr, $bpr:expr, $out:expr) => {{
        use crate::x86::{grouped as g, kquants as k, legacy as l};
        let (w, rb, bpr, out): (&[u8], usize, usize, &OutTile) = ($w, $rb, $bpr, $out);
        macro_rules! rows {
            ($a:expr, $dot:ident, vnni) => {
                rows!($a, l::$dot::<$r, $vnni>, l::$dot::<1, $vnni>)
            };
            ($a:expr, $dot:ident, grouped) => {
                rows!($a, g::$dot::<$r, $vnni>, g::$dot::<1, $vnni>)
            };
            ($a:expr, $dot:ident) => {
                rows!($a, k::$dot::<$r>, k::$dot::<1>)
            };
            ($a:expr, $dot:expr, $dot1:expr) => {
                // SAFETY: the caller's contract; each `w` row holds `bpr` blocks and each
                // activation row `bpr` blocks.
                tile_loop::<_, $r>(
                    w,
                    rb,
                    $a,
                    bpr,
                    out,
                    |w, a| unsafe { $dot(w, a) },
                    |w, a| {
                        // SAFETY: as above.
                        unsafe { $dot1(w, [a])[0] }
                    },
                )
            };
        }
        let acts: &QuantizedActivations = $acts;
        let (q8_0, q8_1, q8k) = (acts.q8_0_rows(), acts.q8_1_rows(), acts.q8k_rows());
        match $ty {
            QuantType::Q4_0 => rows!(q8_0, dot_q4_0, vnni),
            QuantType::Q5_0 => rows!(q8_0, dot_q5_0, vnni),
            QuantType::Q8_0 => rows!(q8_0, dot_q8_0, vnni),
            QuantType::Q4_1 => rows!(q8_1, dot_q4_1, vnni),
            QuantType::Q5_1 => rows!(q8_1, dot_q5_1, vnni),
            QuantType::Q2K => rows!(q8k, dot_q2k),
            QuantType::Q3K => rows!(q8k, dot_q3k),
            QuantType::Q4K => rows!(q8k, dot_q4k, grouped),
            QuantType::Q5K => rows!(q8k, dot_q5k, grouped),
            QuantType::Q6K => rows!(q8k, dot_q6k, grouped),
            QuantType::F32 | QuantType::F16 | QuantType::BF16 => {}
        }
    }};
}

/// [`scalar_tile`] on AVX2 kernels, four activation rows per weight block.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `w` is whole rows of `ty` blocks, `bpr` blocks each, and
/// `acts` holds `out.n` rows of `bpr` blocks of the activation type `ty` pairs with.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_tile(
    ty: QuantType,
    w: &[u8],
    rb: usize,
    acts: &QuantizedActivations,
    bpr: usize,
    out: &OutTile,
) {
    x86_tile!(4, 0, ty, w, rb, acts, bpr, out)
}

/// The same kernels compiled for AVX-512: with 32 vector registers a weight block serves
/// eight activation rows. That pays where widening a weight block costs the most (`Q3_K`,
/// `Q2_K`, the 5-bit legacy types: 20–50 % more throughput at 64 rows on an AMD EPYC with
/// AVX-512, `examples/kernel_bench`); `Q4_0`, `Q4_1`, `Q8_0`, `Q5_K` and the grouped `Q4_K` and
/// `Q6_K` measured as fast or faster with four rows and keep the AVX2 tile.
///
/// # Safety
/// As [`avx2_tile`], and the CPU has AVX-512 F, VL and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
unsafe fn avx512_tile(
    ty: QuantType,
    w: &[u8],
    rb: usize,
    acts: &QuantizedActivations,
    bpr: usize,
    out: &OutTile,
) {
    match ty {
        QuantType::Q3K | QuantType::Q2K | QuantType::Q5_0 | QuantType::Q5_1 => {
            x86_tile!(8, 0, ty, w, rb, acts, bpr, out)
        }
        // SAFETY: the caller's contract covers the AVX2 tile's.
        _ => unsafe { avx2_tile(ty, w, rb, acts, bpr, out) },
    }
}

/// [`avx512_tile`] with VNNI for the types whose kernels use it.
///
/// # Safety
/// As [`avx512_tile`], and the CPU has AVX-512 VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn vnni_tile(
    ty: QuantType,
    w: &[u8],
    rb: usize,
    acts: &QuantizedActivations,
    bpr: usize,
    out: &OutTile,
) {
    match ty {
        QuantType::Q3K | QuantType::Q2K | QuantType::Q5_0 | QuantType::Q5_1 => {
            x86_tile!(8, 1, ty, w, rb, acts, bpr, out)
        }
        // Measured slower with `vpdpbusd` (its signed × signed trick costs two `vpsignb` per
        // row either way, and the four-row AVX2 tile keeps more loads in flight).
        // SAFETY: the caller's contract covers the AVX2 tile's.
        QuantType::Q8_0 => unsafe { avx2_tile(ty, w, rb, acts, bpr, out) },
        _ => x86_tile!(4, 1, ty, w, rb, acts, bpr, out),
    }
}

/// Panels on AVX2.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `w` is whole panel rows of `ty` (`bpr` panels each) and
/// `acts` holds `out.n` rows of `bpr` blocks of the activation type `ty` pairs with.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_panels(
    ty: QuantType,
    w: &[u8],
    rb: usize,
    acts: &QuantizedActivations,
    bpr: usize,
    out: &OutTile,
) {
    panel_tile!(crate::x86::panels, 4, 0, ty, w, rb, acts, bpr, out)
}

/// Panels with VNNI.
///
/// # Safety
/// As [`avx2_panels`], and the CPU has AVX-512 F, VL, BW and VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn vnni_panels(
    ty: QuantType,
    w: &[u8],
    rb: usize,
    acts: &QuantizedActivations,
    bpr: usize,
    out: &OutTile,
) {
    panel_tile!(crate::x86::panels, 4, 1, ty, w, rb, acts, bpr, out)
}

/// The four-row AVX2 tile with AVX-VNNI's `vpdpbusd`, `Q8_0` excepted (as in [`vnni_tile`]).
///
/// # Safety
/// As [`avx2_tile`], and the CPU has AVX-VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn avx_vnni_tile(
    ty: QuantType,
    w: &[u8],
    rb: usize,
    acts: &QuantizedActivations,
    bpr: usize,
    out: &OutTile,
) {
    match ty {
        // SAFETY: the caller's contract covers the AVX2 tile's.
        QuantType::Q8_0 => unsafe { avx2_tile(ty, w, rb, acts, bpr, out) },
        _ => x86_tile!(4, 2, ty, w, rb, acts, bpr, out),
    }
}

/// Panels with AVX-VNNI.
///
/// # Safety
/// As [`avx2_panels`], and the CPU has AVX-VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn avx_vnni_panels(
    ty: QuantType,
    w: &[u8],
    rb: usize,
    acts: &QuantizedActivations,
    bpr: usize,
    out: &OutTile,
) {
    panel_tile!(crate::x86::panels, 4, 2, ty, w, rb, acts, bpr, out)
}
