//! CPU model, core counts and the SIMD features forja's kernels dispatch on.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct CpuInfo {
    pub model: String,
    /// Physical cores, when the OS tells them apart from hardware threads.
    pub physical_cores: Option<usize>,
    /// Hardware threads this process may use (affinity and cgroup quota applied).
    pub logical_cores: usize,
    /// SIMD extensions detected at run time (`avx2`, `fma`, `avx512f`, `neon`, …).
    pub simd: Vec<String>,
}

pub fn probe() -> CpuInfo {
    let logical_cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let (model, physical_cores) = parse_cpuinfo(&cpuinfo);
    CpuInfo {
        model: model.unwrap_or_else(|| std::env::consts::ARCH.to_string()),
        physical_cores,
        logical_cores,
        simd: simd_features(),
    }
}

/// Model name and distinct (package, core) pairs from `/proc/cpuinfo` text.
pub fn parse_cpuinfo(text: &str) -> (Option<String>, Option<usize>) {
    let mut model = None;
    let mut cores = std::collections::BTreeSet::new();
    let mut package = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "model name" | "Model" | "cpu model" if model.is_none() => {
                model = Some(value.to_string())
            }
            "physical id" => package = value.parse::<u32>().ok(),
            "core id" => {
                if let Ok(core) = value.parse::<u32>() {
                    cores.insert((package.unwrap_or(0), core));
                }
            }
            _ => {}
        }
    }
    (model, (!cores.is_empty()).then_some(cores.len()))
}

#[cfg(target_arch = "x86_64")]
fn simd_features() -> Vec<String> {
    let mut out = Vec::new();
    macro_rules! check {
        ($($f:tt),*) => {$(
            if std::arch::is_x86_feature_detected!($f) { out.push($f.to_string()); }
        )*};
    }
    check!(
        "sse4.2",
        "avx",
        "f16c",
        "fma",
        "avx2",
        "avxvnni",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512vnni",
        "avx512bf16",
        "avx512fp16"
    );
    out
}

#[cfg(target_arch = "aarch64")]
fn simd_features() -> Vec<String> {
    let mut out = Vec::new();
    macro_rules! check {
        ($($f:tt),*) => {$(
            if std::arch::is_aarch64_feature_detected!($f) { out.push($f.to_string()); }
        )*};
    }
    check!("neon", "dotprod", "i8mm", "fp16", "bf16", "sve", "sve2");
    out
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn simd_features() -> Vec<String> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cores_not_threads() {
        let text = "processor : 0\nmodel name : Test CPU\nphysical id : 0\ncore id : 0\n\n\
                    processor : 1\nmodel name : Test CPU\nphysical id : 0\ncore id : 0\n\n\
                    processor : 2\nmodel name : Test CPU\nphysical id : 0\ncore id : 1\n\n\
                    processor : 3\nmodel name : Test CPU\nphysical id : 1\ncore id : 0\n";
        assert_eq!(parse_cpuinfo(text), (Some("Test CPU".into()), Some(3)));
    }

    #[test]
    fn probe_agrees_with_the_os() {
        let cpu = probe();
        assert_eq!(
            cpu.logical_cores,
            std::thread::available_parallelism().unwrap().get()
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            cpu.simd.contains(&"avx2".to_string()),
            std::arch::is_x86_feature_detected!("avx2")
        );
    }
}
