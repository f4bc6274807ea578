//! Three reference builds for local LLMs (budget, prosumer, small-business server), usable as
//! `--budget` presets.

use serde::Serialize;

use crate::error::PlanError;
use crate::gpu_catalog::{GpuSpec, find_gpu};

#[derive(Debug, Clone, Serialize)]
pub struct ReferenceBuild {
    pub id: &'static str,
    pub name: &'static str,
    /// Approximate price in USD of the whole build.
    pub price_usd: u32,
    pub cpu: &'static str,
    pub ram_gib: u32,
    pub storage: &'static str,
    pub gpu_id: &'static str,
    pub gpu_count: u32,
    /// What the build is for.
    pub purpose: &'static str,
}

pub const BUILDS: &[ReferenceBuild] = &[
    ReferenceBuild {
        id: "budget",
        name: "Budget experimenter",
        price_usd: 1500,
        cpu: "AMD Ryzen 5",
        ram_gib: 32,
        storage: "1 TB NVMe",
        gpu_id: "rtx-4060-ti-16gb",
        gpu_count: 1,
        purpose: "models up to 13B",
    },
    ReferenceBuild {
        id: "prosumer",
        name: "Prosumer power",
        price_usd: 4000,
        cpu: "Intel Core i7 / AMD Ryzen 7",
        ram_gib: 64,
        storage: "2 TB NVMe",
        gpu_id: "rtx-4090",
        gpu_count: 1,
        purpose: "quantized 70B models at high speed",
    },
    ReferenceBuild {
        id: "sme-server",
        name: "SME server",
        price_usd: 8000,
        cpu: "AMD EPYC",
        ram_gib: 256,
        storage: "4 TB NVMe",
        gpu_id: "rtx-3090",
        gpu_count: 2,
        purpose: "multi-user workloads and fine-tuning",
    },
];

impl ReferenceBuild {
    pub fn gpu(&self) -> Result<GpuSpec, PlanError> {
        find_gpu(self.gpu_id)
    }
}

/// The most capable reference build that costs at most `budget_usd`.
pub fn build_for_budget(budget_usd: u32) -> Result<&'static ReferenceBuild, PlanError> {
    BUILDS.iter().rev().find(|b| b.price_usd <= budget_usd).ok_or_else(|| PlanError::Invalid {
        what: "budget",
        why: format!(
            "{budget_usd} USD is below the smallest reference build (~1,500 USD with an RTX 4060 Ti 16GB); \
             plan for a specific card with --gpu instead"
        ),
    })
}
