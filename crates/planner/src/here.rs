//! "This machine" as plan targets: its NVIDIA GPUs, or its CPU and RAM when it has none.

use forja_hw::HardwareReport;

use crate::device::{Device, DeviceKind};
use crate::gpu_catalog::match_detected;

/// Devices of this machine. Identical GPUs are grouped (tensor parallel needs equal cards).
pub fn devices(hw: &HardwareReport, cpu_bandwidth_gbps: Option<f64>) -> Vec<Device> {
    let mut out: Vec<Device> = Vec::new();
    for g in &hw.gpus.gpus {
        let spec = match_detected(&g.name);
        if let Some(d) = out
            .iter_mut()
            .find(|d| d.name == g.name && d.memory_bytes == g.memory_total_bytes)
        {
            d.count += 1;
            continue;
        }
        out.push(Device {
            id: spec.as_ref().map(|s| s.id.clone()),
            name: g.name.clone(),
            kind: DeviceKind::NvidiaGpu,
            memory_bytes: g.memory_total_bytes,
            // NVML's free memory excludes the driver's reservation and other processes.
            usable_bytes: g.memory_free_bytes,
            // The card's own clocks and bus width say more than a catalog entry.
            bandwidth_gbps: g.bandwidth_gbps.or(spec.as_ref().map(|s| s.bandwidth_gbps)),
            tier: spec.map(|s| s.tier),
            count: 1,
        });
    }
    if out.is_empty() {
        let total = hw.memory.total_bytes.unwrap_or(0);
        out.push(Device {
            id: None,
            name: format!("CPU ({}) + RAM", hw.cpu.model),
            kind: DeviceKind::Cpu,
            memory_bytes: total,
            usable_bytes: hw.memory.available_bytes.unwrap_or(total),
            bandwidth_gbps: cpu_bandwidth_gbps,
            tier: None,
            count: 1,
        });
    }
    out
}
