//! A device the planner places a model on: a catalog GPU, a detected GPU, or this machine's CPU
//! and RAM.

use serde::Serialize;

use crate::gpu_catalog::{GpuSpec, Tier, Vendor};

/// Memory a CUDA process needs before any model byte: driver state and the primary context plus
/// a cuBLAS handle that has run a GEMM. Measured 595 MiB on an H200 with CUDA 13.0 (lazy module
/// loading; bench/results/2026-11-26-cuda-runtime-overhead.md). Assumed the same for ROCm on AMD.
pub const GPU_RUNTIME_OVERHEAD_BYTES: u64 = 600 << 20;

/// Memory the NVIDIA driver keeps out of what CUDA can allocate: NVML's total minus
/// `cudaMemGetInfo`'s total, measured 615 MiB on an H200 (same results file). Catalog GPUs
/// subtract it; detected GPUs use NVML's free memory, which already excludes it.
pub const GPU_DRIVER_RESERVED_BYTES: u64 = 615 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    NvidiaGpu,
    AmdGpu,
    /// Apple silicon: the GPU shares system memory.
    AppleUnified,
    /// Running on the CPU from system RAM.
    Cpu,
}

#[derive(Debug, Clone, Serialize)]
pub struct Device {
    /// Catalog id when the device is in the catalog.
    pub id: Option<String>,
    pub name: String,
    pub kind: DeviceKind,
    /// Memory of one device.
    pub memory_bytes: u64,
    /// Memory the model may use on one device (Apple: the GPU working-set limit; CPU: RAM
    /// available now).
    pub usable_bytes: u64,
    /// Peak bandwidth in GB/s, when known.
    pub bandwidth_gbps: Option<f64>,
    pub tier: Option<Tier>,
    /// Devices of this kind in the build (for `--gpus N`, `--budget`, `--here`).
    pub count: u32,
}

impl Device {
    pub fn from_spec(g: &GpuSpec, count: u32) -> Self {
        let memory_bytes = g.memory_bytes();
        let (kind, usable_bytes) = match g.vendor {
            Vendor::Nvidia => (
                DeviceKind::NvidiaGpu,
                memory_bytes.saturating_sub(GPU_DRIVER_RESERVED_BYTES),
            ),
            Vendor::Amd => (
                DeviceKind::AmdGpu,
                memory_bytes.saturating_sub(GPU_DRIVER_RESERVED_BYTES),
            ),
            Vendor::Apple => (DeviceKind::AppleUnified, apple_gpu_limit(memory_bytes)),
        };
        Device {
            id: Some(g.id.clone()),
            name: g.name.clone(),
            kind,
            memory_bytes,
            usable_bytes,
            bandwidth_gbps: Some(g.bandwidth_gbps),
            tier: Some(g.tier),
            count,
        }
    }

    /// Runtime memory on each device before weights (CUDA/ROCm context and library workspaces).
    pub fn overhead_bytes(&self) -> u64 {
        match self.kind {
            DeviceKind::NvidiaGpu | DeviceKind::AmdGpu => GPU_RUNTIME_OVERHEAD_BYTES,
            DeviceKind::AppleUnified | DeviceKind::Cpu => 0,
        }
    }

    /// Bytes per activation element: GPUs compute in 16-bit, CPUs in f32.
    pub fn act_bytes(&self) -> u64 {
        match self.kind {
            DeviceKind::Cpu => 4,
            _ => 2,
        }
    }

    /// Whether the device can split a model across several of itself (tensor parallelism).
    pub fn can_split(&self) -> bool {
        matches!(self.kind, DeviceKind::NvidiaGpu | DeviceKind::AmdGpu)
    }
}

/// macOS lets the GPU wire about two thirds of unified memory on machines up to 36 GB and three
/// quarters above (`recommendedMaxWorkingSetSize`).
pub fn apple_gpu_limit(memory_bytes: u64) -> u64 {
    if memory_bytes > 36 << 30 {
        memory_bytes / 4 * 3
    } else {
        memory_bytes / 3 * 2
    }
}
