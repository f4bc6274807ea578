//! Hardware discovery: what this machine has for running models.
//!
//! CPU, memory and disk come from the OS (`/proc`, cgroups, `statvfs` on Linux); NVIDIA GPUs come
//! from NVML, loaded at run time so that forja builds and runs where no NVIDIA driver exists.

pub mod bandwidth;
pub mod cpu;
pub mod disk;
pub mod error;
pub mod memory;
pub mod nvml;

use std::path::Path;

use serde::Serialize;

pub use cpu::CpuInfo;
pub use disk::DiskInfo;
pub use error::HwError;
pub use memory::MemoryInfo;
pub use nvml::{GpuInfo, GpuReport};

/// Everything `forja hw` reports.
#[derive(Debug, Clone, Serialize)]
pub struct HardwareReport {
    pub os: String,
    pub arch: String,
    pub cpu: CpuInfo,
    pub memory: MemoryInfo,
    /// Free space where models are stored.
    pub disk: Option<DiskInfo>,
    pub gpus: GpuReport,
}

/// Probes the machine. Missing pieces (no NVML, unreadable `/proc`) are reported as absent, not
/// as errors: a machine without a GPU is a normal machine.
pub fn probe(models_dir: &Path) -> HardwareReport {
    HardwareReport {
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        cpu: cpu::probe(),
        memory: memory::probe(),
        disk: disk::probe(models_dir).ok(),
        gpus: nvml::probe(),
    }
}
