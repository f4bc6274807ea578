//! `forja catalog`: the models and GPUs forja knows, by task and by what fits.

use crate::output::{out, outln};
use anyhow::{Result, bail};
use clap::Args;
use forja_arch::KvDtype;
use forja_planner::gpu_catalog::gpus;
use forja_planner::model_catalog::{Task, models};
use forja_planner::presets::{BUILDS, ReferenceBuild};
use forja_planner::{Device, Serving};

use crate::cmd_plan::{PlanArgs, best_fit, targets};
use crate::table::Table;
use crate::units::{gib, params, tokens};

#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// Only models for this task: general, reasoning, coding, efficiency, multimodal
    #[arg(long)]
    task: Option<String>,
    /// Only models that fit (this machine, or --gpu / --budget), with the best format that fits
    #[arg(long)]
    fits: bool,
    /// With --fits: this GPU instead of this machine
    #[arg(long, conflicts_with = "budget")]
    gpu: Option<String>,
    /// With --gpu: how many
    #[arg(long, requires = "gpu", default_value_t = 1)]
    gpus: u32,
    /// With --fits: the reference build at this budget in USD (1500, 4000, 8000)
    #[arg(long)]
    budget: Option<u32>,
    /// Context length for --fits
    #[arg(long, default_value_t = 8192)]
    ctx: u64,
    /// Concurrent users for --fits
    #[arg(long, default_value_t = 1)]
    users: u64,
    /// List GPUs and the reference builds instead of models
    #[arg(long)]
    hardware: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

pub fn run(a: CatalogArgs) -> Result<()> {
    if a.hardware {
        return print_hardware(a.json);
    }
    let task = a.task.as_deref().map(Task::parse).transpose()?;
    let plan_args = PlanArgs {
        model: None,
        quant: None,
        ctx: Some(a.ctx),
        users: a.users,
        batch: 512,
        kv_dtype: "f16".into(),
        mode: crate::cmd_plan::Mode::Inference,
        lora_rank: 16,
        lora_targets: "q,k,v,o".into(),
        optimizer: crate::cmd_plan::OptimizerArg::Adamw,
        gradient_checkpointing: false,
        micro_batch: 1,
        seq_len: 2048,
        gpu: a.gpu.clone(),
        gpus: a.gpus,
        budget: a.budget,
        here: a.fits && a.gpu.is_none() && a.budget.is_none(),
        json: a.json,
    };
    if (a.gpu.is_some() || a.budget.is_some()) && !a.fits {
        bail!("--gpu and --budget filter with --fits: add --fits");
    }
    let devices = if a.fits {
        targets(&plan_args)?.0
    } else {
        Vec::new()
    };
    let serving = Serving {
        ctx_tokens: a.ctx,
        users: a.users,
        step_tokens: 512,
        kv_dtype: KvDtype::F16,
    };
    if a.ctx == 0 || a.users == 0 {
        bail!("--ctx and --users must be at least 1");
    }
    print_models(task, &devices, serving, a.json, None)
}

fn print_models(
    task: Option<Task>,
    devices: &[Device],
    serving: Serving,
    json: bool,
    build: Option<&ReferenceBuild>,
) -> Result<()> {
    let mut rows = Vec::new();
    for e in models()? {
        if task.is_some_and(|t| !e.tasks.contains(&t)) {
            continue;
        }
        let model = e.describe()?;
        let w = model.weights(Some(forja_arch::WeightFormat::Bf16));
        let fit = if devices.is_empty() {
            None
        } else {
            match best_fit(&model, serving, devices)? {
                Some(f) => Some(f),
                None => continue,
            }
        };
        rows.push((e, model.config.max_context, w.params, w.active_params, fit));
    }
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(e, ctx, p, act, fit)| {
                serde_json::json!({
                    "name": e.name, "display": e.display, "family": e.family, "hf_repo": e.hf_repo,
                    "license": e.license, "tasks": e.tasks, "aliases": e.aliases, "params": p,
                    "active_params": act, "max_context": ctx,
                    "fit": fit.as_ref().map(|(f, b, s)| serde_json::json!({"format": f, "bytes_per_device": b, "decode_tok_s_upper": s})),
                })
            })
            .collect();
        let doc = match build {
            Some(b) => serde_json::json!({ "build": b, "models": v }),
            None => serde_json::Value::Array(v),
        };
        outln!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let fits = !devices.is_empty();
    let mut header = vec!["Model", "params", "active", "context", "tasks", "license"];
    if fits {
        header.extend(["best fit", "memory", "tok/s ≤"]);
    } else {
        header.push("Hugging Face repo");
    }
    let mut t = Table::new(&header);
    for (e, ctx, p, act, fit) in &rows {
        let tasks: Vec<&str> = e.tasks.iter().map(|t| t.name()).collect();
        let mut row = vec![
            e.name.clone(),
            params(*p),
            if act != p {
                params(*act)
            } else {
                String::new()
            },
            tokens(*ctx),
            tasks.join(","),
            e.license.clone(),
        ];
        match fit {
            Some((f, b, s)) => row.extend([
                f.clone(),
                gib(*b),
                s.map_or("-".into(), |s| format!("{s:.0}")),
            ]),
            None => row.push(e.hf_repo.clone()),
        }
        t.row(row);
    }
    if fits {
        let d = &devices[0];
        let count = if d.count > 1 {
            format!("{} × ", d.count)
        } else {
            String::new()
        };
        outln!(
            "Models that fit {count}{} with {} tokens × {} user(s):\n",
            d.name,
            serving.ctx_tokens,
            serving.users
        );
    }
    out!("{}", t.render());
    if rows.is_empty() {
        outln!("(no model matches)");
    }
    Ok(())
}

fn print_hardware(json: bool) -> Result<()> {
    let list = gpus()?;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"gpus": list, "reference_builds": BUILDS})
            )?
        );
        return Ok(());
    }
    let mut t = Table::new(&["GPU", "name", "memory", "GB/s", "tier"]);
    for g in &list {
        t.row(vec![
            g.id.clone(),
            g.name.clone(),
            format!("{} GiB", g.memory_gib),
            format!("{:.0}", g.bandwidth_gbps),
            format!("{:?}", g.tier).to_lowercase(),
        ]);
    }
    out!("{}", t.render());
    outln!();
    let mut b = Table::new(&["Reference build", "price", "CPU", "RAM", "GPUs", "for"]);
    for r in BUILDS {
        b.row(vec![
            r.id.into(),
            format!("~{} USD", r.price_usd),
            r.cpu.into(),
            format!("{} GiB", r.ram_gib),
            format!("{} × {}", r.gpu_count, r.gpu_id),
            r.purpose.into(),
        ]);
    }
    out!("{}", b.render());
    Ok(())
}

/// `forja plan --budget N` without a model: what the reference build runs.
pub fn print_build_catalog(build: &ReferenceBuild, a: &PlanArgs) -> Result<()> {
    let devices = vec![Device::from_spec(&build.gpu()?, build.gpu_count)];
    let serving = Serving {
        ctx_tokens: a.ctx.unwrap_or(8192),
        users: a.users,
        step_tokens: a.batch,
        kv_dtype: KvDtype::parse(&a.kv_dtype)?,
    };
    if a.json {
        return print_models(None, &devices, serving, true, Some(build));
    }
    outln!(
        "Build      {} (~{} USD): {}, {} GiB RAM, {} × {}, {} — {}\n",
        build.name,
        build.price_usd,
        build.cpu,
        build.ram_gib,
        build.gpu_count,
        build.gpu_id,
        build.storage,
        build.purpose
    );
    print_models(None, &devices, serving, false, Some(build))
}
