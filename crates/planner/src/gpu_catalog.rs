//! GPUs the planner knows, in three tiers (entry 12–16 GB, prosumer 24 GB, enterprise 32 GB+)
//! and Apple unified-memory machines, with memory and peak bandwidth from vendor specifications.

use serde::{Deserialize, Serialize};

use crate::error::PlanError;
use crate::text_match::{normalize, suggestions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vendor {
    Nvidia,
    Amd,
    Apple,
}

/// GPU tiers by memory and use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// 12–16 GB: experimentation and models under 13B.
    Entry,
    /// 24 GB: the "sweet spot", up to 70B quantized (in pairs).
    Prosumer,
    /// 32 GB and more: large models and full fine-tuning.
    Enterprise,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSpec {
    pub id: String,
    pub name: String,
    pub vendor: Vendor,
    /// Memory in GiB: what the driver reports as total where known (H200: 143,771 MiB measured
    /// through NVML), otherwise the capacity as sold (NVIDIA's "GB" on these cards are GiB).
    pub memory_gib: f64,
    /// Peak memory bandwidth (GB/s, 10^9 bytes per second).
    pub bandwidth_gbps: f64,
    pub tier: Tier,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Substrings of the name NVML reports for this card (`H100 80GB HBM3`).
    #[serde(default)]
    pub nvml: Vec<String>,
}

impl GpuSpec {
    pub fn memory_bytes(&self) -> u64 {
        (self.memory_gib * (1u64 << 30) as f64) as u64
    }
}

const GPUS_JSON: &str = include_str!("../catalog/gpus.json");

/// All GPUs of the built-in catalog, smallest memory first.
pub fn gpus() -> Result<Vec<GpuSpec>, PlanError> {
    let mut list: Vec<GpuSpec> =
        serde_json::from_str(GPUS_JSON).map_err(|e| PlanError::Catalog {
            file: "gpus.json",
            why: e.to_string(),
        })?;
    list.sort_by(|a, b| {
        a.memory_gib
            .total_cmp(&b.memory_gib)
            .then(a.bandwidth_gbps.total_cmp(&b.bandwidth_gbps))
    });
    Ok(list)
}

/// Finds a GPU by id, alias or a distinctive part of its name (`4090`, `h100`, `a100-80gb`).
pub fn find_gpu(query: &str) -> Result<GpuSpec, PlanError> {
    let all = gpus()?;
    let q = normalize(query);
    let exact = all.iter().find(|g| {
        normalize(&g.id) == q
            || g.aliases.iter().any(|a| normalize(a) == q)
            || normalize(&g.name) == q
    });
    if let Some(g) = exact {
        return Ok(g.clone());
    }
    let partial: Vec<&GpuSpec> = all
        .iter()
        .filter(|g| normalize(&g.id).contains(&q) || normalize(&g.name).contains(&q))
        .collect();
    match partial.as_slice() {
        [one] => Ok((*one).clone()),
        _ => {
            let names: Vec<&str> = all.iter().map(|g| g.id.as_str()).collect();
            let mut s: Vec<String> = partial.iter().map(|g| g.id.clone()).collect();
            if s.is_empty() {
                s = suggestions(query, &names);
            }
            Err(PlanError::UnknownGpu {
                given: query.to_string(),
                suggestions: s,
            })
        }
    }
}

/// The catalog entry whose name matches what NVML reports (`NVIDIA H100 80GB HBM3`). A match
/// must end at a word boundary and not be followed by a variant word, so `RTX 3060` does not
/// match an `RTX 3060 Ti` and `RTX 4090` does not match an `RTX 4090 Laptop GPU`.
pub fn match_detected(name: &str) -> Option<GpuSpec> {
    let lower = name.to_ascii_lowercase();
    const VARIANTS: [&str; 6] = ["ti", "laptop", "mobile", "max-q", "super", "d"];
    gpus().ok()?.into_iter().find(|g| {
        g.nvml.iter().any(|m| {
            let m = m.to_ascii_lowercase();
            lower.match_indices(&m).any(|(at, _)| {
                let rest = &lower[at + m.len()..];
                let boundary = rest
                    .chars()
                    .next()
                    .is_none_or(|c| !c.is_ascii_alphanumeric());
                let next_word = rest.split_whitespace().next().unwrap_or("");
                boundary && !VARIANTS.contains(&next_word)
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detected_names_match_only_their_card() {
        let id = |n: &str| match_detected(n).map(|g| g.id);
        assert_eq!(id("NVIDIA H100 80GB HBM3").as_deref(), Some("h100-sxm"));
        assert_eq!(id("NVIDIA H100 PCIe").as_deref(), Some("h100-pcie"));
        assert_eq!(id("NVIDIA H200").as_deref(), Some("h200"));
        assert_eq!(id("NVIDIA GeForce RTX 4090").as_deref(), Some("rtx-4090"));
        assert_eq!(id("NVIDIA GeForce RTX 4090 Laptop GPU"), None);
        assert_eq!(id("NVIDIA GeForce RTX 3060 Ti"), None);
        assert_eq!(
            id("NVIDIA GeForce RTX 4070 SUPER").as_deref(),
            Some("rtx-4070-super")
        );
        assert_eq!(id("NVIDIA GeForce RTX 4070"), None);
        assert_eq!(id("NVIDIA A100-SXM4-80GB").as_deref(), Some("a100-80gb"));
    }
}
