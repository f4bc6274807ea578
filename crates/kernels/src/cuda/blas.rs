//! Dense matrix products through cuBLAS (loaded at run time): `y = x · Wᵀ (+ y)` with the
//! weight in f32 or f16 and f32 accumulation and output.

use cudarc::cublas::result::gemm_ex;
use cudarc::cublas::sys::{
    cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t,
};
use cudarc::driver::{CudaSlice, CudaViewMut, DevicePtr, DevicePtrMut, PushKernelArg};

use super::{Act, Gpu};
use crate::quant::QuantKind;
use crate::{KernelError, Result};

/// A weight `[out, in]`, row-major, on the device.
#[derive(Debug)]
pub struct GemmWeight {
    pub out: usize,
    pub inp: usize,
    pub data: GemmData,
}

#[derive(Debug)]
pub enum GemmData {
    F32(CudaSlice<f32>),
    /// f16 bit patterns.
    F16(CudaSlice<u16>),
    /// GGUF blocks as stored, in row ranges that may differ in type (a joined q/k/v whose v is
    /// Q6_K and q, k Q4_K). Multiplied by a GEMV kernel for a few rows, else dequantized to f16
    /// for cuBLAS.
    Quant(Vec<QuantPart>),
}

/// Rows `first..first + rows` of a quantized weight.
#[derive(Debug)]
pub struct QuantPart {
    pub kind: QuantKind,
    pub first: usize,
    pub rows: usize,
    /// The rows in the device layout of [`crate::quant`], `stride` bytes apart.
    pub data: CudaSlice<u8>,
    pub stride: usize,
}

/// On GPUs without int8 tensor-core instructions (before sm_80), products over at most this
/// many rows read quantized weights with the GEMV kernels (activations quantized to 8 bits, one
/// read of the weight per eight rows); more rows go through an f16 copy and cuBLAS. (On an H200
/// with Llama-3-8B's shapes, 16 rows — two passes — take the GEMV 0.8–1.5× the time of the f16
/// copy plus cuBLAS; an older card was not measured.)
pub const GEMV_ROWS: usize = 16;

/// From sm_80 on, products over at most this many rows read quantized weights directly: the
/// GEMV below [`MMQ_MIN_ROWS`] rows, the tensor-core tiles of `mmq.cu` from there; more rows go
/// through an f16 copy and cuBLAS. (On an H200 with Llama-3-8B's shapes the tiles take 0.65–0.94×
/// the time of the f16 copy plus cuBLAS at 64 rows, 1.2–1.6× at 128.)
pub const QUANT_ROWS: usize = 64;

/// The fewest rows the tensor-core tiles take (sm_80 on): below, one GEMV pass is faster (H200,
/// Llama-3-8B's shapes: the GEMV takes 0.68–1.07× the tiles' time at 2 rows; the tiles take
/// 0.72–1.14× the GEMV's at 4 rows, 0.38–0.78× at 8, 0.24–0.46× at 16).
pub const MMQ_MIN_ROWS: usize = 4;

/// Blocks a tensor-core product should have to keep the GPU busy (about two per SM on an H100
/// or H200); fewer tiles split their runs of values over more blocks.
const MMQ_BLOCKS: usize = 256;

/// The most f16 values a product over many rows dequantizes a weight into at once (64 MiB): a
/// larger weight (a 128k-token vocabulary's head: 1 GiB in f16 for Llama 3 8B) is dequantized
/// and multiplied in row ranges through a scratch of this size.
pub const DEQUANT_CHUNK: usize = 32 << 20;

/// How a product with a quantized weight runs ([`Gpu::gemm_quant`]); [`Gpu::quant_path`] picks
/// one by the number of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantPath {
    /// GEMV kernels on the blocks (`dp4a`), passes of up to eight activation rows.
    Gemv,
    /// Tensor-core tiles on the blocks (`mma.sync`, sm_80 and newer), any number of rows.
    Mmq,
    /// The weight dequantized to f16 into the scratch, then cuBLAS.
    F16,
}

/// `u16`s of scratch the GEMV's 8-bit activations take for `rows` rows of `inp` values: the
/// values (a byte each), then `(d, d·Σq)` as two f32 per block of 32.
fn q8_scratch(rows: usize, inp: usize) -> (usize, usize) {
    (rows * inp / 2, rows * inp / 8)
}

/// The two parts of `scratch` that hold `n` values in 8 bits (`n` a multiple of 32).
fn q8_parts(
    scratch: &mut CudaSlice<u16>,
    n: usize,
) -> Result<(CudaViewMut<'_, u16>, CudaViewMut<'_, u16>)> {
    let (qn, sn) = q8_scratch(1, n);
    if n == 0 || !n.is_multiple_of(32) || scratch.len() < qn + sn {
        return Err(KernelError::Shape(format!(
            "{n} values to 8 bits in a scratch of {}",
            scratch.len()
        )));
    }
    let (q, rest) = scratch.split_at_mut(qn);
    Ok((q, rest))
}

/// The activation side of a product: `[rows, in]` in the weight's type.
pub type GemmInput = Act;

/// Where the kernel that makes a quantized product's input (RMSNorm rows, the attention
/// output's conversion, the gated activation) also writes it rounded to 8 bits: the part of the
/// product's scratch its GEMV reads, so the product skips its own rounding pass
/// ([`Gpu::q8_sink`], then [`Gpu::gemm_quant`] with `prequantized`).
pub struct Q8Sink<'a> {
    pub(crate) q: CudaViewMut<'a, u16>,
    pub(crate) s: CudaViewMut<'a, u16>,
    /// Values the sink holds (the producer's must be this many).
    pub(crate) n: usize,
}

impl std::fmt::Debug for Q8Sink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Q8Sink")
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}

impl GemmWeight {
    /// Whether activations must be f16 to multiply this weight.
    pub fn is_half(&self) -> bool {
        !matches!(self.data, GemmData::F32(_))
    }

    /// Bytes on the device.
    pub fn bytes(&self) -> usize {
        match &self.data {
            GemmData::F32(_) => self.out * self.inp * 4,
            GemmData::F16(_) => self.out * self.inp * 2,
            GemmData::Quant(parts) => parts.iter().map(|p| p.data.len()).sum(),
        }
    }

    /// `u16`s of scratch a product with this weight needs (0 when not quantized): the f16 rows
    /// a product over many rows dequantizes it to — the whole matrix, or [`DEQUANT_CHUNK`]
    /// values of it at a time —, or a few rows' 8-bit activations.
    pub fn dequant_len(&self) -> usize {
        match self.data {
            GemmData::Quant(_) => {
                let (q, s) = q8_scratch(QUANT_ROWS.max(GEMV_ROWS), self.inp);
                (self.out * self.inp)
                    .min(DEQUANT_CHUNK.max(self.inp))
                    .max(q + s)
            }
            _ => 0,
        }
    }
}

impl Gpu {
    /// Uploads a row-major `[out, in]` weight, as f16 when `half` (rounded to nearest).
    pub fn upload_weight(
        &self,
        w: &[f32],
        out: usize,
        inp: usize,
        half: bool,
    ) -> Result<GemmWeight> {
        if w.len() != out * inp {
            return Err(KernelError::Shape(format!(
                "a weight of {} values for [{out}, {inp}]",
                w.len()
            )));
        }
        let data = if half {
            let bits: Vec<u16> = w
                .iter()
                .map(|v| half::f16::from_f32(*v).to_bits())
                .collect();
            GemmData::F16(self.upload(&bits)?)
        } else {
            GemmData::F32(self.upload(w)?)
        };
        Ok(GemmWeight { out, inp, data })
    }

    /// Uploads GGUF block rows (in the device layout of [`crate::quant`]): `parts` are
    /// `(kind, rows, bytes)` one after another, together `[out, inp]`.
    pub fn upload_quant(
        &self,
        parts: &[(QuantKind, usize, &[u8])],
        inp: usize,
    ) -> Result<GemmWeight> {
        self.load_quant_kernels()?;
        // Neighbouring parts of one kind become one (q/k/v or gate/up of the same type): one
        // launch per product instead of one per projection, over more rows.
        let mut merged: Vec<(QuantKind, usize, Vec<u8>, usize)> = Vec::with_capacity(parts.len());
        for &(kind, rows, bytes) in parts {
            let rb = kind.row_bytes(inp).ok_or_else(|| {
                KernelError::Shape(format!("rows of {inp} values in {kind:?} blocks"))
            })?;
            if bytes.len() != rows * rb {
                return Err(KernelError::Shape(format!(
                    "{} bytes for {rows} {kind:?} rows of {inp}",
                    bytes.len()
                )));
            }
            let dev = crate::quant::to_device(kind, inp, bytes)?;
            match merged.last_mut() {
                Some(last) if last.0 == kind => {
                    last.1 += rows;
                    last.2.extend_from_slice(&dev);
                }
                _ => merged.push((kind, rows, dev, kind.device_stride(inp).unwrap_or(rb))),
            }
        }
        let mut out = 0;
        let mut up = Vec::with_capacity(merged.len());
        for (kind, rows, mut dev, stride) in merged {
            // The tensor-core kernels copy runs of 256 values in 16-byte units: a run cut short
            // at the end of the last row reads up to 256 bytes past it.
            dev.resize(dev.len() + 256, 0);
            up.push(QuantPart {
                kind,
                first: out,
                rows,
                data: self.upload(&dev)?,
                stride,
            });
            out += rows;
        }
        Ok(GemmWeight {
            out,
            inp,
            data: GemmData::Quant(up),
        })
    }

    /// How a product over `rows` rows with a quantized weight runs here.
    pub fn quant_path(&self, rows: usize) -> QuantPath {
        if self.mmq_available() && rows <= QUANT_ROWS {
            if rows < MMQ_MIN_ROWS {
                QuantPath::Gemv
            } else {
                QuantPath::Mmq
            }
        } else if rows <= GEMV_ROWS {
            QuantPath::Gemv
        } else {
            QuantPath::F16
        }
    }

    /// Whether the GPU has the int8 `mma.sync` shapes the tensor-core kernels use (sm_80+).
    pub fn mmq_available(&self) -> bool {
        self.capability() >= (8, 0)
    }

    /// `y[rows, out] = x[rows, in] · Wᵀ + beta · y` for a quantized weight, the way `path` says
    /// ([`Gpu::quant_path`] picks the fastest for the rows; tests and benchmarks name one):
    /// kernels on the blocks, or the weight dequantized into `scratch` (f16, at least
    /// `w.dequant_len()`) and cuBLAS. `prequantized`: the kernel that made `x` also wrote it in
    /// 8 bits into `scratch` (the sink [`Gpu::q8_sink`] gave for this product; only with a path
    /// on the blocks). `Mmq` needs [`Gpu::mmq_available`]. A dense weight ignores `path`.
    #[allow(
        clippy::too_many_arguments,
        reason = "one product's operands, its scratch and the way"
    )]
    pub fn gemm_quant(
        &self,
        path: QuantPath,
        y: &mut CudaSlice<f32>,
        x: &GemmInput,
        rows: usize,
        w: &GemmWeight,
        beta: f32,
        scratch: &mut CudaSlice<u16>,
        prequantized: bool,
    ) -> Result<()> {
        let GemmData::Quant(parts) = &w.data else {
            return self.gemm(y, x, rows, w, beta);
        };
        if x.len() < rows * w.inp || y.len() < rows * w.out {
            return Err(KernelError::Shape(format!(
                "product of {rows} rows by [{}, {}]: input of {} and output of {} values",
                w.out,
                w.inp,
                x.len(),
                y.len()
            )));
        }
        if path == QuantPath::Mmq && !self.mmq_available() {
            return Err(KernelError::Cuda(format!(
                "tensor-core products need sm_80 or newer, this GPU is sm_{}{}",
                self.capability.0, self.capability.1
            )));
        }
        if rows == 0 {
            return Ok(());
        }
        if path == QuantPath::F16 {
            if prequantized {
                return Err(KernelError::Shape(
                    "8-bit activations for a product through f16 weights".into(),
                ));
            }
            return self.gemm_dequant(y, x, rows, w, beta, scratch);
        }
        // Rounded to 8 bits by the input's producer already (through `q8_sink`), or now.
        let (mut xq, rest) = if prequantized {
            q8_parts(scratch, rows * w.inp)?
        } else {
            self.quantize_q8_into(scratch, x, rows * w.inp)?
        };
        // The block scales, then room for the tiles' partial products.
        let mut rest = rest;
        let (mut xs, mut tail) = rest.split_at_mut(q8_scratch(rows, w.inp).1);
        for p in parts {
            if path == QuantPath::Mmq {
                self.mmq(y, p, w, rows, beta, [&mut xq, &mut xs, &mut tail])?;
                continue;
            }
            // The GEMV in passes of up to eight rows; four warps per block, `outputs` output
            // rows per warp.
            for row0 in (0..rows).step_by(8) {
                let pass = (rows - row0).min(8);
                let (name, outputs) = p.kind.gemv_kernel(pass == 1);
                let f = self.function(name)?;
                let ints = [pass, p.rows, w.inp, p.stride].map(|v| v as i32);
                let (ldy, col) = (w.out as i32, p.first as i32);
                let mut l = self.stream.launch_builder(&f);
                l.arg(&mut *y).arg(&p.data).arg(&mut xq).arg(&mut xs);
                for v in &ints {
                    l.arg(v);
                }
                let row0 = row0 as i32;
                l.arg(&beta).arg(&ldy).arg(&col).arg(&row0);
                let cfg = cudarc::driver::LaunchConfig {
                    grid_dim: ((p.rows as u32).div_ceil(4 * outputs), 1, 1),
                    block_dim: (128, 1, 1),
                    shared_mem_bytes: 0,
                };
                // SAFETY: the arguments match the kernel; sizes checked above and at upload.
                unsafe { l.launch(cfg) }
                    .map_err(|e| KernelError::Cuda(format!("{name}: {e:?}")))?;
            }
        }
        Ok(())
    }

    /// One part of a quantized weight times `rows` 8-bit activation rows on the tensor cores
    /// (`mmq.cu`): 64 weight rows by a tile of activation rows per block. When the tiles leave
    /// fewer than [`MMQ_BLOCKS`] blocks, the runs of 256 values are split over more blocks, each
    /// writing its partial product into `tail` (the scratch past the activations), then added
    /// up in order (`mmq_sum`) — as long as they fit and each part keeps two runs.
    fn mmq(
        &self,
        y: &mut CudaSlice<f32>,
        p: &QuantPart,
        w: &GemmWeight,
        rows: usize,
        beta: f32,
        [xq, xs, tail]: [&mut CudaViewMut<'_, u16>; 3],
    ) -> Result<()> {
        let (name, tile) = p.kind.mmq_kernel(rows);
        let grid = ((rows as u32).div_ceil(tile), (p.rows as u32).div_ceil(64));
        let blocks = (grid.0 * grid.1) as usize;
        let part = rows * p.rows * 2; // u16s of one partial product
        let splits = if blocks >= MMQ_BLOCKS {
            1
        } else {
            MMQ_BLOCKS
                .div_ceil(blocks)
                .min(w.inp.div_ceil(256) / 2)
                .min(tail.len() / part)
                .max(1)
        };
        let f = self.function(name)?;
        let ints = [rows, p.rows, w.inp, p.stride].map(|v| v as i32);
        let mut l = self.stream.launch_builder(&f);
        let (ldy, col, b) = if splits == 1 {
            l.arg(&mut *y);
            (w.out as i32, p.first as i32, beta)
        } else {
            l.arg(&mut *tail);
            (p.rows as i32, 0, 0.0)
        };
        l.arg(&p.data).arg(&mut *xq).arg(&mut *xs);
        for v in &ints {
            l.arg(v);
        }
        let row0 = 0i32;
        l.arg(&b).arg(&ldy).arg(&col).arg(&row0);
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: (grid.0, grid.1, splits as u32),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match the kernel; sizes checked by the caller and at upload;
        // `splits` parts of `rows × p.rows` f32 fit in `tail` (checked above).
        unsafe { l.launch(cfg) }.map_err(|e| KernelError::Cuda(format!("{name}: {e:?}")))?;
        if splits == 1 {
            return Ok(());
        }
        let f = self.function("mmq_sum")?;
        let ints = [splits, rows, p.rows].map(|v| v as i32);
        let (ldy, col) = (w.out as i32, p.first as i32);
        let mut l = self.stream.launch_builder(&f);
        l.arg(&mut *y).arg(&mut *tail);
        for v in &ints {
            l.arg(v);
        }
        l.arg(&beta).arg(&ldy).arg(&col).arg(&row0);
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: (((rows * p.rows) as u32).div_ceil(256), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: as above; `tail` holds the `splits` partial products just written.
        unsafe { l.launch(cfg) }.map_err(|e| KernelError::Cuda(format!("mmq_sum: {e:?}")))?;
        Ok(())
    }

    /// The f16 way of [`Gpu::gemm_quant`]: the weight dequantized into `scratch` (f16), as many
    /// of its rows at a time as `scratch` holds, each range multiplied by cuBLAS.
    fn gemm_dequant(
        &self,
        y: &mut CudaSlice<f32>,
        x: &GemmInput,
        rows: usize,
        w: &GemmWeight,
        beta: f32,
        scratch: &mut CudaSlice<u16>,
    ) -> Result<()> {
        let GemmData::Quant(parts) = &w.data else {
            return self.gemm(y, x, rows, w, beta);
        };
        if x.half() != 1 {
            return Err(KernelError::Shape(
                "quantized weights multiply f16 activations over many rows".into(),
            ));
        }
        // Weight rows one pass dequantizes.
        let chunk = (scratch.len() / w.inp).min(w.out);
        if chunk == 0 || chunk * w.inp / 8 >= u32::MAX as usize {
            return Err(KernelError::Shape(format!(
                "a dequantization buffer of {} values for [{}, {}]",
                scratch.len(),
                w.out,
                w.inp
            )));
        }
        let f = self.function("dequant_f16")?;
        for g0 in (0..w.out).step_by(chunk) {
            let g1 = (g0 + chunk).min(w.out);
            // The parts' rows in g0..g1, to scratch rows from 0.
            for p in parts {
                let (a, b) = (p.first.max(g0), (p.first + p.rows).min(g1));
                if a >= b {
                    continue;
                }
                let data = p.data.slice((a - p.first) * p.stride..);
                let ints = [b - a, w.inp, p.stride].map(|v| v as i32);
                let (code, first) = (p.kind.code(), (a - g0) as i32);
                let mut l = self.stream.launch_builder(&f);
                l.arg(&mut *scratch).arg(&data);
                for v in &ints {
                    l.arg(v);
                }
                l.arg(&code).arg(&first);
                let units = (b - a) * w.inp / 8;
                let cfg = cudarc::driver::LaunchConfig {
                    grid_dim: ((units as u32).div_ceil(256).clamp(1, 65_535), 1, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                };
                // SAFETY: as above; `scratch` holds `chunk` rows (checked), the part's rows
                // from `a` on are in `data`.
                unsafe { l.launch(cfg) }
                    .map_err(|e| KernelError::Cuda(format!("dequant_f16: {e:?}")))?;
            }
            let cols = (g0, w.out);
            self.gemm_raw(y, x, rows, (g1 - g0, w.inp), scratch, true, beta, cols)?;
        }
        Ok(())
    }

    /// Where `rows` rows of input to a product with `w` go in 8 bits, when the product reads
    /// them so — a quantized weight, rows few enough for a path on the blocks
    /// ([`Gpu::quant_path`]), rows of a multiple of 32 values —, else `None` (the producer
    /// writes only its usual output).
    pub fn q8_sink<'a>(
        &self,
        scratch: &'a mut CudaSlice<u16>,
        w: &GemmWeight,
        rows: usize,
    ) -> Option<Q8Sink<'a>> {
        let quantized = matches!(w.data, GemmData::Quant(_));
        if !quantized || self.quant_path(rows) == QuantPath::F16 {
            return None;
        }
        let n = rows * w.inp;
        let (q, s) = q8_parts(scratch, n).ok()?;
        Some(Q8Sink { q, s, n })
    }

    /// Rounds the first `n` values of `x` (`n` a multiple of 32) to 8 bits per block of 32 into
    /// the start of `scratch` (at least `n / 2 + n / 8` values), as
    /// [`crate::reference::quantize_q8`] does: the values, then `(d, d·Σq)` per block. Returns
    /// the two parts.
    fn quantize_q8_into<'a>(
        &self,
        scratch: &'a mut CudaSlice<u16>,
        x: &GemmInput,
        n: usize,
    ) -> Result<(CudaViewMut<'a, u16>, CudaViewMut<'a, u16>)> {
        if x.len() < n {
            return Err(KernelError::Shape(format!(
                "{n} of {} values to 8 bits",
                x.len()
            )));
        }
        let (mut xq, mut xs) = q8_parts(scratch, n)?;
        let n_i = n as i32;
        let f = self.function("quantize_q8")?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(&mut xq).arg(&mut xs);
        match x {
            Act::F32(b) => l.arg(b),
            Act::F16(b) => l.arg(b),
        };
        let half = x.half();
        l.arg(&n_i).arg(&half);
        // One warp per block of 32 values.
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: (((n / 32) as u32).div_ceil(8).max(1), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match the kernel; `x` holds `n` values and the scratch's two
        // parts hold their values and block scales (checked above).
        unsafe { l.launch(cfg) }.map_err(|e| KernelError::Cuda(format!("quantize_q8: {e:?}")))?;
        Ok((xq, xs))
    }

    /// As [`crate::reference::quantize_q8`]: the 8-bit values and each block's `(d, d·Σq)`.
    pub fn quantize_q8(&self, x: &[f32]) -> Result<(Vec<i8>, Vec<[f32; 2]>)> {
        let (qn, sn) = q8_scratch(1, x.len());
        let mut scratch = self.alloc::<u16>(qn + sn)?;
        let xd = Act::F32(self.upload(x)?);
        self.quantize_q8_into(&mut scratch, &xd, x.len())?;
        let words = self.download(&scratch)?;
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let (q, s) = bytes.split_at(2 * qn);
        let q = q.iter().map(|&b| b as i8).collect();
        let f: Vec<f32> = s
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok((q, f.chunks_exact(2).map(|p| [p[0], p[1]]).collect()))
    }

    /// `y[rows, out] = x[rows, in] · Wᵀ + beta · y`, f32 accumulation. `beta = 1` adds the
    /// product to `y` (a residual connection without a separate add).
    pub fn gemm(
        &self,
        y: &mut CudaSlice<f32>,
        x: &GemmInput,
        rows: usize,
        w: &GemmWeight,
        beta: f32,
    ) -> Result<()> {
        if x.len() < rows * w.inp || y.len() < rows * w.out {
            return Err(KernelError::Shape(format!(
                "product of {rows} rows × {} by [{}, {}]: input of {} and output of {} values",
                w.inp,
                w.out,
                w.inp,
                x.len(),
                y.len()
            )));
        }
        if (x.half() == 1) != w.is_half() {
            return Err(KernelError::Shape(
                "activations and weight of different types".into(),
            ));
        }
        match &w.data {
            GemmData::F32(b) => {
                self.gemm_raw(y, x, rows, (w.out, w.inp), b, false, beta, (0, w.out))
            }
            GemmData::F16(b) => {
                self.gemm_raw(y, x, rows, (w.out, w.inp), b, true, beta, (0, w.out))
            }
            GemmData::Quant(_) => Err(KernelError::Shape(
                "a quantized weight needs gemm_quant".into(),
            )),
        }
    }

    /// `y[r, col0 + o] = Σ_k x[r, k] · w[o, k] + beta · y[..]` for `o < out`, `y`'s rows `ldy`
    /// apart (`(col0, ldy)`: where the product's columns go in a wider output).
    #[allow(clippy::too_many_arguments, reason = "one cuBLAS call's arguments")]
    fn gemm_raw<T>(
        &self,
        y: &mut CudaSlice<f32>,
        x: &GemmInput,
        rows: usize,
        (out, inp): (usize, usize),
        w: &CudaSlice<T>,
        half: bool,
        beta: f32,
        (col0, ldy): (usize, usize),
    ) -> Result<()> {
        if col0 + out > ldy || (rows > 0 && (rows - 1) * ldy + col0 + out > y.len()) {
            return Err(KernelError::Shape(format!(
                "columns {col0}..{} of {rows} rows {ldy} apart in {} values",
                col0 + out,
                y.len()
            )));
        }
        let ty = if half {
            cudaDataType_t::CUDA_R_16F
        } else {
            cudaDataType_t::CUDA_R_32F
        };
        let s = &self.stream;
        let (wp, _g1) = w.device_ptr(s);
        let (xp, _g2) = match x {
            Act::F32(b) => b.device_ptr(s),
            Act::F16(b) => b.device_ptr(s),
        };
        let (yp, _g3) = y.device_ptr_mut(s);
        let yp = yp + (col0 * std::mem::size_of::<f32>()) as u64;
        let alpha = 1.0f32;
        let (m, n, k) = (out as i32, rows as i32, inp as i32);
        // Row-major W[out, in] is column-major Wᵀ[in, out]; row-major x[rows, in] is
        // column-major xᵀ[in, rows]; y (column-major [out, rows]) = W · xᵀ is row-major
        // y[rows, out].
        // SAFETY: the pointers hold the sizes the callers checked, all on this GPU's stream,
        // which the handle is bound to.
        unsafe {
            gemm_ex(
                *self.blas.handle(),
                cublasOperation_t::CUBLAS_OP_T,
                cublasOperation_t::CUBLAS_OP_N,
                m,
                n,
                k,
                (&alpha as *const f32).cast(),
                wp as *const _,
                ty,
                k,
                xp as *const _,
                ty,
                k,
                (&beta as *const f32).cast(),
                yp as *mut _,
                cudaDataType_t::CUDA_R_32F,
                ldy as i32,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| KernelError::Cuda(format!("cublasGemmEx: {e:?}")))
    }
}
