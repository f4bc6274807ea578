//! Training ops on the CPU, each one candle op with its own backward pass, so a training step
//! keeps only what the backward needs: a LoRA-adapted projection keeps its output alone (the
//! dropout mask is drawn again from its stream, `x·Aᵀ` is recomputed), attention keeps no score
//! matrix (softmax rows are recomputed from `q` and `k`), and RMSNorm, RoPE and the gated
//! activation keep their output instead of one tensor per elementary step. candle's autograd
//! holds every node of the graph until the backward pass ends, so the nodes a step creates are
//! its memory.
//!
//! Each op applies to contiguous f32 CPU tensors (what training steps hold); elsewhere the
//! callers keep candle's composite ops, whose gradients are the same.

mod attention;
mod elementwise;
mod head;
mod linear;

pub(crate) use attention::{CausalAttention, causal_attention};
pub(crate) use elementwise::{gated, rms_norm, rms_norm_scaled, rotate};
pub(crate) use head::head_loss;
pub(crate) use linear::{FrozenWeight, lora_matmul, quantized_input_grad};

use candle_core::{CpuStorage, DType, Layout, Storage, Tensor};

/// A matrix over f32 values: `rows × cols`, element `(i, j)` at `i·rs + j·cs`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major `rows × cols`.
    pub(crate) fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (no copy).
    pub(crate) fn t(self) -> Self {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Whether every element lies inside `data`.
    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// Work (multiply-adds) below which a product stays on the calling thread.
const PARALLEL_WORK: usize = 1 << 18;

/// `out = alpha·a·b`, or `out += alpha·a·b` with `accumulate`; `out` is row-major
/// `a.rows × b.cols`.
pub(crate) fn gemm(
    out: &mut [f32],
    a: Mat<'_>,
    b: Mat<'_>,
    alpha: f32,
    accumulate: bool,
) -> candle_core::Result<()> {
    product(out, a, b, alpha, accumulate, true)
}

/// `out = alpha·a·b` on the calling thread (inside a worker pool's task).
pub(crate) fn gemm_serial(
    out: &mut [f32],
    a: Mat<'_>,
    b: Mat<'_>,
    alpha: f32,
) -> candle_core::Result<()> {
    product(out, a, b, alpha, false, false)
}

/// `out += a·b` on the calling thread.
pub(crate) fn gemm_serial_add(out: &mut [f32], a: Mat<'_>, b: Mat<'_>) -> candle_core::Result<()> {
    product(out, a, b, 1.0, true, false)
}

fn product(
    out: &mut [f32],
    a: Mat<'_>,
    b: Mat<'_>,
    alpha: f32,
    accumulate: bool,
    parallel: bool,
) -> candle_core::Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || out.len() != m * n || !a.fits() || !b.fits() {
        candle_core::bail!(
            "matrix product of {}×{} and {}×{} into {} values",
            a.rows,
            a.cols,
            b.rows,
            b.cols,
            out.len()
        );
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            out.fill(0.0);
        }
        return Ok(());
    }
    let threads = forja_quant::parallel_threads();
    if !parallel || threads < 2 || m * n * k < PARALLEL_WORK {
        // SAFETY: `out` holds `m·n` values row-major and is borrowed mutably (checked above).
        unsafe { kernel(out.as_mut_ptr(), n, a, b, alpha, accumulate) };
        return Ok(());
    }
    // Parts of the output on forja's worker pool (the one the quantized matmuls use, so the
    // training step does not keep a second pool's threads spinning beside it): bands of the
    // longer side, rows or columns (each task packs the whole of the other operand).
    let tasks = 2 * threads;
    let by_rows = m >= n && m >= tasks * MIN_PART;
    let (len, min) = if by_rows {
        (m, MIN_PART)
    } else {
        (n, 2 * MIN_PART)
    };
    let part = len.div_ceil(tasks).max(min);
    let dst = SyncPtr(out.as_mut_ptr());
    forja_quant::parallel_for(len.div_ceil(part), &|t| {
        let (lo, hi) = (t * part, ((t + 1) * part).min(len));
        let dst = &dst;
        // SAFETY: task `t` writes rows (or columns) `lo..hi` of `out` alone; the sub-matrices
        // lie inside the checked ones.
        unsafe {
            if by_rows {
                let a = Mat {
                    data: &a.data[lo * a.rs..],
                    rows: hi - lo,
                    ..a
                };
                kernel(dst.0.add(lo * n), n, a, b, alpha, accumulate);
            } else {
                let b = Mat {
                    data: &b.data[lo * b.cs..],
                    cols: hi - lo,
                    ..b
                };
                kernel(dst.0.add(lo), n, a, b, alpha, accumulate);
            }
        }
    });
    Ok(())
}

/// Rows (columns: twice as many) below which a part of a product is not worth a task.
const MIN_PART: usize = 16;

/// The output's pointer, shared by the tasks that write disjoint parts of it.
pub(crate) struct SyncPtr(pub(crate) *mut f32);
// SAFETY: each task writes its own part of the output only.
unsafe impl Sync for SyncPtr {}

/// `dst (+)= alpha·a·b` on the calling thread, `dst` row-major with row stride `dst_rs`.
///
/// # Safety
/// `dst` must be valid for writes of `a.rows` rows of `b.cols` values at stride `dst_rs`, not
/// overlap `a` or `b`, and `a`, `b` must fit their data ([`Mat::fits`]) with `a.cols == b.rows`.
unsafe fn kernel(
    dst: *mut f32,
    dst_rs: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    alpha: f32,
    accumulate: bool,
) {
    // SAFETY: as the caller promises.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The first error a pool's tasks met (they return nothing themselves).
#[derive(Default)]
pub(crate) struct Failure(std::sync::Mutex<Option<candle_core::Error>>);

impl Failure {
    pub(crate) fn record(&self, r: candle_core::Result<()>) {
        if let Err(e) = r
            && let Ok(mut first) = self.0.lock()
        {
            first.get_or_insert(e);
        }
    }

    pub(crate) fn check(self, op: &str) -> candle_core::Result<()> {
        match self.0.into_inner() {
            Ok(None) => Ok(()),
            Ok(Some(e)) => Err(e),
            Err(_) => candle_core::bail!("{op}: a worker panicked"),
        }
    }
}

/// The values of a contiguous f32 CPU storage.
fn f32_values<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: f32 input expected");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: contiguous input expected"),
    }
}

/// Runs `f` over the values of `t` (made contiguous f32 on the CPU first).
fn with_values<R>(
    t: &Tensor,
    op: &str,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let t = t.to_dtype(DType::F32)?.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("{op}: CPU tensor expected");
    };
    f(f32_values(cpu, layout, op)?)
}

/// Whether `t` is an f32 tensor on the CPU, which the ops here take.
pub(crate) fn applies(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

#[cfg(test)]
mod tests;
