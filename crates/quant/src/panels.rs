//! The interleaved layout: how [`crate::QMatrix`] keeps the 32-value block types (`Q4_0`,
//! `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`) in memory, eight weight rows at a time.
//!
//! In GGUF order every block of every row needs its own f32 work (convert the integer sum,
//! multiply by the two scales, accumulate) — as many instructions as its integer dot product.
//! In a panel, block `i` of eight consecutive rows is stored together so that the four bytes of
//! lane `l` of each 32-byte register belong to row `l`: one `vpdpbusd` with four broadcast
//! activation bytes advances all eight rows, and the scales are applied to the eight rows in one
//! vector.
//!
//! A panel (the `i`-th block of rows `8p .. 8p + 8`) is, in this order:
//! - the eight rows' f16 `d` (16 bytes), then for `Q4_1`/`Q5_1` their f16 `m` (16 bytes);
//! - the quants as eight registers `k` of 32 bytes, byte `4l + j` = value `4k + j` of row `l`:
//!   `Q8_0` stores the eight registers as they are (signed bytes); the 4- and 5-bit types store
//!   register `2c` in the low and `2c + 1` in the high nibbles of bytes `32c .. 32c + 32`, and
//!   the 5-bit types then 32 bytes whose bit `k` of byte `b` is the fifth bit of byte `b` of
//!   register `k`.
//!
//! A panel is exactly as large as the eight blocks it holds, so the panels of rows `8p .. 8p + 8`
//! occupy the bytes those rows occupy in GGUF order, and rows past the last multiple of eight
//! stay in GGUF order.

use crate::format::{QK, QuantType};

/// Weight rows per panel.
pub(crate) const ROWS: usize = 8;

/// Whether `QMatrix` keeps `ty` in panels.
pub(crate) fn interleaves(ty: QuantType) -> bool {
    matches!(
        ty,
        QuantType::Q4_0 | QuantType::Q4_1 | QuantType::Q5_0 | QuantType::Q5_1 | QuantType::Q8_0
    )
}

/// Bytes of the f16 factors at the start of a panel (`d`, and `m` where the type has one).
pub(crate) fn header_bytes(ty: QuantType) -> usize {
    if matches!(ty, QuantType::Q4_1 | QuantType::Q5_1) {
        32
    } else {
        16
    }
}

/// Where a GGUF block keeps its quants: (f16 factors, fifth-bit word if any, quant bytes).
fn gguf_fields(ty: QuantType) -> (usize, Option<usize>, usize) {
    match ty {
        QuantType::Q4_0 => (1, None, 2),
        QuantType::Q4_1 => (2, None, 4),
        QuantType::Q5_0 => (1, Some(2), 6),
        QuantType::Q5_1 => (2, Some(4), 8),
        _ => (1, None, 2),
    }
}

/// Value `j` of a GGUF block, as stored (`Q8_0`: the byte's bits).
fn gguf_get(ty: QuantType, b: &[u8], j: usize) -> u8 {
    if ty == QuantType::Q8_0 {
        return b[2 + j];
    }
    let (_, qh, qs) = gguf_fields(ty);
    let byte = b[qs + j % (QK / 2)];
    let nibble = if j < QK / 2 { byte & 0x0F } else { byte >> 4 };
    match qh {
        Some(at) => {
            let bits = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            nibble | (((bits >> j) & 1) as u8) << 4
        }
        None => nibble,
    }
}

/// Writes value `j` into a GGUF block whose quant bytes started zeroed.
fn gguf_put(ty: QuantType, b: &mut [u8], j: usize, v: u8) {
    if ty == QuantType::Q8_0 {
        b[2 + j] = v;
        return;
    }
    let (_, qh, qs) = gguf_fields(ty);
    b[qs + j % (QK / 2)] |= (v & 0x0F) << if j < QK / 2 { 0 } else { 4 };
    if let Some(at) = qh {
        b[at + j / 8] |= ((v >> 4) & 1) << (j % 8);
    }
}

/// Value `j` of row `l` in a panel, as stored.
fn panel_get(ty: QuantType, p: &[u8], l: usize, j: usize) -> u8 {
    let (k, byte) = (j / 4, 4 * l + j % 4);
    let q = header_bytes(ty);
    if ty == QuantType::Q8_0 {
        return p[q + 32 * k + byte];
    }
    let nibble = (p[q + 32 * (k / 2) + byte] >> (4 * (k % 2))) & 0x0F;
    if matches!(ty, QuantType::Q5_0 | QuantType::Q5_1) {
        nibble | ((p[q + 128 + byte] >> k) & 1) << 4
    } else {
        nibble
    }
}

/// Writes value `j` of row `l` into a panel whose quant bytes started zeroed.
fn panel_put(ty: QuantType, p: &mut [u8], l: usize, j: usize, v: u8) {
    let (k, byte) = (j / 4, 4 * l + j % 4);
    let q = header_bytes(ty);
    if ty == QuantType::Q8_0 {
        p[q + 32 * k + byte] = v;
        return;
    }
    p[q + 32 * (k / 2) + byte] |= (v & 0x0F) << (4 * (k % 2));
    if matches!(ty, QuantType::Q5_0 | QuantType::Q5_1) {
        p[q + 128 + byte] |= ((v >> 4) & 1) << k;
    }
}

/// Rewrites `rows` (a multiple of [`ROWS`] rows of `row_bytes` GGUF bytes each) as panels, in
/// place.
pub(crate) fn pack(ty: QuantType, rows: &mut [u8], row_bytes: usize) {
    let size = ty.block_bytes();
    let (factors, _, _) = gguf_fields(ty);
    let mut src = vec![0u8; ROWS * row_bytes];
    for group in rows.chunks_exact_mut(ROWS * row_bytes) {
        src.copy_from_slice(group);
        group.fill(0);
        for (i, p) in group.chunks_exact_mut(ROWS * size).enumerate() {
            for l in 0..ROWS {
                let b = &src[l * row_bytes + i * size..][..size];
                for f in 0..factors {
                    p[16 * f + 2 * l..][..2].copy_from_slice(&b[2 * f..2 * f + 2]);
                }
                for j in 0..QK {
                    panel_put(ty, p, l, j, gguf_get(ty, b, j));
                }
            }
        }
    }
}

/// The inverse of [`pack`]: panels back to GGUF rows, in place.
pub(crate) fn unpack(ty: QuantType, rows: &mut [u8], row_bytes: usize) {
    let size = ty.block_bytes();
    let (factors, _, _) = gguf_fields(ty);
    let mut src = vec![0u8; ROWS * row_bytes];
    for group in rows.chunks_exact_mut(ROWS * row_bytes) {
        src.copy_from_slice(group);
        group.fill(0);
        for (i, p) in src.chunks_exact(ROWS * size).enumerate() {
            for l in 0..ROWS {
                let b = &mut group[l * row_bytes + i * size..][..size];
                for f in 0..factors {
                    b[2 * f..2 * f + 2].copy_from_slice(&p[16 * f + 2 * l..][..2]);
                }
                for j in 0..QK {
                    gguf_put(ty, b, j, panel_get(ty, p, l, j));
                }
            }
        }
    }
}
