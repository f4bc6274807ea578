//! Quantization: f32 rows into the block formats this crate reads, chosen to be the exact
//! inverse of [`crate::dequantize_row`] (every test decodes through it). Without an importance
//! matrix, the numbers are those of ggml's reference quantizers, which `llama-quantize` runs:
//! the same rounding (`round` half away from zero for `Q8_0`, truncation after an offset of
//! one half for the other legacy formats, round-half-to-even inside the k-quants) and the same
//! order of f32 operations, so a row quantizes to the same bytes.
//!
//! - Legacy formats (`Q4_0` … `Q8_0`, 32 values a block): one scale per block from its largest
//!   magnitude (`Q4_0`, `Q5_0`, `Q8_0`) or from its range with the minimum as offset (`Q4_1`,
//!   `Q5_1`).
//! - k-quants (`Q2_K` … `Q6_K`, in `quantize_k.rs`): every 16- or 32-value group gets the scale
//!   (and minimum) that minimizes a weighted squared (or absolute) error over a sweep of
//!   candidate scales; the group scales are then quantized to 4 to 8 bits against a super-block
//!   scale, and the values are requantized with the scales as stored.

use crate::error::{QuantError, Result};
use crate::format::{QK, QuantType};
use crate::quantize_k;

/// Stores `src` (a whole number of `ty` blocks) into `out`, which must hold exactly the bytes of
/// those blocks. Values must be finite.
pub fn quantize_row(ty: QuantType, src: &[f32], out: &mut [u8]) -> Result<()> {
    let (len, size) = (ty.block_len(), ty.block_bytes());
    if !src.len().is_multiple_of(len) || src.len() / len * size != out.len() {
        return Err(QuantError::Shape(format!(
            "{} values into {} bytes of {ty} blocks ({size} bytes per {len} values)",
            src.len(),
            out.len()
        )));
    }
    if let Some(i) = src.iter().position(|v| !v.is_finite()) {
        return Err(QuantError::Shape(format!(
            "value {i} of the row is {}, which no format can store",
            src[i]
        )));
    }
    let one: fn(&[f32], &mut [u8]) = match ty {
        QuantType::F32 => |x, o| o.copy_from_slice(&x[0].to_le_bytes()),
        QuantType::F16 => |x, o| o.copy_from_slice(&half::f16::from_f32(x[0]).to_le_bytes()),
        QuantType::BF16 => |x, o| o.copy_from_slice(&half::bf16::from_f32(x[0]).to_le_bytes()),
        QuantType::Q4_0 => |x, o| symmetric_block(x, o, 8),
        QuantType::Q5_0 => |x, o| symmetric_block(x, o, 16),
        QuantType::Q4_1 => |x, o| offset_block(x, o, 15),
        QuantType::Q5_1 => |x, o| offset_block(x, o, 31),
        QuantType::Q8_0 => q8_0_block,
        QuantType::Q2K => quantize_k::q2k_block,
        QuantType::Q3K => quantize_k::q3k_block,
        QuantType::Q4K => |x, o| quantize_k::k4_block(x, o, false),
        QuantType::Q5K => |x, o| quantize_k::k4_block(x, o, true),
        QuantType::Q6K => quantize_k::q6k_block,
    };
    for (x, o) in src.chunks_exact(len).zip(out.chunks_exact_mut(size)) {
        one(x, o);
    }
    Ok(())
}

/// A matrix of rows of `row_len` values stored as `ty`, rows quantized in parallel on the
/// crate's worker pool. Returns the bytes of every row, in order.
pub fn quantize(ty: QuantType, src: &[f32], row_len: usize) -> Result<Vec<u8>> {
    let row_bytes = ty.row_bytes(row_len)?;
    if row_len == 0 || !src.len().is_multiple_of(row_len) {
        return Err(QuantError::Shape(format!(
            "{} values are not whole rows of {row_len}",
            src.len()
        )));
    }
    let rows = src.len() / row_len;
    let mut out = vec![0u8; rows * row_bytes];
    // Tasks of about 1 MiB of input each; every task writes its own disjoint rows.
    let rows_per_task = (262_144 / row_len).clamp(1, rows.max(1));
    let tasks = rows.div_ceil(rows_per_task);
    let chunks: Vec<std::sync::Mutex<(&[f32], &mut [u8])>> = src
        .chunks(rows_per_task * row_len)
        .zip(out.chunks_mut(rows_per_task * row_bytes))
        .map(std::sync::Mutex::new)
        .collect();
    let failure = std::sync::Mutex::new(None);
    crate::parallel_for(tasks, &|t| {
        let Ok(mut chunk) = chunks[t].lock() else {
            return;
        };
        let (x, o) = &mut *chunk;
        if let Err(e) = quantize_row(ty, x, o) {
            let row = t * rows_per_task;
            if let Ok(mut f) = failure.lock() {
                f.get_or_insert(QuantError::Shape(format!("rows from {row}: {e}")));
            }
        }
    });
    drop(chunks);
    match failure.into_inner() {
        Ok(Some(e)) => Err(e),
        Ok(None) => Ok(out),
        Err(_) => Err(QuantError::Shape("a quantization task panicked".into())),
    }
}

fn put_f16(o: &mut [u8], at: usize, v: f32) {
    o[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
}

/// The value of largest magnitude (the first one on ties), with its sign.
fn signed_max(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// `Q4_0` (`half` = 8) or `Q5_0` (`half` = 16): `d = max / -half`, so the largest magnitude
/// maps to level 0 and every value to `x / d + half`, truncated after adding one half.
fn symmetric_block(x: &[f32], o: &mut [u8], half: u8) {
    let top = 2 * half - 1;
    let d = signed_max(x) / -f32::from(half);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let offset = f32::from(half) + 0.5;
    let level = |v: f32| ((v * id + offset) as i32).clamp(0, i32::from(top)) as u8;
    put_f16(o, 0, d);
    let levels: [u8; QK] = std::array::from_fn(|j| level(x[j]));
    let qs_at = if half == 8 { 2 } else { 6 };
    let (head, qs) = o.split_at_mut(qs_at);
    crate::legacy::put_values(&levels, qs, (half == 16).then(|| &mut head[2..6]));
}

/// `Q4_1` (`top` = 15) or `Q5_1` (`top` = 31): the block's range in `top` steps from its
/// minimum.
fn offset_block(x: &[f32], o: &mut [u8], top: u8) {
    let (min, max) = x
        .iter()
        .fold((f32::MAX, -f32::MAX), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let d = (max - min) / f32::from(top);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let level = |v: f32| (((v - min) * id + 0.5) as i32).clamp(0, i32::from(top)) as u8;
    put_f16(o, 0, d);
    put_f16(o, 2, min);
    let levels: [u8; QK] = std::array::from_fn(|j| level(x[j]));
    let qs_at = if top == 15 { 4 } else { 8 };
    let (head, qs) = o.split_at_mut(qs_at);
    crate::legacy::put_values(&levels, qs, (top == 31).then(|| &mut head[4..8]));
}

/// `Q8_0`: `d = amax / 127`, values rounded half away from zero.
fn q8_0_block(x: &[f32], o: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(o, 0, d);
    for (q, &v) in o[2..2 + QK].iter_mut().zip(x) {
        *q = ((v * id).round() as i8) as u8;
    }
}
