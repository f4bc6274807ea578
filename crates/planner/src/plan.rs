//! `forja plan`: memory breakdown, the common rule of thumb beside it, which devices fit and how
//! many of each, decode-speed bounds, the largest context and user count, and recommendations.

use serde::Serialize;

use forja_arch::kv_cache::{kv_bytes, kv_bytes_per_token};
use forja_arch::training::TrainMode;
use forja_arch::weight_format::QUALITY_ORDER;
use forja_arch::weights::estimated_gguf_file_bytes;
use forja_arch::{GgufRecipe, ModelDescription, WeightBytes, WeightFormat};

use crate::device::{Device, DeviceKind};
use crate::error::PlanError;
use crate::footprint::{
    Footprint, Serving, Workload, inference_footprint, tp_valid, train_footprint,
};

/// Version of the JSON document `forja plan --json` prints (see docs/plan-json.md).
pub const PLAN_SCHEMA_VERSION: u32 = 1;
/// Tensor-parallel degrees tried, in order.
const SPLITS: [u64; 4] = [1, 2, 4, 8];

#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// Weight format; `None` plans the format the model files store.
    pub format: Option<WeightFormat>,
    pub serving: Serving,
    pub workload: Workload,
    /// Devices to place the model on; each with the count available.
    pub devices: Vec<Device>,
    /// Whether the device counts were chosen by the user (a build) rather than "up to 8".
    pub fixed_counts: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub origin: String,
    pub family: String,
    pub params: u64,
    pub active_params: u64,
    pub layers: u64,
    pub hidden_size: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub vocab_size: u64,
    pub max_context: u64,
    pub experts: Option<Experts>,
    pub sliding_window_layers: u64,
    /// What the model files hold, when planning from files.
    pub stored: Option<forja_arch::StoredWeights>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Experts {
    pub count: u64,
    pub per_token: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FormatSummary {
    pub name: String,
    pub bits_per_weight: f64,
    pub bytes_by_type: std::collections::BTreeMap<String, u64>,
    /// Size of the GGUF file: the real one when planning a GGUF as stored, else predicted.
    pub gguf_file_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleOfThumb {
    pub bytes: u64,
    pub formula: String,
    /// `(forja − rule) / rule`, in percent.
    pub difference_pct: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceFit {
    pub device: Device,
    /// Smallest number of these devices that holds the workload (tensor parallel), if any does.
    pub devices_needed: Option<u32>,
    /// Footprint on each device at `devices_needed`.
    pub per_device: Option<Footprint>,
    /// Upper bound on one user's decode speed at full context: bytes read per token / bandwidth.
    pub decode_tok_s_upper: Option<f64>,
    /// Upper bound on total decode speed with all users decoding together.
    pub aggregate_tok_s_upper: Option<f64>,
    /// Largest context per user that fits (with the requested users).
    pub max_ctx_tokens: Option<u64>,
    /// Most users that fit (with the requested context).
    pub max_users: Option<u64>,
    /// Best-quality format that fits on `best_format_devices` of these devices.
    pub best_format: Option<String>,
    pub best_format_devices: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub schema_version: u32,
    pub model: ModelSummary,
    pub format: FormatSummary,
    pub workload: Workload,
    pub serving: Serving,
    pub kv_bytes_per_token: f64,
    /// Name of the device kind `memory` was computed for.
    pub memory_device: String,
    pub memory: Footprint,
    pub rule_of_thumb: RuleOfThumb,
    pub devices: Vec<DeviceFit>,
    pub recommendations: Vec<String>,
    pub notes: Vec<String>,
}

fn summary(model: &ModelDescription, w: &WeightBytes) -> ModelSummary {
    let c = &model.config;
    ModelSummary {
        origin: model.origin.clone(),
        family: format!("{:?}", c.family).to_ascii_lowercase(),
        params: w.params,
        active_params: w.active_params,
        layers: c.num_layers,
        hidden_size: c.hidden_size,
        heads: c.num_heads,
        kv_heads: c.num_kv_heads,
        head_dim: c.head_dim,
        vocab_size: c.vocab_size,
        max_context: c.max_context,
        experts: c.moe.as_ref().map(|m| Experts {
            count: m.num_experts,
            per_token: m.experts_per_token,
        }),
        sliding_window_layers: c
            .layers
            .iter()
            .filter(|l| matches!(l, forja_arch::LayerAttention::Sliding { .. }))
            .count() as u64,
        stored: model.stored.clone(),
    }
}

/// Checks a format against the workload: full fine-tuning needs float weights; QLoRA needs a
/// quantized base.
fn check_format(workload: &Workload, format: WeightFormat) -> Result<(), PlanError> {
    let float = matches!(
        format,
        WeightFormat::F32 | WeightFormat::F16 | WeightFormat::Bf16
    );
    match workload {
        Workload::Train(t) if t.mode == TrainMode::FullFinetune && !float => {
            Err(PlanError::Invalid {
                what: "format",
                why: format!(
                    "full fine-tuning trains f32/bf16/f16 weights, not {format}: use --quant bf16 or --mode qlora"
                ),
            })
        }
        Workload::Train(t) if t.mode == TrainMode::Qlora && float => Err(PlanError::Invalid {
            what: "format",
            why: format!(
                "QLoRA trains over a quantized base, not {format}: use e.g. --quant q4_k_m, or --mode lora"
            ),
        }),
        _ => Ok(()),
    }
}

/// The format a workload uses when the user names none.
pub fn default_format(model: &ModelDescription, workload: &Workload) -> WeightFormat {
    match workload {
        Workload::Train(t) if t.mode == TrainMode::Qlora => match model.stored_format() {
            Some(f)
                if !matches!(
                    f,
                    WeightFormat::F32 | WeightFormat::F16 | WeightFormat::Bf16
                ) =>
            {
                f
            }
            _ => WeightFormat::Gguf(GgufRecipe::Q4KM),
        },
        Workload::Train(_) => WeightFormat::Bf16,
        Workload::Inference => model
            .stored_format()
            .unwrap_or(WeightFormat::Gguf(GgufRecipe::Q4KM)),
    }
}

fn footprint(
    model: &ModelDescription,
    w: &WeightBytes,
    req: &PlanRequest,
    s: &Serving,
    dev: &Device,
    n: u64,
) -> Footprint {
    match &req.workload {
        Workload::Inference => inference_footprint(model, w, s, dev, n),
        Workload::Train(t) => train_footprint(model, w, t, dev),
    }
}

/// Smallest split of `dev` that holds the workload.
fn needed(
    model: &ModelDescription,
    w: &WeightBytes,
    req: &PlanRequest,
    s: &Serving,
    dev: &Device,
) -> Option<(u64, Footprint)> {
    let max_n = if dev.can_split() && matches!(req.workload, Workload::Inference) {
        dev.count.max(1) as u64
    } else {
        1
    };
    SPLITS
        .iter()
        .copied()
        .filter(|&n| n <= max_n && tp_valid(&model.config, n))
        .map(|n| (n, footprint(model, w, req, s, dev, n)))
        .find(|(_, f)| f.total_bytes <= dev.usable_bytes)
}

/// Largest `x` in `[lo, hi]` with `ok(x)`, assuming `ok` is monotone (true then false).
fn largest(lo: u64, hi: u64, ok: impl Fn(u64) -> bool) -> Option<u64> {
    if hi < lo || !ok(lo) {
        return None;
    }
    let (mut lo, mut hi) = (lo, hi);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if ok(mid) { lo = mid } else { hi = mid - 1 }
    }
    Some(lo)
}

/// Decode-speed upper bounds `(one user, all users)` on `n` devices, from bytes read per step.
fn decode_bounds(
    model: &ModelDescription,
    w: &WeightBytes,
    s: &Serving,
    dev: &Device,
    n: u64,
) -> Option<(f64, f64)> {
    let bw = dev.bandwidth_gbps? * 1e9;
    let cfg = &model.config;
    let (k, e) = cfg.moe.as_ref().map_or((1.0, 1.0), |m| {
        (m.experts_per_token as f64, m.num_experts as f64)
    });
    let expert_active = w.expert_bytes as f64 * k / e;
    let dense_active = w.active_bytes as f64 - expert_active;
    // A decode step reads what one token sees.
    let kv_one = kv_bytes(cfg, s.ctx_tokens, 1, s.kv_dtype) as f64;
    let kv_split = |bytes: f64| {
        if cfg.mla.is_some() || n == 1 {
            bytes
        } else if cfg.num_kv_heads >= n {
            bytes / n as f64
        } else {
            bytes / cfg.num_kv_heads as f64
        }
    };
    let one = (dense_active + expert_active) / n as f64 + kv_split(kv_one);
    let u = s.users as f64;
    // Experts touched by a batch of u tokens: E·(1 − (1 − k/E)^u).
    let experts_touched = w.expert_bytes as f64 * (1.0 - (1.0 - k / e).powf(u));
    let step = (dense_active + experts_touched) / n as f64 + kv_split(kv_one * u);
    Some((bw / one, u * bw / step))
}

fn fit_for(
    model: &ModelDescription,
    w: &WeightBytes,
    req: &PlanRequest,
    dev: &Device,
) -> DeviceFit {
    let s = &req.serving;
    let found = needed(model, w, req, s, dev);
    let (devices_needed, per_device, bounds, max_ctx, max_users) = match &found {
        Some((n, f)) => {
            let n = *n;
            let fits =
                |s2: &Serving| footprint(model, w, req, s2, dev, n).total_bytes <= dev.usable_bytes;
            let (max_ctx, max_users) = match req.workload {
                Workload::Inference => (
                    largest(1, model.config.max_context, |c| {
                        fits(&Serving {
                            ctx_tokens: c,
                            ..*s
                        })
                    }),
                    largest(1, 1 << 16, |u| fits(&Serving { users: u, ..*s })),
                ),
                Workload::Train(_) => (None, None),
            };
            let bounds = match req.workload {
                Workload::Inference => decode_bounds(model, w, s, dev, n),
                Workload::Train(_) => None,
            };
            (Some(n as u32), Some(f.clone()), bounds, max_ctx, max_users)
        }
        None => (None, None, None, None, None),
    };
    let best_n = if req.fixed_counts {
        dev.count.max(1)
    } else {
        1
    };
    let single = Device {
        count: best_n,
        ..dev.clone()
    };
    let best_format = QUALITY_ORDER
        .iter()
        .copied()
        .filter(|f| check_format(&req.workload, *f).is_ok())
        .find(|f| needed(model, &model.weights(Some(*f)), req, s, &single).is_some())
        .map(|f| f.name().to_string());
    DeviceFit {
        device: dev.clone(),
        devices_needed,
        per_device,
        decode_tok_s_upper: bounds.map(|b| b.0),
        aggregate_tok_s_upper: bounds.map(|b| b.1),
        max_ctx_tokens: max_ctx,
        max_users,
        best_format,
        best_format_devices: best_n,
    }
}

/// Plans `model` for `req`.
pub fn plan(model: &ModelDescription, req: &PlanRequest) -> Result<Plan, PlanError> {
    let s = req.serving;
    if s.ctx_tokens == 0 || s.users == 0 || s.step_tokens == 0 {
        return Err(PlanError::Invalid {
            what: "settings",
            why: "context, users and batch must be at least 1".into(),
        });
    }
    if s.ctx_tokens > model.config.max_context {
        return Err(PlanError::Invalid {
            what: "context",
            why: format!(
                "{} tokens is beyond this model's trained maximum of {} tokens",
                s.ctx_tokens, model.config.max_context
            ),
        });
    }
    if s.users > 1 << 20 {
        return Err(PlanError::Invalid {
            what: "users",
            why: format!("{} concurrent sequences is not a plannable number", s.users),
        });
    }
    let format = req
        .format
        .unwrap_or_else(|| default_format(model, &req.workload));
    check_format(&req.workload, format)?;
    // Price what the files hold only when that is the format the job runs in: a GGUF planned for
    // full fine-tuning is priced in bf16, not in its stored quantization.
    let as_stored = model.stored.is_some()
        && match (req.format, &req.workload) {
            (Some(f), _) => model.stored_format() == Some(f),
            (None, Workload::Inference) => true,
            (None, Workload::Train(_)) => model.stored_format() == Some(format),
        };
    let w = if as_stored {
        model.weights(None)
    } else {
        model.weights(Some(format))
    };
    let format_name = if as_stored {
        model
            .stored
            .as_ref()
            .map_or(format.name().to_string(), |st| st.format_label.clone())
    } else {
        format.name().to_string()
    };

    let first = if req.fixed_counts {
        req.devices.first().cloned()
    } else {
        None
    };
    let reference = first.unwrap_or_else(|| Device {
        id: None,
        name: "any NVIDIA GPU".into(),
        kind: DeviceKind::NvidiaGpu,
        memory_bytes: u64::MAX,
        usable_bytes: u64::MAX,
        bandwidth_gbps: None,
        tier: None,
        count: 1,
    });
    let memory = footprint(model, &w, req, &s, &reference, 1);
    let trainable = memory.training.as_ref().map_or(0, |t| t.trainable_params);
    let rule = rule_of_thumb(&w, format, &req.workload, trainable, memory.total_bytes);
    let devices: Vec<DeviceFit> = req
        .devices
        .iter()
        .map(|d| fit_for(model, &w, req, d))
        .collect();
    let mut notes = Vec::new();
    if matches!(req.workload, Workload::Train(_)) {
        notes.push(
            "training is planned on one device; multi-GPU sharding of training is not planned yet"
                .into(),
        );
    }
    if model.config.vision.is_some() {
        notes.push("the image encoder is counted in f16 beside the decoder".into());
    }
    let recommendations = recommend(&devices, req, &format_name);
    Ok(Plan {
        schema_version: PLAN_SCHEMA_VERSION,
        model: summary(model, &w),
        format: FormatSummary {
            name: format_name,
            bits_per_weight: w.bits_per_weight(),
            bytes_by_type: w.bytes_by_type.clone(),
            gguf_file_bytes: match (&model.stored, as_stored) {
                (Some(st), true) if st.container == forja_arch::Container::Gguf => {
                    Some(st.file_bytes)
                }
                _ if format.is_gguf() => {
                    Some(estimated_gguf_file_bytes(&model.config, &model.tensors, &w))
                }
                _ => None,
            },
        },
        workload: req.workload.clone(),
        serving: s,
        kv_bytes_per_token: kv_bytes_per_token(&model.config, s.kv_dtype),
        memory_device: reference.name.clone(),
        memory,
        rule_of_thumb: rule,
        devices,
        recommendations,
        notes,
    })
}

/// The common estimates: `params × bytes × 1.2` for inference; weights + gradients
/// (trainable × bytes) + optimizer (2 × trainable × 4) for training.
fn rule_of_thumb(
    w: &WeightBytes,
    format: WeightFormat,
    workload: &Workload,
    trainable: u64,
    forja_bytes: u64,
) -> RuleOfThumb {
    let b = format.nominal_bytes_per_param();
    let p = w.params as f64;
    let (bytes, formula) = match workload {
        Workload::Inference => (
            p * b * 1.2,
            format!("{:.2} B params × {b} bytes × 1.2", p / 1e9),
        ),
        Workload::Train(_) => {
            let t = trainable as f64;
            (
                p * b + t * b + 2.0 * t * 4.0,
                format!(
                    "{:.2} B × {b} + {:.1} M trainable × ({b} + 2 × 4)",
                    p / 1e9,
                    t / 1e6
                ),
            )
        }
    };
    let bytes = bytes.round() as u64;
    RuleOfThumb {
        bytes,
        formula,
        difference_pct: (forja_bytes as f64 - bytes as f64) / bytes.max(1) as f64 * 100.0,
    }
}

fn recommend(fits: &[DeviceFit], req: &PlanRequest, format: &str) -> Vec<String> {
    let mut out = Vec::new();
    let single: Vec<&DeviceFit> = fits
        .iter()
        .filter(|f| f.devices_needed == Some(1))
        .collect();
    if let Some(cheapest) = single.iter().min_by_key(|f| f.device.memory_bytes) {
        out.push(format!(
            "smallest single device that fits {format}: {}",
            cheapest.device.name
        ));
    } else if let Some(f) = fits
        .iter()
        .filter_map(|f| f.devices_needed.map(|n| (n, f)))
        .min_by_key(|(n, f)| (*n as u64) * f.device.memory_bytes)
    {
        out.push(format!(
            "{format} needs {} × {} (tensor parallel)",
            f.0, f.1.device.name
        ));
    } else if !fits.is_empty() {
        out.push(format!(
            "{format} does not fit on any device considered: choose a smaller format or context"
        ));
    }
    for f in fits
        .iter()
        .filter(|f| req.fixed_counts || f.device.tier.is_some())
    {
        if let Some(best) = &f.best_format
            && best != format
            && (req.fixed_counts || fits.len() <= 4)
        {
            let n = f.best_format_devices;
            let on = if n > 1 {
                format!("{n} × {}", f.device.name)
            } else {
                f.device.name.clone()
            };
            out.push(format!("best quality that fits {on}: {best}"));
        }
    }
    out
}
