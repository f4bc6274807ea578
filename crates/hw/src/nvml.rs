//! NVIDIA GPUs through NVML (`libnvidia-ml.so.1`), opened at run time: forja needs no CUDA to
//! build, and a machine without the driver simply reports no NVIDIA GPU.
//!
//! Only a handful of stable NVML entry points are used (`nvml.h`, API version 2 names).

use std::ffi::{c_char, c_int, c_uint, c_void};

use serde::Serialize;

/// Library names tried in order; `FORJA_NVML_LIB` overrides them (a path or a name).
#[cfg(windows)]
const NVML_NAMES: &[&str] = &["nvml.dll"];
#[cfg(not(windows))]
const NVML_NAMES: &[&str] = &["libnvidia-ml.so.1", "libnvidia-ml.so"];
const NVML_SUCCESS: c_uint = 0;
const NVML_CLOCK_MEM: c_uint = 2;

#[derive(Debug, Clone, Serialize)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    pub memory_total_bytes: u64,
    pub memory_free_bytes: u64,
    /// Peak memory bandwidth from bus width × max memory clock × 2 (double data rate).
    pub bandwidth_gbps: Option<f64>,
    /// CUDA compute capability, e.g. `(9, 0)` for Hopper.
    pub compute_capability: Option<(i32, i32)>,
}

/// What NVML said, or why there is nothing to say.
#[derive(Debug, Clone, Serialize)]
pub struct GpuReport {
    pub driver_version: Option<String>,
    /// CUDA version the driver supports, e.g. `13.0`.
    pub cuda_version: Option<String>,
    pub gpus: Vec<GpuInfo>,
    /// Why no GPU is listed (no driver, NVML failed); `None` when NVML answered.
    pub unavailable_reason: Option<String>,
}

#[repr(C)]
#[derive(Default)]
struct NvmlMemory {
    total: u64,
    free: u64,
    used: u64,
}

type Device = *mut c_void;

pub fn probe() -> GpuReport {
    match probe_inner() {
        Ok(r) => r,
        Err(reason) => GpuReport {
            driver_version: None,
            cuda_version: None,
            gpus: Vec::new(),
            unavailable_reason: Some(reason),
        },
    }
}

fn open_library() -> Result<libloading::Library, String> {
    let names: Vec<String> = match std::env::var("FORJA_NVML_LIB") {
        Ok(p) if !p.is_empty() => vec![p],
        _ => NVML_NAMES.iter().map(|s| s.to_string()).collect(),
    };
    let mut first_error = None;
    for name in &names {
        // SAFETY: loading NVML runs its library initializers, which have no preconditions.
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => return Ok(lib),
            Err(e) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Err(format!(
        "no NVIDIA driver found: {}",
        first_error.unwrap_or_default()
    ))
}

fn probe_inner() -> Result<GpuReport, String> {
    let lib = open_library()?;
    // SAFETY: every symbol is looked up by its documented NVML name and given its documented C
    // signature; the library stays loaded (`lib` lives to the end of this function) while they
    // are called; buffers passed in are sized as the calls require.
    unsafe {
        let sym = |name: &str| -> Result<*const c_void, String> {
            lib.get::<*const c_void>(name.as_bytes())
                .map(|s| *s)
                .map_err(|e| format!("NVML lacks {name}: {e}"))
        };
        let init: extern "C" fn() -> c_uint = std::mem::transmute(sym("nvmlInit_v2")?);
        let shutdown: extern "C" fn() -> c_uint = std::mem::transmute(sym("nvmlShutdown")?);
        let rc = init();
        if rc != NVML_SUCCESS {
            return Err(format!(
                "NVML failed to initialize (code {rc}): is the NVIDIA driver loaded?"
            ));
        }
        let result = query(&sym);
        shutdown();
        result
    }
}

/// # Safety
/// `sym` must return symbols of an initialized NVML library.
unsafe fn query(sym: &dyn Fn(&str) -> Result<*const c_void, String>) -> Result<GpuReport, String> {
    // SAFETY: see the caller; each transmute gives the documented signature of that symbol.
    unsafe {
        let count_fn: extern "C" fn(*mut c_uint) -> c_uint =
            std::mem::transmute(sym("nvmlDeviceGetCount_v2")?);
        let handle_fn: extern "C" fn(c_uint, *mut Device) -> c_uint =
            std::mem::transmute(sym("nvmlDeviceGetHandleByIndex_v2")?);
        let name_fn: extern "C" fn(Device, *mut c_char, c_uint) -> c_uint =
            std::mem::transmute(sym("nvmlDeviceGetName")?);
        let mem_fn: extern "C" fn(Device, *mut NvmlMemory) -> c_uint =
            std::mem::transmute(sym("nvmlDeviceGetMemoryInfo")?);
        let clock_fn: Option<extern "C" fn(Device, c_uint, *mut c_uint) -> c_uint> =
            sym("nvmlDeviceGetMaxClockInfo")
                .ok()
                .map(|p| std::mem::transmute(p));
        let bus_fn: Option<extern "C" fn(Device, *mut c_uint) -> c_uint> =
            sym("nvmlDeviceGetMemoryBusWidth")
                .ok()
                .map(|p| std::mem::transmute(p));
        let cc_fn: Option<extern "C" fn(Device, *mut c_int, *mut c_int) -> c_uint> =
            sym("nvmlDeviceGetCudaComputeCapability")
                .ok()
                .map(|p| std::mem::transmute(p));
        let driver_fn: Option<extern "C" fn(*mut c_char, c_uint) -> c_uint> =
            sym("nvmlSystemGetDriverVersion")
                .ok()
                .map(|p| std::mem::transmute(p));
        let cuda_fn: Option<extern "C" fn(*mut c_int) -> c_uint> =
            sym("nvmlSystemGetCudaDriverVersion_v2")
                .ok()
                .map(|p| std::mem::transmute(p));

        let mut buf = [0 as c_char; 96];
        let driver_version = driver_fn
            .filter(|f| f(buf.as_mut_ptr(), buf.len() as c_uint) == NVML_SUCCESS)
            .map(|_| c_string(&buf));
        let mut cuda: c_int = 0;
        let cuda_version = cuda_fn
            .filter(|f| f(&mut cuda) == NVML_SUCCESS)
            .map(|_| format!("{}.{}", cuda / 1000, (cuda % 1000) / 10));

        let mut count: c_uint = 0;
        let rc = count_fn(&mut count);
        if rc != NVML_SUCCESS {
            return Err(format!("nvmlDeviceGetCount failed (code {rc})"));
        }
        let mut gpus = Vec::new();
        for index in 0..count {
            let mut dev: Device = std::ptr::null_mut();
            if handle_fn(index, &mut dev) != NVML_SUCCESS {
                continue;
            }
            let mut name = [0 as c_char; 96];
            let name = if name_fn(dev, name.as_mut_ptr(), name.len() as c_uint) == NVML_SUCCESS {
                c_string(&name)
            } else {
                format!("NVIDIA GPU {index}")
            };
            let mut mem = NvmlMemory::default();
            let (total, free) = if mem_fn(dev, &mut mem) == NVML_SUCCESS {
                (mem.total, mem.free)
            } else {
                (0, 0)
            };
            let mut clock_mhz: c_uint = 0;
            let mut bus_bits: c_uint = 0;
            let bandwidth_gbps = match (clock_fn, bus_fn) {
                (Some(c), Some(b))
                    if c(dev, NVML_CLOCK_MEM, &mut clock_mhz) == NVML_SUCCESS
                        && b(dev, &mut bus_bits) == NVML_SUCCESS
                        && clock_mhz > 0
                        && bus_bits > 0 =>
                {
                    Some(bus_bits as f64 / 8.0 * clock_mhz as f64 * 2.0 / 1000.0)
                }
                _ => None,
            };
            let (mut major, mut minor): (c_int, c_int) = (0, 0);
            let compute_capability = cc_fn
                .filter(|f| f(dev, &mut major, &mut minor) == NVML_SUCCESS)
                .map(|_| (major, minor));
            gpus.push(GpuInfo {
                index,
                name,
                memory_total_bytes: total,
                memory_free_bytes: free,
                bandwidth_gbps,
                compute_capability,
            });
        }
        Ok(GpuReport {
            driver_version,
            cuda_version,
            gpus,
            unavailable_reason: None,
        })
    }
}

fn c_string(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a missing driver must be a report, not an error or a panic.
    #[test]
    fn missing_library_reports_no_gpu() {
        // SAFETY: tests in this crate do not read FORJA_NVML_LIB concurrently except this one.
        unsafe { std::env::set_var("FORJA_NVML_LIB", "/nonexistent/libnvidia-ml.so.1") };
        let r = probe();
        unsafe { std::env::remove_var("FORJA_NVML_LIB") };
        assert!(r.gpus.is_empty());
        assert!(r.unavailable_reason.unwrap().contains("no NVIDIA driver"));
    }
}
