//! The learning-rate schedule: linear warmup from 0, then a half cosine down to 0 — the same
//! function as transformers' `get_cosine_schedule_with_warmup`, so runs compare step for step.

/// Multiplier of the base learning rate at optimizer step `step` (counted from 0) of `total`.
pub fn cosine_with_warmup(step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
}
