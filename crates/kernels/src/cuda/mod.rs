//! The kernels on an NVIDIA GPU through the CUDA driver API (cudarc, libraries loaded at run
//! time). [`Gpu::open`] compiles `kernels.cu` (with `attention.cu` and `sample.cu`) with NVRTC for the device's compute capability;
//! the first quantized upload adds `mmq.cu`'s tensor-core kernels ([`Gpu::load_quant_kernels`]).
//! Both keep their PTX on disk for the next run ([`kernel_cache_dir`]).
//! The methods here take and return host slices: one call uploads, launches, waits and
//! downloads, which is what the conformance tests need; the decoder's GPU runner keeps its
//! buffers on the device.

use std::path::Path;
use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaStream, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::{CompileOptions, Ptx, compile_ptx_with_opts};
use half::f16;

use crate::{KernelError, PagedAttention, Result, shapes};

mod blas;
mod cache;
mod ops;

pub use crate::quant::QuantKind;
pub use blas::{
    GEMV_ROWS, GemmData, GemmInput, GemmWeight, MMQ_MIN_ROWS, Q8Sink, QUANT_ROWS, QuantPart,
    QuantPath,
};
pub use cache::{PtxOrigin, kernel_cache_dir};
pub use cudarc::driver::CudaSlice;
pub use ops::{
    Act, AttentionLaunch, AttentionSplit, AttentionTables, StepGraph, argmax_index, attention_fits,
    attention_group, attention_partials_len, attention_split,
};

/// The kernels every GPU loads (`attention.cu` and `sample.cu` use `kernels.cu`'s helpers).
const SOURCE: &str = concat!(
    include_str!("../kernels.cu"),
    include_str!("../attention.cu"),
    include_str!("../sample.cu")
);
/// With the tensor-core kernels for GGUF blocks (`mmq.cu` uses `kernels.cu`'s helpers): compiled
/// only once a quantized weight is uploaded, as NVRTC takes about four times as long on it.
const QUANT_SOURCE: &str = concat!(
    include_str!("../kernels.cu"),
    include_str!("../attention.cu"),
    include_str!("../sample.cu"),
    include_str!("../mmq.cu")
);
/// The kernels `SOURCE` defines.
const KERNELS: [&str; 50] = [
    "rms_norm_f32",
    "silu_mul_f32",
    "rope_neox_f32",
    "reshape_and_cache_f16",
    "paged_attention_g1_c1",
    "paged_attention_g2_c1",
    "paged_attention_g3_c1",
    "paged_attention_g4_c1",
    "paged_attention_g5_c1",
    "paged_attention_g6_c1",
    "paged_attention_g7_c1",
    "paged_attention_g8_c1",
    "paged_attention_g1_c2",
    "paged_attention_g2_c2",
    "paged_attention_g3_c2",
    "paged_attention_g4_c2",
    "embed_rows",
    "embed_rows_f16",
    "embed_rows_quant",
    "rms_norm_rows",
    "add_rms_norm",
    "qkv_rope_cache",
    "gated_act",
    "convert",
    "softcap_f32",
    "argmax_rows",
    "zero_u64",
    "quantize_q8",
    "gemv_q8_0_1",
    "gemv_q4_0_1",
    "gemv_q4_1_1",
    "gemv_q4_k_1",
    "gemv_q6_k_1",
    "gemv_q5_0_1",
    "gemv_q5_1_1",
    "gemv_q5_k_1",
    "gemv_q3_k_1",
    "gemv_q2_k_1",
    "gemv_q8_0_8",
    "gemv_q4_0_8",
    "gemv_q4_1_8",
    "gemv_q4_k_8",
    "gemv_q6_k_8",
    "gemv_q5_0_8",
    "gemv_q5_1_8",
    "gemv_q5_k_8",
    "gemv_q3_k_8",
    "gemv_q2_k_8",
    "dequant_f16",
    "sample_rows",
];
/// The kernels `QUANT_SOURCE` adds.
const MMQ_KERNELS: [&str; 41] = [
    "mmq_q8_0_1",
    "mmq_q8_0_2",
    "mmq_q8_0_4",
    "mmq_q8_0_8",
    "mmq_q4_0_1",
    "mmq_q4_0_2",
    "mmq_q4_0_4",
    "mmq_q4_0_8",
    "mmq_q4_1_1",
    "mmq_q4_1_2",
    "mmq_q4_1_4",
    "mmq_q4_1_8",
    "mmq_q4_k_1",
    "mmq_q4_k_2",
    "mmq_q4_k_4",
    "mmq_q4_k_8",
    "mmq_q6_k_1",
    "mmq_q6_k_2",
    "mmq_q6_k_4",
    "mmq_q6_k_8",
    "mmq_q5_0_1",
    "mmq_q5_0_2",
    "mmq_q5_0_4",
    "mmq_q5_0_8",
    "mmq_q5_1_1",
    "mmq_q5_1_2",
    "mmq_q5_1_4",
    "mmq_q5_1_8",
    "mmq_q5_k_1",
    "mmq_q5_k_2",
    "mmq_q5_k_4",
    "mmq_q5_k_8",
    "mmq_q3_k_1",
    "mmq_q3_k_2",
    "mmq_q3_k_4",
    "mmq_q3_k_8",
    "mmq_q2_k_1",
    "mmq_q2_k_2",
    "mmq_q2_k_4",
    "mmq_q2_k_8",
    "mmq_sum",
];
/// An error unless NVRTC can be loaded.
fn nvrtc_present() -> Result<()> {
    // SAFETY: this only tries to load the shared library.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(KernelError::NoDevice(
            "NVRTC (libnvrtc, part of the CUDA toolkit or the nvidia-cuda-nvrtc package) \
             is not installed"
                .into(),
        ))
    }
}

/// NVRTC's option naming the virtual architecture of compute capability `(major, minor)`.
fn arch_option(capability: (i32, i32)) -> String {
    format!(
        "--gpu-architecture=compute_{}{}",
        capability.0, capability.1
    )
}

/// Compiles the kernels with NVRTC for compute capability `(major, minor)`, as [`Gpu::open`]
/// does for the GPU present (and, with `quantized`, as the first quantized upload does with
/// the tensor-core kernels added) when its cache has no copy; needs NVRTC, not a GPU.
pub fn compile_kernels(capability: (i32, i32), quantized: bool) -> Result<Ptx> {
    nvrtc_present()?;
    compile_ptx_with_opts(
        if quantized { QUANT_SOURCE } else { SOURCE },
        CompileOptions {
            options: vec![arch_option(capability)],
            ..Default::default()
        },
    )
    .map_err(|e| KernelError::Cuda(format!("compiling the kernels: {e}")))
}

/// [`compile_kernels`] through the cache folder `cache` (see [`kernel_cache_dir`]): its copy
/// when it has one from the same source, architecture and NVRTC version that defines every
/// kernel, else compiled and stored there; `fresh` compiles (and stores) whatever the cache
/// holds.
pub fn kernels_ptx(
    capability: (i32, i32),
    quantized: bool,
    cache: Option<&Path>,
    fresh: bool,
) -> Result<(Ptx, PtxOrigin)> {
    nvrtc_present()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC is loaded (checked above); the call writes two ints.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if status != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(KernelError::Cuda(format!("nvrtcVersion: {status:?}")));
    }
    let source = if quantized { QUANT_SOURCE } else { SOURCE };
    let (arch, version) = (arch_option(capability), format!("nvrtc {major}.{minor}"));
    let key = [source.as_bytes(), arch.as_bytes(), version.as_bytes()];
    let (src, origin) = cache::ptx_for(cache, &key, &kernel_names(quantized), fresh, || {
        compile_kernels(capability, quantized).map(|p| p.to_src())
    })?;
    Ok((Ptx::from_src(src), origin))
}

/// The kernels (with `quantized`, the tensor-core ones too) loaded into `ctx`: from the cache
/// folder when it has them; a cached copy the driver refuses is compiled again.
fn load_kernels(
    ctx: &Arc<CudaContext>,
    capability: (i32, i32),
    quantized: bool,
) -> Result<Arc<CudaModule>> {
    let dir = kernel_cache_dir();
    let (ptx, origin) = kernels_ptx(capability, quantized, dir.as_deref(), false)?;
    match ctx.load_module(ptx) {
        Ok(m) => Ok(m),
        Err(_) if origin == PtxOrigin::Cached => {
            let (ptx, _) = kernels_ptx(capability, quantized, dir.as_deref(), true)?;
            ctx.load_module(ptx).map_err(cuda("loading the kernels"))
        }
        Err(e) => Err(cuda("loading the kernels")(e)),
    }
}

/// The names of the kernels [`compile_kernels`] defines (with `quantized`, also these).
pub fn kernel_names(quantized: bool) -> Vec<&'static str> {
    let extra: &[&str] = if quantized { &MMQ_KERNELS } else { &[] };
    KERNELS.iter().chain(extra).copied().collect()
}

/// cuBLAS's workspace, set once so that captured graphs never allocate.
const BLAS_WORKSPACE: usize = 32 << 20;
/// Threads per block of the row kernels (a multiple of 32, see `block_reduce`).
const THREADS: u32 = 256;
/// Shared memory a block may use without opting in to more.
const SHARED_BYTES: usize = 48 << 10;

fn cuda<E: std::fmt::Debug>(what: &str) -> impl FnOnce(E) -> KernelError + '_ {
    move |e| KernelError::Cuda(format!("{what}: {e:?}"))
}

/// One GPU with forja's kernels loaded.
#[derive(Debug)]
pub struct Gpu {
    stream: Arc<CudaStream>,
    blas: cudarc::cublas::CudaBlas,
    _blas_workspace: cudarc::driver::CudaSlice<u8>,
    /// Every kernel of `kernels.cu`, looked up once.
    functions: Vec<(&'static str, CudaFunction)>,
    /// The tensor-core kernels of `mmq.cu`, compiled and looked up at the first quantized
    /// upload ([`Gpu::load_quant_kernels`]).
    quant_functions: std::sync::OnceLock<Vec<(&'static str, CudaFunction)>>,
    name: String,
    capability: (i32, i32),
    /// Shared memory an attention block may use ([`attention_shared_bytes`]).
    attention_shared: usize,
}

/// Shared memory attention blocks may use unless `FORJA_ATTENTION_SHARED_KB` says otherwise
/// (or the device allows less): enough for four heads' scores over 4,096 positions. On an
/// H200, against 48 KiB: 256 sequences at depth 4,096 decode at 11,972 tok/s instead of 8,873
/// (two heads a block at 48 KiB), a 4,096-token prompt fills at 29,973 tok/s instead of 20,388
/// (8-layer Llama-3-8B-shaped Q4_K_M; `bench/results/2026-11-29-gpu-long-context.md`); 227 KiB
/// gave the same as 100.
const ATTENTION_SHARED_DEFAULT: usize = 100 << 10;

/// Shared memory an attention block may use on a device that lets a block opt in to `optin`
/// bytes: `FORJA_ATTENTION_SHARED_KB` (KiB, for measuring layouts; at most `optin`), else
/// [`ATTENTION_SHARED_DEFAULT`]. More lets a block keep the scores of longer rows for more
/// query heads (one read of K and V serves them all), and costs blocks per SM.
pub fn attention_shared_bytes(optin: usize, setting: Option<&str>) -> Result<usize> {
    let Some(text) = setting else {
        return Ok(ATTENTION_SHARED_DEFAULT.min(optin.max(SHARED_BYTES)));
    };
    let kib: usize = text.trim().parse().map_err(|_| {
        KernelError::Shape(format!(
            "FORJA_ATTENTION_SHARED_KB={text:?} is not a whole number of KiB"
        ))
    })?;
    let bytes = kib << 10;
    if bytes < SHARED_BYTES || bytes > optin.max(SHARED_BYTES) {
        return Err(KernelError::Shape(format!(
            "FORJA_ATTENTION_SHARED_KB={kib}: this GPU allows {} to {} KiB a block",
            SHARED_BYTES >> 10,
            optin.max(SHARED_BYTES) >> 10
        )));
    }
    Ok(bytes)
}

impl Gpu {
    /// Opens GPU `ordinal` and compiles the kernels for it. Fails with
    /// [`KernelError::NoDevice`] (not a crash) where the driver or NVRTC is missing.
    pub fn open(ordinal: usize) -> Result<Gpu> {
        // SAFETY: these only try to load the shared libraries.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(KernelError::NoDevice(
                "the NVIDIA driver library (libcuda.so.1) is not installed".into(),
            ));
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| KernelError::NoDevice(format!("GPU {ordinal}: {e:?}")))?;
        let capability = ctx
            .compute_capability()
            .map_err(cuda("compute capability"))?;
        let name = ctx.name().map_err(cuda("device name"))?;
        let module = load_kernels(&ctx, capability, false)?;
        let functions = KERNELS
            .iter()
            .map(|&n| Ok((n, module.load_function(n).map_err(cuda(n))?)))
            .collect::<Result<Vec<_>>>()?;
        let optin = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )
            .map_err(cuda("shared memory per block"))?;
        let setting = std::env::var("FORJA_ATTENTION_SHARED_KB").ok();
        let attention_shared = attention_shared_bytes(optin.max(0) as usize, setting.as_deref())?;
        if attention_shared > SHARED_BYTES {
            // Dynamic shared memory above 48 KB must be asked for, kernel by kernel.
            let dynamic = (attention_shared - ops::ATT_STATIC_SHARED) as i32;
            for (n, f) in functions
                .iter()
                .filter(|(n, _)| n.starts_with("paged_attention_"))
            {
                f.set_attribute(
                    cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    dynamic,
                )
                .map_err(cuda(n))?;
            }
        }
        // SAFETY: forja uses one stream per GPU, so the per-buffer events cudarc records for
        // cross-stream ordering are never needed (and would be recorded into captured graphs).
        unsafe { ctx.disable_event_tracking() };
        // A stream of our own: the legacy default stream cannot be captured into graphs.
        let stream = ctx.new_stream().map_err(cuda("stream"))?;
        let blas = cudarc::cublas::CudaBlas::new(stream.clone()).map_err(|e| {
            KernelError::NoDevice(format!(
                "cuBLAS (libcublas, part of the CUDA toolkit or the nvidia-cublas package): {e:?}"
            ))
        })?;
        let mut workspace = stream
            .alloc_zeros::<u8>(BLAS_WORKSPACE)
            .map_err(cuda("cuBLAS workspace"))?;
        {
            use cudarc::driver::DevicePtrMut;
            let (ptr, _guard) = workspace.device_ptr_mut(&stream);
            // SAFETY: the workspace lives as long as the handle (both are fields of `Gpu`).
            let status = unsafe {
                cudarc::cublas::sys::cublasSetWorkspace_v2(
                    *blas.handle(),
                    ptr as *mut std::ffi::c_void,
                    BLAS_WORKSPACE,
                )
            };
            if status != cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                return Err(KernelError::Cuda(format!("cublasSetWorkspace: {status:?}")));
            }
        }
        Ok(Gpu {
            stream,
            blas,
            _blas_workspace: workspace,
            functions,
            quant_functions: std::sync::OnceLock::new(),
            name,
            capability,
            attention_shared,
        })
    }

    /// Shared memory an attention block may use (100 KiB where the device allows it, unless
    /// `FORJA_ATTENTION_SHARED_KB` says otherwise): [`attention_split`] lays launches out
    /// within it.
    pub fn attention_shared(&self) -> usize {
        self.attention_shared
    }

    /// The device's name, as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `(major, minor)` compute capability.
    pub fn capability(&self) -> (i32, i32) {
        self.capability
    }

    /// `(free, total)` bytes of device memory.
    pub fn memory(&self) -> Result<(usize, usize)> {
        self.stream
            .context()
            .mem_get_info()
            .map_err(cuda("memory info"))
    }

    /// Compiles and loads the tensor-core kernels for GGUF blocks, once (a quantized upload
    /// does it, before any product could be captured into a graph). Nothing to do before
    /// sm_80, which never launches them.
    pub fn load_quant_kernels(&self) -> Result<()> {
        if !self.mmq_available() || self.quant_functions.get().is_some() {
            return Ok(());
        }
        let module = load_kernels(self.stream.context(), self.capability, true)?;
        let functions = MMQ_KERNELS
            .iter()
            .map(|&n| Ok((n, module.load_function(n).map_err(cuda(n))?)))
            .collect::<Result<Vec<_>>>()?;
        // Another thread may have loaded them meanwhile: either copy serves.
        let _ = self.quant_functions.set(functions);
        Ok(())
    }

    fn function(&self, name: &str) -> Result<CudaFunction> {
        self.functions
            .iter()
            .chain(self.quant_functions.get().into_iter().flatten())
            .find(|(n, _)| *n == name)
            .map(|(_, f)| f.clone())
            .ok_or_else(|| KernelError::Cuda(format!("no kernel named {name}")))
    }

    /// Copies `host` to a new device buffer.
    pub fn upload<T: cudarc::driver::DeviceRepr>(
        &self,
        host: &[T],
    ) -> Result<cudarc::driver::CudaSlice<T>> {
        self.stream.clone_htod(host).map_err(cuda("upload"))
    }

    /// Copies a device buffer to the host (waits for the work before it).
    pub fn download<T: cudarc::driver::DeviceRepr + Default + Clone>(
        &self,
        dev: &cudarc::driver::CudaSlice<T>,
    ) -> Result<Vec<T>> {
        self.stream.clone_dtoh(dev).map_err(cuda("download"))
    }

    /// As [`crate::reference::rms_norm`].
    pub fn rms_norm(&self, x: &[f32], w: &[f32], eps: f32, offset: f32) -> Result<Vec<f32>> {
        let cols = w.len();
        shapes::rows(x.len(), cols)?;
        let (xd, wd) = (self.upload(x)?, self.upload(w)?);
        let mut out = self
            .stream
            .alloc_zeros::<f32>(x.len())
            .map_err(cuda("alloc"))?;
        let f = self.function("rms_norm_f32")?;
        let cols_i = cols as i32;
        let mut l = self.stream.launch_builder(&f);
        l.arg(&mut out)
            .arg(&xd)
            .arg(&wd)
            .arg(&cols_i)
            .arg(&eps)
            .arg(&offset);
        let cfg = LaunchConfig {
            grid_dim: ((x.len() / cols) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match the kernel's signature; `out`, `x` hold rows × cols.
        unsafe { l.launch(cfg) }.map_err(cuda("rms_norm_f32"))?;
        self.download(&out)
    }

    /// As [`crate::reference::silu_mul`].
    pub fn silu_mul(&self, gate: &[f32], up: &[f32]) -> Result<Vec<f32>> {
        shapes::gate_up(gate.len(), up.len())?;
        let (gd, ud) = (self.upload(gate)?, self.upload(up)?);
        let mut out = self
            .stream
            .alloc_zeros::<f32>(gate.len())
            .map_err(cuda("alloc"))?;
        let f = self.function("silu_mul_f32")?;
        let n = gate.len() as i32;
        let mut l = self.stream.launch_builder(&f);
        l.arg(&mut out).arg(&gd).arg(&ud).arg(&n);
        // SAFETY: as above; the kernel strides over all `n` values.
        unsafe { l.launch(LaunchConfig::for_num_elems(gate.len() as u32)) }
            .map_err(cuda("silu_mul_f32"))?;
        self.download(&out)
    }

    /// As [`crate::reference::rope_neox`].
    pub fn rope_neox(
        &self,
        x: &mut [f32],
        positions: &[u32],
        heads: usize,
        head_dim: usize,
        inv_freq: &[f32],
    ) -> Result<()> {
        let half = inv_freq.len();
        shapes::rope(x.len(), positions.len(), heads, head_dim, half)?;
        let mut xd = self.upload(x)?;
        let (pd, fd) = (self.upload(positions)?, self.upload(inv_freq)?);
        let f = self.function("rope_neox_f32")?;
        let (heads_i, dim_i, half_i) = (heads as i32, head_dim as i32, half as i32);
        let mut l = self.stream.launch_builder(&f);
        l.arg(&mut xd)
            .arg(&pd)
            .arg(&heads_i)
            .arg(&dim_i)
            .arg(&half_i)
            .arg(&fd);
        let cfg = LaunchConfig {
            grid_dim: ((positions.len() * heads) as u32, 1, 1),
            block_dim: (THREADS.min((half as u32).div_ceil(32) * 32).max(32), 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: as above; one block per (row, head) of `x`.
        unsafe { l.launch(cfg) }.map_err(cuda("rope_neox_f32"))?;
        x.copy_from_slice(&self.download(&xd)?);
        Ok(())
    }

    /// As [`crate::reference::reshape_and_cache`].
    pub fn reshape_and_cache(
        &self,
        k: &[f32],
        v: &[f32],
        k_cache: &mut [f16],
        v_cache: &mut [f16],
        slots: &[u32],
        width: usize,
    ) -> Result<()> {
        shapes::cache_writes(
            k.len(),
            v.len(),
            slots,
            width,
            k_cache.len().min(v_cache.len()),
        )?;
        let bits = |c: &[f16]| c.iter().map(|h| h.to_bits()).collect::<Vec<u16>>();
        let (mut kc, mut vc) = (self.upload(&bits(k_cache))?, self.upload(&bits(v_cache))?);
        let (kd, vd, sd) = (self.upload(k)?, self.upload(v)?, self.upload(slots)?);
        let f = self.function("reshape_and_cache_f16")?;
        let width_i = width as i32;
        let mut l = self.stream.launch_builder(&f);
        l.arg(&kd)
            .arg(&vd)
            .arg(&mut kc)
            .arg(&mut vc)
            .arg(&sd)
            .arg(&width_i);
        let cfg = LaunchConfig {
            grid_dim: (slots.len() as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: as above; every slot is inside the caches (checked).
        unsafe { l.launch(cfg) }.map_err(cuda("reshape_and_cache_f16"))?;
        for (dst, src) in [(k_cache, &kc), (v_cache, &vc)] {
            for (d, b) in dst.iter_mut().zip(self.download(src)?) {
                *d = f16::from_bits(b);
            }
        }
        Ok(())
    }

    /// As [`crate::reference::paged_attention`], through the kernel the decoder launches (any
    /// context length: long rows are split, see [`attention_split`]).
    pub fn paged_attention(
        &self,
        p: &PagedAttention,
        q: &[f32],
        k: &[f16],
        v: &[f16],
    ) -> Result<Vec<f32>> {
        p.check(q.len(), k.len(), v.len())?;
        let bits = |c: &[f16]| c.iter().map(|h| h.to_bits()).collect::<Vec<u16>>();
        let (kd, vd) = (self.upload(&bits(k))?, self.upload(&bits(v))?);
        let qd = self.upload(q)?;
        let longest = p.context_lens.iter().copied().max().unwrap_or(0) as usize;
        let rows = p.context_lens.len();
        // Block tables are per sequence: a call may name sequences no row reads.
        let mut tables = AttentionTables::new(
            self,
            rows.max(p.seqs()),
            p.max_blocks,
            (p.heads, p.kv_heads, p.head_dim),
            longest,
        )?;
        self.upload_into(&p.block_tables, &mut tables.block_tables)?;
        self.upload_into(&p.row_seqs, &mut tables.row_seqs)?;
        self.upload_into(&p.context_lens, &mut tables.context_lens)?;
        let mut out = Act::F32(self.alloc::<f32>(q.len())?);
        self.attention(&mut out, &qd, &kd, &vd, &tables, &p.launch(longest), None)?;
        match &out {
            Act::F32(b) => self.download(b),
            Act::F16(_) => Err(KernelError::Shape("an f32 output was asked for".into())),
        }
    }
}
