//! `forja plan`: memory, hardware and speed planning for one model (or, with only `--budget`,
//! for the catalog on a reference build).

use crate::output::{out, outln};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use forja_arch::training::{LoraTarget, Optimizer, TrainMode, TrainShape};
use forja_arch::{KvDtype, WeightFormat};
use forja_hw::bandwidth::measure_copy_bandwidth_gbps;
use forja_planner::gpu_catalog::{Vendor, find_gpu, gpus};
use forja_planner::plan::DeviceFit;
use forja_planner::presets::{ReferenceBuild, build_for_budget};
use forja_planner::{Device, Plan, PlanRequest, Serving, Workload, plan};

use crate::cmd_hw::models_dir;
use crate::model_arg::resolve;
use crate::table::Table;
use crate::units::{bytes_auto, gb, gib, params, tokens};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    Inference,
    FullFinetune,
    Lora,
    Qlora,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OptimizerArg {
    Adamw,
    #[value(name = "adamw-8bit")]
    Adamw8bit,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Catalog name (llama-3.1-8b-instruct), config.json, HF model folder, .gguf file, store name
    /// (`forja ls`) or hub name (hf:org/repo, hf:org/repo:q4_k_m; read from the hub, not downloaded)
    pub model: Option<String>,
    /// Weight format: f32 f16 bf16 fp8 int8 awq gptq q8_0 q6_k q5_k_m q5_0 q4_k_m q4_k_s q4_0 q4_1 iq4_xs q3_k_m q2_k
    /// [default: what the files store; q4_k_m for catalog models]
    #[arg(long, short = 'q')]
    pub quant: Option<String>,
    /// Context length per sequence, in tokens [default: 8192, capped at the model's maximum]
    #[arg(long)]
    pub ctx: Option<u64>,
    /// Concurrent sequences (users), each with a full context
    #[arg(long, default_value_t = 1)]
    pub users: u64,
    /// Tokens per forward step (prefill chunk)
    #[arg(long, default_value_t = forja_arch::workspace::DEFAULT_STEP_TOKENS)]
    pub batch: u64,
    /// KV-cache element type: f16, bf16, f32, fp8, q8_0, q4_0
    #[arg(long, default_value = "f16")]
    pub kv_dtype: String,
    /// What runs: inference, or a fine-tuning job
    #[arg(long, value_enum, default_value_t = Mode::Inference)]
    pub mode: Mode,
    /// LoRA rank
    #[arg(long, default_value_t = 16)]
    pub lora_rank: u64,
    /// LoRA target modules: q,k,v,o,gate,up,down or all
    #[arg(long, default_value = "q,k,v,o")]
    pub lora_targets: String,
    /// Optimizer for fine-tuning
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adamw)]
    pub optimizer: OptimizerArg,
    /// Recompute activations in backward (fine-tuning)
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Sequences per optimizer micro-step (fine-tuning)
    #[arg(long, default_value_t = 1)]
    pub micro_batch: u64,
    /// Training sequence length in tokens
    #[arg(long, default_value_t = 2048)]
    pub seq_len: u64,
    /// Plan for this GPU (catalog id or name: 4090, h100, a100-80gb)
    #[arg(long, conflicts_with_all = ["here", "budget"])]
    pub gpu: Option<String>,
    /// How many of --gpu
    #[arg(long, requires = "gpu", default_value_t = 1)]
    pub gpus: u32,
    /// Plan for the reference build at this budget in USD (1500, 4000, 8000)
    #[arg(long, conflicts_with = "here")]
    pub budget: Option<u32>,
    /// Plan for this machine's GPUs (or CPU and RAM)
    #[arg(long)]
    pub here: bool,
    /// Print JSON (schema: docs/plan-json.md)
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: PlanArgs) -> Result<()> {
    let (devices, fixed_counts, build) = targets(&a)?;
    let Some(model_arg) = a.model.clone() else {
        let Some(build) = build else {
            bail!(
                "name a model to plan (e.g. `forja plan llama-3.1-8b-instruct`), or pass --budget to see what a reference build runs"
            );
        };
        return crate::cmd_catalog::print_build_catalog(build, &a);
    };
    let resolved = resolve(&model_arg)?;
    let model = &resolved.description;
    let format = a.quant.as_deref().map(WeightFormat::parse).transpose()?;
    let request = PlanRequest {
        format,
        serving: serving(&a, model.config.max_context)?,
        workload: workload(&a)?,
        devices,
        fixed_counts,
    };
    let p = plan(model, &request)?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        out!(
            "{}",
            render(
                &p,
                resolved.entry.as_ref().map(|e| e.display.as_str()),
                build
            )
        );
    }
    Ok(())
}

pub fn serving(a: &PlanArgs, max_context: u64) -> Result<Serving> {
    Ok(Serving {
        ctx_tokens: a.ctx.unwrap_or(8192.min(max_context)),
        users: a.users,
        step_tokens: a.batch,
        kv_dtype: KvDtype::parse(&a.kv_dtype)?,
    })
}

pub fn workload(a: &PlanArgs) -> Result<Workload> {
    let mode = match a.mode {
        Mode::Inference => return Ok(Workload::Inference),
        Mode::FullFinetune => TrainMode::FullFinetune,
        Mode::Lora => TrainMode::Lora,
        Mode::Qlora => TrainMode::Qlora,
    };
    if a.lora_rank == 0 || a.lora_rank > 65536 {
        bail!("invalid --lora-rank {}: use 1..=65536", a.lora_rank);
    }
    if a.seq_len == 0 || a.micro_batch == 0 {
        bail!("--seq-len and --micro-batch must be at least 1");
    }
    Ok(Workload::Train(TrainShape {
        mode,
        lora_rank: a.lora_rank,
        lora_targets: LoraTarget::parse_list(&a.lora_targets).map_err(anyhow::Error::msg)?,
        optimizer: match a.optimizer {
            OptimizerArg::Adamw => Optimizer::Adamw,
            OptimizerArg::Adamw8bit => Optimizer::Adamw8bit,
        },
        gradient_checkpointing: a.gradient_checkpointing,
        micro_batch: a.micro_batch,
        seq_len: a.seq_len,
    }))
}

/// The devices to plan on, whether their counts are fixed, and the reference build if any.
pub fn targets(a: &PlanArgs) -> Result<(Vec<Device>, bool, Option<&'static ReferenceBuild>)> {
    if let Some(g) = &a.gpu {
        if a.gpus == 0 || a.gpus > 8 {
            bail!(
                "invalid --gpus {}: tensor parallelism splits a model over 1 to 8 GPUs of one host",
                a.gpus
            );
        }
        return Ok((vec![Device::from_spec(&find_gpu(g)?, a.gpus)], true, None));
    }
    if let Some(budget) = a.budget {
        let b = build_for_budget(budget)?;
        return Ok((
            vec![Device::from_spec(&b.gpu()?, b.gpu_count)],
            true,
            Some(b),
        ));
    }
    if a.here {
        let hw = forja_hw::probe(&models_dir());
        let bw = if hw.gpus.gpus.is_empty() {
            measure_copy_bandwidth_gbps(256 << 20, 3)
        } else {
            None
        };
        return Ok((forja_planner::here::devices(&hw, bw), true, None));
    }
    let all = gpus()?
        .iter()
        .map(|g| Device::from_spec(g, if g.vendor == Vendor::Apple { 1 } else { 8 }))
        .collect();
    Ok((all, false, None))
}

fn pct(p: f64) -> String {
    format!("{}{p:.0}%", if p >= 0.0 { "+" } else { "" })
}

fn render(p: &Plan, display: Option<&str>, build: Option<&ReferenceBuild>) -> String {
    let mut o = String::new();
    let m = &p.model;
    let name = display.map_or(m.origin.clone(), |d| format!("{d} ({})", m.origin));
    o += &format!("Model      {name}\n");
    let moe = m
        .experts
        .map(|x| {
            format!(
                ", {} experts / {} active ({} active params)",
                x.count,
                x.per_token,
                params(m.active_params)
            )
        })
        .unwrap_or_default();
    let swa = if m.sliding_window_layers > 0 {
        format!(", {} sliding-window layers", m.sliding_window_layers)
    } else {
        String::new()
    };
    o += &format!(
        "           {}, {} params, {} layers, {} heads / {} KV heads × {}{moe}{swa}, max context {}\n",
        m.family,
        params(m.params),
        m.layers,
        m.heads,
        m.kv_heads,
        m.head_dim,
        tokens(m.max_context)
    );
    if let Some(st) = &m.stored {
        let container = match st.container {
            forja_arch::Container::Gguf => "GGUF",
            forja_arch::Container::Safetensors => "safetensors",
        };
        o += &format!(
            "File       {} {container}, {} on disk, {} params\n",
            st.format_label,
            gb(st.file_bytes),
            params(st.params)
        );
    }
    let types: Vec<String> = p
        .format
        .bytes_by_type
        .iter()
        .rev()
        .map(|(t, b)| format!("{t} {}", gib(*b)))
        .collect();
    o += &format!(
        "Format     {} ({:.2} bits/weight: {}){}\n",
        p.format.name,
        p.format.bits_per_weight,
        types.join(", "),
        p.format
            .gguf_file_bytes
            .map(|b| format!("; GGUF file {}", gb(b)))
            .unwrap_or_default()
    );
    let s = &p.serving;
    match &p.workload {
        Workload::Inference => {
            o += &format!(
                "Workload   inference, {} tokens × {} user(s), KV cache {}, {} tokens per step\n",
                s.ctx_tokens, s.users, s.kv_dtype, s.step_tokens
            )
        }
        Workload::Train(t) => {
            let lora = if t.mode == TrainMode::FullFinetune {
                String::new()
            } else {
                let names: Vec<String> = t
                    .lora_targets
                    .iter()
                    .map(|x| format!("{x:?}").to_lowercase())
                    .collect();
                format!(", rank {} on {}", t.lora_rank, names.join(","))
            };
            let mode = match t.mode {
                TrainMode::FullFinetune => "full fine-tuning",
                TrainMode::Lora => "LoRA",
                TrainMode::Qlora => "QLoRA",
            };
            let optimizer = match t.optimizer {
                Optimizer::Adamw => "AdamW",
                Optimizer::Adamw8bit => "AdamW 8-bit",
            };
            let ckpt = if t.gradient_checkpointing {
                "on"
            } else {
                "off"
            };
            o += &format!(
                "Workload   {mode}{lora}, {optimizer}, micro-batch {} × {} tokens, gradient checkpointing {ckpt}\n",
                t.micro_batch, t.seq_len
            );
        }
    }
    if let Some(b) = build {
        o += &format!(
            "Build      {} (~{} USD): {}, {} GiB RAM, {} × {}, {}\n",
            b.name, b.price_usd, b.cpu, b.ram_gib, b.gpu_count, b.gpu_id, b.storage
        );
    }
    o += "\n";
    let f = &p.memory;
    let mut t = Table::new(&[&format!("Memory on {}", p.memory_device), "GiB", ""]);
    let g = |b: u64| format!("{:.2}", b as f64 / (1u64 << 30) as f64);
    match &f.training {
        None => {
            t.row(vec!["weights".into(), g(f.weights_bytes), String::new()]);
            t.row(vec![
                "KV cache".into(),
                g(f.kv_cache_bytes),
                format!("{} per token", bytes_auto(p.kv_bytes_per_token)),
            ]);
            t.row(vec![
                "activations / workspace".into(),
                g(f.activations_bytes),
                String::new(),
            ]);
        }
        Some(tb) => {
            if tb.base_weights > 0 {
                t.row(vec![
                    "base weights (frozen)".into(),
                    g(tb.base_weights),
                    String::new(),
                ]);
            }
            t.row(vec![
                "trainable weights".into(),
                g(tb.trainable_weights),
                format!("{} params", params(tb.trainable_params)),
            ]);
            if tb.master_weights > 0 {
                t.row(vec![
                    "fp32 master weights".into(),
                    g(tb.master_weights),
                    String::new(),
                ]);
            }
            t.row(vec!["gradients".into(), g(tb.gradients), String::new()]);
            t.row(vec![
                "optimizer states".into(),
                g(tb.optimizer_states),
                String::new(),
            ]);
            t.row(vec!["activations".into(), g(tb.activations), String::new()]);
            t.row(vec!["logits + loss".into(), g(tb.logits), String::new()]);
            if tb.dequant_workspace > 0 {
                t.row(vec![
                    "dequantization workspace".into(),
                    g(tb.dequant_workspace),
                    String::new(),
                ]);
            }
            if tb.not_together > 0 {
                t.row(vec![
                    "not alive at once".into(),
                    format!("-{}", g(tb.not_together)),
                    "the step's peak is its worst phase: the head's pass or the layers' backward"
                        .into(),
                ]);
            }
        }
    }
    t.row(vec![
        "runtime overhead".into(),
        g(f.overhead_bytes),
        match &f.training {
            Some(tb) if tb.runtime > 0 => format!(
                "forja tune's process: tokenizer {:.1} MiB, program, threads",
                tb.tokenizer as f64 / (1u64 << 20) as f64
            ),
            None if f.tokenizer_bytes > 0 => format!(
                "forja's process: tokenizer {:.1} MiB, program, threads",
                f.tokenizer_bytes as f64 / (1u64 << 20) as f64
            ),
            _ if f.overhead_bytes > 0 => "CUDA context + cuBLAS workspace".into(),
            _ => String::new(),
        },
    ]);
    t.row(vec!["total".into(), g(f.total_bytes), String::new()]);
    o += &t.render();
    let r = &p.rule_of_thumb;
    o += &format!(
        "Rule of thumb: {} ({}); forja's breakdown is {}\n",
        gib(r.bytes),
        r.formula,
        pct(r.difference_pct)
    );
    o += "\n";
    o += &fits_table(&p.devices, matches!(p.workload, Workload::Inference));
    if !p.recommendations.is_empty() {
        o += "\n";
        for r in &p.recommendations {
            o += &format!("→ {r}\n");
        }
    }
    for n in &p.notes {
        o += &format!("note: {n}\n");
    }
    if matches!(p.workload, Workload::Inference) {
        o += "\nDecode speeds are upper bounds: bytes read per token (weights + KV at full context) / peak bandwidth.\n";
    }
    o
}

fn fits_table(fits: &[DeviceFit], inference: bool) -> String {
    let mut t = if inference {
        Table::new(&[
            "Device",
            "memory",
            "GB/s",
            "needs",
            "per device",
            "tok/s ≤",
            "all users ≤",
            "max ctx",
            "max users",
            "best fit",
        ])
    } else {
        Table::new(&["Device", "memory", "GB/s", "fits", "per device", "best fit"])
    };
    for f in fits {
        let d = &f.device;
        let mem = format!("{:.0} GiB", d.memory_bytes as f64 / (1u64 << 30) as f64);
        let bw = d.bandwidth_gbps.map_or("?".into(), |b| format!("{b:.0}"));
        let needs = match f.devices_needed {
            Some(n) => format!("{n}"),
            None if d.count > 1 => format!("> {}", d.count),
            None => "no".into(),
        };
        let per = f.per_device.as_ref().map_or("-".into(), |x| {
            format!("{:.1} GiB", x.total_bytes as f64 / (1u64 << 30) as f64)
        });
        let best = match &f.best_format {
            Some(b) if f.best_format_devices > 1 => format!("{b} on {}", f.best_format_devices),
            Some(b) => b.clone(),
            None => "-".into(),
        };
        if inference {
            t.row(vec![
                d.id.clone().unwrap_or(d.name.clone()),
                mem,
                bw,
                needs,
                per,
                f.decode_tok_s_upper
                    .map_or("-".into(), |v| format!("{v:.0}")),
                f.aggregate_tok_s_upper
                    .map_or("-".into(), |v| format!("{v:.0}")),
                f.max_ctx_tokens.map_or("-".into(), tokens),
                f.max_users.map_or("-".into(), |u| u.to_string()),
                best,
            ]);
        } else {
            let fits = if f.devices_needed.is_some() {
                "yes"
            } else {
                "no"
            };
            t.row(vec![
                d.id.clone().unwrap_or(d.name.clone()),
                mem,
                bw,
                fits.into(),
                per,
                best,
            ]);
        }
    }
    t.render()
}

/// The best-quality format of `model` that fits on `devices[0]` (with its count) at `serving`:
/// `(format, bytes per device, decode tok/s bound)`.
pub fn best_fit(
    model: &forja_arch::ModelDescription,
    serving: Serving,
    devices: &[Device],
) -> Result<Option<(String, u64, Option<f64>)>> {
    let serving = Serving {
        ctx_tokens: serving.ctx_tokens.min(model.config.max_context),
        ..serving
    };
    let probe = PlanRequest {
        format: Some(WeightFormat::Bf16),
        serving,
        workload: Workload::Inference,
        devices: devices.to_vec(),
        fixed_counts: true,
    };
    let p = plan(model, &probe).context("planning")?;
    let Some(best) = p.devices.first().and_then(|f| f.best_format.clone()) else {
        return Ok(None);
    };
    let chosen = PlanRequest {
        format: Some(WeightFormat::parse(&best)?),
        ..probe
    };
    let p = plan(model, &chosen).context("planning")?;
    Ok(p.devices.first().and_then(|d| {
        Some((
            best,
            d.per_device.as_ref()?.total_bytes,
            d.decode_tok_s_upper,
        ))
    }))
}
