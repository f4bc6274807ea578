//! Dense matrix products through cuBLAS (loaded at run time): `y = x · Wᵀ (+ y)` with the
//! weight in f32 or f16 and f32 accumulation and output.

use cudarc::cublas::result::gemm_ex;
use cudarc::cublas::sys::{
    cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t,
};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, PushKernelArg};

use super::{Act, Gpu};
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

/// The GGUF block types the GPU reads as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantKind {
    Q8_0,
    Q4_0,
    Q4_1,
    Q4K,
    Q6K,
}

impl QuantKind {
    /// Bytes of a row of `cols` values (`cols` a multiple of the block).
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        let (block, bytes) = match self {
            QuantKind::Q8_0 => (32, 34),
            QuantKind::Q4_0 => (32, 18),
            QuantKind::Q4_1 => (32, 20),
            QuantKind::Q4K => (256, 144),
            QuantKind::Q6K => (256, 210),
        };
        cols.is_multiple_of(block).then_some(cols / block * bytes)
    }

    /// The number `decode32` in kernels.cu knows the type by.
    fn code(self) -> i32 {
        match self {
            QuantKind::Q8_0 => 0,
            QuantKind::Q4_0 => 1,
            QuantKind::Q4_1 => 2,
            QuantKind::Q4K => 3,
            QuantKind::Q6K => 4,
        }
    }
}

/// Rows `first..first + rows` of a quantized weight.
#[derive(Debug)]
pub struct QuantPart {
    pub kind: QuantKind,
    pub first: usize,
    pub rows: usize,
    pub data: CudaSlice<u8>,
}

/// Products over at most this many rows read quantized weights directly (eight rows per read
/// of the weight); more rows go through an f16 copy and cuBLAS. (Measured on an H200 with
/// SmolLM2: two or more GEMV passes cost more than the copy plus cuBLAS.)
pub const GEMV_ROWS: usize = 8;

/// The activation side of a product: `[rows, in]` in the weight's type.
pub type GemmInput = Act;

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

    /// f16 values a product over many rows dequantizes this weight to (0 when not quantized).
    pub fn dequant_len(&self) -> usize {
        match self.data {
            GemmData::Quant(_) => self.out * self.inp,
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

    /// Uploads GGUF block rows as stored: `parts` are `(kind, rows, bytes)` one after another,
    /// together `[out, inp]`.
    pub fn upload_quant(
        &self,
        parts: &[(QuantKind, usize, &[u8])],
        inp: usize,
    ) -> Result<GemmWeight> {
        let mut out = 0;
        let mut up = Vec::with_capacity(parts.len());
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
            up.push(QuantPart {
                kind,
                first: out,
                rows,
                data: self.upload(bytes)?,
            });
            out += rows;
        }
        Ok(GemmWeight {
            out,
            inp,
            data: GemmData::Quant(up),
        })
    }

    /// `y[rows, out] = x[rows, in] · Wᵀ + beta · y` for a quantized weight: a GEMV kernel on
    /// the blocks for a few rows, else the weight dequantized into `scratch` (f16, at least
    /// `w.dequant_len()`) and cuBLAS.
    pub fn gemm_quant(
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
        if x.len() < rows * w.inp || y.len() < rows * w.out {
            return Err(KernelError::Shape(format!(
                "product of {rows} rows by [{}, {}]: input of {} and output of {} values",
                w.out,
                w.inp,
                x.len(),
                y.len()
            )));
        }
        if rows <= GEMV_ROWS {
            let f = self.function("gemv_quant")?;
            // Eight activation rows per launch: each launch reads the weight once.
            for (p, row0) in parts
                .iter()
                .flat_map(|p| (0..rows).step_by(8).map(move |r0| (p, r0)))
            {
                let rows = (rows - row0).min(8);
                let rb = p.kind.row_bytes(w.inp).unwrap_or(0) as i32;
                let ints = [rows, p.rows, w.inp].map(|v| v as i32);
                let (code, half) = (p.kind.code(), x.half());
                let (ldy, col) = (w.out as i32, p.first as i32);
                let mut l = self.stream.launch_builder(&f);
                l.arg(&mut *y).arg(&p.data);
                match x {
                    Act::F32(b) => l.arg(b),
                    Act::F16(b) => l.arg(b),
                };
                l.arg(&ints[0])
                    .arg(&ints[1])
                    .arg(&ints[2])
                    .arg(&rb)
                    .arg(&code);
                let row0 = row0 as i32;
                l.arg(&beta).arg(&half).arg(&ldy).arg(&col).arg(&row0);
                // Eight warps per block, one per output row.
                let cfg = cudarc::driver::LaunchConfig {
                    grid_dim: ((p.rows as u32).div_ceil(8), 1, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                };
                // SAFETY: the arguments match the kernel; sizes checked above and at upload.
                unsafe { l.launch(cfg) }
                    .map_err(|e| KernelError::Cuda(format!("gemv_quant: {e:?}")))?;
            }
            return Ok(());
        }
        if scratch.len() < w.out * w.inp {
            return Err(KernelError::Shape(format!(
                "a dequantization buffer of {} values for [{}, {}]",
                scratch.len(),
                w.out,
                w.inp
            )));
        }
        let f = self.function("dequant_f16")?;
        for p in parts {
            let rb = p.kind.row_bytes(w.inp).unwrap_or(0) as i32;
            let ints = [p.rows, w.inp].map(|v| v as i32);
            let (code, first) = (p.kind.code(), p.first as i32);
            let mut l = self.stream.launch_builder(&f);
            l.arg(&mut *scratch)
                .arg(&p.data)
                .arg(&ints[0])
                .arg(&ints[1]);
            l.arg(&rb).arg(&code).arg(&first);
            let units = p.rows * w.inp / 8;
            let cfg = cudarc::driver::LaunchConfig {
                grid_dim: ((units as u32).div_ceil(256).clamp(1, 65_535), 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: as above; `scratch` holds the whole matrix (checked).
            unsafe { l.launch(cfg) }
                .map_err(|e| KernelError::Cuda(format!("dequant_f16: {e:?}")))?;
        }
        if x.half() != 1 {
            return Err(KernelError::Shape(
                "quantized weights multiply f16 activations over many rows".into(),
            ));
        }
        self.gemm_raw(y, x, rows, w.out, w.inp, scratch, true, beta)
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
            GemmData::F32(b) => self.gemm_raw(y, x, rows, w.out, w.inp, b, false, beta),
            GemmData::F16(b) => self.gemm_raw(y, x, rows, w.out, w.inp, b, true, beta),
            GemmData::Quant(_) => Err(KernelError::Shape(
                "a quantized weight needs gemm_quant".into(),
            )),
        }
    }

    #[allow(clippy::too_many_arguments, reason = "one cuBLAS call's arguments")]
    fn gemm_raw<T>(
        &self,
        y: &mut CudaSlice<f32>,
        x: &GemmInput,
        rows: usize,
        out: usize,
        inp: usize,
        w: &CudaSlice<T>,
        half: bool,
        beta: f32,
    ) -> Result<()> {
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
                m,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| KernelError::Cuda(format!("cublasGemmEx: {e:?}")))
    }
}
