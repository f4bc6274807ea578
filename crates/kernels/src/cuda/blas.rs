//! Dense matrix products through cuBLAS (loaded at run time): `y = x · Wᵀ (+ y)` with the
//! weight in f32 or f16 and f32 accumulation and output.

use cudarc::cublas::result::gemm_ex;
use cudarc::cublas::sys::{
    cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t,
};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};

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
}

/// The activation side of a product: `[rows, in]` in the weight's type.
pub type GemmInput = Act;

impl GemmWeight {
    /// Whether activations must be f16 to multiply this weight.
    pub fn is_half(&self) -> bool {
        matches!(self.data, GemmData::F16(_))
    }

    /// Bytes on the device.
    pub fn bytes(&self) -> usize {
        self.out * self.inp * if self.is_half() { 2 } else { 4 }
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
        let ty = if w.is_half() {
            cudaDataType_t::CUDA_R_16F
        } else {
            cudaDataType_t::CUDA_R_32F
        };
        let s = &self.stream;
        let (wp, _g1) = match &w.data {
            GemmData::F32(b) => b.device_ptr(s),
            GemmData::F16(b) => b.device_ptr(s),
        };
        let (xp, _g2) = match x {
            Act::F32(b) => b.device_ptr(s),
            Act::F16(b) => b.device_ptr(s),
        };
        let (yp, _g3) = y.device_ptr_mut(s);
        let alpha = 1.0f32;
        let (m, n, k) = (w.out as i32, rows as i32, w.inp as i32);
        // Row-major W[out, in] is column-major Wᵀ[in, out]; row-major x[rows, in] is
        // column-major xᵀ[in, rows]; y (column-major [out, rows]) = W · xᵀ is row-major
        // y[rows, out].
        // SAFETY: the pointers hold the sizes checked above, all on this GPU's stream, which
        // the handle is bound to.
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
