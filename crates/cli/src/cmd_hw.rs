//! `forja hw`: this machine's CPU, memory, disk and NVIDIA GPUs.

use crate::output::outln;
use anyhow::Result;
use clap::Args;
use forja_hw::bandwidth::measure_copy_bandwidth_gbps;

use crate::units::{gb, gib};

#[derive(Debug, Args)]
pub struct HwArgs {
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
    /// Also measure memory bandwidth (about a second)
    #[arg(long)]
    bandwidth: bool,
}

/// Where pulled models are stored: the Hugging Face hub cache (`HF_HUB_CACHE`, else
/// `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
pub fn models_dir() -> std::path::PathBuf {
    forja_store::StoreConfig::from_env().hf_cache
}

pub fn run(args: HwArgs) -> Result<()> {
    let report = forja_hw::probe(&models_dir());
    let bandwidth = args
        .bandwidth
        .then(|| measure_copy_bandwidth_gbps(512 << 20, 3))
        .flatten();
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(b) = bandwidth {
            v["memory"]["measured_copy_bandwidth_gbps"] = serde_json::json!(b);
        }
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let c = &report.cpu;
    let cores = match c.physical_cores {
        Some(p) => format!("{p} cores, {} threads", c.logical_cores),
        None => format!("{} threads", c.logical_cores),
    };
    outln!("OS        {} {}", report.os, report.arch);
    outln!("CPU       {} ({cores})", c.model);
    outln!(
        "SIMD      {}",
        if c.simd.is_empty() {
            "none detected".into()
        } else {
            c.simd.join(" ")
        }
    );
    let m = &report.memory;
    match (m.total_bytes, m.available_bytes) {
        (Some(t), Some(a)) => outln!("RAM       {} total, {} available", gib(t), gib(a)),
        (Some(t), None) => outln!("RAM       {} total", gib(t)),
        _ => outln!("RAM       unknown"),
    }
    if let Some(l) = m.cgroup_limit_bytes {
        outln!("          limited to {} by the container", gib(l));
    }
    if let Some(b) = bandwidth {
        outln!("          {b:.1} GB/s measured copy bandwidth");
    }
    match &report.disk {
        Some(d) => outln!(
            "Disk      {} free of {} at {}",
            gb(d.free_bytes),
            gb(d.total_bytes),
            d.path.display()
        ),
        None => outln!("Disk      unknown"),
    }
    let g = &report.gpus;
    if g.gpus.is_empty() {
        outln!(
            "GPU       no NVIDIA GPU ({})",
            g.unavailable_reason
                .as_deref()
                .unwrap_or("NVML reports none")
        );
    } else {
        let driver = match (&g.driver_version, &g.cuda_version) {
            (Some(d), Some(c)) => format!(" (driver {d}, CUDA {c})"),
            (Some(d), None) => format!(" (driver {d})"),
            _ => String::new(),
        };
        outln!("GPU       {} NVIDIA GPU(s){driver}", g.gpus.len());
        for gpu in &g.gpus {
            let bw = gpu
                .bandwidth_gbps
                .map(|b| format!(", {b:.0} GB/s"))
                .unwrap_or_default();
            let cc = gpu
                .compute_capability
                .map(|(a, b)| format!(", sm_{a}{b}"))
                .unwrap_or_default();
            outln!(
                "  [{}]     {}: {} ({} free){bw}{cc}",
                gpu.index,
                gpu.name,
                gib(gpu.memory_total_bytes),
                gib(gpu.memory_free_bytes)
            );
        }
    }
    Ok(())
}
