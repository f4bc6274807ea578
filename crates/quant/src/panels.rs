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
use crate::legacy;

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

/// The 32 values of a GGUF block, as stored (`Q8_0`: the bytes' bits).
#[cfg(test)]
fn block_values(ty: QuantType, b: &[u8]) -> [u8; QK] {
    let (_, qh, qs) = gguf_fields(ty);
    match (ty, qh) {
        (QuantType::Q8_0, _) => std::array::from_fn(|j| b[2 + j]),
        (_, Some(at)) => legacy::fives(legacy::u32_at(b, at), &b[qs..]),
        (_, None) => legacy::nibbles(&b[qs..]),
    }
}

/// Writes the 32 values of a GGUF block into its quant bytes.
fn put_block_values(ty: QuantType, b: &mut [u8], v: &[u8; QK]) {
    if ty == QuantType::Q8_0 {
        b[2..2 + QK].copy_from_slice(v);
        return;
    }
    let (_, qh, qs) = gguf_fields(ty);
    let (head, quants) = b.split_at_mut(qs);
    legacy::put_values(v, quants, qh.map(|at| &mut head[at..at + 4]));
}

/// Whether `ty` stores a fifth bit.
fn five(ty: QuantType) -> bool {
    matches!(ty, QuantType::Q5_0 | QuantType::Q5_1)
}

/// The values of the eight rows of a panel, as stored.
fn panel_values(ty: QuantType, p: &[u8]) -> [[u8; QK]; ROWS] {
    let q = header_bytes(ty);
    let mut v = [[0u8; QK]; ROWS];
    for b in 0..32 {
        let (l, j) = (b / 4, b % 4);
        for k in 0..8 {
            v[l][4 * k + j] = if ty == QuantType::Q8_0 {
                p[q + 32 * k + b]
            } else {
                let nibble = (p[q + 32 * (k / 2) + b] >> (4 * (k % 2))) & 0x0F;
                let high = if five(ty) {
                    (p[q + 128 + b] >> k) & 1
                } else {
                    0
                };
                nibble | high << 4
            };
        }
    }
    v
}

/// Writes the values of eight rows into a panel's quant bytes.
#[cfg(test)]
fn put_panel_values(ty: QuantType, p: &mut [u8], v: &[[u8; QK]; ROWS]) {
    let q = header_bytes(ty);
    for b in 0..32 {
        let (l, j) = (b / 4, b % 4);
        let at = |k: usize| v[l][4 * k + j];
        if ty == QuantType::Q8_0 {
            for k in 0..8 {
                p[q + 32 * k + b] = at(k);
            }
            continue;
        }
        for c in 0..4 {
            p[q + 32 * c + b] = (at(2 * c) & 0x0F) | (at(2 * c + 1) & 0x0F) << 4;
        }
        if five(ty) {
            p[q + 128 + b] = (0..8).fold(0u8, |acc, k| acc | ((at(k) >> 4) & 1) << k);
        }
    }
}

/// Rewrites `rows` (a multiple of [`ROWS`] rows of `row_bytes` GGUF bytes each) as panels, in
/// place.
pub(crate) fn pack(ty: QuantType, rows: &mut [u8], row_bytes: usize) {
    pack_with(ty, rows, row_bytes, pack_quants);
}

/// [`pack`], the quant bytes of each panel written by `quants` from the eight rows' blocks.
fn pack_with(
    ty: QuantType,
    rows: &mut [u8],
    row_bytes: usize,
    quants: fn(QuantType, &mut [u8], [&[u8]; ROWS]),
) {
    let size = ty.block_bytes();
    let (factors, _, _) = gguf_fields(ty);
    let mut src = vec![0u8; ROWS * row_bytes];
    for group in rows.chunks_exact_mut(ROWS * row_bytes) {
        src.copy_from_slice(group);
        for (i, p) in group.chunks_exact_mut(ROWS * size).enumerate() {
            let blocks: [&[u8]; ROWS] =
                std::array::from_fn(|l| &src[l * row_bytes + i * size..][..size]);
            for (l, block) in blocks.iter().enumerate() {
                for f in 0..factors {
                    p[16 * f + 2 * l..][..2].copy_from_slice(&block[2 * f..2 * f + 2]);
                }
            }
            quants(ty, p, blocks);
        }
    }
}

/// A panel's quant bytes from its eight GGUF blocks, each byte from where its bits are in GGUF
/// order (a few instructions a byte, so loading a model is not held up): register `k`'s byte
/// `4l + j` is value `4k + j` of row `l`, which a 4-bit block keeps in nibble `v / 16` of byte
/// `v % 16` and a 5-bit block's `qh` at bit `v`.
fn pack_quants(ty: QuantType, p: &mut [u8], blocks: [&[u8]; ROWS]) {
    let q = header_bytes(ty);
    let (_, qh_at, qs_at) = gguf_fields(ty);
    for (l, block) in blocks.iter().enumerate() {
        if ty == QuantType::Q8_0 {
            for k in 0..8 {
                p[q + 32 * k + 4 * l..][..4].copy_from_slice(&block[2 + 4 * k..][..4]);
            }
            continue;
        }
        let qs = &block[qs_at..qs_at + 16];
        let nibble = |v: usize| (qs[v % 16] >> (4 * (v / 16))) & 0x0F;
        for c in 0..4 {
            for j in 0..4 {
                p[q + 32 * c + 4 * l + j] = nibble(8 * c + j) | nibble(8 * c + 4 + j) << 4;
            }
        }
        if let Some(at) = qh_at {
            let qh = legacy::u32_at(block, at);
            for j in 0..4 {
                p[q + 128 + 4 * l + j] =
                    (0..8).fold(0u8, |b, k| b | (((qh >> (4 * k + j)) & 1) as u8) << k);
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
        for (i, p) in src.chunks_exact(ROWS * size).enumerate() {
            let values = panel_values(ty, p);
            for (l, v) in values.iter().enumerate() {
                let b = &mut group[l * row_bytes + i * size..][..size];
                for f in 0..factors {
                    b[2 * f..2 * f + 2].copy_from_slice(&p[16 * f + 2 * l..][..2]);
                }
                put_block_values(ty, b, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-by-byte panel quants equal those written through the rows' values, for every
    /// type kept in panels, on rows of pseudo-random bytes; and the panels unpack to the rows.
    #[test]
    fn bytewise_packing_equals_packing_by_values() {
        for ty in [
            QuantType::Q4_0,
            QuantType::Q4_1,
            QuantType::Q5_0,
            QuantType::Q5_1,
            QuantType::Q8_0,
        ] {
            let row_bytes = 3 * ty.block_bytes();
            let rows = crate::test_bytes(2 * ROWS * row_bytes, 0x2545_F491_4F6C_DD1D);
            let (mut fast, mut slow) = (rows.clone(), rows.clone());
            pack(ty, &mut fast, row_bytes);
            pack_with(ty, &mut slow, row_bytes, |ty, p, blocks| {
                let values = blocks.map(|b| block_values(ty, b));
                put_panel_values(ty, p, &values);
            });
            assert!(fast == slow, "{ty}");
            unpack(ty, &mut fast, row_bytes);
            assert!(fast == rows, "{ty}: unpack(pack(x)) != x");
        }
    }
}
